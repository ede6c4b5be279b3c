"""Burned-in text detection on radiographs: a registry of detectors behind one function.

Detectors (``TextDetectConfig.detector``; :data:`DETECTORS` lists them):

* ``ppocr`` -- text proposals at the film's own resolution (:mod:`xraydebug.text.proposals`),
  each verified on a zoomed, deskewed crop by PP-OCRv4's DBNet (ONNX Runtime). Recall does not
  depend on the film's size: a 12 px letter on a 2,048 px film reaches the network as large as
  a 40 px one.
* ``craft`` -- the same proposals verified by CRAFT (Baek et al., CVPR 2019; official weights
  craft_mlt_25k.pth (c) NAVER Corp., MIT licence) on the same zoomed crops.
* ``craft-global`` -- the paper's pipeline: the whole film resized so its long side is
  ``long_side``, CRAFT, then region/affinity maps thresholded into word boxes
  (:func:`~xraydebug.text.postprocess.boxes_from_scores`). Recall hangs on the one resize.
* ``auto`` -- ``ppocr`` when its model is installed, else ``craft`` (chosen by
  ``benchmarks/text_bench.py``; see the README).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from xraydebug.device import cpu_has_native_bf16, resolve_device
from xraydebug.text.craft import CRAFT, load_craft
from xraydebug.text.glyphs import glyph_scores
from xraydebug.text.postprocess import boxes_from_scores, scale_boxes
from xraydebug.text.ppocr import load_dbnet, ppocr_available
from xraydebug.text.proposals import ProposalConfig, label_extent, propose_regions, to_u8
from xraydebug.text.zoom import batched_scores, deskewed_crops

__all__ = [
    "DETECTORS",
    "TextDetectConfig",
    "detect_in_windows",
    "detect_text",
    "detector_device",
    "load_detector",
    "merge_boxes",
    "prepare_image",
    "resolve_detector",
]

Box = list[int]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MIN_GLYPH = 8.0  # regions with smaller strokes are not matched against side letters
_STRIDE = 32  # the network downsamples 16x and the decoder needs even sizes at every level


@dataclass(frozen=True)
class TextDetectConfig:
    """Settings of :func:`detect_text`.

    Attributes:
        detector: ``auto``, ``ppocr``, ``craft`` or ``craft-global`` (see the module doc).
        verify_threshold: proposal detectors keep a region when the network's peak text score
            inside it, over its zoomed views, reaches this. On the benchmark's anatomy
            proposals DBNet's peak stayed at 0.00-0.01 and CRAFT's below 0.36.
        glyph_px: proposal detectors scale each region so its short side (the text height) has
            this many pixels at the network's input.
        crop_gain: proposal detectors stretch each zoomed crop's contrast by up to this factor
            (:func:`~xraydebug.text.zoom.deskewed_crops`): DBNet ignores grey text 0.1 from the
            film otherwise. The ``craft`` detector always uses 1 (see ``_CRAFT_NOISE_FACTOR``).
        side_letters: also keep compact regions whose shape matches a lone "L" or "R"
            (:mod:`xraydebug.text.glyphs`) by an IoU of at least ``side_letter_threshold``:
            networks trained on words often miss lone, boxed or turned letters. On the
            benchmark's anatomy proposals (8 px and larger) the best IoU was 0.70.
        proposals: settings of the proposal stage (:class:`ProposalConfig`).
        long_side: (``craft-global``) the image is resized (up or down, aspect kept) so its
            longer side has this many pixels before CRAFT sees it; cost grows with its square. It
            decides which small text is found, because CRAFT responds to characters by their size
            *at its input*. Words and letters with some structure ("R", "A", dates) fire from
            ~12-23 px glyph height, but a lone sans-serif "L" (the classic side marker) looks like
            an edge to the network: its peak region score measured 0.01 at 23 px, 0.13 at 29 px,
            0.54 at 38 px and 0.73 at 47 px of network-input height (threshold 0.7). So a ~20 px
            "L" on a 512 px film is missed at long_side 640 (~25 px, peak 0.11) and 960 (peak
            0.65) and found at 1280 (~48 px, peak 0.80); on a 1024 px film the same 20 px "L" is
            still missed at 1280 (peak 0.04) and even 2048 (0.60). Rule of thumb: a lone letter
            needs a height of at least ~3.5 % of the film's long side at 1280.
        text_threshold: minimum peak region score of a word (0.7 as in the paper).
        link_threshold: affinity score that links neighbouring characters into one word.
        low_text: region score that counts as "inside a character"; lower gives larger boxes.
        batch_size: images of the same padded size run through the network together.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32`` (the reference behaviour), ``bf16`` (autocast), or ``auto``: bf16
            where the device computes it natively (CPUs with AVX512-BF16/AMX, CUDA with bf16),
            else fp32. On 40 synthetic 256 px films at long side 384, bf16 gave the same boxes
            as fp32 and was 1.2-2x faster on an AVX512-BF16 CPU; on AVX2-only CPUs bf16 is
            emulated and about 7x slower, which is why ``auto`` checks the CPU.
    """

    detector: str = "auto"
    verify_threshold: float = 0.5
    glyph_px: float = 40.0
    crop_gain: float = 4.0
    side_letters: bool = True
    side_letter_threshold: float = 0.8
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    long_side: int = 1280
    text_threshold: float = 0.7
    link_threshold: float = 0.4
    low_text: float = 0.4
    batch_size: int = 4
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(
                f"unknown text detector {self.detector!r}; choose one of {sorted(DETECTORS)}"
            )
        if not 0.0 < self.verify_threshold <= 1.0:
            raise ValueError(f"verify_threshold must be in (0, 1]; got {self.verify_threshold!r}")
        if not 1.0 <= self.crop_gain <= 16.0:
            raise ValueError(f"crop_gain must be in [1, 16]; got {self.crop_gain!r}")
        if not 8.0 <= self.glyph_px <= 256.0:
            raise ValueError(f"glyph_px must be in [8, 256]; got {self.glyph_px!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto; got {self.precision!r}")
        if not isinstance(self.long_side, int) or self.long_side < _STRIDE:
            raise ValueError(f"long_side must be an int >= {_STRIDE}; got {self.long_side!r}")
        for name in ("text_threshold", "link_threshold", "low_text"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {self.batch_size!r}")


def _as_unit_gray(image: np.ndarray, index: int) -> np.ndarray:
    """Validate one image and return it as float32 ``(H, W)`` in [0, 1]."""
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
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(
                f"image {index}: float images must be in [0, 1] (as read_image returns); "
                f"got values in [{lo:.4g}, {hi:.4g}]"
            )
        return np.clip(gray, 0.0, 1.0)
    raise TypeError(
        f"image {index}: expected float in [0, 1], uint8 or uint16 pixels; got dtype {image.dtype}"
    )


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
    gray = _as_unit_gray(image, index)
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


def _normalise(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, h, w) gray in [0, 1] -> (B, 3, h, w) ImageNet-normalised float32 on ``device``."""
    x = torch.from_numpy(batch).to(device, non_blocking=True).unsqueeze(1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std  # broadcasting replicates the gray channel
    return x.contiguous(memory_format=torch.channels_last)


def _use_bf16(device: torch.device, precision: str) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def _as_image_list(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
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


def _craft_global(
    images: list[np.ndarray], config: TextDetectConfig, model: CRAFT
) -> list[list[Box]]:
    """The paper's pipeline: one resize per film, CRAFT, score maps -> word boxes."""
    device = next(model.parameters()).device
    results: list[list[Box]] = [[] for _ in images]
    shapes = [tuple(np.shape(image)) for image in images]
    bf16 = _use_bf16(device, config.precision)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
    ):
        for members in _batches(shapes, config.long_side, config.batch_size):
            prepared = [prepare_image(images[i], config.long_side, index=i) for i in members]
            batch = np.stack([p[0] for p in prepared])
            scores = model(_normalise(batch, device)).scores.float().cpu().numpy()
            for j, i in enumerate(members):
                _, ratio, shape = prepared[j]
                map_boxes = boxes_from_scores(
                    scores[j, :, :, 0],
                    scores[j, :, :, 1],
                    text_threshold=config.text_threshold,
                    link_threshold=config.link_threshold,
                    low_text=config.low_text,
                )
                results[i] = scale_boxes(map_boxes, ratio, shape)
    return results


def _craft_region_scores(model: CRAFT, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    """CRAFT as a crop scorer: (B, h, w) gray -> region score (B, h/2, w/2)."""
    device = next(model.parameters()).device
    bf16 = _use_bf16(device, precision)

    def score(batch: np.ndarray) -> np.ndarray:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
        ):
            out = model(_normalise(np.ascontiguousarray(batch, np.float32), device))
        return out.scores[..., 0].float().cpu().numpy()

    return score


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


def _verified_boxes(
    images: list[np.ndarray],
    config: TextDetectConfig,
    scorer: Callable[[np.ndarray], np.ndarray],
) -> list[list[Box]]:
    """Proposals per film, all zoomed views of all films scored together, boxes kept."""
    grays = [_as_unit_gray(image, i) for i, image in enumerate(images)]
    regions = [propose_regions(gray, config.proposals) for gray in grays]
    crops, owners = [], []
    for i, (gray, film_regions) in enumerate(zip(grays, regions, strict=True)):
        views = deskewed_crops(
            gray, film_regions, glyph_px=config.glyph_px, max_gain=config.crop_gain
        )
        crops += views
        owners += [(i, v.region) for v in views]
    peak: dict[tuple[int, int], float] = defaultdict(float)
    shape: dict[tuple[int, int], float] = defaultdict(float)
    if crops:
        for owner, score in zip(owners, batched_scores(crops, scorer), strict=True):
            peak[owner] = max(peak[owner], float(score))
        if config.side_letters:
            letters = [  # the first view of each region: the match turns the shape itself
                j
                for j, (i, k) in enumerate(owners)
                if regions[i][k].glyph >= _MIN_GLYPH and (j == 0 or owners[j - 1] != (i, k))
            ]
            for j, score in zip(letters, glyph_scores([crops[j] for j in letters]), strict=True):
                shape[owners[j]] = max(shape[owners[j]], float(score))
    results: list[list[Box]] = []
    for i, (gray, film_regions) in enumerate(zip(grays, regions, strict=True)):
        u8 = to_u8(gray)
        height, width = gray.shape
        boxes = []
        for k, region in enumerate(film_regions):
            if (
                peak[(i, k)] < config.verify_threshold
                and shape[(i, k)] < config.side_letter_threshold
            ):
                continue
            x0, y0, x1, y1 = label_extent(u8, region.bbox)
            boxes.append([max(0, x0 - 1), max(0, y0 - 1), min(width, x1 + 1), min(height, y1 + 1)])
        results.append(merge_boxes(boxes))
    return results


def resolve_detector(name: str) -> str:
    """The concrete detector behind ``name`` (``auto`` -> ``ppocr`` if installed, else
    ``craft``); unknown names raise ``ValueError`` listing the valid ones."""
    if name not in DETECTORS:
        raise ValueError(f"unknown text detector {name!r}; choose one of {sorted(DETECTORS)}")
    if name == "auto":
        return "ppocr" if ppocr_available() else "craft"
    return name


# CRAFT verifies some faint lung texture as text (one 24x17 px box on the tests' 512 px film)
# when proposals go down to 3x the noise, and anatomy on 3 of 20 text-free benchmark films when
# crops are contrast-stretched; DBNet verified none. CRAFT keeps the stricter floor, unstretched.
_CRAFT_NOISE_FACTOR = 4.0

Runner = Callable[[list[np.ndarray], "TextDetectConfig", CRAFT | None], list[list[Box]]]


def _run_ppocr(
    images: list[np.ndarray], config: TextDetectConfig, model: CRAFT | None
) -> list[list[Box]]:
    return _verified_boxes(images, config, _dbnet().probability)


def _dbnet():
    """DBNet with torch's thread count, so a worker given n threads uses n (ONNX Runtime's
    default would take every core of the node)."""
    return load_dbnet(threads=torch.get_num_threads())


def detector_device(config: TextDetectConfig) -> str:
    """Where ``config``'s detector computes: ``cpu`` for PP-OCRv4 (ONNX Runtime on CPU), else
    the ``device`` setting. An executor gives GPUs only to steps that use them."""
    return "cpu" if resolve_detector(config.detector) == "ppocr" else config.device


def load_detector(config: TextDetectConfig) -> None:
    """Load the networks of ``config``'s detector into this process's cache, so a worker
    pays for them when it starts rather than on its first batch."""
    if resolve_detector(config.detector) == "ppocr":
        _dbnet()
    else:
        load_craft(device=resolve_device(config.device))


def _run_craft(
    images: list[np.ndarray], config: TextDetectConfig, model: CRAFT | None
) -> list[list[Box]]:
    model = model or load_craft(device=resolve_device(config.device))
    strict = replace(
        config.proposals, noise_factor=max(config.proposals.noise_factor, _CRAFT_NOISE_FACTOR)
    )
    config = replace(config, proposals=strict, crop_gain=1.0)
    return _verified_boxes(images, config, _craft_region_scores(model, config.precision))


def _run_craft_global(
    images: list[np.ndarray], config: TextDetectConfig, model: CRAFT | None
) -> list[list[Box]]:
    return _craft_global(images, config, model or load_craft(device=resolve_device(config.device)))


# name -> (runner, description); "auto" has no runner of its own (see resolve_detector)
_REGISTRY: dict[str, tuple[Runner | None, str]] = {
    "auto": (None, "ppocr when its model is installed, else craft"),
    "ppocr": (
        _run_ppocr,
        "native-resolution proposals verified by PP-OCRv4 DBNet on zoomed crops",
    ),
    "craft": (_run_craft, "native-resolution proposals verified by CRAFT on zoomed crops"),
    "craft-global": (
        _run_craft_global,
        "CRAFT on the whole film at one resize (long_side), as in the paper",
    ),
}
DETECTORS: dict[str, str] = {name: entry[1] for name, entry in _REGISTRY.items()}


def detect_in_windows(
    gray: np.ndarray,
    windows: Sequence[Sequence[int]],
    config: TextDetectConfig,
    min_side: int = 0,
    max_zoom: float = 1.0,
) -> list[Box]:
    """Text boxes found inside ``windows`` (``[x0, y0, x1, y1]``) of ``gray`` (float (H, W) in
    [0, 1]), in the film's pixel coordinates, merged.

    Each window is enlarged (bicubic, at most ``max_zoom`` times) until its longer side reaches
    ``min_side``; windows thinner than 4 px are skipped. Windows of one zoom go through
    :func:`detect_text` in one call, proposed at the scale of the film they were cut from.
    """
    crops: dict[int, list[np.ndarray]] = defaultdict(list)
    placed: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    for x0, y0, x1, y1 in windows:
        crop = np.ascontiguousarray(gray[y0:y1, x0:x1], dtype=np.float32)
        if min(crop.shape) < 4:
            continue
        zoom = float(np.clip(min_side / max(crop.shape), 1.0, max(max_zoom, 1.0)))
        if zoom > 1.0:
            size = (round(crop.shape[1] * zoom), round(crop.shape[0] * zoom))
            crop = np.clip(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        film_px = round(max(gray.shape) * zoom)  # the glyphs' scale: the film's, enlarged
        crops[film_px].append(crop)
        placed[film_px].append((x0, y0, zoom))
    boxes: list[Box] = []
    for film_px, group in crops.items():
        scaled = replace(config, proposals=replace(config.proposals, film_px=film_px))
        for (x0, y0, zoom), found in zip(placed[film_px], detect_text(group, scaled), strict=True):
            boxes += [
                [
                    x0 + int(np.floor(bx0 / zoom)),
                    y0 + int(np.floor(by0 / zoom)),
                    x0 + int(np.ceil(bx1 / zoom)),
                    y0 + int(np.ceil(by1 / zoom)),
                ]
                for bx0, by0, bx1, by1 in found
            ]
    return merge_boxes(boxes)


def detect_text(
    images: Sequence[np.ndarray] | np.ndarray,
    config: TextDetectConfig = TextDetectConfig(),
    *,
    model: CRAFT | None = None,
) -> list[list[Box]]:
    """Find burned-in text (markers, words, dates, stamps) in gray radiographs.

    Args:
        images: a list of gray ``(H, W)`` arrays (float in [0, 1] as
            :func:`xraydebug.data.imageio.read_image` returns, or uint8/uint16; sizes may
            differ), a stacked ``(N, H, W)`` array, or one ``(H, W)`` array.
        config: detector and its settings; see :class:`TextDetectConfig`.
        model: a CRAFT to use instead of :func:`load_craft` (CRAFT detectors only).

    Returns:
        One list per image, in input order, of ``[x0, y0, x1, y1]`` boxes in that image's
        original pixel coordinates (``x1``/``y1`` exclusive, clipped to the image).
    """
    images = _as_image_list(images)
    if not images:
        return []
    name = resolve_detector(config.detector)
    runner = _REGISTRY[name][0]
    if runner is None:  # pragma: no cover - resolve_detector never returns auto
        raise RuntimeError(f"detector {name!r} has no runner")
    return runner(images, config, model)
