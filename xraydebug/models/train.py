"""``xraydebug train``: fit a classifier with a patient-grouped validation split.

The best epoch is chosen on the recipe's validation monitor (never on test), with early
stopping. Training
resumes from ``.<name>.resume.pt`` beside the output if it was interrupted with the same config
and data. Writes the checkpoint plus a model card (``.json`` and ``.md``) next to it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from xraydebug.data.labels import UNCERTAIN_POLICIES
from xraydebug.data.layouts import load_index
from xraydebug.data.records import DatasetIndex, ImageRecord
from xraydebug.data.splits import grouped_split
from xraydebug.data.text_pool import (
    Donor,
    boxes_from_table,
    detected_donors,
    paste_random,
    rendered_donors,
)
from xraydebug.data.torch_dataset import ImageCache
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from xraydebug.models import multilabel
from xraydebug.models.architectures import (
    Preprocessing,
    TrainRecipe,
    build_model,
    get_arch,
    load_init_weights,
)
from xraydebug.models.augment import AugmentConfig, augment_batch
from xraydebug.models.checkpoint import read_checkpoint, save_checkpoint
from xraydebug.models.inference import autocast, predict_probs
from xraydebug.models.monitor import Monitor, get_monitor, validation_metrics
from xraydebug.models.multilabel import f1_thresholds, masked_bce

SCHEDULES = ("constant", "cosine")
EpochHook = Callable[[dict[str, Any], nn.Module], None]


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based) under a resolved ``config``: a linear warm-up
    over ``warmup_epochs``, then constant or a cosine decay to 0 at ``epochs``."""
    lr = config.lr
    if config.warmup_epochs and epoch <= config.warmup_epochs:
        return lr * epoch / config.warmup_epochs
    if config.schedule == "cosine":
        start = config.warmup_epochs or 0
        span = max(1, config.epochs - start)
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1 - start) / span))
    return lr


def low_res_epochs(config: TrainConfig) -> int:
    """How many first epochs of a resolved ``config`` train at ``low_res_scale``."""
    if config.low_res_scale >= 1.0:
        return 0
    return min(config.epochs - 1, round(config.low_res_share * config.epochs))


def input_scale(config: TrainConfig, epoch: int) -> float:
    """The factor films are scaled by in ``epoch`` (1-based) of a resolved ``config``."""
    return config.low_res_scale if epoch <= low_res_epochs(config) else 1.0


