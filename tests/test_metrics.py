"""Tests of xraydebug.models.metrics: hand-computed metrics, bootstrap CIs, confounding checks."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from xraydebug.models import metrics as metrics_mod
from xraydebug.models.metrics import (
    bootstrap_ci,
    confounding_check,
    confusion_matrix,
    evaluate_predictions,
    paired_difference_ci,
    per_class_metrics,
    summary_metrics,
)

CLASSES = ["normal", "pneumonia", "COVID-19"]

# Hand-built 3-class example (rows = true, columns = predicted):
#              normal  pneumonia  COVID-19   support
#   normal        5        2          1         8
#   pneumonia     1        3          0         4
#   COVID-19      0        1          2         3
#   predicted     6        6          3        n = 15
HAND_CM = [[5, 2, 1], [1, 3, 0], [0, 1, 2]]
F = Fraction
HAND_EXPECTED = {
    "normal": {"precision": F(5, 6), "recall": F(5, 8), "f1": F(5, 7), "support": 8},
    "pneumonia": {"precision": F(3, 6), "recall": F(3, 4), "f1": F(3, 5), "support": 4},
    "COVID-19": {"precision": F(2, 3), "recall": F(2, 3), "f1": F(2, 3), "support": 3},
}
HAND_ACCURACY = F(10, 15)
HAND_MACRO_F1 = (F(5, 7) + F(3, 5) + F(2, 3)) / 3  # = 208/315


def rows_from_cm(cm: list[list[int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, preds) realising a confusion matrix, in a shuffled order."""
    pairs = [
        (t, p) for t, row in enumerate(cm) for p, count in enumerate(row) for _ in range(count)
    ]
    order = np.random.default_rng(seed).permutation(len(pairs))
    arr = np.array(pairs, dtype=np.int64)[order]
    return arr[:, 0], arr[:, 1]


def assert_plain_json(value: Any) -> None:
    """Only Python builtins, no NaN/inf, and json.dumps works strictly."""

    def walk(v: Any) -> None:
        assert not isinstance(v, np.generic | np.ndarray), f"numpy value {v!r}"
        if isinstance(v, dict):
            assert all(isinstance(k, str) for k in v)
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        else:
            assert v is None or isinstance(v, str | int | float | bool), type(v)

    walk(value)
    json.dumps(value, allow_nan=False)


