"""What every text detector is: a config, a compute place, ``load()`` and ``detect(images)``.

A detector subclasses :class:`TextDetector`, names its frozen config class (a subclass of
:class:`DetectorConfig`) and implements :meth:`TextDetector._detect`; ``load()`` is overridden
by detectors that hold networks. :func:`xraydebug.text.register_detector` makes it available by
name. Box convention everywhere: ``[x0, y0, x1, y1]`` integers, ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import cv2
import numpy as np

__all__ = ["PRECISIONS", "Box", "DetectorConfig", "TextDetector", "merge_boxes"]

Box = list[int]
PRECISIONS = ("fp32", "bf16", "auto")
# windows thinner than this (in film pixels) hold no legible glyph: skipped by detect_in_windows
_MIN_WINDOW_PX = 4


@dataclass(frozen=True)
class DetectorConfig:
    """Base of every detector's settings (a frozen dataclass; subclasses add the fields)."""


def merge_boxes(boxes: Sequence[Sequence[int]]) -> list[Box]:
    """Union of boxes: overlapping or touching ``[x0, y0, x1, y1]`` boxes become one."""
    merged = [list(map(int, b)) for b in boxes]
    changed = True
    while changed and len(merged) > 1:
        changed = False
        out: list[Box] = []
        for box in merged:
            for other in out:
                if (
                    box[0] <= other[2]
                    and other[0] <= box[2]
                    and box[1] <= other[3]
                    and other[1] <= box[3]
                ):
                    other[:] = [
                        min(box[0], other[0]),
                        min(box[1], other[1]),
                        max(box[2], other[2]),
                        max(box[3], other[3]),
                    ]
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return sorted(merged, key=lambda b: (b[1], b[0]))


def as_unit_gray(image: np.ndarray, index: int) -> np.ndarray:
    """Validate one image and return it as float32 ``(H, W)`` in [0, 1]; ``index`` (its place
    in the batch) is named in error messages."""
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(
            f"image {index}: expected a non-empty gray (H, W) array; got shape {image.shape}"
        )
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if np.issubdtype(image.dtype, np.floating):
        gray = image.astype(np.float32, copy=False)
        lo, hi = float(np.min(gray)), float(np.max(gray))
        # 1e-3: float round-off of a [0, 1] image through a resize or a colour conversion
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(
                f"image {index}: float images must be in [0, 1] (as read_image returns); "
                f"got values in [{lo:.4g}, {hi:.4g}]"
            )
        return np.clip(gray, 0.0, 1.0)
    raise TypeError(
        f"image {index}: expected float in [0, 1], uint8 or uint16 pixels; got dtype {image.dtype}"
    )


