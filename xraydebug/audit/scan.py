"""``xraydebug scan``: classify, explain (iGOS++) and check for text shortcuts, image by image.

Writes, under ``out``:

- ``scan.csv``: one row per image, columns :data:`SCAN_COLUMNS` (DESIGN.md section 7). The text
  columns (``n_boxes``, ``boxes``, ``mass_in_text``, ``text_area``, ``text_reveal_prob``,
  ``flagged``) come from the text detector and :mod:`xraydebug.audit.flagging`; they stay empty
  with ``detect_text=False``. ``boxes`` includes ``second_look_boxes``: text found by zooming in
  on compact saliency blobs outside every first-pass box (:mod:`xraydebug.text.second_look`).
  ``flagged`` is recomputed from them on every write, so new flag thresholds apply without
  rescanning.
- ``masks/<path>.npz``: ``deletion`` and ``insertion`` masks (s, s) float16 in [0, 1] (0 =
  salient; ``insertion`` absent for single-mask methods), ``target`` class index.
- ``run.json``: the config, versions, model hash, timings and images/s, the saliency preset
  with its resolved settings (``saliency``) and what one image cost (``cost_per_image``:
  seconds per stage, forward/backward model passes);
- ``report.html``: the audit report (:mod:`xraydebug.audit.report`).

Images are processed in chunks of ``batch_size`` (default 8 on CPU, 64 on CUDA; memory
bounded whatever the dataset size); after every chunk ``scan.csv`` is rewritten atomically, so a
killed scan resumes where it stopped when rerun with the same model and config.
``shard=(i, n)`` keeps every n-th image from the i-th (0-based) of the path-sorted list, so n
machines can split a dataset by hand; ``executor`` (:mod:`xraydebug.executor`) runs the chunks
on Ray actors instead, on this machine's cores or a cluster. Either way the worker step
(:class:`ScanStep`) only returns rows and mask bytes, and this process alone writes ``out``.
"""

from __future__ import annotations

import io
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xraydebug.audit.flagging import (
    FlagRule,
    model_box_mask,
    reveal_inputs,
    saliency_to_original,
    text_mass,
)
from xraydebug.audit.report import build_report
from xraydebug.audit.scan_table import read_scan_csv
from xraydebug.data.layouts import load_index
from xraydebug.data.records import STATUS_ERROR, ImageRecord
from xraydebug.data.torch_dataset import ImageCache
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError
from xraydebug.executor import (
    BatchResult,
    Executor,
    ExecutorConfig,
    LocalExecutor,
    open_executor,
    readable_root,
    run_stage,
)
from xraydebug.fsutil import atomic_open, atomic_write_json, ensure_outside
from xraydebug.models.checkpoint import LoadedModel, load_model
from xraydebug.models.inference import predict_probs
from xraydebug.saliency import IGOSConfig, blur_baseline, deletion_insertion, get_explainer
from xraydebug.saliency.config import DEFAULT_PRESET
from xraydebug.text import TextDetectConfig, detect_text
from xraydebug.text.detect import load_detector, merge_boxes, resolve_detector
from xraydebug.text.second_look import SecondLookConfig, saliency_blobs, second_look

SCAN_COLUMNS = [
    "path",
    "split",
    "label",
    "source",
    "pred",
    "prob",
    "mass_in_text",
    "text_area",
    "text_reveal_prob",
    "flagged",
    "n_boxes",
    "boxes",
    "deletion_auc",
    "insertion_auc",
    "mask_file",
    "status",
    "error",
    "target",
    "target_prob",
    "iterations",
    "second_look_boxes",
]

# Settings that do not change results; a resumed scan may use other values.
# Flags are recomputed from the CSV columns, so their thresholds are not part of it either.
_NOT_IDENTITY = {
    "batch_size",
    "device",
    "shard",
    "limit",
    "split",
    "flag_min_mass",
    "flag_min_ratio",
    "flag_min_reveal_prob",
}


