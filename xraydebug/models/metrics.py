"""Classification metrics with patient-level bootstrap confidence intervals (pure numpy).

Conventions: ``labels`` and ``preds`` are int arrays of class indices (N,); confusion matrices
have true classes in rows and predicted classes in columns. A ratio with a zero denominator
(precision of a never-predicted class, recall of an absent class) is reported as 0.0. Outputs are
plain Python types, ready for ``json.dumps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_KEYS = ("precision", "recall", "f1")


def _validate(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[np.ndarray, ...]:
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if labels.shape != preds.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and preds must be 1-D of equal length; got {labels.shape} and {preds.shape}"
        )
    for name, values in (("labels", labels), ("preds", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must be class indices in [0, {num_classes - 1}]; "
                f"got values in [{values.min()}, {values.max()}]"
            )
    return labels.astype(np.int64), preds.astype(np.int64)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    labels, preds = _validate(labels, preds, num_classes)
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratios(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of a stack of confusion matrices (..., K, K) -> arrays (..., K) or (...)."""
    cms = cms.astype(np.float64)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    predicted = cms.sum(axis=-2)
    actual = cms.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        total = cms.sum(axis=(-2, -1))
        accuracy = np.where(total > 0, tp.sum(axis=-1) / total, 0.0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "macro_f1": f1.mean(axis=-1),
        "support": actual,
    }


def per_class_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{class: {precision, recall, f1, support}} from one confusion matrix."""
    r = _ratios(np.asarray(cm))
    return {
        name: {
            "precision": float(r["precision"][k]),
            "recall": float(r["recall"][k]),
            "f1": float(r["f1"][k]),
            "support": int(r["support"][k]),
        }
        for k, name in enumerate(classes)
    }


def summary_metrics(
    labels: np.ndarray, preds: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (unweighted mean over all classes), per-class metrics, matrix, n."""
    cm = confusion_matrix(labels, preds, len(classes))
    r = _ratios(cm)
    return {
        "accuracy": float(r["accuracy"]),
        "macro_f1": float(r["macro_f1"]),
        "per_class": per_class_metrics(cm, classes),
        "confusion_matrix": cm.tolist(),
        "n": int(cm.sum()),
    }


