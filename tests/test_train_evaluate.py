from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import TINY_TRAIN
from xraydebug.cli import app
from xraydebug.errors import CheckpointError
from xraydebug.models import train as train_module
from xraydebug.models.checkpoint import load_model, read_checkpoint
from xraydebug.models.evaluate import EvaluateConfig, evaluate
from xraydebug.models.train import TrainConfig, class_weight_tensor, train

FAST = TINY_TRAIN


@pytest.fixture
def trained(tiny_model):
    return tiny_model


def test_checkpoint_and_card(trained):
    payload = read_checkpoint(trained.checkpoint)
    assert payload["arch"] == "tiny"
    assert payload["classes"] == ["normal", "pneumonia", "COVID-19"]
    assert payload["train_config"]["lr"] == FAST.lr
    assert payload["data_fingerprint"]["n_images"] + payload["n_val"] == 36
    assert len(payload["history"]) == FAST.epochs
    card = json.loads(trained.card_json.read_text())
    assert card["best_epoch"] == trained.best_epoch
    assert "| COVID-19 |" in trained.card_md.read_text()
    assert not any(p.name.endswith(".resume.pt") for p in trained.checkpoint.parent.iterdir())


def test_load_model_round_trip(trained):
    loaded = load_model(trained.checkpoint)
    again = load_model(trained.checkpoint)
    x = torch.rand(2, 1, loaded.preprocessing.input_size, loaded.preprocessing.input_size)
    with torch.no_grad():
        a = loaded.model(loaded.preprocessing.normalize(x))
        b = again.model(again.preprocessing.normalize(x))
    assert torch.equal(a, b)
    assert not loaded.model.training
    assert len(loaded.sha256) == 64


def test_bad_checkpoints(tmp_path: Path, trained):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(trained.checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not an xraydebug checkpoint"):
        load_model(foreign)


def test_evaluate_writes_contract_files(trained, tiny_covidx: Path, tmp_path: Path):
    result = evaluate(
        tiny_covidx,
        trained.checkpoint,
        "test",
        tmp_path / "eval",
        config=EvaluateConfig(n_boot=50, device="cpu"),
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "per_source", "ci"):
        assert key in metrics
    assert set(metrics["per_class"]["COVID-19"]) >= {"precision", "recall", "f1", "support"}
    assert metrics["per_class"]["COVID-19"]["support"] == 6
    table = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert list(table.columns) == [
        "path",
        "split",
        "label",
        "source",
        "pred",
        "prob_normal",
        "prob_pneumonia",
        "prob_COVID-19",
    ]
    assert len(table) == 18 and result.metrics["n"] == 18
    assert table.filter(like="prob_").sum(axis=1).round(4).eq(1).all()


def test_training_learns_the_tiny_task(trained):
    assert trained.val_metrics["accuracy"] >= 0.6


def test_deterministic_and_resumable(tiny_covidx: Path, tmp_path: Path, monkeypatch):
    config = TrainConfig(arch="tiny", epochs=3, batch_size=8, lr=3e-3, device="cpu")
    reference = train(tiny_covidx, tmp_path / "a.pt", config=config)
    real = train_module.validation_metrics
    calls = {"n": 0}

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "validation_metrics", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_covidx, tmp_path / "b.pt", config=config)
    assert (tmp_path / ".b.resume.pt").exists()
    monkeypatch.setattr(train_module, "validation_metrics", real)
    resumed = train(tiny_covidx, tmp_path / "b.pt", config=config)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a = read_checkpoint(reference.checkpoint)["state_dict"]
    b = read_checkpoint(resumed.checkpoint)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in reference.history] == [
        h["train_loss"] for h in resumed.history
    ]


