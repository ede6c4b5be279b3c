"""The pure scoring functions of ``benchmarks/text_bench.py`` on tiny hand-made arrays: box
growth, marker coverage, box-area precision, Wilson intervals, the verdict on the targets and
the table rows a marker counts in. No detector runs, no film is rendered."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.text_bench import (
    Film,
    _angle_row,
    _contrast_row,
    _height_row,
    _rate,
    box_area,
    coverage,
    grown_mask,
    marker_rows,
    verdict,
)
from xraydebug.data.wild_text import WildMarker
from xraydebug.models.metrics import wilson_interval

# ---------------------------------------------------------------------------------------------
# grown_mask, coverage, box_area
# ---------------------------------------------------------------------------------------------


def test_grown_mask_grows_every_side_and_clips_at_the_border() -> None:
    # inside: [4, 3, 6, 5] grown by 1 -> rows 2..5, columns 3..6
    want = np.zeros((8, 10), bool)
    want[2:6, 3:7] = True
    assert np.array_equal(grown_mask((8, 10), [[4, 3, 6, 5]], grow=1), want)
    # top left corner, default 3 px: rows max(0, 2 - 3) = 0 .. 5 - 1 + 3, columns 0 .. 4 - 1 + 3
    want = np.zeros((10, 12), bool)
    want[0:8, 0:7] = True
    assert np.array_equal(grown_mask((10, 12), [[1, 2, 4, 5]]), want)
    # bottom right corner: rows 8 - 3 = 5 .. 9, columns 9 - 3 = 6 .. 11 (clipped)
    want = np.zeros((10, 12), bool)
    want[5:10, 6:12] = True
    assert np.array_equal(grown_mask((10, 12), [[9, 8, 12, 10]]), want)
    assert grown_mask((10, 12), [[9, 8, 12, 10]]).sum() == 5 * 6
    # two boxes: their union; no growth: the boxes themselves (x1/y1 exclusive)
    both = grown_mask((10, 12), [[0, 0, 2, 2], [1, 1, 3, 3]], grow=0)
    assert both.sum() == 4 + 4 - 1
    assert not grown_mask((10, 12), []).any()


def test_grown_mask_box_wholly_outside_the_film_marks_nothing() -> None:
    assert not grown_mask((10, 12), [[-20, -20, -10, -10]]).any()


def test_coverage_by_hand() -> None:
    visible = np.zeros((40, 40), bool)
    visible[10:20, 10:30] = True  # the marker: 10 rows x 20 columns = 200 px
    assert coverage(visible, [[10, 10, 30, 20]]) == 1.0  # a box exactly on it
    # [13, 13, 17, 17] grown by 3 px is rows 10..19, columns 10..19: 100 of the 200 px
    assert coverage(visible, [[13, 13, 17, 17]]) == 0.5
    # without growth the same half needs the box itself
    assert coverage(visible, [[10, 10, 20, 20]], grow=0) == 0.5
    # 3 px of growth reaches a box that stops 3 px short on every side
    assert coverage(visible, [[13, 13, 27, 17]]) == 1.0
    assert coverage(visible, []) == 0.0  # no boxes
    assert coverage(visible, [[0, 0, 5, 5]]) == 0.0  # a box elsewhere
    assert coverage(np.zeros((40, 40), bool), []) == 1.0  # nothing visible: nothing to find


def test_box_area_whole_film_box_scores_near_zero() -> None:
    # a 10 x 10 truth box grown by 3 px is 16 x 16 = 256 px of the 100 x 100 = 10,000 px box
    pixels, inside = box_area((100, 100), [[0, 0, 100, 100]], [[40, 40, 50, 50]])
    assert (pixels, inside) == (10_000, 256)
    # a box exactly on the truth: all of it inside
    assert box_area((100, 100), [[40, 40, 50, 50]], [[40, 40, 50, 50]]) == (100, 100)
    # no boxes: nothing predicted
    assert box_area((100, 100), [], [[40, 40, 50, 50]]) == (0, 0)


def test_box_area_counts_overlapping_boxes_once() -> None:
    # [0, 0, 20, 10] and [10, 0, 30, 10] overlap on 10 x 10: union 30 x 10 = 300 px, not 400;
    # the truth [0, 0, 10, 10] grown by 3 px (clipped) is rows 0..12, columns 0..12, so 10 rows
    # x 13 columns of the union lie inside
    pixels, inside = box_area((100, 100), [[0, 0, 20, 10], [10, 0, 30, 10]], [[0, 0, 10, 10]])
    assert (pixels, inside) == (300, 130)
    # the same box twice is counted once
    assert box_area((100, 100), [[0, 0, 10, 10]] * 2, [[0, 0, 10, 10]]) == (100, 100)


# ---------------------------------------------------------------------------------------------
# wilson_interval
# ---------------------------------------------------------------------------------------------


def _wilson_by_hand(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson (1927) in its closed form over counts:
    (k + z^2/2 -/+ z sqrt(k (n - k) / n + z^2 / 4)) / (n + z^2)."""
    centre = k + z * z / 2
    half = z * math.sqrt(k * (n - k) / n + z * z / 4)
    return (centre - half) / (n + z * z), (centre + half) / (n + z * z)


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (5, 10), (180, 190)])
def test_wilson_interval_matches_the_closed_form(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    want_lo, want_hi = _wilson_by_hand(k, n)
    assert lo == pytest.approx(want_lo, abs=1e-4)
    assert hi == pytest.approx(want_hi, abs=1e-4)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_published_values() -> None:
    # 0 of 10: [0, 0.2775]; 10 of 10 mirrors it; 5 of 10: [0.2366, 0.7634]
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(1 - 0.2775, abs=1e-4)
    assert hi == 1.0
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)
    # 180 of 190 by hand: centre (180 + 1.9208) / 193.8416 = 0.93850, half
    # 1.96 sqrt(180 * 10 / 190 + 0.9604) / 193.8416 = 1.96 * 3.23018 / 193.8416 = 0.03266
    lo, hi = wilson_interval(180, 190)
    assert lo == pytest.approx(0.9058, abs=1e-4)
    assert hi == pytest.approx(0.9712, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------------------------


def _result(
    rows: dict[str, tuple[int, int]] | None = None,
    fp: tuple[int, int] = (1, 100),
    precision: float | None = 0.8,
    seconds: dict[int, float] | None = None,
) -> dict:
    """A result as ``evaluate`` returns it, with every target met unless told otherwise."""
    counts = {"all": (196, 200), "kind letter": (98, 100), "kind word": (98, 100)}
    counts.update(rows or {})
    return {
        "rows": {k: _rate(*v) for k, v in sorted(counts.items())},
        "fp_films": {
            "clutter": _rate(fp[0], fp[1] // 2),
            "no clutter": _rate(0, fp[1] - fp[1] // 2),
            "all": _rate(*fp),
        },
        "box_area_precision": precision,
        "seconds_per_film": {1024: 0.4, 3000: 1.2} if seconds is None else seconds,
        "misses": [],
    }


def test_verdict_every_target_met() -> None:
    lines = verdict(_result())
    assert len(lines) == 6  # recall, worst row, text-free films, precision, two sizes
    assert all(line.endswith(" met") for line in lines), lines
    assert lines[0] == "recall overall: 0.980 (target >= 0.98) met"  # the target itself is met
    assert lines[1].startswith("worst row (all): 0.980")  # every row at 0.98
    assert lines[2] == "text-free films boxed: 0.010 (target <= 0.02) met"


def _missed(lines: list[str], start: str) -> list[str]:
    return [line for line in lines if line.startswith(start) and line.endswith(" MISSED")]


def test_verdict_overall_recall_missed() -> None:
    lines = verdict(_result({"all": (194, 200)}))  # 0.97
    assert _missed(lines, "recall overall: 0.970")


def test_verdict_judged_row_missed() -> None:
    lines = verdict(_result({"angle any": (94, 100)}))  # 100 >= 60 markers at 0.94
    assert _missed(lines, "worst row (angle any): 0.940")
    assert lines[0].endswith(" met")  # overall recall is its own line
    lines = verdict(_result({"angle any": (57, 60)}))  # exactly 60 markers: judged
    assert _missed(lines, "worst row (angle any): 0.950") == []  # 0.95 meets the target
    assert any(line.startswith("worst row (angle any)") for line in lines)


def test_verdict_small_row_not_judged() -> None:
    lines = verdict(_result({"kind block": (29, 59)}))  # 59 markers at about 0.5
    assert "rows with fewer than 60 markers (not judged): kind block" in lines
    worst = [line for line in lines if line.startswith("worst row")]
    assert len(worst) == 1
    assert "kind block" not in worst[0]
    assert not any(line.endswith(" MISSED") for line in lines), lines


def test_verdict_false_positives_precision_and_speed_missed() -> None:
    assert _missed(verdict(_result(fp=(3, 100))), "text-free films boxed: 0.030")
    assert _missed(verdict(_result(precision=0.49)), "box-area precision: 0.490")
    lines = verdict(_result(seconds={1024: 0.51}))
    assert _missed(lines, "seconds per 1024 px film: 0.510")
    assert "seconds per 3000 px film: not measured" in lines  # not run: said so
    assert _missed(verdict(_result(seconds={3000: 1.6})), "seconds per 3000 px film: 1.600")
    assert "box-area precision: not measured" in verdict(_result(precision=None))


# ---------------------------------------------------------------------------------------------
# Table rows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cap, row",
    [
        (8, "height 8-16 px"),
        (15.9, "height 8-16 px"),
        (16, "height 16-32 px"),
        (31.99, "height 16-32 px"),
        (64, "height 64-128 px"),
        (127.9, "height 64-128 px"),
        (128, "height 128+ px (to 10%)"),
        (200, "height 128+ px (to 10%)"),
    ],
)
def test_height_rows(cap: float, row: str) -> None:
    assert _height_row(cap) == row


@pytest.mark.parametrize(
    "angle, row",
    [
        (0.0, "angle upright"),
        (360.0, "angle upright"),
        (90.0, "angle quarter turn"),
        (270.0, "angle quarter turn"),
        (45.0, "angle any"),
        (89.5, "angle any"),
    ],
)
def test_angle_rows(angle: float, row: str) -> None:
    assert _angle_row(angle) == row


@pytest.mark.parametrize(
    "contrast, row",
    [
        (0.19, "contrast <0.2"),
        (0.2, "contrast 0.2-0.4"),
        (0.39, "contrast 0.2-0.4"),
        (0.4, "contrast >=0.4"),
        (1.0, "contrast >=0.4"),
    ],
)
def test_contrast_rows(contrast: float, row: str) -> None:
    assert _contrast_row(contrast) == row


def _marker(**changes) -> WildMarker:
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    settings = dict(
        kind="letter",
        text="L",
        face="Some Sans",
        renderer="truetype",
        stencil=False,
        cap_px=20.0,
        angle=90.0,
        polarity="bright",
        label="none",
        contrast=0.3,
        opacity=1.0,
        box=[1, 1, 3, 3],
        mask=mask,
        visible=mask,
    )
    settings.update(changes)
    return WildMarker(**settings)


def test_marker_rows() -> None:
    film = Film(np.zeros((4, 4), np.float32), [], clutter=True, degradation="jpeg", real=False)
    assert marker_rows(_marker(), film, 512) == [
        "all",
        "kind letter",
        "height 16-32 px",
        "angle quarter turn",
        "polarity bright",
        "contrast 0.2-0.4",
        "label none",
        "opacity 1",
        "renderer truetype",
        "film 512 px",
        "compression jpeg",
        "film synthetic",
        "clutter on film",
    ]
    real = Film(np.zeros((4, 4), np.float32), [], clutter=False, degradation="none", real=True)
    rows = marker_rows(
        _marker(stencil=True, opacity=0.7, angle=0.0, cap_px=8.0, contrast=1.0, label="dark"),
        real,
        3000,
    )
    assert rows == [
        "all",
        "kind letter",
        "height 8-16 px",
        "angle upright",
        "polarity bright",
        "contrast >=0.4",
        "label dark",
        "opacity <1",
        "renderer stencil",  # a stencil letter counts as its own renderer
        "film 3000 px",
        "compression none",
        "film real (resized)",
        "no clutter",
    ]
    assert "renderer hershey" in marker_rows(_marker(renderer="hershey"), film, 512)
