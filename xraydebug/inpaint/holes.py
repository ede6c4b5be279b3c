"""Random hole masks for training (and judging) the learned inpainter.

Three kinds, drawn with OpenCV into one uint8 mask (255 = hole):

* ``box``: a text-box rectangle, ``thickness`` (its short side) between ``min_side`` and
  ``max_side`` pixels, aspect 1-8 (a lone letter up to a line of text), the way ``clean`` masks a
  detected box grown by a few pixels;
* ``text``: letters or a word in a Hershey font (``cv2.putText``) at a random size, thickened
  like a dilated glyph mask, or the bounding box of such a word;
* ``stroke``: a free-form polyline of random thickness (scratches, arrows, odd shapes).

Every function takes a seeded :class:`numpy.random.Generator` and draws nothing else, so a seed
gives the same masks everywhere. Sizes are in pixels of the crop or film the mask is for: the
learned inpainter trains on holes whose short side fits its network (``max_side``) and shrinks
larger ones at inference (:mod:`xraydebug.inpaint.learned`).
"""

from __future__ import annotations

import string

import cv2
import numpy as np

HOLE_KINDS = ("box", "text", "stroke")
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_CHARS = string.ascii_uppercase + string.digits + "/:.-"


def _side(rng: np.random.Generator, min_side: float, max_side: float) -> float:
    """A short side between ``min_side`` and ``max_side``, log-uniform (thin holes as often as
    thick ones per octave)."""
    lo, hi = np.log(max(1.0, min_side)), np.log(max(min_side, max_side, 1.0))
    return float(np.exp(rng.uniform(lo, hi)))


