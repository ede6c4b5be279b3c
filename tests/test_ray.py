"""The Ray executor: same outputs as the local one, nothing lost or doubled when a worker or the
driver dies, clear errors. Runs against a local Ray (2 CPUs) started once for this module."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from xraydebug.cli import app
from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.errors import XrayDebugError
from xraydebug.executor import (
    BatchFailure,
    BatchResult,
    ExecutorConfig,
    LocalExecutor,
    RayExecutor,
)
from xraydebug.runfolder import load_masks
from xraydebug.stages.clean import CleanConfig, CleanStep, clean_dataset
from xraydebug.stages.scan import scan
from xraydebug.stages.text import TextConfig, TextStep, detect_dataset

from .conftest import scan_config, tree_digest

RAY2 = ExecutorConfig(kind="ray", actors=2)
SCAN = dict(
    mask_size=8,
    iterations=3,
    ig_steps=3,
    metric_steps=8,
    batch_size=2,
    device="cpu",
    detector="craft",
)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> Path:
    """Six 256 px synthetic test films, most with burned-in text."""
    config = SynthConfig(n_train=0, n_test=6, size=256, seed=11)
    return synthesize(tmp_path_factory.mktemp("raydata") / "data", config).out_dir


@dataclass(frozen=True)
class Doubler:
    """A toy step: ``x -> 2x``. The first worker to meet ``die_once`` exits (the marker file
    makes it once per test); every worker that meets ``die_always`` exits."""

    marker: str
    die_once: int = -1
    die_always: int = -1
    device: str = "cpu"

    def build(self):
        def step(batch: list[int]) -> BatchResult:
            for x in batch:
                if x == self.die_always:
                    os._exit(1)
                if x == self.die_once and not Path(self.marker).exists():
                    Path(self.marker).touch()
                    os._exit(1)
            return BatchResult([{"path": str(x), "value": 2 * x} for x in batch])

        return step


def _collect(executor, spec, items, batch_size=2):
    rows, failed = [], []
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    for index, result in executor.map(spec, batches):
        if isinstance(result, BatchFailure):
            failed.append((batches[index], result.message))
        else:
            rows.extend(result.rows)
    return rows, failed


def test_ray_retries_a_dead_worker_and_fails_only_a_batch_that_always_kills(
    ray_local, tmp_path: Path
):
    items = list(range(10))
    local_rows, _ = _collect(LocalExecutor(), Doubler(str(tmp_path / "unused")), items)
    spec = Doubler(str(tmp_path / "died"), die_once=5)
    rows, failed = _collect(RayExecutor(RAY2), spec, items)
    assert (tmp_path / "died").exists()  # a worker did die mid-run
    assert not failed and sorted(rows, key=lambda r: int(r["path"])) == local_rows
    spec = Doubler(str(tmp_path / "x"), die_always=3)
    rows, failed = _collect(
        RayExecutor(ExecutorConfig(kind="ray", actors=2, retries=1)), spec, items
    )
    assert [batch for batch, _ in failed] == [[2, 3]]
    assert "died on every one of 2 tries" in failed[0][1]
    assert sorted(int(r["path"]) for r in rows) == [0, 1, 4, 5, 6, 7, 8, 9]


def test_ray_worker_that_cannot_read_the_dataset_fails_with_one_line(ray_local, tmp_path: Path):
    spec = TextStep(str(tmp_path / "not-mounted"), TextConfig(device="cpu"))
    with pytest.raises(XrayDebugError, match=r"cannot read the dataset folder .*not-mounted"):
        list(RayExecutor(RAY2).map(spec, [[]]))


def _assert_same_scan(a: Path, b: Path) -> None:
    left = pd.read_csv(a / "scan.csv", keep_default_na=False)
    right = pd.read_csv(b / "scan.csv", keep_default_na=False)
    assert list(left.columns) == list(right.columns) and len(left) == len(right)
    assert right["path"].is_unique
    exact = ["path", "status", "pred", "target", "n_boxes", "boxes", "flagged", "mask_file"]
    pd.testing.assert_frame_equal(left[exact], right[exact])
    close = ["prob", "deletion_auc", "insertion_auc", "mass_in_text", "text_area"]
    for column in close:
        np.testing.assert_allclose(left[column], right[column], atol=2e-3, err_msg=column)
    for mask_file in left["mask_file"]:
        ours, theirs = load_masks(a, mask_file), load_masks(b, mask_file)
        for key in ("deletion", "insertion"):
            np.testing.assert_allclose(ours[key], theirs[key], atol=2e-2, err_msg=mask_file)


def test_ray_scan_matches_local_and_survives_a_killed_actor_and_driver(
    ray_local, tiny_model, text_data: Path, tmp_path: Path
):
    before = tree_digest(text_data)
    config = scan_config(**SCAN)
    local = scan(text_data, tiny_model.checkpoint, tmp_path / "local", config=config)
    assert (local.table["status"] == "ok").all() and local.table["n_boxes"].astype(int).sum() > 0

    executor = RayExecutor(RAY2)
    killed = []

    def kill_an_actor(done: int, total: int) -> None:
        if done and not killed:  # one batch back, three still queued or running
            killed.append(executor.actors[0])
            ray_local.kill(executor.actors[0], no_restart=False)

    result = scan(
        text_data,
        tiny_model.checkpoint,
        tmp_path / "ray",
        config=config,
        progress=kill_an_actor,
        executor=executor,
    )
    assert killed and result.n_new == 6 and not result.errors
    assert result.run["executor"]["kind"] == "ray" and len(result.run["executor"]["workers"]) == 2
    _assert_same_scan(tmp_path / "local", tmp_path / "ray")

    def interrupt(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        scan(
            text_data, tiny_model.checkpoint, out, config=config, progress=interrupt, executor=RAY2
        )
    assert 2 <= len(pd.read_csv(out / "scan.csv")) < 6
    resumed = scan(text_data, tiny_model.checkpoint, out, config=config, executor=RAY2)
    assert resumed.n_resumed >= 2 and resumed.n_resumed + resumed.n_new == 6
    _assert_same_scan(tmp_path / "local", out)
    assert tree_digest(text_data) == before


def test_ray_clean_and_text_match_local(ray_local, text_data: Path, tmp_path: Path):
    config = CleanConfig.from_options({"device": "cpu", "detector": "craft", "batch_size": 2})
    local = clean_dataset(text_data, tmp_path / "local", config=config)
    remote = clean_dataset(text_data, tmp_path / "ray", config=config, executor=RAY2)
    assert local.n_changed > 0
    pd.testing.assert_frame_equal(
        local.table.reset_index(drop=True), remote.table.reset_index(drop=True)
    )
    ours, theirs = tree_digest(tmp_path / "local"), tree_digest(tmp_path / "ray")
    assert ours.pop(".xraydebug-clean.json") and theirs.pop(".xraydebug-clean.json")
    assert ours == theirs  # byte-identical images and cleaning.csv

    text = TextConfig.from_options({"detector": "craft", "device": "cpu"})
    detect_dataset(text_data, tmp_path / "text-local", config=text)
    runner = CliRunner()
    outcome = runner.invoke(
        app,
        [
            "text",
            str(text_data),
            "--out",
            str(tmp_path / "text-ray"),
            "--detector",
            "craft",
            "--device",
            "cpu",
            "--executor",
            "ray",
            "--actors",
            "2",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    text_csv = (tmp_path / "text-local" / "text.csv").read_text()
    assert "[[" in text_csv and (tmp_path / "text-ray" / "text.csv").read_text() == text_csv


def test_without_ray_the_option_names_the_extra(text_data: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    outcome = CliRunner().invoke(
        app, ["text", str(text_data), "--out", str(tmp_path / "t"), "--executor", "ray"]
    )
    assert outcome.exit_code == 1
    assert "pip install 'xraydebug[ray]'" in outcome.output
    assert len(outcome.output.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="executor must be one of"):
        ExecutorConfig(kind="dask")
    with pytest.raises(ValueError, match="need --executor ray"):
        ExecutorConfig(address="auto")


def test_ray_plans_one_actor_per_gpu_and_cpu_only_detectors_get_cpus(ray_local):
    executor = RayExecutor(ExecutorConfig(kind="ray"))
    assert executor._plan(gpu=False) == (executor.cpus, 1)  # one single-threaded actor per CPU
    executor.gpus = 2  # as on a node with two GPUs
    assert executor._plan(gpu=True) == (2, max(1, executor.cpus // 2))
    assert executor.uses_gpu("auto") and not executor.uses_gpu("cpu")
    ppocr = CleanConfig.from_options({"detector": "ppocr", "device": "auto"})
    assert CleanStep("/data", ppocr).device == "cpu"  # DBNet runs on ONNX Runtime's CPU
    craft = TextConfig.from_options({"detector": "craft", "device": "auto"})
    assert TextStep("/data", craft).device == "auto"
    executor.close()
