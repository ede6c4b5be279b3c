"""Explainers by name: the one list the CLI, the scan and the benchmarks read.

An explainer is an object with a ``name`` (its registry key), a ``title`` for people
(``"iGOS++"``), a frozen ``config_class`` and one call::

    explainer = get_explainer("igospp")
    config = explainer.default_config(preset="fast", mask_size=56)
    result = explainer.explain(model, images, targets, config, activation="sigmoid")
    run_json["saliency"] = explainer.describe(config)

New explainers subclass :class:`Explainer`, override :meth:`Explainer.explain` (and
:meth:`Explainer.default_config` / :meth:`Explainer.describe` when the defaults below do not fit)
and register with :func:`register_explainer`, from inside this package or outside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from .result import SaliencyResult

Targets = Tensor | Sequence[int] | Sequence[Sequence[int]] | int | None
"""Class indices to explain: ``(B,)`` (one per image), ``(B, T)`` (``T`` per image: each
(image, target) pair is explained, results come back in ``B*T`` rows, image 0's targets first),
an int (the same class for every image) or ``None`` (the model's highest-scoring class)."""


class Explainer:
    """Base of every registered explainer: a name, a title, a config class and one call.

    Subclasses set the three class attributes and override :meth:`explain`. The base gives
    :meth:`default_config` (``config_class(**overrides)`` with ``None`` values dropped and
    unknown keys refused) and :meth:`describe` (``{"method": name, "settings": {...}}``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    config_class: ClassVar[type] = type(None)
    #: takes a ``removal=`` call option (:mod:`~.removal`: how removed pixels are filled)
    removes: ClassVar[bool] = False

    def default_config(self, **overrides: Any) -> Any:
        """``config_class`` with ``overrides`` on top; ``None`` values are ignored (they mean
        "the default"); unknown keys raise ``TypeError`` listing the valid ones."""
        given = {k: v for k, v in overrides.items() if v is not None}
        check_keys(self.name, given, config_fields(self.config_class))
        return self.config_class(**given)

    def explain(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Targets,
        config: Any = None,
        *,
        device: torch.device | str | None = None,
        activation: str = "softmax",
    ) -> SaliencyResult:
        """Masks of ``targets`` for ``images`` ``(B, C, H, W)`` under ``config`` (``None``:
        :meth:`default_config`).

        ``activation``: how the model's logits become the class probability ``f_c``:
        ``"softmax"`` over classes (one label per image) or ``"sigmoid"`` of the class's own
        logit (per-finding logits, multi-label). ``device``: where to compute; default the
        model's. Results come back on ``images.device``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement explain()")

    def describe(self, config: Any) -> dict[str, Any]:
        """JSON-friendly record of a run's settings (``run.json``'s ``saliency`` entry)."""
        return {"method": self.name, "settings": dataclasses.asdict(self.checked(config))}

    def checked(self, config: Any) -> Any:
        """``config`` if it is a ``config_class``; ``None`` -> :meth:`default_config`;
        anything else raises ``TypeError``."""
        if config is None:
            return self.default_config()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config: expected a config of type {self.config_class.__name__} for "
                f"explainer {self.name!r}, got {type(config).__name__}"
            )
        return config

    def __repr__(self) -> str:
        return f"<explainer {self.name!r} ({self.title}, {self.config_class.__name__})>"


def config_fields(config_class: type) -> list[str]:
    """The settings a config class takes (dataclass fields that are part of ``__init__``)."""
    return [f.name for f in dataclasses.fields(config_class) if f.init]


def check_keys(name: str, given: dict[str, Any], valid: Sequence[str]) -> None:
    """``TypeError`` naming the unknown keys of ``given`` and listing ``valid``."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise TypeError(f"unknown {name} setting(s) {unknown}; valid settings: {sorted(valid)}")


EXPLAINERS: dict[str, Explainer] = {}
"""Registered explainers by name (filled by :func:`register_explainer`)."""

E = TypeVar("E", bound=Explainer | type[Explainer])


def register_explainer(explainer: E, *, overwrite: bool = False) -> E:
    """Register an :class:`Explainer` instance, or a subclass (instantiated without
    arguments), under its ``name``; returns its argument, so it also works as a class
    decorator. A taken name raises ``ValueError`` unless ``overwrite``."""
    instance = explainer() if isinstance(explainer, type) else explainer
    if not isinstance(instance, Explainer):
        raise TypeError(
            f"register_explainer: expected an Explainer subclass or instance, "
            f"got {type(instance).__name__}"
        )
    name = instance.name
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"register_explainer: the name must be a non-empty word, got {name!r}")
    if not dataclasses.is_dataclass(instance.config_class):
        raise TypeError(
            f"register_explainer: {name!r}.config_class must be a dataclass, "
            f"got {instance.config_class!r}"
        )
    if name in EXPLAINERS and not overwrite:
        raise ValueError(f"explainer {name!r} is already registered")
    EXPLAINERS[name] = instance
    return explainer


def get_explainer(name: str) -> Explainer:
    """The explainer registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return EXPLAINERS[name]
    except (KeyError, TypeError):
        valid = ", ".join(explainer_names())
        raise ValueError(f"unknown explainer {name!r}; valid names: {valid}") from None


def explainer_names() -> list[str]:
    return sorted(EXPLAINERS)


def describe_saliency(saliency: dict[str, Any]) -> str:
    """A scan's ``run.json`` ``saliency`` entry (``method``, ``preset``, ``settings``) in
    words: ``"iGOS++ preset fast: mask 56, 10 iterations, 3 IG points"``; entries without
    ``preset`` (Grad-CAM) give the title alone."""
    method = saliency["method"]
    title = EXPLAINERS[method].title if method in EXPLAINERS else method
    if "preset" not in saliency:
        return title
    st = saliency["settings"]
    label = title if saliency["preset"] is None else f"{title} preset {saliency['preset']}"
    return (
        f"{label}: mask {st['mask_size']}, {st['iterations']} iterations, "
        f"{st['ig_steps']} IG points"
    )


__all__ = [
    "EXPLAINERS",
    "Explainer",
    "Targets",
    "check_keys",
    "config_fields",
    "describe_saliency",
    "explainer_names",
    "get_explainer",
    "register_explainer",
]
