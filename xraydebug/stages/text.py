"""``xraydebug text``: text detection alone over a dataset -> ``text.csv``.

Columns (:data:`~xraydebug.runfolder.TEXT_COLUMNS`): ``path,split,label,n_boxes,boxes,status,
error``; ``boxes`` is JSON ``[[x0,y0,x1,y1],...]`` in original pixel coordinates (x1/y1
exclusive). Run by the shared driver (:mod:`xraydebug.stages.driver`): ``text.csv`` is
rewritten atomically after every batch, and a rerun with the same settings keeps the rows
already done (the settings are in ``.xraydebug-text.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xraydebug.data.imageio import read_image
from xraydebug.data.labels import LABELS_UNUSED
from xraydebug.data.layouts import load_index
from xraydebug.data.records import STATUS_ERROR, DatasetIndex, ImageRecord
from xraydebug.errors import ImageReadError
from xraydebug.executor import BatchResult, Executor, ExecutorConfig, readable_root
from xraydebug.fsutil import ensure_outside
from xraydebug.runfolder import TEXT_COLUMNS, TEXT_CSV, TEXT_STATE
from xraydebug.stages import driver
from xraydebug.stages.options import DetectingConfig
from xraydebug.text import DetectorConfig, detector_config

__all__ = ["TextConfig", "TextStage", "TextStep", "detect_dataset"]


@dataclass(frozen=True)
class TextConfig(DetectingConfig):
    """Settings of a text-detection pass: the detector's config, the precision of its
    networks (``fp32``, ``bf16``, ``auto``), the images (``split``), ``batch_size`` images
    handed to a worker at a time, and the ``device``."""

    detector: DetectorConfig = field(default_factory=detector_config)
    precision: str = "fp32"
    split: str = "all"
    batch_size: int = 8
    device: str = "auto"


def text_row(rec: ImageRecord, **values: Any) -> dict[str, Any]:
    """A ``text.csv`` row of ``rec`` (``values`` fill the other columns)."""
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
    config: TextConfig

    @property
    def device(self) -> str:
        return self.config.step_device()

    def build(self) -> Callable[[list[ImageRecord]], BatchResult]:
        root = readable_root(self.root)
        detector = self.config.text_detector().load()

        def step(records: list[ImageRecord]) -> BatchResult:
            result = BatchResult([])
            readable, images = [], []
            for rec in records:
                try:
                    images.append(read_image(root / rec.path)[0])
                    readable.append(rec)
                except ImageReadError as exc:
                    reason = str(exc).removeprefix(f"{root / rec.path}: ")
                    result.rows.append(text_row(rec, status=STATUS_ERROR, error=reason))
                    result.errors.append(str(exc))
            found = detector.detect(images) if images else []
            for rec, boxes in zip(readable, found, strict=True):
                result.rows.append(text_row(rec, n_boxes=len(boxes), boxes=json.dumps(boxes)))
            return result

        return step


class TextStage(driver.Stage):
    """Text detection over a dataset, declared for :func:`xraydebug.stages.driver.run`."""

    name = "text detection"
    table_file = TEXT_CSV
    state_file = TEXT_STATE
    columns = TEXT_COLUMNS

    def __init__(
        self,
        index: DatasetIndex,
        config: TextConfig,
        *,
        records: list[ImageRecord] | None = None,
    ) -> None:
        self.index, self.config, self.records = index, config, records

    def select(self) -> list[ImageRecord]:
        if self.records is not None:
            return sorted(self.records, key=lambda r: r.path)
        return self.index.select(split=self.config.split)

    def identity(self) -> dict[str, Any]:
        resolved = self.config.resolved()
        return {k: v for k, v in resolved.items() if k not in ("split", "batch_size", "device")}

    def record(self) -> dict[str, Any]:
        return {"config": self.config.resolved(), "data": str(self.index.root.resolve())}

    def step(self) -> TextStep:
        return TextStep(str(self.index.root.resolve()), self.config)

    def batch_size(self, device: Any) -> int:
        return self.config.batch_size

    def error_row(self, record: ImageRecord, message: str) -> dict[str, Any]:
        return text_row(record, status=STATUS_ERROR, error=message)


def detect_dataset(
    data: Path | str,
    out: Path | str = "runs/text",
    *,
    config: TextConfig | None = None,
    manifest: Path | str | None = None,
    progress: driver.Progress | None = None,
    executor: ExecutorConfig | Executor | None = None,
) -> pd.DataFrame:
    """Detect text in every readable image of ``data`` (or ``config.split``); write
    ``out/text.csv`` and return its table.

    ``executor``: where the batches run (:mod:`xraydebug.executor`; default this process).
    """
    data, out = Path(data), Path(out)
    ensure_outside(out, data, "--out")
    # labels play no part in finding text: uncertain ones need no policy here
    index = load_index(data, manifest, uncertain=LABELS_UNUSED)
    stage = TextStage(index, config or TextConfig())
    return driver.run(stage, out, executor=executor, progress=progress).table
