"""Multi-label findings end to end: metrics, training, evaluate, scan, text sensitivity."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score
from typer.testing import CliRunner

from xraydebug.cli import app
from xraydebug.data.synth_nih import NihSynthConfig, synthesize_nih
from xraydebug.errors import DatasetError
from xraydebug.models.checkpoint import load_model
from xraydebug.models.multilabel import (
    auroc_bootstrap,
    evaluate_multilabel,
    f1_thresholds,
    finding_aurocs,
    masked_bce,
)
from xraydebug.models.train import TrainConfig, train
from xraydebug.runfolder import load_masks

FINDINGS = ("Consolidation", "Infiltration")


def _random_targets(rng: np.random.Generator, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    targets = (rng.random((n, c)) < 0.3).astype(float)
    targets[rng.random((n, c)) < 0.1] = np.nan
    probs = np.round(np.clip(0.4 * np.nan_to_num(targets) + 0.6 * rng.random((n, c)), 0, 1), 2)
    return targets, probs  # rounded: many ties


def test_auroc_matches_sklearn_with_ties_and_unknowns() -> None:
    targets, probs = _random_targets(np.random.default_rng(0), 400, 4)
    ours = finding_aurocs(targets, probs)
    for k in range(4):
        known = ~np.isnan(targets[:, k])
        assert ours[k] == pytest.approx(roc_auc_score(targets[known, k], probs[known, k]))
    only_negatives = np.zeros((5, 1))
    assert np.isnan(finding_aurocs(only_negatives, np.random.default_rng(1).random((5, 1)))[0])


def test_auroc_bootstrap_resamples_patients() -> None:
    rng = np.random.default_rng(1)
    targets, probs = _random_targets(rng, 300, 2)
    groups = np.repeat([f"P{g:03d}" for g in range(100)], 3)  # codes follow sorted ids
    boot = auroc_bootstrap(targets, probs, groups, n_boot=400, seed=0)
    assert boot.shape == (400, 2)
    point = finding_aurocs(targets, probs)
    assert np.all(np.abs(np.nanmean(boot, 0) - point) < 0.02)
    # one replicate by hand: the same draw as the function's first replicate
    draws = np.random.default_rng(0).integers(0, 100, size=(1, 100))[0]
    rows = np.concatenate([np.flatnonzero(groups == f"P{g:03d}") for g in draws])
    known = ~np.isnan(targets[rows, 0])
    manual = roc_auc_score(targets[rows, 0][known], probs[rows, 0][known])
    assert boot[0, 0] == pytest.approx(manual)


def test_f1_thresholds_are_the_best_cut() -> None:
    targets, probs = _random_targets(np.random.default_rng(2), 200, 3)
    chosen = f1_thresholds(targets, probs)
    for k in range(3):
        known = ~np.isnan(targets[:, k])
        y, p = targets[known, k], probs[known, k]
        best = max(f1_score(y, p >= t) for t in np.unique(p))
        assert f1_score(y, p >= chosen[k]) == pytest.approx(best)


def test_masked_bce_ignores_unknown_cells() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    known = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, 0.5, 3.0]), torch.tensor([1.0, 0.0, 1.0])
    )
    assert masked_bce(logits, targets).item() == pytest.approx(known.item())


def test_six_films_by_hand() -> None:
    """AUROCs worked out by hand: finding A, positives {0.9, 0.4}, negatives {0.8, 0.3, 0.2,
    0.1}: of the 8 pairs 7 are ordered right -> 7/8; finding B has one unknown film and a tie:
    positives {0.6, 0.5}, negatives {0.5, 0.2, 0.1} -> (3 + 2.5) / 6."""
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, np.nan], [0, 0], [0, 1]], dtype=float)
    probs = np.array(
        [[0.9, 0.1], [0.8, 0.6], [0.4, 0.2], [0.3, 0.9], [0.2, 0.5], [0.1, 0.5]], dtype=float
    )
    metrics = evaluate_multilabel(targets, probs, ["A", "B"], np.array([0.35, 0.55]), n_boot=50)
    assert metrics["per_finding"]["A"]["auroc"] == pytest.approx(7 / 8)
    assert metrics["per_finding"]["B"]["auroc"] == pytest.approx(5.5 / 6)
    assert metrics["per_finding"]["B"]["n"] == 5
    # at 0.35, A is called on 0.9, 0.8, 0.4: 2 of 3 right, both positives found
    assert metrics["per_finding"]["A"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_finding"]["A"]["recall"] == 1.0
    assert metrics["macro_auroc"] == pytest.approx((7 / 8 + 5.5 / 6) / 2)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def nih_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic NIH-layout set (text tied to Infiltration in train) and a tiny multi-label
    model trained on its two findings."""
    root = tmp_path_factory.mktemp("nih")
    data = root / "data"
    synthesize_nih(data, NihSynthConfig(n_train=48, n_test=24, size=64, seed=1), workers=1)
    config = TrainConfig(
        arch="tiny",
        epochs=4,
        batch_size=8,
        lr=5e-3,
        low_res_share=0.0,
        device="cpu",
        findings=FINDINGS,
    )
    result = train(data, root / "ml.pt", config=config)
    return {"data": data, "model": result.checkpoint, "root": root}