def _resampled_cms(
    labels: np.ndarray,
    preds_list: Sequence[np.ndarray],
    num_classes: int,
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> list[np.ndarray]:
    """Confusion matrices (n_boot, K, K) of cluster-bootstrap resamples, one per preds array.

    Resamples unique groups with replacement (every row of a drawn group counts, as often as the
    group is drawn); the same draws are used for every preds array (paired bootstrap).
    """
    if groups is None:
        group_ids = np.arange(len(labels))
    else:
        group_ids = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    n_groups = int(group_ids.max()) + 1 if len(labels) else 0
    kk = num_classes * num_classes
    # Per-group confusion counts (G, K*K): a resample is a weighted sum of them.
    group_counts = []
    for preds in preds_list:
        counts = np.zeros((n_groups, kk))
        np.add.at(counts, (group_ids, labels * num_classes + preds), 1)
        group_counts.append(counts)
    rng = np.random.default_rng(seed)
    out = [np.empty((n_boot, num_classes, num_classes)) for _ in preds_list]
    chunk = max(1, min(n_boot, 2_000_000 // max(n_groups, 1)))  # bounded memory
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        draws = rng.integers(0, n_groups, size=(stop - start, n_groups))
        weights = np.zeros((stop - start, n_groups))
        np.add.at(weights, (np.arange(stop - start)[:, None], draws), 1)
        for target, counts in zip(out, group_counts, strict=True):
            target[start:stop] = (weights @ counts).reshape(-1, num_classes, num_classes)
    return out


def _interval(values: np.ndarray, alpha: float) -> list[float]:
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(
    labels: np.ndarray,
    preds: np.ndarray,
    classes: Sequence[str],
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile CIs of accuracy, macro-F1 and per-class metrics.

    ``groups`` (N,) are patient ids: resampling whole patients keeps correlated images of one
    patient together, so the interval is honest (wider) when patients have several images.
    """
    labels, preds = _validate(labels, preds, len(classes))
    (cms,) = _resampled_cms(labels, [preds], len(classes), groups, n_boot, seed)
    r = _ratios(cms)
    return {
        "accuracy": _interval(r["accuracy"], alpha),
        "macro_f1": _interval(r["macro_f1"], alpha),
        "per_class": {
            name: {key: _interval(r[key][:, k], alpha) for key in METRIC_KEYS}
            for k, name in enumerate(classes)
        },
        "n_boot": int(n_boot),
        "level": 1 - alpha,
        "unit": "image" if groups is None else "patient",
    }


def paired_difference_ci(
    labels: np.ndarray,
    preds_before: np.ndarray,
    preds_after: np.ndarray,
    classes: Sequence[str],
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """After-minus-before differences with a paired patient-level bootstrap CI.

    Both models are scored on the same resampled patients in every replicate.
    """
    labels, preds_before = _validate(labels, preds_before, len(classes))
    _, preds_after = _validate(labels, preds_after, len(classes))
    k = len(classes)
    before_cms, after_cms = _resampled_cms(
        labels, [preds_before, preds_after], k, groups, n_boot, seed
    )
    rb, ra = _ratios(before_cms), _ratios(after_cms)
    pb = _ratios(confusion_matrix(labels, preds_before, k))
    pa = _ratios(confusion_matrix(labels, preds_after, k))

    def entry(key: str, index: int | None = None) -> dict[str, Any]:
        def pick(r: dict[str, np.ndarray]) -> np.ndarray:
            return r[key] if index is None else r[key][..., index]

        before, after = float(pick(pb)), float(pick(pa))
        return {
            "before": before,
            "after": after,
            "diff": after - before,
            "ci": _interval(pick(ra) - pick(rb), alpha),
        }

    return {
        "accuracy": entry("accuracy"),
        "macro_f1": entry("macro_f1"),
        "per_class": {
            name: {key: entry(key, i) for key in METRIC_KEYS} for i, name in enumerate(classes)
        },
        "n_boot": int(n_boot),
        "level": 1 - alpha,
        "unit": "image" if groups is None else "patient",
    }


def confounding_check(
    labels: np.ndarray, sources: np.ndarray | None, classes: Sequence[str], min_images: int = 10
) -> list[str]:
    """Warnings when sources are confounded with labels (a model may learn the site).

    A source with at least ``min_images`` images of which >= 90% are one class, while that class
    is < 60% of the whole split, is named; so is a strong overall association (Cramér's V >= 0.5).
    """
    if sources is None:
        return []
    sources = np.asarray(sources).astype(str)
    labels = np.asarray(labels)
    names = sorted({s for s in sources if s})
    if len(names) < 2:
        return []
    warnings = []
    overall = np.bincount(labels, minlength=len(classes)) / max(len(labels), 1)
    table = np.zeros((len(names), len(classes)))
    for i, name in enumerate(names):
        counts = np.bincount(labels[sources == name], minlength=len(classes))
        table[i] = counts
        total = counts.sum()
        if total >= min_images:
            top = int(counts.argmax())
            share = counts[top] / total
            if share >= 0.9 and overall[top] < 0.6:
                warnings.append(
                    f"source {name!r} is {share:.0%} {classes[top]} ({total} images) while "
                    f"{classes[top]} is {overall[top]:.0%} of the split: the model can learn the "
                    "site instead of the disease"
                )
    n = table.sum()
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / max(n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nansum(np.where(expected > 0, (table - expected) ** 2 / expected, 0.0))
    dof = min(table.shape[0] - 1, int((table.sum(0) > 0).sum()) - 1)
    if dof > 0 and n > 0:
        cramers_v = float(np.sqrt(chi2 / (n * dof)))
        if cramers_v >= 0.5:
            warnings.append(
                f"sources and labels are strongly associated (Cramér's V = {cramers_v:.2f}): "
                "per-class metrics partly measure site differences"
            )
    return warnings


def evaluate_predictions(
    labels: np.ndarray,
    preds: np.ndarray,
    classes: Sequence[str],
    groups: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``metrics.json`` content: summary, bootstrap CIs, per-source metrics, warnings."""
    labels, preds = _validate(labels, preds, len(classes))
    result = summary_metrics(labels, preds, classes)
    result["classes"] = list(classes)
    result["ci"] = bootstrap_ci(labels, preds, classes, groups, n_boot, seed=seed)
    result["per_source"] = {}
    if sources is not None:
        sources = np.asarray(sources).astype(str)
        for name in sorted(set(sources)):
            keep = sources == name
            result["per_source"][name or "(none)"] = summary_metrics(
                labels[keep], preds[keep], classes
            )
    result["warnings"] = confounding_check(labels, sources, classes)
    return result