def as_image_list(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """``(H, W)``, ``(N, H, W)`` or a list of ``(H, W)`` arrays -> a list of ``(H, W)`` arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return list(images)
        raise ValueError(
            f"expected (H, W), (N, H, W) or a list of (H, W) images; got shape {images.shape}"
        )
    images = list(images)
    for i, image in enumerate(images):
        if np.ndim(image) != 2:
            raise ValueError(f"image {i}: expected a gray (H, W) array; got {np.shape(image)}")
    return images


def _zoomed_windows(
    gray: np.ndarray, windows: Sequence[Sequence[int]], min_side: int, max_zoom: float
) -> dict[int, list[tuple[np.ndarray, tuple[int, int, float]]]]:
    """Windows cut from ``gray`` and enlarged, grouped by the film scale their glyphs have
    (the film's long side times the zoom): ``{film_px: [(crop, (x0, y0, zoom)), ...]}``."""
    groups: dict[int, list[tuple[np.ndarray, tuple[int, int, float]]]] = defaultdict(list)
    for x0, y0, x1, y1 in windows:
        crop = np.ascontiguousarray(gray[y0:y1, x0:x1], dtype=np.float32)
        if min(crop.shape) < _MIN_WINDOW_PX:
            continue
        zoom = float(np.clip(min_side / max(crop.shape), 1.0, max(max_zoom, 1.0)))
        if zoom > 1.0:
            size = (round(crop.shape[1] * zoom), round(crop.shape[0] * zoom))
            crop = np.clip(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        film_px = round(max(gray.shape) * zoom)  # the glyphs' scale: the film's, enlarged
        groups[film_px].append((crop, (x0, y0, zoom)))
    return groups


def _to_film(found: Sequence[Sequence[int]], x0: int, y0: int, zoom: float) -> list[Box]:
    """Boxes found in a window enlarged ``zoom`` times, in the film's pixels (rounded out)."""
    return [
        [
            x0 + int(np.floor(bx0 / zoom)),
            y0 + int(np.floor(by0 / zoom)),
            x0 + int(np.ceil(bx1 / zoom)),
            y0 + int(np.ceil(by1 / zoom)),
        ]
        for bx0, by0, bx1, by1 in found
    ]


class TextDetector:
    """A text detector: its settings (``config``), where it computes, and its networks.

    Subclasses set the class attributes and implement :meth:`_detect`; those with networks
    override :meth:`load` (idempotent, networks kept on the object) and, when their model may be
    missing, :meth:`available`.

    Attributes:
        name: the registry name (``--detector``).
        description: one line for the CLI's help.
        config_class: the frozen :class:`DetectorConfig` subclass holding its settings.
        verifies: whether it can verify zoomed windows for the saliency-guided second look
            (it then takes ``verify_threshold``, ``side_letter_threshold`` and
            ``proposals.min_contrast`` settings).
        fixed_device: the device it computes on whatever is asked (None: the one asked), so
            an executor gives GPUs only to steps that use them.
        config: this detector's settings.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type[DetectorConfig]]
    verifies: ClassVar[bool] = False
    fixed_device: ClassVar[str | None] = None  # computes there whatever is asked (ppocr: cpu)

    def __init__(
        self, config: DetectorConfig | None = None, *, device: str = "auto", precision: str = "fp32"
    ) -> None:
        if config is None:
            config = self.config_class()
        if type(config) is not self.config_class:
            raise TypeError(
                f"detector {self.name!r} takes a {self.config_class.__name__}; "
                f"got {type(config).__name__}"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.config = config
        self._device = device
        self._precision = precision

    @property
    def device(self) -> str:
        """Where it computes (``cpu``, ``cuda:0``, ...); the requested device by default."""
        return self._device

    @property
    def precision(self) -> str:
        """The precision it computes in; the requested one by default."""
        return self._precision

    @classmethod
    def available(cls) -> bool:
        """Whether its model is installed (``True`` for detectors without one)."""
        return True

    def load(self) -> Self:
        """Load the networks onto the object (idempotent); returns ``self``."""
        return self

    def _detect(self, images: list[np.ndarray], *, film_px: int = 0) -> list[list[Box]]:
        """Boxes per image of a non-empty list of gray ``(H, W)`` arrays (float in [0, 1],
        uint8 or uint16; not yet converted). ``film_px``: the images are windows of a film
        enlarged to this long side (their glyphs have that film's scale; 0: whole films);
        detectors that do not look at glyph scale ignore it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _detect")

    def detect(self, images: Sequence[np.ndarray] | np.ndarray) -> list[list[Box]]:
        """Find burned-in text (markers, words, dates, stamps) in gray radiographs.

        Args:
            images: a list of gray ``(H, W)`` arrays (float in [0, 1] as
                :func:`xraydebug.data.imageio.read_image` returns, or uint8/uint16; sizes may
                differ), a stacked ``(N, H, W)`` array, or one ``(H, W)`` array.

        Returns:
            One list per image, in input order, of ``[x0, y0, x1, y1]`` boxes in that image's
            original pixel coordinates (``x1``/``y1`` exclusive, clipped to the image).
        """
        images = as_image_list(images)
        if not images:
            return []
        return self.load()._detect(images)

    def detect_in_windows(
        self,
        gray: np.ndarray,
        windows: Sequence[Sequence[int]],
        *,
        min_side: int = 0,
        max_zoom: float = 1.0,
    ) -> list[Box]:
        """Text boxes found inside ``windows`` (``[x0, y0, x1, y1]``) of ``gray`` (float
        ``(H, W)`` in [0, 1]), in the film's pixel coordinates, merged.

        Each window is enlarged (bicubic, at most ``max_zoom`` times) until its longer side
        reaches ``min_side``; windows thinner than 4 px are skipped. Windows of one zoom are
        detected in one call, at the glyph scale of the film they were cut from.
        """
        self.load()
        boxes: list[Box] = []
        for film_px, group in _zoomed_windows(gray, windows, min_side, max_zoom).items():
            found = self._detect([crop for crop, _ in group], film_px=film_px)
            for (_, (x0, y0, zoom)), film_boxes in zip(group, found, strict=True):
                boxes += _to_film(film_boxes, x0, y0, zoom)
        return merge_boxes(boxes)

    def describe(self) -> dict[str, Any]:
        """``{"name", "device", "precision", "config"}``, JSON-able (for ``run.json`` and a
        stage's resume check)."""
        return {
            "name": self.name,
            "device": self.device,
            "precision": self.precision,
            "config": dataclasses.asdict(self.config),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, device={self.device!r})"
