"""Inference helpers shared by training (validation), evaluation, scan, text sensitivity and
retrain: class probabilities of preprocessed gray images, and mixed precision where it pays."""

from __future__ import annotations

import torch

from xraydebug.models.architectures import Preprocessing


def predict_probs(
    model: torch.nn.Module,
    preprocessing: Preprocessing,
    gray: torch.Tensor,
    device: torch.device,
    batch_size: int = 64,
    amp: bool = True,
    activation: str = "softmax",
) -> torch.Tensor:
    """Probabilities (N, K) for gray images already at the model's size: ``softmax`` over the
    classes, or the ``sigmoid`` of each finding's logit (multi-label models).

    ``gray`` (N, 1, S, S) in [0, 1] on any device (any float dtype); runs in inference mode.
    """
    outputs = []
    with torch.inference_mode():
        for start in range(0, gray.shape[0], batch_size):
            x = preprocessing.normalize(gray[start : start + batch_size].to(device).float())
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(x)
            outputs.append(class_probabilities(logits.float(), activation).cpu())
    k = getattr(model, "num_classes", None)
    return torch.cat(outputs) if outputs else torch.zeros(0, k or 0)


def class_probabilities(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """(N, K) logits -> probabilities: ``softmax`` over the classes or ``sigmoid`` per finding."""
    return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=1)


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 (fp16 where bf16 is unsupported) autocast on CUDA with ``amp``; off on CPU."""
    enabled = amp and device.type == "cuda"
    dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)
