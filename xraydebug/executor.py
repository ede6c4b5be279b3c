"""Run the batches of a per-image stage (``scan``, ``text``, ``clean``): here, or on Ray actors.

Every stage has two halves:

- a **worker step**: a picklable *spec* whose :meth:`StepSpec.build` runs once per worker and
  returns a callable ``step(batch) -> BatchResult``. The step holds the heavy state (classifier,
  text detector), reads its inputs from the dataset path and returns result rows and output
  files as bytes. It never writes into the output folder.
- a **driver** (:func:`xraydebug.stages.driver.run`): selects the work, hands batches to an
  executor's :meth:`Executor.map`, writes the returned files atomically, merges the rows,
  resumes and reports.

Executors:

- :class:`LocalExecutor`: builds the step once in this process and runs the batches in order.
- :class:`RayExecutor`: long-lived Ray actors, one built step (model and detector) each, fed
  by a small scheduler over :func:`ray.wait` that keeps two batches queued per actor (so an
  actor never waits for the driver) and knows which batch every result or failure belongs to.
  ``ray.util.ActorPool`` runs one task per actor and cannot say which batch failed; Ray Data's
  ``map_batches`` would move the work selection, resume and writing into a streaming pipeline
  (and pull in pyarrow) while the driver here must stay the only writer. An actor that dies is
  replaced by a new one (which loads its model again) and its batches are sent again, up to
  ``retries`` more times each; a batch whose worker dies on every try becomes error rows
  (:class:`BatchFailure`). The scheduler retries rather than Ray's ``max_task_retries``: those
  fire while the restarted actor is still loading its model and used up 3 tries in under a
  second when measured. An exception raised by the step itself is a bug and is re-raised on
  the driver, as the local executor does.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from xraydebug.errors import XrayDebugError

EXECUTORS = ("local", "ray")
RAY_EXTRA_HINT = "--executor ray needs Ray: pip install 'xraydebug[ray]'"
_QUEUED_PER_ACTOR = 2


@dataclass
class BatchResult:
    """What a worker step returns for one batch.

    ``rows``: one result row per record (error rows included); ``files``: output files, path
    relative to the output folder -> contents (the driver writes them atomically before the
    rows that name them); ``stats``: numbers the driver sums over batches (seconds per stage,
    model passes); ``errors``: one-line messages of the records that became error rows.
    """

    rows: list[dict[str, Any]]
    files: dict[str, bytes] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchFailure:
    """A batch whose worker process died on every try; its records become error rows."""

    message: str


class StepSpec(Protocol):
    """A picklable recipe for a worker step, built once per worker.

    ``device``: the ``--device`` setting the step computes with (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``); an executor gives GPUs only to steps that use them."""

    @property
    def device(self) -> str: ...

    def build(self) -> Callable[[list[Any]], BatchResult]: ...


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the batches of a stage run.

    ``kind``: ``local`` (this process) or ``ray``. ``address``: a Ray cluster to join
    (``auto``, ``HOST:6379`` or ``ray://HOST:10001``); None starts a local Ray instance with
    this machine's cores. ``actors``: workers; None = one per GPU of the cluster, else one per
    ``threads`` CPUs. ``threads``: torch threads (and Ray CPUs) per actor; None = 1 on CPU
    clusters, the node's CPUs per GPU on GPU clusters. ``retries``: tries of a batch after its
    worker died.
    """

    kind: str = "local"
    address: str | None = None
    actors: int | None = None
    threads: int | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        for name in ("actors", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.kind == "local" and (self.address or self.actors):
            raise ValueError("--ray-address and --actors need --executor ray")


class Executor(Protocol):
    startup_seconds: float  # the last map's: its workers started and their steps built

    def uses_gpu(self, device: str) -> bool:
        """Whether steps built with the ``--device`` setting ``device`` run on CUDA."""
        ...

    def compute_device(self, device: str) -> torch.device:
        """The device the steps built with the setting ``device`` compute on, as the driver
        sees it (to size batches): here, the resolved device; on Ray, ``cuda`` or ``cpu``."""
        ...

    def model_home(self, device: str) -> torch.device:
        """Where the driver keeps its copy of a model it hands to the steps: the compute
        device when the steps run in this process, the CPU when the model is shipped."""
        ...

    def map(
        self, spec: StepSpec, batches: Sequence[list[Any]]
    ) -> Iterator[tuple[int, BatchResult | BatchFailure]]:
        """(index of the batch, its result) for every batch, in the order they finish."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran the batches, for ``run.json``."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs the batches in this process, one after the other."""

    def __init__(self) -> None:
        self._workers: list[dict[str, Any]] = []
        self.startup_seconds = 0.0

    def uses_gpu(self, device: str) -> bool:
        return self.compute_device(device).type == "cuda"

    def compute_device(self, device: str) -> torch.device:
        from xraydebug.device import resolve_device

        return resolve_device(device)

    def model_home(self, device: str) -> torch.device:
        return self.compute_device(device)

    def map(
        self, spec: StepSpec, batches: Sequence[list[Any]]
    ) -> Iterator[tuple[int, BatchResult | BatchFailure]]:
        t0 = time.perf_counter()
        step = spec.build()
        self.startup_seconds = time.perf_counter() - t0
        self._workers = [{"host": socket.gethostname(), **worker_facts(spec, step)}]
        for index, batch in enumerate(batches):
            yield index, timed(step, batch)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "workers": self._workers}

    def close(self) -> None:
        pass


