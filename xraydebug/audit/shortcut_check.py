"""Did a text shortcut survive cleaning? Both models' calls broken down by detected text.

On a test set where text is independent of the labels, a model that does not read text calls a
class (or finding) as often on films with burned-in text as on those without; a class called
far more often with text is a shortcut that survived cleaning, e.g. from text the detector
missed in training. The films with text are those in which ``clean`` found (and removed) text
(:func:`detected_text_paths`).

* One label per image: :func:`text_breakdown` (share of each predicted class, per true label,
  with and without text), :func:`residual_shortcut_warnings` and :func:`shortcut_check`.
* Multi-label findings: :func:`finding_text_breakdown` (how often each finding is called with
  and without text, among the films that have it and those that do not),
  :func:`finding_shortcut_warnings` and :func:`finding_shortcut_check`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraydebug.audit.report import has_detected_text
from xraydebug.data.labels import findings_matrix
from xraydebug.models.evaluate import finding_targets
from xraydebug.runfolder import CLEANING_CSV


def detected_text_paths(clean_data: Path) -> set[str] | None:
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


# ----------------------------------------------------------------------------- multi-label


def _finding_calls(preds: pd.Series, findings: tuple[str, ...]) -> np.ndarray:
    """(N, C) booleans: the findings each ``pred`` (findings joined by ``|``) names."""
    return findings_matrix(preds.fillna("").astype(str), findings)


def finding_text_breakdown(
    merged: pd.DataFrame, text_paths: set[str], findings: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Per finding, how often it is called on films with and without detected text, among the
    films that have the finding and those that do not.

    ``merged``: columns ``path, findings`` (the targets), ``pred_before``, ``pred_after`` (the
    called findings joined by ``|``). Where text is independent of the findings (a
    decorrelated test set), a model that does not read text calls a finding as often with text
    as without; a finding called far more often on films with text (above all on films
    without it) is a shortcut that survived cleaning. Returns rows ``{"finding", "present",
    "label" ("Infiltration" / "no Infiltration"), "text", "n", "before": share called,
    "after": share called}``; films whose target for the finding is unknown are left out.
    """
    has_text = merged["path"].isin(text_paths).to_numpy()
    targets = finding_targets(merged) if len(merged) else np.zeros((0, len(findings)))
    called = {
        side: _finding_calls(merged[f"pred_{side}"], findings) for side in ("before", "after")
    }
    rows = []
    for k, name in enumerate(findings):
        known = ~np.isnan(targets[:, k])
        for present in (True, False):
            for text in (True, False):
                keep = known & ((targets[:, k] == 1.0) == present) & (has_text == text)
                n = int(keep.sum())
                row: dict[str, Any] = {
                    "finding": name,
                    "present": present,
                    "label": name if present else f"no {name}",
                    "text": text,
                    "n": n,
                }
                for side in ("before", "after"):
                    row[side] = float(called[side][keep, k].mean()) if n else 0.0
                rows.append(row)
    return rows


def _finding_gaps(
    breakdown: list[dict[str, Any]], min_n: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(with text, without text) row pairs of a :func:`finding_text_breakdown` with at least
    ``min_n`` films on each side."""
    by_key = {(r["finding"], r["present"], r["text"]): r for r in breakdown}
    pairs = []
    for (name, present, text), with_text in by_key.items():
        without = by_key.get((name, present, False))
        if text and without is not None and min(with_text["n"], without["n"]) >= min_n:
            pairs.append((with_text, without))
    return pairs


def _films(row: dict[str, Any]) -> str:
    """'films with Infiltration' / 'films without Infiltration' of a breakdown row."""
    return f"films {'with' if row['present'] else 'without'} {row['finding']}"


def finding_shortcut_warnings(
    breakdown: list[dict[str, Any]], test_set: str, min_gap: float = 0.25, min_n: int = 5
) -> list[str]:
    """Warnings where the retrained model calls a finding much more often on films with
    detected text than on those without (among films with, or without, the finding)."""
    warnings = []
    for with_text, without in _finding_gaps(breakdown, min_n):
        gap = with_text["after"] - without["after"]
        if gap >= min_gap:
            warnings.append(
                f"{test_set} test set: the retrained model calls {with_text['finding']} on "
                f"{with_text['after']:.0%} of the {_films(with_text)} that carry detected text "
                f"(vs {without['after']:.0%} of those without text; before cleaning "
                f"{with_text['before']:.0%}): a text shortcut survived cleaning, e.g. from "
                "text the detector missed in training"
            )
    return warnings


def finding_shortcut_check(
    breakdown: list[dict[str, Any]], max_gap: float = 0.10, min_n: int = 5
) -> dict[str, Any]:
    """:func:`shortcut_check` for multi-label models: per finding, among films with and films
    without it, the share called that finding with detected text minus without, before and
    after; ``gone`` when no gap after cleaning exceeds ``max_gap`` (groups under ``min_n``
    films are skipped). Same keys as :func:`shortcut_check` (``worst`` names the ``finding``
    and the films' ``label``)."""
    gaps: dict[str, list[tuple[float, dict, dict]]] = {"before": [], "after": []}
    for with_text, without in _finding_gaps(breakdown, min_n):
        for side in gaps:
            gaps[side].append((with_text[side] - without[side], with_text, without))
    if not gaps["after"]:
        return {"gone": None, "sentence": "too few films with and without text to tell"}
    worst = max(gaps["after"], key=lambda g: g[0])
    before = max(gaps["before"], key=lambda g: g[0])
    gone = bool(worst[0] <= max_gap)

    def said(gap: tuple[float, dict, dict], side: str) -> str:
        value, with_text, without = gap
        return (
            f"{with_text['finding']} is called on {with_text[side]:.0%} of the "
            f"{_films(with_text)} that carry text vs {without[side]:.0%} of those without "
            f"({value:+.0%})"
        )

    sentence = (
        f"largest gap after cleaning: {said(worst, 'after')}; before cleaning the largest gap "
        f"was: {said(before, 'before')}"
    )
    return {
        "gone": gone,
        "max_gap_before": float(before[0]),
        "max_gap_after": float(worst[0]),
        "worst": {
            "finding": worst[1]["finding"],
            "label": worst[1]["label"],
            "with_text": worst[1]["after"],
            "without_text": worst[2]["after"],
        },
        "sentence": ("The text shortcut is gone: " if gone else "A text shortcut remains: ")
        + sentence,
    }
