"""Multi-label public chest X-ray releases: NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG.

Each reader returns a :class:`DatasetIndex` with ``multilabel=True``: ``classes`` are finding
names and every record carries ``findings`` (1.0 present, 0.0 absent, NaN unknown) in that order,
with ``label`` the present findings joined by ``|`` (``No Finding`` when none). ``classes=None``
gives the layout's own findings; a caller (a model's findings) may ask for any subset, in any
order, and a finding the layout lacks is refused in one line.

Every record's ``source`` is the film's **view position** (``PA``, ``AP``, ``Lateral``, ...), so
the confounding check (source vs label) sees it. The view is a well-known shortcut in these sets:
portable films, taken at the bedside of patients too sick to stand, are AP, and so AP films carry
more effusions, lines and tubes than PA ones, whatever the lungs show.

The readers read each label file once with pandas and walk the image tree once (a map of relative
paths); no per-row filesystem search. Like the other readers they never open images and never
write under ``root``; bad rows become ``status='error'`` records with a one-line reason.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xraydebug.data.entries import check_inside, mark_duplicates
from xraydebug.data.labels import NO_FINDING, UNCERTAIN_POLICIES, findings_label
from xraydebug.data.records import (
    STATUS_ERROR,
    STATUS_WARNING,
    DatasetIndex,
    ImageRecord,
)
from xraydebug.errors import DatasetError

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 NIH ChestX-ray14 findings in the official order (Wang et al. 2017)."""

CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations in CheXpert's column order (Irvin et al. 2019); MIMIC-CXR's
``-chexpert.csv`` / ``-negbio.csv`` carry the same ones (in another column order: read by name).
``No Finding`` is one of them, as in the released labels and the models trained on them."""

NIH_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}
CHEXPERT_FILES = {"train.csv": "train", "valid.csv": "test", "test.csv": "test"}
MIMIC_METADATA = "mimic-cxr-2.0.0-metadata"
MIMIC_LABELS = ("mimic-cxr-2.0.0-chexpert", "mimic-cxr-2.0.0-negbio")
MIMIC_SPLIT = "mimic-cxr-2.0.0-split"
MIMIC_SPLITS = {"train": "train", "validate": "val", "test": "test"}

_PATIENT = re.compile(r"(patient\d+)")


_SYNONYMS = {"pleural effusion": "effusion"}
"""Finding names that differ between releases for the same finding (CheXpert's and MIMIC's
"Pleural Effusion" is NIH's "Effusion"); no layout has both."""


def _key(name: str) -> str:
    """Finding names compare case-insensitively, with spaces, ``_`` and ``-`` alike, and
    through :data:`_SYNONYMS`."""
    key = re.sub(r"[\s_\-]+", " ", name.strip()).casefold()
    return _SYNONYMS.get(key, key)


# --------------------------------------------------------------------------- files and tree


@dataclass
class _Tree:
    """One walk of the files below ``root/under`` (hidden names skipped, symlinks not followed):
    existence checks are set lookups, and only symlinks, ``..`` and paths outside the walked
    part take the exact (slower) :func:`check_inside`."""

    root: Path
    under: str = ""
    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)

    @classmethod
    def walk(cls, root: Path, under: str = "") -> _Tree:
        tree = cls(root, under)
        stack = [under]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = os.scandir(root / rel_dir if rel_dir else root)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    try:
                        if entry.is_symlink():
                            tree.links.add(rel)
                        elif entry.is_dir(follow_symlinks=False):
                            tree.dirs.add(rel)
                            stack.append(rel)
                        elif entry.is_file(follow_symlinks=False):
                            tree.files.add(rel)
                        else:
                            tree.others.add(rel)
                    except OSError:
                        tree.others.add(rel)
        return tree

    def by_name(self) -> dict[str, list[str]]:
        """File name -> relative paths (regular files and symlinks)."""
        names: dict[str, list[str]] = defaultdict(list)
        for rel in sorted(self.files | self.links):
            names[rel.rsplit("/", 1)[-1]].append(rel)
        return names

    def _linked(self, rel: str) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:k]) in self.links for k in range(1, len(parts) + 1))

    def problem(self, rel: str) -> str | None:
        """Like :func:`check_inside`: None when ``root/rel`` is a regular file inside root."""
        if rel in self.files:
            return None
        if not rel or rel == ".":
            return "empty path"
        wrapped = f"/{rel}/"
        odd = "//" in wrapped or "/." in wrapped  # absolute, "", ., .. or hidden components
        outside_walk = bool(self.under) and not rel.startswith(f"{self.under}/")
        if odd or outside_walk or (self.links and self._linked(rel)):
            return check_inside(self.root, rel)
        if rel in self.dirs or rel in self.others:
            return "not a regular file"
        return "file not found"


