"""Zoomed, deskewed crops of candidate regions, for a text network to verify.

Text networks respond to glyphs by their size at their input (a lone "L" needs ~45 px for
CRAFT), so each candidate from :mod:`xraydebug.text.proposals` is cut out along its rotated
rectangle, turned so its long side is horizontal and scaled so its short side is
``glyph_px`` pixels: every marker reaches the network at the size it was trained on, whatever
the film's size. Compact regions (a lone letter, whose upright direction the rectangle cannot
tell) are offered in four orientations, elongated ones (lines of text) in two.

Crops are batched by padded size so that a network sees many crops per call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from xraydebug.text.proposals import Region

__all__ = ["ZoomCrop", "batched_scores", "deskewed_crops", "pad_to_multiple"]

# a region at least this elongated is a line of text, laid horizontal by the deskew: only its
# two readings (0 and 180 degrees) are tried; anything more compact (a letter, "AP", two
# stacked letters) is tried in all four orientations
_WORD_ASPECT = 3.0
# Values below were chosen by hand on the synthetic benchmark (benchmarks/text_bench.py)
# unless a line says otherwise.
# a region's rectangle and glyph size count as at least this many pixels (degenerate strokes)
_MIN_SIDE_PX = 3.0
# the zoom of a region stays within these factors
_MIN_SCALE, _MAX_SCALE = 0.125, 8.0
_MIN_PAD_PX = 4.0  # context kept around a region at least (px of the crop)
# contrast stretch: these percentiles of the crop are mapped to 0 and 1 ...
_STRETCH_PERCENTILES = (1, 99)
# ... unless they are closer than this (a flat crop is not stretched without bound)
_MIN_SPREAD = 1e-3
# the mask a region is scored in: its stroke pixels dilated by this many film pixels (scaled to
# the crop), at least this many crop pixels; the network's peak sits between strokes
_MASK_GROW_FILM_PX = 2
_MASK_GROW_MIN_PX = 3


@dataclass(frozen=True)
class ZoomCrop:
    """One view of a region: ``image`` float32 ``(h, w)`` in [0, 1]; ``mask`` bool ``(h, w)``
    marking the region's strokes, dilated, and ``core`` the stroke pixels themselves, in crop
    coordinates; ``region`` indexes the regions passed to :func:`deskewed_crops`."""

    region: int
    image: np.ndarray
    mask: np.ndarray
    core: np.ndarray


def _axes(rect: tuple) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Unit vectors along the long and short sides of a rotated rectangle, and their lengths."""
    corners = cv2.boxPoints(rect)
    e1, e2 = corners[1] - corners[0], corners[2] - corners[1]
    l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    if l1 < l2:
        e1, e2, l1, l2 = e2, e1, l2, l1
    u = e1 / l1 if l1 > 0 else np.array([1.0, 0.0], np.float32)
    if u[0] < 0 or (u[0] == 0 and u[1] < 0):
        u = -u  # read left to right where possible
    return u.astype(np.float64), np.array([-u[1], u[0]], np.float64), l1, l2


def deskewed_crops(
    gray: np.ndarray,
    regions: Sequence[Region],
    *,
    glyph_px: float = 40.0,
    max_side: int = 512,
    margin: float = 0.5,
    max_gain: float = 4.0,
) -> list[ZoomCrop]:
    """Views of every region, deskewed and scaled so its glyphs are ``glyph_px`` pixels tall.

    Args:
        gray: the film, float32 ``(H, W)`` in [0, 1].
        regions: candidates from :func:`~xraydebug.text.proposals.propose_regions`.
        glyph_px: target glyph size (``Region.glyph``) at the network's input.
        max_side: crops are never longer than this; very long regions are scaled down to fit.
        margin: context kept around the region, as a share of its short side (at least 4 px).
        max_gain: each crop's contrast is stretched so its 1st-99th percentiles span [0, 1],
            by at most this factor (text networks ignore grey text 0.1 from the film; 1 = off).

    Returns:
        Two views per elongated region (0 and 180 degrees) and four per compact one.
    """
    gray = np.asarray(gray, dtype=np.float32)
    crops: list[ZoomCrop] = []
    for index, region in enumerate(regions):
        image, matrix, scale, elongated = _warp(
            gray, region, glyph_px=glyph_px, max_side=max_side, margin=margin
        )
        if max_gain > 1.0:  # faint grey text: stretch the crop's 1-99th percentiles
            image = _stretch(image, max_gain)
        mask, core = _region_masks(region, matrix, image.shape, scale)
        for k in (0, 2) if elongated else (0, 1, 2, 3):
            view = np.ascontiguousarray(np.rot90(image, k))
            crops.append(ZoomCrop(index, view, np.rot90(mask, k), np.rot90(core, k)))
    return crops


