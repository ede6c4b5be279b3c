"""``xraydebug inpainter train``: fit the ``learned`` inpainter on a dataset's own films.

Self-supervised: random crops of the TRAIN split's films (display gray, at their own
resolution, and from copies scaled down by powers of two so that holes wider than the network
reaches are learned as inference sees them, :mod:`xraydebug.inpaint.learned`), random holes
(:mod:`xraydebug.inpaint.holes`) punched into them, the network asked to put the pixels back.
Burned-in text on the training films is no target: its boxes (from an ``xraydebug text`` run,
``text``, else found by the default text detector first) are left out of the loss. Crops are
normalised exactly as inference normalises a window; flips and quarter turns multiply them.

Judged on held-out films (the TEST split; without one, a seeded tenth of the training films
kept out of training): a fixed, seeded set of text-box-like holes over text-free regions,
PSNR inside the holes (display gray, peak 1) of the network against ``telea`` and a fill with
the mean of each window's known pixels. The table goes into the model card.

Writes ``out`` (weights, network config, training config, data identity, the table) and its
model card ``out.json`` / ``out.md``, atomically; ``.<name>.resume.pt`` beside ``out`` every
``save_every`` steps (and on Ctrl-C) lets a rerun with the same config and data continue. A run
whose checkpoint is already there for the same config and data is not repeated unless forced.

The default (``InpainterTrainConfig()``, 2,000 steps) is sized for about 15 minutes on 2 CPU
cores with native bf16 (2-core Xeon, AVX512-BF16): 2,000 steps took 1,250 s on the demo's films
(``SynthConfig(n_train=480, n_test=240, size=256)``) and 590 s on 1024 px films, both while
other jobs shared the two cores (so at most that), after 2 min 16 s of finding text on the 528
training and held-out films with the default detector. Without native bf16 the network's steps
run in float32, about 2-3x slower.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from xraydebug.data.imageio import read_image
from xraydebug.data.labels import LABELS_UNUSED
from xraydebug.data.layouts import load_index
from xraydebug.data.records import STATUS_ERROR, DatasetIndex, ImageRecord
from xraydebug.data.text_pool import boxes_from_table
from xraydebug.device import machine_info, machine_line, resolve_device
from xraydebug.errors import DatasetError, ImageReadError
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256
from xraydebug.runfolder import TEXT_CSV
from xraydebug.text.inpaint import box_mask

from .base import make_inpainter
from .classical import hole_windows
from .holes import box_holes, random_holes
from .learned import (
    INPAINTER_FORMAT,
    InpaintNet,
    LearnedInpainter,
    NetConfig,
    net_autocast,
    network_input,
    network_payload,
    parameter_count,
    span_floor,
    window_scale,
)

__all__ = [
    "HeldOutConfig",
    "HoleMix",
    "InpainterTrainConfig",
    "InpainterTrainResult",
    "LossConfig",
    "train_inpainter",
]

TEXT_DILATE = 4  # px around a training film's text boxes kept out of the loss


@dataclass(frozen=True)
class HoleMix:
    """The training holes: 1 to ``count`` per crop, kinds (box, text, stroke) drawn with
    ``weights``, short sides from ``min_side`` px to the network's ``max_hole``."""

    weights: tuple[float, float, float] = (0.55, 0.25, 0.2)
    count: int = 3
    min_side: float = 3.0


@dataclass(frozen=True)
class LossConfig:
    """L1 inside the holes plus ``gradient`` x L1 of the horizontal and vertical differences
    (edges carried across); ``film_units``: errors measured in each film's range (a flat window
    of air, normalised to its own small span, does not outweigh anatomy), else in the window's
    normalised units."""

    gradient: float = 0.0
    film_units: bool = True


@dataclass(frozen=True)
class HeldOutConfig:
    """The held-out judgement: up to ``films`` films, ``holes`` text-box rectangles each, short
    sides ``min_frac``-``max_frac`` of the film's short side (burned-in markers grown by a few
    pixels), drawn from ``seed``."""

    films: int = 48
    holes: int = 3
    min_frac: float = 0.03
    max_frac: float = 0.08
    seed: int = 1234


