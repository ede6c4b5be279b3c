"""``xraydebug inspect``: read every image of a dataset once and report what is there.

Writes ``inspect.csv`` (columns :data:`INSPECT_COLUMNS`) and returns an :class:`InspectResult`
the CLI prints as a rich summary. Problems never abort the run; they become rows with
``status='error'`` or ``'warning'``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from xraydebug.data.imageio import read_image
from xraydebug.data.labels import NO_FINDING
from xraydebug.data.layouts import load_index
from xraydebug.data.records import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_WARNING,
    DatasetIndex,
    ImageRecord,
)
from xraydebug.errors import ImageReadError
from xraydebug.fsutil import atomic_open

INSPECT_COLUMNS = [
    "path",
    "split",
    "label",
    "source",
    "patient_id",
    "status",
    "message",
    "height",
    "width",
    "bit_depth",
    "format",
]


@dataclass
class InspectResult:
    """What ``inspect`` found; ``table`` has one row per record in :data:`INSPECT_COLUMNS`."""

    index: DatasetIndex
    table: pd.DataFrame
    csv_path: Path | None
    dataset_problems: list[str] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        """Images that were read and have a known label."""
        return int(((self.table["status"] != STATUS_ERROR) & (self.table["label"] != "")).sum())

    @property
    def problems(self) -> pd.DataFrame:
        return self.table[self.table["status"] != STATUS_OK]


def _probe(root: Path, record: ImageRecord) -> tuple[ImageRecord, dict, str | None]:
    """Read one image; return the (possibly downgraded) record, its size info, content hash."""
    info = {"height": None, "width": None, "bit_depth": None, "format": None}
    if record.status == STATUS_ERROR or record.label is None:
        return record, info, None
    path = root / record.path
    try:
        image, meta = read_image(path)
    except ImageReadError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        return record.with_problem(STATUS_ERROR, message), info, None
    info = {
        "height": meta.height,
        "width": meta.width,
        "bit_depth": meta.bit_depth,
        "format": meta.format,
    }
    for warning in meta.warnings:
        record = record.with_problem(STATUS_WARNING, warning)
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    return record, info, digest


def _dataset_checks(records: list[ImageRecord]) -> list[str]:
    """Leaks across splits: a patient or identical pixels in two splits."""
    problems = []
    splits_by_patient: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        if rec.patient_id and rec.usable:
            splits_by_patient[rec.patient_id].add(rec.split)
    leaked = sorted(p for p, s in splits_by_patient.items() if len(s) > 1)
    if leaked:
        shown = ", ".join(leaked[:5]) + (" ..." if len(leaked) > 5 else "")
        problems.append(f"{len(leaked)} patient(s) appear in more than one split: {shown}")
    return problems


def inspect_dataset(
    data: Path | str,
    out: Path | str | None = None,
    *,
    manifest: Path | str | None = None,
    classes: tuple[str, ...] | None = None,
    uncertain: str | None = None,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> InspectResult:
    """Read every image under ``data``; write ``out`` (CSV) when given.

    ``classes`` (None: the layout's own) and ``uncertain`` (CheXpert/MIMIC's -1 labels:
    ``zeros`` | ``ones`` | ``ignore``) go to :func:`load_index`. Multi-label records' ``label``
    column is their findings joined by ``|``. ``progress(done, total)`` is called after each
    image. Duplicate pixel content is reported as a warning on the later copies (an error-free
    leak check across splits is in ``dataset_problems``).
    """
    root = Path(data)
    index = load_index(root, manifest, classes, uncertain=uncertain)
    total = len(index.records)
    results: list[tuple[ImageRecord, dict, str | None]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, item in enumerate(pool.map(lambda r: _probe(root, r), index.records), 1):
            results.append(item)
            if progress:
                progress(done, total)
    first_with_digest: dict[str, ImageRecord] = {}
    rows = []
    records = []
    for record, info, digest in results:
        if digest is not None:
            first = first_with_digest.setdefault(digest, record)
            if first is not record:
                where = "" if first.split == record.split else f" (in split {first.split}: leak)"
                record = record.with_problem(STATUS_WARNING, f"same pixels as {first.path}{where}")
        records.append(record)
        rows.append(
            {
                "path": record.path,
                "split": record.split,
                "label": record.label or "",
                "source": record.source,
                "patient_id": record.patient_id,
                "status": record.status,
                "message": record.message,
                **info,
            }
        )
    index = replace(index, records=records)
    table = pd.DataFrame(rows, columns=INSPECT_COLUMNS)
    for column in ("height", "width", "bit_depth"):
        table[column] = table[column].astype("Int64")
    csv_path = None
    if out is not None:
        csv_path = Path(out)
        with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:
            table.to_csv(handle, index=False)
    return InspectResult(index, table, csv_path, _dataset_checks(records))


def summarize_counts(table: pd.DataFrame, *, multilabel: bool = False) -> pd.DataFrame:
    """Counts of readable images per split x label (rows) with a total column.

    ``multilabel``: one column per finding (a film counts once in each of its findings, split
    from the ``|``-joined label) and ``total`` is the number of films, not the column sum.
    """
    ok = table[table["status"] != STATUS_ERROR]
    if ok.empty:
        return pd.DataFrame()
    if not multilabel:
        counts = ok.groupby(["split", "label"]).size().unstack(fill_value=0)
        counts["total"] = counts.sum(axis=1)
        return counts
    ok = ok[ok["label"] != ""]  # skipped (unlisted) films
    if ok.empty:
        return pd.DataFrame()
    findings = ok.assign(label=ok["label"].str.split("|")).explode("label")
    counts = findings.groupby(["split", "label"]).size().unstack(fill_value=0)
    order = [c for c in counts.columns if c != NO_FINDING] + (
        [NO_FINDING] if NO_FINDING in counts.columns else []
    )
    counts = counts[order]
    counts["total"] = ok.groupby("split").size()
    return counts