def _place(rng: np.random.Generator, shape: tuple[int, int], h: int, w: int) -> tuple[int, int]:
    """A top-left corner for an ``h`` x ``w`` item: anywhere it overlaps the canvas, up to a
    quarter of it outside (holes at a film's edge, as text often is)."""
    height, width = shape
    y = int(rng.integers(-(h // 4), max(1, height - h + h // 4 + 1)))
    x = int(rng.integers(-(w // 4), max(1, width - w + w // 4 + 1)))
    return y, x


def draw_box(
    mask: np.ndarray, rng: np.random.Generator, min_side: float, max_side: float
) -> np.ndarray:
    """Draw one text-box rectangle (short side in [min_side, max_side], aspect 1-8) into
    ``mask`` (in place; returned)."""
    side = _side(rng, min_side, max_side)
    aspect = float(np.exp(rng.uniform(0.0, np.log(8.0))))
    long_side = side * aspect
    h, w = (side, long_side) if rng.random() < 0.85 else (long_side, side)  # mostly lying
    h = max(1, min(round(h), mask.shape[0]))
    w = max(1, min(round(w), mask.shape[1]))
    y, x = _place(rng, mask.shape, h, w)
    cv2.rectangle(mask, (x, y), (x + w - 1, y + h - 1), 255, thickness=-1)
    return mask


def draw_text(
    mask: np.ndarray, rng: np.random.Generator, min_side: float, max_side: float
) -> np.ndarray:
    """Draw 1-8 random characters in a Hershey font into ``mask`` (in place; returned): the
    glyphs thickened by a few pixels, or (one time in three) their bounding box. The text's
    height is in [min_side, max_side]."""
    text = "".join(rng.choice(list(_CHARS), size=int(rng.integers(1, 9))))
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    height = _side(rng, max(min_side, 4.0), max_side)
    (_, base_h), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = height / max(base_h, 1)
    thickness = max(1, round(scale * rng.uniform(1.0, 2.5)))
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thickness)
    grow = int(rng.integers(1, max(2, round(height * 0.15)) + 1))  # the clean stage's dilation
    canvas_h, canvas_w = th + baseline + 2 * grow + 2, tw + 2 * grow + 2
    canvas = np.zeros((canvas_h, canvas_w), np.uint8)
    cv2.putText(canvas, text, (grow + 1, grow + th + 1), font, scale, 255, thickness, cv2.LINE_8)
    canvas = np.where(canvas >= 128, 255, 0).astype(np.uint8)  # OpenCV 5 smooths glyph edges
    if rng.random() < 1 / 3:
        ys, xs = np.nonzero(canvas)
        if len(ys):
            canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 255
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    canvas = cv2.dilate(canvas, kernel)
    y, x = _place(rng, mask.shape, canvas_h, canvas_w)
    _paste_max(mask, canvas, y, x)
    return mask


def draw_stroke(
    mask: np.ndarray, rng: np.random.Generator, min_side: float, max_side: float
) -> np.ndarray:
    """Draw one free-form polyline (2-6 vertices, thickness in [min_side, max_side]) into
    ``mask`` (in place; returned)."""
    height, width = mask.shape
    thickness = max(1, round(_side(rng, min_side, max_side)))
    n = int(rng.integers(2, 7))
    start = rng.uniform((0, 0), (width, height))
    steps = rng.normal(0.0, 0.25 * min(height, width), size=(n - 1, 2))
    points = np.concatenate([start[None], start + np.cumsum(steps, axis=0)])
    cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 255, thickness, cv2.LINE_8)
    return mask


_DRAW = {"box": draw_box, "text": draw_text, "stroke": draw_stroke}


def random_holes(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    min_side: float = 3.0,
    max_side: float = 32.0,
    count: tuple[int, int] = (1, 3),
    weights: tuple[float, float, float] = (0.55, 0.25, 0.2),
    max_fraction: float = 0.5,
) -> np.ndarray:
    """A uint8 mask of ``shape`` (255 = hole) with ``count`` (inclusive range) holes of the kinds
    of :data:`HOLE_KINDS` drawn with ``weights``, each with a short side in [min_side,
    max_side] pixels. Holes are added while they cover at most ``max_fraction`` of the mask
    (the first one always), so some of it stays known."""
    mask = np.zeros(shape, np.uint8)
    p = np.asarray(weights, dtype=float)
    p = p / p.sum()
    for i in range(int(rng.integers(count[0], count[1] + 1))):
        kind = HOLE_KINDS[int(rng.choice(len(HOLE_KINDS), p=p))]
        candidate = _DRAW[kind](mask.copy(), rng, min_side, max_side)
        if i > 0 and np.count_nonzero(candidate) > max_fraction * candidate.size:
            continue
        mask = candidate
    return mask


def box_holes(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    *,
    min_side: float,
    max_side: float,
    avoid: np.ndarray | None = None,
    tries: int = 50,
) -> np.ndarray:
    """``count`` separate text-box rectangles (as :func:`draw_box`, inside the canvas) that
    neither touch each other nor ``avoid`` (nonzero = keep clear, e.g. text found on the film);
    fewer where they do not fit in ``tries`` draws each. A uint8 mask, 255 = hole."""
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    blocked = np.zeros(shape, bool) if avoid is None else np.asarray(avoid) > 0
    gap = max(2, round(max_side / 2))
    for _ in range(count):
        for _attempt in range(tries):
            side = _side(rng, min_side, max_side)
            aspect = float(np.exp(rng.uniform(0.0, np.log(8.0))))
            h = max(1, min(round(side), height - 2))
            w = max(1, min(round(side * aspect), width - 2))
            y = int(rng.integers(1, max(2, height - h)))
            x = int(rng.integers(1, max(2, width - w)))
            y0, y1 = max(0, y - gap), min(height, y + h + gap)
            x0, x1 = max(0, x - gap), min(width, x + w + gap)
            if blocked[y0:y1, x0:x1].any():
                continue
            mask[y : y + h, x : x + w] = 255
            blocked[y0:y1, x0:x1] = True
            break
    return mask


def _paste_max(mask: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    """``mask = max(mask, patch at (y, x))`` over their overlap (the patch may stick out)."""
    height, width = mask.shape
    ph, pw = patch.shape
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(height, y + ph), min(width, x + pw)
    if y1 <= y0 or x1 <= x0:
        return
    region = mask[y0:y1, x0:x1]
    np.maximum(region, patch[y0 - y : y1 - y, x0 - x : x1 - x], out=region)
