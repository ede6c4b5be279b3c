"""Does the shortcut move? A model retrained on data cleaned by an inpainter may learn the
inpainter's smudge where the text was, since the smudges mark the same films the text did.

    python -m benchmarks.shortcut_move_bench --data /tmp/demo/data \
        --learned /tmp/inp/inpainter-256.pt --work /tmp/move

1. The synthetic set's text boxes (ground truth, so that only the inpainter differs) are
   inpainted by each inpainter into a new dataset (``clean_dataset`` with a scan table of the
   true boxes), and a model is trained on each cleaned set's train split (same recipe and seed;
   in train, text marks COVID-19 films 90% of the time).
2. On the test films without text, each model sees every film three ways: as it is, and with
   the boxes of another film's text (its position and size, donors drawn per film) inpainted
   away by ``telea`` and by the new inpainter, although there was no text there: a smudge
   where text would have been. The placebo is the film as it is.
3. The reaction to a smudge: the mean change of P(COVID-19) against the placebo, and the share
   of films not called COVID-19 that are called COVID-19 once smudged, each with a
   patient-level bootstrap 95% interval (2,000 resamples).

The shortcut moved to an inpainter's smudge when a model trained on data cleaned by it reacts
to its smudges clearly more than to the placebo.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import command_line
from xraydebug.data.synth import SynthConfig, plan_dataset, render_record
from xraydebug.data.torch_dataset import resize_gray
from xraydebug.device import machine_info, machine_line
from xraydebug.inpaint import make_inpainter
from xraydebug.models.checkpoint import load_model
from xraydebug.models.train import TrainConfig, train
from xraydebug.runfolder import SCAN_COLUMNS
from xraydebug.stages.clean import CleanConfig, clean_dataset
from xraydebug.text.inpaint import box_mask

TARGET = "COVID-19"
DRAWS = 2
RESAMPLES = 2000


def synth_config(data: Path) -> SynthConfig:
    truth = json.loads((data / "ground_truth.json").read_text())
    return SynthConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in truth["_config"].items()}
    )


def truth_scan(data: Path, folder: Path) -> Path:
    """A scan folder whose ``scan.csv`` holds the true text boxes of every film."""
    truth = json.loads((data / "ground_truth.json").read_text())
    rows = []
    for key, entry in truth.items():
        if key.startswith("_"):
            continue
        row = dict.fromkeys(SCAN_COLUMNS, "")
        row.update(
            path=key, status="ok", boxes=json.dumps(entry["boxes"]), n_boxes=len(entry["boxes"])
        )
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=SCAN_COLUMNS).to_csv(folder / "scan.csv", index=False)
    return folder


def cleaned_model(data: Path, work: Path, label: str, options: dict[str, Any], seed: int) -> Path:
    """Clean ``data`` with one inpainter (true boxes) and train the demo's recipe on it."""
    scan = truth_scan(data, work / "truth-scan")
    cleaned = work / f"clean-{label}"
    config = CleanConfig.from_options({"scan": str(scan), **options})
    clean_dataset(data, cleaned, config=config)
    model = work / f"model-{label}.pt"
    if not model.exists():
        train(cleaned, model, config=TrainConfig(arch="small", seed=seed, device="cpu"))
    return model


def smudge_films(data: Path, size: int, crop_top: float, inpainters: dict[str, Any], seed: int):
    """Text-free test films (model frame, [0, 1]) as they are and smudged by each inpainter at
    donor text boxes; with each film's patient."""
    config = synth_config(data)
    records = [r for r in plan_dataset(config) if r.split == "test"]
    donors = [render_record(config, r).boxes for r in records if r.has_text]
    rng = np.random.default_rng(seed)
    plain, smudged, patients = [], {k: [] for k in inpainters}, []
    for record in records:
        if record.has_text:
            continue
        film = render_record(config, record).clean
        for _ in range(DRAWS):
            boxes = donors[int(rng.integers(len(donors)))]
            hole = box_mask(film.shape, boxes, 3)
            plain.append(resize_gray(film.astype(np.float32) / 255.0, size, crop_top))
            for name, inpainter in inpainters.items():
                filled = inpainter.inpaint([film], [hole])[0]
                smudged[name].append(resize_gray(filled.astype(np.float32) / 255.0, size, crop_top))
            patients.append(record.patient_id)
    return np.stack(plain), {k: np.stack(v) for k, v in smudged.items()}, np.array(patients)


def probs(model_path: Path, films: np.ndarray) -> np.ndarray:
    loaded = load_model(model_path)
    x = loaded.preprocessing.normalize(torch.from_numpy(films)[:, None])
    with torch.inference_mode():
        p = torch.softmax(loaded.model.eval()(x).float(), dim=1)
    return p.numpy(), loaded.classes


def bootstrap(values: np.ndarray, patients: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Patient-level bootstrap 95% interval of the mean of ``values``."""
    ids, inverse = np.unique(patients, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(ids), size=(RESAMPLES, len(ids)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def reaction(p0: np.ndarray, p1: np.ndarray, target: int, patients: np.ndarray) -> dict[str, Any]:
    delta = p1[:, target] - p0[:, target]
    not_called = p0.argmax(1) != target
    into = ((p1.argmax(1) == target) & not_called).astype(float)
    return {
        "delta_prob": float(delta.mean()),
        "delta_prob_ci95": bootstrap(delta, patients),
        "into_covid": float(into[not_called].mean()),
        "into_covid_ci95": bootstrap(into[not_called], patients[not_called]),
        "n": len(delta),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--learned", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/xraydebug-move"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--original-model", type=Path, help="the model trained with the text")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/shortcut_move_bench.json"))
    args = parser.parse_args(argv)
    print(machine_line())
    cleanings = {
        "telea": {"inpainter": "telea"},
        "learned": {"inpainter": "learned", "inpainter_model": str(args.learned)},
    }
    models = {
        label: cleaned_model(args.data, args.work, label, options, args.seed)
        for label, options in cleanings.items()
    }
    if args.original_model:
        models["with text (not cleaned)"] = args.original_model
    inpainters = {
        "telea": make_inpainter("telea").load(),
        "learned": make_inpainter("learned", model=str(args.learned)).load(),
    }
    prep = load_model(next(iter(models.values()))).preprocessing
    plain, smudged, patients = smudge_films(
        args.data, prep.input_size, prep.crop_top, inpainters, args.seed
    )
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line("benchmarks.shortcut_move_bench", argv),
        "n_films": len(np.unique(patients)),
        "n_pairs": len(plain),
        "models": {},
    }
    for label, path in models.items():
        p0, classes = probs(path, plain)
        target = classes.index(TARGET)
        result["models"][label] = {}
        for name, films in smudged.items():
            p1, _ = probs(path, films)
            result["models"][label][name] = row = reaction(p0, p1, target, patients)
            print(
                f"model cleaned by {label:24s} smudge {name:8s} dP(COVID) {row['delta_prob']:+.4f} "
                f"{row['delta_prob_ci95']}  into COVID {row['into_covid']:.3f} "
                f"{row['into_covid_ci95']}",
                flush=True,
            )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
