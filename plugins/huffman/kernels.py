"""Kernels for layers whose weights are encoded: fused decoding, or zero skipping over sparse rows.

`tml_huffman_fc_s8` and `tml_huffman_conv2d_s8` decode one output channel's weights (an fc row, a
conv filter) into scratch and use them before decoding the next (an fc layer's sparse weights are
multiplied as they are read, never written out); the scratch is the decoder's state
(`READER_BYTES`) and the one row or filter, sized here in Python as the C library's
`tml_huffman_*_scratch_bytes` sizes it (code generation never compiles C), so the memory plan
holds all the RAM decoding takes and the kernels' stack frames stay small. A depthwise layer,
whose kernel cannot decode inside, has its whole weights decoded into scratch just before the
core's kernel runs on them (TFLite Micro's way). `tml_sparse_fc_s8` and `tml_sparse_conv1x1_s8`
read `sparse-csr` weights as they are stored and touch only the nonzeros, with no scratch. A layer
whose weights are raw keeps the core's kernels.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node
from tinyml.kernels import CallSite, Kernel, _fields, _quant_channels, conv_params
from tinyml_plugins.huffman.codes import ENCODINGS, SPARSE_CSR
from tinyml_plugins.huffman.storage import HEADER, SPARSE_HEADER

if TYPE_CHECKING:
    from tinyml.board.boards import Board

FUSED_OPS = ("fc", "conv2d")  # kernels that decode inside, a row or filter at a time
ENCODED_OPS = (*FUSED_OPS, "dwconv2d")  # the rest decode their layer into scratch before the core kernel
STORED = (*ENCODINGS, SPARSE_CSR)  # every encoding this plugin writes
SPARSE_REASON = "weights stored sparse-csr: only the nonzeros are read"


# The sparsity (share of zero int8 weights) past which the zero-skipping kernels run fewer
# instructions than the dense ones, per kernel path and layer kind. Measured with exact QEMU counts by
# `.venv/bin/python bench/sparse_crossover.py --board B`, instructions dense / sparse at 0, 50, 70, 80,
# 90, 95% sparsity:
#   DSP (stm32): the dense kernels use SMLAD, four rows (fc) or two channels by two pixels at a time
#     fc 300x100:          53,007 / 159,471, 85,111, 55,081, 40,089, 25,105, 17,619 -> crossover 71.4%
#     conv1x1 32->64, 8x8: 243,312 / 701,409, 409,623, 291,583, 232,890, 174,250, 145,121 -> 78.2%
#   portable (cortex-m3, no DSP extension):
#     fc 300x100:          133,554 / 159,273, 84,913, 54,883, 39,891, 24,907, 17,421 -> crossover 17.6%
#     conv1x1 32->64, 8x8: 775,216 / 699,359, 407,572, 289,532, 230,937, 172,689, 144,246 -> 0% (always)
# A nonzero costs the sparse fc about 5 instructions (column, value and input loads, one
# multiply-accumulate, a quarter of the loop) and the sparse 1x1 conv about 3 a pixel (two pixels
# share its column and value); a weight costs the portable dense fc about 4.5 and the DSP one about
# 1.8, so on a DSP core sparse storage pays only past about 70-80% zeros. Flash is another matter:
# sparse-csr is larger than int8 below 50% zeros (67% with rows past 256).
SPARSE_CROSSOVER = {
    "dsp": {"fc": 0.714, "conv1x1": 0.782},
    "portable": {"fc": 0.176, "conv1x1": 0.0},
}


def reads_sparse_rows(node: Node, graph: Graph) -> bool:
    """Whether a zero-skipping kernel can run the node: an fc layer or a conv2d with a 1x1 kernel."""
    return node.op == "fc" or (node.op == "conv2d" and tuple(graph.tensors[node.inputs[1]].shape[1:3]) == (1, 1))


def kernel_path(board: Board | None) -> str:
    """"dsp" where the core kernels take their DSP path (a board with the DSP extension), else "portable"."""
    return "dsp" if board is not None and board.dsp else "portable"


def sparse_is_faster(node: Node, graph: Graph, board: Board | None) -> bool:
    """Whether the node's zero-skipping kernel beats its dense one on `board`: fc or 1x1 conv, sparsity
    past the crossover measured for the dense kernels that board runs."""
    if not reads_sparse_rows(node, graph):
        return False
    weights = graph.tensors[node.inputs[1]].data
    sparsity = 1.0 - np.count_nonzero(weights) / weights.size
    return sparsity > SPARSE_CROSSOVER[kernel_path(board)]["fc" if node.op == "fc" else "conv1x1"]


# TML_HUFFMAN_READER_BYTES: the scratch a tml_huffman_reader takes (at least its size with 64-bit
# pointers, so the same on the host and the boards): the stream position, each code table's limits and
# its look-up of the codes of at most 6 bits, built when a kernel starts; mirrors `tml_huffman_reader_bytes`.
READER_BYTES = 448


def fc_scratch_bytes(in_features: int) -> int:
    """Scratch of `tml_huffman_fc_s8`: the reader, then one decoded row. Mirrors `tml_huffman_fc_s8_scratch_bytes`."""
    return READER_BYTES + in_features


def conv2d_scratch_bytes(filter_shape: tuple[int, int, int]) -> int:
    """Scratch of `tml_huffman_conv2d_s8`: the reader, then one decoded filter (h, w, c).

    Mirrors `tml_huffman_conv2d_s8_scratch_bytes`.
    """
    h, w, c = filter_shape
    return READER_BYTES + h * w * c


def _fc_params(call: CallSite) -> str:
    g, n, a = call.graph, call.node, call.node.attrs
    return call.add_static(
        "tml_fc_params",
        "params",
        _fields(
            input_offset=-g.tensors[n.inputs[0]].zero_point, output_offset=g.tensors[n.outputs[0]].zero_point,
            act_min=a["act_min"], act_max=a["act_max"],
        ),
    )  # fmt: skip


def _emit_fc(call: CallSite) -> str:
    """The Huffman/packed/sparse fc: decodes a row into scratch, then multiplies it."""
    return _fc_call(call, "tml_huffman_fc_s8", scratch=True)


def _emit_sparse_fc(call: CallSite) -> str:
    """The CSR fc: walks each row's nonzeros, no scratch."""
    return _fc_call(call, "tml_sparse_fc_s8", scratch=False)


