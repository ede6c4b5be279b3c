"""Synthetic radiographic clutter that is not text, with exact ground truth.

Real chest films are crossed by wires, ECG leads with their electrodes, tubes and catheters,
rulers (dashed scales), surgical clips and jewellery. A burned-in-text detector must leave them
alone; :func:`add_clutter` draws such clutter onto a synthetic film so that a benchmark can check
that it does.

Kinds (:data:`CLUTTER_KINDS`; sizes in "px at 1024", scaled by ``u = max(H, W) / 1024``, thin
lines never below 1 px):

* ``wire``: a smooth cubic Bezier 1-3 px thick and 300-900 px long across the film, sometimes
  two parallel wires a few px apart;
* ``ecg_lead``: 1-4 electrodes, each a ring (outer diameter 25-45 px, 2-4 px thick) with a
  bright snap (6-10 px) at its centre and a 1-2 px lead leaving it for 150-500 px;
* ``tube``: an endotracheal / nasogastric tube entering from the top edge, a faint band
  (+0.05-0.15) 8-16 px wide and 400-900 px long with a bright 2-3 px radiopaque edge stripe;
* ``catheter``: a bright 2-4 px curve of 200-600 px, half of them ending in a pigtail curl;
* ``ruler``: a straight bar of 300-800 px (mostly vertical or horizontal near an edge) with
  ticks every 8-20 px, 6-10 px long and every 5th 15-25 px; no digits or letters;
* ``clip``: a cluster of 1-6 surgical clips 8-25 px long and 2-5 px wide (bars, bent bars,
  "V" and "C" shapes) at random angles;
* ``jewellery``: a necklace of beads or chain links (3-8 px) along a U-shaped curve across the
  upper film, often with a filled pendant (15-30 px) at its lowest point.

Metal is bright on a positive display: it is blended toward a level of 0.75-1.0 with its
anti-aliased coverage as alpha and never darkens the film; plastic (the tube's band) adds
0.05-0.15. Shapes are drawn with OpenCV's anti-aliased primitives (``cv2.LINE_AA``, sub-pixel
coordinates) into an 8-bit coverage layer at the film's own scale, inside the item's bounding
box, and only the covered pixels are blended; a 3000 px film takes a few tens of ms per item.

The ground truth of each item is the set of pixels whose 8-bit value it changed (``mask``) and
their bounding box, as for the text markers of :mod:`xraydebug.data.markers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLUTTER_KINDS", "ClutterItem", "add_clutter"]

CLUTTER_KINDS = ("wire", "ecg_lead", "tube", "catheter", "ruler", "clip", "jewellery")

_TRIES = 8  # placements tried per item before it is skipped
_SHIFT = 4  # OpenCV fractional bits: coordinates and radii in 1/16 px
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class ClutterItem:
    """One clutter item drawn onto a film, and the pixels it changed.

    Attributes:
        kind: One of :data:`CLUTTER_KINDS`.
        box: ``[x0, y0, x1, y1]`` integer pixels (x1/y1 exclusive), tight around ``mask``.
        mask: bool ``(H, W)`` of the whole film, True where this item changed the 8-bit value
            (``round(x * 255)``) of the film as it was before the item was drawn (items are
            drawn in order; for a single item this is exactly the difference between the
            output and the input).
    """

    kind: str
    box: list[int]
    mask: np.ndarray


# --- geometry: shapes in film coordinates (x, y), float px -------------------------------------


@dataclass(frozen=True)
class _Lines:
    """Open or closed polylines, each ``(N, 2)``, drawn ``thickness`` px wide."""

    paths: tuple[np.ndarray, ...]
    thickness: int
    closed: bool = False


@dataclass(frozen=True)
class _Fill:
    """Filled polygons, each ``(N, 2)``."""

    paths: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class _Circles:
    """Circles at ``centers`` ``(K, 2)`` with ``radii`` ``(K,)``; ``thickness`` -1 fills them."""

    centers: np.ndarray
    radii: np.ndarray
    thickness: int


_Shape = _Lines | _Fill | _Circles


@dataclass(frozen=True)
class _Layer:
    """Shapes blended with one rule: ``add`` adds ``value`` times the coverage; ``metal`` moves
    the film toward ``value`` by the coverage, never darker."""

    mode: str
    value: float
    shapes: tuple[_Shape, ...]


def _extent(shape: _Shape) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` in film px that contains everything ``shape`` may cover."""
    if isinstance(shape, _Circles):
        reach = shape.radii + max(shape.thickness, 0) / 2 + 2
        c = shape.centers
        return (
            float(np.min(c[:, 0] - reach)),
            float(np.min(c[:, 1] - reach)),
            float(np.max(c[:, 0] + reach)),
            float(np.max(c[:, 1] + reach)),
        )
    pts = np.concatenate(shape.paths)
    pad = (shape.thickness / 2 if isinstance(shape, _Lines) else 0) + 2
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _draw(alpha: np.ndarray, shape: _Shape, x0: int, y0: int) -> None:
    """Draw ``shape`` (full coverage 255, anti-aliased) into ``alpha`` whose origin is (x0, y0)."""
    origin = np.array([x0, y0], dtype=np.float64)
    if isinstance(shape, _Circles):
        centers = np.round((shape.centers - origin) * _ONE).astype(np.int64)
        radii = np.maximum(np.round(shape.radii * _ONE), 1).astype(np.int64)
        for (cx, cy), r in zip(centers.tolist(), radii.tolist(), strict=True):
            cv2.circle(alpha, (cx, cy), r, 255, shape.thickness, cv2.LINE_AA, _SHIFT)
        return
    paths = [np.round((p - origin) * _ONE).astype(np.int32) for p in shape.paths]
    if isinstance(shape, _Fill):
        cv2.fillPoly(alpha, paths, 255, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(alpha, paths, shape.closed, 255, shape.thickness, cv2.LINE_AA, _SHIFT)


def _render(
    levels: np.ndarray, layers: list[_Layer], avoid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Blend ``layers`` over ``levels`` (uint8 ``(H, W)``) without writing to it.

    Returns ``(ys, xs, new)``: the film pixels whose 8-bit value changes and their new values, or
    None when nothing changes or a changed pixel lies in ``avoid`` (bool ``(H, W)``).
    """
    height, width = levels.shape
    ext = np.array([_extent(s) for layer in layers for s in layer.shapes])
    x0, y0 = max(0, math.floor(ext[:, 0].min())), max(0, math.floor(ext[:, 1].min()))
    x1 = min(width, math.ceil(ext[:, 2].max()) + 1)
    y1 = min(height, math.ceil(ext[:, 3].max()) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    alphas = []
    for layer in layers:
        alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for shape in layer.shapes:
            _draw(alpha, shape, x0, y0)
        alphas.append(alpha)
    support = alphas[0]
    for alpha in alphas[1:]:
        support = np.maximum(support, alpha)
    ys, xs = np.nonzero(support)
    if ys.size == 0:
        return None
    old = levels[y0:y1, x0:x1][ys, xs]
    value = old.astype(np.float32)
    for layer, alpha in zip(layers, alphas, strict=True):
        cover = alpha[ys, xs].astype(np.float32) * np.float32(1 / 255)
        if layer.mode == "add":
            value += cover * np.float32(layer.value * 255)
        else:
            value += cover * np.maximum(np.float32(layer.value * 255) - value, 0)
    new = np.clip(np.round(value), 0, 255).astype(np.uint8)
    keep = new != old
    ys, xs, new = ys[keep] + y0, xs[keep] + x0, new[keep]
    if ys.size == 0 or (avoid is not None and avoid[ys, xs].any()):
        return None
    return ys, xs, new


# --- random geometry helpers ------------------------------------------------------------------


def _px(rng: np.random.Generator, lo: float, hi: float, u: float) -> float:
    """A length drawn in [lo, hi] px at 1024, in film px."""
    return float(rng.uniform(lo, hi)) * u


def _thick(rng: np.random.Generator, lo: float, hi: float, u: float) -> int:
    """A line thickness drawn in [lo, hi] px at 1024, in whole film px (at least 1)."""
    return max(1, round(float(rng.uniform(lo, hi)) * u))


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _site(rng: np.random.Generator, h: int, w: int, central: float = 0.85) -> np.ndarray:
    """A point over the body (central area) with probability ``central``, else anywhere."""
    if rng.random() < central:
        return np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.12, 0.85) * h])
    return np.array([rng.uniform(0, w), rng.uniform(0, h)])


def _curve(
    rng: np.random.Generator, start: np.ndarray, angle: float, length: float, bend: float
) -> np.ndarray:
    """A smooth cubic Bezier ``(N, 2)`` from ``start`` heading ``angle``, arc length ``length``.

    The control points leave the chord sideways by up to ``bend`` times its length.
    """
    d = _unit(angle)
    n = np.array([-d[1], d[0]])
    p0, p3 = start, start + d * length
    p1 = p0 + d * length * rng.uniform(0.2, 0.45) + n * length * rng.uniform(-bend, bend)
    p2 = p0 + d * length * rng.uniform(0.55, 0.8) + n * length * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, max(16, int(length / 3)))[:, None]
    pts = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    arc = float(np.hypot(*np.diff(pts, axis=0).T).sum())
    return p0 + (pts - p0) * (length / max(arc, 1e-6))


def _normals(pts: np.ndarray) -> np.ndarray:
    """Unit normals ``(N, 2)`` of the polyline ``pts`` (to the left of its direction)."""
    tangent = np.gradient(pts, axis=0)
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    return np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)


def _resample(pts: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` px of arc length along the polyline ``pts``."""
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    q = np.arange(0.0, cum[-1] + 1e-9, max(spacing, 0.5))
    return np.stack([np.interp(q, cum, pts[:, 0]), np.interp(q, cum, pts[:, 1])], axis=1)


def _pigtail(rng: np.random.Generator, pts: np.ndarray, u: float) -> np.ndarray:
    """A shrinking curl ``(N, 2)`` continuing the polyline ``pts`` smoothly from its end."""
    end = pts[-1]
    d = pts[-1] - pts[-2]
    d /= max(float(np.hypot(*d)), 1e-9)
    radius = _px(rng, 8, 18, u)
    center = end + radius * rng.choice([-1.0, 1.0]) * np.array([-d[1], d[0]])
    phi0 = math.atan2(end[1] - center[1], end[0] - center[0])
    turn = 1.0 if d @ np.array([-math.sin(phi0), math.cos(phi0)]) > 0 else -1.0
    sweep = rng.uniform(1.5, 2.3) * math.pi
    t = np.linspace(0.0, 1.0, max(12, int(sweep * radius / 2)))[1:]
    phi = phi0 + turn * sweep * t
    r = radius * (1 - 0.35 * t)
    return center + np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)


# --- the kinds ----------------------------------------------------------------------------------


def _wire(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    length = _px(rng, 300, 900, u)
    thickness = _thick(rng, 1, 3, u)
    angle = rng.uniform(0, math.pi)
    start = _site(rng, h, w) - _unit(angle) * length / 2
    pts = _curve(rng, start, angle, length, rng.uniform(0.05, 0.3))
    paths = [pts]
    if rng.random() < 0.3:  # a second wire running alongside
        paths.append(pts + _normals(pts) * (thickness + _px(rng, 2, 6, u)))
    return [_Layer("metal", rng.uniform(0.8, 1.0), (_Lines(tuple(paths), thickness),))]


def _ecg_lead(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    count = int(rng.integers(1, 5))
    ring_t = _thick(rng, 2, 4, u)
    wire_t = _thick(rng, 1, 2, u)
    centers, rings, snaps, leads = [], [], [], []
    for _ in range(count):
        c = _site(rng, h, w, 0.9)
        outer = _px(rng, 25, 45, u)
        centers.append(c)
        rings.append(max(outer / 2 - ring_t / 2, 1.0))
        snaps.append(max(_px(rng, 6, 10, u) / 2, 0.75))
        theta = rng.uniform(0, 2 * math.pi)
        start = c + _unit(theta) * outer / 2
        angle = theta + rng.uniform(-0.5, 0.5)
        leads.append(_curve(rng, start, angle, _px(rng, 150, 500, u), 0.3))
    centers_arr = np.array(centers)
    ring_level, snap_level = rng.uniform(0.75, 0.9), rng.uniform(0.9, 1.0)
    return [
        _Layer(
            "metal",
            ring_level,
            (_Circles(centers_arr, np.array(rings), ring_t), _Lines(tuple(leads), wire_t)),
        ),
        _Layer("metal", snap_level, (_Circles(centers_arr, np.array(snaps), -1),)),
    ]


def _tube(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    stripe = _thick(rng, 2, 3, u)
    width = max(stripe + 2, round(_px(rng, 8, 16, u)))
    start = np.array([rng.uniform(0.35, 0.65) * w, -width / 2])  # enters from the top edge
    angle = math.pi / 2 + rng.uniform(-0.35, 0.35)
    pts = _curve(rng, start, angle, _px(rng, 400, 900, u), rng.uniform(0.1, 0.3))
    side = rng.choice([-1.0, 1.0])
    edge = pts + _normals(pts) * side * (width - stripe) / 2
    return [
        _Layer("add", rng.uniform(0.05, 0.15), (_Lines((pts,), width),)),
        _Layer("metal", rng.uniform(0.8, 1.0), (_Lines((edge,), stripe),)),
    ]


def _catheter(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    thickness = _thick(rng, 2, 4, u)
    angle = rng.uniform(0, 2 * math.pi)
    pts = _curve(rng, _site(rng, h, w), angle, _px(rng, 200, 600, u), rng.uniform(0.1, 0.35))
    if rng.random() < 0.5:
        pts = np.vstack([pts, _pigtail(rng, pts, u)])
    return [_Layer("metal", rng.uniform(0.8, 1.0), (_Lines((pts,), thickness),))]


def _ruler(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    length = _px(rng, 300, 800, u)
    bar_t, tick_t = _thick(rng, 2, 4, u), _thick(rng, 1, 3, u)
    spacing = _px(rng, 8, 20, u)
    minor, major = _px(rng, 6, 10, u), _px(rng, 15, 25, u)
    if rng.random() < 0.75:  # vertical or horizontal near an edge, ticks toward the film
        vertical = rng.random() < 0.5
        along, across = (h, w) if vertical else (w, h)
        length = min(length, 0.95 * along)
        far = rng.random() < 0.5
        margin = _px(rng, 12, 80, u)
        pos = across - margin if far else margin
        a0 = rng.uniform(0, max(along - length, 0))
        jitter = math.radians(rng.uniform(-2, 2))
        start = np.array([pos, a0] if vertical else [a0, pos])
        angle = (math.pi / 2 if vertical else 0.0) + jitter
        inward = np.array([-1.0, 0.0] if vertical else [0.0, -1.0]) * (1 if far else -1)
    else:  # anywhere, at any angle
        angle = rng.uniform(0, math.pi)
        start = _site(rng, h, w) - _unit(angle) * length / 2
        inward = _unit(angle + math.pi / 2) * rng.choice([-1.0, 1.0])  # ticks' side
    d = _unit(angle)
    n = np.array([-d[1], d[0]])
    if n @ inward < 0:
        n = -n
    k = int(length // spacing) + 1
    along_pts = start + (np.arange(k) * spacing)[:, None] * d
    base = along_pts + n * bar_t / 2
    tick_len = np.where(np.arange(k) % 5 == 0, major, minor)
    ticks = np.stack([base, base + tick_len[:, None] * n], axis=1)
    bar = np.stack([along_pts[0], along_pts[-1]])
    return [
        _Layer(
            "metal",
            rng.uniform(0.8, 1.0),
            (_Lines((bar,), bar_t), _Lines(tuple(ticks), tick_t)),
        )
    ]


def _clip(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    center = _site(rng, h, w, 0.9)
    spread = _px(rng, 10, 60, u)
    shapes = []
    for _ in range(int(rng.integers(1, 7))):
        length = _px(rng, 8, 25, u)
        form = int(rng.integers(4))
        half = length / 2
        if form == 0:  # straight bar
            local = np.array([[-half, 0.0], [half, 0.0]])
        elif form == 1:  # slightly bent bar
            bow = rng.uniform(0.1, 0.25) * length * rng.choice([-1.0, 1.0])
            local = np.array([[-half, 0.0], [0.0, bow], [half, 0.0]])
        elif form == 2:  # "V"
            leg = length * math.tan(math.radians(rng.uniform(10, 25)))
            local = np.array([[half, -leg], [-half, 0.0], [half, leg]])
        else:  # "C"
            gap = rng.uniform(0.5, 1.0)
            t = np.linspace(gap, 2 * math.pi - gap, 16)
            local = np.stack([np.cos(t), np.sin(t)], axis=1) * half
        rot = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(rot), math.sin(rot)
        r, phi = spread * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        offset = center + r * _unit(phi)
        pts = local @ np.array([[c, s], [-s, c]]) + offset
        shapes.append(_Lines((pts,), _thick(rng, 2, 5, u)))
    return [_Layer("metal", rng.uniform(0.85, 1.0), tuple(shapes))]


def _jewellery(rng: np.random.Generator, h: int, w: int, u: float) -> list[_Layer]:
    cx = w * (0.5 + rng.uniform(-0.08, 0.08))
    top = h * rng.uniform(-0.04, 0.1)
    half, depth = _px(rng, 90, 220, u), _px(rng, 120, 320, u)
    tilt = rng.uniform(-0.1, 0.1)
    s = np.linspace(-1.0, 1.0, 400)
    curve = np.stack([cx + half * s, top + depth * (1 - s**2) + tilt * half * s], axis=1)
    bead = _px(rng, 3, 8, u)
    beads = _resample(curve, bead * rng.uniform(1.0, 1.8))
    shapes: list[_Shape] = []
    if rng.random() < 0.5:  # beads on a thread
        shapes.append(_Circles(beads, np.full(len(beads), max(bead / 2, 0.6)), -1))
        if rng.random() < 0.5:
            shapes.append(_Lines((curve,), 1))
    else:  # chain links
        shapes.append(_Circles(beads, np.full(len(beads), max(bead / 2, 1.0)), 1))
    if rng.random() < 0.6:  # a pendant hanging from the lowest point
        size = _px(rng, 15, 30, u)
        low = curve[int(np.argmax(curve[:, 1]))]
        pc = low + np.array([0.0, size / 2 + bead / 2])
        form = int(rng.integers(4))
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        if form == 0:  # disc
            shapes.append(_Circles(pc[None], np.array([size / 2]), -1))
        else:
            if form == 1:  # oval
                outline = np.stack([rng.uniform(0.5, 0.8) * np.sin(t), -np.cos(t)], axis=1)
            elif form == 2:  # diamond
                outline = np.array([[0.0, -1.0], [0.6, 0.0], [0.0, 1.0], [-0.6, 0.0]])
            else:  # drop, its tip at the chain
                outline = np.stack([0.7 * np.sin(t) * np.sin(t / 2), -np.cos(t)], axis=1)
            shapes.append(_Fill((pc + outline * size / 2,)))
    return [_Layer("metal", rng.uniform(0.85, 1.0), tuple(shapes))]


_MAKERS: dict[str, Callable[[np.random.Generator, int, int, float], list[_Layer]]] = {
    "wire": _wire,
    "ecg_lead": _ecg_lead,
    "tube": _tube,
    "catheter": _catheter,
    "ruler": _ruler,
    "clip": _clip,
    "jewellery": _jewellery,
}


def _avoid_mask(avoid: Sequence[Sequence[int]], h: int, w: int, grow: int) -> np.ndarray | None:
    """bool ``(h, w)``: True inside the ``avoid`` boxes grown by ``grow`` px (None: no boxes)."""
    if len(avoid) == 0:
        return None
    mask = np.zeros((h, w), bool)
    for box in avoid:
        if len(box) != 4:
            raise ValueError(f"avoid boxes must be [x0, y0, x1, y1]; got {box!r}")
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[max(0, y0 - grow) : max(0, y1 + grow), max(0, x0 - grow) : max(0, x1 + grow)] = True
    return mask


def add_clutter(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    kinds: Sequence[str] | None = None,
    avoid: Sequence[Sequence[int]] = (),
) -> tuple[np.ndarray, list[ClutterItem]]:
    """Draw radiographic clutter that is not text (wires, tubes, rulers, ...) onto a film.

    Args:
        image: float32 ``(H, W)`` in [0, 1], any size (256-3000 px expected); not modified.
        rng: The only source of randomness: the same generator state gives the same output.
        kinds: One item per entry, drawn in order (repeats allowed; a bare string is one kind).
            None draws 1-3 distinct kinds at random from :data:`CLUTTER_KINDS`.
        avoid: Boxes ``[x0, y0, x1, y1]`` (x1/y1 exclusive), e.g. burned-in text, that no item
            may change a pixel of, nor of a margin of ``max(2, ceil(4 * u))`` px around them.

    Returns:
        ``(new_image, items)``: ``new_image`` float32 ``(H, W)`` in [0, 1] on 8-bit levels
        (``np.round(x * 255) / 255``; the input is rounded the same way where no item drew),
        and one :class:`ClutterItem` per item drawn. An item that cannot be placed within the
        film, changes no pixel or overlaps ``avoid`` is tried again up to 8 times with a new
        placement, then skipped.

    Raises:
        ValueError: if ``image`` is not 2-D or a kind is not one of :data:`CLUTTER_KINDS`.
    """
    img = np.asarray(image)
    if not np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W); got shape {img.shape}")
    if kinds is None:
        count = int(rng.integers(1, 4))
        picks = rng.choice(len(CLUTTER_KINDS), size=count, replace=False)
        chosen = [CLUTTER_KINDS[int(i)] for i in picks]
    else:
        chosen = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = [k for k in chosen if k not in CLUTTER_KINDS]
        if unknown:
            raise ValueError(f"unknown clutter kind(s) {unknown}; valid kinds: {CLUTTER_KINDS}")
    h, w = img.shape
    u = max(h, w) / 1024
    scaled = img * 255  # a new array, same float dtype as the film (as the caller rounds)
    levels = np.clip(np.round(scaled, out=scaled), 0, 255, out=scaled).astype(np.uint8)
    avoid_mask = _avoid_mask(avoid, h, w, max(2, math.ceil(4 * u)))
    items: list[ClutterItem] = []
    for kind in chosen:
        for _ in range(_TRIES):
            drawn = _render(levels, _MAKERS[kind](rng, h, w, u), avoid_mask)
            if drawn is not None:
                break
        else:
            continue
        ys, xs, new = drawn
        levels[ys, xs] = new
        mask = np.zeros((h, w), bool)
        mask[ys, xs] = True
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        items.append(ClutterItem(kind=kind, box=box, mask=mask))
    return levels.astype(np.float32) / np.float32(255), items
