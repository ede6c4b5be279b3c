"""``xraydebug train``: fit a classifier with a patient-grouped validation split.

The best epoch is chosen on validation macro-F1 (never on test), with early stopping. Training
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
from xraydebug.models.architectures import Preprocessing, build_model, get_arch
from xraydebug.models.augment import AugmentConfig, augment_batch
from xraydebug.models.checkpoint import read_checkpoint, save_checkpoint
from xraydebug.models.inference import autocast, predict_probs
from xraydebug.models.metrics import summary_metrics


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
    patience: int | None = None
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

    def __post_init__(self) -> None:
        if not 0.0 <= self.decorrelate_text <= 1.0:
            raise ValueError(f"decorrelate_text must be in [0, 1]; got {self.decorrelate_text!r}")
        if bool(self.text_data) != bool(self.text_boxes):
            raise ValueError("text_data and text_boxes go together (the films and their boxes)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self) -> TrainConfig:
        """This config with every recipe field left at None taken from the architecture's
        recipe (what a run actually uses, and what checkpoints record)."""
        recipe = get_arch(self.arch).recipe.values()
        return replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})

    def recipe_lines(self) -> list[str]:
        """One line per recipe field: its value, and whether the user or the architecture set
        it (call on the config as given, before :meth:`resolved`)."""
        spec = get_arch(self.arch)
        lines = []
        for key, default in spec.recipe.values().items():
            given = getattr(self, key)
            source = "set by you" if given is not None else f"{self.arch}'s recipe"
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
        index = load_index(config.text_data, classes=classes)
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
    wanted = {k: v for k, v in config.resolved().to_dict().items() if k != "device"}
    recorded = {**TrainConfig().to_dict(), **meta.get("train_config", {})}  # older checkpoints
    saved = {k: v for k, v in recorded.items() if k != "device"}
    if saved != wanted:
        return False
    index = load_index(data, manifest)
    train_records, _ = _split_records(index, config)
    return meta.get("data_fingerprint") == data_fingerprint(index, train_records)


def class_weight_tensor(spec: str, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """``auto``: inverse class frequency normalised to mean 1; ``none``; or explicit weights."""
    spec = spec.strip().lower()
    if spec == "none":
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


def _write_card(out: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    json_path = out.with_suffix(".json")
    md_path = out.with_suffix(".md")
    atomic_write_json(json_path, card)
    metrics = card["val_metrics"]
    lines = [
        f"# Model card: {out.name}",
        "",
        f"- Architecture: `{card['arch']}`, input {card['preprocessing']['input_size']} px, "
        f"classes {', '.join(card['classes'])}",
        f"- Trained on `{card['data']}` ({card['data_fingerprint']['n_images']} images, "
        f"per class {card['data_fingerprint']['per_class']}), data sha256 "
        f"`{card['data_fingerprint']['sha256'][:16]}`",
        f"- Best epoch {card['best_epoch']} of {len(card['history'])} by validation macro-F1 "
        f"(validation: {card['n_val']} images, patient-grouped); {card['seconds']:.0f} s on "
        f"{card['device']}"
        + (
            f" ({card['machine']['cpu']}, torch CPU capability {card['machine']['cpu_capability']})"
            if card.get("machine")
            else ""
        ),
        f"- Validation accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
        *([f"- Recipe: {'; '.join(card['recipe'])}"] if card.get("recipe") else []),
        *_pool_lines(card),
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
            f"{row['support']} |"
        )
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


def train(
    data: Path | str,
    out: Path | str = "models/covidnet.pt",
    config: TrainConfig = TrainConfig(),
    manifest: Path | str | None = None,
    init_weights: Path | str | None = None,
    resume: bool = True,
    console: Console | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``data`` and write the best checkpoint to ``out``.

    The validation split is ``data``'s ``val`` split when it has one, else a patient-grouped
    ``config.val_fraction`` of train. Test images are never looked at.
    """
    recipe_lines = config.recipe_lines()
    config = config.resolved()
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    start_time = time.perf_counter()
    console = console or Console()
    console.print(f"Training {config.arch}: " + ", ".join(recipe_lines), highlight=False)
    out = Path(out)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    spec = get_arch(config.arch)
    prep = spec.preprocessing
    index = load_index(data, manifest)
    classes = index.classes
    train_records, val_records = _split_records(index, config)
    fingerprint = data_fingerprint(index, train_records)

    with _progress(console) as progress:
        task = progress.add_task(
            "decoding images", total=len(train_records) + len(val_records), status=""
        )
        caches = []
        for records in (train_records, val_records):
            done0 = progress.tasks[task].completed

            def tick(done: int, _total: int, base: float = done0) -> None:
                progress.update(task, completed=base + done)

            caches.append(
                ImageCache.build(
                    index.root, records, classes, prep.input_size, prep.crop_top, progress=tick
                )
            )
    train_cache, val_cache = caches
    skipped = train_cache.failed + val_cache.failed
    for _rec, message in skipped:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    if len(train_cache) == 0 or len(val_cache) == 0:
        raise DatasetError(f"{index.root}: no readable images left for training/validation")

    model = build_model(config.arch, num_classes=len(classes), init_weights=init_weights)
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = class_weight_tensor(config.class_weights, train_cache.labels, len(classes))
    weights = weights.to(device) if weights is not None else None

    resume_path = out.parent / f".{out.stem}.resume.pt"
    state = {"epoch": 0, "best_f1": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    best_state = copy.deepcopy(model.state_dict())
    identity = {"train_config": config.to_dict(), "data_fingerprint": fingerprint}
    if resume and resume_path.exists():
        saved = torch.load(resume_path, map_location="cpu", weights_only=True)
        if saved.get("identity") == json.loads(json.dumps(identity)):
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            best_state = saved["best_state"]
            state = saved["state"]
            torch.set_rng_state(saved["torch_rng"])
            console.print(f"Resuming {out} after epoch {state['epoch']}.")
        else:
            console.print(f"[yellow]Ignoring {resume_path}: other config or data.[/]")

    generator = torch.Generator().manual_seed(config.seed)
    generator_epochs = state["epoch"]
    for _ in range(generator_epochs):  # keep the random stream identical after a resume
        torch.randperm(len(train_cache), generator=generator)
    augment_cfg = AugmentConfig()
    pool, pool_info = _text_pool(config, classes, prep, train_cache)
    images = train_cache.images
    labels = train_cache.labels
    with _progress(console) as progress:
        epoch_task = progress.add_task("training", total=config.epochs, status="")
        progress.update(epoch_task, completed=state["epoch"])
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            aug_gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            paste_gen = torch.Generator().manual_seed(config.seed * 100_019 + epoch)
            model.train()
            order = torch.randperm(len(train_cache), generator=generator)
            total_loss, seen = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                if len(batch) < 2 and len(order) > 1:
                    continue  # BatchNorm needs more than one sample
                gray = images[batch].to(device).float()
                if pool:
                    gray = paste_random(gray, pool, config.decorrelate_text, paste_gen)
                if config.augment:
                    gray = augment_batch(gray, augment_cfg, aug_gen)
                x = prep.normalize(gray).contiguous(memory_format=torch.channels_last)
                y = labels[batch].to(device)
                with autocast(device, config.amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, weight=weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(batch)
                seen += len(batch)
            model.eval()
            probs = predict_probs(model, prep, val_cache.images, device, amp=config.amp)
            metrics = summary_metrics(
                val_cache.labels.numpy(), probs.argmax(1).numpy(), list(classes)
            )
            record = {
                "epoch": epoch,
                "train_loss": total_loss / max(seen, 1),
                "val_accuracy": metrics["accuracy"],
                "val_macro_f1": metrics["macro_f1"],
            }
            state["history"].append(record)
            if metrics["macro_f1"] > state["best_f1"]:
                state.update(best_f1=metrics["macro_f1"], best_epoch=epoch, bad_epochs=0)
                state["best_metrics"] = metrics
                best_state = copy.deepcopy(model.state_dict())
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            _save_resume(resume_path, model, optimizer, best_state, state, identity)
            progress.update(
                epoch_task,
                completed=epoch,
                status=f"loss {record['train_loss']:.3f} val acc {metrics['accuracy']:.3f} "
                f"macro-F1 {metrics['macro_f1']:.3f} (best {state['best_f1']:.3f} "
                f"@{state['best_epoch']})",
            )
            if state["bad_epochs"] >= config.patience:
                console.print(
                    f"Early stop after epoch {epoch}: no val macro-F1 gain in "
                    f"{config.patience} epochs."
                )
                break

    model.load_state_dict(best_state)
    seconds = time.perf_counter() - start_time
    meta = {
        "arch": config.arch,
        "classes": list(classes),
        "preprocessing": prep.to_dict(),
        "train_config": config.to_dict(),
        "recipe": recipe_lines,
        "augment": augment_cfg.to_dict() if config.augment else None,
        "text_pool": pool_info,
        "data": str(Path(data)),
        "data_fingerprint": fingerprint,
        "best_epoch": state["best_epoch"],
        "val_metrics": state["best_metrics"],
        "history": state["history"],
        "n_train": len(train_cache),
        "n_val": len(val_cache),
        "seconds": seconds,
        "device": str(device),
        "machine": machine_info(),
        "init_weights": str(init_weights) if init_weights else None,
        "torch_version": str(torch.__version__),
    }
    save_checkpoint(out, model, **meta)
    card_json, card_md = _write_card(out, meta)
    resume_path.unlink(missing_ok=True)
    return TrainResult(
        out,
        card_json,
        card_md,
        state["best_epoch"],
        state["best_metrics"],
        state["history"],
        seconds,
        skipped,
    )


def _save_resume(path, model, optimizer, best_state, state, identity) -> None:
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
