"""Reading ``scan.csv`` back, however it was saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xraydebug.errors import DatasetError

__all__ = ["read_scan_csv"]

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


def read_scan_csv(csv_path: Path | str) -> pd.DataFrame:
    """``scan.csv`` as strings, with ``flagged`` normalised to "true"/"false"/"" whichever way
    it was saved (this tool writes true/false; pandas and spreadsheets write True/False, 1/0).
    Any other value raises :class:`DatasetError` naming the file, row and value."""
    csv_path = Path(csv_path)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
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
