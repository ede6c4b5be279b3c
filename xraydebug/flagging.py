"""Shortcut flagging: does an explanation's insertion mass sit on burned-in text?

For one image with text boxes (original pixel coordinates):

- ``mass_in_text``: share of the insertion saliency ``1 - M_ins`` (mapped back to the original
  image, rows removed by ``crop_top`` get zero) that falls inside the boxes;
- ``text_area``: share of the image area inside the boxes;
- ``text_reveal_prob``: the explained class's probability when only the boxes are revealed on
  the blurred baseline (the iGOS++ paper's confirmation test).

An image is flagged when the mass is concentrated on text well beyond its area AND revealing
the text alone already supports the class (see :class:`FlagRule`; defaults calibrated on
``xraydebug synth`` data, see ``benchmarks/flag_bench.py`` and the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch

from xraydebug.text.inpaint import box_mask


@dataclass(frozen=True)
class FlagRule:
    """Flag if ``mass_in_text >= min_mass``, ``mass_in_text >= min_ratio * text_area`` and
    ``text_reveal_prob >= min_reveal_prob``.

    Calibration (``benchmarks/flag_bench.py``: 40 synthetic test images, 17 with text, of which
    the shortcut model relies on 7, i.e. its class probability drops by >= 0.2 on the image's
    text-free twin): ``min_mass=0.05, min_ratio=3`` flags 5 images, precision 1.00, recall 0.71;
    ``min_mass=0.10`` flags 1 (precision 1.00, recall 0.14). The reveal threshold did not change
    the result there; it is kept at 0.5 as the paper's confirmation test.
    """

    min_mass: float = 0.05
    min_ratio: float = 3.0
    min_reveal_prob: float = 0.5

    def __call__(self, mass_in_text: float, text_area: float, reveal_prob: float) -> bool:
        return (
            text_area > 0
            and mass_in_text >= self.min_mass
            and mass_in_text >= self.min_ratio * text_area
            and reveal_prob >= self.min_reveal_prob
        )


def saliency_to_original(
    saliency: np.ndarray, shape: tuple[int, int], crop_rows: int
) -> np.ndarray:
    """Map a model-space map (S, S) to the original image (H, W); cropped rows get 0."""
    height, width = shape
    out = np.zeros((height, width), dtype=np.float32)
    resized = cv2.resize(
        saliency.astype(np.float32), (width, height - crop_rows), interpolation=cv2.INTER_LINEAR
    )
    out[crop_rows:] = np.clip(resized, 0, None)
    return out


def text_mass(
    saliency: np.ndarray, boxes: Sequence[Sequence[int]], shape: tuple[int, int], crop_rows: int
) -> tuple[float, float]:
    """(mass_in_text, text_area) for one image; both in [0, 1], 0 when there are no boxes."""
    if not boxes:
        return 0.0, 0.0
    full = saliency_to_original(saliency, shape, crop_rows)
    inside = box_mask(shape, boxes, dilate=0) > 0
    total = float(full.sum())
    mass = float(full[inside].sum()) / total if total > 0 else 0.0
    return mass, float(inside.mean())


def model_box_mask(
    boxes: Sequence[Sequence[int]], shape: tuple[int, int], crop_rows: int, size: int
) -> np.ndarray:
    """Box coverage at model resolution: float32 (size, size) in [0, 1] (area-averaged)."""
    full = box_mask(shape, boxes, dilate=0)[crop_rows:].astype(np.float32) / 255.0
    return cv2.resize(full, (size, size), interpolation=cv2.INTER_AREA)


def reveal_inputs(
    images: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """Blurred baseline everywhere except the text boxes, where the image shows.

    ``images``, ``baseline``: (B, C, S, S) model inputs; ``masks``: (B, 1, S, S) in [0, 1].
    """
    return baseline * (1 - masks) + images * masks


def apply_flags(table: pd.DataFrame, rule: FlagRule) -> pd.DataFrame:
    """Set ``flagged`` ("true"/"false"; "" where text was not measured) from a scan table's
    text columns (``status``, ``n_boxes``, ``mass_in_text``, ``text_area``,
    ``text_reveal_prob``)."""
    table = table.copy()
    measured = (table["status"] == "ok") & (table["n_boxes"].astype(str) != "")
    mass = pd.to_numeric(table["mass_in_text"], errors="coerce").fillna(0.0)
    area = pd.to_numeric(table["text_area"], errors="coerce").fillna(0.0)
    reveal = pd.to_numeric(table["text_reveal_prob"], errors="coerce").fillna(0.0)
    flags = [rule(m, a, r) for m, a, r in zip(mass, area, reveal, strict=True)]
    table["flagged"] = [
        ("true" if f else "false") if ok else "" for f, ok in zip(flags, measured, strict=True)
    ]
    return table