@dataclass(frozen=True)
class InpainterTrainConfig:
    """Everything that determines a run (stored in the checkpoint). ``crop``: training crops'
    side (px); ``downscaled``: share of crops taken from the films scaled down by 2, 4, ...
    (where a copy is still at least ``crop``); ``text_sites``: share of crops around places
    where the training films have text (corners and edges, where the holes of ``clean`` are);
    ``lr`` decays on a cosine to ``lr * lr_final`` after ``warmup`` steps; ``amp``: bf16 where
    the device computes it natively; ``save_every``: steps between resume files;
    ``cache_mb``: films held in memory at once (more are cycled through in turns)."""

    net: NetConfig = field(default_factory=NetConfig)
    holes: HoleMix = field(default_factory=HoleMix)
    loss: LossConfig = field(default_factory=LossConfig)
    held_out: HeldOutConfig = field(default_factory=HeldOutConfig)
    steps: int = 2000
    batch_size: int = 16
    crop: int = 96
    lr: float = 2e-3
    lr_final: float = 0.02
    warmup: int = 100
    downscaled: float = 0.25
    text_sites: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    save_every: int = 250
    cache_mb: int = 3072

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1; got {self.steps}, {self.batch_size}"
            )
        if self.crop < max(16, self.net.multiple):
            raise ValueError(
                f"crop must be at least {max(16, self.net.multiple)} px; got {self.crop}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if not 0.0 <= self.downscaled <= 1.0:
            raise ValueError(f"downscaled must be in [0, 1]; got {self.downscaled}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def identity(self) -> dict[str, Any]:
        """What a resume file or a finished checkpoint must match (not where or how often)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("device", "save_every")}


@dataclass
class InpainterTrainResult:
    checkpoint: Path
    card_json: Path
    card_md: Path
    steps: int
    seconds: float
    held_out: dict[str, Any]
    parameters: int
    reused: bool = False  # the checkpoint was there already for this config and data
    resumed_from: int = 0  # the step a resume file continued from (0: a fresh run)
    skipped: list[str] = field(default_factory=list)


# -- films -------------------------------------------------------------------------------------
def _films(index: DatasetIndex, seed: int) -> tuple[list[ImageRecord], list[ImageRecord], str]:
    """(training films, held-out films, where the held-out ones come from)."""
    readable = sorted((r for r in index.records if r.status != STATUS_ERROR), key=lambda r: r.path)
    train = [r for r in readable if r.split == "train"]
    test = [r for r in readable if r.split == "test"]
    if not train:
        raise DatasetError(f"{index.root}: no readable training films (train split)")
    if test:
        return train, test, "test split"
    order = np.random.default_rng(seed).permutation(len(train))
    n_out = max(1, len(train) // 10) if len(train) > 1 else 0
    held = sorted((train[i] for i in order[:n_out]), key=lambda r: r.path)
    kept = sorted((train[i] for i in order[n_out:]), key=lambda r: r.path)
    if not held or not kept:
        raise DatasetError(f"{index.root}: too few films to hold some out for judging")
    return kept, held, "a seeded tenth of the train split (no test split)"


def data_identity(index: DatasetIndex, train: list[ImageRecord], held: list[ImageRecord]) -> dict:
    """sha256 over the sorted (split, path, file size) of the films used."""
    digest = hashlib.sha256()
    for tag, records in (("train", train), ("held", held)):
        for rec in records:
            size = (index.root / rec.path).stat().st_size
            digest.update(f"{tag}\t{rec.path}\t{size}\n".encode())
    return {"sha256": digest.hexdigest(), "n_train": len(train), "n_held_out": len(held)}


def _text_boxes(
    index: DatasetIndex,
    records: list[ImageRecord],
    text: Path | None,
    config: InpainterTrainConfig,
    progress: Progress,
    skipped: list[str],
) -> tuple[dict[str, list[list[int]]], dict[str, Any]]:
    """Text boxes per film path: from ``text`` (a text run folder, or its csv) where it has
    the film, else from the default text detector (films read and detected in batches)."""
    known: dict[str, list[list[int]]] = {}
    source: dict[str, Any] = {}
    if text is not None:
        csv = text / TEXT_CSV if text.is_dir() else text
        if not csv.is_file():
            raise FileNotFoundError(f"--text {text}: no {TEXT_CSV} there (run `xraydebug text`)")
        known = boxes_from_table(csv)
        source = {"text_csv": str(csv), "sha256": file_sha256(csv)}
    missing = [r for r in records if r.path not in known]
    if missing:
        from xraydebug.text import build_detector, detector_config

        detector = build_detector(detector_config(), device=config.device).load()
        source["detector"] = {k: v for k, v in detector.describe().items() if k != "device"}
        task = progress.add_task("finding text", total=len(missing), status="")
        for start in range(0, len(missing), 8):
            batch = missing[start : start + 8]
            images, kept = [], []
            for rec in batch:
                try:
                    images.append(read_image(index.root / rec.path)[0])
                    kept.append(rec)
                except ImageReadError as exc:
                    skipped.append(str(exc))
            for rec, boxes in zip(kept, detector.detect(images) if images else [], strict=True):
                known[rec.path] = [[int(v) for v in b] for b in boxes]
            progress.update(task, advance=len(batch))
        source["detected_films"] = len(missing)
    return known, source


@dataclass
class _Film:
    """One training film in memory: per level (native, /2, /4, ...) its pixels (uint16,
    display gray x 65535), text mask and span floor."""

    levels: list[np.ndarray]
    text: list[np.ndarray]
    floors: list[float]
    sites: np.ndarray  # (k, 2): centres of its text boxes, as shares of its height and width


def _load_film(path: Path, boxes: list[list[int]], config: InpainterTrainConfig) -> _Film:
    gray = read_image(path)[0]
    crop = config.crop
    if min(gray.shape) < crop:  # a small film: mirrored out to one crop
        pad_h, pad_w = max(0, crop - gray.shape[0]), max(0, crop - gray.shape[1])
        gray = cv2.copyMakeBorder(gray, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)
    text = box_mask(gray.shape, boxes, TEXT_DILATE)
    sites = np.array(
        [[(b[1] + b[3]) / 2 / gray.shape[0], (b[0] + b[2]) / 2 / gray.shape[1]] for b in boxes],
        dtype=np.float32,
    ).reshape(-1, 2)
    levels, texts, floors = [], [], []
    while True:
        levels.append(np.round(gray * 65535.0).astype(np.uint16))
        texts.append(text)
        floors.append(span_floor(gray, config.net.min_span))
        if config.downscaled <= 0 or min(gray.shape) // 2 < crop:
            break
        size = (gray.shape[1] // 2, gray.shape[0] // 2)
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        text = (cv2.resize(text, size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8) * 255
    return _Film(levels, texts, floors, sites)


class _FilmCache:
    """The training films in memory, in turns of at most ``cache_mb`` when they do not fit."""

    def __init__(
        self,
        index: DatasetIndex,
        records: list[ImageRecord],
        boxes: dict[str, list[list[int]]],
        config: InpainterTrainConfig,
        skipped: list[str],
    ) -> None:
        self.index, self.boxes, self.config, self.skipped = index, boxes, config, skipped
        self.records = [r for r in records if r.path in boxes]  # the readable ones
        self.turns: list[list[int]] = [list(range(len(self.records)))]
        self.current: int | None = None
        self.films: list[_Film] = []

    def plan(self, progress: Progress) -> None:
        """Load the first turn, and split the films into turns if they exceed ``cache_mb``."""
        budget = self.config.cache_mb * 2**20
        task = progress.add_task("loading films", total=len(self.records), status="")
        films, used, cut = [], 0, None
        for i, rec in enumerate(self.records):
            film = self._read(rec)
            progress.update(task, advance=1)
            if film is None:
                continue
            nbytes = sum(level.nbytes * 2 for level in film.levels)
            if used + nbytes > budget and films:
                cut = i
                break
            films.append(film)
            used += nbytes
        if cut is None:
            self.films = films
            self.turns = [list(range(len(self.records)))]
            self.current = 0
            progress.update(task, completed=len(self.records))
            return
        per_turn = max(1, cut)
        order = list(range(len(self.records)))
        self.turns = [order[i : i + per_turn] for i in range(0, len(order), per_turn)]
        self.films, self.current = films, 0
        progress.update(task, completed=len(self.records))

    def _read(self, rec: ImageRecord) -> _Film | None:
        try:
            return _load_film(self.index.root / rec.path, self.boxes.get(rec.path, []), self.config)
        except ImageReadError as exc:
            self.skipped.append(str(exc))
            return None

    def films_for(self, step: int) -> list[_Film]:
        """The films of the turn that ``step`` (0-based) draws from."""
        if len(self.turns) > 1:
            span = max(1, self.config.steps // (4 * len(self.turns)))
            turn = (step // span) % len(self.turns)
            if turn != self.current:
                loaded = (self._read(self.records[i]) for i in self.turns[turn])
                self.films = [f for f in loaded if f is not None]
                self.current = turn
        if not self.films:
            raise DatasetError(f"{self.index.root}: no readable training films")
        return self.films


# -- batches -----------------------------------------------------------------------------------
def _sample(
    rng: np.random.Generator,
    films: list[_Film],
    sites: np.ndarray,
    config: InpainterTrainConfig,
) -> tuple:
    """One training crop: (normalised values, hole, loss weight, film-units factor). A share
    ``text_sites`` of the crops lie around a place where some training film has text (of
    another film, mostly: its own text is out of the loss anyway), the rest anywhere."""
    film = films[int(rng.integers(len(films)))]
    level = 0
    if len(film.levels) > 1 and rng.random() < config.downscaled:
        level = int(rng.integers(1, len(film.levels)))
    pixels, text = film.levels[level], film.text[level]
    crop = config.crop
    y_max, x_max = pixels.shape[0] - crop, pixels.shape[1] - crop
    if len(sites) and rng.random() < config.text_sites:
        cy, cx = sites[int(rng.integers(len(sites)))] * pixels.shape
        jitter = rng.uniform(-crop / 3, crop / 3, size=2)
        y = int(np.clip(round(cy + jitter[0] - crop / 2), 0, y_max))
        x = int(np.clip(round(cx + jitter[1] - crop / 2), 0, x_max))
    else:
        y, x = int(rng.integers(0, y_max + 1)), int(rng.integers(0, x_max + 1))
    values = pixels[y : y + crop, x : x + crop].astype(np.float32) / 65535.0
    text_crop = text[y : y + crop, x : x + crop] > 0
    turn = int(rng.integers(8))  # flips and quarter turns
    if turn & 4:
        values, text_crop = values.T, text_crop.T
    values = np.rot90(values, turn & 3)
    text_crop = np.rot90(text_crop, turn & 3)
    mix = config.holes
    hole = (
        random_holes(
            rng,
            (crop, crop),
            min_side=mix.min_side,
            max_side=config.net.max_hole,
            count=(1, mix.count),
            weights=mix.weights,
        )
        > 0
    )
    lo, span = window_scale(values[~hole], film.floors[level])
    norm = (values - lo) / span
    weight = hole & ~text_crop
    film_range = film.floors[level] / config.net.min_span
    return norm, hole, weight, span / film_range


def _batch(
    step: int, films: list[_Film], config: InpainterTrainConfig, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The crops of ``step``: drawn from a generator seeded by (seed, step), so a resumed run
    draws what an uninterrupted one would."""
    rng = np.random.default_rng([config.seed, step, 7])
    sites = np.concatenate([film.sites for film in films])
    samples = [_sample(rng, films, sites, config) for _ in range(config.batch_size)]
    values, hole, weight, unit = (np.stack(parts) for parts in zip(*samples, strict=True))
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))[:, None].to(device)  # noqa: E731
    scale = torch.from_numpy(unit.astype(np.float32)).view(-1, 1, 1, 1).to(device)
    return as_tensor(values), as_tensor(hole), as_tensor(weight).float(), scale


