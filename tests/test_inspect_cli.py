from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from tests.conftest import tree_digest, write_png
from xraydebug.cli import app
from xraydebug.data.inspect import INSPECT_COLUMNS, inspect_dataset

runner = CliRunner()


def test_inspect_lists_every_problem_and_never_writes_data(covidx_dir: Path, tmp_path: Path):
    before = tree_digest(covidx_dir)
    result = inspect_dataset(covidx_dir, tmp_path / "inspect.csv")
    assert tree_digest(covidx_dir) == before
    table = pd.read_csv(tmp_path / "inspect.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == INSPECT_COLUMNS
    rows = table.set_index("path")
    assert rows.loc["train/p0_a.png", "status"] == "ok"
    assert rows.loc["train/p0_a.png", "height"] == "24"
    assert rows.loc["train/p0_a.png", "width"] == "32"
    assert rows.loc["train/p0_a.png", "bit_depth"] == "8"
    assert rows.loc["train/p0_a.png", "format"] == "PNG"
    assert "empty file" in rows.loc["train/empty.png", "message"]
    assert "not a PNG/JPEG/TIFF/DICOM image" in rows.loc["train/notes.png", "message"]
    assert rows.loc["train/missing.png", "message"] == "file not found"
    assert "outside the dataset" in rows.loc["train/link.png", "message"]
    assert rows.loc["train/unlisted.png", "status"] == "warning"
    errors = table[table["status"] == "error"]
    assert (errors["message"] != "").all()
    assert result.n_ok == 8  # p0_a, p0_b, p2_a, p3_a and the four test images
    assert set(table[table["status"] == "ok"]["split"]) == {"train", "test"}


def test_inspect_flags_duplicate_pixels_and_patient_leaks(tmp_path: Path):
    root = tmp_path / "d"
    write_png(root / "train" / "a.png", seed=1)
    write_png(root / "test" / "b.png", seed=1)  # same pixels as a.png
    (root / "train.txt").write_text("P1 a.png normal s\n")
    (root / "test.txt").write_text("P1 b.png normal s\n")
    result = inspect_dataset(root)
    rows = result.table.set_index("path")
    assert "same pixels as train/a.png" in rows.loc["test/b.png", "message"]
    assert "leak" in rows.loc["test/b.png", "message"]
    assert any("more than one split" in p for p in result.dataset_problems)


def test_cli_inspect(covidx_dir: Path, tmp_path: Path):
    out = tmp_path / "i.csv"
    result = runner.invoke(app, ["inspect", str(covidx_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "empty file (0 bytes)" in result.output
    assert "Traceback" not in result.output
    assert out.exists()


def test_cli_inspect_nothing_readable_exits_1(tmp_path: Path):
    root = tmp_path / "bad"
    (root / "train").mkdir(parents=True)
    (root / "train" / "x.png").write_bytes(b"")
    (root / "train.txt").write_text("P1 x.png normal\n")
    result = runner.invoke(app, ["inspect", str(root), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert "no readable images" in result.output


def test_cli_errors_are_one_line(tmp_path: Path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope: does not exist" in result.output and "Traceback" not in result.output


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in (
        "synth",
        "inspect",
        "train",
        "evaluate",
        "scan",
        "clean",
        "retrain",
        "report",
        "demo",
    ):
        assert name in result.output


def test_retrain_and_report_need_their_arguments(tmp_path):
    for name in ("retrain", "report"):
        result = runner.invoke(app, [name])
        assert result.exit_code == 2 and "Missing argument" in result.output
    result = runner.invoke(app, ["retrain", str(tmp_path), "--baseline", str(tmp_path / "no.pt")])
    assert result.exit_code == 1 and "no.pt" in result.output


def test_python_dash_m():
    done = subprocess.run(
        [sys.executable, "-m", "xraydebug", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "synth" in done.stdout
