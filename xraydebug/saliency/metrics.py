"""Deletion / insertion metrics (Petsiuk et al. 2018, as used by I-GOS and iGOS++).

Pixels are ranked by saliency (at image resolution, most salient first; ties broken by pixel
index, row-major, so results are deterministic). At step ``j`` of ``steps`` the first
``round(j * N / steps)`` pixels are

* removed from the image into the blurred baseline (deletion: ``I*(1-R) + B*R``), or
* inserted from the image into the blurred baseline (insertion: ``B*(1-R) + I*R``),

and the probability of the target class (softmax, or sigmoid of its logit for multi-label models:
``activation``) is recorded at the ``steps + 1`` points. The score
is the trapezoid area under that curve over the fraction of pixels in [0, 1]: low deletion and
high insertion AUC mean a faithful saliency map.

Removal operators (``removal=``, :mod:`~.removal`): ``None`` / ``"blur"`` is the above, bit for
bit; ``"grey"`` and ``"noise"`` use their filler as the baseline; with ``"inpaint"`` the
removed pixels of every curve point (deletion: the top-ranked ones; insertion: the ones not yet
inserted) are filled by the inpainter from the remaining pixels, one batched inpainter call per
chunk of curve points. The end points are as with the blur: the image, and (everything
removed, nothing to fill from) the blurred image.

Reference difference: the authors' ``metric`` ranks the ``s x s`` mask cells and upsamples the
binary mask; ranking the upsampled saliency at image resolution gives the same curve for
nearest-cell ties and a finer one otherwise, and works for Grad-CAM maps of any size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .igos import Baseline, make_baseline
from .masks import default_batch_size, upsample_mask
from .registry import Targets
from .removal import Removal, RemovalConfig
from .result import SaliencyResult
from .runtime import (
    autocast_context,
    check_activation,
    check_images,
    frozen_model,
    pair_up,
    resolve_device,
    target_probs,
)


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    saliency: SaliencyResult | Tensor,
    steps: int = 50,
    baseline: Baseline = "blur",
    batch_size: int | None = None,
    *,
    device: torch.device | str | None = None,
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    amp: bool = False,
    activation: str = "softmax",
    removal: RemovalConfig | Removal | str | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Deletion and insertion AUC of a saliency map for each (image, target) pair.

    Args:
        model: classifier returning logits; eval mode for the call, state restored afterwards.
        images: ``(B, C, H, W)`` float, preprocessed for ``model``.
        targets: ``(B,)`` class indices (``None`` = the model's predictions), or ``(B, T)``:
            ``T`` classes per image, scored against ``B*T`` saliency maps (image 0's first, as
            the explainers return them).
        saliency: a :class:`SaliencyResult` (its :meth:`~SaliencyResult.saliency`) or a tensor
            ``(N, 1, h, w)`` / ``(N, h, w)`` of saliency (higher = more salient), upsampled
            bilinearly (``align_corners=True``) to ``H x W``; ``N = B`` (``B*T``).
        steps: number of pixel groups (``N / steps`` pixels each); the curve has ``steps + 1``
            points.
        baseline: ``"blur"`` (``blur_kernel``, ``blur_sigma``) or a tensor broadcastable to
            ``images``.
        batch_size: images per forward; default about 16M input elements per chunk.
        amp: autocast on CUDA (off by default so scores are comparable across devices).
        activation: ``"softmax"`` or ``"sigmoid"`` (probability of class ``c`` =
            ``sigmoid(logit_c)``, for per-finding multi-label models).
        removal: how removed pixels are filled (:mod:`~.removal`): ``None`` / ``"blur"`` ->
            ``baseline``; ``"grey"`` / ``"noise"`` -> that filler as the baseline (not with a
            tensor ``baseline``); ``"inpaint"`` -> the inpainter fills the removed pixels of
            every curve point from the others. A :class:`~.removal.RemovalConfig`, an
            operator name or a built :class:`~.removal.Removal` (e.g. the explainer's).
        seed: the ``"noise"`` filler's seed (per image, mixed with its pixels).

    Returns:
        ``(deletion_auc, insertion_auc)``, each ``(N,)`` float32 in [0, 1] on ``images.device``.
    """
    check_images(images)
    check_activation(activation)
    if steps < 1:
        raise ValueError(f"deletion_insertion: expected steps >= 1, got {steps}")
    out_device = images.device
    dev = resolve_device(model, images, device)
    rem = Removal.for_baseline(removal, baseline, device=dev)
    operator = "blur" if rem is None else rem.operator
    x = images.detach().to(dev, torch.float32)
    with frozen_model(model), torch.inference_mode():
        if operator in ("grey", "noise"):
            base = rem.filler(x, seed=seed)
        else:
            base = make_baseline(x, baseline, blur_kernel, blur_sigma)
        x, tgt, per_image = pair_up(model, x, targets)
        if per_image > 1:
            base = base.repeat_interleave(per_image, dim=0)
        b, _, h, w = x.shape
        n_pix = h * w
        rank = _ranks(saliency, b, (h, w), dev)
        counts = torch.arange(steps + 1, device=dev, dtype=torch.float64) * n_pix / steps
        counts = torch.round(counts).long()
        bs = batch_size or default_batch_size(x[0].numel())
        fill = None
        if operator == "inpaint":

            def fill(xs: Tensor, removed: Tensor) -> Tensor:
                return rem(xs, removed, blur_kernel=blur_kernel, blur_sigma=blur_sigma)

        probs = _curve_probs(model, x, base, tgt, rank, counts, bs, amp, activation, fill)
    fractions = counts.float() / n_pix
    del_auc, ins_auc = _areas(probs, steps, fractions)
    return del_auc.to(out_device), ins_auc.to(out_device)


