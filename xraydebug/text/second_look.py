"""Saliency-guided second look: where the model's evidence sits outside every text box, look
again at that spot at high zoom, for fainter strokes.

A marker the first pass missed (a faint, small or turned letter) still shows up in the
insertion saliency of a model that reads it: a compact, high-saliency blob outside every box.
Each such blob's neighbourhood is cut out, enlarged so its long side is at least
``min_window_px``, and searched with a lower proposal contrast, verified by both networks
(PP-OCRv4 DBNet when installed, and CRAFT). Boxes found this way are returned separately so
that ``scan.csv`` can mark them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from xraydebug.text.detect import TextDetectConfig, detect_in_windows, merge_boxes
from xraydebug.text.ppocr import ppocr_available

__all__ = ["SecondLookConfig", "saliency_blobs", "second_look"]

Box = list[int]


@dataclass(frozen=True)
class SecondLookConfig:
    """Settings of :func:`second_look`.

    Attributes:
        top_share: a blob is made of the pixels in this top share of the saliency.
        max_area: blobs larger than this share of the image are not compact (not a marker).
        min_mass: a blob must hold at least this share of the total saliency.
        max_blobs: at most this many blobs per image, by mass.
        min_window_px: each window is enlarged (at most ``max_zoom``) to at least this side.
        max_zoom: the largest enlargement.
        min_contrast, verify_threshold, side_letter_threshold: the settings used inside the
            windows. Only the proposal contrast is lowered (first pass: 0.06): salient blobs
            are mostly the lesions the model should look at, and lower network or letter
            thresholds boxed anatomy there (2 of 16 text-free demo films at 0.3 / 0.7).
    """

    top_share: float = 0.02
    max_area: float = 0.03
    min_mass: float = 0.05
    max_blobs: int = 3
    min_window_px: int = 256
    max_zoom: float = 4.0
    min_contrast: float = 0.035
    verify_threshold: float = 0.5
    side_letter_threshold: float = 0.8


def saliency_blobs(
    saliency: np.ndarray, boxes: Sequence[Sequence[int]], config: SecondLookConfig
) -> list[Box]:
    """Windows ``[x0, y0, x1, y1]`` around compact saliency blobs that touch no text box.

    ``saliency``: float ``(H, W)``, >= 0, at image resolution (1 = most salient).
    """
    height, width = saliency.shape
    total = float(saliency.sum())
    if total <= 0:
        return []
    level = float(
        np.quantile(
            saliency[:: max(1, height // 256), :: max(1, width // 256)], 1.0 - config.top_share
        )
    )
    hot = (saliency >= max(level, 1e-6)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    taken = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        taken[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4] = True
    found = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area > config.max_area * height * width:
            continue
        blob = labels[y : y + h, x : x + w] == k
        if taken[y : y + h, x : x + w][blob].any():
            continue
        mass = float(saliency[y : y + h, x : x + w][blob].sum()) / total
        if mass < config.min_mass:
            continue
        grow = max(w, h, 16)
        window = [
            max(0, x - grow),
            max(0, y - grow),
            min(width, x + w + grow),
            min(height, y + h + grow),
        ]
        found.append((mass, window))
    found.sort(key=lambda f: -f[0])
    return [w for _, w in found[: config.max_blobs]]


def second_look(
    gray: np.ndarray,
    windows: Sequence[Sequence[int]],
    detect_config: TextDetectConfig,
    config: SecondLookConfig = SecondLookConfig(),
) -> list[Box]:
    """Text boxes (original pixels) found inside ``windows`` of ``gray`` (float (H, W) in
    [0, 1]) at high zoom with a lower proposal contrast, by DBNet (when installed) and by
    CRAFT."""
    names = ["ppocr", "craft"] if ppocr_available() else ["craft"]
    boxes: list[Box] = []
    for name in names:
        closer = replace(
            detect_config,
            detector=name,
            verify_threshold=config.verify_threshold,
            side_letter_threshold=config.side_letter_threshold,
            proposals=replace(detect_config.proposals, min_contrast=config.min_contrast),
        )
        boxes += detect_in_windows(
            gray, windows, closer, min_side=config.min_window_px, max_zoom=config.max_zoom
        )
    return merge_boxes(boxes)
