"""Batched augmentations that are valid for chest radiographs.

Small affine jitter (rotation, scale, shift) and intensity jitter (brightness, contrast, gamma).
No flips: a vertical flip is anatomically impossible and a horizontal flip swaps the heart side
and mirrors laterality markers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 7.0
    scale: float = 0.08
    shift: float = 0.05
    brightness: float = 0.08
    contrast: float = 0.15
    gamma: float = 0.15

    def to_dict(self) -> dict:
        return asdict(self)


def augment_batch(
    gray: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Randomly jitter a batch. ``gray`` (B, 1, H, W) in [0, 1] -> same shape, in [0, 1].

    Random numbers come from ``generator`` (CPU) so runs are reproducible on any device.
    """
    b = gray.shape[0]

    def uniform(spread: float) -> torch.Tensor:
        return ((torch.rand(b, generator=generator) * 2 - 1) * spread).to(gray.device)

    angle = uniform(math.radians(config.rotate_deg))
    scale = 1 + uniform(config.scale)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, uniform(config.shift) * 2], dim=1),
            torch.stack([sin, cos, uniform(config.shift) * 2], dim=1),
        ],
        dim=1,
    ).to(gray.dtype)
    grid = F.affine_grid(theta, list(gray.shape), align_corners=False)
    out = F.grid_sample(gray, grid, mode="bilinear", padding_mode="border", align_corners=False)
    view = (b, 1, 1, 1)
    gamma = torch.exp(uniform(config.gamma)).view(view).to(gray.dtype)
    out = out.clamp(0, 1) ** gamma
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (1 + uniform(config.contrast)).view(view).to(gray.dtype)
    brightness = uniform(config.brightness).view(view).to(gray.dtype)
    return ((out - mean) * contrast + mean + brightness).clamp(0, 1)
