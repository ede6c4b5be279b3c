"""The inpainter registry: every entry's contract, and ``clean --inpainter`` with each of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tree_digest
from tests.test_imageio import make_dicom
from xraydebug.data.imageio import read_native
from xraydebug.data.synth import SynthConfig, plan_dataset, render_record
from xraydebug.inpaint import inpainter_class, inpainter_names, make_inpainter
from xraydebug.runfolder import SCAN_COLUMNS
from xraydebug.stages.clean import CleanConfig, clean_dataset
from xraydebug.text.inpaint import box_mask

CLASSICAL = [name for name in inpainter_names() if inpainter_class(name).classical]


def _film(size: int = 96, seed: int = 5) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """A synthetic film with text (uint8), its text-free twin and its text boxes."""
    config = SynthConfig(n_train=12, n_test=0, size=size, seed=seed)
    record = next(r for r in plan_dataset(config) if r.has_text)
    rendered = render_record(config, record)
    return rendered.image, rendered.clean, rendered.boxes


def _inputs() -> dict[str, np.ndarray]:
    """One film in every stored form the inpainters must keep: 8/16-bit, signed, float, RGB."""
    image, _, _ = _film()
    wide = image.astype(np.uint16) * 257
    return {
        "uint8": image,
        "uint16": wide,
        "int16": (image.astype(np.int16) - 128) * 8,
        "float32": image.astype(np.float32) / 255.0 * 3.0 - 1.5,
        "rgb": np.repeat(image[..., None], 3, axis=2),
    }


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("kind", ["uint8", "uint16", "int16", "float32", "rgb"])
def test_inpainters_keep_outside_pixels_dtype_and_range(name: str, kind: str):
    if not inpainter_class(name).available():
        pytest.skip(f"{name} needs OpenCV contrib")
    pixels = _inputs()[kind]
    _, _, boxes = _film()
    mask = box_mask(pixels.shape[:2], boxes, 2)
    out = make_inpainter(name).inpaint([pixels, pixels], [mask, np.zeros_like(mask)])
    assert [o.dtype for o in out] == [pixels.dtype] * 2 and out[0].shape == pixels.shape
    outside = mask == 0
    assert np.array_equal(out[0][outside], pixels[outside])
    assert np.array_equal(out[1], pixels)  # an empty mask changes nothing
    assert not np.array_equal(out[0][~outside], pixels[~outside])  # the text is filled
    assert out[0].min() >= pixels.min() and out[0].max() <= pixels.max()


@pytest.mark.parametrize("name", CLASSICAL)
def test_inpaint_tensor_fills_only_the_mask(name: str):
    import torch

    image, _, boxes = _film()
    x = torch.from_numpy((image.astype(np.float32) / 255.0 - 0.5) / 0.25)[None, None]
    x = x.repeat(2, 1, 1, 1)
    masks = torch.from_numpy(box_mask(image.shape, boxes, 2) > 0)[None, None].float()
    masks = torch.cat([masks, torch.zeros_like(masks)])
    out = make_inpainter(name).inpaint_tensor(x, masks)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.equal(out[masks == 0], x[masks == 0])
    assert not torch.equal(out[0], x[0])


def test_fills_come_closer_to_the_text_free_twin():
    """Against the twin, inpainting beats leaving the text, for every classical entry."""
    image, clean, boxes = _film(size=192)
    mask = box_mask(image.shape, boxes, 2) > 0
    before = np.abs(image[mask].astype(float) - clean[mask]).mean()
    for name in CLASSICAL:
        if inpainter_class(name).available():
            out = make_inpainter(name).inpaint([image], [mask])[0]
            assert np.abs(out[mask].astype(float) - clean[mask]).mean() < before / 2, name


def test_registry_refuses_unknown_names_and_settings():
    with pytest.raises(ValueError, match="choose one of"):
        make_inpainter("deepfill")
    with pytest.raises(TypeError, match="radius"):
        make_inpainter("fsr", radius=3)
    with pytest.raises(ValueError, match="radius"):
        make_inpainter("telea", radius=0)
    with pytest.raises(ValueError, match="choose one of"):
        CleanConfig.from_options({"inpainter": "deepfill"})
    model = {"inpainter": "telea", "inpainter_model": "weights.pt"}
    with pytest.raises(TypeError, match="no model file"):
        CleanConfig.from_options(model).inpaint.build()


# -- clean --inpainter, PNG and DICOM, with resume ---------------------------------------------


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory) -> tuple[Path, Path, dict[str, list[list[int]]]]:
    """A folders-layout set: text films as PNG, 12-bit DICOM (MONOCHROME2 and MONOCHROME1), a
    text-free PNG; plus a scan folder holding the true text boxes."""
    root = tmp_path_factory.mktemp("inpaint-clean")
    data = root / "data"
    image, clean, boxes = _film(size=128)
    wide = (image.astype(np.uint16) * 16).astype(np.uint16)  # 12-bit
    from PIL import Image

    (data / "train" / "normal").mkdir(parents=True)
    (data / "train" / "pneumonia").mkdir(parents=True)
    Image.fromarray(image).save(data / "train" / "normal" / "a.png")
    Image.fromarray(clean).save(data / "train" / "normal" / "free.png")
    make_dicom(data / "train" / "pneumonia" / "b.dcm", wide, bits_stored=12)
    make_dicom(
        data / "train" / "pneumonia" / "c.dcm",
        (4095 - wide).astype(np.uint16),
        bits_stored=12,
        photometric="MONOCHROME1",
    )
    truth = {
        "train/normal/a.png": boxes,
        "train/normal/free.png": [],
        "train/pneumonia/b.dcm": boxes,
        "train/pneumonia/c.dcm": boxes,
    }
    rows = []
    for path, found in truth.items():
        row = dict.fromkeys(SCAN_COLUMNS, "")
        row.update(path=path, status="ok", boxes=json.dumps(found), n_boxes=len(found))
        rows.append(row)
    scan = root / "scan"
    scan.mkdir()
    pd.DataFrame(rows, columns=SCAN_COLUMNS).to_csv(scan / "scan.csv", index=False)
    return data, scan, truth


def _model_options(name: str, tmp_path: Path) -> dict[str, str]:
    if inpainter_class(name).classical:
        return {}
    from tests.test_inpaint_learned import _model_file

    return {"inpainter_model": str(_model_file(tmp_path / "inpainter.pt"))}


@pytest.mark.parametrize("name", inpainter_names())
def test_clean_with_every_inpainter_png_and_dicom_resumes(
    name: str, mixed_dataset, tmp_path: Path, monkeypatch
):
    if not inpainter_class(name).available():
        pytest.skip(f"{name} is not installed here")
    from xraydebug.stages import clean as clean_module

    data, scan, truth = mixed_dataset
    before = tree_digest(data)
    options = {"scan": str(scan), "inpainter": name, "batch_size": 1, "dilate": 2}
    options |= _model_options(name, tmp_path)
    config = CleanConfig.from_options(options)
    out = tmp_path / "out"
    real, calls = clean_module._clean_one, []

    def interrupted(source, *args, **kwargs):  # the run dies after its first cleaned film
        if calls:
            raise KeyboardInterrupt
        calls.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(clean_module, "_clean_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clean_dataset(data, out, config=config)
    monkeypatch.setattr(clean_module, "_clean_one", real)
    result = clean_dataset(data, out, config=config)
    assert tree_digest(data) == before  # the input is never written
    assert len(result.table) == 4 and result.table["path"].is_unique
    assert json.loads((out / ".xraydebug-clean.json").read_text())["config"]["inpaint"][
        "inpainter"
    ] == (name)
    for path, boxes in truth.items():
        source, _ = read_native(data / path)
        cleaned, meta = read_native(out / path)
        mask = box_mask(source.shape[:2], boxes, 2) > 0
        assert cleaned.dtype == source.dtype, path
        assert np.array_equal(cleaned[~mask], source[~mask]), path
        assert np.array_equal(cleaned[mask], source[mask]) == (not boxes), path
        if meta.format == "DICOM":
            import pydicom

            derived = pydicom.dcmread(out / path)
            assert list(derived.ImageType)[:2] == ["DERIVED", "SECONDARY"]
            assert name in derived.DerivationDescription
    # MONOCHROME1 and MONOCHROME2 copies of one film are cleaned alike: on average within 1%
    # of the 12-bit range (a learned net sees both the way a reader does; Telea rounds, FSR
    # picks its basis functions, a little differently on an inverted film)
    mono2, _ = read_native(out / "train/pneumonia/b.dcm")
    mono1, _ = read_native(out / "train/pneumonia/c.dcm")
    diff = np.abs(mono2.astype(int) - (4095 - mono1.astype(int)))
    hole = box_mask(mono2.shape, truth["train/pneumonia/c.dcm"], 2) > 0
    assert diff[hole].mean() <= 41
