"""File helpers: atomic output (write to a temporary file in the same directory, then
rename) and content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _default_mode() -> int:
    """What ``open()`` would give a new file: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_open(path: Path | str, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def ensure_outside(output: Path, data_root: Path, what: str = "output") -> None:
    """Raise ValueError if ``output`` lies inside ``data_root`` (inputs are never written)."""
    out = output.resolve()
    root = data_root.resolve()
    if out == root or out.is_relative_to(root):
        raise ValueError(f"{what} {output} is inside the input dataset {data_root}; choose another")


def resolves_inside(root: Path, relative: str) -> bool:
    """Whether ``root / relative`` resolves (symlinks followed) to a place inside ``root``.

    Raises ``OSError``/``RuntimeError`` when it cannot be resolved (a symlink loop); callers
    word that, and a path outside, as a one-line refusal of their own.
    """
    return (root / relative).resolve().is_relative_to(root.resolve())
