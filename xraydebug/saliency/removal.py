"""Removal operators: what a "removed" pixel becomes in the explainers and the metrics.

I-GOS / iGOS++ and the deletion / insertion metrics remove pixels by blending them into a
*filler* image: ``x * (1 - m) + filler * m`` (``m`` = 1 removes). The classic filler is a heavy
Gaussian blur of the image, but a blurred (or greyed-out) region stays recognisable and is out of
the training distribution, so a model may react to the artefact rather than to the missing
evidence. Agarwal & Nguyen (ACCV 2020, "Explaining image classifiers by removing input features
using generative models") replace the filler by an inpainter's output. The operators:

* ``"blur"``: :func:`~.masks.blur_baseline` (the papers' baseline; the default, and the code path
  of the explainers and metrics without a ``removal``, bit for bit);
* ``"grey"``: 0 in model-input space, i.e. the training mean of a mean/std-normalised input (for
  inputs in [0, 1] it is black, not mid-grey);
* ``"noise"``: a standard Gaussian in model-input space (the training distribution's per-channel
  moments of a mean/std-normalised input), seeded per image;
* ``"inpaint"``: an inpainter from :mod:`xraydebug.inpaint` (``telea``, ``ns``, ``fsr``,
  ``learned`` with ``inpainter_model``) fills the binarised mask (``> 0.5``) from the remaining
  pixels. An image whose mask covers every pixel has nothing to fill from: it gets the blurred
  image instead.

In iGOS++ / I-GOS (``removal=`` of :func:`~.igos.igospp`) ``"grey"`` and ``"noise"`` are fixed
baselines; ``"inpaint"`` is the paper's MP2-G: the baseline becomes the inpainter's fill of the
binarised deletion mask (its top ``top`` share of saliency), recomputed every ``every``
iterations (:class:`RemovalConfig`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .masks import blur_baseline
from .runtime import image_seeds

if TYPE_CHECKING:
    from xraydebug.inpaint import Inpainter

#: The removal operators, in order of cost.
REMOVAL_OPERATORS = ("blur", "grey", "noise", "inpaint")


@dataclass(frozen=True)
class RemovalConfig:
    """How removed pixels are filled (:mod:`xraydebug.saliency.removal`).

    Attributes:
        operator: one of :data:`REMOVAL_OPERATORS`.
        inpainter: registered inpainter name (``operator="inpaint"`` only; checked against the
            registry when the inpainter is built, :class:`Removal`).
        inpainter_model: weights file of a learned inpainter (its setting ``model``); ``None``
            for the classical ones.
        top: share of pixels in (0, 1] that the MP2-G filler of iGOS++ / I-GOS inpaints: the
            ``top`` most salient pixels of the deletion mask (only pixels with saliency > 0).
        every: the MP2-G filler is recomputed at every ``every``-th iteration (>= 1).
        radius: the ``telea`` / ``ns`` radius in px. 3 (``clean`` uses 10): the deletion /
            insertion metrics inpaint ~100 masks per image, and at 224-256 px radius 3 costs a
            quarter of radius 10 and moved the AUCs by at most 0.008 (``benchmarks/README.md``).
    """

    operator: str = "blur"
    inpainter: str = "telea"
    inpainter_model: str | None = None
    top: float = 0.2
    every: int = 3
    radius: float = 3.0

    def __post_init__(self) -> None:
        if self.operator not in REMOVAL_OPERATORS:
            raise ValueError(
                f"RemovalConfig.operator: expected one of {', '.join(REMOVAL_OPERATORS)}, "
                f"got {self.operator!r}"
            )
        if not isinstance(self.inpainter, str) or not self.inpainter:
            raise ValueError(
                f"RemovalConfig.inpainter: expected an inpainter name, got {self.inpainter!r}"
            )
        if self.inpainter_model is not None:
            if not isinstance(self.inpainter_model, str | os.PathLike):
                raise ValueError(
                    "RemovalConfig.inpainter_model: expected None or a path, got "
                    f"{self.inpainter_model!r}"
                )
            object.__setattr__(self, "inpainter_model", os.fspath(self.inpainter_model))
        if isinstance(self.top, bool) or not isinstance(self.top, int | float):
            raise ValueError(f"RemovalConfig.top: expected a number in (0, 1], got {self.top!r}")
        if not 0 < self.top <= 1:
            raise ValueError(f"RemovalConfig.top: expected a number in (0, 1], got {self.top!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"RemovalConfig.every: expected an int >= 1, got {self.every!r}")
        if isinstance(self.radius, bool) or not isinstance(self.radius, int | float):
            raise ValueError(f"RemovalConfig.radius: expected a number > 0, got {self.radius!r}")
        if not self.radius > 0:
            raise ValueError(f"RemovalConfig.radius: expected a number > 0, got {self.radius!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form of the settings (``RemovalConfig(**d)`` gives them back)."""
        return asdict(self)

    def describe(self) -> dict[str, Any]:
        """``{"operator", "summary"}`` for ``run.json`` and reports; with ``"inpaint"`` also
        ``inpainter``, ``inpainter_model``, ``top`` and ``every``."""
        summaries = {
            "blur": "Gaussian blur of the image (the papers' baseline)",
            "grey": "0 in model-input space (the training mean of a normalised input)",
            "noise": "seeded standard Gaussian noise in model-input space",
        }
        if self.operator != "inpaint":
            return {"operator": self.operator, "summary": summaries[self.operator]}
        return {
            "operator": self.operator,
            "inpainter": self.inpainter,
            "inpainter_model": self.inpainter_model,
            "top": self.top,
            "every": self.every,
            "summary": (
                f"inpainted by {self.inpainter!r} (MP2-G: the top {self.top:.0%} salient pixels "
                f"of the deletion mask, refilled every {self.every} iterations)"
            ),
        }


