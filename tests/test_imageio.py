"""Tests for xraydebug.data.imageio: every format, the DICOM intensity chain and bad input."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from xraydebug.data import imageio
from xraydebug.data.imageio import ImageMeta, read_image, read_native, sniff_format
from xraydebug.errors import ImageReadError

# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------


def save_pil(path: Path, array: np.ndarray, fmt: str | None = None, **kwargs: Any) -> Path:
    """Write ``array`` with Pillow (format from ``fmt`` or the suffix)."""
    Image.fromarray(array).save(path, format=fmt, **kwargs)
    return path


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    **attrs: Any,
) -> Path:
    """Write a real DICOM file (explicit VR little endian unless told) with pydicom.

    ``pixels`` is ``(H, W)``, ``(F, H, W)`` for multi-frame, or ``(H, W, 3)`` for RGB; its dtype
    sets Bits Allocated and Pixel Representation. ``attrs`` are extra DICOM keywords.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.PatientID = "TEST"
    colour = photometric == "RGB"
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = pixels.shape[:2]
    else:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixel_data if pixel_data is not None else pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_for(path: Path, reason: str) -> str:
    """A ``pytest.raises(match=...)`` pattern: the path, then the reason, one line."""
    return rf"^{re.escape(str(path))}: .*{reason}"


def assert_canonical(image: np.ndarray, meta: ImageMeta) -> None:
    """Float32, 2-D, C-contiguous, finite, in [0, 1], shape matching meta."""
    assert image.dtype == np.float32
    assert image.ndim == 2
    assert image.flags.c_contiguous
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.shape == (meta.height, meta.width)


GRADIENT8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (24, 1))  # (24, 64)


# --------------------------------------------------------------------------------------------
# PNG / JPEG / TIFF
# --------------------------------------------------------------------------------------------


def test_png_8bit_gray(tmp_path: Path) -> None:
    path = save_pil(tmp_path / "g8.png", GRADIENT8)
    image, meta = read_image(path)
    assert_canonical(image, meta)
    np.testing.assert_allclose(image, GRADIENT8 / 255.0, atol=1e-6)
    assert (meta.format, meta.bit_depth, meta.dtype, meta.photometric) == ("PNG", 8, "uint8", "L")
    assert meta.pixel_spacing is None
    assert meta.warnings == ()


def test_png_16bit_gray_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(20, 30), dtype=np.uint16)
    pixels[0, :2] = (0, 65535)
    path = save_pil(tmp_path / "g16.png", pixels)
    image, meta = read_image(path)
    assert_canonical(image, meta)
    assert (meta.bit_depth, meta.dtype) == (16, "uint16")
    assert np.array_equal(np.rint(image.astype(np.float64) * 65535).astype(np.uint16), pixels)
    assert np.abs(image - pixels / 65535.0).max() < 0.5 / 65535
    native, native_meta = read_native(path)
    assert native.dtype == np.uint16
    assert np.array_equal(native, pixels)
    assert native_meta.dtype == "uint16"


def test_png_16bit_twelve_bit_data_warns(tmp_path: Path) -> None:
    pixels = np.linspace(0, 4095, 64, dtype=np.uint16).reshape(8, 8)
    _, meta = read_image(save_pil(tmp_path / "g12.png", pixels))
    assert any("< 4096" in w for w in meta.warnings)


