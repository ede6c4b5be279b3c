"""iGOS++ one image at a time, following the control flow of the authors' reference code.

The reference is github.com/khorrams/IGOS_pp (``methods.py: iGOS_pp``, ``methods_helper.py:
interval_score / integrated_gradient / line_search``). This module re-implements *its loop
structure* so that ``benchmarks/igospp_bench.py`` can time it against the batched engine
(:func:`xraydebug.saliency.igospp`) on the same model and images. It is benchmark code, not part
of the library.

What the reference does, and what is mirrored here, per image and per iteration:

* **Gradient.** Four ``integrated_gradient`` calls, in the reference's order: ``del(M)``,
  ``ins(M)`` (``M = up(M_del) * up(M_ins)``), ``del(M_del)``, ``ins(M_ins)``. Each call is one
  ``interval_score``: the ``K`` path points ``alpha_k = k/K`` of *one* image are stacked into
  one batch of ``K`` inputs (the only batching the reference has), fresh Gaussian noise is added,
  one forward, then one ``backward(retain_graph=True)`` of ``sum_k f_k / K`` into the mask
  leaves. The four gradients are combined with the reference's signs, halved, and the
  regulariser gradient (a separate small backward, no model) is added.
  -> ``4 K`` forward and ``4 K`` backward images per iteration.
* **Line search.** Sequential backtracking as in the reference's ``line_search``: under
  ``no_grad`` it first evaluates the *base* loss at the current masks, then candidates
  ``init_step * step_decay**n`` one after the other until Armijo holds
  (``F(new) <= F(old) - c * a * ||g||^2``) or a step below ``min_step`` has been evaluated. Each
  evaluation is the reference's ``loss_function``: the four noisy ``K``-point
  ``interval_score`` sums (not halved) plus the regulariser -> ``4 K`` forward images per
  evaluation, ``4 K (1 + L_t)`` per iteration with ``L_t`` candidates tried. When no step passes,
  the last (sub-``min_step``) step is applied anyway, as in the reference, and the loop goes on.
* **Model.** Eval mode and ``requires_grad = False`` on every parameter (the reference's
  ``main.py`` does both); nothing else (no ``inference_mode``, no autocast, no channels-last).

Per image: ``backward = 4 K T``; ``forward = 4 K T + 4 K (T + sum_t L_t)``; ``1 <= L_t <= 13``
with the default ladder (``1000 * 0.2**n``, ``n = 0..12``: the 13th is the first below 1e-5).

Deliberate differences from the reference (so that the comparison is about control flow only):

1. Definitions are the engine's: :func:`~xraydebug.saliency.masks.upsample_mask`,
   :func:`~xraydebug.saliency.masks.blur_baseline` and
   :func:`~xraydebug.saliency.masks.bilateral_tv` (bilateral weights at mask resolution from the
   per-image min-max normalised grey image; the reference adds a BTV of the upsampled mask at
   image resolution to a plain TV at mask resolution).
2. Noise comes from a local ``torch.Generator`` seeded with ``seed`` (the reference uses the
   global RNG seeded once in ``main.py``); ``noise=0`` turns it off.
3. Masks start at 1 everywhere (the reference's ``init_mask`` is all ones for classifiers).
4. The target is an ``int`` and only the softmax output is supported (the reference's
   ``softmax=True`` default); detector models are out of scope.

Differences from the engine (which is what the benchmark measures): the engine batches all
images x 4 terms x ``K`` points, runs its line search on the plain objective (``K = 1``, no noise,
``ls_group`` rungs per forward, the objective at the accepted step reused as the next base), and
freezes an image whose line search fails instead of applying a sub-``min_step`` step.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from xraydebug.saliency.masks import bilateral_tv, blur_baseline, upsample_mask
from xraydebug.saliency.runtime import frozen_model, sync


def _ladder_length(init_step: float, step_decay: float, min_step: float) -> int:
    """Most candidates one reference line search can evaluate (down to the first < min_step)."""
    n, step = 1, init_step
    while step >= min_step:
        step *= step_decay
        n += 1
    return n


def igospp_one_at_a_time(
    model: nn.Module,
    image: Tensor,
    target: int,
    *,
    mask_size: int = 28,
    iterations: int = 20,
    ig_steps: int = 15,
    l1: float = 1.0,
    l2: float = 20.0,
    noise: float = 0.2,
    baseline: Tensor | None = None,
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    btv_sigma2: float = 0.01,
    tv_exponent: float = 2.0,
    btv_normalize: bool = True,
    init_step: float = 1000.0,
    step_decay: float = 0.2,
    armijo_c: float = 1e-4,
    min_step: float = 1e-5,
    seed: int = 0,
    keep_gradients: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Explain one image with iGOS++ using the reference's per-image control flow.

    Args:
        model: classifier returning logits ``(N, num_classes)``, on the device of ``image``;
            eval mode and parameter ``requires_grad=False`` for the call, restored afterwards.
        image: ``(1, C, H, W)`` float, preprocessed for ``model``.
        target: class index to explain.
        mask_size, iterations, ig_steps, l1, l2, noise, blur_kernel, blur_sigma, btv_sigma2,
            tv_exponent, btv_normalize, init_step, step_decay, armijo_c, min_step: as in
            :class:`xraydebug.saliency.IGOSConfig`.
        baseline: ``(1, C, H, W)`` baseline; default the Gaussian blur of ``image``.
        seed: seed of the noise generator.
        keep_gradients: store each iteration's ``(g_del, g_ins)`` in ``counts["gradients"]``.

    Returns:
        ``(deletion_mask, insertion_mask, counts)``: masks ``(1, 1, s, s)`` in [0, 1]
        (0 = salient) on ``image.device``, and a dict with ``forward_images``,
        ``backward_images``, ``ig_forward_images``, ``line_search_forward_images``,
        ``line_search_evaluations`` (per iteration), ``step_sizes``, ``accepted`` (per
        iteration), ``seconds`` and optionally ``gradients``.
    """
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image: expected one image (1, C, H, W), got {shape}")
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target: expected an int class index, got {type(target).__name__}")
    if min(mask_size, ig_steps) < 1 or iterations < 0:
        raise ValueError(
            "expected mask_size >= 1, ig_steps >= 1, iterations >= 0; got "
            f"{mask_size}, {ig_steps}, {iterations}"
        )
    if not (0 < step_decay < 1 and 0 < min_step <= init_step):
        raise ValueError(
            "expected 0 < step_decay < 1 and 0 < min_step <= init_step; got "
            f"step_decay={step_decay}, min_step={min_step}, init_step={init_step}"
        )

    start = time.perf_counter()
    dev = image.device
    x = image.detach().float()
    size = (int(x.shape[-2]), int(x.shape[-1]))
    base = blur_baseline(x, blur_kernel, blur_sigma) if baseline is None else baseline.float()
    base = base.to(dev).expand_as(x)
    k = ig_steps
    path = torch.linspace(1.0 / k, 1.0, k, device=dev).view(-1, 1, 1, 1)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))
    counts: dict[str, Any] = {
        "iterations": iterations,
        "forward_images": 0,
        "backward_images": 0,
        "ig_forward_images": 0,
        "line_search_forward_images": 0,
        "line_search_evaluations": [],
        "step_sizes": [],
        "accepted": [],
    }
    gradients: list[tuple[Tensor, Tensor]] = []

    def interval_score(src: Tensor, dst: Tensor, up_mask: Tensor, line_search: bool) -> Tensor:
        """``f`` at ``src * a_k m + dst * (1 - a_k m)`` for the K path points (one batch of K),
        divided by K -> ``(K,)``. ``src, dst = I, B`` for deletion and ``B, I`` for insertion."""
        m = up_mask * path  # (K, 1, H, W)
        local = src * m + dst * (1 - m)
        if noise > 0:
            local = local + noise * torch.randn(local.shape, generator=gen, device=dev)
        probs = torch.softmax(model(local).float(), dim=1)[:, target]
        counts["forward_images"] += k
        counts["line_search_forward_images" if line_search else "ig_forward_images"] += k
        return probs / k

    def integrated_gradient(src: Tensor, dst: Tensor, up_mask: Tensor) -> None:
        """Backpropagate the K-point path score of one term into the mask leaves."""
        interval_score(src, dst, up_mask, line_search=False).sum().backward(retain_graph=True)
        counts["backward_images"] += k

    def regularization(masks: Tensor) -> Tensor:
        l1_term = (1 - masks).abs().flatten(1).mean(dim=1)
        btv = bilateral_tv(masks, x, btv_sigma2, tv_exponent, btv_normalize)
        return l1 * l1_term + l2 * btv

    def loss_function(m_del: Tensor, m_ins: Tensor) -> Tensor:
        """The reference's line-search objective: four noisy K-point sums + regulariser."""
        up_del, up_ins = upsample_mask(m_del, size), upsample_mask(m_ins, size)
        loss = interval_score(x, base, up_del, True).sum()
        loss = loss - interval_score(base, x, up_ins, True).sum()
        loss = loss + interval_score(x, base, up_del * up_ins, True).sum()
        loss = loss - interval_score(base, x, up_del * up_ins, True).sum()
        return loss + regularization(m_del * m_ins).sum()

    def line_search(m_del: Tensor, m_ins: Tensor, g_del: Tensor, g_ins: Tensor) -> float:
        with torch.no_grad():
            base_loss = loss_function(m_del, m_ins)
            t = -armijo_c * float(g_del.pow(2).sum() + g_ins.pow(2).sum())
            step, tried = float(init_step), 0
            while True:
                new_del = (m_del - step * g_del).clamp(0, 1)
                new_ins = (m_ins - step * g_ins).clamp(0, 1)
                loss = loss_function(new_del, new_ins)
                tried += 1
                failed = bool(loss > base_loss + step * t)
                if not failed or step < min_step:
                    break
                step *= step_decay
        counts["line_search_evaluations"].append(tried)
        counts["accepted"].append(not failed)
        counts["step_sizes"].append(step)
        return step

    s = mask_size
    m_del = torch.ones(1, 1, s, s, device=dev, requires_grad=True)
    m_ins = torch.ones(1, 1, s, s, device=dev, requires_grad=True)
    with frozen_model(model):
        for _ in range(iterations):
            up_del = upsample_mask(m_del, size)
            up_ins = upsample_mask(m_ins, size)

            # + del(M), both masks
            integrated_gradient(x, base, up_del * up_ins)
            g_del, g_ins = m_del.grad.clone(), m_ins.grad.clone()
            m_del.grad.zero_()
            m_ins.grad.zero_()
            # - ins(M), both masks (insertion loss is minus the score)
            integrated_gradient(base, x, up_del * up_ins)
            g_del -= m_del.grad
            g_ins -= m_ins.grad
            m_del.grad.zero_()
            m_ins.grad.zero_()
            # + del(M_del)
            integrated_gradient(x, base, up_del)
            g_del += m_del.grad
            m_del.grad.zero_()
            # - ins(M_ins)
            integrated_gradient(base, x, up_ins)
            g_ins -= m_ins.grad
            m_ins.grad.zero_()
            # halve the classification part, then add the regulariser's gradient
            g_del /= 2
            g_ins /= 2
            regularization(m_del * m_ins).sum().backward()
            g_del += m_del.grad
            g_ins += m_ins.grad
            if keep_gradients:
                gradients.append((g_del.detach().clone(), g_ins.detach().clone()))

            step = line_search(m_del.detach(), m_ins.detach(), g_del, g_ins)
            with torch.no_grad():
                m_del -= step * g_del
                m_ins -= step * g_ins
                m_del.clamp_(0, 1)
                m_ins.clamp_(0, 1)
            m_del.grad.zero_()
            m_ins.grad.zero_()
            del up_del, up_ins  # free the retained upsampling graph
    sync(dev)
    counts["seconds"] = time.perf_counter() - start
    counts["max_line_search_evaluations"] = _ladder_length(init_step, step_decay, min_step)
    if keep_gradients:
        counts["gradients"] = gradients
    return m_del.detach(), m_ins.detach(), counts


def expected_counts(ig_steps: int, line_search_evaluations: list[int]) -> tuple[int, int]:
    """``(forward_images, backward_images)`` of one image given the per-iteration number of
    line-search candidates: ``4K T + 4K (T + sum L_t)`` forwards, ``4K T`` backwards."""
    t = len(line_search_evaluations)
    per_term = 4 * ig_steps
    return per_term * t + per_term * (t + sum(line_search_evaluations)), per_term * t


__all__ = ["expected_counts", "igospp_one_at_a_time"]
