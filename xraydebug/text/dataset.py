"""``xraydebug text``: CRAFT text detection alone over a dataset -> ``text.csv``.

Columns: ``path,split,label,n_boxes,boxes,status,error``; ``boxes`` is JSON
``[[x0,y0,x1,y1],...]`` in original pixel coordinates (x1/y1 exclusive).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from xraydebug.data.imageio import read_image
from xraydebug.data.layouts import load_index
from xraydebug.errors import ImageReadError
from xraydebug.fsutil import atomic_open, ensure_outside
from xraydebug.text.detect import TextDetectConfig, detect_text

TEXT_COLUMNS = ["path", "split", "label", "n_boxes", "boxes", "status", "error"]


def detect_dataset(
    data: Path | str,
    out: Path | str = "runs/text",
    config: TextDetectConfig = TextDetectConfig(),
    split: str = "all",
    manifest: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Detect text in every readable image of ``data`` (or ``split``); write ``out/text.csv``."""
    data, out = Path(data), Path(out)
    ensure_outside(out, data, "--out")
    index = load_index(data, manifest)
    records = [r for r in index.records if r.label is not None or r.status == "error"]
    if split != "all":
        records = [r for r in records if r.split in split.split(",")]
    rows = []
    for i, rec in enumerate(sorted(records, key=lambda r: r.path), 1):
        row = {
            "path": rec.path,
            "split": rec.split,
            "label": rec.label or "",
            "n_boxes": "",
            "boxes": "",
            "status": "ok",
            "error": "",
        }
        try:
            if not rec.usable:
                raise ImageReadError(rec.message)
            image, _ = read_image(data / rec.path)
            boxes = detect_text([image], config)[0]
            row.update(n_boxes=len(boxes), boxes=json.dumps(boxes))
        except ImageReadError as exc:
            row.update(status="error", error=str(exc).removeprefix(f"{data / rec.path}: "))
        rows.append(row)
        if progress:
            progress(i, len(records))
    table = pd.DataFrame(rows, columns=TEXT_COLUMNS)
    with atomic_open(out / "text.csv", "w", newline="", encoding="utf-8") as handle:
        table.to_csv(handle, index=False)
    return table
