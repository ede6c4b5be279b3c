"""The model a team already has, as an xraydebug checkpoint every command takes.

Formats (a registry: :func:`register_importer`): a TorchScript archive (``torch.jit.save``),
a ``torch.export`` program (``torch.export.save``, ``.pt2``), an ONNX file (run by
:mod:`.onnx_graph`), a state_dict of a torchvision classifier (``arch="torchvision:NAME"``) or
of a timm model (``arch="timm:NAME"``), and an xraydebug checkpoint (passed through). A
TorchXRayVision classifier (``arch="xrv:NAME"``, :mod:`.zoo`) is imported from the weights
file xrv would download, which the user has on disk; its findings, sigmoid outputs and
preprocessing come with the name. What the file cannot say (the class or finding order,
softmax or one sigmoid per finding, the input size, channels, mean, std, top crop) comes from
a :class:`ModelSpec`. The import runs one forward pass on a dummy batch, refuses a model whose
output width does not match the classes, and records the file's format and sha256 in the
checkpoint and its model card.

From Python, :func:`import_module` takes any ``torch.nn.Module`` without a file.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xraydebug.errors import CheckpointError
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256
from xraydebug.models.architectures import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_PREFIX,
    Preprocessing,
    build_model,
    load_init_weights,
)
from xraydebug.models.checkpoint import read_checkpoint, save_checkpoint
from xraydebug.models.embedded import ImportedModel, load_embedded, to_tensor
from xraydebug.models.zoo import (
    TIMM_PREFIX,
    XRV_PREFIX,
    load_xrv_weights,
    spec_defaults,
    timm_arch_for_channels,
    xrv_op_threshs,
    xrv_weights_file,
)

# what a spec field is when neither it nor its arch (spec_defaults) says otherwise
_SPEC_DEFAULTS: dict[str, Any] = {
    "input_size": 224,
    "channels": 3,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "crop_top": 0.0,
    "multilabel": False,
}
STATE_DICT_ARCHS = (TORCHVISION_PREFIX, TIMM_PREFIX)  # the networks a bare state_dict can fit


@dataclass(frozen=True)
class ModelSpec:
    """What a model file does not record: its outputs and its input.

    ``classes``: one name per output, in output order (findings where ``multilabel``).
    ``multilabel``: the outputs are one sigmoid per finding, not one softmax. ``arch``: for
    a state_dict, ``torchvision:NAME`` or ``timm:NAME``; ``xrv:NAME`` for TorchXRayVision
    weights. The rest is the :class:`Preprocessing` the model was trained with.

    A field left at None (``classes`` empty) takes the arch's value (``xrv:NAME``: its
    findings, multi-label, its preprocessing; ``timm:NAME,in_chans=1``: one channel), else
    224 px, 3 channels, ImageNet mean and std, no crop, softmax. ``channels=1`` with
    ``timm:NAME`` records ``timm:NAME,in_chans=1`` (the network is built for it).
    """

    classes: tuple[str, ...] = ()
    arch: str = ""
    input_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_top: float | None = None
    multilabel: bool | None = None

    def __post_init__(self) -> None:
        arch_given = spec_defaults(self.arch)  # refuses an unknown xrv: name, a missing extra
        if self.multilabel is False and arch_given.get("multilabel"):
            raise ValueError(f"{self.arch} is multi-label (one sigmoid per finding)")
        for name, value in {**_SPEC_DEFAULTS, **arch_given}.items():
            if getattr(self, name) is None or (name == "classes" and not self.classes):
                object.__setattr__(self, name, value)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))
        object.__setattr__(self, "multilabel", bool(self.multilabel))
        object.__setattr__(self, "arch", timm_arch_for_channels(self.arch, self.channels))
        fewest = 1 if self.multilabel else 2
        if len(self.classes) < fewest or len(set(self.classes)) != len(self.classes):
            what = (
                "findings must be one or more" if self.multilabel else "classes must be two or more"
            )
            raise ValueError(f"{what} distinct names; got {self.classes}")
        self.preprocessing()  # checks sizes, channels, mean and std now

    def preprocessing(self) -> Preprocessing:
        """The model's input; one channel needs its own one-value mean and std (the default
        is ImageNet's three)."""
        if self.channels == 1 and len(self.mean) == 3:
            raise ValueError("--channels 1 needs --mean and --std with one value each")
        return Preprocessing(self.input_size, self.channels, self.mean, self.std, self.crop_top)

    @classmethod
    def from_options(cls, spec_file: Path | str | None = None, **given: Any) -> ModelSpec | None:
        """The spec of the import-model options ``given`` (None: not given) over the JSON
        ``spec_file``; None where nothing names the outputs (no file, no classes, an arch
        without findings of its own): what an xraydebug checkpoint, which names its own, takes.
        """
        if spec_file is not None:
            return cls.from_json(spec_file, **given)
        given = {k: v for k, v in given.items() if v is not None}
        if not given.get("classes") and "classes" not in spec_defaults(given.get("arch", "")):
            return None
        return cls(**given)

    @classmethod
    def from_json(cls, path: Path | str, **overrides: Any) -> ModelSpec:
        """A spec from a JSON file holding the same keys, with ``overrides`` (not None) on
        top; an unknown key raises ``ValueError``."""
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown spec keys {unknown}; known: {sorted(known)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(data.get("classes"), str):
            data["classes"] = classes_from_option(data["classes"])
        return cls(**data)


@dataclass(frozen=True)
class Importer:
    """A file format: ``detect(path, names)`` says whether a file is one (``names``: the
    members of the file as a zip archive, empty when it is not one); ``load(path, spec)``
    returns ``(module, fields)``: the network and what the checkpoint stores to rebuild it
    (``arch`` and either its state_dict or the embedded file)."""

    name: str
    detect: Callable[[Path, list[str]], bool]
    load: Callable[[Path, ModelSpec], tuple[nn.Module, dict[str, Any]]]
    description: str = ""


_IMPORTERS: dict[str, Importer] = {}
XRAYDEBUG = "xraydebug"  # an xraydebug checkpoint: copied as it is


def register_importer(importer: Importer) -> Importer:
    _IMPORTERS[importer.name] = importer
    return importer


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _is_torchscript(path: Path, names: list[str]) -> bool:
    """A ``torch.jit.save`` archive: a zip with the module's code under ``code/__torch__``."""
    return any("/code/__torch__" in name for name in names)


def _is_exported(path: Path, names: list[str]) -> bool:
    """A ``torch.export.save`` archive: a zip with ``archive_format`` and ``models/*.json``."""
    return any(n.endswith("/archive_format") for n in names) and any(
        "/models/" in n and n.endswith(".json") for n in names
    )


def _embedded_loader(fmt: str) -> Callable[[Path, ModelSpec], tuple[nn.Module, dict[str, Any]]]:
    def load(path: Path, spec: ModelSpec) -> tuple[nn.Module, dict[str, Any]]:
        data = path.read_bytes()
        module = load_embedded(fmt, data)
        return module, {"arch": fmt, "embedded": {"format": fmt, "data": to_tensor(data)}}

    return load


def _is_state_dict_file(path: Path, names: list[str]) -> bool:
    return bool(names) and not _is_torchscript(path, names) and not _is_exported(path, names)


def _load_state_dict(path: Path, spec: ModelSpec) -> tuple[nn.Module, dict[str, Any]]:
    if not spec.arch.startswith(STATE_DICT_ARCHS):
        raise CheckpointError(
            f"{path}: a state_dict needs --arch {TORCHVISION_PREFIX}NAME or {TIMM_PREFIX}NAME "
            "(the network it fits)"
        )
    model = build_model(spec.arch, num_classes=len(spec.classes))
    load_init_weights(model, path)  # strict; counts and first keys of any mismatch
    return model, {"arch": spec.arch}


def _is_xraydebug(path: Path, names: list[str]) -> bool:
    # torch.load would hand a TorchScript archive to torch.jit.load: rule those out first
    if not names or _is_torchscript(path, names) or _is_exported(path, names):
        return False
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


register_importer(
    Importer(
        "torchscript",
        _is_torchscript,
        _embedded_loader("torchscript"),
        "torch.jit.save archive (traced or scripted), embedded whole",
    )
)
register_importer(
    Importer(
        "exported_program",
        _is_exported,
        _embedded_loader("exported_program"),
        "torch.export.save program (.pt2), embedded whole",
    )
)


def _is_onnx(path: Path, names: list[str]) -> bool:
    """An ONNX ModelProto: ``.onnx``, or a protobuf starting with its ir_version field."""
    if path.suffix.lower() == ".onnx":
        return True
    with path.open("rb") as handle:
        return handle.read(1) == b"\x08" and not names


register_importer(
    Importer(
        "onnx",
        _is_onnx,
        _embedded_loader("onnx"),
        "ONNX file, run by xraydebug's own graph executor (onnx extra); carried whole",
    )
)
register_importer(
    Importer(
        "state_dict",
        _is_state_dict_file,
        _load_state_dict,
        f"torch.save(model.state_dict()) of a {TORCHVISION_PREFIX}NAME or {TIMM_PREFIX}NAME "
        "network",
    )
)


def format_names() -> list[str]:
    """The formats :func:`import_model` reads, registered ones first."""
    return [*_IMPORTERS, XRAYDEBUG]


def detect_format(path: Path) -> str:
    """The registered format ``path`` is in; ``CheckpointError`` when none fits."""
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    names = _zip_names(path)  # read once for every format's check
    if _is_xraydebug(path, names):
        return XRAYDEBUG
    for importer in _IMPORTERS.values():
        if importer.detect(path, names):
            return importer.name
    raise CheckpointError(
        f"{path}: not a model file this version reads (formats: {', '.join(format_names())})"
    )


@dataclass
class ImportResult:
    checkpoint: Path
    card: Path | None
    format: str
    sha256: str
    output_width: int


def _check_output(module: nn.Module, spec: ModelSpec, source: str) -> int:
    """One forward pass on a dummy batch of two; the output width must match the classes."""
    prep = spec.preprocessing()
    fixed = getattr(getattr(module, "inner", module), "input_hw", None)
    if fixed is not None and fixed != (prep.input_size, prep.input_size):
        raise CheckpointError(
            f"{source}: the model was exported for {fixed[0]}x{fixed[1]} input, not "
            f"--input-size {prep.input_size}"
        )
    x = torch.zeros(2, prep.in_channels, prep.input_size, prep.input_size)
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{source}: the model does not run on a (2, {prep.in_channels}, {prep.input_size}, "
            f"{prep.input_size}) batch (check --input-size and --channels): {first}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{source}: the model returns {shape}, not (batch, outputs)")
    if out.shape[1] != len(spec.classes):
        raise CheckpointError(
            f"{source}: the model has {out.shape[1]} outputs but --classes names "
            f"{len(spec.classes)} ({', '.join(spec.classes)})"
        )
    return int(out.shape[1])


def import_module(
    module: nn.Module,
    spec: ModelSpec,
    out: Path | str,
    *,
    source: dict[str, Any] | None = None,
    stored: dict[str, Any] | None = None,
    multilabel: bool | None = None,
) -> ImportResult:
    """Write ``module`` (any network taking ``spec``'s input) as an xraydebug checkpoint.

    ``stored``: how the checkpoint rebuilds it (``arch`` plus, for an embedded file,
    ``embedded``); by default the state_dict of ``spec.arch`` (a registered architecture,
    ``torchvision:NAME``, ``timm:NAME`` or ``xrv:NAME``), or, without ``spec.arch``, the
    module itself exported with ``torch.export`` (batch dynamic) and carried whole.
    ``source``: what is recorded of the original file. ``multilabel`` (None: the spec's):
    the outputs are one sigmoid per finding; recorded as the checkpoint's ``multilabel``.
    """
    out = Path(out)
    if multilabel is not None:
        spec = replace(spec, multilabel=multilabel)
    source = source or {"format": "module", "path": None, "sha256": None}
    stored = stored or ({"arch": spec.arch} if spec.arch else _export_whole(module, spec))
    if "embedded" not in stored:  # the checkpoint will rebuild it: check that it can
        try:
            build_model(stored["arch"], len(spec.classes)).load_state_dict(module.state_dict())
        except RuntimeError as exc:
            text = " ".join(str(exc).split())[:300]
            raise CheckpointError(
                f"the module's weights do not fit {stored['arch']}: {text}"
            ) from exc
    wrapped = ImportedModel(module, len(spec.classes), stored["arch"])
    width = _check_output(wrapped, spec, source.get("path") or "module")
    prep = spec.preprocessing()
    outputs = "one sigmoid per finding" if spec.multilabel else "softmax"
    meta: dict[str, Any] = {
        "arch": stored["arch"],
        "classes": list(spec.classes),
        "multilabel": spec.multilabel,
        "preprocessing": prep.to_dict(),
        "imported": source,
        "history": [],
        "summary": [
            f"Imported from {source.get('path') or 'a module'} ({source['format']}; {outputs})."
        ],
    }
    if source.get("op_threshs"):  # xrv's operating points: where it calls each finding
        meta["thresholds"] = [source["op_threshs"].get(f) or 0.5 for f in spec.classes]
    if "embedded" in stored:
        meta["embedded"] = stored["embedded"]
    target = module if "embedded" not in stored else nn.Module()  # embedded: no state_dict
    save_checkpoint(out, target, **meta)
    card = out.with_suffix(".json")
    atomic_write_json(
        card,
        {
            "arch": stored["arch"],
            "classes": list(spec.classes),
            "multilabel": spec.multilabel,
            "preprocessing": prep.to_dict(),
            "imported": source,
        },
    )
    atomic_write_text(out.with_suffix(".md"), _card_markdown(stored["arch"], spec, source))
    return ImportResult(out, card, source["format"], source.get("sha256") or "", width)


def _export_whole(module: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """``module`` as an embedded ``torch.export`` program with a dynamic batch: how a network
    without a registered architecture is kept."""
    prep = spec.preprocessing()
    example = torch.zeros(2, prep.in_channels, prep.input_size, prep.input_size)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    module.eval()
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"the module cannot be exported with torch.export ({first}); give spec.arch "
            "(torchvision:NAME, timm:NAME) or save it with torch.jit.save and import the file"
        ) from exc
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    fmt = "exported_program"
    return {"arch": fmt, "embedded": {"format": fmt, "data": to_tensor(buffer.getvalue())}}


def _card_markdown(arch: str, spec: ModelSpec, source: dict[str, Any]) -> str:
    prep = spec.preprocessing()
    outputs = "sigmoid, one per finding" if spec.multilabel else "softmax, in order"
    text = (
        f"# Imported model\n\n- source: `{source.get('path')}` ({source['format']}, sha256 "
        f"`{source.get('sha256')}`)\n- rebuilt as: `{arch}`\n- outputs ({outputs}): "
        f"{', '.join(spec.classes)}\n- input: {prep.in_channels} channel(s), "
        f"{prep.input_size} px, mean {list(prep.mean)}, std {list(prep.std)}, top crop "
        f"{prep.crop_top}\n"
    )
    if "op_threshs" in source:
        text += (
            "- TorchXRayVision: the outputs are its logits; its op_threshs calibration "
            "(`op_norm`) is not applied to them, its op_threshs are the decision thresholds "
            "(0.5 where it has none)\n"
        )
    return text


def import_model(
    path: Path | str | None,
    spec: ModelSpec | None,
    out: Path | str,
    *,
    weights: Path | str | None = None,
    trust_pickle: bool = False,
    multilabel: bool | None = None,
) -> ImportResult:
    """Import the model file ``path`` (format detected) with ``spec`` into checkpoint ``out``
    (``spec`` may be None only for an xraydebug checkpoint, which is copied with its card).

    ``spec.arch="xrv:NAME"`` imports TorchXRayVision's classifier from ``weights`` (the file
    xrv would download; ``path`` None): a whole pickled model, which xrv's DenseNet files are,
    is loaded only with ``trust_pickle`` (it runs code from the file). ``multilabel`` (None:
    the spec's): one sigmoid per finding.

    Every refusal (unknown format, keys that do not fit, an output width other than the
    classes', a model that does not run on the input, xrv weights not on disk) is one
    :class:`CheckpointError` line, and nothing is written.
    """
    if spec is not None and multilabel is not None:
        spec = replace(spec, multilabel=multilabel)
    if spec is not None and spec.arch.startswith(XRV_PREFIX):
        if path is not None:
            raise CheckpointError(
                f"{spec.arch} takes its weights as --weights FILE, not as the model FILE {path}"
            )
        return _import_xrv(weights, spec, out, trust_pickle=trust_pickle)
    if weights is not None:
        raise CheckpointError(
            f"--weights goes with --arch {XRV_PREFIX}NAME; a state_dict of another network is "
            "the model FILE, with its --arch"
        )
    if path is None:
        raise CheckpointError("no model FILE given")
    path = Path(path)
    fmt = detect_format(path)
    sha256 = file_sha256(path)
    if fmt == XRAYDEBUG:  # passed through unchanged
        out = Path(out)
        atomic_write_bytes(out, path.read_bytes())
        for suffix in (".md", ".json"):  # its model card, where there is one
            if path.with_suffix(suffix).is_file():
                atomic_write_bytes(out.with_suffix(suffix), path.with_suffix(suffix).read_bytes())
        card = out.with_suffix(".json") if out.with_suffix(".json").is_file() else None
        return ImportResult(out, card, fmt, sha256, len(read_checkpoint(path)["classes"]))
    if spec is None:
        raise CheckpointError(f"{path}: a {fmt} file does not name its outputs: give --classes")
    module, stored = _IMPORTERS[fmt].load(path, spec)
    source = {"format": fmt, "path": str(path.resolve()), "sha256": sha256}
    return import_module(module, spec, out, source=source, stored=stored)


def _import_xrv(
    weights: Path | str | None, spec: ModelSpec, out: Path | str, *, trust_pickle: bool
) -> ImportResult:
    """TorchXRayVision's ``spec.arch`` with the local ``weights`` file; nothing is fetched."""
    if weights is None or not Path(weights).is_file():
        found = f"; {weights} is not a file" if weights is not None else ""
        raise CheckpointError(
            f"{spec.arch} needs its weights on disk: --weights FILE (xraydebug downloads "
            f"nothing; xrv's file for it is {xrv_weights_file(spec.arch)}){found}"
        )
    weights = Path(weights)
    model = build_model(spec.arch, num_classes=len(spec.classes))
    load_xrv_weights(model, weights, trust_pickle=trust_pickle)
    source = {
        "format": "xrv",
        "path": str(weights.resolve()),
        "sha256": file_sha256(weights),
        "op_threshs": xrv_op_threshs(spec.arch),  # the thresholds; the outputs are logits
    }
    return import_module(model, spec, out, source=source, stored={"arch": spec.arch})


def classes_from_option(text: str) -> Sequence[str]:
    """``"a,b,c"`` -> ``["a", "b", "c"]`` (spaces around names dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]
