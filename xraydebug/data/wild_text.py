"""Burned-in markers as they look on real films, for the text-detection benchmark.

Markers are drawn in any face of a font set (:func:`xraydebug.data.fonts.font_set`: the detector's
``bundled`` fonts, the ``tuning`` set, or ``heldout`` families it never saw), as side letters,
words, dates or multi-line blocks (site stamp, id, date), plain or on a flat label, brighter or
darker than the film, at a chosen contrast, opacity, size and angle, optionally stencil-cut.
:func:`degrade` then mimics what storage did to the film (JPEG, resampling).

Placement and ground truth follow :func:`xraydebug.data.markers.burn_marker`: within ``zone`` of
an edge or a corner, never overlapping ``avoid``; ``mask`` holds the pixels whose 8-bit value
changed and ``visible`` those changed by at least 8 grey levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from xraydebug.data.fonts import Face, render_face
from xraydebug.data.markers import _edge_origin, rotate_patch
from xraydebug.data.synth import near_any

__all__ = [
    "DEGRADE_KINDS",
    "LABELS",
    "POLARITIES",
    "WILD_KINDS",
    "WildMarker",
    "burn_wild_marker",
    "degrade",
    "wild_text",
]

WILD_KINDS = ("letter", "word", "date", "block")  # block: 2-3 lines (site stamp, name/date/ID)
LABELS = ("none", "bright", "dark")
POLARITIES = ("bright", "dark")
DEGRADE_KINDS = ("none", "jpeg", "resample")

_WORDS = (
    "PORTABLE",
    "SUPINE",
    "AP",
    "PA",
    "ERECT",
    "UPRIGHT",
    "SEMI-ERECT",
    "AP PORTABLE",
    "INSP",
    "EXP",
)
_SITES = (
    "ST MARY HOSP",
    "CITY GENERAL",
    "RIVERSIDE MED CTR",
    "NORTH CLINIC",
    "COUNTY HOSPITAL",
    "ST JUDE MC",
    "VALLEY REGIONAL",
    "GENERAL HOSP",
)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@dataclass(frozen=True)
class WildMarker:
    """One burned-in marker: what was drawn, how, and the pixels it changed.

    ``face`` is the :attr:`Face.name`, ``angle`` degrees counter-clockwise (0 upright),
    ``polarity`` whether the ink is brighter or darker than what is right around the glyphs
    (implied by the label when there is one), ``label`` the flat label drawn under the text
    (``"none"``, ``"bright"`` or ``"dark"``), ``contrast`` the realised ``|ink - surround|`` after
    clipping (surround: the label level, or the median of the film under the patch), ``opacity``
    the blend weight of the whole marker. ``box`` is ``[x0, y0, x1, y1]`` (x1/y1 exclusive) around
    ``visible`` (around ``mask`` if nothing is visible); ``mask`` is bool ``(H, W)``, True where
    the 8-bit value changed, ``visible`` where it changed by at least 8 grey levels.
    """

    kind: str
    text: str
    face: str
    renderer: str
    stencil: bool
    cap_px: float
    angle: float
    polarity: str
    label: str
    contrast: float
    opacity: float
    box: list[int]
    mask: np.ndarray
    visible: np.ndarray


def _check(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")


def _date(rng: np.random.Generator) -> str:
    year, month, day = (
        int(rng.integers(2015, 2025)),
        int(rng.integers(1, 13)),
        int(rng.integers(1, 29)),
    )
    style = int(rng.integers(3))
    if style == 0:
        text = f"{month:02d}/{day:02d}/{year}"
    elif style == 1:
        text = f"{year}-{month:02d}-{day:02d}"
    else:
        text = f"{day:02d} {_MONTHS[month - 1]} {year}"
    if rng.random() < 0.3:
        text += f" {int(rng.integers(24)):02d}:{int(rng.integers(60)):02d}"
    return text


def wild_text(rng: np.random.Generator, kind: str) -> str:
    """A marker text of ``kind`` (one of :data:`WILD_KINDS`).

    ``letter``: "L" or "R" (65/35); ``word``: a positioning word ("PORTABLE", "SUPINE", "AP",
    ...); ``date``: "03/12/2020", "2021-05-17" or "12 MAR 2020" styles, sometimes with a time;
    ``block``: 2-3 lines, in this order, out of a site name, an id ("ID 4829301"), a date and a
    word.
    """
    _check("kind", kind, WILD_KINDS)
    if kind == "letter":
        return str(rng.choice(["L", "R"], p=[0.65, 0.35]))
    if kind == "word":
        return str(rng.choice(_WORDS))
    if kind == "date":
        return _date(rng)
    parts = [
        str(rng.choice(_SITES)),
        f"ID {int(rng.integers(1_000_000, 10_000_000))}",
        _date(rng),
        str(rng.choice(_WORDS)),
    ]
    n_lines = int(rng.choice([2, 3]))
    keep = np.sort(rng.choice(len(parts), size=n_lines, replace=False))
    return "\n".join(parts[i] for i in keep)


def _patch(
    rng: np.random.Generator, glyph: np.ndarray, text: str, cap_px: float, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, ink)`` of the upright marker: the glyph cut to its ink, or on a flat label
    (margin 0.2-0.4 caps; square around a single letter) whose alpha is 1."""
    ys, xs = np.nonzero(glyph)
    ink = glyph[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if label == "none":
        return ink.copy(), ink
    margin = max(2, round(cap_px * rng.uniform(0.2, 0.4)))
    h, w = ink.shape
    if len(text.strip()) == 1:
        bh = bw = max(h, w) + 2 * margin
    else:
        bh, bw = h + 2 * margin, w + 2 * margin
    boxed = np.zeros((bh, bw), np.float32)
    oy, ox = (bh - h) // 2, (bw - w) // 2
    boxed[oy : oy + h, ox : ox + w] = ink
    return np.ones((bh, bw), np.float32), boxed


def _place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    h: int,
    w: int,
    avoid: Sequence[Sequence[int]],
    gap: int,
    zone: float,
) -> tuple[int, int] | None:
    """A top-left corner for an ``h x w`` patch within ``zone`` of an edge, ``gap`` px clear of
    ``avoid`` (20 tries), or None."""
    boxes = [list(b) for b in avoid]
    for _attempt in range(20):
        origin = _edge_origin(rng, shape, h, w, zone)
        if origin is None:
            return None
        x0, y0 = origin
        if not near_any([x0, y0, x0 + w, y0 + h], boxes, gap):
            return origin
    return None


