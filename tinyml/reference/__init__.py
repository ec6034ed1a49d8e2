"""The numpy oracle: integer-exact int8 ops and an interpreter that runs a quantized graph with them.

Every C kernel, on the host and on every board, must give the same bytes as these functions.
The op modules take one sample without the batch axis (a feature map is [H, W, C]);
`run_int8` walks a graph over a batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyml.ir import Graph, Node
from tinyml.reference.conv import conv2d_s8, dwconv2d_s8, fc_s8
from tinyml.reference.elementwise import ADD_PARAM_FIELDS, add_s8, concat_s8, flatten_s8, softmax_s8
from tinyml.reference.pool import avgpool_s8, maxpool_s8


def _weighted(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    xt, w, b = (graph.tensors[n] for n in node.inputs)
    a = node.attrs
    common = dict(
        input_offset=-xt.zero_point,
        output_offset=graph.tensors[node.outputs[0]].zero_point,
        multiplier=a["multiplier"],
        shift=a["shift"],
        act_min=a["act_min"],
        act_max=a["act_max"],
    )
    if node.op == "fc":
        return fc_s8(x.reshape(-1), w.data, b.data, **common)
    if node.op == "dwconv2d":
        return dwconv2d_s8(
            x, w.data[0], b.data, stride=a["stride"], padding=a["padding"],
            depth_multiplier=a["depth_multiplier"], **common,
        )  # fmt: skip
    return conv2d_s8(x, w.data, b.data, stride=a["stride"], padding=a["padding"], **common)


def _pool(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    a = node.attrs
    fn = maxpool_s8 if node.op == "maxpool" else avgpool_s8
    return fn(
        x,
        kernel=a["kernel"],
        stride=a["stride"],
        padding=a["padding"],
        act_min=a["act_min"],
        act_max=a["act_max"],
    )


def _add(graph: Graph, node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return add_s8(a, b, **{k: node.attrs[k] for k in ADD_PARAM_FIELDS})


def _softmax(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    return softmax_s8(x.reshape(-1, x.shape[-1]), node.attrs["exp_table"]).reshape(x.shape)


def _concat(graph: Graph, node: Node, *xs: np.ndarray) -> np.ndarray:
    parts = [
        (x, -graph.tensors[name].zero_point, m, s)
        for x, name, m, s in zip(xs, node.inputs, node.attrs["multipliers"], node.attrs["shifts"], strict=True)
    ]
    return concat_s8(parts, graph.tensors[node.outputs[0]].zero_point)


def _flatten(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    return flatten_s8(x)


OPS: dict[str, Callable[..., np.ndarray]] = {
    "conv2d": _weighted,
    "dwconv2d": _weighted,
    "fc": _weighted,
    "maxpool": _pool,
    "avgpool": _pool,
    "add": _add,
    "softmax": _softmax,
    "concat": _concat,
    "flatten": _flatten,
}


def _plugin_reference(node: Node) -> Callable[..., np.ndarray]:
    """The integer reference of an op a plugin adds (hook `tinyml_ops`)."""
    from tinyml import plugins
    from tinyml.errors import TinymlError

    op = plugins.ops().get(node.op)
    if op is None:
        raise TinymlError(f"The int8 reference has no op {node.op!r} (node `{node.name}`); is its plugin disabled?")
    return op.run_int8


def run_int8(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run an int8 graph on a batch `x` (graph layout, batch first); every activation by name, batch first."""
    x = np.asarray(x, dtype=np.int8)
    results: dict[str, list[np.ndarray]] = {}
    for sample in x:
        values = {graph.inputs[0]: sample}
        for node in graph.nodes:
            args = [values[n] for n in node.inputs if not graph.tensors[n].is_constant]
            out = (OPS.get(node.op) or _plugin_reference(node))(graph, node, *args)
            values[node.outputs[0]] = out.reshape(graph.tensors[node.outputs[0]].shape[1:])
        for name, value in values.items():
            results.setdefault(name, []).append(value)
    return {name: np.stack(v) for name, v in results.items()}
