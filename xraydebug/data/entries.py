"""Checks every layout reader makes of the entries it lists: does the file exist inside the
dataset, and is it listed twice."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from xraydebug.data.records import STATUS_ERROR, STATUS_WARNING, ImageRecord
from xraydebug.fsutil import resolves_inside


def check_inside(root: Path, relative: str) -> str | None:
    """Return an error message if ``root/relative`` is missing or resolves outside ``root``."""
    candidate = root / relative
    try:
        inside = resolves_inside(root, relative)
    except (OSError, RuntimeError) as exc:  # symlink loops
        return f"cannot resolve path ({exc})"
    if not inside:
        return "path resolves outside the dataset directory (refused)"
    if not candidate.exists():
        return "file not found"
    if not candidate.is_file():
        return "not a regular file"
    return None


def mark_duplicates(records: list[ImageRecord]) -> list[ImageRecord]:
    """Entries listed more than once: conflicting labels -> error on all; same label -> keep one."""
    by_path: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_path[rec.path].append(i)
    out: list[ImageRecord] = []
    for i, rec in enumerate(records):
        indices = by_path[rec.path]
        if len(indices) == 1:
            out.append(rec)
            continue
        labels = {records[j].label for j in indices}
        if len(labels) > 1:
            shown = " vs ".join(sorted(label or "an unknown label" for label in labels))
            out.append(
                rec.with_problem(STATUS_ERROR, f"listed twice with conflicting labels ({shown})")
            )
        elif i == indices[0]:
            out.append(rec.with_problem(STATUS_WARNING, f"listed {len(indices)} times"))
    return out
