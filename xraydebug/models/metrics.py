"""Classification metrics with patient-level bootstrap confidence intervals (pure numpy).

Conventions
-----------
* ``labels`` and ``preds`` are 1-D arrays of class indices in ``[0, K)``; ``classes`` names them.
* Confusion matrices have true classes in rows and predicted classes in columns.
* A ratio with a zero denominator is reported as ``0.0`` in point estimates: the precision of a
  class that is never predicted, the recall of a class absent from ``labels``, and the F1 of a
  class that is neither present nor predicted. Outputs therefore never contain NaN.
* Macro-F1 is the unweighted mean of the per-class F1 over the classes that occur, i.e. that are
  present in ``labels`` or in ``preds``. A class that is neither present nor predicted carries no
  evidence and is left out (rather than counted as 0, which would penalise a model for a class
  the split does not contain, or as 1, which would reward it). A class that is predicted but absent
  from ``labels`` counts, with F1 0: those predictions are all false positives.
* Bootstrap intervals are percentile intervals. In a replicate where a metric is undefined (0/0,
  e.g. a rare class that no drawn patient has) that replicate is left out of that metric's
  interval instead of being counted as 0; a metric undefined in every replicate gets ``[0, 0]``.
* ``groups`` are patient ids. Resampling whole patients (a cluster bootstrap) keeps the correlated
  images of one patient together, so intervals are honest (wider) when patients have several
  images. Missing ids (``None``, NaN, ``""``) make that image its own patient.
* Every output is plain Python (``float``, ``int``, ``str``, ``list``, ``dict``): ready for
  ``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_KEYS = ("precision", "recall", "f1")
"""Per-class metrics that get bootstrap intervals."""

_BOOT_CHUNK_ELEMENTS = 1 << 22
"""At most this many group draws are held at once (bounds memory to ~64 MB for any data size)."""


# ----------------------------------------------------------------------------- validation


def _as_indices(values: Any, name: str, num_classes: int) -> np.ndarray:
    """``values`` as a 1-D int64 array of class indices, or a ValueError saying what is wrong."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices; got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if arr.size and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError(
                f"{name} must be integer class indices; got non-integer values of dtype {arr.dtype}"
            )
    elif arr.dtype.kind not in "iu" and not (arr.dtype.kind == "O" and arr.size == 0):
        raise ValueError(f"{name} must be integer class indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes - 1}] for {num_classes} classes; "
            f"got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"num_classes must be an int; got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    return int(num_classes)


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise TypeError(f"classes must be a sequence of class names; got the string {classes!r}")
    names = [str(c) for c in classes]
    if not names:
        raise ValueError("classes must name at least one class; got an empty sequence")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique; got {names}")
    return names


def _validate(
    labels: Any, preds: Any, num_classes: int, preds_name: str = "preds"
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels, preds) int64 arrays of equal length."""
    num_classes = _check_num_classes(num_classes)
    labels = _as_indices(labels, "labels", num_classes)
    preds = _as_indices(preds, preds_name, num_classes)
    if labels.shape != preds.shape:
        raise ValueError(
            f"labels and {preds_name} must have equal length; "
            f"got {labels.shape[0]} labels and {preds.shape[0]} {preds_name}"
        )
    return labels, preds


def _check_aligned(values: Any, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must be 1-D with one entry per label ({n}); got shape {arr.shape}"
        )
    return arr


def missing_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of missing ids: None, NaN or the empty string (vectorised)."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "US":
        return values == values.dtype.type()
    if values.dtype.kind == "O":
        is_none = np.equal(values, None)
        is_nan = values != values  # NaN is the only value not equal to itself
        is_empty = np.equal(values, "")
        return np.asarray(is_none | is_nan | is_empty, dtype=bool)
    return np.zeros(values.shape, dtype=bool)


def group_codes(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Dense codes 0..G-1 per row; every row is its own group when ``groups`` is None."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    groups = _check_aligned(groups, "groups", n)
    missing = missing_mask(groups)
    codes = np.empty(n, dtype=np.int64)
    present = ~missing
    if present.any():
        _, inverse = np.unique(groups[present].astype(str), return_inverse=True)
        codes[present] = inverse.reshape(-1)
    n_present = int(codes[present].max()) + 1 if present.any() else 0
    codes[missing] = n_present + np.arange(int(missing.sum()))
    return codes


def _check_boot(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int; got {n_boot!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), e.g. 0.05 for a 95% interval; got {alpha!r}")


# ----------------------------------------------------------------------------- point metrics


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; rows are the true class, columns the predicted class.

    Raises ValueError when the arrays differ in length, are not 1-D integer class indices, or hold
    an index outside ``[0, num_classes)``.
    """
    labels, preds = _validate(labels, preds, num_classes)
    k = int(num_classes)
    flat = np.bincount(labels * k + preds, minlength=k * k)
    return flat.reshape(k, k).astype(np.int64)


def _ratios(cms: np.ndarray, undefined: float = 0.0) -> dict[str, np.ndarray]:
    """Metrics of a stack of confusion matrices (..., K, K) -> arrays (..., K) or (...).

    0/0 ratios become ``undefined`` (0.0 for reports, NaN inside the bootstrap). Macro-F1 averages
    over the classes that occur (present or predicted) in each matrix.
    """
    cms = np.asarray(cms, dtype=np.float64)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    predicted = cms.sum(axis=-2)
    actual = cms.sum(axis=-1)
    total = cms.sum(axis=(-2, -1))
    occurs = (predicted + actual) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, undefined)
        recall = np.where(actual > 0, tp / actual, undefined)
        # 2TP / (2TP + FP + FN) == 2PR / (P + R) wherever both are defined, and is also defined
        # (as 0) when exactly one of P and R is 0/0.
        f1 = np.where(occurs, 2 * tp / (predicted + actual), undefined)
        accuracy = np.where(total > 0, tp.sum(axis=-1) / total, 0.0)
        n_occurs = occurs.sum(axis=-1)
        macro_f1 = np.where(
            n_occurs > 0, np.where(occurs, f1, 0.0).sum(axis=-1) / np.maximum(n_occurs, 1), 0.0
        )
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "support": actual,
    }


