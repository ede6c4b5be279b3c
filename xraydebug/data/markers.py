"""Burned-in markers of controlled kind, size, style, angle and place, with exact ground truth.

Used by the text-detection benchmark (``benchmarks/text_bench.py``) and tests to measure box
recall at any film size: lone side letters ("L", "R"), words ("PORTABLE", "SUPINE", "AP"),
dates and site names, drawn plain (bright), in a white or dark label box, or as low-contrast grey
text, at any angle, near the film's corners and edges. Glyphs come from the DejaVu fonts that
matplotlib ships (see :mod:`xraydebug.data.synth`).

The ground truth of each marker is the set of pixels it changed (``mask``) and their bounding box,
so a detector is judged on what inpainting must remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from xraydebug.data.fonts import font_paths, render_text
from xraydebug.data.synth import near_any

__all__ = [
    "MARKER_KINDS",
    "MARKER_STYLES",
    "Marker",
    "burn_marker",
    "marker_patch",
    "random_text",
    "rotate_patch",
]

MARKER_KINDS = ("letter", "word", "date", "site")
MARKER_STYLES = ("plain", "white_box", "dark_box", "grey")
_WORDS = ("PORTABLE", "SUPINE", "AP", "PA", "ERECT", "AP PORTABLE", "UPRIGHT")
_SITES = ("ST MARY HOSP", "CITY GENERAL", "NORTH CLINIC")


@dataclass(frozen=True)
class Marker:
    """One burned-in marker: its text and how it was drawn, and the pixels it changed.

    ``box`` is ``[x0, y0, x1, y1]`` (x1/y1 exclusive) around ``mask``'s true pixels; ``mask`` is
    bool ``(H, W)`` of the whole film (True where the marker changed the 8-bit value), and
    ``visible`` where it changed it by at least 8 grey levels (a dark label on a dark film
    changes many pixels by 1-5 levels, which no reader or model can see).
    """

    kind: str
    text: str
    style: str
    cap_px: float
    angle: float
    box: list[int]
    mask: np.ndarray
    visible: np.ndarray


def random_text(rng: np.random.Generator, kind: str) -> str:
    """A marker text of ``kind`` (one of :data:`MARKER_KINDS`)."""
    if kind == "letter":
        return str(rng.choice(["L", "R"], p=[0.65, 0.35]))
    if kind == "word":
        return str(rng.choice(_WORDS))
    if kind == "site":
        return str(rng.choice(_SITES))
    if kind == "date":
        month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
        return f"{month:02d}/{day:02d}/{int(rng.choice([2019, 2020, 2021]))}"
    raise ValueError(f"kind must be one of {MARKER_KINDS}; got {kind!r}")


def marker_patch(
    rng: np.random.Generator, text: str, cap_px: float, style: str, angle: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``text`` with capital height ``cap_px`` pixels, rotated by ``angle`` degrees.

    Returns ``(alpha, ink)``, float32 ``(h, w)``: ``alpha`` in [0, 1] is the coverage of the
    marker (1 inside label boxes), ``ink`` in [0, 1] is 1 on glyph pixels and 0 on the label
    background. The caller turns ink into intensities (see :func:`burn_marker`).
    """
    if style not in MARKER_STYLES:
        raise ValueError(f"style must be one of {MARKER_STYLES}; got {style!r}")
    paths = font_paths()
    bold = [p for p in paths if "Bold" in p.name] or list(paths)
    font_path = (
        bold[int(rng.integers(len(bold)))]
        if len(text) == 1
        else paths[int(rng.integers(len(paths)))]
    )
    ink = render_text(font_path, text, cap_px)
    ys, xs = np.nonzero(ink)
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if style in ("white_box", "dark_box"):
        margin = max(2, round(cap_px * rng.uniform(0.2, 0.4)))
        h, w = ink.shape
        side = max(h, w) + 2 * margin if len(text) == 1 else 0
        bh, bw = (side, side) if side else (h + 2 * margin, w + 2 * margin)
        boxed = np.zeros((bh, bw), np.float32)
        oy, ox = (bh - h) // 2, (bw - w) // 2
        boxed[oy : oy + h, ox : ox + w] = ink
        ink, alpha = boxed, np.ones((bh, bw), np.float32)
    else:
        alpha = ink.copy()
    if angle % 360:
        alpha, ink = rotate_patch(alpha, ink, angle)
    return alpha, ink


