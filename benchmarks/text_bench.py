"""Box recall, false positives and seconds per film of the text detectors, at any film size.

Films: synthetic radiographs (``render_radiograph``) and the real CR ``RG1_UNCR.dcm`` resized,
at each of ``--sizes``; every other film carries 1-3 markers burned in by
:func:`xraydebug.data.markers.burn_marker`: lone "L"/"R" (50%), words, dates and site names,
plain, in a white or dark label or as low-contrast grey text (0.10-0.25 from the film), upright
(60%) or at any angle, 10-40 px tall (at most 8% of the film), near the corners and edges.
A marker counts as found when boxes grown by the cleaning dilation (3 px) cover at least 90% of
the pixels it changed visibly (by 8 grey levels or more: what inpainting must remove). A
text-free film with any box is a false positive. The real ``RG1_UNCR.dcm`` at its own size
must get no box. Films are cached in ``--cache`` (rendering a 3,000 px film takes seconds).

Usage (from the repository root)::

    python -m benchmarks.text_bench --n 12 --sizes 256 512 1024 2048 3000 --detectors auto
    python -m benchmarks.text_bench --detectors auto craft craft-global --json out.json
    python -m benchmarks.text_bench --synth-data demo-run/data   # the demo's own test films

Prints the CPU (model and ``torch.backends.cpu.get_cpu_capability()``) first.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from pydicom.data import get_testdata_file

from xraydebug.data.imageio import read_image
from xraydebug.data.markers import burn_marker
from xraydebug.data.synth import render_radiograph
from xraydebug.device import machine_info, machine_line
from xraydebug.text import (
    DetectorConfig,
    TextDetector,
    build_detector,
    detector_config,
    resolve_detector,
)

KINDS = ("letter", "word", "date", "site")
STYLES = ("plain", "white_box", "dark_box", "grey")


def _film(rng: np.random.Generator, size: int, real: np.ndarray | None) -> np.ndarray:
    if real is not None:
        interp = cv2.INTER_AREA if size < max(real.shape) else cv2.INTER_CUBIC
        return np.clip(cv2.resize(real, (size, size), interpolation=interp), 0, 1)
    label = str(rng.choice(["normal", "pneumonia", "COVID-19"]))
    return render_radiograph(rng, size, label)


def make_films(size: int, n: int, seed: int, cache: Path) -> list[tuple]:
    """``n`` films of ``size`` px: (image float32, markers, is_real); cached per (size, n, seed)."""
    path = cache / f"films-v2_{size}_{n}_{seed}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    real, _ = read_image(get_testdata_file("RG1_UNCR.dcm"))
    films = []
    for i in range(n):
        rng = np.random.default_rng([seed, size, i])
        is_real = i % 3 == 2
        image = np.round(_film(rng, size, real if is_real else None) * 255) / 255
        markers, boxes = [], []
        if i % 2 == 0:
            for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))):
                kind = str(rng.choice(KINDS, p=[0.5, 0.25, 0.125, 0.125]))
                style = str(rng.choice(STYLES, p=[0.4, 0.2, 0.1, 0.3]))
                angle = 0.0 if rng.random() < 0.6 else float(rng.uniform(0, 360))
                top = min(40.0 if kind == "letter" else 30.0, max(10.5, size * 0.08))
                cap = float(rng.uniform(10, top))
                image, marker = burn_marker(
                    image, rng, kind=kind, style=style, cap_px=cap, angle=angle, avoid=boxes
                )
                if marker is not None:
                    markers.append(marker)
                    boxes.append(marker.box)
        films.append((image.astype(np.float32), markers, is_real))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(films))
    return films


def coverage(mask: np.ndarray, boxes: list[list[int]], dilate: int = 3) -> float:
    covered = np.zeros(mask.shape, bool)
    for x0, y0, x1, y1 in boxes:
        covered[max(0, y0 - dilate) : y1 + dilate, max(0, x0 - dilate) : x1 + dilate] = True
    return float(covered[mask].mean())


def _detector(name: str, long_side: int | None = None) -> TextDetector:
    """Detector ``name`` on the CPU, loaded; ``long_side`` for the detectors that resize
    (``craft-global``), ignored by the others."""
    config: DetectorConfig = detector_config(name)
    if long_side is not None and hasattr(config, "long_side"):
        config = detector_config(name, long_side=long_side)
    return build_detector(config, device="cpu").load()


def _glyph_bin(cap: float) -> str:
    return "10-15" if cap < 15 else "15-20" if cap < 20 else "20-30" if cap < 30 else "30-40"


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    header = machine_info()
    print(machine_line())
    real, _ = read_image(get_testdata_file("RG1_UNCR.dcm"))
    films = {s: make_films(s, args.n, args.seed, Path(args.cache)) for s in args.sizes}
    results = {"header": header, "detectors": {}}
    for name in args.detectors:
        detector = _detector(name, args.long_side)
        detector.detect([films[args.sizes[0]][0][0]])  # warm-up
        found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        per_size = {}
        for size in args.sizes:
            n_markers = n_found = fp = free = 0
            start = time.perf_counter()
            outputs = [detector.detect([image])[0] for image, _, _ in films[size]]
            seconds = (time.perf_counter() - start) / len(films[size])
            for (_, markers, is_real), boxes in zip(films[size], outputs, strict=True):
                if not markers:
                    free += 1
                    fp += bool(boxes)
                for m in markers:
                    ok = coverage(m.visible, boxes) >= 0.9
                    n_markers += 1
                    n_found += ok
                    for key in (
                        f"kind {m.kind}",
                        f"style {m.style}",
                        f"glyph {_glyph_bin(m.cap_px)} px",
                        "rotated" if m.angle else "upright",
                        "real film" if is_real else "synthetic film",
                    ):
                        found[key][0] += ok
                        found[key][1] += 1
            per_size[size] = {
                "recall": [n_found, n_markers],
                "fp_films": [fp, free],
                "seconds_per_film": seconds,
            }
            print(
                f"{name:>12} {size:>5} px: markers found {n_found}/{n_markers}, "
                f"text-free films with a box {fp}/{free}, {seconds:.2f} s/film"
            )
        start = time.perf_counter()
        rg1 = detector.detect([real])[0]
        rg1_seconds = time.perf_counter() - start
        print(f"{name:>12} RG1_UNCR.dcm ({real.shape[1]}x{real.shape[0]}): {len(rg1)} box(es)")
        for key in sorted(found):
            print(f"{'':>12} {key:<20} {found[key][0]}/{found[key][1]}")
        results["detectors"][name] = {
            "resolved": resolve_detector(name),
            "detector": detector.describe(),
            "sizes": per_size,
            "breakdown": {k: v for k, v in sorted(found.items())},
            "rg1_boxes": rg1,
            "rg1_seconds": rg1_seconds,
        }
    return results


def synth_recall(data: Path, detector: str, split: str = "test") -> dict:
    """Markers found on a dataset written by ``xraydebug synth`` (its ``ground_truth.json``
    boxes): a marker is found when the detected boxes, grown by 3 px, cover 90% of its box."""
    truth = json.loads((data / "ground_truth.json").read_text())
    keys = sorted(k for k in truth if not k.startswith("_") and k.startswith(f"{split}/"))
    found = markers = fp = free = 0
    text_detector = _detector(detector)
    start = time.perf_counter()
    for key in keys:
        image, _ = read_image(data / key)
        boxes = text_detector.detect([image])[0]
        if not truth[key]["boxes"]:
            free += 1
            fp += bool(boxes)
        for x0, y0, x1, y1 in truth[key]["boxes"]:
            mask = np.zeros(image.shape, bool)
            mask[y0:y1, x0:x1] = True
            markers += 1
            found += coverage(mask, boxes) >= 0.9
    seconds = (time.perf_counter() - start) / max(len(keys), 1)
    print(
        f"{detector:>12} {data} [{split}]: markers found {found}/{markers}, text-free films "
        f"with a box {fp}/{free}, {seconds:.2f} s/film"
    )
    return {"recall": [found, markers], "fp_films": [fp, free], "seconds_per_film": seconds}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="text_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=12, help="films per size (half carry markers)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 3000])
    p.add_argument("--detectors", nargs="+", default=["auto"])
    p.add_argument("--long-side", type=int, default=768, help="craft-global resize")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="/tmp/xraydebug-text-bench")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--synth-data",
        default=None,
        help="instead: recall on the test split of a set written by `xraydebug synth`",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.synth_data:
        torch.set_num_threads(args.threads)
        header = machine_info()
        print(machine_line())
        results = {"header": header, "synth": {}}
        for name in args.detectors:
            results["synth"][name] = synth_recall(Path(args.synth_data), name)
    else:
        results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
