"""The inpainter contract and its registry.

An inpainter fills the masked pixels of images from the rest. Two entry points:

* :meth:`Inpainter.inpaint`: a batch of stored images (``(H, W)`` or ``(H, W, C)`` arrays of
  any numeric dtype, the film's own bit depth) and masks (``(H, W)``, nonzero = fill) -> new
  arrays of the same shape and dtype in the same value range; pixels outside the mask are
  bit-identical to the input. ``clean`` uses it on the stored pixels.
* :meth:`Inpainter.inpaint_tensor`: model inputs ``(B, C, H, W)`` float (any value range, e.g.
  mean/std-normalised) and masks ``(B, 1, H, W)`` -> a tensor like the input; the explainers'
  removal operator (:mod:`xraydebug.saliency.removal`) uses it.

Entries register themselves (:func:`register_inpainter`); :func:`make_inpainter` builds one
by name with its own frozen config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class InpainterConfig:
    """Settings every inpainter shares (subclasses add their own)."""


class Inpainter:
    """An inpainting method: its settings (``config``) and, for learned ones, its network.

    Subclasses set ``name``, ``description`` and ``config_class`` and implement
    :meth:`_fill` (one float32 ``(H, W)`` channel) or override :meth:`inpaint` as a whole
    (batched networks); those with weights override :meth:`load` (idempotent).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type[InpainterConfig]] = InpainterConfig
    #: fills pixels from their own film only (no model file); learned entries set False
    classical: ClassVar[bool] = True

    def __init__(self, config: InpainterConfig | None = None, *, device: str = "cpu") -> None:
        if config is None:
            config = self.config_class()
        if type(config) is not self.config_class:
            raise TypeError(
                f"inpainter {self.name!r} takes a {self.config_class.__name__}; "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.device = device

    @classmethod
    def available(cls) -> bool:
        """Whether what it needs is installed (``True`` unless a subclass says otherwise)."""
        return True

    def load(self) -> Self:
        """Load weights onto the object (idempotent); returns ``self``."""
        return self

    def describe(self) -> dict[str, Any]:
        """``{"name", "settings"}`` for ``run.json``, model cards and reports."""
        return {"name": self.name, "settings": asdict(self.config)}

    # -- the work -----------------------------------------------------------------------------
    def _fill(self, channel: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Fill ``mask`` (uint8 ``(H, W)``, 255 = fill, not empty) of one channel.

        ``channel`` is uint8, uint16 or float32 ``(H, W)``; returns an array of the same
        shape and dtype (values outside the mask are restored by the caller)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _fill")

    def _fill_native(self, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One image of any numeric dtype: uint8/uint16 stay as they are, other dtypes go
        through float32 and are rounded and clipped back to their integer range."""
        channels = pixels[..., None] if pixels.ndim == 2 else pixels
        out = np.empty_like(channels)
        for c in range(channels.shape[2]):
            channel = np.ascontiguousarray(channels[..., c])
            if channel.dtype in (np.uint8, np.uint16, np.float32):
                out[..., c] = self._fill(channel, mask)
                continue
            values = self._fill(channel.astype(np.float32), mask)
            if np.issubdtype(channel.dtype, np.integer):
                info = np.iinfo(channel.dtype)
                values = np.clip(np.rint(values), info.min, info.max)
            out[..., c] = values.astype(channel.dtype)
        return out[..., 0] if pixels.ndim == 2 else out

    def inpaint(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Fill ``masks`` (``(H, W)``, nonzero = fill) in ``images`` (``(H, W)`` or
        ``(H, W, C)``, any numeric dtype; sizes may differ).

        Returns new arrays of each input's shape and dtype, inside its value range (floats:
        the image's own min-max); pixels outside the mask are bit-identical to the input (an
        empty mask returns a copy).
        """
        images, masks = list(images), [as_mask(m) for m in masks]
        check_pairs(images, masks)
        self.load()
        return [
            restore_outside(image, within_range(self._fill_native(image, mask), image), mask)
            if mask.any()
            else image.copy()
            for image, mask in zip(images, masks, strict=True)
        ]

    def inpaint_tensor(self, images: Tensor, masks: Tensor) -> Tensor:
        """Model inputs ``(B, C, H, W)`` float (any range) with masks ``(B, 1, H, W)`` (> 0.5 =
        fill) -> a float tensor like ``images`` (same device), unchanged outside the masks.

        The default runs :meth:`inpaint` on float32 copies, one channel image at a time."""
        if images.dim() != 4 or masks.dim() != 4 or masks.shape[1] != 1:
            raise ValueError(
                f"inpaint_tensor: expected images (B, C, H, W) and masks (B, 1, H, W), got "
                f"{tuple(images.shape)} and {tuple(masks.shape)}"
            )
        arrays = images.detach().float().permute(0, 2, 3, 1).cpu().numpy()
        binary = (masks.detach()[:, 0] > 0.5).cpu().numpy()
        filled = self.inpaint(list(arrays), list(binary))
        out = torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2)
        return out.to(images.device, images.dtype)


def as_mask(mask: np.ndarray) -> np.ndarray:
    """Any ``(H, W)`` mask (bool, 0/1, 0/255, float) -> uint8 ``(H, W)``, 255 = fill."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"masks must be (H, W); got shape {mask.shape}")
    return np.where(mask > (0.5 if mask.dtype.kind == "f" else 0), 255, 0).astype(np.uint8)


def check_pairs(images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if image.ndim not in (2, 3) or image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {i}: expected (H, W) or (H, W, C) with its mask's (H, W) "
                f"{mask.shape}; got {image.shape}"
            )


def within_range(filled: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Float fills clipped to the image's own value range (a fill's gradient terms, e.g.
    Telea's, can overshoot it); integer fills are already inside their dtype's."""
    if filled.dtype.kind == "f":
        np.clip(filled, image.min(), image.max(), out=filled)
    return filled


def restore_outside(image: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``filled`` with every pixel outside ``mask`` copied back from ``image`` (exactly)."""
    outside = mask == 0
    filled[outside] = image[outside]
    return filled


# -- registry ----------------------------------------------------------------------------------
_INPAINTERS: dict[str, type[Inpainter]] = {}


def register_inpainter(cls: type[Inpainter]) -> type[Inpainter]:
    """Class decorator: make ``cls`` available by its ``name`` (``clean --inpainter``)."""
    if cls.name in _INPAINTERS and _INPAINTERS[cls.name] is not cls:
        raise ValueError(f"an inpainter named {cls.name!r} is registered already")
    _INPAINTERS[cls.name] = cls
    return cls


def inpainter_names() -> list[str]:
    """Registered inpainter names, in registration order."""
    return list(_INPAINTERS)


def inpainter_class(name: str) -> type[Inpainter]:
    if name not in _INPAINTERS:
        raise ValueError(f"unknown inpainter {name!r}; choose one of {', '.join(_INPAINTERS)}")
    return _INPAINTERS[name]


def make_inpainter(name: str, *, device: str = "cpu", **settings: Any) -> Inpainter:
    """The inpainter ``name`` with ``settings`` on its config's defaults (``None`` values are
    ignored); unknown settings raise ``TypeError`` naming the valid ones."""
    cls = inpainter_class(name)
    given = {k: v for k, v in settings.items() if v is not None}
    valid = set(cls.config_class.__dataclass_fields__)
    unknown = sorted(set(given) - valid)
    if unknown:
        raise TypeError(
            f"inpainter {name!r} has no setting(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid)) or 'none'}"
        )
    return cls(cls.config_class(**given), device=device)


def build_inpainter(name: str, *, device: str = "cpu", **offered: Any) -> Inpainter:
    """:func:`make_inpainter` with only those of ``offered`` that inpainter ``name`` has (a
    stage offers ``radius`` and ``model`` whatever the method; ``telea`` takes the first,
    ``learned`` the second); a model file for an inpainter without one raises ``TypeError``."""
    fields = inpainter_class(name).config_class.__dataclass_fields__
    if offered.get("model") is not None and "model" not in fields:
        raise TypeError(f"inpainter {name!r} takes no model file (--inpainter-model)")
    return make_inpainter(name, device=device, **{k: v for k, v in offered.items() if k in fields})
