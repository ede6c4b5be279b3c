"""Every command checks its path arguments before any work: one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xraydebug.cli import app


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ["scan", "{tmp}/nowhere", "--model", "{tmp}/none.pt", "--out", "{tmp}/file.txt"],
            [
                "DATA {tmp}/nowhere: does not exist",
                "--model {tmp}/none.pt: does not exist",
                "--out {tmp}/file.txt: is a file, not a folder to write into",
            ],
        ),
        (
            ["evaluate", "{tmp}/file.txt", "--model", "{tmp}"],
            ["DATA {tmp}/file.txt: is not a folder", "--model {tmp}: is not a file"],
        ),
        (
            ["clean", "{tmp}/nowhere", "--scan", "{tmp}/noscan"],
            ["DATA {tmp}/nowhere: does not exist", "--scan {tmp}/noscan: does not exist"],
        ),
        (
            ["retrain", "{tmp}/nowhere", "--baseline", "{tmp}/none.pt", "--test", "{tmp}/t"],
            [
                "DATA {tmp}/nowhere: does not exist",
                "--test {tmp}/t: does not exist",
                "--baseline {tmp}/none.pt: does not exist",
            ],
        ),
        (["train", "{tmp}/nowhere"], ["DATA {tmp}/nowhere: does not exist"]),
        (["text", "{tmp}/nowhere"], ["DATA {tmp}/nowhere: does not exist"]),
        (["inspect", "{tmp}/nowhere"], ["DATA {tmp}/nowhere: does not exist"]),
        (["report", "{tmp}/nowhere"], ["RUN_DIR {tmp}/nowhere: does not exist"]),
    ],
)
def test_paths_are_checked_before_any_work(tmp_path: Path, args: list[str], lines: list[str]):
    (tmp_path / "file.txt").write_text("x")
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1, result.output
    for line in lines:
        assert line.format(tmp=tmp_path) in result.output, result.output
    # nothing started: no progress bar, no model loaded, nothing written
    assert "━" not in result.output and "decoding" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
