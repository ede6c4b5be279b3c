"""Text in the wild: box recall, box-area precision, false positives and seconds per film,
judged on fonts and renderers the detector never saw.

**Films.** Synthetic radiographs (``render_radiograph``) and the real CR ``RG1_UNCR.dcm``
resized, at each of ``--sizes`` (256-3,000 px). Two thirds carry 1-3 markers drawn by
:func:`xraydebug.data.wild_text.burn_wild_marker`; the rest are text-free. Half the films of
either kind also carry clutter that is not text (:mod:`xraydebug.data.clutter`: wires, ECG
leads, tubes, catheters, rulers, clips, jewellery). A third of the films are then JPEG-compressed
(quality 70-90) and a third blurred as by resampling (down 1.5-3x and back), after the markers
are burned in.

**Markers** (ranges sampled, per marker):

- kind: lone side letter "L"/"R" (40%), word (20%), date (20%), 2-3 line block (20%);
- capital height: log-uniform from 8 px to 10% of the film (words, dates and blocks: at most
  what keeps them within 45% of the film's width);
- angle: upright (45%), a quarter turn (90 or 270 degrees, 20%), any angle (35%);
- label: none (60%), on a bright label (20%), on a dark label (20%); without a label the ink is
  brighter or darker than the film (50/50);
- contrast: full (the ink at white or black, 35%) or 0.10-0.50 from its surround (65%); where
  the chosen polarity cannot reach half of it (dark ink on a black corner), the other one;
- opacity 1 (80%) or 0.5-0.9 (half-transparent, 20%);
- renderer: the font's outlines (TrueType/OpenType via FreeType), or stencil-like (the same
  letters cut by thin bridges, 15% of letters), or, held out only, Hershey-style single-stroke
  faces drawn as polylines (a quarter of held-out markers, stroke weight 0.7-1.6x; OpenCV 5's
  ``putText`` no longer draws the Hershey fonts).

**Fonts.** ``--fonts heldout`` (the default, the figure to report) draws from whole families
that are in neither the bundled nor the tuning set
(:func:`xraydebug.data.fonts.font_set`); the output lists each face with its package and
sha256. ``--fonts tuning`` is the set any threshold may be chosen on and the side-letter
network was trained on (use another seed than its training films).

**Scores.** A marker is found when the boxes, grown by 3 px (the cleaning dilation), cover at
least 90% of the pixels it changed visibly (by 8 grey levels or more, label included).
*Box-area precision* is the share of the predicted box area (the union of the boxes, per film,
summed over the films with text) that lies inside the markers' boxes grown by 3 px: a box over
the whole film finds everything and scores near 0; label growth and merged boxes show up in it.
A text-free film with any box is a false positive, reported with and without clutter. The real
``RG1_UNCR.dcm`` (text-free) must get no box; the real ``RG3_UNCR.dcm`` carries a mirrored lead
"R" that must be found. Rows print Wilson 95% intervals; the targets of the issue "Text in the
wild" are checked at the end.

Usage (from the repository root)::

    python -m benchmarks.text_bench                       # held-out fonts, default detector
    python -m benchmarks.text_bench --fonts tuning --seed 1
    python -m benchmarks.text_bench --detectors craft-global --n 6 --long-side 1280
    python -m benchmarks.text_bench --synth-data demo-run/data   # a `xraydebug synth` set

Prints the CPU (model and ``torch.backends.cpu.get_cpu_capability()``) first. Films are
cached in ``--cache`` (rendering a 3,000 px film takes seconds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from pydicom.data import get_testdata_file

from xraydebug.data.clutter import add_clutter
from xraydebug.data.fonts import Face, face_sha256, font_set
from xraydebug.data.imageio import read_image
from xraydebug.data.synth import render_radiograph
from xraydebug.data.wild_text import WildMarker, burn_wild_marker, degrade, wild_text
from xraydebug.device import machine_info, machine_line
from xraydebug.models.metrics import wilson_interval
from xraydebug.text import DetectorConfig, TextDetector, build_detector, detector_config

GROW_PX = 3  # the cleaning dilation: boxes and marker boxes are grown by this much
COVERAGE = 0.9  # share of a marker's visible pixels the grown boxes must cover
HEIGHT_BINS = (8, 16, 32, 64, 128)  # glyph-height rows: [8, 16), ..., [128, 10% of the film]
TARGETS = {
    "recall": 0.98,
    "row_recall": 0.95,
    "fp_share": 0.02,
    "precision": 0.5,
    "seconds_1024": 0.5,
    "seconds_3000": 1.5,
}
MIN_ROW = 60  # rows with fewer markers are marked as too small to judge


@dataclass
class Film:
    """One benchmark film: the image float32 ``(H, W)`` in [0, 1], its markers, whether it
    carries clutter, how it was degraded, whether it is the real film resized."""

    image: np.ndarray
    markers: list[WildMarker]
    clutter: bool
    degradation: str
    real: bool
    faces: list[str] = field(default_factory=list)


def _cap_range(size: int, kind: str, text: str) -> float:
    """The largest capital height for ``text`` on a ``size`` px film (10% of the film, and a
    multi-character text within 45% of its width)."""
    top = 0.10 * size
    if kind == "letter":
        return top
    widest = max(len(line) for line in text.split("\n"))
    return min(top, 0.45 * size / (0.75 * widest))


def _marker(
    image: np.ndarray, rng: np.random.Generator, faces: tuple[Face, ...], avoid: list, hershey: bool
) -> tuple[np.ndarray, WildMarker | None]:
    size = max(image.shape)
    kind = str(rng.choice(["letter", "word", "date", "block"], p=[0.4, 0.2, 0.2, 0.2]))
    truetype = [f for f in faces if f.renderer == "truetype"]
    strokes = [f for f in faces if f.renderer == "hershey"]
    face = (
        strokes[int(rng.integers(len(strokes)))]
        if hershey and strokes and rng.random() < 0.25
        else truetype[int(rng.integers(len(truetype)))]
    )
    text = wild_text(rng, kind)
    top = _cap_range(size, kind, text)
    cap = float(np.exp(rng.uniform(np.log(8.0), np.log(max(top, 8.5)))))
    turn = rng.random()
    angle = (
        0.0
        if turn < 0.45
        else float(rng.choice([90.0, 270.0]))
        if turn < 0.65
        else float(rng.uniform(0, 360))
    )
    label = str(rng.choice(["none", "bright", "dark"], p=[0.6, 0.2, 0.2]))
    contrast = 1.0 if rng.random() < 0.35 else float(rng.uniform(0.10, 0.50))
    opacity = 1.0 if rng.random() < 0.8 else float(rng.uniform(0.5, 0.9))
    polarity = str(rng.choice(["bright", "dark"]))
    settings = dict(
        face=face,
        kind=kind,
        text=text,
        cap_px=cap,
        angle=angle,
        label=label,
        contrast=contrast,
        opacity=opacity,
        stencil=face.renderer == "truetype" and kind == "letter" and rng.random() < 0.15,
        thickness=float(rng.uniform(0.7, 1.6)),
        avoid=avoid,
    )
    state = rng.bit_generator.state
    out, marker = burn_wild_marker(image, rng, polarity=polarity, **settings)
    if label == "none" and marker is not None and marker.contrast < 0.5 * contrast:
        # dark ink on a black corner (or bright on white) cannot show: the other polarity,
        # at the same place
        rng.bit_generator.state = state
        other = "dark" if polarity == "bright" else "bright"
        out, marker = burn_wild_marker(image, rng, polarity=other, **settings)
    return out, marker


def make_films(size: int, n: int, seed: int, fonts: str, cache: Path) -> list[Film]:
    """``n`` films of ``size`` px (see the module doc), cached per (size, n, seed, fonts)."""
    path = cache / f"wild-v2_{fonts}_{size}_{n}_{seed}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    real, _ = read_image(get_testdata_file("RG1_UNCR.dcm"))
    faces = font_set(fonts)
    films = []
    for i in range(n):
        rng = np.random.default_rng([seed, size, i])
        is_real = i % 4 == 3
        if is_real:
            interp = cv2.INTER_AREA if size < max(real.shape) else cv2.INTER_CUBIC
            image = np.clip(cv2.resize(real, (size, size), interpolation=interp), 0, 1)
        else:
            image = render_radiograph(rng, size, str(rng.choice(["normal", "pneumonia"])))
        image = (np.round(image * 255) / 255).astype(np.float32)
        markers: list[WildMarker] = []
        if i % 3 != 2:
            for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))):
                image, marker = _marker(
                    image, rng, faces, [m.box for m in markers], fonts == "heldout"
                )
                if marker is not None:
                    markers.append(marker)
        has_clutter = bool(rng.random() < 0.5)
        if has_clutter:
            image, _ = add_clutter(image, rng, avoid=[m.box for m in markers])
        degradation = ("none", "jpeg", "resample")[i % 3 if i % 2 else (i // 2) % 3]
        image, _ = degrade(image, rng, degradation)
        films.append(Film(image.astype(np.float32), markers, has_clutter, degradation, is_real))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(films))
    return films


def grown_mask(shape: tuple[int, int], boxes: list[list[int]], grow: int = GROW_PX) -> np.ndarray:
    """bool ``shape``: the union of ``boxes`` grown by ``grow`` px on every side, clipped."""
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0 - grow) : max(0, y1 + grow), max(0, x0 - grow) : max(0, x1 + grow)] = True
    return mask


def coverage(visible: np.ndarray, boxes: list[list[int]], grow: int = GROW_PX) -> float:
    """Share of ``visible`` (bool ``(H, W)``) covered by ``boxes`` grown by ``grow`` px."""
    if not visible.any():
        return 1.0
    return float(grown_mask(visible.shape, boxes, grow)[visible].mean())


def box_area(shape: tuple[int, int], boxes: list[list[int]], truth: list[list[int]]) -> tuple:
    """``(predicted pixels, of which inside the truth boxes grown by 3 px)`` of one film; the
    predicted area is the union of ``boxes`` (not grown)."""
    predicted = grown_mask(shape, boxes, 0)
    inside = predicted & grown_mask(shape, truth)
    return int(predicted.sum()), int(inside.sum())


def _height_row(cap: float) -> str:
    edges = [*HEIGHT_BINS, None]
    for lo, hi in itertools.pairwise(edges):
        if hi is None or cap < hi:
            return f"height {lo}-{hi} px" if hi else f"height {lo}+ px (to 10%)"
    raise AssertionError(cap)


def _angle_row(angle: float) -> str:
    if angle % 360 == 0:
        return "angle upright"
    if angle % 90 == 0:
        return "angle quarter turn"
    return "angle any"


def _contrast_row(contrast: float) -> str:
    return (
        "contrast <0.2"
        if contrast < 0.2
        else "contrast 0.2-0.4"
        if contrast < 0.4
        else ("contrast >=0.4")
    )


def marker_rows(marker: WildMarker, film: Film, size: int) -> list[str]:
    """The table rows one marker counts in."""
    renderer = "stencil" if marker.stencil else marker.renderer
    return [
        "all",
        f"kind {marker.kind}",
        _height_row(marker.cap_px),
        _angle_row(marker.angle),
        f"polarity {marker.polarity}",
        _contrast_row(marker.contrast),
        f"label {marker.label}",
        "opacity <1" if marker.opacity < 1 else "opacity 1",
        f"renderer {renderer}",
        f"film {size} px",
        f"compression {film.degradation}",
        "film real (resized)" if film.real else "film synthetic",
        "clutter on film" if film.clutter else "no clutter",
    ]


def _detector(name: str, long_side: int | None = None) -> TextDetector:
    config: DetectorConfig = detector_config(name)
    if long_side is not None and hasattr(config, "long_side"):
        config = detector_config(name, long_side=long_side)
    return build_detector(config, device="cpu").load()


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"found": k, "of": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def evaluate(detector: TextDetector, films: dict[int, list[Film]]) -> dict:
    """Every score of one detector on the films (by size)."""
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fp = {"clutter": [0, 0], "no clutter": [0, 0]}
    area = [0, 0]
    seconds: dict[int, float] = {}
    misses = []
    for size, group in films.items():
        start = time.perf_counter()
        outputs = [detector.detect([film.image])[0] for film in group]
        seconds[size] = (time.perf_counter() - start) / len(group)
        for film, boxes in zip(group, outputs, strict=True):
            if not film.markers:
                key = "clutter" if film.clutter else "no clutter"
                fp[key][0] += bool(boxes)
                fp[key][1] += 1
                continue
            pixels, inside = box_area(film.image.shape, boxes, [m.box for m in film.markers])
            area[0] += pixels
            area[1] += inside
            for m in film.markers:
                ok = coverage(m.visible, boxes) >= COVERAGE
                for row in marker_rows(m, film, size):
                    rows[row][0] += ok
                    rows[row][1] += 1
                if not ok:
                    misses.append(
                        f"{size} px {m.kind} {m.text!r} {m.face}{' stencil' if m.stencil else ''} "
                        f"cap {m.cap_px:.0f} angle {m.angle:.0f} {m.polarity}/{m.label} "
                        f"contrast {m.contrast:.2f} opacity {m.opacity:.2f} {film.degradation}"
                    )
    n_fp = sum(v[0] for v in fp.values())
    n_free = sum(v[1] for v in fp.values())
    return {
        "rows": {k: _rate(*v) for k, v in sorted(rows.items())},
        "fp_films": {**{k: _rate(*v) for k, v in fp.items()}, "all": _rate(n_fp, n_free)},
        "box_area_precision": area[1] / area[0] if area[0] else None,
        "seconds_per_film": seconds,
        "misses": misses,
    }


# RG3_UNCR.dcm's lead "R": x0, y0, x1, y1 of its strokes (pixels above 0.4 in the window
# x 1130-1223, y 1370-1489 of the film as read_image returns it)
RG3_R_BOX = [1149, 1389, 1218, 1471]


def real_films(detector: TextDetector) -> dict:
    """The real CR films from pydicom's test data at their own size: RG1 (text-free) and RG3
    (a mirrored lead "R" near its bottom right corner, :data:`RG3_R_BOX`; ``r_found`` tells
    whether the boxes cover it as a marker must be covered)."""
    out = {}
    for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
        image, _ = read_image(get_testdata_file(name))
        start = time.perf_counter()
        boxes = detector.detect([image])[0]
        out[name] = {"boxes": boxes, "seconds": time.perf_counter() - start}
        if name == "RG3_UNCR.dcm":
            lead = grown_mask(image.shape, [RG3_R_BOX], 0)
            out[name]["r_found"] = coverage(lead, boxes) >= COVERAGE
    return out


def verdict(result: dict) -> list[str]:
    """One line per target of the issue: measured, target, met or missed."""
    rows = result["rows"]
    lines = []
    overall = rows["all"]["rate"]
    lines.append(_line("recall overall", overall, TARGETS["recall"], ">="))
    judged = {k: v for k, v in rows.items() if v["of"] >= MIN_ROW}
    worst = min(judged.items(), key=lambda kv: kv[1]["rate"]) if judged else None
    if worst:
        lines.append(
            _line(f"worst row ({worst[0]})", worst[1]["rate"], TARGETS["row_recall"], ">=")
        )
    small = [k for k, v in rows.items() if v["of"] < MIN_ROW]
    if small:
        lines.append(f"rows with fewer than {MIN_ROW} markers (not judged): {', '.join(small)}")
    lines.append(
        _line("text-free films boxed", result["fp_films"]["all"]["rate"], TARGETS["fp_share"], "<=")
    )
    lines.append(
        _line("box-area precision", result["box_area_precision"], TARGETS["precision"], ">=")
    )
    secs = result["seconds_per_film"]
    for size, key in ((1024, "seconds_1024"), (3000, "seconds_3000")):
        lines.append(_line(f"seconds per {size} px film", secs.get(size), TARGETS[key], "<="))
    return lines


def _line(name: str, value: float | None, target: float, op: str) -> str:
    if value is None:
        return f"{name}: not measured"
    ok = value >= target if op == ">=" else value <= target
    return f"{name}: {value:.3f} (target {op} {target}) {'met' if ok else 'MISSED'}"


def print_table(name: str, result: dict) -> None:
    print(f"\n{name}: recall by row (Wilson 95% interval)")
    for row, r in result["rows"].items():
        lo, hi = r["ci95"]
        flag = "" if r["of"] >= MIN_ROW else f"  (< {MIN_ROW} markers)"
        print(
            f"  {row:<28} {r['found']:>4}/{r['of']:<4} {r['rate']:.3f} [{lo:.3f}, {hi:.3f}]{flag}"
        )
    for key, r in result["fp_films"].items():
        lo, hi = r["ci95"]
        print(f"  text-free films boxed, {key:<10} {r['found']}/{r['of']} [{lo:.3f}, {hi:.3f}]")
    precision = result["box_area_precision"]
    print(f"  box-area precision {'n/a' if precision is None else f'{precision:.3f}'}")
    for size, s in result["seconds_per_film"].items():
        print(f"  {size:>5} px: {s:.3f} s/film")
    for line in verdict(result):
        print(f"  {line}")


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(machine_line())
    faces = font_set(args.fonts)
    print(f"fonts: {args.fonts} ({len(faces)} faces, with package and sha256)")
    face_list = [
        {"face": f.name, "renderer": f.renderer, "package": f.package, "sha256": face_sha256(f)}
        for f in faces
    ]
    for f in face_list:
        print(f"  {f['face']:<32} {f['package']:<44} {f['sha256'][:16]}")
    films = {s: make_films(s, args.n, args.seed, args.fonts, Path(args.cache)) for s in args.sizes}
    results: dict = {
        "header": machine_info(),
        "fonts": args.fonts,
        "faces": face_list,
        "seed": args.seed,
        "n_per_size": args.n,
        "detectors": {},
    }
    for name in args.detectors:
        detector = _detector(name, args.long_side)
        detector.detect([films[args.sizes[0]][0].image])  # warm-up
        result = evaluate(detector, films)
        result["real"] = real_films(detector)
        result["detector"] = detector.describe()
        result["verdict"] = verdict(result)
        print_table(name, result)
        print(
            f"  RG1_UNCR.dcm (text-free): {len(result['real']['RG1_UNCR.dcm']['boxes'])} box(es); "
            f"RG3_UNCR.dcm lead R found: {result['real']['RG3_UNCR.dcm']['r_found']}"
        )
        if args.show_misses:
            for miss in result["misses"][: args.show_misses]:
                print(f"  miss: {miss}")
        results["detectors"][name] = result
    return results


def synth_recall(data: Path, detector: str, split: str = "test") -> dict:
    """Markers found on a dataset written by ``xraydebug synth`` (its ``ground_truth.json``
    boxes), with the same rules: a marker is found when the boxes grown by 3 px cover 90% of
    its box; box-area precision over the films with text; text-free films with a box."""
    truth = json.loads((data / "ground_truth.json").read_text())
    keys = sorted(k for k in truth if not k.startswith("_") and k.startswith(f"{split}/"))
    found = markers = fp = free = 0
    area = [0, 0]
    text_detector = _detector(detector)
    start = time.perf_counter()
    for key in keys:
        image, _ = read_image(data / key)
        boxes = text_detector.detect([image])[0]
        marker_boxes = truth[key]["boxes"]
        if not marker_boxes:
            free += 1
            fp += bool(boxes)
            continue
        pixels, inside = box_area(image.shape, boxes, marker_boxes)
        area[0] += pixels
        area[1] += inside
        for box in marker_boxes:
            markers += 1
            found += coverage(grown_mask(image.shape, [box], 0), boxes) >= COVERAGE
    seconds = (time.perf_counter() - start) / max(len(keys), 1)
    precision = area[1] / area[0] if area[0] else None
    print(
        f"{detector:>12} {data} [{split}]: markers found {found}/{markers}, text-free films "
        f"with a box {fp}/{free}, box-area precision "
        f"{'n/a' if precision is None else f'{precision:.3f}'}, {seconds:.2f} s/film"
    )
    return {
        "recall": [found, markers],
        "fp_films": [fp, free],
        "box_area_precision": precision,
        "seconds_per_film": seconds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="text_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=48, help="films per size (two thirds carry text)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 3000])
    p.add_argument("--fonts", choices=["heldout", "tuning"], default="heldout")
    p.add_argument("--detectors", nargs="+", default=["auto"])
    p.add_argument(
        "--long-side", type=int, default=1280, help="craft-global's canvas (official: 1,280)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="/tmp/xraydebug-text-bench")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--show-misses", type=int, default=0, help="print up to this many misses")
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
        print(machine_line())
        results = {"header": machine_info(), "synth": {}}
        for name in args.detectors:
            results["synth"][name] = synth_recall(Path(args.synth_data), name)
    else:
        results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
