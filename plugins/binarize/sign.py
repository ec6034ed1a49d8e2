"""The binary activation `sign(x, threshold)`: +1 where x >= threshold (per channel), else -1.

A trained binary layer binarizes its input with the torch operator `tinyml_binarize::sign`, which
`torch.export` keeps as one node; the op `sign` this plugin adds to the IR (`tinyml_ops`) is how
the frontend, the float evaluation, the int8 quantizer and the integer reference read it. Its int8
form compares the int8 input with an integer threshold per channel (the real threshold carried
into the input's quantization) and gives +1/-1 at scale 1, zero point 0, so a following conv2d or
fc with +m/-m weights is an ordinary int8 layer to the reference, and an XNOR kernel to the board.
"""

from __future__ import annotations

import numpy as np
import torch

from tinyml.ir import Graph, Node, OpDefinition

OP = "sign"
TORCH_OP = "tinyml_binarize.sign"
BINARY = "binary"  # Tensor.encoding of the weights of a layer that reads a sign: +m/-m per channel, packed
BINARY_OPS = ("conv2d", "fc")


@torch.library.custom_op("tinyml_binarize::sign", mutates_args=())
def sign(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """+1 where x >= threshold, else -1; `threshold` has one value per channel (dim 1 of x)."""
    t = threshold.reshape(1, -1, *([1] * (x.dim() - 2)))
    return torch.where(x >= t, 1.0, -1.0).to(x.dtype)


@sign.register_fake
def _(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def run_float(node: Node, x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """On a float batch in graph layout (channels last)."""
    return np.where(x >= threshold, 1.0, -1.0).astype(np.float32)


def int8_threshold(threshold: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The smallest int8 q whose real value (q - zero_point) * scale is >= threshold, per channel, as int32.

    -128 when every q is (the bit is always 1), 128 when none is (always 0).
    """
    q = np.ceil(zero_point + np.asarray(threshold, dtype=np.float64) / float(scale))
    return np.clip(q, -128, 128).astype(np.int32)


def quantize(graph: Graph, node: Node) -> None:
    """The integer threshold for the int8 input; the output +1/-1 at scale 1, zero point 0; the weights of the
    conv2d and fc layers reading it marked binary, for the packed storage and the XNOR kernels."""
    x = graph.tensors[node.inputs[0]]
    threshold = graph.tensors[node.inputs[1]]
    threshold.data = int8_threshold(threshold.data, float(x.scale), x.zero_point)
    threshold.dtype, threshold.scale, threshold.zero_point = "int32", None, 0
    out = graph.tensors[node.outputs[0]]
    out.dtype, out.scale, out.zero_point = "int8", 1.0, 0
    for reader in graph.consumers(node.outputs[0]):
        if reader.op in BINARY_OPS and reader.inputs[0] == node.outputs[0]:
            graph.tensors[reader.inputs[1]].encoding = BINARY


def run_int8(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    """The integer reference on one sample: +1 where the int8 input reaches its threshold, else -1."""
    threshold = graph.tensors[node.inputs[1]].data
    return np.where(x.astype(np.int32) >= threshold, 1, -1).astype(np.int8)


DEFINITION = OpDefinition(name=OP, torch_op=TORCH_OP, run_float=run_float, quantize=quantize, run_int8=run_int8)
