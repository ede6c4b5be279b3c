from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import tree_digest
from xraydebug.data.synth import SynthConfig, plan_dataset, render_record, synthesize
from xraydebug.errors import DatasetError
from xraydebug.inpaint import make_inpainter
from xraydebug.inpaint.boxes import inpaint_boxes
from xraydebug.runfolder import SCAN_COLUMNS
from xraydebug.stages.clean import CleanConfig, clean_dataset, write_derived_dicom
from xraydebug.text.inpaint import box_mask
from xraydebug.text.registry import detector_class, resolve_detector


def clean_config(**options):
    """A CleanConfig from flat options, as the CLI builds it."""
    return CleanConfig.from_options(options)


SYNTH = SynthConfig(n_train=12, n_test=6, size=256, seed=3)


@pytest.fixture(scope="module")
def synth_with_scan(tmp_path_factory):
    """A tiny synthetic set plus a scan folder whose boxes are the ground truth."""
    root = tmp_path_factory.mktemp("clean")
    data = synthesize(root / "data", SYNTH).out_dir
    truth = json.loads((data / "ground_truth.json").read_text())
    rows = []
    for key, entry in truth.items():
        if key.startswith("_"):
            continue
        row = dict.fromkeys(SCAN_COLUMNS, "")
        row.update(
            path=key,
            status="ok",
            boxes=json.dumps(entry["boxes"]),
            n_boxes=len(entry["boxes"]),
            flagged=str(entry["label"] == "COVID-19").lower(),
        )
        rows.append(row)
    scan_dir = root / "scan"
    scan_dir.mkdir()
    pd.DataFrame(rows, columns=SCAN_COLUMNS).to_csv(scan_dir / "scan.csv", index=False)
    return data, scan_dir, truth


def test_inpaint_keeps_outside_pixels_and_dtype():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(64, 80), dtype=np.uint16)
    out = inpaint_boxes(
        pixels, [[10, 10, 20, 18]], dilate=2, inpainter=make_inpainter("telea", radius=5)
    )
    assert out.dtype == np.uint16 and out.shape == pixels.shape
    outside = box_mask(pixels.shape, [[10, 10, 20, 18]], dilate=2) == 0
    assert np.array_equal(out[outside], pixels[outside])
    signed = (pixels.astype(np.int32) - 2048).astype(np.int16)
    assert inpaint_boxes(signed, [[1, 1, 5, 5]]).dtype == np.int16
    assert np.array_equal(inpaint_boxes(pixels, []), pixels)


def test_cleaned_images_lose_text_and_text_free_stay_identical(synth_with_scan, tmp_path: Path):
    data, scan_dir, truth = synth_with_scan
    before = tree_digest(data)
    out = tmp_path / "clean"
    result = clean_dataset(data, out, config=clean_config(scan=str(scan_dir)))
    assert tree_digest(data) == before
    assert (out / "train.txt").read_bytes() == (data / "train.txt").read_bytes()
    assert (out / "test.txt").read_bytes() == (data / "test.txt").read_bytes()
    table = pd.read_csv(out / "cleaning.csv")
    assert list(table.columns)[:4] == ["path", "n_boxes", "boxes", "changed"]
    records = {r.key: r for r in plan_dataset(SYNTH)}
    n_text = 0
    for key, entry in truth.items():
        if key.startswith("_"):
            continue
        if not entry["has_text"]:
            assert (
                hashlib.sha256((out / key).read_bytes()).digest()
                == hashlib.sha256((data / key).read_bytes()).digest()
            )
            continue
        n_text += 1
        twin = render_record(SYNTH, records[key]).clean.astype(float)  # text-free twin
        original = np.asarray(Image.open(data / key), dtype=float)
        cleaned = np.asarray(Image.open(out / key), dtype=float)
        inside = box_mask(twin.shape, entry["boxes"], dilate=0) > 0
        err_before = np.abs(original - twin)[inside].mean()
        err_after = np.abs(cleaned - twin)[inside].mean()
        assert err_after < 0.5 * err_before, key
    assert result.n_changed == n_text > 0


