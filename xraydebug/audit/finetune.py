"""Fine-tuning an imported baseline (``xraydebug import-model``) on the cleaned data.

An imported baseline records no recipe to repeat: :func:`~xraydebug.audit.retrain.retrain`
fine-tunes it instead, starting from its own weights, with its own preprocessing (input size,
channels, mean/std, top crop) and the fine-tuning recipe of its architecture
(:func:`finetune_train_config`). A ``torchvision:``/``timm:``/``xrv:`` state_dict is rebuilt
from its arch; an embedded TorchScript, ``torch.export`` or ONNX network is fine-tuned in
place when its parameters can train (an ONNX graph's learned weights are parameters of
xraydebug's executor) (:func:`check_trainable`), and its checkpoint keeps the embedded file
plus the fine-tuned ``state_dict``. BatchNorm layers of a scripted module train as usual; a
traced or exported network keeps the mode it was traced or exported in (for an inference
export: eval, i.e. normalising with its stored statistics, which fine-tuning leaves as they
are while the layers' scale and shift train), and ``finetune.batchnorm`` records which
happened (:data:`BATCHNORM_NOTES`). Frozen TorchScript holds its weights as constants and is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from xraydebug.errors import CheckpointError
from xraydebug.models.architectures import LARGE_RECIPE, Preprocessing, get_arch
from xraydebug.models.checkpoint import LoadedModel, load_model, read_checkpoint
from xraydebug.models.train import TrainConfig, checkpoint_is_current, train

# an embedded network has no registered architecture, so no recipe of its own: it fine-tunes
# with the rule of the large architectures (a tenth of their learning rate, all at full size)
EMBEDDED_FINETUNE_RECIPE = replace(
    LARGE_RECIPE.for_finetuning(), note="fine-tuning an embedded network: the large nets' rule"
)
EMBEDDED_NAMES = {"torchscript": "TorchScript", "exported_program": "torch.export", "onnx": "ONNX"}


def finetune_train_config(
    meta: dict[str, Any],
    *,
    epochs: int | None = None,
    device: str = "auto",
    uncertain: str | None = None,
) -> TrainConfig:
    """How an imported baseline (checkpoint ``meta``) is fine-tuned on the cleaned data: its
    arch's fine-tuning recipe (:attr:`ArchSpec.finetune_recipe`; an embedded network:
    :data:`EMBEDDED_FINETUNE_RECIPE`) with ``epochs`` (``RetrainConfig.finetune_epochs``)
    where given, resolved, on ``device``; a multi-label model trains on its findings, in its
    order, and stops on AUROC. ``uncertain``: the uncertain-label policy, else the baseline's."""
    multilabel = bool(meta.get("multilabel"))
    given = TrainConfig(
        arch=meta["arch"],
        epochs=epochs,
        monitor="auroc" if multilabel else None,
        device=device,
        uncertain=uncertain or meta.get("uncertain"),
        findings=tuple(meta["classes"]) if multilabel else (),
    )
    recipe = (
        EMBEDDED_FINETUNE_RECIPE if "embedded" in meta else get_arch(meta["arch"]).finetune_recipe
    )
    unset = {k: v for k, v in recipe.values().items() if getattr(given, k) is None}
    return replace(given, **unset)


