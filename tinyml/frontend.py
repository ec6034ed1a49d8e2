"""Torch frontend: an `nn.Module` becomes a float `Graph` (see tinyml/ir.py) through `torch.export`.

The exported program holds high-level ATen ops. Each one maps to an IR op, is folded into the node
before it (batch-norm into conv/linear weights, ReLU/ReLU6 into `activation`), or is dropped because it
does not change the value (dropout, a reshape that keeps the shape). Anything else is reported with
the op and the module it came from, so a user knows which layer to change.

A node is named after the module it came from (`features.conv1`); what was folded into it is listed
in `node.attrs["fused"]` as `{"module": path, "type": type}` records (`torch.nn.BatchNorm2d`, or
`aten.relu` for a functional call inside that module's forward), for reports and model.c.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyml import plugins
from tinyml.errors import TinymlError, UnsupportedOpError
from tinyml.ir import Graph, Node, OpDefinition, Tensor

INPUT_NAME = "input"

# IR ops that carry an `activation` attribute a following ReLU/ReLU6 can be fused into.
_FUSES_ACTIVATION = ("conv2d", "dwconv2d", "fc", "maxpool", "add")
# Axis of the output channel in each weight layout, for batch-norm folding.
_OUT_CHANNEL_AXIS = {"conv2d": 0, "dwconv2d": -1, "fc": 0}

_ACTIVATION_OPS = (
    "aten.relu",
    "aten.relu_",
    "aten.relu6",
    "aten.relu6_",
    "aten.hardtanh",
    "aten.hardtanh_",
    "aten.clamp",
    "aten.clamp_",
    "aten.clamp_min",
    "aten.clamp_min_",
)
_IDENTITY_OPS = (
    "aten.dropout",
    "aten.dropout_",
    "aten.feature_dropout",
    "aten.alpha_dropout",
    "aten.clone",
    "aten.contiguous",
    "aten.detach",
    "aten.alias",
)
_RESHAPE_OPS = ("aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view")


def nchw_to_graph(x: np.ndarray) -> np.ndarray:
    """A batch in PyTorch layout (N, C, H, W) or (N, F) -> graph layout (N, H, W, C) or (N, F)."""
    x = np.asarray(x)
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim == 2:
        return x
    raise TinymlError(f"Expected a batch of shape (N, C, H, W) or (N, F), got shape {x.shape}.")


def graph_to_nchw(x: np.ndarray) -> np.ndarray:
    """A batch in graph layout (N, H, W, C) or (N, F) -> PyTorch layout (N, C, H, W) or (N, F)."""
    x = np.asarray(x)
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 2:
        return x
    raise TinymlError(f"Expected a batch of shape (N, H, W, C) or (N, F), got shape {x.shape}.")


def from_torch(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """Export `model` in eval mode with a batch-1 example and convert it to a float graph.

    Raises UnsupportedOpError for an op, or an op's configuration, the kernels do not implement,
    and TinymlError for an unusable example input or a model torch.export cannot trace.
    """
    if not isinstance(model, nn.Module):
        raise TinymlError(f"from_torch expects a torch.nn.Module, got {type(model).__name__}.")
    _check_example(example_input)
    try:
        program = torch.export.export(model.eval(), (example_input,))
    except Exception as exc:  # torch raises many kinds; the user needs the first line, not the stack
        first_line = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise TinymlError(
            f"torch.export could not trace {type(model).__name__} with an input of shape "
            f"{tuple(example_input.shape)}: {first_line}. The model's forward must be traceable "
            "without data-dependent control flow."
        ) from exc
    return _Converter(program).convert()


def _check_example(x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise TinymlError(f"The example input must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TinymlError(f"The example input must be a floating-point tensor, got dtype {x.dtype}.")
    if x.dim() not in (2, 4):
        raise TinymlError(f"The example input must have shape (1, C, H, W) or (1, F), got {tuple(x.shape)}.")
    if x.shape[0] != 1:
        raise TinymlError(
            f"The example input must have batch size 1 (the firmware runs one sample at a time), "
            f"got shape {tuple(x.shape)}."
        )


def _op_name(target: Any) -> str:
    """'aten.conv2d' for an ATen overload, the function name otherwise."""
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return str(packet)
    if target is operator.getitem:
        return "getitem"
    return getattr(target, "__name__", str(target))


def _module_of(node: torch.fx.Node) -> tuple[str, str]:
    """(module path, readable module type) of the innermost module a node was traced in."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, type_name = list(stack.values())[-1]
    type_name = type_name if isinstance(type_name, str) else f"{type_name.__module__}.{type_name.__qualname__}"
    if type_name.startswith("torch.nn.modules."):
        type_name = "torch.nn." + type_name.rsplit(".", 1)[-1]
    return path, type_name


