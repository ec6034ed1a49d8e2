"""Which nodes get the binary kernels, the C that calls them, and the packed weights they read.

A `sign` node's output is stored as packed bits (`tml_binarize_s8`) for the conv2d and fc layers
that read it, whose weights are +m/-m per output channel (`Tensor.encoding == "binary"`, set by
`sign.quantize`): those run `tml_conv2d_xnor` / `tml_fc_xnor` on the bits and write int8, the
same bytes the int8 kernels would give on the +1/-1 values. A `conv2d_sign` node (technique
`fuse-sign`) runs `tml_conv2d_xnor_sign`, which writes the packed bits of its sign itself. Their
scratch (the byte offsets of the weight words of the set input bits of up to two windows) is sized here as
`tml_*_xnor*_scratch_bytes` size it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node, Tensor
from tinyml.kernels import CallSite, Kernel, _fields, _quant_channels, conv_params
from tinyml.weights import EncodedTensor, c_comment, c_values, symbol_for
from tinyml_plugins.binarize.fuse import FUSED
from tinyml_plugins.binarize.packing import binary_magnitudes, pack_weight_blocks, tap_ones, words
from tinyml_plugins.binarize.sign import BINARY, BINARY_OPS, OP
from tinyml_plugins.binarize.starts import node_starts

PACKING_OPS = (OP, FUSED)  # the ops whose output is stored as packed bits
READING_OPS = (*BINARY_OPS, FUSED)  # the ops that read packed bits

if TYPE_CHECKING:
    from tinyml.board.boards import Board

HEADER = "tml_xnor.h"
ADVICE = "train the model with technique `binarize`, which binarizes a layer's input and weights together"


MAX_TAPS = 65535  # TML_XNOR_MAX_TAPS: a count of set taps fits 16 bit-planes
PLANES = 16  # TML_XNOR_PLANES


def conv2d_scratch_bytes(filter_shape: tuple[int, int, int], out_channels: int) -> int:
    """Scratch of `tml_conv2d_xnor`; mirrors `tml_conv2d_xnor_scratch_bytes`."""
    taps = int(np.prod(filter_shape))
    return 8 * taps + 8 * filter_shape[1] + 4 * out_channels


def conv2d_sign_scratch_bytes(filter_shape: tuple[int, int, int], out_channels: int) -> int:
    """Scratch of `tml_conv2d_xnor_sign`; mirrors `tml_conv2d_xnor_sign_scratch_bytes`: the convolution's and
    each block's count (TML_XNOR_PLANES words)."""
    return conv2d_scratch_bytes(filter_shape, out_channels) + 4 * PLANES * words(out_channels)


def fc_scratch_bytes(in_features: int) -> int:
    """Scratch of `tml_fc_xnor`; mirrors `tml_fc_xnor_scratch_bytes`."""
    return 4 * in_features


def packed_bytes(shape: tuple[int, ...]) -> int:
    """Bytes of a binary tensor of graph shape (1, H, W, C) or (1, N) stored packed."""
    pixels = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    return pixels * words(shape[-1]) * 4


def _describe(node: Node) -> str:
    return f"`{node.name}`" + (f" (from `{node.source}`)" if node.source and node.source != node.name else "")


def _check_packed(node: Node, graph: Graph) -> list[Node]:
    """The binary layers reading the packed bits `node` writes (a sign or a conv2d_sign); a TinymlError when
    the bits could not be stored packed."""
    out = node.outputs[0]
    readers = graph.consumers(out)
    strangers = [
        n for n in readers
        if n.op not in READING_OPS or n.inputs[0] != out or graph.tensors[n.inputs[1]].encoding != BINARY
    ]  # fmt: skip
    if out in graph.outputs or not readers or strangers:
        what = "is the model's output" if out in graph.outputs or not readers else (
            f"is read by {', '.join(_describe(n) for n in strangers)}, which is no conv2d or fc layer with binary "
            "weights"
        )  # fmt: skip
        raise TinymlError(
            f"The binary activation {_describe(node)} {what}; binary activations are stored as packed bits that "
            f"only the XNOR kernels of conv2d and fc layers read. Make a binary activation the input of a binary "
            f"layer only: {ADVICE}."
        )
    shape = graph.tensors[out].shape
    if packed_bytes(shape) > graph.tensors[out].nbytes:
        raise TinymlError(
            f"The binary activation {_describe(node)} has {shape[-1]} channels; packed to whole 32-bit words it "
            "would take more bytes than as int8. Binarize only layers with at least 4 input channels (technique "
            "`binarize`, option `layers`)."
        )
    return readers