def _ink_values(
    rng: np.random.Generator,
    region: np.ndarray,
    ink: np.ndarray,
    label: str,
    polarity: str,
    contrast: float,
) -> tuple[np.ndarray, float, float, str]:
    """``(values the patch blends toward, surround level, ink level, polarity)``: without a
    label the ink is ``contrast`` from the median film under the patch; a bright label
    (U(0.82, 1)) takes dark ink, a dark one (U(0, 0.12)) bright ink."""
    if label == "none":
        surround = float(np.median(region))
        sign = 1.0 if polarity == "bright" else -1.0
        level = float(np.clip(surround + sign * contrast, 0.0, 1.0))
        return np.full_like(ink, level), surround, level, polarity
    if label == "bright":
        surround, polarity = float(rng.uniform(0.82, 1.0)), "dark"
        level = max(0.0, surround - contrast)
    else:
        surround, polarity = float(rng.uniform(0.0, 0.12)), "bright"
        level = min(1.0, surround + contrast)
    return surround * (1.0 - ink) + level * ink, surround, level, polarity


def burn_wild_marker(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    face: Face,
    kind: str,
    cap_px: float,
    angle: float,
    polarity: str,
    label: str,
    contrast: float,
    opacity: float = 1.0,
    stencil: bool = False,
    thickness: float = 1.0,
    text: str | None = None,
    avoid: Sequence[Sequence[int]] = (),
    zone: float = 0.15,
) -> tuple[np.ndarray, WildMarker | None]:
    """Burn one marker into a copy of ``image`` (float32 ``(H, W)`` in [0, 1]).

    ``text`` (random :func:`wild_text` of ``kind`` when None; ``"\\n"`` separates lines) is drawn
    in ``face`` with capitals ``cap_px`` tall (``thickness`` and ``stencil`` as in
    :func:`~xraydebug.data.fonts.render_face`), rotated by ``angle`` degrees about its centre, and
    placed within ``zone`` of an edge or corner, never overlapping the boxes in ``avoid`` grown by
    ``max(3, cap_px / 2)``.

    ``label == "none"``: the glyph coverage times ``opacity`` is the blend weight and the ink is
    ``contrast`` brighter (``polarity="bright"``) or darker than the median film under the patch,
    clipped to [0, 1]. ``label == "bright"``: a flat label (margin 0.2-0.4 caps; square around a
    single letter) at U(0.82, 1.0) with ink ``contrast`` darker; ``"dark"``: a label at U(0, 0.12)
    with ink ``contrast`` brighter; the label sets the polarity (the argument is then ignored) and
    the whole patch is blended with ``opacity``. Changed pixels are rounded to 8-bit levels, as a
    PNG would store them; all other pixels are left as they were.

    Returns ``(new_image, marker)``; ``marker`` is None (and the image an unchanged copy) when no
    free place was found or nothing changed.
    """
    _check("kind", kind, WILD_KINDS)
    _check("label", label, LABELS)
    _check("polarity", polarity, POLARITIES)
    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"opacity must be in (0, 1]; got {opacity}")
    if not 0.0 <= contrast <= 1.0:
        raise ValueError(f"contrast must be in [0, 1]; got {contrast}")
    out = np.array(image, dtype=np.float32, copy=True)
    if text is None:
        text = wild_text(rng, kind)
    glyph = render_face(face, text, cap_px, thickness=thickness, stencil=stencil)
    if not glyph.any():
        return out, None
    alpha, ink = _patch(rng, glyph, text, cap_px, label)
    if angle % 360:
        alpha, ink = rotate_patch(alpha, ink, angle)
    h, w = alpha.shape
    origin = _place(rng, out.shape, h, w, avoid, max(3, round(cap_px / 2)), zone) if h else None
    if origin is None:
        return out, None
    x0, y0 = origin
    region = out[y0 : y0 + h, x0 : x0 + w]
    value, surround, level, polarity = _ink_values(rng, region, ink, label, polarity, contrast)
    weight = alpha * np.float32(opacity)
    before = np.round(region * 255)
    after = np.round(np.clip(region * (1.0 - weight) + value * weight, 0.0, 1.0) * 255)
    changed_patch = after != before
    region[changed_patch] = (after[changed_patch] / 255.0).astype(np.float32)
    changed = np.zeros(out.shape, bool)
    changed[y0 : y0 + h, x0 : x0 + w] = changed_patch
    visible = np.zeros(out.shape, bool)
    visible[y0 : y0 + h, x0 : x0 + w] = np.abs(after - before) >= 8
    if not changed_patch.any():
        return np.array(image, dtype=np.float32, copy=True), None
    py, px = np.nonzero(visible[y0 : y0 + h, x0 : x0 + w] if visible.any() else changed_patch)
    box = [x0 + int(px.min()), y0 + int(py.min()), x0 + int(px.max()) + 1, y0 + int(py.max()) + 1]
    marker = WildMarker(
        kind=kind,
        text=text,
        face=face.name,
        renderer=face.renderer,
        stencil=bool(stencil),
        cap_px=float(cap_px),
        angle=float(angle),
        polarity=polarity,
        label=label,
        contrast=float(abs(level - surround)),
        opacity=float(opacity),
        box=box,
        mask=changed,
        visible=visible,
    )
    return out, marker


