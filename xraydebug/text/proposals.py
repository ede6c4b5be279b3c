"""Cheap text proposals at the film's own resolution: where could burned-in text be?

Burned-in text is drawn, not imaged: its strokes are thin and sharp-edged against the anatomy.
A morphological top-hat (bright strokes) and black-hat (dark strokes) with a square kernel a
little wider than the thickest stroke keeps exactly such thin structures, at any angle, while
the smooth anatomy cancels out; a kernel reaches glyphs of about five times its side (55 px
capitals for 11 px). Larger glyphs -- a lead side marker on a 3,000 px film is often 60-300 px
tall -- are proposed on a pyramid: the film halved once per octave, the same kernel at each
level, up to ``max_glyph_share`` of the film (the cost stays within 4/3 of the film's own
level). Thresholding above the film's own noise and grouping neighbouring strokes of the same
polarity, size and burned-in ink value into words gives a few dozen to a hundred candidate
regions per film in tens of milliseconds, even on 3,000 px films.

Proposals are deliberately permissive (vessel crossings, bone edges, wires pass too): a detector
network looks at each one at a zoom where glyphs are large enough for it
(:mod:`xraydebug.text.zoom`). Proposal recall is what bounds the whole detector's recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ProposalConfig", "Region", "label_extent", "propose_regions", "to_u8"]

# Values below were chosen by hand on the synthetic benchmark (benchmarks/text_bench.py; since
# the pyramid, on its tuning fonts only) and the tests' films unless a line says otherwise.

# noise level: measured on a subsample about this many pixels a side (speed only)
_NOISE_SAMPLE_PX = 512
# the MAD of Gaussian noise times this is its sigma (statistics, not tuned)
_MAD_TO_SIGMA = 1.4826
# the 3x3 mean removes about a third of the noise power from the high-pass: scaled back up
_HIGHPASS_GAIN = 1.5
# top-hat kernel: full ``stroke_px`` from films of this long side up, 2 px less per halving
# below it (at most 2 halvings), never under 5 px
_FULL_KERNEL_FILM_PX = 1024
_KERNEL_STEP_PX = 2
_KERNEL_MAX_HALVINGS = 2
_MIN_KERNEL_PX = 5
# a kernel of side k keeps the strokes of glyphs up to about this many times k tall (the
# thickest stroke of a bold capital is about a fifth of its height)
_GLYPHS_PER_KERNEL = 5
# a coarser pyramid level keeps regions whose glyphs are at least this tall at its own scale
# (half of what the level below reaches: the octaves overlap)
_MIN_LEVEL_GLYPH_PX = 16
_SMOOTH_SIGMA = 0.7  # 3x3 Gaussian before the top-hat: single-pixel noise is no stroke
# a stroke component at least this long (px) and thinner than this on average is a line
# (a wire, a tube, an edge), not a glyph stroke
_LINE_MIN_LENGTH = 48
_LINE_MAX_THICKNESS = 2.5
# a stroke whose rotated rectangle is this elongated is letters run together: its short side
# is the text height (else its long side)
_RUN_ASPECT = 2.5
# pixels within this many grey levels of a stroke's ink value count to its "flat" share (drawn
# strokes are flat, anatomy grainy): a ranking term only, so JPEG or blur costs rank, not recall
_FLAT_LEVELS = 3
# linking strokes into words: the gap may be up to this share of the smaller stroke's size,
# sizes may differ up to this factor, ink values up to this many grey levels
_LINK_GAP = 0.4
_LINK_SIZE_RATIO = 3
_LINK_INK_LEVELS = 16
# a group's text-line height and a region's rectangle are measured on at most this many points
_LINE_POINTS = 2048
_REGION_POINTS = 4096
# a group longer than this (px) may always be one text region, whatever ``max_len`` says
_MIN_MAX_LEN = 192
# ranking: peak contrast x sqrt(pixels) x (this + flat share); a grainy region keeps some rank
_RANK_FLAT_BASE = 0.25
# label_extent: the search window reaches this many box sides (plus 4 px) beyond the box
_LABEL_REACH = 2
_LABEL_REACH_PAD = 4
_MIN_RING_PIXELS = 8  # boxes with a smaller ring are not grown
_LABEL_COLOURS = 2  # the ring's most common grey levels tried as a label colour
# the window is median-filtered over this many pixels first, then a label's pixels lie within
# this many grey levels of its colour (JPEG at quality 70 leaves a flat label +-4 levels raw)
_LABEL_MEDIAN = 5
_LABEL_LEVELS = 4
_LABEL_RING_SHARE = 0.25  # a label colour holds at least this share of the ring
_LABEL_FILL = 0.85  # a label's outline fills at least this share of its rotated rectangle
_LABEL_MAX_GROWTH = 16.0  # a label covers at most this many squares of the box's long side


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of :func:`propose_regions`.

    Defaults were chosen by hand on the synthetic benchmark (benchmarks/text_bench.py) unless
    said otherwise.

    Attributes:
        stroke_px: top-hat kernel side on films of 1,024 px and more: strokes up to about this
            thick are kept (the thickest stroke of a 40 px bold capital is ~8 px); smaller films
            use a smaller kernel (see ``_kernel_side``).
        film_px: the long side of the film whose scale the image has, for the kernel: a crop
            cut from a film, enlarged ``z`` times, is proposed as a film of ``z`` x its long
            side (0: the image is the whole film).
        min_contrast: a stroke must differ from its surroundings by at least this share of the
            full intensity range (0.06 = 15 grey levels of 255).
        noise_factor: ... and by this many times the film's pixel-noise level.
        min_pixels: stroke components smaller than this (in pixels) are noise.
        join_px: strokes closer than this are grouped into one region (letters into words).
        max_extent, max_len: a group of strokes longer than this share of the film's long side
            and than ``max_len`` pixels (but at least 192 px) is not one text region; its
            strokes are offered one by one instead; so is a group longer than ``max_glyphs``
            times its typical stroke size (a word run into anatomy), and a group whose rotated
            rectangle is more than ``max_lines`` strokes high (parallel stripes such as ribs
            look like lines of text to a text network; a label's lines are verified one by one).
        max_regions: at most this many regions, strongest first (peak contrast x
            sqrt(stroke pixels) x (0.25 + share of pixels at the ink value)).
        max_glyph_share: glyphs up to this share of the film's long side are proposed, on a
            pyramid (see :func:`propose_regions`); side markers on real films reach about 10%.
        max_regions_per_octave: at most this many regions from each coarser pyramid level.
    """

    stroke_px: int = 11
    film_px: int = 0
    min_contrast: float = 0.06
    noise_factor: float = 3.0
    min_pixels: int = 10
    join_px: int = 5
    max_extent: float = 0.5
    max_len: int = 640
    max_glyphs: float = 12.0
    max_lines: float = 2.5
    max_regions: int = 64
    max_glyph_share: float = 0.10
    max_regions_per_octave: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.stroke_px, int) or self.stroke_px < 3:
            raise ValueError(f"stroke_px must be an int >= 3; got {self.stroke_px!r}")
        if not 0.0 < self.min_contrast < 1.0:
            raise ValueError(f"min_contrast must be in (0, 1); got {self.min_contrast!r}")
        if not 0.0 < self.max_extent <= 1.0:
            raise ValueError(f"max_extent must be in (0, 1]; got {self.max_extent!r}")
        if not 0.0 < self.max_glyph_share <= 1.0:
            raise ValueError(f"max_glyph_share must be in (0, 1]; got {self.max_glyph_share!r}")
        if self.max_regions < 1 or self.min_pixels < 1 or self.join_px < 0:
            raise ValueError("max_regions and min_pixels must be >= 1 and join_px >= 0")


