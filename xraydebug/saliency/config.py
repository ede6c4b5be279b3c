"""The frozen settings of one I-GOS / iGOS++ run.

Defaults follow the authors' reference implementation (github.com/khorrams/IGOS_pp) as it
actually ran: its ``main.py`` passes ``iterations=args.ig_iter, ig_iter=args.iterations``, so with
the argparse defaults (``ig_iter=20``, ``iterations=15``) the published numbers come from 20
optimisation iterations and 15 integrated-gradient points. Here each value has exactly one name
and goes to exactly one place (tested in ``tests/test_saliency.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class IGOSConfig:
    """Settings of :func:`xraydebug.saliency.igospp` and :func:`xraydebug.saliency.igos`.

    Attributes:
        mask_size: side ``s`` of the optimised ``s x s`` masks (28 at 224 input in the papers;
            up to the input size for "high resolution" masks).
        iterations: optimisation iterations ``T`` (each = one integrated gradient + line search).
        ig_steps: points ``K`` on the integrated-gradient path (``alpha_k = k / K``, k = 1..K).
        l1: weight of ``mean|1 - M|`` (keeps the salient area small).
        l2: weight of the (bilateral) total variation of the mask (keeps it smooth).
        noise: standard deviation of the Gaussian noise added to every perturbed input on the
            integrated-gradient path (in the model's input units, like the reference).
        blur_kernel: side of the Gaussian kernel of the blurred baseline (odd; clipped to the
            image size, see :func:`blur_baseline`). The reference uses 51 below 500 px input.
        blur_sigma: standard deviation of that kernel in pixels.
        btv_sigma2: the ``sigma^2`` in the bilateral weight ``exp(-(dI)^2 / sigma^2)``.
        tv_exponent: exponent of the mask differences in the total variation.
        btv_normalize: min-max normalise the grey image per image before the bilateral weights,
            so ``btv_sigma2`` means the same for [0, 1] and mean/std-normalised inputs.
        init_step: first step size tried by the backtracking line search, every iteration.
        step_decay: factor between successive step sizes tried (geometric ladder).
        armijo_c: sufficient-decrease constant ``c`` of the Armijo condition.
        min_step: smallest step size tried; an image whose line search finds no acceptable step
            down to this size stops (its masks are frozen).
        ls_patience: consecutive failed line searches after which an image is frozen (1 = stop
            at the first failure; larger values retry with the next iteration's fresh noise,
            which is what the reference's tiny fallback step amounts to).
        tol: convergence tolerance: an image is frozen once its (plain, noise-free) objective
            ``F`` has decreased by no more than ``tol * max(1, |F|)`` over the last
            ``tol_window`` iterations (``F`` is a sum of probabilities, so below 1 this is an
            absolute tolerance in probability units). ``0`` disables it (all ``iterations`` run
            unless the line search fails). The default was chosen on trained chest X-ray models
            (``benchmarks/README.md``): frozen masks then differ from 20-iteration masks by less
            than the run-to-run noise of the deletion/insertion scores.
        tol_window: iterations over which the decrease is measured (>= 1).
        ls_group: how many rungs of the step-size ladder are evaluated together in one batched
            forward (1 = classic sequential backtracking; larger trades forwards for latency).
        batch_size: most perturbed images per model forward/backward; ``None``: on CUDA as many
            as half the free memory holds (measured by a 2-row probe, at most 1024), on CPU about
            2M input elements (at most 32); a multiple of ``ig_steps`` where one fits
            (:func:`~.masks.rows_that_fit`, :func:`~.masks.device_batch_size`).
        seed: base seed of the per-image noise streams (see ``noise_seeds`` in ``igospp``).
        amp: run the integrated-gradient passes (forward + input-gradient backward) under
            ``torch.autocast``: on CUDA bfloat16 where supported, else float16; on CPU bfloat16
            where the CPU has native bf16 (AVX512-BF16 or AMX; elsewhere float32). The
            line-search objective, whose differences decide Armijo and ``tol``, and all mask
            arithmetic stay float32.
        alphas: placement of the ``K`` integrated-gradient points on the path. ``"uniform"``:
            ``alpha_k = k / K`` (the paper; a right Riemann sum of the path integral).
            ``"stratified"``: ``alpha_k = (k - u) / K`` with one ``u ~ U(0, 1)`` per image,
            iteration and term from the image's noise stream: an unbiased estimate of the same
            integral, so few points (``K = 3-5``) carry no Riemann bias.
        shared_noise: draw one noise tensor (and one ``u``) per image and iteration and use it
            for all four iGOS++ terms (common random numbers: the terms' noise no longer adds up
            independently in the summed gradient). ``False``: one draw per term (the paper).
        ls_warm: where each line search starts on the step ladder. ``None``: at ``init_step``
            every iteration (the paper). ``n``: ``n`` rungs above the image's last accepted
            step (a warm start; the first iteration of every stage starts at ``init_step``).
        coarse: stages optimised before the ``mask_size`` stage, as ``((side, iterations),
            ...)`` from coarse to fine; each stage's masks are upsampled bilinearly into the
            next stage's start. ``()``: one stage at ``mask_size`` (the paper).
        channels_last: feed the model ``channels_last`` tensors on CUDA.
        fold_bn: run a private copy of the model in which each ``Conv2d`` directly followed by a
            ``BatchNorm2d`` in an ``nn.Sequential`` is merged into one convolution (same function
            up to rounding, eval mode; see :func:`~.runtime.fold_batchnorm`); the caller's model is
            never modified. ``False`` runs the model as given.
        preset_name: the preset these settings started from (set by :meth:`preset`; ``None``:
            none). A label for ``run.json`` and the report only: not a setting, so it is left
            out of :meth:`to_dict` and of ``==`` / ``hash``, and never changes the masks.
    """

    mask_size: int = 28
    iterations: int = 20
    ig_steps: int = 15
    l1: float = 1.0
    l2: float = 20.0
    noise: float = 0.2
    blur_kernel: int = 51
    blur_sigma: float = 50.0
    btv_sigma2: float = 0.01
    tv_exponent: float = 2
    btv_normalize: bool = True
    init_step: float = 1000.0
    step_decay: float = 0.2
    armijo_c: float = 1e-4
    min_step: float = 1e-5
    ls_group: int = 4
    ls_patience: int = 1
    tol: float = 1e-3
    tol_window: int = 3
    batch_size: int | None = None
    seed: int = 0
    amp: bool = True
    alphas: str = "uniform"
    shared_noise: bool = False
    ls_warm: int | None = None
    coarse: tuple[tuple[int, int], ...] = ()
    channels_last: bool = True
    fold_bn: bool = True
    preset_name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:  # JSON gives lists: keep a hashable tuple of pairs
            object.__setattr__(self, "coarse", tuple(tuple(stage) for stage in self.coarse))
        except TypeError:
            raise ValueError(
                f"IGOSConfig.coarse: expected (side, iterations) pairs, got {self.coarse!r}"
            ) from None

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"IGOSConfig.{name}: expected {expected}, got {value!r}")

        need(_is_int(self.mask_size) and self.mask_size >= 1, "mask_size", "an int >= 1")
        need(_is_int(self.iterations) and self.iterations >= 0, "iterations", "an int >= 0")
        need(_is_int(self.ig_steps) and self.ig_steps >= 1, "ig_steps", "an int >= 1")
        need(self.l1 >= 0, "l1", "a number >= 0")
        need(self.l2 >= 0, "l2", "a number >= 0")
        need(self.noise >= 0, "noise", "a number >= 0")
        need(
            _is_int(self.blur_kernel) and self.blur_kernel >= 1 and self.blur_kernel % 2 == 1,
            "blur_kernel",
            "an odd int >= 1",
        )
        need(self.blur_sigma > 0, "blur_sigma", "a number > 0")
        need(self.btv_sigma2 > 0, "btv_sigma2", "a number > 0")
        need(self.tv_exponent >= 1, "tv_exponent", "a number >= 1")
        need(self.init_step > 0, "init_step", "a number > 0")
        need(0 < self.step_decay < 1, "step_decay", "a number in (0, 1)")
        need(self.armijo_c >= 0, "armijo_c", "a number >= 0")
        need(0 < self.min_step <= self.init_step, "min_step", "a number in (0, init_step]")
        need(_is_int(self.ls_group) and self.ls_group >= 1, "ls_group", "an int >= 1")
        need(self.tol >= 0, "tol", "a number >= 0")
        need(_is_int(self.tol_window) and self.tol_window >= 1, "tol_window", "an int >= 1")
        need(_is_int(self.ls_patience) and self.ls_patience >= 1, "ls_patience", "an int >= 1")
        need(
            self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1),
            "batch_size",
            "None or an int >= 1",
        )
        need(_is_int(self.seed), "seed", "an int")
        need(self.alphas in ALPHA_PLACEMENTS, "alphas", f"one of {ALPHA_PLACEMENTS}")
        need(
            self.ls_warm is None or (_is_int(self.ls_warm) and self.ls_warm >= 0),
            "ls_warm",
            "None or an int >= 0",
        )
        need(
            all(
                len(stage) == 2 and all(_is_int(v) and v >= 1 for v in stage)
                for stage in self.coarse
            ),
            "coarse",
            "a tuple of (side >= 1, iterations >= 1) pairs",
        )
        need(
            self.preset_name is None or self.preset_name in PRESETS,
            "preset_name",
            f"None or one of {sorted(PRESETS)}",
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> IGOSConfig:
        """The settings of a named preset (:data:`PRESETS`), with ``overrides`` on top.

        ``mask_size`` is not part of a preset: pass it (28 in the papers, 56 in ``scan``).
        The result remembers ``name`` in :attr:`preset_name`.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown iGOS++ preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides, "preset_name": name})

    def step_ladder(self) -> list[float]:
        """The step sizes the line search may try: ``init_step * step_decay**n >= min_step``."""
        steps = [float(self.init_step)]
        while steps[-1] * self.step_decay >= self.min_step:
            steps.append(steps[-1] * self.step_decay)
        return steps

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form of the settings, e.g. for ``run.json`` (without ``preset_name``)."""
        out = asdict(self)
        del out["preset_name"]
        return out


@dataclass(frozen=True)
class GradCAMConfig:
    """Settings of :func:`xraydebug.saliency.gradcam`.

    Attributes:
        layer: name (in ``model.named_modules()``) of the layer whose output is used; ``None``:
            the last ``nn.Conv2d``.
        batch_size: images per forward/backward; ``None``: about 16M input elements per chunk.
    """

    layer: str | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.layer is not None and not isinstance(self.layer, str):
            raise ValueError(
                "GradCAMConfig.layer: expected None or a module name (str), "
                f"got {type(self.layer).__name__}"
            )
        if self.batch_size is not None and not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise ValueError(
                f"GradCAMConfig.batch_size: expected None or an int >= 1, got {self.batch_size!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ALPHA_PLACEMENTS = ("uniform", "stratified")

#: Named settings (``IGOSConfig.preset``, ``scan --preset``), from the paper's to the fastest
#: that keeps its deletion/insertion quality (``benchmarks/README.md``, "quality per second").
PRESETS: dict[str, dict[str, Any]] = {
    # The paper as the authors' code ran it: 20 iterations, 15 uniform IG points, one noise
    # draw per term, the step ladder restarted at every iteration, every iteration run.
    "paper": {
        "iterations": 20,
        "ig_steps": 15,
        "alphas": "uniform",
        "shared_noise": False,
        "ls_warm": None,
        "coarse": (),
        "tol": 0.0,
    },
    "balanced": {
        "iterations": 12,
        "ig_steps": 4,
        "alphas": "stratified",
        "shared_noise": False,
        "ls_warm": 1,
        "coarse": (),
        "tol": 1e-3,
    },
    "fast": {
        "iterations": 10,
        "ig_steps": 3,
        "alphas": "stratified",
        "shared_noise": False,
        "ls_warm": 1,
        "coarse": (),
        "tol": 1e-3,
    },
}
DEFAULT_PRESET = "balanced"

#: The settings of :class:`IGOSConfig` (its fields but the ``preset_name`` label).
CONFIG_FIELDS: frozenset[str] = frozenset(
    f.name for f in fields(IGOSConfig) if f.name != "preset_name"
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