def _warp(
    gray: np.ndarray, region: Region, *, glyph_px: float, max_side: int, margin: float
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """The region cut along its rotated rectangle, long side horizontal, glyphs ``glyph_px``
    tall: ``(image, affine matrix film -> crop, scale, whether it is a line of text)``."""
    (cx, cy), _, _ = region.rect
    u, v, long_side, short_side = _axes(region.rect)
    long_side, short_side = max(long_side, _MIN_SIDE_PX), max(short_side, _MIN_SIDE_PX)
    scale = float(np.clip(glyph_px / max(region.glyph, _MIN_SIDE_PX), _MIN_SCALE, _MAX_SCALE))
    pad = max(_MIN_PAD_PX, margin * short_side * scale)
    if long_side * scale + 2 * pad > max_side:
        fit = max_side - 2 * _MIN_PAD_PX
        scale = fit / (long_side * (1.0 + 2.0 * margin * short_side / long_side))
        pad = max(_MIN_PAD_PX, margin * short_side * scale)
    out_w = round(long_side * scale + 2 * pad)
    out_h = round(short_side * scale + 2 * pad)
    ox, oy = out_w / 2.0, out_h / 2.0
    matrix = np.array(
        [
            [scale * u[0], scale * u[1], ox - scale * (u[0] * cx + u[1] * cy)],
            [scale * v[0], scale * v[1], oy - scale * (v[0] * cx + v[1] * cy)],
        ]
    )
    image = cv2.warpAffine(
        gray, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return image, matrix, scale, long_side >= _WORD_ASPECT * short_side


def _stretch(image: np.ndarray, max_gain: float) -> np.ndarray:
    """The crop's percentiles :data:`_STRETCH_PERCENTILES` mapped to [0, 1], the gain at most
    ``max_gain``, clipped."""
    lo, hi = np.percentile(image, list(_STRETCH_PERCENTILES))
    gain = min(max_gain, 1.0 / max(float(hi - lo), _MIN_SPREAD))
    return np.clip((image - (lo + hi) / 2) * gain + 0.5, 0.0, 1.0).astype(np.float32)


def _region_masks(
    region: Region, matrix: np.ndarray, shape: tuple[int, int], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, core)`` bool in crop coordinates: the region's stroke pixels dilated, and the
    stroke pixels themselves."""
    out_h, out_w = shape
    pts = region.points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    pts = np.rint(pts).astype(np.int64)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < out_w) & (pts[:, 1] >= 0) & (pts[:, 1] < out_h)
    mask = np.zeros((out_h, out_w), np.uint8)
    mask[pts[ok, 1], pts[ok, 0]] = 1
    core = mask > 0
    grow = max(_MASK_GROW_MIN_PX, round(scale * _MASK_GROW_FILM_PX))
    mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    return mask, core


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pad ``(h, w)`` at the bottom/right by edge replication to multiples of ``multiple``."""
    h, w = image.shape
    ph, pw = -(-h // multiple) * multiple - h, -(-w // multiple) * multiple - w
    if ph == 0 and pw == 0:
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REPLICATE)


def batched_scores(
    crops: Sequence[ZoomCrop],
    score_maps: Callable[[np.ndarray], np.ndarray],
    *,
    multiple: int = 32,
    max_pixels: int = 1 << 20,
) -> np.ndarray:
    """Peak text score of each crop inside its region mask.

    ``score_maps`` takes a batch float32 ``(B, h, w)`` in [0, 1] (``h``, ``w`` multiples of
    ``multiple``) and returns text-probability maps ``(B, h', w')`` at any integer fraction of
    the input resolution. Crops of equal padded size share a call, at most ``max_pixels`` input
    pixels at a time (2**20: about 64 crops of 128 x 128 px; a memory bound, not tuned).
    Returns float ``(len(crops),)``.
    """
    scores = np.zeros(len(crops), np.float32)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    padded = [pad_to_multiple(c.image, multiple) for c in crops]
    for i, p in enumerate(padded):
        groups[p.shape].append(i)
    for (h, w), members in groups.items():
        step = max(1, max_pixels // (h * w))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            maps = score_maps(np.stack([padded[i] for i in chunk]))
            factor_y, factor_x = h // maps.shape[1], w // maps.shape[2]
            for j, i in enumerate(chunk):
                mask = crops[i].mask[::factor_y, ::factor_x]
                region = maps[j, : mask.shape[0], : mask.shape[1]][mask]
                scores[i] = float(region.max()) if region.size else 0.0
    return scores
