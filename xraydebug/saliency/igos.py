"""iGOS++ (Khorram et al., CHIL 2021) and I-GOS (Qi, Khorram, Li, AAAI 2020), batched.

Conventions (papers and the authors' code, github.com/khorrams/IGOS_pp):

* masks are ``s x s``, initialised to 1, kept in [0, 1]; **0 = salient**. They are upsampled
  bilinearly (``align_corners=True``) to the input size ``H x W`` before use.
* baseline ``B`` = heavy Gaussian blur of the image ``I`` (:func:`~.masks.blur_baseline`).
* deletion input ``del(M) = I*M + B*(1-M)``: salient pixels (M=0) are *removed* into the blur.
* insertion input ``ins(M) = B*M + I*(1-M)``: only salient pixels are *revealed* from the image.
* iGOS++ minimises over ``M_del``, ``M_ins`` (``M = M_del * M_ins``, ``f`` = softmax prob. of the
  target class, or with ``activation="sigmoid"`` the sigmoid of its logit, for multi-label
  models)::

      f(del(M)) - f(ins(M)) + f(del(M_del)) - f(ins(M_ins)) + l1*mean|1-M| + l2*BTV(M)

  I-GOS minimises ``f(del(M)) + l1*mean|1-M| + l2*TV(M)`` over a single mask.
* The classification terms' gradients are integrated gradients: the average over ``K`` points
  ``alpha_k = k/K`` (k = 1..K) of the gradient of ``f`` at the input built with the scaled mask
  ``alpha_k * M``, i.e. along the straight path from ``alpha = 0`` (for deletion terms the blurred
  baseline; for insertion terms, whose roles of ``I`` and ``B`` are swapped, the image) to the
  perturbed input at ``M``; fresh Gaussian noise (sigma ``noise``) is added at every point. This is
  the reference's ``interval_score``; note the path scales ``M`` itself (not ``1 - alpha*(1-M)``).
  For iGOS++ the summed classification gradient is halved, as in the reference, before the
  regulariser gradients (plain autograd) are added.
* Step: backtracking Armijo line search, one step shared by both masks of an image, restarted
  from ``init_step`` at every iteration, candidates ``init_step * step_decay**n >= min_step``,
  accepted when ``F(clamp(x - a*g)) <= F(x) - c*a*||g||^2``.

Speed (the reference explains one image at a time, one K-point path per call):

* all images x 4 terms x K points go through the model together, chunked by ``batch_size``
  (whole K-point paths where possible), one backward per chunk that stops at the model input
  (parameter gradients off); the input gradient is pulled back to the upsampled term masks by
  hand (``x = B + (I - B) * m`` is linear in ``m``) and from there to the ``s x s`` masks by
  autograd once per iteration;
* the line search runs under ``no_grad`` on the plain objective (K = 1, no noise) and tries
  ``ls_group`` rungs of the step ladder for every image in one batched forward, taking per image
  the first rung that satisfies Armijo; the objective at the accepted masks is the next
  iteration's ``F(x)``, so it is never recomputed;
* images whose line search finds no acceptable step are frozen and leave the batch, and so
  are images whose plain objective has stopped improving (``tol`` over ``tol_window``
  iterations; the spec's "stop early per image when the step collapses"), so converged images
  cost no more gradient passes;
* on CPU the default chunk is smaller (<= 32 images, a multiple of K,
  :func:`~.masks.device_batch_size`): larger chunks page-fault more and are slower per image;
* ``amp``: the gradient passes run under ``torch.autocast`` (CUDA; CPUs with native bf16),
  the line-search objective and all mask arithmetic stay float32;
* ``fold_bn``: a private copy of the model with eval-mode BatchNorm folded into the preceding
  convolution (:func:`~.runtime.fold_batchnorm`; same function, one op fewer per pair);
* ``channels_last`` inputs on CUDA.

Removal operators (``removal=``, :mod:`~.removal`): ``None`` or ``"blur"`` is the blurred
baseline above, bit for bit; ``"grey"`` and ``"noise"`` replace it by a fixed filler;
``"inpaint"`` is MP2-G (Agarwal & Nguyen, ACCV 2020) carried over to iGOS++: the baseline ``B``
of both the deletion and the insertion inputs becomes ``G(m_b, I)``, the inpainter's fill of
``m_b``, the binarised deletion mask (the top ``top`` share of the upsampled saliency
``1 - M_del``, only pixels with saliency > 1e-6). It is recomputed at every iteration ``it > 0``
with ``it % every == 0`` (counted over coarse-to-fine stages) for the active images whose
deletion mask has salient pixels (until then an image keeps the blur), in one batched inpainter
call; their objective is re-evaluated with the new baseline before the line search (so Armijo
compares like with like), and the objective history of a refilled image is shifted by the
jump the new baseline makes, so that ``tol`` measures the optimisation's progress across
refills (``objective_history`` holds the shifted values). Note that
``B = I`` outside ``m_b``, so only the pixels of ``m_b`` are perturbed by either term until the
next refill. Stats: ``refills`` (per image) and ``refill_seconds`` (binarising, inpainting and
re-evaluating, all images).

Deviations from the reference, each deliberate:

1. Line-search objective: the reference evaluates every candidate with the noisy K-point path
   sums (4*K forwards per candidate); here the plain objective at the candidate masks (4 forwards,
   no noise): deterministic and K times cheaper.
2. A failed line search (no step >= ``min_step``) freezes the image, after ``ls_patience``
   consecutive failures (default 1); the reference applies a step below ``min_step`` (a no-op
   update) and carries on for the remaining iterations.
3. BTV weights are computed at mask resolution (see :func:`~.masks.bilateral_tv`) from the grey
   image min-max normalised per image (``btv_normalize``); the reference applies
   ``exp(-dI^2/0.01)`` to the ImageNet-normalised image.
4. Noise is drawn from a per-image stream (seeded by ``seed`` and the image's content, or by
   ``noise_seeds``) so that results do not depend on batch composition.
5. Batched images; float32 masks and objective; autocast (bf16 / fp16) for the gradient
   passes by default where the hardware has it (the reference is fp32 on CUDA only).
6. Convergence stopping (``tol > 0``, default ``1e-3`` over 3 iterations): the reference always
   runs all ``iterations``; ``tol=0`` does too (unless the line search fails).

Beyond the paper (off in the ``"paper"`` preset, chosen by quality per second in the others;
:data:`~.config.PRESETS`, ``benchmarks/README.md``):

* ``alphas="stratified"``: one random offset per (image, iteration, term) puts one path point
  in each of the ``K`` equal strata of (0, 1]; the integrated gradient is then an unbiased
  estimate of the path integral with any ``K`` (the paper's ``k/K`` is a right Riemann sum,
  which needs many points), so ``K = 3-4`` replaces 15;
* ``shared_noise``: the four terms of an image use the same noise draw and offset in an
  iteration (common random numbers);
* ``ls_warm``: the line search starts ``ls_warm`` rungs above the image's last accepted step
  instead of at ``init_step`` (steps rarely grow by more than one rung, so most iterations
  accept the first group of candidates);
* ``coarse``: stages at coarser mask sides before the final one, each upsampled into the next.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .config import CONFIG_FIELDS, DEFAULT_PRESET, IGOSConfig
from .masks import (
    blur_baseline,
    btv_weights,
    device_batch_size,
    rows_that_fit,
    total_variation,
    upsample_mask,
    weighted_tv,
)
from .registry import Explainer, Targets, check_keys, register_explainer
from .removal import Removal, RemovalConfig, binarise_top
from .result import SaliencyResult
from .runtime import (
    autocast_context,
    check_activation,
    check_images,
    fold_batchnorm,
    frozen_model,
    mix_seed,
    pair_up,
    resolve_device,
    resolve_noise_seeds,
    sync,
    target_probs,
    to_model_layout,
)

Baseline = str | Tensor


@dataclass(frozen=True)
class _Term:
    """One classification term: ``sign * f(compose(prod of masks[uses]))``."""

    insertion: bool  # True: B*m + I*(1-m); False: I*m + B*(1-m)
    uses: tuple[int, ...]  # which optimised masks are multiplied (0 = deletion, 1 = insertion)
    sign: float


_IGOSPP_TERMS = (
    _Term(insertion=False, uses=(0, 1), sign=1.0),  # + f(del(M))
    _Term(insertion=True, uses=(0, 1), sign=-1.0),  # - f(ins(M))
    _Term(insertion=False, uses=(0,), sign=1.0),  # + f(del(M_del))
    _Term(insertion=True, uses=(1,), sign=-1.0),  # - f(ins(M_ins))
)
_IGOS_TERMS = (_Term(insertion=False, uses=(0,), sign=1.0),)


@dataclass(frozen=True)
class Objective:
    """What tells iGOS++ and I-GOS apart: the classification terms, the number of optimised
    masks (mask 1, when there is one, is the insertion mask), bilateral (iGOS++) or plain
    (I-GOS) total variation, and the factor on the summed classification gradient."""

    terms: tuple[_Term, ...]
    n_masks: int
    bilateral: bool
    grad_scale: float


IGOSPP_OBJECTIVE = Objective(_IGOSPP_TERMS, n_masks=2, bilateral=True, grad_scale=0.5)
IGOS_OBJECTIVE = Objective(_IGOS_TERMS, n_masks=1, bilateral=False, grad_scale=1.0)


def make_baseline(images: Tensor, baseline: Baseline, kernel: int, sigma: float) -> Tensor:
    """``"blur"`` -> :func:`blur_baseline`; a tensor broadcastable to ``images`` is used as is."""
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(images.device, images.dtype).expand_as(images).contiguous()
        except RuntimeError:
            raise ValueError(
                f"baseline: expected a tensor broadcastable to {tuple(images.shape)}, "
                f"got shape {tuple(baseline.shape)}"
            ) from None
    if baseline == "blur":
        return blur_baseline(images, kernel, sigma)
    raise ValueError(f"baseline: expected 'blur' or a tensor, got {baseline!r}")


#: saliency ``1 - M`` at or below this is rounding, not a salient pixel (MP2-G refills)
_SALIENT_EPS = 1e-6


class _Optimizer:
    """State of one batched I-GOS / iGOS++ optimisation (internal)."""

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        baseline: Tensor,
        targets: Tensor,
        objective: Objective,
        cfg: IGOSConfig,
        seeds: list[int],
        device: torch.device,
        it_offset: int = 0,
        activation: str = "softmax",
        removal: Removal | None = None,
    ) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.removal = removal if removal is not None and removal.operator == "inpaint" else None
        if self.removal is not None:
            baseline = baseline.clone()  # refills write into it
        self.images, self.baseline, self.targets = images, baseline, targets
        self.diff = images - baseline
        self.terms, self.n_masks = objective.terms, objective.n_masks
        self.grad_scale, self.activation = objective.grad_scale, activation
        self.seeds, self.it_offset = seeds, it_offset
        self.size = (int(images.shape[-2]), int(images.shape[-1]))
        sample = images[0].numel()
        self.batch_size = cfg.batch_size or device_batch_size(sample, device, cfg.ig_steps)
        s = cfg.mask_size
        self.btv = (
            btv_weights(images, (s, s), cfg.btv_sigma2, cfg.btv_normalize)
            if objective.bilateral
            else None
        )
        self.signs = torch.tensor([t.sign for t in self.terms], device=device)
        self.is_ins = torch.tensor([t.insertion for t in self.terms], device=device)
        k = cfg.ig_steps
        self.alphas = torch.arange(1, k + 1, device=device, dtype=torch.float32) / k
        self.ladder = torch.tensor(cfg.step_ladder(), device=device)
        self.rung = torch.zeros(images.shape[0], dtype=torch.long, device=device)  # last accepted
        self.checked = False  # class indices validated against the logits (first forward)
        self.ig_forwards = 0
        self.ls_forwards = 0
        self.refills = torch.zeros(images.shape[0], dtype=torch.long)  # per image (MP2-G)
        self.refill_seconds = 0.0
        if cfg.batch_size is None and device.type == "cuda":
            self.batch_size = self._rows_that_fit_cuda()

    def _rows_that_fit_cuda(self) -> int:
        """Gradient-chunk rows on CUDA from a measurement, not a guess: one probe of 2 rows
        (forward + input gradient, the run's autocast) gives the peak memory per row; chunks
        then use at most half of the free memory (:func:`~.masks.rows_that_fit`, <= 1024 rows,
        a multiple of K). On a large GPU that is hundreds of rows, where the fixed 16M-element
        budget would give a few dozen at 480 px."""
        dev = self.device
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        x = self.images[:1].expand(2, *self.images.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            p = self.probs(x, torch.zeros(2, dtype=torch.long, device=dev), amp=True)
            torch.autograd.grad(p.sum(), x)
        per_row = (torch.cuda.max_memory_allocated(dev) - before) // 2
        free, _ = torch.cuda.mem_get_info(dev)
        return rows_that_fit(free, per_row, multiple_of=self.cfg.ig_steps)

    # -- pieces of the objective ---------------------------------------------------------------
    def term_masks(self, up: Tensor) -> Tensor:
        """``(n, n_masks, 1, H, W)`` upsampled masks -> ``(n, T, 1, H, W)`` per-term masks."""
        out = []
        for term in self.terms:
            m = up[:, term.uses[0]]
            for j in term.uses[1:]:
                m = m * up[:, j]
            out.append(m)
        return torch.stack(out, dim=1)

    def regulariser(self, masks: Tensor, idx: Tensor) -> Tensor:
        """``l1*mean|1-M| + l2*(B)TV(M)`` for ``masks`` ``(n, n_masks, 1, s, s)`` -> ``(n,)``."""
        cfg = self.cfg
        m = masks.prod(dim=1)
        l1 = (1.0 - m).abs().flatten(1).mean(dim=1)
        if self.btv is None:
            tv = total_variation(m, cfg.tv_exponent)
        else:
            tv = 0.5 * weighted_tv(m, self.btv[0][idx], self.btv[1][idx], cfg.tv_exponent)
        return cfg.l1 * l1 + cfg.l2 * tv

    def compose(self, m: Tensor, img: Tensor, ins: Tensor) -> Tensor:
        """Perturbed inputs ``(r, C, H, W)`` from row masks ``m`` ``(r, 1, H, W)``, images ``img``.

        Insertion rows use ``1 - m`` (``B*m + I*(1-m)``), deletion rows ``m`` (``I*m + B*(1-m)``).
        """
        m = torch.where(ins.view(-1, 1, 1, 1), 1.0 - m, m)
        return self.baseline[img] + self.diff[img] * m

    def probs(self, x: Tensor, img: Tensor, amp: bool) -> Tensor:
        """Target-class probabilities (float32, softmax or sigmoid: ``activation``) of inputs
        ``x`` for the images ``img``; ``amp``: under autocast (gradient passes only, see
        :class:`IGOSConfig`)."""
        check, self.checked = not self.checked, True
        x = to_model_layout(x, self.device, self.cfg.channels_last)
        with autocast_context(self.device, amp and self.cfg.amp, cpu=True):
            return target_probs(
                self.model, x, self.targets[img], check=check, activation=self.activation
            )

    # -- plain objective (line search) -----------------------------------------------------------
    @torch.no_grad()
    def objective(self, masks: Tensor, idx: Tensor) -> Tensor:
        """Plain objective (no IG path, no noise) of ``masks`` ``(q, n_masks, 1, s, s)`` for the
        images ``idx`` ``(q,)`` (global indices) -> ``(q,)`` float32."""
        n_terms = len(self.terms)
        per_chunk = max(1, self.batch_size // n_terms)
        cls = torch.empty(masks.shape[0], device=self.device)
        for c0 in range(0, masks.shape[0], per_chunk):
            c1 = min(masks.shape[0], c0 + per_chunk)
            q = c1 - c0
            up = upsample_mask(masks[c0:c1].flatten(0, 1), self.size)
            tm = self.term_masks(up.view(q, self.n_masks, 1, *self.size)).flatten(0, 1)
            img = idx[c0:c1].repeat_interleave(n_terms)
            x = self.compose(tm, img, self.is_ins.repeat(q))
            p = self.probs(x, img, amp=False).view(q, n_terms)
            cls[c0:c1] = (p * self.signs).sum(dim=1)
            self.ls_forwards += q * n_terms
        return cls + self.regulariser(masks, idx)

    # -- integrated gradient ---------------------------------------------------------------------
    def _segments(self, r0: int, r1: int) -> list[tuple[int, int, int]]:
        """Rows ``[r0, r1)`` of the flattened (image, term, k) grid as ``(block, k0, k1)`` runs:
        block ``b`` = (image, term) row of the term masks, path points ``k0 .. k1 - 1``."""
        k = self.cfg.ig_steps
        out = []
        r = r0
        while r < r1:
            b, k0 = divmod(r, k)
            k1 = min(k, k0 + r1 - r)
            out.append((b, k0, k1))
            r += k1 - k0
        return out

    def _stream(self, image: int, it: int, term: int) -> int:
        """Seed of one (image, iteration, term) block; the four terms share it with
        ``shared_noise``; coarse-to-fine stages count iterations on (``it_offset``)."""
        return mix_seed(
            self.seeds[image], it + self.it_offset, 0 if self.cfg.shared_noise else term
        )

    def _alphas(self, image: int, it: int, term: int) -> Tensor:
        """``(K,)`` path points of one block: ``k/K`` or ``(k - u)/K`` (``alphas``)."""
        if self.cfg.alphas == "uniform":
            return self.alphas
        gen = torch.Generator().manual_seed(mix_seed(self._stream(image, it, term), 1))
        u = float(torch.rand((), generator=gen))
        return self.alphas - u / self.cfg.ig_steps

    def _noise_block(self, image: int, it: int, term: int, k0: int, k1: int, out: Tensor) -> None:
        """Writes rows ``k0 .. k1 - 1`` of the noise of one (image, iteration, term) block into
        ``out``: one stream per block of K rows, so any chunking draws the same numbers."""
        k = self.cfg.ig_steps
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self._stream(image, it, term))
        shape = (k, *self.images.shape[1:])
        if k1 - k0 == k:
            torch.randn(shape, generator=gen, device=self.device, out=out)
        else:
            out.copy_(torch.randn(shape, generator=gen, device=self.device)[k0:k1])
        out.mul_(self.cfg.noise)

    def gradient(self, masks: Tensor, idx: Tensor, it: int) -> Tensor:
        """IG gradient of the classification terms plus the regulariser gradient at ``masks``
        ``(n, n_masks, 1, s, s)`` of images ``idx`` -> same shape.

        Rows of the (image, term, k) grid go through the model in chunks of ``batch_size``; each
        chunk's backward stops at the model input ``x`` (``torch.autograd.grad``), and the
        input gradient is pulled back to the term mask by hand: ``x = B + (I - B) * m`` with
        ``m = a_k * M_t`` (deletion) or ``1 - a_k * M_t`` (insertion), so
        ``dF/dM_t = sum_k (+-a_k) * sum_c (I - B)_c * dF/dx_k``. Only the small
        ``s x s -> H x W`` upsampling and the mask products use autograd (once per iteration).
        """
        k, n_terms = self.cfg.ig_steps, len(self.terms)
        n = masks.shape[0]
        leaf = masks.detach().clone().requires_grad_(True)
        idx_list = idx.tolist()  # host copy (one sync per iteration)
        with torch.enable_grad():
            up = upsample_mask(leaf.flatten(0, 1), self.size).view(n, self.n_masks, 1, *self.size)
            tm = self.term_masks(up)
        flat = tm.detach().view(n * n_terms, 1, *self.size)
        g_flat = torch.zeros_like(flat)
        rows = n * n_terms * k
        sample = self.images.shape[1:]
        for r0 in range(0, rows, self.batch_size):
            r1 = min(rows, r0 + self.batch_size)
            segs = self._segments(r0, r1)
            x = torch.empty((r1 - r0, *sample), device=self.device)
            img = torch.empty(r1 - r0, dtype=torch.long, device=self.device)
            weights = []  # d m / d M_t per row: +a_k (deletion) or -a_k (insertion)
            o = 0
            for b, k0, k1 in segs:
                image, term = idx_list[b // n_terms], b % n_terms
                ins = self.terms[term].insertion
                xs = x[o : o + k1 - k0]
                a = self._alphas(image, it, term)[k0:k1].view(-1, 1, 1, 1)
                c1 = -a if ins else a
                if self.cfg.noise > 0:
                    self._noise_block(image, it, term, k0, k1, xs)
                    xs.add_(self.baseline[image])
                else:
                    xs.copy_(self.baseline[image].expand_as(xs))
                m = c1 * flat[b]
                if ins:
                    m += 1.0
                xs.addcmul_(self.diff[image], m)
                img[o : o + k1 - k0] = image
                weights.append(c1 * (float(self.terms[term].sign) / k))
                o += k1 - k0
            x.requires_grad_(True)
            with torch.enable_grad():
                p = self.probs(x, img, amp=True)
                (gx,) = torch.autograd.grad(p.sum(), x)
            o = 0
            for (b, k0, k1), w in zip(segs, weights, strict=True):
                image = idx_list[b // n_terms]
                g = gx[o : o + k1 - k0].mul_(self.diff[image]).sum(dim=1, keepdim=True)
                g_flat[b] += (g * w).sum(dim=0)
                o += k1 - k0
            self.ig_forwards += r1 - r0
        with torch.enable_grad():
            (g_cls,) = torch.autograd.grad(tm, leaf, grad_outputs=g_flat.view_as(tm))
            (g_reg,) = torch.autograd.grad(self.regulariser(leaf, idx).sum(), leaf)
        return g_cls * self.grad_scale + g_reg

    # -- line search -----------------------------------------------------------------------------
    @torch.no_grad()
    def line_search(
        self, masks: Tensor, grad: Tensor, loss: Tensor, idx: Tensor, first: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Armijo backtracking for every image at once, ``ls_group`` rungs per forward.

        Each image walks the ladder from its own start rung: the top, or with ``ls_warm`` that
        many rungs above its last accepted step (``first``: the top for all). Returns
        ``(accepted (n,) bool, new masks, new objective (n,), step (n,))``; rows that found no
        acceptable step keep their masks, objective and a step of 0.
        """
        cfg, ladder = self.cfg, self.ladder
        n, n_rungs, group = masks.shape[0], ladder.numel(), cfg.ls_group
        gnorm2 = grad.flatten(1).pow(2).sum(dim=1)
        accepted = torch.zeros(n, dtype=torch.bool, device=self.device)
        new_masks, new_loss = masks.clone(), loss.clone()
        step = torch.zeros(n, device=self.device)
        if first or cfg.ls_warm is None:
            start = torch.zeros(n, dtype=torch.long, device=self.device)
        else:
            start = (self.rung[idx] - cfg.ls_warm).clamp_min(0)
        pending = torch.arange(n, device=self.device)
        offsets = torch.arange(group, device=self.device)
        ones = (1,) * (masks.dim() - 1)
        for g0 in range(0, n_rungs, group):
            rungs = start[pending, None] + g0 + offsets  # (p, group)
            live = rungs[:, 0] < n_rungs  # images with ladder left
            pending, rungs = pending[live], rungs[live]
            if pending.numel() == 0:
                break
            valid = rungs < n_rungs
            cand = ladder[rungs.clamp_max(n_rungs - 1)]
            trial = masks[pending, None] - cand.view(-1, group, *ones) * grad[pending, None]
            trial = trial.clamp_(0, 1)
            f = torch.full(valid.shape, torch.inf, device=self.device)
            f[valid] = self.objective(trial[valid], idx[pending, None].expand_as(rungs)[valid])
            ok = valid & (f <= loss[pending, None] - cfg.armijo_c * cand * gnorm2[pending, None])
            hit = ok.any(dim=1)
            local = hit.nonzero().squeeze(1)
            first_ok = ok[local].to(torch.uint8).argmax(dim=1)  # first rung satisfying Armijo
            rows = pending[local]
            new_masks[rows] = trial[local, first_ok]
            new_loss[rows] = f[local, first_ok]
            step[rows] = cand[local, first_ok]
            accepted[rows] = True
            self.rung[idx[rows]] = rungs[local, first_ok]
            pending = pending[~hit]
        return accepted, new_masks, new_loss, step

    # -- MP2-G refill ----------------------------------------------------------------------------
    def refill_due(self, it: int) -> bool:
        """Whether the inpainted baseline is recomputed before iteration ``it`` of this stage
        (iterations counted over coarse-to-fine stages)."""
        if self.removal is None:
            return False
        g = it + self.it_offset
        return g > 0 and g % self.removal.config.every == 0

    @torch.no_grad()
    def refill(self, masks: Tensor, active: Tensor) -> Tensor:
        """MP2-G: the baseline of every image of ``active`` whose deletion mask has salient
        pixels becomes the inpainter's fill of the binarised top-``top`` saliency of its
        upsampled deletion mask (one batched call); ``diff`` follows. Returns those images'
        global indices."""
        cfg, top = self.cfg, self.removal.config.top
        sal = 1.0 - upsample_mask(masks[active, 0], self.size)  # (n, 1, H, W)
        # bilinear upsampling of an all-ones mask may give 1 - 6e-8: not a salient pixel
        sal = torch.where(sal > _SALIENT_EPS, sal, 0.0)
        has = (sal.flatten(1) > 0).any(dim=1)
        rows = active[has]
        if rows.numel() == 0:
            return rows
        m_b = binarise_top(sal[has], top).to(self.images.dtype)
        new = self.removal(
            self.images[rows], m_b, blur_kernel=cfg.blur_kernel, blur_sigma=cfg.blur_sigma
        )
        self.baseline[rows] = new
        self.diff[rows] = self.images[rows] - new
        return rows

    # -- main loop -------------------------------------------------------------------------------
    def run(self, start: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Optimises from ``start`` ``(B, n_masks, 1, s', s')`` (resized to ``mask_size``;
        default all ones) for ``cfg.iterations`` -> masks ``(B, n_masks, 1, s, s)`` and stats."""
        cfg, b, dev = self.cfg, self.images.shape[0], self.device
        s = cfg.mask_size
        if start is None:
            masks = torch.ones(b, self.n_masks, 1, s, s, device=dev)
        else:
            masks = upsample_mask(start.flatten(0, 1), (s, s)).view(b, self.n_masks, 1, s, s)
            masks = masks.clamp(0, 1)
        active = torch.arange(b, device=dev)
        loss = self.objective(masks, active)
        iterations = torch.zeros(b, dtype=torch.long)
        updates = torch.zeros(b, dtype=torch.long)
        failures = torch.zeros(b, dtype=torch.long, device=dev)
        steps: list[list[float]] = [[] for _ in range(b)]
        # plain objective of every image after each iteration (cloned: on CPU .cpu() aliases)
        history = [loss.cpu().clone()]
        converged = torch.zeros(b, dtype=torch.bool)
        for it in range(cfg.iterations):
            if active.numel() == 0:
                break
            if self.refill_due(it):
                t0 = time.perf_counter()
                rows = self.refill(masks, active)
                if rows.numel():
                    before_refill = loss[rows].clone()
                    loss[rows] = self.objective(masks[rows], rows)  # Armijo: the new baseline
                    rows_cpu = rows.cpu()
                    self.refills[rows_cpu] += 1
                    # ``tol`` measures progress, not the jump a new baseline makes: the
                    # history of refilled images is shifted by it
                    jump = (loss[rows] - before_refill).cpu()
                    for past in history:
                        past[rows_cpu] += jump
                sync(dev)
                self.refill_seconds += time.perf_counter() - t0
            current = masks[active]
            grad = self.gradient(current, active, it)
            ok, new, new_loss, step = self.line_search(
                current, grad, loss[active], active, first=it == 0
            )
            done = active[ok]
            masks[done] = new[ok]
            loss[done] = new_loss[ok]
            failures[active] = torch.where(ok, 0, failures[active] + 1)
            active_cpu = active.cpu()
            iterations[active_cpu] += 1
            updates[active_cpu[ok.cpu()]] += 1
            for i, st in zip(active_cpu.tolist(), step.cpu().tolist(), strict=True):
                steps[i].append(st)
            history.append(loss.cpu().clone())
            # Images whose step collapsed ``ls_patience`` times in a row are frozen, and so are
            # images whose objective stopped improving (``tol`` over ``tol_window`` iterations).
            keep = failures[active] < cfg.ls_patience
            if cfg.tol > 0 and len(history) > cfg.tol_window:
                before, now = history[-1 - cfg.tol_window], history[-1]
                stalled = ((before - now) <= cfg.tol * before.abs().clamp_min(1.0))[active_cpu]
                converged[active_cpu[stalled]] = True
                keep &= ~stalled.to(dev)
            active = active[keep]
        stats = {
            "iterations": iterations.tolist(),
            "updates": updates.tolist(),
            "stopped_early": [int(i) < cfg.iterations for i in iterations.tolist()],
            "step_sizes": steps,
            "final_objective": loss.cpu().tolist(),
            "converged": converged.tolist(),
            "objective_history": torch.stack(history, dim=1).tolist(),
            "refills": self.refills.tolist(),
            "refill_seconds": self.refill_seconds,
        }
        return masks, stats


def _merge_stage_stats(before: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """Per-image stats over coarse-to-fine stages: iterations, updates and step sizes add up;
    the objective (history, final value, convergence) is the last stage's, since a coarser
    mask's objective is not comparable."""
    if not before:
        return stage
    out = dict(stage)
    for key in ("iterations", "updates", "step_sizes", "refills"):
        out[key] = [a + b for a, b in zip(before[key], stage[key], strict=True)]
    out["refill_seconds"] = before["refill_seconds"] + stage["refill_seconds"]
    out["stopped_early"] = [
        a or b for a, b in zip(before["stopped_early"], stage["stopped_early"], strict=True)
    ]
    return out


def _optimise(
    net: nn.Module,
    x: Tensor,
    base: Tensor,
    targets: Tensor,
    objective: Objective,
    cfg: IGOSConfig,
    seeds: list[int],
    device: torch.device,
    activation: str,
    removal: Removal | None = None,
) -> tuple[Tensor, dict[str, Any], dict[str, Any]]:
    """Runs the coarse-to-fine stages (just ``mask_size`` without ``coarse``), each stage's masks
    upsampled into the next -> masks ``(N, n_masks, 1, s, s)``, per-image stats (merged over
    the stages) and the run's counts (stages, forward images, chunk rows). With an
    ``"inpaint"`` ``removal`` each stage starts from the previous stage's inpainted baseline."""
    masks, stats, stages = None, {}, []
    ig_forwards = ls_forwards = it_offset = 0
    opt = None
    for side, iters in (*cfg.coarse, (cfg.mask_size, cfg.iterations)):
        stage_cfg = replace(cfg, mask_size=side, iterations=iters, coarse=())
        opt = _Optimizer(
            net,
            x,
            base,
            targets,
            objective,
            stage_cfg,
            seeds,
            device,
            it_offset,
            activation,
            removal,
        )
        masks, stage = opt.run(masks)
        base = opt.baseline
        stats = _merge_stage_stats(stats, stage)
        stages.append({"mask_size": side, "iterations": stage["iterations"]})
        ig_forwards, ls_forwards = ig_forwards + opt.ig_forwards, ls_forwards + opt.ls_forwards
        it_offset += iters
    counts = {"stages": stages, "ig": ig_forwards, "ls": ls_forwards, "rows": opt.batch_size}
    return masks, stats, counts


#: stream tag of the ``"noise"`` filler drawn from an image's noise seed
_FILLER_STREAM = 0x6E6F697365

_CALL_OPTIONS = ("device", "activation", "baseline", "noise_seeds", "removal")


class IGOSFamily(Explainer):
    """iGOS++ and I-GOS as registered explainers: one optimiser, two :class:`Objective` s.

    Settings come as an :class:`IGOSConfig`; :meth:`default_config` starts from a preset
    (:data:`~.config.PRESETS`, default :data:`~.config.DEFAULT_PRESET`).
    """

    config_class = IGOSConfig
    removes = True
    objective: ClassVar[Objective]

    def default_config(self, preset: str | None = None, **overrides: Any) -> IGOSConfig:
        """``IGOSConfig.preset(preset, **overrides)``: ``preset`` one of ``"paper"``,
        ``"balanced"``, ``"fast"`` (``None``: the default preset); ``None`` overrides are
        ignored; unknown keys raise ``TypeError`` listing the valid ones."""
        given = {k: v for k, v in overrides.items() if v is not None}
        check_keys(self.name, given, ["preset", *CONFIG_FIELDS])
        return IGOSConfig.preset(preset or DEFAULT_PRESET, **given)

    def describe(self, config: IGOSConfig) -> dict[str, Any]:
        """``{"method", "preset" (the config's preset name or None), "settings"}``."""
        cfg = self.checked(config)
        return {"method": self.name, "preset": cfg.preset_name, "settings": cfg.to_dict()}

    def explain(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Targets,
        config: IGOSConfig | None = None,
        *,
        device: torch.device | str | None = None,
        activation: str = "softmax",
        baseline: Baseline = "blur",
        noise_seeds: Sequence[int] | Tensor | None = None,
        removal: RemovalConfig | Removal | str | None = None,
    ) -> SaliencyResult:
        """Optimised masks of every (image, target) pair (:meth:`Explainer.explain`).

        Args:
            model: classifier returning logits ``(N, num_classes)``; put in eval mode with
                parameter gradients off for the call, both restored afterwards; never moved.
            images: ``(B, C, H, W)`` float, already preprocessed for ``model``.
            targets: ``(B,)`` class indices (an int = same class for all; ``None`` = the model's
                predictions) or ``(B, T)``: every image is explained for each of its ``T``
                classes, in ``B*T`` rows, image 0's targets first (each image is repeated ``T``
                times; by default its repeats share its noise stream, see ``noise_seeds``).
            config: an :class:`IGOSConfig` (``None``: :meth:`default_config`).
            device: where to compute; default the model's device. Results come back on
                ``images.device``.
            activation: ``"softmax"`` (``f_c`` = softmax probability of class ``c``) or
                ``"sigmoid"`` (``f_c = sigmoid(logit_c)``, per-finding multi-label logits).
            baseline: ``"blur"`` (Gaussian, ``blur_kernel``/``blur_sigma``) or a tensor
                broadcastable to ``images``.
            noise_seeds: one int per image naming its noise stream; default a hash of ``seed``
                and the image's pixels, so an image gets the same mask alone or in any batch.
            removal: how removed pixels are filled (:mod:`~.removal`): ``None`` or ``"blur"``
                -> ``baseline`` (unchanged); ``"grey"`` / ``"noise"`` -> that fixed filler
                (noise from each image's noise stream); ``"inpaint"`` -> MP2-G, the
                inpainter's fill of the binarised deletion mask, refilled every ``every``
                iterations (the blur until the mask has salient pixels). A
                :class:`~.removal.RemovalConfig`, an operator name, or a built
                :class:`~.removal.Removal` (its inpainter shared, e.g. with the metrics).
                Other operators than ``"blur"`` do not combine with a tensor ``baseline``.
        """
        cfg = self.checked(config)
        check_activation(activation)
        check_images(images)
        start = time.perf_counter()
        out_device = images.device
        dev = resolve_device(model, images, device)
        rem = Removal.for_baseline(removal, baseline, device=dev)
        operator = "blur" if rem is None else rem.operator
        x = images.detach().to(dev, torch.float32)
        with frozen_model(model), torch.no_grad():
            base = make_baseline(x, baseline, cfg.blur_kernel, cfg.blur_sigma)
            x, tgt, per_image = pair_up(model, x, targets)
            if per_image > 1:
                base = base.repeat_interleave(per_image, dim=0)
            seeds = resolve_noise_seeds(x, cfg.seed, noise_seeds, per_image)
            if operator in ("grey", "noise"):
                base = rem.filler(x, seed=[mix_seed(s, _FILLER_STREAM) for s in seeds])
            net, folded = fold_batchnorm(model) if cfg.fold_bn else (model, 0)
            masks, stats, counts = _optimise(
                net, x, base, tgt, self.objective, cfg, seeds, dev, activation, rem
            )
        sync(dev)
        stats["removal"] = rem.describe() if rem is not None else RemovalConfig().describe()
        counts.update(
            seconds=time.perf_counter() - start,
            device=str(dev),
            folded=folded,
            extra=x.shape[0] if targets is None else 0,
            per_image=per_image,
        )
        return self._result(masks.detach().to(out_device), tgt.to(out_device), stats, counts, cfg)

    def _result(
        self,
        masks: Tensor,
        targets: Tensor,
        stats: dict[str, Any],
        counts: dict[str, Any],
        cfg: IGOSConfig,
    ) -> SaliencyResult:
        b, seconds, ig_forwards = masks.shape[0], counts["seconds"], counts["ig"]
        forwards = ig_forwards + counts["ls"] + counts["extra"]
        has_insertion = self.objective.n_masks == 2
        stats.update(
            {
                "method": self.name,
                "images": b,
                "stages": counts["stages"],
                "forward_images": forwards,
                "backward_images": ig_forwards,
                "ig_forward_images": ig_forwards,
                "line_search_forward_images": counts["ls"],
                "forward_images_per_image": forwards / b,
                "backward_images_per_image": ig_forwards / b,
                "seconds": seconds,
                "seconds_per_image": seconds / b,
                "device": counts["device"],
                "batch_size": counts["rows"],
                "folded_batchnorms": counts["folded"],
                "insertion_mask": has_insertion,
                "targets_per_image": counts["per_image"],
                "config": cfg.to_dict(),
            }
        )
        deletion = masks[:, 0]
        insertion = masks[:, 1] if has_insertion else None
        combined = deletion * insertion if insertion is not None else deletion
        return SaliencyResult(
            deletion_mask=deletion,
            insertion_mask=insertion,
            mask=combined,
            targets=targets,
            method=self.name,
            stats=stats,
        )


class IGOSPPExplainer(IGOSFamily):
    """iGOS++: deletion and insertion masks optimised with bilateral total variation."""

    name = "igospp"
    title = "iGOS++"
    objective = IGOSPP_OBJECTIVE


class IGOSExplainer(IGOSFamily):
    """I-GOS: one deletion mask, ``f(del(M)) + l1*mean|1-M| + l2*TV(M)`` (plain TV, as the
    reference's ``IGOS``)."""

    name = "igos"
    title = "I-GOS"
    objective = IGOS_OBJECTIVE


IGOSPP = register_explainer(IGOSPPExplainer())
IGOS = register_explainer(IGOSExplainer())


def resolve_config(config: IGOSConfig | None, settings: dict[str, Any]) -> IGOSConfig:
    """``config`` (default ``IGOSConfig()``) with every key of ``settings`` on top, whatever
    its value: a keyword equal to its default overrides the config too. Unknown keys raise
    ``TypeError`` listing the valid ones."""
    check_keys("IGOS", settings, CONFIG_FIELDS)
    if config is None:
        return IGOSConfig(**settings)
    if not isinstance(config, IGOSConfig):
        raise TypeError(f"config: expected an IGOSConfig, got {type(config).__name__}")
    return replace(config, **settings)


def _call(
    explainer: IGOSFamily,
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    config: IGOSConfig | None,
    settings: dict[str, Any],
) -> SaliencyResult:
    """The keyword form of :meth:`IGOSFamily.explain` behind :func:`igospp` and :func:`igos`."""
    check_keys("IGOS", settings, [*CONFIG_FIELDS, *_CALL_OPTIONS])
    options = {k: settings.pop(k) for k in _CALL_OPTIONS if k in settings}
    cfg = resolve_config(config, settings)
    return explainer.explain(model, images, targets, cfg, **options)


def igospp(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    *,
    config: IGOSConfig | None = None,
    **settings: Any,
) -> SaliencyResult:
    """iGOS++ saliency: deletion and insertion masks optimised with bilateral perturbations.

    The keyword form of ``get_explainer("igospp").explain`` (:meth:`IGOSFamily.explain`, which
    documents ``model``, ``images``, ``targets`` and the call options).

    Args:
        config: a whole :class:`IGOSConfig` (default ``IGOSConfig()``, the reference's settings
            with convergence stopping).
        **settings: any :class:`IGOSConfig` field (``mask_size``, ``iterations``, ``ig_steps``,
            ``l1``, ``l2``, ``noise``, ``batch_size``, ``seed``, ``init_step``, ``amp``, ...),
            each overriding ``config`` whatever its value; and the call options ``device``,
            ``activation``, ``baseline``, ``noise_seeds``, ``removal`` (a
            :class:`~.removal.RemovalConfig`: ``"inpaint"`` is MP2-G, the inpainted baseline).

    Returns:
        :class:`SaliencyResult` with ``deletion_mask``, ``insertion_mask`` and
        ``mask = deletion_mask * insertion_mask``, each ``(N, 1, s, s)`` in [0, 1] (0 = salient),
        ``N = B`` (or ``B*T`` for ``(B, T)`` targets).
    """
    return _call(IGOSPP, model, images, targets, config, settings)


def igos(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    *,
    config: IGOSConfig | None = None,
    **settings: Any,
) -> SaliencyResult:
    """I-GOS saliency: one deletion mask minimising ``f(del(M)) + l1*mean|1-M| + l2*TV(M)``
    (plain TV, as the reference's ``IGOS``); same optimiser and arguments as :func:`igospp`.

    Returns:
        :class:`SaliencyResult` with ``deletion_mask = mask`` ``(N, 1, s, s)`` in [0, 1]
        (0 = salient) and ``insertion_mask = None``.
    """
    return _call(IGOS, model, images, targets, config, settings)
