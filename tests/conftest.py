"""Shared fixtures: tiny hand-built datasets in every layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraydebug.models.train import TrainConfig

TINY_TRAIN = TrainConfig(arch="tiny", epochs=6, batch_size=8, lr=1e-2, patience=10, device="cpu")


def write_png(
    path: Path, value: int = 100, size: tuple[int, int] = (24, 32), seed: int = 0
) -> Path:
    """An 8-bit gray PNG of ``size`` (H, W) with noise around ``value``."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(value + rng.integers(-20, 20, size=size), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to prove inputs are never modified)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def covidx_dir(tmp_path: Path) -> Path:
    """A COVIDx-layout set with messy label lines and every kind of bad entry."""
    root = tmp_path / "covidx"
    for i in range(4):
        write_png(root / "train" / f"p{i}_a.png", seed=i)
        write_png(root / "test" / f"t{i}.png", seed=10 + i)
    write_png(root / "train" / "p0_b.png", seed=20)
    write_png(root / "train" / "p2_b.png", seed=22)
    write_png(root / "train" / "unlisted.png", seed=21)
    (root / "train" / "empty.png").write_bytes(b"")
    (root / "train" / "notes.png").write_bytes(b"this is not an image at all")
    outside = tmp_path / "outside.png"
    write_png(outside, seed=30)
    (root / "train" / "link.png").symlink_to(outside)
    train_lines = [
        "P0 p0_a.png normal site-a",
        "P0 p0_b.png NORMAL site-a extra tokens",  # 6 tokens, upper case
        "P1 p1_a.png Pneumonia site-b",
        "P2 p2_a.png COVID-19 site-c",
        "P3 p3_a.png covid-19",  # no source
        "P4 missing.png normal site-a",
        "P5 empty.png normal site-a",
        "P6 notes.png normal site-a",
        "P7 link.png normal site-a",
        "P8 ../../outside.png normal site-a",
        "P9 p1_a.png normal site-b",  # conflicting duplicate of p1_a
        "P10 p2_b.png tuberculosis site-a",  # unknown label
        "garbage",
    ]
    (root / "train.txt").write_bytes(("\r\n".join(train_lines) + "\r\n").encode())
    test_lines = [
        f"T{i} t{i}.png {lab} site-x"
        for i, lab in enumerate(["normal", "pneumonia", "COVID-19", "positive"])
    ]
    (root / "test_COVIDx9A.txt").write_text("\n".join(test_lines) + "\n")
    return root


@pytest.fixture
def folders_dir(tmp_path: Path) -> Path:
    root = tmp_path / "folders"
    for split in ("train", "test"):
        for k, cls in enumerate(("normal", "pneumonia", "COVID-19")):
            for i in range(2):
                write_png(root / split / cls / f"{cls}_{i}.png", seed=k * 10 + i)
    (root / "train" / "normal" / "README.txt").write_text("ignored")
    return root


def scan_config(**options):
    """A ScanConfig from flat options, as the CLI builds it (``text=False``: no detection)."""
    from xraydebug.stages.scan import ScanConfig

    return ScanConfig.from_options(options)