def _loss(
    net: InpaintNet, batch: tuple[torch.Tensor, ...], config: InpainterTrainConfig
) -> torch.Tensor:
    values, hole, weight, unit = batch
    x = network_input(values, hole, net.config.prefill)
    with net_autocast(values.device, config.amp):
        pred = net(x).float()
    error = pred - values
    if config.loss.film_units:
        error = error * unit
    total = weight.sum().clamp(min=1.0)
    loss = (error.abs() * weight).sum() / total
    if config.loss.gradient > 0:
        wx = weight[..., :, 1:] * weight[..., :, :-1]
        wy = weight[..., 1:, :] * weight[..., :-1, :]
        gx = (error[..., :, 1:] - error[..., :, :-1]).abs() * wx
        gy = (error[..., 1:, :] - error[..., :-1, :]).abs() * wy
        loss = loss + config.loss.gradient * (gx.sum() + gy.sum()) / total
    return loss


def _learning_rate(config: InpainterTrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` to ``lr * lr_final``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    floor = config.lr * config.lr_final
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


# -- judging -----------------------------------------------------------------------------------
def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else 10.0 * math.log10(1.0 / mse)


def mean_fill(image: np.ndarray, mask: np.ndarray, margin: int) -> np.ndarray:
    """Every hole filled with the mean of the known pixels of its window (``margin`` px)."""
    out = image.astype(np.float32).copy()
    hole = mask > 0
    for y0, y1, x0, x1 in hole_windows(mask, margin):
        known = ~hole[y0:y1, x0:x1]
        region = out[y0:y1, x0:x1]
        fill = float(region[known].mean()) if known.any() else float(image[~hole].mean())
        region[~known] = fill
    return out


def held_out_masks(
    films: list[np.ndarray], boxes: list[list[list[int]]], config: HeldOutConfig
) -> list[np.ndarray]:
    """The fixed judging holes: per film, text-box rectangles away from its text."""
    masks = []
    for i, (film, film_boxes) in enumerate(zip(films, boxes, strict=True)):
        rng = np.random.default_rng([config.seed, i])
        short = min(film.shape)
        avoid = box_mask(film.shape, film_boxes, TEXT_DILATE)
        masks.append(
            box_holes(
                rng,
                film.shape,
                config.holes,
                min_side=config.min_frac * short,
                max_side=config.max_frac * short,
                avoid=avoid,
            )
        )
    return masks


def judge(
    net: InpaintNet,
    films: list[np.ndarray],
    masks: list[np.ndarray],
    *,
    device: str = "cpu",
) -> dict[str, Any]:
    """PSNR inside ``masks`` (display gray, peak 1; mean and sd over films) of the network, of
    ``telea`` and of the mean fill, with each one's seconds per film."""
    fills = {
        "learned": LearnedInpainter.from_network(net, device=device),
        "telea": make_inpainter("telea"),
    }
    rows: dict[str, Any] = {}
    pairs = [(f, m) for f, m in zip(films, masks, strict=True) if m.any()]
    for name in ("learned", "telea", "mean"):
        psnrs, seconds = [], []
        for film, mask in pairs:
            start = time.perf_counter()
            if name == "mean":
                out = mean_fill(film, mask, net.config.margin)
            elif name == "telea":  # OpenCV's Telea is unreliable on float32 in [0, 1]: uint16
                stored = np.round(film * 65535.0).astype(np.uint16)
                out = fills[name].inpaint([stored], [mask])[0].astype(np.float32) / 65535.0
            else:
                out = fills[name].inpaint([film], [mask])[0]
            seconds.append(time.perf_counter() - start)
            hole = mask > 0
            psnrs.append(_psnr(out[hole], film[hole]))
        rows[name] = {
            "psnr": float(np.mean(psnrs)) if psnrs else float("nan"),
            "psnr_sd": float(np.std(psnrs, ddof=1)) if len(psnrs) > 1 else 0.0,
            "seconds_per_film": float(np.median(seconds)) if seconds else 0.0,
        }
    return {
        "films": len(pairs),
        "holes": int(sum(cv2.connectedComponents(m)[0] - 1 for _, m in pairs)),
        "methods": rows,
    }


# -- resume ------------------------------------------------------------------------------------
def _save_resume(
    path: Path, net: InpaintNet, optimizer: torch.optim.Optimizer, state: dict, identity: dict
) -> None:
    """Everything a rerun needs to continue after ``state["step"]``, written atomically (the
    crops of each step come from a generator seeded by the step: no numpy state to keep)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": state,
            "identity": identity,
            "torch_rng": torch.get_rng_state(),
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _read_resume(path: Path, identity: dict, console: Console) -> dict[str, Any] | None:
    """The contents of a resume file written for ``identity``, else None (saying why a file
    that is there is ignored)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable resume file is ignored, never fatal
        console.print(f"[yellow]Ignoring {path}: not readable.[/]")
        return None
    if not isinstance(saved, dict) or saved.get("identity") != identity:
        console.print(f"[yellow]Ignoring {path}: other config or data.[/]")
        return None
    return saved


def _finished(out: Path, identity: dict) -> dict[str, Any] | None:
    """The metadata of ``out`` when it is a finished run with this identity."""
    if not out.is_file():
        return None
    try:
        payload = torch.load(out, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("format") != INPAINTER_FORMAT:
        return None
    if payload.get("identity") != identity:
        return None
    return {k: v for k, v in payload.items() if k != "state_dict"}


# -- model card --------------------------------------------------------------------------------
def _write_card(out: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    atomic_write_json(json_path, card)
    held = card["held_out"]
    rows = held["methods"]
    label = {
        "learned": "learned (this model)",
        "telea": "telea (OpenCV, radius 10)",
        "mean": "mean of the window's known pixels",
    }
    lines = [
        f"# Inpainter model card: {out.name}",
        "",
        f"- Learned inpainter (U-Net, {card['parameters']:,} parameters, network "
        f"`{json.dumps(card['net'])}`)",
        f"- Trained on `{card['data']}`: {card['data_identity']['n_train']} training films, "
        f"data sha256 `{card['data_identity']['sha256'][:16]}`; text kept out of the loss: "
        f"{_text_line(card['text'])}",
        f"- {card['steps']} steps of {card['train_config']['batch_size']} crops of "
        f"{card['train_config']['crop']} px in {card['seconds']:.0f} s on {card['device']} "
        f"({machine_line(card['machine'])})",
        *_loss_line(card.get("loss_history") or []),
        f"- Held out: {held['films']} films ({card['held_out_source']}), {held['holes']} "
        "text-box-like holes over text-free regions; PSNR inside the holes (display gray, "
        "peak 1), mean (sd) over films:",
        "",
        "| method | PSNR in holes (dB) | sd | s / film |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {label.get(name, name)} | {row['psnr']:.2f} | {row['psnr_sd']:.2f} | "
            f"{row['seconds_per_film']:.3f} |"
        )
    lines += [
        "",
        f"Use it: `xraydebug clean DATA --inpainter learned --inpainter-model {out}`",
        "",
        "Training config:",
        "```json",
        json.dumps(card["train_config"], indent=2),
        "```",
    ]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def _loss_line(history: list[list[float]]) -> list[str]:
    """The model card's line on the training loss: a few points of its moving average."""
    if not history:
        return []
    n = len(history)
    points = [history[i] for i in sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})]
    shown = ", ".join(f"{int(step)}: {value:.4f}" for step, value in points)
    return [f"- Training loss (L1 in the holes, moving average) by step: {shown}"]


