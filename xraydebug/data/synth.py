"""Synthetic COVIDx-style chest radiographs with a planted burned-in-text shortcut.

Every image is drawn from scratch (numpy + OpenCV, no per-pixel Python loops): a dark
background, a body silhouette, two lung fields with tapered apices, domed hemidiaphragms and
costophrenic angles, posterior and anterior ribs, clavicles, a mediastinum and heart shadow
bulging to image right, spine, trachea, vascular markings, then random pose, gamma, contrast,
blur and film grain. The class signal lives inside the lungs:

* ``normal``: nothing;
* ``pneumonia``: one lobar consolidation (a dense fuzzy patch in one lung, mostly middle/lower);
* ``COVID-19``: bilateral, peripheral, lower-zone ground-glass opacities.

Text markers ("L", "PORTABLE", site stamps, dates, ...) are burned in with Pillow and DejaVu fonts.
In train, ``P(text | COVID-19) = shortcut`` and ``P(text | other) = 1 - shortcut``; in test
``P(text) = 0.5`` for every class. ``OUT/ground_truth.json`` records, per image, the label,
whether it has text and the tight text boxes ``[x0, y0, x1, y1]`` (x1, y1 exclusive).

Determinism: each image has its own ``np.random.default_rng`` seeded from ``(seed, split,
index)``, so the output is byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from xraydebug.data.fonts import font, font_paths, render_text
from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "SPLITS",
    "RenderedImage",
    "SynthConfig",
    "SynthRecord",
    "SynthSummary",
    "burn_text",
    "contact_sheet",
    "encode_png",
    "iter_rendered",
    "lesion_mask",
    "plan_dataset",
    "prepare_out_dir",
    "render_radiograph",
    "render_record",
    "synthesize",
    "tight_boxes",
    "to_uint8",
]

SPLITS: tuple[str, ...] = ("train", "test")
_SPLIT_CODE = {"train": 0, "test": 1}
_KNOWN_LABELS = ("normal", "pneumonia", "COVID-19")
SOURCES: tuple[str, ...] = ("site-a", "site-b", "site-c")
_SITE_NAMES = {"site-a": "ST MARY HOSP", "site-b": "CITY GENERAL", "site-c": "NORTH CLINIC"}
_PARALLEL_MIN_IMAGES = 64  # below this, a process pool costs more than it saves


@dataclass(frozen=True)
class SynthConfig:
    """Settings of one synthetic data set (written to ``ground_truth.json`` as ``_config``).

    ``shortcut``: in train, P(text | COVID-19) = shortcut and P(text | other class) =
    1 - shortcut; in test P(text) = 0.5 for every class. The number of images with text per
    (split, class) is the rounded expectation, so small sets still show the planted rates.

    A harder setting (``benchmarks/train_bench.py``): ``text=False`` burns no text at all;
    ``lesion_strength`` scales the class lesions' intensity (1: the default, clearly visible;
    0.3: subtle); ``pose_jitter`` scales the range of rotation, scale and shift of each film
    (anatomical variation the model must look past).
    """

    n_train: int = 600
    n_test: int = 300
    size: int = 512
    seed: int = 0
    shortcut: float = 0.9
    classes: tuple[str, ...] = ("normal", "pneumonia", "COVID-19")
    class_fractions: tuple[float, ...] = (0.4, 0.3, 0.3)
    text: bool = True
    lesion_strength: float = 1.0
    pose_jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.n_train < 0 or self.n_test < 0 or self.n_train + self.n_test == 0:
            raise ValueError(
                f"n_train and n_test must be >= 0 with at least one image; "
                f"got n_train={self.n_train}, n_test={self.n_test}"
            )
        if self.size < 64:
            raise ValueError(f"size must be at least 64 pixels; got {self.size}")
        if not 0.0 <= self.shortcut <= 1.0:
            raise ValueError(f"shortcut must be a probability in [0, 1]; got {self.shortcut}")
        unknown = [c for c in self.classes if c not in _KNOWN_LABELS]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(
                f"classes must be distinct names from {list(_KNOWN_LABELS)}; got {self.classes}"
            )
        if not 0.0 <= self.lesion_strength <= 2.0 or not 0.0 <= self.pose_jitter <= 3.0:
            raise ValueError(
                f"lesion_strength must be in [0, 2] and pose_jitter in [0, 3]; got "
                f"{self.lesion_strength}, {self.pose_jitter}"
            )
        if len(self.class_fractions) != len(self.classes):
            raise ValueError(
                f"class_fractions needs one value per class ({len(self.classes)}); "
                f"got {len(self.class_fractions)}"
            )
        if any(f < 0 for f in self.class_fractions) or sum(self.class_fractions) <= 0:
            raise ValueError(
                f"class_fractions must be non-negative with a positive sum; "
                f"got {self.class_fractions}"
            )

    def text_probability(self, split: str, label: str) -> float:
        """P(text | split, label): the planted shortcut in train, 0.5 in test (0 without
        ``text``)."""
        if not self.text:
            return 0.0
        if split == "test":
            return 0.5
        return self.shortcut if label == "COVID-19" else 1.0 - self.shortcut


@dataclass(frozen=True)
class SynthRecord:
    """One planned image: where it goes and what it shows (``index`` counts within the split)."""

    split: str
    index: int
    patient_id: str
    filename: str
    label: str
    source: str
    has_text: bool

    @property
    def key(self) -> str:
        """``split/filename``, the key in ``ground_truth.json``."""
        return f"{self.split}/{self.filename}"


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote: ``counts[split][label] = {"n": int, "with_text": int}``."""

    out_dir: Path
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class RenderedImage:
    """One rendered image as 8-bit arrays ``(size, size)``: without and with its text."""

    clean: np.ndarray
    image: np.ndarray
    boxes: list[list[int]]