def _fc_call(call: CallSite, function: str, scratch: bool) -> str:
    g, n = call.graph, call.node
    x, w, b = n.inputs
    out_f, in_f = g.tensors[w].shape
    params = _fc_params(call)
    quant = _quant_channels(call)
    last = f", {call.scratch}" if scratch else ""
    return (
        f"status = {function}(&{params}, &{quant}, {in_f}, {call.input(0)}, &{call.tensor(w)}, "
        f"{call.tensor(b)}, {out_f}, {call.output()}{last});"
    )


def _emit_conv(call: CallSite) -> str:
    g, n = call.graph, call.node
    x, w, b = n.inputs
    out = n.outputs[0]
    params = conv_params(call)
    quant = _quant_channels(call)
    kh, kw = g.tensors[w].shape[1:3]
    filt = call.add_static("tml_shape", "filter_shape", f"{{{kh}, {kw}, {g.tensors[x].shape[-1]}}}")
    return (
        f"status = tml_huffman_conv2d_s8(&{params}, &{quant}, &{call.shape(x)}, {call.input(0)}, &{filt}, "
        f"&{call.tensor(w)}, {call.tensor(b)}, &{call.shape(out)}, {call.output()}, {call.scratch});"
    )


def _emit_sparse_conv1x1(call: CallSite) -> str:
    x, w, b = call.node.inputs
    out = call.node.outputs[0]
    params = conv_params(call)
    quant = _quant_channels(call)
    return (
        f"status = tml_sparse_conv1x1_s8(&{params}, &{quant}, &{call.shape(x)}, {call.input(0)}, "
        f"&{call.tensor(w)}, {call.tensor(b)}, &{call.shape(out)}, {call.output()});"
    )


