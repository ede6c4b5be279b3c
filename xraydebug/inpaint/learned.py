"""The ``learned`` inpainter: a small U-Net trained on the user's own films
(``xraydebug inpainter train``, :mod:`xraydebug.inpaint.training`).

The network (:class:`InpaintNet`, a U-Net of about 0.55 M parameters) sees two channels: the
known pixels, normalised to [0, 1] (holes pre-filled with the mean of the known ones, or a
smooth pull-push fill), and the hole mask; it adds its correction to the pre-fill, and only the
holes are taken from the result (the known pixels stay as they were).

Films (:meth:`LearnedInpainter.inpaint`) are filled on WINDOWS around each hole at the film's
own resolution: the mask's connected components grown by ``margin`` known pixels (holes whose
windows touch share one). A hole's thickness is twice the largest distance from one of its
pixels to a known pixel (the short side of a rectangle); when it is above the network's
``max_hole`` (what it was trained to reach across), the window is scaled down by area until it
fits, filled there, and the fill scaled back up (bilinear): the fill of a wide hole is smooth
anyway, and film grain cannot be predicted. Each window is normalised by the 0.5 and 99.5
percentiles of its own known pixels, its span at least ``min_span`` of the film's (a flat
window of air is not blown up to grain); the fill is mapped back, clipped to the film's known
range and, for integer films, rounded. Windows of equal size go through the network together.
Colour films are filled per channel (each channel a gray film under the same mask).

Model inputs (:meth:`LearnedInpainter.inpaint_tensor`) are filled whole, batched on their own
device: each image and channel normalised by its known pixels' percentiles, scaled down by a
power of two where its holes are too thick.

On a CPU with native bf16 (AVX512-BF16/AMX) the network runs as a bf16 channels-last copy
(:class:`NetRunner`); elsewhere in float32 (CUDA: bf16 autocast).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xraydebug.device import cpu_has_native_bf16, resolve_device

from .base import Inpainter, InpainterConfig, as_mask, check_pairs, register_inpainter

INPAINTER_FORMAT = "xraydebug-inpainter-v1"
LOW_Q, HIGH_Q = 0.5, 99.5  # percentiles of the known pixels that map to 0 and 1
_SAMPLE = 65_536  # known pixels a window's percentiles are taken from at most
_BATCH_PIXELS = 1 << 22  # network input pixels per forward pass at most


@dataclass(frozen=True)
class NetConfig:
    """The network and how it is applied (stored in the checkpoint).

    ``width`` channels at full resolution, doubled at each of ``levels - 1`` halvings up to
    ``cap``; residual dilated 3x3 convolutions (``dilations``) at the coarsest level widen the
    receptive field. ``max_hole``: the thickest hole (px) filled at the window's own scale;
    ``margin``: known pixels kept around each hole (at the network's scale); ``min_span``: a
    window's normalising span is at least this share of its film's; ``prefill``: what the
    holes hold in the network's input, ``mean`` (of the window's known pixels) or
    ``pullpush`` (:func:`pull_push`)."""

    width: int = 16
    levels: int = 4
    cap: int = 96
    dilations: tuple[int, ...] = (2, 4)
    max_hole: int = 32
    margin: int = 32
    min_span: float = 0.05
    prefill: str = "mean"

    def __post_init__(self) -> None:
        if self.prefill not in ("pullpush", "mean"):
            raise ValueError(f"prefill must be pullpush or mean; got {self.prefill!r}")
        if self.width < 1 or self.levels < 1 or self.cap < self.width:
            raise ValueError(f"bad network size: {self}")
        if self.max_hole < 2 or self.margin < 1:
            raise ValueError(f"max_hole must be >= 2 and margin >= 1; got {self}")

    @property
    def multiple(self) -> int:
        """Window sides are padded to a multiple of this (the coarsest level's stride)."""
        return 2 ** (self.levels - 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NetConfig:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if "dilations" in kept:
            kept["dilations"] = tuple(kept["dilations"])
        return cls(**kept)


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
    )


class InpaintNet(nn.Module):
    """A small U-Net: (N, 2, H, W) -> (N, 1, H, W) predicted pixels (H, W multiples of
    ``config.multiple``); input channel 0 is the pre-filled normalised window, 1 the hole."""

    def __init__(self, config: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.config = config
        ch = [min(config.width * 2**i, config.cap) for i in range(config.levels)]
        self.encoder = nn.ModuleList(
            [nn.Sequential(_conv(2, ch[0]), _conv(ch[0], ch[0]))]
            + [
                nn.Sequential(_conv(ch[i - 1], ch[i], stride=2), _conv(ch[i], ch[i]))
                for i in range(1, config.levels)
            ]
        )
        self.middle = nn.ModuleList([_conv(ch[-1], ch[-1], dilation=d) for d in config.dilations])
        self.decoder = nn.ModuleList(
            [
                nn.Sequential(_conv(ch[i + 1] + ch[i], ch[i]), _conv(ch[i], ch[i]))
                for i in range(config.levels - 1)
            ]
        )
        self.head = nn.Conv2d(ch[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :1] + self.delta(x).float()

    def delta(self, x: Tensor) -> Tensor:
        """What the network adds to the pre-filled window (channel 0 of ``x``)."""
        skips = []
        h = x
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        for block in self.middle:
            h = h + block(h)
        for i in range(len(self.decoder) - 1, -1, -1):
            h = F.interpolate(h, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            h = self.decoder[i](torch.cat([h, skips[i]], dim=1))
        return self.head(h)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def net_autocast(device: torch.device, amp: bool = True) -> torch.autocast:
    """bf16 where the device computes it fast (CUDA with bf16, CPUs with native bf16), else off."""
    if device.type == "cuda":
        enabled = amp and torch.cuda.is_bf16_supported()
    else:
        enabled = amp and device.type == "cpu" and cpu_has_native_bf16()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def pull_push(values: Tensor, known: Tensor, confidence: float = 4.0) -> Tensor:
    """A smooth fill of the unknown pixels of ``values`` (N, 1, H, W) from the ``known`` ones
    (N, 1, H, W, 1 = known): means of the known pixels over ever coarser cells (pull), then
    from the coarsest cell back down, each cell's own mean where ``confidence`` x its known
    share reaches 1, blended with the coarser estimate below that (push)."""
    v, k = values * known, known
    levels = []
    while True:
        levels.append((v, k))
        if min(v.shape[-2:]) <= 1:
            break
        v = F.avg_pool2d(v, 2, ceil_mode=True)
        k = F.avg_pool2d(k, 2, ceil_mode=True)
    estimate = v / k.clamp(min=1e-6)
    estimate = torch.where(k > 0, estimate, torch.full_like(estimate, 0.5))
    for v, k in reversed(levels[:-1]):
        up = F.interpolate(estimate, size=v.shape[-2:], mode="bilinear", align_corners=False)
        weight = (k * confidence).clamp(max=1.0)
        estimate = weight * (v / k.clamp(min=1e-6)) + (1.0 - weight) * up
    return estimate


def network_input(values: Tensor, hole: Tensor, prefill: str = "mean") -> Tensor:
    """(N, 2, H, W): ``values`` (N, 1, H, W, normalised) with the hole pixels pre-filled
    (``pullpush``: :func:`pull_push`; ``mean``: the mean of each sample's known pixels), and
    the hole mask (1 = fill)."""
    hole = hole.to(values.dtype)
    known = 1.0 - hole
    if prefill == "pullpush":
        fill = pull_push(values, known)
    else:
        count = known.sum(dim=(2, 3), keepdim=True)
        fill = (values * known).sum(dim=(2, 3), keepdim=True) / count.clamp(min=1.0)
        fill = torch.where(count > 0, fill, torch.full_like(fill, 0.5))
    return torch.cat([values * known + fill * hole, hole], dim=1)


class NetRunner:
    """Runs an :class:`InpaintNet` for inference on its device: on a CPU with native bf16, a
    bf16 channels-last copy of it (about twice as fast as float32 there), on CUDA under bf16
    autocast, else in float32. The pre-fill and the result stay float32."""

    def __init__(self, net: InpaintNet, *, amp: bool = True) -> None:
        self.net = net.eval()
        self.config = net.config
        self.device = next(net.parameters()).device
        self.fast: InpaintNet | None = None
        if amp and self.device.type == "cpu" and cpu_has_native_bf16():
            fast = InpaintNet(net.config)
            fast.load_state_dict(net.state_dict())
            self.fast = fast.to(torch.bfloat16).to(memory_format=torch.channels_last).eval()
        self.amp = amp

    def __call__(self, values: Tensor, hole: Tensor) -> Tensor:
        """``values`` (N, 1, H, W, normalised, any size) with ``hole`` (N, 1, H, W) filled by
        the network (the rest kept), padded by reflection to its multiple and cropped back."""
        height, width = values.shape[-2:]
        multiple = self.config.multiple
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        x = network_input(values.float(), hole, self.config.prefill)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        if self.fast is not None:
            fast_x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            delta = self.fast.delta(fast_x)
        else:
            with net_autocast(x.device, self.amp):
                delta = self.net.delta(x)
        out = (x[:, :1] + delta.float())[..., :height, :width]
        return torch.where(hole.bool(), out, values.float())


# -- value ranges ------------------------------------------------------------------------------
def robust_range(known: np.ndarray) -> tuple[float, float]:
    """The (0.5, 99.5) percentiles of ``known`` values (any shape; a strided sample of large
    arrays); ``(0, 0)`` when empty."""
    flat = known.reshape(-1)
    if flat.size == 0:
        return 0.0, 0.0
    if flat.size > _SAMPLE:
        flat = flat[:: flat.size // _SAMPLE]
    lo, hi = np.percentile(flat, (LOW_Q, HIGH_Q))
    return float(lo), float(hi)


def window_scale(known: np.ndarray, floor: float) -> tuple[float, float]:
    """``(lo, span)`` that map a window's ``known`` values to about [0, 1]: their robust range,
    widened about its middle to at least ``floor`` (a flat window is not blown up)."""
    lo, hi = robust_range(known)
    span = hi - lo
    floor = max(floor, 1e-6 * max(1.0, abs(lo), abs(hi)))
    if span < floor:
        lo, span = (lo + hi) / 2.0 - floor / 2.0, floor
    return lo, span


def span_floor(film_known: np.ndarray, min_span: float) -> float:
    """The least span of a window of a film whose known values are ``film_known``: ``min_span``
    of the film's robust range (1 for a flat film)."""
    lo, hi = robust_range(film_known)
    return min_span * (hi - lo) if hi > lo else 1.0


# -- windows -----------------------------------------------------------------------------------
@dataclass
class _Window:
    """One window of one channel: where it lies, how it is scaled, what it writes back."""

    channel: int
    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    factor: float
    lo: float = 0.0
    span: float = 1.0
    values: np.ndarray | None = None  # normalised, at the network's scale
    hole: np.ndarray | None = None


def plan_windows(mask: np.ndarray, config: NetConfig) -> tuple[list[tuple], np.ndarray]:
    """The windows of ``mask`` (uint8, 255 = hole): ``[(box, factor, label)]`` and the label
    image (each hole pixel's window). ``factor`` >= 1 is the downscaling that brings the
    window's thickest hole to ``config.max_hole``; the window keeps ``config.margin`` pixels at
    that scale around its holes (clipped to the film)."""
    height, width = mask.shape
    margin = config.margin
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1, 2 * margin + 1))
    grown = cv2.dilate(mask, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    if n <= 1:
        return [], labels
    inside = mask > 0
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_5)
    hole_labels = labels[inside]
    deepest = np.zeros(n, np.float32)
    np.maximum.at(deepest, hole_labels, depth[inside])
    ys, xs = np.nonzero(inside)
    y_min = np.full(n, height, np.int64)
    y_max = np.full(n, -1, np.int64)
    x_min = np.full(n, width, np.int64)
    x_max = np.full(n, -1, np.int64)
    np.minimum.at(y_min, hole_labels, ys)
    np.maximum.at(y_max, hole_labels, ys)
    np.minimum.at(x_min, hole_labels, xs)
    np.maximum.at(x_max, hole_labels, xs)
    windows = []
    for k in range(1, n):
        if y_max[k] < 0:
            continue
        factor = max(1.0, 2.0 * float(deepest[k]) / config.max_hole)
        if factor == 1.0:
            x, y, w, h, _ = stats[k]
            box = (int(y), int(y + h), int(x), int(x + w))
        else:
            grow = math.ceil(margin * factor)
            box = (
                max(0, int(y_min[k]) - grow),
                min(height, int(y_max[k]) + 1 + grow),
                max(0, int(x_min[k]) - grow),
                min(width, int(x_max[k]) + 1 + grow),
            )
        windows.append((box, factor, k))
    return windows, labels


def _downscale(values: np.ndarray, hole: np.ndarray, factor: float) -> tuple[np.ndarray, ...]:
    """``values`` and ``hole`` (bool) scaled down by ``factor`` by area: a small pixel is a hole
    if any of it was, else the mean of its known part."""
    height, width = values.shape
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    known = (~hole).astype(np.float32)
    total = cv2.resize(values * known, size, interpolation=cv2.INTER_AREA)
    share = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
    small_hole = share < 1.0 - 1e-4
    small = np.where(small_hole, 0.0, total / np.maximum(share, 1e-6)).astype(np.float32)
    return small, small_hole


class WindowFiller:
    """Fills the holes of gray float32 films with a network (:class:`NetRunner`) on windows."""

    def __init__(self, runner: NetRunner) -> None:
        self.runner, self.device, self.config = runner, runner.device, runner.config

    def fill(self, channels: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """``channels`` (float32 ``(H, W)``) with the holes of ``masks`` (uint8, 255 = hole, one
        per channel) filled; other pixels as given. Fills are clipped to each channel's known
        range."""
        outs = [c.copy() for c in channels]
        jobs: list[_Window] = []
        owners: list[np.ndarray] = []
        limits: list[tuple[float, float]] = []
        for c, (channel, mask) in enumerate(zip(channels, masks, strict=True)):
            hole_all = mask > 0
            known_all = channel[~hole_all]
            if known_all.size == 0:
                limits.append((0.0, 0.0))
                continue
            limits.append((float(known_all.min()), float(known_all.max())))
            floor = span_floor(known_all, self.config.min_span)
            windows, labels = plan_windows(mask, self.config)
            for box, factor, label in windows:
                y0, y1, x0, x1 = box
                crop = channel[y0:y1, x0:x1]
                hole = hole_all[y0:y1, x0:x1]
                lo, span = window_scale(crop[~hole], floor)
                if not (~hole).any():  # a window of holes only: the film's middle
                    lo, span = limits[c][0], max(limits[c][1] - limits[c][0], 1e-6)
                values = ((crop - lo) / span).astype(np.float32)
                if factor > 1.0:
                    values, hole = _downscale(values, hole, factor)
                job = _Window(c, box, factor, lo, span, values, hole)
                jobs.append(job)
                owners.append(hole_all[y0:y1, x0:x1] & (labels[y0:y1, x0:x1] == label))
        for job, own, filled in zip(jobs, owners, self._run(jobs), strict=True):
            y0, y1, x0, x1 = job.box
            if job.factor > 1.0:
                filled = cv2.resize(filled, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            lo_c, hi_c = limits[job.channel]
            values = np.clip(filled[own] * job.span + job.lo, lo_c, hi_c)
            outs[job.channel][y0:y1, x0:x1][own] = values.astype(np.float32)
        return outs

    def _run(self, jobs: list[_Window]) -> list[np.ndarray]:
        """The network's fill of every job's window (at the network's scale, normalised),
        windows of one padded size batched together."""
        multiple = self.config.multiple
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            h, w = job.values.shape
            groups[(padded_side(h, multiple), padded_side(w, multiple))].append(i)
        results: list[np.ndarray | None] = [None] * len(jobs)
        for (ph, pw), members in groups.items():
            per_batch = max(1, _BATCH_PIXELS // (ph * pw))
            for start in range(0, len(members), per_batch):
                chunk = members[start : start + per_batch]
                values = np.stack([_pad_to(jobs[i].values, ph, pw) for i in chunk])
                holes = np.stack([_pad_to(jobs[i].hole, ph, pw) for i in chunk])
                with torch.inference_mode():
                    v = torch.from_numpy(values)[:, None].to(self.device)
                    h = torch.from_numpy(holes)[:, None].to(self.device)
                    out = self.runner(v, h)[:, 0].float().cpu().numpy()
                for k, i in enumerate(chunk):
                    hh, ww = jobs[i].values.shape
                    results[i] = out[k, :hh, :ww]
        return results


def padded_side(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` and to a quarter of its octave (at most
    25% more pixels per side): windows of a few sizes only, so the network's kernels (whose
    set-up for a new size costs more than a run) are reused from film to film."""
    step = max(multiple, 2 ** max(0, n.bit_length() - 3))
    return -(-n // step) * step


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """``array`` padded at the bottom and right to ``(height, width)`` by reflection."""
    h, w = array.shape
    if (h, w) == (height, width):
        return array
    src = array.astype(np.uint8) if array.dtype == bool else array
    padded = cv2.copyMakeBorder(src, 0, height - h, 0, width - w, cv2.BORDER_REFLECT)
    return padded.astype(bool) if array.dtype == bool else padded


# -- tensors -----------------------------------------------------------------------------------
def _tensor_ranges(x: Tensor, hole: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per sample of ``x`` (N, 1, H, W): ``lo`` and ``span`` from its known pixels' robust range
    and their min and max (each (N, 1, 1, 1))."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    known = ~hole.reshape(n, -1)
    step = max(1, flat.shape[1] // _SAMPLE)
    sample = torch.where(known, flat, torch.nan)[:, ::step]
    q = torch.tensor([LOW_Q / 100, HIGH_Q / 100], device=x.device, dtype=x.dtype)
    bounds = torch.nanquantile(sample, q, dim=1)  # (2, N)
    lo, hi = torch.nan_to_num(bounds[0]), torch.nan_to_num(bounds[1])
    span = (hi - lo).clamp(min=1e-6) * 1.0
    span = torch.maximum(span, 1e-6 * torch.maximum(lo.abs(), hi.abs()).clamp(min=1.0))
    big = torch.finfo(x.dtype).max
    kmin = torch.where(known, flat, big).amin(dim=1)
    kmax = torch.where(known, flat, -big).amax(dim=1)
    shape = (n, 1, 1, 1)
    return lo.view(shape), span.view(shape), kmin.view(shape), kmax.view(shape)


def _erode(hole: Tensor, radius: int) -> Tensor:
    """Binary erosion of ``hole`` (N, 1, H, W, float 0/1) by a square of ``radius``
    (separable min-pooling; outside the image counts as hole)."""
    k = 2 * radius + 1
    out = -F.max_pool2d(-hole, (1, k), stride=1, padding=(0, radius))
    return -F.max_pool2d(-out, (k, 1), stride=1, padding=(radius, 0))


def tensor_levels(hole: Tensor, max_hole: int, max_level: int = 12) -> Tensor:
    """Per sample, the halvings (0, 1, ...) after which its thickest hole is at most
    ``max_hole`` px thick (a square of that side no longer fits inside it)."""
    n = hole.shape[0]
    levels = torch.zeros(n, dtype=torch.long, device=hole.device)
    current = hole.float()
    pending = torch.ones(n, dtype=torch.bool, device=hole.device)
    for level in range(max_level + 1):
        thick = _erode(current, max_hole // 2).flatten(1).amax(dim=1) > 0
        done = pending & ~thick
        levels[done] = level
        pending &= thick
        if not pending.any() or min(current.shape[-2:]) <= 1:
            break
        current = F.max_pool2d(current, 2, ceil_mode=True)
    levels[pending] = level
    return levels


def fill_tensor(runner: NetRunner, x: Tensor, hole: Tensor) -> Tensor:
    """``x`` (N, 1, H, W, float32, any range) with ``hole`` (N, 1, H, W, bool) filled, each sample
    normalised by its known pixels; scaled down by powers of two where its holes are thicker
    than the network's ``max_hole``."""
    lo, span, kmin, kmax = _tensor_ranges(x, hole)
    z = (x - lo) / span
    out = z.clone()
    levels = tensor_levels(hole, runner.config.max_hole)
    height, width = x.shape[-2:]
    for level in torch.unique(levels).tolist():
        idx = (levels == level).nonzero(as_tuple=True)[0]
        values, holes = z[idx], hole[idx]
        if level == 0:
            filled = runner(values, holes)
        else:
            f = 2**level
            pad = (0, (-width) % f, 0, (-height) % f)
            known = F.pad((~holes).float(), pad, mode="replicate")
            padded = F.pad(values * (~holes), pad, mode="replicate")
            share = F.avg_pool2d(known, f)
            small = F.avg_pool2d(padded, f) / share.clamp(min=1e-6)
            small_hole = share < 1.0 - 1e-4
            small = torch.where(small_hole, torch.zeros_like(small), small)
            filled_small = runner(small, small_hole)
            up = F.interpolate(filled_small, scale_factor=f, mode="bilinear", align_corners=False)
            filled = up[..., :height, :width]
        out[idx] = torch.where(holes, filled, values)
    result = (out * span + lo).clamp(min=kmin, max=kmax)
    return torch.where(hole, result, x)


# -- the registry entry ------------------------------------------------------------------------
@dataclass(frozen=True)
class LearnedConfig(InpainterConfig):
    """``model``: the checkpoint written by ``xraydebug inpainter train`` (``clean
    --inpainter-model``)."""

    model: str | None = None


@register_inpainter
class LearnedInpainter(Inpainter):
    name = "learned"
    description = (
        "a small U-Net trained on your own films (xraydebug inpainter train; needs "
        "--inpainter-model)"
    )
    config_class = LearnedConfig
    classical = False

    def __init__(self, config: LearnedConfig | None = None, *, device: str = "cpu") -> None:
        super().__init__(config, device=device)
        self.net: InpaintNet | None = None
        self.runner: NetRunner | None = None
        self.meta: dict[str, Any] = {}

    @classmethod
    def from_network(cls, net: InpaintNet, *, device: str = "cpu") -> LearnedInpainter:
        """An inpainter around an in-memory network (e.g. while it is trained; it is used as
        it is now, and should not change while the inpainter is in use)."""
        inpainter = cls(LearnedConfig(), device=device)
        inpainter.net = net.to(resolve_device(device))
        inpainter.runner = NetRunner(inpainter.net)
        return inpainter

    def load(self) -> LearnedInpainter:
        if self.runner is not None:
            return self
        self.net, self.meta = load_network(self.config.model, device=self.device)
        self.runner = NetRunner(self.net)
        return self

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.meta:
            out["trained"] = {
                k: self.meta.get(k) for k in ("data", "steps", "held_out", "parameters")
            }
        return out

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        images, masks = list(images), [as_mask(m) for m in masks]
        check_pairs(images, masks)
        self.load()
        channels: list[np.ndarray] = []
        channel_masks: list[np.ndarray] = []
        for image, mask in zip(images, masks, strict=True):
            if not mask.any():
                continue
            stack = image[..., None] if image.ndim == 2 else image
            for c in range(stack.shape[2]):
                channels.append(np.ascontiguousarray(stack[..., c], dtype=np.float32))
                channel_masks.append(mask)
        filled = iter(WindowFiller(self.runner).fill(channels, channel_masks))
        out = []
        for image, mask in zip(images, masks, strict=True):
            if not mask.any():
                out.append(image.copy())
                continue
            stack = image[..., None] if image.ndim == 2 else image
            result = np.empty_like(stack)
            for c in range(stack.shape[2]):
                result[..., c] = _to_dtype(next(filled), stack.dtype)
            result = result[..., 0] if image.ndim == 2 else result
            hole = mask > 0
            kept = image.copy()
            kept[hole] = result[hole]
            out.append(kept)
        return out

    def inpaint_tensor(self, images: Tensor, masks: Tensor) -> Tensor:
        if images.dim() != 4 or masks.dim() != 4 or masks.shape[1] != 1:
            raise ValueError(
                f"inpaint_tensor: expected images (B, C, H, W) and masks (B, 1, H, W), got "
                f"{tuple(images.shape)} and {tuple(masks.shape)}"
            )
        self.load()
        batch, chans, height, width = images.shape
        hole = (masks.detach() > 0.5).expand(batch, chans, height, width)
        if not hole.any():
            return images.clone()
        device = self.runner.device
        x = images.detach().float().reshape(batch * chans, 1, height, width).to(device)
        h = hole.reshape(batch * chans, 1, height, width).to(device)
        with torch.inference_mode():
            filled = fill_tensor(self.runner, x, h)
        filled = filled.reshape(batch, chans, height, width).to(images.device, images.dtype)
        return torch.where(hole, filled, images.detach())


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 fills -> ``dtype``: integers rounded and clipped to their range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


# -- checkpoints -------------------------------------------------------------------------------
def network_payload(network: InpaintNet, **meta: Any) -> dict[str, Any]:
    """What an inpainter checkpoint holds: format, the network config, CPU weights, ``meta``."""
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    return {
        "format": INPAINTER_FORMAT,
        "net": _plain(asdict(network.config)),
        **meta,
        "state_dict": state,
    }


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def load_network(
    model: str | Path | None, *, device: str = "cpu"
) -> tuple[InpaintNet, dict[str, Any]]:
    """The network of an inpainter checkpoint (eval mode, on ``device``) and its metadata.

    Raises ``ValueError`` when no model is given or the file is not an inpainter checkpoint,
    ``FileNotFoundError`` when it is missing; both name ``--inpainter-model``."""
    hint = "train one with `xraydebug inpainter train DATA --out inpainter.pt`"
    if model is None or str(model) == "":
        raise ValueError(
            f"the 'learned' inpainter needs its model: give --inpainter-model PATH ({hint})"
        )
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"--inpainter-model {path}: no such file ({hint})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"--inpainter-model {path}: not a readable inpainter checkpoint ({first})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != INPAINTER_FORMAT:
        raise ValueError(
            f"--inpainter-model {path}: not an inpainter checkpoint (expected format "
            f"{INPAINTER_FORMAT!r}; {hint})"
        )
    net = InpaintNet(NetConfig.from_dict(payload["net"]))
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"--inpainter-model {path}: weights do not fit its network") from exc
    net.eval().to(resolve_device(device))
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return net, meta
