"""The side-letter network: does a glyph read as "L" or "R", in any typeface?

A small convolutional network (about 90k parameters) over a glyph cut by the detector's own
code: its binarised shape letterboxed into 32 x 32 pixels, with the grey levels under it
(:func:`xraydebug.text.glyphs.glyph_input`). :mod:`xraydebug.text.train_letter_net` trains it
on "L" and "R" in the benchmark's *tuning* font families (DejaVu, Computer Modern, Lato,
Caladea, Fjalla One; upright, turned, mirrored, stencilled, blurred and JPEG-compressed)
against every other capital and digit of those fonts, procedural device-like shapes (rings,
arcs, bars, hooks, corners), and the proposals the detector makes on synthetic films with
markers in those fonts. The benchmark's held-out families and renderers were never seen. The
weights ship with the package (``weights/side_letter_net.pt``; its card
``weights/side_letter_net.json`` records the sha256, the command and the held-back scores).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xraydebug.errors import CheckpointError
from xraydebug.fsutil import file_sha256

__all__ = [
    "IN_CHANNELS",
    "SHAPE_PX",
    "LetterNet",
    "letter_probabilities",
    "load_letter_net",
    "weights_path",
]

SHAPE_PX = 32  # the network's input is SHAPE_PX x SHAPE_PX
IN_CHANNELS = 2  # the glyph's mask and its grey levels (xraydebug.text.glyphs.glyph_input)
_WEIGHTS = Path(__file__).parent / "weights" / "side_letter_net.pt"
_CARD = _WEIGHTS.with_suffix(".json")


class LetterNet(nn.Module):
    """Glyph input float ``(B, 2, 32, 32)`` in [0, 1] (mask, grey) -> side-letter logit
    ``(B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(IN_CHANNELS, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (SHAPE_PX // 8) ** 2, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(64, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def weights_path() -> Path:
    """The shipped weights file."""
    return _WEIGHTS


@lru_cache(maxsize=1)
def load_letter_net() -> LetterNet:
    """The shipped network in eval mode on the CPU (cached). Raises :class:`CheckpointError`
    when the weights are missing or differ from the sha256 their card records."""
    if not _WEIGHTS.is_file() or not _CARD.is_file():
        raise CheckpointError(
            f"side-letter network weights missing ({_WEIGHTS}); reinstall xraydebug or run "
            "python -m xraydebug.text.train_letter_net"
        )
    expected = json.loads(_CARD.read_text())["sha256"]
    if file_sha256(_WEIGHTS) != expected:
        raise CheckpointError(f"{_WEIGHTS} does not match the sha256 in {_CARD.name}")
    net = LetterNet()
    net.load_state_dict(torch.load(_WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval()


def letter_probabilities(inputs: np.ndarray) -> np.ndarray:
    """Side-letter probability of each glyph: float32 ``(N, 2, 32, 32)`` in [0, 1] -> float32
    ``(N,)`` in [0, 1], the mean over the eight quarter turns and mirror images of each input
    (a side letter is one under all of them)."""
    if inputs.ndim != 4 or inputs.shape[1:] != (IN_CHANNELS, SHAPE_PX, SHAPE_PX):
        raise ValueError(
            f"expected inputs (N, {IN_CHANNELS}, {SHAPE_PX}, {SHAPE_PX}); got {inputs.shape}"
        )
    net = load_letter_net()
    x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))
    views = [torch.rot90(v, k, (2, 3)) for v in (x, x.flip(3)) for k in range(4)]
    with torch.inference_mode():
        p = torch.sigmoid(net(torch.cat(views))).reshape(len(views), len(x)).mean(0)
    return p.numpy().astype(np.float32)
