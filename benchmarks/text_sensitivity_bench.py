"""Text-sensitivity test and text decorrelation, against the text-free twins (the oracle).

For each ``--seeds`` entry: a synthetic COVIDx-style set with the demo's planted shortcut
(``xraydebug.data.synth``: in train, 90% of COVID-19 films and 10% of the others carry
burned-in text; in test half of every class) and its **text-free twin** (the same films
rendered without text). Then, with the demo's training recipe (``small`` CNN, 256 px):

* ``shortcut``: trained on the set; ``oracle``: trained on the twin;
* ``clean``: ``clean`` (default detector, every film) + ``retrain``;
* ``clean+decorrelate``: the same with ``retrain --decorrelate-text`` (share ``--share``).

Every model is scored on the original test split: accuracy, macro-F1, the by-text gap (the
share of non-COVID films called COVID-19 with detected text minus without) and the
text sensitivity toward COVID-19 (text minus placebo pastes, 95% CI; text pool: the boxes
``clean`` found). Targets (issue 15): the shortcut model's CI excludes 0; the oracle's
sensitivity is within 0.05 of 0; with decorrelation the sensitivity is <= 0.05, the gap
<= 0.05, accuracy and macro-F1 within 0.05 of the oracle. The last two are checked one-sided
(no more than 0.05 below it; the oracle is one training run and can land below the cleaned
models), so the two-sided figure (|decorrelate - oracle| and whether it is within 0.05) is
printed beside them and kept in the JSON (``two_sided``). Over-correction is a target too:
a decorrelated model whose sensitivity or gap is below -0.05 reacts to text in the opposite
direction, which is also a shortcut; it fails its target and is flagged (``flags``). The
last line (and the JSON's ``verdict``) counts the targets passed and the flags.

    python -m benchmarks.text_sensitivity_bench --seeds 0 1 2 --work /tmp/ts-bench \\
        --json reports/text_sensitivity_bench.json

Prints the CPU first. Reruns reuse finished datasets and models in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console

from xraydebug.audit.retrain import RetrainConfig, retrain
from xraydebug.audit.text_sensitivity import TextSensitivityConfig, text_sensitivity
from xraydebug.data.synth import SynthConfig, plan_dataset, render_record, synthesize
from xraydebug.data.text_pool import boxes_from_table
from xraydebug.demo import DemoConfig
from xraydebug.device import machine_info, machine_line
from xraydebug.models.evaluate import evaluate
from xraydebug.models.train import checkpoint_is_current, train
from xraydebug.stages.clean import clean_dataset

COVID = "COVID-19"
LIMIT = 0.05  # every target's margin


def _twin(data: Path, twin: Path, config: SynthConfig) -> None:
    """``twin``: a copy of ``data`` whose films are rendered without their text."""
    if (twin / "train.txt").exists():
        return
    shutil.copytree(data, twin, dirs_exist_ok=True)
    for record in plan_dataset(config):
        if record.has_text:
            clean = render_record(config, record).clean
            cv2.imwrite(str(twin / record.split / record.filename), clean)


def _gap(metrics_by_text: list[dict[str, Any]], side: str) -> float:
    """Share of non-COVID films called COVID-19 with detected text minus without."""
    share = {}
    for has_text in (True, False):
        rows = [r for r in metrics_by_text if r["label"] != COVID and r["text"] == has_text]
        n = sum(r["n"] for r in rows)
        share[has_text] = sum(r[side][COVID] * r["n"] for r in rows) / max(n, 1)
    return share[True] - share[False]


def _covid(summary: dict[str, Any]) -> dict[str, Any]:
    row = summary["into"][COVID]
    return {"sensitivity": row["sensitivity"], "ci": row["ci"], "reacts": summary["reacts"]}


def run_seed(seed: int, work: Path, share: float, console: Console) -> dict[str, Any]:
    demo = DemoConfig(seed=seed)
    synth = SynthConfig(n_train=demo.n_train, n_test=demo.n_test, size=demo.size, seed=seed)
    root = work / f"seed{seed}"
    data, twin, cleaned = root / "data", root / "twin", root / "data-clean"
    if not (data / "train.txt").exists():
        synthesize(data, synth, overwrite=True)
    _twin(data, twin, synth)
    recipe = demo.train_config("auto")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    shortcut, oracle = root / "shortcut.pt", root / "oracle.pt"
    for path, source in ((shortcut, data), (oracle, twin)):
        if not checkpoint_is_current(path, source, recipe):  # a rerun reuses finished models
            train(source, path, config=recipe, console=console)
    timings["train_two"] = time.perf_counter() - start
    start = time.perf_counter()
    clean_dataset(data, cleaned)
    timings["clean_dataset"] = time.perf_counter() - start
    runs = {}
    for name, config in (
        ("clean", RetrainConfig(n_boot=1000)),
        ("clean+decorrelate", RetrainConfig(n_boot=1000, decorrelate_text=share)),
    ):
        start = time.perf_counter()
        slug = name.replace("+", "-")
        result = retrain(
            cleaned,
            shortcut,
            test_data=data,
            out=root / f"{slug}.pt",
            run_dir=root / f"run-{slug}",
            config=config,
            console=console,
            report=False,
        )
        timings[f"retrain {name}"] = time.perf_counter() - start
        runs[name] = result.comparison
    boxes = boxes_from_table(cleaned / "cleaning.csv")
    (oracle_ts,) = text_sensitivity(
        data, oracle, None, boxes=boxes, config=TextSensitivityConfig(n_boot=1000)
    )
    oracle_metrics = evaluate(data, oracle, out=None).metrics
    first = runs["clean"]["test_sets"]["original"]
    out: dict[str, Any] = {
        "seed": seed,
        "seconds": timings,
        "shortcut": {
            "accuracy": first["before"]["accuracy"],
            "macro_f1": first["before"]["macro_f1"],
            "gap": _gap(first["by_text"], "before"),
            **_covid(runs["clean"]["text_sensitivity"]["before"]),
        },
        "oracle": {
            "accuracy": oracle_metrics["accuracy"],
            "macro_f1": oracle_metrics["macro_f1"],
            **_covid(oracle_ts.summary),
        },
    }
    for name, comparison in runs.items():
        original = comparison["test_sets"]["original"]
        out[name] = {
            "accuracy": original["after"]["accuracy"],
            "macro_f1": original["after"]["macro_f1"],
            "gap": _gap(original["by_text"], "after"),
            **_covid(comparison["text_sensitivity"]["after"]),
        }
    return out


def _targets(seed_result: dict[str, Any]) -> dict[str, bool]:
    """Pass/fail per target of one seed's result (plain bools)."""
    d, o = seed_result["clean+decorrelate"], seed_result["oracle"]
    ci = seed_result["shortcut"]["ci"]
    checks = {
        "shortcut CI excludes 0": bool(ci and ci[0] > 0),
        "oracle |sensitivity| <= 0.05": abs(o["sensitivity"]) <= LIMIT,
        "decorrelate sensitivity <= 0.05": d["sensitivity"] <= LIMIT,
        "decorrelate gap <= 0.05": d["gap"] <= LIMIT,
        # over-correction: text now pushes away from COVID-19, also a shortcut
        "decorrelate sensitivity >= -0.05": d["sensitivity"] >= -LIMIT,
        "decorrelate gap >= -0.05": d["gap"] >= -LIMIT,
        # one-sided: a model better than the oracle (one training seed of it) is no failure;
        # the two-sided figure is reported beside it (_two_sided)
        "decorrelate accuracy >= oracle - 0.05": d["accuracy"] >= o["accuracy"] - LIMIT,
        "decorrelate macro-F1 >= oracle - 0.05": d["macro_f1"] >= o["macro_f1"] - LIMIT,
    }
    return {name: bool(ok) for name, ok in checks.items()}  # numpy bools are not JSON


