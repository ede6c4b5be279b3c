"""Networks a checkpoint carries whole, not as an architecture name plus a state_dict: a
TorchScript archive or a ``torch.export`` program, kept as the bytes of the user's file (a
uint8 tensor, so the checkpoint still loads with ``weights_only=True``)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable

import torch
from torch import nn

from xraydebug.errors import CheckpointError


def _load_torchscript(data: bytes) -> nn.Module:
    with warnings.catch_warnings():  # torch 2.14 marks torch.jit deprecated; it still works
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _load_exported(data: bytes) -> nn.Module:
    """The program's module, with ``fixed_batch`` (a batch exported as a constant),
    ``max_batch`` (the bound of a dynamic batch) and ``input_hw`` (its spatial size) recorded
    on it, each None where the program leaves it free."""
    program = torch.export.load(io.BytesIO(data))
    module = program.module()
    users = set(program.graph_signature.user_inputs)
    shapes = [
        node.meta["val"].shape
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in users and "val" in node.meta
    ]
    fixed_batch, max_batch, input_hw = None, None, None
    if len(shapes) == 1 and len(shapes[0]) == 4:
        batch, height, width = shapes[0][0], shapes[0][2], shapes[0][3]
        if isinstance(batch, int):
            fixed_batch = batch
        elif isinstance(batch, torch.SymInt):
            bound = program.range_constraints.get(batch.node.expr)
            upper = getattr(bound, "upper", None)
            max_batch = int(upper) if upper is not None and str(upper) != "int_oo" else None
        if isinstance(height, int) and isinstance(width, int):
            input_hw = (height, width)
    module.fixed_batch, module.max_batch, module.input_hw = fixed_batch, max_batch, input_hw
    return module


def _load_onnx(data: bytes) -> nn.Module:
    from xraydebug.models.onnx_graph import load_onnx  # needs the onnx extra

    return load_onnx(data)


# format name -> bytes of the file -> module
EMBEDDED_LOADERS: dict[str, Callable[[bytes], nn.Module]] = {
    "torchscript": _load_torchscript,
    "exported_program": _load_exported,
    "onnx": _load_onnx,
}


class ImportedModel(nn.Module):
    """A user's network behind the interface every stage uses: ``num_classes`` and logits
    ``(B, num_classes)`` from input ``(B, C, S, S)`` (a tuple or dict output is reduced to
    its first tensor, as torchvision's auxiliary heads return in train mode)."""

    def __init__(self, inner: nn.Module, num_classes: int, arch: str) -> None:
        super().__init__()
        self.inner = inner
        self.num_classes = num_classes
        self.arch_name = arch
        # a network exported with a bounded batch is called in chunks that fit; one with a
        # fixed batch N in chunks of N, the last padded with zeros and its padding dropped
        self.fixed_batch: int | None = getattr(inner, "fixed_batch", None)
        self.max_batch: int | None = getattr(inner, "max_batch", None)

    def train(self, mode: bool = True) -> ImportedModel:
        """Set the mode; a ``torch.export`` program keeps the mode it was exported in (its
        module refuses ``train()``), which for an inference export is eval."""
        self.training = mode
        with contextlib.suppress(NotImplementedError):
            self.inner.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.fixed_batch and n != self.fixed_batch:
            if n > self.fixed_batch:
                return torch.cat([self(chunk) for chunk in x.split(self.fixed_batch)])
            pad = x.new_zeros((self.fixed_batch - n, *x.shape[1:]))
            return self(torch.cat([x, pad]))[:n]
        if self.max_batch and n > self.max_batch:
            return torch.cat([self(chunk) for chunk in x.split(self.max_batch)])
        out = self.inner(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def to_tensor(data: bytes) -> torch.Tensor:
    """The bytes of a file as a 1-D uint8 tensor (what a checkpoint stores)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def load_embedded(fmt: str, payload: torch.Tensor | bytes) -> nn.Module:
    """The module of an embedded ``fmt`` file (``payload``: its bytes, or them as uint8)."""
    data = bytes(payload.numpy().tobytes()) if isinstance(payload, torch.Tensor) else payload
    try:
        loader = EMBEDDED_LOADERS[fmt]
    except KeyError:
        raise CheckpointError(
            f"unknown embedded model format {fmt!r}; known: {', '.join(EMBEDDED_LOADERS)}"
        ) from None
    try:
        return loader(data)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"not a loadable {fmt} file: {first}") from exc