def worker_facts(spec: StepSpec, step: Any) -> dict[str, Any]:
    """The device and torch threads a built step runs with: ``step.device`` where it has one,
    else what the spec's ``device`` setting resolves to in this process."""
    from xraydebug.device import resolve_device

    device = getattr(step, "device", None) or resolve_device(spec.device)
    return {"device": str(device), "threads": torch.get_num_threads()}


def timed(step: Callable[[list[Any]], BatchResult], batch: list[Any]) -> BatchResult:
    """``step(batch)`` with its seconds added to the result's stats as ``worker_seconds`` (the
    time a worker spent computing, which the driver sums; the rest of a run is start-up and
    moving batches and results)."""
    t0 = time.perf_counter()
    result = step(batch)
    result.stats["worker_seconds"] = result.stats.get("worker_seconds", 0.0) + (
        time.perf_counter() - t0
    )
    return result


def readable_root(root: str | Path) -> Path:
    """The dataset folder ``root`` as this worker sees it, or a one-line error: Ray workers
    read the inputs themselves, so the dataset must be at the same path on every node."""
    path = Path(root)
    if not (path.is_dir() and os.access(path, os.R_OK | os.X_OK)):
        raise XrayDebugError(
            f"cannot read the dataset folder {path} on {socket.gethostname()}: Ray workers read "
            "the images from the driver's path, so the dataset must be on a filesystem every "
            "node mounts at that path (see README, 'Running on a cluster')"
        )
    return path


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise XrayDebugError(RAY_EXTRA_HINT) from None
    return ray


