"""Before/after comparison: hand-built predictions, then a real retrain of the tiny model."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import tree_digest
from tests.test_report import assert_self_contained
from xraydebug.audit.compare import compare_predictions
from xraydebug.audit.retrain import (
    BEFORE_AFTER_COLUMNS,
    REPEAT_COLUMNS,
    RetrainConfig,
    _sensitivity_sentence,
    before_after_table,
    comparison_table,
    print_before_after,
    retrain,
    still_reacts,
    summarise_repeats,
)
from xraydebug.audit.shortcut_check import residual_shortcut_warnings, text_breakdown
from xraydebug.cli import app
from xraydebug.errors import DatasetError
from xraydebug.models.checkpoint import read_checkpoint

CLASSES = ("normal", "pneumonia", "COVID-19")


def _table(labels: list[str], preds: list[str], patients: list[str] | None = None) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "path": [f"test/{i}.png" for i in range(n)],
            "split": "test",
            "label": labels,
            "source": "site",
            "pred": preds,
            "patient_id": patients or [f"P{i}" for i in range(n)],
        }
    )


def test_compare_predictions_hand_built():
    labels = ["COVID-19"] * 4 + ["normal"] * 4 + ["pneumonia"] * 2
    # before: two COVID-19 missed, two normal called COVID-19 (the shortcut pattern)
    before = ["COVID-19", "COVID-19", "normal", "normal", "COVID-19", "COVID-19"]
    before += ["normal", "normal", "pneumonia", "pneumonia"]
    after = ["COVID-19"] * 4 + ["normal"] * 4 + ["pneumonia", "pneumonia"]
    result = compare_predictions(_table(labels, before), _table(labels, after), CLASSES, 200)
    covid_before = result["before"]["per_class"]["COVID-19"]
    assert covid_before["precision"] == pytest.approx(0.5)  # 2 of 4 called COVID-19
    assert covid_before["recall"] == pytest.approx(0.5)  # 2 of 4 found
    assert covid_before["support"] == 4
    diff = result["difference"]["per_class"]["COVID-19"]
    assert diff["recall"]["diff"] == pytest.approx(0.5)
    assert diff["precision"]["diff"] == pytest.approx(0.5)
    assert diff["recall"]["ci"][0] >= 0.0 and diff["recall"]["ci"][1] <= 1.0
    assert result["difference"]["accuracy"]["diff"] == pytest.approx(0.4)
    assert result["n"] == 10 and result["difference"]["unit"] == "patient"
    lo, hi = result["after"]["ci"]["per_class"]["COVID-19"]["recall"]
    assert lo == hi == 1.0  # perfect after: every resample gives 1
    # identical models: zero difference and a degenerate paired interval
    same = compare_predictions(_table(labels, before), _table(labels, before), CLASSES, 200)
    for cls in CLASSES:
        for metric in ("precision", "recall", "f1"):
            entry = same["difference"]["per_class"][cls][metric]
            assert entry["diff"] == 0.0 and entry["ci"] == [0.0, 0.0]


def test_compare_pairs_rows_by_path_and_groups_patients():
    labels = ["COVID-19", "normal", "COVID-19", "normal"]
    before = _table(labels, ["normal", "normal", "COVID-19", "COVID-19"], ["A", "A", "B", "B"])
    after = _table(labels, ["COVID-19", "normal", "COVID-19", "normal"], ["A", "A", "B", "B"])
    shuffled = after.iloc[::-1].reset_index(drop=True)
    a = compare_predictions(before, after, CLASSES, 100)
    b = compare_predictions(before, shuffled, CLASSES, 100)
    assert a["difference"] == b["difference"]
    assert a["before"]["ci"]["unit"] == "patient"


def test_summarise_repeats_and_table():
    def metrics(recall: float) -> dict:
        per_class = {
            c: {"precision": 0.5, "recall": recall, "f1": 0.5, "support": 4} for c in CLASSES
        }
        return {"accuracy": recall, "macro_f1": 0.5, "per_class": per_class}

    per_seed = [
        {"seed": s, "original": {"before": metrics(0.5), "after": metrics(r)}}
        for s, r in ((0, 0.7), (1, 0.9))
    ]
    summary = summarise_repeats(per_seed, CLASSES)
    stats = summary["original"]["COVID-19/recall"]
    assert stats["diff"]["mean"] == pytest.approx(0.3)
    assert stats["diff"]["sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert stats["diff"]["min"] == pytest.approx(0.2) and stats["diff"]["max"] == pytest.approx(0.4)
    assert "cleaned" not in summary


def test_text_breakdown_finds_a_surviving_shortcut():
    # 10 normal films with text, 10 without; after cleaning the model still calls the texty ones
    # COVID-19 (8 of 10) but only 1 of the text-free ones
    rows = []
    for i in range(20):
        text = i < 10
        rows.append(
            {
                "path": f"test/n{i}.png",
                "label": "normal",
                "pred_before": "COVID-19" if text else "normal",
                "pred_after": "COVID-19" if (text and i < 8) or i == 10 else "normal",
            }
        )
    merged = pd.DataFrame(rows)
    texty = {f"test/n{i}.png" for i in range(10)}
    breakdown = text_breakdown(merged, texty, CLASSES)
    with_text = next(r for r in breakdown if r["label"] == "normal" and r["text"])
    assert with_text["n"] == 10
    assert with_text["before"]["COVID-19"] == 1.0 and with_text["after"]["COVID-19"] == 0.8
    warnings = residual_shortcut_warnings(breakdown, "original")
    assert len(warnings) == 1 and "80% of normal images with detected text COVID-19" in warnings[0]
    # a model that ignores text gets no warning
    merged["pred_after"] = "normal"
    assert residual_shortcut_warnings(text_breakdown(merged, texty, CLASSES), "original") == []


@pytest.fixture(scope="module")
def retrained(tiny_model, tiny_covidx: Path, tmp_path_factory):
    """An identical copy of the data as the 'cleaned' set: retraining reproduces the baseline."""
    root = tmp_path_factory.mktemp("retrain")
    clean = root / "covidx-clean"
    shutil.copytree(tiny_covidx, clean)
    before = tree_digest(tiny_covidx)
    result = retrain(
        clean,
        tiny_model.checkpoint,
        test_data=tiny_covidx,
        out=root / "models" / "after.pt",
        run_dir=root / "run",
        config=RetrainConfig(n_boot=100, device="cpu"),
        console=Console(quiet=True),
    )
    assert tree_digest(tiny_covidx) == before
    return result, root, clean


def test_retrain_same_data_reproduces_baseline(retrained, tiny_model):
    result, root, _clean = retrained
    comparison = json.loads(result.json_path.read_text())
    assert set(comparison["test_sets"]) == {"original", "cleaned"}
    baseline_config = read_checkpoint(tiny_model.checkpoint)["train_config"]
    after_config = read_checkpoint(result.checkpoint)["train_config"]
    assert {k: v for k, v in after_config.items() if k != "device"} == {
        k: v for k, v in baseline_config.items() if k != "device"
    }
    for test_set in comparison["test_sets"].values():
        assert test_set["n"] == 18
        for cls in CLASSES:
            for metric in ("precision", "recall", "f1"):
                assert test_set["difference"]["per_class"][cls][metric]["diff"] == 0.0
    # the text-sensitivity test ran on both models (no cleaning.csv: the detector found no
    # text, so rendered markers were pasted); the same model reacts the same way twice
    sensitivity = comparison["text_sensitivity"]
    assert sensitivity["before"]["donors"] == "rendered"
    assert sensitivity["before"]["into"] == sensitivity["after"]["into"]
    assert (root / "run" / "text_sensitivity" / "after" / "text_sensitivity.json").exists()
    other = [w for w in comparison["warnings"] if w != sensitivity["sentence"]]
    assert other == []
    table = pd.read_csv(result.csv_path)
    assert list(table.columns) == BEFORE_AFTER_COLUMNS
    assert len(table) == 2 * (3 * 3 + 2)
    assert (table["diff"] == 0).all()
    assert (table["before_ci_low"] <= table["before"]).all()
    assert (table["before"] <= table["before_ci_high"]).all()
    predictions = pd.read_csv(root / "run" / "predictions_original.csv")
    assert (
        len(predictions) == 18 and (predictions["pred_before"] == predictions["pred_after"]).all()
    )
    assert result.report_path is not None and result.report_path.exists()
    html = result.report_path.read_text()
    assert_self_contained(html)
    assert "Does the model react to burned-in text?" in html
    assert "unchanged | text pasted | placebo" in html  # the example sheets, embedded


def test_retrain_rerun_reuses_finished_model(retrained, tiny_model, tiny_covidx: Path):
    result, root, clean = retrained
    mtime = result.checkpoint.stat().st_mtime_ns
    console = Console(record=True, width=200)
    again = retrain(
        clean,
        tiny_model.checkpoint,
        test_data=tiny_covidx,
        out=result.checkpoint,
        run_dir=root / "run",
        config=RetrainConfig(n_boot=100, device="cpu"),
        console=console,
        report=False,
    )
    assert "reusing" in console.export_text()
    assert result.checkpoint.stat().st_mtime_ns == mtime
    assert again.comparison["test_sets"] == result.comparison["test_sets"]


def test_retrain_repeats_report_seed_spread(tiny_model, tiny_covidx: Path, tmp_path: Path):
    clean = tmp_path / "clean"
    shutil.copytree(tiny_covidx, clean)
    result = retrain(
        clean,
        tiny_model.checkpoint,
        test_data=tiny_covidx,
        out=tmp_path / "after.pt",
        run_dir=tmp_path / "run",
        config=RetrainConfig(repeats=2, n_boot=50, device="cpu"),
        console=Console(quiet=True),
    )
    repeats = result.comparison["repeats"]
    assert repeats["seeds"] == [0, 1]
    assert (tmp_path / "run" / "models" / "before-seed1.pt").exists()
    assert (tmp_path / "run" / "models" / "after-seed1.pt").exists()
    stats = repeats["summary"]["original"]["COVID-19/recall"]
    assert stats["diff"]["mean"] == pytest.approx(0.0)  # same data on both sides, same seeds
    table = comparison_table(result.comparison)
    assert list(table.columns) == BEFORE_AFTER_COLUMNS + REPEAT_COLUMNS
    assert (table["n_seeds"] == 2).all()
    rendered = Console(record=True, width=200)
    rendered.print(before_after_table(result.comparison))
    assert "over 2 seeds" in rendered.export_text()
    _assert_text_sensitivity_per_seed(result, tmp_path / "run")


def _assert_text_sensitivity_per_seed(result, run: Path) -> None:
    """The text-sensitivity test ran on every seed's pair: one entry per seed, their spread in
    the JSON, the console output and the report; the detailed tables are seed 0's, labelled."""
    sensitivity = result.comparison["text_sensitivity"]
    assert sensitivity["seed"] == 0  # the detailed before/after summaries
    per_seed = sensitivity["per_seed"]
    assert [entry["seed"] for entry in per_seed] == [0, 1]
    # the seeds' models differ, so an entry filled from the wrong seed's pair would show
    assert per_seed[0]["after"]["into"] != per_seed[1]["after"]["into"]
    for entry in per_seed:  # the same recipe and seed on the same data: the same reaction
        assert set(entry["after"]["into"]) == set(CLASSES)
        assert entry["before"]["into"] == entry["after"]["into"]
        for side in ("before", "after"):  # each entry is its own seed's side, as written
            folder = side if entry["seed"] == 0 else f"{side}-seed{entry['seed']}"
            written = json.loads(
                (run / "text_sensitivity" / folder / "text_sensitivity.json").read_text()
            )
            assert {c: r["sensitivity"] for c, r in entry[side]["into"].items()} == {
                c: r["sensitivity"] for c, r in written["into"].items()
            }
    assert per_seed[0]["after"]["into"]["COVID-19"]["sensitivity"] == pytest.approx(
        sensitivity["after"]["into"]["COVID-19"]["sensitivity"]
    )
    assert (run / "text_sensitivity" / "after-seed1" / "text_sensitivity.json").exists()
    values = [entry["after"]["into"]["COVID-19"]["sensitivity"] for entry in per_seed]
    spread = sensitivity["summary"]["COVID-19"]["after"]
    assert spread["mean"] == pytest.approx(np.mean(values))
    assert (spread["min"], spread["max"]) == (min(values), max(values))
    assert sensitivity["summary"]["COVID-19"]["diff"]["mean"] == pytest.approx(0.0)
    assert re.search(
        r"^\d of 2 retrained models \(seeds 0, 1\) still react", sensitivity["sentence"]
    )
    assert "Seed 0: After retraining" in sensitivity["sentence"]
    assert "Over the 2 seeds, text minus placebo toward" in sensitivity["sentence"]
    printed = Console(record=True, width=200)
    print_before_after(result, printed)
    text = " ".join(printed.export_text().split())  # titles wrap at the table width
    assert "(before cleaning, seed 0)" in text and "(after cleaning, seed 0)" in text
    assert "Text minus placebo over 2 seeds (0, 1)" in text
    html = result.report_path.read_text()
    assert "Text sensitivity across 2 training seeds" in html
    assert "seed 0" in html