def _text_line(text: dict[str, Any]) -> str:
    parts = []
    if text.get("text_csv"):
        parts.append(f"boxes from `{text['text_csv']}`")
    if text.get("detector"):
        parts.append(
            f"detector `{text['detector'].get('name')}` on {text.get('detected_films', 0)} films"
        )
    return "; ".join(parts) or "none"


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
    )


def _result(out: Path, meta: dict[str, Any], **extra: Any) -> InpainterTrainResult:
    return InpainterTrainResult(
        checkpoint=out,
        card_json=out.with_suffix(".json"),
        card_md=out.with_suffix(".md"),
        steps=int(meta["steps"]),
        seconds=float(meta["seconds"]),
        held_out=meta["held_out"],
        parameters=int(meta["parameters"]),
        **extra,
    )


# -- the run -----------------------------------------------------------------------------------
def train_inpainter(
    data: Path | str,
    out: Path | str = "models/inpainter.pt",
    config: InpainterTrainConfig = InpainterTrainConfig(),
    *,
    text: Path | str | None = None,
    progress: bool = True,
    force: bool = False,
    console: Console | None = None,
    on_step: Any = None,
) -> InpainterTrainResult:
    """Train the ``learned`` inpainter on ``data``'s training films; write ``out`` and its
    model card (see the module's doc).

    ``text``: an ``xraydebug text`` folder (or its ``text.csv``) whose boxes mark the text on
    the films (films it lacks go through the default detector). ``force``: train again even
    when ``out`` is a finished run of this config and data (a resume file is then ignored).
    ``on_step(step, loss)`` is called after every step (1-based).
    """
    start_time = time.perf_counter()
    data, out = Path(data), Path(out)
    text = Path(text) if text is not None else None
    console = console or Console()
    index = load_index(data, None, uncertain=LABELS_UNUSED)
    train_records, held_records, held_source = _films(index, config.seed)
    device = resolve_device(config.device)
    identity = {
        "format": INPAINTER_FORMAT,
        "train_config": config.identity(),
        "data": data_identity(index, train_records, held_records),
        "text": str(text.resolve()) if text else None,
    }
    if text is not None:
        csv = text / TEXT_CSV if text.is_dir() else text
        identity["text_sha256"] = file_sha256(csv) if csv.is_file() else None
    resume_path = out.parent / f".{out.stem}.resume.pt"
    if not force:
        done = _finished(out, identity)
        if done is not None:
            console.print(
                f"{out} is already trained on this data with this config (--force trains again)."
            )
            return _result(out, done, reused=True)
    elif resume_path.exists():
        resume_path.unlink()

    skipped: list[str] = []
    rng_held = np.random.default_rng([config.held_out.seed, 99])
    order = rng_held.permutation(len(held_records))[: config.held_out.films]
    judged = [held_records[i] for i in sorted(order)]
    with _progress(console, progress) as bars:
        saved = None if force else _read_resume(resume_path, identity, console)
        if saved is not None and "boxes" in saved["state"]:  # the text found before
            boxes, text_source = saved["state"]["boxes"], saved["state"]["text_source"]
            skipped += saved["state"]["skipped"]
        else:
            boxes, text_source = _text_boxes(
                index, train_records + judged, text, config, bars, skipped
            )
        cache = _FilmCache(index, train_records, boxes, config, skipped)
        cache.plan(bars)

        torch.manual_seed(config.seed)
        net = InpaintNet(config.net).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        state: dict[str, Any] = {"step": 0, "ema": None, "history": []}
        if saved is not None:
            net.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["torch_rng"])
            state = saved["state"]
            console.print(f"Resuming from step {state['step']} ({resume_path}).")
        state.update(boxes=boxes, text_source=text_source, skipped=list(skipped))
        first = state["step"]
        every = max(1, config.steps // 50)  # loss history points
        net.train()
        task = bars.add_task("training", total=config.steps, status="")
        bars.update(task, completed=first)
        try:
            for step in range(first, config.steps):
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(config, step)
                batch = _batch(step, cache.films_for(step), config, device)
                loss = _loss(net, batch, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done = state["step"] = step + 1
                value = float(loss.detach())
                ema = state["ema"] = (
                    value if state["ema"] is None else 0.98 * state["ema"] + 0.02 * value
                )
                if done % every == 0 or done == config.steps:
                    state["history"].append([done, ema])
                bars.update(task, completed=done, status=f"loss {ema:.5f}")
                if done % config.save_every == 0 and done < config.steps:
                    _save_resume(resume_path, net, optimizer, state, identity)
                if on_step is not None:
                    on_step(done, value)
        except KeyboardInterrupt:
            _save_resume(resume_path, net, optimizer, state, identity)
            raise
        train_seconds = time.perf_counter() - start_time

        net.eval()
        task = bars.add_task("judging on held-out films", total=len(judged), status="")
        films, film_boxes = [], []
        for rec in judged:
            try:
                films.append(read_image(index.root / rec.path)[0])
                film_boxes.append(boxes.get(rec.path, []))
            except ImageReadError as exc:
                skipped.append(str(exc))
            bars.update(task, advance=1)
        masks = held_out_masks(films, film_boxes, config.held_out)
        held = judge(net, films, masks, device=str(device))

    seconds = time.perf_counter() - start_time
    meta = {
        "identity": identity,
        "data": str(data),
        "data_identity": identity["data"],
        "held_out_source": held_source,
        "text": text_source,
        "train_config": config.to_dict(),
        "net": asdict(config.net),
        "parameters": parameter_count(net),
        "steps": config.steps,
        "resumed_from": first,
        "loss_history": state["history"],
        "seconds": seconds,
        "train_seconds": train_seconds,
        "device": str(device),
        "machine": machine_info(),
        "torch_version": str(torch.__version__),
        "held_out": held,
        "skipped": skipped,
    }
    meta = json.loads(json.dumps(meta))
    buffer = io.BytesIO()
    torch.save(network_payload(net, **meta), buffer)
    atomic_write_bytes(out, buffer.getvalue())
    _write_card(out, meta)
    resume_path.unlink(missing_ok=True)
    return _result(out, meta, resumed_from=first, skipped=skipped)


def default_config(**overrides: Any) -> InpainterTrainConfig:
    """``InpainterTrainConfig()`` with top-level ``overrides`` (``None`` values ignored)."""
    return replace(InpainterTrainConfig(), **{k: v for k, v in overrides.items() if v is not None})
