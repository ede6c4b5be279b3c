"""The files of a run folder: the one module that names and reads them.

Every stage writes into an output folder, and the report, the analyses and resumed runs read
those folders back. The names and column lists here are the contracts of DESIGN.md section 7;
no other module spells them.

=========================  ================================================================
``scan.csv``               scan: one row per image and explained target (:data:`SCAN_COLUMNS`)
``run.json``               scan: resolved config, versions, model hash, timings; its
                           ``identity`` is the scan's state (a rerun with the same resumes)
``masks/<path>.npz``       scan: ``deletion`` / ``insertion`` masks and ``target``
``text.csv``               text: one row per image (:data:`TEXT_COLUMNS`)
``.xraydebug-text.json``   text: state (identity and resolved config)
``cleaning.csv``           clean: one row per image (:data:`CLEANING_COLUMNS`)
``.xraydebug-clean.json``  clean: state (identity and resolved config)
``before_after.json/csv``  retrain: the comparison
``text_sensitivity.json``  evaluate --text-sensitivity: the test's result (and ``text/``,
                           its own text detection pass when no boxes are given)
``metrics.json``           evaluate: metrics; ``predictions.csv`` its predictions
``report.html``            every stage: the audit report
=========================  ================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_open

__all__ = [
    "BEFORE_AFTER_CSV",
    "BEFORE_AFTER_JSON",
    "CLEANING_COLUMNS",
    "CLEANING_CSV",
    "CLEAN_STATE",
    "EXAMPLES_FILE",
    "MASKS_DIR",
    "METRICS_JSON",
    "PREDICTIONS_CSV",
    "REPORT_HTML",
    "RUN_JSON",
    "SCAN_COLUMNS",
    "SCAN_CSV",
    "TEXT_COLUMNS",
    "TEXT_CSV",
    "TEXT_PASS_DIR",
    "TEXT_SENSITIVITY_JSON",
    "TEXT_STATE",
    "load_masks",
    "mask_filename",
    "read_json",
    "read_scan_csv",
    "read_table",
    "write_table",
]

SCAN_CSV = "scan.csv"
RUN_JSON = "run.json"
MASKS_DIR = "masks"
TEXT_CSV = "text.csv"
TEXT_STATE = ".xraydebug-text.json"
CLEANING_CSV = "cleaning.csv"
CLEAN_STATE = ".xraydebug-clean.json"
BEFORE_AFTER_JSON = "before_after.json"
BEFORE_AFTER_CSV = "before_after.csv"
TEXT_SENSITIVITY_JSON = "text_sensitivity.json"
TEXT_PASS_DIR = "text"  # text sensitivity: its own text detection pass (a text folder)
EXAMPLES_FILE = "text_sensitivity_examples.png"  # text sensitivity: contact sheet
METRICS_JSON = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"
REPORT_HTML = "report.html"

SCAN_COLUMNS = [
    "path",
    "split",
    "label",
    "source",
    "pred",
    "prob",
    "mass_in_text",
    "text_area",
    "text_reveal_prob",
    "flagged",
    "n_boxes",
    "boxes",
    "deletion_auc",
    "insertion_auc",
    "mask_file",
    "status",
    "error",
    "target",
    "target_prob",
    "iterations",
    "second_look_boxes",
    "text_removed_prob",
]
TEXT_COLUMNS = ["path", "split", "label", "n_boxes", "boxes", "status", "error"]
CLEANING_COLUMNS = [
    "path",
    "n_boxes",
    "boxes",
    "changed",
    "status",
    "error",
    "text_remains",
    "remaining_boxes",
    "passes",
]

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


def mask_filename(path: str, target: str | None = None) -> str:
    """``train/a b.png`` -> ``masks/train/a b.png.npz`` (relative to the scan folder); with a
    ``target`` (scans that explain several targets of an image) ``masks/train/a b.png.<target>.npz``
    (``/`` in the target becomes ``_``)."""
    suffix = f".{target.replace('/', '_')}" if target is not None else ""
    return f"{MASKS_DIR}/{path}{suffix}.npz"


def load_masks(scan_dir: Path | str, mask_file: str) -> dict[str, np.ndarray]:
    """The arrays saved for one image (``deletion``, maybe ``insertion``, ``target``)."""
    with np.load(Path(scan_dir) / mask_file) as archive:
        return {key: archive[key] for key in archive.files}


def read_table(csv_path: Path | str) -> pd.DataFrame:
    """A stage's CSV as strings (empty cells stay ``""``)."""
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False)


def write_table(csv_path: Path | str, table: pd.DataFrame) -> None:
    """Write ``table`` to ``csv_path`` atomically (no index column)."""
    with atomic_open(Path(csv_path), "w", newline="", encoding="utf-8") as handle:
        table.to_csv(handle, index=False)


def read_json(path: Path | str, default: Any = None) -> Any:
    """The JSON document at ``path``, or ``default`` when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def read_scan_csv(csv_path: Path | str) -> pd.DataFrame:
    """``scan.csv`` as strings, with ``flagged`` normalised to "true"/"false"/"" whichever way
    it was saved (this tool writes true/false; pandas and spreadsheets write True/False, 1/0).
    Any other value raises :class:`DatasetError` naming the file, row and value."""
    csv_path = Path(csv_path)
    table = read_table(csv_path)
    if "flagged" in table:
        raw = table["flagged"].str.strip().str.lower()
        bad = ~raw.isin(_TRUE | _FALSE | {""})
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetError(
                f"{csv_path}: row {i + 2} ({table['path'].iloc[i]}): flagged is "
                f"{table['flagged'].iloc[i]!r}, not true/false"
            )
        table["flagged"] = np.where(raw.isin(_TRUE), "true", np.where(raw == "", "", "false"))
    return table
