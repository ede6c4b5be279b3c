"""``xraydebug text``: CRAFT text detection alone over a dataset -> ``text.csv``.

Columns: ``path,split,label,n_boxes,boxes,status,error``; ``boxes`` is JSON
``[[x0,y0,x1,y1],...]`` in original pixel coordinates (x1/y1 exclusive). ``text.csv`` is
rewritten atomically after every batch; a rerun with the same settings keeps the rows already
done (the settings are in ``.xraydebug-text.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xraydebug.audit.files import TEXT_CSV, TEXT_STATE
from xraydebug.data.imageio import read_image
from xraydebug.data.layouts import load_index
from xraydebug.data.records import ImageRecord
from xraydebug.errors import DatasetError, ImageReadError
from xraydebug.executor import (
    BatchResult,
    Executor,
    ExecutorConfig,
    open_executor,
    readable_root,
    run_stage,
)
from xraydebug.fsutil import atomic_open, atomic_write_json, ensure_outside
from xraydebug.text.detect import (
    TextDetectConfig,
    detect_text,
    detector_device,
    load_detector,
)

TEXT_COLUMNS = ["path", "split", "label", "n_boxes", "boxes", "status", "error"]
TEXT_BATCH = 8  # images per batch handed to a worker


def _row(rec: ImageRecord, **values: Any) -> dict[str, Any]:
    row = {
        "path": rec.path,
        "split": rec.split,
        "label": rec.label or "",
        "n_boxes": "",
        "boxes": "",
        "status": "ok",
        "error": "",
    }
    row.update(values)
    return row


@dataclass(frozen=True)
class TextStep:
    """The text stage's worker step: a batch of records -> rows (no files)."""

    root: str
    config: TextDetectConfig

    @property
    def device(self) -> str:
        return detector_device(self.config)

    def build(self) -> Callable[[list[ImageRecord]], BatchResult]:
        root = readable_root(self.root)
        load_detector(self.config)

        def step(records: list[ImageRecord]) -> BatchResult:
            result = BatchResult([])
            for rec in records:
                try:
                    image, _ = read_image(root / rec.path)
                except ImageReadError as exc:
                    reason = str(exc).removeprefix(f"{root / rec.path}: ")
                    result.rows.append(_row(rec, status="error", error=reason))
                    result.errors.append(str(exc))
                    continue
                boxes = detect_text([image], self.config)[0]
                result.rows.append(_row(rec, n_boxes=len(boxes), boxes=json.dumps(boxes)))
            return result

        return step


def _read_done(out: Path, identity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows of a previous run with the same settings (``status`` ok), by path."""
    csv_path, state_path = out / TEXT_CSV, out / TEXT_STATE
    if not csv_path.exists():
        return {}
    previous = json.loads(state_path.read_text()) if state_path.exists() else {}
    if previous.get("config") != identity:
        raise DatasetError(
            f"{out}: holds text detections made with other settings; use a new --out "
            "(or delete the folder) to start over"
        )
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return {row["path"]: row for row in table.to_dict("records") if row["status"] == "ok"}


def detect_dataset(
    data: Path | str,
    out: Path | str = "runs/text",
    config: TextDetectConfig = TextDetectConfig(),
    split: str = "all",
    manifest: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    executor: ExecutorConfig | Executor | None = None,
) -> pd.DataFrame:
    """Detect text in every readable image of ``data`` (or ``split``); write ``out/text.csv``.

    ``executor``: where the batches run (:mod:`xraydebug.executor`; default this process).
    """
    data, out = Path(data), Path(out)
    ensure_outside(out, data, "--out")
    index = load_index(data, manifest)
    records = [r for r in index.records if r.label is not None or r.status == "error"]
    if split != "all":
        records = [r for r in records if r.split in split.split(",")]
    records = sorted(records, key=lambda r: r.path)
    identity = json.loads(json.dumps({k: v for k, v in asdict(config).items() if k != "device"}))
    rows = _read_done(out, identity)
    atomic_write_json(out / TEXT_STATE, {"config": identity, "data": str(data.resolve())})
    todo = []
    for rec in records:
        if rec.path in rows:
            continue
        if rec.usable:
            todo.append(rec)
        else:
            rows[rec.path] = _row(rec, status="error", error=rec.message)

    def write() -> pd.DataFrame:
        ordered = [rows[r.path] for r in records if r.path in rows]
        table = pd.DataFrame(ordered, columns=TEXT_COLUMNS)
        with atomic_open(out / TEXT_CSV, "w", newline="", encoding="utf-8") as handle:
            table.to_csv(handle, index=False)
        return table

    def on_result(batch: list[ImageRecord], result: BatchResult) -> None:
        rows.update((row["path"], row) for row in result.rows)
        write()

    def on_failure(batch: list[ImageRecord], message: str) -> None:
        rows.update((rec.path, _row(rec, status="error", error=message)) for rec in batch)
        write()

    with open_executor(executor) as runner:
        spec = TextStep(str(index.root.resolve()), config)
        run_stage(runner, spec, todo, TEXT_BATCH, out, on_result, on_failure, progress)
    return write()
