"""Grad-CAM (Selvaraju et al. 2017), the fast baseline explainer.

``cam = relu(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``d y_c / d A_k`` (``y_c`` the
target logit, ``A`` the chosen layer's output), normalised to [0, 1] per image by its maximum.
The forward hook lives only for the call and is removed in ``finally``. Parameters keep
``requires_grad=False``: the input is made to require grad instead, so the activation is part of
the graph and ``torch.autograd.grad`` gives its gradient without touching any ``.grad`` field.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .masks import default_batch_size
from .result import SaliencyResult
from .runtime import as_targets, check_images, frozen_model, model_logits, resolve_device, sync


def default_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` in ``model.modules()`` order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("gradcam: the model has no nn.Conv2d layer; pass layer=<module or name>")
    return convs[-1]


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    if layer is None:
        return default_layer(model)
    if isinstance(layer, str):
        named = dict(model.named_modules())
        if layer not in named:
            some = [n for n in named if n][:10]
            raise ValueError(f"gradcam: no layer named {layer!r} in the model (e.g. {some})")
        return named[layer]
    if not any(m is layer for m in model.modules()):
        raise ValueError("gradcam: layer is not a submodule of the model")
    return layer


def gradcam(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int] | int | None,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> SaliencyResult:
    """Grad-CAM saliency of ``targets`` for ``images`` ``(B, C, H, W)``.

    Args:
        layer: module (or its name in ``model.named_modules()``) whose output is used; default
            the last ``nn.Conv2d``.
        batch_size: images per forward/backward; default about 16M input elements per chunk.
        device: where to compute; default the model's device.
        seed: accepted for a uniform explainer signature; Grad-CAM is deterministic.

    Returns:
        :class:`SaliencyResult` with ``mask = 1 - cam`` ``(B, 1, h, w)`` at the layer's resolution,
        values in [0, 1] (0 = most salient); ``deletion_mask``/``insertion_mask`` are ``None``.
    """
    del seed
    check_images(images)
    start = time.perf_counter()
    out_device = images.device
    dev = resolve_device(model, images, device)
    x_all = images.detach().to(dev, torch.float32)
    module = _resolve_layer(model, layer)
    bs = batch_size or default_batch_size(x_all[0].numel())
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise TypeError("gradcam: the layer must output a (N, K, h, w) tensor")
        captured.append(output)

    cams = []
    with frozen_model(model):
        tgt = as_targets(model, x_all, targets)
        handle = module.register_forward_hook(hook)
        try:
            for c0 in range(0, x_all.shape[0], bs):
                captured.clear()
                x = x_all[c0 : c0 + bs].clone().requires_grad_(True)
                with torch.enable_grad():
                    logits = model_logits(model, x)
                    if not captured:
                        raise RuntimeError("gradcam: the layer was not called in the forward pass")
                    act = captured[-1]
                    if c0 == 0 and (int(tgt.max()) >= logits.shape[1] or int(tgt.min()) < 0):
                        raise ValueError(
                            f"targets: expected class indices in [0, {logits.shape[1] - 1}], "
                            f"got values in [{int(tgt.min())}, {int(tgt.max())}]"
                        )
                    score = logits.gather(1, tgt[c0 : c0 + bs].view(-1, 1)).sum()
                    (grad,) = torch.autograd.grad(score, act)
                weights = grad.mean(dim=(2, 3), keepdim=True)
                cam = torch.relu((weights * act.detach()).sum(dim=1, keepdim=True)).float()
                peak = cam.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
                cams.append(
                    torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
                )
                captured.clear()
        finally:
            handle.remove()
    sync(dev)
    cam = torch.cat(cams).to(out_device)
    seconds = time.perf_counter() - start
    b = x_all.shape[0]
    extra = b if targets is None else 0
    stats = {
        "method": "gradcam",
        "images": b,
        "layer": type(module).__name__,
        "forward_images": b + extra,
        "backward_images": b,
        "forward_images_per_image": (b + extra) / b,
        "backward_images_per_image": 1.0,
        "seconds": seconds,
        "seconds_per_image": seconds / b,
        "device": str(dev),
        "batch_size": bs,
        "insertion_mask": False,
    }
    return SaliencyResult(
        deletion_mask=None,
        insertion_mask=None,
        mask=1.0 - cam,
        targets=tgt.to(out_device),
        method="gradcam",
        stats=stats,
    )
