"""The fonts text is drawn in.

The synthetic generators (:mod:`xraydebug.data.synth`, :mod:`xraydebug.data.markers`) draw in
the DejaVu family bundled with matplotlib (:func:`font_paths`). The text-detection benchmark
and the side-letter network's training draw in font sets (:data:`FONT_SETS`, :func:`font_set`):
``bundled`` (the fonts matplotlib ships), ``tuning`` (those plus three PyPI families: what the
detector may be trained and tuned on) and ``heldout`` (whole families the detector never saw,
incl. Hershey-style stroke fonts), all drawn by :func:`render_face`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xraydebug.errors import DatasetError
from xraydebug.fsutil import file_sha256

__all__ = [
    "FONT_FILES",
    "FONT_SETS",
    "Face",
    "face_sha256",
    "font",
    "font_paths",
    "font_set",
    "render_face",
    "render_text",
]

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


@lru_cache(maxsize=2048)
def font(path: Path, size_px: float) -> ImageFont.FreeTypeFont:
    """The TrueType or OpenType font at ``path`` at ``size_px`` pixels (fractional sizes too;
    cached)."""
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


# --- font sets for the text-detection benchmark ------------------------------------------------

_MPL = "matplotlib (PyPI)"
_STROKE = "xraydebug (built-in Hershey-style stroke font)"
# pip name -> (version pinned in pyproject's `fonts` extra, import name)
_FONT_PACKAGES = {
    "font-lato": ("0.1.0", "font_lato"),
    "font-caladea": ("0.0.2", "font_caladea"),
    "font-fjallaone": ("0.1.7", "font_fjallaone"),
    "font-roboto": ("0.0.1", "font_roboto"),
    "font-source-sans-pro": ("0.0.1", "font_source_sans_pro"),
    "font-source-serif-pro": ("0.0.1", "font_source_serif_pro"),
    "font-hanken-grotesk": ("0.0.2", "font_hanken_grotesk"),
    "font-rhd": ("0.1.3", "font_rhd"),
    "font-manrope": ("0.0.2", "font_manrope"),
    "font-fredoka-one": ("0.0.4", "font_fredoka_one"),
}
_LINE_SPACING = 1.45  # baseline to baseline, in cap heights
_STENCIL_GAP = 0.10  # width of a stencil bridge, in cap heights
_HERSHEY_SS = 4  # stroke faces are drawn 4x larger, then area-averaged down


@dataclass(frozen=True)
class Face:
    """One font face of a benchmark font set.

    ``renderer`` is ``"truetype"`` (``path`` is a TTF/OTF file drawn with Pillow) or
    ``"hershey"`` (a Hershey-style monoline stroke font built into this module; ``hershey`` is
    the ``cv2.FONT_HERSHEY_*`` code, possibly ``| cv2.FONT_ITALIC``, that picks its variant).
    ``package`` says where it comes from.
    """

    family: str
    style: str
    renderer: str
    package: str
    path: Path | None = None
    hershey: int = -1

    @property
    def name(self) -> str:
        """``"<family> <style>"``, e.g. ``"Roboto Bold"``."""
        return f"{self.family} {self.style}"


FONT_SETS = ("bundled", "tuning", "heldout")

# (family, style, file) in matplotlib's fonts/ttf folder
_BUNDLED_FILES = (
    ("DejaVu Sans", "Regular", "DejaVuSans.ttf"),
    ("DejaVu Sans", "Bold", "DejaVuSans-Bold.ttf"),
    ("DejaVu Sans", "Oblique", "DejaVuSans-Oblique.ttf"),
    ("DejaVu Sans", "Bold Oblique", "DejaVuSans-BoldOblique.ttf"),
    ("DejaVu Sans Mono", "Regular", "DejaVuSansMono.ttf"),
    ("DejaVu Sans Mono", "Bold", "DejaVuSansMono-Bold.ttf"),
    ("DejaVu Serif", "Regular", "DejaVuSerif.ttf"),
    ("DejaVu Serif", "Bold", "DejaVuSerif-Bold.ttf"),
    ("DejaVu Serif", "Italic", "DejaVuSerif-Italic.ttf"),
    ("DejaVu Sans", "Condensed Bold", "DejaVuSansCondensed-Bold.ttf"),  # only if present
    # TeX's Computer Modern: capitals, digits, "/", ":" and "-" sit at their ASCII codes
    # (checked visually), so they render as themselves with Pillow
    ("Computer Modern Sans", "Regular", "cmss10.ttf"),
    ("Computer Modern Roman", "Regular", "cmr10.ttf"),
    ("Computer Modern Typewriter", "Regular", "cmtt10.ttf"),
    ("Computer Modern Roman", "Bold", "cmb10.ttf"),
    ("Computer Modern Roman", "Italic", "cmti10.ttf"),
)
_OPTIONAL_FILES = frozenset({"DejaVuSansCondensed-Bold.ttf"})
# (family, style, pip package, file in the package's files/ folder)
_TUNING_FILES = (
    ("Lato", "Regular", "font-lato", "Lato-Regular.ttf"),
    ("Lato", "Bold", "font-lato", "Lato-Bold.ttf"),
    ("Lato", "Italic", "font-lato", "Lato-Italic.ttf"),
    ("Lato", "Black", "font-lato", "Lato-Black.ttf"),
    ("Caladea", "Regular", "font-caladea", "Caladea-Regular.ttf"),
    ("Caladea", "Bold", "font-caladea", "Caladea-Bold.ttf"),
    ("Caladea", "Italic", "font-caladea", "Caladea-Italic.ttf"),
    ("Fjalla One", "Regular", "font-fjallaone", "FjallaOne-Regular.ttf"),
)
_HELDOUT_FILES = (
    ("Roboto", "Regular", "font-roboto", "Roboto-Regular.ttf"),
    ("Roboto", "Bold", "font-roboto", "Roboto-Bold.ttf"),
    ("Roboto", "Italic", "font-roboto", "Roboto-Italic.ttf"),
    ("Roboto", "Black", "font-roboto", "Roboto-Black.ttf"),
    ("Roboto", "Light", "font-roboto", "Roboto-Light.ttf"),
    ("Roboto", "Medium", "font-roboto", "Roboto-Medium.ttf"),
    ("Source Sans Pro", "Regular", "font-source-sans-pro", "SourceSansPro-Regular.ttf"),
    ("Source Sans Pro", "Bold", "font-source-sans-pro", "SourceSansPro-Bold.ttf"),
    ("Source Sans Pro", "Italic", "font-source-sans-pro", "SourceSansPro-It.ttf"),
    ("Source Sans Pro", "Black", "font-source-sans-pro", "SourceSansPro-Black.ttf"),
    ("Source Serif Pro", "Regular", "font-source-serif-pro", "SourceSerifPro-Regular.ttf"),
    ("Source Serif Pro", "Bold", "font-source-serif-pro", "SourceSerifPro-Bold.ttf"),
    ("Source Serif Pro", "Semibold", "font-source-serif-pro", "SourceSerifPro-Semibold.ttf"),
    ("Hanken Grotesk", "Regular", "font-hanken-grotesk", "HankenGrotesk-Regular.otf"),
    ("Hanken Grotesk", "Bold", "font-hanken-grotesk", "HankenGrotesk-Bold.otf"),
    ("Hanken Grotesk", "Italic", "font-hanken-grotesk", "HankenGrotesk-Italic.otf"),
    ("Red Hat Display", "Regular", "font-rhd", "RedHatDisplay-Regular.ttf"),
    ("Red Hat Display", "Bold", "font-rhd", "RedHatDisplay-Bold.ttf"),
    ("Red Hat Display", "Black", "font-rhd", "RedHatDisplay-Black.ttf"),
    ("Red Hat Display", "Italic", "font-rhd", "RedHatDisplay-Italic.ttf"),
    ("Manrope", "Regular", "font-manrope", "Manrope-Regular.ttf"),
    ("Manrope", "Bold", "font-manrope", "Manrope-Bold.ttf"),
    ("Manrope", "ExtraBold", "font-manrope", "Manrope-ExtraBold.ttf"),
    ("Fredoka One", "Regular", "font-fredoka-one", "FredokaOne-Regular.ttf"),
    ("STIX General", "Regular", None, "STIXGeneral.ttf"),
    ("STIX General", "Bold", None, "STIXGeneralBol.ttf"),
    ("STIX General", "Italic", None, "STIXGeneralItalic.ttf"),
)
# (family, style, cv2.FONT_HERSHEY_* code [| cv2.FONT_ITALIC]) of the stroke faces
_HERSHEY_FACES = (
    ("Stroke Simplex", "Regular", 0),  # FONT_HERSHEY_SIMPLEX
    ("Stroke Duplex", "Regular", 2),  # FONT_HERSHEY_DUPLEX
    ("Stroke Complex", "Regular", 3),  # FONT_HERSHEY_COMPLEX
    ("Stroke Triplex", "Regular", 4),  # FONT_HERSHEY_TRIPLEX
    ("Stroke Plain", "Regular", 1),  # FONT_HERSHEY_PLAIN
    ("Stroke Simplex", "Italic", 0 | 16),  # FONT_HERSHEY_SIMPLEX | FONT_ITALIC
)


def _mpl_root() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _package_faces(rows: tuple, set_name: str) -> list[Face]:
    """Faces of ``rows`` (``(family, style, pip name or None for matplotlib, file)``)."""
    needed = sorted({pip for _f, _s, pip, _n in rows if pip})
    missing = [pip for pip in needed if importlib.util.find_spec(_FONT_PACKAGES[pip][1]) is None]
    if missing:
        raise DatasetError(
            f"font set {set_name!r} needs pip packages that are not installed: "
            f"{', '.join(missing)}; they are in the project's fonts extra: "
            "pip install -e '.[fonts]'"
        )
    faces = []
    for family, style, pip, file in rows:
        if pip is None:
            path, package = _mpl_root() / file, _MPL
        else:
            version, module = _FONT_PACKAGES[pip]
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin is not None
            path = Path(spec.origin).parent / "files" / file
            package = f"{pip}=={version} (PyPI)"
        if not path.is_file():
            raise DatasetError(f"font set {set_name!r}: {path} is missing; reinstall {package}")
        faces.append(Face(family, style, "truetype", package, path=path))
    return faces


@lru_cache(maxsize=8)
def font_set(name: str) -> tuple[Face, ...]:
    """The faces of benchmark font set ``name`` (one of :data:`FONT_SETS`).

    ``bundled``: fonts bundled with matplotlib (DejaVu, Computer Modern), there wherever
    xraydebug is. ``tuning``: ``bundled`` plus Lato, Caladea and Fjalla One, the fonts the
    side-letter network was trained and the detector tuned on. ``heldout``: families in
    neither (Roboto, Source Sans/Serif Pro, Hanken Grotesk, Red Hat Display, Manrope, Fredoka One,
    STIX) and Hershey-style stroke fonts (renderer ``"hershey"``). Raises
    :class:`DatasetError` naming the pip packages of the ``fonts`` extra that a set needs and
    are not installed.
    """
    if name not in FONT_SETS:
        raise ValueError(f"font set must be one of {FONT_SETS}; got {name!r}")
    if name in ("bundled", "tuning"):
        root = _mpl_root()
        rows = tuple(
            (family, style, None, file)
            for family, style, file in _BUNDLED_FILES
            if file not in _OPTIONAL_FILES or (root / file).is_file()
        )
        faces = _package_faces(rows, name)
        if name == "tuning":
            faces += _package_faces(_TUNING_FILES, name)
        return tuple(faces)
    faces = _package_faces(_HELDOUT_FILES, name)
    faces += [Face(f, s, "hershey", _STROKE, hershey=code) for f, s, code in _HERSHEY_FACES]
    return tuple(faces)


def face_sha256(face: Face) -> str:
    """The sha256 of ``face``'s font file; for the built-in stroke faces (renderer ``"hershey"``)
    ``"built-in (xraydebug stroke glyphs sha256:<hex>)"``, the hash of the glyph data."""
    if face.renderer == "hershey":
        return f"built-in (xraydebug stroke glyphs sha256:{_stroke_digest()})"
    if face.path is None:
        raise ValueError(f"face {face.name!r} has no font file")
    return file_sha256(face.path)


@lru_cache(maxsize=4096)
def _tt_cap_rows(path: Path, size: float) -> int:
    """Rows of "H" covered more than half at font size ``size``."""
    face = font(path, size)
    left, top, right, bottom = face.getbbox("H")
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), "H", font=face, fill=255)
    return int(np.count_nonzero((np.asarray(canvas) > 127).any(axis=1)))


@lru_cache(maxsize=4096)
def _tt_size(path: Path, cap_px: float) -> float:
    """The font size (pixels, quarter steps) whose capitals are ``cap_px`` tall."""
    reference = 400.0
    size = max(4.0, round(4 * cap_px * reference / _tt_cap_rows(path, reference)) / 4)
    if cap_px >= 100:  # hinting no longer moves the cap height by a visible fraction
        return size
    best = (abs(_tt_cap_rows(path, size) - cap_px), size)
    for _ in range(3):  # hinting snaps small cap heights to whole pixels: correct for it
        rows = _tt_cap_rows(path, size)
        if abs(rows - cap_px) <= 0.5 or rows == 0:
            break
        size = max(4.0, round(4 * size * cap_px / rows) / 4)
        best = min(best, (abs(_tt_cap_rows(path, size) - cap_px), size))
    return best[1]


# --- Hershey-style stroke font ---------------------------------------------------------------
# OpenCV 5 dropped the Hershey stroke fonts (its putText draws a built-in TrueType sans for every
# FONT_HERSHEY_* code), so the stroke faces are drawn here from a small monoline glyph set in the
# manner of Hershey's Roman fonts: straight strokes and elliptic arcs on a grid with capitals
# 12 units tall (y up from the baseline), stroked with round caps and joins. The cv2 code of a
# face picks the variant: SIMPLEX plain strokes, DUPLEX heavier, COMPLEX with serifs, TRIPLEX
# heavier with serifs, PLAIN coarse polygonal arcs, FONT_ITALIC slanted.

_STROKE_STYLES = {  # cv2 code & 15 -> (stroke weight factor, serifs, coarse arcs)
    0: (1.0, False, False),  # FONT_HERSHEY_SIMPLEX
    1: (1.0, False, True),  # FONT_HERSHEY_PLAIN
    2: (1.8, False, False),  # FONT_HERSHEY_DUPLEX
    3: (1.3, True, False),  # FONT_HERSHEY_COMPLEX
    4: (2.1, True, False),  # FONT_HERSHEY_TRIPLEX
}
_ITALIC = 16  # cv2.FONT_ITALIC
_SLANT = 0.22  # italic shear, x units per y unit
_STROKE_GAP = 2.5  # white space between glyphs, grid units


def _stroke_glyphs(coarse: bool) -> dict[str, tuple[float, list[list[tuple[float, float]]]]]:
    """``char -> (width, strokes)`` of the stroke font; arcs are polygonal when ``coarse``."""

    def arc(cx, cy, rx, ry, t0, t1):
        n = max(2, int(np.ceil(abs(t1 - t0) / (45 if coarse else 10))))
        ts = np.radians(np.linspace(t0, t1, n + 1))
        return [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in ts]

    def turn(points):  # 6 -> 9: a half turn about the centre of an 8 x 12 box
        return [(8 - x, 12 - y) for x, y in points]

    six_outer = arc(4, 6, 4, 6, 60, 270)
    six_bowl = arc(4, 3.7, 4, 3.7, 270, 630)
    glyphs = {
        "A": (8, [[(0, 0), (4, 12), (8, 0)], [(1.5, 4.5), (6.5, 4.5)]]),
        "B": (
            8.5,
            [
                [(0, 0), (0, 12)],
                [(0, 12), (5, 12), *arc(5, 9, 3, 3, 90, -90), (0, 6)],
                [(0, 6), (5.5, 6), *arc(5.5, 3, 3, 3, 90, -90), (0, 0)],
            ],
        ),
        "C": (8.5, [arc(4.5, 6, 4.5, 6, 40, 320)]),
        "D": (8.5, [[(0, 0), (0, 12), (3.5, 12), *arc(3.5, 6, 5, 6, 90, -90), (0, 0)]]),
        "E": (7, [[(7, 12), (0, 12), (0, 0), (7, 0)], [(0, 6), (5, 6)]]),
        "F": (7, [[(7, 12), (0, 12), (0, 0)], [(0, 6), (5, 6)]]),
        "G": (9, [[*arc(4.5, 6, 4.5, 6, 40, 360), (5, 6)]]),
        "H": (8, [[(0, 0), (0, 12)], [(8, 0), (8, 12)], [(0, 6), (8, 6)]]),
        "I": (0, [[(0, 0), (0, 12)]]),
        "J": (6, [[(6, 12), (6, 3), *arc(3, 3, 3, 3, 0, -180)]]),
        "K": (8, [[(0, 0), (0, 12)], [(8, 12), (0, 4)], [(2.5, 6.5), (8, 0)]]),
        "L": (7, [[(0, 12), (0, 0), (7, 0)]]),
        "M": (10, [[(0, 0), (0, 12), (5, 0), (10, 12), (10, 0)]]),
        "N": (8, [[(0, 0), (0, 12), (8, 0), (8, 12)]]),
        "O": (9, [arc(4.5, 6, 4.5, 6, 0, 360)]),
        "P": (8, [[(0, 0), (0, 12), (5, 12), *arc(5, 8.75, 3, 3.25, 90, -90), (0, 5.5)]]),
        "Q": (9, [arc(4.5, 6, 4.5, 6, 0, 360), [(5, 3), (9, -1)]]),
        "R": (
            8,
            [
                [(0, 0), (0, 12), (5, 12), *arc(5, 9, 3, 3, 90, -90), (0, 6)],
                [(4, 6), (8, 0)],
            ],
        ),
        "S": (8, [[*arc(4, 9, 4, 3, 20, 270), *arc(4, 3, 4, 3, 90, -160)]]),
        "T": (8, [[(0, 12), (8, 12)], [(4, 12), (4, 0)]]),
        "U": (8, [[(0, 12), (0, 4), *arc(4, 4, 4, 4, 180, 360), (8, 12)]]),
        "V": (8, [[(0, 12), (4, 0), (8, 12)]]),
        "W": (10, [[(0, 12), (2.5, 0), (5, 12), (7.5, 0), (10, 12)]]),
        "X": (8, [[(0, 12), (8, 0)], [(8, 12), (0, 0)]]),
        "Y": (8, [[(0, 12), (4, 6), (8, 12)], [(4, 6), (4, 0)]]),
        "Z": (8, [[(0, 12), (8, 12), (0, 0), (8, 0)]]),
        "0": (8, [arc(4, 6, 4, 6, 0, 360)]),
        "1": (4, [[(1.5, 9.5), (4, 12), (4, 0)]]),
        "2": (8, [[*arc(4, 8.5, 4, 3.5, 160, -35), (0, 0), (8, 0)]]),
        "3": (8, [[*arc(4, 9, 3.6, 3, 150, -90), *arc(4, 3, 4, 3, 90, -150)]]),
        "4": (9, [[(6, 0), (6, 12), (0, 3.5), (9, 3.5)]]),
        "5": (8, [[(7.5, 12), (1, 12), *arc(4, 3.8, 4, 3.8, 140, -150)]]),
        "6": (8, [six_outer, six_bowl]),
        "7": (8, [[(0, 12), (8, 12), (3, 0)]]),
        "8": (8, [arc(4, 9.1, 3.4, 2.9, -90, 270), arc(4, 3.2, 4, 3.2, 90, 450)]),
        "9": (8, [turn(six_outer), turn(six_bowl)]),
        "/": (7, [[(7, 12.5), (0, -1)]]),
        ":": (0, [[(0, 0), (0, 0.3)], [(0, 7.7), (0, 8)]]),
        "-": (7, [[(0, 5), (7, 5)]]),
        ".": (0, [[(0, 0), (0, 0.3)]]),
        ",": (1, [[(1, 0.3), (1, 0), (0, -2)]]),
        "#": (8, [[(3, 12), (2, 0)], [(7, 12), (6, 0)], [(0, 8), (8, 8)], [(0, 4), (8, 4)]]),
        "?": (7, [[*arc(3.5, 8.5, 3.5, 3.5, 160, -90), (3.5, 3)], [(3.5, 0), (3.5, 0.3)]]),
    }
    if coarse:  # a coarse plotter grid
        glyphs = {
            c: (w, [[(round(x * 2) / 2, round(y * 2) / 2) for x, y in s] for s in strokes])
            for c, (w, strokes) in glyphs.items()
        }
    return glyphs


def _serifs(strokes: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
    """``strokes`` plus a short horizontal serif at each steep stroke end on base or cap line."""
    out = list(strokes)
    for stroke in strokes:
        if len(stroke) < 2:
            continue
        for end, nxt in ((stroke[0], stroke[1]), (stroke[-1], stroke[-2])):
            dx, dy = nxt[0] - end[0], nxt[1] - end[1]
            if min(abs(end[1]), abs(end[1] - 12)) < 0.01 and abs(dy) > 2 * abs(dx):
                out.append([(end[0] - 1.6, end[1]), (end[0] + 1.6, end[1])])
    return out


@lru_cache(maxsize=8)
def _stroke_font(code: int) -> dict[str, tuple[float, list[np.ndarray]]]:
    """The glyphs of stroke variant ``code`` (a ``cv2.FONT_HERSHEY_*`` code): ``char -> (width,
    [points (n, 2) in grid units, y up])``, italic sheared."""
    _weight, serifs, coarse = _STROKE_STYLES[code & 15]
    slant = _SLANT if code & _ITALIC else 0.0
    font_ = {}
    for char, (width, strokes) in _stroke_glyphs(coarse).items():
        if serifs and char.isalnum():
            strokes = _serifs(strokes)
        arrays = []
        for stroke in strokes:
            pts = np.asarray(stroke, dtype=np.float64)
            pts[:, 0] += slant * pts[:, 1]
            arrays.append(pts)
        font_[char] = (float(width), arrays)
    return font_


@lru_cache(maxsize=1)
def _stroke_digest() -> str:
    """sha256 of the stroke glyph data and variant table (changes whenever the glyphs do)."""
    parts = [repr((_STROKE_STYLES, _SLANT, _STROKE_GAP))]
    for coarse in (False, True):
        for char, (width, strokes) in sorted(_stroke_glyphs(coarse).items()):
            points = ";".join(
                ",".join(f"{round(x, 5) + 0.0:.5f} {round(y, 5) + 0.0:.5f}" for x, y in s)
                for s in strokes
            )
            parts.append(f"{coarse}|{char}|{width:.5f}|{points}")
    data = "\n".join(parts)
    return hashlib.sha256(data.encode()).hexdigest()


def _bridges(
    glyph: np.ndarray, spans: list[tuple[str, float, float]], baseline: float, cap: float
) -> None:
    """Cut stencil bridges into ``glyph`` (in place) for one line.

    ``spans``: ``(char, x0, x1)`` ink columns of each glyph on the line; ``baseline``: the line's
    baseline row. Each glyph gets a horizontal gap at 45 % of the cap height (none for ``-``,
    ``:`` and ``.``, which it could erase) and, if wider than 0.45 caps, a vertical gap at 40 %
    of its width unless that column runs along a stem.
    """
    height, width = glyph.shape
    gap = max(1.0, _STENCIL_GAP * cap)
    top = baseline - cap
    y0 = max(0, round(top + 0.45 * cap - gap / 2))
    y1 = max(y0 + 1, round(top + 0.45 * cap + gap / 2))
    band0 = max(0, round(top - 0.3 * cap))
    band1 = min(height, round(baseline + 0.4 * cap))
    for char, gx0, gx1 in spans:
        if char.isspace():
            continue
        c0, c1 = max(0, int(np.floor(gx0))), min(width, int(np.ceil(gx1)) + 1)
        if char not in "-:.,":
            glyph[y0:y1, c0:c1] = 0.0
        if gx1 - gx0 > 0.45 * cap:
            centre = gx0 + 0.4 * (gx1 - gx0)
            x0 = max(0, round(centre - gap / 2))
            x1 = max(x0 + 1, round(centre + gap / 2))
            # a cut along a stem (as in "1" or "T") would shave it, not bridge it: skip those
            if np.count_nonzero((glyph[band0:band1, x0:x1] > 0.5).any(axis=1)) < 0.5 * cap:
                glyph[band0:band1, x0:x1] = 0.0


def _render_truetype(face: Face, lines: list[str], cap_px: float, stencil: bool) -> np.ndarray:
    path = Path(face.path)  # type: ignore[arg-type]
    ttf = font(path, _tt_size(path, float(cap_px)))
    step = _LINE_SPACING * cap_px
    baselines = [round(i * step) for i in range(len(lines))]
    boxes = [ttf.getbbox(line, anchor="ls") if line.strip() else None for line in lines]
    used = [(b, y) for b, y in zip(boxes, baselines, strict=True) if b is not None]
    x_lo = min(0, *(b[0] for b, _ in used))
    x_hi = max(b[2] for b, _ in used)
    y_lo = min(b[1] + y for b, y in used)
    y_hi = max(b[3] + y for b, y in used)
    pad = 3
    canvas = Image.new("L", (int(x_hi - x_lo) + 2 * pad, int(y_hi - y_lo) + 2 * pad), 0)
    draw = ImageDraw.Draw(canvas)
    ox, oy = pad - x_lo, pad - y_lo
    for line, box, base in zip(lines, boxes, baselines, strict=True):
        if box is not None:
            draw.text((ox, oy + base), line, font=ttf, fill=255, anchor="ls")
    glyph = np.asarray(canvas, dtype=np.float32) / 255.0
    if stencil:
        glyph = glyph.copy()
        for line, box, base in zip(lines, boxes, baselines, strict=True):
            if box is None:
                continue
            spans = []
            for i, char in enumerate(line):
                if char.isspace():
                    continue
                x = ttf.getlength(line[: i + 1]) - ttf.getlength(char)
                left, _t, right, _b = ttf.getbbox(char, anchor="ls")
                spans.append((char, ox + x + left, ox + x + right))
            _bridges(glyph, spans, oy + base, cap_px)
    return glyph


def _render_stroke(
    face: Face, lines: list[str], cap_px: float, thickness: float, stencil: bool
) -> np.ndarray:
    """A Hershey-style face: polylines drawn 4x larger with round caps, area-averaged down."""
    import cv2

    ss = _HERSHEY_SS
    code = face.hershey
    if code & 15 not in _STROKE_STYLES:
        raise ValueError(f"face {face.name!r}: unknown stroke variant {code}")
    glyphs = _stroke_font(code)
    weight = _STROKE_STYLES[code & 15][0]
    stroke = max(6, round(ss * thickness * weight * cap_px / 12))  # >= 1.5 px: never fades out
    stroke = min(stroke, round(ss * cap_px / 2))
    unit = (ss * cap_px - stroke) / 12  # 4x pixels per grid unit: the outer cap is cap_px
    half = stroke / 2
    step = _LINE_SPACING * cap_px
    layout = []  # (char, x offset in units, glyph) per line
    for line in lines:
        cursor, placed = 0.0, []
        for char in line:
            width, strokes = glyphs.get(char, glyphs["?"]) if not char.isspace() else (3.0, [])
            placed.append((char, cursor, strokes))
            cursor += width + _STROKE_GAP + stroke / unit
        layout.append(placed)
    extent = [
        max((off + float(s[:, 0].max()) for _c, off, ss_ in placed for s in ss_), default=0.0)
        for placed in layout
    ]
    pad = 2 + int(np.ceil(half / ss))  # final pixels
    lead = 0.05 * cap_px  # italic descenders lean left of the origin
    out_w = int(np.ceil(lead + max(extent) * unit / ss + stroke / ss)) + 2 * pad + 2
    # room for what pokes past the cap line ("/") and below the baseline ("Q", ",")
    out_h = int(np.ceil(1.1 * cap_px + (len(lines) - 1) * step + 0.3 * cap_px)) + 2 * pad
    canvas = np.zeros((out_h * ss, out_w * ss), np.uint8)
    x0 = (pad + lead) * ss + half
    baselines = [pad + 1.1 * cap_px + i * step for i in range(len(lines))]  # final pixels
    polylines = []
    for placed, base in zip(layout, baselines, strict=True):
        y0 = base * ss - half
        for _char, off, strokes in placed:
            for pts in strokes:
                xy = np.stack([x0 + (off + pts[:, 0]) * unit, y0 - pts[:, 1] * unit], axis=1)
                polylines.append(np.round(xy * 8).astype(np.int32))
    cv2.polylines(canvas, polylines, False, 255, stroke, cv2.LINE_AA, shift=3)
    glyph = cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_AREA)
    glyph = glyph.astype(np.float32) / 255.0
    if stencil:
        for placed, base in zip(layout, baselines, strict=True):
            spans = []
            for char, off, strokes in placed:
                if not strokes:
                    continue
                lo = min(float(s[:, 0].min()) for s in strokes)
                hi = max(float(s[:, 0].max()) for s in strokes)
                spans.append(
                    (
                        char,
                        (x0 + (off + lo) * unit - half) / ss,
                        (x0 + (off + hi) * unit + half) / ss,
                    )
                )
            _bridges(glyph, spans, base, cap_px)
    return glyph


def render_face(
    face: Face, text: str, cap_px: float, *, thickness: float = 1.0, stencil: bool = False
) -> np.ndarray:
    """``text`` in ``face`` with capitals ``cap_px`` tall: coverage float32 ``(h, w)`` in [0, 1]
    with a 2 px margin; faint fringes (< 0.06) are 0.

    ``text`` may hold ``"\\n"``: lines are left-aligned, 1.45 cap heights apart. ``thickness``
    scales the stroke of the stroke faces (renderer ``"hershey"``): stroke ≈ ``thickness *
    weight * cap_px / 12`` pixels (weight 1-2.1 by variant), at least 1.5, drawn at 4x and
    area-averaged down, so anti-aliased; TrueType faces ignore it.
    ``stencil`` cuts thin bridges (0.1 cap wide) across each glyph, a horizontal one at 45 % of
    the cap height and, for glyphs wider than 0.45 caps, a vertical one at 40 % of the glyph's
    width, so a letter falls into 2-4 pieces like a stencilled lead marker.
    """
    if cap_px <= 0:
        raise ValueError(f"cap_px must be > 0; got {cap_px}")
    lines = text.split("\n")
    if not any(line.strip() for line in lines):
        return np.zeros((4, 4), np.float32)
    if face.renderer == "truetype":
        glyph = _render_truetype(face, lines, float(cap_px), stencil)
    elif face.renderer == "hershey":
        glyph = _render_stroke(face, lines, float(cap_px), float(thickness), stencil)
    else:
        raise ValueError(f"renderer must be 'truetype' or 'hershey'; got {face.renderer!r}")
    glyph[glyph < _FAINT] = 0.0
    rows = np.flatnonzero(glyph.any(axis=1))
    cols = np.flatnonzero(glyph.any(axis=0))
    if rows.size == 0:
        return np.zeros((4, 4), np.float32)
    pad = 2
    out = np.zeros((rows[-1] - rows[0] + 1 + 2 * pad, cols[-1] - cols[0] + 1 + 2 * pad), np.float32)
    out[pad:-pad, pad:-pad] = glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return out
