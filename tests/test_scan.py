from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from xraydebug.cli import app
from xraydebug.errors import DatasetError
from xraydebug.runfolder import SCAN_COLUMNS, load_masks
from xraydebug.stages.scan import ScanWorker, parse_shard, scan

from .conftest import scan_config

FAST = dict(
    mask_size=8,
    iterations=2,
    ig_steps=3,
    metric_steps=8,
    batch_size=4,
    device="cpu",
    text=False,
)


def test_scan_writes_contract_outputs(tiny_model, tiny_covidx: Path, tmp_path: Path):
    result = scan(
        tiny_covidx,
        tiny_model.checkpoint,
        tmp_path / "scan",
        config=scan_config(split="test", **FAST),
    )
    table = pd.read_csv(tmp_path / "scan" / "scan.csv", keep_default_na=False)
    assert list(table.columns) == SCAN_COLUMNS
    assert len(table) == 18 and table["path"].is_unique
    assert (table["status"] == "ok").all()
    assert table["pred"].isin(["normal", "pneumonia", "COVID-19"]).all()
    assert table["deletion_auc"].between(0, 1).all() and table["insertion_auc"].between(0, 1).all()
    assert table["insertion_auc"].mean() > table["deletion_auc"].mean()
    masks = load_masks(tmp_path / "scan", table["mask_file"][0])
    assert masks["deletion"].shape == (8, 8) and masks["insertion"].shape == (8, 8)
    assert masks["insertion"].min() >= 0 and masks["insertion"].max() <= 1
    run = json.loads((tmp_path / "scan" / "run.json").read_text())
    assert run["model_sha256"] == result.run["model_sha256"] and run["images_per_second"] > 0
    assert run["config"]["saliency"]["settings"]["mask_size"] == 8 and "torch" in run["versions"]
    assert run["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert run["machine"]["cpu"] and "native_bf16" in run["machine"]


def test_scan_resumes_after_interruption(
    tiny_model, tiny_covidx: Path, tmp_path: Path, monkeypatch
):
    out = tmp_path / "scan"
    real = ScanWorker._explain_chunk
    calls = {"n": 0}

    def die_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ScanWorker, "_explain_chunk", die_on_third)
    config = scan_config(split="test", **FAST)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny_covidx, tiny_model.checkpoint, out, config=config)
    partial = pd.read_csv(out / "scan.csv")
    assert len(partial) == 8  # two finished chunks of 4, nothing half-written
    monkeypatch.setattr(ScanWorker, "_explain_chunk", real)
    result = scan(tiny_covidx, tiny_model.checkpoint, out, config=config)
    assert result.n_resumed == 8 and result.n_new == 10
    table = pd.read_csv(out / "scan.csv")
    assert len(table) == 18 and table["path"].is_unique
    again = scan(tiny_covidx, tiny_model.checkpoint, out, config=config)
    assert again.n_new == 0
    with pytest.raises(DatasetError, match="other settings or another model"):
        scan(
            tiny_covidx,
            tiny_model.checkpoint,
            out,
            config=scan_config(split="test", **{**FAST, "mask_size": 4}),
        )


def test_shards_split_the_dataset(tiny_model, tiny_covidx: Path, tmp_path: Path):
    paths = []
    for i in range(2):
        result = scan(
            tiny_covidx,
            tiny_model.checkpoint,
            tmp_path / f"s{i}",
            config=scan_config(shard=(i, 2), split="test", **FAST),
        )
        paths.append(set(result.table["path"]))
    assert not paths[0] & paths[1] and len(paths[0] | paths[1]) == 18


def test_bad_images_become_error_rows(tiny_model, tiny_covidx: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(tiny_covidx, data)
    (data / "test" / "test_normal_0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with open(data / "test.txt", "a") as handle:
        handle.write("PX missing.png normal site-a\nPY test_normal_1.png cholera\n")
    result = scan(
        data, tiny_model.checkpoint, tmp_path / "scan", config=scan_config(split="test", **FAST)
    )
    table = result.table.set_index("path")
    assert table.loc["test/test_normal_0.png", "status"] == "error"
    assert table.loc["test/missing.png", "error"] == "file not found"
    assert (table["status"] == "ok").sum() == 16
    assert len(result.errors) == 3


def test_scan_refuses_output_inside_data(tiny_model, tiny_covidx: Path):
    with pytest.raises(ValueError, match="inside the input dataset"):
        scan(tiny_covidx, tiny_model.checkpoint, tiny_covidx / "scan", config=scan_config(**FAST))


def test_config_validation():
    with pytest.raises(ValueError, match="valid names"):
        scan_config(method="lime")
    with pytest.raises(ValueError, match="shard"):
        scan_config(shard=(2, 2))
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("x")


def test_cli_scan(tiny_model, tiny_covidx: Path, tmp_path: Path):
    out = tmp_path / "scan"
    args = [
        "scan",
        str(tiny_covidx),
        "--model",
        str(tiny_model.checkpoint),
        "--out",
        str(out),
        "--mask-size",
        "8",
        "--iterations",
        "2",
        "--ig-steps",
        "3",
        "--limit",
        "3",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "scan.csv" in result.output
    table = pd.read_csv(out / "scan.csv")
    assert len(table) == 3 and table["n_boxes"].notna().all()  # text detection ran
    assert np.isfinite(pd.read_csv(out / "scan.csv")["insertion_auc"]).all()
    bad = CliRunner().invoke(app, [*args[:-2], "--method", "nope"])
    assert bad.exit_code == 1 and "igospp" in bad.output


def test_native_bf16_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from xraydebug.device import cpu_has_native_bf16, machine_info

    monkeypatch.setenv("XRAYDEBUG_NATIVE_BF16", "0")
    assert cpu_has_native_bf16() is False and machine_info()["native_bf16"] is False
