"""An ONNX classification network as a torch module, so gradients flow (iGOS++ needs them).

``onnx2torch`` 1.5.15, the converter on PyPI, fails on what torch 2.14's exporter writes
(``Identity`` at opset 19; a folded ``Conv`` bias it looks up among the initializers), so this
runs the graph itself: every node in order, each operator a torch function. The operators are
those of common CNN classifiers (ResNet, DenseNet, VGG, MobileNet, EfficientNet exports):
:data:`SUPPORTED`. Any other operator is refused in one line naming it. Needs the ``onnx``
package (the ``onnx`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xraydebug.errors import CheckpointError

Env = dict[str, Any]


def _pads(attrs: dict[str, Any], spatial: int = 2) -> tuple[list[int], bool]:
    """ONNX ``pads`` [b1, b2, ..., e1, e2, ...] -> F.pad order, and whether it is symmetric."""
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise CheckpointError(f"auto_pad {attrs['auto_pad']} is not supported")
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    begins, ends = pads[:spatial], pads[spatial:]
    torch_order: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        torch_order += [b, e]
    return torch_order, begins == ends


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, a: dict) -> torch.Tensor:
    torch_pads, symmetric = _pads(a)
    padding: Any = tuple(a.get("pads", [0, 0, 0, 0])[:2]) if symmetric else 0
    if not symmetric:
        x = F.pad(x, torch_pads)
    return F.conv2d(
        x,
        w,
        b,
        stride=tuple(a.get("strides", [1, 1])),
        padding=padding,
        dilation=tuple(a.get("dilations", [1, 1])),
        groups=a.get("group", 1),
    )


def _pool(kind: str) -> Callable[..., torch.Tensor]:
    def pool(x: torch.Tensor, a: dict) -> torch.Tensor:
        torch_pads, symmetric = _pads(a)
        kernel = tuple(a["kernel_shape"])
        padding: Any = tuple(a.get("pads", [0, 0, 0, 0])[:2]) if symmetric else 0
        if not symmetric:
            x = F.pad(x, torch_pads, value=-math.inf if kind == "max" else 0.0)
        strides = tuple(a.get("strides", [1, 1]))
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            return F.max_pool2d(x, kernel, strides, padding, ceil_mode=ceil)
        include = bool(a.get("count_include_pad", 0))
        return F.avg_pool2d(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include)

    return pool


def _gemm(a_: torch.Tensor, b_: torch.Tensor, c: torch.Tensor | None, a: dict) -> torch.Tensor:
    if a.get("transA", 0):
        a_ = a_.t()
    if a.get("transB", 0):
        b_ = b_.t()
    out = a.get("alpha", 1.0) * (a_ @ b_)
    return out + a.get("beta", 1.0) * c if c is not None else out


def _reduce_axes(inputs: list[Any], a: dict) -> list[int]:
    axes = a.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = [int(v) for v in inputs[1].tolist()]
    return list(axes) if axes is not None else []


def _clip(x: torch.Tensor, *rest: Any, a: dict) -> torch.Tensor:
    low = rest[0] if rest and rest[0] is not None else a.get("min")
    high = rest[1] if len(rest) > 1 and rest[1] is not None else a.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return torch.clamp(x, low, high)


def _shape_list(t: Any) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


# op -> f(inputs, attrs); inputs are tensors (or None for an empty optional input)
OPS: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "Conv": lambda i, a: _conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "BatchNormalization": lambda i, a: F.batch_norm(
        i[0], i[3], i[4], i[1], i[2], training=False, eps=a.get("epsilon", 1e-5)
    ),
    "Relu": lambda i, a: F.relu(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "HardSigmoid": lambda i, a: torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda i, a: F.hardswish(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Clip": lambda i, a: _clip(*i, a=a),
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "MaxPool": lambda i, a: _pool("max")(i[0], a),
    "AveragePool": lambda i, a: _pool("avg")(i[0], a),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "GlobalMaxPool": lambda i, a: i[0].amax(dim=(2, 3), keepdim=True),
    "ReduceMean": lambda i, a: i[0].mean(
        dim=_reduce_axes(i, a), keepdim=bool(a.get("keepdims", 1))
    ),
    "Flatten": lambda i, a: _flatten(i[0], a.get("axis", 1)),
    "Gemm": lambda i, a: _gemm(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "MatMul": lambda i, a: i[0] @ i[1],
    "Reshape": lambda i, a: i[0].reshape(
        [d if d != 0 else i[0].shape[k] for k, d in enumerate(_shape_list(i[1]))]
    ),
    "Concat": lambda i, a: torch.cat(list(i), dim=a["axis"]),
    "Identity": lambda i, a: i[0],
    "Dropout": lambda i, a: i[0],
    "Softmax": lambda i, a: torch.softmax(i[0], dim=a.get("axis", -1)),
    "Transpose": lambda i, a: i[0].permute(*a["perm"]),
    "Shape": lambda i, a: torch.tensor(i[0].shape, dtype=torch.int64, device=i[0].device),
    "Gather": lambda i, a: _gather(i[0], i[1], a.get("axis", 0)),
    "Unsqueeze": lambda i, a: i[0].reshape(_unsqueezed(list(i[0].shape), _reduce_axes(i, a))),
    "Squeeze": lambda i, a: _squeeze(i[0], _reduce_axes(i, a)),
}
SUPPORTED = tuple(sorted(OPS))


def _flatten(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Flatten: always 2-D, ``(prod(shape[:axis]), prod(shape[axis:]))``."""
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _refusal(op: str, attrs: dict[str, Any], opset: int) -> str | None:
    """Why a node of a supported operator is still not run as ONNX defines it (None: fine)."""
    if op in ("MaxPool", "AveragePool") and any(d != 1 for d in attrs.get("dilations", [1])):
        return f"{op} with dilations"
    if op == "AveragePool" and not attrs.get("count_include_pad", 0):
        begins_ends = list(attrs.get("pads", [0, 0, 0, 0]))
        if begins_ends[:2] != begins_ends[2:]:
            return "AveragePool with asymmetric pads that are not counted"
    if op == "Softmax" and opset < 13 and attrs.get("axis", 1) not in (-1,):
        return "Softmax before opset 13 (it flattens to 2-D around its axis)"
    if op == "ReduceMean" and attrs.get("noop_with_empty_axes", 0):
        return "ReduceMean with noop_with_empty_axes"
    return None


