"""What a training run watches on its validation split: the metrics of every epoch, and the
one that picks the best epoch and counts patience (the *monitor*, a recipe setting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xraydebug.models.metrics import summary_metrics
from xraydebug.models.multilabel import auroc


@dataclass(frozen=True)
class Monitor:
    """A validation metric early stopping can watch: ``key`` names it in the metrics of
    :func:`validation_metrics`; ``higher_is_better`` says which way is progress."""

    key: str
    higher_is_better: bool
    description: str

    def score(self, metrics: dict[str, Any]) -> float:
        """The metric signed so that higher is better (NaN, an undefined AUROC, is -inf)."""
        value = float(metrics[self.key])
        if np.isnan(value):
            return -np.inf
        return value if self.higher_is_better else -value


MONITORS: dict[str, Monitor] = {
    "macro_f1": Monitor("macro_f1", True, "validation macro-F1 (the softmax default)"),
    "auroc": Monitor(
        "auroc",
        True,
        "mean validation AUROC: one-vs-rest over the classes present, or per finding (the "
        "multi-label default)",
    ),
    "loss": Monitor("loss", False, "validation cross-entropy (lower is better)"),
}


def get_monitor(name: str) -> Monitor:
    """The :class:`Monitor` called ``name``; an unknown name raises ``ValueError``."""
    try:
        return MONITORS[name]
    except KeyError:
        raise ValueError(f"unknown monitor {name!r}; valid names: {', '.join(MONITORS)}") from None


def mean_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUROC of ``probs`` (N, K) against integer ``labels`` (N,) over the
    classes with both positives and negatives in ``labels``; NaN when no class has both."""
    scores = [
        auroc(probs[:, k], labels == k)
        for k in range(probs.shape[1])
        if 0 < int((labels == k).sum()) < len(labels)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def validation_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class rows (:func:`summary_metrics` of the argmax), plus
    ``auroc`` (:func:`mean_auroc`) and ``loss`` (mean cross-entropy of the true class).

    ``labels`` (N,) integer classes; ``probs`` (N, K) softmax probabilities in [0, 1].
    """
    metrics = summary_metrics(labels, probs.argmax(1), list(classes))
    metrics["auroc"] = mean_auroc(labels, probs)
    picked = probs[np.arange(len(labels)), labels]
    metrics["loss"] = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    return metrics
