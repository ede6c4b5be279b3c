"""Synthetic data generator: layout contract, determinism, text boxes, planted shortcut."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraydebug.data.synth import (
    SynthConfig,
    burn_text,
    contact_sheet,
    plan_dataset,
    render_radiograph,
    render_record,
    synthesize,
)
from xraydebug.errors import DatasetError

TINY = SynthConfig(n_train=24, n_test=12, size=128, seed=3)
LABELS = {"normal", "pneumonia", "COVID-19"}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _lines(root: Path, split: str) -> list[list[str]]:
    return [line.split(" ") for line in (root / f"{split}.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    calls: list[tuple[int, int]] = []
    summary = synthesize(out, TINY, progress=lambda d, t: calls.append((d, t)), workers=1)
    assert calls[0] == (0, 36) and calls[-1] == (36, 36)
    assert summary.out_dir == out and summary.seconds > 0
    return out


def test_label_files_parse(tiny: Path) -> None:
    for split, n in (("train", TINY.n_train), ("test", TINY.n_test)):
        rows = _lines(tiny, split)
        assert len(rows) == n
        for row in rows:
            assert len(row) == 4, row
            pid, fname, label, source = row
            assert label in LABELS
            assert source.startswith("site-")
            assert fname.startswith(f"{pid}_") and fname.endswith(".png")
            assert (tiny / split / fname).is_file()
    assert sorted(p.name for p in (tiny / "train").iterdir()) == sorted(
        r[1] for r in _lines(tiny, "train")
    )


def test_patients_never_cross_splits_and_have_one_to_three_images(tiny: Path) -> None:
    by_split: dict[str, set[str]] = {}
    for split in ("train", "test"):
        per_patient: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for pid, _fname, label, source in _lines(tiny, split):
            per_patient[pid].append((label, source))
        for pid, items in per_patient.items():
            assert 1 <= len(items) <= 3, pid
            assert len(set(items)) == 1, f"{pid} mixes labels or sources: {items}"
        by_split[split] = set(per_patient)
    assert not by_split["train"] & by_split["test"]


def test_images_are_8bit_grayscale_of_the_configured_size(tiny: Path) -> None:
    for path in sorted((tiny / "test").glob("*.png")):
        with Image.open(path) as img:
            assert img.mode == "L"
            assert img.size == (TINY.size, TINY.size)
        pixels = np.asarray(Image.open(path))
        assert pixels.std() > 10  # not a blank image


def test_ground_truth_and_summary_agree_with_label_files(tiny: Path) -> None:
    truth = json.loads((tiny / "ground_truth.json").read_text())
    assert truth["_config"]["n_train"] == TINY.n_train
    assert tuple(truth["_config"]["classes"]) == TINY.classes
    for split in ("train", "test"):
        for pid, fname, label, source in _lines(tiny, split):
            entry = truth[f"{split}/{fname}"]
            assert entry["label"] == label
            assert entry["patient_id"] == pid and entry["source"] == source
            assert entry["has_text"] == bool(entry["boxes"])
    assert len(truth) == TINY.n_train + TINY.n_test + 1


def test_boxes_contain_exactly_the_burned_in_text(tiny: Path) -> None:
    truth = json.loads((tiny / "ground_truth.json").read_text())
    n_text = 0
    for record in plan_dataset(TINY):
        written = np.asarray(Image.open(tiny / record.split / record.filename))
        clean = render_record(TINY, dataclasses.replace(record, has_text=False)).image
        changed = written != clean
        boxes = truth[record.key]["boxes"]
        inside = np.zeros_like(changed)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= TINY.size and 0 <= y0 < y1 <= TINY.size
            assert all(isinstance(c, int) for c in (x0, y0, x1, y1))
            ys, xs = np.nonzero(changed[y0:y1, x0:x1])
            assert len(ys), f"{record.key}: box {[x0, y0, x1, y1]} changed nothing"
            # tight: the changed pixels touch every side of the box (x1/y1 exclusive)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x1 - x0, y1 - y0)
            assert not inside[y0:y1, x0:x1].any(), f"{record.key}: boxes overlap"
            inside[y0:y1, x0:x1] = True
        assert not (changed & ~inside).any(), f"{record.key}: text outside its boxes"
        n_text += bool(boxes)
    assert n_text > 0


def test_same_seed_is_byte_identical_with_any_worker_count(tiny: Path, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", TINY, workers=2).out_dir
    assert _files(again) == _files(tiny)


def test_different_seed_differs(tiny: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, n_train=6, n_test=3, seed=TINY.seed + 1)
    other = _files(synthesize(tmp_path / "other", config).out_dir)
    assert other.get("train/P00001_1.png") != _files(tiny).get("train/P00001_1.png")
    assert other["train.txt"] != _files(tiny)["train.txt"]


def test_train_shortcut_and_test_independence() -> None:
    config = SynthConfig(n_train=600, n_test=300, shortcut=0.9)
    rate: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in plan_dataset(config):
        rate[r.split, r.label].append(r.has_text)
    mean = {k: float(np.mean(v)) for k, v in rate.items()}
    assert mean["train", "COVID-19"] == pytest.approx(0.9, abs=0.02)
    assert mean["train", "normal"] == pytest.approx(0.1, abs=0.02)
    assert mean["train", "pneumonia"] == pytest.approx(0.1, abs=0.02)
    for label in LABELS:
        assert 0.4 <= mean["test", label] <= 0.6
    n = {k: len(v) for k, v in rate.items()}
    assert n["train", "normal"] == 240 and n["test", "COVID-19"] == 90


def test_summary_counts_show_the_shortcut(tiny: Path) -> None:
    summary = synthesize(tiny.parent / "counts", dataclasses.replace(TINY, size=64))
    train = summary.counts["train"]
    assert sum(c["n"] for c in train.values()) == TINY.n_train
    covid = train["COVID-19"]["with_text"] / train["COVID-19"]["n"]
    for label in ("normal", "pneumonia"):
        assert covid > train[label]["with_text"] / train[label]["n"]


def test_refuses_a_non_empty_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    config = SynthConfig(n_train=3, n_test=3, size=64)
    with pytest.raises(DatasetError, match="not empty"):
        synthesize(out, config)
    synthesize(out, config, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert len(list((out / "train").glob("*.png"))) == 3


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("shortcut", 1.5, "shortcut"),
        ("size", 16, "size"),
        ("classes", ("normal", "flu"), "classes"),
        ("class_fractions", (0.5, 0.5), "class_fractions"),
        ("n_train", -1, "n_train"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SynthConfig(**{field: value})


def test_radiograph_range_and_class_signal_stays_in_the_lungs() -> None:
    images = {
        label: render_radiograph(np.random.default_rng(11), 128, label) for label in sorted(LABELS)
    }
    for img in images.values():
        assert img.dtype == np.float32 and img.shape == (128, 128)
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    # same generator -> same anatomy; only the lesion differs, and it brightens the lungs
    for label in ("pneumonia", "COVID-19"):
        diff = images[label] - images["normal"]
        assert diff.max() > 0.05, label
        ys, _ = np.nonzero(np.abs(diff) > 0.02)
        assert ys.min() > 10 and ys.max() < 118, label  # never at the top/bottom edges
    covid_cols = np.nonzero(np.abs(images["COVID-19"] - images["normal"]).max(axis=0) > 0.03)[0]
    assert covid_cols.min() < 50 and covid_cols.max() > 78  # bilateral


def test_burn_text_boxes_and_contact_sheet(tiny: Path, tmp_path: Path) -> None:
    image = np.full((256, 256), 0.3, np.float32)
    for seed in range(10):
        out, boxes = burn_text(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.float32
        assert 1 <= len(boxes) <= 3
        changed = out != image
        for x0, y0, x1, y1 in boxes:
            assert changed[y0:y1, x0:x1].any()
        # corners and edges only: nothing in the central lung area
        assert not changed[64:192, 48:208].any()
    sheet = contact_sheet(tiny, tmp_path / "sheet.png", n=6)
    with Image.open(sheet) as img:
        assert img.mode == "RGB" and img.width >= 256


def test_lesion_mask_is_where_the_lesion_changed_the_film():
    from xraydebug.data.synth import lesion_mask

    config = SynthConfig(n_train=16, n_test=0, size=96, seed=4)
    records = plan_dataset(config)
    normal = next(r for r in records if r.label == "normal")
    assert not lesion_mask(config, normal).any()
    sick = next(r for r in records if r.label == "pneumonia")
    mask = lesion_mask(config, sick)
    assert 0.002 < mask.mean() < 0.3
    film = render_record(config, sick).clean.astype(int)
    without = render_record(dataclasses.replace(config, lesion_strength=0.0), sick).clean
    changed = np.abs(film - without) > 6  # beyond the mask's threshold and 8-bit rounding
    assert changed.any() and not (changed & ~mask).any()
