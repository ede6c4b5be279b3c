"""Remove burned-in text: inpainting of text boxes at the original bit depth.

The iGOS++ paper cleaned COVIDx by inpainting CRAFT's text boxes with Telea's method (radius
10), the default here; any inpainter of :mod:`xraydebug.inpaint` can be used. Each box is
dilated by a few pixels (glyph anti-aliasing and label-box borders reach past the detector's
box) and inpainted on the *stored* pixels (``read_native``), so a 16-bit PNG or a 12-bit DICOM
keeps its depth and values outside the boxes are untouched.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from xraydebug.data.imageio import ImageMeta

if TYPE_CHECKING:
    from xraydebug.inpaint import Inpainter

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


def inpaint_boxes(
    pixels: np.ndarray,
    boxes: Sequence[Box],
    dilate: int = 3,
    inpainter: Inpainter | None = None,
    meta: ImageMeta | None = None,
) -> np.ndarray:
    """Inpaint ``boxes`` in stored ``pixels`` ((H, W) or (H, W, C), any numeric dtype) with
    ``inpainter`` (default: Telea, radius 10).

    Returns a new array of the same shape and dtype; pixels outside the dilated boxes are
    bit-identical to the input. ``boxes`` are ``[x0, y0, x1, y1]`` with exclusive x1/y1.
    A learned inpainter saw films as a reader does: a MONOCHROME1 film (``meta``) is inverted
    for it (``lo + hi - pixels`` over the stored range) and back.
    """
    from xraydebug.inpaint import make_inpainter

    mask = box_mask(pixels.shape[:2], boxes, dilate)
    if not mask.any():
        return pixels.copy()
    inpainter = inpainter or make_inpainter("telea")
    flip = meta is not None and meta.photometric == "MONOCHROME1" and not inpainter.classical
    if not flip:
        return inpainter.inpaint([pixels], [mask])[0]
    lo, hi = pixels.min(), pixels.max()
    work = pixels.astype(np.int64) if pixels.dtype.kind in "iu" else pixels
    inverted = (hi + lo - work).astype(pixels.dtype)  # stays inside [lo, hi]
    filled = inpainter.inpaint([inverted], [mask])[0]
    out = (hi + lo - filled.astype(work.dtype)).astype(pixels.dtype)
    out[mask == 0] = pixels[mask == 0]
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