def test_training_records_a_multilabel_model(nih_set) -> None:
    loaded = load_model(nih_set["model"])
    assert loaded.multilabel and loaded.activation == "sigmoid"
    assert loaded.classes == FINDINGS
    assert loaded.thresholds is not None and len(loaded.thresholds) == 2
    assert loaded.meta["train_config"]["monitor"] == "auroc"
    row = loaded.meta["history"][0]
    assert 0.0 <= row["val_auroc"] <= 1.0 and row["val_loss"] > 0
    card = Path(nih_set["model"]).with_suffix(".md").read_text()
    assert "| finding | AUROC | precision | recall | F1 (at 0.5) | positives |" in card
    assert "| Infiltration | " in card and "mean per-finding AUROC" in card


def test_findings_need_a_multilabel_layout(covidx_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(arch="tiny", epochs=1, device="cpu", findings=("Effusion",))
    with pytest.raises(DatasetError, match="multi-label layout"):
        train(covidx_dir, tmp_path / "m.pt", config=config)


def test_cli_evaluate_reports_per_finding_auroc(nih_set, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(nih_set["data"]), "--model", str(nih_set["model"]), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "finding" in result.output and "AUROC" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["multilabel"] and set(metrics["per_finding"]) == set(FINDINGS)
    assert metrics["threshold_source"].startswith("the model's")
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == [
        "path",
        "split",
        "label",
        "source",
        "pred",
        "prob_Consolidation",
        "prob_Infiltration",
    ]
    # the numbers are scikit-learn's on the same predictions
    truth = json.loads((nih_set["data"] / "ground_truth.json").read_text())
    for finding in FINDINGS:
        y = [finding in truth[p]["findings"] for p in predictions["path"]]
        expected = roc_auc_score(y, predictions[f"prob_{finding}"])
        assert metrics["per_finding"][finding]["auroc"] == pytest.approx(expected)
        low, high = metrics["per_finding"][finding]["auroc_ci"]
        assert low <= expected <= high
    assert set(metrics["per_source"]) <= {"AP", "PA"}


def test_a_softmax_model_is_refused_on_multilabel_data(tiny_model, nih_set, tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        ["evaluate", str(nih_set["data"]), "--model", str(tiny_model.checkpoint)],
    )
    assert result.exit_code == 1
    assert "has no finding 'normal'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_scan_explains_every_called_finding(nih_set, tmp_path: Path) -> None:
    out = tmp_path / "scan"
    args = ["scan", str(nih_set["data"]), "--model", str(nih_set["model"]), "--out", str(out)]
    fast = ["--mask-size", "8", "--iterations", "2", "--ig-steps", "3", "--no-text"]
    result = CliRunner().invoke(app, [*args, *fast, "--split", "test", "--limit", "6"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "scan.csv", keep_default_na=False)
    assert table["path"].nunique() == 6
    assert table["target"].isin(FINDINGS).all()
    assert not table.duplicated(["path", "target"]).any()
    loaded = load_model(nih_set["model"])
    for path, rows in table.groupby("path"):
        called = set(rows.iloc[0]["pred"].split("|")) - {"No Finding"}
        assert set(rows["target"]) == called or (not called and len(rows) == 1), path
    for row in table.itertuples():
        masks = load_masks(out, row.mask_file)
        assert FINDINGS[int(masks["target"])] == row.target
        assert row.mask_file.endswith(f".{row.target}.npz")
    assert loaded.multilabel
    # --target asks for one finding in every film; a rerun resumes every row
    one = tmp_path / "one"
    args = ["scan", str(nih_set["data"]), "--model", str(nih_set["model"]), "--out", str(one)]
    for _ in range(2):
        result = CliRunner().invoke(
            app, [*args, *fast, "--split", "test", "--limit", "4", "--target", "Infiltration"]
        )
        assert result.exit_code == 0, result.output
    table = pd.read_csv(one / "scan.csv", keep_default_na=False)
    assert len(table) == 4 and (table["target"] == "Infiltration").all()
    assert "Scanned 0 new image(s) (4 already done" in " ".join(result.output.split())
    report = (out / "report.html").read_text()
    assert "finding explained" in report or "by finding" in report


def test_scan_refuses_an_unknown_target(nih_set, tmp_path: Path) -> None:
    args = ["scan", str(nih_set["data"]), "--model", str(nih_set["model"])]
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "s"), "--no-text", "--target", "Effusion"]
    )
    assert result.exit_code == 1
    assert "Effusion" in result.output and "Consolidation" in result.output


