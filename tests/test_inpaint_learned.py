"""The learned inpainter: training (self-supervised, resumable, judged on held-out films), the
registry entry's contract on every dtype and on model-input tensors, and its CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from xraydebug.cli import app
from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.inpaint import make_inpainter
from xraydebug.inpaint.holes import box_holes, random_holes
from xraydebug.inpaint.learned import InpaintNet, NetConfig, network_payload
from xraydebug.inpaint.training import HeldOutConfig, InpainterTrainConfig, train_inpainter

TINY_NET = NetConfig(width=8, levels=3, cap=16, dilations=(2,), max_hole=12, margin=12)


def tiny_config(**overrides) -> InpainterTrainConfig:
    values = dict(
        net=TINY_NET,
        steps=120,
        batch_size=8,
        crop=32,
        lr=3e-3,
        warmup=5,
        device="cpu",
        save_every=10,
        held_out=HeldOutConfig(films=4, holes=3),
    )
    return InpainterTrainConfig(**{**values, **overrides})


@pytest.fixture(autouse=True)
def one_thread():
    """The tests' networks are tiny: one thread runs them faster than two (and far faster
    than two on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    """Tiny synthetic films (train and test splits) and a text folder with their true boxes."""
    root = tmp_path_factory.mktemp("inp")
    data = root / "data"
    synthesize(data, SynthConfig(n_train=8, n_test=4, size=96), workers=1)
    truth = json.loads((data / "ground_truth.json").read_text())
    rows = [
        {"path": key, "boxes": json.dumps(value["boxes"]), "status": "ok"}
        for key, value in truth.items()
        if not key.startswith("_")
    ]
    (root / "text").mkdir()
    pd.DataFrame(rows).to_csv(root / "text" / "text.csv", index=False)
    return data


def _model_file(path: Path, seed: int = 0) -> Path:
    """An untrained network with a non-zero head (so it changes what it fills), saved."""
    torch.manual_seed(seed)
    net = InpaintNet(TINY_NET)
    torch.nn.init.normal_(net.head.weight, std=0.2)
    buffer = io.BytesIO()
    torch.save(network_payload(net, steps=0), buffer)
    path.write_bytes(buffer.getvalue())
    return path


def test_training_beats_the_mean_fill_on_held_out_holes(films, tmp_path):
    result = train_inpainter(
        films, tmp_path / "inp.pt", tiny_config(), text=films.parent / "text", progress=False
    )
    held = result.held_out
    assert held["films"] == 4 and held["holes"] >= 4  # every method judged on these masks
    psnr = {name: row["psnr"] for name, row in held["methods"].items()}
    assert psnr["learned"] > psnr["mean"] + 1.0, psnr
    card = json.loads(result.card_json.read_text())
    assert card["held_out"]["methods"]["telea"]["psnr"] == pytest.approx(psnr["telea"])
    assert "--inpainter learned --inpainter-model" in result.card_md.read_text()
    # the judging masks are fixed: the same seed draws the same holes
    a = box_holes(np.random.default_rng(3), (96, 96), 3, min_side=3, max_side=8)
    b = box_holes(np.random.default_rng(3), (96, 96), 3, min_side=3, max_side=8)
    assert (a == b).all() and a.any()


@pytest.mark.parametrize(
    "dtype,shape",
    [
        (np.uint8, (120, 90)),
        (np.uint16, (120, 90)),
        (np.int16, (120, 90)),
        (np.float32, (120, 90)),
        (np.uint8, (120, 90, 3)),
    ],
)
def test_learned_keeps_outside_pixels_dtype_and_range(tmp_path, dtype, shape):
    inpainter = make_inpainter("learned", model=str(_model_file(tmp_path / "m.pt"))).load()
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if dtype != np.uint16 else (1000, 4095)
        image = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    else:
        image = rng.normal(0.5, 0.2, size=shape).astype(dtype)
    mask = np.zeros(shape[:2], np.uint8)
    mask[10:22, 5:60] = 1  # a text box
    mask[80:118, 40:88] = 1  # a hole too thick for the net: filled scaled down
    mask[60, 3] = 1
    empty = np.zeros(shape[:2], bool)
    out, untouched = inpainter.inpaint([image, image], [mask, empty])
    for result in (out, untouched):
        assert result.dtype == image.dtype and result.shape == image.shape
    outside = mask == 0
    assert np.array_equal(out[outside], image[outside])
    assert np.array_equal(untouched, image)
    assert out.min() >= image.min() and out.max() <= image.max()
    assert not np.array_equal(out[~outside], image[~outside])


