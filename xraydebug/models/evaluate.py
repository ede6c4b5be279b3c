"""``xraydebug evaluate``: honest metrics of a checkpoint on one split.

Writes ``metrics.json`` (accuracy, macro-F1, per-class precision/recall/F1/support, confusion
matrix, per-source metrics, patient-level bootstrap 95% CIs, confounding warnings) and
``predictions.csv`` (``path,split,label,source,pred,prob_<class>...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from xraydebug.data.layouts import load_index
from xraydebug.data.records import ImageRecord
from xraydebug.data.torch_dataset import iter_caches
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_open, atomic_write_json
from xraydebug.models.checkpoint import LoadedModel, load_model
from xraydebug.models.inference import predict_probs
from xraydebug.models.metrics import evaluate_predictions
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


def predict_records_many(
    models: list[LoadedModel],
    root: Path,
    records: list[ImageRecord],
    device: torch.device,
    batch_size: int = 64,
) -> tuple[list[pd.DataFrame], list[tuple[ImageRecord, str]]]:
    """:func:`predict_records` for several models that share classes and preprocessing (e.g.
    a model before and after retraining), decoding every image once. One table per model."""
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
            probs = predict_probs(loaded.model, prep, cache.images, device, batch_size).numpy()
            for rec, p in zip(cache.records, probs, strict=True):
                row = {
                    "path": rec.path,
                    "split": rec.split,
                    "label": rec.label,
                    "source": rec.source,
                    "pred": first.classes[int(p.argmax())],
                }
                row.update({f"prob_{c}": float(v) for c, v in zip(first.classes, p, strict=True)})
                row["patient_id"] = rec.patient_id
                model_rows.append(row)
    columns = ["path", "split", "label", "source", "pred"] + [f"prob_{c}" for c in first.classes]
    tables = [pd.DataFrame(r, columns=[*columns, "patient_id"]) for r in rows]
    return tables, skipped


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


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of :func:`evaluate`: ``batch_size`` images per forward pass, the ``device``,
    ``n_boot`` patient-level bootstrap resamples for the 95% CIs and their ``seed``."""

    batch_size: int = 64
    device: str = "auto"
    n_boot: int = 1000
    seed: int = 0


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
    index = load_index(data, manifest, loaded.classes)
    records = index.usable(split)
    if not records:
        raise DatasetError(
            f"{index.root}: no readable labelled images in split {split!r} "
            f"(splits found: {', '.join(index.splits) or 'none'})"
        )
    table, skipped = predict_records(loaded, index.root, records, dev, batch_size)
    if table.empty:
        raise DatasetError(f"{index.root}: none of the {split!r} images could be read")
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
            table.drop(columns=["patient_id"]).to_csv(handle, index=False)
    return EvalResult(metrics, table, metrics_path, predictions_path, skipped)


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
    console.print(metrics_table(metrics, title))
    for warning in metrics.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
