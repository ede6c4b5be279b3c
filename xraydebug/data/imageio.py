"""Read chest radiographs (PNG, JPEG, TIFF, DICOM) into one canonical form.

Two entry points:

* :func:`read_image` returns a float32 array of shape ``(H, W)`` with values in ``[0, 1]``
  (C-contiguous, NaN-free) where **1 is white** (bone) and 0 is black (air), whatever the file's
  photometric interpretation. This is what models, saliency and text detection see.
* :func:`read_native` returns the stored pixels in their native dtype without any intensity
  transform: ``(H, W)`` for gray, ``(H, W, C)`` for colour. It is used to inpaint at the original
  bit depth.

Both return an :class:`ImageMeta`. Every failure raises
:class:`~xraydebug.errors.ImageReadError` with a single line ``"<path>: <reason>"``. Files are
opened read-only and are never modified.

Conversion rules for :func:`read_image`:

* PNG/JPEG/TIFF are decoded with Pillow (truncated data is an error: Pillow's
  ``LOAD_TRUNCATED_IMAGES`` is never enabled). 8-bit samples are divided by 255, 16-bit samples
  by 65535 (decoded losslessly through numpy, never through 8-bit mode ``"L"``). 16-bit colour
  PNG/TIFF, which Pillow would reduce to 8 bits, are decoded with OpenCV instead.
* Colour is reduced to gray with ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``.
  Alpha is **dropped** (the colour channels are used as stored), with a warning when some
  pixels are not fully opaque. Palette images are expanded to their colours first.
* Multi-page TIFF, animated PNG and multi-image JPEG: the first image, with a warning.
  EXIF orientation is not applied (pixels are used as stored, so they match
  :func:`read_native`); a warning says when a file asks for a rotation.
* DICOM: the Modality LUT (Modality LUT Sequence or Rescale Slope/Intercept) is applied, then the
  first VOI LUT (VOI LUT Sequence, else the first Window Center/Width), else min-max over the
  image. The VOI output is scaled to ``[0, 1]`` by the LUT's or window's *output range*, so a
  window clips as a viewer would. MONOCHROME1 is then inverted. Presentation LUT Shape is not
  used. Multi-frame: the first frame, with a warning. Colour DICOM becomes gray as above.
  Compressed transfer syntaxes are decoded by pydicom's pixel data handlers (pylibjpeg,
  pylibjpeg-openjpeg, Pillow); without a suitable handler the error names the transfer syntax
  and the package to install.
* A constant image is returned as is (e.g. 0.502 for an 8-bit image of 128; 0.0 for a DICOM
  without a window) with a warning in ``meta.warnings``.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from xraydebug.errors import ImageReadError

__all__ = ["ImageMeta", "read_image", "read_native", "sniff_format"]

PathLike = str | os.PathLike[str]

_T = TypeVar("_T")

#: Luma weights (ITU-R BT.601) for R, G, B.
_LUMA = (0.299, 0.587, 0.114)

#: Maximum number of library warnings copied into ``ImageMeta.warnings``.
_MAX_LIBRARY_WARNINGS = 5

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_HEAD_BYTES = 132  # enough for the DICOM preamble (128) + "DICM"

#: DICOM value representations, used to recognise an explicit-VR tag without preamble.
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)

#: Other formats users put in image folders, to make the "not an image" reason useful.
_OTHER_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 (.jp2) file"),
    (b"\xff\x4f\xff\x51", "a raw JPEG 2000 codestream"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a zip archive"),
    (b"version https://git-lfs", "a Git LFS pointer (run `git lfs pull`)"),
    (b"<!DOCTYPE html", "an HTML page"),
    (b"<html", "an HTML page"),
)


@dataclass(frozen=True)
class ImageMeta:
    """What was read, besides the pixels.

    Attributes:
        format: ``"PNG"``, ``"JPEG"``, ``"TIFF"`` or ``"DICOM"`` (from the file's magic bytes).
        height: Rows of the returned image.
        width: Columns of the returned image.
        bit_depth: Bits of the stored samples: 8 or 16 (1 for bilevel, 32 for float TIFF), or
            DICOM Bits Stored (12, 15, ...).
        dtype: numpy dtype name of the stored pixels (what :func:`read_native` returns).
        photometric: DICOM Photometric Interpretation as stored (``"MONOCHROME1"``, ...), or
            Pillow's mode (``"L"``, ``"I;16"``, ``"RGB"``, ``"RGBA"``, ``"P"``, ...).
        pixel_spacing: ``(row, col)`` spacing in mm from DICOM Pixel Spacing, else Imager Pixel
            Spacing; ``None`` when absent or invalid, and always for PNG/JPEG/TIFF (their DPI
            tags describe printing or scanning, not the detector).
        warnings: One line each, e.g. ``"constant image (all pixels 0.502)"``.
    """

    format: str
    height: int
    width: int
    bit_depth: int
    dtype: str
    photometric: str
    pixel_spacing: tuple[float, float] | None
    warnings: tuple[str, ...] = ()


@dataclass
class _Decoded:
    """Internal result of decoding: native pixels plus what is needed to make them gray."""

    native: np.ndarray
    format: str
    bit_depth: int
    photometric: str
    pixel_spacing: tuple[float, float] | None
    warnings: list[str]
    to_unit_gray: Callable[[], np.ndarray]


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def sniff_format(path: PathLike) -> str | None:
    """Return the image format of ``path`` from its first bytes, ignoring the extension.

    Args:
        path: File to look at.

    Returns:
        ``"PNG"``, ``"JPEG"``, ``"TIFF"`` or ``"DICOM"`` (with the ``DICM`` marker at offset 128,
        or a preamble-less DICOM starting with a plausible group 0002/0008 element), else
        ``None``.

    Raises:
        ImageReadError: The file is missing, a directory, or cannot be read.
    """
    _check_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise _error(path, _os_reason(exc)) from exc
    return _sniff_bytes(head, os.path.getsize(path))


def read_image(path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read an image as gray float32 ``(H, W)`` in ``[0, 1]``, white = 1.

    Args:
        path: PNG, JPEG, TIFF or DICOM file (the format is sniffed, not taken from the name).

    Returns:
        ``(image, meta)``: ``image`` is C-contiguous float32 of shape ``(H, W)``, NaN-free,
        clipped to ``[0, 1]``; see the module docstring for the intensity rules.

    Raises:
        ImageReadError: One line ``"<path>: <reason>"`` for any file that cannot be read.
    """
    decoded = _decode(path)
    try:
        gray = decoded.to_unit_gray()
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # library errors while converting (e.g. a malformed LUT)
        raise _error(path, f"cannot convert pixel values: {_exc_text(exc)}") from exc
    gray = np.nan_to_num(gray.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    gray = np.ascontiguousarray(np.clip(gray, 0.0, 1.0), dtype=np.float32)
    notes = list(decoded.warnings)
    if gray.size and not any(n.startswith("constant image") for n in notes):
        lo, hi = float(gray.min()), float(gray.max())
        if lo == hi:
            notes.append(f"constant image (all pixels {lo:.3f})")
    return gray, _meta(decoded, gray.shape, notes)


def read_native(path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read the stored pixels without any intensity transform.

    Args:
        path: PNG, JPEG, TIFF or DICOM file.

    Returns:
        ``(pixels, meta)``: ``pixels`` is C-contiguous in its native dtype (``uint8``,
        ``uint16``, ``int16``, ...), ``(H, W)`` for gray or ``(H, W, C)`` for colour (alpha is
        kept). Palette images are expanded to their RGB(A) colours (indices are not
        intensities); YCbCr DICOM is converted to RGB by pydicom; multi-frame files give the
        first frame. DICOM values are raw stored values (before Rescale and VOI; MONOCHROME1 is
        not inverted), with Bits Stored < Bits Allocated masked and sign-extended by pydicom.

    Raises:
        ImageReadError: One line ``"<path>: <reason>"`` for any file that cannot be read.
    """
    decoded = _decode(path)
    native = decoded.native
    if native.dtype.byteorder not in ("=", "|"):
        native = native.astype(native.dtype.newbyteorder("="))
    native = np.ascontiguousarray(native)
    notes = list(decoded.warnings)
    if native.size and not any(n.startswith("constant image") for n in notes):
        lo, hi = native.min(), native.max()
        if lo == hi:
            notes.append(f"constant image (all stored values {lo.item()})")
    return native, _meta(decoded, native.shape[:2], notes)


# --------------------------------------------------------------------------------------------
# file access and format sniffing
# --------------------------------------------------------------------------------------------


def _display(path: PathLike) -> str:
    """The path as given (``str(path)``), with only line breaks escaped to keep one line.

    Backslashes are kept, so Windows paths stay exact and callers can strip ``f"{path}: "``.
    """
    text = os.fsdecode(path)
    return text.replace("\n", "\\n").replace("\r", "\\r")


def _error(path: PathLike, reason: str) -> ImageReadError:
    """An ImageReadError with the one-line message ``"<path>: <reason>"``."""
    reason = " ".join(str(reason).split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return ImageReadError(f"{_display(path)}: {reason}")


def _exc_text(exc: BaseException) -> str:
    """A short one-line description of a library exception."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """A user-facing reason for an OS-level error."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied (cannot read the file)"
    return f"cannot read file: {exc.strerror or _exc_text(exc)}"


def _check_file(path: PathLike) -> None:
    """Raise ImageReadError unless ``path`` is an existing regular file."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        reason = "broken symbolic link" if os.path.islink(path) else "file not found"
        raise _error(path, reason) from exc
    except OSError as exc:
        raise _error(path, _os_reason(exc)) from exc
    except (TypeError, ValueError) as exc:  # e.g. an embedded NUL byte
        raise _error(path, f"invalid path: {_exc_text(exc)}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise _error(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise _error(path, "not a regular file (device, socket or pipe)")


def _read_bytes(path: PathLike) -> bytes:
    """All bytes of ``path`` (opened read-only), or ImageReadError."""
    _check_file(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise _error(path, _os_reason(exc)) from exc
    if not data:
        raise _error(path, "empty file (0 bytes)")
    return data


def _plausible_bare_dicom(head: bytes, size: int) -> bool:
    """Whether ``head`` starts like a DICOM data set without preamble (group 0002 or 0008)."""
    if len(head) < 8:
        return False
    group_le, _ = struct.unpack("<HH", head[:4])
    group_be, _ = struct.unpack(">HH", head[:4])
    explicit = head[4:6] in _DICOM_VRS
    if group_le in (0x0002, 0x0008):
        if explicit:
            return True
        (length,) = struct.unpack("<I", head[4:8])  # implicit VR little endian
        return length <= size - 8
    return group_be in (0x0002, 0x0008) and explicit


def _sniff_bytes(head: bytes, size: int) -> str | None:
    """The format name for the first bytes of a file, or None."""
    if head[128:132] == b"DICM":  # first: a DICOM preamble may itself look like TIFF
        return "DICOM"
    if head.startswith(_PNG_MAGIC):
        return "PNG"
    if head.startswith(_JPEG_MAGIC):
        return "JPEG"
    if head[:4] in _TIFF_MAGICS:
        return "TIFF"
    if _plausible_bare_dicom(head, size):
        return "DICOM"
    return None


def _not_an_image_reason(head: bytes) -> str:
    """Reason text for a file whose magic bytes match no supported format."""
    reason = f"not a PNG/JPEG/TIFF/DICOM image (starts with {head[:16]!r})"
    for magic, what in _OTHER_MAGICS:
        if head.startswith(magic):
            return f"{reason}; it looks like {what}"
    return reason


def _decode(path: PathLike) -> _Decoded:
    """Read and decode ``path``; every failure becomes an ImageReadError."""
    data = _read_bytes(path)
    fmt = _sniff_bytes(data[:_HEAD_BYTES], len(data))
    if fmt is None:
        raise _error(path, _not_an_image_reason(data[:_HEAD_BYTES]))
    if fmt == "DICOM":
        return _decode_dicom(path, data)
    return _decode_pillow(path, data, fmt)


def _library_call(fn: Callable[[], _T], notes: list[str], prefix: str = "") -> _T:
    """Run ``fn`` recording library warnings into ``notes`` instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    for item in caught:
        text = " ".join(str(item.message).split())[:200]
        text = f"{prefix}{text}"
        if text not in notes and len(notes) < _MAX_LIBRARY_WARNINGS:
            notes.append(text)
    return result


# --------------------------------------------------------------------------------------------
# gray conversion helpers (vectorised)
# --------------------------------------------------------------------------------------------


def _unit_from_int(arr: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers of ``bits`` bits -> float32 in [0, 1] (divide by 2**bits - 1)."""
    return arr.astype(np.float32) / np.float32(2**bits - 1)


def _min_max(arr: np.ndarray) -> np.ndarray:
    """Scale finite values to [0, 1] by the image's own min/max (0 for a constant image)."""
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.float32)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def _luma(unit: np.ndarray, notes: list[str], alpha: bool) -> np.ndarray:
    """``(H, W, C)`` in [0, 1] -> ``(H, W)``: BT.601 luma for C >= 3; alpha is dropped.

    C may be 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA); with ``alpha`` the last channel is alpha.
    """
    channels = unit.shape[2]
    colour = channels - 1 if alpha else channels
    if colour >= 3:
        gray = (
            unit[..., 0] * np.float32(_LUMA[0])
            + unit[..., 1] * np.float32(_LUMA[1])
            + unit[..., 2] * np.float32(_LUMA[2])
        )
    else:
        gray = unit[..., 0].astype(np.float32)
    if alpha and bool((unit[..., -1] < 1.0).any()):
        notes.append("alpha channel ignored (some pixels are not fully opaque)")
    return gray


# --------------------------------------------------------------------------------------------
# PNG / JPEG / TIFF (Pillow, OpenCV for 16-bit colour)
# --------------------------------------------------------------------------------------------

_PILLOW_FORMATS = {"PNG": ["PNG"], "JPEG": ["JPEG", "MPO"], "TIFF": ["TIFF"]}
_EIGHT_BIT_MODES = frozenset({"L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"})


def _png_ihdr(data: bytes) -> tuple[int, int] | None:
    """``(bit_depth, colour_type)`` from a PNG's IHDR chunk, or None."""
    if len(data) >= 26 and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _tiff_bits(img: Any) -> tuple[int, int] | None:
    """``(max bits per sample, samples per pixel)`` from TIFF tags, or None."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(258)
    samples = tags.get(277, 1)
    if bits is None:
        return None
    bits_t = bits if isinstance(bits, tuple) else (bits,)
    try:
        return max(int(b) for b in bits_t), int(samples)
    except (TypeError, ValueError):
        return None


def _decode_pillow(path: PathLike, data: bytes, fmt: str) -> _Decoded:
    """Decode PNG/JPEG/TIFF bytes with Pillow (OpenCV for 16-bit colour)."""
    from PIL import Image, UnidentifiedImageError

    notes: list[str] = []
    try:
        img = _library_call(
            lambda: Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[fmt]), notes
        )
    except Image.DecompressionBombError as exc:
        raise _error(path, f"image too large to decode safely: {_exc_text(exc)}") from exc
    except UnidentifiedImageError as exc:
        raise _error(
            path, f"truncated or corrupt image data: Pillow cannot parse the {fmt} header"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise _error(path, f"truncated or corrupt image data: {_exc_text(exc)}") from exc

    with img:
        try:
            frames = int(getattr(img, "n_frames", 1))
            _library_call(img.load, notes)
        except Image.DecompressionBombError as exc:
            raise _error(path, f"image too large to decode safely: {_exc_text(exc)}") from exc
        except MemoryError:
            raise
        except Exception as exc:
            raise _error(path, f"truncated or corrupt image data: {_exc_text(exc)}") from exc
        if frames > 1:
            what = {"TIFF": "multi-page TIFF", "PNG": "animated PNG"}.get(fmt, "multi-image JPEG")
            notes.append(f"{what} ({frames} pages): using the first")
        orientation = _exif_orientation(img)
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {orientation} ignored: pixels used as stored")
        mode = img.mode
        try:
            native, bits, colour_kind, rgb_for_gray = _pillow_arrays(img, data, fmt, notes)
        except ImageReadError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise _error(
                path, f"cannot decode {fmt} pixels (mode {mode}): {_exc_text(exc)}"
            ) from exc

    def to_unit_gray() -> np.ndarray:
        return _pillow_gray(native, bits, colour_kind, rgb_for_gray, notes)

    if colour_kind == "gray" and native.dtype == np.uint16 and native.size and native.max() < 4096:
        notes.append(
            f"16-bit image with maximum {int(native.max())} (< 4096, probably 12-bit data): "
            "it looks dark after dividing by 65535"
        )
    return _Decoded(native, "JPEG" if fmt == "JPEG" else fmt, bits, mode, None, notes, to_unit_gray)


def _exif_orientation(img: Any) -> int | None:
    """EXIF Orientation (tag 274) or None."""
    try:
        value = img.getexif().get(274)
    except Exception:  # a broken EXIF block must not stop reading the pixels
        return None
    return int(value) if isinstance(value, int) else None


def _pillow_arrays(
    img: Any, data: bytes, fmt: str, notes: list[str]
) -> tuple[np.ndarray, int, str, np.ndarray | None]:
    """Native pixels of a loaded Pillow image.

    Returns:
        ``(native, bit_depth, kind, converted)`` where ``kind`` is ``"gray"``, ``"gray_alpha"``,
        ``"rgb"``, ``"rgba"``, ``"int32"``, ``"float"`` or ``"other"``; ``converted`` is an
        8-bit RGB rendering for modes numpy cannot turn into gray directly (CMYK, YCbCr, ...).
    """
    mode = img.mode
    ihdr = _png_ihdr(data) if fmt == "PNG" else None
    tiff = _tiff_bits(img) if fmt == "TIFF" else None
    wide_colour = (ihdr is not None and ihdr[0] == 16 and ihdr[1] in (2, 4, 6)) or (
        tiff is not None and tiff[0] == 16 and tiff[1] > 1
    )
    if wide_colour and mode in _EIGHT_BIT_MODES:
        return _opencv_wide_colour(data)

    if mode == "1":
        return np.asarray(img, dtype=bool), 1, "gray", None
    if mode.startswith("I;16"):
        arr = np.asarray(img)
        if arr.dtype.kind == "i":  # I;16S: signed 16-bit
            return arr.astype(np.int16), 16, "int32", None
        return arr.astype(np.uint16), 16, "gray", None
    if mode == "I":
        arr = np.asarray(img)
        source_bits = ihdr[0] if ihdr else (tiff[0] if tiff else 32)
        if source_bits <= 16 and arr.size and arr.min() >= 0 and arr.max() < 2**16:
            return arr.astype(np.uint16), 16, "gray", None
        return arr.astype(np.int32), 32, "int32", None
    if mode == "F":
        return np.asarray(img, dtype=np.float32), 32, "float", None
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        expanded = img.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(expanded), 8, "rgba" if has_alpha else "rgb", None
    if mode == "L":
        return np.asarray(img), 8, "gray", None
    if mode in ("LA", "La"):
        return np.asarray(img.convert("LA")), 8, "gray_alpha", None
    if mode in ("RGB", "RGBX"):
        return np.asarray(img)[..., :3], 8, "rgb", None
    if mode in ("RGBA", "RGBa"):
        return np.asarray(img.convert("RGBA")), 8, "rgba", None
    # CMYK, YCbCr, LAB, HSV, ...: keep the stored channels, render to RGB for gray.
    return np.asarray(img), 8, "other", np.asarray(img.convert("RGB"))


def _opencv_wide_colour(data: bytes) -> tuple[np.ndarray, int, str, None]:
    """Decode a 16-bit colour PNG/TIFF losslessly with OpenCV (Pillow would reduce to 8 bits)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("OpenCV could not decode the 16-bit colour image")
    if arr.ndim == 2:
        return arr, 16, "gray", None
    channels = arr.shape[2]
    if channels == 2:
        return arr, 16, "gray_alpha", None
    if channels == 3:
        return np.ascontiguousarray(arr[..., ::-1]), 16, "rgb", None
    bgra = arr[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(bgra), 16, "rgba", None


def _pillow_gray(
    native: np.ndarray, bits: int, kind: str, converted: np.ndarray | None, notes: list[str]
) -> np.ndarray:
    """Native Pillow/OpenCV pixels -> float32 ``(H, W)`` in [0, 1]."""
    if kind == "other" and converted is not None:
        return _luma(_unit_from_int(converted, 8), notes, alpha=False)
    if kind == "float":
        finite = native[np.isfinite(native)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            notes.append("float image outside [0, 1]: scaled by its min/max")
            return _min_max(native)
        return native.astype(np.float32)
    if kind == "int32":
        notes.append(f"{native.dtype.name} image: scaled by its min/max")
        return _min_max(native)
    if native.dtype == bool:
        return native.astype(np.float32)
    unit = _unit_from_int(native, bits)
    if kind == "gray":
        return unit
    return _luma(unit, notes, alpha=kind in ("gray_alpha", "rgba"))


# --------------------------------------------------------------------------------------------
# DICOM (pydicom)
# --------------------------------------------------------------------------------------------

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _decoder_hint(uid: Any) -> str:
    """Which packages decode a compressed transfer syntax."""
    from pydicom import uid as uids

    if uid in uids.JPEG2000TransferSyntaxes or str(uid).startswith("1.2.840.10008.1.2.4.20"):
        return "pip install pylibjpeg pylibjpeg-openjpeg"
    if uid in uids.JPEGLSTransferSyntaxes:
        return "pip install pyjpegls (or python-gdcm, or pylibjpeg pylibjpeg-libjpeg)"
    if uid in uids.JPEGTransferSyntaxes:
        return "pip install python-gdcm (or pylibjpeg pylibjpeg-libjpeg)"
    if uid in uids.RLETransferSyntaxes:
        return "pip install pylibjpeg pylibjpeg-rle"
    return "pip install python-gdcm"


def _ensure_transfer_syntax(ds: Any) -> Any:
    """The data set's Transfer Syntax UID, inferred from its encoding when the meta lacks it."""
    from pydicom import uid as uids
    from pydicom.dataset import FileMetaDataset

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    tsyntax = meta.get("TransferSyntaxUID")
    if tsyntax is None:
        implicit, little = ds.original_encoding
        if implicit:
            tsyntax = uids.ImplicitVRLittleEndian
        elif little is False:
            tsyntax = uids.ExplicitVRBigEndian
        else:
            tsyntax = uids.ExplicitVRLittleEndian
        meta.TransferSyntaxUID = tsyntax  # in memory only; the file is never written
    return tsyntax


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """``(row, col)`` mm from Pixel Spacing, else Imager Pixel Spacing; None if unusable."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0:
            return row, col
    return None


def _decode_dicom(path: PathLike, data: bytes) -> _Decoded:
    """Decode a DICOM file's first frame with pydicom."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import get_decoder, pixel_array

    notes: list[str] = []
    try:
        stream = io.BytesIO(data)
        stream.name = os.path.basename(os.fsdecode(path))  # pydicom names it in warnings
        ds = _library_call(lambda: pydicom.dcmread(stream, force=True), notes)
    except MemoryError:
        raise
    except InvalidDicomError as exc:
        raise _error(path, f"not a valid DICOM file: {_exc_text(exc)}") from exc
    except Exception as exc:
        raise _error(path, f"truncated or corrupt DICOM file: {_exc_text(exc)}") from exc

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        hint = f" ({notes[0]})" if notes else ""  # e.g. pydicom: end of file reached
        raise _error(path, f"DICOM file has no pixel data{hint}")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if ds.get(k) in (None, "")]
    if missing:
        raise _error(path, f"DICOM image is missing required attributes: {', '.join(missing)}")
    try:
        tsyntax = _ensure_transfer_syntax(ds)
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_stored = int(ds.get("BitsStored") or ds.BitsAllocated)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _error(path, f"DICOM image attributes missing or invalid: {_exc_text(exc)}") from exc

    if "PixelData" in ds and tsyntax.is_compressed:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError as exc:
            raise _error(
                path, f"unsupported DICOM transfer syntax {tsyntax.name} ({tsyntax})"
            ) from exc
        if not decoder.is_available:
            raise _error(
                path,
                f"DICOM pixel data is compressed with {tsyntax.name} ({tsyntax}) and no decoder "
                f"for it is installed: {_decoder_hint(tsyntax)}",
            )

    try:
        native = _library_call(lambda: pixel_array(ds, index=0), notes, prefix="pydicom: ")
    except MemoryError:
        raise
    except Exception as exc:
        raise _error(
            path, f"truncated or corrupt DICOM pixel data ({tsyntax.name}): {_exc_text(exc)}"
        ) from exc
    if frames > 1:
        notes.append(f"multi-frame DICOM ({frames} frames): using the first frame")
    if native.ndim == 3 and native.shape[-1] == 1:
        native = native[..., 0]
    if native.shape[:2] != (rows, cols):
        raise _error(
            path, f"DICOM pixel data has shape {native.shape}, expected ({rows}, {cols}, ...)"
        )

    def to_unit_gray() -> np.ndarray:
        return _dicom_gray(ds, native, photometric, bits_stored, notes)

    return _Decoded(
        native, "DICOM", bits_stored, photometric, _dicom_spacing(ds), notes, to_unit_gray
    )


def _dicom_gray(
    ds: Any, native: np.ndarray, photometric: str, bits_stored: int, notes: list[str]
) -> np.ndarray:
    """Stored DICOM pixels -> float32 ``(H, W)`` in [0, 1] with white = 1."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR" and native.ndim == 2:
        rgb = apply_color_lut(native, ds)
        return _luma(_unit_from_int(rgb, rgb.dtype.itemsize * 8), notes, alpha=False)
    if native.ndim == 3:  # RGB (YBR already converted to RGB by pydicom)
        if native.dtype.kind == "f":
            return _luma(_min_max(native), notes, alpha=False)
        unit = _unit_from_int(native.astype(np.int64).clip(0, None), bits_stored)
        return _luma(unit, notes, alpha=False)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        notes.append(f"unexpected Photometric Interpretation {photometric!r}: read as MONOCHROME2")
        photometric = "MONOCHROME2"

    values = _apply_modality(native, ds)
    unit = _apply_voi(values, ds, notes)
    if unit is None:  # no usable VOI: min-max over the image; a constant image gives 0.0
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size == 0 or float(finite.min()) == float(finite.max()):
            return np.zeros(native.shape, np.float32)
        unit = _min_max(values)
    elif unit.size and float(unit.min()) == float(unit.max()) and native.min() != native.max():
        shown = 1.0 - float(unit.min()) if photometric == "MONOCHROME1" else float(unit.min())
        notes.append(f"constant image after VOI/window (all pixels {shown:.3f})")
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def _apply_modality(native: np.ndarray, ds: Any) -> np.ndarray:
    """Modality LUT or Rescale Slope/Intercept (pydicom); integers stay integers."""
    from pydicom.pixels import apply_modality_lut

    if native.dtype.kind == "f":
        return native.astype(np.float64)
    if "ModalityLUTSequence" not in ds and not ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return native
    return apply_modality_lut(native, ds)


def _apply_voi(values: np.ndarray, ds: Any, notes: list[str]) -> np.ndarray | None:
    """First VOI LUT or window -> float32 in [0, 1] scaled by the LUT's output range.

    Returns None when the data set has no usable VOI LUT or window (caller uses min-max).
    """
    from pydicom.pixels import apply_voi, apply_windowing

    lut = _first_voi_lut(ds)
    if lut is not None:
        encoded_first, first_map, entries = lut
        # pydicom decodes the LUT data (US/OW, byte order): probe it with every input value.
        probe = np.arange(encoded_first, encoded_first + entries, dtype=np.int64)
        table = apply_voi(probe, ds, 0).astype(np.float64)
        lo, hi = float(table.min()), float(table.max())
        if hi <= lo:
            notes.append("VOI LUT is constant: scaled by image min/max instead")
            return None
        # Values below the first mapped value take the first entry, above the range the last.
        ints = np.rint(np.nan_to_num(values.astype(np.float64, copy=False)))
        index = np.clip(ints - first_map, 0, entries - 1).astype(np.intp)
        return ((table[index] - lo) / (hi - lo)).astype(np.float32)

    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return None
    try:
        # The window's output range: -inf/+inf map to pydicom's y_min/y_max (any VOI function).
        with np.errstate(over="ignore", invalid="ignore"):
            y_lo, y_hi = apply_windowing(np.array([-np.inf, np.inf]), ds, 0)
        windowed = apply_windowing(values.astype(np.float64), ds, 0)
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
        notes.append(f"invalid window ({_exc_text(exc)}): scaled by image min/max instead")
        return None
    if not (math.isfinite(y_lo) and math.isfinite(y_hi)) or y_lo == y_hi:
        notes.append("window has an empty output range: scaled by image min/max instead")
        return None
    return ((windowed - y_lo) / (y_hi - y_lo)).astype(np.float32)


def _first_voi_lut(ds: Any) -> tuple[int, int, int] | None:
    """``(encoded first value, first mapped value, entries)`` of the first VOI LUT, or None.

    The first mapped value of a signed image may be stored as US; it is then reinterpreted as
    signed (the encoded value is kept to probe pydicom's LUT decoding).
    """
    seq = ds.get("VOILUTSequence")
    if not seq:
        return None
    item = seq[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or item.get("LUTData") is None:
        return None
    entries = int(descriptor[0]) or 2**16
    encoded_first = first_map = int(descriptor[1])
    if first_map >= 2**15 and "PixelRepresentation" in ds and int(ds.PixelRepresentation) == 1:
        first_map -= 2**16  # US-encoded descriptor of a signed image
    return encoded_first, first_map, entries


def _meta(decoded: _Decoded, shape: tuple[int, ...], notes: list[str]) -> ImageMeta:
    """Build the public ImageMeta."""
    return ImageMeta(
        format=decoded.format,
        height=int(shape[0]),
        width=int(shape[1]),
        bit_depth=int(decoded.bit_depth),
        dtype=decoded.native.dtype.name,
        photometric=decoded.photometric,
        pixel_spacing=decoded.pixel_spacing,
        warnings=tuple(notes),
    )
