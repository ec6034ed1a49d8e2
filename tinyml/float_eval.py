"""Float evaluation of a graph in numpy, on a whole batch at once.

It checks that the frontend kept the model's meaning, and gives the quantizer every activation's
values for calibration. Convolutions loop over kernel taps (KH*KW matrix products on the batch),
so memory stays at the size of one output tensor however large the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

import numpy as np

from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node


def run_float(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Evaluate `graph` on a batch `x` in graph layout ((N, H, W, C) or (N, F)).

    Returns every activation tensor (the input included) by name, batch axis first.
    """
    if graph.is_quantized or len(graph.inputs) != 1:
        raise TinymlError("run_float evaluates float graphs with one input; this graph is quantized or has several.")
    (input_name,) = graph.inputs
    expected = graph.tensors[input_name].shape[1:]
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != tuple(expected):
        raise TinymlError(
            f"run_float got a batch of shape {x.shape}, but the graph input `{input_name}` expects "
            f"(N, {', '.join(map(str, expected))}) in graph layout (use frontend.nchw_to_graph)."
        )
    values = {input_name: x}
    for node in graph.nodes:
        args = [values[i] if i in values else graph.tensors[i].data for i in node.inputs]
        kernel = _KERNELS.get(node.op) or _plugin_float(node)
        out = kernel(node, *args)
        values[node.outputs[0]] = _activate(out, node.attrs.get("activation", "none"))
    return values


def _plugin_float(node: Node) -> Callable[..., np.ndarray]:
    """The float evaluation of an op a plugin adds (hook `tinyml_ops`)."""
    from tinyml import plugins

    op = plugins.ops().get(node.op)
    if op is None:
        raise TinymlError(f"run_float has no float implementation of op {node.op!r} (node `{node.name}`).")
    return op.run_float


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(x, 0.0)
    if activation == "relu6":
        return np.clip(x, 0.0, 6.0)
    return x


def _pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value)


def _windows(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int], value: float = 0.0
) -> tuple[list[tuple[int, int, np.ndarray]], tuple[int, int]]:
    """(ky, kx, strided view of the padded input under that tap) for each tap, and the output size."""
    xp = _pad(x, padding, value)
    (kh, kw), (sh, sw) = kernel, stride
    oh = (xp.shape[1] - kh) // sh + 1
    ow = (xp.shape[2] - kw) // sw + 1
    taps = [
        (ky, kx, xp[:, ky : ky + sh * (oh - 1) + 1 : sh, kx : kx + sw * (ow - 1) + 1 : sw, :])
        for ky in range(kh)
        for kx in range(kw)
    ]
    return taps, (oh, ow)


def _conv2d(node: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    taps, (oh, ow) = _windows(x, weight.shape[1:3], node.attrs["stride"], node.attrs["padding"])
    out = np.zeros((x.shape[0], oh, ow, weight.shape[0]), dtype=np.float32)
    for ky, kx, view in taps:
        out += view @ weight[:, ky, kx, :].T
    return out + bias


def _dwconv2d(node: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    multiplier = node.attrs["depth_multiplier"]
    x = np.repeat(x, multiplier, axis=-1) if multiplier > 1 else x  # output channel c*M+m reads channel c
    taps, (oh, ow) = _windows(x, weight.shape[1:3], node.attrs["stride"], node.attrs["padding"])
    out = np.zeros((x.shape[0], oh, ow, weight.shape[3]), dtype=np.float32)
    for ky, kx, view in taps:
        out += view * weight[0, ky, kx, :]
    return out + bias


def _fc(node: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ weight.T + bias


def _maxpool(node: Node, x: np.ndarray) -> np.ndarray:
    taps, _ = _windows(x, node.attrs["kernel"], node.attrs["stride"], node.attrs["padding"], -np.inf)
    return reduce(np.maximum, (view for _, _, view in taps))


def _avgpool(node: Node, x: np.ndarray) -> np.ndarray:
    """Mean over the window's cells inside the input: padded cells are not counted."""
    kernel, stride, padding = node.attrs["kernel"], node.attrs["stride"], node.attrs["padding"]
    taps, _ = _windows(x, kernel, stride, padding)
    inside = np.ones((1, *x.shape[1:3], 1), dtype=np.float32)
    count_taps, _ = _windows(inside, kernel, stride, padding)
    total = reduce(np.add, (view for _, _, view in taps))
    return total / reduce(np.add, (view for _, _, view in count_taps))


def _add(node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def _softmax(node: Node, x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _concat(node: Node, *parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts, axis=-1)


def _flatten(node: Node, x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C*H*W) in PyTorch's C, H, W order."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)


_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "conv2d": _conv2d,
    "dwconv2d": _dwconv2d,
    "fc": _fc,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "add": _add,
    "softmax": _softmax,
    "concat": _concat,
    "flatten": _flatten,
}
