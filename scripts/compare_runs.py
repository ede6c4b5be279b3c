"""Compare two run folders (e.g. two ``xraydebug demo --out X`` runs) file by file.

    python scripts/compare_runs.py A B [--files scan/scan.csv data-clean/cleaning.csv ...]

Each entry of ``--files`` is a path relative to both folders, or a glob (``**`` allowed) that
expands to every match in either folder. The default covers what the demo writes: the scan table,
the cleaning table, the retrain comparison, the text-sensitivity results of both models, and every
saliency mask.

How files are compared, by suffix:

* ``.csv``: exactly (same columns in the same order, same rows, same strings, read as text);
  the first differing cells are printed.
* ``.json``: recursively; numbers equal within ``--json-tol`` (absolute), strings, booleans and
  nulls exactly. Keys matching ``--ignore-keys`` are skipped (timings, the machine, hashes of
  checkpoints, which embed the training time, and the paths of the run folders themselves); a
  pattern matches a key's name or its dotted path (``repeats.models``), with shell wildcards.
  In the remaining strings the path of each run folder reads ``<run>``, so a warning that names
  a file of the run compares equal between two folders.
* ``.npz``: same array names and shapes, numeric arrays within ``--npz-tol`` (max abs diff),
  others exactly.
* anything else: byte for byte.

A file missing on either side is a difference. Prints one line per file (``same`` or the
differences), then ``N files compared, M differ``; exits 0 when none differ, 1 otherwise and
2 when A or B is not a folder.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_FILES: tuple[str, ...] = (
    "scan/scan.csv",
    "data-clean/cleaning.csv",
    "retrain/before_after.json",
    "retrain/text_sensitivity/before/text_sensitivity.json",
    "retrain/text_sensitivity/after/text_sensitivity.json",
    "scan/masks/**/*.npz",
)
DEFAULT_IGNORE_KEYS: tuple[str, ...] = (
    # timings, machine and library versions, dates
    "seconds",
    "*_seconds",
    "timings",
    "machine",
    "versions",
    "torch_version",
    "created",
    # hashes of checkpoint files: a checkpoint records its training time, so it never repeats
    "baseline.sha256",
    "retrained.sha256",
    "model_sha256",
    # paths of the run's own files and folders (absolute, so they differ between run folders)
    "baseline.path",
    "retrained.path",
    "data",
    "model",
    "scan_dir",
    "repeats.models",
)
JSON_TOL = 1e-9
NPZ_TOL = 1e-5
MAX_SHOWN = 5  # differences printed per file


@dataclass
class FileResult:
    """The comparison of one file: what differs (empty: same) and which JSON keys were skipped."""

    name: str
    differences: list[str] = field(default_factory=list)
    ignored: set[str] = field(default_factory=set)

    @property
    def same(self) -> bool:
        return not self.differences

    def line(self) -> str:
        """``name: same`` or ``name: differs: ...``, plus the keys that were ignored."""
        shown = self.differences[:MAX_SHOWN]
        more = len(self.differences) - len(shown)
        text = "same" if self.same else "differs: " + "; ".join(shown)
        if more > 0:
            text += f"; ... {more} more"
        if self.ignored:
            text += f" (ignored keys: {', '.join(sorted(self.ignored))})"
        return f"{self.name}: {text}"


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def compare_csv(path_a: Path, path_b: Path) -> list[str]:
    """Differences between two CSV tables read as strings: columns, row count, then cells."""
    a = pd.read_csv(path_a, dtype=str, keep_default_na=False)
    b = pd.read_csv(path_b, dtype=str, keep_default_na=False)
    if list(a.columns) != list(b.columns):
        only_a = [c for c in a.columns if c not in b.columns]
        only_b = [c for c in b.columns if c not in a.columns]
        detail = f"only in A {only_a}, only in B {only_b}" if only_a or only_b else "other order"
        return [f"columns differ ({detail}): A {list(a.columns)}, B {list(b.columns)}"]
    out = []
    if len(a) != len(b):
        out.append(f"{len(a)} rows in A, {len(b)} in B")
    n = min(len(a), len(b))
    va, vb = a.to_numpy()[:n], b.to_numpy()[:n]
    rows, cols = np.nonzero(va != vb)
    first = a.columns[0] if len(a.columns) else None
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        where = f"row {r + 1}" + (f" ({first}={va[r, 0]!r})" if c != 0 else "")
        out.append(f"{where} column {a.columns[c]!r}: {va[r, c]!r} != {vb[r, c]!r}")
    if len(rows) > MAX_SHOWN:
        out.insert(0, f"{len(rows)} cells differ")
    return out


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _numbers_equal(x: float, y: float, tol: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= tol


def _ignored(key: str, dotted: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(dotted, p) for p in patterns)


def compare_values(
    a: Any,
    b: Any,
    *,
    where: str = "",
    tol: float = JSON_TOL,
    ignore: Sequence[str] = DEFAULT_IGNORE_KEYS,
    ignored: set[str] | None = None,
) -> list[str]:
    """Differences between two parsed JSON values; the dotted paths of skipped keys (list
    indices as ``[*]``) are added to ``ignored``."""
    ignored = ignored if ignored is not None else set()
    label = where or "(top)"
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            dotted = f"{where}.{key}" if where else str(key)
            if _ignored(str(key), dotted, ignore):
                ignored.add(re.sub(r"\[\d+\]", "[*]", dotted))
            elif key not in b:
                out.append(f"{dotted}: only in A")
            elif key not in a:
                out.append(f"{dotted}: only in B")
            else:
                out += compare_values(
                    a[key], b[key], where=dotted, tol=tol, ignore=ignore, ignored=ignored
                )
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{label}: {len(a)} items in A, {len(b)} in B"]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += compare_values(
                x, y, where=f"{where}[{i}]", tol=tol, ignore=ignore, ignored=ignored
            )
        return out
    if _is_number(a) and _is_number(b):
        return [] if _numbers_equal(float(a), float(b), tol) else [f"{label}: {a!r} != {b!r}"]
    if type(a) is not type(b) or a != b:
        return [f"{label}: {a!r} != {b!r}"]
    return []


def _run_prefix_pattern(run: Path) -> re.Pattern[str]:
    """Matches the run folder's path (absolute, resolved, or as given when relative) where it
    stands as a whole path component inside a string."""
    forms = {str(run.absolute()), str(run.resolve())}
    if not run.is_absolute() and run.parts:
        forms.add(str(run))
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<![\w./-])(?:{alternatives})(?![\w.-])")


def relativise(value: Any, run: Path) -> Any:
    """``value`` (parsed JSON) with the path of ``run`` replaced by ``<run>`` in every string."""
    pattern = _run_prefix_pattern(run)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return pattern.sub("<run>", v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


# --------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------


def compare_npz(path_a: Path, path_b: Path, tol: float = NPZ_TOL) -> list[str]:
    """Differences between two ``.npz`` files: array names, shapes, then values."""
    with np.load(path_a, allow_pickle=False) as za, np.load(path_b, allow_pickle=False) as zb:
        keys_a, keys_b = set(za.files), set(zb.files)
        out = [f"array {k!r} only in A" for k in sorted(keys_a - keys_b)]
        out += [f"array {k!r} only in B" for k in sorted(keys_b - keys_a)]
        for key in sorted(keys_a & keys_b):
            x, y = za[key], zb[key]
            if x.shape != y.shape:
                out.append(f"{key}: shape {x.shape} in A, {y.shape} in B")
                continue
            numeric = all(np.issubdtype(v.dtype, np.number) or v.dtype == bool for v in (x, y))
            if not numeric:
                if not np.array_equal(x, y):
                    out.append(f"{key}: values differ")
                continue
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            nan_x, nan_y = np.isnan(x64), np.isnan(y64)
            if not np.array_equal(nan_x, nan_y):
                out.append(f"{key}: NaN at different places")
                continue
            both = ~nan_x
            with np.errstate(invalid="ignore"):  # inf - inf
                diff = np.abs(x64[both] - y64[both])
            diff[x64[both] == y64[both]] = 0.0  # equal infinities
            worst = float(diff.max()) if diff.size else 0.0
            if not worst <= tol:
                out.append(f"{key}: max abs diff {worst:.3g} > {tol:g}")
    return out


# --------------------------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------------------------


def _compare_bytes(path_a: Path, path_b: Path) -> list[str]:
    return [] if path_a.read_bytes() == path_b.read_bytes() else ["contents differ"]


def compare_file(
    name: str,
    run_a: Path,
    run_b: Path,
    *,
    ignore: Sequence[str] = DEFAULT_IGNORE_KEYS,
    json_tol: float = JSON_TOL,
    npz_tol: float = NPZ_TOL,
) -> FileResult:
    """Compare ``run_a / name`` with ``run_b / name`` by the rules of its suffix."""
    result = FileResult(name)
    path_a, path_b = run_a / name, run_b / name
    missing = [side for side, p in (("A", path_a), ("B", path_b)) if not p.is_file()]
    if missing:
        result.differences.append(f"missing in {' and '.join(missing)}")
        return result

    def json_diff(a: Path, b: Path) -> list[str]:
        values = [
            relativise(json.loads(p.read_text(encoding="utf-8")), run)
            for p, run in ((a, run_a), (b, run_b))
        ]
        return compare_values(*values, tol=json_tol, ignore=ignore, ignored=result.ignored)

    comparers: dict[str, Callable[[Path, Path], list[str]]] = {
        ".csv": compare_csv,
        ".json": json_diff,
        ".npz": lambda a, b: compare_npz(a, b, npz_tol),
    }
    compare = comparers.get(Path(name).suffix.lower(), _compare_bytes)
    try:
        result.differences += compare(path_a, path_b)
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # unreadable on one side
        result.differences.append(f"could not compare: {type(exc).__name__}: {exc}")
    return result


def expand(patterns: Sequence[str], run_a: Path, run_b: Path) -> list[str]:
    """File names relative to the runs: plain entries as given, globs as the union of their
    matches in both runs (a glob that matches nothing stays, and will be reported missing)."""
    names: list[str] = []
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?["):
            found = [pattern]
        else:
            hits = {
                p.relative_to(run).as_posix()
                for run in (run_a, run_b)
                for p in run.glob(pattern)
                if p.is_file()
            }
            found = sorted(hits) or [pattern]
        names += [n for n in found if n not in names]
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare the output files of two run folders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_a", type=Path, help="first run folder (A)")
    parser.add_argument("run_b", type=Path, help="second run folder (B)")
    parser.add_argument(
        "--files",
        nargs="+",
        default=list(DEFAULT_FILES),
        help="files or globs relative to both folders",
    )
    parser.add_argument(
        "--ignore-keys",
        nargs="*",
        default=list(DEFAULT_IGNORE_KEYS),
        help="JSON key names or dotted paths to skip (shell wildcards); none: compare all",
    )
    parser.add_argument("--json-tol", type=float, default=JSON_TOL, help="JSON number tolerance")
    parser.add_argument("--npz-tol", type=float, default=NPZ_TOL, help="npz max abs difference")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit code (0 all same, 1 some differ, 2 bad folders)."""
    args = _parser().parse_args(argv)
    bad = [str(p) for p in (args.run_a, args.run_b) if not p.is_dir()]
    if bad:
        print(f"not a folder: {', '.join(bad)}; expected two run folders", file=sys.stderr)
        return 2
    names = expand(args.files, args.run_a, args.run_b)
    n_differ = 0
    for name in names:
        result = compare_file(
            name,
            args.run_a,
            args.run_b,
            ignore=args.ignore_keys,
            json_tol=args.json_tol,
            npz_tol=args.npz_tol,
        )
        n_differ += not result.same
        print(result.line())
    print(f"{len(names)} files compared, {n_differ} differ")
    return 1 if n_differ else 0


if __name__ == "__main__":
    sys.exit(main())
