"""The one stage driver, on a toy stage it has never heard of.

The stage below is declared in this file: selection, identity, row schema and a worker step.
Resume, error rows for unusable inputs and for dead workers, atomic writes and the state file
all come from :func:`xraydebug.stages.driver.run` unchanged.
"""

from __future__ import annotations

import ast
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from xraydebug.data.records import STATUS_ERROR, ImageRecord
from xraydebug.errors import DatasetError
from xraydebug.executor import BatchFailure, BatchResult, LocalExecutor
from xraydebug.stages import driver


@dataclass(frozen=True)
class ShoutStep:
    """Upper-cases each record's text file; dies (as a killed run) on ``die_on``. Building
    it takes 20 ms and each batch 10 ms, so that the driver's timings have something to
    measure."""

    root: str
    die_on: str = ""
    device: str = "cpu"

    def build(self):
        time.sleep(0.02)

        def step(records: list[ImageRecord]) -> BatchResult:
            time.sleep(0.01)
            result = BatchResult([])
            for rec in records:
                if rec.path == self.die_on:
                    raise KeyboardInterrupt
                loud = (Path(self.root) / rec.path).read_text().upper()
                result.rows.append({"path": rec.path, "loud": loud, "status": "ok", "error": ""})
                result.files[f"loud/{rec.path}"] = loud.encode()
            return result

        return step


class ShoutStage(driver.Stage):
    name = "shout"
    table_file = "shout.csv"
    state_file = ".shout.json"
    columns = ("path", "loud", "status", "error")

    def __init__(self, root: Path, records: list[ImageRecord], volume: int, die_on: str = ""):
        self.root, self.records, self.volume, self.die_on = root, records, volume, die_on

    def select(self) -> list[ImageRecord]:
        return self.records

    def identity(self) -> dict[str, Any]:
        return {"volume": self.volume}

    def step(self) -> ShoutStep:
        return ShoutStep(str(self.root), self.die_on)

    def batch_size(self, device) -> int:
        return 2

    def error_row(self, record: ImageRecord, message: str) -> dict[str, Any]:
        return {"path": record.path, "loud": "", "status": STATUS_ERROR, "error": message}


@pytest.fixture
def words(tmp_path: Path) -> tuple[Path, list[ImageRecord]]:
    root = tmp_path / "data"
    root.mkdir()
    records = []
    for i, word in enumerate(["alpha", "beta", "gamma", "delta", "epsilon"]):
        (root / f"{i}.txt").write_text(word)
        records.append(ImageRecord(f"{i}.txt", "test", "normal"))
    records.append(ImageRecord("broken.txt", "test", "normal", status="error", message="bad"))
    return root, records


def test_a_toy_stage_gets_resume_error_rows_and_atomic_writes(words, tmp_path: Path):
    root, records = words
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # killed during the second batch
        driver.run(ShoutStage(root, records, volume=11, die_on="2.txt"), out)
    partial = pd.read_csv(out / "shout.csv", dtype=str, keep_default_na=False)
    assert list(partial["path"]) == ["0.txt", "1.txt", "broken.txt"]  # order of the selection
    assert (out / "loud" / "1.txt").read_text() == "BETA"
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and "tmp" in p.name]
    state = json.loads((out / ".shout.json").read_text())
    assert state["identity"] == {"volume": 11}

    done = driver.run(ShoutStage(root, records, volume=11), out)
    assert (done.n_resumed, done.n_new) == (2, 3)
    table = done.table.set_index("path")
    assert table.loc["4.txt", "loud"] == "EPSILON"
    assert (
        table.loc["broken.txt", "status"] == "error" and table.loc["broken.txt", "error"] == "bad"
    )
    assert done.errors == ["broken.txt: bad"]
    state = json.loads((out / ".shout.json").read_text())
    assert state["executor"]["kind"] == "local"
    assert 0.02 <= state["startup_seconds"] < state["seconds"]  # the step built here
    assert 0.02 <= state["worker_seconds"] < state["seconds"]  # both batches timed
    slow = _SlowStart()
    assert driver.run(ShoutStage(root, records, volume=11), out, executor=slow).n_new == 0
    state = json.loads((out / ".shout.json").read_text())
    assert slow.startup_seconds > 0.05  # left from the run before, not this one's: none started
    assert (state["startup_seconds"], state["worker_seconds"]) == (0.0, 0.0)

    with pytest.raises(DatasetError, match="holds a shout made with other settings"):
        driver.run(ShoutStage(root, records, volume=12), out)


class _SlowStart(LocalExecutor):
    """An executor whose last map (another stage's, say) took a while to start."""

    def __init__(self) -> None:
        super().__init__()
        self.startup_seconds = 0.1


class _DeadWorkers(LocalExecutor):
    """Every batch's worker died on every try."""

    def map(self, spec, batches):
        for index, _ in enumerate(batches):
            yield index, BatchFailure("the worker died on every one of 3 tries")


def test_batches_whose_worker_died_become_error_rows(words, tmp_path: Path):
    root, records = words
    run = driver.run(ShoutStage(root, records[:3], 1), tmp_path / "o", executor=_DeadWorkers())
    assert (run.table["status"] == "error").all() and run.n_new == 0
    assert run.errors[0] == "0.txt: the worker died on every one of 3 tries"


class _ForgetfulWorkers(LocalExecutor):
    """A buggy step: it returns rows for the first record of each batch only."""

    def map(self, spec, batches):
        for index, result in super().map(spec, batches):
            result.rows = result.rows[:1]
            yield index, result


def test_records_a_step_returns_no_row_for_become_error_rows(words, tmp_path: Path):
    root, records = words
    run = driver.run(ShoutStage(root, records[:4], 1), tmp_path / "o", executor=_ForgetfulWorkers())
    assert list(run.table["path"]) == ["0.txt", "1.txt", "2.txt", "3.txt"]
    assert list(run.table["status"]) == ["ok", "error", "ok", "error"] and run.n_new == 2
    assert run.errors == [
        "1.txt: the worker returned no result for it",
        "3.txt: the worker returned no result for it",
    ]


def test_a_dry_run_writes_nothing(words, tmp_path: Path):
    root, records = words
    run = driver.run(ShoutStage(root, records, 1), None)
    assert len(run.table) == 6 and run.n_new == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_driver_names_no_stage():
    source = Path(driver.__file__).read_text()
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {m for m in imported if m.startswith(("xraydebug.stages", "xraydebug.text"))}
    for stage in ("scan", "clean", "text"):
        assert f'"{stage}"' not in source
