"""``xraydebug retrain``: retrain on the cleaned data and compare the models before and after.

The new model is trained with the baseline checkpoint's recorded :class:`TrainConfig` (same
architecture, epochs, learning rate, seed, ...) on the cleaned dataset. Then BOTH models are
scored on the same test sets: the original test split and the cleaned test split. For each test
set ``before_after.json`` holds accuracy, macro-F1 and per-class precision/recall/F1/support of
each model with patient-level bootstrap 95% CIs, and the after-minus-before difference with a
*paired* bootstrap CI (both models scored on the same resampled patients). ``before_after.csv``
holds the same numbers one row per (test set, class, metric).

With ``repeats = N > 1`` both sides are trained with N seeds (the baseline's seed + 0..N-1; seed
+0 is the baseline checkpoint itself, the other "before" models are retrained on the baseline's
training data) and the per-seed point estimates are summarised as mean, standard deviation,
minimum and maximum, which separates the effect of cleaning from seed-to-seed noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from xraydebug.audit.report import build_report, has_detected_text
from xraydebug.audit.text_sensitivity import (
    TextSensitivityConfig,
    text_sensitivity,
    text_sensitivity_table,
)
from xraydebug.data.layouts import load_index
from xraydebug.data.text_pool import boxes_from_table
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_open, atomic_write_json, ensure_outside
from xraydebug.models.checkpoint import file_sha256, load_model, read_checkpoint
from xraydebug.models.evaluate import patient_groups, predict_records_many
from xraydebug.models.metrics import (
    METRIC_KEYS,
    bootstrap_ci,
    paired_difference_ci,
    summary_metrics,
)
from xraydebug.models.train import (
    TrainConfig,
    checkpoint_is_current,
    recorded_train_config,
    train,
)
from xraydebug.runfolder import BEFORE_AFTER_CSV, BEFORE_AFTER_JSON, CLEAN_STATE, CLEANING_CSV

TEST_SETS = ("original", "cleaned")
"""``original``: the test split of the data the baseline saw; ``cleaned``: the cleaned copy."""

BEFORE_AFTER_COLUMNS = [
    "test_set",
    "class",
    "metric",
    "support",
    "before",
    "before_ci_low",
    "before_ci_high",
    "after",
    "after_ci_low",
    "after_ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
]
REPEAT_COLUMNS = [
    "n_seeds",
    "before_mean",
    "before_sd",
    "after_mean",
    "after_sd",
    "diff_mean",
    "diff_sd",
    "diff_min",
    "diff_max",
]


@dataclass(frozen=True)
class RetrainConfig:
    """Settings of :func:`retrain` that are not the baseline's training recipe."""

    repeats: int = 1
    n_boot: int = 1000
    batch_size: int = 64  # evaluation batch
    device: str = "auto"
    # run the text-sensitivity test (:mod:`xraydebug.audit.text_sensitivity`) on both models
    text_sensitivity: bool = True
    # retrain with burned-in text pasted onto this share of training films of every class
    # (the text ``clean`` found in the original data; ``TrainConfig.decorrelate_text``)
    decorrelate_text: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decorrelate_text <= 1.0:
            raise ValueError(f"decorrelate_text must be in [0, 1]; got {self.decorrelate_text}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")


@dataclass
class RetrainResult:
    checkpoint: Path
    comparison: dict[str, Any]
    table: pd.DataFrame
    json_path: Path
    csv_path: Path
    report_path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def baseline_train_config(meta: dict[str, Any], device: str) -> TrainConfig:
    """The :class:`TrainConfig` recorded in a checkpoint, run on ``device``."""
    recorded = meta.get("train_config")
    imported = meta.get("imported")
    if imported and not isinstance(recorded, dict):
        raise DatasetError(
            f"the baseline was imported ({imported.get('format')}: {imported.get('path')}) and "
            "records no training recipe; retraining an imported model is not supported yet: "
            "train a baseline with `xraydebug train`, or evaluate and scan the imported one"
        )
    if not isinstance(recorded, dict):
        raise DatasetError("the baseline checkpoint records no training config to repeat")
    known = {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in recorded_train_config(meta).items() if k in known}
    return TrainConfig(**{**settings, "device": device})


