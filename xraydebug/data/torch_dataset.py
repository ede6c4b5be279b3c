"""PyTorch access to dataset records: decoded-image cache and a ``Dataset`` over it.

Images are decoded once (in threads), cropped and resized to the model's geometry and kept as
one ``(N, 1, S, S)`` float16 tensor in [0, 1]; augmentation and normalisation then run on whole
batches (on the GPU when training there). ``XrayDataset`` wraps the same records for users who
prefer a ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from xraydebug.data.imageio import read_image
from xraydebug.data.records import ImageRecord
from xraydebug.errors import ImageReadError


def load_resized(path: Path, size: int, crop_top: float = 0.0) -> np.ndarray:
    """Read ``path`` as gray, drop the top ``crop_top`` of rows, resize to ``(size, size)``.

    Returns float32 (size, size) in [0, 1]. Area interpolation when shrinking (anti-aliased).
    """
    return resize_gray(read_image(path)[0], size, crop_top)


def resize_gray(image: np.ndarray, size: int, crop_top: float = 0.0) -> np.ndarray:
    """Gray (H, W) in [0, 1] -> top ``crop_top`` rows dropped -> float32 (size, size)."""
    if crop_top > 0:
        image = image[round(crop_top * image.shape[0]) :]
    interp = cv2.INTER_AREA if image.shape[0] > size or image.shape[1] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp).astype(np.float32)


def record_targets(records: Sequence[ImageRecord], classes: Sequence[str]) -> torch.Tensor:
    """Training targets of ``records``: class indices (N,) int64 for one-label records, or the
    findings (N, C) float32 (1 present, 0 absent, NaN unknown) of multi-label ones."""
    if records and records[0].findings is not None:
        return torch.tensor([r.findings for r in records], dtype=torch.float32)
    return torch.tensor([list(classes).index(r.label) for r in records], dtype=torch.long)


@dataclass
class ImageCache:
    """Decoded images ``images`` (N, 1, S, S) float16 in [0, 1] for ``records`` in order, and
    their ``labels`` (:func:`record_targets`).

    ``failed`` lists (record, message) for images that could not be read; they are left out of
    ``records`` / ``images`` so indices line up. With ``keep_originals`` the full-resolution gray
    images (H, W) float32 in [0, 1] are kept in ``originals`` too (for stages that work at the
    original resolution, e.g. text detection), so nothing is decoded twice.
    """

    records: list[ImageRecord]
    images: torch.Tensor
    labels: torch.Tensor
    failed: list[tuple[ImageRecord, str]]
    originals: list[np.ndarray] | None = None

    @classmethod
    def build(
        cls,
        root: Path,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        size: int,
        crop_top: float = 0.0,
        workers: int = 4,
        progress: Callable[[int, int], None] | None = None,
        keep_originals: bool = False,
    ) -> ImageCache:
        def load(rec: ImageRecord) -> tuple[np.ndarray, np.ndarray | None] | str:
            try:
                image, _ = read_image(root / rec.path)
            except ImageReadError as exc:
                return str(exc)
            return resize_gray(image, size, crop_top), image if keep_originals else None

        kept, arrays, failed, originals = [], [], [], []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = zip(records, pool.map(load, records), strict=True)
            for done, (rec, out) in enumerate(results, 1):
                if isinstance(out, str):
                    failed.append((rec, out))
                else:
                    kept.append(rec)
                    arrays.append(out[0])
                    originals.append(out[1])
                if progress:
                    progress(done, len(records))
        images = (
            torch.from_numpy(np.stack(arrays)[:, None]).to(torch.float16)
            if arrays
            else torch.zeros(0, 1, size, size, dtype=torch.float16)
        )
        labels = record_targets(kept, classes)
        return cls(kept, images, labels, failed, originals if keep_originals else None)

    def __len__(self) -> int:
        return len(self.records)


class XrayDataset(Dataset):
    """Map-style dataset: ``(gray (1, S, S) float32 in [0, 1], label index)`` per record.

    Reads lazily from disk (no cache); use :class:`ImageCache` for training-speed access.
    Unreadable images raise :class:`ImageReadError` naming the file.
    """

    def __init__(
        self,
        root: Path | str,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        size: int,
        crop_top: float = 0.0,
    ) -> None:
        self.root = Path(root)
        self.records = list(records)
        self.classes = list(classes)
        self.size = size
        self.crop_top = crop_top

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rec = self.records[index]
        gray = load_resized(self.root / rec.path, self.size, self.crop_top)
        return torch.from_numpy(gray)[None], self.classes.index(rec.label)


def iter_caches(
    root: Path,
    records: Sequence[ImageRecord],
    classes: Sequence[str],
    size: int,
    crop_top: float = 0.0,
    chunk: int = 256,
):
    """Yield :class:`ImageCache` chunks of ``records`` so memory stays bounded by ``chunk``."""
    for start in range(0, len(records), chunk):
        yield ImageCache.build(root, records[start : start + chunk], classes, size, crop_top)
