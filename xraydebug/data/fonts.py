"""The fonts text is drawn in: the DejaVu family bundled with matplotlib.

One list for the synthetic generators (:mod:`xraydebug.data.synth`, :mod:`xraydebug.data.markers`)
and the side-letter templates of the text detector (:mod:`xraydebug.text.glyphs`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xraydebug.errors import DatasetError

__all__ = ["FONT_FILES", "font", "font_paths", "render_text"]

FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansCondensed-Bold.ttf",
)
_CAP_HEIGHT = 0.73  # DejaVu capitals are this share of the font's pixel size
_FAINT = 0.06  # anti-aliasing fringes below this coverage are lost to 8-bit rounding


@lru_cache(maxsize=1)
def font_paths() -> tuple[Path, ...]:
    """The DejaVu TTFs bundled with matplotlib (present on any machine that installed it)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = tuple(root / name for name in FONT_FILES if (root / name).is_file())
    if not paths:
        raise DatasetError(f"no DejaVu fonts found under {root}; reinstall matplotlib")
    return paths


@lru_cache(maxsize=512)
def font(path: Path, size_px: int) -> ImageFont.FreeTypeFont:
    """The TrueType font at ``path`` at ``size_px`` pixels (cached)."""
    return ImageFont.truetype(str(path), size_px)


def render_text(font_path: Path, text: str, cap_px: float) -> np.ndarray:
    """``text`` in a font with capitals ``cap_px`` tall: coverage float32 ``(h, w)`` in [0, 1]
    with a 2 px margin; faint anti-aliasing fringes (< 0.06, lost to 8-bit rounding) are 0."""
    face = font(font_path, max(6, round(cap_px / _CAP_HEIGHT)))
    left, top, right, bottom = face.getbbox(text)
    pad = 2
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, font=face, fill=255)
    glyph = np.asarray(canvas, dtype=np.float32) / 255.0
    glyph[glyph < _FAINT] = 0.0
    return glyph
