"""Synthetic multi-label films in the NIH ChestX-ray14 layout, with a planted text shortcut.

The same renderer as :mod:`xraydebug.data.synth`, but every film carries a *set* of findings,
each present independently with probability ``prevalence``:

* ``Consolidation``: one lobar consolidation (the single-label set's pneumonia lesion);
* ``Infiltration``: bilateral peripheral lower-zone ground glass (its COVID-19 lesion).

Burned-in text is tied to ``Infiltration`` in train (``P(text | Infiltration) = shortcut``,
``P(text | no Infiltration) = 1 - shortcut``) and independent of the findings in test
(``P(text) = 0.5``). The view position (``AP``/``PA``) is drawn per patient, independent of
everything else.

Layout, as NIH released it: ``Data_Entry_2017.csv`` with the release's header (its odd
``OriginalImage[Width,Height]`` columns included), images under ``images_001/images/`` named
``{patient:08d}_{follow-up:03d}.png``, and the official split files ``train_val_list.txt`` and
``test_list.txt``. ``ground_truth.json`` maps each image's path (relative to the root) to its
``findings``, ``has_text``, ``boxes``, ``patient_id``, ``view`` and ``split``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xraydebug.data.labels import NO_FINDING
from xraydebug.data.synth import (
    burn_text,
    encode_png,
    iter_rendered,
    prepare_out_dir,
    render_radiograph,
    tight_boxes,
    to_uint8,
)
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

FINDING_LESIONS: dict[str, str] = {"Consolidation": "pneumonia", "Infiltration": "COVID-19"}
"""Each synthetic finding and the renderer's lesion that shows it."""
SHORTCUT_FINDING = "Infiltration"
IMAGE_DIR = "images_001/images"
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
_VIEWS = ("PA", "AP")


@dataclass(frozen=True)
class NihSynthConfig:
    """Settings of one synthetic multi-label set (``ground_truth.json``'s ``_config``)."""

    n_train: int = 600
    n_test: int = 300
    size: int = 512
    seed: int = 0
    shortcut: float = 0.9
    prevalence: float = 0.35
    text: bool = True
    lesion_strength: float = 1.0
    pose_jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.n_train < 0 or self.n_test < 0 or self.n_train + self.n_test == 0:
            raise ValueError("n_train and n_test must be >= 0 with at least one image")
        if self.size < 64:
            raise ValueError(f"size must be at least 64 pixels; got {self.size}")
        if not 0.0 <= self.lesion_strength <= 2.0 or not 0.0 <= self.pose_jitter <= 3.0:
            raise ValueError(
                f"lesion_strength must be in [0, 2] and pose_jitter in [0, 3]; got "
                f"{self.lesion_strength}, {self.pose_jitter}"
            )
        if not 0.0 <= self.shortcut <= 1.0 or not 0.0 < self.prevalence < 1.0:
            raise ValueError(
                f"shortcut must be in [0, 1] and prevalence in (0, 1); got {self.shortcut}, "
                f"{self.prevalence}"
            )


@dataclass(frozen=True)
class NihSynthRecord:
    """One planned film: ``path`` relative to the root, its findings, view and text."""

    split: str
    index: int
    path: str
    patient: int
    follow_up: int
    findings: tuple[str, ...]
    view: str
    has_text: bool

    @property
    def label(self) -> str:
        return "|".join(self.findings) if self.findings else NO_FINDING


