"""Grad-CAM (Selvaraju et al. 2017), the fast baseline explainer.

``cam = relu(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``d y_c / d A_k`` (``y_c`` the
target logit, ``A`` the chosen layer's output), normalised to [0, 1] per image by its maximum.
The score is the logit itself, before any softmax or sigmoid, so ``activation`` does not change
the maps. The forward hook lives only for the call and is removed in ``finally``. Parameters
keep ``requires_grad=False``: the input is made to require grad instead, so the activation is
part of the graph and ``torch.autograd.grad`` gives its gradient without touching any ``.grad``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .config import GradCAMConfig
from .masks import default_batch_size
from .registry import Explainer, Targets, register_explainer
from .result import SaliencyResult
from .runtime import (
    check_activation,
    check_images,
    frozen_model,
    model_logits,
    pair_up,
    resolve_device,
    sync,
)


def default_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` in ``model.modules()`` order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("gradcam: the model has no nn.Conv2d layer; pass layer=<module or name>")
    return convs[-1]


def _resolve_layer(model: nn.Module, layer: str | None) -> nn.Module:
    if layer is None:
        return default_layer(model)
    named = dict(model.named_modules())
    if layer not in named:
        some = [n for n in named if n][:10]
        raise ValueError(f"gradcam: no layer named {layer!r} in the model (e.g. {some})")
    return named[layer]


def layer_name(model: nn.Module, layer: nn.Module | str | None) -> str | None:
    """The name in ``model.named_modules()`` of ``layer`` (a module, a name or ``None``)."""
    if layer is None or isinstance(layer, str):
        return layer
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError("gradcam: layer is not a submodule of the model")


@contextlib.contextmanager
def _captured_outputs(module: nn.Module) -> Iterator[list[Tensor]]:
    """The outputs of ``module``'s forward calls while the block runs (hook removed after)."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise TypeError("gradcam: the layer must output a (N, K, h, w) tensor")
        captured.append(output)

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _check_classes(targets: Tensor, n_classes: int) -> None:
    if int(targets.max()) >= n_classes or int(targets.min()) < 0:
        raise ValueError(
            f"targets: expected class indices in [0, {n_classes - 1}], "
            f"got values in [{int(targets.min())}, {int(targets.max())}]"
        )


def _normalised_cam(grad: Tensor, act: Tensor) -> Tensor:
    """``relu(sum_k mean(grad_k) * A_k)`` divided by its maximum per image (0 where it is 0)."""
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act.detach()).sum(dim=1, keepdim=True)).float()
    peak = cam.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def _cams(model: nn.Module, module: nn.Module, x_all: Tensor, targets: Tensor, bs: int) -> Tensor:
    """``(N, 1, h, w)`` normalised CAMs of ``x_all`` in chunks of ``bs`` images."""
    cams = []
    with _captured_outputs(module) as captured:
        for c0 in range(0, x_all.shape[0], bs):
            captured.clear()
            x = x_all[c0 : c0 + bs].clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model_logits(model, x)
                if not captured:
                    raise RuntimeError("gradcam: the layer was not called in the forward pass")
                act = captured[-1]
                if c0 == 0:
                    _check_classes(targets, logits.shape[1])
                score = logits.gather(1, targets[c0 : c0 + bs].view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(score, act)
            cams.append(_normalised_cam(grad, act))
            captured.clear()
    return torch.cat(cams)


class GradCAMExplainer(Explainer):
    """Grad-CAM as a registered explainer; settings in a :class:`GradCAMConfig`."""

    name = "gradcam"
    title = "Grad-CAM"
    config_class = GradCAMConfig

    def explain(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Targets,
        config: GradCAMConfig | None = None,
        *,
        device: torch.device | str | None = None,
        activation: str = "softmax",
    ) -> SaliencyResult:
        """Grad-CAM of every (image, target) pair (see :meth:`Explainer.explain`; ``(B, T)``
        targets give ``B*T`` rows, image 0's first). ``activation`` is checked but does not
        change the maps: the score is the target's logit.

        Returns:
            :class:`SaliencyResult` with ``mask = 1 - cam`` ``(N, 1, h, w)`` at the layer's
            resolution, values in [0, 1] (0 = most salient); no deletion/insertion masks.
        """
        cfg = self.checked(config)
        check_activation(activation)
        check_images(images)
        start = time.perf_counter()
        out_device = images.device
        dev = resolve_device(model, images, device)
        x_all = images.detach().to(dev, torch.float32)
        module = _resolve_layer(model, cfg.layer)
        with frozen_model(model):
            x_all, tgt, _ = pair_up(model, x_all, targets)
            bs = cfg.batch_size or default_batch_size(x_all[0].numel())
            cam = _cams(model, module, x_all, tgt, bs)
        sync(dev)
        seconds = time.perf_counter() - start
        b = x_all.shape[0]
        extra = b if targets is None else 0
        stats = {
            "method": self.name,
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
            mask=1.0 - cam.to(out_device),
            targets=tgt.to(out_device),
            method=self.name,
            stats=stats,
        )


GRADCAM = register_explainer(GradCAMExplainer())


def gradcam(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    activation: str = "softmax",
) -> SaliencyResult:
    """Grad-CAM saliency of ``targets`` for ``images`` ``(B, C, H, W)``: the keyword form of
    ``get_explainer("gradcam").explain`` (:meth:`GradCAMExplainer.explain`).

    Args:
        layer: module (or its name in ``model.named_modules()``) whose output is used; default
            the last ``nn.Conv2d``.
        batch_size: images per forward/backward; default about 16M input elements per chunk.
        device: where to compute; default the model's device.
    """
    config = GradCAMConfig(layer=layer_name(model, layer), batch_size=batch_size)
    return GRADCAM.explain(model, images, targets, config, device=device, activation=activation)