def per_class_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """``{class: {"precision", "recall", "f1", "support"}}`` from one (K, K) confusion matrix.

    0/0 ratios are reported as 0.0 (see the module docstring), so the result is NaN-free.
    COVID-19 recall is the sensitivity of the COVID-19 class.
    """
    names = _check_classes(classes)
    cm = np.asarray(cm)
    k = len(names)
    if cm.shape != (k, k):
        raise ValueError(
            f"confusion matrix must be ({k}, {k}) for {k} classes; got shape {cm.shape}"
        )
    if cm.size and (cm.min() < 0 or not np.isfinite(cm).all()):
        raise ValueError("confusion matrix must hold non-negative finite counts")
    r = _ratios(cm)
    return {
        name: {
            "precision": float(r["precision"][i]),
            "recall": float(r["recall"][i]),
            "f1": float(r["f1"][i]),
            "support": int(r["support"][i]),
        }
        for i, name in enumerate(names)
    }


def summary_metrics(
    labels: np.ndarray, preds: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class metrics, the confusion matrix (list of lists) and ``n``.

    An empty input gives ``n = 0`` and all metrics 0.0.
    """
    names = _check_classes(classes)
    cm = confusion_matrix(labels, preds, len(names))
    r = _ratios(cm)
    return {
        "accuracy": float(r["accuracy"]),
        "macro_f1": float(r["macro_f1"]),
        "per_class": per_class_metrics(cm, names),
        "confusion_matrix": cm.tolist(),
        "n": int(cm.sum()),
    }


# ----------------------------------------------------------------------------- bootstrap


def _resampled_cms(
    labels: np.ndarray,
    preds_list: Sequence[np.ndarray],
    num_classes: int,
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> list[np.ndarray]:
    """Confusion matrices (n_boot, K, K) of cluster-bootstrap resamples, one stack per preds.

    Each replicate draws G group ids with replacement (G = number of unique groups) and counts
    every row of a drawn group as often as the group is drawn. Vectorised: per-group confusion
    counts (G, K*K) come from one ``np.bincount``; per-replicate draw counts (B, G) from another;
    their product gives all B matrices. With one row per group (image level) the drawn rows'
    confusion cells are counted directly with one ``np.bincount`` over (B, K*K). Replicates are
    processed in chunks only to bound memory. The same draws serve every preds array (paired).
    """
    n = labels.shape[0]
    if n == 0:
        raise ValueError("the bootstrap needs at least one prediction; got 0 rows")
    codes = group_codes(groups, n)
    n_groups = int(codes.max()) + 1
    kk = num_classes * num_classes
    cells = [labels * num_classes + preds for preds in preds_list]
    one_row_per_group = n_groups == n
    if one_row_per_group:  # image level: index rows by group code, count cells directly
        order = np.empty(n, dtype=np.int64)
        order[codes] = np.arange(n)
        cells = [cell[order] for cell in cells]
    else:  # per-group confusion counts (G, K*K)
        per_group = [
            np.bincount(codes * kk + cell, minlength=n_groups * kk)
            .reshape(n_groups, kk)
            .astype(np.float64)
            for cell in cells
        ]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _BOOT_CHUNK_ELEMENTS // n_groups))
    out = [np.empty((n_boot, kk), dtype=np.int64) for _ in preds_list]
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups), dtype=np.int32)
        if one_row_per_group:
            offsets = (np.arange(b, dtype=np.int64) * kk)[:, None]
            for stack, cell in zip(out, cells, strict=True):
                flat = (cell[draws] + offsets).ravel()
                stack[start : start + b] = np.bincount(flat, minlength=b * kk).reshape(b, kk)
            continue
        offsets = (np.arange(b, dtype=np.int64) * n_groups)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=b * n_groups)
        weights = weights.reshape(b, n_groups).astype(np.float64)
        for stack, counts in zip(out, per_group, strict=True):
            # float matmul (BLAS) is exact for integer counts below 2**53
            stack[start : start + b] = np.rint(weights @ counts).astype(np.int64)
    return [stack.reshape(n_boot, num_classes, num_classes) for stack in out]


def percentile_interval(values: np.ndarray, alpha: float) -> list[float]:
    """Percentile interval of the defined (non-NaN) replicate values; [0, 0] if none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [0.0, 0.0]
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
    """Percentile bootstrap CIs of accuracy, macro-F1 and per-class precision/recall/F1.

    ``groups`` (N,) are patient ids: whole patients are resampled (``"unit": "patient"``). With
    ``groups=None`` each image is resampled independently (``"unit": "image"``), which understates
    the uncertainty when patients contribute several images.

    Returns ``{"accuracy": [lo, hi], "macro_f1": [lo, hi], "per_class": {class: {"precision":
    [lo, hi], "recall": [lo, hi], "f1": [lo, hi]}}, "n_boot", "level", "unit"}``. Deterministic
    for a given ``seed``.
    """
    names = _check_classes(classes)
    _check_boot(n_boot, alpha)
    labels, preds = _validate(labels, preds, len(names))
    (cms,) = _resampled_cms(labels, [preds], len(names), groups, int(n_boot), seed)
    r = _ratios(cms, undefined=np.nan)
    return {
        "accuracy": percentile_interval(r["accuracy"], alpha),
        "macro_f1": percentile_interval(r["macro_f1"], alpha),
        "per_class": {
            name: {key: percentile_interval(r[key][:, i], alpha) for key in METRIC_KEYS}
            for i, name in enumerate(names)
        },
        "n_boot": int(n_boot),
        "level": round(1.0 - float(alpha), 10),
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

    Both models are scored on the same resampled patients in every replicate, so the interval
    reflects the difference between the models rather than the spread of either one. Replicates
    where a per-class metric is undefined for either model are left out of that metric's interval.

    Returns ``{"accuracy": {"before", "after", "diff", "ci": [lo, hi]}, "macro_f1": {...},
    "per_class": {class: {"precision": {...}, "recall": {...}, "f1": {...}}}, "n_boot", "level",
    "unit"}``.
    """
    names = _check_classes(classes)
    _check_boot(n_boot, alpha)
    k = len(names)
    labels, preds_before = _validate(labels, preds_before, k, "preds_before")
    _, preds_after = _validate(labels, preds_after, k, "preds_after")
    before_cms, after_cms = _resampled_cms(
        labels, [preds_before, preds_after], k, groups, int(n_boot), seed
    )
    boot_before = _ratios(before_cms, undefined=np.nan)
    boot_after = _ratios(after_cms, undefined=np.nan)
    point_before = _ratios(confusion_matrix(labels, preds_before, k))
    point_after = _ratios(confusion_matrix(labels, preds_after, k))

    def entry(key: str, index: int | None = None) -> dict[str, Any]:
        def pick(r: dict[str, np.ndarray]) -> np.ndarray:
            return r[key] if index is None else r[key][..., index]

        before, after = float(pick(point_before)), float(pick(point_after))
        return {
            "before": before,
            "after": after,
            "diff": after - before,
            "ci": percentile_interval(pick(boot_after) - pick(boot_before), alpha),
        }

    return {
        "accuracy": entry("accuracy"),
        "macro_f1": entry("macro_f1"),
        "per_class": {
            name: {key: entry(key, i) for key in METRIC_KEYS} for i, name in enumerate(names)
        },
        "n_boot": int(n_boot),
        "level": round(1.0 - float(alpha), 10),
        "unit": "image" if groups is None else "patient",
    }


# ----------------------------------------------------------------------------- confounding


def _shares(counts: np.ndarray, names: Sequence[str]) -> str:
    """'100% COVID-19' or '60% normal, 40% pneumonia' (classes present, largest first)."""
    total = counts.sum()
    order = np.argsort(-counts, kind="stable")
    return ", ".join(f"{counts[i] / total:.0%} {names[i]}" for i in order if counts[i] > 0)


def _cramers_v(table: np.ndarray) -> float:
    """Bias-corrected Cramér's V of a (sources, classes) count table; 0.0 when undefined.

    Bergsma's (2013) correction removes the association that small tables show by chance
    (plain V of two alternating sources with ten images is already ~0.5); for large n it equals
    the plain ``sqrt(chi2 / (n * (min(r, c) - 1)))``.
    """
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0].astype(np.float64)
    r, c = table.shape
    n = table.sum()
    if min(r, c) < 2 or n < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    phi2 = float(((table - expected) ** 2 / expected).sum()) / n
    phi2 = max(0.0, phi2 - (r - 1) * (c - 1) / (n - 1))
    r_corr = r - (r - 1) ** 2 / (n - 1)
    c_corr = c - (c - 1) ** 2 / (n - 1)
    denom = min(r_corr, c_corr) - 1
    return float(np.sqrt(phi2 / denom)) if denom > 0 else 0.0


def confounding_check(
    labels: np.ndarray,
    sources: np.ndarray | None,
    classes: Sequence[str],
    min_images: int = 10,
    source_share: float = 0.9,
    overall_share: float = 0.6,
    max_cramers_v: float = 0.5,
) -> list[str]:
    """Warnings when a split's sources (hospitals/sites) are confounded with its labels.

    When a source holds mostly one class, a model can score well by recognising the site (its
    markers, scanner, processing) instead of the disease, as happens with COVIDx's test set where
    some sources contain only COVID-19 images. Two checks:

    * a source with at least ``min_images`` images of which ``>= source_share`` are one class,
      while that class is ``< overall_share`` of the split, is named with its class shares;
    * a strong overall association between source and label, Cramér's V
      ``sqrt(chi2 / (n * (min(sources, classes) - 1))) >= max_cramers_v`` (with Bergsma's
      small-sample bias correction), names every source with its class shares.

    Rows with a missing source are ignored. Returns ``[]`` when ``sources`` is None or the split
    has fewer than two sources.
    """
    names = _check_classes(classes)
    k = len(names)
    labels = _as_indices(labels, "labels", k)
    if sources is None:
        return []
    sources = _check_aligned(sources, "sources", labels.shape[0])
    keep = ~missing_mask(sources)
    labels, sources = labels[keep], sources[keep].astype(str)
    source_names, codes = np.unique(sources, return_inverse=True)
    codes = codes.reshape(-1)
    if source_names.size < 2:
        return []
    table = np.bincount(codes * k + labels, minlength=source_names.size * k).reshape(-1, k)
    n = int(table.sum())
    overall = table.sum(axis=0) / n
    source_names = [str(name) for name in source_names]
    described = {
        name: f"{name!r}: {_shares(row, names)} ({int(row.sum())} images)"
        for name, row in zip(source_names, table, strict=True)
    }
    warnings = []
    for name, row in zip(source_names, table, strict=True):
        total = int(row.sum())
        top = int(row.argmax())
        if (
            total >= min_images
            and row[top] / total >= source_share
            and overall[top] < overall_share
        ):
            warnings.append(
                f"source {described[name]} is dominated by {names[top]}, which is only "
                f"{overall[top]:.0%} of the split: a model can score well by recognising the "
                "source instead of the disease; read the per-source metrics"
            )
    cramers_v = _cramers_v(table)
    if cramers_v >= max_cramers_v:
        listed = sorted(described.values())
        if len(listed) > 10:
            listed = [*listed[:10], f"and {len(listed) - 10} more"]
        warnings.append(
            f"sources and labels are strongly associated (bias-corrected Cramér's V = "
            f"{cramers_v:.2f} over {len(source_names)} sources, n = {n}); class shares by "
            f"source: {'; '.join(listed)}. Per-class metrics partly measure source differences"
        )
    return warnings


# ----------------------------------------------------------------------------- metrics.json


def evaluate_predictions(
    labels: np.ndarray,
    preds: np.ndarray,
    classes: Sequence[str],
    groups: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``metrics.json`` content.

    ``{"accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "n", "ci":
    bootstrap_ci(...), "per_source": {source: summary_metrics(...)}, "warnings": [...]}``.
    ``per_source`` is empty without ``sources``; rows with a missing source are listed under
    ``"(none)"``. Warnings cover confounded sources, classes absent from the split and intervals
    computed without patient ids.
    """
    names = _check_classes(classes)
    labels, preds = _validate(labels, preds, len(names))
    if labels.shape[0] == 0:
        raise ValueError("cannot evaluate an empty set of predictions; got 0 rows")
    n = labels.shape[0]
    if groups is not None:
        groups = _check_aligned(groups, "groups", n)
    result = summary_metrics(labels, preds, names)
    result["classes"] = names
    result["ci"] = bootstrap_ci(labels, preds, names, groups, n_boot, seed=seed)
    result["per_source"] = {}
    if sources is not None:
        sources = _check_aligned(sources, "sources", n)
        keys = np.where(missing_mask(sources), "(none)", sources.astype(str))
        for name in np.unique(keys):
            keep = keys == name
            result["per_source"][str(name)] = summary_metrics(labels[keep], preds[keep], names)
    warnings = confounding_check(labels, sources, names)
    for name, row in result["per_class"].items():
        if row["support"] == 0:
            predicted = sum(r[names.index(name)] for r in result["confusion_matrix"])
            detail = (
                f"it was predicted {predicted} times (all false positives)"
                if predicted
                else "it was never predicted and is left out of macro-F1"
            )
            warnings.append(
                f"class {name!r} has no images in this split: its recall and F1 are not "
                f"measured (reported as 0.0); {detail}"
            )
    if groups is None:
        warnings.append(
            "no patient ids given: confidence intervals treat images as independent and are too "
            "narrow when patients have several images"
        )
    result["warnings"] = warnings
    return result


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for ``z = 1.96``); ``(0, 1)`` for no trials.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n
    successes (Wilson 1927; Brown, Cai and DasGupta 2001 recommend it for small n).
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))
