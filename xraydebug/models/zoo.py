"""Networks of other libraries by name, built with nothing downloaded.

``timm:NAME`` is any timm model, built by ``timm.create_model(NAME, pretrained=False,
num_classes=K, in_chans=C)``; ``timm:NAME,in_chans=1`` is its one-channel build (what
``import-model --channels 1`` records). ``xrv:NAME`` is a TorchXRayVision classifier
(``densenet121-res224-all``, ``resnet50-res512-all``, ...): xrv's network built without
weights, into which :func:`load_xrv_weights` loads the file xrv would have downloaded, which
the user has on disk. Both need their optional extra (``xraydebug[timm]``,
``xraydebug[xrv]``); a name whose extra is missing, or that the library does not know, is
refused in one line. :func:`xraydebug.models.architectures.get_arch` resolves these names
through :func:`zoo_arch`, so checkpoints, ``load_model`` and ``train --init-weights`` rebuild
them like any architecture.

An ``xrv:`` model returns LOGITS, one per named finding: xrv's own ``forward`` ends in a
sigmoid and, with its released weights, in ``op_norm`` (a per-finding piecewise-linear
rescaling that maps xrv's operating threshold to 0.5); both are left out, so the sigmoid every
multi-label stage applies gives xrv's uncalibrated probabilities. ``op_norm`` is monotone per
finding, so AUROCs are unchanged; xrv's thresholds are recorded with the import
(:func:`xrv_op_threshs`). xrv's empty label slots (outputs no dataset of the weights trained)
are dropped.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from xraydebug.errors import CheckpointError
from xraydebug.models.architectures import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LARGE_RECIPE,
    ArchSpec,
    Preprocessing,
    check_state_fits,
)
from xraydebug.models.safe_load import load_weights_only

TIMM_PREFIX = "timm:"
XRV_PREFIX = "xrv:"
GRAY_SUFFIX = ",in_chans=1"  # timm:NAME built with one input channel
XRV_RANGE = 1024.0  # xrv scales films to [-XRV_RANGE, XRV_RANGE]
# gray in [0, 1] -> xrv's range: (x - 0.5) / (0.5 / 1024) = (2x - 1) * 1024
XRV_MEAN, XRV_STD = (0.5,), (0.5 / XRV_RANGE,)
_ZOO_RECIPE = replace(LARGE_RECIPE, low_res_share=0.0, note="not benchmarked here")


def _extra(module: str, arch: str, extra: str) -> ModuleType:
    """``import module``, or one line naming the extra that installs it."""
    try:
        with warnings.catch_warnings():  # torchxrayvision turns every warning off on import
            return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(
            f"{arch} needs the optional extra: pip install 'xraydebug[{extra}]'"
        ) from None


# ---------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------


def _timm_name(arch: str) -> tuple[str, int]:
    """``timm:NAME[,in_chans=1]`` -> (NAME, input channels)."""
    name = arch.removeprefix(TIMM_PREFIX)
    channels = 1 if name.endswith(GRAY_SUFFIX) else 3
    name = name.removesuffix(GRAY_SUFFIX)
    if "," in name:
        raise ValueError(
            f"unknown architecture {arch!r}: the only option after a timm name is {GRAY_SUFFIX!r}"
        )
    return name, channels


def _timm_arch(arch: str) -> ArchSpec:
    name, channels = _timm_name(arch)
    timm = _extra("timm", arch, "timm")
    # a source prefix (hf-hub:, local-dir:) or a path would make timm fetch or read a config
    known = bool(name) and not any(c in name for c in ":/\\") and timm.is_model(name)
    try:
        cfg = timm.get_pretrained_cfg(name) if known else None  # the registry's, offline
    except RuntimeError:  # a tag the architecture does not have
        known = False
    if not known:
        stem = name.split(".")[0][:8]
        close = timm.list_models(f"*{stem}*")[:5] if stem else []
        hint = f"; close: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown architecture {arch!r}: {name!r} is not a timm model "
            f"(timm.list_models('*resnet*') lists them{hint})"
        )
    size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    if cfg is not None:
        size = int(max(cfg.input_size[-2:]))
        mean, std = tuple(cfg.mean), tuple(cfg.std)
    if channels == 1:  # one gray channel: the mean of the three
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)

    def build(num_classes: int) -> nn.Module:
        # pretrained=False and no pretrained_cfg overlay: nothing is fetched
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels)

    return ArchSpec(
        name=arch,
        builder=build,
        preprocessing=Preprocessing(size, channels, mean, std),
        description=f"timm {name} ({channels} channel(s)), randomly initialised",
        recipe=_ZOO_RECIPE,  # full size throughout: some timm nets take one input size only
    )


def timm_arch_for_channels(arch: str, channels: int) -> str:
    """The ``timm:`` name of ``arch`` built for ``channels`` input channels (other names are
    returned as they are); a name that states other channels raises ``ValueError``."""
    if not arch.startswith(TIMM_PREFIX):
        return arch
    name, stated = _timm_name(arch)
    if arch.endswith(GRAY_SUFFIX) and channels != stated:
        raise ValueError(f"--arch {arch} takes {stated} channel, not --channels {channels}")
    return f"{TIMM_PREFIX}{name}{GRAY_SUFFIX if channels == 1 else ''}"


# ---------------------------------------------------------------------------------------------
# TorchXRayVision
# ---------------------------------------------------------------------------------------------


def _xrv_entry(arch: str) -> tuple[ModuleType, str, dict[str, Any]]:
    """(the torchxrayvision module, NAME, xrv's ``model_urls[NAME]``) of ``xrv:NAME``."""
    xrv = _extra("torchxrayvision", arch, "xrv")
    name = arch.removeprefix(XRV_PREFIX)
    urls = xrv.models.model_urls
    known = [k for k in urls if k.startswith(("densenet", "resnet")) and "labels" in urls[k]]
    if name not in known:
        raise ValueError(
            f"unknown architecture {arch!r}: TorchXRayVision classifiers are "
            f"{', '.join(XRV_PREFIX + k for k in known)}"
        )
    return xrv, name, urls[name]


def xrv_findings(arch: str) -> tuple[str, ...]:
    """The findings ``xrv:NAME`` outputs, in order (xrv's labels without its empty slots)."""
    return tuple(label for label in _xrv_entry(arch)[2]["labels"] if label)


def xrv_weights_file(arch: str) -> str:
    """The file name xrv downloads for ``xrv:NAME`` (what ``--weights`` takes)."""
    return str(_xrv_entry(arch)[2]["weights_url"]).rsplit("/", 1)[-1]


def xrv_op_threshs(arch: str) -> dict[str, float | None]:
    """xrv's operating thresholds of ``xrv:NAME`` per finding (None where it has none): the
    probability its ``op_norm`` maps to 0.5. Recorded, not applied."""
    entry = _xrv_entry(arch)[2]
    values = entry.get("op_threshs") or [None] * len(entry["labels"])
    return {
        label: (float(v) if v is not None and v == v else None)  # NaN: none
        for label, v in zip(entry["labels"], values, strict=True)
        if label
    }


class XrvClassifier(nn.Module):
    """xrv's network without weights, sigmoid or ``op_norm``: the logits of the findings.

    ``backbone`` is xrv's DenseNet (``weights=None``, one input channel), or for ``resnet*``
    torchvision's ResNet with xrv's one-channel stem (what xrv's ``ResNet`` wraps as
    ``.model``): its keys are those of xrv's weights file, so the file loads into it. xrv's
    empty label slots are dropped from the output.
    """

    def __init__(self, backbone: nn.Module, keep: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).index_select(1, self.keep)


def _xrv_backbone(xrv: ModuleType, name: str, outputs: int) -> nn.Module:
    family = name.split("-")[0]  # densenet121, resnet50
    if family.startswith("densenet"):
        params = xrv.models.get_densenet_params(family)
        # weights=None: no download, no op_threshs, no sigmoid, no resize inside
        return xrv.models.DenseNet(weights=None, num_classes=outputs, in_channels=1, **params)
    import torchvision.models

    net = torchvision.models.get_model(family, weights=None, num_classes=outputs)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # xrv's patch
    return net


def _xrv_arch(arch: str) -> ArchSpec:
    xrv, name, entry = _xrv_entry(arch)
    labels = list(entry["labels"])
    keep = [i for i, label in enumerate(labels) if label]
    size = int(entry.get("input_resolution", 224))

    def build(num_classes: int) -> nn.Module:
        if num_classes != len(keep):
            raise ValueError(
                f"{arch} has {len(keep)} findings ({', '.join(labels[i] for i in keep)}), "
                f"not {num_classes} outputs"
            )
        return XrvClassifier(_xrv_backbone(xrv, name, len(labels)), keep)

    return ArchSpec(
        name=arch,
        builder=build,
        preprocessing=Preprocessing(size, 1, XRV_MEAN, XRV_STD),
        description=f"TorchXRayVision {name}: logits of {len(keep)} findings, {size} px, "
        f"gray in [-{XRV_RANGE:.0f}, {XRV_RANGE:.0f}]; weights from a local file",
        recipe=_ZOO_RECIPE,
    )


def _xrv_state(path: Path, trust_pickle: bool) -> Mapping[str, Any]:
    """The state_dict in xrv's weights file: a state_dict (``resnet*``), or a whole pickled
    model (xrv's ``densenet*`` files), which only ``trust_pickle`` loads."""
    try:
        payload = load_weights_only(path, "weights file", "")
    except CheckpointError as exc:
        cause = exc.__cause__
        if (
            not isinstance(cause, pickle.UnpicklingError)
            or "weights only" not in str(cause).lower()
        ):
            raise
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: a pickled whole model, not a state_dict: loading it runs code from "
                "the file (torch.load(weights_only=True) refuses it); if you trust where it "
                "came from (xrv's own release), add --trust-pickle"
            ) from None
        try:  # the user vouched for the file: the one load here that may run its code
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as inner:
            first = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
            raise CheckpointError(f"{path}: the pickled model does not load: {first}") from inner
    if isinstance(payload, nn.Module):
        for module in payload.modules():  # what xrv does for models pickled by older torch
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        payload = payload.state_dict()
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise CheckpointError(
            f"{path}: expected xrv's weights (a state_dict or a pickled model); found a "
            f"{type(payload).__name__} that is neither"
        )
    return payload


