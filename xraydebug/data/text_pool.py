"""A pool of burned-in text cut from films, to paste onto other films.

Used by the text-sensitivity test (:mod:`xraydebug.audit.text_sensitivity`) and by training
with ``decorrelate_text`` (:mod:`xraydebug.models.train`). Everything is in the model's input
frame: the film with its top ``crop_top`` rows dropped, resized to ``S x S``, float in [0, 1].
A donor is all the text of one film (its boxes and the pixels in them); pasting a donor puts
those pixels at the same place of another film.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xraydebug.data.markers import burn_marker
from xraydebug.data.records import ImageRecord
from xraydebug.data.torch_dataset import ImageCache

__all__ = [
    "Donor",
    "boxes_from_table",
    "detected_donors",
    "input_box",
    "paste",
    "paste_random",
    "placebo_donors",
    "rendered_donors",
]

Box = list[int]


@dataclass(frozen=True)
class Donor:
    """The text of one film in the model's input frame: ``boxes`` ``[x0, y0, x1, y1]`` (ends
    exclusive) and ``patches`` float32 ``(h, w)`` in [0, 1], the film's pixels in each box."""

    path: str
    boxes: list[Box]
    patches: list[np.ndarray]


def boxes_from_table(csv_path: Path | str) -> dict[str, list[Box]]:
    """Text boxes per image path from a ``scan.csv`` or ``cleaning.csv`` (columns ``path``,
    ``boxes`` as JSON; rows whose ``status``, where there is one, is not ``ok`` are left out, as
    are rows without a readable box list)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "status" in table:
        table = table[table["status"] == "ok"]
    out: dict[str, list[Box]] = {}
    for path, raw in zip(table["path"], table["boxes"], strict=True):
        try:
            boxes = json.loads(raw) if raw else []
        except json.JSONDecodeError:
            continue
        out[path] = [[int(v) for v in b] for b in boxes]
    return out


def input_box(box: Sequence[int], shape: tuple[int, int], size: int, crop_top: float) -> Box | None:
    """A box in original pixels -> the model's input frame (``size`` x ``size`` after the top
    ``crop_top`` rows are dropped), rounded outward; None when it falls in the dropped rows."""
    height, width = shape
    top = round(crop_top * height)
    x0, y0, x1, y1 = box
    if y1 <= top:
        return None
    sy, sx = size / (height - top), size / width
    out = [
        int(np.floor(x0 * sx)),
        int(np.floor(max(y0 - top, 0) * sy)),
        int(np.ceil(x1 * sx)),
        int(np.ceil((y1 - top) * sy)),
    ]
    out = [min(max(v, 0), size) for v in out]
    return out if out[2] - out[0] >= 1 and out[3] - out[1] >= 1 else None


def detected_donors(
    root: Path,
    records: Sequence[ImageRecord],
    boxes: dict[str, list[Box]],
    classes: Sequence[str],
    size: int,
    crop_top: float,
    max_donors: int,
    seed: int,
) -> list[Donor]:
    """Donors from the films of ``records`` with detected boxes (a seeded sample of at most
    ``max_donors``), cut from each film in the model's input frame."""
    with_text = [r for r in records if boxes.get(r.path)]
    rng = np.random.default_rng([seed, 1])
    if len(with_text) > max_donors:
        with_text = [with_text[i] for i in sorted(rng.choice(len(with_text), max_donors, False))]
    donors = []
    for start in range(0, len(with_text), 32):
        part = with_text[start : start + 32]
        cache = ImageCache.build(
            root, part, classes, size, crop_top, keep_originals=True, workers=2
        )
        for rec, image, original in zip(
            cache.records, cache.images, cache.originals or [], strict=True
        ):
            frame = image[0].float().numpy()
            kept = [input_box(b, original.shape, size, crop_top) for b in boxes[rec.path]]
            kept = [b for b in kept if b is not None]
            if kept:
                patches = [frame[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in kept]
                donors.append(Donor(rec.path, kept, patches))
    return donors


def rendered_donors(films: np.ndarray, n: int, seed: int) -> list[Donor]:
    """``n`` donors made by burning 1-2 rendered markers (letters, words, dates, site names;
    plain, labelled or grey; 3-7% of the side tall, at least 6 px) into seeded picks of ``films``
    float32 ``(N, S, S)`` in [0, 1]."""
    rng = np.random.default_rng([seed, 2])
    size = films.shape[-1]
    donors = []
    for k in range(n):
        film = films[int(rng.integers(len(films)))]
        boxes: list[Box] = []
        for _ in range(int(rng.integers(1, 3))):
            kind = str(rng.choice(["letter", "word", "date", "site"], p=[0.4, 0.3, 0.15, 0.15]))
            style = str(
                rng.choice(["plain", "white_box", "dark_box", "grey"], p=[0.5, 0.2, 0.1, 0.2])
            )
            cap = max(6.0, float(rng.uniform(0.03, 0.07) * size))
            film, marker = burn_marker(film, rng, kind=kind, style=style, cap_px=cap, avoid=boxes)
            if marker is not None:
                boxes.append(list(marker.box))
        if boxes:
            patches = [film[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in boxes]
            donors.append(Donor(f"rendered-{k}", boxes, patches))
    return donors


def paste(films: np.ndarray, donors: Sequence[Donor], picks: np.ndarray) -> np.ndarray:
    """Films ``(N, S, S)`` with donor ``picks[i]``'s patches pasted into film ``i`` (copies)."""
    out = films.copy()
    for i, d in enumerate(picks):
        donor = donors[int(d)]
        for (x0, y0, x1, y1), patch in zip(donor.boxes, donor.patches, strict=True):
            out[i, y0:y1, x0:x1] = patch
    return out


def placebo_donors(donors: Sequence[Donor], films: np.ndarray, sources: np.ndarray) -> list[Donor]:
    """For each donor, the same boxes cut from text-free film ``sources[k]`` of ``films``."""
    return [
        Donor(
            f"placebo-{k}",
            donor.boxes,
            [films[int(sources[k]), y0:y1, x0:x1].copy() for x0, y0, x1, y1 in donor.boxes],
        )
        for k, donor in enumerate(donors)
    ]


def paste_random(
    gray: torch.Tensor, donors: Sequence[Donor], probability: float, generator: torch.Generator
) -> torch.Tensor:
    """Training-time paste: each film of ``gray`` (B, 1, S, S) in [0, 1] gets a random donor's
    text with ``probability``, whatever its class. Random numbers from ``generator`` (CPU).
    Returns a new tensor; ``gray`` is not changed."""
    b = gray.shape[0]
    chosen = (torch.rand(b, generator=generator) < probability).tolist()
    picks = torch.randint(len(donors), (b,), generator=generator).tolist()
    out = gray.clone()
    for i in (i for i in range(b) if chosen[i]):
        donor = donors[picks[i]]
        for (x0, y0, x1, y1), patch in zip(donor.boxes, donor.patches, strict=True):
            out[i, 0, y0:y1, x0:x1] = torch.from_numpy(patch).to(out.device, out.dtype)
    return out