def degrade(image: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, dict]:
    """What storage did to a film: ``kind`` is one of :data:`DEGRADE_KINDS`.

    ``"none"``: an unchanged copy. ``"jpeg"``: JPEG-encoded at quality U{70..90} and decoded
    (8-bit). ``"resample"``: downscaled by U(1.5, 3.0) with area averaging and upscaled back to
    the exact size with bilinear or bicubic interpolation (random), rounded to 8-bit levels.
    Returns ``(float32 image in [0, 1], info)``; ``info`` has ``"kind"`` and the parameters drawn.
    """
    _check("kind", kind, DEGRADE_KINDS)
    img = np.asarray(image, dtype=np.float32)
    if kind == "none":
        return img.copy(), {"kind": "none"}
    if kind == "jpeg":
        quality = int(rng.integers(70, 91))
        u8 = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        dec = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        return dec.astype(np.float32) / np.float32(255.0), {"kind": "jpeg", "quality": quality}
    factor = float(rng.uniform(1.5, 3.0))
    interp = str(rng.choice(["linear", "cubic"]))
    h, w = img.shape
    small = cv2.resize(
        img, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA
    )
    flag = cv2.INTER_LINEAR if interp == "linear" else cv2.INTER_CUBIC
    up = cv2.resize(small, (w, h), interpolation=flag)
    out = (np.round(np.clip(up, 0.0, 1.0) * 255) / 255).astype(np.float32)
    return out, {"kind": "resample", "factor": factor, "interp": interp}
