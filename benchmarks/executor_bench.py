"""Local executor vs Ray (1 and 2 actors) for ``scan`` and ``clean``, and multi-node arithmetic.

On a synthetic COVIDx-style set (``--films`` test films of ``--size`` px, about half with
burned-in text) and a ``small`` classifier (trained for ``--epochs`` on the set's train split,
or ``--model``), this runs each stage with:

* ``local``: this process, torch with every core (``--scan-limit`` films scanned, all
  ``--films`` + 24 cleaned);
* ``ray-1x<cores>``: one Ray actor with every core as its torch threads;
* ``ray-<cores>x1``: one single-threaded actor per core.

Every run writes to a new folder; the results are checked equal to the local run's (scan:
boxes, flags and predictions exactly, AUCs within 2e-3; clean: byte-identical files). Ray is
started once (its start is reported apart). Each run's state file gives, for local and Ray
alike, its **start-up** (workers started and their steps built: model and detector loaded)
and its **worker seconds** (the steps' compute, summed over batches). Every figure is the
median of ``--repeats`` interleaved runs, and comes in two kinds that are never mixed:

* **steady state**: seconds minus that run's own start-up, on both sides;
* **with start-up**: the whole run.

Ray overhead per image: ``(ray-1x<cores> - local) / local`` in steady state (and, printed
beside it, with start-up): the same compute with the same threads, so what remains is Ray's
scheduling, serialisation and transfer of results, and its daemons' share of the cores.
Target (issue 13): under 5% in steady state. Where the rest goes: the workers' compute (slower
when Ray's processes take a share of the cores) and their idle time (steady seconds minus a
worker's mean compute: batches and results moving, the driver writing), each against local's.

Then the arithmetic of a multi-node run: hours for a ``--cluster-clean-films`` clean and a
``--cluster-scan-films`` mask-56 scan on 1..64 nodes, from the measured per-image seconds of
the best configuration here (or ``--node-images-per-second`` measured on one node of another
kind, e.g. one GPU node running this script with ``--device cuda``).

    python -m benchmarks.executor_bench --work /tmp/exec-bench --json reports/executor_bench.json

Prints the CPU first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.device import machine_info, machine_line
from xraydebug.executor import ExecutorConfig, RayExecutor
from xraydebug.models.train import TrainConfig, train
from xraydebug.runfolder import CLEAN_STATE, RUN_JSON
from xraydebug.saliency.config import DEFAULT_PRESET
from xraydebug.stages.clean import CleanConfig, clean_dataset
from xraydebug.stages.scan import ScanConfig, scan


def _dataset(work: Path, films: int, size: int) -> Path:
    data = work / f"data-{films}-{size}"
    if not (data / "ground_truth.json").exists():
        synthesize(data, SynthConfig(n_train=24, n_test=films, size=size, seed=7))
    return data


def _model(work: Path, data: Path, epochs: int) -> Path:
    path = work / "small.pt"
    if not path.exists():
        config = TrainConfig(arch="small", epochs=epochs, batch_size=16, lr=1e-3, device="cpu")
        train(data, path, config=config)
    return path


def _configurations(cores: int) -> list[tuple[str, ExecutorConfig | None]]:
    configs: list[tuple[str, ExecutorConfig | None]] = [("local", None)]
    configs.append((f"ray-1x{cores}", ExecutorConfig(kind="ray", actors=1, threads=cores)))
    if cores > 1:
        configs.append((f"ray-{cores}x1", ExecutorConfig(kind="ray", actors=cores, threads=1)))
    return configs


def _same_scan(a: Path, b: Path) -> bool:
    left = pd.read_csv(a / "scan.csv", keep_default_na=False)
    right = pd.read_csv(b / "scan.csv", keep_default_na=False)
    exact = ["path", "status", "pred", "n_boxes", "boxes", "flagged"]
    if not left[exact].equals(right[exact]):
        return False
    return all(np.allclose(left[c], right[c], atol=2e-3) for c in ("deletion_auc", "insertion_auc"))


def _same_clean(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    return files(a) == files(b)


def _run(stage: str, name: str, executor, args, data, model, work) -> dict[str, Any]:
    out = work / f"{stage}-{name}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if stage == "scan":
        options = {"mask_size": args.mask_size, "limit": args.scan_limit, "device": args.device}
        config = ScanConfig.from_options({**options, "split": "test"})
        result = scan(data, model, out, config=config, executor=executor)
        n, state_file = result.n_new, RUN_JSON
    else:
        config = CleanConfig.from_options({"device": args.device, "batch_size": args.clean_batch})
        result = clean_dataset(data, out, config=config, executor=executor)
        n, state_file = len(result.table), CLEAN_STATE
    seconds = time.perf_counter() - t0
    state = json.loads((out / state_file).read_text())
    steady = seconds - state["startup_seconds"]
    workers = len(state["executor"]["workers"])
    return {
        "stage": stage,
        "executor": name,
        "images": n,
        "seconds": round(seconds, 3),
        "startup_seconds": state["startup_seconds"],
        "steady_seconds": round(steady, 3),
        "worker_seconds": state["worker_seconds"],
        "workers": workers,
        # steady seconds minus a worker's mean compute: batches and results moving, the
        # driver writing
        "idle_seconds": round(steady - state["worker_seconds"] / workers, 3),
        "out": str(out),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (stage, executor): the median over its runs of every timing (each its own
    median) and the rates they give (``images_per_second``: steady state;
    ``..._with_startup``: whole runs)."""
    keys = ("seconds", "startup_seconds", "steady_seconds", "worker_seconds", "idle_seconds")
    table = pd.DataFrame(runs)
    rows = []
    for (stage, name), group in table.groupby(["stage", "executor"], sort=False):
        medians = {k: round(float(group[k].median()), 3) for k in keys}
        images = int(group["images"].iloc[0])
        rows.append(
            {
                "stage": stage,
                "executor": name,
                "images": images,
                "runs": len(group),
                **medians,
                "images_per_second": round(images / medians["steady_seconds"], 4),
                "images_per_second_with_startup": round(images / medians["seconds"], 4),
                "same_as_local": bool(group["same_as_local"].all()),
            }
        )
    return rows