def _emit_sign(call: CallSite) -> str:
    g, n = call.graph, call.node
    shape = g.tensors[n.inputs[0]].shape
    pixels = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    return (
        f"status = tml_binarize_s8({call.input(0)}, {pixels}, {shape[-1]}, {call.tensor(n.inputs[1])}, "
        f"(uint32_t *){call.output()});"
    )


def _channel_arrays(call: CallSite) -> str:
    """The `tap_ones, magnitude` arguments: positive weights per filter position, |weight| per channel."""
    weights = call.graph.tensors[call.node.inputs[1]].data
    ones = call.add_array("int16_t", "tap_ones", tap_ones(weights))
    return f"{ones}, {call.add_int32_array('magnitude', binary_magnitudes(weights))}"


def _sign_starts(call: CallSite) -> str:
    """The `tml_xnor_sign_starts` of a conv2d_sign node: its counters' starting planes per window shape."""
    starts = node_starts(call.node, call.graph)
    rows = call.add_array("uint8_t", "row_class", starts.row_class)
    columns = call.add_array("uint8_t", "column_class", starts.column_class)
    exact = call.add_array("uint8_t", "exact_blocks", starts.exact)
    planes = call.add_array("uint32_t", "start_planes", starts.planes.ravel(), suffix="u")
    return call.add_static(
        "tml_xnor_sign_starts", "starts", f"{{{rows}, {columns}, {starts.column_classes}, {exact}, {planes}}}"
    )


def _emit_conv(call: CallSite) -> str:
    """The call of a binary convolution: `tml_conv2d_xnor` (int8 out), or `tml_conv2d_xnor_sign` for a
    conv2d_sign node (its sign's thresholds after the bias, packed bits out)."""
    g, n = call.graph, call.node
    x, w, b = n.inputs[:3]
    out = n.outputs[0]
    fused = n.op == FUSED
    function = "tml_conv2d_xnor_sign" if fused else "tml_conv2d_xnor"
    # the input offset is 0 (a sign's output has zero point 0); a fused node requantizes to the int8 output it
    # replaced, whose zero point it keeps
    params = conv_params(call, n.attrs["conv_zero_point"] if fused else None)
    kh, kw = g.tensors[w].shape[1:3]
    filt = call.add_static("tml_shape", "filter_shape", f"{{{kh}, {kw}, {g.tensors[x].shape[-1]}}}")
    threshold = f"{call.tensor(n.inputs[3])}, &{_sign_starts(call)}, " if fused else ""
    output = f"(uint32_t *){call.output()}" if fused else call.output()
    return (
        f"status = {function}(&{params}, &{_quant_channels(call)}, &{call.shape(x)}, "
        f"(const uint32_t *){call.input(0)}, &{filt}, {call.tensor(w)}, {_channel_arrays(call)}, {call.tensor(b)}, "
        f"{threshold}&{call.shape(out)}, {output}, {call.scratch});"
    )


def _emit_fc(call: CallSite) -> str:
    g, n, a = call.graph, call.node, call.node.attrs
    x, w, b = n.inputs
    out_f, in_f = g.tensors[w].shape
    params = call.add_static(
        "tml_fc_params",
        "params",
        _fields(input_offset=0, output_offset=g.tensors[n.outputs[0]].zero_point, act_min=a["act_min"],
                act_max=a["act_max"])[:-1] + ", .folded_bias = NULL}",
    )  # fmt: skip
    quant = _quant_channels(call)
    return (
        f"status = tml_fc_xnor(&{params}, &{quant}, {in_f}, (const uint32_t *){call.input(0)}, {call.tensor(w)}, "
        f"{_channel_arrays(call)}, {call.tensor(b)}, {out_f}, {call.output()}, {call.scratch});"
    )