def _describe(ops: str, module_type: str) -> str:
    """'aten.sigmoid (torch.nn.Sigmoid)': the op as an error names it."""
    return f"{ops} ({module_type})" if module_type else ops


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _graph_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """NCHW -> NHWC for feature maps, vectors unchanged; None for ranks the IR has no layout for."""
    if len(torch_shape) == 4:
        n, c, h, w = torch_shape
        return (n, h, w, c)
    if len(torch_shape) == 2:
        return tuple(torch_shape)
    return None


def _compose_activation(first: str, then: str) -> str:
    """The single clamp equal to applying `first` and then `then` (both 'none', 'relu' or 'relu6')."""
    if "relu6" in (first, then):
        return "relu6"
    return "relu" if "relu" in (first, then) else "none"


class _Converter:
    """Walks an ExportedProgram once, in order, building the graph."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.fx_graph = program.graph_module.graph
        self.constants = self._lift_constants()
        self.values: dict[str, Any] = {}  # fx node name -> graph tensor name, np.ndarray, tuple or scalar
        self.aliases: dict[str, list[torch.fx.Node]] = {}  # graph tensor -> fx nodes that denote it
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.handlers: dict[str, Callable[[torch.fx.Node, dict[str, Any]], None]] = {
            "aten.conv2d": self._conv2d,
            "aten.linear": self._linear,
            "aten.batch_norm": self._batch_norm,
            "aten._native_batch_norm_legit_no_training": self._batch_norm,
            "aten.max_pool2d": self._max_pool2d,
            "aten.avg_pool2d": self._avg_pool2d,
            "aten.adaptive_avg_pool2d": self._adaptive_avg_pool2d,
            "aten.mean": self._mean,
            "aten.add": self._add,
            "aten.add_": self._add,
            "aten.softmax": self._softmax,
            "aten._softmax": self._softmax,
            "aten.cat": self._cat,
            "getitem": self._getitem,
            **{op: self._activation for op in _ACTIVATION_OPS},
            **{op: self._identity for op in _IDENTITY_OPS},
            **{op: self._reshape for op in _RESHAPE_OPS},
            **{op.torch_op: self._plugin_op(op) for op in plugins.ops().values()},
        }

    # --- driver -------------------------------------------------------------------------------

    def convert(self) -> Graph:
        self._reject_unknown_ops()
        inputs: list[str] = []
        outputs: list[str] = []
        for node in self.fx_graph.nodes:
            if node.op == "placeholder":
                if node.name in self.program.graph_signature.user_inputs:
                    self._add_tensor(INPUT_NAME, node)
                    self.values[node.name] = INPUT_NAME
                    inputs.append(INPUT_NAME)
                else:
                    self.values[node.name] = self.constants.get(node.name)
            elif node.op == "call_function":
                self.handlers[_op_name(node.target)](node, self._bind(node))
            elif node.op == "output":
                outputs = [self._output_tensor(value) for value in node.args[0]]
        if len(inputs) != 1:
            raise TinymlError(f"The model must take exactly one tensor input, it takes {len(inputs)}.")
        return Graph(tensors=self.tensors, nodes=self.nodes, inputs=inputs, outputs=outputs)

    def _lift_constants(self) -> dict[str, np.ndarray]:
        """Parameters, buffers and lifted constants by placeholder name, as float numpy arrays."""
        signature = self.program.graph_signature
        sources = {
            **signature.inputs_to_parameters,
            **signature.inputs_to_buffers,
            **signature.inputs_to_lifted_tensor_constants,
        }
        arrays = {}
        for placeholder, key in sources.items():
            value = self.program.state_dict.get(key)
            if value is None:
                value = self.program.constants[key]
            if isinstance(value, torch.Tensor):
                arrays[placeholder] = value.detach().cpu().numpy()
        return arrays

    def _reject_unknown_ops(self) -> None:
        """Report every op with no mapping at once, grouped by module, before converting anything."""
        unknown: dict[tuple[str, str], list[str]] = {}
        for node in self.fx_graph.nodes:
            if node.op == "call_function" and _op_name(node.target) not in self.handlers:
                ops = unknown.setdefault(_module_of(node), [])
                if _op_name(node.target) not in ops:
                    ops.append(_op_name(node.target))
        if not unknown:
            return
        ((path, type_name), ops), *others = unknown.items()
        detail = ""
        if others:
            more = "; ".join(f"{_describe(', '.join(o), t)} at `{p or 'top level'}`" for (p, t), o in others)
            detail = f"Also unsupported: {more}."
        raise UnsupportedOpError(_describe(", ".join(ops), type_name), path, self._supported_hint(detail))

    def _supported_hint(self, detail: str) -> str:
        return (
            f"{detail} Supported: Conv2d (groups 1 or depthwise, dilation 1), Linear, BatchNorm after a "
            "conv or linear, ReLU/ReLU6 after a conv, linear, add or max-pool, MaxPool2d, AvgPool2d, "
            "AdaptiveAvgPool2d, mean over H and W, residual add, torch.cat along channels, "
            "flatten/reshape to a vector, softmax over the last dim, Dropout."
        ).strip()

    def _unsupported(self, node: torch.fx.Node, detail: str) -> UnsupportedOpError:
        path, type_name = _module_of(node)
        return UnsupportedOpError(_describe(_op_name(node.target), type_name), path, self._supported_hint(detail))

    def _bind(self, node: torch.fx.Node) -> dict[str, Any]:
        """Arguments by schema name with defaults filled in and fx nodes replaced by their values."""
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            return {"args": [self._resolve(a) for a in node.args]}
        bound = {}
        for i, arg in enumerate(schema.arguments):
            if i < len(node.args):
                bound[arg.name] = self._resolve(node.args[i])
            elif arg.name in node.kwargs:
                bound[arg.name] = self._resolve(node.kwargs[arg.name])
            elif arg.has_default_value():
                bound[arg.name] = arg.default_value
        return bound

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, torch.fx.Node):
            return self.values[value.name]
        if isinstance(value, list | tuple):
            return [self._resolve(v) for v in value]
        return value

    def _output_tensor(self, value: Any) -> str:
        resolved = self._resolve(value)
        if not isinstance(resolved, str):
            raise TinymlError("Every model output must be computed from the input; one output is a constant.")
        return resolved

    # --- graph building -----------------------------------------------------------------------

    def _add_tensor(self, name: str, node: torch.fx.Node) -> None:
        torch_shape = tuple(node.meta["val"].shape)
        shape = _graph_shape(torch_shape)
        if shape is None:
            raise self._unsupported(
                node, f"Its result has shape {torch_shape}; only (1, C, H, W) and (1, F) tensors are supported."
            )
        self.tensors[name] = Tensor(name, shape)
        self.aliases[name] = [node]

    def _node_name(self, node: torch.fx.Node, op: str) -> str:
        """The module path for a standard layer, else path.op; made unique with a numeric suffix."""
        path, type_name = _module_of(node)
        if path and type_name.startswith("torch.nn."):
            base = path
        else:
            base = f"{path}.{op}" if path else op
        name, i = base, 0
        while name in self.tensors or name == INPUT_NAME:
            i += 1
            name = f"{base}_{i}"
        return name

    def _emit(
        self,
        node: torch.fx.Node,
        op: str,
        inputs: list[str],
        attrs: dict[str, Any],
        constants: dict[str, np.ndarray] | None = None,
        intermediate_shape: tuple[int, ...] | None = None,
    ) -> str:
        """Append an IR node for `node`; returns its output tensor's name.

        The output is the value of `node`, or with `intermediate_shape`, a step on the way to it.
        """
        name = self._node_name(node, op)
        const_names = []
        for suffix, data in (constants or {}).items():
            data = np.array(data, dtype=np.float32, order="C")  # a copy: the graph must not share the model's memory
            self.tensors[f"{name}.{suffix}"] = Tensor(f"{name}.{suffix}", data.shape, data=data)
            const_names.append(f"{name}.{suffix}")
        if intermediate_shape is None:
            self._add_tensor(name, node)
            self.values[node.name] = name
        else:
            self.tensors[name] = Tensor(name, intermediate_shape)
            self.aliases[name] = []
        self.nodes.append(Node(name, op, inputs + const_names, [name], attrs, source=_module_of(node)[0]))
        return name

    def _alias(self, node: torch.fx.Node, tensor: str) -> None:
        """`node` denotes the same value as `tensor` (dropout, a shape-keeping reshape, a fold)."""
        self.values[node.name] = tensor
        self.aliases[tensor].append(node)

    def _activation_input(self, node: torch.fx.Node, value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise self._unsupported(node, f"Its {what} must be an activation computed from the model input.")
        return value

    def _parameter(self, node: torch.fx.Node, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise self._unsupported(node, "Its weight must be a parameter of the model, not a computed tensor.")
        return value

    def _feature_map(self, node: torch.fx.Node, value: Any) -> str:
        tensor = self._activation_input(node, value, "input")
        if len(self.tensors[tensor].shape) != 4:
            raise self._unsupported(
                node, f"Its input must be a (1, C, H, W) feature map, got shape {self.tensors[tensor].shape}."
            )
        return tensor

    def _producer(self, tensor: str) -> Node | None:
        return next((n for n in self.nodes if tensor in n.outputs), None)

    def _folding_target(self, node: torch.fx.Node, tensor: str, ops: tuple[str, ...], what: str) -> Node:
        """The IR node producing `tensor`, when `node` may rewrite it in place (no other consumer)."""
        producer = self._producer(tensor)
        if producer is None or producer.op not in ops:
            source = "the model input" if producer is None else f"a {producer.op} (`{producer.name}`)"
            raise self._unsupported(
                node, f"A {what} is folded into the {', '.join(ops)} that produces its input; here that is {source}."
            )
        members = {n.name for n in self.aliases[tensor]} | {node.name}
        if any(user.name not in members for alias in self.aliases[tensor] for user in alias.users):
            raise self._unsupported(
                node,
                f"A {what} is folded into `{producer.name}`, but the value before the {what} is also "
                "used elsewhere in the model.",
            )
        return producer

    # --- op handlers --------------------------------------------------------------------------

    def _conv2d(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._feature_map(node, a["input"])
        weight = self._parameter(node, a["weight"])
        out_ch, in_per_group, kh, kw = weight.shape
        in_ch = self.tensors[x].shape[3]
        if _pair(a["dilation"]) != (1, 1):
            raise self._unsupported(node, f"Dilation {tuple(a['dilation'])} is not supported; use dilation 1.")
        stride = _pair(a["stride"])
        if a["padding"] == "same":
            if kh % 2 == 0 or kw % 2 == 0:
                raise self._unsupported(node, "padding='same' needs an odd kernel (even ones pad unevenly).")
            padding = ((kh - 1) // 2, (kw - 1) // 2)
        elif a["padding"] == "valid":
            padding = (0, 0)
        else:
            padding = _pair(a["padding"])
        bias = a["bias"] if a["bias"] is not None else np.zeros(out_ch, dtype=np.float32)
        attrs: dict[str, Any] = {"stride": stride, "padding": padding, "activation": "none"}
        groups = a["groups"]
        if groups == 1:
            self._emit(node, "conv2d", [x], attrs, {"weight": weight.transpose(0, 2, 3, 1), "bias": bias})
        elif groups == in_ch and in_per_group == 1:
            attrs["depth_multiplier"] = out_ch // in_ch
            self._emit(node, "dwconv2d", [x], attrs, {"weight": weight.transpose(1, 2, 3, 0), "bias": bias})
        else:
            raise self._unsupported(
                node,
                f"groups={groups} with {in_ch} input channels; only groups=1 or depthwise "
                f"(groups == in_channels) convolutions are supported.",
            )

    def _linear(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._activation_input(node, a["input"], "input")
        if len(self.tensors[x].shape) != 2:
            raise self._unsupported(
                node, f"Its input must be a (1, F) vector (flatten first), got shape {self.tensors[x].shape}."
            )
        weight = self._parameter(node, a["weight"])
        bias = a["bias"] if a["bias"] is not None else np.zeros(weight.shape[0], dtype=np.float32)
        self._emit(node, "fc", [x], {"activation": "none"}, {"weight": weight, "bias": bias})

    def _batch_norm(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._activation_input(node, a["input"], "input")
        if a["running_mean"] is None or a["running_var"] is None:
            raise self._unsupported(node, "BatchNorm without running statistics (track_running_stats=False).")
        producer = self._folding_target(node, x, tuple(_OUT_CHANNEL_AXIS), "batch-norm")
        if producer.attrs["activation"] != "none":
            raise self._unsupported(node, f"A batch-norm after the activation of `{producer.name}`.")
        weight_t, bias_t = (self.tensors[name] for name in producer.inputs[1:3])
        mean = a["running_mean"].astype(np.float64)
        var = a["running_var"].astype(np.float64)
        gamma = np.ones_like(mean) if a["weight"] is None else a["weight"].astype(np.float64)
        beta = np.zeros_like(mean) if a["bias"] is None else a["bias"].astype(np.float64)
        scale = gamma / np.sqrt(var + float(a["eps"]))
        axis = _OUT_CHANNEL_AXIS[producer.op]
        shape = [1] * weight_t.data.ndim
        shape[axis] = -1
        weight_t.data = (weight_t.data.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
        bias_t.data = ((bias_t.data.astype(np.float64) - mean) * scale + beta).astype(np.float32)
        self._record_fused(producer, node)
        self._alias(node, x)
        if node.target is torch.ops.aten._native_batch_norm_legit_no_training.default:
            self.values[node.name] = (x, None, None)

    def _activation(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        op = _op_name(node.target).rstrip("_")
        bounds = {
            "aten.relu": (0.0, None),
            "aten.relu6": (0.0, 6.0),
            "aten.hardtanh": (a.get("min_val"), a.get("max_val")),
            "aten.clamp": (a.get("min"), a.get("max")),
            "aten.clamp_min": (a.get("min"), None),
        }[op]
        kind = {(0.0, None): "relu", (0.0, 6.0): "relu6"}.get(
            tuple(None if v is None else float(v) for v in bounds), ""
        )
        if not kind:
            raise self._unsupported(
                node, f"Clamping to {bounds} is not an activation the kernels fuse (only [0, inf) or [0, 6])."
            )
        x = self._activation_input(node, a["self"], "input")
        producer = self._producer(x)
        current = producer.attrs.get("activation", "none") if producer else "none"
        if producer is not None and current != "none" and _compose_activation(current, kind) == current:
            self._record_fused(producer, node)
            self._alias(node, x)  # already clamped at least as tightly: the op changes nothing
            return
        producer = self._folding_target(node, x, _FUSES_ACTIVATION, "ReLU/ReLU6")
        producer.attrs["activation"] = _compose_activation(producer.attrs["activation"], kind)
        self._record_fused(producer, node)
        self._alias(node, x)

    def _record_fused(self, producer: Node, node: torch.fx.Node) -> None:
        """List `node`'s module among those folded into `producer` (once: an in-place ReLU is one module)."""
        path, type_name = _module_of(node)
        if not type_name.startswith("torch.nn."):
            type_name = _op_name(node.target).rstrip("_")  # a functional call inside the module at `path`
        record = {"module": path, "type": type_name}
        fused = producer.attrs.setdefault("fused", [])
        if record not in fused:
            fused.append(record)

    def _identity(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        self._alias(node, self._activation_input(node, next(iter(a.values())), "input"))

    def _reshape(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._activation_input(node, a["self"], "input")
        in_shape = tuple(node.args[0].meta["val"].shape)
        out_shape = tuple(node.meta["val"].shape)
        if in_shape == out_shape:
            self._alias(node, x)
        elif len(in_shape) == 4 and out_shape == (1, int(np.prod(in_shape))):
            self._emit(node, "flatten", [x], {})
        else:
            raise self._unsupported(
                node,
                f"A reshape from {in_shape} to {out_shape}; only flattening a feature map into "
                "a (1, C*H*W) vector is supported.",
            )

    def _pool_attrs(self, node: torch.fx.Node, a: dict[str, Any]) -> dict[str, Any]:
        if a["ceil_mode"]:
            raise self._unsupported(node, "ceil_mode=True is not supported.")
        kernel = _pair(a["kernel_size"])
        return {
            "kernel": kernel,
            "stride": _pair(a["stride"]) if a["stride"] else kernel,
            "padding": _pair(a["padding"]),
        }

    def _max_pool2d(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._feature_map(node, a["self"])
        if _pair(a["dilation"]) != (1, 1):
            raise self._unsupported(node, "Dilated max pooling is not supported.")
        self._emit(node, "maxpool", [x], {**self._pool_attrs(node, a), "activation": "none"})

    def _avg_pool2d(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._feature_map(node, a["self"])
        attrs = self._pool_attrs(node, a)
        if a["divisor_override"] is not None:
            raise self._unsupported(node, "divisor_override is not supported.")
        if attrs["padding"] != (0, 0) and a["count_include_pad"]:
            raise self._unsupported(
                node, "Padded average pooling must not count the padding; use count_include_pad=False."
            )
        self._emit(node, "avgpool", [x], attrs)

    def _adaptive_avg_pool2d(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._feature_map(node, a["self"])
        _, h, w, _ = self.tensors[x].shape
        _, _, oh, ow = node.meta["val"].shape
        if h % oh or w % ow:
            raise self._unsupported(
                node, f"Adaptive pooling from {h}x{w} to {oh}x{ow}: the output size must divide the input size."
            )
        kernel = (h // oh, w // ow)
        self._emit(node, "avgpool", [x], {"kernel": kernel, "stride": kernel, "padding": (0, 0)})

    def _mean(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._feature_map(node, a["self"])
        dims = sorted(d % 4 for d in (a["dim"] or []))
        if dims != [2, 3]:
            raise self._unsupported(node, f"A mean over dims {a['dim']}; only the mean over H and W is supported.")
        _, h, w, _ = self.tensors[x].shape
        attrs = {"kernel": (h, w), "stride": (h, w), "padding": (0, 0)}
        if a["keepdim"]:
            self._emit(node, "avgpool", [x], attrs)
            return
        # mean without keepdim yields (1, C): a global pool to (1, 1, 1, C), then a flatten.
        pooled = self._emit(node, "avgpool", [x], attrs, intermediate_shape=(1, 1, 1, self.tensors[x].shape[3]))
        self._emit(node, "flatten", [pooled], {})

    def _add(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        lhs = self._activation_input(node, a["self"], "first operand")
        rhs = self._activation_input(node, a["other"], "second operand")
        if a.get("alpha", 1) != 1:
            raise self._unsupported(node, "add with alpha != 1 is not supported.")
        if self.tensors[lhs].shape != self.tensors[rhs].shape:
            raise self._unsupported(
                node,
                f"Both operands must have the same shape (no broadcasting), got "
                f"{self.tensors[lhs].shape} and {self.tensors[rhs].shape}.",
            )
        self._emit(node, "add", [lhs, rhs], {"activation": "none"})

    def _softmax(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        x = self._activation_input(node, a["self"], "input")
        if len(self.tensors[x].shape) != 2 or a["dim"] % 2 != 1:
            raise self._unsupported(
                node,
                f"Softmax over dim {a['dim']} of shape {tuple(node.args[0].meta['val'].shape)}; only "
                "softmax over the last dim of a (1, F) vector is supported.",
            )
        self._emit(node, "softmax", [x], {})

    def _cat(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        parts = [self._activation_input(node, t, "input") for t in a["tensors"]]
        rank = len(self.tensors[parts[0]].shape)
        if a["dim"] % rank != 1:
            raise self._unsupported(node, f"Concatenation along dim {a['dim']}; only channels (dim 1) are supported.")
        self._emit(node, "concat", parts, {})

    def _plugin_op(self, op: OpDefinition) -> Callable[[torch.fx.Node, dict[str, Any]], None]:
        """The handler of an op a plugin adds: activations become inputs, arrays constants, the rest attrs."""

        def convert(node: torch.fx.Node, a: dict[str, Any]) -> None:
            inputs = [value for value in a.values() if isinstance(value, str)]
            constants = {name: value for name, value in a.items() if isinstance(value, np.ndarray)}
            attrs = {name: value for name, value in a.items() if not isinstance(value, str | np.ndarray)}
            if not inputs:
                raise self._unsupported(node, "Its input must be an activation computed from the model input.")
            self._emit(node, op.name, inputs, attrs, constants)

        return convert

    def _getitem(self, node: torch.fx.Node, a: dict[str, Any]) -> None:
        container, index = a["args"]
        if not isinstance(container, tuple) or container[index] is None:
            raise self._unsupported(node, "Only the first result of a batch-norm can be used.")
        self._alias(node, container[index])
