"""Classifier architectures, looked up by name, each with the preprocessing it expects.

The registry maps a name to an :class:`ArchSpec` (builder + :class:`Preprocessing` +
description). The CLI's ``--arch`` choices come from :func:`list_archs`; checkpoints store the
arch name and ``Preprocessing.to_dict()`` so a model is always fed the way it was trained.

Canonical image form in xraydebug: gray float ``(B, 1, H, W)`` in ``[0, 1]``.
:meth:`Preprocessing.apply` turns that into the model input ``(B, C, S, S)``.

Built-in architectures (random init; nothing is ever downloaded):

``covidnext``
    The COVID-Next model used by the iGOS++ COVIDx experiment: torchvision ResNeXt-50 (32x4d)
    features (up to and excluding ``avgpool``/``fc``; 2048 channels, stride 32), then three
    conv-BN-ReLU blocks (3x3 2048->512, 3x3 512->512, 3x3 512->256), global average pooling and a
    linear head. 256x256, 3 channels, ImageNet mean/std. Unlike the original it flattens with
    ``flatten(1)`` (no ``squeeze``), so batch size 1 works.
``covidnet``
    A reimplementation of COVID-Net (Wang & Wong 2020): a 7x7 stem, four stages of PEPX
    modules (1x1 projection, 1x1 expansion, 3x3 depthwise, 1x1 projection, 1x1 extension) with
    dense connectivity inside each stage, and a fully connected head. 480x480, top 8% cropped.
    See :class:`CovidNet` for where it simplifies the paper.
``small``
    A ~250k-parameter gray-input CNN for CPU demos and tests (256x256, 1 channel).
``tiny``
    A ~5k-parameter CNN for unit tests (64x64, 1 channel).

All models map ``(B, C, H, W)`` float to logits ``(B, num_classes)``, work at batch size 1,
accept ``channels_last`` inputs, expose ``num_classes`` and ``in_channels``, and use no in-place
ReLU, so gradients with respect to the input work with parameter gradients turned off (what
the saliency methods do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnext50_32x4d

from xraydebug.errors import CheckpointError
from xraydebug.models.safe_load import load_weights_only

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """How gray images in ``[0, 1]`` become a model's input (stored in every checkpoint).

    Attributes:
        input_size: side ``S`` of the square input.
        in_channels: 1, or 3 (gray repeated to 3 channels).
        mean, std: per input channel, applied to ``[0, 1]`` intensities: ``(x - mean) / std``.
        crop_top: fraction of the image height removed from the top before resizing
            (COVID-Net: 0.08, which drops the burned-in header many CXR exports carry).
    """

    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_top: float = 0.0

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the dataclass stays hashable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive int, got {self.input_size!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.in_channels:
                raise ValueError(
                    f"{label} needs one value per channel ({self.in_channels}), got {values}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if not 0.0 <= self.crop_top < 1.0:
            raise ValueError(f"crop_top must be in [0, 1), got {self.crop_top!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); inverse of :meth:`from_dict`."""
        out = asdict(self)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ``ValueError``.

        Unknown keys are refused rather than ignored: a preprocessing step this version does
        not know about must not be silently skipped.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys {unknown}; expected some of {sorted(names)}"
            )
        required = {"input_size", "in_channels", "mean", "std"}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"preprocessing dict lacks {missing}; got keys {sorted(d)}")
        return cls(
            input_size=int(d["input_size"]),
            in_channels=int(d["in_channels"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            crop_top=float(d.get("crop_top", 0.0)),
        )

    def crop_rows(self, height: int) -> int:
        """Rows removed from the top of an image ``height`` rows tall (same rounding as IO)."""
        return round(self.crop_top * height)

    def normalize(self, gray: torch.Tensor) -> torch.Tensor:
        """Channel repeat and ``(x - mean) / std`` for images already at the model's size.

        Args:
            gray: ``(B, 1, H, W)`` float in ``[0, 1]`` (any float dtype, any device).

        Returns:
            ``(B, in_channels, H, W)`` of ``gray``'s dtype (a new tensor; ``gray`` is untouched).
        """
        _check_gray(gray)
        mean = torch.tensor(self.mean, dtype=gray.dtype, device=gray.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=gray.dtype, device=gray.device).view(1, -1, 1, 1)
        # Broadcasting (B,1,H,W) against (1,C,1,1) repeats gray into C channels for free.
        return (gray - mean) / std

    def apply(self, gray: torch.Tensor) -> torch.Tensor:
        """Full preprocessing of a batch: crop top, resize, repeat channels, normalise.

        Args:
            gray: ``(B, 1, H, W)`` float in ``[0, 1]``.

        Returns:
            ``(B, in_channels, input_size, input_size)`` normalised. The resize is bilinear
            with anti-aliasing (``align_corners=False``), computed in float32 for half inputs;
            the output is float32 (float64 stays float64).
        """
        _check_gray(gray)
        x = gray if gray.dtype == torch.float64 else gray.float()
        rows = self.crop_rows(x.shape[-2])
        if rows > 0:
            x = x[..., rows:, :]
        size = (self.input_size, self.input_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.normalize(x)


def _check_gray(gray: torch.Tensor) -> None:
    if not isinstance(gray, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor (B, 1, H, W), got {type(gray).__name__}")
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"expected gray images (B, 1, H, W), got shape {tuple(gray.shape)}")
    if not gray.is_floating_point():
        raise TypeError(f"expected a float tensor in [0, 1], got dtype {gray.dtype}")


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _check_input(x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"expected model input (B, {channels}, H, W), got shape {tuple(x.shape)}; "
            "use the arch's Preprocessing.apply()"
        )


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv (no bias) -> BatchNorm -> ReLU (not in place). Keeps H, W when stride 1."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
        )


def _init_weights(module: nn.Module) -> None:
    """He init for convs, unit/zero BatchNorm, small normal for linear layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


class Classifier(nn.Module):
    """Base: ``features`` (B, C, H, W) -> (B, F, h, w), pool, ``head`` (B, F) -> (B, K).

    Subclasses set ``features`` and ``head`` (or override :meth:`forward_features`).
    """

    head: nn.Module

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.in_channels = in_channels

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Global average pool: ``(B, F, h, w)`` -> ``(B, F)`` (``flatten(1)``, never squeeze)."""
        return F.adaptive_avg_pool2d(feats, 1).flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_channels, H, W) -> last feature map (B, F, h, w)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_channels, H, W) normalised float -> logits (B, num_classes)."""
        _check_input(x, self.in_channels)
        return self.head(self.pool(self.forward_features(x)))


# ---------------------------------------------------------------------------------------------
# covidnext: ResNeXt-50 (32x4d) + three conv-BN-ReLU blocks
# ---------------------------------------------------------------------------------------------


class ResNeXtFeatures(nn.Module):
    """torchvision ``resnext50_32x4d`` up to ``layer4``: (B, 3, H, W) -> (B, 2048, H/32, W/32).

    The submodules keep torchvision's names (``conv1``, ``bn1``, ``layer1``..``layer4``), so
    a torchvision ResNeXt-50 state_dict loads here directly; its ImageNet classifier
    (``fc.*``, listed in ``init_ignore_prefixes``) has no counterpart and is dropped by
    :func:`load_init_weights`. Every ReLU is switched to ``inplace=False`` so module hooks and
    input gradients see unmodified activations.
    """

    init_ignore_prefixes: tuple[str, ...] = ("fc.",)
    out_channels = 2048

    def __init__(self) -> None:
        super().__init__()
        net = resnext50_32x4d(weights=None)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class CovidNext(Classifier):
    """COVID-Next: ResNeXt-50 (32x4d) features + 3 conv-BN-ReLU blocks + GAP + linear.

    Extra blocks (our choice; the original's exact widths are not part of the contract):
    3x3 2048->512, 3x3 512->512, 3x3 512->256, all stride 1 on the stride-32 feature map
    (8x8 at 256 input). ``backbone`` holds the ResNeXt features (init weights can target it).

    Input ``(B, 3, H, W)`` ImageNet-normalised; output logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 3, head_channels: Iterable[int] = (512, 512, 256)):
        super().__init__(num_classes, in_channels=3)
        self.backbone = ResNeXtFeatures()
        blocks: list[nn.Module] = []
        c = ResNeXtFeatures.out_channels
        for width in head_channels:
            blocks.append(ConvBNReLU(c, width, 3))
            c = width
        self.extra = nn.Sequential(*blocks)
        _init_weights(self.extra)
        self.head = nn.Linear(c, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 3, H, W) -> (B, 256, H/32, W/32)."""
        return self.extra(self.backbone(x))


# ---------------------------------------------------------------------------------------------
# covidnet: COVID-Net with PEPX modules
# ---------------------------------------------------------------------------------------------


class PEPX(nn.Module):
    """Projection-Expansion-Projection-eXtension module of COVID-Net.

    1x1 projection (c_in -> c_out/2), 1x1 expansion (-> c_out), 3x3 depthwise (stride
    ``stride``), 1x1 projection (-> c_out/2), 1x1 extension (-> c_out). Each conv is followed by
    BatchNorm; all but the extension by ReLU (the stage applies ReLU after the dense sum).

    ``(B, c_in, H, W)`` -> ``(B, c_out, H/stride, W/stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        low = max(c_out // 2, 8)
        self.project_in = ConvBNReLU(c_in, low, 1)
        self.expand = ConvBNReLU(low, c_out, 1)
        self.depthwise = ConvBNReLU(c_out, c_out, 3, stride=stride, groups=c_out)
        self.project_out = ConvBNReLU(c_out, low, 1)
        self.extend = nn.Sequential(nn.Conv2d(low, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(self.expand(self.project_in(x)))
        return self.extend(self.project_out(x))


class PEPXStage(nn.Module):
    """A densely connected stage of PEPX modules.

    ``shortcut`` is a 1x1 projection of the stage input (average-pooled first when the stage
    downsamples). Module ``j`` receives ``ReLU(shortcut + out_0 + ... + out_{j-1})`` (module 0
    receives the raw stage input and does the downsampling); the stage returns
    ``ReLU(shortcut + out_0 + ... + out_{n-1})``. Summation, not concatenation, as in the
    released COVID-Net graph, so widths stay fixed.

    ``(B, c_in, H, W)`` -> ``(B, c_out, H/stride, W/stride)``.
    """

    def __init__(self, c_in: int, c_out: int, n_blocks: int, stride: int) -> None:
        super().__init__()
        pool: nn.Module = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.shortcut = nn.Sequential(
            pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.blocks = nn.ModuleList(
            PEPX(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1) for j in range(n_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.shortcut(x)
        out = self.blocks[0](x)
        for block in self.blocks[1:]:
            total = total + out
            out = block(F.relu(total))
        return F.relu(total + out)


class CovidNet(Classifier):
    """COVID-Net (Wang & Wong 2020), a faithful but smaller reimplementation.

    Stem: 7x7 stride-2 conv-BN-ReLU + 3x3 stride-2 max pool (480 -> 120). Four PEPX stages
    (default widths 64, 128, 256, 512 with 3, 4, 6, 3 modules; stride 1, 2, 2, 2 -> 15x15 at
    480 input), densely connected inside each stage (see :class:`PEPXStage`). Head: global
    average pool, FC 1024 - ReLU - FC 256 - ReLU - FC num_classes.

    Simplifications versus the paper: uniform PEPX widths per stage (the paper's
    machine-designed per-module widths are not reproduced); BatchNorm after every conv (trains
    reliably from scratch); global average pooling before the FC layers instead of flattening
    the 15x15 map (fewer parameters, any input size works); the paper's network is about 4x
    wider (~11.7M parameters) -- pass ``widths`` for that.

    Input ``(B, 3, H, W)`` (gray repeated, top 8% cropped, 480x480); logits ``(B, K)``.
    """

    def __init__(
        self,
        num_classes: int = 3,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        depths: tuple[int, int, int, int] = (3, 4, 6, 3),
        stem_channels: int = 64,
    ) -> None:
        super().__init__(num_classes, in_channels=3)
        stages: list[nn.Module] = [
            ConvBNReLU(3, stem_channels, 7, stride=2),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        c = stem_channels
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            stages.append(PEPXStage(c, width, depth, stride=1 if i == 0 else 2))
            c = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Linear(c, 1024),
            nn.ReLU(inplace=False),
            nn.Linear(1024, 256),
            nn.ReLU(inplace=False),
            nn.Linear(256, num_classes),
        )
        _init_weights(self)
        for m in self.head:
            if isinstance(m, nn.Linear) and m.out_features != num_classes:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


# ---------------------------------------------------------------------------------------------
# small and tiny
# ---------------------------------------------------------------------------------------------


class SmallCNN(Classifier):
    """Small gray-input CNN for CPU demos: ~250k parameters.

    5x5 stride-2 stem (1->16; the 5x5 kernel keeps fine lung texture from aliasing away),
    then 3x3 stride-2 conv-BN-ReLU blocks 16->32->64->128 and a 3x3 128->128 block at 1/16
    resolution (16x16 at 256 input; theoretical receptive field 65 px, a quarter of the image,
    so a burned-in letter fits inside one unit while the stem still sees 2-px texture),
    global average AND max pool concatenated (a small local finding such as a lone letter or
    one consolidation is diluted by averaging over 256 cells; the max keeps it), dropout,
    linear head.

    Input ``(B, 1, H, W)`` normalised gray; logits ``(B, num_classes)``.
    """

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Average and max pool concatenated: ``(B, F, h, w)`` -> ``(B, 2F)``."""
        return torch.cat(
            [
                F.adaptive_avg_pool2d(feats, 1).flatten(1),
                F.adaptive_max_pool2d(feats, 1).flatten(1),
            ],
            dim=1,
        )

    def __init__(self, num_classes: int = 3, dropout: float = 0.2) -> None:
        super().__init__(num_classes, in_channels=1)
        self.features = nn.Sequential(
            ConvBNReLU(1, 16, 5, stride=2),
            ConvBNReLU(16, 32, 3, stride=2),
            ConvBNReLU(32, 64, 3, stride=2),
            ConvBNReLU(64, 128, 3, stride=2),
            ConvBNReLU(128, 128, 3),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(256, num_classes))
        _init_weights(self)


class TinyCNN(Classifier):
    """Unit-test CNN (~5k parameters): two 3x3 stride-2 conv-BN-ReLU (1->16->32), GAP, linear.

    Input ``(B, 1, H, W)`` normalised gray; logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__(num_classes, in_channels=1)
        self.features = nn.Sequential(
            ConvBNReLU(1, 16, 3, stride=2), ConvBNReLU(16, 32, 3, stride=2)
        )
        self.head = nn.Linear(32, num_classes)
        _init_weights(self)
        nn.init.normal_(self.head.weight, std=0.1)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRecipe:
    """The training settings an architecture trains well with from scratch; each is used
    whenever the user does not set it (``TrainConfig`` fields left at None)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-3
    patience: int = 8  # 0: no early stopping
    schedule: str = "constant"  # learning rate over the epochs: constant | cosine
    warmup_epochs: int = 0  # linear learning-rate warm-up
    min_epochs: int = 0  # early stopping cannot end a run before this epoch
    smoothing: float = 0.0  # patience counts on an EMA of the validation metric (0: raw)
    monitor: str = "macro_f1"  # the validation metric that picks the best epoch and counts
    low_res_share: float = 0.0  # share of the epochs first trained at low_res_scale
    low_res_scale: float = 0.5
    note: str = ""

    def values(self) -> dict[str, float | int | str]:
        return {k: v for k, v in asdict(self).items() if k != "note"}

    def for_finetuning(self) -> TrainRecipe:
        """The rule for starting from a user's trained weights when an architecture names no
        fine-tuning recipe of its own: a tenth of the learning rate (the weights are already
        near a solution; the full rate would first undo them), at most one warm-up epoch, no
        minimum (a trained network has no plateau to wait out), every epoch at full size,
        the rest unchanged. Not benchmarked here: no trained user weights to start from."""
        return replace(
            self,
            lr=self.lr / 10,
            warmup_epochs=min(self.warmup_epochs, 1),
            min_epochs=0,
            low_res_share=0.0,  # the weights were trained at the input size: stay there
            note=f"fine-tuning: {self.note}" if self.note else "fine-tuning",
        )


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: ``builder(num_classes)`` returns a fresh, randomly
    initialised ``nn.Module`` taking ``preprocessing``'s output; ``recipe`` its default
    training settings."""

    name: str
    builder: Callable[[int], nn.Module]
    preprocessing: Preprocessing
    description: str
    recipe: TrainRecipe = TrainRecipe()
    finetune: TrainRecipe | None = None  # None: recipe.for_finetuning()

    @property
    def finetune_recipe(self) -> TrainRecipe:
        """The settings for training from a user's weights (``--init-weights``)."""
        return self.finetune if self.finetune is not None else self.recipe.for_finetuning()


_REGISTRY: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec, overwrite: bool = False) -> ArchSpec:
    """Add ``spec`` to the registry; a taken name raises ``ValueError`` unless ``overwrite``."""
    if not spec.name or spec.name != spec.name.strip():
        raise ValueError(f"architecture name must be a non-empty word, got {spec.name!r}")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_archs() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


TORCHVISION_PREFIX = "torchvision:"


def _torchvision_arch(name: str) -> ArchSpec:
    """``torchvision:NAME``: any classification model of ``torchvision.models``, randomly
    initialised (``weights=None``: nothing is downloaded), ImageNet preprocessing at 224 px
    unless a checkpoint records its own."""
    import torchvision.models

    model_name = name.removeprefix(TORCHVISION_PREFIX)
    known = torchvision.models.list_models(module=torchvision.models)
    if model_name not in known:
        raise ValueError(
            f"unknown architecture {name!r}: {model_name!r} is not a torchvision classification "
            "model (torchvision.models.list_models() names them: resnet18, densenet121, ...)"
        )
    return ArchSpec(
        name=name,
        builder=lambda k: torchvision.models.get_model(model_name, weights=None, num_classes=k),
        preprocessing=Preprocessing(224, 3, IMAGENET_MEAN, IMAGENET_STD),
        description=f"torchvision.models.{model_name}, randomly initialised",
        # full size throughout: some torchvision nets (ViT, MaxViT) take one input size only
        recipe=replace(LARGE_RECIPE, low_res_share=0.0, note="not benchmarked here"),
    )


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` called ``name`` (registered, ``torchvision:NAME``, or, through
    :mod:`.zoo`, ``timm:NAME`` and ``xrv:NAME``); an unknown name raises ``ValueError``
    listing the valid ones."""
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        return _torchvision_arch(name)
    if isinstance(name, str) and name not in _REGISTRY:
        from xraydebug.models.zoo import zoo_arch  # timm:NAME, xrv:NAME (optional extras)

        spec = zoo_arch(name)
        if spec is not None:
            return spec
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {name!r}; valid names: {', '.join(list_archs())}, or "
            f"{TORCHVISION_PREFIX}NAME for a torchvision classifier, timm:NAME for a timm "
            "model, xrv:NAME for a TorchXRayVision classifier"
        ) from None


def build_model(
    name: str, num_classes: int = 3, init_weights: Path | str | None = None
) -> nn.Module:
    """Build arch ``name`` with ``num_classes`` outputs, optionally loading a local state_dict.

    The model gets ``num_classes`` and ``arch_name`` attributes. ``init_weights`` goes through
    :func:`load_init_weights` (strict; whole model or, for ``covidnext``, the backbone).
    """
    spec = get_arch(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = spec.builder(num_classes)
    model.num_classes = num_classes
    model.arch_name = name
    if init_weights is not None:
        load_init_weights(model, init_weights)
    return model


# Chosen by benchmarks/train_recipe_bench.py on seed 0 of its hard set (faint lesions, twice
# the pose jitter, no text; 429 training films at 256 px), where the previous recipe (30
# constant epochs, patience 10 from epoch 1 on raw validation macro-F1) stopped on the
# plateau near chance (test accuracy 0.41; 100 cosine epochs: 0.78). Measured there, each one
# run (test accuracy): after 40 constant epochs batch 8 stood at 0.48 and weight decay 0 at
# 0.58, its training loss on the same slow path as with 1e-3; 50 cosine epochs with batch 32
# and lr 2e-3 were no better (0.67 vs 0.65 for 55 at batch 16) and slower per epoch; lr 3e-3
# with warm-up never left chance (0.38), 3e-4 crawled (0.52 after 40), so 1e-3 stays; without
# augmentation the net memorised the films (0.45); an EMA of the weights gained nothing (0.64
# after 50 cosine epochs). What paid
# is progressive resizing: the first epochs on films at half size (a 128 px epoch costs a
# third of a 256 px one, and the faint, large lesions are found sooner there), then the rest
# at full size to settle the model at its input size. 80 epochs with the first 60 at half
# size reached 0.73 (the switch to full size came too late in the cosine decay to recover);
# with the first 48 at half size 0.77. Early stopping cannot fire in the half-size epochs
# (they validate at half size too) and counts patience on an EMA of validation macro-F1, so
# one lucky or unlucky epoch on a 51-film validation split neither ends nor extends a run.
SMALL_RECIPE = TrainRecipe(
    epochs=80,
    batch_size=16,
    lr=1e-3,
    patience=10,
    schedule="cosine",
    warmup_epochs=3,
    smoothing=0.6,
    low_res_share=0.6,
    note="benchmarks/train_recipe_bench.py: 3 seeds of a subtle-signal set",
)

# Not benchmarked here (an hour a run on 2 cores): small's rules, with the previous lr, batch
# and weight decay of these nets: cosine with warm-up, patience on a smoothed signal, and half
# the epochs (small: 60%) at half size, so 40 epochs cost about what the previous 30
# full-size ones did.
LARGE_RECIPE = TrainRecipe(
    epochs=40,
    batch_size=32,
    lr=1e-4,
    patience=8,
    schedule="cosine",
    warmup_epochs=3,
    smoothing=0.6,
    low_res_share=0.5,
    note="not benchmarked here: small's rules; benchmark where a GPU is lent",
)

register_arch(
    ArchSpec(
        name="covidnext",
        builder=lambda k: CovidNext(k),
        preprocessing=Preprocessing(256, 3, IMAGENET_MEAN, IMAGENET_STD),
        description="COVID-Next as in the iGOS++ COVIDx experiment: ResNeXt-50 (32x4d) + "
        "3 conv-BN-ReLU blocks + linear head, 256 px, ImageNet mean/std (~36M params).",
        recipe=LARGE_RECIPE,
    )
)
register_arch(
    ArchSpec(
        name="covidnet",
        builder=lambda k: CovidNet(k),
        preprocessing=Preprocessing(480, 3, IMAGENET_MEAN, IMAGENET_STD, crop_top=0.08),
        description="COVID-Net (Wang & Wong 2020) PEPX design, densely connected stages, "
        "480 px with the top 8% cropped (reduced width, ~3.5M params).",
        recipe=LARGE_RECIPE,
    )
)
register_arch(
    ArchSpec(
        name="small",
        builder=lambda k: SmallCNN(k),
        preprocessing=Preprocessing(256, 1, (0.5,), (0.25,)),
        description="Small fast gray CNN for CPU demos (256 px, ~250k params).",
        recipe=SMALL_RECIPE,
    )
)
register_arch(
    ArchSpec(
        name="tiny",
        builder=lambda k: TinyCNN(k),
        preprocessing=Preprocessing(64, 1, (0.5,), (0.25,)),
        description="Tiny CNN for unit tests (64 px, ~5k params).",
        # benchmarks/train_recipe_bench.py --arch tiny --lesion-strength 1.0: at 64 px this
        # 5k-parameter net learns no chest set (100 cosine epochs: test accuracy 0.44, 0.34,
        # 0.37 for 3 classes), so no recipe can be settled for it there; it stays the one the
        # tests' fixture learns in seconds (tests/test_train_evaluate.py checks it)
        recipe=TrainRecipe(epochs=6, batch_size=8, lr=1e-2, patience=10, note="unit tests"),
    )
)


# ---------------------------------------------------------------------------------------------
# Loading local init weights
# ---------------------------------------------------------------------------------------------

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    payload = load_weights_only(path, "init weights file", "")
    state = payload
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), Mapping):
                state = payload[key]
                break
    if not isinstance(state, Mapping) or not state:
        if isinstance(payload, Mapping):
            found = f"keys {sorted(map(str, payload))[:6]}" if payload else "an empty dict"
        else:
            found = f"a {type(payload).__name__}"
        raise CheckpointError(
            f"{path}: expected a state_dict (name -> tensor) or a dict with a 'state_dict' or "
            f"'model' entry; found {found}"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: expected a state_dict (name -> tensor) or a dict with a 'state_dict' or "
            f"'model' entry; {len(bad)} entries are not tensors, e.g. {bad[:3]}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        out[name] = value
    return out


def check_state_fits(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str
) -> None:
    """Raise :class:`CheckpointError` ``"<what>: N missing, N unexpected, N with another
    shape; ..."`` (counts plus the first few keys and shapes) unless the weights ``state``
    fit the ``target`` state_dict; a missing BatchNorm counter does not count."""
    missing = [
        k for k in target if k not in state and not k.endswith("num_batches_tracked")
    ]  # BatchNorm fills a missing counter itself
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"{what}: {len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} with "
        "another shape"
    ]
    if missing:
        parts.append(f"missing e.g. {', '.join(missing[:4])}")
    if unexpected:
        parts.append(f"unexpected e.g. {', '.join(unexpected[:4])}")
    if shapes:
        parts.append(f"shape mismatch e.g. {'; '.join(shapes[:3])}")
    raise CheckpointError("; ".join(parts))


def load_init_weights(model: nn.Module, path: Path | str) -> str:
    """Load a local state_dict file into ``model`` strictly; returns ``"model"`` or
    ``"backbone"`` (where the weights went).

    The file is read with ``torch.load(weights_only=True)`` (no code runs). Accepted contents:
    a raw state_dict, or a dict with a ``'state_dict'`` or ``'model'`` entry (so an xraydebug
    checkpoint works too). ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile)
    key prefixes are stripped.

    Backbone-only files: when ``model`` has a ``backbone`` submodule (``covidnext``) and the
    file's keys fit that submodule better than the whole model, the weights are loaded into
    the backbone -- again strictly, except that keys under the backbone's
    ``init_ignore_prefixes`` (torchvision's ImageNet ``fc.*`` classifier) are dropped. So a
    torchvision ``resnext50_32x4d`` state_dict saved by the user initialises the ResNeXt
    features while the extra blocks and the head keep their random init.

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not match; the message gives
            counts plus the first few missing/unexpected keys and shape mismatches.
    """
    path = Path(path)
    state = _read_state_dict(path)
    target: nn.Module = model
    where = "model"
    target_state = model.state_dict()
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        backbone_state = backbone.state_dict()
        if sum(k in backbone_state for k in state) > sum(k in target_state for k in state):
            ignore = tuple(getattr(backbone, "init_ignore_prefixes", ()))
            state = {
                k: v for k, v in state.items() if k in backbone_state or not k.startswith(ignore)
            }
            target, where, target_state = backbone, "backbone", backbone_state
    arch = getattr(model, "arch_name", type(model).__name__)
    check_state_fits(
        state, target_state, f"{path}: init weights do not fit {where} of arch {arch!r}"
    )
    target.load_state_dict(state, strict=True)
    return where