def select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    """The binary kernels for sign nodes, the layers with binary weights that read them and the binary
    convolutions fused with their sign; None otherwise."""
    if node.op == FUSED:
        readers = _check_packed(node, graph)
        w = graph.tensors[node.inputs[1]]
        scratch = conv2d_sign_scratch_bytes(tuple(w.shape[1:]), w.shape[0])
        reason = (
            f"binary {w.shape[1]}x{w.shape[2]} conv fused with the sign after it (technique `fuse-sign`), bits read "
            f"by {', '.join(f'`{r.name}`' for r in readers)}: each output bit is the dot product compared with a "
            "constant per channel, 32 channels at once in the bit-sliced counters, no int8 output"
        )
        return Kernel("tml_conv2d_xnor_sign", _emit_conv, scratch, ("tml_nn.h", HEADER), reason)
    if node.op == OP:
        readers = _check_packed(node, graph)
        return Kernel(
            function="tml_binarize_s8", emit=_emit_sign, headers=("tml_nn.h", HEADER),
            reason=f"binary activation of {', '.join(f'`{n.name}`' for n in readers)}: int8 compared with an integer "
            "threshold per channel, packed 32 channels to a word",
        )  # fmt: skip
    if node.op not in BINARY_OPS or graph.tensors[node.inputs[1]].encoding != BINARY:
        return None
    producer = graph.producer(node.inputs[0])
    if producer is None or producer.op not in PACKING_OPS:
        raise TinymlError(
            f"Layer {_describe(node)} has binary weights but its input is not a binary activation (a `sign` node), "
            f"so no XNOR kernel can run it; {ADVICE}."
        )
    w = graph.tensors[node.inputs[1]]
    taps = int(np.prod(w.shape[1:]))
    if taps > MAX_TAPS:
        raise TinymlError(
            f"Layer {_describe(node)} has {taps} weights per output channel; the XNOR kernels take at most "
            f"{MAX_TAPS}. Keep this layer int8 (technique `binarize`, option `layers`)."
        )
    shape = f"{w.shape[1]}x{w.shape[2]} conv" if node.op == "conv2d" else "fc"
    reason = (
        f"binary input and +-1 weights ({shape}, {taps} taps an output): the weights of 32 output channels packed "
        "in a word, summed over the input's set bits in bit-sliced carry-save counters"
    )
    if node.op == "conv2d":
        scratch = conv2d_scratch_bytes(tuple(w.shape[1:]), w.shape[0])
        return Kernel("tml_conv2d_xnor", _emit_conv, scratch, ("tml_nn.h", HEADER), reason)
    return Kernel("tml_fc_xnor", _emit_fc, fc_scratch_bytes(w.shape[1]), ("tml_nn.h", HEADER), reason)


def encode_weights(tensor: Tensor) -> EncodedTensor | None:
    """A binary layer's int8 weights (+m/-m per channel) packed 32 to a uint32 word; None for other tensors."""
    if tensor.encoding != BINARY:
        return None
    if tensor.dtype != "int8" or binary_magnitudes(tensor.data) is None:
        raise TinymlError(
            f"Constant `{tensor.name}` is marked binary but is not int8 weights of +m or -m per output channel; "
            f"{ADVICE}."
        )
    packed = pack_weight_blocks(tensor.data)
    symbol = symbol_for(tensor)
    summary = c_comment(
        f"{tensor.name}: binary {list(tensor.data.shape)} as {packed.shape[0]} block(s) of 32 output channels by "
        f"{packed.shape[1]} taps, uint32 (bit j: channel 32 * block + j positive): {packed.nbytes} bytes, int8 "
        f"{tensor.data.nbytes}, float32 {tensor.data.size * 4}"
    )
    definition = f"/* {summary} */\nconst uint32_t {symbol}[{packed.size}] = {{\n    {c_values(packed, 'u')}\n}};\n"
    return EncodedTensor(
        symbol=symbol, declaration=f"extern const uint32_t {symbol}[{packed.size}];", definition=definition,
        nbytes=int(packed.nbytes), encoding=BINARY,
    )  # fmt: skip