def as_removal_config(value: RemovalConfig | Removal | str | None) -> RemovalConfig | None:
    """``None`` -> ``None``; an operator name -> ``RemovalConfig(name)``; a :class:`Removal`
    -> its config; a :class:`RemovalConfig` as is."""
    if value is None or isinstance(value, RemovalConfig):
        return value
    if isinstance(value, Removal):
        return value.config
    if isinstance(value, str):
        return RemovalConfig(operator=value)
    raise TypeError(
        "removal: expected None, an operator name, a RemovalConfig or a Removal, "
        f"got {type(value).__name__}"
    )


def _check(images: Tensor, masks: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"remove: expected images (B, C, H, W), got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    if masks.dim() != 4 or tuple(masks.shape) != (b, 1, h, w):
        raise ValueError(
            f"remove: expected masks ({b}, 1, {h}, {w}) for images {tuple(images.shape)}, "
            f"got {tuple(masks.shape)}"
        )


def noise_filler(images: Tensor, seed: int | Sequence[int] = 0) -> Tensor:
    """Standard Gaussian noise like ``images``, one stream per image: ``seed`` an int -> the
    image's stream is drawn from ``seed`` and its pixels (:func:`~.runtime.image_seeds`), so an
    image gets the same noise in any batch; a sequence -> one seed per image."""
    seeds = image_seeds(images, seed) if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != images.shape[0]:
        raise ValueError(f"seed: expected one seed per image ({images.shape[0]}), got {len(seeds)}")
    out = torch.empty(images.shape, dtype=torch.float32)
    for i, s in enumerate(seeds):
        torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(s), out=out[i])
    return out.to(images.device, images.dtype)


def remove(
    images: Tensor,
    masks: Tensor,
    config: RemovalConfig | str,
    *,
    inpainter: Inpainter | None = None,
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    seed: int | Sequence[int] = 0,
) -> Tensor:
    """Remove the region ``masks`` of ``images``: ``images * (1 - masks) + filler * masks``.

    Args:
        images: model inputs ``(B, C, H, W)`` float (any value range).
        masks: ``(B, 1, H, W)`` in [0, 1], 1 = remove; soft values blend linearly.
        config: a :class:`RemovalConfig` or an operator name.
        inpainter: the inpainter for ``"inpaint"`` (default: built from ``config`` for this
            call; pass one, or use :class:`Removal`, to build it once).
        blur_kernel, blur_sigma: the blur of ``"blur"`` and of the ``"inpaint"`` fallback.
        seed: the noise of ``"noise"`` (see :func:`noise_filler`).

    ``"inpaint"`` fills the binarised mask (``> 0.5``) from the pixels outside it, so the result
    equals the image wherever ``masks <= 0.5``; an image whose binarised mask covers every pixel
    gets the blurred image as its filler, one with an empty binarised mask the image itself.
    Pixels where ``masks == 0`` are the input's, bit for bit, for every operator.

    Returns a tensor like ``images``.
    """
    config = as_removal_config(config)
    _check(images, masks)
    masks = masks.to(images.device, images.dtype)
    op = config.operator
    if op == "blur":
        filler = blur_baseline(images, blur_kernel, blur_sigma)
    elif op == "grey":
        filler = torch.zeros_like(images)
    elif op == "noise":
        filler = noise_filler(images, seed)
    else:
        if inpainter is None:
            inpainter = Removal(config).inpainter
        filler = _inpaint_filler(images, masks > 0.5, inpainter, blur_kernel, blur_sigma)
    return torch.where(masks > 0, images * (1.0 - masks) + filler * masks, images)


def _inpaint_filler(
    images: Tensor, binary: Tensor, inpainter: Inpainter, kernel: int, sigma: float
) -> Tensor:
    """The inpainter's fill of ``binary`` ``(B, 1, H, W)`` bool; the blurred image where the
    mask covers everything, the image where it is empty (one inpainter call for the rest)."""
    covered = binary.flatten(1).float().mean(dim=1)
    filler = images.clone()
    full = covered >= 1.0
    if bool(full.any()):
        filler[full] = blur_baseline(images[full], kernel, sigma)
    some = (covered > 0) & ~full
    if bool(some.any()):
        filled = inpainter.inpaint_tensor(images[some], binary[some].to(images.dtype))
        filler[some] = filled.to(images.device, images.dtype)
    return filler