def rescale(gray: torch.Tensor, scale: float) -> torch.Tensor:
    """``gray`` (B, 1, S, S) in [0, 1] area-averaged to (B, 1, round(S * scale), ...); the
    same tensor at scale 1."""
    if scale >= 1.0:
        return gray
    side = max(8, round(gray.shape[-1] * scale))
    return F.interpolate(gray.float(), size=(side, side), mode="area")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in the checkpoint)."""

    arch: str = "small"
    # None: the architecture's recipe (``ArchSpec.recipe``); see :meth:`resolved`
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    class_weights: str = "auto"  # auto | none | comma-separated weights in class order
    val_fraction: float = 0.1
    patience: int | None = None  # 0: no early stopping
    schedule: str | None = None  # constant | cosine
    warmup_epochs: int | None = None
    min_epochs: int | None = None
    smoothing: float | None = None
    monitor: str | None = None  # the validation metric of MONITORS that early stopping watches
    # progressive resizing: the first low_res_share of the epochs train (and validate) on
    # films scaled by low_res_scale, the rest at the model's input size
    low_res_share: float | None = None
    low_res_scale: float | None = None
    seed: int = 0
    augment: bool = True
    amp: bool = True  # CUDA only
    device: str = "auto"
    # paste burned-in text onto this share of training films, of every class alike, so text
    # says little about the label (``retrain --decorrelate-text``; text left on the films of
    # one class still leans toward it, only diluted); the text comes
    # from ``text_boxes`` (a scan.csv or cleaning.csv) of ``text_data`` (its films outside the
    # test split), or from rendered markers when those are not given
    decorrelate_text: float = 0.0
    text_data: str = ""
    text_boxes: str = ""
    # CheXpert's uncertain label (-1) on multi-label data: zeros | ones | ignore (no default:
    # a dataset with uncertain labels is refused without it)
    uncertain: str | None = None
    # multi-label data: train on these findings only, in this order (empty: all of the layout's)
    findings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}"
            )
        if self.monitor is not None:
            get_monitor(self.monitor)
        if self.low_res_share is not None and not 0.0 <= self.low_res_share < 1.0:
            raise ValueError(f"low_res_share must be in [0, 1); got {self.low_res_share!r}")
        if self.low_res_scale is not None and not 0.0 < self.low_res_scale <= 1.0:
            raise ValueError(f"low_res_scale must be in (0, 1]; got {self.low_res_scale!r}")
        if self.smoothing is not None and not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1); got {self.smoothing!r}")
        if not 0.0 <= self.decorrelate_text <= 1.0:
            raise ValueError(f"decorrelate_text must be in [0, 1]; got {self.decorrelate_text!r}")
        if self.uncertain is not None and self.uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(
                f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}; got {self.uncertain!r}"
            )
        if bool(self.text_data) != bool(self.text_boxes):
            raise ValueError("text_data and text_boxes go together (the films and their boxes)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recipe(self, *, finetune: bool = False) -> TrainRecipe:
        """The architecture's recipe: from scratch, or for fine-tuning a user's weights."""
        spec = get_arch(self.arch)
        return spec.finetune_recipe if finetune else spec.recipe

    def resolved(self, *, finetune: bool = False) -> TrainConfig:
        """This config with every recipe field left at None taken from the architecture's
        recipe (what a run actually uses, and what checkpoints record); ``finetune``: its
        fine-tuning recipe (a run that starts from ``init_weights``)."""
        unset = [key for key in TrainRecipe().values() if getattr(self, key) is None]
        if not unset:  # nothing to take from the arch (which may be none: an embedded network)
            return self
        recipe = self.recipe(finetune=finetune).values()
        return replace(self, **{key: recipe[key] for key in unset})

    def recipe_lines(self, *, finetune: bool = False) -> list[str]:
        """One line per recipe field: its value, and whether the user or the architecture set
        it (call on the config as given, before :meth:`resolved`)."""
        name = f"{self.arch}'s {'fine-tuning ' if finetune else ''}recipe"
        keys = TrainRecipe().values()
        unset = any(getattr(self, key) is None for key in keys)
        defaults = self.recipe(finetune=finetune).values() if unset else keys
        lines = []
        for key, default in defaults.items():
            given = getattr(self, key)
            source = "set by you" if given is not None else name
            lines.append(f"{key} {given if given is not None else default} ({source})")
        return lines


@dataclass
class TrainResult:
    checkpoint: Path
    card_json: Path
    card_md: Path
    best_epoch: int
    val_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[tuple[ImageRecord, str]] = field(default_factory=list)


def data_fingerprint(index: DatasetIndex, records: list[ImageRecord]) -> dict[str, Any]:
    """Identify the training data: sha256 over sorted (path, label, file size)."""
    digest = hashlib.sha256()
    for rec in sorted(records, key=lambda r: r.path):
        size = (index.root / rec.path).stat().st_size
        digest.update(f"{rec.path}\t{rec.label}\t{size}\n".encode())
    counts: dict[str, int] = {}
    if index.multilabel:  # films with each finding present
        for k, name in enumerate(index.classes):
            counts[name] = sum(1 for rec in records if rec.findings and rec.findings[k] == 1.0)
    else:
        for rec in records:
            counts[rec.label or ""] = counts.get(rec.label or "", 0) + 1
    return {"sha256": digest.hexdigest(), "n_images": len(records), "per_class": counts}


def _pool_lines(card: dict[str, Any]) -> list[str]:
    pool = card.get("text_pool")
    if not pool:
        return []
    source = (
        f"text detected in `{pool['data']}` (boxes from `{pool['boxes']}`)"
        if pool["kind"] == "detected"
        else "rendered markers (no detected text given)"
    )
    return [
        f"- Text decorrelation: burned-in text pasted onto {pool['probability']:.0%} of "
        f"training films of every class, drawn from {pool['donors']} donor films: {source}"
    ]


def _text_pool(
    config: TrainConfig, classes: tuple[str, ...], prep: Preprocessing, train_cache: ImageCache
) -> tuple[list[Donor], dict[str, Any] | None]:
    """The donors ``decorrelate_text`` pastes from (empty when it is off) and what to record."""
    if config.decorrelate_text <= 0:
        return [], None
    donors: list[Donor] = []
    if config.text_data:
        index = load_index(config.text_data, classes=classes, uncertain=config.uncertain)
        records = [r for r in index.usable() if r.split != "test"]
        boxes = boxes_from_table(config.text_boxes)
        donors = detected_donors(
            index.root, records, boxes, classes, prep.input_size, prep.crop_top, 512, config.seed
        )
    kind = "detected" if donors else "rendered"
    if not donors:
        films = train_cache.images[:, 0].float().numpy()
        donors = rendered_donors(films, 256, config.seed)
    info = {
        "probability": config.decorrelate_text,
        "kind": kind,
        "donors": len(donors),
        "data": config.text_data or None,
        "boxes": config.text_boxes or None,
    }
    return donors, info


def checkpoint_is_current(
    checkpoint: Path | str,
    data: Path | str,
    config: TrainConfig,
    manifest: Path | str | None = None,
) -> bool:
    """True if ``checkpoint`` was trained by :func:`train` with ``config`` (device aside) on the
    same training images of ``data`` as a new run would use, so a rerun may reuse it."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        return False
    meta = read_checkpoint(checkpoint)
    index = _load_training_index(data, manifest, config)
    config = _for_data(config, index)
    wanted = {k: v for k, v in config.resolved().to_dict().items() if k != "device"}
    recorded = recorded_train_config(meta)
    saved = {k: v for k, v in recorded.items() if k != "device"}
    if saved != wanted:
        return False
    train_records, _ = _split_records(index, config)
    return meta.get("data_fingerprint") == data_fingerprint(index, train_records)


