"""Text detection at any scale: proposals, zoomed verification, side letters, the registry,
and the cleaning re-check. Real networks (PP-OCRv4 DBNet, CRAFT official weights) throughout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from tests.test_craft import _hit, radiographs  # noqa: F401 - shared fixture
from xraydebug.data.imageio import read_image
from xraydebug.data.markers import burn_marker
from xraydebug.data.synth import render_radiograph
from xraydebug.errors import CheckpointError
from xraydebug.text import (
    CraftConfig,
    DetectorConfig,
    PPOCRConfig,
    SecondLook,
    SecondLookConfig,
    TextDetector,
    build_detector,
    detect_text,
    detector_config,
    detector_names,
    merge_boxes,
    register_detector,
    resolve_detector,
    saliency_blobs,
)
from xraydebug.text import detect as detect_module
from xraydebug.text import registry as registry_module
from xraydebug.text import verified as verified_module
from xraydebug.text.glyphs import glyph_scores
from xraydebug.text.ppocr import PPOCR_SHA256, load_dbnet, ppocr_model_path
from xraydebug.text.proposals import label_extent, propose_regions
from xraydebug.text.zoom import deskewed_crops


def _auto(images: list[np.ndarray], **settings: object) -> list[list[list[int]]]:
    """The default detector on the CPU, with ``settings`` overriding its config."""
    return detect_text(images, detector_config("auto", **settings), device="cpu")


def _film(size: int, seed: int = 0) -> np.ndarray:
    """A synthetic radiograph of ``size`` px, rendered at 512 and resized (fast)."""
    base = render_radiograph(np.random.default_rng(seed), 512, "normal")
    return cv2.resize(base, (size, size), interpolation=cv2.INTER_LINEAR)


def test_default_detector_finds_words_and_the_lone_letter(radiographs) -> None:  # noqa: F811
    clean, text, truth = radiographs
    with_text, without_text = _auto([text, clean])
    # the 19 px "L" that CRAFT at one 640 px resize misses (see test_craft) is found here
    for key in ("PORTABLE", "2021-03-14", "L"):
        assert _hit(with_text, truth[key]), (key, with_text)
    assert without_text == []


def test_craft_verifier_finds_the_words(radiographs) -> None:  # noqa: F811
    clean, text, truth = radiographs
    config = detector_config("craft", side_letters=False)
    with_text, without_text = detect_text([text, clean], config, device="cpu")
    assert _hit(with_text, truth["PORTABLE"]) and _hit(with_text, truth["2021-03-14"])
    assert without_text == []


@pytest.mark.parametrize(
    ("style", "angle"), [("plain", 0.0), ("white_box", 0.0), ("grey", 0.0), ("plain", 30.0)]
)
def test_small_letter_on_a_large_film_is_found(style: str, angle: float) -> None:
    film = _film(2048)
    rng = np.random.default_rng(7)
    marked, marker = burn_marker(film, rng, kind="letter", style=style, cap_px=13, angle=angle)
    assert marker is not None
    (boxes,) = _auto([marked])
    assert _hit(boxes, marker.box), (marker, boxes)
    (none,) = _auto([film])
    assert none == []


def test_real_radiograph_gets_no_box() -> None:
    image, _ = read_image(get_testdata_file("RG1_UNCR.dcm"))
    assert _auto([image]) == [[]]


def test_marker_ground_truth_is_exact() -> None:
    film = _film(256)
    marked, marker = burn_marker(
        film, np.random.default_rng(1), kind="word", style="plain", cap_px=12, angle=45.0
    )
    changed = np.rint(marked * 255) != np.rint(film * 255)
    assert np.array_equal(changed, marker.mask)
    x0, y0, x1, y1 = marker.box
    assert changed[y0:y1, x0:x1].sum() == changed.sum()
    with pytest.raises(ValueError, match="style must be one of"):
        burn_marker(film, np.random.default_rng(1), kind="word", style="neon", cap_px=12)


def test_proposals_deskew_a_rotated_word() -> None:
    film = _film(512)
    marked, marker = burn_marker(
        film, np.random.default_rng(3), kind="word", style="plain", cap_px=16, angle=60.0
    )
    regions = propose_regions(marked)
    hits = [r for r in regions if _hit([list(r.bbox)], marker.box)]
    assert hits, regions
    crops = deskewed_crops(marked, hits[:1], glyph_px=40)
    assert len(crops) == 2  # a line of text: its two readings, 0 and 180 degrees
    # deskewed: the word lies along the crop's long side, its glyphs ~40 px tall
    assert crops[0].image.shape[1] > 2 * crops[0].image.shape[0]


def test_label_extent_grows_to_a_flat_label_but_not_to_the_background() -> None:
    u8 = np.full((100, 100), 40, np.uint8)
    u8[30:60, 30:60] = 250  # a white label
    u8[38:52, 40:44] = 10  # a dark stroke on it
    assert label_extent(u8, (40, 38, 44, 52)) == (30, 30, 60, 60)
    flat = np.full((100, 100), 40, np.uint8)
    flat[38:52, 40:44] = 250  # a bright stroke on a flat film background
    assert label_extent(flat, (40, 38, 44, 52)) == (40, 38, 44, 52)


def test_label_extent_grows_to_a_label_the_box_cuts_but_not_to_a_dark_corner() -> None:
    u8 = np.full((120, 120), 0, np.uint8)  # a film's black corner
    u8[10:44, 10:44] = 226  # a white label in it
    u8[18:38, 20:24] = 10  # the "L" on it, with strokes that run into the label's left part
    u8[34:38, 20:34] = 10
    # the box reaches past the label's top-left edge: its ring is part label, part background
    assert label_extent(u8, (8, 8, 34, 38)) == (8, 8, 44, 44)
    corner = np.full((120, 120), 90, np.uint8)
    yy, xx = np.mgrid[:120, :120]
    corner[(xx - 120) ** 2 + (yy - 120) ** 2 > 90**2] = 0  # round body edge, flat dark corner
    corner[12:30, 12:16] = 250  # a bright stroke in the dark corner
    assert label_extent(corner, (12, 12, 16, 30)) == (12, 12, 16, 30)


def test_small_films_get_a_smaller_stroke_kernel() -> None:
    from xraydebug.text.proposals import _kernel_side

    sides = {n: _kernel_side(11, n) for n in (256, 384, 512, 1024, 3000)}
    assert sides == {256: 7, 384: 9, 512: 9, 1024: 11, 3000: 11}


def test_faint_grey_word_needs_the_crop_contrast_stretch() -> None:
    film = np.rint(_film(1024, seed=3) * 255).astype(np.uint8)
    level = int(np.median(film[60:90, 600:800])) + 26  # about 0.1 above the film
    cv2.putText(film, "NORTH CLINIC", (600, 85), *(cv2.FONT_HERSHEY_SIMPLEX, 0.6, level, 1, 16))
    gray = film.astype(np.float32) / 255
    found = _auto([gray])[0]
    assert found, "a faint word, stretched, is text to DBNet"
    assert all(x0 >= 600 and x1 <= 745 and y0 >= 64 and y1 <= 92 for x0, y0, x1, y1 in found)
    assert _auto([gray], crop_gain=1.0)[0] == []


def test_side_letter_shape_scores() -> None:
    # films of 1,024 px: the proposals' full-size stroke kernel sees the 24 px blob
    film = np.full((1024, 1024), 80, np.uint8)
    cv2.putText(film, "L", (80, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 250, 3)
    blob = np.full((1024, 1024), 80, np.uint8)
    cv2.circle(blob, (100, 100), 12, 250, -1)
    best = []
    for image in (film.astype(np.float32) / 255, blob.astype(np.float32) / 255):
        regions = propose_regions(image)
        best.append(float(glyph_scores(deskewed_crops(image, regions[:1])).max()))
    assert best[0] >= 0.8 > best[1], best


def test_merge_boxes() -> None:
    assert merge_boxes([[0, 0, 5, 5], [4, 4, 9, 9], [20, 20, 22, 22]]) == [
        [0, 0, 9, 9],
        [20, 20, 22, 22],
    ]
    assert merge_boxes([]) == []


def test_registry_lists_and_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detector_names()[:4] == ["auto", "ppocr", "craft", "craft-global"]
    with pytest.raises(ValueError, match=r"unknown text detector 'tess'.*craft-global"):
        detector_config("tess")
    assert resolve_detector("auto") == "ppocr"
    assert type(detector_config()) is PPOCRConfig
    monkeypatch.setattr(detect_module.PPOCRDetector, "available", classmethod(lambda cls: False))
    assert resolve_detector("auto") == "craft"
    assert type(detector_config()) is CraftConfig


def test_detector_config_overrides_and_refuses_unknown_settings() -> None:
    config = detector_config("craft", glyph_px=32.0, verify_threshold=None)
    assert config.glyph_px == 32.0 and config.verify_threshold == 0.5  # None: the default
    nested = detector_config("ppocr", **{"proposals.min_contrast": 0.04})
    assert nested.proposals.min_contrast == 0.04 and nested.proposals.noise_factor == 3.0
    with pytest.raises(ValueError, match=r"'craft-global' has no setting 'glyph_px'.*long_side"):
        detector_config("craft-global", glyph_px=32.0)
    with pytest.raises(ValueError, match=r"no setting 'proposals.nope'.*proposals.min_contrast"):
        detector_config("ppocr", **{"proposals.nope": 1})
    with pytest.raises(ValueError, match="crop_gain must be in"):
        detector_config("ppocr", crop_gain=0.5)
    described = build_detector("craft", device="cpu", precision="fp32").describe()
    assert json.loads(json.dumps(described)) == described
    assert described["name"] == "craft" and described["device"] == "cpu"
    assert described["config"]["proposals"]["noise_factor"] == 4.0
    assert build_detector("ppocr", device="cuda", precision="bf16").device == "cpu"


@dataclass(frozen=True)
class MineConfig(DetectorConfig):
    side: int = 4


class Mine(TextDetector):
    """A detector defined outside the package: one fixed box per image."""

    name = "mine"
    description = "one side x side box in the top-left corner of every image"
    config_class = MineConfig
    config: MineConfig

    def _detect(self, images, *, film_px=0):
        return [[[0, 0, self.config.side, self.config.side]] for _ in images]


def test_a_detector_registered_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    assert register_detector(Mine) is Mine
    assert detector_names()[-1] == "mine"
    assert detector_config("mine") == MineConfig()
    config = detector_config("mine", side=6)
    images = [np.zeros((32, 32), np.float32), np.zeros((16, 24), np.uint8)]
    assert build_detector(config).load().detect(images) == [[[0, 0, 6, 6]], [[0, 0, 6, 6]]]
    assert detect_text(images[0], "mine") == [[[0, 0, 4, 4]]]
    # windows: found in each 8 px window, 2x enlarged to 16 px -> 3 px in the film
    found = build_detector("mine").detect_in_windows(
        images[0], [[0, 0, 8, 8], [20, 20, 28, 28]], min_side=16, max_zoom=2.0
    )
    assert found == [[0, 0, 2, 2], [20, 20, 22, 22]]
    assert "mine" not in registry_module.verifier_names()  # verifies = False
    with pytest.raises(ValueError, match=r"'mine' has no setting 'glyph_px'.*side"):
        detector_config("mine", glyph_px=3.0)

    class Other(Mine):
        name = "other"

    with pytest.raises(ValueError, match="MineConfig is already the config of detector 'mine'"):
        register_detector(Other)
    with pytest.raises(ValueError, match="name 'ppocr' is taken"):
        register_detector(type("PPOCRAgain", (Mine,), {"name": "ppocr"}))


def test_config_reaches_the_verifier(monkeypatch: pytest.MonkeyPatch, radiographs) -> None:  # noqa: F811
    _, text, _ = radiographs
    seen = {}
    real = verified_module.deskewed_crops

    def spy(gray, regions, **kwargs):
        seen.update(kwargs)
        return real(gray, regions, **kwargs)

    monkeypatch.setattr(verified_module, "deskewed_crops", spy)
    build_detector(detector_config("ppocr", glyph_px=33.0), device="cpu").detect([text])
    assert seen["glyph_px"] == 33.0

    # with a network that sees no text (and no letter matching) nothing is kept
    class Blind:
        def probability(self, batch):
            return np.zeros_like(batch)

    monkeypatch.setattr(detect_module, "load_dbnet", lambda threads=0: Blind())
    blind = build_detector(detector_config("ppocr", side_letters=False), device="cpu")
    assert blind.detect([text]) == [[]]


def test_craft_crop_gain_reaches_the_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """CRAFT used to force ``crop_gain=1`` and ``noise_factor>=4`` whatever was asked for: they
    are its config's defaults now, and a setting reaches the crops and the proposals."""
    seen: list[tuple[float, float]] = []

    def spy(gray, regions, **kwargs):
        seen.append((kwargs["max_gain"], len(regions)))
        return []  # no views: the network is not run

    monkeypatch.setattr(verified_module, "deskewed_crops", spy)
    monkeypatch.setattr(detect_module.CraftDetector, "load", lambda self: self)
    proposals: list[float] = []
    real_propose = verified_module.propose_regions

    def propose_spy(gray, config):
        proposals.append(config.noise_factor)
        return real_propose(gray, config)

    monkeypatch.setattr(verified_module, "propose_regions", propose_spy)
    film = _film(256)
    for settings in ({}, {"crop_gain": 3.0, "proposals.noise_factor": 2.5}):
        config = detector_config("craft", **settings)
        assert build_detector(config, device="cpu").detect([film]) == [[]]
    assert [gain for gain, _ in seen] == [1.0, 3.0]
    assert proposals == [4.0, 2.5]