def check_trainable(loaded: LoadedModel, name: Path | str) -> dict[str, Any]:
    """Can the embedded network of ``loaded`` (an imported TorchScript, ``torch.export`` or
    ONNX file) be fine-tuned? It must have float parameters that require grad, and one
    forward and backward pass in train mode on a dummy batch must give them gradients.

    Returns what was found: ``parameters``, ``trainable``, ``with_gradient`` and
    ``batchnorm``: ``train`` (its BatchNorm layers use batch statistics and update their
    running ones in train mode), ``eval`` (they keep the mode the file was traced or exported
    in and normalise with their stored statistics; their scale and shift still train) or
    ``none``. The model is left as it was (weights, statistics, eval mode, no gradients).
    Raises one ``CheckpointError`` line naming ``name`` otherwise.
    """
    fmt = loaded.meta.get("imported", {}).get("format") or loaded.arch
    shown = EMBEDDED_NAMES.get(fmt, fmt)
    model, prep = loaded.model, loaded.preprocessing

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(
            f"{name}: this {shown} model's parameters cannot be trained here ({why}); import "
            "its state_dict with --arch torchvision:NAME (or timm:NAME) so retrain can rebuild it"
        )

    params = list(model.named_parameters())
    if not params:
        kind = {
            "torchscript": "its weights are constants of the graph, e.g. a torch.jit.freeze'd "
            "module",
        }.get(fmt, "its weights are constants of the graph")
        raise refuse(f"it has no parameters: {kind}")
    trainable = [p for _n, p in params if p.requires_grad and p.is_floating_point()]
    if not trainable:
        raise refuse(f"none of its {len(params)} parameters is a float tensor that requires grad")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    size = prep.input_size
    x = torch.randn(2, prep.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(next(iter(saved.values())).device if saved else "cpu")
    model.train()
    try:
        model(x).float().square().mean().backward()
    except Exception as exc:  # any failure of the user's network: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise refuse(f"a forward and backward pass on a dummy batch fails: {first}") from exc
    finally:
        model.eval()
    with_grad = [p for p in trainable if p.grad is not None and bool(torch.isfinite(p.grad).all())]
    after = model.state_dict()
    stats = [k for k in saved if k.endswith("running_mean")]
    moved = any(not torch.equal(saved[k], after[k]) for k in stats)
    model.load_state_dict(saved)  # the dummy batch moved the running statistics
    model.zero_grad(set_to_none=True)
    if not with_grad:
        raise refuse("a backward pass on a dummy batch gives none of its parameters a gradient")
    return {
        "format": fmt,
        "parameters": len(params),
        "trainable": len(trainable),
        "with_gradient": len(with_grad),
        "batchnorm": "none" if not stats else "train" if moved else "eval",
    }


BATCHNORM_NOTES = {
    "train": "its BatchNorm layers train as usual (batch statistics, running ones updated)",
    "eval": "its BatchNorm layers keep the mode the file was traced or exported in (eval): "
    "they normalise with their stored statistics, which fine-tuning leaves as they are, while "
    "their scale and shift train (as do all other weights)",
    "none": "it has no BatchNorm layers",
}


@dataclass(frozen=True)
class FinetuneStart:
    """Where the retrained model of an imported baseline starts: the baseline's weights
    (``source``: its path and sha256) and input; ``probe``: what :func:`check_trainable`
    found of an embedded network (None: rebuilt from its arch)."""

    imported: dict[str, Any]
    source: dict[str, str]
    preprocessing: Preprocessing
    probe: dict[str, Any] | None = None


def finetune(
    data: Path, out: Path, config: TrainConfig, start: FinetuneStart, console: Console
) -> Path:
    """Fine-tune the imported baseline ``start.source`` on ``data`` into ``out`` with
    ``config``, unless a finished identical run from the same baseline is there."""
    if _finetune_is_current(out, data, config, start):
        console.print(f"reusing {out} (same baseline, data and fine-tuning settings)")
        return out
    baseline = Path(start.source["path"])
    extra: dict[str, Any] = {"imported": start.imported, "finetuned_from": start.source}
    line = f"Fine-tuning the imported baseline {baseline} on {data}"
    if start.probe is None:  # a registered arch: rebuilt, the baseline's state_dict loaded
        console.print(f"{line} (rebuilt as {config.arch})", highlight=False)
        # the recipe's own values left for train to fill in, so its model card names them
        recipe = get_arch(config.arch).finetune_recipe.values()
        given = {k: None for k, v in recipe.items() if getattr(config, k) == v}
        train(
            data,
            out,
            config=replace(config, **given),
            init_weights=baseline,
            preprocessing=start.preprocessing,
            checkpoint_extra=extra,
            console=console,
        )
        return out
    loaded = load_model(baseline, "cpu")
    extra["embedded"] = read_checkpoint(baseline)["embedded"]
    extra["finetune"] = start.probe
    note = BATCHNORM_NOTES[start.probe["batchnorm"]]
    console.print(f"{line} in place ({start.probe['format']}; {note})", highlight=False)
    train(
        data,
        out,
        config=config,
        model=loaded.model,
        preprocessing=start.preprocessing,
        checkpoint_extra=extra,
        console=console,
    )
    return out


def _finetune_is_current(out: Path, data: Path, config: TrainConfig, start: FinetuneStart) -> bool:
    """True where ``out`` was fine-tuned from the same baseline file with the same input,
    settings and training images."""
    if not checkpoint_is_current(out, data, config):
        return False
    meta = read_checkpoint(out)
    return (
        meta.get("finetuned_from", {}).get("sha256") == start.source["sha256"]
        and meta.get("preprocessing") == start.preprocessing.to_dict()
    )
