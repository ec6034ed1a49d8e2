"""The `fuse-sign` technique: a binary convolution whose int8 output only feeds a `sign` writes the sign's bits.

Between two binary layers the int8 graph holds a binary conv2d, its int8 output and the `sign`
that packs that output for the next layer. The output is requantized exactly and compared with
the sign's integer threshold, and both steps are monotone in the layer's dot product, so each
output bit is one comparison of the dot product with a constant per channel. This technique
merges such a pair into one `conv2d_sign` node, which `tml_conv2d_xnor_sign` runs: it compares
the bit-sliced counters with the constants for 32 channels at once and writes the packed bits,
with no int8 output, no per-channel requantization and no packing pass. The bits are the ones
the pair gives (the reference below is the pair's), and the int8 tensor between them is gone
from the plan. It runs after `quantize-int8`.

The counters' starting values for each shape a window takes (a window over the padding has fewer
real taps; padding 1 makes up to nine shapes) are computed when the model is built
(`tinyml_plugins.binarize.starts`) and stored with the weights, so the fused kernel has nothing to
set up per call and every fusable pair is merged.
"""

from __future__ import annotations

import numpy as np

from tinyml.errors import RecipeError, TinymlError
from tinyml.ir import Graph, Node, OpDefinition
from tinyml.reference.conv import conv2d_s8
from tinyml.technique import Context, Technique
from tinyml_plugins.binarize.sign import BINARY, OP
from tinyml_plugins.binarize.starts import tabled

FUSED = "conv2d_sign"
MAX_TAPS = 16383  # TML_XNOR_SIGN_MAX_TAPS: the counters with their offsets stay within 16 bit planes


def fusable(node: Node, graph: Graph) -> Node | None:
    """The `sign` that `node` can merge with, or None: a binary conv2d (its input a sign's bits) whose int8
    output is read by one sign only and is no model output, with at most MAX_TAPS weights per channel and
    windows the fused kernel's table can hold (`starts.tabled`)."""
    if node.op != "conv2d" or graph.tensors[node.inputs[1]].encoding != BINARY:
        return None
    out = node.outputs[0]
    readers = graph.consumers(out)
    if out in graph.outputs or len(readers) != 1 or readers[0].op != OP or readers[0].inputs[0] != out:
        return None
    if int(np.prod(graph.tensors[node.inputs[1]].shape[1:])) > MAX_TAPS or not tabled(node, graph):
        return None
    return readers[0]


def fuse(graph: Graph) -> Graph:
    """A copy of `graph` with every fusable conv2d and its sign merged into one `conv2d_sign` node."""
    graph = graph.copy()
    chosen = [n for n in graph.nodes if fusable(n, graph) is not None]
    for conv in chosen:
        sign = fusable(conv, graph)
        y = conv.outputs[0]
        fused = Node(
            conv.name, FUSED, [*conv.inputs, sign.inputs[1]], list(sign.outputs),
            {**conv.attrs, "conv_zero_point": graph.tensors[y].zero_point}, conv.source,
        )  # fmt: skip
        graph.nodes[graph.nodes.index(conv)] = fused
        graph.nodes.remove(sign)
        del graph.tensors[y]
    return graph


class FuseSign(Technique):
    """Binary convolutions feeding a sign write its packed bits directly (`tml_conv2d_xnor_sign`)."""

    name = "fuse-sign"
    stage = "graph"

    def apply(self, graph: Graph, context: Context) -> Graph:
        if not graph.is_quantized:
            raise RecipeError(
                "Technique 'fuse-sign' merges int8 binary layers with the sign after them: list it after "
                "`quantize-int8` in the recipe's techniques."
            )
        return fuse(graph)


def run_int8(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    """The pair's integer reference on one sample: the conv2d's int8 output, then +1 where it reaches the
    sign's threshold, else -1."""
    _, w, b, threshold = (graph.tensors[n] for n in node.inputs)
    a = node.attrs
    y = conv2d_s8(
        x, w.data, b.data, stride=a["stride"], padding=a["padding"], input_offset=0,
        output_offset=a["conv_zero_point"], multiplier=a["multiplier"], shift=a["shift"], act_min=a["act_min"],
        act_max=a["act_max"],
    )  # fmt: skip
    return np.where(y.astype(np.int32) >= threshold.data, 1, -1).astype(np.int8)


def _not_before_quantization(*args: object) -> None:
    raise TinymlError(
        f"Op `{FUSED}` exists only in int8 graphs (technique 'fuse-sign' makes it after `quantize-int8`); it has no "
        "float form and cannot be quantized again."
    )


DEFINITION = OpDefinition(
    name=FUSED, torch_op="tinyml_binarize.conv2d_sign", run_float=_not_before_quantization,
    quantize=_not_before_quantization, run_int8=run_int8,
)  # fmt: skip