def test_a_resume_file_of_other_init_weights_is_ignored(
    tiny_covidx: Path, tmp_path: Path, monkeypatch
):
    """The resume check once compared config and data only: a run interrupted while
    fine-tuning weights A continued when restarted from weights B."""
    from rich.console import Console

    config = TrainConfig(arch="tiny", epochs=3, batch_size=8, device="cpu")
    a = train(tiny_covidx, tmp_path / "a.pt", config=config).checkpoint
    b = train(tiny_covidx, tmp_path / "b.pt", config=replace(config, seed=1)).checkpoint
    real = train_module.validation_metrics
    calls = {"n": 0}

    def interrupt_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "validation_metrics", interrupt_on_second)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_covidx, tmp_path / "c.pt", config=config, init_weights=a)
    monkeypatch.setattr(train_module, "validation_metrics", real)
    console = Console(record=True, width=300)
    train(tiny_covidx, tmp_path / "c.pt", config=config, init_weights=b, console=console)
    text = console.export_text()
    assert "Resuming" not in text and "Ignoring" in text


def test_class_weights():
    labels = torch.tensor([0, 0, 0, 1, 2])
    auto = class_weight_tensor("auto", labels, 3)
    assert auto[0] < auto[1] and torch.isclose(auto.mean(), torch.tensor(1.0))
    assert class_weight_tensor("none", labels, 3) is None
    assert class_weight_tensor("1,1,3", labels, 3).tolist() == [1, 1, 3]
    with pytest.raises(ValueError, match="3 positive numbers"):
        class_weight_tensor("1,2", labels, 3)


def test_cli_train_evaluate(tiny_covidx: Path, tmp_path: Path):
    runner = CliRunner()
    ckpt = tmp_path / "m.pt"
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_covidx),
            "--arch",
            "tiny",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(ckpt),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Checkpoint" in result.output and ckpt.exists()
    # unset settings come from tiny's recipe, and the run says which came from where
    recipe = "epochs 2 (set by you), batch_size 8 (set by you), lr 0.01 (tiny's recipe)"
    assert recipe in " ".join(result.output.split())
    assert read_checkpoint(ckpt)["train_config"]["lr"] == 0.01
    assert "- Recipe: epochs 2 (set by you)" in ckpt.with_suffix(".md").read_text()
    capability = torch.backends.cpu.get_cpu_capability()
    assert f"torch CPU capability {capability}" in ckpt.with_suffix(".md").read_text()
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tiny_covidx),
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "ev"),
            "--n-boot",
            "20",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "COVID-19" in result.output and (tmp_path / "ev" / "metrics.json").exists()
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["machine"]["cpu_capability"] == capability and saved["machine"]["cpu"]
    bad = runner.invoke(app, ["train", str(tiny_covidx), "--arch", "resnet9000"])
    assert bad.exit_code == 1 and "covidnext" in bad.output
    missing = runner.invoke(app, ["evaluate", str(tiny_covidx), "--model", str(tmp_path / "x.pt")])
    assert missing.exit_code == 1 and "x.pt: does not exist" in missing.output


def test_recipes_per_architecture():
    assert TrainConfig(arch="small").resolved().lr == 1e-3
    assert TrainConfig(arch="small").resolved().batch_size == 16
    assert TrainConfig(arch="small", lr=5e-4).resolved().lr == 5e-4  # an override wins
    assert TrainConfig(arch="covidnext").resolved().lr == 1e-4
    assert TrainConfig(arch="tiny", epochs=3).resolved().epochs == 3
    lines = TrainConfig(arch="small", lr=5e-4).recipe_lines()
    assert lines[2] == "lr 0.0005 (set by you)" and lines[1] == "batch_size 16 (small's recipe)"


def test_an_older_checkpoint_is_repeated_with_its_own_settings():
    """Settings a checkpoint predates are what that run did (constant lr, full size, macro-F1),
    not today's recipe: retrain repeats the baseline, not a different run."""
    from xraydebug.audit.retrain import baseline_train_config

    old = {"train_config": {"arch": "small", "epochs": 30, "batch_size": 16, "lr": 1e-3}}
    config = baseline_train_config(old, "cpu").resolved()
    assert config.schedule == "constant" and config.low_res_share == 0.0
    assert config.monitor == "macro_f1" and config.smoothing == 0.0 and config.epochs == 30
