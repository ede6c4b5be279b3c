"""Saliency-guided second look: where the model's evidence sits outside every text box, look
again at that spot at high zoom, for fainter strokes.

A marker the first pass missed (a faint, small or turned letter) still shows up in the
insertion saliency of a model that reads it: a compact, high-saliency blob outside every box.
Each such blob's neighbourhood is cut out, enlarged so its long side is at least
``min_window_px``, and searched with a lower proposal contrast, verified by every installed
detector that verifies windows (PP-OCRv4 DBNet and CRAFT). Boxes found this way are returned
separately so that ``scan.csv`` can mark them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import cv2
import numpy as np

from xraydebug.text.base import Box, TextDetector, merge_boxes
from xraydebug.text.registry import build_detector, detector_config, verifier_names

__all__ = ["SecondLook", "SecondLookConfig", "saliency_blobs"]

# the saliency quantile is taken on a subsample of about this many pixels a side (speed only)
_QUANTILE_SAMPLE_PX = 256
# saliency at or below this is no evidence, whatever the quantile (all-zero maps)
_MIN_SALIENCY = 1e-6
# a blob this close (px) to a first-pass box belongs to that text
_NEAR_BOX_PX = 4
# each window reaches the blob's size beyond it on every side, at least this many pixels:
# context for the proposals' top-hat around a marker the blob only partly covers
_MIN_WINDOW_MARGIN_PX = 16


@dataclass(frozen=True)
class SecondLookConfig:
    """Settings of :class:`SecondLook` and :func:`saliency_blobs` (chosen by hand on the
    synthetic demo films unless said otherwise).

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
            thresholds boxed anatomy there (2 of 16 text-free demo films at 0.3 / 0.7, with
            the letter templates; the side-letter network that replaced them keeps 0.8, not
            recalibrated beyond the demo's outcome).
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
    step_y = max(1, height // _QUANTILE_SAMPLE_PX)
    step_x = max(1, width // _QUANTILE_SAMPLE_PX)
    level = float(np.quantile(saliency[::step_y, ::step_x], 1.0 - config.top_share))
    hot = (saliency >= max(level, _MIN_SALIENCY)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    taken = np.zeros((height, width), bool)
    near = _NEAR_BOX_PX
    for x0, y0, x1, y1 in boxes:
        taken[max(0, y0 - near) : y1 + near, max(0, x0 - near) : x1 + near] = True
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
        grow = max(w, h, _MIN_WINDOW_MARGIN_PX)
        window = [
            max(0, x - grow),
            max(0, y - grow),
            min(width, x + w + grow),
            min(height, y + h + grow),
        ]
        found.append((mass, window))
    found.sort(key=lambda f: -f[0])
    return [w for _, w in found[: config.max_blobs]]


class SecondLook:
    """Text boxes inside windows of a film, looked for at high zoom with a lower proposal
    contrast by every installed detector that verifies windows (``TextDetector.verifies``:
    PP-OCRv4 DBNet and CRAFT).

    Each verifier has its own default config with ``verify_threshold``,
    ``side_letter_threshold`` and ``proposals.min_contrast`` from :class:`SecondLookConfig`.
    Build it once, :meth:`load` it, call it per film.
    """

    def __init__(
        self,
        config: SecondLookConfig = SecondLookConfig(),
        *,
        device: str = "auto",
        precision: str = "fp32",
    ) -> None:
        self.config = config
        self.device = device
        self.precision = precision
        self._verifiers: list[TextDetector] | None = None

    def verifiers(self) -> list[TextDetector]:
        """The verifying detectors, built (not loaded) on first use, in registration order."""
        if self._verifiers is None:
            settings = {
                "verify_threshold": self.config.verify_threshold,
                "side_letter_threshold": self.config.side_letter_threshold,
                "proposals.min_contrast": self.config.min_contrast,
            }
            self._verifiers = [
                build_detector(
                    detector_config(name, **settings), device=self.device, precision=self.precision
                )
                for name in verifier_names()
            ]
        return self._verifiers

    def load(self) -> Self:
        """Build and load every verifier (idempotent); returns ``self``."""
        for verifier in self.verifiers():
            verifier.load()
        return self

    def __call__(self, gray: np.ndarray, windows: Sequence[Sequence[int]]) -> list[Box]:
        """Boxes (original pixels, merged) found inside ``windows`` of ``gray`` (float
        ``(H, W)`` in [0, 1])."""
        boxes: list[Box] = []
        for verifier in self.load().verifiers():
            boxes += verifier.detect_in_windows(
                gray, windows, min_side=self.config.min_window_px, max_zoom=self.config.max_zoom
            )
        return merge_boxes(boxes)

    def describe(self) -> dict:
        """The verifiers' :meth:`~xraydebug.text.base.TextDetector.describe`, JSON-able."""
        return {"verifiers": [v.describe() for v in self.verifiers()]}