def test_retrain_refuses_to_overwrite_baseline(tiny_model, tiny_covidx: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="overwrite the baseline"):
        retrain(
            tiny_covidx,
            tiny_model.checkpoint,
            test_data=tiny_covidx,
            out=tiny_model.checkpoint,
            run_dir=tmp_path / "run",
            console=Console(quiet=True),
        )


def test_cli_retrain_and_report(retrained, tiny_model, tiny_covidx: Path, tmp_path: Path):
    result, root, clean = retrained
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "retrain",
            str(clean),
            "--baseline",
            str(tiny_model.checkpoint),
            "--test",
            str(tiny_covidx),
            "--out",
            str(result.checkpoint),
            "--run-dir",
            str(root / "run"),
            "--n-boot",
            "50",
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "Before / after cleaning" in out.output and "report.html" in out.output
    rebuilt = runner.invoke(
        app, ["report", str(root / "run"), "--out", str(tmp_path / "r.html"), "--show-ids"]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (tmp_path / "r.html").read_text().count("Before and after cleaning") == 1
    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 1 and "holds no scan.csv" in missing.output


def test_predict_records_many_matches_single_model_runs(tiny_model, tiny_covidx: Path):
    import dataclasses

    import torch

    from xraydebug.data.layouts import load_index
    from xraydebug.models.checkpoint import load_model
    from xraydebug.models.evaluate import predict_records, predict_records_many

    loaded = load_model(tiny_model.checkpoint)
    index = load_index(tiny_covidx, classes=loaded.classes)
    records = index.usable("test")
    cpu = torch.device("cpu")
    single, _ = predict_records(loaded, index.root, records, cpu)
    (first, second), skipped = predict_records_many([loaded, loaded], index.root, records, cpu)
    assert skipped == [] and len(single) == 18
    pd.testing.assert_frame_equal(first, single)
    pd.testing.assert_frame_equal(second, single)
    other = dataclasses.replace(
        loaded, preprocessing=dataclasses.replace(loaded.preprocessing, crop_top=0.1)
    )
    with pytest.raises(ValueError, match="preprocessing differ"):
        predict_records_many([loaded, other], index.root, records, cpu)


def _breakdown(normal_with: float, normal_without: float) -> list[dict]:
    classes = ("normal", "COVID-19")

    def row(label: str, text: bool, covid: float, n: int = 20) -> dict:
        other = "normal" if label == "COVID-19" else label
        shares = {c: 0.0 for c in classes} | {"COVID-19": covid, other: 1.0 - covid}
        return {"label": label, "text": text, "n": n, "before": shares, "after": shares}

    return [
        row("normal", True, normal_with),
        row("normal", False, normal_without),
        row("COVID-19", True, 1.0),
        row("COVID-19", False, 1.0),
    ]


def test_shortcut_check_says_whether_text_still_pushes_to_a_class():
    from xraydebug.audit.shortcut_check import shortcut_check

    numpy_shares = json.loads(json.dumps(_breakdown(0.05, 0.04)))
    for row in numpy_shares:  # pandas hands the shares over as numpy floats
        row["after"] = {k: np.float64(v) for k, v in row["after"].items()}
    gone = shortcut_check(numpy_shares)
    assert json.loads(json.dumps(gone))["gone"] is True  # a JSON boolean, not "True"
    assert gone["gone"] is True and gone["sentence"].startswith("The text shortcut is gone")
    assert abs(gone["max_gap_after"] - 0.01) < 1e-9
    left = shortcut_check(_breakdown(0.76, 0.11))
    assert left["gone"] is False and "76%" in left["sentence"] and "11%" in left["sentence"]
    assert left["worst"] == {
        "label": "normal",
        "class": "COVID-19",
        "with_text": 0.76,
        "without_text": 0.11,
    }
    assert shortcut_check(_breakdown(0.9, 0.1)[:0])["gone"] is None


@pytest.fixture(scope="module")
def cleaned_retrain(tmp_path_factory):
    """A baseline trained on a set with a planted marker shortcut (every COVID-19 training
    film carries it, no other), and the same set with every marker removed as the cleaned
    copy: before and after must differ, in a known direction."""
    from dataclasses import replace as with_

    from tests.conftest import TINY_TRAIN
    from tests.test_text_sensitivity import shortcut_set
    from xraydebug.models.train import train

    root = tmp_path_factory.mktemp("wiring")
    # classes barely apart by brightness: the marker is the easy cue, and the baseline takes it
    levels = (93, 90, 87)
    original = shortcut_set(root / "original", {"COVID-19": 1.0}, levels=levels)
    clean = shortcut_set(root / "clean", {"COVID-19": 1.0}, draw=False, levels=levels)
    shutil.copy(original / "boxes.csv", clean / "cleaning.csv")  # what clean found and removed
    recipe = with_(TINY_TRAIN, epochs=12, lr=5e-3, augment=False)
    baseline = train(original, root / "baseline.pt", config=recipe, console=Console(quiet=True))
    result = retrain(
        clean,
        baseline.checkpoint,
        test_data=original,
        out=root / "after.pt",
        run_dir=root / "run",
        config=RetrainConfig(n_boot=100, device="cpu"),
        console=Console(quiet=True),
        report=False,
    )
    return result, original, clean


def test_retrain_wiring_before_is_the_baseline_after_is_trained_on_the_cleaned_copy(
    cleaned_retrain,
):
    result, original, clean = cleaned_retrain
    comparison = result.comparison
    by_text = comparison["test_sets"]["original"]["by_text"]

    def covid_gap(side: str) -> float:
        """Share of non-COVID films called COVID-19 with the marker minus without."""
        share = {}
        for marked in (True, False):
            rows = [r for r in by_text if r["label"] != "COVID-19" and r["text"] == marked]
            share[marked] = sum(r[side]["COVID-19"] * r["n"] for r in rows) / sum(
                r["n"] for r in rows
            )
        return share[True] - share[False]

    # before: the baseline reads the marker; after: trained without it, it does not
    # (swapped checkpoints, the baseline scored twice or training on the original data
    # would all leave the gaps equal or reversed)
    assert covid_gap("before") >= 0.3, by_text
    assert covid_gap("after") <= covid_gap("before") - 0.3, by_text
    sensitivity = comparison["text_sensitivity"]
    before, after = (sensitivity[side]["into"]["COVID-19"] for side in ("before", "after"))
    assert before["ci"][0] > 0 and after["sensitivity"] <= before["sensitivity"] - 0.2
    # the cleaned test set is the cleaned copy, not the original scored twice: the baseline
    # calls fewer of its non-COVID films COVID-19 there
    by_set = {
        name: sum(
            r["before"]["COVID-19"] * r["n"] for r in t["by_text"] if r["label"] != "COVID-19"
        )
        for name, t in comparison["test_sets"].items()
    }
    assert by_set["cleaned"] < by_set["original"], by_set
    assert Path(comparison["data"]["cleaned"]) == clean.resolve()
    assert comparison["machine"]["cpu_capability"] and sensitivity["after"]["machine"]["cpu"]
    assert read_checkpoint(result.checkpoint)["data"] == str(clean)
    assert read_checkpoint(comparison["baseline"]["path"])["data"] == str(original)


# --- imported baselines: fine-tuned on the cleaned data ----------------------------------------


class _GrayNet(torch.nn.Module):
    """A small gray CNN with BatchNorm, as a team might script or export it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3, stride=2)
        self.bn = torch.nn.BatchNorm2d(6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(x.mean(dim=(2, 3)))


GRAY_SPEC = {"input_size": 64, "channels": 1, "mean": (0.45,), "std": (0.2,)}


def _embedded_file(kind: str, path: Path) -> Path:
    """The gray net saved as ``kind``: scripted, traced, frozen TorchScript, torch.export
    program or ONNX."""
    torch.manual_seed(0)
    net = _GrayNet().eval()
    example = torch.randn(2, 1, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "scripted":
            torch.jit.save(torch.jit.script(net), path)
        elif kind == "traced":
            torch.jit.save(torch.jit.trace(net, example), path)
        elif kind == "frozen":
            torch.jit.save(torch.jit.freeze(torch.jit.script(net)), path)
        elif kind == "exported":
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, path)
        else:
            torch.onnx.export(
                net,
                (example,),
                path,
                input_names=["x"],
                dynamic_axes={"x": {0: "batch"}},
                dynamo=False,
            )
    return path


def _import_file(path: Path, out: Path, **spec) -> Path:
    from xraydebug.models.foreign import ModelSpec, import_model

    import_model(path, ModelSpec(classes=CLASSES, **{**GRAY_SPEC, **spec}), out)
    return out


@pytest.fixture(scope="module")
def imported_resnet(tmp_path_factory) -> Path:
    """A torchvision ResNet-18 state_dict imported at 64 px with its own mean and std."""
    import torchvision

    from xraydebug.models.foreign import ModelSpec, import_module

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    spec = ModelSpec(
        classes=CLASSES,
        arch="torchvision:resnet18",
        input_size=64,
        mean=(0.4, 0.42, 0.44),
        std=(0.3, 0.31, 0.32),
    )
    out = tmp_path_factory.mktemp("imported") / "resnet.pt"
    import_module(net, spec, out)
    return out


def _finetune_twice(baseline: Path, data: Path, tmp_path: Path):
    """``retrain`` of an imported ``baseline`` on an unchanged copy of ``data``: two
    fine-tuning epochs, no text-sensitivity test, no report."""
    clean = tmp_path / "clean"
    shutil.copytree(data, clean)
    return retrain(
        clean,
        baseline,
        test_data=data,
        out=tmp_path / "after.pt",
        run_dir=tmp_path / "run",
        config=RetrainConfig(n_boot=50, device="cpu", text_sensitivity=False, finetune_epochs=2),
        console=Console(quiet=True),
        report=False,
    )


def test_retrain_imported_torchvision_model_keeps_its_preprocessing(
    imported_resnet: Path, tiny_covidx: Path, tmp_path: Path
):
    from xraydebug.models.architectures import get_arch

    result = _finetune_twice(imported_resnet, tiny_covidx, tmp_path)
    before, after = read_checkpoint(imported_resnet), read_checkpoint(result.checkpoint)
    assert after["arch"] == "torchvision:resnet18" and after["preprocessing"] == {
        "input_size": 64,
        "in_channels": 3,
        "mean": [0.4, 0.42, 0.44],
        "std": [0.3, 0.31, 0.32],
        "crop_top": 0.0,
    }
    assert after["preprocessing"] == before["preprocessing"]
    # the arch's fine-tuning recipe, from the baseline's own weights
    recipe = get_arch("torchvision:resnet18").finetune_recipe
    assert after["train_config"]["lr"] == recipe.lr and after["train_config"]["epochs"] == 2
    assert after["init_weights"] == str(imported_resnet)
    assert "epochs 2 (set by you)" in after["recipe"]
    assert "lr 1e-05 (torchvision:resnet18's fine-tuning recipe)" in after["recipe"]
    assert after["finetuned_from"]["sha256"] == result.comparison["baseline"]["sha256"]
    assert after["imported"] == before["imported"]
    changed = [
        k
        for k, v in after["state_dict"].items()
        if v.is_floating_point() and not torch.equal(v, before["state_dict"][k])
    ]
    assert changed  # fine-tuned: weights moved from the baseline's
    assert result.comparison["baseline"]["imported"]["format"] == "module"
    assert result.comparison["retrained"]["finetuned"]["in_place"] is None
    assert any("was imported" in w for w in result.warnings)
    assert set(result.comparison["test_sets"]) == {"original", "cleaned"}


@pytest.mark.parametrize(("kind", "batchnorm"), [("scripted", "train"), ("exported", "eval")])
def test_retrain_embedded_model_is_finetuned_in_place(
    kind: str, batchnorm: str, tiny_covidx: Path, tmp_path: Path
):
    from xraydebug.models.checkpoint import load_model

    suffix = ".pt2" if kind == "exported" else ".ts"
    baseline = _import_file(_embedded_file(kind, tmp_path / f"net{suffix}"), tmp_path / "b.pt")
    result = _finetune_twice(baseline, tiny_covidx, tmp_path)
    before_payload, after_payload = read_checkpoint(baseline), read_checkpoint(result.checkpoint)
    # the file is kept whole; the fine-tuned weights travel beside it
    assert torch.equal(after_payload["embedded"]["data"], before_payload["embedded"]["data"])
    assert after_payload["state_dict"] and not before_payload["state_dict"]
    assert after_payload["preprocessing"] == before_payload["preprocessing"]
    probe = result.comparison["retrained"]["finetuned"]["in_place"]
    assert probe["batchnorm"] == batchnorm and after_payload["finetune"] == probe
    before, after = load_model(baseline), load_model(result.checkpoint)
    weights_before, weights_after = before.model.state_dict(), after.model.state_dict()
    assert weights_after.keys() == weights_before.keys()
    assert not torch.equal(weights_after["inner.conv.weight"], weights_before["inner.conv.weight"])
    stats_moved = not torch.equal(
        weights_after["inner.bn.running_mean"], weights_before["inner.bn.running_mean"]
    )
    assert stats_moved == (batchnorm == "train")
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(before.model(x), after.model(x))
        # the reloaded module is the fine-tuned one: the checkpoint's weights were applied
        reloaded = load_model(result.checkpoint)
        assert torch.equal(reloaded.model(x), after.model(x))


def test_retrain_finetunes_an_onnx_model_in_place(tiny_covidx: Path, tmp_path: Path):
    """An ONNX graph's learned weights are parameters of xraydebug's executor: fine-tuned in
    place, kept beside the file, applied when the checkpoint is loaded."""
    from xraydebug.models.checkpoint import load_model

    baseline = _import_file(_embedded_file("onnx", tmp_path / "net.onnx"), tmp_path / "b.pt")
    result = _finetune_twice(baseline, tiny_covidx, tmp_path)
    payload = read_checkpoint(result.checkpoint)
    assert payload["embedded"]["format"] == "onnx" and payload["state_dict"]
    before, after = load_model(baseline), load_model(result.checkpoint)
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(before.model(x), after.model(x))
        assert torch.equal(load_model(result.checkpoint).model(x), after.model(x))


def test_retrain_refuses_an_embedded_model_that_cannot_train(tiny_covidx: Path, tmp_path: Path):
    kind = "frozen"
    file = _embedded_file(kind, tmp_path / "net.ts")
    baseline = _import_file(file, tmp_path / "b.pt")
    out = CliRunner().invoke(
        app,
        [
            "retrain",
            str(tiny_covidx),
            "--baseline",
            str(baseline),
            "--test",
            str(tiny_covidx),
            "--run-dir",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    assert "this TorchScript model's parameters cannot be trained here" in lines[0]
    assert "constants" in lines[0] and "--arch torchvision:NAME" in lines[0]
    assert not (tmp_path / "b-clean.pt").exists()


def test_retrain_refuses_repeats_and_other_data_for_imported(
    imported_resnet: Path, tiny_covidx: Path, tmp_path: Path
):
    runner = CliRunner()
    args = ["retrain", str(tiny_covidx), "--baseline", str(imported_resnet)]
    args += ["--test", str(tiny_covidx), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    out = runner.invoke(app, [*args, "--repeats", "2"])
    assert out.exit_code == 1
    assert len(out.output.strip().splitlines()) == 1, out.output
    assert "--repeats 2" in out.output and "was imported" in out.output
    # a multi-label baseline on single-label data: one line, before any training
    multi = _import_file(
        _embedded_file("scripted", tmp_path / "net.ts"), tmp_path / "m.pt", multilabel=True
    )
    with pytest.raises(DatasetError, match=r"is multi-label .* but the covidx layout"):
        retrain(
            tiny_covidx,
            multi,
            test_data=tiny_covidx,
            out=tmp_path / "after.pt",
            run_dir=tmp_path / "run",
            config=RetrainConfig(device="cpu"),
            console=Console(quiet=True),
        )


def _side(reacts: bool, worst: str, covid: float, pneumonia: float) -> dict:
    into = {"COVID-19": covid, "pneumonia": pneumonia}
    return {
        "reacts": reacts,
        "worst_class": worst,
        "into": {c: {"sensitivity": v, "ci": [v - 0.05, v + 0.05]} for c, v in into.items()},
    }


def test_sensitivity_sentence_leads_with_the_seeds_that_still_react() -> None:
    """Seed 0's retrained model no longer reacts, seed 1's does (toward pneumonia): the
    sentence must not read as all clear, and its spread is toward seed 1's class."""
    before = _side(True, "COVID-19", 0.60, 0.01)
    per_seed = [
        {"seed": 0, "before": before, "after": _side(False, "COVID-19", 0.01, 0.02)},
        {"seed": 1, "before": before, "after": _side(True, "pneumonia", 0.00, 0.30)},
    ]
    spread = {"mean": 0.16, "sd": 0.2, "min": 0.02, "max": 0.30}
    summary = {
        c: {"before": spread, "after": spread, "diff": spread} for c in ("COVID-19", "pneumonia")
    }
    record = {"seed": 0, "before": before, "after": per_seed[0]["after"], "per_seed": per_seed}
    sentence = _sensitivity_sentence({**record, "summary": summary})
    assert sentence.startswith("1 of 2 retrained models (seeds 0, 1) still react")
    assert "Seed 0: After retraining the model no longer reacts" in sentence
    assert sentence.endswith(
        "toward pneumonia: before +16% ± 20% (+2% .. +30%), after +16% ± 20% (+2% .. +30%)."
    )
    assert still_reacts({**record, "summary": summary})