def test_png_rgb_to_luma(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[0, 3] = (128, 128, 128)
    image, meta = read_image(save_pil(tmp_path / "rgb.png", rgb))
    assert_canonical(image, meta)
    np.testing.assert_allclose(image[0, :4], [0.299, 0.587, 0.114, 128 / 255], atol=1e-5)
    assert meta.photometric == "RGB"
    native, _ = read_native(tmp_path / "rgb.png")
    assert native.shape == (4, 5, 3) and native.dtype == np.uint8


def test_png_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.full((4, 4, 4), 200, np.uint8)
    rgba[1, 1, :3] = (255, 0, 0)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent: colour kept as stored
    rgba[0, 1, 3] = 51  # 20 % opaque
    path = save_pil(tmp_path / "rgba.png", rgba)
    image, meta = read_image(path)
    assert_canonical(image, meta)
    assert image[0, 0] == pytest.approx(200 / 255, abs=1e-5)
    assert image[0, 1] == pytest.approx(200 / 255, abs=1e-5)
    assert image[1, 1] == pytest.approx(0.299, abs=1e-5)
    assert meta.photometric == "RGBA"
    assert any("alpha channel ignored" in w for w in meta.warnings)
    native, _ = read_native(path)
    assert native.shape == (4, 4, 4)
    assert np.array_equal(native, rgba)


def test_png_opaque_rgba_has_no_warning(tmp_path: Path) -> None:
    rgba = np.full((3, 3, 4), 255, np.uint8)
    rgba[0, :, 0] = 10
    image, meta = read_image(save_pil(tmp_path / "opaque.png", rgba))
    assert meta.warnings == ()
    np.testing.assert_allclose(image[0], (0.299 * 10 + 0.701 * 255) / 255, atol=1e-5)
    np.testing.assert_allclose(image[1:], 1.0, atol=1e-6)


def test_png_palette_to_gray(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(indices, mode="P")
    palette = [255, 0, 0, 0, 0, 255, 40, 40, 40] + [0] * (256 * 3 - 9)
    img.putpalette(palette)
    path = tmp_path / "pal.png"
    img.save(path)
    image, meta = read_image(path)
    assert_canonical(image, meta)
    assert meta.photometric == "P"
    np.testing.assert_allclose(image, [[0.299, 0.114], [40 / 255, 0.114]], atol=1e-5)
    native, _ = read_native(path)
    assert native.shape == (2, 2, 3)  # expanded to the palette colours


def test_png_16bit_rgb_is_lossless(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 65536, size=(6, 7, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
    native, meta = read_native(path)
    assert native.dtype == np.uint16 and np.array_equal(native, rgb)
    assert meta.bit_depth == 16
    image, _ = read_image(path)
    expected = (rgb.astype(np.float64) / 65535) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_png_dpi_is_not_pixel_spacing(tmp_path: Path) -> None:
    path = save_pil(tmp_path / "dpi.png", GRADIENT8, dpi=(254, 127))
    assert read_image(path)[1].pixel_spacing is None


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_gray_and_rgb(tmp_path: Path, mode: str) -> None:
    gray = np.tile(np.linspace(30, 220, 64), (48, 1)).astype(np.uint8)
    array = gray if mode == "L" else np.stack([gray] * 3, axis=-1)
    path = save_pil(tmp_path / "x.jpg", array, quality=95)
    image, meta = read_image(path)
    assert_canonical(image, meta)
    assert (meta.format, meta.photometric, meta.bit_depth) == ("JPEG", mode, 8)
    assert np.abs(image - gray / 255.0).mean() < 0.01


def test_tiff_8_and_16_bit(tmp_path: Path) -> None:
    image8, meta8 = read_image(save_pil(tmp_path / "g8.tif", GRADIENT8))
    np.testing.assert_allclose(image8, GRADIENT8 / 255.0, atol=1e-6)
    assert (meta8.format, meta8.bit_depth) == ("TIFF", 8)
    pixels = np.arange(0, 65536, 257, dtype=np.uint16)[:240].reshape(12, 20)
    path16 = save_pil(tmp_path / "g16.tiff", pixels, compression="tiff_lzw")
    image16, meta16 = read_image(path16)
    assert_canonical(image16, meta16)
    assert (meta16.bit_depth, meta16.dtype) == (16, "uint16")
    assert np.array_equal(np.rint(image16.astype(np.float64) * 65535).astype(np.uint16), pixels)
    assert np.array_equal(read_native(path16)[0], pixels)


def test_tiff_multipage_uses_first_page_with_warning(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((5, 6), v, np.uint8)) for v in (10, 200, 90)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    image, meta = read_image(path)
    assert np.allclose(image, 10 / 255)
    assert any("3 pages" in w and "first" in w for w in meta.warnings)


def test_constant_png_loads_with_warning(tmp_path: Path) -> None:
    image, meta = read_image(save_pil(tmp_path / "c.png", np.full((8, 8), 128, np.uint8)))
    assert np.allclose(image, 128 / 255)
    assert "constant image (all pixels 0.502)" in meta.warnings


# --------------------------------------------------------------------------------------------
# DICOM intensity chain
# --------------------------------------------------------------------------------------------


def test_dicom_monochrome2_window(tmp_path: Path) -> None:
    pixels = np.array([[0, 100, 150, 200, 4095]], np.uint16)
    path = make_dicom(tmp_path / "w.dcm", pixels, bits_stored=12, WindowCenter=150, WindowWidth=100)
    image, meta = read_image(path)
    assert_canonical(image, meta)
    # DICOM LINEAR window: c' = 149.5, w' = 99; 0/100 -> black, 200/4095 -> white.
    np.testing.assert_allclose(image[0], [0.0, 0.0, 0.5 + 0.5 / 99, 1.0, 1.0], atol=1e-6)
    assert (meta.format, meta.bit_depth, meta.dtype) == ("DICOM", 12, "uint16")
    assert meta.photometric == "MONOCHROME2"


def test_dicom_first_of_several_windows(tmp_path: Path) -> None:
    pixels = np.array([[100, 200]], np.uint16)
    path = make_dicom(tmp_path / "w2.dcm", pixels, WindowCenter=[150, 1000], WindowWidth=[100, 10])
    image, _ = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 1.0])


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.array([[0, 500, 1000]], np.uint16)
    path = make_dicom(tmp_path / "m1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1")
    image, meta = read_image(path)
    assert meta.photometric == "MONOCHROME1"
    assert image[0, 2] < image[0, 0]  # a bright stored value is dark
    np.testing.assert_allclose(image[0], [1.0, 0.5, 0.0])
    native, _ = read_native(path)
    assert np.array_equal(native, pixels)  # no intensity transform


def test_dicom_rescale_slope_intercept_applied(tmp_path: Path) -> None:
    pixels = np.array([[50, 100, 150]], np.uint16)
    # Rescaled values 0, 100, 200 (a window in output units); unrescaled would give 0.25..0.75.
    path = make_dicom(
        tmp_path / "r.dcm",
        pixels,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=100,
        WindowWidth=200,
    )
    image, _ = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 0.5 + 0.5 / 199, 1.0], atol=1e-6)


