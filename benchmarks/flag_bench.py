"""Flagging benchmark: are the flags right, measured against synthetic ground truth?

    python benchmarks/flag_bench.py --data /tmp/xraydebug-bench/data \
        --model /tmp/xraydebug-bench/small.pt --n 60

Ground truth of *reliance on text* comes from the synthetic generator's text-free twin of each
image (``render_record(...).clean``): the model relies on the text when removing it lowers the
explained class's probability by at least ``--reliance`` (default 0.2). The script scans the
test split (text independent of class there), then reports

- CRAFT detection recall / precision against the ground-truth boxes (a hit: IoU >= 0.3 or the
  detected box covers >= 50% of the true box),
- precision / recall of ``flagged`` against reliance, for the default rule and for a small
  grid of thresholds (to calibrate :class:`xraydebug.flagging.FlagRule`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xraydebug.data.synth import SynthConfig, plan_dataset, render_record
from xraydebug.device import machine_line
from xraydebug.flagging import FlagRule
from xraydebug.models.checkpoint import load_model
from xraydebug.models.inference import predict_probs
from xraydebug.stages.scan import ScanConfig, scan


def box_hit(truth: list[int], found: list[list[int]]) -> bool:
    tx0, ty0, tx1, ty1 = truth
    area = max(1, (tx1 - tx0) * (ty1 - ty0))
    for fx0, fy0, fx1, fy1 in found:
        iw = max(0, min(tx1, fx1) - max(tx0, fx0))
        ih = max(0, min(ty1, fy1) - max(ty0, fy0))
        inter = iw * ih
        union = area + (fx1 - fx0) * (fy1 - fy0) - inter
        if inter / max(union, 1) >= 0.3 or inter / area >= 0.5:
            return True
    return False


def twin_probs(data: Path, model_path: Path, table: pd.DataFrame) -> np.ndarray:
    """Explained-class probability on the text-free twin of each row's image."""
    truth = json.loads((data / "ground_truth.json").read_text())
    config = SynthConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in truth["_config"].items()}
    )
    records = {r.key: r for r in plan_dataset(config)}
    loaded = load_model(model_path)
    prep = loaded.preprocessing
    size = prep.input_size
    grays = []
    for path in table["path"]:
        clean = render_record(config, records[path]).clean.astype(np.float32) / 255.0
        tensor = torch.from_numpy(clean)[None, None]
        grays.append(torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0])
    probs = predict_probs(loaded.model, prep, torch.stack(grays), torch.device("cpu"))
    targets = [loaded.classes.index(t) for t in table["target"]]
    return probs[torch.arange(len(targets)), targets].numpy()


def pr(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float((flags & truth).sum())
    precision = tp / flags.sum() if flags.sum() else 0.0
    recall = tp / truth.sum() if truth.sum() else 0.0
    return precision, recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/xraydebug-bench/flag-scan"))
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--mask-size", type=int, default=28)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--reliance", type=float, default=0.2)
    parser.add_argument("--text-detector", default="auto")
    parser.add_argument("--text-long-side", type=int, default=768, help="craft-global only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(machine_line())

    start = time.perf_counter()
    result = scan(
        args.data,
        args.model,
        args.out,
        config=ScanConfig.from_options(
            {
                "split": "test",
                "limit": args.n,
                "mask_size": args.mask_size,
                "iterations": args.iterations,
                "ig_steps": args.ig_steps,
                "detector": args.text_detector,
                "long_side": args.text_long_side if args.text_detector == "craft-global" else None,
                "device": "cpu",
            }
        ),
    )
    print(
        f"scan of {args.n} test images: {time.perf_counter() - start:.0f} s "
        f"(text detection {result.run['timings'].get('text', 0):.0f} s)"
    )
    table = result.table[result.table["status"] == "ok"].reset_index(drop=True)
    truth = json.loads((args.data / "ground_truth.json").read_text())

    n_true = n_hit = n_found = n_found_ok = 0
    for row in table.itertuples():
        true_boxes = truth[row.path]["boxes"]
        found = json.loads(row.boxes) if row.boxes else []
        n_true += len(true_boxes)
        n_hit += sum(box_hit(b, found) for b in true_boxes)
        n_found += len(found)
        n_found_ok += sum(any(box_hit(b, [f]) for b in true_boxes) for f in found)
    det_recall = n_hit / max(n_true, 1)
    det_precision = n_found_ok / max(n_found, 1)
    print(
        f"CRAFT: recall {det_recall:.3f} ({n_hit}/{n_true} true boxes), "
        f"precision {det_precision:.3f} ({n_found_ok}/{n_found} detections)"
    )

    prob = pd.to_numeric(table["target_prob"]).to_numpy()
    twin = twin_probs(args.data, args.model, table)
    has_text = table["path"].map(lambda p: truth[p]["has_text"]).to_numpy()
    relies = has_text & (prob - twin >= args.reliance)
    print(
        f"images with text: {int(has_text.sum())}; of those the model relies on text "
        f"(p drops >= {args.reliance} without it): {int(relies.sum())}"
    )
    mass = pd.to_numeric(table["mass_in_text"], errors="coerce").fillna(0).to_numpy()
    area = pd.to_numeric(table["text_area"], errors="coerce").fillna(0).to_numpy()
    reveal = pd.to_numeric(table["text_reveal_prob"], errors="coerce").fillna(0).to_numpy()

    def evaluate(rule: FlagRule) -> tuple[float, float, int]:
        flags = np.array([rule(m, a, r) for m, a, r in zip(mass, area, reveal, strict=True)])
        precision, recall = pr(flags, relies)
        return precision, recall, int(flags.sum())

    default = evaluate(FlagRule())
    print(
        f"default rule {FlagRule()}: precision {default[0]:.3f} recall {default[1]:.3f} "
        f"({default[2]} flagged)"
    )
    grid = []
    for min_mass, ratio, reveal_p in itertools.product(
        (0.05, 0.1, 0.2, 0.3), (1.5, 3.0, 5.0), (0.0, 0.34, 0.5, 0.7)
    ):
        precision, recall, n = evaluate(FlagRule(min_mass, ratio, reveal_p))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        grid.append((f1, precision, recall, n, min_mass, ratio, reveal_p))
    grid.sort(reverse=True)
    print("best rules (F1, precision, recall, n flagged, min_mass, min_ratio, min_reveal_prob):")
    for entry in grid[:5]:
        print("  " + ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in entry))
    covid_flags = table["flagged"].eq("true") & table["target"].eq("COVID-19")
    print(
        f"flags on images explained as COVID-19: {int(covid_flags.sum())} of "
        f"{int(table['flagged'].eq('true').sum())}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "detection": {"recall": det_recall, "precision": det_precision},
                    "default_rule": {
                        "precision": default[0],
                        "recall": default[1],
                        "n": default[2],
                    },
                    "n_relies": int(relies.sum()),
                    "n_text": int(has_text.sum()),
                    "grid_top": grid[:5],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