@dataclass(frozen=True)
class ScanConfig:
    """Settings of one scan (written to ``run.json``)."""

    method: str = "igospp"
    preset: str = DEFAULT_PRESET  # IGOSConfig.preset: paper | balanced | fast
    mask_size: int = 56
    iterations: int | None = None  # None: the preset's
    ig_steps: int | None = None  # None: the preset's
    l1: float = 1.0
    l2: float = 20.0
    noise: float = 0.2
    explain: str = "pred"  # pred | label
    metric_steps: int = 50
    split: str = "all"
    batch_size: int | None = None  # images explained together; None: 8 on CPU, 64 on CUDA
    device: str = "auto"
    seed: int = 0
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    detect_text: bool = True
    text_detector: str = "auto"  # see xraydebug.text.DETECTORS
    second_look: bool = True  # zoom in on salient blobs outside every text box
    text_long_side: int = 1280  # craft-global only
    text_precision: str = "fp32"  # CRAFT: fp32 | bf16 | auto (see TextDetectConfig)
    flag_min_mass: float = FlagRule.min_mass
    flag_min_ratio: float = FlagRule.min_ratio
    flag_min_reveal_prob: float = FlagRule.min_reveal_prob

    def __post_init__(self) -> None:
        get_explainer(self.method)  # unknown names list the valid ones
        self.igos_config()  # unknown presets and bad settings fail here, before any work
        if self.explain not in ("pred", "label"):
            raise ValueError(f"explain must be 'pred' or 'label', got {self.explain!r}")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def images_per_chunk(self, device: torch.device) -> int:
        """``batch_size``, or by default 8 images on CPU (the gradient passes run in chunks of
        <= 32 rows there anyway) and 64 on CUDA: 64 images x 4 terms x K points keep a large
        GPU busy (the engine's own chunks then hold up to 256 rows)."""
        if self.batch_size is not None:
            return self.batch_size
        return 64 if device.type == "cuda" else 8

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in _NOT_IDENTITY}

    def flag_rule(self) -> FlagRule:
        return FlagRule(self.flag_min_mass, self.flag_min_ratio, self.flag_min_reveal_prob)

    def igos_config(self) -> IGOSConfig:
        """The preset's settings with this scan's mask size, weights, seed and any
        ``iterations`` / ``ig_steps`` set here."""
        overrides = {
            k: v
            for k, v in (("iterations", self.iterations), ("ig_steps", self.ig_steps))
            if v is not None
        }
        return IGOSConfig.preset(
            self.preset,
            mask_size=self.mask_size,
            l1=self.l1,
            l2=self.l2,
            noise=self.noise,
            seed=self.seed,
            **overrides,
        )


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); 0-based ``i``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/n such as 0/4, got {text!r}") from None
    return index, count


@dataclass
class ScanResult:
    out: Path
    table: pd.DataFrame
    run: dict[str, Any]
    n_new: int = 0
    n_resumed: int = 0
    errors: list[str] = field(default_factory=list)
    report: Path | None = None


def mask_filename(path: str) -> str:
    """``train/a b.png`` -> ``masks/train/a b.png.npz`` (relative to the scan folder)."""
    return f"masks/{path}.npz"


def _select(records: list[ImageRecord], config: ScanConfig) -> list[ImageRecord]:
    records = sorted(records, key=lambda r: r.path)
    if config.split != "all":
        wanted = set(config.split.split(","))
        records = [r for r in records if r.split in wanted]
    index, count = config.shard
    records = records[index::count]
    return records[: config.limit] if config.limit is not None else records


def _error_row(rec: ImageRecord, message: str) -> dict[str, Any]:
    row = dict.fromkeys(SCAN_COLUMNS, "")
    row.update(
        path=rec.path,
        split=rec.split,
        label=rec.label or "",
        source=rec.source,
        status=STATUS_ERROR,
        error=message,
    )
    return row


def text_detect_config(config: ScanConfig, device: torch.device) -> TextDetectConfig:
    """The text detector settings of a scan, on ``device``."""
    return TextDetectConfig(
        detector=config.text_detector,
        long_side=config.text_long_side,
        device=str(device),
        precision=config.text_precision,
    )