def _csv_file(root: Path, stem: str) -> Path | None:
    """``root/stem.csv``, else ``root/stem.csv.gz``, else None."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (root / name).is_file():
            return root / name
    return None


def _read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    """All cells as stripped-header strings (blank = ``""``); ``.csv.gz`` decompressed; extra
    and unnamed trailing columns kept; a missing required column -> DatasetError."""
    try:
        with warnings.catch_warnings():  # rows longer than the header: extra cells dropped
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except (OSError, ValueError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: cannot read CSV ({reason})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(list(frame.columns)[:12])
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (found: {found})")
    return frame.fillna("")


def _column(frame: pd.DataFrame, name: str) -> list[str]:
    """The stripped cells of ``name``, or blanks when the file has no such column."""
    if name not in frame.columns:
        return [""] * len(frame)
    return [str(v).strip() for v in frame[name].tolist()]


def _read_list(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return {line.strip() for line in text.splitlines() if line.strip()}


# --------------------------------------------------------------------------- findings


def select_findings(
    root: Path, title: str, own: tuple[str, ...], classes: Iterable[str] | None
) -> tuple[tuple[str, ...], list[int]]:
    """The index's classes and, for each, its column in ``own`` (the layout's findings).

    ``classes=None``: the layout's own. Otherwise the caller's names, in the caller's order and
    spelling (matched case-insensitively, ``_`` = space); a name the layout lacks raises
    DatasetError in one line.
    """
    if classes is None:
        return own, list(range(len(own)))
    wanted = tuple(classes)
    if not wanted:
        raise DatasetError(
            f"{root}: no findings requested (the {title} layout has: {', '.join(own)})"
        )
    by_key = {_key(name): k for k, name in enumerate(own)}
    columns = []
    for name in wanted:
        if _key(name) not in by_key:
            raise DatasetError(
                f"{root}: the {title} layout has no finding {name!r} (it has: {', '.join(own)})"
            )
        columns.append(by_key[_key(name)])
    twice = sorted({n for n, c in zip(wanted, columns, strict=True) if columns.count(c) > 1})
    if twice:
        raise DatasetError(f"{root}: finding(s) requested twice: {', '.join(twice)}")
    return wanted, columns


def check_uncertain(uncertain: str | None) -> None:
    """Raise DatasetError unless ``uncertain`` is None or a name of UNCERTAIN_POLICIES."""
    if uncertain is not None and uncertain not in UNCERTAIN_POLICIES:
        raise DatasetError(
            f"--uncertain must be one of {'|'.join(UNCERTAIN_POLICIES)}; got {uncertain!r}"
        )


@dataclass
class _Observations:
    """One label file's observation columns: ``raw`` (n, C) with 1/0/-1 (blank read as 0) and
    NaN where a cell is not one of those; ``bad`` row -> one-line reason."""

    path: Path
    raw: np.ndarray
    bad: dict[int, str]

    @property
    def n_uncertain(self) -> int:
        return int((self.raw == -1).sum())

    def values(self, uncertain: str | None) -> np.ndarray:
        values = self.raw.copy()
        if uncertain is not None:
            values[self.raw == -1] = UNCERTAIN_POLICIES[uncertain]
        return values


_VALID = (1.0, 0.0, -1.0)


def _observations(path: Path, frame: pd.DataFrame, columns: list[str]) -> _Observations:
    """CheXpert labeller output: 1.0 positive, 0.0 negative, -1.0 uncertain, blank not
    mentioned (read as negative, as CheXpert's own training does)."""
    raw = np.zeros((len(frame), len(columns)), dtype=np.float64)
    bad: dict[int, str] = {}
    for k, name in enumerate(columns):
        cells = frame[name].astype(str)
        blank = cells.eq("")
        numbers = pd.to_numeric(cells, errors="coerce").astype(np.float64)
        suspect = ~blank & ~numbers.isin(_VALID)
        if suspect.any():  # spaces around a value: strip only those cells
            cells = cells.where(~suspect, cells[suspect].str.strip())
            blank = cells.eq("")
            numbers[suspect] = pd.to_numeric(cells[suspect], errors="coerce")
        invalid = ~blank & ~numbers.isin(_VALID)
        raw[:, k] = np.where(blank, 0.0, numbers.to_numpy(dtype=np.float64))
        raw[invalid.to_numpy(), k] = np.nan
        for row in np.flatnonzero(invalid.to_numpy()):
            bad.setdefault(
                int(row),
                f"{path.name}: {name} = {cells.iloc[row]!r} (expected 1.0, 0.0, -1.0 or blank)",
            )
    return _Observations(path, raw, bad)


def _refuse_uncertain(parsed: list[_Observations], uncertain: str | None) -> None:
    """Uncertain labels need a stated policy: one line naming the file(s) and the counts."""
    if uncertain is not None:
        return
    counts = [(p.path, p.n_uncertain) for p in parsed if p.n_uncertain]
    if counts:
        where = ", ".join(f"{path}: {n} uncertain label(s) (-1)" for path, n in counts)
        raise DatasetError(
            f"{where} in the selected findings; choose a policy with "
            f"--uncertain {'|'.join(UNCERTAIN_POLICIES)}"
        )


_Labelled = tuple[tuple[float, ...], str]
"""A record's ``findings`` and ``label``."""
_Problem = tuple[str, str]
"""A status (warning / error) and its one-line reason."""


class _Labeller:
    """``findings`` tuple and ``label`` text of each row of a (n, C) matrix of 1/0/NaN: worked
    out once per distinct row (a few hundred in a release), shared by the rows alike."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def rows(self, values: np.ndarray) -> list[_Labelled]:
        if len(values) == 0:
            return []
        codes = np.where(np.isnan(values), 3, values + 1).astype(np.int64)  # -1, 0, 1, NaN
        if codes.shape[1] <= 31:  # one int64 per row (base 4): a fast 1-D unique
            codes = codes @ (4 ** np.arange(codes.shape[1], dtype=np.int64))
        _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
        distinct = []
        for row in values[first].tolist():
            findings = tuple(row)
            distinct.append((findings, findings_label(findings, self.names)))
        return [distinct[j] for j in inverse.reshape(-1).tolist()]


def _record(
    rel: str,
    split: str,
    view: str,
    patient: str,
    outcome: _Labelled | str,
    problems: Iterable[_Problem | None] = (),
    skipped: bool = False,
) -> ImageRecord:
    """One record at once (no chain of copies): ``outcome`` is the labelled findings or the
    reason there are none; ``skipped`` leaves the label out (never usable)."""
    found = [p for p in problems if p is not None]
    if isinstance(outcome, str):
        found.insert(0, (STATUS_ERROR, outcome))
        findings, label = None, None
    else:
        findings, label = (None, None) if skipped else outcome
    if not found:
        return ImageRecord(rel, split, label, view, patient, findings=findings)
    if len(found) == 1:
        status, message = found[0]
    else:
        status = STATUS_ERROR if any(s == STATUS_ERROR for s, _ in found) else STATUS_WARNING
        message = "; ".join(m for _, m in found)
    return ImageRecord(rel, split, label, view, patient, status, message, findings)


# --------------------------------------------------------------------------- NIH ChestX-ray14


def _nih_csv(root: Path) -> Path | None:
    """``Data_Entry_2017*.csv`` at root; of several (``_v2020``), the last by name."""
    found = sorted(p for p in root.glob("Data_Entry_2017*.csv") if p.is_file())
    return found[-1] if found else None


def _parse_nih_labels(text: str) -> tuple[float, ...] | str:
    """NIH ``Finding Labels`` -> a 0/1 vector over :data:`NIH_FINDINGS`, or an error message."""
    by_key = {_key(name): k for k, name in enumerate(NIH_FINDINGS)}
    vector = [0.0] * len(NIH_FINDINGS)
    for token in (t.strip() for t in text.split("|")):
        if _key(token) == _key(NO_FINDING):
            continue
        if not token:
            return f"empty finding in Finding Labels {text!r}"
        if _key(token) not in by_key:
            return (
                f"unknown finding {token!r} in Finding Labels (not one of the 14 NIH findings "
                f"or {NO_FINDING!r})"
            )
        vector[by_key[_key(token)]] = 1.0
    return tuple(vector)


def read_nih(
    root: Path, classes: Iterable[str] | None = None, uncertain: str | None = None
) -> DatasetIndex:
    """NIH ChestX-ray14: ``Data_Entry_2017*.csv`` plus images anywhere below ``root``.

    Columns used: ``Image Index`` (a file name, looked up in one walk of the tree: the release
    spreads the PNGs over ``images_001/images/`` ... ``images_012/images/``; a name found twice
    is an error for that record), ``Finding Labels`` (findings joined by ``|``, or
    ``No Finding``), ``Patient ID``, ``View Position`` (the record's ``source``: ``PA``/``AP``).
    Other columns (the release's odd ``OriginalImage[Width``, ``Height]`` and a nameless trailing
    one) are ignored. ``train_val_list.txt`` / ``test_list.txt`` give splits ``train`` / ``test``
    (the official patient-wise split); an image in neither is split ``train`` when neither list
    exists, else a warning record (split ``unlisted``) and skipped. NIH has no uncertain labels:
    ``uncertain`` is accepted and unused. A finding of the release outside the requested
    ``classes`` is simply not reported.
    """
    check_uncertain(uncertain)
    root = Path(root)
    csv_path = _nih_csv(root)
    if csv_path is None:
        raise DatasetError(f"{root}: no Data_Entry_2017*.csv (NIH ChestX-ray14 labels)")
    names, columns = select_findings(root, "NIH ChestX-ray14", NIH_FINDINGS, classes)
    frame = _read_csv(csv_path, required=("Image Index", "Finding Labels"))
    lists = {s: _read_list(root / f) for s, f in NIH_LISTS.items() if (root / f).is_file()}
    tree = _Tree.walk(root)
    by_name = tree.by_name()
    labeller = _Labeller(names)
    parsed: dict[str, _Labelled | str] = {}
    records: list[ImageRecord] = []
    rows = zip(
        _column(frame, "Image Index"),
        _column(frame, "Finding Labels"),
        _column(frame, "Patient ID"),
        _column(frame, "View Position"),
        strict=True,
    )
    for lineno, (image, text, patient, view) in enumerate(rows, start=2):
        if not image:
            where = f"{csv_path.name}:{lineno}"
            records.append(_record(where, "", view, patient, "empty Image Index"))
            continue
        if text not in parsed:
            vector = _parse_nih_labels(text)
            parsed[text] = (
                vector
                if isinstance(vector, str)
                else labeller.rows(np.array([[vector[c] for c in columns]], dtype=float))[0]
            )
        split, split_problem = _nih_split(image, lists)
        rel, problem = _nih_path(tree, by_name, image)
        skipped = split == "unlisted"
        error = (STATUS_ERROR, problem) if problem else None
        records.append(
            _record(rel, split, view, patient, parsed[text], (split_problem, error), skipped)
        )
    records = mark_duplicates(records)
    return DatasetIndex(root, "nih", names, records, multilabel=True)


def _nih_split(image: str, lists: dict[str, set[str]]) -> tuple[str, tuple[str, str] | None]:
    if not lists:
        return "train", None
    in_train = image in lists.get("train", ())
    in_test = image in lists.get("test", ())
    if in_test and in_train:
        return "test", (
            STATUS_WARNING,
            f"in both {NIH_LISTS['train']} and {NIH_LISTS['test']} (taken as test)",
        )
    if in_test or in_train:
        return ("test" if in_test else "train"), None
    named = " or ".join(NIH_LISTS[s] for s in ("train", "test") if s in lists)
    return "unlisted", (STATUS_WARNING, f"not in {named} (skipped)")


def _nih_path(tree: _Tree, by_name: dict[str, list[str]], image: str) -> tuple[str, str | None]:
    """Relative path of an ``Image Index`` and the reason it cannot be used (None if fine)."""
    if "/" in image or "\\" in image:  # not the release's form; taken as a path below root
        rel = image.replace("\\", "/")
        return rel, tree.problem(rel)
    found = by_name.get(image, [])
    if not found:
        return image, "file not found below the dataset directory"
    if len(found) > 1:
        shown = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        return image, f"file name found {len(found)} times below the dataset ({shown})"
    return found[0], tree.problem(found[0])


# --------------------------------------------------------------------------- CheXpert


def _chexpert_files(root: Path) -> list[Path]:
    return [root / name for name in CHEXPERT_FILES if (root / name).is_file()]


def _has_chexpert_header(path: Path) -> bool:
    """A ``Path`` column and at least one CheXpert observation column."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return False
    columns = {c.strip().strip('"') for c in header.split(",")}
    return "Path" in columns and bool(columns & set(CHEXPERT_OBSERVATIONS))


class _ChexpertPaths:
    """CheXpert's ``Path`` is relative to the folder above the dataset as released
    (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``). Decided once per
    (first, second) component: a first component that is a folder under root is kept; one that
    is root's own name is stripped; one that is not, while the second (``train``, ``valid``) is a
    folder under root, is stripped too (a renamed or cleaned copy); else the path is taken
    relative to root's parent when that exists there (and then refused: it is outside root),
    or relative to root (not found)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = {root.name, root.resolve().name}
        self._decided: dict[tuple[str, str], str] = {}

    def __call__(self, path: str) -> str:
        path = path.replace("\\", "/")
        parts = path.split("/")
        key = (parts[0], parts[1] if len(parts) > 2 else "")
        if key not in self._decided:
            self._decided[key] = self._decide(*key)
        how = self._decided[key]
        if how == "strip":
            return "/".join(parts[1:])
        if how == "parent":
            return "../" + path
        return path

    def _decide(self, first: str, second: str) -> str:
        if not second or first in ("", ".", "..") or (self.root / first).is_dir():
            return "keep"
        if first in self.names or (self.root / second).is_dir():
            return "strip"
        if (self.root.parent / first).is_dir():
            return "parent"
        return "keep"


def _chexpert_view(frontal_lateral: str, ap_pa: str) -> str:
    """``Lateral`` for lateral films, else the ``AP/PA`` value (``Frontal`` when blank)."""
    if frontal_lateral.lower() == "lateral":
        return "Lateral"
    return ap_pa or frontal_lateral


def read_chexpert(
    root: Path, classes: Iterable[str] | None = None, uncertain: str | None = None
) -> DatasetIndex:
    """CheXpert v1.0 / v1.0-small: ``train.csv``, ``valid.csv`` (and a ``test.csv`` if present).

    Columns: ``Path`` (see :class:`_ChexpertPaths`), ``Sex``, ``Age``, ``Frontal/Lateral``,
    ``AP/PA`` (the record's ``source``: ``AP``, ``PA`` or ``Lateral``), then the 14
    observations of :data:`CHEXPERT_OBSERVATIONS` as 1.0 / 0.0 / -1.0 / blank. Blank (not
    mentioned in the report) is negative, as in the CheXpert paper's training; -1 (uncertain)
    follows ``uncertain`` (``zeros`` | ``ones`` | ``ignore`` -> 0 / 1 / NaN), and when any
    selected finding is -1 with no policy the whole dataset is refused in one line.

    Splits: ``train.csv`` -> ``train``; ``valid.csv`` -> ``test``, because CheXpert's small
    validation set (234 films, labelled by radiologists rather than by the report labeller that
    made train's labels, patients not in train) is in practice its held-out test: the official
    test set was kept hidden for the competition, and published work reports on ``valid``.
    Using it for model selection would leave nothing to test on; validation (early stopping)
    is split from train by patient instead. A ``test.csv`` (the later-released test labels)
    also maps to ``test``. Patient id is the ``patientNNNNN`` component of the path.
    """
    check_uncertain(uncertain)
    root = Path(root)
    files = _chexpert_files(root)
    if not files:
        raise DatasetError(f"{root}: no train.csv/valid.csv (CheXpert labels)")
    names, columns = select_findings(root, "CheXpert", CHEXPERT_OBSERVATIONS, classes)
    selected = [CHEXPERT_OBSERVATIONS[c] for c in columns]
    frames = [_read_csv(path, required=("Path", *selected)) for path in files]
    parsed = [_observations(p, f, selected) for p, f in zip(files, frames, strict=True)]
    _refuse_uncertain(parsed, uncertain)
    tree = _Tree.walk(root)
    resolve = _ChexpertPaths(root)
    labeller = _Labeller(names)
    records: list[ImageRecord] = []
    for path, frame, obs in zip(files, frames, parsed, strict=True):
        split = CHEXPERT_FILES[path.name]
        labelled = labeller.rows(obs.values(uncertain))
        rows = zip(
            _column(frame, "Path"),
            _column(frame, "Frontal/Lateral"),
            _column(frame, "AP/PA"),
            strict=True,
        )
        for i, (given, frontal_lateral, ap_pa) in enumerate(rows):
            view = _chexpert_view(frontal_lateral, ap_pa)
            if not given:
                records.append(_record(f"{path.name}:{i + 2}", split, view, "", "empty Path"))
                continue
            rel = resolve(given)
            match = _PATIENT.search(given)
            problem = tree.problem(rel)
            records.append(
                _record(
                    rel,
                    split,
                    view,
                    match.group(1) if match else "",
                    obs.bad.get(i) or labelled[i],
                    [(STATUS_ERROR, problem) if problem else None],
                )
            )
    records = mark_duplicates(records)
    return DatasetIndex(root, "chexpert", names, records, multilabel=True)


# --------------------------------------------------------------------------- MIMIC-CXR-JPG


def _mimic_labels_file(root: Path) -> Path | None:
    for stem in MIMIC_LABELS:
        found = _csv_file(root, stem)
        if found is not None:
            return found
    return None


def read_mimic(
    root: Path, classes: Iterable[str] | None = None, uncertain: str | None = None
) -> DatasetIndex:
    """MIMIC-CXR-JPG: ``mimic-cxr-2.0.0-metadata.csv`` lists the films (``dicom_id``,
    ``subject_id``, ``study_id``, ``ViewPosition`` = the record's ``source``), labels per study
    come from ``mimic-cxr-2.0.0-chexpert.csv`` (else ``-negbio.csv``: the same 14 observations,
    1/0/-1/blank, read by column name, with the same ``uncertain`` policy as CheXpert) and
    ``mimic-cxr-2.0.0-split.csv`` gives ``train``/``validate``/``test`` -> ``train``/``val``/
    ``test`` (a film it does not list: warning, skipped; no split file: all ``train``). Each may
    be ``.csv.gz`` as PhysioNet ships them. Films are
    ``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``; patient id is
    ``subject_id``.
    """
    check_uncertain(uncertain)
    root = Path(root)
    meta_path = _csv_file(root, MIMIC_METADATA)
    if meta_path is None:
        raise DatasetError(f"{root}: no {MIMIC_METADATA}.csv(.gz) (MIMIC-CXR-JPG metadata)")
    labels_path = _mimic_labels_file(root)
    if labels_path is None:
        raise DatasetError(
            f"{root}: MIMIC-CXR-JPG labels not found (expected {MIMIC_LABELS[0]}.csv(.gz) or "
            f"{MIMIC_LABELS[1]}.csv(.gz))"
        )
    names, columns = select_findings(root, "MIMIC-CXR-JPG", CHEXPERT_OBSERVATIONS, classes)
    selected = [CHEXPERT_OBSERVATIONS[c] for c in columns]
    labels = _read_csv(labels_path, required=("subject_id", "study_id", *selected))
    obs = _observations(labels_path, labels, selected)
    _refuse_uncertain([obs], uncertain)
    labelled = _Labeller(names).rows(obs.values(uncertain))
    meta = _read_csv(meta_path, required=("dicom_id", "subject_id", "study_id"))
    split_path = _csv_file(root, MIMIC_SPLIT)
    splits: dict[str, str] | None = None
    if split_path is not None:
        table = _read_csv(split_path, required=("dicom_id", "split"))
        splits = dict(zip(_column(table, "dicom_id"), _column(table, "split"), strict=True))
    study_keys = list(zip(_column(labels, "subject_id"), _column(labels, "study_id"), strict=True))
    counts = Counter(study_keys)
    row_of = {key: i for i, key in enumerate(study_keys)}
    tree = _Tree.walk(root, "files")
    records: list[ImageRecord] = []
    rows = zip(
        _column(meta, "dicom_id"),
        _column(meta, "subject_id"),
        _column(meta, "study_id"),
        _column(meta, "ViewPosition"),
        strict=True,
    )
    for lineno, (dicom, subject, study, view) in enumerate(rows, start=2):
        if not (dicom and subject.isdigit() and study.isdigit()):
            where = f"{meta_path.name}:{lineno}"
            message = (
                f"expected dicom_id and numeric subject_id, study_id; got "
                f"{dicom!r}, {subject!r}, {study!r}"
            )
            records.append(_record(where, "", view, subject, message))
            continue
        rel = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
        split, split_problem = _mimic_split(dicom, splits, split_path)
        row = row_of.get((subject, study))
        outcome: _Labelled | str
        if row is None:
            outcome = f"study s{study} has no row in {labels_path.name}"
        elif counts[(subject, study)] > 1:
            outcome = f"study s{study} has {counts[(subject, study)]} rows in {labels_path.name}"
        else:
            outcome = obs.bad.get(row) or labelled[row]
        problem = tree.problem(rel)
        error = (STATUS_ERROR, problem) if problem else None
        skipped = split_problem is not None and split_problem[0] == STATUS_WARNING
        records.append(_record(rel, split, view, subject, outcome, (split_problem, error), skipped))
    records = mark_duplicates(records)
    return DatasetIndex(root, "mimic", names, records, multilabel=True)


def _mimic_split(
    dicom: str, splits: dict[str, str] | None, split_path: Path | None
) -> tuple[str, tuple[str, str] | None]:
    if splits is None or split_path is None:
        return "train", None
    given = splits.get(dicom)
    if given is None:
        return "unlisted", (STATUS_WARNING, f"not in {split_path.name} (skipped)")
    if given.lower() not in MIMIC_SPLITS:
        expected = ", ".join(MIMIC_SPLITS)
        return "unlisted", (
            STATUS_ERROR,
            f"unknown split {given!r} in {split_path.name} (expected {expected})",
        )
    return MIMIC_SPLITS[given.lower()], None


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class PublicLayout:
    """One multi-label release: how to recognise it, read it and which files carry its labels."""

    name: str
    title: str
    findings: tuple[str, ...]
    detect: Callable[[Path], bool]
    read: Callable[[Path, Iterable[str] | None, str | None], DatasetIndex]
    label_files: Callable[[Path], list[Path]]
    hint: str
    """What ``detect_layout``'s error message says to look for."""


def _nih_label_files(root: Path) -> list[Path]:
    lists = [root / f for f in NIH_LISTS.values() if (root / f).is_file()]
    return sorted(p for p in root.glob("Data_Entry_2017*.csv") if p.is_file()) + lists


def _mimic_label_files(root: Path) -> list[Path]:
    stems = (MIMIC_METADATA, *MIMIC_LABELS, MIMIC_SPLIT)
    return [
        root / f"{s}{ext}"
        for s in stems
        for ext in (".csv", ".csv.gz")
        if (root / f"{s}{ext}").is_file()
    ]


PUBLIC_LAYOUTS: dict[str, PublicLayout] = {
    layout.name: layout
    for layout in (
        PublicLayout(
            "nih",
            "NIH ChestX-ray14",
            NIH_FINDINGS,
            lambda root: _nih_csv(root) is not None,
            read_nih,
            _nih_label_files,
            "Data_Entry_2017*.csv (NIH ChestX-ray14)",
        ),
        PublicLayout(
            "chexpert",
            "CheXpert",
            CHEXPERT_OBSERVATIONS,
            lambda root: any(_has_chexpert_header(p) for p in _chexpert_files(root)),
            read_chexpert,
            _chexpert_files,
            "train.csv/valid.csv with Path and observation columns (CheXpert)",
        ),
        PublicLayout(
            "mimic",
            "MIMIC-CXR-JPG",
            CHEXPERT_OBSERVATIONS,
            lambda root: _csv_file(root, MIMIC_METADATA) is not None,
            read_mimic,
            _mimic_label_files,
            f"{MIMIC_METADATA}.csv(.gz) (MIMIC-CXR-JPG)",
        ),
    )
}
"""The multi-label layouts by name, in detection order."""


def detect_public_layout(root: Path) -> str | None:
    """The name of the multi-label layout of ``root``, or None."""
    for layout in PUBLIC_LAYOUTS.values():
        if layout.detect(root):
            return layout.name
    return None
