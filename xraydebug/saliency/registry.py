"""Explainers by name: the one list the CLI, the scan and the benchmarks read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .gradcam import gradcam
from .igos import igos, igospp
from .result import SaliencyResult

Explainer = Callable[..., SaliencyResult]

EXPLAINERS: dict[str, Explainer] = {"igospp": igospp, "igos": igos, "gradcam": gradcam}
"""Every explainer takes ``(model, images, targets, *, batch_size=None, device=None, seed=0)``;
the I-GOS family also takes the :class:`~.config.IGOSConfig` settings as keywords."""


def get_explainer(name: str) -> Explainer:
    """The explainer registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return EXPLAINERS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(EXPLAINERS))
        raise ValueError(f"unknown explainer {name!r}; valid names: {valid}") from None


METHOD_NAMES = {"igospp": "iGOS++", "igos": "I-GOS", "gradcam": "Grad-CAM"}


def describe_saliency(saliency: dict[str, Any]) -> str:
    """A scan's ``run.json`` ``saliency`` entry (``method``, ``preset``, ``settings``) in
    words: ``"iGOS++ preset fast: mask 56, 10 iterations, 3 IG points"``."""
    if "preset" not in saliency:
        return METHOD_NAMES.get(saliency["method"], saliency["method"])
    st = saliency["settings"]
    return (
        f"{METHOD_NAMES.get(saliency['method'], saliency['method'])} preset "
        f"{saliency['preset']}: mask {st['mask_size']}, {st['iterations']} "
        f"iterations, {st['ig_steps']} IG points"
    )


def explainer_names() -> list[str]:
    return sorted(EXPLAINERS)


__all__ = [
    "EXPLAINERS",
    "METHOD_NAMES",
    "Explainer",
    "describe_saliency",
    "explainer_names",
    "get_explainer",
]
