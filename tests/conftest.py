"""Shared fixtures: tiny hand-built datasets in every layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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