def _load_training_index(
    data: Path | str, manifest: Path | str | None, config: TrainConfig
) -> DatasetIndex:
    """The records ``config`` trains on (``findings``: a multi-label layout's subset)."""
    index = load_index(data, manifest, config.findings or None, uncertain=config.uncertain)
    if config.findings and not index.multilabel:
        raise DatasetError(
            f"{index.root}: --findings selects findings of a multi-label layout (NIH, CheXpert, "
            f"MIMIC); this is a {index.layout} layout with one label per image"
        )
    return index


def _for_data(config: TrainConfig, index: DatasetIndex) -> TrainConfig:
    """``config`` for ``index``'s kind of labels: multi-label runs stop on mean per-finding
    validation AUROC unless a monitor is given."""
    if index.multilabel and config.monitor is None:
        return replace(config, monitor="auroc")
    return config


# what a run did before these settings existed: checkpoints written earlier lack the keys,
# and reading them as "the recipe's" would repeat today's recipe instead of theirs
LEGACY_SETTINGS: dict[str, Any] = {
    "schedule": "constant",
    "warmup_epochs": 0,
    "min_epochs": 0,
    "smoothing": 0.0,
    "monitor": "macro_f1",
    "low_res_share": 0.0,
    "low_res_scale": 0.5,
}


def recorded_train_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The training config a checkpoint records, every field present: those it predates
    get :data:`LEGACY_SETTINGS` (what the run did), the rest ``TrainConfig``'s defaults."""
    recorded = dict(meta.get("train_config") or {})
    return {**TrainConfig().to_dict(), **LEGACY_SETTINGS, **recorded}


