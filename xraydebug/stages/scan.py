"""``xraydebug scan``: classify, explain (iGOS++) and check for text shortcuts, image by image.

Writes, under ``out`` (file names in :mod:`xraydebug.runfolder`):

- ``scan.csv``: one row per image and explained target (the predicted class; every finding a
  multi-label model calls; or the ``targets`` asked for), columns
  :data:`~xraydebug.runfolder.SCAN_COLUMNS` (DESIGN.md section 7). The text columns
  (``n_boxes``, ``boxes``, ``mass_in_text``, ``text_area``, ``text_reveal_prob``,
  ``flagged``) come from the text detector and :mod:`xraydebug.flagging`; they stay empty
  when ``ScanConfig.detector`` is None. ``boxes`` includes ``second_look_boxes``: text found
  by zooming in on compact saliency blobs outside every first-pass box
  (:class:`~xraydebug.text.SecondLook`). ``flagged`` is recomputed from them on every write,
  so new flag thresholds apply without rescanning.
- ``masks/<path>.npz`` (``masks/<path>.<target>.npz`` for multi-label models and scans with
  ``targets``): ``deletion`` and ``insertion`` masks (s, s) float16 in [0, 1] (0 = salient;
  ``insertion`` absent for single-mask methods), ``target`` class index.
- ``run.json``: the resolved config, versions, model hash, timings and images/s, the saliency
  method with its resolved settings (``saliency``) and what one image cost
  (``cost_per_image``: seconds per stage, forward/backward model passes).

The audit report is the caller's to build (:func:`xraydebug.audit.report.build_report`).

Images are processed in chunks of ``batch_size`` (default 8 on CPU, 64 on CUDA; memory bounded
whatever the dataset size) by the shared driver (:mod:`xraydebug.stages.driver`): after every
chunk ``scan.csv`` is rewritten atomically, so a killed scan resumes where it stopped when rerun
with the same model and config. ``shard=(i, n)`` keeps every n-th image from the i-th (0-based)
of the path-sorted list, so n machines can split a dataset by hand; ``executor``
(:mod:`xraydebug.executor`) runs the chunks on Ray actors instead. Either way the worker step
(:class:`ScanStep`) only returns rows and mask bytes, and this process alone writes ``out``.
"""

from __future__ import annotations

import io
import json
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xraydebug.data.labels import LABELS_UNUSED
from xraydebug.data.layouts import load_index
from xraydebug.data.records import STATUS_ERROR, DatasetIndex, ImageRecord
from xraydebug.data.torch_dataset import ImageCache
from xraydebug.device import machine_info, resolve_device
from xraydebug.executor import BatchResult, Executor, ExecutorConfig, readable_root
from xraydebug.flagging import (
    FlagRule,
    apply_flags,
    model_box_mask,
    reveal_inputs,
    saliency_to_original,
    text_mass,
)
from xraydebug.fsutil import ensure_outside
from xraydebug.inpaint import build_inpainter
from xraydebug.models.checkpoint import LoadedModel, load_model
from xraydebug.models.evaluate import check_kind, predicted_label
from xraydebug.models.inference import class_probabilities, predict_probs
from xraydebug.runfolder import RUN_JSON, SCAN_COLUMNS, SCAN_CSV, mask_filename
from xraydebug.saliency import (
    IGOSConfig,
    SaliencyResult,
    blur_baseline,
    deletion_insertion,
    get_explainer,
)
from xraydebug.saliency.config import DEFAULT_PRESET
from xraydebug.saliency.removal import Removal, RemovalConfig
from xraydebug.settings import field_names, take_fields
from xraydebug.stages import driver
from xraydebug.stages.options import detector_from_options, detector_record, finish_options
from xraydebug.text import (
    DetectorConfig,
    SecondLook,
    SecondLookConfig,
    TextDetector,
    build_detector,
    detector_config,
    merge_boxes,
    saliency_blobs,
)

__all__ = ["ScanConfig", "ScanResult", "ScanStage", "ScanStep", "parse_shard", "scan"]

DEFAULT_MASK_SIZE = 56  # the scan's mask side: high resolution at an affordable cost (README)
_CPU_CHUNK = 8  # images explained together on CPU: the engine's own chunks hold <= 32 rows
_CUDA_CHUNK = 64  # on CUDA: 64 images x 4 terms x K points keep a large GPU busy
_STAGES = ("decode", "classify", "explain", "metrics", "text")
_PASSES = ("forward_images", "backward_images")


