"""Before/after comparison of multi-label models: per-finding AUROC and recall with paired
patient-level bootstrap CIs, the per-finding text breakdown, and a real retrain of a tiny
multi-label model on the synthetic NIH set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.test_report import assert_self_contained
from xraydebug.audit.compare import compare_findings
from xraydebug.audit.retrain import (
    BEFORE_AFTER_COLUMNS,
    REPEAT_COLUMNS,
    RetrainConfig,
    before_after_table,
    comparison_table,
    retrain,
    summarise_repeats,
)
from xraydebug.audit.shortcut_check import (
    finding_shortcut_check,
    finding_shortcut_warnings,
    finding_text_breakdown,
)
from xraydebug.cli import app
from xraydebug.models.checkpoint import load_model, read_checkpoint
from xraydebug.models.multilabel import (
    FINDING_METRIC_KEYS,
    auroc_bootstrap,
    finding_aurocs,
    paired_finding_bootstrap,
)
from xraydebug.models.train import TrainConfig

FINDINGS = ("Consolidation", "Infiltration")


def _table(probs: np.ndarray, targets: np.ndarray, patients: list[str] | None = None):
    n = len(probs)
    table = pd.DataFrame(
        {
            "path": [f"images/{i}.png" for i in range(n)],
            "split": "test",
            "label": "x",
            "source": "PA",
            "pred": "",
        }
    )
    for k, name in enumerate(FINDINGS):
        table[f"prob_{name}"] = probs[:, k]
    table["patient_id"] = patients or [f"P{i // 2}" for i in range(n)]
    table["findings"] = [tuple(row) for row in targets]
    return table


def _random_case(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 2)) < 0.4).astype(float)
    targets[3, 1] = np.nan  # an unknown label is left out of that finding
    before = np.clip(0.3 * targets + rng.random((n, 2)) * 0.7, 0, 1)
    after = np.clip(0.5 * targets + rng.random((n, 2)) * 0.5, 0, 1)
    return targets, np.nan_to_num(before), np.nan_to_num(after)


def test_paired_bootstrap_shares_draws_with_auroc_bootstrap():
    targets, before, after = _random_case()
    groups = np.array([f"P{i // 2}" for i in range(len(targets))])
    calls = [before >= 0.5, after >= 0.5]
    boot_before, boot_after = paired_finding_bootstrap(
        targets, [before, after], calls, groups, n_boot=300, seed=4
    )
    # the AUROC replicates are auroc_bootstrap's for each model: the same patient draws
    np.testing.assert_allclose(
        boot_before["auroc"], auroc_bootstrap(targets, before, groups, 300, 4)
    )
    np.testing.assert_allclose(boot_after["auroc"], auroc_bootstrap(targets, after, groups, 300, 4))
    assert set(boot_before) == set(FINDING_METRIC_KEYS)
    # one model twice: every paired difference is exactly 0
    same = paired_finding_bootstrap(targets, [before, before], [calls[0], calls[0]], groups, 50)
    for key in FINDING_METRIC_KEYS:
        diff = same[1][key] - same[0][key]
        assert np.all((diff == 0) | np.isnan(diff))


def test_compare_findings_hand_built():
    targets, before, after = _random_case()
    thresholds = (np.array([0.5, 0.5]), np.array([0.4, 0.6]))
    result = compare_findings(
        _table(before, targets), _table(after, targets), FINDINGS, thresholds, n_boot=200
    )
    assert result["n"] == 40
    aurocs = finding_aurocs(targets, after)
    for k, name in enumerate(FINDINGS):
        row = result["after"]["per_finding"][name]
        assert row["auroc"] == pytest.approx(aurocs[k])
        assert row["threshold"] == thresholds[1][k]
        known = ~np.isnan(targets[:, k])
        positive = known & (targets[:, k] == 1)
        assert row["recall"] == pytest.approx((after[positive, k] >= thresholds[1][k]).mean())
        for key in FINDING_METRIC_KEYS:
            lo, hi = result["after"]["ci"]["per_finding"][name][key]
            assert 0.0 <= lo <= hi <= 1.0
            entry = result["difference"]["per_finding"][name][key]
            before_value = result["before"]["per_finding"][name][key]
            assert entry["diff"] == pytest.approx(row[key] - before_value)
            assert entry["ci"][0] <= entry["ci"][1]
    macro = result["difference"]["macro_auroc"]
    assert macro["diff"] == pytest.approx(
        np.mean(aurocs) - np.mean(finding_aurocs(targets, before))
    )
    assert result["before"]["ci"]["unit"] == "patient"
    json.dumps(result, allow_nan=False)  # plain JSON


def test_compare_findings_undefined_auroc_is_none():
    targets, before, after = _random_case()
    targets[:, 1] = 0.0  # no film has Infiltration: its AUROC and recall are undefined
    result = compare_findings(
        _table(before, targets), _table(after, targets), FINDINGS, (np.full(2, 0.5),) * 2, 50
    )
    row = result["before"]["per_finding"]["Infiltration"]
    assert (
        row["auroc"] is None
        and result["before"]["ci"]["per_finding"]["Infiltration"]["auroc"] is None
    )
    assert result["difference"]["per_finding"]["Infiltration"]["auroc"]["diff"] is None
    comparison = {
        "classes": list(FINDINGS),
        "multilabel": True,
        "test_sets": {"original": result},
    }
    table = comparison_table(comparison)
    assert list(table.columns) == BEFORE_AFTER_COLUMNS and len(table) == 2 * 4 + 1
    undefined = table[(table["class"] == "Infiltration") & (table["metric"] == "auroc")]
    assert undefined["before"].isna().all() and undefined["diff"].isna().all()
    rendered = Console(record=True, width=200)
    rendered.print(before_after_table(comparison))
    text = rendered.export_text()
    assert "finding" in text and "n/a" in text and "macro_auroc" in text


def test_finding_text_breakdown_finds_a_surviving_shortcut():
    # 20 films without Infiltration: 10 with text; after cleaning 8 of those are still
    # called Infiltration, 1 of the text-free ones
    rows = []
    for i in range(20):
        text = i < 10
        rows.append(
            {
                "path": f"images/{i}.png",
                "findings": (0.0, 0.0),
                "pred_before": "Infiltration" if text else "No Finding",
                "pred_after": "Consolidation|Infiltration"
                if (text and i < 8) or i == 10
                else "No Finding",
            }
        )
    merged = pd.DataFrame(rows)
    texty = {f"images/{i}.png" for i in range(10)}
    breakdown = finding_text_breakdown(merged, texty, FINDINGS)
    row = next(
        r for r in breakdown if r["finding"] == "Infiltration" and not r["present"] and r["text"]
    )
    assert row["n"] == 10 and row["before"] == 1.0 and row["after"] == 0.8
    assert row["label"] == "no Infiltration"
    warnings = finding_shortcut_warnings(breakdown, "original")
    assert any("Infiltration on 80% of the films without Infiltration" in w for w in warnings)
    check = finding_shortcut_check(breakdown)
    assert check["gone"] is False and check["worst"]["finding"] in FINDINGS
    assert json.loads(json.dumps(check))["gone"] is False
    merged["pred_after"] = "No Finding"
    assert finding_shortcut_warnings(finding_text_breakdown(merged, texty, FINDINGS), "x") == []
    gone = finding_shortcut_check(finding_text_breakdown(merged, texty, FINDINGS))
    assert gone["gone"] is True and gone["sentence"].startswith("The text shortcut is gone")


def test_summarise_repeats_per_finding():
    def metrics(recall: float, auroc: float | None) -> dict:
        rows = {
            f: {"auroc": auroc, "precision": 0.5, "recall": recall, "f1": 0.5, "support": 4}
            for f in FINDINGS
        }
        return {"macro_auroc": auroc, "macro_f1": 0.5, "per_finding": rows}

    per_seed = [
        {"seed": s, "original": {"before": metrics(0.5, 0.6), "after": metrics(r, a)}}
        for s, r, a in ((0, 0.7, 0.7), (1, 0.9, None))
    ]
    summary = summarise_repeats(per_seed, FINDINGS, multilabel=True)["original"]
    assert summary["Infiltration/recall"]["diff"]["mean"] == pytest.approx(0.3)
    assert summary["Infiltration/auroc"]["diff"] == {
        "mean": pytest.approx(0.1),
        "sd": 0.0,
        "min": pytest.approx(0.1),
        "max": pytest.approx(0.1),
    }
    assert set(summary) == {f"{f}/{m}" for f in FINDINGS for m in FINDING_METRIC_KEYS} | {
        "all/macro_auroc"
    }


def hand_cleaned_copy(data: Path, out: Path) -> Path:
    """``data`` with every ground-truth text box inpainted (Telea), plus the ``cleaning.csv``
    ``clean`` would write: what ``xraydebug clean`` does, without running a text detector."""
    shutil.copytree(data, out)
    truth = json.loads((data / "ground_truth.json").read_text())
    rows = []
    for path, info in truth.items():
        if path.startswith("_"):
            continue
        boxes = info["boxes"]
        if boxes:
            image = cv2.imread(str(data / path), cv2.IMREAD_UNCHANGED)
            mask = np.zeros(image.shape[:2], np.uint8)
            for x0, y0, x1, y1 in boxes:
                mask[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = 255
            cv2.imwrite(str(out / path), cv2.inpaint(image, mask, 5, cv2.INPAINT_TELEA))
        rows.append(
            {
                "path": path,
                "n_boxes": len(boxes),
                "boxes": json.dumps(boxes),
                "changed": bool(boxes),
                "status": "ok",
                "error": "",
                "text_remains": False,
                "remaining_boxes": "[]",
                "passes": int(bool(boxes)),
            }
        )
    pd.DataFrame(rows).to_csv(out / "cleaning.csv", index=False)
    return out


@pytest.fixture(scope="module")
def multilabel_retrain(tmp_path_factory):
    """synth --multilabel (tiny) -> train tiny on two findings -> cleaned copy -> retrain with
    two seeds and the text-sensitivity test."""
    from xraydebug.data.synth_nih import NihSynthConfig, synthesize_nih
    from xraydebug.models.train import train

    root = tmp_path_factory.mktemp("multilabel")
    original = root / "nih"
    synthesize_nih(original, NihSynthConfig(n_train=120, n_test=60, size=128), workers=1)
    clean = hand_cleaned_copy(original, root / "nih-clean")
    recipe = TrainConfig(
        arch="tiny", epochs=6, batch_size=8, lr=1e-2, device="cpu", findings=FINDINGS
    )
    baseline = train(original, root / "baseline.pt", config=recipe, console=Console(quiet=True))
    result = retrain(
        clean,
        baseline.checkpoint,
        test_data=original,
        out=root / "after.pt",
        run_dir=root / "run",
        config=RetrainConfig(repeats=2, n_boot=100, device="cpu"),
        console=Console(quiet=True),
    )
    return result, root, baseline.checkpoint


def test_multilabel_retrain_compares_findings(multilabel_retrain):
    result, root, baseline = multilabel_retrain
    comparison = json.loads(result.json_path.read_text())
    assert comparison["multilabel"] is True and comparison["classes"] == list(FINDINGS)
    assert set(comparison["test_sets"]) == {"original", "cleaned"}
    before_meta, after_meta = read_checkpoint(baseline), read_checkpoint(result.checkpoint)
    # trained multi-label on the baseline's findings, stopping on AUROC, thresholds recorded
    assert after_meta["multilabel"] is True and tuple(after_meta["classes"]) == FINDINGS
    assert tuple(after_meta["train_config"]["findings"]) == FINDINGS
    assert after_meta["train_config"]["monitor"] == "auroc"
    assert len(after_meta["thresholds"]) == 2
    for name, test_set in comparison["test_sets"].items():
        assert test_set["n"] == 60, name
        for finding in FINDINGS:
            for side, meta in (("before", before_meta), ("after", after_meta)):
                row = test_set[side]["per_finding"][finding]
                assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
                k = FINDINGS.index(finding)
                assert row["threshold"] == pytest.approx(meta["thresholds"][k])  # its own
                lo, hi = test_set[side]["ci"]["per_finding"][finding]["auroc"]
                assert lo <= row["auroc"] <= hi
            diff = test_set["difference"]["per_finding"][finding]["auroc"]
            assert diff["ci"][0] <= diff["diff"] <= diff["ci"][1]
            assert "recall" in test_set["difference"]["per_finding"][finding]
        assert test_set["difference"]["macro_auroc"]["ci"] is not None
        # films with vs without detected text, per finding (the cleaning.csv's boxes)
        assert {r["finding"] for r in test_set["by_text"]} == set(FINDINGS)
        assert sum(r["n"] for r in test_set["by_text"] if r["finding"] == "Consolidation") == 60
        assert test_set["shortcut_check"]["gone"] in (True, False, None)
    table = pd.read_csv(result.csv_path)
    assert list(table.columns) == BEFORE_AFTER_COLUMNS + REPEAT_COLUMNS
    assert len(table) == 2 * (2 * 4 + 1)
    assert set(table["class"]) == {*FINDINGS, "all"}
    assert set(table["metric"]) == {*FINDING_METRIC_KEYS, "macro_auroc"}
    assert (table["n_seeds"] == 2).all()
    repeats = comparison["repeats"]
    assert (
        repeats["seeds"] == [0, 1] and "per_finding" in repeats["per_seed"][1]["original"]["after"]
    )
    assert repeats["summary"]["original"]["Infiltration/auroc"]["diff"]["sd"] is not None
    assert load_model(root / "run" / "models" / "before-seed1.pt").multilabel
    # the text-sensitivity test ran per finding on both models
    sensitivity = comparison["text_sensitivity"]
    assert sensitivity["after"]["multilabel"] and set(sensitivity["after"]["into"]) == set(FINDINGS)
    assert sensitivity["before"]["donors"] == "detected"
    predictions = pd.read_csv(root / "run" / "predictions_original.csv")
    assert len(predictions) == 60 and {"pred_before", "pred_after"} <= set(predictions.columns)
    html = result.report_path.read_text()
    assert_self_contained(html)
    assert "AUROC and recall per finding before and after cleaning" in html
    assert "macro AUROC" in html and "How often each finding is called" in html
    assert html.count('alt="Dot plot of AUROC and recall per finding') == 2  # both test sets
    rendered = Console(record=True, width=200)
    rendered.print(before_after_table(comparison, "cleaned"))
    text = rendered.export_text()
    assert "Infiltration" in text and "auroc" in text and "over 2 seeds" in text
    assert not any("precision" in line for line in text.splitlines() if "Infiltration" in line)


def test_cli_multilabel_retrain_reuses_and_prints_findings(multilabel_retrain, tmp_path):
    result, root, baseline = multilabel_retrain
    out = CliRunner().invoke(
        app,
        [
            "retrain",
            str(root / "nih-clean"),
            "--baseline",
            str(baseline),
            "--test",
            str(root / "nih"),
            "--out",
            str(result.checkpoint),
            "--run-dir",
            str(tmp_path / "run"),
            "--n-boot",
            "50",
            "--no-text-sensitivity",
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "reusing" in out.output and "Before / after cleaning" in out.output
    assert "macro_auroc" in out.output and "Consolidation" in out.output


def test_imported_multilabel_model_is_finetuned_multilabel(multilabel_retrain, tmp_path):
    """An imported TorchScript network with one sigmoid per finding fine-tunes with masked
    BCE on the same findings, stops on AUROC and gets thresholds of its own."""
    from tests.test_retrain import _embedded_file
    from xraydebug.models.foreign import ModelSpec, import_model

    _result, root, _baseline = multilabel_retrain
    script = _embedded_file("scripted", tmp_path / "net.ts")
    # the gray net has 3 outputs: a third finding the synthetic NIH layout also names
    findings = (*FINDINGS, "Effusion")
    spec = ModelSpec(
        classes=findings, multilabel=True, input_size=64, channels=1, mean=(0.5,), std=(0.25,)
    )
    baseline = tmp_path / "imported.pt"
    import_model(script, spec, baseline)
    retrained = retrain(
        root / "nih-clean",
        baseline,
        test_data=root / "nih",
        out=tmp_path / "after.pt",
        run_dir=tmp_path / "run",
        config=RetrainConfig(n_boot=50, device="cpu", text_sensitivity=False, finetune_epochs=2),
        console=Console(quiet=True),
        report=False,
    )
    meta = read_checkpoint(retrained.checkpoint)
    assert meta["multilabel"] is True and tuple(meta["classes"]) == findings
    assert tuple(meta["train_config"]["findings"]) == findings
    assert meta["train_config"]["monitor"] == "auroc" and len(meta["thresholds"]) == 3
    assert meta["history"][0]["val_auroc"] == meta["history"][0]["val_auroc"]  # not NaN
    comparison = retrained.comparison
    assert comparison["multilabel"] and set(
        comparison["test_sets"]["original"]["difference"]["per_finding"]
    ) == set(findings)
    # the imported model records no thresholds: both models are cut at 0.5, and it says so
    # (its own F1-best cut for one and a fixed one for the other would mix the rules)
    source = comparison["test_sets"]["original"]["threshold_source"]
    assert source["before"] == source["after"] == "0.5 for both models (one records none)"
