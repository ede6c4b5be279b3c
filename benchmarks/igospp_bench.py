"""Batched iGOS++ engine vs. the one-image-at-a-time reference loop, same model and images.

Runs :func:`benchmarks.igospp_reference.igospp_one_at_a_time` on each image, then
:func:`xraydebug.saliency.igospp` on all images at once, scores both mask sets with the same
:func:`xraydebug.saliency.deletion_insertion`, and prints seconds, forward/backward image counts
and deletion/insertion AUC per image for both, with PASS/FAIL against the target

    speed-up >= 10, engine deletion <= reference deletion + 0.01,
    engine insertion >= reference insertion - 0.01.

Usage (from the repository root)::

    python -m benchmarks.igospp_bench --model /tmp/bench.pt --data /tmp/bench-data \\
        --n-images 8 --json bench.json

See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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

TARGET_SPEEDUP = 10.0
AUC_TOLERANCE = 0.01

HOW_TO_MAKE_A_MODEL = """\
igospp_bench: --model is required (an xraydebug checkpoint) together with --data.
Make a small one (synthetic COVIDx-style data, CPU-friendly 'small' CNN):

    xraydebug synth /tmp/bench-data --n-train 600 --n-test 300 --size 512
    xraydebug train /tmp/bench-data --out /tmp/bench.pt