def _two_sided(seed_result: dict[str, Any]) -> dict[str, dict[str, float | bool]]:
    """Per metric (accuracy, macro-F1): |decorrelate - oracle| and whether it is within 0.05,
    the target as first stated, before it was checked one-sided."""
    d, o = seed_result["clean+decorrelate"], seed_result["oracle"]
    out: dict[str, dict[str, float | bool]] = {}
    for key in ("accuracy", "macro_f1"):
        diff = abs(float(d[key]) - float(o[key]))
        out[key] = {"abs_diff_from_oracle": diff, "within_0.05": diff <= LIMIT}
    return out


def _flags(seed_result: dict[str, Any]) -> list[str]:
    """Over-correction flags: the failed ``>= -0.05`` targets of :func:`_targets` (the
    decorrelated model's sensitivity or gap below -0.05: text now pushes its answers away
    from COVID-19), with the value that failed."""
    d, targets = seed_result["clean+decorrelate"], _targets(seed_result)
    return [
        f"over-correction: decorrelate {key} {d[key]:+.3f} < -{LIMIT}"
        for key in ("sensitivity", "gap")
        if not targets[f"decorrelate {key} >= -{LIMIT}"]
    ]


def seed_spread(results: list[dict[str, Any]], name: str) -> dict[str, tuple[float, float]]:
    """Model ``name``'s accuracy, macro-F1, gap (where it has one) and sensitivity over the
    seeds' ``results``: (mean, standard deviation over the seeds, ``np.std``)."""
    keys = [k for k in ("accuracy", "macro_f1", "gap", "sensitivity") if k in results[0][name]]
    values = {k: [r[name][k] for r in results] for k in keys}
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items()}


