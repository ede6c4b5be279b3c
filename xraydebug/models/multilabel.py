"""Metrics of multi-label models (one sigmoid per finding), as ``metrics.json`` holds them.

Conventions:

* ``targets`` (N, C) float: 1.0 present, 0.0 absent, NaN unknown (left out of that finding's
  metrics, e.g. CheXpert's uncertain label under ``--uncertain ignore``); ``probs`` (N, C)
  sigmoid probabilities in [0, 1]; ``findings`` names the C columns.
* **AUROC** per finding is the Mann-Whitney statistic (ties count one half), the same number as
  scikit-learn's ``roc_auc_score``; undefined (NaN, reported as null) when the finding has no
  positive or no negative film. Its 95% CI is a patient-level cluster bootstrap: every
  replicate draws patients with replacement and weights each film by its patient's draw count;
  all replicates of a finding come from one sort (vectorised weighted ranks), not a loop of
  ``roc_auc_score`` calls. :func:`paired_finding_bootstrap` scores several models (and their
  precision, recall and F1) on the same draws, for paired differences.
* **Precision, recall and F1** need a threshold per finding: the one that maximises F1 on a
  validation split (:func:`f1_thresholds`), or one the user gives. Macro averages are means over
  the findings where the metric is defined; micro ones pool every (film, finding) pair.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xraydebug.models.metrics import (
    confounding_check,
    group_codes,
    missing_mask,
    percentile_interval,
)

_BOOT_CHUNK = 2_000_000  # replicate x film cells per chunk of the AUROC bootstrap

FINDING_METRIC_KEYS = ("auroc", "precision", "recall", "f1")
"""Per-finding metrics that :func:`paired_finding_bootstrap` resamples (all but AUROC at a
model's own thresholds); a multi-label before/after comparison gives each of them CIs."""


def masked_bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` (N, C) against ``targets`` (N, C) in {0, 1, NaN},
    over the known (non-NaN) cells only; ``pos_weight`` (C,) weighs the positives."""
    known = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(targets, nan=0.0), pos_weight=pos_weight, reduction="none"
    )
    return (loss * known).sum() / known.sum().clamp(min=1)


def _weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC (B,) of ``scores`` (N,) against boolean ``positive`` (N,) under film ``weights``
    (B, N): the weighted share of (positive, negative) pairs ordered right, ties one half."""
    order = np.argsort(scores, kind="stable")
    scores, positive, weights = scores[order], positive[order], weights[:, order]
    # tie groups: start and end index (exclusive) of each film's run of equal scores
    new = np.r_[True, scores[1:] != scores[:-1]]
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    ends = np.r_[starts[1:], len(scores)]
    neg_w = weights * ~positive
    cum = np.concatenate([np.zeros((weights.shape[0], 1)), np.cumsum(neg_w, axis=1)], axis=1)
    below = cum[:, starts[run]]  # negatives with a strictly lower score
    tied = cum[:, ends[run]] - below
    pos_w = weights * positive
    pairs = pos_w.sum(1) * neg_w.sum(1)
    right = (pos_w * (below + 0.5 * tied)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, right / pairs, np.nan)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of ``scores`` (N,) for boolean ``positive`` (N,); NaN without both kinds."""
    return float(_weighted_auroc(scores, positive, np.ones((1, len(scores))))[0])


def finding_aurocs(targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-finding AUROC (C,) over each finding's known films; NaN where undefined."""
    out = np.full(targets.shape[1], np.nan)
    for k in range(targets.shape[1]):
        known = ~np.isnan(targets[:, k])
        out[k] = auroc(probs[known, k], targets[known, k] == 1.0)
    return out


def _patient_weights(
    groups: np.ndarray | None, n: int, n_boot: int, seed: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Chunks ``(start, weights (b, n))`` of ``n_boot`` patient-level bootstrap replicates:
    each draws the patients with replacement and weights every film by its patient's count.
    The draws of :func:`auroc_bootstrap` and :func:`paired_finding_bootstrap` for ``seed``."""
    codes = group_codes(groups, n)
    n_groups = int(codes.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK // max(n, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        offsets = (np.arange(b) * n_groups)[:, None]
        per_group = np.bincount((draws + offsets).ravel(), minlength=b * n_groups)
        yield start, per_group.reshape(b, n_groups)[:, codes].astype(np.float64)


def _replicate_aurocs(
    targets: np.ndarray, known: np.ndarray, probs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Per-finding AUROC (b, C) of one chunk of replicates (film ``weights`` (b, N)), each
    finding over its ``known`` (N, C) films."""
    out = np.empty((weights.shape[0], targets.shape[1]))
    for k in range(targets.shape[1]):
        keep = known[:, k]
        out[:, k] = _weighted_auroc(probs[keep, k], targets[keep, k] == 1.0, weights[:, keep])
    return out


def auroc_bootstrap(
    targets: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Per-finding AUROC of ``n_boot`` patient-level bootstrap replicates: (n_boot, C), NaN in
    a replicate where the finding lacks positives or negatives."""
    n, c = targets.shape
    known = ~np.isnan(targets)
    out = np.empty((n_boot, c))
    for start, weights in _patient_weights(groups, n, n_boot, seed):
        out[start : start + len(weights)] = _replicate_aurocs(targets, known, probs, weights)
    return out


def paired_finding_bootstrap(
    targets: np.ndarray,
    probs: Sequence[np.ndarray],
    calls: Sequence[np.ndarray],
    groups: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Per-finding AUROC, precision, recall and F1 of ``n_boot`` patient-level bootstrap
    replicates, for several models scored on the same films, every model on the SAME draws
    (so differences between models get paired intervals).

    ``targets`` (N, C) 1/0/NaN; ``probs`` one (N, C) array per model; ``calls`` one boolean
    (N, C) array per model (its findings called at its thresholds). Returns one
    ``{metric: (n_boot, C)}`` per model (:data:`FINDING_METRIC_KEYS`), NaN where a replicate
    leaves the metric undefined. The AUROC replicates of one model equal
    :func:`auroc_bootstrap`'s for the same ``seed``.
    """
    if len(probs) != len(calls):
        raise ValueError(f"one calls array per probs array; got {len(probs)} and {len(calls)}")
    n, c = targets.shape
    known = ~np.isnan(targets)
    present = ((targets == 1.0) & known).astype(np.float64)
    out = [{key: np.empty((n_boot, c)) for key in FINDING_METRIC_KEYS} for _ in probs]
    for start, weights in _patient_weights(groups, n, n_boot, seed):
        rows = slice(start, start + len(weights))
        positives = weights @ present
        for result, p, called in zip(out, probs, calls, strict=True):
            result["auroc"][rows] = _replicate_aurocs(targets, known, p, weights)
            said = (called & known).astype(np.float64)
            hits = weights @ (said * present)
            said_w = weights @ said
            with np.errstate(invalid="ignore", divide="ignore"):
                result["precision"][rows] = np.where(said_w > 0, hits / said_w, np.nan)
                result["recall"][rows] = np.where(positives > 0, hits / positives, np.nan)
                both = said_w + positives
                result["f1"][rows] = np.where(both > 0, 2 * hits / both, np.nan)
    return out


def f1_thresholds(targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per finding, the probability threshold (C,) that maximises F1 on these films (a film is
    called positive when its probability is >= the threshold); 0.5 where the finding has no
    positive film."""
    out = np.full(targets.shape[1], 0.5)
    for k in range(targets.shape[1]):
        known = ~np.isnan(targets[:, k])
        y, p = targets[known, k] == 1.0, probs[known, k]
        if not y.any():
            continue
        order = np.argsort(-p, kind="stable")
        p_sorted, y_sorted = p[order], y[order]
        tp = np.cumsum(y_sorted)
        called = np.arange(1, len(p_sorted) + 1)
        last = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # cut only between distinct scores
        f1 = np.where(last, 2 * tp / (called + y.sum()), -1.0)
        out[k] = float(p_sorted[int(np.argmax(f1))])
    return out


def _counts(targets: np.ndarray, calls: np.ndarray) -> tuple[np.ndarray, ...]:
    known = ~np.isnan(targets)
    y = (targets == 1.0) & known
    called = calls & known
    tp = (y & called).sum(0)
    return tp, called.sum(0), y.sum(0), known.sum(0)


def _prf(tp: Any, called: Any, present: Any) -> tuple[float, float, float]:
    precision = tp / called if called else 0.0
    recall = tp / present if present else 0.0
    f1 = 2 * tp / (called + present) if called + present else 0.0
    return float(precision), float(recall), float(f1)


def summary(
    targets: np.ndarray, probs: np.ndarray, findings: Sequence[str], thresholds: np.ndarray
) -> dict[str, Any]:
    """Point metrics: ``per_finding`` {finding: {auroc, precision, recall, f1, threshold,
    support (positives), n (known films)}}, ``macro_auroc``, ``macro_f1``, ``micro_*``,
    ``accuracy`` (share of known (film, finding) cells called right) and ``n``."""
    calls = probs >= thresholds[None, :]
    tp, called, present, known = _counts(targets, calls)
    aurocs = finding_aurocs(targets, probs)
    per_finding = {}
    for k, name in enumerate(findings):
        precision, recall, f1 = _prf(tp[k], called[k], present[k])
        per_finding[name] = {
            "auroc": None if np.isnan(aurocs[k]) else float(aurocs[k]),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "threshold": float(thresholds[k]),
            "support": int(present[k]),
            "n": int(known[k]),
        }
    defined = [k for k in range(len(findings)) if present[k] > 0]
    micro = _prf(tp.sum(), called.sum(), present.sum())
    right = ((calls == (targets == 1.0)) & ~np.isnan(targets)).sum()
    return {
        "per_finding": per_finding,
        "macro_auroc": float(np.nanmean(aurocs)) if np.isfinite(aurocs).any() else None,
        "macro_f1": float(np.mean([per_finding[findings[k]]["f1"] for k in defined]))
        if defined
        else 0.0,
        "micro_precision": micro[0],
        "micro_recall": micro[1],
        "micro_f1": micro[2],
        "accuracy": float(right / max(int(known.sum()), 1)),
        "n": int(targets.shape[0]),
    }


def validation_metrics(
    targets: np.ndarray, probs: np.ndarray, findings: Sequence[str]
) -> dict[str, Any]:
    """What a multi-label training run records per epoch: :func:`summary` at threshold 0.5
    plus ``auroc`` (mean per-finding AUROC, the monitor) and ``loss`` (masked BCE)."""
    metrics = summary(targets, probs, findings, np.full(len(findings), 0.5))
    metrics["auroc"] = (
        metrics["macro_auroc"] if metrics["macro_auroc"] is not None else float("nan")
    )
    known = ~np.isnan(targets)
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    metrics["loss"] = float(bce[known].mean()) if known.any() else float("nan")
    metrics["per_class"] = metrics["per_finding"]
    return metrics


def evaluate_multilabel(
    targets: np.ndarray,
    probs: np.ndarray,
    findings: Sequence[str],
    thresholds: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The multi-label ``metrics.json`` content: :func:`summary`, ``ci`` (per-finding and
    macro AUROC, patient-level bootstrap 95%), ``per_source`` (AUROC per finding by source,
    e.g. view position) and ``warnings`` (findings confounded with a source, findings without
    positives, intervals without patient ids)."""
    findings = list(findings)
    result = summary(targets, probs, findings, thresholds)
    result.update(multilabel=True, findings=findings, classes=findings)
    result["per_class"] = result["per_finding"]  # DESIGN's metrics.json key, for every model
    boot = auroc_bootstrap(targets, probs, groups, n_boot, seed)
    with warnings.catch_warnings():  # replicates where no finding is defined
        warnings.simplefilter("ignore", RuntimeWarning)
        macro = np.nanmean(boot, axis=1)
    result["ci"] = {
        "auroc": {f: percentile_interval(boot[:, k], 0.05) for k, f in enumerate(findings)},
        "macro_auroc": percentile_interval(macro, 0.05),
    }
    for name, row in result["per_finding"].items():
        row["auroc_ci"] = result["ci"]["auroc"][name] if row["auroc"] is not None else None
    result["per_source"] = {}
    notes: list[str] = []
    if sources is not None:
        keys = np.where(
            missing_mask(np.asarray(sources)), "(none)", np.asarray(sources).astype(str)
        )
        for name in np.unique(keys):
            keep = keys == name
            aurocs = finding_aurocs(targets[keep], probs[keep])
            result["per_source"][str(name)] = {
                "n": int(keep.sum()),
                "auroc": {
                    f: None if np.isnan(a) else float(a)
                    for f, a in zip(findings, aurocs, strict=True)
                },
            }
        for k, name in enumerate(findings):
            known = ~np.isnan(targets[:, k])
            labels = (targets[known, k] == 1.0).astype(np.int64)
            raw = np.asarray(sources)[known]  # a missing view is no source of its own
            for line in confounding_check(labels, raw, [f"no {name}", name]):
                notes.append(f"{name}: {line}")
    for name, row in result["per_finding"].items():
        if row["auroc"] is None:
            notes.append(
                f"finding {name!r} has {row['support']} positive and "
                f"{row['n'] - row['support']} negative films here: its AUROC is not defined"
            )
    if groups is None:
        notes.append(
            "no patient ids given: confidence intervals treat images as independent and are too "
            "narrow when patients have several images"
        )
    result["warnings"] = notes
    return result