def load_xrv_weights(model: nn.Module, path: Path | str, *, trust_pickle: bool = False) -> None:
    """Load xrv's weights file ``path`` into an :class:`XrvClassifier`, strictly.

    Accepted: the file xrv downloads (``resnet*``: a state_dict, read with
    ``weights_only=True``; ``densenet*``: a whole pickled model, which needs
    ``trust_pickle``), or the ``state_dict()`` of an xrv model (its ``op_threshs`` buffer
    and xrv ``ResNet``'s ``model.`` prefix dropped). Keys or shapes that do not fit raise one
    :class:`CheckpointError` line with counts and the first keys.
    """
    path = Path(path)
    state = {str(k): v for k, v in _xrv_state(path, trust_pickle).items()}
    state.pop("op_threshs", None)  # xrv's calibration; recorded by the import, not loaded
    if state and all(k.startswith("model.") for k in state):  # xrv ResNet's own state_dict
        state = {k.removeprefix("model."): v for k, v in state.items()}
    backbone = model.backbone
    name = getattr(model, "arch_name", "the xrv network")
    check_state_fits(state, backbone.state_dict(), f"{path}: weights do not fit {name}")
    backbone.load_state_dict(state, strict=False)  # strict but for BN counters (as init weights)


# ---------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------


def zoo_arch(name: str) -> ArchSpec | None:
    """The :class:`ArchSpec` of a ``timm:`` or ``xrv:`` name (None for any other name)."""
    if name.startswith(TIMM_PREFIX):
        return _timm_arch(name)
    if name.startswith(XRV_PREFIX):
        return _xrv_arch(name)
    return None


def spec_defaults(arch: str) -> dict[str, Any]:
    """What an import takes from ``arch`` for the fields it is not given: for ``xrv:NAME``
    its findings, sigmoid outputs and preprocessing; for ``timm:NAME,in_chans=1`` one
    channel; nothing for other names."""
    if arch.startswith(TIMM_PREFIX):
        return {"channels": _timm_name(arch)[1]}
    if arch.startswith(XRV_PREFIX):
        prep = _xrv_arch(arch).preprocessing
        return {
            "classes": xrv_findings(arch),
            "multilabel": True,
            "input_size": prep.input_size,
            "channels": prep.in_channels,
            "mean": prep.mean,
            "std": prep.std,
            "crop_top": prep.crop_top,
        }
    return {}
