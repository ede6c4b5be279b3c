"""The value every explainer returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .masks import upsample_mask


@dataclass
class SaliencyResult:
    """Masks of one explainer call over ``N`` (image, target) pairs: ``N = B`` images with one
    target each, or ``B*T`` rows for ``(B, T)`` targets (image 0's ``T`` targets first).

    Mask convention: values in [0, 1], **0 = salient** (the pixel matters for the class).

    Attributes:
        deletion_mask: ``(N, 1, s, s)`` deletion mask ``M_del`` (iGOS++, I-GOS), else ``None``.
        insertion_mask: ``(N, 1, s, s)`` insertion mask ``M_ins`` (iGOS++ only), else ``None``.
        mask: ``(N, 1, s, s)`` the method's mask: ``M_del * M_ins`` for ``igospp``, ``M_del`` for
            ``igos``, ``1 - cam`` (cam normalised to [0, 1] per image) for ``gradcam``, where ``s``
            is the Grad-CAM layer's resolution.
        targets: ``(N,)`` long, the explained class of each row.
        method: registry name of the explainer (``"igospp"``, ``"igos"``, ``"gradcam"``).
        stats: JSON-friendly facts about the run (per-image iterations, forward/backward image
            counts, seconds, the resolved config, ...).
    """

    deletion_mask: Tensor | None
    insertion_mask: Tensor | None
    mask: Tensor
    targets: Tensor
    method: str
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def saliency(self, size: tuple[int, int] | None = None) -> Tensor:
        """``(N, 1, H, W)`` saliency ``1 - mask``, bilinearly upsampled (``align_corners=True``)
        to ``size`` (default: the mask's own size), values in [0, 1]; higher = more salient."""
        return _to_saliency(self.mask, size)

    def insertion_saliency(self, size: tuple[int, int] | None = None) -> Tensor:
        """``(N, 1, H, W)`` saliency of the insertion mask, ``1 - M_ins`` upsampled like
        :meth:`saliency`: the pixels whose *presence* keeps the class probability up (what the
        text-shortcut flagging measures). Methods without an insertion mask (``igos``,
        ``gradcam``) fall back to :meth:`saliency`; ``stats["insertion_mask"]`` says which."""
        if self.insertion_mask is None:
            return self.saliency(size)
        return _to_saliency(self.insertion_mask, size)

    def to(self, device: torch.device | str) -> SaliencyResult:
        """A copy with every tensor moved to ``device``."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return SaliencyResult(
            deletion_mask=move(self.deletion_mask),
            insertion_mask=move(self.insertion_mask),
            mask=self.mask.to(device),
            targets=self.targets.to(device),
            method=self.method,
            stats=dict(self.stats),
        )


def _to_saliency(mask: Tensor, size: tuple[int, int] | None) -> Tensor:
    out = 1.0 - mask.float()
    if size is not None:
        out = upsample_mask(out, (int(size[0]), int(size[1])))
    return out.clamp(0.0, 1.0)
