"""The graph every stage after the frontend passes along: tensors, nodes in execution order.

Activations are NHWC with batch 1: a feature map is (1, H, W, C), a vector (1, N). Constants
carry their data in the layout the kernels read (conv weights OHWI, depthwise [1, KH, KW, C*M],
linear [out, in]).

A float graph comes from the frontend (dtype "float32" everywhere). A quantization technique
turns it into an int8 graph: activation tensors get a per-tensor `scale`/`zero_point`, weights
a per-channel `scale`, biases become int32, and each node gets the integer attributes its kernel
needs (multipliers, shifts, clamps). Stages return new graphs; `Graph.copy()` makes that cheap.

Ops and their attributes:

| op        | inputs                     | attrs (float graph)                                  |
| --------- | -------------------------- | ---------------------------------------------------- |
| conv2d    | x, weight OHWI, bias       | stride (sh, sw), padding (ph, pw), activation        |
| dwconv2d  | x, weight [1,KH,KW,C*M], bias | stride, padding, depth_multiplier, activation     |
| fc        | x (1, N), weight [out, in], bias | activation                                     |
| maxpool   | x                          | kernel (kh, kw), stride, padding, activation         |
| avgpool   | x                          | kernel, stride, padding (padded cells not counted)   |
| add       | a, b (same shape)          | activation                                           |
| softmax   | x                          | (over the last axis)                                 |
| concat    | x1, x2, ... (NHWC)         | (along channels)                                     |
| flatten   | x (1, H, W, C)             | (result in PyTorch's C, H, W order: shape (1, C*H*W)) |

`activation` is "none", "relu" or "relu6". The int8 attributes a quantizer adds are listed in
`tinyml/reference.py`, the oracle that defines what each int8 op computes.

A plugin may add ops (hook `tinyml_ops`): an `OpDefinition` says which torch operator the frontend
maps to it and how float evaluation, the int8 quantizer and the integer reference run it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OPS = ("conv2d", "dwconv2d", "fc", "maxpool", "avgpool", "add", "softmax", "concat", "flatten")
ACTIVATIONS = ("none", "relu", "relu6")


@dataclass(frozen=True)
class OpDefinition:
    """An op a plugin adds to the IR, and how each stage that interprets ops runs it.

    `torch_op` is the operator the frontend maps to it, as the frontend names ops ("mylib.sign" for a
    `torch.library` custom op `mylib::sign`): its arguments computed from the model input become the
    node's inputs, parameter and buffer arguments its constants (`<node>.<argument>`), other
    arguments its attrs. `run_float(node, *args)` evaluates it on a float batch in graph layout
    (calibration, float checks); `quantize(graph, node)` makes it int8 after the int8 quantizer gave
    its output a calibrated scale (it may set another); `run_int8(graph, node, *args)` is its integer
    reference on one sample, the oracle its C kernel must match byte for byte.
    """

    name: str
    torch_op: str
    run_float: Callable[..., np.ndarray]
    quantize: Callable[[Graph, Node], None]
    run_int8: Callable[..., np.ndarray]


@dataclass
class Tensor:
    """A value in the graph. `data` is set for constants (weights, biases) only."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # "float32", "int8" or "int32"
    data: np.ndarray | None = None
    scale: float | np.ndarray | None = None  # per tensor, or per output channel for weights
    zero_point: int = 0
    # Weight storage, set by compression techniques and read by `tinyml_encode_weights` plugins:
    # `codebook` holds the distinct values a weight may take (weight sharing: at most 2**bits of
    # them; float values before quantization, which maps them to one int8 codebook, int8 values in
    # the tensor's own quantization after it, so kernels stay integer-exact);
    # `encoding` names the storage a technique asks for ("raw", "packed", "sparse", "huffman").
    codebook: np.ndarray | None = None
    encoding: str = "raw"

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    """One operation. `source` is the PyTorch module path it came from, for error messages."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]

    def copy(self) -> Graph:
        """Deep copy, so a stage can return a changed graph without touching its input."""
        return copy.deepcopy(self)

    @property
    def is_quantized(self) -> bool:
        return all(self.tensors[n].dtype == "int8" for n in self.inputs)

    def producer(self, tensor: str) -> Node | None:
        return next((n for n in self.nodes if tensor in n.outputs), None)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def activations(self) -> list[Tensor]:
        """Non-constant tensors, in order of first appearance."""
        seen: dict[str, Tensor] = {}
        for name in self.inputs:
            seen[name] = self.tensors[name]
        for node in self.nodes:
            for name in node.inputs + node.outputs:
                t = self.tensors[name]
                if not t.is_constant:
                    seen.setdefault(name, t)
        return list(seen.values())

    def constants(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.is_constant]

    def summary(self) -> str:
        """One line per node: op, input shapes -> output shape, source module."""
        lines = []
        for node in self.nodes:
            ins = ", ".join(
                str(self.tensors[i].shape) for i in node.inputs if not self.tensors[i].is_constant
            )
            outs = ", ".join(str(self.tensors[o].shape) for o in node.outputs)
            lines.append(f"{node.name:<20} {node.op:<9} {ins} -> {outs}  [{node.source}]")
        return "\n".join(lines)