def _default_saliency() -> IGOSConfig:
    return IGOSConfig.preset(DEFAULT_PRESET, mask_size=DEFAULT_MASK_SIZE)


@dataclass(frozen=True)
class ScanConfig:
    """Settings of one scan (written whole to ``run.json``).

    Attributes:
        method: the explainer (:func:`xraydebug.saliency.explainer_names`).
        saliency: the explainer's own config (``IGOSConfig`` for igospp/igos; default the
            ``balanced`` preset at mask 56); its ``seed`` seeds the explanation.
        explain: explain the predicted (``pred``) or the labelled (``label``) class (one-label
            models; a multi-label model explains every finding it calls, see ``targets``).
        targets: classes or findings to explain in every image (one row each); empty: the
            predicted class, or for a multi-label model every finding at or above its
            threshold (the finding of highest probability when none is).
        metric_steps: steps of the deletion/insertion curves.
        detector: the text detector's config (:func:`xraydebug.text.detector_config`);
            None scans without text detection and flags.
        precision: the text networks' precision: ``fp32``, ``bf16`` or ``auto``.
        second_look: zoom in on salient blobs outside every text box; None: off.
        flags: when an image is flagged (recomputed on every write; not part of the identity).
        removal: how evidence is removed (:class:`~xraydebug.saliency.removal.RemovalConfig`):
            the filler of iGOS++ / I-GOS (MP2-G with ``inpaint``), of the deletion/insertion
            metrics and of the reveal test; its inpainter also removes the text boxes for the
            removal test (``text_removed_prob``; ``telea``, as ``clean``, by default).
        split, shard, limit: which images (``DatasetIndex.select``).
        batch_size: images explained together; None: 8 on CPU, 64 on CUDA.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    method: str = "igospp"
    saliency: Any = field(default_factory=_default_saliency)
    explain: str = "pred"
    targets: tuple[str, ...] = ()
    metric_steps: int = 50
    detector: DetectorConfig | None = field(default_factory=detector_config)
    precision: str = "fp32"
    second_look: SecondLookConfig | None = field(default_factory=SecondLookConfig)
    flags: FlagRule = field(default_factory=FlagRule)
    removal: RemovalConfig = field(default_factory=RemovalConfig)
    split: str = "all"
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    batch_size: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        explainer = get_explainer(self.method)  # unknown names list the valid ones
        if not isinstance(self.saliency, explainer.config_class):
            raise TypeError(
                f"saliency: {self.method} takes a {explainer.config_class.__name__}, got "
                f"{type(self.saliency).__name__}"
            )
        if self.explain not in ("pred", "label"):
            raise ValueError(f"explain must be 'pred' or 'label', got {self.explain!r}")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], sets: Mapping[str, Any] | None = None
    ) -> ScanConfig:
        """A scan config from flat options, routed by field name (None = not given): ``method``
        and ``preset`` plus the explainer config's fields build ``saliency``; ``text`` (False:
        no detector) and ``detector`` plus that detector's fields build ``detector``; the rest
        are this class's fields. ``sets``: dotted ``--set`` overrides, applied last."""
        opts = dict(options)
        text = opts.pop("text", None) is not False
        method, preset = opts.pop("method", None) or cls.method, opts.pop("preset", None)
        name = opts.pop("detector", None)
        removal = removal_from_options(opts)
        own = take_fields(cls, opts)  # the scan's own settings first: batch_size is the scan's
        detector = detector_from_options(name, opts)
        explainer = get_explainer(method)
        chosen = take_fields(explainer.config_class, opts)
        if "mask_size" in field_names(explainer.config_class):
            chosen.setdefault("mask_size", DEFAULT_MASK_SIZE)
        saliency = explainer.default_config(**({"preset": preset} if preset else {}), **chosen)
        config = cls(
            **own,
            method=method,
            saliency=saliency,
            detector=detector if text else None,
            removal=removal,
        )
        return finish_options(config, opts, sets or {})

    def images_per_chunk(self, device: torch.device) -> int:
        """``batch_size``, or by default 8 images on CPU and 64 on CUDA."""
        if self.batch_size is not None:
            return self.batch_size
        return _CUDA_CHUNK if device.type == "cuda" else _CPU_CHUNK

    def text_detector(self, device: str | torch.device) -> TextDetector | None:
        """The text detector of this scan on ``device`` (not loaded), or None."""
        if self.detector is None:
            return None
        return build_detector(self.detector, device=str(device), precision=self.precision)

    def resolved(self) -> dict[str, Any]:
        """The whole config as JSON-able values, with the explainer's and the detector's
        settings as they resolved (for ``run.json``)."""
        out = asdict(self)
        out["saliency"] = get_explainer(self.method).describe(self.saliency)
        out["removal"] = self.removal.to_dict() | self.removal.describe()
        detector = self.text_detector("cpu")
        out["detector"] = detector_record(detector) if detector else None
        return json.loads(json.dumps(out))

    def identity(self) -> dict[str, Any]:
        """What makes two scans the same: not the device, batch size or image selection (a
        resumed scan may differ in those), nor the flag thresholds (flags are recomputed)."""
        out = self.resolved()
        for key in ("batch_size", "device", "shard", "limit", "split", "flags"):
            del out[key]
        if self.removal == RemovalConfig():
            del out["removal"]  # the default: scans from before the option still resume
        return out


