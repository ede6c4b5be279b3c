"""Remove burned-in text: OpenCV Telea inpainting of text boxes at the original bit depth.

The iGOS++ paper cleaned COVIDx by inpainting CRAFT's text boxes with Telea's method (radius
10). Here each box is dilated by a few pixels (glyph anti-aliasing and label-box borders reach
past the detector's box) and inpainted on the *stored* pixels (``read_native``), so a 16-bit
PNG or a 12-bit DICOM keeps its depth and values outside the boxes are untouched.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from xraydebug.data.imageio import ImageMeta

Box = Sequence[int]


def box_mask(shape: tuple[int, int], boxes: Sequence[Box], dilate: int = 3) -> np.ndarray:
    """uint8 (H, W) mask, 255 inside every box grown by ``dilate`` pixels (clipped)."""
    height, width = shape
    mask = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        xa, ya = max(0, int(x0) - dilate), max(0, int(y0) - dilate)
        xb, yb = min(width, int(x1) + dilate), min(height, int(y1) + dilate)
        if xb > xa and yb > ya:
            mask[ya:yb, xa:xb] = 255
    return mask


def _inpaint_channel(channel: np.ndarray, mask: np.ndarray, radius: float) -> np.ndarray:
    """Telea on one (H, W) channel of any numeric dtype; returns the same dtype."""
    if channel.dtype in (np.uint8, np.uint16):
        return cv2.inpaint(channel, mask, radius, cv2.INPAINT_TELEA)
    values = cv2.inpaint(channel.astype(np.float32), mask, radius, cv2.INPAINT_TELEA)
    if np.issubdtype(channel.dtype, np.integer):
        info = np.iinfo(channel.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(channel.dtype)


def inpaint_boxes(
    pixels: np.ndarray, boxes: Sequence[Box], dilate: int = 3, radius: float = 10.0
) -> np.ndarray:
    """Inpaint ``boxes`` in ``pixels`` ((H, W) or (H, W, C), any numeric dtype).

    Returns a new array of the same shape and dtype; pixels outside the dilated boxes are
    bit-identical to the input. ``boxes`` are ``[x0, y0, x1, y1]`` with exclusive x1/y1.
    """
    mask = box_mask(pixels.shape[:2], boxes, dilate)
    if not mask.any():
        return pixels.copy()
    if pixels.ndim == 2:
        out = _inpaint_channel(pixels, mask, radius)
    elif pixels.dtype == np.uint8 and pixels.shape[2] == 3:
        out = cv2.inpaint(np.ascontiguousarray(pixels), mask, radius, cv2.INPAINT_TELEA)
    else:
        out = np.stack(
            [
                _inpaint_channel(np.ascontiguousarray(pixels[..., c]), mask, radius)
                for c in range(pixels.shape[2])
            ],
            axis=-1,
        )
    outside = mask == 0
    out[outside] = pixels[outside]  # guarantee: nothing outside the boxes changes
    return out


def encode_like(pixels: np.ndarray, meta: ImageMeta) -> bytes:
    """Encode stored pixels in the source's raster format (PNG, JPEG q95, TIFF) and depth.

    DICOM is written by :func:`xraydebug.audit.clean.write_derived_dicom` instead.
    """
    fmt = meta.format.upper()
    if fmt == "PNG" and pixels.dtype == np.uint16 and pixels.ndim == 3:
        ok, data = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("OpenCV could not encode a 16-bit colour PNG")
        return data.tobytes()
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, format="PNG", optimize=False)
    elif fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=95, subsampling=0)
    elif fmt == "TIFF":
        image.save(buffer, format="TIFF", compression="tiff_lzw")
    else:
        raise ValueError(f"cannot encode format {meta.format!r} here")
    return buffer.getvalue()