def plan_actors(config: ExecutorConfig, cpus: int, gpus: int, *, gpu: bool) -> tuple[int, int]:
    """(actors, threads per actor) on a cluster of ``cpus`` CPUs and ``gpus`` GPUs: steps on a
    GPU (``gpu``) get one actor per GPU (no more than there are CPUs) sharing the CPUs, others
    one single-threaded actor per CPU; ``config.actors`` and ``config.threads`` override
    either count. A plan the cluster cannot hold is refused with one line: Ray would leave
    its extra actors waiting for resources forever."""
    if gpu:
        actors = config.actors or min(gpus, cpus)  # every actor needs a CPU as well
        threads = config.threads or max(1, cpus // gpus)
    else:
        threads = config.threads or 1
        actors = config.actors or max(1, cpus // threads)
    if actors * threads > cpus or (gpu and actors > gpus):
        wants = f"{actors * threads} CPUs" + (f" and {actors} GPUs" if gpu else "")
        raise XrayDebugError(
            f"{actors} Ray actor(s) x {threads} thread(s) need {wants}; the cluster has {cpus} "
            f"CPUs and {gpus} GPUs: lower --actors or --threads-per-actor"
        )
    return actors, threads


class _StepActor:
    """A Ray actor holding one built step (made a remote class by :class:`RayExecutor`)."""

    def __init__(self, spec: StepSpec, threads: int) -> None:
        import cv2

        torch.set_num_threads(threads)  # ONNX Runtime sessions follow torch's count
        cv2.setNumThreads(threads)
        self._error = ""
        self._spec = spec
        self._step: Callable[[list[Any]], BatchResult] | None = None
        try:
            self._step = spec.build()
        except Exception as exc:  # reported by ready(), so the driver fails with one line
            self._error = str(exc) or type(exc).__name__

    def ready(self) -> dict[str, Any]:
        facts = {"host": socket.gethostname(), "pid": os.getpid(), "error": self._error}
        return facts | (worker_facts(self._spec, self._step) if self._step else {})

    def run(self, batch: list[Any]) -> BatchResult:
        if self._step is None:  # a replacement actor on a node that cannot run the step
            raise XrayDebugError(self._error)
        return timed(self._step, batch)


class RayExecutor:
    """Runs the batches on Ray actors (see the module docstring)."""

    def __init__(self, config: ExecutorConfig = ExecutorConfig(kind="ray")) -> None:
        ray = import_ray()
        self.config = config
        self._ray = ray
        self._started = False
        self._actors: list[Any] = []
        self._workers: list[dict[str, Any]] = []
        self.startup_seconds = 0.0  # the last map's: actors created and their steps built
        if not ray.is_initialized():
            if config.address:
                ray.init(address=config.address, logging_level="WARNING")
            else:
                ray.init(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="WARNING",
                )
                self._started = True
        resources = ray.cluster_resources()
        self.cpus = int(resources.get("CPU", 1))
        self.gpus = int(resources.get("GPU", 0))

    def uses_gpu(self, device: str) -> bool:
        return self.gpus > 0 and not device.strip().lower().startswith("cpu")

    def compute_device(self, device: str) -> torch.device:
        return torch.device("cuda" if self.uses_gpu(device) else "cpu")

    def model_home(self, device: str) -> torch.device:
        return torch.device("cpu")  # pickled into the actors, which move it to their device

    def _start(self, spec: StepSpec) -> None:
        ray = self._ray
        gpu = self.uses_gpu(spec.device)
        n_actors, threads = plan_actors(self.config, self.cpus, self.gpus, gpu=gpu)
        remote = ray.remote(_StepActor).options(
            num_cpus=threads, num_gpus=1 if gpu else 0, max_restarts=0, max_task_retries=0
        )
        t0 = time.perf_counter()
        spec_ref = ray.put(spec)
        self._new_actor = lambda: remote.remote(spec_ref, threads)
        self._actors = [self._new_actor() for _ in range(n_actors)]
        self._workers = ray.get([actor.ready.remote() for actor in self._actors])
        for worker in self._workers:
            if worker["error"]:
                self.close()
                raise XrayDebugError(f"Ray worker on {worker['host']}: {worker['error']}")
        self.startup_seconds = time.perf_counter() - t0

    def map(
        self, spec: StepSpec, batches: Sequence[list[Any]]
    ) -> Iterator[tuple[int, BatchResult | BatchFailure]]:
        ray = self._ray
        died = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ActorUnavailableError,
        )
        self._start(spec)
        queue = deque(range(len(batches)))
        tries = [0] * len(batches)
        pending: dict[Any, tuple[int, int, Any]] = {}  # ref -> (batch, actor slot, handle)
        load = [0] * len(self._actors)

        def submit() -> None:
            while queue:
                slot = min(range(len(load)), key=load.__getitem__)
                if load[slot] >= _QUEUED_PER_ACTOR:
                    return
                index = queue.popleft()
                actor = self._actors[slot]
                pending[actor.run.remote(batches[index])] = (index, slot, actor)
                tries[index] += 1
                load[slot] += 1

        try:
            submit()
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                index, slot, actor = pending.pop(ref)
                load[slot] -= 1
                try:
                    result: BatchResult | BatchFailure = ray.get(ref)
                except died as exc:
                    if self._actors[slot] is actor:  # the first of its batches to report it
                        ray.kill(actor, no_restart=True)
                        self._actors[slot] = self._new_actor()
                    if tries[index] <= self.config.retries:
                        queue.appendleft(index)
                        submit()
                        continue
                    result = BatchFailure(
                        f"the worker died on every one of {tries[index]} tries "
                        f"({type(exc).__name__})"
                    )
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                submit()
                yield index, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            self._kill_actors()

    @property
    def actors(self) -> list[Any]:
        """The live actor handles (for tests and monitoring)."""
        return list(self._actors)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ray",
            "address": self.config.address,
            "cluster_cpus": self.cpus,
            "cluster_gpus": self.gpus,
            "retries": self.config.retries,
            "workers": [{k: v for k, v in w.items() if k != "error"} for w in self._workers],
        }

    def _kill_actors(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []

    def close(self) -> None:
        self._kill_actors()
        if self._started:
            self._ray.shutdown()
            self._started = False


@contextmanager
def open_executor(executor: ExecutorConfig | Executor | None) -> Iterator[Executor]:
    """An executor for ``executor`` (a config: built here and closed at the end; an
    executor: used as it is and left open)."""
    if executor is not None and not isinstance(executor, ExecutorConfig):
        yield executor
        return
    config = executor or ExecutorConfig()
    built: Executor = RayExecutor(config) if config.kind == "ray" else LocalExecutor()
    try:
        yield built
    finally:
        built.close()
