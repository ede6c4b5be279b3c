"""``xraydebug retrain``: retrain on the cleaned data and compare the models before and after.

The new model is trained with the baseline checkpoint's recorded :class:`TrainConfig` (same
architecture, epochs, learning rate, seed, ...) on the cleaned dataset. Then BOTH models are
scored on the same test sets: the original test split and the cleaned test split. For each test
set ``before_after.json`` holds accuracy, macro-F1 and per-class precision/recall/F1/support of
each model with patient-level bootstrap 95% CIs, and the after-minus-before difference with a
*paired* bootstrap CI (both models scored on the same resampled patients;
:func:`~xraydebug.audit.compare.compare_predictions`). ``before_after.csv`` holds the same
numbers one row per (test set, class, metric). The text breakdown of both models' calls on
films with and without detected text is :mod:`xraydebug.audit.shortcut_check`'s.

**Multi-label baselines** (one sigmoid per finding): the retrained model is trained multi-label
on the same findings, stopping on validation AUROC. ``before_after.json`` then has
``multilabel: true`` and, per test set, ``per_finding`` entries instead of ``per_class``: AUROC,
and precision, recall and F1 at each model's own thresholds (the per-finding F1-best
thresholds its training chose on validation; else those :func:`resolve_thresholds` finds), with
CIs, plus ``macro_auroc`` (:func:`~xraydebug.audit.compare.compare_findings`); the paired
differences reuse one set of patient draws for both models
(:func:`~xraydebug.models.multilabel.paired_finding_bootstrap`). ``before_after.csv`` has one
row per (test set, finding, metric) (the finding in the ``class`` column;
``all/macro_auroc`` last). The text breakdown is per finding: how often each finding is called
on films with and without detected text, among the films that have it and those that do not
(:func:`~xraydebug.audit.shortcut_check.finding_text_breakdown`).

**Imported baselines** (``xraydebug import-model``) record no recipe to repeat: the retrained
model is the baseline fine-tuned on the cleaned data, starting from its own weights, with its
own preprocessing and the fine-tuning recipe of its architecture; an embedded network is
fine-tuned in place when its parameters can train, and refused otherwise
(:mod:`xraydebug.audit.finetune`). No other seeds of an imported model can be trained, so
``repeats`` must be 1.

With ``repeats = N > 1`` both sides are trained with N seeds (the baseline's seed + 0..N-1; seed
+0 is the baseline checkpoint itself, the other "before" models are retrained on the baseline's
training data) and the per-seed point estimates are summarised as mean, standard deviation,
minimum and maximum, which separates the effect of cleaning from seed-to-seed noise. The
text-sensitivity test runs on every seed's pair (the same pastes for all models):
``text_sensitivity`` keeps the first pair's full summaries (``seed``, ``before``, ``after``),
every pair's per-class sensitivities (``per_seed``) and their spread over seeds (``summary``).

This module is the orchestration (inputs, training, scoring, ``before_after.json``/``.csv``)
and the console/CSV tables of the comparison.
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

from xraydebug.audit.compare import (
    compare_findings,
    compare_predictions,
    finding_arrays,
    merged_findings,
    paired_labels,
)
from xraydebug.audit.finetune import (
    BATCHNORM_NOTES,
    FinetuneStart,
    check_trainable,
    finetune,
    finetune_train_config,
)
from xraydebug.audit.report import build_report
from xraydebug.audit.shortcut_check import (
    detected_text_paths,
    finding_shortcut_check,
    finding_shortcut_warnings,
    finding_text_breakdown,
    residual_shortcut_warnings,
    shortcut_check,
    text_breakdown,
)
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
from xraydebug.models.architectures import Preprocessing
from xraydebug.models.checkpoint import file_sha256, load_model, read_checkpoint
from xraydebug.models.evaluate import (
    EvaluateConfig,
    check_kind,
    predict_records_many,
    predicted_label,
    resolve_thresholds,
)
from xraydebug.models.metrics import METRIC_KEYS, summary_metrics
from xraydebug.models.multilabel import FINDING_METRIC_KEYS
from xraydebug.models.multilabel import summary as finding_summary
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
    # of every seed
    text_sensitivity: bool = True
    # retrain with burned-in text pasted onto this share of training films of every class
    # (the text ``clean`` found in the original data; ``TrainConfig.decorrelate_text``)
    decorrelate_text: float = 0.0
    # an imported baseline (no recipe recorded): epochs of its fine-tuning run (None: the
    # fine-tuning recipe's)
    finetune_epochs: int | None = None
    # CheXpert/MIMIC uncertain labels: the baseline's recorded policy unless given here (an
    # imported baseline records none)
    uncertain: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.decorrelate_text <= 1.0:
            raise ValueError(f"decorrelate_text must be in [0, 1]; got {self.decorrelate_text}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}")


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
            "records no training recipe to repeat; retrain fine-tunes it instead "
            "(finetune_train_config)"
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


def _check_data_kind(
    data: Path, meta: dict[str, Any], baseline: Path, uncertain: str | None = None
) -> None:
    """One line where ``data`` is not the kind of data the baseline was trained for: softmax
    classes vs multi-label findings, other classes (in order), findings it lacks (matched
    as every command matches them, by :func:`load_index`)."""
    classes = tuple(meta["classes"])
    multilabel = bool(meta.get("multilabel"))
    wanted = classes if multilabel else None
    index = load_index(data, classes=wanted, uncertain=uncertain or meta.get("uncertain"))
    check_kind(multilabel, index, f"the baseline {baseline}")
    if not multilabel and index.classes != classes:
        raise DatasetError(
            f"{data}: its classes ({', '.join(index.classes)}) are not the baseline's "
            f"({', '.join(classes)}, in this order); retrain trains on the data's classes"
        )


def _fit(data: Path, out: Path, config: TrainConfig, console: Console) -> Path:
    """Train ``config`` on ``data`` into ``out`` unless a finished identical run is there."""
    if checkpoint_is_current(out, data, config):
        console.print(f"reusing {out} (same data and training settings)")
        return out
    train(data, out, config=config, console=console)
    return out


@dataclass
class _Predicted:
    """Both models' predictions on one test split: tables as
    :func:`~xraydebug.models.evaluate.predict_records_many` returns them (multi-label: ``pred``
    at ``thresholds``, each model's own), the skipped images' messages."""

    before: pd.DataFrame
    after: pd.DataFrame
    classes: tuple[str, ...]
    skipped: list[str]
    multilabel: bool = False
    thresholds: tuple[np.ndarray, np.ndarray] | None = None
    threshold_sources: tuple[str, str] | None = None


def _predict_pair(
    before: Path,
    after: Path,
    data: Path,
    device: torch.device,
    batch_size: int,
    uncertain: str | None = None,
) -> _Predicted:
    """Both models' predictions on the test split of ``data`` (each image decoded once);
    ``uncertain``: the policy for uncertain labels (default the baseline's)."""
    models = [load_model(path, device) for path in (before, after)]
    first = models[0]
    if models[1].classes != first.classes or models[1].multilabel != first.multilabel:
        raise DatasetError(
            f"{after}: classes {models[1].classes} differ from the baseline's {first.classes}"
        )
    uncertain = uncertain or first.meta.get("uncertain") or models[1].meta.get("uncertain")
    index = load_index(data, classes=first.classes, uncertain=uncertain)
    records = index.usable("test")
    if not records:
        raise DatasetError(f"{data}: no readable labelled images in split 'test'")
    tables, skipped = predict_records_many(models, index.root, records, device, batch_size)
    predicted = _Predicted(*tables, first.classes, [message for _rec, message in skipped])
    if first.multilabel:
        # both models' thresholds by one rule: each its own F1-best on its validation split
        # where both recorded one, else 0.5 for both (an imported baseline records none; an
        # F1-best cut for one model against a fixed one for the other would move precision and
        # recall by the rule rather than by the cleaning)
        settings = EvaluateConfig(batch_size=batch_size, device=str(device))
        if all(m.thresholds is not None for m in models):
            chosen = [resolve_thresholds(m, index, "test", settings, device) for m in models]
        else:
            half = (np.full(len(first.classes), 0.5), "0.5 for both models (one records none)")
            chosen = [half, half]
        for table, loaded, (thresholds, _source) in zip(tables, models, chosen, strict=True):
            probs = table[[f"prob_{f}" for f in first.classes]].to_numpy(dtype=np.float64)
            table["pred"] = [predicted_label(p, loaded, thresholds) for p in probs]
        predicted.multilabel = True
        predicted.thresholds = (chosen[0][0], chosen[1][0])
        predicted.threshold_sources = (chosen[0][1], chosen[1][1])
    return predicted


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class _Layout:
    """Where one kind of comparison keeps its numbers: ``per`` (``per_class`` or
    ``per_finding``), the ``metrics`` of each class or finding, the ``overall`` ones (class
    ``all``) and the ``shown`` ones of the console table and report summary."""

    per: str
    metrics: tuple[str, ...]
    overall: tuple[str, ...]
    shown: tuple[str, ...]


_CLASSES = _Layout("per_class", METRIC_KEYS, ("accuracy", "macro_f1"), ("precision", "recall"))
_FINDINGS = _Layout("per_finding", FINDING_METRIC_KEYS, ("macro_auroc",), ("auroc", "recall"))


def _layout(multilabel: bool) -> _Layout:
    return _FINDINGS if multilabel else _CLASSES


def _metric_rows(classes: tuple[str, ...], multilabel: bool = False) -> list[tuple[str, str]]:
    """(class or finding or "all", metric) in report order."""
    layout = _layout(multilabel)
    rows = [(c, m) for c in classes for m in layout.metrics]
    return [*rows, *(("all", m) for m in layout.overall)]


def _pick(metrics: dict[str, Any], cls: str, metric: str, multilabel: bool = False) -> Any:
    return metrics[metric] if cls == "all" else metrics[_layout(multilabel).per][cls][metric]


def _ci(metrics: dict[str, Any], cls: str, metric: str, multilabel: bool = False) -> Any:
    ci = metrics["ci"]
    return ci[metric] if cls == "all" else ci[_layout(multilabel).per][cls][metric]


def _spread(values: np.ndarray) -> dict[str, float | None]:
    """mean, sd (ddof=1; 0 for one value), min and max of the defined values (None: none)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def summarise_repeats(
    per_seed: list[dict[str, Any]], classes: tuple[str, ...], *, multilabel: bool = False
) -> dict[str, Any]:
    """Mean, sd (ddof=1; 0 for one seed), min and max over seeds of before, after and diff.

    ``per_seed``: ``[{"seed", test_set: {"before": summary_metrics, "after": ...}}, ...]``
    (``multilabel``: :func:`~xraydebug.models.multilabel.summary` per side, and ``classes``
    are findings). Returns ``{test_set: {"cls/metric": {"before": {...}, "after": {...},
    "diff": {...}}}}``; a value undefined for a seed (an AUROC) is left out, None if all are.
    """
    out: dict[str, Any] = {}
    for test_set in TEST_SETS:
        if not all(test_set in entry for entry in per_seed):
            continue
        out[test_set] = {}
        for cls, metric in _metric_rows(classes, multilabel):
            values = {
                side: np.array(
                    [
                        _number(_pick(entry[test_set][side], cls, metric, multilabel))
                        for entry in per_seed
                    ]
                )
                for side in ("before", "after")
            }
            values["diff"] = values["after"] - values["before"]
            out[test_set][f"{cls}/{metric}"] = {side: _spread(v) for side, v in values.items()}
    return out


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def comparison_table(comparison: dict[str, Any]) -> pd.DataFrame:
    """``before_after.csv``: one row per (test set, class, metric); columns
    :data:`BEFORE_AFTER_COLUMNS` (+ :data:`REPEAT_COLUMNS` with several seeds). A multi-label
    comparison has one row per (test set, finding, metric), the finding in ``class`` and its
    positives in ``support``; undefined values are empty."""
    classes = tuple(comparison["classes"])
    multilabel = bool(comparison.get("multilabel"))
    per = _layout(multilabel).per
    repeats = comparison.get("repeats", {}).get("summary", {})
    n_seeds = len(comparison.get("repeats", {}).get("seeds", []))
    rows = []
    for test_set, result in comparison["test_sets"].items():
        for cls, metric in _metric_rows(classes, multilabel):
            diff = _pick(result["difference"], cls, metric, multilabel)
            support = result["before"][per][cls]["support"] if cls != "all" else result["n"]
            before_ci = _ci(result["before"], cls, metric, multilabel) or [None, None]
            after_ci = _ci(result["after"], cls, metric, multilabel) or [None, None]
            diff_ci = diff["ci"] or [None, None]
            row = {
                "test_set": test_set,
                "class": cls,
                "metric": metric,
                "support": support,
                "before": _pick(result["before"], cls, metric, multilabel),
                "before_ci_low": before_ci[0],
                "before_ci_high": before_ci[1],
                "after": _pick(result["after"], cls, metric, multilabel),
                "after_ci_low": after_ci[0],
                "after_ci_high": after_ci[1],
                "diff": diff["diff"],
                "diff_ci_low": diff_ci[0],
                "diff_ci_high": diff_ci[1],
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

    An imported baseline is fine-tuned on ``clean_data`` instead (:mod:`.finetune`);
    ``config.repeats`` must then be 1, and a network whose parameters cannot train is refused.
    """
    console = console or Console()
    inputs = _resolve_inputs(
        clean_data, baseline, test_data=test_data, out=out, run_dir=run_dir, config=config
    )
    warnings = _baseline_warnings(inputs)
    scan_dir = _scan_dir(inputs.clean_data, scan_dir)
    text_paths = detected_text_paths(inputs.clean_data)
    seeds = [inputs.recipe.seed + k for k in range(config.repeats)]
    pairs = _train_pairs(inputs, seeds, console=console)
    comparison = _new_comparison(inputs, config, scan_dir=scan_dir)
    per_seed = _score_pairs(
        inputs, pairs, comparison, config=config, text_paths=text_paths, warnings=warnings
    )
    comparison["baseline"]["sha256"] = file_sha256(inputs.baseline)
    comparison["retrained"]["sha256"] = file_sha256(inputs.out)
    comparison["repeats"] = _repeats_record(
        seeds, pairs, per_seed, tuple(comparison["classes"]), multilabel=inputs.multilabel
    )
    if config.text_sensitivity:
        _add_text_sensitivity(
            comparison, warnings, inputs=inputs, pairs=pairs, config=config, console=console
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
    recipe: TrainConfig  # the baseline's (imported: the fine-tuning run's)
    after_recipe: TrainConfig  # the recipe on the cleaned data
    device: torch.device
    multilabel: bool = False
    start: FinetuneStart | None = None  # an imported baseline: fine-tuned from its weights

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
    dataset or overwrite the baseline, the data is not the baseline's kind, or an imported
    baseline cannot be fine-tuned (or is asked for several seeds)."""
    clean_data, baseline, run_dir = Path(clean_data), Path(baseline), Path(run_dir)
    out = Path(out) if out is not None else baseline.with_name(f"{baseline.stem}-clean.pt")
    meta = read_checkpoint(baseline)
    imported = meta.get("imported")
    if imported and config.repeats > 1:
        raise DatasetError(
            f"--repeats {config.repeats}: the baseline {baseline} was imported "
            f"({imported.get('format')}), so no models of it with other seeds can be trained "
            "to compare against; use --repeats 1"
        )
    original = _original_data(clean_data, test_data, meta)
    for path, what in ((run_dir, "the run folder"), (out.parent, "--out")):
        for data in (clean_data, original):
            ensure_outside(path, data, what)
    if out.resolve() == baseline.resolve():
        raise ValueError(f"--out {out} would overwrite the baseline checkpoint")
    _check_data_kind(clean_data, meta, baseline, config.uncertain)
    multilabel = bool(meta.get("multilabel"))
    start = None
    if imported:
        recipe = finetune_train_config(
            meta,
            epochs=config.finetune_epochs,
            device=config.device,
            uncertain=config.uncertain,
        )
        start = FinetuneStart(
            imported=imported,
            source={"path": str(baseline), "sha256": file_sha256(baseline)},
            preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
            probe=check_trainable(load_model(baseline, "cpu"), baseline)
            if "embedded" in meta
            else None,
        )
    else:
        recipe = baseline_train_config(meta, config.device)
    device = resolve_device(config.device)
    train_data = Path(meta["data"]) if meta.get("data") and Path(meta["data"]).is_dir() else None
    after_recipe = replace(recipe, decorrelate_text=config.decorrelate_text)
    if multilabel:  # the baseline's findings, in its order, whatever the data has besides
        after_recipe = replace(after_recipe, findings=tuple(meta["classes"]))
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
        multilabel,
        start,
    )


def _baseline_warnings(inputs: _Inputs) -> list[str]:
    """A warning where the baseline is not what its recorded recipe gives on its data (an
    imported one: that it was not trained here)."""
    if inputs.start is not None:
        return [
            f"the baseline {inputs.baseline} was imported: its training data and recipe are "
            "unknown, so the retrained model is the baseline fine-tuned on the cleaned data; "
            "the comparison shows what that fine-tuning changed, not a retraining from scratch"
        ]
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
        after_recipe = replace(inputs.after_recipe, seed=seed)
        if inputs.start is not None:
            finetune(inputs.clean_data, after_path, after_recipe, inputs.start, console)
        else:
            _fit(inputs.clean_data, after_path, after_recipe, console)
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
    comparison: dict[str, Any] = {
        "classes": [],
        "multilabel": inputs.multilabel,
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
    if inputs.start is not None:
        comparison["baseline"]["imported"] = inputs.start.imported
        comparison["retrained"]["finetuned"] = {
            "from": inputs.start.source,
            "preprocessing": inputs.start.preprocessing.to_dict(),
            "in_place": inputs.start.probe,
            "batchnorm": BATCHNORM_NOTES[inputs.start.probe["batchnorm"]]
            if inputs.start.probe
            else None,
        }
    return comparison


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
            predicted = _predict_pair(
                before_path,
                after_path,
                data,
                inputs.device,
                config.batch_size,
                config.uncertain,
            )
            if k == 0:
                comparison["classes"] = list(predicted.classes)
                entry[name] = _compare_test_set(
                    name,
                    data,
                    predicted,
                    comparison,
                    inputs=inputs,
                    config=config,
                    text_paths=text_paths,
                    warnings=warnings,
                )
            else:
                entry[name] = _points(predicted)
        per_seed.append(entry)
    return per_seed


def _points(predicted: _Predicted) -> dict[str, Any]:
    """Point estimates of both models (no CIs) for another seed's pair."""
    classes = predicted.classes
    if predicted.multilabel:
        merged = merged_findings(predicted.before, predicted.after, classes)
        targets, *probs = finding_arrays(merged, classes)
        return {
            side: finding_summary(targets, p, classes, np.asarray(cut))
            for side, p, cut in zip(("before", "after"), probs, predicted.thresholds, strict=True)
        }
    labels, preds_before, preds_after, _, _ = paired_labels(
        predicted.before, predicted.after, classes
    )
    return {
        side: summary_metrics(labels, preds, list(classes))
        for side, preds in (("before", preds_before), ("after", preds_after))
    }


def _compare_test_set(
    name: str,
    data: Path,
    predicted: _Predicted,
    comparison: dict[str, Any],
    *,
    inputs: _Inputs,
    config: RetrainConfig,
    text_paths: set[str] | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The full comparison of the first pair on one test set into ``comparison`` (with the
    text breakdown and its ``warnings``), its predictions file; returns before/after metrics."""
    before, after, classes = predicted.before, predicted.after, predicted.classes
    seed = inputs.recipe.seed
    if predicted.multilabel:
        result = compare_findings(before, after, classes, predicted.thresholds, config.n_boot, seed)
        result["threshold_source"] = dict(
            zip(("before", "after"), predicted.threshold_sources, strict=True)
        )
        merged = merged_findings(before, after, classes)
    else:
        result = compare_predictions(before, after, classes, config.n_boot, seed)
        *_, merged = paired_labels(before, after, classes)
    comparison["test_sets"][name] = {"data": str(data), **result}
    comparison["skipped"][name] = predicted.skipped
    _write_predictions(inputs.run_dir / f"predictions_{name}.csv", merged)
    if text_paths is not None:
        if predicted.multilabel:
            breakdown = finding_text_breakdown(merged, text_paths, classes)
            check = finding_shortcut_check(breakdown)
            warnings += finding_shortcut_warnings(breakdown, name)
        else:
            breakdown = text_breakdown(merged, text_paths, classes)
            check = shortcut_check(breakdown)
            warnings += residual_shortcut_warnings(breakdown, name)
        comparison["test_sets"][name]["by_text"] = breakdown
        comparison["test_sets"][name]["shortcut_check"] = check
    return {"before": result["before"], "after": result["after"]}


def _repeats_record(
    seeds: list[int],
    pairs: list[tuple[int, Path, Path]],
    per_seed: list[dict[str, Any]],
    classes: tuple[str, ...],
    *,
    multilabel: bool = False,
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
                    name: {
                        side: _point(entry[name][side], multilabel) for side in ("before", "after")
                    }
                    for name in TEST_SETS
                },
            }
            for entry in per_seed
        ],
        "summary": summarise_repeats(per_seed, classes, multilabel=multilabel),
    }


def _add_text_sensitivity(
    comparison: dict[str, Any],
    warnings: list[str],
    *,
    inputs: _Inputs,
    pairs: list[tuple[int, Path, Path]],
    config: RetrainConfig,
    console: Console,
) -> None:
    """Run the text-sensitivity test of every pair into ``comparison``; a warning where it
    cannot run or a retrained model (of any seed) still reacts to text."""
    try:
        found = _text_sensitivity_pairs(
            inputs.original, pairs, inputs.cleaning_csv, inputs.run_dir, config, console
        )
    except DatasetError as exc:  # e.g. too few text-free test films
        warnings.append(f"text-sensitivity test not run: {exc}")
    else:
        comparison["text_sensitivity"] = found
        if still_reacts(found):
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


def _text_sensitivity_pairs(
    original: Path,
    pairs: list[tuple[int, Path, Path]],
    cleaning_csv: Path,
    run_dir: Path,
    config: RetrainConfig,
    console: Console,
) -> dict[str, Any]:
    """The text-sensitivity test of every seed's models before and after, on the original
    test split with the same pastes for all (text pool: the boxes ``clean`` found; else the
    detector runs). ``{seed, before, after}``: the first pair's full summaries (written to
    ``text_sensitivity/before|after``, the other seeds' to ``.../before-seedN|after-seedN``);
    ``per_seed`` and ``summary``: every pair and the spread over seeds; ``sentence``."""
    console.rule("text sensitivity: paste text (and placebo film) onto text-free test films")
    settings = TextSensitivityConfig(
        n_boot=config.n_boot, batch_size=config.batch_size, device=config.device
    )
    boxes = boxes_from_table(cleaning_csv) if cleaning_csv.exists() else None
    found = text_sensitivity(
        original,
        [model for _seed, before, after in pairs for model in (before, after)],
        run_dir / "text_sensitivity",
        boxes=boxes,
        config=settings,
        names=[
            side if k == 0 else f"{side}-seed{seed}"
            for k, (seed, _b, _a) in enumerate(pairs)
            for side in ("before", "after")
        ],
    )
    sides = [(found[2 * k].summary, found[2 * k + 1].summary) for k in range(len(pairs))]
    per_seed = [
        {"seed": seed, "before": _sensitivity_point(b), "after": _sensitivity_point(a)}
        for (seed, _b, _a), (b, a) in zip(pairs, sides, strict=True)
    ]
    b, a = sides[0]
    record = {
        "seed": pairs[0][0],
        "before": b,
        "after": a,
        "per_seed": per_seed,
        "summary": _sensitivity_spread(per_seed, list(b["into"])),
    }
    return {**record, "sentence": _sensitivity_sentence(record)}


def _sensitivity_point(summary: dict[str, Any]) -> dict[str, Any]:
    """One model's text sensitivity per class (and CI), worst class and verdict."""
    return {
        "reacts": summary["reacts"],
        "worst_class": summary["worst_class"],
        "into": {
            cls: {"sensitivity": row["sensitivity"], "ci": row["ci"]}
            for cls, row in summary["into"].items()
        },
    }


def _sensitivity_spread(per_seed: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """Per class, the spread over seeds (:func:`_spread`) of the text sensitivity before,
    after and after - before."""
    out: dict[str, Any] = {}
    for cls in classes:
        values = {
            side: np.array([entry[side]["into"][cls]["sensitivity"] for entry in per_seed])
            for side in ("before", "after")
        }
        values["diff"] = values["after"] - values["before"]
        out[cls] = {side: _spread(v) for side, v in values.items()}
    return out


def still_reacts(sensitivity: dict[str, Any]) -> bool:
    """Whether a retrained model of any seed still reacts to text (a record without
    ``per_seed``: the one after model's verdict)."""
    entries = sensitivity.get("per_seed") or [sensitivity]
    return any(entry["after"]["reacts"] for entry in entries)


def _sensitivity_sentence(record: dict[str, Any]) -> str:
    """The verdict on the first pair; with several seeds, led by how many retrained models
    still react, the first pair's verdict labelled with its seed, and the spread over seeds
    toward the class a still-reacting model is pushed into (else the first pair's class)."""
    b, a = record["before"], record["after"]
    # the class text pushed toward before cleaning, unless after it pushes toward another
    cls = a["worst_class"] if a["reacts"] else b["worst_class"]
    moved, was = a["into"][cls], b["into"][cls]
    ci = f" (95% CI [{moved['ci'][0]:+.0%}, {moved['ci'][1]:+.0%}])" if moved["ci"] else ""
    sentence = (
        f"After retraining the model {'still reacts' if a['reacts'] else 'no longer reacts'} "
        f"to burned-in text: pasted text makes it call {cls} on {moved['sensitivity']:+.0%} "
        f"more of the films it did not call {cls} than placebo pastes do{ci}; before cleaning "
        f"{was['sensitivity']:+.0%}."
    )
    per_seed = record["per_seed"]
    if len(per_seed) == 1:
        return sentence
    seeds = ", ".join(str(entry["seed"]) for entry in per_seed)
    reacting = [entry for entry in per_seed if entry["after"]["reacts"]]
    if reacting:  # the spread toward the class a still-reacting model is pushed into
        cls = reacting[0]["after"]["worst_class"]
    spread = record["summary"][cls]
    return (
        f"{len(reacting)} of {len(per_seed)} retrained models (seeds {seeds}) still react to "
        f"burned-in text. Seed {record['seed']}: {sentence} Over the {len(per_seed)} seeds, "
        f"text minus placebo toward {cls}: before {_spread_text(spread['before'])}, after "
        f"{_spread_text(spread['after'])}."
    )


def _spread_text(stats: dict[str, float | None]) -> str:
    """``mean ± sd (min .. max)`` in percent."""
    return f"{stats['mean']:+.0%} ± {stats['sd']:.0%} ({stats['min']:+.0%} .. {stats['max']:+.0%})"


def _point(metrics: dict[str, Any], multilabel: bool = False) -> dict[str, Any]:
    """Point estimates only (no CIs, no confusion matrix) for the per-seed record."""
    if multilabel:
        return {
            "macro_auroc": metrics["macro_auroc"],
            "macro_f1": metrics["macro_f1"],
            "per_finding": metrics["per_finding"],
        }
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class": metrics["per_class"],
    }


def before_after_table(comparison: dict[str, Any], test_set: str = "original") -> Table:
    """A rich table of precision and recall (multi-label: per finding, AUROC and recall at
    each model's thresholds, and macro AUROC) before/after with CIs for one test set."""
    result = comparison["test_sets"][test_set]
    multilabel = bool(comparison.get("multilabel"))
    layout = _layout(multilabel)
    n_seeds = len(comparison.get("repeats", {}).get("seeds", []))
    summary = comparison.get("repeats", {}).get("summary", {}).get(test_set, {})
    table = Table(title=f"Before / after cleaning, {test_set} test set (n = {result['n']})")
    first = "finding" if multilabel else "class"
    for name in (first, "metric", "before [95% CI]", "after [95% CI]", "after - before [CI]"):
        table.add_column(name, justify="left" if name in (first, "metric") else "right")
    if n_seeds > 1:
        table.add_column(f"diff over {n_seeds} seeds (mean ± sd)", justify="right")
    classes = tuple(comparison["classes"])
    for cls, metric in _metric_rows(classes, multilabel):
        if metric not in layout.shown and cls != "all":
            continue
        diff = _pick(result["difference"], cls, metric, multilabel)

        def cell(side: str, cls: str = cls, metric: str = metric) -> str:
            value = _pick(result[side], cls, metric, multilabel)
            bounds = _ci(result[side], cls, metric, multilabel)
            if value is None:
                return "n/a"
            return f"{value:.3f}" + (f" [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else "")

        if diff["diff"] is None:
            change, colour = "n/a", ""
        else:
            colour = "green" if diff["ci"][0] > 0 else "red" if diff["ci"][1] < 0 else ""
            change = f"{diff['diff']:+.3f} [{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}]"
        cells = [cls, metric, cell("before"), cell("after"), _colour(change, colour)]
        if n_seeds > 1:
            stats = summary.get(f"{cls}/{metric}", {}).get("diff")
            defined = stats and stats["mean"] is not None
            cells.append(f"{stats['mean']:+.3f} ± {stats['sd']:.3f}" if defined else "")
        table.add_row(*cells)
    table.caption = (
        "95% CIs: patient-level bootstrap; the difference's CI is paired (both models on the "
        "same resampled patients); green/red: the CI excludes 0"
        + (
            "; recall at each model's own per-finding thresholds; n/a: no positive or no "
            "negative film"
            if multilabel
            else ""
        )
    )
    return table


def sensitivity_spread_table(sensitivity: dict[str, Any]) -> Table:
    """A rich table of the text sensitivity (text minus placebo) per class over the seeds:
    before, after and after - before as mean ± sd (min .. max)."""
    per_seed = sensitivity["per_seed"]
    seeds = ", ".join(str(entry["seed"]) for entry in per_seed)
    table = Table(title=f"Text minus placebo over {len(per_seed)} seeds ({seeds})")
    first = "now called (finding)" if sensitivity["after"].get("multilabel") else "pushed into"
    for name in (first, "before", "after", "after - before"):
        table.add_column(name, justify="left" if name == first else "right")
    for cls, spread in sensitivity["summary"].items():
        table.add_row(cls, *(_spread_text(spread[side]) for side in ("before", "after", "diff")))
    reacting = sum(entry["after"]["reacts"] for entry in per_seed)
    table.caption = (
        f"mean ± sd (min .. max) over the seeds' model pairs, same pastes for all; "
        f"{reacting} of {len(per_seed)} retrained models still react to text"
    )
    return table


def print_before_after(result: RetrainResult, console: Console, sentence: bool = True) -> None:
    """The before/after table of every test set, the text-sensitivity tables (and, with
    ``sentence``, their verdict), then the warnings (CLI and demo)."""
    for name in result.comparison["test_sets"]:
        console.print(before_after_table(result.comparison, name))
    sensitivity = result.comparison.get("text_sensitivity")
    if sensitivity:
        several = len(sensitivity.get("per_seed", [])) > 1
        for side in ("before", "after"):
            seed = f", seed {sensitivity['seed']}" if several else ""
            title = f"Does the model react to burned-in text? ({side} cleaning{seed})"
            console.print(text_sensitivity_table(sensitivity[side], title))
        if several:
            console.print(sensitivity_spread_table(sensitivity))
        if sentence and not still_reacts(sensitivity):  # else it is among the warnings
            console.print(f"[green]{sensitivity['sentence']}[/]", highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _colour(text: str, colour: str) -> str:
    return f"[{colour}]{text}[/]" if colour else text
