"""Before/after metrics of two models' prediction tables over the same test films.

Rows are paired by ``path``; every interval resamples patients, and the after-minus-before
differences get *paired* intervals (both models scored on the same resampled patients).

* One label per image (:func:`compare_predictions`): accuracy, macro-F1 and per-class
  precision/recall/F1/support of each model with bootstrap 95% CIs
  (:func:`~xraydebug.models.metrics.bootstrap_ci`,
  :func:`~xraydebug.models.metrics.paired_difference_ci`).
* Multi-label findings (:func:`compare_findings`): per finding AUROC, and precision, recall and
  F1 at each model's own thresholds, with CIs, plus ``macro_auroc``; the paired differences
  reuse one set of patient draws for both models
  (:func:`~xraydebug.models.multilabel.paired_finding_bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from xraydebug.errors import DatasetError
from xraydebug.models.evaluate import finding_targets, patient_groups
from xraydebug.models.metrics import (
    bootstrap_ci,
    paired_difference_ci,
    percentile_interval,
    summary_metrics,
)
from xraydebug.models.multilabel import FINDING_METRIC_KEYS, paired_finding_bootstrap
from xraydebug.models.multilabel import summary as finding_summary


def paired_labels(
    before: pd.DataFrame, after: pd.DataFrame, classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """labels, before preds, after preds, patient groups over the images both models scored,
    and the two tables paired by ``path`` (``pred_before``/``pred_after``)."""
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
    labels, preds_before, preds_after, groups, merged = paired_labels(before, after, classes)
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


# ----------------------------------------------------------------------------- multi-label


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean of each row over its defined (non-NaN) values; NaN for a row with none."""
    defined = ~np.isnan(values)
    count = defined.sum(1)
    total = np.where(defined, values, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def merged_findings(
    before: pd.DataFrame, after: pd.DataFrame, findings: tuple[str, ...]
) -> pd.DataFrame:
    """The two tables paired by ``path``: ``pred_before``/``pred_after`` and
    ``prob_<finding>_before``/``_after``, with the before table's other columns."""
    probs = [f"prob_{f}" for f in findings]
    return before.merge(after[["path", "pred", *probs]], on="path", suffixes=("_before", "_after"))


def finding_arrays(
    merged: pd.DataFrame, findings: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """targets (N, C), before and after probabilities (N, C) of a :func:`merged_findings`."""
    targets = finding_targets(merged)
    probs = [
        merged[[f"prob_{f}_{side}" for f in findings]].to_numpy(dtype=np.float64)
        for side in ("before", "after")
    ]
    return targets, probs[0], probs[1]


def compare_findings(
    before: pd.DataFrame,
    after: pd.DataFrame,
    findings: tuple[str, ...] | list[str],
    thresholds: tuple[Sequence[float], Sequence[float]],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Before/after metrics of two multi-label prediction tables over the same test films.

    ``before``/``after``: columns ``path, prob_<finding>..., findings, patient_id`` (as
    :func:`~xraydebug.models.evaluate.predict_records_many` returns them); rows are paired by
    ``path``. ``thresholds``: (before's, after's) per-finding thresholds, each model's own.
    Returns ``{"n", "before", "after", "difference"}``: each side
    :func:`~xraydebug.models.multilabel.summary` (``per_finding`` {finding: {auroc,
    precision, recall, f1, threshold, support, n}}, ``macro_auroc``, ...) plus ``ci``
    (``per_finding`` {finding: {metric: [lo, hi]}}, ``macro_auroc``); ``difference``:
    ``per_finding`` {finding: {metric: {before, after, diff, ci}}} and ``macro_auroc``, the
    CIs paired (:func:`~xraydebug.models.multilabel.paired_finding_bootstrap`). Undefined
    values (an AUROC without positive or negative films) are None, their intervals None.
    """
    findings = tuple(findings)
    merged = merged_findings(before, after, findings)
    if len(merged) == 0:
        raise DatasetError("the two models share no scored test image to compare")
    targets, probs_before, probs_after = finding_arrays(merged, findings)
    cuts = [np.asarray(t, dtype=np.float64) for t in thresholds]
    probs = (probs_before, probs_after)
    calls = [p >= t[None, :] for p, t in zip(probs, cuts, strict=True)]
    groups = patient_groups(merged)
    boots = paired_finding_bootstrap(targets, probs, calls, groups, n_boot, seed)
    result: dict[str, Any] = {"n": len(merged)}
    header = {"n_boot": int(n_boot), "level": 0.95, "unit": "patient"}
    points = []
    for side, p, cut, boot in zip(("before", "after"), probs, cuts, boots, strict=True):
        metrics = finding_summary(targets, p, findings, cut)
        ci: dict[str, Any] = {"per_finding": {}, **header}
        for k, name in enumerate(findings):
            row = metrics["per_finding"][name]
            ci["per_finding"][name] = {
                key: percentile_interval(boot[key][:, k], 0.05) if row[key] is not None else None
                for key in FINDING_METRIC_KEYS
            }
        macro = metrics["macro_auroc"]
        ci["macro_auroc"] = (
            percentile_interval(_nanmean_rows(boot["auroc"]), 0.05) if macro is not None else None
        )
        metrics["ci"] = ci
        result[side] = metrics
        points.append(metrics)

    def entry(before: float | None, after: float | None, replicates: np.ndarray) -> dict:
        if before is None or after is None:
            return {"before": before, "after": after, "diff": None, "ci": None}
        return {
            "before": before,
            "after": after,
            "diff": after - before,
            "ci": percentile_interval(replicates, 0.05),
        }

    difference: dict[str, Any] = {"per_finding": {}, **header}
    for k, name in enumerate(findings):
        rows = [point["per_finding"][name] for point in points]
        difference["per_finding"][name] = {
            key: entry(rows[0][key], rows[1][key], boots[1][key][:, k] - boots[0][key][:, k])
            for key in FINDING_METRIC_KEYS
        }
    macro_before, macro_after = (_nanmean_rows(boot["auroc"]) for boot in boots)
    difference["macro_auroc"] = entry(
        points[0]["macro_auroc"], points[1]["macro_auroc"], macro_after - macro_before
    )
    result["difference"] = difference
    return result