def removal_from_options(options: dict[str, Any]) -> RemovalConfig:
    """The removal settings among flat options (taken out of ``options``): ``removal`` (the
    operator), ``removal_inpainter`` (default: ``telea``), ``inpainter_model``,
    ``removal_top`` and ``removal_every`` (None = the default)."""
    names = {
        "removal": "operator",
        "removal_inpainter": "inpainter",
        "inpainter_model": "inpainter_model",
        "removal_top": "top",
        "removal_every": "every",
    }
    given = {field: options.pop(key, None) for key, field in names.items()}
    if given["inpainter_model"] is not None:
        given["inpainter_model"] = str(given["inpainter_model"])
    return RemovalConfig(**{k: v for k, v in given.items() if v is not None})


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); 0-based ``i``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/n such as 0/4, got {text!r}") from None
    return index, count


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

    def build(self) -> ScanWorker:
        return ScanWorker(self)


class ScanWorker:
    """One worker's classifier (moved to its device once), explainer, text detector and
    second look, all loaded when the worker starts."""

    def __init__(self, spec: ScanStep) -> None:
        self.root = readable_root(spec.root)
        self.config = spec.config
        self.device = resolve_device(spec.config.device)
        self.loaded = spec.model
        self.loaded.model.to(self.device)
        self.explainer = get_explainer(self.config.method)
        removal = self.config.removal
        self.removal = Removal(removal, device=self.device) if removal.operator != "blur" else None
        # the removal test inpaints the text boxes as clean would (its radius, not the
        # explanations' smaller one)
        self.text_remover = build_inpainter(
            removal.inpainter, device=str(self.device), model=removal.inpainter_model
        ).load()
        detector = self.config.text_detector(self.device)
        self.detector = detector.load() if detector else None
        self.second_look = None
        if detector and self.config.second_look is not None:
            self.second_look = SecondLook(
                self.config.second_look, device=str(self.device), precision=self.config.precision
            ).load()

    def __call__(self, records: list[ImageRecord]) -> BatchResult:
        prep = self.loaded.preprocessing
        t0 = time.perf_counter()
        cache = ImageCache.build(
            self.root,
            records,
            self.loaded.classes,
            prep.input_size,
            prep.crop_top,
            keep_originals=self.detector is not None,
        )
        decode = time.perf_counter() - t0
        result = self._explain_chunk(cache) if len(cache) else BatchResult([])
        result.stats["decode"] = decode
        for rec, message in cache.failed:
            result.rows.append(_error_row(rec, message.removeprefix(f"{self.root / rec.path}: ")))
            result.errors.append(message)
        return result

    def _explain_chunk(self, cache: ImageCache) -> BatchResult:
        """Classify, explain and score one chunk: its rows, its mask files (``.npz`` bytes),
        and in ``stats`` the seconds per stage and the model passes of the explanations."""
        loaded, config, device = self.loaded, self.config, self.device
        prep = loaded.preprocessing
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        activation = loaded.activation
        probs = predict_probs(
            loaded.model, prep, cache.images, device, len(cache), activation=activation
        )
        owner, targets = explained_targets(loaded, probs, cache.labels, config)
        images = prep.normalize(cache.images.to(device).float())[owner]
        timings["classify"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        removal = {"removal": self.removal} if self.removal and self.explainer.removes else {}
        result = self.explainer.explain(
            loaded.model,
            images,
            targets,
            config.saliency,
            device=device,
            activation=activation,
            **removal,
        )
        timings["explain"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        deletion, insertion = deletion_insertion(
            loaded.model,
            images,
            targets,
            result,
            steps=config.metric_steps,
            activation=activation,
            removal=self.removal,
        )
        timings["metrics"] = time.perf_counter() - t0
        text: list[dict[str, Any]] = [{} for _ in owner]
        if self.detector is not None:
            t0 = time.perf_counter()
            size = (prep.input_size,) * 2
            saliency = result.insertion_saliency(size)
            text = self._text_columns(self.detector, cache, images, owner, targets, saliency)
            timings["text"] = time.perf_counter() - t0
        rows, files = [], {}
        several = bool(config.targets) or loaded.multilabel
        iterations = _iterations(result, len(owner))
        for j, (i, target) in enumerate(zip(owner.tolist(), targets.tolist(), strict=True)):
            rec, name = cache.records[i], loaded.classes[target]
            mask_file = mask_filename(rec.path, name if several else None)
            files[mask_file] = _mask_bytes(result, j, target)
            top = int(probs[i].argmax())
            rows.append(
                {
                    **dict.fromkeys(SCAN_COLUMNS, ""),
                    "path": rec.path,
                    "split": rec.split,
                    "label": rec.label or "",
                    "source": rec.source,
                    "pred": predicted_label(probs[i].numpy(), loaded),
                    "prob": round(float(probs[i, top]), 6),
                    "deletion_auc": round(float(deletion[j]), 6),
                    "insertion_auc": round(float(insertion[j]), 6),
                    "mask_file": mask_file,
                    "status": "ok",
                    "target": name,
                    "target_prob": round(float(probs[i, target]), 6),
                    "iterations": int(iterations[j]),
                    **text[j],
                }
            )
        return BatchResult(rows, files, stats={**timings, **_passes(result, len(owner))})

    def _boxes(
        self, detector: TextDetector, originals: list[np.ndarray], insertion: torch.Tensor
    ) -> list[tuple[list, list]]:
        """(all boxes, second-look boxes) per film: ``detector``'s, plus what the second look
        finds around compact saliency blobs outside them."""
        prep = self.loaded.preprocessing
        found = []
        for original, sal, boxes in zip(
            originals, insertion, detector.detect(originals), strict=True
        ):
            extra: list[list[int]] = []
            if self.second_look is not None:
                crop = prep.crop_rows(original.shape[0])
                full = saliency_to_original(sal[0].float().cpu().numpy(), original.shape, crop)
                windows = saliency_blobs(full, boxes, self.second_look.config)
                extra = self.second_look(original, windows) if windows else []
                boxes = merge_boxes([*boxes, *extra])
            found.append((boxes, extra))
        return found

    def _text_columns(
        self,
        detector: TextDetector,
        cache: ImageCache,
        images: torch.Tensor,
        owner: torch.Tensor,
        targets: torch.Tensor,
        insertion: torch.Tensor,
    ) -> list[dict[str, Any]]:
        """Text boxes (with the second look's), mass_in_text, text_area and text_reveal_prob
        for one chunk's P (image, target) pairs. ``images``: (P, C, S, S) model inputs;
        ``owner`` (P,) the image of each pair; ``insertion``: (P, 1, S, S) insertion saliency.
        Text is detected once per image (the second look around the first pair's saliency
        blobs) and shared by the image's pairs."""
        prep = self.loaded.preprocessing
        masks, columns = [], []
        originals = cache.originals or []
        first = {int(i): j for j, i in reversed(list(enumerate(owner.tolist())))}
        per_image = self._boxes(
            detector, originals, insertion[[first[i] for i in range(len(originals))]]
        )
        found = [per_image[int(i)] for i in owner]
        for j, (sal, (boxes, extra)) in enumerate(zip(insertion, found, strict=True)):
            original = originals[int(owner[j])]
            crop = prep.crop_rows(original.shape[0])
            mass, area = text_mass(sal[0].float().cpu().numpy(), boxes, original.shape, crop)
            masks.append(model_box_mask(boxes, original.shape, crop, prep.input_size))
            columns.append(
                {
                    "n_boxes": len(boxes),
                    "boxes": json.dumps(boxes),
                    "second_look_boxes": json.dumps(extra),
                    "mass_in_text": round(mass, 6),
                    "text_area": round(area, 6),
                }
            )
        reveal, removed = self._reveal_probs(images, targets, np.stack(masks))
        for column, shown, gone, (boxes, _) in zip(columns, reveal, removed, found, strict=True):
            column["text_reveal_prob"] = round(shown, 6) if boxes else ""
            column["text_removed_prob"] = round(gone, 6) if boxes else ""
        return columns

    def _reveal_probs(
        self, images: torch.Tensor, targets: torch.Tensor, masks: np.ndarray
    ) -> tuple[list[float], list[float]]:
        """The targets' probabilities (1) with only the text boxes revealed, everything else
        removed by the scan's operator (blur: the iGOS++ paper's confirmation test), and (2)
        with the text boxes inpainted away and everything else shown (what the model says
        once ``clean`` has run); ``masks``: (B, S, S) box coverage in [0, 1]."""
        mask_tensor = torch.from_numpy(masks[:, None]).to(self.device)
        with torch.inference_mode():
            if self.removal is None:
                revealed = reveal_inputs(images, blur_baseline(images), mask_tensor)
            else:
                revealed = self.removal(images, 1.0 - mask_tensor)
            removed = self.text_remover.inpaint_tensor(images, (mask_tensor > 0).float())
            probs = self._target_probs(torch.cat([revealed, removed]), targets.repeat(2))
        return probs[: len(images)], probs[len(images) :]

    def _target_probs(self, inputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
        logits = self.loaded.model(inputs.contiguous(memory_format=torch.channels_last))
        probs = class_probabilities(logits.float(), self.loaded.activation)
        return probs.gather(1, targets.to(self.device)[:, None])[:, 0].tolist()


def check_targets(loaded: LoadedModel, config: ScanConfig) -> None:
    """A ValueError naming the problem where ``config`` asks for targets ``loaded`` cannot
    give: a ``--target`` that is not one of its classes, or ``explain='label'`` with a
    multi-label model or with ``--target`` (both choose the targets otherwise)."""
    unknown = [t for t in config.targets if t not in loaded.classes]
    if unknown:
        raise ValueError(
            f"--target {', '.join(unknown)}: not among the model's "
            f"{'findings' if loaded.multilabel else 'classes'} ({', '.join(loaded.classes)})"
        )
    if config.explain == "label" and (config.targets or loaded.multilabel):
        raise ValueError(
            "--explain label explains a one-label model's labelled class; a multi-label model "
            "explains the findings it calls, and --target names the targets itself"
        )


def explained_targets(
    loaded: LoadedModel, probs: torch.Tensor, labels: torch.Tensor, config: ScanConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, target) pairs a chunk explains, as ``owner`` (P,) image indices and
    ``targets`` (P,) class indices, image by image: ``config.targets`` when given; else
    the predicted class (or the label, ``explain='label'``) of a one-label model; else every
    finding a multi-label model calls (probability >= its threshold, 0.5 without one), or its
    most probable finding when it calls none. ``probs`` (B, K); ``labels`` the cache's."""
    if config.targets:
        chosen = [[loaded.classes.index(t) for t in config.targets]] * probs.shape[0]
    elif loaded.multilabel:
        thresholds = torch.tensor(loaded.decision_thresholds)
        calls = probs >= thresholds
        chosen = [
            row.nonzero()[:, 0].tolist() or [int(p.argmax())]
            for row, p in zip(calls, probs, strict=True)
        ]
    elif config.explain == "label":
        chosen = [[int(y)] for y in labels]
    else:
        chosen = [[int(k)] for k in probs.argmax(1)]
    owner = torch.tensor([i for i, ks in enumerate(chosen) for _ in ks], dtype=torch.long)
    targets = torch.tensor([k for ks in chosen for k in ks], dtype=torch.long)
    return owner, targets


def _iterations(result: SaliencyResult, n: int) -> list[int]:
    return result.stats.get("iterations") or [0] * n  # Grad-CAM: none


def _passes(result: SaliencyResult, n: int) -> dict[str, float]:
    """Forward / backward images of the explanation (Grad-CAM: one each per image)."""
    return {key: float(result.stats.get(key, n)) for key in _PASSES}


def _mask_bytes(result: SaliencyResult, i: int, target: int) -> bytes:
    """Image ``i``'s masks as a compressed ``.npz``: ``deletion`` (or the single mask),
    ``insertion`` where the method has one, ``target``."""
    arrays: dict[str, np.ndarray] = {"target": np.array(target)}
    mask_del = result.deletion_mask if result.deletion_mask is not None else result.mask
    arrays["deletion"] = mask_del[i, 0].detach().cpu().numpy().astype(np.float16)
    if result.insertion_mask is not None:
        arrays["insertion"] = result.insertion_mask[i, 0].detach().cpu().numpy().astype(np.float16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "xraydebug": version("xraydebug"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


class ScanStage(driver.Stage):
    """The scan, declared for :func:`xraydebug.stages.driver.run`."""

    name = "scan"
    table_file = SCAN_CSV
    state_file = RUN_JSON
    columns = SCAN_COLUMNS

    def __init__(self, index: DatasetIndex, loaded: LoadedModel, config: ScanConfig) -> None:
        self.index, self.loaded, self.config = index, loaded, config
        self.device = resolve_device(config.device)

    def select(self) -> list[ImageRecord]:
        c = self.config
        return self.index.select(split=c.split, shard=c.shard, limit=c.limit)

    def identity(self) -> dict[str, Any]:
        return {
            "model_sha256": self.loaded.sha256,
            "classes": list(self.loaded.classes),
            **self.config.identity(),
        }

    def record(self) -> dict[str, Any]:
        loaded, config = self.loaded, self.config
        resolved = config.resolved()
        return {
            "config": resolved,
            "model": str(loaded.path) if loaded.path else None,
            "model_sha256": loaded.sha256,
            "arch": loaded.arch,
            "classes": list(loaded.classes),
            "multilabel": loaded.multilabel,
            "thresholds": list(loaded.thresholds) if loaded.thresholds else None,
            "input_size": loaded.preprocessing.input_size,
            "preprocessing": loaded.preprocessing.to_dict(),
            "data": str(self.index.root.resolve()),
            "device": str(self.device),
            "machine": machine_info(),
            "text_detector": resolved["detector"]["name"] if resolved["detector"] else None,
            "saliency": resolved["saliency"],
            "versions": _versions(),
        }

    def start(self, executor: Executor) -> None:
        self.device = executor.compute_device(self.config.device)
        self.loaded.model.to(executor.model_home(self.config.device))

    def step(self) -> ScanStep:
        return ScanStep(str(self.index.root.resolve()), self.loaded, self.config)

    def batch_size(self, device: torch.device) -> int:
        return self.config.images_per_chunk(device)

    def error_row(self, record: ImageRecord, message: str) -> dict[str, Any]:
        return _error_row(record, message)

    def finish(self, table: pd.DataFrame) -> pd.DataFrame:
        return apply_flags(table, self.config.flags)

    def summarize(self, outcome: driver.StageRun) -> dict[str, Any]:
        n_new = outcome.n_new
        seconds = outcome.state.get("seconds") or 0.0
        return {
            "device": str(self.device),
            "timings": {k: round(outcome.stats.get(k, 0.0), 3) for k in _STAGES},
            "n_images": outcome.n_selected,
            "n_new": n_new,
            "n_resumed": outcome.n_resumed,
            "n_errors": int((outcome.table["status"] == STATUS_ERROR).sum()),
            "images_per_second": round(n_new / seconds, 4) if n_new and seconds else None,
            "cost_per_image": _cost_per_image(outcome.stats, n_new),
        }


@dataclass
class ScanResult:
    out: Path
    table: pd.DataFrame
    run: dict[str, Any]
    n_new: int = 0
    n_resumed: int = 0
    errors: list[str] = field(default_factory=list)


def scan(
    data: Path | str,
    model: Path | str | LoadedModel = "models/covidnet.pt",
    out: Path | str = "runs/scan",
    *,
    config: ScanConfig | None = None,
    manifest: Path | str | None = None,
    progress: driver.Progress | None = None,
    executor: ExecutorConfig | Executor | None = None,
) -> ScanResult:
    """Explain every selected image of ``data``; see the module docstring for the outputs.

    ``executor``: where the batches run (:mod:`xraydebug.executor`; default this process).
    Every executor gives the same rows; only this process writes into ``out``. The audit
    report is built by the caller: ``xraydebug.build_report(out)``.
    """
    config = config or ScanConfig()
    out = Path(out)
    ensure_outside(out, Path(data), "--out")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, "cpu")
    # labels are only shown: uncertain ones need no policy where the model records none
    uncertain = loaded.meta.get("uncertain") or LABELS_UNUSED
    # a multi-label model may name findings the data does not label: read the layout's own
    # (labels are only shown here)
    classes = None if loaded.multilabel else loaded.classes
    index = load_index(data, manifest, classes, uncertain=uncertain)
    check_kind(loaded.multilabel, index)
    check_targets(loaded, config)
    outcome = driver.run(
        ScanStage(index, loaded, config), out, executor=executor, progress=progress
    )
    return ScanResult(
        out, outcome.table, outcome.state, outcome.n_new, outcome.n_resumed, outcome.errors
    )


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