def _text_columns(
    loaded: LoadedModel,
    cache: ImageCache,
    images: torch.Tensor,
    targets: torch.Tensor,
    insertion: torch.Tensor,
    config: ScanConfig,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Text boxes (with the second look's), mass_in_text, text_area and text_reveal_prob for
    one chunk.

    ``images``: (B, C, S, S) model inputs; ``insertion``: (B, 1, S, S) insertion saliency.
    """
    prep = loaded.preprocessing
    size = prep.input_size
    originals = cache.originals
    detect_config = text_detect_config(config, device)
    all_boxes = detect_text(originals, detect_config)
    masks, columns = [], []
    for i, (original, sal) in enumerate(zip(originals, insertion, strict=True)):
        crop = prep.crop_rows(original.shape[0])
        saliency = sal[0].float().cpu().numpy()
        extra: list[list[int]] = []
        if config.second_look:
            full = saliency_to_original(saliency, original.shape, crop)
            windows = saliency_blobs(full, all_boxes[i], SecondLookConfig())
            extra = second_look(original, windows, detect_config) if windows else []
            all_boxes[i] = merge_boxes([*all_boxes[i], *extra])
        boxes = all_boxes[i]
        mass, area = text_mass(saliency, boxes, original.shape, crop)
        masks.append(model_box_mask(boxes, original.shape, crop, size))
        columns.append(
            {
                "n_boxes": len(boxes),
                "boxes": json.dumps(boxes),
                "second_look_boxes": json.dumps(extra),
                "mass_in_text": round(mass, 6),
                "text_area": round(area, 6),
            }
        )
    mask_tensor = torch.from_numpy(np.stack(masks)[:, None]).to(device)
    with torch.inference_mode():
        revealed = reveal_inputs(images, blur_baseline(images), mask_tensor)
        logits = loaded.model(revealed.contiguous(memory_format=torch.channels_last))
        reveal = torch.softmax(logits.float(), dim=1).gather(1, targets.to(device)[:, None])
    for column, prob, boxes in zip(columns, reveal[:, 0].tolist(), all_boxes, strict=True):
        column["text_reveal_prob"] = round(prob, 6) if boxes else ""
    return columns


def _explain_chunk(
    loaded: LoadedModel, cache: ImageCache, config: ScanConfig, device: torch.device
) -> BatchResult:
    """Classify, explain and score one chunk: its scan rows, its mask files (``.npz`` bytes),
    and in ``stats`` the seconds per stage and the model passes (forward / backward images) of
    the explanations."""
    prep = loaded.preprocessing
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    probs = predict_probs(loaded.model, prep, cache.images, device, len(cache))
    preds = probs.argmax(1)
    targets = preds if config.explain == "pred" else cache.labels
    images = prep.normalize(cache.images.to(device).float())
    timings["classify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    explainer = get_explainer(config.method)
    if config.method in ("igospp", "igos"):
        result = explainer(
            loaded.model,
            images,
            targets,
            config=config.igos_config(),
            device=device,
            batch_size=None,
        )
    else:
        result = explainer(loaded.model, images, targets, device=device)
    timings["explain"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    deletion, insertion = deletion_insertion(
        loaded.model, images, targets, result, steps=config.metric_steps
    )
    timings["metrics"] = time.perf_counter() - t0
    iterations = result.stats.get("iterations") or [0] * len(cache)  # Grad-CAM: none
    passes = {  # Grad-CAM: one forward and one backward per image
        key: float(result.stats.get(key, len(cache)))
        for key in ("forward_images", "backward_images")
    }
    text = [{} for _ in cache.records]
    if config.detect_text:
        t0 = time.perf_counter()
        size = (loaded.preprocessing.input_size,) * 2
        text = _text_columns(
            loaded, cache, images, targets, result.insertion_saliency(size), config, device
        )
        timings["text"] = time.perf_counter() - t0
    rows, files = [], {}
    for i, rec in enumerate(cache.records):
        arrays: dict[str, np.ndarray] = {"target": np.array(int(targets[i]))}
        mask_del = result.deletion_mask if result.deletion_mask is not None else result.mask
        arrays["deletion"] = mask_del[i, 0].detach().cpu().numpy().astype(np.float16)
        if result.insertion_mask is not None:
            arrays["insertion"] = (
                result.insertion_mask[i, 0].detach().cpu().numpy().astype(np.float16)
            )
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        mask_file = mask_filename(rec.path)
        files[mask_file] = buffer.getvalue()
        row = dict.fromkeys(SCAN_COLUMNS, "")
        row.update(
            path=rec.path,
            split=rec.split,
            label=rec.label or "",
            source=rec.source,
            pred=loaded.classes[int(preds[i])],
            prob=round(float(probs[i, preds[i]]), 6),
            deletion_auc=round(float(deletion[i]), 6),
            insertion_auc=round(float(insertion[i]), 6),
            mask_file=mask_file,
            status="ok",
            target=loaded.classes[int(targets[i])],
            target_prob=round(float(probs[i, targets[i]]), 6),
            iterations=int(iterations[i]),
        )
        row.update(text[i])
        rows.append(row)
    return BatchResult(rows, files, stats={**timings, **passes})


@dataclass(frozen=True)
class ScanStep:
    """The scan's worker step (see :mod:`xraydebug.executor`): a batch of records -> rows and
    mask files. ``root``: the dataset folder, as every worker sees it."""

    root: str
    model: LoadedModel
    config: ScanConfig

    @property
    def device(self) -> str:
        return self.config.device

    def build(self) -> _ScanWorker:
        return _ScanWorker(self)


class _ScanWorker:
    """One worker's classifier (moved to its device once); the text detector is cached per
    process by :mod:`xraydebug.text.detect`."""

    def __init__(self, spec: ScanStep) -> None:
        self.root = readable_root(spec.root)
        self.config = spec.config
        self.device = resolve_device(spec.config.device)
        self.loaded = spec.model
        self.loaded.model.to(self.device)
        if self.config.detect_text:
            load_detector(text_detect_config(self.config, self.device))

    def __call__(self, records: list[ImageRecord]) -> BatchResult:
        prep = self.loaded.preprocessing
        t0 = time.perf_counter()
        cache = ImageCache.build(
            self.root,
            records,
            self.loaded.classes,
            prep.input_size,
            prep.crop_top,
            keep_originals=self.config.detect_text,
        )
        decode = time.perf_counter() - t0
        result = (
            _explain_chunk(self.loaded, cache, self.config, self.device)
            if len(cache)
            else BatchResult([])
        )
        result.stats["decode"] = decode
        for rec, message in cache.failed:
            result.rows.append(_error_row(rec, message.removeprefix(f"{self.root / rec.path}: ")))
            result.errors.append(message)
        return result


def _read_existing(out: Path, identity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    csv_path, run_path = out / "scan.csv", out / "run.json"
    if not csv_path.exists():
        return {}
    previous = json.loads(run_path.read_text()) if run_path.exists() else {}
    if previous.get("identity") != json.loads(json.dumps(identity)):
        raise DatasetError(
            f"{out}: holds a scan made with another model or settings; "
            "use a new --out (or delete the folder) to start over"
        )
    table = read_scan_csv(csv_path)
    return {row["path"]: row for row in table.to_dict("records") if row["status"] == "ok"}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "xraydebug": version("xraydebug"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def scan(
    data: Path | str,
    model: Path | str | LoadedModel = "models/covidnet.pt",
    out: Path | str = "runs/scan",
    config: ScanConfig = ScanConfig(),
    manifest: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    report: bool = True,
    executor: ExecutorConfig | Executor | None = None,
) -> ScanResult:
    """Explain every selected image of ``data``; see the module docstring for the outputs.

    With ``report`` the HTML audit report ``out/report.html`` is (re)built at the end.
    ``executor``: where the batches run (:mod:`xraydebug.executor`; default this process).
    Every executor gives the same rows; only this process writes into ``out``.
    """
    out = Path(out)
    ensure_outside(out, Path(data), "--out")
    with open_executor(executor) as runner:
        return _scan(runner, data, model, out, config, manifest, progress, report)


def _scan(
    runner: Executor,
    data: Path | str,
    model: Path | str | LoadedModel,
    out: Path,
    config: ScanConfig,
    manifest: Path | str | None,
    progress: Callable[[int, int], None] | None,
    report: bool,
) -> ScanResult:
    start = time.perf_counter()
    if isinstance(runner, LocalExecutor):
        device = resolve_device(config.device)
    else:  # the workers pick their own device; the driver only needs the chunk size
        device = torch.device("cuda" if runner.uses_gpu(config.device) else "cpu")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, "cpu")
    if not isinstance(runner, LocalExecutor):
        loaded.model.to("cpu")  # shipped to the workers, which move it to their device
    index = load_index(data, manifest, loaded.classes)
    identity = {"model_sha256": loaded.sha256, "classes": list(loaded.classes), **config.identity()}
    if config.method in ("igospp", "igos"):  # what the preset resolved to, not only its name
        identity["saliency_settings"] = config.igos_config().to_dict()
    rows_by_path = _read_existing(out, identity)
    selected = _select(
        [r for r in index.records if r.label is not None or r.status == STATUS_ERROR], config
    )
    n_resumed = sum(1 for r in selected if r.path in rows_by_path)
    todo = [r for r in selected if r.path not in rows_by_path]
    errors = []
    for rec in todo:
        if not rec.usable and rec.path not in rows_by_path:  # duplicates: first message wins
            rows_by_path[rec.path] = _error_row(rec, rec.message)
            errors.append(f"{rec.path}: {rec.message}")
    todo = [r for r in todo if r.usable]
    prep = loaded.preprocessing
    run = {
        "identity": identity,
        "config": asdict(config),
        "model": str(loaded.path) if loaded.path else None,
        "model_sha256": loaded.sha256,
        "arch": loaded.arch,
        "classes": list(loaded.classes),
        "input_size": prep.input_size,
        "preprocessing": prep.to_dict(),
        "data": str(Path(data).resolve()),
        "device": str(device),
        "machine": machine_info(),
        "text_detector": resolve_detector(config.text_detector) if config.detect_text else None,
        "saliency": (
            {
                "method": config.method,
                "preset": config.preset,
                "settings": config.igos_config().to_dict(),
            }
            if config.method in ("igospp", "igos")
            else {"method": config.method}
        ),
        "versions": _versions(),
    }
    atomic_write_json(out / "run.json", run)
    n_new = 0

    def on_result(batch: list[ImageRecord], result: BatchResult) -> None:
        nonlocal n_new
        for row in result.rows:
            rows_by_path[row["path"]] = row
        n_new += sum(1 for row in result.rows if row["status"] == "ok")
        errors.extend(result.errors)
        _write_table(out, rows_by_path, selected, config.flag_rule())

    def on_failure(batch: list[ImageRecord], message: str) -> None:
        for rec in batch:
            rows_by_path[rec.path] = _error_row(rec, message)
            errors.append(f"{index.root / rec.path}: {message}")
        _write_table(out, rows_by_path, selected, config.flag_rule())

    spec = ScanStep(str(index.root.resolve()), loaded, config)
    stats = run_stage(
        runner,
        spec,
        todo,
        config.images_per_chunk(device),
        out,
        on_result,
        on_failure,
        progress,
    )
    run["executor"] = runner.describe()
    table = _write_table(out, rows_by_path, selected, config.flag_rule())
    seconds = time.perf_counter() - start
    run.update(
        seconds=round(seconds, 3),
        timings={k: round(stats.get(k, 0.0), 3) for k in _STAGES},
        n_images=len(selected),
        n_new=n_new,
        n_resumed=n_resumed,
        n_errors=int((table["status"] == STATUS_ERROR).sum()),
        images_per_second=round(n_new / seconds, 4) if n_new else None,
        cost_per_image=_cost_per_image(stats, n_new),
    )
    atomic_write_json(out / "run.json", run)
    report_path = build_report(out) if report else None
    return ScanResult(out, table, run, n_new, n_resumed, errors, report_path)


_STAGES = ("decode", "classify", "explain", "metrics", "text")
_PASSES = ("forward_images", "backward_images")


def _cost_per_image(stats: dict[str, float], n_new: int) -> dict[str, float] | None:
    """What one newly scanned image cost this run (summed over workers): seconds per stage and
    in all, and the model passes of its explanation (images through the model; 1 = one image)."""
    if not n_new:
        return None
    timings = {k: stats.get(k, 0.0) for k in _STAGES}
    cost = {f"{k}_seconds": round(v / n_new, 4) for k, v in timings.items()}
    cost["seconds"] = round(sum(timings.values()) / n_new, 4)
    cost.update({k: round(stats.get(k, 0.0) / n_new, 1) for k in _PASSES})
    return cost


def apply_flags(table: pd.DataFrame, rule: FlagRule) -> pd.DataFrame:
    """Set ``flagged`` ("true"/"false"; "" where text was not measured) from the text columns."""
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


def _write_table(
    out: Path,
    rows_by_path: dict[str, dict[str, Any]],
    selected: list[ImageRecord],
    rule: FlagRule,
) -> pd.DataFrame:
    """Rewrite ``scan.csv`` atomically: rows of this selection first (path order), then others
    already in the file (other shards or splits written to the same folder)."""
    chosen = {r.path for r in selected}
    ordered = [rows_by_path[r.path] for r in selected if r.path in rows_by_path]
    ordered += [row for path, row in sorted(rows_by_path.items()) if path not in chosen]
    table = apply_flags(pd.DataFrame(ordered, columns=SCAN_COLUMNS), rule)
    with atomic_open(out / "scan.csv", "w", newline="", encoding="utf-8") as handle:
        table.to_csv(handle, index=False)
    return table


def load_masks(scan_dir: Path | str, mask_file: str) -> dict[str, np.ndarray]:
    """The arrays saved for one image (``deletion``, maybe ``insertion``, ``target``)."""
    with np.load(Path(scan_dir) / mask_file) as archive:
        return {key: archive[key] for key in archive.files}