def _ranks(
    saliency: SaliencyResult | Tensor, b: int, size: tuple[int, int], dev: torch.device
) -> Tensor:
    """``(b, 1, H, W)`` rank of every pixel by saliency (0 = most salient; ties by index)."""
    h, w = size
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
    rank.scatter_(1, order, torch.arange(h * w, device=dev).expand(b, -1).contiguous())
    return rank.view(b, 1, h, w)


def _curve_probs(
    model: nn.Module,
    x: Tensor,
    base: Tensor,
    tgt: Tensor,
    rank: Tensor,
    counts: Tensor,
    bs: int,
    amp: bool,
    activation: str,
    fill: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """``(b, 2 * (steps - 1) + 2)`` target probabilities per image: the inner points
    ``j = 1 .. steps - 1`` of the deletion curve, then of the insertion curve, then the two end
    points shared by both curves (the image: j=0 deletion = j=steps insertion; and the blur).

    ``fill(images, removed)`` (``"inpaint"``), when given, builds each chunk's inputs from
    its images and binary removal masks (one call per chunk) instead of the ``base`` blend."""
    dev, b, steps = x.device, x.shape[0], counts.numel() - 1
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
        xr = x[img] + (base[img] - x[img]) * removed if fill is None else fill(x[img], removed)
        with autocast_context(dev, amp):
            probs[r] = target_probs(model, xr, tgt[img], check=r0 == 0, activation=activation)
    return probs.view(b, per_image)


def _areas(probs: Tensor, steps: int, fractions: Tensor) -> tuple[Tensor, Tensor]:
    """Trapezoid areas of the deletion and insertion curves laid out by :func:`_curve_probs`."""
    inner = steps - 1
    p_image, p_blur = probs[:, -2:-1], probs[:, -1:]
    del_curve = torch.cat([p_image, probs[:, :inner], p_blur], dim=1)
    ins_curve = torch.cat([p_blur, probs[:, inner : 2 * inner], p_image], dim=1)
    del_auc = torch.trapezoid(del_curve, fractions, dim=1)
    ins_auc = torch.trapezoid(ins_curve, fractions, dim=1)
    return del_auc, ins_auc
