"""Text boxes as pixels: the mask of a film's boxes, and a cleaned film encoded like its source.

The boxes are inpainted by :func:`xraydebug.inpaint.boxes.inpaint_boxes` (any inpainter of
the registry) on the *stored* pixels (``read_native``), so a 16-bit PNG or a 12-bit DICOM keeps
its depth; :func:`encode_like` writes them back in the source's raster format.
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
