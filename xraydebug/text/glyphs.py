"""Lone side markers ("L", "R") recognised by their shape, in any typeface.

Text networks are trained on words: a lone letter, above all a bare "L" (two strokes that also
look like an edge), in a label box or turned by some angle, often gets no text score from CRAFT
or DBNet even at the right zoom. Side markers are the most common burned-in text on chest
films, so every candidate's glyph is also read by a small network trained to tell "L" and "R"
(upright or turned, mirrored as a lead marker read from the back of the cassette, stencilled)
from every other glyph and from the shapes anatomy and devices leave
(:mod:`xraydebug.text.letter_net`).

The shape: the region's deskewed crop is binarised (Otsu inside the region; the ink is the side
the region's stroke pixels fall on), small gaps are closed (stencil letters come in pieces),
and the ink component holding most of the region's strokes is cut to its box and letterboxed
into 32 x 32 pixels, with the grey levels under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from xraydebug.text.letter_net import SHAPE_PX, letter_probabilities
from xraydebug.text.proposals import to_u8
from xraydebug.text.zoom import ZoomCrop

__all__ = [
    "SIDE_LETTERS",
    "GlyphShape",
    "glyph_input",
    "glyph_scores",
    "glyph_shape",
    "letterbox",
]

SIDE_LETTERS = ("L", "R")
# Values below were chosen by hand on the tuning films of benchmarks/text_bench.py unless a
# line says otherwise.
# a candidate shape needs: at least this many region pixels and this much contrast inside the
# region (grey levels) to binarise, and an ink component at least this many pixels (area) and
# this wide and tall (px of the zoomed crop)
_MIN_REGION_PIXELS = 16
_MIN_INK_CONTRAST = 12
_MIN_INK_AREA = 20
_MIN_INK_SIDE = 4
# gaps up to this share of the crop's glyph size are closed before the ink is cut into
# components (stencil letters' bridges are about a tenth of the letter)
_CLOSE_SHARE = 0.15
# the shape's longer side fills this many of the SHAPE_PX pixels (a margin for the network)
_LETTERBOX_FILL = 28
_GREY_PERCENTILES = (2, 98)  # the grey channel's stretch
# a shape filling more of its box than this is a block (a label's fill, a striped patch closed
# into a square), not a letter: "L" and "R" fill 0.3-0.78 of their box once the shape is cut
# (the heaviest: Source Sans Pro Black and Fredoka One "R"). The network, trained on
# proposals of markers on labels, read some blocks as side letters (0.99 on the tests' 16 px
# striped squares)
_MAX_FILL = 0.85


@dataclass(frozen=True)
class GlyphShape:
    """A candidate's glyph cut from its crop: ``mask`` uint8 ``(h, w)`` 0/1 (the ink component),
    ``grey`` float32 ``(h, w)`` in [0, 1] (the crop under its box, turned so ink is bright,
    its 2nd-98th percentiles stretched to [0, 1]: flat drawn ink or grainy anatomy)."""

    mask: np.ndarray
    grey: np.ndarray


def glyph_shape(crop: ZoomCrop) -> GlyphShape | None:
    """The crop's ink component that holds most of the region's stroke pixels, cut to its box
    (see :class:`GlyphShape`); None without a usable shape."""
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
    ink_is_bright = bright[crop.core].sum() * 2 >= crop.core.sum()
    ink = bright if ink_is_bright else dark
    ys, xs = np.nonzero(crop.core)
    side = max(1, round(_CLOSE_SHARE * min(np.ptp(ys), np.ptp(xs)) + 1))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    ink = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool) & crop.mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    votes = np.bincount(labels[crop.core & ink], minlength=n)
    votes[0] = 0
    k = int(np.argmax(votes))
    x, y, w, h, area = (int(v) for v in stats[k])
    if k == 0 or min(w, h) < _MIN_INK_SIDE or area < _MIN_INK_AREA:
        return None
    grey = crop.image[y : y + h, x : x + w]
    grey = grey if ink_is_bright else 1.0 - grey
    lo, hi = np.percentile(grey, _GREY_PERCENTILES)
    grey = np.clip((grey - lo) / max(float(hi - lo), 1e-3), 0.0, 1.0).astype(np.float32)
    return GlyphShape((labels[y : y + h, x : x + w] == k).astype(np.uint8), grey)


def letterbox(shape: np.ndarray) -> np.ndarray:
    """An image ``(h, w)`` in [0, 1] (a 0/1 shape or grey levels) scaled so its longer side is
    28 px, centred in float32 ``(32, 32)`` (area-averaged, 0 around it)."""
    h, w = shape.shape
    scale = _LETTERBOX_FILL / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(shape.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.zeros((SHAPE_PX, SHAPE_PX), np.float32)
    oy, ox = (SHAPE_PX - nh) // 2, (SHAPE_PX - nw) // 2
    out[oy : oy + nh, ox : ox + nw] = small
    return out


def glyph_input(shape: GlyphShape) -> np.ndarray:
    """The network's input for a shape: float32 ``(2, 32, 32)`` in [0, 1], the letterboxed
    mask and grey levels."""
    return np.stack([letterbox(shape.mask), letterbox(shape.grey)])


def glyph_scores(crops: Sequence[ZoomCrop]) -> np.ndarray:
    """Side-letter probability of each crop's glyph, float32 ``(len(crops),)`` in [0, 1] (0
    without a usable shape, or for a shape that fills more than :data:`_MAX_FILL` of its box:
    a block, not a letter); the network reads all glyphs in one batch."""
    shapes = [glyph_shape(crop) for crop in crops]
    usable = [i for i, s in enumerate(shapes) if s is not None and s.mask.mean() <= _MAX_FILL]
    scores = np.zeros(len(crops), np.float32)
    if usable:
        scores[usable] = letter_probabilities(np.stack([glyph_input(shapes[i]) for i in usable]))
    return scores