def _gather(data: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Gather: output shape ``data.shape[:axis] + indices.shape + data.shape[axis+1:]``;
    negative axis and indices count from the end."""
    axis %= data.ndim
    flat = indices.reshape(-1).long().to(data.device) % data.shape[axis]
    picked = torch.index_select(data, axis, flat)
    shape = [*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]]
    return picked.reshape(shape)


def _squeeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """ONNX Squeeze: the given axes, or every axis of size 1 when none are given."""
    return x.squeeze(tuple(axes)) if axes else x.squeeze()


def _unsqueezed(shape: list[int], axes: list[int]) -> list[int]:
    rank = len(shape) + len(axes)
    for axis in sorted(a % rank for a in axes):
        shape.insert(axis, 1)
    return shape


class OnnxGraph(nn.Module):
    """Runs an ONNX graph node by node with torch operators. Input ``(B, C, H, W)``; output
    the graph's first output. ``fixed_batch`` and ``input_hw`` hold the input's batch and
    spatial size where the file fixes them (None where dynamic)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - set(OPS) - {"Constant"})
        if unknown:
            raise CheckpointError(
                f"ONNX operators not supported: {', '.join(unknown)} (supported: "
                f"{', '.join(SUPPORTED)})"
            )
        self._names: dict[str, str] = {}
        weights = _weight_inputs(graph)
        for k, init in enumerate(graph.initializer):
            self._keep(init.name, numpy_helper.to_array(init), k, init.name in weights)
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1
        )
        for k, node in enumerate(graph.node):
            attrs = {a.name: _attribute(a) for a in node.attribute}
            why = _refusal(node.op_type, attrs, opset)
            if why:
                raise CheckpointError(
                    f"ONNX node {node.name or node.op_type}: {why} is not supported"
                )
            if node.op_type == "Constant":
                value = attrs.get("value")
                if value is None:
                    raise CheckpointError("ONNX Constant without a tensor value is not supported")
                self._keep(node.output[0], value, len(graph.initializer) + k)
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        initialized = {init.name for init in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initialized]
        if len(inputs) != 1:
            raise CheckpointError(f"ONNX graph has {len(inputs)} inputs; one image input needed")
        self.input_name = inputs[0].name
        self.output_name = graph.output[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        self.fixed_batch = fixed[0] if len(fixed) == 4 else None
        self.input_hw = (fixed[2], fixed[3]) if len(fixed) == 4 and None not in fixed[2:] else None

    def _keep(self, name: str, array: np.ndarray, k: int, weight: bool = False) -> None:
        """Hold ``array`` as attribute ``t<k>``: a parameter where it is a ``weight`` (so
        ``retrain`` can fine-tune the graph and its ``state_dict`` carries it), else a buffer
        outside the state_dict (shapes, axes, constants)."""
        attribute = f"t{k}"
        tensor = torch.from_numpy(np.array(array))
        if weight:
            self.register_parameter(attribute, nn.Parameter(tensor))
        else:
            self.register_buffer(attribute, tensor, persistent=False)
        self._names[name] = attribute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: Env = {name: getattr(self, buffer) for name, buffer in self._names.items()}
        env[self.input_name] = x
        for op, inputs, outputs, attrs in self.nodes:
            args = [env[name] if name else None for name in inputs]
            result = OPS[op](args, attrs)
            env[outputs[0]] = result
        return env[self.output_name]


WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
}
"""The inputs of each operator that hold learned weights (a BatchNormalization's scale and
shift; its running statistics stay constants)."""


def _weight_inputs(graph: Any) -> set[str]:
    """Names of the float initializers the graph's nodes read as learned weights."""
    floats = {i.name for i in graph.initializer if i.data_type in (1, 10, 11, 16)}
    names = set()
    for node in graph.node:
        for position in WEIGHT_INPUTS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] in floats:
                names.add(node.input[position])
    return names


def _attribute(attr: Any) -> Any:
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attr)
    if hasattr(value, "raw_data") or attr.type == attr.TENSOR:
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode()
    return value


def load_onnx(data: bytes) -> nn.Module:
    """The ONNX file ``data`` as an :class:`OnnxGraph`; a missing ``onnx`` package, a file
    that is not ONNX or an unsupported operator raise one ``CheckpointError`` line."""
    try:
        import onnx
    except ImportError:
        raise CheckpointError(
            "ONNX import needs the onnx package: pip install 'xraydebug[onnx]'"
        ) from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise CheckpointError(f"not an ONNX file: {str(exc).splitlines()[0]}") from exc
    return OnnxGraph(model)
