"""Flagging end to end: text boxes + iGOS++ insertion mass + text-only reveal + rule.

Two hand-built classifiers see the same films with a burned-in "R" in the top-left corner:
one reads the corner (a shortcut model), the other only the centre (it cannot see the marker).
Only the first must be flagged.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from xraydebug.flagging import FlagRule, apply_flags, model_box_mask, text_mass
from xraydebug.models.architectures import Preprocessing
from xraydebug.models.checkpoint import LoadedModel
from xraydebug.stages.scan import scan

from .conftest import scan_config

SIZE = 128
CLASSES = ("normal", "COVID-19")


class RegionNet(nn.Module):
    """logit_1 = 20 * mean over ``region`` of relu(avg3x3(x) - 0.3) - 1.5; logit_0 = 0."""

    def __init__(self, rows: slice, cols: slice) -> None:
        super().__init__()
        self.num_classes = 2
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(SIZE * SIZE, 2)
        inside = torch.zeros(SIZE, SIZE)
        inside[rows, cols] = 1
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.fill_(-0.3)
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1] = 20 * inside.flatten() / inside.sum()
            self.head.bias[1] = -1.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def loaded(rows: slice, cols: slice) -> LoadedModel:
    prep = Preprocessing(input_size=SIZE, in_channels=1, mean=(0.0,), std=(1.0,))
    return LoadedModel(RegionNet(rows, cols).eval(), prep, CLASSES, "region", {}, None, "h")


def film(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    body = 0.55 * np.exp(-(((xx - 0.5) / 0.25) ** 2 + ((yy - 0.55) / 0.3) ** 2))
    pixels = 0.08 + body + rng.normal(0, 0.02, (SIZE, SIZE))
    image = Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8))
    font = ImageFont.truetype(
        str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans-Bold.ttf"), 26
    )
    ImageDraw.Draw(image).text((8, 6), "R", fill=255, font=font)
    return np.asarray(image)


@pytest.fixture(scope="module")
def marker_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flag") / "data"
    (root / "test").mkdir(parents=True)
    lines = []
    for i in range(4):
        Image.fromarray(film(i)).save(root / "test" / f"f{i}.png")
        lines.append(f"P{i} f{i}.png COVID-19 site-a")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return root


CONFIG = dict(
    split="test",
    mask_size=16,
    iterations=6,
    ig_steps=4,
    metric_steps=8,
    batch_size=4,
    device="cpu",
)


def test_shortcut_model_is_flagged_and_blind_model_is_not(marker_data: Path, tmp_path: Path):
    reader = scan(
        marker_data,
        loaded(slice(0, 40), slice(0, 40)),
        tmp_path / "a",
        config=scan_config(**CONFIG),
    ).table
    blind = scan(
        marker_data,
        loaded(slice(44, 84), slice(44, 84)),
        tmp_path / "b",
        config=scan_config(**CONFIG),
    ).table
    for table in (reader, blind):
        assert (table["status"] == "ok").all()
        assert (table["n_boxes"].astype(int) >= 1).all()  # CRAFT finds the "R" on every film
        assert (table["pred"] == "COVID-19").all()
    mass_reader = reader["mass_in_text"].astype(float)
    mass_blind = blind["mass_in_text"].astype(float)
    assert (mass_reader > 3 * reader["text_area"].astype(float)).all()
    assert mass_reader.mean() > 5 * max(mass_blind.mean(), 1e-3)
    assert (reader["text_reveal_prob"].astype(float) > 0.5).all()
    # (the blind model's reveal probability is high too: its centre stays bright on the blurred
    # baseline; the mass criterion is what keeps it unflagged)
    assert (reader["flagged"] == "true").all()
    assert (blind["flagged"] == "false").all()


def test_rule_and_mass_helpers():
    rule = FlagRule(min_mass=0.1, min_ratio=3.0, min_reveal_prob=0.5)
    assert rule(0.4, 0.05, 0.9)
    assert not rule(0.4, 0.05, 0.3)  # text alone does not support the class
    assert not rule(0.12, 0.05, 0.9)  # not concentrated beyond its area
    assert not rule(0.0, 0.0, 1.0)  # no text
    saliency = np.zeros((8, 8), dtype=np.float32)
    saliency[:2, :2] = 1.0
    mass, area = text_mass(saliency, [[0, 0, 16, 16]], (64, 64), crop_rows=0)
    assert mass > 0.8 and area == pytest.approx(0.0625)
    assert text_mass(saliency, [], (64, 64), 0) == (0.0, 0.0)
    cover = model_box_mask([[0, 0, 32, 32]], (64, 64), crop_rows=0, size=8)
    assert cover[:4, :4].min() == 1.0 and cover[4:, 4:].max() == 0.0


def test_flags_recomputed_from_columns():
    import pandas as pd

    table = pd.DataFrame(
        {
            "status": ["ok", "ok", "error"],
            "n_boxes": ["1", "0", ""],
            "mass_in_text": ["0.5", "0", ""],
            "text_area": ["0.05", "0", ""],
            "text_reveal_prob": ["0.9", "", ""],
            "flagged": ["", "", ""],
        }
    )
    flags = apply_flags(table, FlagRule())["flagged"].tolist()
    assert flags == ["true", "false", ""]
    assert apply_flags(table, FlagRule(min_reveal_prob=0.95))["flagged"][0] == "false"


def test_removal_test_and_the_inpainting_operator(marker_data: Path, tmp_path: Path):
    """The removal test: with the "R" inpainted away (clean's Telea), the model that reads it
    loses its answer and the blind one keeps it. ``removal="inpaint"`` explains with MP2-G, and
    run.json and the report name the operator."""
    import json

    from xraydebug.audit.report import build_report

    config = scan_config(**CONFIG, removal="inpaint")
    reader = scan(marker_data, loaded(slice(0, 40), slice(0, 40)), tmp_path / "a", config=config)
    blind = scan(marker_data, loaded(slice(44, 84), slice(44, 84)), tmp_path / "b", config=config)
    gone = reader.table["text_removed_prob"].astype(float)
    assert (gone < 0.5).all() and (reader.table["target_prob"].astype(float) > 0.5).all()
    kept = blind.table["text_removed_prob"].astype(float) - blind.table["target_prob"].astype(float)
    assert kept.abs().max() < 0.05
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["config"]["removal"]["operator"] == "inpaint"
    assert "inpainted by 'telea'" in run["config"]["removal"]["summary"]
    html = build_report(tmp_path / "a").read_text()
    assert "everything else inpainted by telea" in html and "Text inpainted away" in html