def _print_seed(result: dict[str, Any]) -> None:
    """One seed's models, targets, two-sided oracle figures, flags and timings."""
    print(f"seed {result['seed']}: (accuracy, macro-F1, gap, sensitivity to COVID-19 [95% CI])")
    for name in ("shortcut", "oracle", "clean", "clean+decorrelate"):
        r = result[name]
        ci = f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]" if r["ci"] else ""
        gap = f"{r['gap']:+.2f}" if "gap" in r else "  -  "
        print(
            f"  {name:<18} acc {r['accuracy']:.3f}  F1 {r['macro_f1']:.3f}  gap {gap}  "
            f"sensitivity {r['sensitivity']:+.2f} {ci}"
        )
    for target, ok in result["targets"].items():
        print(f"    {'PASS' if ok else 'FAIL'} {target}")
    for key, two in result["two_sided"].items():
        inside = "within" if two["within_0.05"] else "NOT within"
        print(
            f"    two-sided: |decorrelate {key} - oracle| = {two['abs_diff_from_oracle']:.3f}, "
            f"{inside} 0.05"
        )
    for flag in result["flags"]:
        print(f"    FLAG {flag}")
    print(f"  seconds: {json.dumps({k: round(v) for k, v in result['seconds'].items()})}")


def _verdict(results: list[dict[str, Any]]) -> dict[str, int]:
    """Targets passed out of all targets over the seeds, and the over-correction flags."""
    return {
        "targets_passed": sum(sum(r["targets"].values()) for r in results),
        "targets": sum(len(r["targets"]) for r in results),
        "flags": sum(len(r["flags"]) for r in results),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="text_sensitivity_bench", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default="/tmp/xraydebug-ts-bench")
    p.add_argument("--share", type=float, default=0.5, help="decorrelate: share of films pasted")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    header = machine_info()
    print(machine_line())
    console = Console(stderr=True)
    results = []
    for seed in args.seeds:
        result = run_seed(seed, Path(args.work), args.share, console)
        result["targets"] = _targets(result)
        result["two_sided"] = _two_sided(result)
        result["flags"] = _flags(result)
        results.append(result)
        _print_seed(result)
    for name in ("shortcut", "oracle", "clean", "clean+decorrelate"):
        spread = seed_spread(results, name)
        print(
            f"mean over {len(results)} seeds, {name:<18} "
            + "  ".join(f"{k} {mean:+.3f} ± {sd:.3f}" for k, (mean, sd) in spread.items())
        )
    verdict = _verdict(results)
    print(
        f"verdict: {verdict['targets_passed']} of {verdict['targets']} targets passed over "
        f"{len(results)} seeds; {verdict['flags']} over-correction flag(s)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        record = {"header": header, "seeds": results, "verdict": verdict}
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