def test_official_dbnet_file_is_checked() -> None:
    import hashlib

    path = ppocr_model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PPOCR_SHA256
    assert load_dbnet() is not load_dbnet()  # each detector holds its own session
    with pytest.raises(CheckpointError, match="not found"):
        load_dbnet(path.with_name("missing.onnx"))


def test_clean_rechecks_and_widens_where_text_remains(tmp_path: Path) -> None:
    film = _film(512, seed=2)
    marked, marker = burn_marker(
        film, np.random.default_rng(5), kind="word", style="plain", cap_px=18
    )
    data = tmp_path / "data"
    for label in ("normal", "pneumonia"):
        (data / label).mkdir(parents=True)
        cv2.imwrite(str(data / label / "a.png"), np.rint(marked * 255).astype(np.uint8))
    x0, y0, x1, y1 = marker.box
    half = [x0, y0, (x0 + x1) // 2, y1]  # a scan that boxed only half of the word
    scan = tmp_path / "scan"
    scan.mkdir()
    rows = [
        {"path": f"{label}/a.png", "status": "ok", "flagged": "true", "boxes": json.dumps([half])}
        for label in ("normal", "pneumonia")
    ]
    pd.DataFrame(rows).to_csv(scan / "scan.csv", index=False)
    from xraydebug.stages.clean import CleanConfig, InpaintConfig, clean_dataset

    once = CleanConfig(scan=str(scan), inpaint=InpaintConfig(second_pass=False))
    one = clean_dataset(data, tmp_path / "one", config=once).table
    assert (one["text_remains"].astype(str) == "True").all(), one
    two = clean_dataset(data, tmp_path / "two", config=CleanConfig(scan=str(scan))).table
    assert (two["passes"].astype(int) == 2).all()
    assert (two["text_remains"].astype(str) == "False").all(), two


def test_second_look_finds_a_faint_marker_where_the_saliency_points() -> None:
    film = _film(512, seed=4)
    u8 = np.rint(film * 255).astype(np.uint8)
    background = int(np.median(u8[40:80, 420:470]))
    marked = u8.copy()
    cv2.putText(marked, "R", (425, 75), cv2.FONT_HERSHEY_DUPLEX, 1.2, background + 12, 2)
    gray = marked.astype(np.float32) / 255
    ys, xs = np.nonzero(marked != u8)
    truth = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert not _hit(_auto([gray])[0], truth)  # too faint for the first pass
    yy, xx = np.mgrid[:512, :512]
    saliency = np.exp(-((xx - 440) ** 2 + (yy - 60) ** 2) / (2 * 12.0**2)).astype(np.float32)
    windows = saliency_blobs(saliency, [], SecondLookConfig())
    (wx0, wy0, wx1, wy1), (tx0, ty0, tx1, ty1) = windows[0], truth
    assert len(windows) == 1 and wx0 <= tx0 and wy0 <= ty0 and wx1 >= tx1 and wy1 >= ty1
    assert saliency_blobs(saliency, [[430, 50, 450, 70]], SecondLookConfig()) == []
    look = SecondLook(device="cpu").load()
    assert [v.name for v in look.verifiers()] == ["ppocr", "craft"]
    assert all(v.config.proposals.min_contrast == 0.035 for v in look.verifiers())
    found = look(gray, windows)
    assert _hit(found, truth), found
    # evidence on the lungs (a lesion, not text) finds nothing there
    lung = np.exp(-((xx - 180) ** 2 + (yy - 260) ** 2) / (2 * 20.0**2)).astype(np.float32)
    lung_windows = saliency_blobs(lung, [], SecondLookConfig())
    assert lung_windows and look(gray, lung_windows) == []


def test_every_detector_looks_in_windows() -> None:
    """craft-global has no proposals (no film scale to adjust) but answers windows too."""
    gray = _film(256)
    detector = build_detector(detector_config("craft-global", long_side=128), device="cpu")
    assert detector.detect_in_windows(gray, [[0, 0, 64, 64], [0, 0, 2, 64]], min_side=128) == []


def test_text_command_takes_the_detector_and_lists_the_valid_ones(covidx_dir, tmp_path: Path):
    from typer.testing import CliRunner

    from xraydebug.cli import app

    runner = CliRunner()
    out = tmp_path / "text"
    ok = runner.invoke(app, ["text", str(covidx_dir), "--out", str(out), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    table = pd.read_csv(out / "text.csv")
    assert set(table["status"]) <= {"ok", "error"} and (table["status"] == "ok").any()
    bad = runner.invoke(app, ["text", str(covidx_dir), "--detector", "tess", "--out", str(out)])
    assert bad.exit_code == 1
    assert "unknown text detector 'tess'" in bad.output and "craft-global" in bad.output
    assert "Traceback" not in bad.output


def test_a_registered_detector_is_a_cli_choice_and_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib

    from typer.testing import CliRunner

    import xraydebug.cli
    from xraydebug.data.synth import SynthConfig, synthesize

    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_detector(Mine)
    cli = importlib.reload(xraydebug.cli)  # the app is built from the registries at import
    try:
        help_text = CliRunner().invoke(cli.app, ["text", "--help"]).output
        assert "mine(onesidexsidebox" in "".join(help_text.replace("│", "").split())
        data = synthesize(tmp_path / "data", SynthConfig(n_train=0, n_test=3, size=64)).out_dir
        out = tmp_path / "text"
        argv = ["text", str(data), "--out", str(out), "--detector", "mine"]
        result = CliRunner().invoke(cli.app, [*argv, "--set", "detector.side=5"])
        assert result.exit_code == 0, result.output
        table = pd.read_csv(out / "text.csv", dtype=str, keep_default_na=False)
        assert len(table) == 3 and set(table["boxes"]) == {"[[0, 0, 5, 5]]"}
        state = json.loads((out / ".xraydebug-text.json").read_text())
        assert state["config"]["detector"] == {
            "name": "mine",
            "precision": "fp32",
            "config": {"side": 5},
        }
        bad = CliRunner().invoke(cli.app, [*argv, "--long-side", "640"])
        assert bad.exit_code == 1 and "long_side: not a setting" in bad.output
    finally:
        monkeypatch.undo()
        importlib.reload(xraydebug.cli)