def test_text_sensitivity_per_finding(nih_set, tmp_path: Path) -> None:
    from xraydebug.audit.text_sensitivity import TextSensitivityConfig, text_sensitivity

    truth = json.loads((nih_set["data"] / "ground_truth.json").read_text())
    boxes = {p: v["boxes"] for p, v in truth.items() if not p.startswith("_")}
    (result,) = text_sensitivity(
        nih_set["data"],
        nih_set["model"],
        tmp_path / "ts",
        boxes=boxes,
        config=TextSensitivityConfig(n_boot=50, device="cpu"),
    )
    summary = result.summary
    assert summary["multilabel"] and set(summary["into"]) == set(FINDINGS)
    assert summary["into_by_label"] == {} and set(summary["changed"]) == {"all"}
    for row in summary["into"].values():
        assert 0.0 <= row["text"] <= 1.0 and 0.0 <= row["placebo"] <= 1.0


def test_scan_with_text_shares_one_detection_per_film(nih_set, tmp_path: Path) -> None:
    from xraydebug.stages.scan import scan

    from .conftest import scan_config

    config = scan_config(
        mask_size=8, iterations=2, ig_steps=3, metric_steps=8, detector="craft", split="test"
    )
    config = replace(config, targets=FINDINGS, limit=3)
    table = scan(nih_set["data"], nih_set["model"], tmp_path / "scan", config=config).table
    assert len(table) == 6 and set(table["target"]) == set(FINDINGS)
    for _path, rows in table.groupby("path"):
        assert rows["boxes"].nunique() == 1 and rows["n_boxes"].nunique() == 1
        assert rows["mask_file"].nunique() == 2
    assert pd.to_numeric(table["mass_in_text"]).between(0, 1).all()