def rotate_patch(alpha: np.ndarray, ink: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``alpha`` and ``ink`` (float32 ``(h, w)``) turned ``angle`` degrees about the patch
    centre on a canvas that holds every turn, cut to ``alpha > 0.06`` (fainter coverage set to
    0); empty arrays when nothing is left."""
    h, w = alpha.shape
    diag = int(np.ceil(np.hypot(h, w))) + 2
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    mat[:, 2] += ((diag - w) / 2, (diag - h) / 2)
    alpha = cv2.warpAffine(alpha, mat, (diag, diag), flags=cv2.INTER_LINEAR)
    ink = cv2.warpAffine(ink, mat, (diag, diag), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(alpha > 0.06)
    if ys.size == 0:
        return alpha[:0, :0], ink[:0, :0]
    alpha = alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    alpha[alpha < 0.06] = 0.0
    return alpha, ink


def _edge_origin(
    rng: np.random.Generator, shape: tuple[int, int], h: int, w: int, zone: float
) -> tuple[int, int] | None:
    """A top-left corner that puts an ``h x w`` patch within ``zone`` of an edge (or a corner)."""
    height, width = shape
    margin = max(2, round(0.01 * min(height, width)))
    if h + 2 * margin > height or w + 2 * margin > width:
        return None
    band_y = max(1, round(zone * height))
    band_x = max(1, round(zone * width))
    where = str(
        rng.choice(["corner", "top", "bottom", "left", "right"], p=[0.5, 0.15, 0.15, 0.1, 0.1])
    )
    x = int(rng.integers(margin, width - w - margin + 1))
    y = int(rng.integers(margin, height - h - margin + 1))
    near_top = int(rng.integers(margin, max(margin, min(band_y, height - h - margin)) + 1))
    near_bottom = height - h - near_top
    near_left = int(rng.integers(margin, max(margin, min(band_x, width - w - margin)) + 1))
    near_right = width - w - near_left
    if where == "corner":
        y = near_top if rng.random() < 0.5 else near_bottom
        x = near_left if rng.random() < 0.5 else near_right
    elif where == "top":
        y = near_top
    elif where == "bottom":
        y = near_bottom
    elif where == "left":
        x = near_left
    else:
        x = near_right
    return x, y


def burn_marker(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    kind: str,
    style: str,
    cap_px: float,
    angle: float = 0.0,
    avoid: list[list[int]] | None = None,
    zone: float = 0.15,
) -> tuple[np.ndarray, Marker | None]:
    """Burn one marker into a copy of ``image`` (float32 ``(H, W)`` in [0, 1]).

    The marker sits within ``zone`` (share of the film) of an edge, never overlapping the boxes
    in ``avoid`` (grown by a gap). ``plain`` text is bright (0.85-1.0; 1.0 where the film is
    brighter than 0.6), ``white_box`` a dark
    glyph on a bright label, ``dark_box`` a bright glyph on a dark label, and ``grey`` a glyph
    0.10-0.25 brighter or darker than the film around it (low contrast). The result is rounded
    to 8-bit levels, as a PNG would store it.

    Returns ``(new_image, marker)``; ``marker`` is None (and the image unchanged) when no free
    place was found.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    text = random_text(rng, kind)
    alpha, ink = marker_patch(rng, text, cap_px, style, angle)
    h, w = alpha.shape
    avoid = avoid or []
    gap = max(3, round(cap_px / 2))
    for _attempt in range(20):
        origin = _edge_origin(rng, out.shape, h, w, zone)
        if origin is None:
            return out, None
        x0, y0 = origin
        box = [x0, y0, x0 + w, y0 + h]
        if not near_any(box, avoid, gap):
            break
    else:
        return out, None
    region = out[y0 : y0 + h, x0 : x0 + w]
    background = float(np.median(region))
    if style == "plain":  # bright text; on a bright film it is pure white, never invisible
        level = rng.uniform(0.85, 1.0) if background < 0.6 else 1.0
        value = np.full_like(alpha, level)
    elif style == "white_box":
        value = rng.uniform(0.88, 1.0) * (1 - ink) + rng.uniform(0.0, 0.12) * ink
    elif style == "dark_box":
        value = rng.uniform(0.0, 0.08) * (1 - ink) + rng.uniform(0.88, 1.0) * ink
    else:
        delta = rng.uniform(0.10, 0.25)
        level = background + delta if background + delta <= 1.0 else background - delta
        value = np.full_like(alpha, level)
    before = np.round(region * 255)
    blended = region * (1.0 - alpha) + value * alpha
    after = np.round(np.clip(blended, 0.0, 1.0) * 255)
    out[y0 : y0 + h, x0 : x0 + w] = after / 255.0
    changed = np.zeros(out.shape, bool)
    changed[y0 : y0 + h, x0 : x0 + w] = after != before
    visible = np.zeros(out.shape, bool)
    visible[y0 : y0 + h, x0 : x0 + w] = np.abs(after - before) >= 8
    ys, xs = np.nonzero(changed)
    if ys.size == 0:
        return np.array(image, dtype=np.float32, copy=True), None
    tight = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return out, Marker(kind, text, style, float(cap_px), float(angle), tight, changed, visible)
