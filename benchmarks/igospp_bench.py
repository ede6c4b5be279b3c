"""iGOS++ presets vs. the one-image-at-a-time reference loop at paper settings: quality per second.

Runs :func:`benchmarks.igospp_reference.igospp_one_at_a_time` (the authors' control flow, paper
settings: 20 iterations, 15 IG points) on each image, then the engine
(:func:`xraydebug.saliency.igospp`) at a preset (:meth:`IGOSConfig.preset`; by default the
scan's, ``DEFAULT_PRESET``) on all images at once, scores every mask set with the same
:func:`xraydebug.saliency.deletion_insertion`, and prints seconds, forward/backward image counts
and deletion/insertion AUC per image, with PASS/FAIL against the target

    speed-up >= 10, preset deletion <= reference deletion + 0.01,
    preset insertion >= reference insertion - 0.01.

The engine's own ``paper`` preset (the same settings as the reference, far less seed noise) is
run too, as a second, stricter baseline: the preset's speed-up and AUC differences against it
are printed in the same table, without targets. Both are rerun with ``--reference-seeds`` /
``--engine-seeds`` noise seeds, so that a difference can be told from seed-to-seed noise;
``--curve`` runs every preset (the quality-per-second curve); ``--cache DIR`` keeps the
reference's masks and timings between runs, keyed by model, image, settings, seed, machine,
device and the reference's code (``igospp_reference.py`` and the xraydebug modules it imports).
A speed-up whose reference seconds came from the cache says so.

Usage (from the repository root)::

    python -m benchmarks.igospp_bench --model /tmp/bench.pt --data /tmp/bench-data \\
        --n-images 16 --json bench.json

See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    from benchmarks.igospp_reference import igospp_one_at_a_time
except ModuleNotFoundError:  # run as a script: python benchmarks/igospp_bench.py
    from igospp_reference import igospp_one_at_a_time

from xraydebug.fsutil import file_sha256
from xraydebug.saliency.config import DEFAULT_PRESET, PRESETS, IGOSConfig

TARGET_SPEEDUP = 10.0
AUC_TOLERANCE = 0.01
SEED_STRIDE = 1000  # noise seed of repeat r: seed + r * SEED_STRIDE (+ image index, reference)

HOW_TO_MAKE_A_MODEL = """\
igospp_bench: --model is required (an xraydebug checkpoint) together with --data.
Make a small one (synthetic COVIDx-style set at 256 px, CPU-friendly 'small' CNN):

    xraydebug synth /tmp/bench-data --n-train 480 --n-test 240 --size 256 --seed 3
    xraydebug train /tmp/bench-data --out /tmp/bench.pt --arch small --epochs 30