class _MeanToFindings(torch.nn.Module):
    """Logits of two findings from a film's mean: A rises with brightness, B falls with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([8 * mean, -8 * mean], dim=1)


def _six_films(tmp_path: Path) -> Path:
    """The six films of :func:`test_six_films_in_the_nih_layout_by_hand`, NIH layout."""
    from PIL import Image

    root = tmp_path / "nih"
    (root / "images_001" / "images").mkdir(parents=True)
    films = [(200, "A"), (180, "No Finding"), (160, "A|B"), (120, ""), (120, "B"), (60, "")]
    lines = []
    for k, (grey, found) in enumerate(films, start=1):
        name = f"{k:08d}_000.png"
        Image.fromarray(np.full((32, 32), grey, np.uint8)).save(root / "images_001/images" / name)
        label = {"A": "Atelectasis", "B": "Effusion", "A|B": "Atelectasis|Effusion"}.get(found)
        lines.append(f"{name},{label or 'No Finding'},0,{k},50,F,PA,32,32,0.1,0.1")
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    )
    (root / "Data_Entry_2017.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    (root / "test_list.txt").write_text("".join(f"{k:08d}_000.png\n" for k in range(1, 7)))
    (root / "train_val_list.txt").write_text("")
    return root


def _import_mean_model(out: Path, findings: tuple[str, str]) -> None:
    """:class:`_MeanToFindings` imported as a multi-label model naming ``findings``."""
    from xraydebug.models.foreign import ModelSpec, import_module

    spec = ModelSpec(classes=findings, input_size=32, channels=1, mean=(0.0,), std=(1.0,))
    import_module(_MeanToFindings(), spec, out, multilabel=True)


def test_six_films_in_the_nih_layout_by_hand(tmp_path: Path) -> None:
    """Six NIH-layout films of constant grey, scored by a model whose Atelectasis score
    rises with the grey level and whose Effusion score falls with it. By hand:

    film:         1    2    3    4    5    6
    grey:         200  180  160  120  120  60
    Atelectasis:  yes  -    yes  -    -    -
    Effusion:     -    -    yes  -    yes  -

    Atelectasis: film 1 scores above all four negatives (4 pairs), film 3 above films 4, 5, 6
    (3 pairs, below film 2): 7 of 8 pairs in order, AUROC 0.875. Effusion (scores in reverse
    grey order): film 3 above films 1, 2 (2 pairs); film 5 above films 1, 2 and tied with film
    4 (2.5 pairs); both below film 6: 4.5 of 8, AUROC 0.5625."""
    root = _six_films(tmp_path)
    _import_mean_model(tmp_path / "m.pt", ("Atelectasis", "Effusion"))
    out = tmp_path / "eval"
    args = ["evaluate", str(root), "--model", str(tmp_path / "m.pt"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["per_finding"]["Atelectasis"]["auroc"] == pytest.approx(0.875)
    assert metrics["per_finding"]["Effusion"]["auroc"] == pytest.approx(0.5625)
    assert metrics["threshold_source"].startswith("0.5")


def test_no_finding_as_a_finding_is_not_the_empty_set() -> None:
    """CheXpert's first observation is called "No Finding": a film with nothing present (or a
    model calling nothing) must not read as that finding."""
    from xraydebug.data.labels import NONE_PRESENT, findings_label, findings_matrix

    chexpert = ("No Finding", "Edema")
    assert findings_label((0.0, 0.0), chexpert) == NONE_PRESENT
    assert findings_label((1.0, 0.0), chexpert) == "No Finding"
    assert findings_label((0.0,), ("Edema",)) == "No Finding"  # NIH's spelling
    called = findings_matrix([NONE_PRESENT, "No Finding", "Edema"], chexpert)
    assert called.tolist() == [[False, False], [True, False], [False, True]]


def test_films_without_a_view_are_no_source_of_their_own() -> None:
    # every film with the finding lacks a view: no source is confounded with it
    targets = np.array([[1.0]] * 12 + [[0.0]] * 12)
    probs = np.linspace(0, 1, 24)[:, None]
    sources = np.array([""] * 12 + ["PA", "AP"] * 6, dtype=object)
    metrics = evaluate_multilabel(targets, probs, ["A"], np.array([0.5]), sources=sources)
    assert not [w for w in metrics["warnings"] if "source" in w], metrics["warnings"]
    assert metrics["per_source"]["(none)"]["n"] == 12


def test_scan_refuses_explain_label_for_a_multilabel_model(nih_set, tmp_path: Path) -> None:
    args = ["scan", str(nih_set["data"]), "--model", str(nih_set["model"]), "--no-text"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s"), "--explain", "label"])
    assert result.exit_code == 1 and "--explain label" in result.output
    assert not (tmp_path / "s" / "run.json").exists()


def test_a_model_naming_findings_the_data_lacks_is_scored_on_the_rest(tmp_path: Path) -> None:
    """A model trained elsewhere (here its second finding is CheXpert's "Lung Lesion", which
    NIH does not label) is refused in one line that names --findings, scored with it, and
    scanned as it is."""
    root = _six_films(tmp_path)
    model = tmp_path / "m.pt"
    _import_mean_model(model, ("Atelectasis", "Lung Lesion"))
    args = ["evaluate", str(root), "--model", str(model), "--out", str(tmp_path / "e")]
    refused = CliRunner().invoke(app, [*args, "--n-boot", "20"])
    assert refused.exit_code == 1 and "--findings" in refused.output
    assert "Lung Lesion" in refused.output and len(refused.output.strip().splitlines()) == 1
    scored = CliRunner().invoke(app, [*args, "--n-boot", "20", "--findings", "Atelectasis"])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert list(metrics["per_finding"]) == ["Atelectasis"]
    assert metrics["per_finding"]["Atelectasis"]["auroc"] == pytest.approx(0.875)
    scan_args = ["scan", str(root), "--model", str(model), "--out", str(tmp_path / "s")]
    fast = ["--mask-size", "4", "--iterations", "1", "--ig-steps", "2", "--no-text"]
    scanned = CliRunner().invoke(app, [*scan_args, *fast])
    assert scanned.exit_code == 0, scanned.output


def test_pleural_effusion_is_nihs_effusion(tmp_path: Path) -> None:
    from xraydebug.data.layouts import load_index

    root = _six_films(tmp_path)
    index = load_index(root, classes=("Pleural Effusion",))
    assert [r.findings for r in sorted(index.usable(), key=lambda r: r.path)] == [
        (0.0,),
        (0.0,),
        (1.0,),
        (0.0,),
        (1.0,),
        (0.0,),
    ]