def noisy(n: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    preds = np.where(rng.random(n) < accuracy, labels, rng.integers(0, 3, n))
    return labels, preds


# ----------------------------------------------------------------------------- point metrics


def test_hand_computed_three_class_example():
    labels, preds = rows_from_cm(HAND_CM)
    cm = confusion_matrix(labels, preds, 3)
    assert cm.dtype == np.int64 and cm.tolist() == HAND_CM
    m = summary_metrics(labels, preds, CLASSES)
    assert m["n"] == 15 and m["confusion_matrix"] == HAND_CM
    assert m["accuracy"] == float(HAND_ACCURACY)
    assert m["macro_f1"] == pytest.approx(float(HAND_MACRO_F1), rel=1e-14)
    assert float(HAND_MACRO_F1) == pytest.approx(208 / 315, rel=1e-15)
    for name, expected in HAND_EXPECTED.items():
        got = m["per_class"][name]
        assert got["support"] == expected["support"]
        for key in ("precision", "recall", "f1"):
            assert got[key] == pytest.approx(float(expected[key]), rel=1e-14), (name, key)
    # F1 is the harmonic mean of precision and recall
    for name in CLASSES:
        p, r = HAND_EXPECTED[name]["precision"], HAND_EXPECTED[name]["recall"]
        assert HAND_EXPECTED[name]["f1"] == 2 * p * r / (p + r)
    assert per_class_metrics(np.array(HAND_CM), CLASSES) == m["per_class"]
    assert_plain_json(m)


def test_binary_sanity():
    # positives: TP 2, FN 1; negatives: TN 3, FP 1
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    preds = np.array([1, 1, 0, 0, 0, 1, 0])
    m = summary_metrics(labels, preds, ["negative", "positive"])
    assert m["confusion_matrix"] == [[3, 1], [1, 2]]
    pos, neg = m["per_class"]["positive"], m["per_class"]["negative"]
    assert pos["recall"] == pytest.approx(2 / 3)  # sensitivity
    assert neg["recall"] == pytest.approx(3 / 4)  # specificity
    assert pos["precision"] == pytest.approx(2 / 3) and neg["precision"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 2, 1, 0, 0])
    m = summary_metrics(labels, labels, CLASSES)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert all(
        row["precision"] == row["recall"] == row["f1"] == 1.0 for row in m["per_class"].values()
    )
    assert m["confusion_matrix"] == [[3, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_zero_support_class():
    # COVID-19 absent from labels but predicted once: all false positives, counts in macro-F1
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 0, 1, 2])
    m = summary_metrics(labels, preds, CLASSES)
    assert m["per_class"]["COVID-19"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["pneumonia"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    # COVID-19 neither present nor predicted: no evidence, left out of macro-F1 (not counted as 0)
    m = summary_metrics(labels, labels, CLASSES)
    assert m["per_class"]["COVID-19"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0
    # a present class that is never predicted: precision 0/0 -> 0.0, recall 0
    m = summary_metrics(np.array([0, 2]), np.array([0, 0]), CLASSES)
    assert m["per_class"]["COVID-19"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert_plain_json(m)


def test_empty_input_gives_zero_counts():
    m = summary_metrics(np.array([], dtype=int), np.array([], dtype=int), CLASSES)
    assert m["n"] == 0 and m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    assert_plain_json(m)


def test_accepts_lists_bools_and_integral_floats():
    assert confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist() == [[1, 0], [1, 1]]
    assert confusion_matrix(np.array([True, False]), np.array([1.0, 0.0]), 2).tolist() == [
        [1, 0],
        [0, 1],
    ]


def test_input_validation_messages():
    with pytest.raises(ValueError, match="equal length; got 2 labels and 1 preds"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(
        ValueError, match=r"class indices in \[0, 2\] for 3 classes; got .*\[0, 3\]"
    ):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(
        ValueError, match=r"labels must be class indices .* got values in \[-1, 1\]"
    ):
        confusion_matrix(np.array([-1, 1]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="preds must be integer class indices; got non-integer"):
        confusion_matrix(np.array([0, 1]), np.array([0.5, 1.0]), 3)
    with pytest.raises(ValueError, match="integer class indices; got dtype <U"):
        confusion_matrix(np.array(["normal"]), np.array([0]), 3)
    with pytest.raises(ValueError, match=r"1-D array of class indices; got shape \(2, 1\)"):
        confusion_matrix(np.zeros((2, 1), dtype=int), np.zeros((2, 1), dtype=int), 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1; got 0"):
        confusion_matrix(np.array([0]), np.array([0]), 0)
    with pytest.raises(ValueError, match=r"must be \(3, 3\) for 3 classes; got shape \(2, 2\)"):
        per_class_metrics(np.eye(2, dtype=int), CLASSES)
    with pytest.raises(ValueError, match="class names must be unique"):
        summary_metrics(np.array([0]), np.array([0]), ["a", "a"])
    labels, preds = noisy(20, 0.8, 0)
    with pytest.raises(ValueError, match=r"groups must be 1-D with one entry per label \(20\)"):
        bootstrap_ci(labels, preds, CLASSES, groups=np.arange(19))
    with pytest.raises(ValueError, match="n_boot must be a positive int; got 0"):
        bootstrap_ci(labels, preds, CLASSES, n_boot=0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\).*got 1.5"):
        bootstrap_ci(labels, preds, CLASSES, alpha=1.5)
    with pytest.raises(ValueError, match="at least one prediction; got 0 rows"):
        bootstrap_ci(np.array([], dtype=int), np.array([], dtype=int), CLASSES)
    with pytest.raises(ValueError, match="labels and preds_after must have equal length"):
        paired_difference_ci(labels, preds, preds[:5], CLASSES)
    with pytest.raises(ValueError, match=r"sources must be 1-D with one entry per label \(20\)"):
        evaluate_predictions(labels, preds, CLASSES, sources=np.array(["a"]))
    with pytest.raises(ValueError, match="cannot evaluate an empty set"):
        evaluate_predictions(np.array([], dtype=int), np.array([], dtype=int), CLASSES)


# ----------------------------------------------------------------------------- bootstrap


def test_resampled_matrices_match_a_naive_loop():
    """The vectorised cluster bootstrap equals an explicit per-replicate loop over the draws."""
    labels, preds = noisy(60, 0.7, 5)
    groups = np.repeat([f"p{i:02d}" for i in range(20)], 3)
    n_boot = 25
    (cms,) = metrics_mod._resampled_cms(labels, [preds], 3, groups, n_boot, seed=7)
    draws = np.random.default_rng(7).integers(0, 20, size=(n_boot, 20), dtype=np.int32)
    codes = np.unique(groups, return_inverse=True)[1]
    for b in range(n_boot):
        rows = np.concatenate([np.flatnonzero(codes == g) for g in draws[b]])
        assert cms[b].tolist() == confusion_matrix(labels[rows], preds[rows], 3).tolist()
    (image_cms,) = metrics_mod._resampled_cms(labels, [preds], 3, None, n_boot, seed=7)
    draws = np.random.default_rng(7).integers(0, 60, size=(n_boot, 60), dtype=np.int32)
    for b in range(n_boot):
        expected = confusion_matrix(labels[draws[b]], preds[draws[b]], 3)
        assert image_cms[b].tolist() == expected.tolist()


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    labels, preds = noisy(300, 0.7, 1)
    ci = bootstrap_ci(labels, preds, CLASSES, n_boot=300, seed=3)
    point = summary_metrics(labels, preds, CLASSES)
    assert ci["accuracy"][0] <= point["accuracy"] <= ci["accuracy"][1]
    assert ci["macro_f1"][0] <= point["macro_f1"] <= ci["macro_f1"][1]
    for name in CLASSES:
        for key in ("precision", "recall", "f1"):
            lo, hi = ci["per_class"][name][key]
            assert 0.0 <= lo <= point["per_class"][name][key] <= hi <= 1.0, (name, key)
    assert ci == bootstrap_ci(labels, preds, CLASSES, n_boot=300, seed=3)
    assert ci != bootstrap_ci(labels, preds, CLASSES, n_boot=300, seed=4)
    assert ci["unit"] == "image" and ci["level"] == 0.95 and ci["n_boot"] == 300
    assert bootstrap_ci(labels, preds, CLASSES, n_boot=50, alpha=0.1)["level"] == 0.9
    assert_plain_json(ci)


def test_bootstrap_perfect_predictions_give_unit_intervals():
    labels = np.array([0, 0, 1, 1, 1, 2, 0, 1])  # COVID-19 in one row: absent from many replicates
    groups = np.array(["a", "a", "b", "c", "c", "d", "e", "f"])
    for g in (None, groups):
        ci = bootstrap_ci(labels, labels, CLASSES, g, n_boot=200)
        assert ci["accuracy"] == [1.0, 1.0] and ci["macro_f1"] == [1.0, 1.0]
        for name in CLASSES:
            assert ci["per_class"][name] == {k: [1.0, 1.0] for k in ("precision", "recall", "f1")}
    # a class neither present nor predicted anywhere: undefined in every replicate -> [0, 0]
    ci = bootstrap_ci(np.array([0, 1]), np.array([0, 1]), CLASSES, n_boot=20)
    assert ci["per_class"]["COVID-19"]["recall"] == [0.0, 0.0]
    assert_plain_json(ci)


def test_patient_clustering_widens_the_interval():
    rng = np.random.default_rng(2)
    n_patients = 40
    base_labels = rng.integers(0, 3, n_patients)
    base_preds = np.where(rng.random(n_patients) < 0.6, base_labels, (base_labels + 1) % 3)
    labels, preds = np.repeat(base_labels, 10), np.repeat(base_preds, 10)  # 10 images a patient
    groups = np.repeat([f"p{i:02d}" for i in range(n_patients)], 10)
    by_patient = bootstrap_ci(labels, preds, CLASSES, groups, n_boot=500)
    by_image = bootstrap_ci(labels, preds, CLASSES, None, n_boot=500)
    assert by_patient["unit"] == "patient" and by_image["unit"] == "image"

    def width(ci: dict[str, Any], key: str) -> float:
        return ci[key][1] - ci[key][0]

    for key in ("accuracy", "macro_f1"):
        assert width(by_patient, key) >= width(by_image, key)
    assert width(by_patient, "accuracy") > 2 * width(by_image, "accuracy")  # ~sqrt(10) expected
    # resampling patients of the duplicated set == resampling the 40 distinct images
    dedup = bootstrap_ci(base_labels, base_preds, CLASSES, None, n_boot=500)
    assert by_patient["accuracy"] == dedup["accuracy"]
    assert by_patient["per_class"] == dedup["per_class"]


def test_missing_group_ids_are_their_own_patients():
    labels, preds = noisy(12, 0.5, 9)
    with_none = np.array([None, "", float("nan")] * 4, dtype=object)
    assert bootstrap_ci(labels, preds, CLASSES, with_none, n_boot=100, seed=1) == {
        **bootstrap_ci(
            labels, preds, CLASSES, [f"g{i:02d}" for i in range(12)], n_boot=100, seed=1
        ),
        "unit": "patient",
    }


def test_paired_difference_of_identical_models_is_zero():
    labels, preds = rows_from_cm(HAND_CM)
    groups = np.arange(15) // 2
    same = paired_difference_ci(labels, preds, preds, CLASSES, groups, n_boot=200)
    entries = [same["accuracy"], same["macro_f1"]] + [
        same["per_class"][c][k] for c in CLASSES for k in ("precision", "recall", "f1")
    ]
    for entry in entries:
        assert entry["diff"] == 0.0 and entry["ci"] == [0.0, 0.0]
        assert entry["before"] == entry["after"]
    assert same["unit"] == "patient"
    assert_plain_json(same)


def test_paired_difference_of_a_better_model():
    labels, before = noisy(400, 0.6, 11)
    after = np.where(np.random.default_rng(12).random(400) < 0.5, labels, before)
    groups = np.arange(400) // 4
    d = paired_difference_ci(labels, before, after, CLASSES, groups, n_boot=300, seed=2)
    sb, sa = summary_metrics(labels, before, CLASSES), summary_metrics(labels, after, CLASSES)
    assert d["accuracy"]["before"] == sb["accuracy"] and d["accuracy"]["after"] == sa["accuracy"]
    assert d["accuracy"]["diff"] == pytest.approx(sa["accuracy"] - sb["accuracy"])
    lo, hi = d["accuracy"]["ci"]
    assert 0.0 < lo <= d["accuracy"]["diff"] <= hi
    recall = d["per_class"]["COVID-19"]["recall"]
    assert recall["after"] == sa["per_class"]["COVID-19"]["recall"]
    assert recall["ci"][0] <= recall["diff"] <= recall["ci"][1]
    # pairing: the diff CI is narrower than the gap between two independent accuracy CIs
    ci_before = bootstrap_ci(labels, before, CLASSES, groups, n_boot=300, seed=2)["accuracy"]
    ci_after = bootstrap_ci(labels, after, CLASSES, groups, n_boot=300, seed=2)["accuracy"]
    assert hi - lo < (ci_after[1] - ci_before[0]) - (ci_after[0] - ci_before[1])
    # hand example: fixing every mistake raises accuracy by 1/3
    labels, preds = rows_from_cm(HAND_CM)
    fixed = paired_difference_ci(labels, preds, labels, CLASSES, None, n_boot=100)
    assert fixed["accuracy"]["diff"] == pytest.approx(1 / 3)
    assert fixed["per_class"]["COVID-19"]["recall"]["after"] == 1.0
    assert fixed["unit"] == "image"


# ----------------------------------------------------------------------------- confounding


def test_confounding_warning_on_a_confounded_split():
    # like COVIDx test: one source contains only COVID-19
    labels = np.array([2] * 20 + [0] * 30 + [1] * 30)
    sources = np.array(["covid-site"] * 20 + ["general"] * 60)
    warnings = confounding_check(labels, sources, CLASSES)
    assert len(warnings) == 2
    assert "'covid-site': 100% COVID-19 (20 images) is dominated by COVID-19" in warnings[0]
    assert "only 25% of the split" in warnings[0]
    assert "Cramér's V = 0.99" in warnings[1]
    assert "'general': 50% normal, 50% pneumonia (60 images)" in warnings[1]


def test_confounding_by_association_only():
    # no source is >= 90% one class, but the association is strong (V = 0.7)
    labels = np.array([0] * 85 + [1] * 15 + [0] * 15 + [1] * 85)
    sources = np.array(["north"] * 100 + ["south"] * 100)
    warnings = confounding_check(labels, sources, CLASSES)
    assert len(warnings) == 1 and "Cramér's V = 0.70" in warnings[0]
    assert "'north': 85% normal, 15% pneumonia" in warnings[0]


def test_no_confounding_warning_on_balanced_or_single_source():
    labels = np.array([2] * 20 + [0] * 30 + [1] * 30)
    assert confounding_check(labels, np.array(["a", "b"] * 40), CLASSES) == []
    assert confounding_check(labels, None, CLASSES) == []
    assert confounding_check(labels, np.array(["only"] * 80), CLASSES) == []
    # rows without a source are ignored: one named source left
    assert confounding_check(labels, np.array(["covid"] * 20 + [""] * 60), CLASSES) == []
    # small sources (< min_images = 10) are not singled out
    small = np.array(["tiny"] * 5 + ["big"] * 75)
    ordered = np.sort(labels)[::-1]  # the 5 'tiny' rows are all COVID-19
    flag = "source 'tiny': 100% COVID-19 (5 images) is dominated"
    assert not any(flag in w for w in confounding_check(ordered, small, CLASSES))
    assert any(flag in w for w in confounding_check(ordered, small, CLASSES, min_images=5))


# ----------------------------------------------------------------------------- metrics.json


def test_evaluate_predictions_contract():
    labels, preds = rows_from_cm(HAND_CM)
    groups = np.array([f"p{i // 2}" for i in range(15)])
    sources = np.array(["a", "b", None] * 5, dtype=object)
    result = evaluate_predictions(labels, preds, CLASSES, groups, sources, n_boot=50)
    assert {
        "accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "classes",
        "n",
        "ci",
        "per_source",
        "warnings",
    } <= set(result)
    assert result["confusion_matrix"] == HAND_CM and result["classes"] == CLASSES
    assert result["n"] == 15 and result["accuracy"] == pytest.approx(2 / 3)
    assert result["ci"]["unit"] == "patient" and result["ci"]["n_boot"] == 50
    assert set(result["per_source"]) == {"a", "b", "(none)"}
    assert sum(s["n"] for s in result["per_source"].values()) == 15
    keep = np.array([s == "a" for s in sources])
    assert result["per_source"]["a"] == summary_metrics(labels[keep], preds[keep], CLASSES)
    assert result["warnings"] == []
    assert_plain_json(result)
    assert json.loads(json.dumps(result)) == result


def test_evaluate_predictions_warnings():
    labels = np.array([0, 0, 1, 1, 0, 1])
    preds = np.array([0, 1, 1, 1, 0, 0])
    result = evaluate_predictions(labels, preds, CLASSES, n_boot=20)
    joined = " ".join(result["warnings"])
    assert "class 'COVID-19' has no images in this split" in joined
    assert "left out of macro-F1" in joined
    assert "no patient ids given" in joined
    assert result["ci"]["unit"] == "image" and result["per_source"] == {}
    assert_plain_json(result)
