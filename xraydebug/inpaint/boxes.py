"""Inpaint a film's text boxes at its original bit depth.

The iGOS++ paper cleaned COVIDx by inpainting CRAFT's text boxes with Telea's method (radius
10), the default here. Each box is dilated by a few pixels (glyph anti-aliasing and label-box
borders reach past the detector's box) and filled on the *stored* pixels, so values outside
the boxes are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xraydebug.data.imageio import ImageMeta
from xraydebug.text.inpaint import Box, box_mask

from .base import Inpainter, make_inpainter


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
