"""The one driver of every per-image stage (scan, text, clean, the text-sensitivity pass).

A stage is a declaration (:class:`Stage`): which items it works on, what makes two runs the
same (its *identity*), the rows it writes and the worker step that makes them
(:mod:`xraydebug.executor`). :func:`run` does the rest, the same way for every stage:

- the **state file**: written before any work with the identity and the resolved config, and
  again at the end with what ran the batches and the timings (``seconds`` in all,
  ``startup_seconds`` starting the workers and building their steps, ``worker_seconds`` the
  workers' compute summed over batches);
- **resume**: a folder whose state has the same identity keeps its ``status=ok`` rows; one
  with another identity is refused with one line (or, for stages that own their folder,
  replaced with ``force``);
- **rows by path**, merged over batches and earlier runs, written in the selection's order
  (other rows already in the table, e.g. other shards, follow, sorted);
- **atomic writes** of the table after every batch and of every file a step returns;
- **error rows** for unusable inputs and for batches whose worker kept dying;
- **progress** after every batch.
"""

from __future__ import annotations

import json
import shutil
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from xraydebug.data.records import ImageRecord
from xraydebug.errors import DatasetError
from xraydebug.executor import (
    BatchFailure,
    BatchResult,
    Executor,
    ExecutorConfig,
    StepSpec,
    open_executor,
)
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json
from xraydebug.runfolder import read_json, read_table, write_table

__all__ = [
    "Stage",
    "StageRun",
    "run",
]

Progress = Callable[[int, int], None]


