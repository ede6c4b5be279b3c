"""CRAFT score maps -> axis-aligned word boxes, and boxes -> original image pixels.

Follows the post-processing of the official CRAFT release (Baek et al., CRAFT, CVPR 2019;
weights craft_mlt_25k.pth (c) NAVER Corp., MIT licence): characters are where the region score
exceeds ``low_text``, neighbouring characters are joined where the affinity score exceeds
``link_threshold``; each 4-connected component of the union is a word candidate, kept when its
peak region score reaches ``text_threshold`` and it is not tiny. The candidate minus its
link-only pixels is dilated in proportion to its thickness (the region score marks character
centres, so the raw component under-covers the glyphs), and its minimum-area rectangle is the
word box. Here the rectangle is returned as its axis-aligned bounding box.

Box convention everywhere: ``[x0, y0, x1, y1]`` integers, ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["boxes_from_scores", "scale_boxes"]

_EPS = 1e-4  # tolerance for float corners that should sit on a pixel centre
# a rectangle whose sides differ by at most this ratio is "nearly square" (see _rect_bounds;
# chosen by hand, origin not recorded)
_SQUARE_RATIO = 1.1
# each word component is dilated by (this x sqrt(mean thickness x fill)) px, as in the official
# CRAFT post-processing (craft_utils.getDetBoxes_core: niter = int(sqrt(...) * 2))
_DILATE_FACTOR = 2
_ROUND_EPS = 1e-6  # scale_boxes: float noise that must not push a box edge to the next pixel


def _check_maps(region: np.ndarray, affinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    region = np.asarray(region)
    affinity = np.asarray(affinity)
    if region.ndim != 2 or region.shape != affinity.shape:
        raise ValueError(
            "region and affinity must be 2-D score maps of the same shape (h, w); got "
            f"{region.shape} and {affinity.shape}"
        )
    return region.astype(np.float32, copy=False), affinity.astype(np.float32, copy=False)


def _rect_bounds(points: np.ndarray) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the minimum-area rectangle around ``points`` (N, 2) x/y.

    A nearly square rectangle is replaced by the points' own bounds: for compact blobs such as
    a single letter the minimum-area rectangle can come out rotated by 45 degrees (a diamond)
    and its axis-aligned hull would be up to 40 % too wide.
    """
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    rect = cv2.minAreaRect(points)
    side_a, side_b = rect[1]
    if max(side_a, side_b) / (min(side_a, side_b) + 1e-5) <= _SQUARE_RATIO:
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])
    corners = cv2.boxPoints(rect)
    return (
        float(corners[:, 0].min()),
        float(corners[:, 1].min()),
        float(corners[:, 0].max()),
        float(corners[:, 1].max()),
    )


def boxes_from_scores(
    region: np.ndarray,
    affinity: np.ndarray,
    *,
    text_threshold: float = 0.7,
    link_threshold: float = 0.4,
    low_text: float = 0.4,
    min_area: int = 10,
) -> list[list[int]]:
    """Word boxes from one image's CRAFT score maps.

    Args:
        region: region (character) score, float ``(h, w)``, about [0, 1].
        affinity: affinity (link) score, same shape.
        text_threshold: a component is text only if its peak region score is at least this
            (0.7 as in the paper).
        link_threshold: affinity above this joins neighbouring characters into one word (0.4,
            the official release's default).
        low_text: region score above this belongs to a character (0.4, the official
            release's default).
        min_area: components with fewer pixels (in score-map pixels) are dropped (10, the
            official release's size filter).

    Returns:
        ``[[x0, y0, x1, y1], ...]`` in score-map pixel coordinates, ``x1``/``y1`` exclusive,
        clipped to ``(w, h)``, in the order of the components (top-to-bottom by first pixel).
    """
    region, affinity = _check_maps(region, affinity)
    img_h, img_w = region.shape
    text_mask = region > low_text
    link_mask = affinity > link_threshold
    link_only = link_mask & ~text_mask
    combined = (text_mask | link_mask).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(combined, connectivity=4)

    candidates = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area) + 1
    boxes: list[list[int]] = []
    for k in candidates:
        x, y, w, h, area = (int(v) for v in stats[k])
        inside = labels[y : y + h, x : x + w] == k
        if region[y : y + h, x : x + w][inside].max() < text_threshold:
            continue
        # grow by ~sqrt(thickness): area * min(w, h) / (w * h) is the component's mean
        # thickness times its fill ratio
        grow = int(math.sqrt(area * min(w, h) / (w * h)) * _DILATE_FACTOR)
        pad = (grow + 1) // 2
        sx, sy = max(x - pad, 0), max(y - pad, 0)
        ex, ey = min(x + w + pad, img_w), min(y + h + pad, img_h)
        seg = (labels[sy:ey, sx:ex] == k) & ~link_only[sy:ey, sx:ex]
        seg = seg.astype(np.uint8)
        if pad > 0:
            seg = cv2.dilate(seg, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8))
        rows, cols = np.nonzero(seg)
        if rows.size == 0:
            continue
        points = np.stack([cols + sx, rows + sy], axis=1).astype(np.float32)
        xmin, ymin, xmax, ymax = _rect_bounds(points)
        x0 = max(math.floor(xmin + _EPS), 0)
        y0 = max(math.floor(ymin + _EPS), 0)
        x1 = min(math.ceil(xmax - _EPS) + 1, img_w)  # the last pixel counts: exclusive end
        y1 = min(math.ceil(ymax - _EPS) + 1, img_h)
        if x1 > x0 and y1 > y0:
            boxes.append([x0, y0, x1, y1])
    return boxes


def scale_boxes(
    boxes: Sequence[Sequence[float]] | np.ndarray,
    ratio: float | tuple[float, float],
    *,
    image_shape: tuple[int, int] | None = None,
) -> list[list[int]]:
    """Map boxes to another pixel grid, rounding outwards, and clip them to the image.

    Args:
        boxes: ``[[x0, y0, x1, y1], ...]`` (``x1``/``y1`` exclusive), any length including 0.
        ratio: target pixels per source pixel, one number or ``(ratio_x, ratio_y)``; for CRAFT
            score maps that is 2 x (original size / network-input size).
        image_shape: ``(H, W)`` of the target image; boxes are clipped to it and boxes left
            empty by the clipping (e.g. lying entirely in the resize padding) are dropped.
            ``None``: no clipping.

    Returns:
        ``[[x0, y0, x1, y1], ...]`` Python ints; ``x0``/``y0`` rounded down, ``x1``/``y1`` up,
        so the scaled box always covers the source box.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return []
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) [x0, y0, x1, y1]; got shape {arr.shape}")
    rx, ry = (ratio, ratio) if np.isscalar(ratio) else ratio
    if not (rx > 0 and ry > 0):
        raise ValueError(f"ratio must be positive; got {ratio!r}")
    scale = np.array([rx, ry, rx, ry], dtype=np.float64)
    scaled = arr * scale
    out = np.empty_like(scaled)
    out[:, :2] = np.floor(scaled[:, :2] + _ROUND_EPS)
    out[:, 2:] = np.ceil(scaled[:, 2:] - _ROUND_EPS)
    if image_shape is not None:
        height, width = image_shape
        out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        out = out[keep]
    return out.astype(np.int64).tolist()