then run:

    python -m benchmarks.igospp_bench --model /tmp/bench.pt --data /tmp/bench-data
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="igospp_bench",
        description="Time the batched iGOS++ engine against a one-image-at-a-time loop that "
        "follows the reference implementation, and compare deletion/insertion AUC.",
    )
    p.add_argument("--model", type=Path, help="xraydebug checkpoint (.pt)")
    p.add_argument("--data", type=Path, help="COVIDx-layout dataset; images from its test split")
    p.add_argument("--n-images", type=int, default=8, help="test images to explain (default 8)")
    p.add_argument("--mask-size", type=int, default=28)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--ig-steps", type=int, default=15)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="engine: most images per model forward (default: the engine's own default)",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="engine: convergence tolerance (default: IGOSConfig's; 0 = run every iteration)",
    )
    p.add_argument("--seed", type=int, default=0, help="image choice and noise seeds")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--json", type=Path, help="write every number to this JSON file")
    p.add_argument(
        "--random-model",
        metavar="ARCH",
        help="development only: an untrained model of this registered architecture instead "
        "of --model (and random smooth images if --data is not given); AUCs are meaningless",
    )
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 when the target is not met")
    args = p.parse_args(argv)
    for name in ("n_images", "mask_size", "ig_steps", "batch_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.iterations < 0:
        p.error(f"--iterations: expected an int >= 0, got {args.iterations}")
    if args.tol is not None and args.tol < 0:
        p.error(f"--tol: expected a number >= 0, got {args.tol}")
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


# -- the two runs -----------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_reference(
    model: nn.Module, images: Tensor, targets: Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    dels, inss, per_image = [], [], []
    for i in range(images.shape[0]):
        m_del, m_ins, counts = igospp_one_at_a_time(
            model,
            images[i : i + 1],
            int(targets[i]),
            mask_size=args.mask_size,
            iterations=args.iterations,
            ig_steps=args.ig_steps,
            seed=args.seed + i,
        )
        dels.append(m_del)
        inss.append(m_ins)
        per_image.append(counts)
        evals = counts["line_search_evaluations"]
        print(
            f"  reference image {i + 1}/{images.shape[0]}: {counts['seconds']:.2f} s, "
            f"{counts['forward_images']} fwd / {counts['backward_images']} bwd images, "
            f"line search {sum(evals) / max(1, len(evals)):.1f} candidates/iteration",
            flush=True,
        )
    n = len(per_image)
    seconds = sum(c["seconds"] for c in per_image)
    evals = [e for c in per_image for e in c["line_search_evaluations"]]
    accepted = [a for c in per_image for a in c["accepted"]]
    return {
        "deletion_mask": torch.cat(dels),
        "insertion_mask": torch.cat(inss),
        "seconds": seconds,
        "seconds_per_image": seconds / n,
        "forward_images_per_image": sum(c["forward_images"] for c in per_image) / n,
        "backward_images_per_image": sum(c["backward_images"] for c in per_image) / n,
        "ig_forward_images_per_image": sum(c["ig_forward_images"] for c in per_image) / n,
        "line_search_forward_images_per_image": sum(
            c["line_search_forward_images"] for c in per_image
        )
        / n,
        "line_search_candidates_per_iteration": sum(evals) / max(1, len(evals)),
        "line_search_failures": accepted.count(False),
        "per_image": per_image,
    }


def run_engine(
    model: nn.Module, images: Tensor, targets: Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    from xraydebug.saliency import igospp

    start = time.perf_counter()
    result = igospp(
        model,
        images,
        targets,
        mask_size=args.mask_size,
        iterations=args.iterations,
        ig_steps=args.ig_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        **({} if args.tol is None else {"tol": args.tol}),
    )
    _sync(images.device)
    seconds = time.perf_counter() - start
    st = result.stats
    n = images.shape[0]
    return {
        "result": result,
        "seconds": seconds,
        "seconds_per_image": seconds / n,
        "engine_reported_seconds": st["seconds"],
        "forward_images_per_image": st["forward_images_per_image"],
        "backward_images_per_image": st["backward_images_per_image"],
        "ig_forward_images_per_image": st["ig_forward_images"] / n,
        "line_search_forward_images_per_image": st["line_search_forward_images"] / n,
        "iterations": st["iterations"],
        "stopped_early": sum(st["stopped_early"]),
        "converged": sum(st["converged"]),
        "batch_size": st["batch_size"],
        "config": st["config"],
    }


# -- report -----------------------------------------------------------------------------------


def verdict(ref: dict[str, Any], eng: dict[str, Any]) -> dict[str, Any]:
    speedup = ref["seconds_per_image"] / max(eng["seconds_per_image"], 1e-12)
    d_del = eng["deletion_auc_mean"] - ref["deletion_auc_mean"]
    d_ins = eng["insertion_auc_mean"] - ref["insertion_auc_mean"]
    checks = {
        "speedup": speedup >= TARGET_SPEEDUP,
        "deletion": d_del <= AUC_TOLERANCE,
        "insertion": d_ins >= -AUC_TOLERANCE,
    }
    return {
        "speedup": speedup,
        "deletion_difference": d_del,
        "insertion_difference": d_ins,
        "target": {
            "speedup_at_least": TARGET_SPEEDUP,
            "deletion_at_most_reference_plus": AUC_TOLERANCE,
            "insertion_at_least_reference_minus": AUC_TOLERANCE,
        },
        "checks": checks,
        "pass": all(checks.values()),
    }


def print_table(ref: dict[str, Any], eng: dict[str, Any], summary: dict[str, Any]) -> None:
    header = (
        f"{'method':<22}{'s/image':>10}{'fwd img/image':>15}{'bwd img/image':>15}"
        f"{'deletion AUC':>14}{'insertion AUC':>15}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, r in (("reference (1 image)", ref), ("engine (batched)", eng)):
        print(
            f"{name:<22}{r['seconds_per_image']:>10.3f}{r['forward_images_per_image']:>15.1f}"
            f"{r['backward_images_per_image']:>15.1f}{r['deletion_auc_mean']:>14.4f}"
            f"{r['insertion_auc_mean']:>15.4f}"
        )
    print()
    ok = {True: "PASS", False: "FAIL"}
    c = summary["checks"]
    print(
        f"speed-up            {summary['speedup']:8.2f}x   (target >= {TARGET_SPEEDUP:g}x)"
        f"          {ok[c['speedup']]}"
    )
    print(
        f"deletion  eng - ref {summary['deletion_difference']:+8.4f}    "
        f"(target <= +{AUC_TOLERANCE:g}, lower is better)  {ok[c['deletion']]}"
    )
    print(
        f"insertion eng - ref {summary['insertion_difference']:+8.4f}    "
        f"(target >= -{AUC_TOLERANCE:g}, higher is better) {ok[c['insertion']]}"
    )
    print(f"overall: {ok[summary['pass']]}")


def _jsonable(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if k != "gradients"}


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
    from xraydebug.saliency import deletion_insertion

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.random_model is not None:
        model, images, names, info = random_inputs(args, device)
    else:
        model, images, names, info = load_checkpoint_inputs(args, device)
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
    print(
        f"settings: mask {args.mask_size}, {args.iterations} iterations, {args.ig_steps} IG "
        f"steps, engine batch size {args.batch_size}, seed {args.seed}"
    )
    with torch.no_grad():
        targets = model(images).argmax(dim=1)  # explain the predicted class (not counted)

    print("reference: one image at a time ...", flush=True)
    ref = run_reference(model, images, targets, args)
    print("engine: all images batched ...", flush=True)
    eng = run_engine(model, images, targets, args)
    print(
        f"  engine: {eng['seconds']:.2f} s for {n} images, batch size {eng['batch_size']}, "
        f"iterations per image {eng['iterations']} (tol {eng['config']['tol']:g})",
        flush=True,
    )

    print("deletion / insertion AUC (same function for both) ...", flush=True)
    ref_sal = 1.0 - ref["deletion_mask"] * ref["insertion_mask"]
    for r, sal in ((ref, ref_sal), (eng, eng["result"])):
        d, i = deletion_insertion(model, images, targets, sal, steps=50)
        r["deletion_auc"], r["insertion_auc"] = d.tolist(), i.tolist()
        r["deletion_auc_mean"] = float(d.mean())
        r["insertion_auc_mean"] = float(i.mean())
    summary = verdict(ref, eng)
    print_table(ref, eng, summary)

    if args.json is not None:
        keys = (
            "seconds",
            "seconds_per_image",
            "forward_images_per_image",
            "backward_images_per_image",
            "ig_forward_images_per_image",
            "line_search_forward_images_per_image",
            "deletion_auc",
            "insertion_auc",
            "deletion_auc_mean",
            "insertion_auc_mean",
        )
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
                    "batch_size",
                    "tol",
                    "seed",
                )
            },
            "reference": {
                **{k: ref[k] for k in keys},
                "line_search_candidates_per_iteration": ref["line_search_candidates_per_iteration"],
                "line_search_failures": ref["line_search_failures"],
                "per_image": [_jsonable(c) for c in ref["per_image"]],
            },
            "engine": {
                **{k: eng[k] for k in keys},
                "engine_reported_seconds": eng["engine_reported_seconds"],
                "iterations": eng["iterations"],
                "stopped_early": eng["stopped_early"],
                "converged": eng["converged"],
                "config": eng["config"],
            },
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if args.fail_on_miss and not summary["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
