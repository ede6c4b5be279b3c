"""Deletion / insertion metrics (Petsiuk et al. 2018, as used by I-GOS and iGOS++).

Pixels are ranked by saliency (at image resolution, most salient first; ties broken by pixel
index, row-major, so results are deterministic). At step ``j`` of ``steps`` the first
``round(j * N / steps)`` pixels are

* removed from the image into the blurred baseline (deletion: ``I*(1-R) + B*R``), or
* inserted from the image into the blurred baseline (insertion: ``B*(1-R) + I*R``),

and the softmax probability of the target class is recorded at the ``steps + 1`` points. The score
is the trapezoid area under that curve over the fraction of pixels in [0, 1]: low deletion and
high insertion AUC mean a faithful saliency map.

Reference difference: the authors' ``metric`` ranks the ``s x s`` mask cells and upsamples the
binary mask; ranking the upsampled saliency at image resolution gives the same curve for
nearest-cell ties and a finer one otherwise, and works for Grad-CAM maps of any size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .igos import Baseline, make_baseline
from .masks import default_batch_size, upsample_mask
from .result import SaliencyResult
from .runtime import (
    as_targets,
    autocast_context,
    check_images,
    frozen_model,
    resolve_device,
    target_probs,
)


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int] | int | None,
    saliency: SaliencyResult | Tensor,
    steps: int = 50,
    baseline: Baseline = "blur",
    batch_size: int | None = None,
    *,
    device: torch.device | str | None = None,
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Deletion and insertion AUC of a saliency map for each image.

    Args:
        model: classifier returning logits; eval mode for the call, state restored afterwards.
        images: ``(B, C, H, W)`` float, preprocessed for ``model``.
        targets: ``(B,)`` class indices (``None`` = the model's predictions).
        saliency: a :class:`SaliencyResult` (its :meth:`~SaliencyResult.saliency`) or a tensor
            ``(B, 1, h, w)`` / ``(B, h, w)`` of saliency (higher = more salient), upsampled
            bilinearly (``align_corners=True``) to ``H x W``.
        steps: number of pixel groups (``N / steps`` pixels each); the curve has ``steps + 1``
            points.
        baseline: ``"blur"`` (``blur_kernel``, ``blur_sigma``) or a tensor broadcastable to
            ``images``.
        batch_size: images per forward; default about 16M input elements per chunk.
        amp: autocast on CUDA (off by default so scores are comparable across devices).

    Returns:
        ``(deletion_auc, insertion_auc)``, each ``(B,)`` float32 in [0, 1] on ``images.device``.
    """
    check_images(images)
    if steps < 1:
        raise ValueError(f"deletion_insertion: expected steps >= 1, got {steps}")
    out_device = images.device
    dev = resolve_device(model, images, device)
    x = images.detach().to(dev, torch.float32)
    b, _, h, w = x.shape
    n_pix = h * w
    sal = saliency.saliency((h, w)) if isinstance(saliency, SaliencyResult) else saliency
    if not isinstance(sal, Tensor):
        raise TypeError(
            f"saliency: expected a SaliencyResult or a tensor, got {type(sal).__name__}"
        )
    if sal.dim() == 3:
        sal = sal.unsqueeze(1)
    if sal.dim() != 4 or sal.shape[:2] != (b, 1):
        raise ValueError(
            f"saliency: expected shape ({b}, 1, h, w) or ({b}, h, w), got {tuple(sal.shape)}"
        )
    sal = upsample_mask(sal.detach().to(dev, torch.float32), (h, w))
    order = torch.sort(sal.flatten(1), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pix, device=dev).expand(b, -1).contiguous())
    rank = rank.view(b, 1, h, w)
    counts = torch.round(torch.arange(steps + 1, device=dev, dtype=torch.float64) * n_pix / steps)
    counts = counts.long()
    fractions = counts.float() / n_pix
    bs = batch_size or default_batch_size(x[0].numel())

    with frozen_model(model), torch.inference_mode():
        tgt = as_targets(model, x, targets)
        base = make_baseline(x, baseline, blur_kernel, blur_sigma)
        # Rows: per image, the inner points j = 1..steps-1 of both curves, plus the two end points
        # shared by both curves (j=0 deletion = full image = j=steps insertion, and vice versa).
        inner = steps - 1
        per_image = 2 * inner + 2
        total = b * per_image
        probs = torch.empty(total, device=dev)
        for r0 in range(0, total, bs):
            r = torch.arange(r0, min(total, r0 + bs), device=dev)
            img, slot = r // per_image, r % per_image
            is_ins = (slot >= inner) & (slot < 2 * inner)
            j = torch.where(slot < inner, slot + 1, slot - inner + 1).clamp_(max=steps)
            removed = (rank[img] < counts[j].view(-1, 1, 1, 1)).float()
            removed = torch.where(is_ins.view(-1, 1, 1, 1), 1.0 - removed, removed)
            removed = torch.where((slot == 2 * inner).view(-1, 1, 1, 1), 0.0, removed)  # image
            removed = torch.where((slot == 2 * inner + 1).view(-1, 1, 1, 1), 1.0, removed)  # blur
            # ``removed`` is now the share of each pixel taken from the baseline.
            xr = x[img] + (base[img] - x[img]) * removed
            with autocast_context(dev, amp):
                probs[r] = target_probs(model, xr, tgt[img], check=r0 == 0)
    probs = probs.view(b, per_image)
    p_image, p_blur = probs[:, -2:-1], probs[:, -1:]
    del_curve = torch.cat([p_image, probs[:, :inner], p_blur], dim=1)
    ins_curve = torch.cat([p_blur, probs[:, inner : 2 * inner], p_image], dim=1)
    del_auc = torch.trapezoid(del_curve, fractions, dim=1)
    ins_auc = torch.trapezoid(ins_curve, fractions, dim=1)
    return del_auc.to(out_device), ins_auc.to(out_device)
