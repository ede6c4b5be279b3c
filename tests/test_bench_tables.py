"""The READMEs' benchmark tables come from the benchmarks' JSON files and cannot drift."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import tables
from benchmarks.executor_bench import overheads, summarize


def test_every_readme_table_matches_its_json(capsys: pytest.CaptureFixture) -> None:
    assert tables.main(["--check"]) == 0, capsys.readouterr().out


def test_every_block_has_a_renderer_and_every_renderer_a_block() -> None:
    used = {
        m["name"] for readme in tables.READMES for m in tables.BLOCK.finditer(readme.read_text())
    }
    assert used == set(tables.TABLES)


def test_an_edited_number_is_caught_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(tables.BENCHMARKS / "README.md", readme)
    monkeypatch.setattr(tables, "READMES", (readme,))
    original = readme.read_text()
    assert "| 1 | recipe | 0.821 |" in original
    readme.write_text(original.replace("| 1 | recipe | 0.821 |", "| 1 | recipe | 0.851 |"))
    assert tables.main(["--check"]) == 1
    assert f"{readme}: train-recipe" in capsys.readouterr().out
    assert tables.main([]) == 0
    assert readme.read_text() == original


def _run(stage: str, executor: str, seconds: float, startup: float, worker: float) -> dict:
    workers = 2 if executor == "ray-2x1" else 1
    return {
        "stage": stage,
        "executor": executor,
        "images": 40,
        "seconds": seconds,
        "startup_seconds": startup,
        "steady_seconds": seconds - startup,
        "worker_seconds": worker,
        "workers": workers,
        "idle_seconds": seconds - startup - worker / workers,
        "same_as_local": True,
    }


def test_executor_overhead_is_steady_state_on_both_sides() -> None:
    """Medians of three runs, each side minus its own start-up; numbers worked out by hand."""
    runs = [
        _run("clean", "local", 21.0, 1.0, 19.0),  # steady 20, idle 1
        _run("clean", "local", 23.0, 1.0, 20.0),  # steady 22, idle 2
        _run("clean", "local", 25.0, 1.0, 21.0),  # steady 24, idle 3: medians 22 and 2
        _run("clean", "ray-1x2", 26.0, 3.0, 21.0),  # steady 23, idle 2
        _run("clean", "ray-1x2", 27.0, 4.0, 21.5),  # steady 23, idle 1.5
        _run("clean", "ray-1x2", 30.0, 5.0, 22.0),  # steady 25, idle 3: medians 23 and 2
        _run("clean", "ray-2x1", 16.0, 3.0, 20.0),  # steady 13
        _run("clean", "ray-2x1", 16.0, 3.0, 20.0),
        _run("clean", "ray-2x1", 16.0, 3.0, 20.0),
    ]
    summary = {r["executor"]: r for r in summarize(runs)}
    assert summary["local"]["steady_seconds"] == 22.0 and summary["local"]["seconds"] == 23.0
    assert summary["local"]["images_per_second"] == pytest.approx(40 / 22, abs=1e-4)
    assert summary["local"]["images_per_second_with_startup"] == pytest.approx(40 / 23, abs=1e-4)
    assert summary["local"]["idle_seconds"] == 2.0
    assert summary["ray-1x2"]["startup_seconds"] == 4.0
    assert summary["ray-1x2"]["idle_seconds"] == 2.0  # the median of each run's idle time
    assert summary["ray-2x1"]["idle_seconds"] == 3.0  # 13 - 20 / 2 workers
    o = overheads(list(summary.values()), cores=2)["clean"]
    assert o["steady"] == pytest.approx(1 / 22, abs=1e-4)  # 23 / 22 - 1 = +4.5%
    assert o["with_startup"] == pytest.approx(4 / 23, abs=1e-4)  # 27 / 23 - 1
    extra = (o["extra_steady_seconds"], o["extra_worker_seconds"], o["extra_idle_seconds"])
    assert extra == (1.0, 1.5, 0.0)
