"""The demo end to end at toy size (the real `make demo` runs the same code, bigger)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from xraydebug.cli import app
from xraydebug.demo import DemoConfig, run_demo


def test_demo_runs_every_stage(tmp_path: Path):
    config = DemoConfig(
        n_train=45,
        n_test=15,
        size=128,
        epochs=2,
        scan_images=2,
        iterations=2,
        ig_steps=2,
        mask_size=8,
        text_long_side=256,
    )
    summary = run_demo(tmp_path / "demo", config=config, device="cpu")
    out = tmp_path / "demo"
    assert (out / "data" / "ground_truth.json").exists()
    assert (out / "inspect.csv").exists()
    assert json.loads((out / "eval" / "metrics.json").read_text())["n"] == 15
    scan = pd.read_csv(out / "scan" / "scan.csv")
    assert len(scan) == 2 and (scan["status"] == "ok").all()
    assert summary["scan_images"] == 2 and 0 <= summary["deletion_auc"] <= 1
    # a rerun reuses the synthetic data and resumes the finished scan
    again = run_demo(out, config=config, device="cpu")
    assert again["scan_images"] == 2


def test_demo_cli_help():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output
