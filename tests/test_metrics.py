from __future__ import annotations

import json

import numpy as np
import pytest

from xraydebug.models.metrics import (
    bootstrap_ci,
    confounding_check,
    confusion_matrix,
    evaluate_predictions,
    paired_difference_ci,
    summary_metrics,
)

CLASSES = ["normal", "pneumonia", "COVID-19"]
# Hand-built: true normal x4 (pred n,n,n,p), pneumonia x3 (p,p,c), COVID x3 (c,c,n)
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PREDS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])


def test_hand_computed_confusion_matrix_and_metrics():
    cm = confusion_matrix(LABELS, PREDS, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    m = summary_metrics(LABELS, PREDS, CLASSES)
    # normal: P = 3/4, R = 3/4; pneumonia: P = 2/3, R = 2/3; COVID: P = 2/3, R = 2/3
    assert m["per_class"]["normal"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["normal"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["pneumonia"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["COVID-19"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["COVID-19"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["normal"]["support"] == 4
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["macro_f1"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert m["n"] == 10


def test_unbalanced_precision_recall_differ():
    labels = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 1, 1])
    m = summary_metrics(labels, preds, CLASSES)
    assert m["per_class"]["pneumonia"]["precision"] == pytest.approx(3 / 5)
    assert m["per_class"]["pneumonia"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["pneumonia"]["f1"] == pytest.approx(2 * 0.6 / 1.6)
    assert (
        m["per_class"]["normal"]["precision"] == 1.0 and m["per_class"]["normal"]["recall"] == 0.5
    )
    assert m["per_class"]["COVID-19"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_absent_class_and_perfect():
    labels = np.array([0, 1, 0, 1])
    m = summary_metrics(labels, labels, CLASSES)
    assert m["accuracy"] == 1.0 and m["per_class"]["COVID-19"]["support"] == 0
    ci = bootstrap_ci(labels, labels, CLASSES, n_boot=100)
    assert ci["accuracy"] == [1.0, 1.0]


def test_validation_errors():
    with pytest.raises(ValueError, match="equal length"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    preds = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 3, 300))
    ci = bootstrap_ci(labels, preds, CLASSES, n_boot=300, seed=3)
    acc = summary_metrics(labels, preds, CLASSES)["accuracy"]
    assert ci["accuracy"][0] <= acc <= ci["accuracy"][1]
    assert ci == bootstrap_ci(labels, preds, CLASSES, n_boot=300, seed=3)
    assert ci["unit"] == "image" and ci["level"] == pytest.approx(0.95)


def test_patient_level_bootstrap_is_wider_for_clustered_rows():
    rng = np.random.default_rng(2)
    labels = np.repeat(rng.integers(0, 3, 40), 10)
    preds = np.repeat(np.where(rng.random(40) < 0.6, labels[::10], (labels[::10] + 1) % 3), 10)
    groups = np.repeat(np.arange(40), 10)
    by_image = bootstrap_ci(labels, preds, CLASSES, None, n_boot=500)
    by_patient = bootstrap_ci(labels, preds, CLASSES, groups, n_boot=500)
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]  # noqa: E731
    assert width(by_patient) > 2 * width(by_image)
    assert by_patient["unit"] == "patient"


def test_paired_difference():
    same = paired_difference_ci(LABELS, PREDS, PREDS, CLASSES, n_boot=200)
    assert same["accuracy"]["diff"] == 0 and same["accuracy"]["ci"] == [0.0, 0.0]
    better = paired_difference_ci(LABELS, PREDS, LABELS, CLASSES, n_boot=200)
    assert better["accuracy"]["diff"] == pytest.approx(0.3)
    assert better["per_class"]["COVID-19"]["recall"]["after"] == 1.0
    assert better["accuracy"]["ci"][0] >= 0


def test_confounding_check():
    labels = np.array([2] * 20 + [0] * 30 + [1] * 30)
    sources = np.array(["covid-site"] * 20 + ["general"] * 60)
    warnings = confounding_check(labels, sources, CLASSES)
    assert warnings and "covid-site" in warnings[0] and "COVID-19" in warnings[0]
    balanced = np.array(["a", "b"] * 40)
    assert confounding_check(labels, balanced, CLASSES) == []
    assert confounding_check(labels, None, CLASSES) == []


def test_evaluate_predictions_is_json_ready():
    groups = np.array(["p1", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p8"])
    sources = np.array(["a", "b"] * 5)
    result = evaluate_predictions(LABELS, PREDS, CLASSES, groups, sources, n_boot=50)
    text = json.dumps(result)
    assert "per_source" in text and set(result["per_source"]) == {"a", "b"}
    assert result["per_source"]["a"]["n"] == 5
    assert result["ci"]["unit"] == "patient"
