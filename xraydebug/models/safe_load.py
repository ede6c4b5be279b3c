"""``torch.load(weights_only=True)`` with one clear error for every way a file can be bad."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from xraydebug.errors import CheckpointError


def load_weights_only(path: Path, what: str, hint: str) -> Any:
    """Load ``path`` safely; a missing, truncated, corrupted or code-carrying file raises
    :class:`CheckpointError` naming ``what`` (e.g. "checkpoint") and the first line of the cause.
    ``hint`` is appended to the not-found message."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable {what} (corrupted, truncated, or holds objects other than "
            f"tensors and plain values, which torch.load(weights_only=True) refuses: {first})"
        ) from exc
