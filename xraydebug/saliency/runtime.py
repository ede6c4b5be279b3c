"""Plumbing shared by the explainers and the metrics: model state, devices, inputs, seeds."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xraydebug.device import cpu_has_native_bf16


@contextlib.contextmanager
def frozen_model(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad_(False)`` on every parameter for the duration of the block.

    Restores each module's own ``training`` flag and each parameter's own ``requires_grad`` flag
    in ``finally`` (so a model with some submodules deliberately in eval mode comes back as it
    was). Parameter ``.grad`` fields are never touched.
    """
    training = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, flag in training:
            m.training = flag


def resolve_device(
    model: nn.Module, images: Tensor, device: torch.device | str | None
) -> torch.device:
    """The device to compute on: ``device`` if given, else the model's, else the images'.

    The model is never moved; a ``device`` that differs from the model's is an error.
    """
    param = next(iter(model.parameters()), None)
    if param is None:
        param = next(iter(model.buffers()), None)
    model_device = None if param is None else param.device
    if device is None:
        return model_device if model_device is not None else images.device
    dev = torch.device(device)
    if model_device is None:
        return dev
    same_index = dev.index is None or dev.index == model_device.index
    if dev.type != model_device.type or not same_index:
        raise ValueError(
            f"device={str(dev)!r} but the model's parameters are on {str(model_device)!r}; "
            "move the model first (model.to(device)) or leave device=None"
        )
    return model_device


def check_images(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor (B, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(
            f"{name}: expected a non-empty (B, C, H, W) tensor, got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {images.dtype}")


def as_targets(
    model: nn.Module, images: Tensor, targets: Tensor | Sequence[int] | int | None
) -> Tensor:
    """``(B,)`` long class indices on ``images.device``; ``None`` means the model's prediction
    (its highest logit, which is also the highest softmax or sigmoid probability)."""
    b = images.shape[0]
    if targets is None:
        with torch.no_grad():
            return model_logits(model, images).argmax(dim=1)
    t = _integer_targets(targets, images.device)
    if t.dim() == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(
            f"targets: expected shape ({b},) or ({b}, T) to match the images, got {tuple(t.shape)}"
        )
    return t.long()


def _integer_targets(targets: Tensor | Sequence[Any] | int, device: torch.device) -> Tensor:
    t = torch.as_tensor(targets, device=device)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"targets: expected integer class indices, got dtype {t.dtype}")
    return t


def pair_up(
    model: nn.Module, images: Tensor, targets: Tensor | Sequence[Any] | int | None
) -> tuple[Tensor, Tensor, int]:
    """The (image, target) pairs to explain: ``(images, (N,) targets, T)``.

    ``(B, T)`` targets (``T`` classes per image) give every image repeated ``T`` times, row-major
    (image 0's targets first), ``N = B*T`` flat targets and ``T``; anything else is
    :func:`as_targets` (``N = B``, ``T = 1``, the images themselves).
    """
    if targets is None or isinstance(targets, int):
        return images, as_targets(model, images, targets), 1
    t = _integer_targets(targets, images.device)
    if t.dim() != 2:
        return images, as_targets(model, images, t), 1
    b, per_image = images.shape[0], t.shape[1]
    if t.shape[0] != b or per_image == 0:
        raise ValueError(
            f"targets: expected shape ({b},) or ({b}, T) with T >= 1 to match the images, "
            f"got {tuple(t.shape)}"
        )
    return images.repeat_interleave(per_image, dim=0), t.reshape(-1).long(), per_image


def model_logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"model output: expected logits (B, num_classes), got {shape}")
    return out


ACTIVATIONS = ("softmax", "sigmoid")
"""How logits become the probability of class ``c``: ``softmax`` over the classes (one label
per image) or ``sigmoid`` of the class's own logit (per-finding logits, multi-label)."""


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return activation


def target_probs(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    check: bool = False,
    activation: str = "softmax",
) -> Tensor:
    """Probability (float32) of ``targets`` ``(N,)`` for inputs ``x`` ``(N, C, H, W)``: softmax
    over the classes, or with ``activation="sigmoid"`` the sigmoid of the target's logit.

    ``check=True`` validates the class indices against the logits (a device sync: do it once).
    """
    logits = model_logits(model, x)
    n_classes = logits.shape[1]
    if check and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise ValueError(
            f"targets: expected class indices in [0, {n_classes - 1}], "
            f"got values in [{int(targets.min())}, {int(targets.max())}]"
        )
    if activation == "sigmoid":
        return torch.sigmoid(logits.float().gather(1, targets.view(-1, 1)).squeeze(1))
    probs = torch.softmax(logits.float(), dim=1)
    return probs.gather(1, targets.view(-1, 1)).squeeze(1)


