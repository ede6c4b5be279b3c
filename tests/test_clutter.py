"""Radiographic clutter (wires, tubes, rulers, ...): ground-truth masks, avoid boxes, speed."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from xraydebug.data.clutter import CLUTTER_KINDS, ClutterItem, add_clutter
from xraydebug.data.synth import render_radiograph


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    img = render_radiograph(np.random.default_rng(0), 512, "normal")
    assert img.dtype == np.float32 and img.shape == (512, 512)
    return img


def _levels(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255)


def _check_output(img: np.ndarray, out: np.ndarray) -> None:
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out * 255 - _levels(out)).max() < 1e-3  # on 8-bit levels


def _check_item(item: ClutterItem, shape: tuple[int, int]) -> None:
    assert item.kind in CLUTTER_KINDS
    assert item.mask.dtype == bool and item.mask.shape == shape and item.mask.any()
    ys, xs = np.nonzero(item.mask)
    assert item.box == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("kind", CLUTTER_KINDS)
def test_single_item_mask_is_exactly_the_changed_pixels(film: np.ndarray, kind: str) -> None:
    for seed in range(3):
        before = film.copy()
        out, items = add_clutter(film, np.random.default_rng(seed), kinds=[kind])
        assert np.array_equal(film, before)  # the input is not modified
        _check_output(film, out)
        assert len(items) == 1 and items[0].kind == kind
        _check_item(items[0], film.shape)
        assert np.array_equal(items[0].mask, _levels(out) != _levels(film))


def test_random_kinds_and_masks_cover_every_change(film: np.ndarray) -> None:
    counts = set()
    for seed in range(6):
        out, items = add_clutter(film, np.random.default_rng(seed))
        _check_output(film, out)
        assert 1 <= len(items) <= 3
        assert len({it.kind for it in items}) == len(items)  # distinct kinds
        counts.add(len(items))
        union = np.zeros(film.shape, bool)
        for it in items:
            _check_item(it, film.shape)
            union |= it.mask
        changed = _levels(out) != _levels(film)
        assert not (changed & ~union).any()
    assert len(counts) > 1


@pytest.mark.parametrize("kind", CLUTTER_KINDS)
def test_items_keep_off_avoid_boxes(film: np.ndarray, kind: str) -> None:
    avoid = [[180, 150, 330, 260], [20, 440, 120, 500]]
    grown = np.zeros(film.shape, bool)
    for x0, y0, x1, y1 in avoid:
        grown[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
    placed = 0
    for seed in range(4):
        out, items = add_clutter(film, np.random.default_rng(seed), kinds=[kind], avoid=avoid)
        changed = _levels(out) != _levels(film)
        assert not (changed & grown).any()
        for it in items:
            assert not (it.mask & grown).any()
        placed += len(items)
    assert placed > 0


def test_item_that_cannot_be_placed_is_skipped() -> None:
    flat = np.full((256, 256), 0.4, np.float32)
    out, items = add_clutter(
        flat, np.random.default_rng(0), kinds=["wire", "ruler"], avoid=[[0, 0, 256, 256]]
    )
    assert items == []
    assert np.array_equal(out, np.full_like(flat, np.round(0.4 * 255) / 255))


def test_unknown_kind_raises(film: np.ndarray) -> None:
    with pytest.raises(ValueError, match="jewellery"):
        add_clutter(film, np.random.default_rng(0), kinds=["wire", "text"])


def test_same_seed_same_output(film: np.ndarray) -> None:
    a, items_a = add_clutter(film, np.random.default_rng(7), kinds=CLUTTER_KINDS)
    b, items_b = add_clutter(film, np.random.default_rng(7), kinds=CLUTTER_KINDS)
    c, _ = add_clutter(film, np.random.default_rng(8), kinds=CLUTTER_KINDS)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert [it.kind for it in items_a] == [it.kind for it in items_b]
    assert all(
        x.box == y.box and np.array_equal(x.mask, y.mask)
        for x, y in zip(items_a, items_b, strict=True)
    )


@pytest.mark.parametrize("shape", [(256, 256), (300, 200), (200, 300)])
def test_small_and_non_square_films(shape: tuple[int, int]) -> None:
    img = np.full(shape, 0.3, np.float32)
    out, items = add_clutter(img, np.random.default_rng(1), kinds=CLUTTER_KINDS)
    _check_output(img, out)
    assert len(items) >= 5
    for it in items:
        _check_item(it, shape)


def test_3000px_film_is_fast() -> None:
    flat = np.full((3000, 3000), 0.4, np.float32)
    kinds = ("wire", "tube", "jewellery")
    best = min(
        _timed(lambda s=seed: add_clutter(flat, np.random.default_rng(s), kinds=kinds))
        for seed in range(2)
    )
    assert best < 0.5, f"add_clutter on a 3000 px film took {best:.3f} s"


def _timed(call: Callable[[], tuple[np.ndarray, list[ClutterItem]]]) -> float:
    start = time.perf_counter()
    out, items = call()
    elapsed = time.perf_counter() - start
    assert out.shape == (3000, 3000) and len(items) == 3
    return elapsed