def _original_data(clean_data: Path, test_data: Path | str | None, meta: dict[str, Any]) -> Path:
    """``--test``, else the source recorded by ``clean``, else the baseline's training data."""
    candidates = [test_data]
    state = clean_data / CLEAN_STATE
    if state.exists():
        candidates.append(json.loads(state.read_text()).get("data"))
    candidates.append(meta.get("data"))
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise DatasetError(
        f"{clean_data}: cannot tell which dataset it was cleaned from; pass --test ORIGINAL_DATA"
    )


def _fit(data: Path, out: Path, config: TrainConfig, console: Console) -> Path:
    """Train ``config`` on ``data`` into ``out`` unless a finished identical run is there."""
    if checkpoint_is_current(out, data, config):
        console.print(f"reusing {out} (same data and training settings)")
        return out
    train(data, out, config=config, console=console)
    return out


def _predict_pair(
    before: Path, after: Path, data: Path, device: torch.device, batch_size: int
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...], list[str]]:
    """Both models' predictions on the test split of ``data`` (each image decoded once)."""
    models = [load_model(path, device) for path in (before, after)]
    if models[1].classes != models[0].classes:
        raise DatasetError(
            f"{after}: classes {models[1].classes} differ from the baseline's {models[0].classes}"
        )
    index = load_index(data, classes=models[0].classes)
    records = index.usable("test")
    if not records:
        raise DatasetError(f"{data}: no readable labelled images in split 'test'")
    (table_before, table_after), skipped = predict_records_many(
        models, index.root, records, device, batch_size
    )
    return table_before, table_after, models[0].classes, [message for _rec, message in skipped]


