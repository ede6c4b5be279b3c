"""Cleaning quality of every inpainter, against the text-free twins of synthetic films.

    python -m benchmarks.inpaint_bench --learned /tmp/inp/inpainter-1024.pt \
        --out benchmarks/inpaint_bench.json

Films come from two text sources, both rendered with their text-free twin:

- ``synth``: the test split of ``SynthConfig(size=S, seed=--seed)``, the markers ``xraydebug
  synth`` burns (side letters, PORTABLE, site stamps, dates), boxes from its ground truth;
- ``wild``: new radiographs with 1-3 markers as they look on real films
  (:mod:`xraydebug.data.wild_text`: letters, words, dates, multi-line stamps, on flat labels
  or not, any angle) in the font families the detector never saw (``heldout``), boxes from
  each marker's changed pixels.

Each film's boxes are grown by 3 px (``clean``'s default ``dilate``) into the hole. Per
inpainter and set: PSNR and SSIM inside the holes against the twin (SSIM map with a Gaussian
window, sigma 1.5, averaged over the hole), the largest change outside the holes (it must be
0), and the seconds per film (the fill alone, after the film is in memory). ``before`` is the
film with its text against the twin. Seconds per film are also measured at 256, 1024 and 3000
px on the ``synth`` source.

``--seed`` picks the films. Every design choice (FSR's 8-bit windows and margin, the learned
net's size, holes and losses, which checkpoint) was made on other films (the learned
inpainter's own held-out split of a seed-0 set): the README's seed 12 is held out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from benchmarks import command_line
from xraydebug.data.fonts import font_set
from xraydebug.data.synth import SynthConfig, plan_dataset, render_radiograph, render_record
from xraydebug.device import machine_info, machine_line
from xraydebug.inpaint import inpainter_class, make_inpainter
from xraydebug.text.inpaint import box_mask

DILATE = 3


@dataclass(frozen=True)
class TwinFilm:
    """A film with text (uint8 ``(H, W)``), its text-free twin and the hole to fill."""

    image: np.ndarray
    twin: np.ndarray
    hole: np.ndarray  # uint8, 255 = fill


def synth_films(size: int, n: int, seed: int) -> list[TwinFilm]:
    """The first ``n`` test films with text of ``SynthConfig(size, seed)``."""
    config = SynthConfig(n_train=0, n_test=max(8, 3 * n), size=size, seed=seed)
    films = []
    for record in plan_dataset(config):
        if record.has_text and len(films) < n:
            rendered = render_record(config, record)
            hole = box_mask(rendered.image.shape, rendered.boxes, DILATE)
            films.append(TwinFilm(rendered.image, rendered.clean, hole))
    return films


def wild_films(size: int, n: int, seed: int) -> list[TwinFilm]:
    """``n`` new radiographs with 1-3 wild markers each in held-out fonts."""
    from benchmarks.text_bench import _marker

    faces = font_set("heldout")
    films = []
    for i in range(n):
        rng = np.random.default_rng([seed, size, i, 26])
        twin = render_radiograph(rng, size, str(rng.choice(["normal", "pneumonia"])))
        twin = (np.round(twin * 255) / 255).astype(np.float32)
        image, boxes = twin, []
        for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))):
            image, marker = _marker(image, rng, faces, boxes, True)
            if marker is not None:
                boxes.append(marker.box)
        if boxes:
            films.append(TwinFilm(_to8(image), _to8(twin), box_mask(twin.shape, boxes, DILATE)))
    return films


def _to8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def score(films: list[TwinFilm], filled: list[np.ndarray]) -> dict[str, Any]:
    """In-hole PSNR / SSIM against the twins (mean and sd over films) and the largest change
    outside the holes."""
    psnrs, ssims, outside = [], [], 0
    for film, out in zip(films, filled, strict=True):
        hole = film.hole > 0
        psnrs.append(psnr(out[hole], film.twin[hole]))
        _, ssim_map = structural_similarity(
            out, film.twin, data_range=255, gaussian_weights=True, sigma=1.5, full=True
        )
        ssims.append(float(ssim_map[hole].mean()))
        outside = max(outside, int(np.abs(out[~hole].astype(int) - film.image[~hole]).max()))
    return {
        "psnr_in": float(np.mean(psnrs)),
        "psnr_in_sd": float(np.std(psnrs, ddof=1)) if len(psnrs) > 1 else 0.0,
        "ssim_in": float(np.mean(ssims)),
        "outside_max_change": outside,
        "psnr_in_per_film": psnrs,
    }


def run_inpainter(name: str, settings: dict[str, Any], films: list[TwinFilm]) -> dict[str, Any]:
    inpainter = make_inpainter(name, **settings).load()
    inpainter.inpaint([films[0].image], [films[0].hole])  # warm-up (threads, lazy init)
    filled, seconds = [], []
    for film in films:
        start = time.perf_counter()
        filled.append(inpainter.inpaint([film.image], [film.hole])[0])
        seconds.append(time.perf_counter() - start)
    return score(films, filled) | {"seconds_per_film": float(np.median(seconds))}


def entries(learned: Path | None, best: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """The inpainters to compare: label -> (registry name, settings)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {
        "telea": ("telea", {}),
        "ns": ("ns", {}),
        "fsr": ("fsr", {}),
    }
    if best:
        out["fsr-best"] = ("fsr", {"quality": "best"})
    if learned is not None:
        out["learned"] = ("learned", {"model": str(learned)})
    return {k: v for k, v in out.items() if inpainter_class(v[0]).available()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--n", type=int, default=24, help="films per set")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--learned", type=Path, help="a learned inpainter's checkpoint")
    parser.add_argument("--timing-sizes", type=int, nargs="*", default=[256, 1024, 3000])
    parser.add_argument("--fsr-best", action="store_true", help="add FSR's slow preset (<= 512 px)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/inpaint_bench.json"))
    args = parser.parse_args(argv)
    print(machine_line())
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line("benchmarks.inpaint_bench", argv),
        "seed": args.seed,
        "dilate": DILATE,
        "sets": {},
        "timing": {},
    }
    for size in args.sizes:
        for source, make in (("synth", synth_films), ("wild", wild_films)):
            films = make(size, args.n, args.seed)
            key = f"{source}-{size}"
            before = score(films, [f.image for f in films])
            block: dict[str, Any] = {"n_films": len(films), "before": before, "inpainters": {}}
            best = args.fsr_best and size <= 512
            for label, (name, settings) in entries(args.learned, best).items():
                block["inpainters"][label] = row = run_inpainter(name, settings, films)
                print(
                    f"{key:12s} {label:9s} PSNR in {row['psnr_in']:6.2f} dB "
                    f"(sd {row['psnr_in_sd']:.2f})  SSIM {row['ssim_in']:.3f}  "
                    f"outside {row['outside_max_change']}  {row['seconds_per_film']:.3f} s/film",
                    flush=True,
                )
            result["sets"][key] = block
    for size in args.timing_sizes:
        films = synth_films(size, 3, args.seed)
        result["timing"][str(size)] = {
            label: run_inpainter(name, settings, films)["seconds_per_film"]
            for label, (name, settings) in entries(
                args.learned, args.fsr_best and size <= 1024
            ).items()
        }
        print(f"timing {size}: {result['timing'][str(size)]}", flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    """In-hole PSNR against seconds per film, one panel per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = result["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.0), squeeze=False)
    for ax, (key, block) in zip(axes[0], sets.items(), strict=True):
        for label, row in block["inpainters"].items():
            ax.errorbar(
                row["seconds_per_film"],
                row["psnr_in"],
                yerr=row["psnr_in_sd"],
                fmt="o",
                capsize=2,
            )
            ax.annotate(label, (row["seconds_per_film"], row["psnr_in"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_title(f"{key} ({block['n_films']} films)", fontsize=8)
        ax.set_xlabel("s / film (CPU)", fontsize=7)
        ax.set_ylabel("PSNR inside boxes (dB)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