def test_dicom_voi_lut_sequence_applied(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 8])
    item.add_new("LUTData", "US", [0, 255, 128, 64])  # not monotonic: proves the LUT is used
    pixels = np.array([[0, 1, 2, 3, 10]], np.uint16)
    path = make_dicom(
        tmp_path / "lut.dcm",
        pixels,
        VOILUTSequence=Sequence([item]),
        WindowCenter=5,  # the LUT takes precedence over the window
        WindowWidth=10,
    )
    image, _ = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 1.0, 128 / 255, 64 / 255, 64 / 255], atol=1e-6)


def test_dicom_12_of_16_bits_masks_high_bits(tmp_path: Path) -> None:
    pixels = np.array([[0, 4095, 0xF000 | 2048]], np.uint16)  # junk in the unused high bits
    path = make_dicom(tmp_path / "b12.dcm", pixels, bits_stored=12)
    native, meta = read_native(path)
    assert np.array_equal(native[0], [0, 4095, 2048])
    assert meta.bit_depth == 12
    image, _ = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 1.0, 2048 / 4095], atol=1e-6)


def test_dicom_signed_pixels(tmp_path: Path) -> None:
    pixels = np.array([[-1000, 0, 1000]], np.int16)
    path = make_dicom(tmp_path / "s.dcm", pixels)
    native, meta = read_native(path)
    assert native.dtype == np.int16 and np.array_equal(native, pixels)
    assert meta.dtype == "int16"
    image, _ = read_image(path)
    np.testing.assert_allclose(image[0], [0.0, 0.5, 1.0])
    windowed = make_dicom(tmp_path / "sw.dcm", pixels, WindowCenter=0, WindowWidth=1001)
    image, _ = read_image(windowed)
    np.testing.assert_allclose(image[0], [0.0, 0.5 + 0.5 / 1000, 1.0], atol=1e-6)