def _arrays(
    before: pd.DataFrame, after: pd.DataFrame, classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """labels, before preds, after preds, patient groups over the images both models scored."""
    merged = before.merge(after[["path", "pred"]], on="path", suffixes=("_before", "_after"))
    index = {c: i for i, c in enumerate(classes)}
    labels = merged["label"].map(index).to_numpy(dtype=np.int64)
    preds_before = merged["pred_before"].map(index).to_numpy(dtype=np.int64)
    preds_after = merged["pred_after"].map(index).to_numpy(dtype=np.int64)
    return labels, preds_before, preds_after, patient_groups(merged), merged


def compare_predictions(
    before: pd.DataFrame,
    after: pd.DataFrame,
    classes: tuple[str, ...] | list[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Before/after metrics of two prediction tables over the same test images.

    ``before``/``after``: columns ``path, label, pred, patient_id`` (as
    :func:`~xraydebug.models.evaluate.predict_records` returns); rows are paired by ``path``.
    Returns ``{"n", "before": metrics, "after": metrics, "difference": paired}`` where metrics
    are :func:`summary_metrics` plus ``ci`` (:func:`bootstrap_ci`) and ``difference`` is
    :func:`paired_difference_ci`; all intervals resample patients.
    """
    classes = tuple(classes)
    labels, preds_before, preds_after, groups, merged = _arrays(before, after, classes)
    if len(merged) == 0:
        raise DatasetError("the two models share no scored test image to compare")
    result: dict[str, Any] = {"n": len(merged)}
    for side, preds in (("before", preds_before), ("after", preds_after)):
        metrics = summary_metrics(labels, preds, list(classes))
        metrics["ci"] = bootstrap_ci(labels, preds, classes, groups, n_boot, seed=seed)
        result[side] = metrics
    result["difference"] = paired_difference_ci(
        labels, preds_before, preds_after, classes, groups, n_boot, seed=seed
    )
    return result


def _metric_rows(classes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(class or "all", metric) in report order."""
    rows = [(c, m) for c in classes for m in METRIC_KEYS]
    return [*rows, ("all", "accuracy"), ("all", "macro_f1")]


def _pick(metrics: dict[str, Any], cls: str, metric: str) -> Any:
    return metrics[metric] if cls == "all" else metrics["per_class"][cls][metric]


def _ci(metrics: dict[str, Any], cls: str, metric: str) -> list[float]:
    ci = metrics["ci"]
    return ci[metric] if cls == "all" else ci["per_class"][cls][metric]


def summarise_repeats(per_seed: list[dict[str, Any]], classes: tuple[str, ...]) -> dict[str, Any]:
    """Mean, sd (ddof=1; 0 for one seed), min and max over seeds of before, after and diff.

    ``per_seed``: ``[{"seed", test_set: {"before": summary_metrics, "after": ...}}, ...]``.
    Returns ``{test_set: {"cls/metric": {"before": {...}, "after": {...}, "diff": {...}}}}``.
    """
    out: dict[str, Any] = {}
    for test_set in TEST_SETS:
        if not all(test_set in entry for entry in per_seed):
            continue
        out[test_set] = {}
        for cls, metric in _metric_rows(classes):
            values = {
                side: np.array(
                    [float(_pick(entry[test_set][side], cls, metric)) for entry in per_seed]
                )
                for side in ("before", "after")
            }
            values["diff"] = values["after"] - values["before"]
            out[test_set][f"{cls}/{metric}"] = {
                side: {
                    "mean": float(v.mean()),
                    "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                    "min": float(v.min()),
                    "max": float(v.max()),
                }
                for side, v in values.items()
            }
    return out


def comparison_table(comparison: dict[str, Any]) -> pd.DataFrame:
    """``before_after.csv``: one row per (test set, class, metric); columns
    :data:`BEFORE_AFTER_COLUMNS` (+ :data:`REPEAT_COLUMNS` with several seeds)."""
    classes = tuple(comparison["classes"])
    repeats = comparison.get("repeats", {}).get("summary", {})
    n_seeds = len(comparison.get("repeats", {}).get("seeds", []))
    rows = []
    for test_set, result in comparison["test_sets"].items():
        for cls, metric in _metric_rows(classes):
            diff = _pick(result["difference"], cls, metric)
            support = result["before"]["per_class"][cls]["support"] if cls != "all" else result["n"]
            row = {
                "test_set": test_set,
                "class": cls,
                "metric": metric,
                "support": support,
                "before": _pick(result["before"], cls, metric),
                "before_ci_low": _ci(result["before"], cls, metric)[0],
                "before_ci_high": _ci(result["before"], cls, metric)[1],
                "after": _pick(result["after"], cls, metric),
                "after_ci_low": _ci(result["after"], cls, metric)[0],
                "after_ci_high": _ci(result["after"], cls, metric)[1],
                "diff": diff["diff"],
                "diff_ci_low": diff["ci"][0],
                "diff_ci_high": diff["ci"][1],
            }
            stats = repeats.get(test_set, {}).get(f"{cls}/{metric}")
            if n_seeds > 1 and stats:
                row.update(
                    n_seeds=n_seeds,
                    before_mean=stats["before"]["mean"],
                    before_sd=stats["before"]["sd"],
                    after_mean=stats["after"]["mean"],
                    after_sd=stats["after"]["sd"],
                    diff_mean=stats["diff"]["mean"],
                    diff_sd=stats["diff"]["sd"],
                    diff_min=stats["diff"]["min"],
                    diff_max=stats["diff"]["max"],
                )
            rows.append(row)
    columns = BEFORE_AFTER_COLUMNS + (REPEAT_COLUMNS if n_seeds > 1 else [])
    return pd.DataFrame(rows, columns=columns)


def _text_paths(clean_data: Path) -> set[str] | None:
    """Paths in which ``clean`` found (and removed) text, from its ``cleaning.csv``."""
    csv_path = clean_data / CLEANING_CSV
    if not csv_path.exists():
        return None
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return set(table.loc[has_detected_text(table), "path"])


def text_breakdown(
    merged: pd.DataFrame, text_paths: set[str], classes: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Share of each predicted class, per true label, for images with and without detected text.

    ``merged``: columns ``path, label, pred_before, pred_after``. Where text is independent of
    the class (a decorrelated test set), a cleaned model should give the same shares with and
    without text; a class called far more often on images with text is a shortcut that
    survived cleaning. Returns rows ``{"label", "text", "n", "before": {class: share},
    "after": {class: share}}``.
    """
    has_text = merged["path"].isin(text_paths)
    rows = []
    for label in classes:
        for text in (True, False):
            part = merged[(merged["label"] == label) & (has_text == text)]
            row: dict[str, Any] = {"label": label, "text": text, "n": len(part)}
            for side in ("before", "after"):
                counts = part[f"pred_{side}"].value_counts()
                row[side] = {
                    c: (counts.get(c, 0) / len(part)) if len(part) else 0.0 for c in classes
                }
            rows.append(row)
    return rows


def residual_shortcut_warnings(
    breakdown: list[dict[str, Any]], test_set: str, min_gap: float = 0.25, min_n: int = 5
) -> list[str]:
    """Warnings where the retrained model calls a class much more often when text is present."""
    by_key = {(r["label"], r["text"]): r for r in breakdown}
    warnings = []
    for (label, text), with_text in by_key.items():
        without = by_key.get((label, False))
        if not text or without is None or min(with_text["n"], without["n"]) < min_n:
            continue
        for cls, share in with_text["after"].items():
            gap = share - without["after"][cls]
            if cls != label and gap >= min_gap:
                warnings.append(
                    f"{test_set} test set: the retrained model still calls {share:.0%} of "
                    f"{label} images with detected text {cls} (vs {without['after'][cls]:.0%} "
                    f"without text; before cleaning {with_text['before'][cls]:.0%}): a text "
                    "shortcut survived cleaning, e.g. from text the detector missed in training"
                )
    return warnings


def shortcut_check(breakdown: list[dict[str, Any]], max_gap: float = 0.10, min_n: int = 5) -> dict:
    """Is the text shortcut gone? For every true label and every other class, the share of
    images with detected text called that class minus the share without text, before and after.

    Returns ``{"gone": bool, "max_gap_before", "max_gap_after", "worst": {label, class,
    with_text, without_text} (after), "sentence": str}``; ``gone`` when no gap after cleaning
    exceeds ``max_gap`` (groups under ``min_n`` images are skipped).
    """
    by_key = {(r["label"], r["text"]): r for r in breakdown}
    gaps = {"before": [], "after": []}
    for (label, text), with_text in by_key.items():
        without = by_key.get((label, False))
        if not text or without is None or min(with_text["n"], without["n"]) < min_n:
            continue
        for side in gaps:
            for cls, share in with_text[side].items():
                if cls != label:
                    gaps[side].append(
                        (share - without[side][cls], label, cls, share, without[side][cls])
                    )
    if not gaps["after"]:
        return {"gone": None, "sentence": "too few images with and without text to tell"}
    worst = max(gaps["after"])
    before = max(gaps["before"])
    gone = bool(worst[0] <= max_gap)
    sentence = (
        f"largest gap after cleaning: {worst[1]} images with text are called {worst[2]} "
        f"{worst[3]:.0%} of the time vs {worst[4]:.0%} without text ({worst[0]:+.0%}; before "
        f"cleaning the largest gap was {before[0]:+.0%}: {before[1]} called {before[2]} "
        f"{before[3]:.0%} vs {before[4]:.0%})"
    )
    return {
        "gone": gone,
        "max_gap_before": before[0],
        "max_gap_after": worst[0],
        "worst": {
            "label": worst[1],
            "class": worst[2],
            "with_text": worst[3],
            "without_text": worst[4],
        },
        "sentence": ("The text shortcut is gone: " if gone else "A text shortcut remains: ")
        + sentence,
    }


def _write_predictions(path: Path, merged: pd.DataFrame) -> None:
    columns = ["path", "split", "label", "source", "pred_before", "pred_after"]
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        merged[columns].to_csv(handle, index=False)


def retrain(
    clean_data: Path | str,
    baseline: Path | str = "models/covidnet.pt",
    *,
    test_data: Path | str | None = None,
    out: Path | str | None = None,
    run_dir: Path | str = "runs/retrain",
    config: RetrainConfig = RetrainConfig(),
    scan_dir: Path | str | None = None,
    console: Console | None = None,
    report: bool = True,
) -> RetrainResult:
    """Retrain the baseline's recipe on ``clean_data``; compare both models; write the results.

    ``out`` (default ``<baseline>-clean.pt``) receives the retrained model; ``run_dir`` receives
    ``before_after.json``/``.csv``, paired predictions per test set and, with several seeds, the
    extra models under ``models/``. ``test_data`` is the original dataset (default: the one
    ``clean`` recorded). ``scan_dir`` (default: the scan ``clean`` reused, if any) is named in the
    JSON so the HTML report can show the flagged images next to the numbers. Finished models are
    reused on a rerun. With ``report`` the audit report ``run_dir/report.html`` is written.
    """
    console = console or Console()
    inputs = _resolve_inputs(
        clean_data, baseline, test_data=test_data, out=out, run_dir=run_dir, config=config
    )
    warnings = _baseline_warnings(inputs)
    scan_dir = _scan_dir(inputs.clean_data, scan_dir)
    text_paths = _text_paths(inputs.clean_data)
    seeds = [inputs.recipe.seed + k for k in range(config.repeats)]
    pairs = _train_pairs(inputs, seeds, console=console)
    comparison = _new_comparison(inputs, config, scan_dir=scan_dir)
    per_seed = _score_pairs(
        inputs, pairs, comparison, config=config, text_paths=text_paths, warnings=warnings
    )
    comparison["baseline"]["sha256"] = file_sha256(inputs.baseline)
    comparison["retrained"]["sha256"] = file_sha256(inputs.out)
    comparison["repeats"] = _repeats_record(seeds, pairs, per_seed, tuple(comparison["classes"]))
    if config.text_sensitivity:
        _add_text_sensitivity(
            comparison, warnings, inputs=inputs, pair=pairs[0], config=config, console=console
        )
    comparison["warnings"] = warnings
    return _write_results(inputs, comparison, warnings, report=report)


@dataclass(frozen=True)
class _Inputs:
    """What :func:`retrain` works from, resolved and checked."""

    clean_data: Path
    baseline: Path
    out: Path  # the retrained model
    run_dir: Path
    original: Path  # the dataset ``clean_data`` was cleaned from
    before_data: Path  # the baseline's training data, else ``original``
    recipe: TrainConfig  # the baseline's
    after_recipe: TrainConfig  # the recipe on the cleaned data
    device: torch.device

    @property
    def cleaning_csv(self) -> Path:
        return self.clean_data / CLEANING_CSV

    @property
    def test_sets(self) -> dict[str, Path]:
        """The datasets whose test split both models are scored on, by :data:`TEST_SETS` name."""
        return {"original": self.original, "cleaned": self.clean_data}


def _resolve_inputs(
    clean_data: Path | str,
    baseline: Path | str,
    *,
    test_data: Path | str | None,
    out: Path | str | None,
    run_dir: Path | str,
    config: RetrainConfig,
) -> _Inputs:
    """The paths and recipes of :func:`retrain`; errors where an output would land inside a
    dataset or overwrite the baseline."""
    clean_data, baseline, run_dir = Path(clean_data), Path(baseline), Path(run_dir)
    out = Path(out) if out is not None else baseline.with_name(f"{baseline.stem}-clean.pt")
    meta = read_checkpoint(baseline)
    original = _original_data(clean_data, test_data, meta)
    for path, what in ((run_dir, "the run folder"), (out.parent, "--out")):
        for data in (clean_data, original):
            ensure_outside(path, data, what)
    if out.resolve() == baseline.resolve():
        raise ValueError(f"--out {out} would overwrite the baseline checkpoint")
    recipe = baseline_train_config(meta, config.device)
    device = resolve_device(config.device)
    train_data = Path(meta["data"]) if meta.get("data") and Path(meta["data"]).is_dir() else None
    after_recipe = replace(recipe, decorrelate_text=config.decorrelate_text)
    cleaning_csv = clean_data / CLEANING_CSV
    if config.decorrelate_text > 0 and cleaning_csv.exists():
        after_recipe = replace(
            after_recipe,
            text_data=str(original.resolve()),
            text_boxes=str(cleaning_csv.resolve()),
        )
    return _Inputs(
        clean_data,
        baseline,
        out,
        run_dir,
        original,
        train_data or original,
        recipe,
        after_recipe,
        device,
    )


def _baseline_warnings(inputs: _Inputs) -> list[str]:
    """A warning where the baseline is not what its recorded recipe gives on its data."""
    if checkpoint_is_current(inputs.baseline, inputs.before_data, inputs.recipe):
        return []
    return [
        f"the baseline {inputs.baseline} was not trained on the training split of "
        f"{inputs.before_data} with its recorded settings (other data or files changed): "
        "the comparison mixes the effect of cleaning with that difference"
    ]


def _scan_dir(clean_data: Path, scan_dir: Path | str | None) -> Path | str | None:
    """``scan_dir``, else the scan ``clean`` reused (recorded in its state file), if any."""
    if scan_dir is None and (clean_data / CLEAN_STATE).exists():
        return json.loads((clean_data / CLEAN_STATE).read_text()).get("config", {}).get("scan")
    return scan_dir


def _train_pairs(
    inputs: _Inputs, seeds: list[int], *, console: Console
) -> list[tuple[int, Path, Path]]:
    """(seed, before model, after model) per seed; the first pair's before is the baseline,
    the other models are trained (or reused) here."""
    pairs: list[tuple[int, Path, Path]] = []
    for k, seed in enumerate(seeds):
        console.rule(f"retrain seed {seed} ({k + 1}/{len(seeds)}) on the cleaned data")
        after_path = inputs.out if k == 0 else inputs.run_dir / "models" / f"after-seed{seed}.pt"
        _fit(inputs.clean_data, after_path, replace(inputs.after_recipe, seed=seed), console)
        if k == 0:
            before_path = inputs.baseline
        else:
            console.rule(f"baseline recipe, seed {seed}, on the original data")
            before_path = inputs.run_dir / "models" / f"before-seed{seed}.pt"
            _fit(inputs.before_data, before_path, replace(inputs.recipe, seed=seed), console)
        pairs.append((seed, before_path, after_path))
    return pairs


def _new_comparison(
    inputs: _Inputs, config: RetrainConfig, *, scan_dir: Path | str | None
) -> dict[str, Any]:
    """The head of ``before_after.json``: what was compared, with which settings."""
    return {
        "classes": [],
        "baseline": {"path": str(inputs.baseline)},
        "retrained": {"path": str(inputs.out)},
        "train_config": {k: v for k, v in inputs.recipe.to_dict().items() if k != "device"},
        "data": {
            "original": str(inputs.original.resolve()),
            "cleaned": str(inputs.clean_data.resolve()),
        },
        "scan_dir": str(Path(scan_dir).resolve()) if scan_dir else None,
        "n_boot": config.n_boot,
        "machine": machine_info(),
        "test_sets": {},
        "skipped": {},
    }


def _score_pairs(
    inputs: _Inputs,
    pairs: list[tuple[int, Path, Path]],
    comparison: dict[str, Any],
    *,
    config: RetrainConfig,
    text_paths: set[str] | None,
    warnings: list[str],
) -> list[dict[str, Any]]:
    """Score every pair on every test set; the first pair in full (into ``comparison``, its
    predictions files and ``warnings``), the others as point estimates. Returns the per-seed
    ``{"seed", test_set: {"before", "after"}}``."""
    per_seed: list[dict[str, Any]] = []
    for k, (seed, before_path, after_path) in enumerate(pairs):
        entry: dict[str, Any] = {"seed": seed}
        for name, data in inputs.test_sets.items():
            before, after, classes, skipped = _predict_pair(
                before_path, after_path, data, inputs.device, config.batch_size
            )
            if k == 0:
                comparison["classes"] = list(classes)
                entry[name] = _compare_test_set(
                    name,
                    data,
                    (before, after, classes, skipped),
                    comparison,
                    inputs=inputs,
                    config=config,
                    text_paths=text_paths,
                    warnings=warnings,
                )
            else:
                labels, preds_before, preds_after, _, _ = _arrays(before, after, classes)
                entry[name] = {
                    side: summary_metrics(labels, preds, list(classes))
                    for side, preds in (("before", preds_before), ("after", preds_after))
                }
        per_seed.append(entry)
    return per_seed


def _compare_test_set(
    name: str,
    data: Path,
    predicted: tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...], list[str]],
    comparison: dict[str, Any],
    *,
    inputs: _Inputs,
    config: RetrainConfig,
    text_paths: set[str] | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The full comparison of the first pair on one test set into ``comparison`` (with the
    text breakdown and its ``warnings``), its predictions file; returns before/after metrics."""
    before, after, classes, skipped = predicted
    result = compare_predictions(before, after, classes, config.n_boot, inputs.recipe.seed)
    comparison["test_sets"][name] = {"data": str(data), **result}
    comparison["skipped"][name] = skipped
    *_, merged = _arrays(before, after, classes)
    _write_predictions(inputs.run_dir / f"predictions_{name}.csv", merged)
    if text_paths is not None:
        breakdown = text_breakdown(merged, text_paths, classes)
        comparison["test_sets"][name]["by_text"] = breakdown
        comparison["test_sets"][name]["shortcut_check"] = shortcut_check(breakdown)
        warnings += residual_shortcut_warnings(breakdown, name)
    return {"before": result["before"], "after": result["after"]}


def _repeats_record(
    seeds: list[int],
    pairs: list[tuple[int, Path, Path]],
    per_seed: list[dict[str, Any]],
    classes: tuple[str, ...],
) -> dict[str, Any]:
    """``before_after.json``'s ``repeats``: the seeds, their models, point estimates and
    their summary over seeds."""
    return {
        "seeds": seeds,
        "models": [{"seed": s, "before": str(b), "after": str(a)} for s, b, a in pairs],
        "per_seed": [
            {
                "seed": entry["seed"],
                **{
                    name: {side: _point(entry[name][side]) for side in ("before", "after")}
                    for name in TEST_SETS
                },
            }
            for entry in per_seed
        ],
        "summary": summarise_repeats(per_seed, classes),
    }


def _add_text_sensitivity(
    comparison: dict[str, Any],
    warnings: list[str],
    *,
    inputs: _Inputs,
    pair: tuple[int, Path, Path],
    config: RetrainConfig,
    console: Console,
) -> None:
    """Run the text-sensitivity test of the first pair into ``comparison``; a warning where
    it cannot run or the retrained model still reacts to text."""
    _seed, before, after = pair
    try:
        found = _text_sensitivity_pair(
            inputs.original, before, after, inputs.cleaning_csv, inputs.run_dir, config, console
        )
    except DatasetError as exc:  # e.g. too few text-free test films
        warnings.append(f"text-sensitivity test not run: {exc}")
    else:
        comparison["text_sensitivity"] = found
        if found["after"]["reacts"]:
            warnings.append(found["sentence"])


def _write_results(
    inputs: _Inputs, comparison: dict[str, Any], warnings: list[str], *, report: bool
) -> RetrainResult:
    """Write ``before_after.json``/``.csv`` (and the report) into the run folder."""
    json_path = atomic_write_json(inputs.run_dir / BEFORE_AFTER_JSON, comparison)
    table = comparison_table(comparison)
    csv_path = inputs.run_dir / BEFORE_AFTER_CSV
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:
        table.to_csv(handle, index=False)
    report_path = build_report(inputs.run_dir) if report else None
    return RetrainResult(inputs.out, comparison, table, json_path, csv_path, report_path, warnings)


def _text_sensitivity_pair(
    original: Path,
    before: Path,
    after: Path,
    cleaning_csv: Path,
    run_dir: Path,
    config: RetrainConfig,
    console: Console,
) -> dict[str, Any]:
    """The text-sensitivity test of the models before and after, on the original test split
    (text pool: the boxes ``clean`` found; else the detector runs); ``{before, after,
    sentence}``."""
    console.rule("text sensitivity: paste text (and placebo film) onto text-free test films")
    settings = TextSensitivityConfig(
        n_boot=config.n_boot, batch_size=config.batch_size, device=config.device
    )
    boxes = boxes_from_table(cleaning_csv) if cleaning_csv.exists() else None
    found_before, found_after = text_sensitivity(
        original,
        [before, after],
        run_dir / "text_sensitivity",
        boxes=boxes,
        config=settings,
        names=("before", "after"),
    )
    b, a = found_before.summary, found_after.summary
    # the class text pushed toward before cleaning, unless after it pushes toward another
    cls = a["worst_class"] if a["reacts"] else b["worst_class"]
    moved, was = a["into"][cls], b["into"][cls]
    ci = f" (95% CI [{moved['ci'][0]:+.0%}, {moved['ci'][1]:+.0%}])" if moved["ci"] else ""
    sentence = (
        f"After retraining the model {'still reacts' if a['reacts'] else 'no longer reacts'} "
        f"to burned-in text: pasted text turns {moved['sensitivity']:+.0%} more of the films "
        f"it did not call {cls} into {cls} than placebo pastes do{ci}; before cleaning "
        f"{was['sensitivity']:+.0%}."
    )
    return {"before": b, "after": a, "sentence": sentence}


def _point(metrics: dict[str, Any]) -> dict[str, Any]:
    """Point estimates only (no CIs, no confusion matrix) for the per-seed record."""
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class": metrics["per_class"],
    }


def before_after_table(comparison: dict[str, Any], test_set: str = "original") -> Table:
    """A rich table of precision and recall before/after with CIs for one test set."""
    result = comparison["test_sets"][test_set]
    n_seeds = len(comparison.get("repeats", {}).get("seeds", []))
    summary = comparison.get("repeats", {}).get("summary", {}).get(test_set, {})
    table = Table(title=f"Before / after cleaning, {test_set} test set (n = {result['n']})")
    for name in ("class", "metric", "before [95% CI]", "after [95% CI]", "after - before [CI]"):
        table.add_column(name, justify="left" if name in ("class", "metric") else "right")
    if n_seeds > 1:
        table.add_column(f"diff over {n_seeds} seeds (mean ± sd)", justify="right")
    classes = tuple(comparison["classes"])
    for cls, metric in _metric_rows(classes):
        if metric == "f1" and cls != "all":
            continue
        diff = _pick(result["difference"], cls, metric)

        def cell(side: str, cls: str = cls, metric: str = metric) -> str:
            lo, hi = _ci(result[side], cls, metric)
            return f"{_pick(result[side], cls, metric):.3f} [{lo:.2f}, {hi:.2f}]"

        colour = "green" if diff["ci"][0] > 0 else "red" if diff["ci"][1] < 0 else ""
        change = f"{diff['diff']:+.3f} [{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}]"
        cells = [cls, metric, cell("before"), cell("after"), _colour(change, colour)]
        if n_seeds > 1:
            stats = summary.get(f"{cls}/{metric}", {}).get("diff")
            cells.append(f"{stats['mean']:+.3f} ± {stats['sd']:.3f}" if stats else "")
        table.add_row(*cells)
    table.caption = (
        "95% CIs: patient-level bootstrap; the difference's CI is paired (both models on the "
        "same resampled patients); green/red: the CI excludes 0"
    )
    return table


def print_before_after(result: RetrainResult, console: Console, sentence: bool = True) -> None:
    """The before/after table of every test set, the text-sensitivity tables (and, with
    ``sentence``, their verdict), then the warnings (CLI and demo)."""
    for name in result.comparison["test_sets"]:
        console.print(before_after_table(result.comparison, name))
    sensitivity = result.comparison.get("text_sensitivity")
    if sensitivity:
        for side in ("before", "after"):
            title = f"Does the model react to burned-in text? ({side} cleaning)"
            console.print(text_sensitivity_table(sensitivity[side], title))
        if sentence and not sensitivity["after"]["reacts"]:  # else it is among the warnings
            console.print(f"[green]{sensitivity['sentence']}[/]", highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _colour(text: str, colour: str) -> str:
    return f"[{colour}]{text}[/]" if colour else text
