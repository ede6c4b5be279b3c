"""``xraydebug evaluate``: honest metrics of a checkpoint on one split.

Writes ``metrics.json`` (accuracy, macro-F1, per-class precision/recall/F1/support, confusion
matrix, per-source metrics, patient-level bootstrap 95% CIs, confounding warnings) and
``predictions.csv`` (``path,split,label,source,pred,prob_<class>...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from xraydebug.data.labels import findings_label
from xraydebug.data.layouts import load_index
from xraydebug.data.records import DatasetIndex, ImageRecord
from xraydebug.data.torch_dataset import iter_caches
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_open, atomic_write_json
from xraydebug.models.checkpoint import LoadedModel, load_model
from xraydebug.models.inference import predict_probs
from xraydebug.models.metrics import evaluate_predictions
from xraydebug.models.multilabel import evaluate_multilabel, f1_thresholds
from xraydebug.runfolder import METRICS_JSON, PREDICTIONS_CSV


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    metrics_path: Path | None
    predictions_path: Path | None
    skipped: list[tuple[ImageRecord, str]] = field(default_factory=list)


def predict_records(
    loaded: LoadedModel,
    root: Path,
    records: list[ImageRecord],
    device: torch.device,
    batch_size: int = 64,
) -> tuple[pd.DataFrame, list[tuple[ImageRecord, str]]]:
    """Predictions for ``records``: one row per readable image, unreadable ones returned apart."""
    (table,), skipped = predict_records_many([loaded], root, records, device, batch_size)
    return table, skipped


def predicted_label(probs: np.ndarray, loaded: LoadedModel, thresholds: Any = None) -> str:
    """What the model calls an image with ``probs`` (K,): its top class, or for a multi-label
    model the findings at or above their ``thresholds`` (default: the model's own, else 0.5)
    joined by ``|`` (:func:`~xraydebug.data.labels.findings_label` when none)."""
    if not loaded.multilabel:
        return loaded.classes[int(probs.argmax())]
    if thresholds is None:
        thresholds = loaded.decision_thresholds
    return called_findings(probs, thresholds, loaded.classes)


def called_findings(probs: np.ndarray, thresholds: Any, names: Sequence[str]) -> str:
    """The findings ``names`` whose ``probs`` (K,) reach their ``thresholds``, as a label."""
    return findings_label(tuple(float(v) for v in probs >= np.asarray(thresholds)), names)


def predict_records_many(
    models: list[LoadedModel],
    root: Path,
    records: list[ImageRecord],
    device: torch.device,
    batch_size: int = 64,
) -> tuple[list[pd.DataFrame], list[tuple[ImageRecord, str]]]:
    """:func:`predict_records` for several models that share classes and preprocessing (e.g.
    a model before and after retraining), decoding every image once. One table per model.

    Columns ``path, split, label, source, pred, prob_<class>...`` (``predictions.csv``) plus
    ``patient_id`` and, for multi-label records, ``findings`` (the record's targets)."""
    first = models[0]
    prep = first.preprocessing
    for other in models[1:]:
        if other.classes != first.classes or other.preprocessing != prep:
            raise ValueError(
                f"{other.path}: classes or preprocessing differ from {first.path}'s; "
                "predict with each model separately"
            )
    rows: list[list[dict[str, Any]]] = [[] for _ in models]
    skipped = []
    for cache in iter_caches(root, records, first.classes, prep.input_size, prep.crop_top):
        skipped += cache.failed
        if not len(cache):
            continue
        for loaded, model_rows in zip(models, rows, strict=True):
            probs = predict_probs(
                loaded.model,
                prep,
                cache.images,
                device,
                batch_size,
                activation=loaded.activation,
            ).numpy()
            for rec, p in zip(cache.records, probs, strict=True):
                row = {
                    "path": rec.path,
                    "split": rec.split,
                    "label": rec.label,
                    "source": rec.source,
                    "pred": predicted_label(p, loaded),
                }
                row.update({f"prob_{c}": float(v) for c, v in zip(first.classes, p, strict=True)})
                row["patient_id"] = rec.patient_id
                row["findings"] = rec.findings
                model_rows.append(row)
    columns = ["path", "split", "label", "source", "pred"] + [f"prob_{c}" for c in first.classes]
    tables = [pd.DataFrame(r, columns=[*columns, *HIDDEN_COLUMNS]) for r in rows]
    return tables, skipped


HIDDEN_COLUMNS = ("patient_id", "findings")
"""Columns of prediction tables that ``predictions.csv`` leaves out (identifiers, targets)."""


def patient_groups(table: pd.DataFrame) -> np.ndarray:
    """Bootstrap groups of a predictions table: ``patient_id``, or the path where it is empty
    (such an image is its own patient)."""
    ids = table["patient_id"].fillna("").astype(str)
    return ids.where(ids != "", table["path"]).to_numpy()


def metrics_from_predictions(
    table: pd.DataFrame, classes: tuple[str, ...], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """metrics.json content from a predictions table (columns label, pred, source, patient_id)."""
    index = {c: i for i, c in enumerate(classes)}
    labels = table["label"].map(index).to_numpy(dtype=np.int64)
    preds = table["pred"].map(index).to_numpy(dtype=np.int64)
    groups = patient_groups(table)
    return evaluate_predictions(
        labels,
        preds,
        list(classes),
        groups=groups,
        sources=table["source"].to_numpy(),
        n_boot=n_boot,
        seed=seed,
    )


def finding_targets(table: pd.DataFrame) -> np.ndarray:
    """(N, C) targets (1, 0, NaN unknown) of a multi-label predictions table."""
    return np.array([list(f) for f in table["findings"]], dtype=np.float64)


def multilabel_metrics_from_predictions(
    table: pd.DataFrame,
    findings: tuple[str, ...],
    thresholds: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Multi-label metrics.json content (:func:`evaluate_multilabel`) of a predictions table."""
    probs = table[[f"prob_{f}" for f in findings]].to_numpy(dtype=np.float64)
    return evaluate_multilabel(
        finding_targets(table),
        probs,
        findings,
        np.asarray(thresholds, dtype=np.float64),
        groups=patient_groups(table),
        sources=table["source"].to_numpy(),
        n_boot=n_boot,
        seed=seed,
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of :func:`evaluate`: ``batch_size`` images per forward pass, the ``device``,
    ``n_boot`` patient-level bootstrap resamples for the 95% CIs and their ``seed``.

    Multi-label models: ``threshold`` (one probability for every finding) overrides the
    per-finding thresholds, which otherwise come from the model (chosen on its validation
    split when xraydebug trained it), else from the data's ``val`` split (F1-best), else 0.5.
    ``uncertain`` is the CheXpert uncertain-label policy (default: the one the model was
    trained with). ``findings``: score only these of a multi-label model's findings (a model
    trained on other data may name findings the dataset does not label)."""

    batch_size: int = 64
    device: str = "auto"
    n_boot: int = 1000
    seed: int = 0
    threshold: float | None = None
    uncertain: str | None = None
    findings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be a probability in (0, 1); got {self.threshold}")


def resolve_thresholds(
    loaded: LoadedModel,
    index: DatasetIndex,
    split: str,
    config: EvaluateConfig,
    device: torch.device,
) -> tuple[np.ndarray, str]:
    """Thresholds of the findings a multi-label evaluation scores (``index.classes``, the
    model's or some of them) and where they came from."""
    names = index.classes
    if config.threshold is not None:
        given = np.full(len(names), config.threshold)
        return given, f"given ({config.threshold:g} for every finding)"
    if loaded.thresholds is not None:
        own = dict(zip(loaded.classes, loaded.thresholds, strict=True))
        return np.array([own[n] for n in names]), "the model's (F1-best on its validation split)"
    val = index.usable("val") if split != "val" else []
    if val:
        table, _ = predict_records(loaded, index.root, val, device, config.batch_size)
        if not table.empty:
            probs = table[[f"prob_{f}" for f in names]].to_numpy(dtype=np.float64)
            chosen = f1_thresholds(finding_targets(table), probs)
            return chosen, f"F1-best on the data's val split ({len(table)} films)"
    return np.full(len(names), 0.5), "0.5 (no validation split and none recorded in the model)"


def evaluate(
    data: Path | str,
    model: Path | str | LoadedModel = "models/covidnet.pt",
    split: str = "test",
    out: Path | str | None = "runs/eval",
    *,
    manifest: Path | str | None = None,
    config: EvaluateConfig | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` of ``data``; write ``out/metrics.json`` and predictions."""
    config = config or EvaluateConfig()
    batch_size, device, n_boot, seed = config.batch_size, config.device, config.n_boot, config.seed
    dev = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, dev)
    uncertain = config.uncertain or loaded.meta.get("uncertain")
    try:
        scored = scored_classes(loaded, config.findings)
        index = load_index(data, manifest, scored, uncertain=uncertain)
    except DatasetError as exc:
        if not (loaded.multilabel and "has no finding" in str(exc)):
            raise
        raise DatasetError(f"{exc}; --findings scores the model's findings it labels") from exc
    check_kind(loaded.multilabel, index)
    if config.threshold is not None and not loaded.multilabel:
        raise ValueError(
            "--threshold is for multi-label models; a softmax model takes its top class"
        )
    records = index.usable(split)
    if not records:
        raise DatasetError(
            f"{index.root}: no readable labelled images in split {split!r} "
            f"(splits found: {', '.join(index.splits) or 'none'})"
        )
    table, skipped = predict_records(loaded, index.root, records, dev, batch_size)
    if table.empty:
        raise DatasetError(f"{index.root}: none of the {split!r} images could be read")
    if loaded.multilabel:
        names = index.classes  # the findings scored: the model's, or config.findings
        thresholds, threshold_source = resolve_thresholds(loaded, index, split, config, dev)
        probs = table[[f"prob_{f}" for f in names]].to_numpy()
        table["pred"] = [called_findings(p, thresholds, names) for p in probs]
        metrics = multilabel_metrics_from_predictions(table, names, thresholds, n_boot, seed)
        metrics["threshold_source"] = threshold_source
    else:
        metrics = metrics_from_predictions(table, loaded.classes, n_boot, seed)
    metrics.update(
        split=split,
        model=str(loaded.path) if loaded.path else None,
        model_sha256=loaded.sha256,
        machine=machine_info(),
        skipped=[{"path": r.path, "error": m} for r, m in skipped],
    )
    metrics_path = predictions_path = None
    if out is not None:
        out = Path(out)
        metrics_path = atomic_write_json(out / METRICS_JSON, metrics)
        predictions_path = out / PREDICTIONS_CSV
        with atomic_open(predictions_path, "w", newline="", encoding="utf-8") as handle:
            table.drop(columns=list(HIDDEN_COLUMNS)).to_csv(handle, index=False)
    return EvalResult(metrics, table, metrics_path, predictions_path, skipped)


def scored_classes(loaded: LoadedModel, findings: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The classes an evaluation scores: the model's, or the ``findings`` asked for (a
    multi-label model's only; each must be one of its findings)."""
    if not findings:
        return loaded.classes
    if not loaded.multilabel:
        raise ValueError("--findings selects a multi-label model's findings; this one is softmax")
    unknown = [f for f in findings if f not in loaded.classes]
    if unknown:
        raise ValueError(
            f"--findings {', '.join(unknown)}: not among the model's findings "
            f"({', '.join(loaded.classes)})"
        )
    return tuple(findings)


def check_kind(multilabel: bool, index: DatasetIndex, model: str = "the model") -> None:
    """One line when a softmax ``model`` meets multi-label data or the other way round."""
    if multilabel != index.multilabel:
        model_kind = "multi-label (one sigmoid per finding)" if multilabel else "softmax"
        data_kind = "multi-label findings" if index.multilabel else "one label per image"
        raise DatasetError(
            f"{index.root}: {model} is {model_kind} but the {index.layout} layout has "
            f"{data_kind}; use a model trained for this kind of labels"
        )


def multilabel_table(metrics: dict[str, Any], title: str) -> Table:
    """A rich table of per-finding AUROC (95% CI) and precision/recall/F1 at the thresholds."""
    table = Table(title=title)
    for name in ("finding", "AUROC", "precision", "recall", "F1", "threshold", "positives"):
        table.add_column(name, justify="right" if name != "finding" else "left")
    for name, row in metrics["per_finding"].items():
        ci = row.get("auroc_ci")
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc']:.3f}"
        if ci:
            auroc += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
        table.add_row(
            name,
            auroc,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            f"{row['threshold']:.2f}",
            f"{row['support']} of {row['n']}",
        )
    macro, macro_ci = metrics.get("macro_auroc"), metrics.get("ci", {}).get("macro_auroc")
    table.caption = (
        (f"macro AUROC {macro:.3f}" if macro is not None else "macro AUROC n/a")
        + (f" [{macro_ci[0]:.2f}, {macro_ci[1]:.2f}]" if macro is not None and macro_ci else "")
        + f", macro-F1 {metrics['macro_f1']:.3f}, micro-F1 {metrics['micro_f1']:.3f}, "
        f"n = {metrics['n']}; thresholds: {metrics.get('threshold_source', 'given')}; "
        "brackets: patient-level bootstrap 95% CI"
    )
    return table


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """A rich table of per-class precision/recall/F1 with 95% CIs."""
    table = Table(title=title)
    for name in ("class", "precision", "recall", "F1", "support"):
        table.add_column(name, justify="right" if name != "class" else "left")
    ci = metrics.get("ci", {}).get("per_class", {})

    def cell(cls: str, key: str) -> str:
        value = metrics["per_class"][cls][key]
        bounds = ci.get(cls, {}).get(key)
        return f"{value:.3f}" + (f" [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else "")

    for cls, row in metrics["per_class"].items():
        table.add_row(
            cls, cell(cls, "precision"), cell(cls, "recall"), cell(cls, "f1"), str(row["support"])
        )
    acc_ci = metrics.get("ci", {}).get("accuracy")
    f1_ci = metrics.get("ci", {}).get("macro_f1")
    table.caption = (
        f"accuracy {metrics['accuracy']:.3f}"
        + (f" [{acc_ci[0]:.2f}, {acc_ci[1]:.2f}]" if acc_ci else "")
        + f", macro-F1 {metrics['macro_f1']:.3f}"
        + (f" [{f1_ci[0]:.2f}, {f1_ci[1]:.2f}]" if f1_ci else "")
        + f", n = {metrics['n']}; brackets: patient-level bootstrap 95% CI"
    )
    return table


def print_metrics(metrics: dict[str, Any], console: Console, title: str) -> None:
    show = multilabel_table if metrics.get("multilabel") else metrics_table
    console.print(show(metrics, title))
    for warning in metrics.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
