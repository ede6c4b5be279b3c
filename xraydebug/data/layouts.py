"""Dataset layout readers: COVIDx label files, folder per class, CSV manifest.

The multi-label public releases (NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG) are read by
:mod:`xraydebug.data.public_layouts`; :func:`detect_layout` and :func:`load_index` cover all.

Every reader returns a :class:`DatasetIndex` whose records include the broken entries
(``status='error'`` with a one-line reason) so that nothing is silently dropped. Readers only
list and stat files; they never open images (``inspect`` does) and never write under ``root``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from xraydebug.data.entries import check_inside, mark_duplicates
from xraydebug.data.labels import DEFAULT_CLASSES, normalize_label
from xraydebug.data.public_layouts import PUBLIC_LAYOUTS, check_uncertain, detect_public_layout
from xraydebug.data.records import (
    STATUS_ERROR,
    STATUS_WARNING,
    DatasetIndex,
    ImageRecord,
)
from xraydebug.errors import DatasetError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ""}
_LABEL_FILE = re.compile(r"^(train|val|test)(_COVIDx.*)?\.txt$", re.IGNORECASE)


def _label_error(token: str, classes: tuple[str, ...]) -> str:
    return f"unknown label {token!r} (expected one of {', '.join(classes)})"


def _label_files(root: Path) -> dict[str, Path]:
    """Map split -> label file, preferring ``train.txt`` over ``train_COVIDx*.txt``."""
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        match = _LABEL_FILE.match(path.name)
        if path.is_file() and match:
            split = match.group(1).lower()
            if split not in found or not match.group(2):
                found[split] = path
    return found


def parse_covidx_line(line: str) -> tuple[str, str, str | None, str, str]:
    """Parse one COVIDx label line into ``(patient_id, filename, label, source, label_token)``.

    Lines are whitespace separated ``patient_id filename label [source] [extra ...]``. The label is
    the first token after the filename that is a known class name (case-insensitive); the token
    after it is the source. ``label`` is None when no token is a class name; ``label_token`` then
    holds the third token for the error message. Raises ValueError when fewer than 3 tokens.
    """
    tokens = line.split()
    if len(tokens) < 3:
        raise ValueError(
            f"expected 'patient_id filename label [source]', got {len(tokens)} token(s)"
        )
    patient_id, filename = tokens[0], tokens[1]
    for k in range(2, len(tokens)):
        label = normalize_label(tokens[k])
        if label is not None:
            source = tokens[k + 1] if k + 1 < len(tokens) else ""
            return patient_id, filename, label, source, tokens[k]
    return patient_id, filename, None, "", tokens[2]


def read_covidx(root: Path, classes: tuple[str, ...] = DEFAULT_CLASSES) -> DatasetIndex:
    """COVIDx: ``root/{train,val,test}/`` images listed in ``root/{split}.txt`` label files."""
    records: list[ImageRecord] = []
    label_files = _label_files(root)
    for split in [s for s in SPLITS if s in label_files]:
        label_file = label_files[split]
        text = label_file.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), start=1):  # handles CRLF
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{label_file.name}:{lineno}"
            try:
                patient_id, filename, label, source, token = parse_covidx_line(line)
            except ValueError as exc:
                records.append(
                    ImageRecord(where, split, None, status=STATUS_ERROR, message=str(exc))
                )
                continue
            rel = f"{split}/{filename}"
            rec = ImageRecord(rel, split, label, source, patient_id)
            if label is None or label not in classes:
                rec = rec.with_problem(STATUS_ERROR, _label_error(token, classes))
            problem = check_inside(root, rel)
            if problem:
                rec = rec.with_problem(STATUS_ERROR, problem)
            records.append(rec)
    records = mark_duplicates(records)
    listed = {r.path for r in records}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not path.name.startswith(".") and rel not in listed:
                message = "image not listed in the label file (ignored)"
                records.append(
                    ImageRecord(rel, split, None, status=STATUS_WARNING, message=message)
                )
    return DatasetIndex(root=root, layout="covidx", classes=classes, records=records)


def _class_dirs(folder: Path, classes: tuple[str, ...]) -> list[tuple[Path, str]]:
    out = []
    for sub in sorted(folder.iterdir()):
        label = normalize_label(sub.name)
        if sub.is_dir() and label in classes:
            out.append((sub, label))
    return out


def read_folders(root: Path, classes: tuple[str, ...] = DEFAULT_CLASSES) -> DatasetIndex:
    """Folder per class: ``root/<split>/<class>/*`` or ``root/<class>/*`` (split ``train``).

    Patient ids are unknown in this layout: each image is its own group.
    """
    records: list[ImageRecord] = []
    split_dirs = [(root / s, s) for s in SPLITS if (root / s).is_dir()]
    if not split_dirs:
        split_dirs = [(root, "train")]
    for folder, split in split_dirs:
        for class_dir, label in _class_dirs(folder, classes):
            for path in sorted(class_dir.rglob("*")):
                if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if path.is_dir():
                    continue
                rel = path.relative_to(root).as_posix()
                rec = ImageRecord(rel, split, label)
                problem = check_inside(root, rel)
                if problem:
                    rec = rec.with_problem(STATUS_ERROR, problem)
                records.append(rec)
    return DatasetIndex(root=root, layout="folders", classes=classes, records=records)


def read_manifest(
    root: Path, manifest: Path, classes: tuple[str, ...] = DEFAULT_CLASSES
) -> DatasetIndex:
    """CSV manifest with columns ``path,label[,split,patient_id,source]``; paths relative to root.

    Rows without a split go to ``train``.
    """
    records: list[ImageRecord] = []
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(
                    f"{manifest}: manifest needs columns path,label[,split,patient_id,source]; "
                    f"missing {', '.join(sorted(missing))}"
                )
            rows = list(reader)
    except OSError as exc:
        raise DatasetError(f"{manifest}: cannot read manifest ({exc.strerror})") from exc
    for row in rows:
        rel = Path((row.get("path") or "").strip()).as_posix()
        token = (row.get("label") or "").strip()
        label = normalize_label(token)
        split = (row.get("split") or "train").strip().lower() or "train"
        rec = ImageRecord(
            rel,
            split,
            label,
            (row.get("source") or "").strip(),
            (row.get("patient_id") or "").strip(),
        )
        if label is None or label not in classes:
            rec = rec.with_problem(STATUS_ERROR, _label_error(token, classes))
        problem = check_inside(root, rel) if rel not in ("", ".") else "empty path"
        if problem:
            rec = rec.with_problem(STATUS_ERROR, problem)
        records.append(rec)
    records = mark_duplicates(records)
    return DatasetIndex(root=root, layout="manifest", classes=classes, records=records)


def detect_layout(root: Path) -> str:
    """Return the layout name of ``root`` (``nih``, ``chexpert``, ``mimic``, ``covidx`` or
    ``folders``); raise DatasetError when none fits."""
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory not found")
    public = detect_public_layout(root)
    if public is not None:
        return public
    if _label_files(root):
        return "covidx"
    candidates = [root] + [root / s for s in SPLITS if (root / s).is_dir()]
    if any(_class_dirs(folder, DEFAULT_CLASSES) for folder in candidates):
        return "folders"
    public_hints = ", ".join(layout.hint for layout in PUBLIC_LAYOUTS.values())
    raise DatasetError(
        f"{root}: no dataset layout found (expected train.txt/test.txt label files with "
        "train/ and test/ folders, class folders such as normal/ pneumonia/ COVID-19/, "
        f"{public_hints}, or pass --manifest FILE.csv)"
    )


_READERS: dict[str, Callable[[Path, tuple[str, ...]], DatasetIndex]] = {
    "covidx": read_covidx,
    "folders": read_folders,
}


def load_index(
    root: Path | str,
    manifest: Path | str | None = None,
    classes: Iterable[str] | None = None,
    *,
    uncertain: str | None = None,
) -> DatasetIndex:
    """Detect the layout of ``root`` (or use ``manifest``) and list its records.

    ``classes=None``: the layout's own (:data:`DEFAULT_CLASSES` for COVIDx, folders and
    manifests; the release's findings for the multi-label layouts). Given classes (a model's)
    select and order a multi-label layout's findings; one it lacks raises DatasetError.
    ``uncertain`` (``zeros`` | ``ones`` | ``ignore``) maps CheXpert/MIMIC uncertain labels;
    single-label layouts ignore it.
    """
    root = Path(root)
    check_uncertain(uncertain)
    single = DEFAULT_CLASSES if classes is None else tuple(classes)
    if manifest is not None:
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset directory not found")
        return read_manifest(root, Path(manifest), single)
    layout = detect_layout(root)
    if layout in PUBLIC_LAYOUTS:
        return PUBLIC_LAYOUTS[layout].read(root, classes, uncertain)
    return _READERS[layout](root, single)
