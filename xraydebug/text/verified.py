"""Proposal-based detectors: cheap proposals at the film's resolution, each verified at zoom.

The pipeline, one function per step:

1. **propose** -- candidate regions of each film
   (:func:`~xraydebug.text.proposals.propose_regions`);
2. **view** -- every candidate cut out, deskewed and scaled so its glyphs are ``glyph_px`` tall,
   in two or four orientations (:func:`~xraydebug.text.zoom.deskewed_crops`);
3. **score** -- the network's peak text score inside each candidate over its views (all views
   of all films batched together), and each candidate's shape read by the side-letter network
   (:func:`~xraydebug.text.glyphs.glyph_scores`);
4. **accept** -- candidates whose text score reaches ``verify_threshold`` or whose side-letter
   probability reaches ``side_letter_threshold``;
5. **grow** -- each accepted box grows to the flat label it is printed on
   (:func:`~xraydebug.text.proposals.label_extent`) and by a pixel on every side;
6. **merge** -- overlapping boxes become one (:func:`~xraydebug.text.base.merge_boxes`).

Recall does not depend on the film's size: a 12 px letter on a 2,048 px film reaches the network
as large as a 40 px one. A subclass provides the network (:meth:`VerifiedDetector._score_maps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from xraydebug.text.base import Box, DetectorConfig, TextDetector, as_unit_gray, merge_boxes
from xraydebug.text.glyphs import glyph_scores
from xraydebug.text.proposals import ProposalConfig, Region, label_extent, propose_regions, to_u8
from xraydebug.text.zoom import ZoomCrop, batched_scores, deskewed_crops

__all__ = [
    "BOX_MARGIN_PX",
    "MIN_LETTER_GLYPH_PX",
    "VerifiedConfig",
    "VerifiedDetector",
    "Views",
    "accept",
    "grow",
    "propose",
    "score_letters",
    "view",
]

# regions whose strokes are smaller than this (px, Region.glyph) are not matched against side
# letters: below it the binarised shape has too few pixels to tell an "L" from a corner
# (chosen by hand on the synthetic benchmark)
MIN_LETTER_GLYPH_PX = 8.0
# an accepted box grows by this many pixels on every side: the proposal box is drawn around
# stroke pixels above threshold, the glyphs' anti-aliased edges lie just outside
BOX_MARGIN_PX = 1

Owner = tuple[int, int]  # (film index, region index)


@dataclass(frozen=True)
class VerifiedConfig(DetectorConfig):
    """Settings shared by the proposal-based detectors (defaults chosen by hand on the
    synthetic benchmark, benchmarks/text_bench.py, with the measurements named below).

    Attributes:
        verify_threshold: a region is kept when the network's peak text score inside it, over
            its zoomed views, reaches this. On the benchmark's anatomy proposals DBNet's peak
            stayed at 0.00-0.01 and CRAFT's below 0.36.
        glyph_px: each region is scaled so its short side (the text height) has this many
            pixels at the network's input.
        crop_gain: each zoomed crop's contrast is stretched by up to this factor
            (:func:`~xraydebug.text.zoom.deskewed_crops`; 1 = off): DBNet ignores grey text
            0.1 from the film otherwise.
        side_letters: also keep regions whose shape the side-letter network
            (:mod:`xraydebug.text.glyphs`) reads as "L" or "R" with a probability of at least
            ``side_letter_threshold``: networks trained on words often miss lone, boxed or
            turned letters.
        side_letter_threshold: see ``side_letters``; chosen on the tuning films of
            benchmarks/text_bench.py (0.9: no text-free film without clutter boxed there).
        proposals: settings of the proposal step (:class:`ProposalConfig`).
    """

    verify_threshold: float = 0.5
    glyph_px: float = 40.0
    crop_gain: float = 4.0
    side_letters: bool = True
    side_letter_threshold: float = 0.9
    proposals: ProposalConfig = field(default_factory=ProposalConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.verify_threshold <= 1.0:
            raise ValueError(f"verify_threshold must be in (0, 1]; got {self.verify_threshold!r}")
        if not 0.0 < self.side_letter_threshold <= 1.0:
            raise ValueError(
                f"side_letter_threshold must be in (0, 1]; got {self.side_letter_threshold!r}"
            )
        if not 1.0 <= self.crop_gain <= 16.0:
            raise ValueError(f"crop_gain must be in [1, 16]; got {self.crop_gain!r}")
        if not 8.0 <= self.glyph_px <= 256.0:
            raise ValueError(f"glyph_px must be in [8, 256]; got {self.glyph_px!r}")
        if not isinstance(self.proposals, ProposalConfig):
            raise TypeError(f"proposals must be a ProposalConfig; got {self.proposals!r}")


@dataclass(frozen=True)
class Views:
    """The zoomed views of every region of every film: ``crops[j]`` shows region
    ``owners[j] = (film, region)``; the views of one region are consecutive."""

    crops: list[ZoomCrop]
    owners: list[Owner]


def propose(grays: Sequence[np.ndarray], config: ProposalConfig) -> list[list[Region]]:
    """Step 1: candidate regions of each film."""
    return [propose_regions(gray, config) for gray in grays]


def view(
    grays: Sequence[np.ndarray], regions: Sequence[Sequence[Region]], *, config: VerifiedConfig
) -> Views:
    """Step 2: every region of every film, deskewed and zoomed, in each orientation."""
    crops: list[ZoomCrop] = []
    owners: list[Owner] = []
    for i, (gray, film_regions) in enumerate(zip(grays, regions, strict=True)):
        views = deskewed_crops(
            gray, film_regions, glyph_px=config.glyph_px, max_gain=config.crop_gain
        )
        crops += views
        owners += [(i, v.region) for v in views]
    return Views(crops, owners)


def _best_per_owner(owners: Sequence[Owner], scores: Sequence[float]) -> dict[Owner, float]:
    best: dict[Owner, float] = {}
    for owner, value in zip(owners, scores, strict=True):
        best[owner] = max(best.get(owner, 0.0), float(value))
    return best


def score_letters(views: Views, regions: Sequence[Sequence[Region]]) -> dict[Owner, float]:
    """Step 3b: the side-letter probability of each region whose glyphs are large enough, from
    its first view (the network reads every turn and mirror image of it)."""
    owners = views.owners
    letters = [
        j
        for j, (i, k) in enumerate(owners)
        if regions[i][k].glyph >= MIN_LETTER_GLYPH_PX and (j == 0 or owners[j - 1] != (i, k))
    ]
    scores = glyph_scores([views.crops[j] for j in letters])
    return _best_per_owner([owners[j] for j in letters], scores)


def accept(
    regions: Sequence[Sequence[Region]],
    *,
    text: dict[Owner, float],
    letters: dict[Owner, float],
    config: VerifiedConfig,
) -> list[list[Region]]:
    """Step 4: per film, the regions verified as text or as a side letter."""
    return [
        [
            region
            for k, region in enumerate(film_regions)
            if not (
                text.get((i, k), 0.0) < config.verify_threshold
                and letters.get((i, k), 0.0) < config.side_letter_threshold
            )
        ]
        for i, film_regions in enumerate(regions)
    ]


def grow(gray: np.ndarray, regions: Sequence[Region]) -> list[Box]:
    """Step 5: each region's box grown to its label, plus :data:`BOX_MARGIN_PX`, clipped."""
    u8 = to_u8(gray)
    height, width = gray.shape
    boxes = []
    for region in regions:
        x0, y0, x1, y1 = label_extent(u8, region.bbox)
        boxes.append(
            [
                max(0, x0 - BOX_MARGIN_PX),
                max(0, y0 - BOX_MARGIN_PX),
                min(width, x1 + BOX_MARGIN_PX),
                min(height, y1 + BOX_MARGIN_PX),
            ]
        )
    return boxes