def test_only_flagged_dry_run_and_refusals(synth_with_scan, tmp_path: Path):
    data, scan_dir, truth = synth_with_scan
    dry = clean_dataset(
        data,
        tmp_path / "dry",
        config=clean_config(scan=str(scan_dir), only_flagged=True),
        dry_run=True,
    )
    assert not (tmp_path / "dry").exists()
    flagged_text = sum(
        1
        for k, e in truth.items()
        if not k.startswith("_") and e["label"] == "COVID-19" and e["has_text"]
    )
    assert dry.n_changed == flagged_text
    with pytest.raises(ValueError, match="inside the input dataset"):
        clean_dataset(data, data / "out", config=clean_config(scan=str(scan_dir)))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        clean_dataset(data, busy, config=clean_config(scan=str(scan_dir)))
    clean_dataset(data, busy, config=clean_config(scan=str(scan_dir)), force=True)
    assert not (busy / "x").exists() and (busy / "cleaning.csv").exists()
    with pytest.raises(ValueError, match="only-flagged needs --scan"):
        clean_dataset(data, tmp_path / "o", config=clean_config(only_flagged=True))


def test_clean_resumes(synth_with_scan, tmp_path: Path, monkeypatch):
    from xraydebug.stages import clean as clean_module

    data, scan_dir, _ = synth_with_scan
    out = tmp_path / "c"
    real = clean_module._clean_one
    first_batch = {p.name for p in sorted(data.rglob("*.png"))[:8]}

    def die_after_first_batch(source, *args, **kwargs):  # the driver is interrupted
        if source.name not in first_batch:
            raise KeyboardInterrupt
        return real(source, *args, **kwargs)

    monkeypatch.setattr(clean_module, "_clean_one", die_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        clean_dataset(data, out, config=clean_config(scan=str(scan_dir), batch_size=8))
    assert len(pd.read_csv(out / "cleaning.csv")) == 8
    monkeypatch.setattr(clean_module, "_clean_one", real)
    result = clean_dataset(data, out, config=clean_config(scan=str(scan_dir)))
    assert len(result.table) == 18 and result.table["path"].is_unique


def test_derived_dicom_tags(tmp_path: Path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns = 32, 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.full((32, 32), 1000, dtype=np.uint16)
    pixels[4:10, 4:10] = 4000
    ds.PixelData = pixels.tobytes()
    src = tmp_path / "a.dcm"
    ds.save_as(src, enforce_file_format=True)
    cleaned = inpaint_boxes(
        pixels, [[4, 4, 10, 10]], dilate=1, inpainter=make_inpainter("telea", radius=3)
    )
    derived = pydicom.dcmread(
        __import__("io").BytesIO(
            write_derived_dicom(src, cleaned, [[4, 4, 10, 10]], text_remains=False)
        )
    )
    assert derived.SOPInstanceUID != ds.SOPInstanceUID
    assert derived.SeriesInstanceUID != ds.SeriesInstanceUID
    assert derived.StudyInstanceUID == ds.StudyInstanceUID
    assert list(derived.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert derived.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "inpainting" in derived.DerivationDescription
    assert derived.BurnedInAnnotation == "NO"
    assert derived.pixel_array.max() < 4000
    still = pydicom.dcmread(
        __import__("io").BytesIO(
            write_derived_dicom(src, cleaned, [[4, 4, 10, 10]], text_remains=True)
        )
    )
    assert still.BurnedInAnnotation == "YES"


def test_images_missing_from_the_scan_are_detected_not_skipped(
    synth_with_scan, tmp_path: Path, monkeypatch
):
    from xraydebug.stages import clean as clean_module

    data, scan_dir, truth = synth_with_scan
    partial = tmp_path / "partial-scan"
    partial.mkdir()
    table = pd.read_csv(scan_dir / "scan.csv", dtype=str, keep_default_na=False)
    dropped = next(k for k, e in truth.items() if not k.startswith("_") and e["has_text"])
    table[table["path"] != dropped].to_csv(partial / "scan.csv", index=False)
    read, decoded, detected = [], [], []
    real_read = clean_module._read_gray

    def spy_read(path):
        read.append(path)
        decoded.append(real_read(path))
        return decoded[-1]

    def fake_detect(self, images, *, film_px=0):
        # films the cleaning decoded are detections; the rest are re-checks of cleaned films
        first = [any(image is d for d in decoded) for image in images]
        detected.extend(image.shape for image, f in zip(images, first, strict=True) if f)
        return [truth[dropped]["boxes"] if f else [] for f in first]

    monkeypatch.setattr(clean_module, "_read_gray", spy_read)
    monkeypatch.setattr(detector_class(resolve_detector("auto")), "_detect", fake_detect)
    result = clean_dataset(data, tmp_path / "out", config=clean_config(scan=str(partial)))
    assert read == [data / dropped]
    assert detected == [(SYNTH.size, SYNTH.size)]
    row = result.table.set_index("path").loc[dropped]
    assert int(row["n_boxes"]) == len(truth[dropped]["boxes"]) and bool(row["changed"])