def class_weight_tensor(spec: str, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """``auto``: inverse class frequency normalised to mean 1; ``none``; or explicit weights.

    For multi-label ``labels`` (N, C) the weights multiply each finding's positives (BCE's
    ``pos_weight``) and ``auto`` means none: plain BCE, as CheXpert's and NIH's baselines train,
    with thresholds chosen on validation afterwards."""
    spec = spec.strip().lower()
    if spec == "none" or (spec == "auto" and labels.ndim == 2):
        return None
    if spec == "auto":
        counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
        weights = counts.sum() / (num_classes * counts)
        return weights / weights.mean()
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        values = []
    if len(values) != num_classes or any(v <= 0 for v in values):
        raise ValueError(
            f"--class-weights must be auto, none or {num_classes} positive numbers "
            f"separated by commas; got {spec!r}"
        )
    return torch.tensor(values)


def _split_records(
    index: DatasetIndex, config: TrainConfig
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    train_records = index.usable("train")
    val_records = index.usable("val")
    if not train_records:
        raise DatasetError(f"{index.root}: no readable training images with known labels")
    if not val_records:
        train_records, val_records = grouped_split(train_records, config.val_fraction, config.seed)
    if not val_records:
        raise DatasetError(f"{index.root}: too few patients for a validation split")
    return train_records, val_records


def _metrics_rows(per_class: dict[str, Any], multilabel: bool) -> list[str]:
    """The model card's markdown table: per class precision/recall/F1/support, or per finding
    AUROC and precision/recall/F1 at 0.5 with the films that have it."""
    if multilabel:
        lines = ["| finding | AUROC | precision | recall | F1 (at 0.5) | positives |"]
    else:
        lines = ["| class | precision | recall | F1 | support |"]
    lines.append("|---" * (6 if multilabel else 5) + "|")
    for name, row in per_class.items():
        auroc = "n/a" if row.get("auroc") is None else f"{row['auroc']:.3f}"
        cells = [name, *([auroc] if multilabel else [])]
        cells += [f"{row[k]:.3f}" for k in ("precision", "recall", "f1")] + [str(row["support"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _write_card(out: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    json_path = out.with_suffix(".json")
    md_path = out.with_suffix(".md")
    atomic_write_json(json_path, card)
    metrics = card["val_metrics"]
    multilabel = bool(card.get("multilabel"))
    lines = [
        f"# Model card: {out.name}",
        "",
        f"- Architecture: `{card['arch']}`, input {card['preprocessing']['input_size']} px, "
        f"classes {', '.join(card['classes'])}",
        f"- Trained on `{card['data']}` ({card['data_fingerprint']['n_images']} images, "
        f"per class {card['data_fingerprint']['per_class']}), data sha256 "
        f"`{card['data_fingerprint']['sha256'][:16]}`",
        f"- Best epoch {card['best_epoch']} of {len(card['history'])} by validation "
        f"{card['train_config'].get('monitor') or 'macro_f1'} "
        f"(validation: {card['n_val']} images, patient-grouped); {card['seconds']:.0f} s on "
        f"{card['device']}"
        + (
            f" ({card['machine']['cpu']}, torch CPU capability {card['machine']['cpu_capability']})"
            if card.get("machine")
            else ""
        ),
        f"- Validation accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
        + (f", mean per-finding AUROC {metrics['auroc']:.3f}" if multilabel else ""),
        *[f"- {line}" for line in card.get("summary", [])],
        *([f"- Recipe: {'; '.join(card['recipe'])}"] if card.get("recipe") else []),
        *_pool_lines(card),
        "",
        *_metrics_rows(metrics["per_class"], multilabel),
    ]
    lines += [
        "",
        "Validation numbers are not test numbers: run `xraydebug evaluate DATA --model "
        f"{out}` on a held-out split, and `xraydebug scan` to look for shortcuts.",
        "",
        "Training config:",
        "```json",
        json.dumps(card["train_config"], indent=2),
        "```",
    ]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


@dataclass
class _Fit:
    """The model being trained and everything a resume file restores.

    ``state`` is the early-stopping bookkeeping (``epoch``, ``best_score`` (the monitored
    metric signed so higher is better), ``best_epoch``,
    ``bad_epochs``, ``history`` and, once an epoch improved, ``best_metrics``), stored as a plain
    dict in the resume file; ``best_state`` the weights of the best epoch so far.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    best_state: dict[str, torch.Tensor]
    state: dict[str, Any]


@dataclass(frozen=True)
class _Setup:
    """What every epoch of one run uses: the resolved config, preprocessing, class names,
    device, class weights (None: unweighted; for multi-label runs the positives' weight per
    finding), text donors (empty: no pasting), augmentation (None: off) and whether the
    classes are findings (one sigmoid each, masked BCE)."""

    config: TrainConfig
    prep: Preprocessing
    classes: tuple[str, ...]
    device: torch.device
    weights: torch.Tensor | None
    pool: list[Donor]
    augment: AugmentConfig | None
    multilabel: bool = False


def _decode_caches(
    index: DatasetIndex,
    splits: tuple[list[ImageRecord], list[ImageRecord]],
    prep: Preprocessing,
    *,
    console: Console,
) -> tuple[ImageCache, ImageCache, list[tuple[ImageRecord, str]]]:
    """Decode the (train, val) records into caches at the model's input size, with one progress
    bar; returns both caches and the images that could not be read (printed as skipped)."""
    with _progress(console) as progress:
        task = progress.add_task("decoding images", total=sum(map(len, splits)), status="")
        caches = []
        for records in splits:
            done0 = progress.tasks[task].completed

            def tick(done: int, _total: int, base: float = done0) -> None:
                progress.update(task, completed=base + done)

            caches.append(
                ImageCache.build(
                    index.root,
                    records,
                    index.classes,
                    prep.input_size,
                    prep.crop_top,
                    progress=tick,
                )
            )
    train_cache, val_cache = caches
    skipped = train_cache.failed + val_cache.failed
    for _rec, message in skipped:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    if len(train_cache) == 0 or len(val_cache) == 0:
        raise DatasetError(f"{index.root}: no readable images left for training/validation")
    return train_cache, val_cache, skipped


def _initial_model(
    arch: str, num_classes: int, init_weights: Path | str | None
) -> tuple[nn.Module, bool]:
    """A freshly built model (from the global torch seed) with ``init_weights`` loaded where
    given, and whether they filled the whole model (a fine-tuning run) rather than only its
    backbone (``covidnext`` from ImageNet features: a run from scratch on top)."""
    model = build_model(arch, num_classes=num_classes)
    if init_weights is None:
        return model, False
    return model, load_init_weights(model, init_weights) == "model"


def _starting_model(
    config: TrainConfig,
    index: DatasetIndex,
    model: nn.Module | None,
    init_weights: Path | str | None,
) -> tuple[nn.Module, bool, dict[str, Any] | None]:
    """The network a run starts from, whether it is a fine-tuning run, and what identifies its
    starting weights for the resume check: a given ``model`` (checked against the data's
    width), else a new ``config.arch`` with ``init_weights`` loaded where given."""
    classes = index.classes
    if model is None:
        built, finetune = _initial_model(config.arch, len(classes), init_weights)
        return built, finetune, _file_identity(init_weights)
    if init_weights is not None:
        raise ValueError("train: give the starting weights as model or init_weights, not both")
    width = getattr(model, "num_classes", len(classes))
    if width != len(classes):
        raise DatasetError(
            f"{index.root}: the model has {width} outputs but the data has {len(classes)} "
            f"{'findings' if index.multilabel else 'classes'} ({', '.join(classes)})"
        )
    return model, True, _module_identity(model)


def _new_fit(config: TrainConfig, model: nn.Module, *, device: torch.device) -> _Fit:
    """``model`` on ``device`` with its optimizer, before epoch 1."""
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    return _Fit(model, optimizer, copy.deepcopy(model.state_dict()), state)


def _resume_fit(
    fit: _Fit, resume_path: Path, identity: dict[str, Any], *, out: Path, console: Console
) -> None:
    """Restore ``fit`` and the global torch RNG from ``resume_path`` if it was written for the
    same config and data (``identity``); otherwise say that it is ignored."""
    saved = torch.load(resume_path, map_location="cpu", weights_only=True)
    if saved.get("identity") != json.loads(json.dumps(identity)):
        console.print(f"[yellow]Ignoring {resume_path}: other config or data.[/]")
        return
    fit.model.load_state_dict(saved["model"])
    fit.optimizer.load_state_dict(saved["optimizer"])
    fit.best_state = saved["best_state"]
    fit.state = saved["state"]
    torch.set_rng_state(saved["torch_rng"])
    console.print(f"Resuming {out} after epoch {fit.state['epoch']}.")


def _shuffle_generator(seed: int, epochs_done: int, n: int) -> torch.Generator:
    """The generator of the per-epoch shuffles, advanced past ``epochs_done`` epochs so a
    resumed run draws the same orders as an uninterrupted one."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs_done):
        torch.randperm(n, generator=generator)
    return generator


def _train_epoch(
    fit: _Fit,
    setup: _Setup,
    *,
    train_cache: ImageCache,
    order: torch.Tensor,
    paste_gen: torch.Generator,
    aug_gen: torch.Generator,
    scale: float = 1.0,
) -> float:
    """One pass over ``train_cache`` in ``order``, pasting text from ``setup.pool``, scaling
    by ``scale`` and augmenting (unless ``setup.augment`` is None); returns the mean
    training loss."""
    model, optimizer = fit.model, fit.optimizer
    config, prep, device, pool = setup.config, setup.prep, setup.device, setup.pool
    model.train()
    total_loss, seen = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        batch = order[start : start + config.batch_size]
        if len(batch) < 2 and len(order) > 1:
            continue  # BatchNorm needs more than one sample
        gray = train_cache.images[batch].to(device).float()
        if pool:
            gray = paste_random(gray, pool, config.decorrelate_text, paste_gen)
        gray = rescale(gray, scale)
        if setup.augment is not None:
            gray = augment_batch(gray, setup.augment, aug_gen)
        x = prep.normalize(gray).contiguous(memory_format=torch.channels_last)
        y = train_cache.labels[batch].to(device)
        with autocast(device, config.amp):
            logits = model(x)
        if setup.multilabel:
            loss = masked_bce(logits.float(), y, pos_weight=setup.weights)
        else:
            loss = F.cross_entropy(logits.float(), y, weight=setup.weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(batch)
        seen += len(batch)
    return total_loss / max(seen, 1)


_MIN_GAIN = 0.0  # the smoothed monitored metric must rise by more than this to count


def _record_epoch(
    fit: _Fit,
    epoch: int,
    train_loss: float,
    metrics: dict[str, Any],
    *,
    monitor: Monitor,
    smoothing: float = 0.0,
) -> dict[str, Any]:
    """Early-stopping bookkeeping after ``epoch``: append its history row, keep its weights if
    the ``monitor``ed validation metric improved, and count one more bad epoch unless its
    ``smoothing`` EMA improved. Returns the history row."""
    state = fit.state
    record = {"epoch": epoch, "train_loss": train_loss}
    record.update({f"val_{key}": metrics[key] for key in ("accuracy", "macro_f1", "auroc", "loss")})
    state["history"].append(record)
    score = monitor.score(metrics)  # -inf where undefined (AUROC of a one-class split)
    if score > state["best_score"] or "best_metrics" not in state:
        state.update(best_score=score, best_epoch=epoch)
        state["best_metrics"] = metrics
        fit.best_state = copy.deepcopy(fit.model.state_dict())
    # patience counts on a smoothed signal: one lucky epoch on a noisy plateau does not reset it
    previous = state.get("smooth")
    if not math.isfinite(score):  # an undefined epoch leaves the smoothed signal as it was
        smooth = previous if previous is not None else -math.inf
    elif previous is None or not math.isfinite(previous):
        smooth = score
    else:
        smooth = smoothing * previous + (1.0 - smoothing) * score
    record["monitor_smoothed"] = smooth if monitor.higher_is_better else -smooth
    if smooth > state.get("best_smooth", -math.inf) + _MIN_GAIN:
        state.update(best_smooth=smooth, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["smooth"] = smooth
    state["epoch"] = epoch
    return record


def _restart_bookkeeping(state: dict[str, Any]) -> None:
    """Forget the best epoch and patience of the low-resolution epochs at the first epoch at
    full size: only full-size epochs are kept as the model or end a run (the history stays)."""
    state.update(best_score=-math.inf, bad_epochs=0)
    for key in ("smooth", "best_smooth"):
        state.pop(key, None)


def _run_epochs(
    fit: _Fit,
    setup: _Setup,
    *,
    caches: tuple[ImageCache, ImageCache],
    generator: torch.Generator,
    resume_path: Path,
    identity: dict[str, Any],
    console: Console,
    on_epoch: EpochHook | None = None,
) -> None:
    """Train from ``fit.state['epoch'] + 1`` to ``config.epochs`` or until early stopping,
    validating on the (train, val) ``caches``' second, calling ``on_epoch`` and writing the
    resume file after every epoch."""
    config, prep, device = setup.config, setup.prep, setup.device
    train_cache, val_cache = caches
    monitor = get_monitor(config.monitor)
    with _progress(console) as progress:
        epoch_task = progress.add_task("training", total=config.epochs, status="")
        progress.update(epoch_task, completed=fit.state["epoch"])
        for epoch in range(fit.state["epoch"] + 1, config.epochs + 1):
            for group in fit.optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch)
            aug_gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            paste_gen = torch.Generator().manual_seed(config.seed * 100_019 + epoch)
            order = torch.randperm(len(train_cache), generator=generator)
            scale = input_scale(config, epoch)
            train_loss = _train_epoch(
                fit,
                setup,
                train_cache=train_cache,
                order=order,
                paste_gen=paste_gen,
                aug_gen=aug_gen,
                scale=scale,
            )
            fit.model.eval()
            val = rescale(val_cache.images, scale)
            activation = "sigmoid" if setup.multilabel else "softmax"
            probs = predict_probs(
                fit.model, prep, val, device, amp=config.amp, activation=activation
            )
            measure = multilabel.validation_metrics if setup.multilabel else validation_metrics
            metrics = measure(val_cache.labels.numpy(), probs.numpy(), setup.classes)
            if epoch == low_res_epochs(config) + 1:
                _restart_bookkeeping(fit.state)
            record = _record_epoch(
                fit, epoch, train_loss, metrics, monitor=monitor, smoothing=config.smoothing
            )
            record["scale"] = scale
            if on_epoch is not None:
                on_epoch(record, fit.model)
            state = fit.state
            _save_resume(resume_path, fit.model, fit.optimizer, fit.best_state, state, identity)
            progress.update(
                epoch_task,
                completed=epoch,
                status=f"loss {record['train_loss']:.3f} val acc {metrics['accuracy']:.3f} "
                f"macro-F1 {metrics['macro_f1']:.3f} {config.monitor} {metrics[monitor.key]:.3f} "
                f"(best @{state['best_epoch']})",
            )
            if _should_stop(config, state):
                state["stopped_early"] = True
                break


def _should_stop(config: TrainConfig, state: dict[str, Any]) -> bool:
    """Early stopping: on (``patience`` > 0), past ``min_epochs`` and the low-resolution
    epochs, and ``patience`` epochs without a gain of the smoothed monitored validation
    metric."""
    return (
        config.patience > 0
        and state["epoch"] >= config.min_epochs
        and state["epoch"] > low_res_epochs(config)
        and state["bad_epochs"] >= config.patience
    )


def chance_macro_f1(labels: np.ndarray, num_classes: int) -> float:
    """The macro-F1 of always answering the most frequent class of ``labels``: what a model
    that learned nothing reaches."""
    share = np.bincount(labels, minlength=num_classes).max() / max(len(labels), 1)
    return float(2 * share / (1 + share) / num_classes)


def training_summary(
    history: list[dict[str, Any]],
    *,
    best_epoch: int,
    config: TrainConfig,
    chance: float,
    curve_key: str = "macro_f1",
) -> list[str]:
    """Lines on how a run of a resolved ``config`` went: where it stopped and why, the
    half-size epochs, the validation curve of ``curve_key`` (macro_f1; auroc for multi-label
    runs) in a few points, and, when it never rose clearly above ``chance``, that the model
    learned nothing."""
    ran, epochs = len(history), config.epochs
    curve = [row[f"val_{curve_key}"] for row in history]
    curve = [value if math.isfinite(value) else 0.0 for value in curve]
    shown = "macro-F1" if curve_key == "macro_f1" else curve_key.upper()
    marks = sorted({0, ran // 4, ran // 2, (3 * ran) // 4, ran - 1})
    points = ", ".join(f"{i + 1}: {curve[i]:.2f}" for i in marks)
    stop = (
        f"stopped early after epoch {ran} of {epochs} (the smoothed validation "
        f"{config.monitor} had not improved for {config.patience} epochs)"
        if ran < epochs
        else f"ran all {epochs} epochs"
    )
    low = low_res_epochs(config)
    phase = (
        f"; epochs 1-{low} at {config.low_res_scale:g}x size, the best epoch chosen among the "
        "full-size ones"
        if low
        else ""
    )
    lines = [
        f"Training {stop}{phase}; best epoch {best_epoch} (by validation {config.monitor}); "
        f"validation {shown} by epoch: {points}."
    ]
    if max(curve) <= chance + LEARNED_MARGIN:
        baseline = (
            "always answering the most frequent class"
            if curve_key == "macro_f1"
            else ("a constant score")
        )
        lines.append(
            f"The model learned nothing: validation {shown} never rose above chance "
            f"({chance:.2f}, {baseline}, + {LEARNED_MARGIN}); "
            "check the data and the recipe before auditing it."
        )
    return lines


# best validation macro-F1 within this of chance counts as chance: on label-shuffled data the
# best of 12-30 noisy epochs of the tests' tiny runs stayed within it
LEARNED_MARGIN = 0.1


def _checkpoint_meta(
    setup: _Setup,
    fit: _Fit,
    *,
    caches: tuple[ImageCache, ImageCache],
    recipe_lines: list[str],
    pool_info: dict[str, Any] | None,
    data: Path | str,
    fingerprint: dict[str, Any],
    seconds: float,
    init_weights: Path | str | None,
) -> dict[str, Any]:
    """Everything the checkpoint and its model card record besides the weights, with the
    closing summary of the run (:func:`training_summary`)."""
    config, state = setup.config, fit.state
    if setup.multilabel:
        chance, curve_key = 0.5, "auroc"
    else:
        chance = chance_macro_f1(caches[1].labels.numpy(), len(setup.classes))
        curve_key = "macro_f1"
    summary = training_summary(
        state["history"],
        best_epoch=state["best_epoch"],
        config=config,
        chance=chance,
        curve_key=curve_key,
    )
    return {
        "arch": config.arch,
        "classes": list(setup.classes),
        "multilabel": setup.multilabel,
        "uncertain": config.uncertain,
        "preprocessing": setup.prep.to_dict(),
        "train_config": config.to_dict(),
        "recipe": recipe_lines,
        "augment": setup.augment.to_dict() if setup.augment is not None else None,
        "text_pool": pool_info,
        "data": str(Path(data)),
        "data_fingerprint": fingerprint,
        "best_epoch": state["best_epoch"],
        "val_metrics": state["best_metrics"],
        "history": state["history"],
        "n_train": len(caches[0]),
        "n_val": len(caches[1]),
        "seconds": seconds,
        "device": str(setup.device),
        "machine": machine_info(),
        "init_weights": str(init_weights) if init_weights else None,
        "torch_version": str(torch.__version__),
        "summary": summary,
    }


def train(
    data: Path | str,
    out: Path | str = "models/covidnet.pt",
    *,
    config: TrainConfig = TrainConfig(),
    manifest: Path | str | None = None,
    init_weights: Path | str | None = None,
    resume: bool = True,
    console: Console | None = None,
    on_epoch: EpochHook | None = None,
    preprocessing: Preprocessing | None = None,
    model: nn.Module | None = None,
    checkpoint_extra: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``data`` and write the best checkpoint to ``out``.

    The validation split is ``data``'s ``val`` split when it has one, else a patient-grouped
    ``config.val_fraction`` of train. Test images are never looked at. ``init_weights``
    (a local state_dict) switches to the architecture's fine-tuning recipe. ``on_epoch``
    is called after every epoch with its history row (keys it adds are kept in the history)
    and the model in eval mode (at the epoch's ``scale`` of the input size).

    Fine-tuning a model that is not built from ``config.arch``'s defaults (``retrain`` of an
    imported model): ``preprocessing`` replaces the arch's input (size, channels, mean/std,
    top crop) and is what the checkpoint records; ``model`` is an already built network
    (e.g. an imported TorchScript file) trained instead of a new ``config.arch``, its weights
    the starting point (a fine-tuning run; not with ``init_weights``); ``checkpoint_extra``
    holds keys stored in the checkpoint beside the weights but not in the model card (e.g.
    the embedded file the fine-tuned weights belong to).
    """
    start_time = time.perf_counter()
    console = console or Console()
    out = Path(out)
    torch.manual_seed(config.seed)  # before anything draws: the model's initial weights
    index = _load_training_index(data, manifest, config)
    classes = index.classes
    config = _for_data(config, index)
    train_records, val_records = _split_records(index, config)  # seed and val_fraction only
    model, finetune, identity_of_start = _starting_model(config, index, model, init_weights)
    recipe_lines = config.recipe_lines(finetune=finetune)
    config = config.resolved(finetune=finetune)
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    console.print(f"Training {config.arch}: " + ", ".join(recipe_lines), highlight=False)
    device = resolve_device(config.device)
    prep = preprocessing if preprocessing is not None else get_arch(config.arch).preprocessing
    fingerprint = data_fingerprint(index, train_records)
    train_cache, val_cache, skipped = _decode_caches(
        index, (train_records, val_records), prep, console=console
    )

    fit = _new_fit(config, model, device=device)
    weights = class_weight_tensor(config.class_weights, train_cache.labels, len(classes))
    resume_path = out.parent / f".{out.stem}.resume.pt"
    identity = {"train_config": config.to_dict(), "data_fingerprint": fingerprint}
    identity["init_weights"] = identity_of_start
    if preprocessing is not None:
        identity["preprocessing"] = preprocessing.to_dict()
    if resume and resume_path.exists():
        _resume_fit(fit, resume_path, identity, out=out, console=console)
    generator = _shuffle_generator(config.seed, fit.state["epoch"], len(train_cache))
    augment = AugmentConfig() if config.augment else None
    pool, pool_info = _text_pool(config, classes, prep, train_cache)
    weights = weights.to(device) if weights is not None else None
    setup = _Setup(config, prep, classes, device, weights, pool, augment, index.multilabel)
    _run_epochs(
        fit,
        setup,
        caches=(train_cache, val_cache),
        generator=generator,
        resume_path=resume_path,
        identity=identity,
        console=console,
        on_epoch=on_epoch,
    )

    fit.model.load_state_dict(fit.best_state)
    seconds = time.perf_counter() - start_time
    meta = _checkpoint_meta(
        setup,
        fit,
        caches=(train_cache, val_cache),
        recipe_lines=recipe_lines,
        pool_info=pool_info,
        data=data,
        fingerprint=fingerprint,
        seconds=seconds,
        init_weights=init_weights,
    )
    if setup.multilabel:
        meta["thresholds"] = _finding_thresholds(fit.model, setup, val_cache)
    for line in meta["summary"]:
        console.print(line, highlight=False)
    result = _write_outputs(out, fit.model, meta, skipped, extra=checkpoint_extra)
    resume_path.unlink(missing_ok=True)
    return result


def _finding_thresholds(model: nn.Module, setup: _Setup, val_cache: ImageCache) -> list[float]:
    """Per finding, the F1-best threshold of the kept multi-label ``model`` on validation."""
    probs = predict_probs(
        model,
        setup.prep,
        val_cache.images,
        setup.device,
        amp=setup.config.amp,
        activation="sigmoid",
    )
    return f1_thresholds(val_cache.labels.numpy(), probs.numpy()).tolist()


def _write_outputs(
    out: Path,
    model: nn.Module,
    meta: dict[str, Any],
    skipped: list[tuple[ImageRecord, str]],
    *,
    extra: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Write the checkpoint of ``model`` with ``meta`` (and ``extra``, checkpoint only) and its
    model card."""
    save_checkpoint(out, model, **{**meta, **(extra or {})})
    card_json, card_md = _write_card(out, meta)
    return TrainResult(
        out,
        card_json,
        card_md,
        meta["best_epoch"],
        meta["val_metrics"],
        meta["history"],
        meta["seconds"],
        skipped,
    )


def _file_identity(path: Path | str | None) -> dict[str, Any] | None:
    """What tells one weights file from another for the resume check: path, size, mtime."""
    if path is None:
        return None
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}


def _module_identity(model: nn.Module) -> dict[str, Any]:
    """What tells one starting network from another for the resume check: the sha256 of its
    state_dict's names, shapes and values."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"module": type(model).__name__, "sha256": digest.hexdigest()}


def _save_resume(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    """Everything needed to continue after ``state['epoch']``, written atomically."""
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "best_state": best_state,
            "state": state,
            "identity": json.loads(json.dumps(identity)),
            "torch_rng": torch.get_rng_state(),
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