class VerifiedDetector(TextDetector):
    """Proposals verified at zoom by a text network (the module doc lists the steps).

    Subclasses set ``config_class`` (a :class:`VerifiedConfig` subclass) and implement
    :meth:`_score_maps` (and :meth:`load` for their network).
    """

    verifies = True
    config: VerifiedConfig

    def _score_maps(self, batch: np.ndarray) -> np.ndarray:
        """Text-probability maps ``(B, h', w')`` of a batch float32 ``(B, h, w)`` in [0, 1]
        (sides multiples of 32; maps at an integer fraction of the input resolution)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _score_maps")

    def _score_text(self, views: Views) -> dict[Owner, float]:
        """Step 3a: the network's peak text score inside each region, over its views."""
        return _best_per_owner(views.owners, batched_scores(views.crops, self._score_maps))

    def _detect(self, images: list[np.ndarray], *, film_px: int = 0) -> list[list[Box]]:
        config = self.config
        if film_px:  # windows enlarged from a film: propose at that film's glyph scale
            config = replace(config, proposals=replace(config.proposals, film_px=film_px))
        grays = [as_unit_gray(image, i) for i, image in enumerate(images)]
        regions = propose(grays, config.proposals)
        views = view(grays, regions, config=config)
        text: dict[Owner, float] = {}
        letters: dict[Owner, float] = {}
        if views.crops:
            text = self._score_text(views)
            if config.side_letters:
                letters = score_letters(views, regions)
        kept = accept(regions, text=text, letters=letters, config=config)
        return [merge_boxes(grow(gray, film)) for gray, film in zip(grays, kept, strict=True)]