def autocast_context(
    device: torch.device, enabled: bool, cpu: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` when ``enabled``: on CUDA bfloat16 if supported, else float16; on CPU
    (only with ``cpu=True``) bfloat16 where the CPU has native bf16 (:func:`cpu_has_native_bf16`),
    else nothing. Anything else runs in the inputs' dtype."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if cpu and device.type == "cpu" and cpu_has_native_bf16():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_model_layout(x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    if channels_last and device.type == "cuda":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` (in eval mode) with every ``Conv2d`` directly followed by a
    ``BatchNorm2d`` inside an ``nn.Sequential`` merged into one convolution (the BatchNorm becomes
    ``nn.Identity``): the same function up to rounding, one op and one backward op fewer per pair.

    Only ``nn.Sequential`` children are considered (their order is their execution order);
    anything else is left as it is. Returns ``(model, 0)`` unchanged -- no copy -- when there is
    nothing to fold or the model cannot be deep-copied; otherwise ``(copy, pairs folded)``. The
    copy's parameters do not require gradients.
    """
    if model.training:
        raise ValueError("fold_batchnorm: the model must be in eval mode")
    pairs = 0
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            children = list(mod)
            pairs += sum(_foldable(a, b) for a, b in itertools.pairwise(children))
    if pairs == 0:
        return model, 0
    try:
        folded = copy.deepcopy(model)
    except Exception:  # any model that will not copy is used as it is
        return model, 0
    with torch.no_grad():
        for mod in folded.modules():
            if not isinstance(mod, nn.Sequential):
                continue
            names = list(mod._modules)
            for first, second in itertools.pairwise(names):
                conv, bn = mod._modules[first], mod._modules[second]
                if conv is None or bn is None or not _foldable(conv, bn):
                    continue
                scale = (bn.running_var + bn.eps).rsqrt()
                if bn.weight is not None:
                    scale = scale * bn.weight
                shift = -bn.running_mean * scale
                if bn.bias is not None:
                    shift = shift + bn.bias
                if conv.bias is not None:
                    shift = shift + conv.bias * scale
                w = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
                conv.weight = nn.Parameter(w, requires_grad=False)
                conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
                mod._modules[second] = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval(), pairs


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (order matters); stable across runs and platforms."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(int(p).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def image_seeds(images: Tensor, seed: int) -> list[int]:
    """One noise seed per image from ``seed`` and the image's content (float32 bytes + shape).

    A given image therefore gets the same noise whatever batch it is in and wherever it sits in
    that batch: explaining ``images[i:i+1]`` alone reproduces row ``i`` of a batched call.
    """
    data = images.detach().to("cpu", torch.float32).contiguous()
    seeds = []
    for img in data:
        h = hashlib.blake2b(digest_size=8)
        h.update(int(seed).to_bytes(16, "little", signed=True))
        h.update(str(tuple(img.shape)).encode())
        h.update(img.numpy().tobytes())
        seeds.append(int.from_bytes(h.digest(), "little") & ((1 << 63) - 1))
    return seeds


def resolve_noise_seeds(
    images: Tensor, seed: int, noise_seeds: Sequence[int] | Tensor | None, per_image: int = 1
) -> list[int]:
    """One noise seed per row of ``images``: by default :func:`image_seeds` (so a repeated
    image -- several targets -- reuses its noise stream); else ``noise_seeds``, one per
    original image, each repeated ``per_image`` times, mixed with ``seed``."""
    if noise_seeds is None:
        return image_seeds(images, seed)
    seeds = [int(s) for s in torch.as_tensor(noise_seeds).reshape(-1).tolist()]
    expected = images.shape[0] // per_image
    if len(seeds) != expected:
        raise ValueError(
            f"noise_seeds: expected {expected} seeds (one per image), got {len(seeds)}"
        )
    return [mix_seed(seed, s) for s in seeds for _ in range(per_image)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
