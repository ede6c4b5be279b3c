"""Seconds per image of CRAFT text detection (the ``craft-global`` detector).

Renders ``--n`` text-free synthetic radiographs per ``--sizes`` (512 and 1024 px by default) and
times ``detect`` for every combination of ``--long-sides`` (1280, 960) and
``--batch-sizes`` (1, 4), after one untimed warm-up pass. The network sees the image resized to
``long_side``, so the cost depends on ``long_side`` far more than on the film size. The table
also counts boxes found: the films have no text, so every box is a false positive.

Usage (from the repository root)::

    python -m benchmarks.craft_bench --n 4 --threads 2 --device cpu

Weights: craft_mlt_25k.pth (c) NAVER Corp., MIT licence (Baek et al., CRAFT, CVPR 2019).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from xraydebug.data.synth import render_radiograph
from xraydebug.device import machine_line, resolve_device
from xraydebug.text import CraftGlobalConfig, build_detector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="craft_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4, help="images per film size (default 4)")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--long-sides", type=int, nargs="+", default=[1280, 960])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: leave torch's default)"
    )
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    warm = build_detector(CraftGlobalConfig(long_side=256), device=str(device)).load()
    load_s = time.perf_counter() - start
    films = {
        size: [
            render_radiograph(np.random.default_rng(seed), size, ("normal", "pneumonia")[seed % 2])
            for seed in range(args.n)
        ]
        for size in args.sizes
    }
    print(machine_line())
    print(
        f"craft_bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"load+verify {load_s:.2f} s, 1-min load average {os.getloadavg()[0]:.1f}"
    )
    # warm-up: first-call allocations and kernel selection
    warm.detect(films[args.sizes[0]][:1])

    header = f"{'film':>6} {'long_side':>9} {'batch':>5} {'s/image':>8} {'boxes (FP)':>10}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for long_side in args.long_sides:
            for batch in args.batch_sizes:
                config = CraftGlobalConfig(long_side=long_side, batch_size=batch)
                detector = build_detector(config, device=str(device)).load()  # not timed
                _sync(device)
                start = time.perf_counter()
                found = detector.detect(films[size])
                _sync(device)
                per_image = (time.perf_counter() - start) / len(films[size])
                n_boxes = sum(len(b) for b in found)
                print(f"{size:>6} {long_side:>9} {batch:>5} {per_image:>8.2f} {n_boxes:>10}")


if __name__ == "__main__":
    main()
