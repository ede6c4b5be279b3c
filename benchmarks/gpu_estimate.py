"""How long a scan would take on one GPU: model FLOPs per pass times passes per image.

No GPU is needed. The FLOPs of one forward and of one input-gradient backward (parameters
frozen, as in the engine) of a registered architecture are counted with
``torch.utils.flop_counter.FlopCounterMode``; the passes per image come from an
``igospp_bench`` JSON (the preset's measured forward/backward images per image) or from
``--forward`` / ``--backward``. The deletion/insertion metric (``2 x (steps + 1)`` forwards) and
the classification forward are added. The sustained throughput is an assumption you pass
(``--tflops``); the script prints the arithmetic, so every figure can be checked by hand::

    python -m benchmarks.gpu_estimate --arch covidnet --bench reports/igospp56.json \\
        --films 14000 --tflops 200

Text detection (CRAFT on the film at 1,280 px long side) is counted the same way when
``--text`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="covidnet", help="registered architecture (default covidnet)")
    p.add_argument("--bench", type=Path, help="igospp_bench --json output (passes per image)")
    p.add_argument("--preset", help="method name in --bench (default: its summary's preset)")
    p.add_argument("--forward", type=float, help="forward images per image (instead of --bench)")
    p.add_argument("--backward", type=float, help="backward images per image")
    p.add_argument("--metric-steps", type=int, default=50, help="deletion/insertion steps")
    p.add_argument("--films", type=int, default=14000, help="films to scan (default 14,000)")
    p.add_argument(
        "--tflops",
        type=float,
        nargs="+",
        default=[100.0, 200.0, 400.0],
        help="sustained TFLOP/s assumed (bf16; H200 dense peak is about 989)",
    )
    p.add_argument("--text", action="store_true", help="add CRAFT at 1,280 px per film")
    return p.parse_args(argv)


def pass_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
    """FLOPs of one forward and of one input-gradient backward for one input of ``shape``."""
    model.eval().requires_grad_(False)
    x = torch.zeros(1, *shape, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        y = model(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        y.float().sum().backward()
    return float(forward), float(counter.get_total_flops())


def forward_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    model.eval().requires_grad_(False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def passes_from_bench(path: Path, preset: str | None) -> tuple[str, float, float]:
    data: dict[str, Any] = json.loads(path.read_text())
    name = preset or data["summary"]["preset"]
    method = next(m for m in data["methods"] if m["name"] == name)
    return name, method["forward_images_per_image"], method["backward_images_per_image"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from xraydebug.models.architectures import build_model, get_arch

    if args.bench is not None:
        name, fwd, bwd = passes_from_bench(args.bench, args.preset)
        source = f"{args.bench} ({name})"
    elif args.forward is not None and args.backward is not None:
        fwd, bwd, source = args.forward, args.backward, "--forward/--backward"
    else:
        print("gpu_estimate: give --bench, or --forward and --backward", file=sys.stderr)
        return 2
    spec = get_arch(args.arch)
    pre = spec.preprocessing
    model = build_model(args.arch, num_classes=3)
    f_fwd, f_bwd = pass_flops(model, (pre.in_channels, pre.input_size, pre.input_size))
    metric = 2 * (args.metric_steps + 1) + 1  # deletion + insertion curves, classification
    explain = fwd * f_fwd + bwd * f_bwd
    total = explain + metric * f_fwd
    print(f"architecture {args.arch} at {pre.input_size} px:")
    print(f"  forward  {f_fwd / 1e9:8.2f} GFLOP per image")
    print(f"  backward {f_bwd / 1e9:8.2f} GFLOP per image (input gradient, parameters frozen)")
    print(f"passes per image from {source}: {fwd:.0f} forward, {bwd:.0f} backward")
    print(
        f"  explanation {fwd:.0f} x {f_fwd / 1e9:.2f} + {bwd:.0f} x {f_bwd / 1e9:.2f} = "
        f"{explain / 1e12:.2f} TFLOP; metric + classification {metric} x {f_fwd / 1e9:.2f} = "
        f"{metric * f_fwd / 1e12:.2f} TFLOP"
    )
    if args.text:
        from xraydebug.text.craft import CRAFT

        craft_fwd = forward_flops(CRAFT(), (3, 1280, 1280))
        print(f"  CRAFT at 1280 x 1280: {craft_fwd / 1e12:.2f} TFLOP per film")
        total += craft_fwd
    print(
        f"per film {total / 1e12:.2f} TFLOP; {args.films} films "
        f"{args.films * total / 1e15:.1f} PFLOP"
    )
    for tflops in args.tflops:
        hours = args.films * total / (tflops * 1e12) / 3600
        print(f"  at a sustained {tflops:g} TFLOP/s: {hours:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