def make_tiny_covidx(
    root: Path, n_per_class: int = 12, n_test_per_class: int = 6, strength: float = 1.0
) -> Path:
    """64x64 COVIDx set a ``tiny`` model learns in seconds.

    normal: noise only; pneumonia: a bright 16 px blob; COVID-19: a 16 px striped patch; the
    patch position varies so the class is in the pattern, not the place. ``strength`` scales
    the patches (below 1: a fainter signal that takes longer to learn).
    """
    classes = ["normal", "pneumonia", "COVID-19"]
    rng = np.random.default_rng(0)
    stripes = np.tile(np.array([1.0, 1.0, 0.0, 0.0]), 4)[None, :] * np.ones((16, 1))
    for split, n in (("train", n_per_class), ("test", n_test_per_class)):
        lines = []
        for k, label in enumerate(classes):
            for i in range(n):
                pixels = rng.normal(60, 12, size=(64, 64))
                y, x = rng.integers(4, 44, size=2)
                if k == 1:
                    pixels[y : y + 16, x : x + 16] += 120 * strength
                elif k == 2:
                    pixels[y : y + 16, x : x + 16] += 140 * strength * stripes
                name = f"{split}_{label}_{i}.png"
                (root / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / split / name)
                patient = f"{split[:2]}{k}{i // 2}"  # two images per patient
                lines.append(f"{patient} {name} {label} site-{'ab'[i % 2]}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_covidx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_covidx(tmp_path_factory.mktemp("tiny") / "covidx")


@pytest.fixture(scope="session")
def tiny_model(tiny_covidx: Path, tmp_path_factory: pytest.TempPathFactory):
    """A ``tiny`` classifier trained for a few seconds on :func:`tiny_covidx`."""
    from xraydebug.models.train import train

    before = tree_digest(tiny_covidx)
    result = train(tiny_covidx, tmp_path_factory.mktemp("models") / "tiny.pt", config=TINY_TRAIN)
    assert tree_digest(tiny_covidx) == before  # inputs untouched
    return result


def make_report_run(root: Path, n_test: int = 12) -> tuple[Path, Path]:
    """A synthetic dataset plus a hand-built scan folder for report tests: (data, scan_dir).

    Test images with ground-truth text are flagged (``mass_in_text`` rising with their order)
    except the first, which has text but is not flagged; each mask marks the first text box as
    salient. One extra row is an unreadable image.
    """
    import io
    import json

    import pandas as pd

    from xraydebug.data.synth import SynthConfig, synthesize
    from xraydebug.runfolder import SCAN_COLUMNS, mask_filename

    data = synthesize(
        root / "data", SynthConfig(n_train=6, n_test=n_test, size=256, seed=5)
    ).out_dir
    truth = json.loads((data / "ground_truth.json").read_text())
    scan_dir = root / "scan"
    rows = []
    tests = sorted(k for k in truth if k.startswith("test/"))
    with_text = [k for k in tests if truth[k]["boxes"]]
    for path in tests:
        entry = truth[path]
        boxes = entry["boxes"]
        rank = with_text.index(path) if boxes else -1
        mask = np.ones((8, 8), dtype=np.float16)
        if boxes:
            x0, y0 = boxes[0][0] * 8 // 256, boxes[0][1] * 8 // 256
            mask[y0, x0] = 0.0
        buffer = io.BytesIO()
        np.savez_compressed(buffer, deletion=mask, insertion=mask, target=np.array(2))
        (scan_dir / mask_filename(path)).parent.mkdir(parents=True, exist_ok=True)
        (scan_dir / mask_filename(path)).write_bytes(buffer.getvalue())
        row = dict.fromkeys(SCAN_COLUMNS, "")
        row.update(
            path=path,
            split="test",
            label=entry["label"],
            source=entry["source"],
            pred="COVID-19" if boxes else entry["label"],
            prob=0.9,
            target="COVID-19" if boxes else entry["label"],
            mass_in_text=0.1 + 0.05 * rank if boxes else 0.0,
            text_area=0.02 if boxes else 0.0,
            text_reveal_prob=0.95 if boxes else "",
            flagged="true" if rank > 0 else "false",
            n_boxes=len(boxes),
            boxes=json.dumps(boxes),
            deletion_auc=0.2,
            insertion_auc=0.8,
            mask_file=mask_filename(path),
            status="ok",
        )
        rows.append(row)
    bad = dict.fromkeys(SCAN_COLUMNS, "")
    bad.update(
        path="test/broken.png",
        split="test",
        label="normal",
        status="error",
        error="truncated PNG file",
    )
    rows.append(bad)
    pd.DataFrame(rows, columns=SCAN_COLUMNS).to_csv(scan_dir / "scan.csv", index=False)
    run = {
        "data": str(data),
        "model": "models/covidnet.pt",
        "model_sha256": "ab" * 32,
        "arch": "small",
        "classes": ["normal", "pneumonia", "COVID-19"],
        "preprocessing": {
            "input_size": 256,
            "in_channels": 1,
            "mean": [0.5],
            "std": [0.25],
            "crop_top": 0.0,
        },
        "config": {
            "method": "igospp",
            "saliency": {"method": "igospp", "preset": None, "settings": {"mask_size": 8}},
            "flags": {"min_mass": 0.05, "min_ratio": 3.0, "min_reveal_prob": 0.5},
        },
    }
    (scan_dir / "run.json").write_text(json.dumps(run))
    return data, scan_dir