@dataclass(frozen=True)
class Region:
    """One candidate text region in original pixel coordinates.

    ``bbox`` ``[x0, y0, x1, y1]`` (exclusive ends) around its stroke pixels; ``rect`` the
    minimum-area rotated rectangle ``((cx, cy), (w, h), angle)`` as OpenCV gives it; ``points``
    int32 ``(N, 2)`` x/y of the stroke pixels (a subsample for large regions); ``mass`` the summed
    contrast above threshold (ranking score); ``glyph`` the median size (longer box side) of
    its strokes, i.e. about the text height in pixels.
    """

    bbox: tuple[int, int, int, int]
    rect: tuple[tuple[float, float], tuple[float, float], float]
    points: np.ndarray
    mass: float
    glyph: float


def to_u8(gray: np.ndarray) -> np.ndarray:
    """Float ``(H, W)`` in [0, 1] -> uint8 grey levels (rounded, clipped)."""
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def _noise_level(u8: np.ndarray) -> float:
    """Robust pixel-noise sigma in grey levels (MAD of a 3x3 high-pass on a subsample)."""
    step = max(1, min(u8.shape) // _NOISE_SAMPLE_PX)
    sub = u8[::step, ::step].astype(np.int16)
    high = sub - cv2.blur(sub, (3, 3)).astype(np.int16)
    return float(_MAD_TO_SIGMA * np.median(np.abs(high))) * _HIGHPASS_GAIN


def _kernel_side(stroke_px: int, long_side: int) -> int:
    """Top-hat kernel side for a film: ``stroke_px`` from 1,024 px up, 2 px less per halving
    below (9 at 512, 7 at 256), never under 5. Glyphs shrink with a downsampled film, while
    a wider kernel lets its rib edges through as strokes that swallow the letters."""
    ratio = _FULL_KERNEL_FILM_PX / max(long_side, 1)
    halvings = int(np.clip(round(np.log2(ratio)), 0, _KERNEL_MAX_HALVINGS))
    return max(_MIN_KERNEL_PX, stroke_px - _KERNEL_STEP_PX * halvings)


def _stroke_mask(
    u8: np.ndarray, config: ProposalConfig, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask uint8 0/1, contrast uint8, bright bool) of bright or dark structures thinner than
    ``side`` px; ``bright`` tells where the bright (top-hat) response beats the dark
    (black-hat) one."""
    smooth = cv2.GaussianBlur(u8, (3, 3), _SMOOTH_SIGMA)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    white = cv2.morphologyEx(smooth, cv2.MORPH_TOPHAT, kernel)
    black = cv2.morphologyEx(smooth, cv2.MORPH_BLACKHAT, kernel)
    contrast = np.maximum(white, black)
    threshold = max(config.min_contrast * 255.0, config.noise_factor * _noise_level(u8))
    return (contrast >= threshold).astype(np.uint8), contrast, white >= black


def _clean_strokes(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop stroke components that are specks (noise) or long thin lines (wires, edges)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    area = stats[:, cv2.CC_STAT_AREA]
    longest = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    thickness = area / np.maximum(longest, 1)
    line = (longest >= _LINE_MIN_LENGTH) & (thickness < _LINE_MAX_THICKNESS)
    keep = (area >= min_pixels) & ~line
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _glyph_size(idx: np.ndarray, width: int) -> float:
    """Text height of one stroke component (flat pixel indices): the long side of its rotated
    rectangle for a compact shape (a letter), the short side for an elongated one (letters run
    together into a word), at any angle."""
    if idx.size < 3:
        return 1.0
    points = np.stack([idx % width, idx // width], axis=1).astype(np.float32)
    (_, _), (a, b), _ = cv2.minAreaRect(points)
    long_side, short_side = max(a, b) + 1.0, min(a, b) + 1.0
    return short_side if long_side >= _RUN_ASPECT * short_side else long_side


@dataclass
class _Strokes:
    """Connected stroke components: pixel indices grouped per component, and per-component
    box ``(x0, y0, x1, y1)``, size (longer box side), polarity and ink value (the brightest
    pixel of a bright stroke, the darkest of a dark one: the burned-in value); ``size`` is
    the text height the component suggests (see :func:`_glyph_size`); ``flat`` the share of its
    pixels within 3 grey levels of the ink value (drawn strokes are flat, anatomy is grainy)."""

    pixels: list[np.ndarray]
    boxes: np.ndarray
    size: np.ndarray
    bright: np.ndarray
    ink: np.ndarray
    contrast: np.ndarray
    flat: np.ndarray


def _stroke_components(
    strokes: np.ndarray, u8: np.ndarray, contrast: np.ndarray, bright: np.ndarray
) -> _Strokes:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    order = np.argsort(lab, kind="stable")
    idx, lab = idx[order], lab[order]
    if idx.size == 0:
        empty = np.zeros((0,), np.float32)
        return _Strokes(
            [], np.zeros((0, 4), np.int64), empty, empty.astype(bool), empty, empty, empty
        )
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    counts = np.diff(np.r_[starts, idx.size])
    values = u8.ravel()[idx]
    vmax = np.maximum.reduceat(values, starts)
    vmin = np.minimum.reduceat(values, starts)
    is_bright = np.add.reduceat(bright.ravel()[idx].astype(np.int64), starts) * 2 > counts
    peak = np.maximum.reduceat(contrast.ravel()[idx], starts)
    ink = np.where(is_bright, vmax, vmin).astype(np.int16)
    near = np.abs(values.astype(np.int16) - np.repeat(ink, counts)) <= _FLAT_LEVELS
    flat = np.add.reduceat(near.astype(np.int64), starts) / counts
    comp = lab[starts]
    x, y, w, h = (stats[comp, c] for c in range(4))
    boxes = np.stack([x, y, x + w, y + h], axis=1)
    pixels = np.split(idx, starts[1:])
    return _Strokes(
        pixels=pixels,
        boxes=boxes,
        size=np.array([_glyph_size(p, u8.shape[1]) for p in pixels], np.float32),
        bright=is_bright,
        ink=ink.astype(np.float32),
        contrast=peak.astype(np.float32),
        flat=flat.astype(np.float32),
    )


def _link_groups(parts: _Strokes, join_px: int, block: int = 1024) -> list[list[int]]:
    """Group strokes into words: near each other (gap up to :data:`_LINK_GAP` x the smaller
    stroke's size, at least ``join_px``), of similar size (within :data:`_LINK_SIZE_RATIO` x),
    the same polarity and the same burned-in ink value (within :data:`_LINK_INK_LEVELS` grey
    levels). Union-find over the linked pairs; ``block`` rows of pairs at a time (memory)."""
    n = len(parts.pixels)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    b = parts.boxes.astype(np.float32)
    for start in range(0, n, block):
        a = slice(start, min(n, start + block))
        gap_x = np.maximum(b[a, None, 0], b[None, :, 0]) - np.minimum(b[a, None, 2], b[None, :, 2])
        gap_y = np.maximum(b[a, None, 1], b[None, :, 1]) - np.minimum(b[a, None, 3], b[None, :, 3])
        gap = np.maximum(np.maximum(gap_x, gap_y), 0)
        small = np.minimum(parts.size[a, None], parts.size[None, :])
        large = np.maximum(parts.size[a, None], parts.size[None, :])
        linked = (
            (gap <= np.maximum(join_px, _LINK_GAP * small))
            & (large <= _LINK_SIZE_RATIO * small)
            & (parts.bright[a, None] == parts.bright[None, :])
            & (np.abs(parts.ink[a, None] - parts.ink[None, :]) <= _LINK_INK_LEVELS)
        )
        for i, j in zip(*np.nonzero(linked), strict=True):
            ri, rj = find(int(i) + start), find(int(j))
            if ri != rj:
                parent[ri] = rj
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _line_height(parts: _Strokes, members: list[int], width: int) -> float:
    """Short side of the rotated rectangle around a group's strokes (a text line's height)."""
    idx = np.concatenate([parts.pixels[m] for m in members])
    if idx.size > _LINE_POINTS:
        idx = idx[:: idx.size // _LINE_POINTS + 1]
    points = np.stack([idx % width, idx // width], axis=1).astype(np.float32)
    return float(min(cv2.minAreaRect(points)[1]))


def _levels(long_side: int, side: int, max_glyph_share: float) -> int:
    """Pyramid levels needed so that glyphs up to ``max_glyph_share`` of the long side are
    proposed: level ``k`` (the film halved ``k`` times) reaches glyphs :data:`_GLYPHS_PER_KERNEL`
    x ``side`` x 2**k tall."""
    largest = max_glyph_share * long_side
    reach = _GLYPHS_PER_KERNEL * side
    return 1 + max(0, int(np.ceil(np.log2(max(largest / reach, 1.0)))))


def _scaled(region: Region, factor: int) -> Region:
    """``region`` found on the film shrunk ``factor`` times, in the film's own coordinates."""
    (cx, cy), (w, h), angle = region.rect
    x0, y0, x1, y1 = region.bbox
    shift = (factor - 1) / 2.0
    return Region(
        bbox=(x0 * factor, y0 * factor, x1 * factor, y1 * factor),
        rect=((cx * factor + shift, cy * factor + shift), (w * factor, h * factor), angle),
        points=(region.points * factor + factor // 2).astype(np.int32),
        mass=region.mass * factor,
        glyph=region.glyph * factor,
    )


def propose_regions(gray: np.ndarray, config: ProposalConfig = ProposalConfig()) -> list[Region]:
    """Candidate text regions of one film, at every glyph size up to
    ``config.max_glyph_share`` of its long side.

    The top-hat keeps strokes up to its kernel's width, which reaches glyphs of about
    :data:`_GLYPHS_PER_KERNEL` kernels. Larger glyphs are proposed on a pyramid: the film
    halved (area average) once per octave, the same kernel at each level, so the cost is at
    most 4/3 of the film's own level. A coarser level keeps only regions whose glyphs are too
    large for the level below (:data:`_MIN_LEVEL_GLYPH_PX` at its own scale) and offers at most
    ``config.max_regions_per_octave`` of them.

    Args:
        gray: float ``(H, W)`` in [0, 1] (display orientation, as ``read_image`` returns).
        config: see :class:`ProposalConfig`.

    Returns:
        Up to ``config.max_regions`` regions of the film's own level, by peak contrast x
        sqrt(stroke pixels) x (0.25 + flat share), then those of each coarser level, in
        original pixel coordinates.
    """
    if gray.ndim != 2:
        raise ValueError(f"expected a gray (H, W) image; got shape {gray.shape}")
    u8 = to_u8(gray)
    long_side = config.film_px or max(u8.shape)
    side = _kernel_side(config.stroke_px, long_side)
    max_len = max(_MIN_MAX_LEN, min(config.max_len, round(config.max_extent * long_side)))
    regions = _propose_level(u8, config, side=side, max_len=max_len, limit=config.max_regions)
    level_image = u8
    for level in range(1, _levels(max(u8.shape), side, config.max_glyph_share)):
        h, w = level_image.shape
        if min(h, w) < 2 * side:
            break
        level_image = cv2.resize(level_image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        factor = 2**level
        found = _propose_level(
            level_image,
            config,
            side=side,
            max_len=max(1, max_len // factor),
            limit=config.max_regions_per_octave,
            min_glyph=_MIN_LEVEL_GLYPH_PX,
        )
        regions += [_scaled(r, factor) for r in found]
    return regions


def _propose_level(
    u8: np.ndarray,
    config: ProposalConfig,
    *,
    side: int,
    max_len: int,
    limit: int,
    min_glyph: float = 0.0,
) -> list[Region]:
    """Regions of one pyramid level, in its own coordinates: strokes found with a ``side``
    kernel, linked into words, those of ``min_glyph`` px and more, strongest ``limit``."""
    width = u8.shape[1]
    strokes, contrast, bright = _stroke_mask(u8, config, side)
    strokes = _clean_strokes(strokes, config.min_pixels)
    parts = _stroke_components(strokes, u8, contrast, bright)
    if not parts.pixels:
        return []
    groups = []
    for members in _link_groups(parts, config.join_px):
        box = parts.boxes[members]
        extent = max(np.ptp(box[:, [0, 2]]), np.ptp(box[:, [1, 3]]))
        glyph = float(np.median(parts.size[members]))
        if extent <= min(max_len, config.max_glyphs * glyph) and (
            len(members) == 1 or _line_height(parts, members, width) <= config.max_lines * glyph
        ):
            groups.append(members)
        else:  # text run into anatomy, or a block of parallel stripes: strokes one by one
            groups += [[m] for m in members]
    candidates = []
    for members in groups:
        box = parts.boxes[members]
        x0, y0 = int(box[:, 0].min()), int(box[:, 1].min())
        x1, y1 = int(box[:, 2].max()), int(box[:, 3].max())
        glyph = float(np.median(parts.size[members]))
        if max(x1 - x0, y1 - y0) > max_len or glyph < min_glyph:
            continue
        idx = np.concatenate([parts.pixels[m] for m in members])
        if idx.size < config.min_pixels:
            continue
        flat = float(np.average(parts.flat[members], weights=parts.size[members]))
        mass = float(parts.contrast[members].max()) * np.sqrt(idx.size) * (_RANK_FLAT_BASE + flat)
        candidates.append((mass, (x0, y0, x1, y1), idx, glyph))
    candidates.sort(key=lambda c: -c[0])
    regions = []
    for mass, bbox, idx, glyph in candidates[:limit]:
        if idx.size > _REGION_POINTS:
            idx = idx[:: idx.size // _REGION_POINTS + 1]
        points = np.stack([idx % width, idx // width], axis=1).astype(np.int32)
        rect = cv2.minAreaRect(points.astype(np.float32))
        regions.append(Region(bbox, rect, points, mass, glyph))
    return regions


def _is_rectangle(mask: np.ndarray, fill: float = _LABEL_FILL) -> bool:
    """Whether the outline of ``mask`` (bool ``(h, w)``) fills at least ``fill`` of its
    minimum-area rotated rectangle (holes such as the glyph inside a label count as filled)."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return False
    outline = max(contours, key=cv2.contourArea)
    (_, _), (rw, rh), _ = cv2.minAreaRect(outline)
    return cv2.contourArea(outline) >= fill * max(rw * rh, 1.0)


def _ring(shape: tuple[int, int], bbox: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels 2 px outside ``bbox``'s four sides (clipped), as arrays."""
    height, width = shape
    x0, y0, x1, y1 = bbox
    bw, bh = x1 - x0, y1 - y0
    rows = np.array(
        [max(0, y0 - 2)] * bw + [min(height - 1, y1 + 1)] * bw + list(range(y0, y1)) * 2
    )
    cols = np.array(list(range(x0, x1)) * 2 + [max(0, x0 - 2)] * bh + [min(width - 1, x1 + 1)] * bh)
    return rows, cols


def label_extent(
    u8: np.ndarray, bbox: tuple[int, int, int, int], *, max_growth: float = _LABEL_MAX_GROWTH
) -> tuple[int, int, int, int]:
    """Grow a text box to the flat label it is printed on, if there is one.

    Side markers often sit in a uniform white or black square; the glyph's strokes are found,
    the square must be removed too. The grey levels held by at least a quarter
    (:data:`_LABEL_RING_SHARE`) of the ring around ``bbox`` are candidate label colours (a
    label cut by the box, or turned, shares the ring with the film). Each is flood-filled from
    its ring pixels; the first fill that is a label -- a filled (possibly turned) rectangle
    (:data:`_LABEL_FILL`), compact (no more than ``max_growth`` times the square of the box's
    longer side) and not leaking to the search window's edge -- gives the grown box. A flat
    film background or a film's dark corner is none of these. Otherwise ``bbox`` comes back
    unchanged.
    """
    height, width = u8.shape
    x0, y0, x1, y1 = bbox
    bw, bh = x1 - x0, y1 - y0
    reach = _LABEL_REACH * max(bw, bh) + _LABEL_REACH_PAD
    wx0, wy0 = max(0, x0 - reach), max(0, y0 - reach)
    wx1, wy1 = min(width, x1 + reach), min(height, y1 + reach)
    rows, cols = _ring(u8.shape, bbox)
    if rows.size < _MIN_RING_PIXELS:
        return bbox
    # JPEG blocks and resampling leave a label flat only on average: judged after a median
    # filter (which keeps the label's edges and the glyph's strokes out of the ring)
    window = cv2.medianBlur(np.ascontiguousarray(u8[wy0:wy1, wx0:wx1]), _LABEL_MEDIAN)
    window = window.astype(np.int16)
    ring = window[rows - wy0, cols - wx0]
    win_h, win_w = window.shape
    counts = np.bincount(ring, minlength=256)
    for level in np.argsort(-counts)[:_LABEL_COLOURS]:
        near = np.abs(ring - int(level)) <= _LABEL_LEVELS
        if near.mean() < _LABEL_RING_SHARE:
            break
        flat = (np.abs(window - int(level)) <= _LABEL_LEVELS).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=4)
        seeds = labels[rows[near] - wy0, cols[near] - wx0]
        seeds = seeds[seeds > 0]
        if seeds.size == 0:
            continue
        k = int(np.bincount(seeds).argmax())
        fx, fy, fw, fh, _ = (int(v) for v in stats[k])
        touches = (
            (fx == 0 and wx0 > 0)
            or (fy == 0 and wy0 > 0)
            or (fx + fw == win_w and wx1 < width)
            or (fy + fh == win_h and wy1 < height)
        )
        compact = fw * fh <= max_growth * max(bw, bh) ** 2
        if not touches and compact and _is_rectangle(labels == k):
            gx0, gy0 = min(x0, fx + wx0), min(y0, fy + wy0)
            return gx0, gy0, max(x1, fx + wx0 + fw), max(y1, fy + wy0 + fh)
    return bbox
