"""The built-in text detectors, and :func:`detect_text` for notebooks and tests.

* ``ppocr`` -- text proposals at the film's own resolution, each verified on a zoomed, deskewed
  crop by PP-OCRv4's DBNet on ONNX Runtime (:mod:`xraydebug.text.verified`).
* ``craft`` -- the same proposals verified by CRAFT (Baek et al., CVPR 2019; official weights
  craft_mlt_25k.pth (c) NAVER Corp., MIT licence) on the same zoomed crops.
* ``craft-global`` -- the paper's pipeline: the whole film resized so its long side is
  ``long_side``, CRAFT, then region/affinity maps thresholded into word boxes
  (:func:`~xraydebug.text.postprocess.boxes_from_scores`). Recall hangs on the one resize.

``auto`` (:func:`~xraydebug.text.registry.resolve_detector`) is ``ppocr`` when its model is
installed, else ``craft``. Stages build a detector once (:func:`build_detector`), ``load()`` it
and call ``detect``; :func:`detect_text` does the same in one call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Self

import cv2
import numpy as np
import torch

from xraydebug.device import cpu_has_native_bf16, resolve_device
from xraydebug.text.base import Box, DetectorConfig, TextDetector, as_image_list, as_unit_gray
from xraydebug.text.craft import CRAFT, craft_available, load_craft
from xraydebug.text.postprocess import boxes_from_scores, scale_boxes
from xraydebug.text.ppocr import DBNetDetector, load_dbnet, ppocr_available
from xraydebug.text.proposals import ProposalConfig
from xraydebug.text.registry import build_detector, detector_config, register_detector
from xraydebug.text.verified import VerifiedConfig, VerifiedDetector

__all__ = [
    "CraftConfig",
    "CraftDetector",
    "CraftGlobalConfig",
    "CraftGlobalDetector",
    "PPOCRConfig",
    "PPOCRDetector",
    "detect_text",
    "prepare_image",
]

# CRAFT's training normalisation (ImageNet statistics); the gray channel is replicated
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CRAFT downsamples 16x and its decoder needs even sizes at every level: inputs are padded to this
_STRIDE = 32
# CRAFT verifies some faint lung texture as text (one 24x17 px box on the tests' 512 px film)
# when proposals go down to 3x the noise, and anatomy on 3 of 20 text-free benchmark films when
# crops are contrast-stretched; DBNet verified none. CRAFT's defaults keep the stricter floor,
# unstretched.
CRAFT_NOISE_FACTOR = 4.0
CRAFT_CROP_GAIN = 1.0


def _concrete(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:0``, so that the device names one chip (without initialising CUDA,
    which would make a process that forks workers afterwards unusable for them)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", 0)
    return device


def _use_bf16(device: torch.device, precision: str) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def _normalise(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, h, w) gray in [0, 1] -> (B, 3, h, w) ImageNet-normalised float32 on ``device``."""
    x = torch.from_numpy(batch).to(device, non_blocking=True).unsqueeze(1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std  # broadcasting replicates the gray channel
    return x.contiguous(memory_format=torch.channels_last)


class _CraftOnDevice:
    """The CRAFT network of one detector: its device, precision and (once loaded) weights."""

    def __init__(self, device: str, precision: str) -> None:
        self.device = _concrete(resolve_device(device))
        self.precision = precision
        self.model: CRAFT | None = None

    @cached_property
    def bf16(self) -> bool:
        """Whether it computes under bf16 autocast (``auto``: where the device has it)."""
        return _use_bf16(self.device, self.precision)

    def load(self) -> CRAFT:
        if self.model is None:
            self.model = load_craft(device=self.device)
        return self.model

    def context(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


class _CraftDetectorMixin:
    """Device, precision, availability and loading of the CRAFT-based detectors."""

    _craft: _CraftOnDevice

    def _init_craft(self, device: str, precision: str) -> None:
        self._craft = _CraftOnDevice(device, precision)

    @property
    def device(self) -> str:
        return str(self._craft.device)

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``: what ``auto`` chose for this device."""
        return "bf16" if self._craft.bf16 else "fp32"

    @classmethod
    def available(cls) -> bool:
        return craft_available()

    def load(self) -> Self:
        """Read and verify the CRAFT weights onto the device (once); returns ``self``."""
        self._craft.load()
        return self


# ---------------------------------------------------------------------------------------------
# Proposals verified at zoom
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOCRConfig(VerifiedConfig):
    """Settings of ``ppocr`` (:class:`~xraydebug.text.verified.VerifiedConfig`)."""


def _craft_proposals() -> ProposalConfig:
    return ProposalConfig(noise_factor=CRAFT_NOISE_FACTOR)


@dataclass(frozen=True)
class CraftConfig(VerifiedConfig):
    """Settings of ``craft`` (:class:`~xraydebug.text.verified.VerifiedConfig`); its defaults
    differ from ``ppocr``'s in ``crop_gain`` (1: no stretch) and ``proposals.noise_factor``
    (4), see :data:`CRAFT_NOISE_FACTOR`."""

    crop_gain: float = CRAFT_CROP_GAIN
    proposals: ProposalConfig = field(default_factory=_craft_proposals)


@register_detector
class PPOCRDetector(VerifiedDetector):
    """Proposals verified by PP-OCRv4's DBNet (ONNX Runtime on the CPU, float32)."""

    name = "ppocr"
    description = "native-resolution proposals verified by PP-OCRv4 DBNet on zoomed crops"
    config_class = PPOCRConfig
    fixed_device = "cpu"  # ONNX Runtime's CPU provider
    config: PPOCRConfig

    def __init__(
        self, config: PPOCRConfig | None = None, *, device: str = "auto", precision: str = "fp32"
    ) -> None:
        super().__init__(config, device=device, precision=precision)
        self._dbnet: DBNetDetector | None = None

    @property
    def device(self) -> str:
        return self.fixed_device

    @property
    def precision(self) -> str:
        return "fp32"

    @classmethod
    def available(cls) -> bool:
        return ppocr_available()

    def _network(self) -> DBNetDetector:
        """The ONNX session, opened once with torch's thread count, so that a worker given n
        threads uses n (ONNX Runtime's default would take every core of the node)."""
        if self._dbnet is None:
            self._dbnet = load_dbnet(threads=torch.get_num_threads())
        return self._dbnet

    def load(self) -> Self:
        """Check the model file and open its ONNX session (once); returns ``self``."""
        self._network()
        return self

    def _score_maps(self, batch: np.ndarray) -> np.ndarray:
        return self._network().probability(batch)


@register_detector
class CraftDetector(_CraftDetectorMixin, VerifiedDetector):
    """Proposals verified by CRAFT's region score."""

    name = "craft"
    description = "native-resolution proposals verified by CRAFT on zoomed crops"
    config_class = CraftConfig
    config: CraftConfig

    def __init__(
        self, config: CraftConfig | None = None, *, device: str = "auto", precision: str = "fp32"
    ) -> None:
        super().__init__(config, device=device, precision=precision)
        self._init_craft(device, precision)

    def _score_maps(self, batch: np.ndarray) -> np.ndarray:
        """CRAFT as a crop scorer: (B, h, w) gray -> region score (B, h/2, w/2)."""
        model, device = self._craft.load(), self._craft.device
        with torch.inference_mode(), self._craft.context():
            out = model(_normalise(np.ascontiguousarray(batch, np.float32), device))
        return out.scores[..., 0].float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# CRAFT on the whole film (the paper's pipeline)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CraftGlobalConfig(DetectorConfig):
    """Settings of ``craft-global``.

    Attributes:
        long_side: the image is resized (up or down, aspect kept) so its longer side has this
            many pixels before CRAFT sees it; cost grows with its square. It decides which small
            text is found, because CRAFT responds to characters by their size *at its input*.
            Words and letters with some structure ("R", "A", dates) fire from ~12-23 px glyph
            height, but a lone sans-serif "L" (the classic side marker) looks like an edge to
            the network: its peak region score measured 0.01 at 23 px, 0.13 at 29 px, 0.54 at
            38 px and 0.73 at 47 px of network-input height (threshold 0.7). So a ~20 px "L" on
            a 512 px film is missed at long_side 640 (~25 px, peak 0.11) and 960 (peak 0.65) and
            found at 1280 (~48 px, peak 0.80); on a 1024 px film the same 20 px "L" is still
            missed at 1280 (peak 0.04) and even 2048 (0.60). Rule of thumb: a lone letter needs
            a height of at least ~3.5 % of the film's long side at 1280.
        text_threshold: minimum peak region score of a word (0.7 as in the paper).
        link_threshold: affinity score that links neighbouring characters into one word (0.4,
            the official release's default).
        low_text: region score that counts as "inside a character"; lower gives larger boxes
            (0.4, the official release's default).
        batch_size: images of the same padded size run through the network together (4: what
            benchmarks/craft_bench.py compared with 1).
    """

    long_side: int = 1280
    text_threshold: float = 0.7
    link_threshold: float = 0.4
    low_text: float = 0.4
    batch_size: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.long_side, int) or self.long_side < _STRIDE:
            raise ValueError(f"long_side must be an int >= {_STRIDE}; got {self.long_side!r}")
        for name in ("text_threshold", "link_threshold", "low_text"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {self.batch_size!r}")


def _resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _padded(size: int) -> int:
    return -(-size // _STRIDE) * _STRIDE


def prepare_image(
    image: np.ndarray, long_side: int, *, index: int = 0
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize one gray image for CRAFT.

    Args:
        image: gray float ``(H, W)`` in [0, 1], or uint8/uint16.
        long_side: target length of the longer side.
        index: position of the image in its batch, named in error messages.

    Returns:
        ``(padded, ratio, shape)``: ``padded`` float32 ``(h32, w32)`` in [0, 1] with the
        resized image top-left and black padding; ``ratio`` ``(rx, ry)`` original pixels per
        score-map pixel; ``shape`` the original ``(H, W)``.
    """
    gray = as_unit_gray(image, index)
    height, width = gray.shape
    new_h, new_w = _resized_size(height, width, long_side)
    shrink = new_h * new_w < height * width
    resized = cv2.resize(
        gray, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    padded = np.zeros((_padded(new_h), _padded(new_w)), np.float32)
    padded[:new_h, :new_w] = resized
    ratio = (2.0 * width / new_w, 2.0 * height / new_h)
    return padded, ratio, (height, width)


def _batches(
    shapes: Sequence[tuple[int, int]], long_side: int, batch_size: int
) -> Iterator[list[int]]:
    """Indices of images grouped by padded network-input size, ``batch_size`` at a time."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (height, width) in enumerate(shapes):
        new_h, new_w = _resized_size(height, width, long_side)
        groups[(_padded(new_h), _padded(new_w))].append(i)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            yield members[start : start + batch_size]


@register_detector
class CraftGlobalDetector(_CraftDetectorMixin, TextDetector):
    """The paper's pipeline: one resize per film, CRAFT, score maps -> word boxes."""

    name = "craft-global"
    description = "CRAFT on the whole film at one resize (long_side), as in the paper"
    config_class = CraftGlobalConfig
    config: CraftGlobalConfig

    def __init__(
        self,
        config: CraftGlobalConfig | None = None,
        *,
        device: str = "auto",
        precision: str = "fp32",
    ) -> None:
        super().__init__(config, device=device, precision=precision)
        self._init_craft(device, precision)

    def _word_boxes(self, scores: np.ndarray, ratio: tuple[float, float], shape) -> list[Box]:
        """One image's score maps ``(h, w, 2)`` -> word boxes in its original pixels."""
        config = self.config
        map_boxes = boxes_from_scores(
            scores[:, :, 0],
            scores[:, :, 1],
            text_threshold=config.text_threshold,
            link_threshold=config.link_threshold,
            low_text=config.low_text,
        )
        return scale_boxes(map_boxes, ratio, image_shape=shape)

    def _detect(self, images: list[np.ndarray], *, film_px: int = 0) -> list[list[Box]]:
        """``film_px`` is ignored: the one resize decides the glyphs' scale."""
        model, device = self._craft.load(), self._craft.device
        long_side, batch_size = self.config.long_side, self.config.batch_size
        results: list[list[Box]] = [[] for _ in images]
        shapes = [tuple(np.shape(image)) for image in images]
        with torch.inference_mode(), self._craft.context():
            for members in _batches(shapes, long_side, batch_size):
                prepared = [prepare_image(images[i], long_side, index=i) for i in members]
                batch = np.stack([p[0] for p in prepared])
                scores = model(_normalise(batch, device)).scores.float().cpu().numpy()
                for j, i in enumerate(members):
                    _, ratio, shape = prepared[j]
                    results[i] = self._word_boxes(scores[j], ratio, shape)
        return results


# ---------------------------------------------------------------------------------------------
# One-call convenience
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _loaded(config: DetectorConfig, device: str, precision: str) -> TextDetector:
    return build_detector(config, device=device, precision=precision).load()


def detect_text(
    images: Sequence[np.ndarray] | np.ndarray,
    config: DetectorConfig | str = "auto",
    *,
    device: str = "auto",
    precision: str = "fp32",
) -> list[list[Box]]:
    """Find burned-in text in gray radiographs with one call (notebooks, tests).

    Builds and loads the detector for ``config`` (a detector name or config, see
    :func:`~xraydebug.text.registry.detector_config`) and runs
    :meth:`~xraydebug.text.base.TextDetector.detect`; loaded detectors are kept for the next
    call with the same ``(config, device, precision)`` (the last 8). Stages hold their own
    detector instead (:func:`~xraydebug.text.registry.build_detector`).

    Returns:
        One list per image of ``[x0, y0, x1, y1]`` boxes (see ``TextDetector.detect``).
    """
    if isinstance(config, str):
        config = detector_config(config)
    images = as_image_list(images)
    if not images:
        return []
    try:
        hash(config)
    except TypeError:  # a config with unhashable settings (a list): built for this call only
        return build_detector(config, device=device, precision=precision).detect(images)
    return _loaded(config, device, precision).detect(images)
