"""Checkpoint files: one ``.pt`` holding everything needed to use a model again.

Keys: ``format``, ``arch``, ``classes``, ``preprocessing`` (dict), ``train_config`` (dict),
``data_fingerprint`` (dict), ``metrics`` (best-epoch validation metrics), ``history`` (per
epoch), ``state_dict``. An imported model (:mod:`.foreign`) has ``imported`` (its source
file's format, path and sha256) instead of the training keys, and a TorchScript or
``torch.export`` one carries its file whole in ``embedded`` (format, and the bytes as a uint8
tensor); a fine-tuned one (``retrain``) also has a non-empty ``state_dict`` of the embedded
network's parameters and buffers, loaded strictly over the file's, and ``finetuned_from``.
``multilabel`` (absent: False) marks a model with one sigmoid per finding, whose ``classes``
are findings; ``uncertain`` then records the CheXpert uncertain-label policy it was
trained with, if any, and ``thresholds`` its per-finding F1-best thresholds on validation. Only
tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it without executing
code; an embedded TorchScript or ``torch.export`` file is code, run by
:func:`load_model` as the user's own model (import only files you would run).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xraydebug.errors import CheckpointError
from xraydebug.fsutil import atomic_write_bytes, file_sha256
from xraydebug.models.architectures import Preprocessing, build_model
from xraydebug.models.embedded import ImportedModel, load_embedded
from xraydebug.models.safe_load import load_weights_only

CHECKPOINT_FORMAT = "xraydebug-checkpoint-v1"


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode) with what it expects as input."""

    model: nn.Module
    preprocessing: Preprocessing
    classes: tuple[str, ...]
    arch: str
    meta: dict[str, Any]
    path: Path | None = None
    sha256: str = ""

    @property
    def multilabel(self) -> bool:
        """True for one sigmoid per finding (``classes`` are findings); False for one softmax."""
        return bool(self.meta.get("multilabel", False))

    @property
    def thresholds(self) -> tuple[float, ...] | None:
        """Per-finding decision thresholds chosen on validation when it was trained (None:
        none recorded, e.g. an imported model)."""
        values = self.meta.get("thresholds")
        return tuple(float(v) for v in values) if values else None

    @property
    def decision_thresholds(self) -> tuple[float, ...]:
        """Where a multi-label model calls each finding: its recorded :attr:`thresholds`,
        else 0.5 for every finding."""
        return self.thresholds or (0.5,) * len(self.classes)

    @property
    def activation(self) -> str:
        """``sigmoid`` for a multi-label model, else ``softmax`` (the explainers' argument)."""
        return "sigmoid" if self.multilabel else "softmax"


def save_checkpoint(path: Path | str, model: nn.Module, **meta: Any) -> Path:
    """Write ``meta`` plus the model's CPU state_dict atomically to ``path``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **meta, "state_dict": state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load the raw checkpoint dict safely (``weights_only=True``) with clear errors."""
    path = Path(path)
    payload = load_weights_only(path, "checkpoint", " (train one with `xraydebug train`)")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path}: not an xraydebug checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
            f"found {keys}). A bare state_dict can be used with `train --init-weights`."
        )
    return payload


def load_model(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a checkpoint, load its weights strictly, eval mode, on ``device``."""
    payload = read_checkpoint(path)
    classes = tuple(payload["classes"])
    if "embedded" in payload:  # an imported TorchScript or torch.export file, carried whole
        embedded = payload["embedded"]
        try:
            inner = load_embedded(embedded["format"], embedded["data"])
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        model = ImportedModel(inner, len(classes), payload["arch"])
        if payload.get("state_dict"):  # fine-tuned (``retrain``): its weights replace the file's
            _load_weights(model, payload["state_dict"], path, f"the embedded {embedded['format']}")
    else:
        model = build_model(payload["arch"], num_classes=len(classes))
        _load_weights(model, payload["state_dict"], path, f"arch {payload['arch']!r}")
    model.eval().to(device)
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "embedded")}
    return LoadedModel(
        model=model,
        preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
        classes=classes,
        arch=payload["arch"],
        meta=meta,
        path=Path(path),
        sha256=file_sha256(path),
    )


def _load_weights(model: nn.Module, state: dict[str, Any], path: Path | str, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``, a mismatch as one ``CheckpointError``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {what}: {exc}") from exc