class Stage(ABC):
    """One per-image stage, declared.

    Class attributes: ``name`` (for messages), ``table_file`` and ``state_file`` (names from
    :mod:`xraydebug.runfolder`), ``columns`` (the table's row schema) and ``owns_folder``: the
    output folder is the stage's alone (``clean`` writes a dataset there), so a non-empty folder
    without this stage's state is refused rather than added to.

    Work items are :class:`~xraydebug.data.records.ImageRecord` or any object with a
    ``record`` attribute holding one (a record plus what the worker needs for it).
    """

    name: ClassVar[str]
    table_file: ClassVar[str]
    state_file: ClassVar[str]
    columns: ClassVar[Sequence[str]]
    owns_folder: ClassVar[bool] = False

    @abstractmethod
    def select(self) -> list[Any]:
        """The work items, in the table's order (unusable records included: they become
        error rows)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What makes two runs the same: a rerun with an equal identity resumes."""

    @abstractmethod
    def step(self) -> StepSpec:
        """The worker step (picklable) that turns a batch of items into rows and files."""

    @abstractmethod
    def error_row(self, record: ImageRecord, message: str) -> dict[str, Any]:
        """The row of an item that could not be processed."""

    def batch_size(self, device: torch.device) -> int:
        """Items handed to a worker at a time, for steps that compute on ``device``."""
        return 8

    def record(self) -> dict[str, Any]:
        """What the state file holds besides the identity (the resolved config, the data)."""
        return {}

    def start(self, executor: Executor) -> None:  # noqa: B027 (an optional hook)
        """Called once the executor is open, before any work (e.g. to keep a model where the
        executor wants the driver's copy: :meth:`~xraydebug.executor.Executor.model_home`)."""

    def prepare(self, out: Path) -> None:  # noqa: B027 (an optional hook)
        """Called once before the batches, after the state file is written."""

    def accept(self, row: dict[str, Any], out: Path | None) -> None:  # noqa: B027
        """Called for every new row (``out`` is None on a dry run)."""

    def finish(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table as written (e.g. flags derived from its columns)."""
        return table

    def summarize(self, outcome: StageRun) -> dict[str, Any]:
        """What the state file adds at the end besides the executor and the seconds."""
        return {}


@dataclass
class StageRun:
    """What :func:`run` did: the table written, the state file's contents, how many items
    were selected, new and resumed, the one-line errors, and the steps' stats summed."""

    table: pd.DataFrame
    state: dict[str, Any]
    n_selected: int = 0
    n_new: int = 0
    n_resumed: int = 0
    errors: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


def _record_of(item: Any) -> ImageRecord:
    return item if isinstance(item, ImageRecord) else item.record


def _check_folder(stage: Stage, out: Path, identity: dict[str, Any], force: bool) -> None:
    """Refuse (or, with ``force``, clear) a folder that holds another run."""
    previous = read_json(out / stage.state_file, {})
    same = previous.get("identity") == json.loads(json.dumps(identity))
    if stage.owns_folder:
        if out.exists() and any(out.iterdir()) and not same:
            if not force:
                raise DatasetError(
                    f"{out}: exists and is not empty; choose a new --out or pass --force to "
                    "replace it"
                )
            shutil.rmtree(out)
    elif (out / stage.table_file).exists() and not same:
        raise DatasetError(
            f"{out}: holds a {stage.name} made with other settings or another model; use a "
            "new --out (or delete the folder) to start over"
        )


class _Rows:
    """Rows by path (one or more per path: a scan explains several targets of an image),
    merged over earlier runs and batches, and the table they make."""

    def __init__(self, stage: Stage, order: Sequence[str], out: Path | None) -> None:
        self.stage, self.order, self.out = stage, list(order), out
        self.by_path: dict[str, list[dict[str, Any]]] = {}
        path = out / stage.table_file if out is not None else None
        if path is not None and path.exists():
            for row in read_table(path).to_dict("records"):
                if row["status"] == "ok":
                    self.by_path.setdefault(row["path"], []).append(row)

    def set(self, rows: list[dict[str, Any]]) -> None:
        """Replace the rows of the paths in ``rows`` by them."""
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            grouped[row["path"]].append(row)
        self.by_path.update(grouped)

    def table(self) -> pd.DataFrame:
        chosen = set(self.order)
        paths = [p for p in self.order if p in self.by_path]
        paths += [p for p in sorted(self.by_path) if p not in chosen]
        rows = [row for p in paths for row in self.by_path[p]]
        return self.stage.finish(pd.DataFrame(rows, columns=self.stage.columns))

    def write(self) -> pd.DataFrame:
        table = self.table()
        if self.out is not None:
            write_table(self.out / self.stage.table_file, table)
        return table


def run(
    stage: Stage,
    out: Path | None,
    *,
    executor: ExecutorConfig | Executor | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> StageRun:
    """Run ``stage`` into ``out`` (None: a dry run that writes nothing and resumes nothing).

    ``executor``: where the batches run (default this process); ``force``: replace a folder
    the stage owns that holds something else.
    """
    start = time.perf_counter()
    identity = stage.identity()
    items = stage.select()
    if out is not None:
        _check_folder(stage, out, identity, force)
    rows = _Rows(stage, [_record_of(item).path for item in items], out)
    resumed = {p for p in rows.order if p in rows.by_path}
    state = {"identity": identity, **stage.record()}
    if out is not None:
        atomic_write_json(out / stage.state_file, state)
        stage.prepare(out)
    outcome = StageRun(rows.table(), state, n_selected=len(items), n_resumed=len(resumed))
    todo = []
    for item in items:
        record = _record_of(item)
        if record.path in rows.by_path:
            continue
        if record.usable:
            todo.append(item)
        else:
            rows.set([stage.error_row(record, record.message)])
            outcome.errors.append(f"{record.path}: {record.message}")
    with open_executor(executor) as runner:
        stage.start(runner)
        step = stage.step()
        size = stage.batch_size(runner.compute_device(step.device))
        outcome.stats = _feed(stage, step, runner, todo, size, rows, outcome, progress)
        state["executor"] = runner.describe()
        # nothing to do: no worker started (an executor reused across stages keeps the last)
        state["startup_seconds"] = round(runner.startup_seconds, 3) if todo else 0.0
        state["worker_seconds"] = round(outcome.stats.get("worker_seconds", 0.0), 3)
    outcome.table = rows.write()
    state["seconds"] = round(time.perf_counter() - start, 3)
    state.update(stage.summarize(outcome))
    if out is not None:
        atomic_write_json(out / stage.state_file, state)
    return outcome


def _feed(
    stage: Stage,
    step: StepSpec,
    runner: Executor,
    todo: list[Any],
    batch_size: int,
    rows: _Rows,
    outcome: StageRun,
    progress: Progress | None,
) -> dict[str, float]:
    """Hand ``todo`` to the workers in batches; merge and write what comes back."""
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    stats: dict[str, float] = defaultdict(float)
    done = 0
    if progress:
        progress(0, len(todo))
    if not batches:
        return dict(stats)
    for index, result in runner.map(step, batches):
        records = [_record_of(item) for item in batches[index]]
        if isinstance(result, BatchFailure):
            _error_rows(stage, records, result.message, rows, outcome)
        else:
            _merge(stage, result, rows, outcome, stats)
            returned = {row["path"] for row in result.rows}
            lost = [r for r in records if r.path not in returned]  # a step's bug: never silent
            _error_rows(stage, lost, "the worker returned no result for it", rows, outcome)
        rows.write()
        done += len(records)
        if progress:
            progress(done, len(todo))
    return dict(stats)


def _error_rows(
    stage: Stage, records: list[ImageRecord], message: str, rows: _Rows, outcome: StageRun
) -> None:
    """An error row saying ``message`` for each of ``records``."""
    for record in records:
        rows.set([stage.error_row(record, message)])
        outcome.errors.append(f"{record.path}: {message}")


def _merge(
    stage: Stage,
    result: BatchResult,
    rows: _Rows,
    outcome: StageRun,
    stats: dict[str, float],
) -> None:
    """One batch's files (written atomically before the rows that name them) and rows."""
    for name, data in result.files.items():
        if rows.out is not None:
            atomic_write_bytes(rows.out / name, data)
    for key, value in result.stats.items():
        stats[key] += value
    rows.set(result.rows)
    new_paths = set()
    for row in result.rows:
        if row["status"] == "ok":
            new_paths.add(row["path"])
        stage.accept(row, rows.out)
    outcome.n_new += len(new_paths)
    outcome.errors.extend(result.errors)