def test_dicom_multiframe_first_frame_with_warning(tmp_path: Path) -> None:
    frames = np.stack([np.full((3, 4), v, np.uint8) for v in (0, 255)])
    frames[0, 0, 0] = 255
    path = make_dicom(tmp_path / "mf.dcm", frames)
    image, meta = read_image(path)
    assert image.shape == (3, 4)
    assert image[0, 0] == 1.0 and image[1, 1] == 0.0
    assert any("2 frames" in w for w in meta.warnings)


def test_dicom_rgb_to_gray(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (255, 255, 255)
    image, meta = read_image(make_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    np.testing.assert_allclose(image, [[0.299, 0.0], [0.0, 1.0]], atol=1e-5)
    assert meta.photometric == "RGB"


def test_dicom_constant_without_window_is_zero_with_warning(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "c.dcm", np.full((4, 4), 700, np.uint16))
    image, meta = read_image(path)
    assert np.all(image == 0.0)
    assert any(w.startswith("constant image") for w in meta.warnings)


def test_dicom_pixel_spacing(tmp_path: Path) -> None:
    path = make_dicom(
        tmp_path / "ps.dcm", np.zeros((2, 2), np.uint8), ImagerPixelSpacing=[0.15, 0.14]
    )
    assert read_image(path)[1].pixel_spacing == (0.15, 0.14)


def test_dicom_without_preamble_is_sniffed_and_read(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage  # group 0008 first
    ds.Rows, ds.Columns = 2, 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.array([[0, 1, 2], [3, 4, 255]], np.uint8).tobytes()
    path = tmp_path / "bare.png"  # the extension is ignored
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[:2] == b"\x08\x00"
    assert sniff_format(path) == "DICOM"
    image, meta = read_image(path)
    assert meta.format == "DICOM"
    assert image[1, 2] == 1.0 and image[0, 0] == 0.0


@pytest.fixture(scope="module")
def rg1_uncompressed() -> tuple[np.ndarray, ImageMeta]:
    return read_image(get_testdata_file("RG1_UNCR.dcm"))


def test_real_chest_cr_monochrome1(rg1_uncompressed: tuple[np.ndarray, ImageMeta]) -> None:
    image, meta = rg1_uncompressed
    assert_canonical(image, meta)
    assert image.shape == (1955, 1841)
    assert (meta.photometric, meta.bit_depth, meta.format) == ("MONOCHROME1", 15, "DICOM")
    height, width = image.shape
    rows = slice(height // 4, 3 * height // 4)
    spine = image[rows, 2 * width // 5 : 3 * width // 5].mean()
    right_lung = image[rows, width // 8 : width // 3].mean()
    left_lung = image[rows, 2 * width // 3 : 7 * width // 8].mean()
    # After inverting MONOCHROME1, the mediastinum/spine is brighter than both lungs.
    assert spine > right_lung + 0.05 and spine > left_lung + 0.05


def test_real_chest_cr_jpeg2000_lossless_matches(
    rg1_uncompressed: tuple[np.ndarray, ImageMeta],
) -> None:
    image, meta = read_image(get_testdata_file("RG1_J2KR.dcm"))
    assert np.array_equal(image, rg1_uncompressed[0])
    assert meta.photometric == "MONOCHROME1"


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def truncated_png(tmp_path: Path) -> Path:
    data = save_pil(
        tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    ).read_bytes()
    path = tmp_path / "trunc.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_jpeg(tmp_path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    data = save_pil(tmp_path / "full.jpg", noise).read_bytes()
    path = tmp_path / "trunc.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def no_pixel_dicom(tmp_path: Path) -> Path:
    path = make_dicom(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    out = tmp_path / "nopixels.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


def truncated_dicom(tmp_path: Path) -> Path:
    data = make_dicom(tmp_path / "big.dcm", np.zeros((64, 64), np.uint16)).read_bytes()
    path = tmp_path / "trunc.dcm"
    path.write_bytes(data[:-3000])
    return path


def unsupported_syntax_dicom(tmp_path: Path) -> Path:
    return make_dicom(
        tmp_path / "j2k2.dcm",
        np.zeros((2, 2), np.uint8),
        transfer_syntax=UID("1.2.840.10008.1.2.4.92"),  # JPEG 2000 Part 2: no decoder
        pixel_data=encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 8]),
    )


def write(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return build


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda tmp: tmp / "missing.png", "file not found"),
    "zero_bytes": (write("empty.png", b""), re.escape("empty file (0 bytes)")),
    "text_as_png": (
        write("notes.png", b"this is not an image at all"),
        re.escape("not a PNG/JPEG/TIFF/DICOM image (starts with b'this is not an i')"),
    ),
    "lfs_pointer": (
        write("lfs.png", b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n"),
        "not a PNG/JPEG/TIFF/DICOM image .*Git LFS",
    ),
    "truncated_png": (truncated_png, "truncated or corrupt image data: "),
    "png_header_only": (write("hdr.png", b"\x89PNG\r\n\x1a\n\x00\x00"), "truncated or corrupt"),
    "truncated_jpeg": (truncated_jpeg, "truncated or corrupt image data: "),
    "dicom_no_pixels": (no_pixel_dicom, "DICOM file has no pixel data"),
    "truncated_dicom": (truncated_dicom, "truncated or corrupt DICOM"),
    "unsupported_syntax": (unsupported_syntax_dicom, "unsupported DICOM transfer syntax JPEG"),
    "directory": (lambda tmp: tmp, "is a directory"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("reader", [read_image, read_native])
def test_bad_input_raises_one_line_error(
    tmp_path: Path, case: str, reader: Callable[[Path], Any]
) -> None:
    build, reason = BAD_INPUTS[case]
    path = build(tmp_path)
    with pytest.raises(ImageReadError, match=error_for(path, reason)) as info:
        reader(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_compressed_dicom_without_decoder_names_syntax_and_package(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = make_dicom(
        tmp_path / "jls.dcm",
        np.zeros((2, 2), np.uint8),
        transfer_syntax=JPEGLSLossless,
        pixel_data=encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 8]),
    )
    with pytest.raises(ImageReadError, match=error_for(path, "JPEG-LS Lossless.*pip install")):
        read_image(path)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_pil(tmp_path / "locked.png", GRADIENT8)

    def deny(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(imageio, "open", deny, raising=False)
    with pytest.raises(ImageReadError, match=error_for(path, "permission denied")):
        read_image(path)


NOBODY = 65534  # the conventional unprivileged uid and gid
SKIP_EXIT = 77  # the child's exit status when it may not change its uid

#: Run by a child that starts as root: it imports the reader and reads a readable image while
#: it still can (the interpreter may lie where only root can read, e.g. under /root), then
#: drops to ``NOBODY`` for good and reads the readable image again (the folder is reachable)
#: and the locked one, printing the error it gets.
_READ_AS_NOBODY = f"""
import os, sys
from xraydebug.data.imageio import read_image
from xraydebug.errors import ImageReadError
readable, locked = sys.argv[1:]
read_image(readable)
try:
    os.setgroups([])
    os.setgid({NOBODY})
    os.setuid({NOBODY})
except PermissionError as exc:
    print(exc, file=sys.stderr)
    sys.exit({SKIP_EXIT})
read_image(readable)
try:
    read_image(locked)
except ImageReadError as exc:
    print(exc)
else:
    sys.exit("uid {NOBODY} read a file with mode 000")
"""


def _locked_read_error(readable: Path, locked: Path) -> str:
    """The ``ImageReadError`` message of reading ``locked`` without root's privileges: in
    this process for an ordinary user, in a child that drops to ``NOBODY`` when run as root
    (root reads any file)."""
    if os.geteuid() != 0:
        with pytest.raises(ImageReadError) as info:
            read_image(locked)
        return str(info.value)
    argv = [sys.executable, "-c", _READ_AS_NOBODY, str(readable), str(locked)]
    child = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if child.returncode == SKIP_EXIT:
        pytest.skip(f"running as root and may not switch to uid {NOBODY}: {child.stderr.strip()}")
    assert child.returncode == 0, child.stderr
    return child.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="needs POSIX file modes")
def test_permission_denied_for_real() -> None:
    """No mock: a file with mode 000, read by a user who is not root."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)  # reachable for the unprivileged user
        readable = save_pil(Path(folder) / "readable.png", GRADIENT8)
        locked = save_pil(Path(folder) / "locked.png", GRADIENT8)
        locked.chmod(0)
        message = _locked_read_error(readable, locked)
    assert re.match(error_for(locked, "permission denied"), message), message


def test_path_with_newline_gives_one_line(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found") as info:
        read_image(tmp_path / "bad\nname.png")
    assert "\n" not in str(info.value)


def test_message_prefix_is_the_path_as_given(tmp_path: Path) -> None:
    path = str(tmp_path / "back\\slash.png")  # a literal backslash, as in Windows paths
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: file not found"
    assert str(info.value).removeprefix(f"{path}: ") == "file not found"


def test_pillow_truncated_loading_stays_disabled() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --------------------------------------------------------------------------------------------
# inputs untouched, sniffing
# --------------------------------------------------------------------------------------------


def test_inputs_are_not_modified(tmp_path: Path) -> None:
    files = [
        save_pil(tmp_path / "a.png", GRADIENT8),
        save_pil(tmp_path / "b.jpg", GRADIENT8),
        save_pil(tmp_path / "c.tif", GRADIENT8),
        make_dicom(tmp_path / "d.dcm", np.array([[1, 2]], np.uint16), photometric="MONOCHROME1"),
        truncated_png(tmp_path),
    ]
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in files}
    for path in files:
        for reader in (read_image, read_native):
            with contextlib.suppress(ImageReadError):
                reader(path)
    assert {p: (sha256(p), p.stat().st_mtime_ns) for p in files} == before


def test_sniff_format_ignores_extension(tmp_path: Path) -> None:
    assert sniff_format(save_pil(tmp_path / "png.dcm", GRADIENT8, fmt="PNG")) == "PNG"
    assert sniff_format(save_pil(tmp_path / "jpeg.png", GRADIENT8, fmt="JPEG")) == "JPEG"
    assert sniff_format(save_pil(tmp_path / "tiff.jpg", GRADIENT8, fmt="TIFF")) == "TIFF"
    dicom = make_dicom(tmp_path / "dicom.tif", np.zeros((2, 2), np.uint8))
    assert sniff_format(dicom) == "DICOM"
    assert sniff_format(write("text.png", b"hello world, not an image")(tmp_path)) is None
    # A DICOM whose preamble looks like TIFF (as RG1_UNCR.dcm's does) is DICOM.
    assert sniff_format(get_testdata_file("RG1_UNCR.dcm")) == "DICOM"
    image, meta = read_image(tmp_path / "jpeg.png")
    assert meta.format == "JPEG" and image.shape == GRADIENT8.shape
