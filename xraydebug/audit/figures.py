"""Pictures for the HTML audit report: thumbnails, saliency overlays, matplotlib charts.

Everything returns ``data:`` URIs so the report stays one self-contained file. Colours follow
colour-blind-safe choices: the saliency colormap is ``cividis`` (monotone in lightness, readable
with any colour-vision deficiency and in grey print); charts use the Okabe-Ito palette plus
marker shapes and hatching, so colour is never the only cue.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

SALIENCY_CMAP = "cividis"
BEFORE_COLOUR = "#E69F00"  # Okabe-Ito orange
AFTER_COLOUR = "#0072B2"  # Okabe-Ito blue
BOX_COLOUR = (255, 255, 255)
BOX_SHADOW = (0, 0, 0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def jpeg_uri(image: np.ndarray, quality: int = 80) -> str:
    """``image``: uint8 (H, W) gray or (H, W, 3) RGB -> ``data:image/jpeg`` URI."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    return data_uri(buffer.getvalue(), "image/jpeg")


def thumbnail_scale(shape: tuple[int, int], long_side: int) -> float:
    """Factor that brings the longer side of ``shape`` to ``long_side`` (never enlarges)."""
    return min(1.0, long_side / max(shape))


def thumbnail(gray: np.ndarray, long_side: int) -> np.ndarray:
    """``gray`` float (H, W) in [0, 1] -> uint8 (h, w), area-downsampled to ``long_side``."""
    scale = thumbnail_scale(gray.shape, long_side)
    height, width = (max(1, round(n * scale)) for n in gray.shape)
    small = cv2.resize(gray.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """``values`` (H, W) in [0, 1] -> uint8 RGB (H, W, 3) in :data:`SALIENCY_CMAP`."""
    from matplotlib import colormaps

    rgba = colormaps[SALIENCY_CMAP](np.clip(values, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def saliency_overlay(gray_small: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Saliency blended over the radiograph: uint8 RGB (h, w, 3).

    ``gray_small``: uint8 (h, w) thumbnail; ``saliency``: float (H, W) >= 0 at any resolution,
    normalised here to its maximum. Opacity grows with saliency (0.15 to 0.75), so anatomy stays
    visible where the model does not look.
    """
    height, width = gray_small.shape
    sal = cv2.resize(saliency.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    peak = float(sal.max())
    sal = sal / peak if peak > 0 else sal
    alpha = (0.15 + 0.6 * sal)[..., None]
    base = np.repeat(gray_small[..., None], 3, axis=2).astype(np.float32)
    blended = base * (1 - alpha) + colormap(sal).astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[float]], scale: float) -> np.ndarray:
    """Outline ``boxes`` (original pixel coordinates ``[x0, y0, x1, y1]``) on a thumbnail.

    White outline over a black one (visible on any background) and a number per box ("T1",
    "T2", ...) matching the report's text, so the boxes do not rely on colour.
    """
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    canvas = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(canvas)
    for number, box in enumerate(boxes, 1):
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=BOX_SHADOW, width=3)
        draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=1)
        label = f"T{number}"
        ty = y0 - 11 if y0 >= 11 else y1 + 1
        draw.rectangle((x0, ty, x0 + 6 * len(label) + 2, ty + 10), fill=BOX_SHADOW)
        draw.text((x0 + 1, ty - 1), label, fill=BOX_COLOUR)
    return np.asarray(canvas)


def _figure_uri(fig) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return data_uri(buffer.getvalue(), "image/png")


def colorbar_uri() -> str:
    """A horizontal legend of the saliency colormap, 'low' to 'high'."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.2, 0.55))
    ax.imshow(np.linspace(0, 1, 256)[None, :], aspect="auto", cmap=SALIENCY_CMAP)
    ax.set_yticks([])
    ax.set_xticks([0, 255], ["low", "high"])
    ax.set_xlabel("share of the evidence the model uses (insertion saliency)", fontsize=8)
    ax.tick_params(labelsize=8)
    return _figure_uri(fig)


def confusion_uri(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> str:
    """Confusion matrix (rows true class, columns predicted) with counts and row shares."""
    plt = _pyplot()
    cm = np.asarray(matrix, dtype=float)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.1 * k + 1.6, 1.0 * k + 1.2))
    ax.imshow(shares, cmap="Greys", vmin=0, vmax=1.6)
    for i in range(k):
        for j in range(k):
            weight = "bold" if i == j else "normal"
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                fontweight=weight,
            )
    ax.set_xticks(range(k), classes, rotation=20, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    ax.set_title(title, fontsize=9)
    return _figure_uri(fig)


def before_after_uri(
    result: dict,
    classes: Sequence[str],
    title: str,
    metrics: Sequence[str] = ("precision", "recall"),
    per: str = "per_class",
) -> str:
    """``metrics`` per class (or finding: ``per="per_finding"``), before (circles) and after
    (squares), with 95% CIs; an undefined value (None, e.g. an AUROC without positives) is
    left out."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 2.6), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(classes))
    for ax, metric in zip(axes, metrics, strict=True):
        for offset, side, colour, marker in (
            (-0.12, "before", BEFORE_COLOUR, "o"),
            (0.12, "after", AFTER_COLOUR, "s"),
        ):
            rows = [
                (k, result[side][per][c][metric], result[side]["ci"][per][c][metric])
                for k, c in enumerate(classes)
                if result[side][per][c][metric] is not None
            ]
            if not rows:
                continue
            at, values, cis = zip(*rows, strict=True)
            low = [v - lo for v, (lo, _hi) in zip(values, cis, strict=True)]
            high = [hi - v for v, (_lo, hi) in zip(values, cis, strict=True)]
            ax.errorbar(
                values,
                np.asarray(at) + offset,
                xerr=[np.maximum(low, 0), np.maximum(high, 0)],
                fmt=marker,
                color=colour,
                capsize=3,
                label=side,
            )
        ax.set_xlim(0, 1.02)
        ax.set_title(metric if metric != "auroc" else "AUROC", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(y, classes)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.1))
    fig.suptitle(title, fontsize=9, y=1.04)
    return _figure_uri(fig)