def _sparse_kernel(node: Node, graph: Graph) -> Kernel:
    """The zero-skipping kernel of a node whose weights are sparse-csr; refused for a conv wider than 1x1."""
    if not reads_sparse_rows(node, graph):
        kh, kw = graph.tensors[node.inputs[1]].shape[1:3]
        raise TinymlError(
            f"Layer `{node.name}` ({node.op}, {kh}x{kw} kernel) has {SPARSE_CSR} weights, which only fc layers and "
            "1x1 convolutions can read; store this layer's weights another way (technique `huffman`, option "
            "`layers`)."
        )
    if node.op == "fc":
        return Kernel(
            function="tml_sparse_fc_s8", emit=_emit_sparse_fc, headers=("tml_nn.h", SPARSE_HEADER),
            reason=SPARSE_REASON,
        )  # fmt: skip
    return Kernel(
        function="tml_sparse_conv1x1_s8", emit=_emit_sparse_conv1x1, headers=("tml_nn.h", SPARSE_HEADER),
        reason=SPARSE_REASON,
    )  # fmt: skip


def select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    """The kernel of a node whose weight is encoded; None for every other node.

    fc and conv2d decode inside the kernel (or skip zeros over sparse-csr); any other op with
    weights (depthwise conv2d) decodes its whole layer into scratch just before the core kernel runs.
    A node with another encoded constant (a bias) is refused: no kernel reads it encoded.
    """
    encoded = [name for name in node.inputs if graph.tensors[name].encoding in STORED]
    if not encoded:
        return None
    if node.op not in ENCODED_OPS or encoded != [node.inputs[1]]:
        raise TinymlError(
            f"Layer `{node.name}` ({node.op}) has encoded constants {encoded} "
            f"({', '.join(graph.tensors[n].encoding for n in encoded)}), but only the weights of fc, conv2d and "
            "dwconv2d layers can be read encoded; leave this layer's weights raw (technique `huffman`, option "
            "`layers`)."
        )
    w = graph.tensors[node.inputs[1]]
    if w.encoding == SPARSE_CSR:
        return _sparse_kernel(node, graph)
    if node.op not in FUSED_OPS:
        return _layer_kernel(node, graph, board)
    if node.op == "fc":
        return Kernel(
            function="tml_huffman_fc_s8", emit=_emit_fc, scratch_bytes=fc_scratch_bytes(w.shape[1]),
            headers=("tml_nn.h", HEADER), reason=f"weights stored {w.encoding}: decoded row by row inside the kernel",
        )  # fmt: skip
    kh, kw, in_c = w.shape[1:]
    return Kernel(
        function="tml_huffman_conv2d_s8", emit=_emit_conv, scratch_bytes=conv2d_scratch_bytes((kh, kw, in_c)),
        headers=("tml_nn.h", HEADER), reason=f"weights stored {w.encoding}: decoded filter by filter inside the kernel",
    )  # fmt: skip


def layer_scratch_bytes(weights: int, core_scratch: int) -> int:
    """Scratch of decoding a whole layer before its core kernel: the reader while decoding, then the core
    kernel's own scratch (they share the start, one dead before the other is used), rounded to 8, then the
    decoded weights."""
    return -(-max(READER_BYTES, core_scratch) // 8) * 8 + weights


def _layer_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel:
    """The core's kernel for `node`, run on its weights decoded into scratch by `tml_huffman_decode_s8`
    (TFLite Micro's way, for layers whose kernel cannot decode inside)."""
    from tinyml.kernels import tinyml_select_kernel as core_kernel

    core = core_kernel(node, graph, board)
    w = graph.tensors[node.inputs[1]]
    weights_at = layer_scratch_bytes(0, core.scratch_bytes)

    def emit(call: CallSite) -> str:
        reader = f"(tml_huffman_reader *)(void *){call.scratch}"
        decoded = f"({call.scratch} + {weights_at})"
        on_decoded = replace(
            call,
            tensor=lambda name: decoded if name == node.inputs[1] else call.tensor(name),
            scratch=call.scratch if core.scratch_bytes else "NULL",
        )
        core_call = core.emit(on_decoded).replace("\n", "\n    ")
        return (
            f"status = tml_huffman_decode_s8(&{call.tensor(node.inputs[1])}, {decoded}, {reader});\n"
            f"if (status == TML_OK) {{\n    {core_call}\n}}"
        )

    return Kernel(
        function=core.function, emit=emit, scratch_bytes=layer_scratch_bytes(w.size, core.scratch_bytes),
        headers=(*core.headers, HEADER),
        reason=f"weights stored {w.encoding}: the layer decoded into scratch before {core.function} runs",
    )  # fmt: skip
