"""Explainers by name: the one list the CLI, the scan and the benchmarks read."""

from __future__ import annotations

from collections.abc import Callable

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


def explainer_names() -> list[str]:
    return sorted(EXPLAINERS)


__all__ = ["EXPLAINERS", "Explainer", "explainer_names", "get_explainer"]
