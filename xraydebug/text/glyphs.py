"""Lone side markers ("L", "R") recognised by their shape.

Text networks are trained on words: a lone letter, above all a bare "L" (two strokes that also
look like an edge), in a label box or turned by some angle, often gets no text score from CRAFT
or DBNet even at the right zoom. Side markers are the most common burned-in text on chest films,
so compact candidate regions are also compared with the letters themselves: the region's
deskewed crop is binarised (Otsu inside the region; the ink is the side the region's stroke
pixels fall on), its largest ink component is cut to its
bounding box and compared, turned in 15 degree steps, with "L" and "R" rendered in the DejaVu
fonts (regular and bold, sans, serif and mono). The score is the best intersection over union.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xraydebug.data.fonts import font_paths
from xraydebug.text.proposals import to_u8
from xraydebug.text.zoom import ZoomCrop

__all__ = ["SIDE_LETTERS", "glyph_scores"]

SIDE_LETTERS = ("L", "R")
# Values below were chosen by hand on the synthetic benchmark (benchmarks/text_bench.py) and
# the tests' letters unless a line says otherwise.
_SIZE = 32  # templates and candidates are compared at this size
_MIN_ASPECT_MATCH = 0.75  # width/height ratios must agree within this factor
_TURN_STEP_DEG = 15.0  # candidates are turned in steps of this many degrees
# templates: each letter drawn at this font size on a square canvas this wide, this far in
_TEMPLATE_PT = 96
_TEMPLATE_CANVAS = 128
_TEMPLATE_OFFSET = 16
# a candidate shape needs: at least this many region pixels and this much contrast inside the
# region (grey levels) to binarise, and an ink component at least this many pixels (area) and
# this wide and tall (px of the zoomed crop)
_MIN_REGION_PIXELS = 16
_MIN_INK_CONTRAST = 12
_MIN_INK_AREA = 20
_MIN_INK_SIDE = 4


@lru_cache(maxsize=1)
def _templates() -> tuple[tuple[np.ndarray, float], ...]:
    """(mask (32, 32) bool, aspect w/h) of each side letter in each font."""
    out = []
    for path in font_paths():
        font = ImageFont.truetype(str(path), _TEMPLATE_PT)
        for letter in SIDE_LETTERS:
            canvas = Image.new("L", (_TEMPLATE_CANVAS, _TEMPLATE_CANVAS), 0)
            ImageDraw.Draw(canvas).text((_TEMPLATE_OFFSET, 0), letter, font=font, fill=255)
            ink = np.asarray(canvas) > 127
            ys, xs = np.nonzero(ink)
            ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            aspect = ink.shape[1] / ink.shape[0]
            resized = cv2.resize(ink.astype(np.uint8), (_SIZE, _SIZE), interpolation=cv2.INTER_AREA)
            out.append((resized > 0, aspect))
    return tuple(out)


def _ink_shape(crop: ZoomCrop) -> np.ndarray | None:
    """The crop's ink component that holds most of the region's stroke pixels, uint8 0/1."""
    u8 = to_u8(crop.image)
    inside = u8[crop.mask]
    if (
        inside.size < _MIN_REGION_PIXELS
        or int(inside.max()) - int(inside.min()) < _MIN_INK_CONTRAST
        or not crop.core.any()
    ):
        return None
    level, _ = cv2.threshold(inside.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = (u8 > level) & crop.mask
    dark = (u8 <= level) & crop.mask
    # the ink is the class the region's own stroke pixels fall in
    ink = bright if bright[crop.core].sum() * 2 >= crop.core.sum() else dark
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    votes = np.bincount(labels[crop.core & ink], minlength=n)
    votes[0] = 0
    k = int(np.argmax(votes))
    x, y, w, h, area = (int(v) for v in stats[k])
    if k == 0 or min(w, h) < _MIN_INK_SIDE or area < _MIN_INK_AREA:
        return None
    return (labels[y : y + h, x : x + w] == k).astype(np.uint8)


def _normalised(shape: np.ndarray) -> tuple[np.ndarray, float] | None:
    ys, xs = np.nonzero(shape)
    if ys.size < _MIN_INK_AREA:
        return None
    cut = shape[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = cut.shape
    if min(h, w) < _MIN_INK_SIDE:
        return None
    resized = cv2.resize(cut, (_SIZE, _SIZE), interpolation=cv2.INTER_AREA) > 0
    return resized, w / h


def _rotations(shape: np.ndarray, step: float = _TURN_STEP_DEG) -> list[tuple[np.ndarray, float]]:
    """The shape turned by every ``step`` degrees, each cut to its box and resized."""
    h, w = shape.shape
    side = int(np.ceil(np.hypot(h, w))) + 2
    canvas = np.zeros((side, side), np.uint8)
    oy, ox = (side - h) // 2, (side - w) // 2
    canvas[oy : oy + h, ox : ox + w] = shape
    out = []
    for angle in np.arange(0.0, 360.0, step):
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), float(angle), 1.0)
        turned = cv2.warpAffine(canvas, matrix, (side, side), flags=cv2.INTER_NEAREST)
        normalised = _normalised(turned)
        if normalised is not None:
            out.append(normalised)
    return out


def glyph_scores(crops: Sequence[ZoomCrop]) -> np.ndarray:
    """Best IoU of each crop's ink shape with a side letter, over the shape turned in 15 degree
    steps; float ``(len(crops),)`` in [0, 1] (0 where the crop has no usable ink shape)."""
    scores = np.zeros(len(crops), np.float32)
    templates = _templates()
    t_masks = np.stack([t.reshape(-1) for t, _ in templates]).astype(np.float32)  # (T, 1024)
    t_aspect = np.array([a for _, a in templates], np.float32)
    t_area = t_masks.sum(axis=1)
    for i, crop in enumerate(crops):
        shape = _ink_shape(crop)
        if shape is None:
            continue
        turned = _rotations(shape)
        if not turned:
            continue
        masks = np.stack([m.reshape(-1) for m, _ in turned]).astype(np.float32)  # (R, 1024)
        aspect = np.array([a for _, a in turned], np.float32)
        inter = masks @ t_masks.T  # (R, T)
        union = masks.sum(axis=1)[:, None] + t_area[None, :] - inter
        ratio = np.minimum(aspect[:, None], t_aspect) / np.maximum(aspect[:, None], t_aspect)
        iou = np.where(ratio >= _MIN_ASPECT_MATCH, inter / np.maximum(union, 1.0), 0.0)
        scores[i] = float(iou.max())
    return scores