def plan_nih(config: NihSynthConfig) -> list[NihSynthRecord]:
    """Every film, train then test: patients of 1-3 films (one view each), findings drawn per
    film, and an exact ``round(P(text) * n)`` films with text per (split, shortcut finding)."""
    records: list[NihSynthRecord] = []
    patient = 0
    for code, (split, n) in enumerate((("train", config.n_train), ("test", config.n_test))):
        rng = np.random.default_rng([config.seed, code, 104729])
        planned: list[tuple[int, int, tuple[str, ...], str]] = []
        while len(planned) < n:
            patient += 1
            view = _VIEWS[int(rng.integers(2))]
            for follow_up in range(min(int(rng.choice([1, 2, 3])), n - len(planned))):
                present = rng.random(len(FINDING_LESIONS)) < config.prevalence
                findings = tuple(f for f, p in zip(FINDING_LESIONS, present, strict=True) if p)
                planned.append((patient, follow_up, findings, view))
        text = np.zeros(n, dtype=bool)
        for has in (True, False):
            idx = np.array([i for i, p in enumerate(planned) if (SHORTCUT_FINDING in p[2]) == has])
            p_text = 0.5 if split == "test" else config.shortcut if has else 1 - config.shortcut
            k = round(p_text * len(idx)) if config.text else 0
            if k:
                text[rng.choice(idx, size=k, replace=False)] = True
        records.extend(
            NihSynthRecord(
                split, i, f"{IMAGE_DIR}/{pid:08d}_{fu:03d}.png", pid, fu, found, view, bool(t)
            )
            for i, ((pid, fu, found, view), t) in enumerate(zip(planned, text, strict=True))
        )
    return records


def _render(args: tuple[NihSynthConfig, NihSynthRecord, str]) -> tuple[str, list[list[int]]]:
    config, record, out = args
    seq = np.random.SeedSequence([config.seed, 11 + (record.split == "test"), record.index])
    anatomy_rng, text_rng = (np.random.default_rng(s) for s in seq.spawn(2))
    lesions = tuple(FINDING_LESIONS[f] for f in record.findings) or ("normal",)
    clean = to_uint8(
        render_radiograph(
            anatomy_rng,
            config.size,
            lesions,
            lesion_strength=config.lesion_strength,
            pose_jitter=config.pose_jitter,
        )
    )
    image, boxes = clean, []
    if record.has_text:
        with_text, raw = burn_text(clean.astype(np.float32) / 255.0, text_rng, site=None)
        image = to_uint8(with_text)
        boxes = tight_boxes(clean, image, raw)
    atomic_write_bytes(Path(out) / record.path, encode_png(image))
    return record.path, boxes


def _data_entry(records: list[NihSynthRecord], size: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for r in records:
        age = 20 + (r.patient * 37) % 60
        sex = "MF"[r.patient % 2]
        row = [Path(r.path).name, r.label, r.follow_up, r.patient, age, sex, r.view, size, size]
        writer.writerow([*row, 0.143, 0.143])
    return NIH_HEADER + "\n" + buffer.getvalue()


def synthesize_nih(
    out_dir: Path | str,
    config: NihSynthConfig = NihSynthConfig(),
    *,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the set to ``out_dir``; returns per split the films, the films with each finding
    and those with text (also kept in ``ground_truth.json``'s ``_counts``)."""
    start = time.perf_counter()
    out = Path(out_dir)
    records = plan_nih(config)
    prepare_out_dir(out, overwrite)
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / IMAGE_DIR.split("/")[0], ignore_errors=True)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(records) >= 64 else 1
    boxes: dict[str, list[list[int]]] = {}
    tasks = [(config, r, str(out)) for r in records]
    for done, (path, found) in enumerate(iter_rendered(_render, tasks, workers), start=1):
        boxes[path] = found
        if progress:
            progress(done, len(records))
    counts: dict[str, dict[str, int]] = {}
    truth: dict[str, Any] = {}
    for r in records:
        row = counts.setdefault(
            r.split, {"n": 0, "with_text": 0, **dict.fromkeys(FINDING_LESIONS, 0)}
        )
        row["n"] += 1
        row["with_text"] += int(r.has_text)
        for finding in r.findings:
            row[finding] += 1
        truth[r.path] = {
            "findings": list(r.findings),
            "has_text": r.has_text,
            "boxes": boxes[r.path],
            "patient_id": str(r.patient),
            "view": r.view,
            "split": r.split,
        }
    truth["_config"] = {**asdict(config), "layout": "nih"}
    truth["_counts"] = counts
    atomic_write_text(out / "Data_Entry_2017.csv", _data_entry(records, config.size))
    for split, name in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        names = [Path(r.path).name for r in records if r.split == split]
        atomic_write_text(out / name, "".join(f"{n}\n" for n in names))
    atomic_write_json(out / "ground_truth.json", truth)
    return {"counts": counts, "seconds": time.perf_counter() - start}