def test_inpaint_tensor_changes_only_masked_pixels(tmp_path):
    inpainter = make_inpainter("learned", model=str(_model_file(tmp_path / "m.pt"))).load()
    x = (torch.rand(3, 1, 64, 64) - 0.45) / 0.23  # a mean/std-normalised batch
    masks = torch.zeros(3, 1, 64, 64)
    masks[0, :, 5:15, 5:40] = 1
    masks[1, :, 20:60, 10:60] = 1  # thicker than max_hole: scaled down by 4
    out = inpainter.inpaint_tensor(x, masks)
    assert out.shape == x.shape and out.dtype == x.dtype
    hole = masks.expand_as(x) > 0.5
    assert torch.equal(out[~hole], x[~hole])
    assert torch.equal(out[2], x[2])  # no hole: unchanged
    assert not torch.equal(out[hole], x[hole])
    assert torch.isfinite(out).all()
    assert out[hole].min() >= x.min() and out[hole].max() <= x.max()


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--inpainter-model"):
        make_inpainter("learned").load()
    with pytest.raises(FileNotFoundError, match="--inpainter-model"):
        make_inpainter("learned", model=str(tmp_path / "nope.pt")).load()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="--inpainter-model"):
        make_inpainter("learned", model=str(bad)).load()


def test_interrupted_training_resumes(films, tmp_path):
    out = tmp_path / "inp.pt"
    config = tiny_config(steps=30)
    seen: list[int] = []

    def stop_at_12(step: int, _loss: float) -> None:
        seen.append(step)
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_inpainter(
            films, out, config, text=films.parent / "text", progress=False, on_step=stop_at_12
        )
    resume = tmp_path / ".inp.resume.pt"
    assert resume.exists() and not out.exists()
    seen.clear()
    result = train_inpainter(
        films,
        out,
        config,
        text=films.parent / "text",
        progress=False,
        on_step=lambda step, _loss: seen.append(step),
    )
    assert result.resumed_from == 12 and seen[0] == 13 and seen[-1] == 30
    assert out.exists() and result.card_json.exists() and result.card_md.exists()
    assert not resume.exists()
    again = train_inpainter(films, out, config, text=films.parent / "text", progress=False)
    assert again.reused and again.held_out == result.held_out


def test_hole_masks_are_seeded_and_cover_every_kind():
    for seed in range(20):
        a = random_holes(np.random.default_rng(seed), (64, 64), max_side=16)
        b = random_holes(np.random.default_rng(seed), (64, 64), max_side=16)
        assert a.dtype == np.uint8 and np.array_equal(a, b) and a.any()
        assert set(np.unique(a)) <= {0, 255}


def test_cli_trains_and_explains_a_missing_model(films, tmp_path):
    runner = CliRunner()
    out = tmp_path / "inp.pt"
    outcome = runner.invoke(
        app,
        ["inpainter", "train", str(films), "--out", str(out), "--steps", "3", "--device", "cpu"],
    )
    assert outcome.exit_code == 0, outcome.output
    assert out.exists() and out.with_suffix(".json").exists() and out.with_suffix(".md").exists()
    assert "Held-out PSNR" in outcome.output

    missing = runner.invoke(
        app, ["clean", str(films), "--inpainter", "learned", "--out", str(tmp_path / "clean")]
    )
    assert missing.exit_code == 1
    errors = [line for line in missing.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--inpainter-model" in errors[0], missing.output
    assert "Traceback" not in missing.output

    bad = runner.invoke(app, ["inpainter", "train", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1 and "does not exist" in bad.output and "Traceback" not in bad.output