def overheads(summary: list[dict[str, Any]], cores: int) -> dict[str, dict[str, float]]:
    """Per stage, Ray (1 actor x ``cores`` threads) against local: the relative overhead in
    steady state and with start-up, and where the steady-state difference goes (seconds)."""
    table = pd.DataFrame(summary).set_index(["stage", "executor"])
    result = {}
    for stage in table.index.get_level_values("stage").unique():
        local, ray = table.loc[(stage, "local")], table.loc[(stage, f"ray-1x{cores}")]
        result[stage] = {  # plain floats: pandas hands out numpy scalars
            "steady": round(float(ray["steady_seconds"] / local["steady_seconds"]) - 1, 4),
            "with_startup": round(float(ray["seconds"] / local["seconds"]) - 1, 4),
            **{
                f"extra_{key}": round(float(ray[key] - local[key]), 3)
                for key in ("steady_seconds", "worker_seconds", "idle_seconds")
            },
        }
    return result


def _arithmetic(per_node: dict[str, float], args) -> list[dict[str, Any]]:
    rows = []
    films = {"clean": args.cluster_clean_films, "scan": args.cluster_scan_films}
    for stage, rate in per_node.items():
        for nodes in (1, 2, 4, 8, 16, 32, 64):
            hours = films[stage] / (rate * nodes) / 3600
            rows.append({"stage": stage, "films": films[stage], "nodes": nodes, "hours": hours})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/executor-bench"))
    parser.add_argument("--films", type=int, default=96, help="test films (+24 train) cleaned")
    parser.add_argument("--scan-limit", type=int, default=32, help="test films scanned")
    parser.add_argument("--size", type=int, default=1024, help="film side in pixels")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", type=Path, help="a checkpoint instead of training one")
    parser.add_argument("--mask-size", type=int, default=56)
    parser.add_argument("--clean-batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--stages", nargs="+", default=["scan", "clean"])
    parser.add_argument("--cluster-clean-films", type=int, default=30_000)
    parser.add_argument("--cluster-scan-films", type=int, default=14_000)
    parser.add_argument(
        "--node-images-per-second",
        nargs=2,
        type=float,
        metavar=("SCAN", "CLEAN"),
        help="per-node rates measured on another kind of node, for the arithmetic",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine_line())
    import ray

    cores = os.cpu_count() or 1
    args.work.mkdir(parents=True, exist_ok=True)
    data = _dataset(args.work, args.films, args.size)
    model = args.model or _model(args.work, data, args.epochs)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start = time.perf_counter() - t0
    print(f"ray.init: {ray_start:.1f} s (once per command; not in the figures below)")
    runs = []
    for stage in args.stages:
        for _ in range(args.repeats):  # interleaved, so that drift hits every configuration
            for name, config in _configurations(cores):
                executor = RayExecutor(config) if config else None
                row = _run(stage, name, executor, args, data, model, args.work)
                if executor is not None:
                    executor.close()
                same = _same_scan if stage == "scan" else _same_clean
                row["same_as_local"] = same(args.work / f"{stage}-local", Path(row["out"]))
                runs.append(row)
                print(
                    f"{stage:5s} {name:9s} {row['images']} images in {row['seconds']:7.2f} s: "
                    f"start-up {row['startup_seconds']:.2f} s, steady {row['steady_seconds']:.2f}"
                    f" s (workers computing {row['worker_seconds']:.2f} s); "
                    f"same as local: {row['same_as_local']}",
                    flush=True,
                )
    ray.shutdown()
    summary = summarize(runs)
    print(f"Medians of {args.repeats} runs:")
    for row in summary:
        print(
            f"  {row['stage']:5s} {row['executor']:9s} steady {row['images_per_second']:.3f} "
            f"images/s, with start-up {row['images_per_second_with_startup']:.3f} images/s; "
            f"start-up {row['startup_seconds']:.2f} s; workers idle "
            f"{row['idle_seconds']:.2f} s"
        )
    overhead = overheads(summary, cores)
    for stage, o in overhead.items():
        print(
            f"{stage}: Ray overhead per image (1 actor x {cores} threads vs local): steady "
            f"{100 * o['steady']:+.1f}%, with start-up {100 * o['with_startup']:+.1f}%; of the "
            f"steady {o['extra_steady_seconds']:+.2f} s: workers' compute "
            f"{o['extra_worker_seconds']:+.2f} s, workers idle {o['extra_idle_seconds']:+.2f} s"
        )
    if args.node_images_per_second:
        per_node = dict(zip(("scan", "clean"), args.node_images_per_second, strict=True))
        source = "given rates"
    else:
        table = pd.DataFrame(summary)
        per_node = {
            s: float(table[table["stage"] == s]["images_per_second"].max()) for s in args.stages
        }
        source = "best configuration measured here in steady state, per node like this one"
    arithmetic = _arithmetic(per_node, args)
    print(f"Multi-node arithmetic ({source}; images/s per node: {per_node}):")
    for row in arithmetic:
        print(
            f"  {row['stage']:5s} {row['films']:6d} films on {row['nodes']:2d} node(s): "
            f"{row['hours']:8.2f} h"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_info(),
                    "torch_threads": torch.get_num_threads(),
                    "cores": cores,
                    "scan": {
                        "films": args.scan_limit,
                        "mask_size": args.mask_size,
                        "preset": DEFAULT_PRESET,
                    },
                    "ray_init_seconds": round(ray_start, 2),
                    "films": args.films,
                    "size": args.size,
                    "repeats": args.repeats,
                    "runs": runs,
                    "summary": summary,
                    "overhead": overhead,
                    "per_node_images_per_second": per_node,
                    "arithmetic": arithmetic,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