# --------------------------------------------------------------------------------------------
# Planning: patients, labels, sources, which images carry text
# --------------------------------------------------------------------------------------------


def _largest_remainder(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``fractions`` (sums to ``total``)."""
    weights = np.asarray(fractions, dtype=float) / float(sum(fractions))
    raw = weights * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def plan_dataset(config: SynthConfig) -> list[SynthRecord]:
    """Every image of the data set, train first then test, in a fixed order.

    Class counts follow ``class_fractions`` exactly (largest remainder). Patients have 1-3 images
    of one label and one source and never cross splits; ids are ``P00001``, ``P00002``, ...
    The images with text are an exact random subset of round(P(text) * n) per (split, class).
    """
    records: list[SynthRecord] = []
    next_patient = 1
    for split, n in (("train", config.n_train), ("test", config.n_test)):
        rng = np.random.default_rng([config.seed, _SPLIT_CODE[split], 7919])
        # patients per label: groups of 1-3 images
        patients: list[tuple[str, int]] = []
        for label, n_label in zip(
            config.classes, _largest_remainder(n, config.class_fractions), strict=True
        ):
            left = n_label
            while left > 0:
                k = int(min(left, rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])))
                patients.append((label, k))
                left -= k
        order = rng.permutation(len(patients))
        split_records: list[tuple[str, str, str, str]] = []
        for i in order:
            label, k = patients[int(i)]
            pid = f"P{next_patient:05d}"
            next_patient += 1
            source = SOURCES[int(rng.integers(len(SOURCES)))]
            split_records.extend((pid, f"{pid}_{j + 1}.png", label, source) for j in range(k))
        # exact text rates per class
        text_flags = np.zeros(len(split_records), dtype=bool)
        for label in config.classes:
            idx = np.array([i for i, r in enumerate(split_records) if r[2] == label], dtype=int)
            n_text = round(config.text_probability(split, label) * len(idx))
            if n_text:
                text_flags[rng.choice(idx, size=n_text, replace=False)] = True
        records.extend(
            SynthRecord(split, i, pid, fname, label, source, bool(text_flags[i]))
            for i, (pid, fname, label, source) in enumerate(split_records)
        )
    return records


def _image_rngs(
    config: SynthConfig, split: str, index: int
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators (anatomy, text) for one image, from ``(seed, split, index)``."""
    seq = np.random.SeedSequence([config.seed, _SPLIT_CODE[split], index])
    anatomy, text = seq.spawn(2)
    return np.random.default_rng(anatomy), np.random.default_rng(text)


# --------------------------------------------------------------------------------------------
# Radiograph rendering
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coordinates: ``u`` float32 ``(1, size)``, ``v`` float32 ``(size, 1)``, in [-1, 1].

    ``u`` runs left to right, ``v`` top to bottom (pixel centres, so the grid is symmetric).
    They broadcast to ``(size, size)``; keeping them 1-D makes per-row/column terms cheap.
    """
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    u, v = c[None, :].copy(), c[:, None].copy()
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


def _smoothstep(x: np.ndarray | float, e0: float, e1: float) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (float32, shape of ``x``)."""
    t = np.clip((np.asarray(x, dtype=np.float32) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with sigma in pixels (no-op below a quarter pixel)."""
    if sigma_px < 0.25:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma_px), borderType=cv2.BORDER_REPLICATE)


def _lowfreq_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise float32 ``(size, size)``, roughly in [-1, 1], with ``cells`` blobs a side."""
    small = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(big / 1.5, -1.5, 1.5)


def _to_px(size: int, u: float, v: float) -> tuple[float, float]:
    """Canonical (u, v) in [-1, 1] -> pixel (x, y)."""
    return (u + 1.0) * 0.5 * size - 0.5, (v + 1.0) * 0.5 * size - 0.5


def _poly_px(size: int, pts: list[tuple[float, float]], shift: int = 4) -> np.ndarray:
    """Canonical points -> int32 fixed-point pixel polyline for OpenCV drawing (``shift`` bits)."""
    arr = np.array([_to_px(size, u, v) for u, v in pts], dtype=np.float64) * (1 << shift)
    return np.round(arr).astype(np.int32).reshape(-1, 1, 2)


@dataclass(frozen=True)
class _Lung:
    """One lung field: soft mask plus its own coordinates (``h`` lateral 0..1, ``t`` apex 0..1)."""

    mask: np.ndarray
    h: np.ndarray
    t: np.ndarray
    side: int  # -1: image left (patient right), +1: image right
    diaphragm: np.ndarray  # float32 (1, size): v of the hemidiaphragm below each column


def _lung(rng: np.random.Generator, size: int, side: int) -> _Lung:
    """A lung field with a tapered apex, domed diaphragm and a sharp costophrenic angle."""
    u, v = _grid(size)
    au = u * side  # lateral distance, positive towards this lung's side
    v_apex = rng.uniform(-0.78, -0.68)
    v_base = rng.uniform(0.42, 0.54) + (0.04 if side > 0 else 0.0)  # left hemidiaphragm lower
    dome = rng.uniform(0.14, 0.22)
    x_med = rng.uniform(0.06, 0.09)
    x_lat = rng.uniform(0.74, 0.82)
    x_apex = rng.uniform(0.27, 0.33)
    t = (v - v_apex) / (v_base - v_apex)
    tc = np.clip(t, 0.0, 1.0)
    outer = x_apex + (x_lat - x_apex) * np.power(np.clip(tc / 0.62, 0, 1), 0.5)
    outer -= 0.03 * np.clip((tc - 0.75) / 0.25, 0, 1)  # slight inward curve at the base
    inner = x_apex - (x_apex - x_med) * np.power(np.clip(tc / 0.28, 0, 1), 0.5)
    width = np.maximum(outer - inner, 1e-3)
    h = (au - inner) / width
    # diaphragm: dome peaks at about a third of the width, lowest laterally (costophrenic angle)
    hp = np.clip(h, 0.0, 1.0)
    peak = 0.35
    prof = np.where(
        hp > peak, 1.0 - ((hp - peak) / (1 - peak)) ** 2, 1.0 - 0.35 * ((peak - hp) / peak) ** 2
    )
    v_dia = v_base - dome * prof
    inside = (h >= 0) & (h <= 1) & (v >= v_apex) & (v <= v_dia)
    mask = _blur(inside.astype(np.float32), size * 0.004)
    # diaphragm line per column, from the base row (t >= 1), flat beyond the lung's ends
    base_row = int(np.argmax(v[:, 0] >= v_base)) if v_base < v[-1, 0] else size - 1
    line = np.where(au[0] < inner[base_row], v_base - dome * 0.65, v_dia[base_row])
    return _Lung(
        mask=mask,
        h=h.astype(np.float32),
        t=t.astype(np.float32),
        side=side,
        diaphragm=line[None, :].astype(np.float32),
    )


def _ribs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Posterior and anterior ribs as curved bright bands, float32 ``(size, size)`` in [0, ~1].

    Posterior ribs leave the spine, rise slightly and arch down along the lateral chest wall;
    anterior ribs are fainter and descend medially. Both fade out below the diaphragm.
    """
    u, v = _grid(size)
    au = np.abs(u)
    x = np.clip(au - 0.04, 0.0, None)
    out = np.zeros((size, size), np.float32)
    for sgn in (-1, 1):  # two sides, slightly different phases
        half = (u * sgn) > 0.0
        spacing = rng.uniform(0.105, 0.125)
        arch = -0.28 * x + rng.uniform(0.55, 0.7) * x**2 + 1.2 * np.clip(x - 0.55, 0, None) ** 2
        w = v - arch
        phase = (w + rng.uniform(0, spacing) + 2.0) / (spacing * (1.0 + 0.25 * x))
        p = phase - np.floor(phase)
        thick = 0.34 + 0.08 * x
        band = _smoothstep(p, 0.0, 0.07) * (1.0 - _smoothstep(p, thick - 0.07, thick))
        cortex = np.exp(-(((p - 0.04) / 0.035) ** 2)) + np.exp(-(((p - thick + 0.04) / 0.035) ** 2))
        post = (0.6 * band + 0.4 * cortex * band) * _smoothstep(au, 0.05, 0.1)
        post *= _smoothstep(v, -0.92, -0.8) * (1.0 - _smoothstep(w, 0.42, 0.6))
        # anterior ribs: fainter, descending medially, fading towards the sternum
        wa = v + 0.45 * np.clip(0.85 - au, 0.0, None) ** 1.2
        pa = (wa + rng.uniform(0, 0.2) + 2.0) / rng.uniform(0.15, 0.18)
        pa = pa - np.floor(pa)
        ant = _smoothstep(pa, 0.0, 0.1) * (1.0 - _smoothstep(pa, 0.3, 0.42))
        ant *= _smoothstep(au, 0.22, 0.5) * (1.0 - _smoothstep(au, 0.78, 0.86))
        ant *= _smoothstep(v, -0.75, -0.55) * (1.0 - _smoothstep(v, 0.1, 0.35))
        out += np.where(half, post + 0.4 * ant, 0.0).astype(np.float32)
    return out


def _vessels(rng: np.random.Generator, size: int, hila: list[tuple[float, float]]) -> np.ndarray:
    """Branching vascular markings radiating from the hila, float32 ``(size, size)`` in [0, 1].

    Each branch is a random walk from its hilum that thins and fades as it runs outwards.
    """
    img = np.zeros((size, size), np.float32)
    scale = size / 512.0
    for side, (hu, hv) in zip((-1, 1), hila, strict=True):
        for _ in range(int(rng.integers(18, 28))):
            n_steps = int(rng.integers(6, 14))
            start = rng.uniform(-0.55 * math.pi, 0.6 * math.pi)  # 0 = lateral, +/- = down/up
            angles = start + np.cumsum(rng.normal(0.0, 0.25, n_steps))
            lengths = rng.uniform(0.025, 0.045, n_steps)
            pu = hu + np.concatenate([[0.0], np.cumsum(side * np.cos(angles) * lengths)])
            pv = hv + np.concatenate([[0.0], np.cumsum(1.1 * np.sin(angles) * lengths)])
            xy = np.round(
                np.stack([(pu + 1.0) * 0.5 * size - 0.5, (pv + 1.0) * 0.5 * size - 0.5], 1) * 16
            ).astype(int)
            strength = rng.uniform(0.6, 1.0)
            for step in range(n_steps):
                frac = 1.0 - step / n_steps
                cv2.line(
                    img,
                    (int(xy[step, 0]), int(xy[step, 1])),
                    (int(xy[step + 1, 0]), int(xy[step + 1, 1])),
                    color=float(strength * (0.35 + 0.65 * frac)),
                    thickness=max(1, round((1.0 + 3.0 * frac) * scale)),
                    lineType=cv2.LINE_AA,
                    shift=4,
                )
    return _blur(img, 0.8 * scale)


def _silhouette(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Body silhouette (neck, sloping shoulders, chest wall) and its soft-tissue thickness.

    Returns ``(body, thick)``, float32 ``(size, size)``: a soft body mask in [0, 1] and the
    thickness of tissue the beam crosses, 0 outside the body.
    """
    u, v = _grid(size)
    au = np.abs(u)
    neck = rng.uniform(0.18, 0.25)
    chest = rng.uniform(0.86, 0.95)
    shoulder_v = rng.uniform(-0.97, -0.87)
    top = np.where(
        au < neck,
        -1.2,
        shoulder_v + rng.uniform(0.25, 0.35) * np.clip((au - neck) / (chest - neck), 0, 1) ** 1.3,
    )
    half_w = chest - 0.04 * _smoothstep(v, 0.4, 1.0) + 0.015 * np.sin(v * 2.0)
    body_hard = ((v > top) & (au < half_w)).astype(np.float32)
    body = _blur(body_hard, size * 0.006)
    thick = np.sqrt(np.clip(1.0 - (u / half_w) ** 2, 0.0, 1.0))
    thick = _blur(thick.astype(np.float32), size * 0.01) * body
    return body, thick


def _humeral_heads(rng: np.random.Generator, size: int) -> np.ndarray:
    """Humeral heads at the top corners, blurred, float32 ``(size, size)`` in [0, 1]."""
    px = size / 2.0
    bones = np.zeros((size, size), np.float32)
    for side in (-1, 1):
        cx, cy = _to_px(size, side * rng.uniform(0.9, 1.0), rng.uniform(-0.8, -0.68))
        r = rng.uniform(0.1, 0.14) * px
        cv2.circle(bones, (int(cx * 16), int(cy * 16)), int(r * 16), 1.0, -1, cv2.LINE_AA, 4)
    return _blur(bones, size * 0.008)


def _mediastinum(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mediastinum with aortic knob, and the heart bulging to image right.

    Returns ``(med, heart)``, float32 ``(size, size)`` in [0, 1]; ``med`` includes the heart.
    """
    px = size / 2.0
    med = np.zeros((size, size), np.float32)
    med_w = rng.uniform(0.08, 0.1)
    med_poly = [
        (-med_w, -1.1),
        (med_w, -1.1),
        (med_w + 0.01, -0.45),
        (med_w + 0.04, -0.05),
        (med_w + 0.06, 0.4),
        (-med_w - 0.06, 0.4),
        (-med_w - 0.04, -0.05),
        (-med_w - 0.02, -0.45),
    ]
    cv2.fillPoly(med, [_poly_px(size, med_poly)], 1.0, cv2.LINE_AA, 4)
    knob = _to_px(size, med_w + rng.uniform(0.0, 0.03), rng.uniform(-0.42, -0.34))
    cv2.circle(med, (int(knob[0] * 16), int(knob[1] * 16)), int(0.055 * px * 16), 1.0, -1, 16, 4)
    heart = np.zeros((size, size), np.float32)
    # the heart sits on the diaphragm: its lower half hides in the abdomen's density
    hc = _to_px(size, rng.uniform(0.1, 0.17), rng.uniform(0.3, 0.4))
    axes = (rng.uniform(0.3, 0.37) * px, rng.uniform(0.24, 0.3) * px)
    cv2.ellipse(
        heart,
        (int(hc[0] * 16), int(hc[1] * 16)),
        (int(axes[0] * 16), int(axes[1] * 16)),
        rng.uniform(-30, -12),
        0,
        360,
        1.0,
        -1,
        cv2.LINE_AA,
        4,
    )
    heart = _blur(heart, size * 0.01)
    med = np.maximum(_blur(med, size * 0.006), heart)
    return med, heart


def _below_diaphragm(size: int, lungs: list[_Lung], thick: np.ndarray) -> np.ndarray:
    """Abdominal density below both hemidiaphragms, float32 ``(size, size)``, by thickness."""
    u, v = _grid(size)
    diaphragm = np.where(u < 0, lungs[0].diaphragm, lungs[1].diaphragm)
    return _blur(_smoothstep(v - diaphragm, -0.01, 0.1), size * 0.004) * (0.3 + 0.7 * thick)


def _lung_fields(lungs: list[_Lung], med: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lung_total, lucency)``: both lungs outside the mediastinum, and how dark each point
    gets (darker laterally, lighter towards the bases)."""
    lung_total = np.clip(lungs[0].mask + lungs[1].mask, 0, 1) * (1.0 - med)
    lucency = (0.8 + 0.2 * _smoothstep(np.minimum(lungs[0].h, lungs[1].h), -0.2, 0.8)) * (
        1.0 - 0.2 * _smoothstep(np.maximum(lungs[0].t, lungs[1].t), 0.65, 1.1)
    )
    return lung_total, lucency


def _hila(rng: np.random.Generator) -> list[tuple[float, float]]:
    """Canonical (u, v) of the two hila, the left one slightly lower."""
    hila = [(-rng.uniform(0.15, 0.2), rng.uniform(-0.18, -0.06)) for _ in range(2)]
    hila[1] = (-hila[1][0] + 0.02, hila[1][1] - 0.04)
    return hila


def _spine(rng: np.random.Generator, size: int, med: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The brightness the spine (vertebral bodies, disc spaces) adds through the mediastinum."""
    u, v = _grid(size)
    au = np.abs(u)
    spine_w = rng.uniform(0.05, 0.065)
    spine = 1.0 - _smoothstep(au, spine_w, spine_w + 0.025)
    discs = 0.75 + 0.25 * _smoothstep(
        np.abs(np.sin((v + rng.uniform(0, 1)) * math.pi / 0.085)), 0.1, 0.4
    )
    return 0.045 * spine * discs * (0.5 + 0.5 * med) * _smoothstep(v, -0.75, -0.3) * body


def _trachea(rng: np.random.Generator, size: int) -> np.ndarray:
    """Trachea and main bronchi, blurred, float32 ``(size, size)`` in [0, 1]."""
    px = size / 2.0
    trachea = np.zeros((size, size), np.float32)
    tw = max(1, round(0.06 * px))
    carina = _to_px(size, 0.0, rng.uniform(-0.3, -0.22))
    top_t = _to_px(size, 0.0, -1.05)
    cv2.line(trachea, (int(top_t[0]), int(top_t[1])), (int(carina[0]), int(carina[1])), 1.0, tw)
    for side in (-1, 1):
        end = _to_px(size, side * 0.17, rng.uniform(-0.14, -0.08))
        cv2.line(
            trachea, (int(carina[0]), int(carina[1])), (int(end[0]), int(end[1])), 0.7, tw - tw // 3
        )
    return _blur(trachea, size * 0.008)


def _clavicles(rng: np.random.Generator, size: int) -> np.ndarray:
    """S-shaped clavicles from the sternal notch towards the shoulders, blurred, float32."""
    px = size / 2.0
    clav = np.zeros((size, size), np.float32)
    for side in (-1, 1):
        y0 = rng.uniform(-0.7, -0.62)
        pts = [
            (side * 0.07, y0 + 0.02),
            (side * 0.2, y0 - 0.01),
            (side * 0.42, y0 - rng.uniform(0.02, 0.05)),
            (side * rng.uniform(0.62, 0.7), y0 - rng.uniform(0.1, 0.15)),
        ]
        cv2.polylines(
            clav, [_poly_px(size, pts)], False, 1.0, max(1, int(0.045 * px)), cv2.LINE_AA, 4
        )
    return _blur(clav, size * 0.005)


def _consolidation(rng: np.random.Generator, lungs: list[_Lung], med: np.ndarray) -> np.ndarray:
    """One lobar consolidation in a random lung, mostly middle/lower zone, float32 in [0, 1]."""
    size = med.shape[0]
    u, v = _grid(size)
    px = size / 2.0
    lung = lungs[int(rng.integers(2))]
    zone_t = rng.uniform(0.45, 0.9)
    zone_h = rng.uniform(0.25, 0.75)
    cand = (
        (np.abs(lung.t - zone_t) < 0.05)
        & (np.abs(lung.h - zone_h) < 0.05)
        & (lung.mask * (1.0 - med) > 0.7)
    )
    ys, xs = np.nonzero(cand)
    if len(ys):
        j = int(rng.integers(len(ys)))
        cy, cx = float(ys[j]), float(xs[j])
    else:
        cy, cx = _to_px(size, 0.0, 0.0)[1], _to_px(size, lung.side * 0.4, 0.0)[0]
    gx, gy = (u + 1) * px - 0.5, (v + 1) * px - 0.5
    sx, sy = rng.uniform(0.15, 0.22) * px, rng.uniform(0.12, 0.19) * px
    blob = np.exp(-0.5 * (((gx - cx) / sx) ** 2 + ((gy - cy) / sy) ** 2))
    texture = 0.7 + 0.3 * _lowfreq_noise(rng, size, 14)
    fissure_y = cy - sy * rng.uniform(0.8, 1.4)  # a sharp upper border in half of the cases
    fissure = _smoothstep(gy - fissure_y, 0.0, (0.02 if rng.random() < 0.5 else 0.3) * px)
    return np.clip(blob * 1.4, 0, 1) * texture * fissure * lung.mask * (1.0 - med)


def _add_class_signal(
    img: np.ndarray,
    rng: np.random.Generator,
    label: str,
    lungs: list[_Lung],
    med: np.ndarray,
    *,
    strength: float = 1.0,
) -> None:
    """Add ``label``'s lesion to ``img`` in place, drawing only from ``rng`` (the lesion stream).

    ``pneumonia``: one consolidation; ``COVID-19``: peripheral lower-zone ground glass in both
    lungs; ``normal``: nothing.
    """
    if label == "pneumonia":
        consolidation = _consolidation(rng, lungs, med)
        img += strength * rng.uniform(0.36, 0.46) * consolidation
    elif label == "COVID-19":
        size = med.shape[0]
        texture = 0.6 + 0.4 * _lowfreq_noise(rng, size, 20)
        for lung in lungs:
            periph = _smoothstep(lung.h, rng.uniform(0.2, 0.35), 0.8)
            lower = _smoothstep(lung.t, rng.uniform(0.25, 0.4), 0.75)
            patches = np.clip(0.5 + 0.8 * _lowfreq_noise(rng, size, 5), 0, 1)
            ggo = periph * lower * patches * texture * lung.mask * (1.0 - med)
            img += strength * rng.uniform(0.3, 0.4) * ggo


def _exposure(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Global exposure gradient, gamma and contrast window; returns a new image in [0, 1]."""
    img = img + 0.04 * _lowfreq_noise(rng, img.shape[0], 2)
    img = np.clip(img, 0.0, 1.0)
    img = np.power(img, rng.uniform(0.8, 1.25))
    lo, hi = rng.uniform(0.0, 0.06), rng.uniform(0.82, 1.0)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0) * rng.uniform(0.85, 1.0)


def _pose(rng: np.random.Generator, img: np.ndarray, *, jitter: float = 1.0) -> np.ndarray:
    """Small random rotation, scale and shift, then sometimes a slight blur (float32)."""
    size = img.shape[0]
    angle = jitter * rng.uniform(-5.0, 5.0)
    scale = rng.uniform(0.9, 1.06)
    if jitter != 1.0:  # (the default keeps the exact arithmetic of earlier releases)
        scale = 1.0 + jitter * (scale - 1.0)
    mat = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, scale)
    mat[:, 2] += jitter * rng.uniform(-0.04, 0.04, size=2) * size
    img = cv2.warpAffine(
        img.astype(np.float32),
        mat,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if rng.random() < 0.3:
        img = _blur(img, rng.uniform(0.5, 1.4) * size / 512.0)
    return img


def _film_grain(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Fine noise plus a little correlated noise, clipped to [0, 1] float32."""
    size = img.shape[0]
    grain = rng.standard_normal((size, size)).astype(np.float32) * rng.uniform(0.008, 0.02)
    coarse = _blur(rng.standard_normal((size, size)).astype(np.float32), 1.2) * 0.02
    img = img + grain + coarse
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_radiograph(
    rng: np.random.Generator,
    size: int,
    label: str | tuple[str, ...],
    *,
    lesion_strength: float = 1.0,
    pose_jitter: float = 1.0,
) -> np.ndarray:
    """A chest-radiograph-like image without text, float32 ``(size, size)`` in [0, 1].

    ``label`` selects the class signal in the lungs: ``normal`` (none), ``pneumonia`` (one lobar
    consolidation) or ``COVID-19`` (bilateral peripheral lower-zone ground-glass opacities); a
    tuple of labels draws each of their lesions, in order (multi-label films).
    The layers are drawn from ``rng`` in a fixed order; changing that order changes every image.
    """
    labels = (label,) if isinstance(label, str) else tuple(label)
    for name in labels:
        if name not in _KNOWN_LABELS:
            raise ValueError(f"label must be one of {list(_KNOWN_LABELS)}; got {name!r}")
    # the lesion has its own stream: the same rng gives the same anatomy and pose for every label
    lesion_rng = np.random.default_rng(rng.integers(2**63))

    body, thick = _silhouette(rng, size)
    background = rng.uniform(0.02, 0.07)
    img = background + (0.2 + 0.22 * thick) * body
    abdomen = rng.uniform(0.1, 0.16)
    img += 0.12 * _humeral_heads(rng, size) * body

    # lungs, mediastinum, heart (as dense as the abdomen below it)
    lungs = [_lung(rng, size, -1), _lung(rng, size, 1)]
    below = _below_diaphragm(size, lungs, thick)
    med, heart = _mediastinum(rng, size)
    img += abdomen * np.maximum(heart, below) * body
    lung_total, lucency = _lung_fields(lungs, med)
    img -= rng.uniform(0.24, 0.3) * lung_total * lucency

    # ribs: clearest over the lungs, hidden by mediastinum and abdomen
    rib_vis = (0.25 + 0.75 * lung_total) * (1.0 - 0.8 * med) * body
    img += rng.uniform(0.06, 0.09) * _ribs(rng, size) * rib_vis

    # vascular markings from the hila, parenchymal mottling
    vessels = _vessels(rng, size, _hila(rng))
    img += 0.08 * vessels * np.clip(lung_total * 1.3, 0, 1)
    img += 0.025 * _lowfreq_noise(rng, size, 16) * lung_total

    img += _spine(rng, size, med, body)
    img -= 0.07 * _trachea(rng, size) * body
    img += 0.14 * _clavicles(rng, size) * body

    for name in labels:
        _add_class_signal(img, lesion_rng, name, lungs, med, strength=lesion_strength)
    img = _exposure(rng, img)
    img = _pose(rng, img, jitter=pose_jitter)
    return _film_grain(rng, img)


# --------------------------------------------------------------------------------------------
# Burned-in text
# --------------------------------------------------------------------------------------------


_TEXT_KINDS = ("letter", "portable", "view", "position", "site", "date")
_TEXT_KIND_P = np.array([0.38, 0.12, 0.14, 0.1, 0.13, 0.13])


def _random_text(rng: np.random.Generator, site: str | None, used: set[str]) -> tuple[str, str]:
    """``(kind, text)``: one marker of a kind not in ``used`` (e.g. never both AP and PA)."""
    p = np.array([0.0 if k in used else q for k, q in zip(_TEXT_KINDS, _TEXT_KIND_P, strict=True)])
    kind = str(rng.choice(_TEXT_KINDS, p=p / p.sum()))
    return kind, _text_of_kind(rng, kind, site)


def _text_of_kind(rng: np.random.Generator, kind: str, site: str | None) -> str:
    if kind == "letter":
        return str(rng.choice(["L", "R"], p=[0.65, 0.35]))
    if kind == "portable":
        return str(rng.choice(["PORTABLE", "AP PORTABLE", "PORTABLE CXR"], p=[0.7, 0.2, 0.1]))
    if kind == "view":
        return str(rng.choice(["AP", "PA"]))
    if kind == "position":
        return str(rng.choice(["SUPINE", "ERECT", "UPRIGHT", "SEMI-ERECT"], p=[0.4, 0.4, 0.1, 0.1]))
    if kind == "site":
        return site or str(rng.choice(list(_SITE_NAMES.values())))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    year = int(rng.choice([2019, 2020, 2020, 2021]))
    return f"{month:02d}/{day:02d}/{year}"


def _glyph_patch(
    rng: np.random.Generator, text: str, cap_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``text`` into a small patch: (alpha, value), each float32 ``(h, w)`` in [0, 1].

    The patch is cropped tightly to the pixels the item changes (alpha > 0).
    """
    glyph = render_text(font_paths()[int(rng.integers(len(font_paths())))], text, cap_px)
    style = rng.choice(["plain", "white_box", "dark_box"], p=[0.74, 0.18, 0.08])
    if style == "plain":
        ys, xs = np.nonzero(glyph)
        glyph = glyph[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        value = np.full_like(glyph, rng.uniform(0.9, 1.0))
        return glyph, value
    ys, xs = np.nonzero(glyph)
    glyph = glyph[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    margin = max(2, round(cap_px * rng.uniform(0.2, 0.4)))
    h, w = glyph.shape
    side = max(h, w) + 2 * margin if len(text) == 1 else 0  # lone letters get a square label
    bh, bw = (side, side) if side else (h + 2 * margin, w + 2 * margin)
    inner = np.zeros((bh, bw), np.float32)
    oy, ox = (bh - h) // 2, (bw - w) // 2
    inner[oy : oy + h, ox : ox + w] = glyph
    alpha = np.ones((bh, bw), np.float32)
    if style == "white_box":
        box_val, text_val = rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.12)
    else:
        box_val, text_val = rng.uniform(0.0, 0.08), rng.uniform(0.9, 1.0)
    value = box_val * (1.0 - inner) + text_val * inner
    return alpha, value.astype(np.float32)


def _candidate_origin(
    rng: np.random.Generator, size: int, h: int, w: int, lone: bool
) -> tuple[int, int] | None:
    """A random top-left corner near the corners/edges (never over the lung centres)."""
    m = max(2, int(0.015 * size))
    zones = ["tl", "tr", "bl", "br", "top", "bottom"] + (["left", "right"] if lone else [])
    zone = zones[int(rng.integers(len(zones)))]
    cx, cy = int(0.14 * size), int(0.1 * size)  # corner zone extent
    if w + 2 * m > size or h + 2 * m > size:
        return None
    x_lo, x_hi = m, size - w - m
    y_lo, y_hi = m, size - h - m
    if zone[0] == "t" and zone != "top":
        y_hi = min(y_hi, m + cy)
    if zone[0] == "b" and zone != "bottom":
        y_lo = max(y_lo, size - h - m - cy)
    if zone in ("tl", "bl"):
        x_hi = min(x_hi, m + cx)
    if zone in ("tr", "br"):
        x_lo = max(x_lo, size - w - m - cx)
    if zone == "top":
        y_hi = min(y_hi, m + int(0.05 * size))
    if zone == "bottom":
        y_lo = max(y_lo, size - h - m - int(0.05 * size))
    if zone in ("left", "right"):
        y_lo, y_hi = max(y_lo, int(0.3 * size)), min(y_hi, int(0.7 * size) - h)
        if zone == "left":
            x_hi = min(x_hi, m + int(0.03 * size))
        else:
            x_lo = max(x_lo, size - w - m - int(0.03 * size))
    if x_hi < x_lo or y_hi < y_lo:
        return None
    return int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1))


def near_any(box: list[int], boxes: list[list[int]], gap: int) -> bool:
    """Whether ``box`` overlaps any of ``boxes`` grown by ``gap`` pixels (all x1/y1 exclusive)."""
    return any(
        box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap
        for b in boxes
    )


def burn_text(
    image: np.ndarray, rng: np.random.Generator, site: str | None = None
) -> tuple[np.ndarray, list[list[int]]]:
    """Burn 1-3 non-overlapping text markers into a copy of ``image``.

    ``image``: float32 ``(H, W)`` in [0, 1] (H == W expected; any square size >= 64).
    Returns the new image (float32, same shape, [0, 1]) and one box per item,
    ``[x0, y0, x1, y1]`` integer pixels with x1/y1 exclusive, tight around the item's pixels
    (glyph pixels for plain text, the whole label for boxed text). ``site`` is the text used
    for a site stamp (random hospital name when None).
    """
    out = np.array(image, dtype=np.float32, copy=True)
    size = out.shape[0]
    n_items = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    boxes: list[list[int]] = []
    gap = max(2, size // 100)
    used: set[str] = set()
    for item in range(n_items):
        for _attempt in range(12 if item == 0 else 6):
            kind, text = _random_text(rng, site, used)
            lone = len(text) == 1
            frac = rng.uniform(0.03, 0.07) if lone else rng.uniform(0.025, 0.05)
            if item == 0 and _attempt >= 6:
                frac = 0.025
            alpha, value = _glyph_patch(rng, text, frac * size)
            h, w = alpha.shape
            origin = _candidate_origin(rng, size, h, w, lone)
            if origin is None:
                continue
            x0, y0 = origin
            box = [x0, y0, x0 + w, y0 + h]
            if near_any(box, boxes, gap):
                continue
            region = out[y0 : y0 + h, x0 : x0 + w]
            out[y0 : y0 + h, x0 : x0 + w] = region * (1.0 - alpha) + value * alpha
            boxes.append(box)
            used.add(kind)
            break
    return out, boxes


# --------------------------------------------------------------------------------------------
# Writing a data set
# --------------------------------------------------------------------------------------------


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def tight_boxes(clean: np.ndarray, image: np.ndarray, boxes: list[list[int]]) -> list[list[int]]:
    """Shrink each box to the 8-bit pixels that really changed; drop boxes that changed nothing."""
    changed = clean != image
    tight: list[list[int]] = []
    for x0, y0, x1, y1 in boxes:
        ys, xs = np.nonzero(changed[y0:y1, x0:x1])
        if len(ys):
            tight.append(
                [
                    x0 + int(xs.min()),
                    y0 + int(ys.min()),
                    x0 + int(xs.max()) + 1,
                    y0 + int(ys.max()) + 1,
                ]
            )
    return tight


def render_record(config: SynthConfig, record: SynthRecord) -> RenderedImage:
    """Render one planned image exactly as :func:`synthesize` writes it (8-bit, with its boxes)."""
    anatomy_rng, text_rng = _image_rngs(config, record.split, record.index)
    clean_f = render_radiograph(
        anatomy_rng,
        config.size,
        record.label,
        lesion_strength=config.lesion_strength,
        pose_jitter=config.pose_jitter,
    )
    clean = to_uint8(clean_f)
    if not record.has_text:
        return RenderedImage(clean=clean, image=clean, boxes=[])
    site = _SITE_NAMES.get(record.source)
    with_text, boxes = burn_text(clean.astype(np.float32) / 255.0, text_rng, site=site)
    image = to_uint8(with_text)
    return RenderedImage(clean=clean, image=image, boxes=tight_boxes(clean, image, boxes))


def lesion_mask(config: SynthConfig, record: SynthRecord, threshold: float = 0.02) -> np.ndarray:
    """Where ``record``'s lesions are on its film: bool ``(size, size)``.

    The film is rendered again from the same random state with its lesions at strength 0
    (the lesions draw from a stream of their own, so anatomy, pose and grain are identical),
    and the pixels that differ by more than ``threshold`` (in [0, 1]; 0.02 is 5 grey levels
    of the 8-bit film) are the lesion. ``normal`` films have none (all False).
    """
    films = []
    for strength in (config.lesion_strength, 0.0):
        anatomy_rng, _ = _image_rngs(config, record.split, record.index)
        films.append(
            render_radiograph(
                anatomy_rng,
                config.size,
                record.label,
                lesion_strength=strength,
                pose_jitter=config.pose_jitter,
            )
        )
    return np.abs(films[0] - films[1]) > threshold


def encode_png(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DatasetError("could not encode a PNG image")
    return buf.tobytes()


def _render_and_write(args: tuple[SynthConfig, SynthRecord, str]) -> tuple[str, list[list[int]]]:
    config, record, out_dir = args
    rendered = render_record(config, record)
    atomic_write_bytes(Path(out_dir) / record.split / record.filename, encode_png(rendered.image))
    return record.key, rendered.boxes


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(
                f"output folder {out} is not empty; choose a new folder or pass overwrite=True "
                "(--overwrite) to replace the synthetic data in it"
            )
        for name in (*SPLITS, "val"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in ("train.txt", "test.txt", "ground_truth.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def iter_rendered(work: Callable[[Any], Any], tasks: list[Any], workers: int) -> Iterator[Any]:
    """``work(task)`` for every task in order, in ``workers`` processes (1: in this one)."""
    if workers <= 1:
        yield from map(work, tasks)
        return
    # fork where available: spawn would re-run an unguarded user script in every worker. The
    # workers only use numpy, OpenCV (which re-creates its thread pool after a fork; do not call
    # cv2.setNumThreads in a forked child, that can hang) and Pillow.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(work, tasks, chunksize=4)


def synthesize(
    out_dir: Path | str,
    config: SynthConfig = SynthConfig(),
    *,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    workers: int | None = None,
) -> SynthSummary:
    """Write a synthetic COVIDx-style data set to ``out_dir``.

    Layout: ``train/*.png``, ``test/*.png`` (8-bit grayscale, ``size x size``), ``train.txt`` and
    ``test.txt`` (``patient_id filename label source``), ``ground_truth.json`` (per
    ``split/filename``: label, has_text, boxes, patient_id, source; plus ``_config``).
    ``progress(done, total)`` is called from this process after every image. ``workers``:
    processes to render with (default: up to 2 for sets of 64 images or more; the output is
    identical either way). Raises :class:`DatasetError` if ``out_dir`` is not empty and
    ``overwrite`` is False; with ``overwrite`` only the synthetic outputs in it are replaced.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    records = plan_dataset(config)
    prepare_out_dir(out, overwrite)
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
    total = len(records)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if total >= _PARALLEL_MIN_IMAGES else 1
    if progress:
        progress(0, total)
    boxes_by_key: dict[str, list[list[int]]] = {}
    tasks = [(config, r, str(out)) for r in records]
    results = iter_rendered(_render_and_write, tasks, workers)
    for done, (key, boxes) in enumerate(results, start=1):
        boxes_by_key[key] = boxes
        if progress:
            progress(done, total)

    counts: dict[str, dict[str, dict[str, int]]] = {
        s: {c: {"n": 0, "with_text": 0} for c in config.classes} for s in SPLITS
    }
    truth: dict[str, Any] = {}
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    for r in records:
        counts[r.split][r.label]["n"] += 1
        counts[r.split][r.label]["with_text"] += int(r.has_text)
        truth[r.key] = {
            "label": r.label,
            "has_text": r.has_text,
            "boxes": boxes_by_key[r.key],
            "patient_id": r.patient_id,
            "source": r.source,
        }
        lines[r.split].append(f"{r.patient_id} {r.filename} {r.label} {r.source}")
    truth["_config"] = asdict(config)
    for split in SPLITS:
        atomic_write_text(out / f"{split}.txt", "".join(line + "\n" for line in lines[split]))
    atomic_write_json(out / "ground_truth.json", truth)
    return SynthSummary(out_dir=out, counts=counts, seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# Looking at it
# --------------------------------------------------------------------------------------------


def contact_sheet(data_dir: Path | str, out_png: Path | str, n: int = 16, thumb: int = 256) -> Path:
    """Save a grid of ``n`` thumbnails (``thumb`` px) with label, split and text boxes in red.

    Picks images round-robin over (has_text, label, split) from ``ground_truth.json`` so every
    class appears with and without text, in both splits. Returns ``out_png`` (an RGB PNG).
    """
    data = Path(data_dir)
    truth_path = data / "ground_truth.json"
    if not truth_path.is_file():
        raise DatasetError(f"{truth_path} not found; is {data} a synthetic data set?")
    truth = {k: v for k, v in json.loads(truth_path.read_text()).items() if k != "_config"}
    groups: dict[tuple[bool, str, str], list[str]] = {}
    for key, entry in truth.items():
        group = (not entry["has_text"], entry["label"], key.split("/")[0])
        groups.setdefault(group, []).append(key)
    chosen: list[str] = []
    queues = [list(v) for _, v in sorted(groups.items())]
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    cols = max(1, math.ceil(math.sqrt(len(chosen))))
    rows = max(1, math.ceil(len(chosen) / cols))
    caption = max(14, thumb // 12)
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    face = font(font_paths()[0], max(8, caption - 4))
    for i, key in enumerate(chosen):
        img = Image.open(data / key).convert("L")
        scale = thumb / img.width
        tile = img.resize((thumb, thumb), Image.Resampling.BILINEAR).convert("RGB")
        tdraw = ImageDraw.Draw(tile)
        for x0, y0, x1, y1 in truth[key]["boxes"]:
            tdraw.rectangle(
                [x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=(230, 40, 40)
            )
        x, y = (i % cols) * thumb, (i // cols) * (thumb + caption)
        sheet.paste(tile, (x, y + caption))
        entry = truth[key]
        label = f"{entry['label']}{' +text' if entry['has_text'] else ''}  {key.split('/')[0]}"
        draw.text((x + 3, y + 1), label, fill=(0, 0, 0), font=face)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = encode_png(np.asarray(sheet)[:, :, ::-1].copy())
    atomic_write_bytes(out, buf)
    return out