then run:

    python -m benchmarks.igospp_bench --model /tmp/bench.pt --data /tmp/bench-data
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="igospp_bench",
        description="Time iGOS++ presets against a one-image-at-a-time loop that follows the "
        "reference implementation at paper settings, and compare deletion/insertion AUC.",
    )
    p.add_argument("--model", type=Path, help="xraydebug checkpoint (.pt)")
    p.add_argument("--data", type=Path, help="COVIDx-layout dataset; images from its test split")
    p.add_argument("--n-images", type=int, default=16, help="test images to explain (default 16)")
    p.add_argument("--mask-size", type=int, default=28, help="mask side for every method")
    p.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help=f"engine preset compared with the reference (default: the scan's, {DEFAULT_PRESET})",
    )
    p.add_argument(
        "--curve", action="store_true", help="run every preset (quality-per-second curve)"
    )
    p.add_argument(
        "--iterations", type=int, default=20, help="reference (and 'paper' preset) iterations"
    )
    p.add_argument(
        "--ig-steps", type=int, default=15, help="reference (and 'paper' preset) IG points"
    )
    p.add_argument(
        "--reference-seeds", type=int, default=3, help="reference reruns with other noise seeds"
    )
    p.add_argument(
        "--engine-seeds", type=int, default=3, help="engine reruns with other noise seeds"
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "auto"),
        default="fp32",
        help="engine: fp32 (the target's), or auto = the preset's amp (bf16 where native)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="engine: most images per model forward (default: the engine's own default)",
    )
    p.add_argument("--cache", type=Path, help="folder keeping reference masks and timings")
    p.add_argument("--seed", type=int, default=0, help="image choice and noise seeds")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--json", type=Path, help="write every number to this JSON file")
    p.add_argument("--plot", type=Path, help="--curve: write the curve as a PNG")
    p.add_argument(
        "--random-model",
        metavar="ARCH",
        help="development only: an untrained model of this registered architecture instead "
        "of --model (and random smooth images if --data is not given); AUCs are meaningless",
    )
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 when the target is not met")
    args = p.parse_args(argv)
    for name in (
        "n_images",
        "mask_size",
        "ig_steps",
        "batch_size",
        "threads",
        "reference_seeds",
        "engine_seeds",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.iterations < 0:
        p.error(f"--iterations: expected an int >= 0, got {args.iterations}")
    return args


# -- inputs -----------------------------------------------------------------------------------


def load_test_images(
    data: Path, n_images: int, seed: int, preprocessing: Any
) -> tuple[Tensor, list[str], list[str | None]]:
    """``n_images`` usable test images of ``data`` (a seeded sample, sorted by path) as gray
    ``(N, 1, S, S)`` in [0, 1] at the model's size and crop, with their paths and labels."""
    from xraydebug.data.layouts import load_index
    from xraydebug.data.torch_dataset import load_resized

    records = load_index(data).usable("test")
    if not records:
        raise SystemExit(f"igospp_bench: {data}: no usable test images")
    chosen = sorted(
        random.Random(seed).sample(records, min(n_images, len(records))), key=lambda r: r.path
    )
    size, crop = preprocessing.input_size, preprocessing.crop_top
    gray = [torch.from_numpy(load_resized(Path(data) / r.path, size, crop)) for r in chosen]
    return torch.stack(gray).unsqueeze(1), [r.path for r in chosen], [r.label for r in chosen]


def load_checkpoint_inputs(
    args: argparse.Namespace, device: torch.device
) -> tuple[nn.Module, Tensor, list[str], dict[str, Any]]:
    """Model, ``(N, C, S, S)`` model inputs, image names and a description of both."""
    from xraydebug.models.checkpoint import load_model

    loaded = load_model(args.model, device)
    pre = loaded.preprocessing
    gray, names, labels = load_test_images(args.data, args.n_images, args.seed, pre)
    info = {
        "model": str(args.model),
        "arch": loaded.arch,
        "classes": list(loaded.classes),
        "input_size": pre.input_size,
        "data": str(args.data),
        "labels": labels,
    }
    return loaded.model, pre.normalize(gray.to(device)), names, info


def random_inputs(
    args: argparse.Namespace, device: torch.device
) -> tuple[nn.Module, Tensor, list[str], dict[str, Any]]:
    """Development stand-in: an untrained registered architecture and random smooth images
    (or the test images of ``--data``)."""
    from xraydebug.models.architectures import build_model, get_arch
    from xraydebug.saliency import blur_baseline

    spec = get_arch(args.random_model)
    torch.manual_seed(args.seed)
    model = build_model(args.random_model, num_classes=3).eval().to(device)
    pre = spec.preprocessing
    if args.data is not None:
        gray, names, _ = load_test_images(args.data, args.n_images, args.seed, pre)
    else:
        gen = torch.Generator().manual_seed(args.seed)
        s = pre.input_size
        gray = torch.rand(args.n_images, 1, s, s, generator=gen)
        gray = blur_baseline(gray, kernel=2 * (s // 16) + 1, sigma=s / 32)
        lo = gray.amin(dim=(1, 2, 3), keepdim=True)
        hi = gray.amax(dim=(1, 2, 3), keepdim=True)
        gray = (gray - lo) / (hi - lo)
        names = [f"random-{i}" for i in range(args.n_images)]
    info = {
        "model": None,
        "arch": args.random_model,
        "random_model": True,
        "input_size": pre.input_size,
        "data": None if args.data is None else str(args.data),
    }
    return model, pre.normalize(gray.to(device)), names, info


# -- the runs ---------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_sources() -> tuple[Path, ...]:
    """The reference loop's code: its module and the xraydebug modules it imports."""
    from xraydebug.saliency import masks, runtime

    here = Path(__file__).with_name("igospp_reference.py")
    return (here, Path(masks.__file__), Path(runtime.__file__))


REFERENCE_SOURCES = _reference_sources()


class ReferenceCache:
    """Reference masks, counts and seconds per (model, image, settings, seed, machine, device,
    reference code), so the slow loop runs once per image, machine and device (``--cache``): a
    CUDA run never reuses CPU seconds, and an edit of ``igospp_reference.py`` or of the
    xraydebug modules it imports invalidates every entry. Entries are written atomically."""

    def __init__(self, folder: Path | None, model_id: str, device: str) -> None:
        from xraydebug.device import machine_info

        self.folder, self.model_id, self.device = folder, model_id, device
        self.machine = machine_info()  # once: it reads /proc/cpuinfo
        self.reference_sha256 = [file_sha256(path) for path in REFERENCE_SOURCES]
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, image: Tensor, settings: dict[str, Any]) -> Path:
        key = {
            "model": self.model_id,
            "image": hashlib.sha256(image.detach().cpu().float().numpy().tobytes()).hexdigest(),
            "settings": settings,
            "machine": self.machine,
            "device": self.device,
            "reference_sha256": self.reference_sha256,
            "torch": torch.__version__,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.folder / f"{digest}.pt"

    def get(self, image: Tensor, settings: dict[str, Any]) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        path = self._path(image, settings)
        return torch.load(path, weights_only=False) if path.is_file() else None

    def put(self, image: Tensor, settings: dict[str, Any], entry: dict[str, Any]) -> None:
        if self.folder is None:
            return
        path = self._path(image, settings)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(entry, tmp)
        tmp.replace(path)


def run_reference(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    args: argparse.Namespace,
    repeat: int,
    cache: ReferenceCache,
) -> dict[str, Any]:
    """The reference loop over the images at paper settings, noise seeds of ``repeat``."""
    dels, inss, per_image = [], [], []
    cached = 0
    for i in range(images.shape[0]):
        settings = {
            "mask_size": args.mask_size,
            "iterations": args.iterations,
            "ig_steps": args.ig_steps,
            "target": int(targets[i]),
            "seed": args.seed + i + repeat * SEED_STRIDE,
        }
        entry = cache.get(images[i], settings)
        if entry is None:
            m_del, m_ins, counts = igospp_one_at_a_time(
                model,
                images[i : i + 1],
                int(targets[i]),
                mask_size=args.mask_size,
                iterations=args.iterations,
                ig_steps=args.ig_steps,
                seed=settings["seed"],
            )
            entry = {"deletion_mask": m_del.cpu(), "insertion_mask": m_ins.cpu(), "counts": counts}
            cache.put(images[i], settings, entry)
            print(
                f"  reference seed set {repeat}, image {i + 1}/{images.shape[0]}: "
                f"{counts['seconds']:.2f} s, {counts['forward_images']} fwd / "
                f"{counts['backward_images']} bwd images",
                flush=True,
            )
        else:
            cached += 1
        dels.append(entry["deletion_mask"].to(images.device))
        inss.append(entry["insertion_mask"].to(images.device))
        per_image.append(entry["counts"])
    if cached:
        print(f"  reference seed set {repeat}: {cached} image(s) from the cache", flush=True)
    n = len(per_image)
    seconds = sum(c["seconds"] for c in per_image)
    return {
        "mask": torch.cat(dels) * torch.cat(inss),
        "seconds_per_image": seconds / n,
        "forward_images_per_image": sum(c["forward_images"] for c in per_image) / n,
        "backward_images_per_image": sum(c["backward_images"] for c in per_image) / n,
        "cached_images": cached,
    }


def engine_config(name: str, args: argparse.Namespace, repeat: int) -> IGOSConfig:
    """The preset ``name`` at the bench's mask size and seed; the 'paper' preset takes the
    reference's ``--iterations`` / ``--ig-steps``; ``--precision fp32`` turns autocast off."""
    overrides: dict[str, Any] = {
        "mask_size": args.mask_size,
        "seed": args.seed + repeat * SEED_STRIDE,
        "batch_size": args.batch_size,
    }
    if name == "paper":
        overrides.update(iterations=args.iterations, ig_steps=args.ig_steps)
    if args.precision == "fp32":
        overrides["amp"] = False
    return IGOSConfig.preset(name, **overrides)


def run_engine(
    model: nn.Module, images: Tensor, targets: Tensor, config: IGOSConfig
) -> dict[str, Any]:
    from xraydebug.saliency import get_explainer

    start = time.perf_counter()
    result = get_explainer("igospp").explain(model, images, targets, config)
    _sync(images.device)
    seconds = time.perf_counter() - start
    st = result.stats
    return {
        "mask": result.mask,
        "seconds_per_image": seconds / images.shape[0],
        "forward_images_per_image": st["forward_images_per_image"],
        "backward_images_per_image": st["backward_images_per_image"],
        "iterations": st["iterations"],
        "batch_size": st["batch_size"],
        "config": st["config"],
    }


def run_method(
    name: str,
    runs: list[dict[str, Any]],
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
) -> dict[str, Any]:
    """Scores every seed's masks and folds the seeds into means and spreads."""
    from xraydebug.saliency import deletion_insertion

    for run in runs:
        d, i = deletion_insertion(model, images, targets, 1.0 - run.pop("mask"), steps=50)
        run["deletion_auc"], run["insertion_auc"] = d.tolist(), i.tolist()
        run["deletion_auc_mean"], run["insertion_auc_mean"] = float(d.mean()), float(i.mean())

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in runs)

    def spread(key: str) -> float:
        return statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0

    return {
        "name": name,
        "seeds": len(runs),
        "seconds_per_image": mean("seconds_per_image"),
        "forward_images_per_image": mean("forward_images_per_image"),
        "backward_images_per_image": mean("backward_images_per_image"),
        "deletion_auc_mean": mean("deletion_auc_mean"),
        "insertion_auc_mean": mean("insertion_auc_mean"),
        "deletion_auc_sd": spread("deletion_auc_mean"),
        "insertion_auc_sd": spread("insertion_auc_mean"),
        "runs": runs,
    }


# -- report -----------------------------------------------------------------------------------


def compare(base: dict[str, Any], eng: dict[str, Any]) -> dict[str, float]:
    """``eng`` against ``base`` (two :func:`run_method` results): how many times faster, and
    its deletion and insertion AUC minus the base's."""
    return {
        "speedup": base["seconds_per_image"] / max(eng["seconds_per_image"], 1e-12),
        "deletion_difference": eng["deletion_auc_mean"] - base["deletion_auc_mean"],
        "insertion_difference": eng["insertion_auc_mean"] - base["insertion_auc_mean"],
    }


def verdict(ref: dict[str, Any], eng: dict[str, Any]) -> dict[str, Any]:
    """``eng`` against the reference loop, with the targets' checks."""
    difference = compare(ref, eng)
    speedup = difference["speedup"]
    d_del, d_ins = difference["deletion_difference"], difference["insertion_difference"]
    checks = {
        "speedup": speedup >= TARGET_SPEEDUP,
        "deletion": d_del <= AUC_TOLERANCE,
        "insertion": d_ins >= -AUC_TOLERANCE,
    }
    return {
        "preset": eng["name"],
        "speedup": speedup,
        "deletion_difference": d_del,
        "insertion_difference": d_ins,
        "reference_deletion_sd": ref["deletion_auc_sd"],
        "reference_insertion_sd": ref["insertion_auc_sd"],
        "target": {
            "speedup_at_least": TARGET_SPEEDUP,
            "deletion_at_most_reference_plus": AUC_TOLERANCE,
            "insertion_at_least_reference_minus": AUC_TOLERANCE,
        },
        "checks": checks,
        "pass": all(checks.values()),
    }


def print_table(methods: list[dict[str, Any]]) -> None:
    header = (
        f"{'method':<22}{'s/image':>9}{'fwd img':>9}{'bwd img':>9}{'seeds':>6}"
        f"{'deletion AUC (sd)':>20}{'insertion AUC (sd)':>21}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in methods:
        print(
            f"{r['name']:<22}{r['seconds_per_image']:>9.3f}{r['forward_images_per_image']:>9.0f}"
            f"{r['backward_images_per_image']:>9.0f}{r['seeds']:>6}"
            f"{r['deletion_auc_mean']:>12.4f} ({r['deletion_auc_sd']:.4f})"
            f"{r['insertion_auc_mean']:>13.4f} ({r['insertion_auc_sd']:.4f})"
        )


def print_comparison(summary: dict[str, Any]) -> None:
    """The preset against the reference (the headline, with its checks) and against the
    engine's own ``paper`` preset (the stricter bar), in one table."""
    ok = {True: "PASS", False: "FAIL"}
    c = summary["checks"]
    print(
        f"\npreset '{summary['preset']}' against      speed-up (>= {TARGET_SPEEDUP:g}x)   "
        f"deletion diff (<= +{AUC_TOLERANCE:g})   insertion diff (>= -{AUC_TOLERANCE:g})"
    )
    print(
        f"{'the reference at paper settings':<33}{summary['speedup']:7.2f}x {ok[c['speedup']]}"
        f"{summary['deletion_difference']:+17.4f} {ok[c['deletion']]}"
        f"{summary['insertion_difference']:+19.4f} {ok[c['insertion']]}"
    )
    vs = summary.get("against_paper_preset")
    if vs is not None:
        print(
            f"{'the engine, preset paper':<33}{vs['speedup']:7.2f}x     "
            f"{vs['deletion_difference']:+17.4f}     {vs['insertion_difference']:+19.4f}"
        )
    print(f"overall (against the reference): {ok[summary['pass']]}")
    cached, total = summary["reference_cached_images"], summary["reference_images"]
    if cached:
        print(
            f"NOTE: the reference's seconds of {cached} of {total} image runs were read from the "
            "cache: measured by an earlier run on this machine and device with the same "
            "settings and reference code, not in this run (the engine's were measured now)"
        )


def plot_curve(methods: list[dict[str, Any]], title: str, out: Path) -> None:
    """Deletion and insertion AUC (mean +- seed sd) against seconds per image, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, key, better in (
        (axes[0], "deletion", "lower is better"),
        (axes[1], "insertion", "higher is better"),
    ):
        for r in methods:
            marker = "s" if r["name"].startswith("reference") else "o"
            label = r["name"] if marker == "s" else f"preset {r['name']}"
            ax.errorbar(
                r["seconds_per_image"],
                r[f"{key}_auc_mean"],
                yerr=r[f"{key}_auc_sd"],
                fmt=marker,
                capsize=3,
            )
            ax.annotate(
                label,
                (r["seconds_per_image"], r[f"{key}_auc_mean"]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("seconds per image (log scale)")
        ax.set_ylabel(f"{key} AUC ({better})")
    fig.suptitle(title, fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.random_model is None and (args.model is None or args.data is None):
        print(HOW_TO_MAKE_A_MODEL, file=sys.stderr)
        return 2
    if args.model is not None and not args.model.is_file():
        print(f"igospp_bench: {args.model}: no such checkpoint.\n", file=sys.stderr)
        print(HOW_TO_MAKE_A_MODEL, file=sys.stderr)
        return 2

    from xraydebug.device import machine_info, machine_line, resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.random_model is not None:
        model, images, names, info = random_inputs(args, device)
        model_id = f"random:{args.random_model}:{args.seed}"
    else:
        model, images, names, info = load_checkpoint_inputs(args, device)
        model_id = file_sha256(args.model)
    env = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine_info(),
    }
    print(machine_line())
    n = images.shape[0]
    print(
        f"torch {env['torch']}, {env['torch_threads']} threads, device {env['device']} "
        f"({env['device_name']}); {n} images {tuple(images.shape[1:])}, arch {info['arch']}"
    )
    if info.get("random_model"):
        print("DEVELOPMENT RUN: untrained model, AUCs say nothing about saliency quality")
    # the engine's own 'paper' preset is the second, stricter baseline of every run
    presets = [p for p in PRESETS if args.curve or p in (args.preset, "paper")]
    print(
        f"mask {args.mask_size}; reference at {args.iterations} iterations, {args.ig_steps} IG "
        f"points, {args.reference_seeds} seed set(s); preset(s) {', '.join(presets)} "
        f"({args.precision}), {args.engine_seeds} seed(s); seed {args.seed}"
    )
    with torch.no_grad():
        targets = model(images).argmax(dim=1)  # explain the predicted class (not counted)

    cache = ReferenceCache(args.cache, model_id, f"{env['device']} ({env['device_name']})")
    print("reference: one image at a time, paper settings ...", flush=True)
    ref_runs = [
        run_reference(model, images, targets, args, r, cache) for r in range(args.reference_seeds)
    ]
    reference = run_method("reference (1 image)", ref_runs, model, images, targets)
    methods = [reference]
    for name in presets:
        print(f"engine: preset '{name}', all images batched ...", flush=True)
        runs = [
            run_engine(model, images, targets, engine_config(name, args, r))
            for r in range(args.engine_seeds)
        ]
        print(
            f"  {name}: {runs[0]['seconds_per_image']:.2f} s/image, batch size "
            f"{runs[0]['batch_size']}, iterations per image {runs[0]['iterations']}",
            flush=True,
        )
        methods.append(run_method(name, runs, model, images, targets))
    main_preset = next(m for m in methods[1:] if m["name"] == args.preset)
    summary = verdict(reference, main_preset)
    summary["reference_cached_images"] = sum(r["cached_images"] for r in ref_runs)
    summary["reference_images"] = n * len(ref_runs)
    paper = next(m for m in methods[1:] if m["name"] == "paper")
    if main_preset is not paper:  # the stricter bar: the same engine at paper settings
        summary["against_paper_preset"] = compare(paper, main_preset)
    print_table(methods)
    print_comparison(summary)

    title = (
        f"iGOS++ quality per second, mask {args.mask_size}, {n} images, {args.precision}; "
        f"{machine_line()}"
    )
    if args.plot is not None:
        plot_curve(methods, title, args.plot)
        print(f"wrote {args.plot}")
    if args.json is not None:
        payload = {
            "environment": env,
            "inputs": {**info, "images": names, "targets": targets.tolist()},
            "settings": {
                k: getattr(args, k)
                for k in (
                    "n_images",
                    "mask_size",
                    "iterations",
                    "ig_steps",
                    "preset",
                    "curve",
                    "precision",
                    "batch_size",
                    "reference_seeds",
                    "engine_seeds",
                    "seed",
                )
            },
            "methods": methods,
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if args.fail_on_miss and not summary["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
