"""Font sets, face rendering and wild marker burning for the text-detection benchmark."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from xraydebug.data.fonts import FONT_SETS, face_sha256, font_set, render_face
from xraydebug.data.wild_text import (
    WILD_KINDS,
    burn_wild_marker,
    degrade,
    wild_text,
)

EIGHT = np.ones((3, 3), bool)


def _faces():
    seen = {}
    for name in FONT_SETS:
        for face in font_set(name):
            seen.setdefault(face, None)
    return list(seen)


ALL_FACES = _faces()


def _cap_rows(glyph: np.ndarray) -> int:
    return int(np.count_nonzero((glyph > 0.5).any(axis=1)))


@pytest.mark.parametrize("face", ALL_FACES, ids=lambda f: f.name)
def test_every_face_renders_at_the_asked_cap_height(face):
    for cap in (12, 40, 200):
        for text in ("L", "R", "PORTABLE", "03/12/2020"):
            glyph = render_face(face, text, cap)
            assert glyph.dtype == np.float32 and glyph.ndim == 2
            assert glyph.max() > 0.5 and glyph.min() >= 0.0 and glyph.max() <= 1.0
            assert not glyph[:2].any() and not glyph[:, :2].any()  # 2 px margin
            assert not glyph[-2:].any() and not glyph[:, -2:].any()
            assert not ((glyph > 0) & (glyph < 0.06)).any()  # faint fringes dropped
        rows = _cap_rows(render_face(face, "L", cap))
        assert abs(rows - cap) <= 0.15 * cap, (face.name, cap, rows)


def test_sets_are_nested_and_heldout_families_are_new():
    bundled, tuning, heldout = (font_set(name) for name in FONT_SETS)
    assert set(bundled) <= set(tuning)
    seen = {f.family for f in bundled} | {f.family for f in tuning}
    assert not seen & {f.family for f in heldout}
    assert {f.renderer for f in heldout} == {"truetype", "hershey"}
    for faces in (bundled, tuning, heldout):
        assert len({f.name for f in faces}) == len(faces)
    assert font_set("heldout") is heldout  # cached
    with pytest.raises(ValueError, match="heldout"):
        font_set("bogus")


def test_package_strings_carry_the_pinned_versions():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    pins = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["fonts"]
    used = {f.package.split(" ")[0] for f in _faces() if "==" in f.package}
    assert used == set(pins)


def test_missing_font_package_is_named(monkeypatch):
    import importlib.util

    from xraydebug.data import fonts
    from xraydebug.errors import DatasetError

    real = importlib.util.find_spec
    fake = lambda name, *a: None if name == "font_roboto" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    fonts.font_set.cache_clear()
    try:
        assert fonts.font_set("tuning")  # needs no Roboto
        with pytest.raises(DatasetError, match=r"font-roboto.*\.\[fonts\]"):
            fonts.font_set("heldout")
    finally:
        monkeypatch.undo()
        fonts.font_set.cache_clear()
    assert fonts.font_set("heldout")


def test_face_sha256():
    face = next(f for f in font_set("heldout") if f.renderer == "truetype")
    assert face_sha256(face) == hashlib.sha256(Path(face.path).read_bytes()).hexdigest()
    stroke = next(f for f in font_set("heldout") if f.renderer == "hershey")
    assert face_sha256(stroke).startswith("built-in")
    assert face_sha256(stroke) == face_sha256(stroke)


def test_multiline_and_thickness():
    face = font_set("bundled")[0]
    one = render_face(face, "ST MARY HOSP", 30)
    two = render_face(face, "ST MARY HOSP\nID 4829301", 30)
    assert 1.3 * 30 <= two.shape[0] - one.shape[0] <= 1.6 * 30  # line spacing in caps
    stroke = next(f for f in font_set("heldout") if f.renderer == "hershey")
    thin = render_face(stroke, "H", 60, thickness=1.0).sum()
    thick = render_face(stroke, "H", 60, thickness=2.0).sum()
    assert thick > 1.5 * thin
    assert render_face(face, "H", 60, thickness=2.0).sum() == render_face(face, "H", 60).sum()


@pytest.mark.parametrize("face", ALL_FACES, ids=lambda f: f.name)
def test_stencil_splits_letters(face):
    plain = render_face(face, "L", 60)
    cut = render_face(face, "L", 60, stencil=True)
    assert ndimage.label(plain > 0, structure=EIGHT)[1] == 1
    assert ndimage.label(cut > 0, structure=EIGHT)[1] >= 2


def test_wild_text_kinds():
    rng = np.random.default_rng(0)
    for kind in WILD_KINDS:
        for _ in range(20):
            text = wild_text(rng, kind)
            assert text and text == text.upper()
            if kind == "letter":
                assert text in ("L", "R")
            if kind == "block":
                assert 2 <= len(text.split("\n")) <= 3
            else:
                assert "\n" not in text
    with pytest.raises(ValueError, match="letter"):
        wild_text(rng, "site")


def _film(size=512, level=0.5):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.03, (size, size))
    return np.round(np.clip(level + noise, 0, 1) * 255).astype(np.float32) / 255


@pytest.mark.parametrize(
    ("polarity", "label"),
    [("bright", "none"), ("dark", "none"), ("bright", "bright"), ("dark", "dark")],
)
def test_burn_changes_exactly_the_mask(polarity, label):
    face = font_set("heldout")[0]
    film = _film()
    keep = film.copy()
    rng = np.random.default_rng(3)
    out, marker = burn_wild_marker(
        film, rng, face=face, kind="word", cap_px=24, angle=15.0, polarity=polarity,
        label=label, contrast=0.3, opacity=0.9,
    )  # fmt: skip
    assert marker is not None
    np.testing.assert_array_equal(film, keep)  # input untouched
    assert out.dtype == np.float32 and out.shape == film.shape
    assert np.array_equal(out != film, marker.mask)
    assert marker.visible.sum() > 50 and not (marker.visible & ~marker.mask).any()
    assert np.allclose(out * 255, np.round(out * 255), atol=1e-3)  # 8-bit levels
    x0, y0, x1, y1 = marker.box
    ys, xs = np.nonzero(marker.visible)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x0, y0, x1, y1]
    implied = {"none": polarity, "bright": "dark", "dark": "bright"}[label]
    assert marker.polarity == implied and marker.label == label
    assert marker.contrast == pytest.approx(0.3, abs=1e-6)
    assert marker.face == face.name and marker.renderer == face.renderer
    delta = out[marker.visible].astype(np.float64) - film[marker.visible]
    if label == "none":
        assert (np.sign(delta) == (1 if polarity == "bright" else -1)).all()


def test_dark_marker_darkens_mid_grey_and_contrast_is_clipped():
    face = next(f for f in font_set("heldout") if f.renderer == "hershey")
    film = np.full((400, 400), 0.5, np.float32)
    out, marker = burn_wild_marker(
        film, np.random.default_rng(0), face=face, kind="letter", cap_px=40, angle=0.0,
        polarity="dark", label="none", contrast=0.3, stencil=True,
    )  # fmt: skip
    assert marker is not None and marker.text in ("L", "R")
    assert (out[marker.mask] < 0.5).all()
    assert out[marker.mask].min() == pytest.approx(round(0.2 * 255) / 255, abs=1e-6)
    assert not (out != film)[~marker.mask].any()
    _, bright = burn_wild_marker(
        film, np.random.default_rng(0), face=face, kind="letter", cap_px=40, angle=0.0,
        polarity="bright", label="none", contrast=0.9,
    )  # fmt: skip
    assert bright is not None and bright.contrast == pytest.approx(0.5)


def test_big_block_fits_a_big_film_and_avoid_is_respected():
    film = np.full((3000, 3000), 0.4, np.float32)
    face = font_set("tuning")[-1]
    rng = np.random.default_rng(5)
    _, marker = burn_wild_marker(
        film, rng, face=face, kind="block", cap_px=90, angle=-5.0, polarity="bright",
        label="dark", contrast=0.8, text="ST MARY HOSP\nID 4829301\n03/12/2020",
    )  # fmt: skip
    assert marker is not None and marker.text.count("\n") == 2
    assert marker.box[3] - marker.box[1] >= 300
    _, letter = burn_wild_marker(
        film, rng, face=face, kind="letter", cap_px=300, angle=0.0, polarity="bright",
        label="none", contrast=0.5, avoid=[marker.box],
    )  # fmt: skip
    assert letter is not None
    a, b = marker.box, letter.box
    assert a[2] + 150 <= b[0] or b[2] + 150 <= a[0] or a[3] + 150 <= b[1] or b[3] + 150 <= a[1]


def test_no_place_and_bad_arguments():
    face = font_set("bundled")[0]
    film = np.full((64, 64), 0.5, np.float32)
    args = dict(face=face, kind="word", cap_px=40, angle=0.0, polarity="bright", contrast=0.5)
    out, marker = burn_wild_marker(film, np.random.default_rng(0), label="none", **args)
    assert marker is None and np.array_equal(out, film)
    for bad, match in (({"label": "white"}, "none"), ({"polarity": "grey"}, "bright")):
        call = {**args, "label": "none", **bad}
        with pytest.raises(ValueError, match=match):
            burn_wild_marker(film, np.random.default_rng(0), **call)
    with pytest.raises(ValueError, match="letter"):
        burn_wild_marker(film, np.random.default_rng(0), label="none", **{**args, "kind": "x"})


def test_degrade():
    film = _film(256)
    film[100:140, 60:200] = 1.0  # an edge for the resampling to blur
    rng = np.random.default_rng(2)
    same, info = degrade(film, rng, "none")
    assert np.array_equal(same, film) and info == {"kind": "none"}
    for kind in ("jpeg", "resample"):
        out, info = degrade(film, rng, kind)
        assert info["kind"] == kind
        assert out.shape == film.shape and out.dtype == np.float32
        assert np.allclose(out * 255, np.round(out * 255), atol=1e-3)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.abs(out - film).mean() > 1e-3
    assert 70 <= degrade(film, rng, "jpeg")[1]["quality"] <= 90
    info = degrade(film, rng, "resample")[1]
    assert 1.5 <= info["factor"] <= 3.0 and info["interp"] in ("linear", "cubic")
    with pytest.raises(ValueError, match="jpeg"):
        degrade(film, rng, "blur")
