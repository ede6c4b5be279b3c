"""Classical inpainters from OpenCV: Telea and Navier-Stokes (``cv2.inpaint``) and Frequency
Selective Reconstruction (``cv2.xphoto.inpaint``, in the contrib wheel).

Telea (2004) marches inward from the hole's border, each pixel a weighted average of known
pixels within ``radius``; Navier-Stokes (Bertalmio et al. 2001) continues isophotes into the
hole. Both smooth: grain and texture stop at the hole's border. FSR (Seiler et al. 2015)
models each block around the hole as a sparse sum of DCT basis functions fitted to the known
pixels, so it carries texture and edges across the hole; it is run on windows around each
hole (it is far slower per pixel than Telea).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .base import Inpainter, InpainterConfig, register_inpainter


@dataclass(frozen=True)
class MarchingConfig(InpainterConfig):
    """``radius``: pixels around each filled pixel that it is computed from (the iGOS++
    paper cleaned COVIDx with Telea at radius 10)."""

    radius: float = 10.0

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0; got {self.radius}")


@register_inpainter
class TeleaInpainter(Inpainter):
    name = "telea"
    description = "OpenCV Telea fast marching: smooth, the iGOS++ paper's cleaning"
    config_class = MarchingConfig
    flag = cv2.INPAINT_TELEA

    def _fill(self, channel: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return cv2.inpaint(channel, mask, self.config.radius, self.flag)

    def _fill_native(self, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
            return cv2.inpaint(np.ascontiguousarray(pixels), mask, self.config.radius, self.flag)
        return super()._fill_native(pixels, mask)


@register_inpainter
class NavierStokesInpainter(TeleaInpainter):
    name = "ns"
    description = "OpenCV Navier-Stokes: continues edges into the hole"
    flag = cv2.INPAINT_NS


@dataclass(frozen=True)
class FSRConfig(InpainterConfig):
    """``quality``: ``fast`` or ``best`` (OpenCV's two FSR presets); ``margin``: known pixels
    kept around each hole in the window FSR sees."""

    quality: str = "fast"
    margin: int = 32

    def __post_init__(self) -> None:
        if self.quality not in ("fast", "best"):
            raise ValueError(f"quality must be 'fast' or 'best'; got {self.quality!r}")
        if self.margin < 1:
            raise ValueError(f"margin must be >= 1; got {self.margin}")


def hole_windows(mask: np.ndarray, margin: int) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` windows covering every hole of ``mask`` (uint8, 255 = fill) with
    ``margin`` known pixels around it; holes whose grown windows touch share one window."""
    height, width = mask.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1, 2 * margin + 1))
    grown = cv2.dilate(mask, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    windows = []
    for x, y, w, h, _ in stats[1:n]:
        windows.append((int(y), min(height, int(y + h)), int(x), min(width, int(x + w))))
    return windows


@register_inpainter
class FSRInpainter(Inpainter):
    name = "fsr"
    description = "OpenCV xphoto Frequency Selective Reconstruction: carries texture across"
    config_class = FSRConfig

    @classmethod
    def available(cls) -> bool:
        return hasattr(cv2, "xphoto")

    def load(self) -> FSRInpainter:
        if not self.available():
            raise RuntimeError(
                "the 'fsr' inpainter needs OpenCV's contrib modules (cv2.xphoto): install "
                "opencv-contrib-python-headless in place of opencv-python-headless"
            )
        return self

    def _fill(self, channel: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """FSR on each hole's window, in 8 bits over the window's own known range.

        OpenCV's FSR accepts 8- and 16-bit pixels, but its 16-bit path returns zeros
        (OpenCV 5.1), so every window is mapped to 1..255 by the min and max of its known
        pixels (a 12-bit film's fill then has steps of 1/254 of the window's contrast), filled
        and mapped back. ``fast`` leaves some pixels unfilled (0) in blocks with few known
        pixels; those take Telea's fill."""
        fast = self.config.quality == "fast"
        algorithm = cv2.xphoto.INPAINT_FSR_FAST if fast else cv2.xphoto.INPAINT_FSR_BEST
        out = channel.astype(np.float32)
        for y0, y1, x0, x1 in hole_windows(mask, self.config.margin):
            hole = mask[y0:y1, x0:x1] > 0
            window = out[y0:y1, x0:x1]
            lo, hi = float(window[~hole].min()), float(window[~hole].max())
            scale = 254.0 / (hi - lo) if hi > lo else 0.0
            small = np.rint(1.0 + (window - lo) * scale).clip(1, 255).astype(np.uint8)
            small[hole] = 0
            filled = np.zeros_like(small)
            cv2.xphoto.inpaint(small, np.where(hole, 0, 255).astype(np.uint8), filled, algorithm)
            missed = hole & (filled == 0)
            if missed.any():
                telea = cv2.inpaint(small, missed.astype(np.uint8) * 255, 10.0, cv2.INPAINT_TELEA)
                filled[missed] = telea[missed]
            values = lo + (filled.astype(np.float32) - 1.0) / scale if scale else window
            window[hole] = values[hole] if scale else lo
        if channel.dtype == np.float32:
            return out
        info = np.iinfo(channel.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(channel.dtype)