class Removal:
    """A :class:`RemovalConfig` made ready to use: for ``"inpaint"`` the inpainter is built
    once through the registry (``build_inpainter(config.inpainter, device=...,
    model=config.inpainter_model, radius=config.radius)``) and loaded, so the explainer and
    the metrics can share it.

    Calling it is :func:`remove` with that inpainter; ``calls`` and ``seconds`` count the
    inpainter's work (batched calls and their wall time).
    """

    def __init__(
        self,
        config: RemovalConfig | str | None = None,
        *,
        device: torch.device | str = "cpu",
        inpainter: Inpainter | None = None,
    ) -> None:
        self.config = as_removal_config(config) or RemovalConfig()
        self.calls = 0
        self.seconds = 0.0
        self.inpainter = inpainter
        if self.config.operator == "inpaint" and inpainter is None:
            from xraydebug.inpaint import build_inpainter  # lazy: OpenCV / learned weights

            self.inpainter = build_inpainter(
                self.config.inpainter,
                device=str(torch.device(device)),
                model=self.config.inpainter_model,
                radius=self.config.radius,
            ).load()

    @classmethod
    def coerce(
        cls, value: RemovalConfig | Removal | str | None, *, device: torch.device | str = "cpu"
    ) -> Removal | None:
        """``None`` -> ``None``; a :class:`Removal` as is; a config or operator name -> a new
        one (its inpainter built on ``device``)."""
        if value is None or isinstance(value, Removal):
            return value
        return cls(as_removal_config(value), device=device)

    @classmethod
    def for_baseline(
        cls, value: RemovalConfig | Removal | str | None, baseline: Any, *, device: torch.device
    ) -> Removal | None:
        """:meth:`coerce` for an explainer or metric called with ``baseline`` as well: an
        operator other than blur replaces the baseline, so it must be left at ``"blur"``."""
        removal = cls.coerce(value, device=device)
        operator = "blur" if removal is None else removal.operator
        if operator != "blur" and not (isinstance(baseline, str) and baseline == "blur"):
            raise ValueError(
                f"removal {operator!r} replaces the baseline: leave baseline='blur' (got a "
                f"{type(baseline).__name__})"
            )
        return removal

    @property
    def operator(self) -> str:
        return self.config.operator

    def describe(self) -> dict[str, Any]:
        """:meth:`RemovalConfig.describe`, with the inpainter's own settings for ``inpaint``."""
        out = self.config.describe()
        if self.inpainter is not None:
            out["inpainter_settings"] = self.inpainter.describe()["settings"]
        return out

    def filler(
        self,
        images: Tensor,
        *,
        blur_kernel: int = 51,
        blur_sigma: float = 50.0,
        seed: int | Sequence[int] = 0,
    ) -> Tensor:
        """The fixed filler of ``"blur"``, ``"grey"`` and ``"noise"`` (the image fully removed);
        for ``"inpaint"``, whose filler depends on the mask, the blurred image."""
        if self.operator == "grey":
            return torch.zeros_like(images)
        if self.operator == "noise":
            return noise_filler(images, seed)
        return blur_baseline(images, blur_kernel, blur_sigma)

    def __call__(
        self,
        images: Tensor,
        masks: Tensor,
        *,
        blur_kernel: int = 51,
        blur_sigma: float = 50.0,
        seed: int | Sequence[int] = 0,
    ) -> Tensor:
        """:func:`remove` with this object's config and inpainter (timed)."""
        start = time.perf_counter()
        out = remove(
            images,
            masks,
            self.config,
            inpainter=self.inpainter,
            blur_kernel=blur_kernel,
            blur_sigma=blur_sigma,
            seed=seed,
        )
        if self.operator == "inpaint":
            self.calls += 1
            self.seconds += time.perf_counter() - start
        return out

    def __repr__(self) -> str:
        return f"Removal({self.config!r})"


def binarise_top(saliency: Tensor, top: float) -> Tensor:
    """``(B, 1, H, W)`` saliency -> bool mask of its ``top`` share of pixels (``round(top *
    H * W)``, at least 1), most salient first with ties broken by pixel index, keeping only
    pixels with saliency > 0 (an image with no salient pixel gets an empty mask)."""
    b, _, h, w = saliency.shape
    flat = saliency.flatten(1)
    k = max(1, round(top * h * w))
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    out = torch.zeros_like(flat, dtype=torch.bool)
    out.scatter_(1, order, True)
    return (out & (flat > 0)).view(b, 1, h, w)


__all__ = [
    "REMOVAL_OPERATORS",
    "Removal",
    "RemovalConfig",
    "as_removal_config",
    "binarise_top",
    "noise_filler",
    "remove",
]
