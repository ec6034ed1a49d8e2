"""Kernel selection: which C function runs each int8 node, and the C that calls it.

A `Kernel` is what the `tinyml_select_kernel` hook returns. Its `emit` gets a `CallSite` (C
expressions for the node's buffers, a place for static parameter tables) and returns the C
statements that run the node and assign its `tml_status` to `status`. The core's direct kernels
(the `tml_*_s8` library in firmware/) answer last, so a plugin can claim the nodes it does better.

A kernel's scratch bytes are computed here in Python, per board, mirroring the C library's
`tml_*_scratch_bytes` (code generation never compiles C; a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node
from tinyml.reference.elementwise import ADD_PARAM_FIELDS
from tinyml.weights import c_values

if TYPE_CHECKING:
    from tinyml.board.boards import Board


@dataclass
class CallSite:
    """Everything the C call for one node may refer to; filled in by the code generator.

    `tensor(name)` is a C pointer expression for an activation or constant; `scratch` the
    node's scratch buffer (or "NULL"); statics added with `add_static` or `add_array` are emitted
    at file scope in model.c as `<prefix>_<name>`, where `prefix` is `tml_<layer C name>`: every
    symbol of a layer starts with it, so the map file reads by layer and layers never clash.
    """

    graph: Graph
    node: Node
    prefix: str
    tensor: Callable[[str], str]
    scratch: str = "NULL"
    statics: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)  # what add_static and add_array declared

    def add_static(self, c_type: str, name: str, value: str) -> str:
        """Declare `static const <c_type> <prefix>_<name> = <value>;` and return its name."""
        symbol = f"{self.prefix}_{name}"
        self.statics.append(f"static const {c_type} {symbol} = {value};")
        self.symbols.append(symbol)
        return symbol

    def add_array(self, c_type: str, name: str, values: Sequence[int] | np.ndarray, suffix: str = "") -> str:
        """Declare `static const <c_type> <prefix>_<name>[n] = {...};`, wrapped as weights are; return its name."""
        symbol = f"{self.prefix}_{name}"
        n = int(np.size(values))
        self.statics.append(f"static const {c_type} {symbol}[{n}] = {{\n    {c_values(values, suffix)}\n}};")
        self.symbols.append(symbol)
        return symbol

    def add_int32_array(self, name: str, values: Sequence[int] | np.ndarray) -> str:
        return self.add_array("int32_t", name, values)

    def input(self, i: int = 0) -> str:
        return self.tensor(self.node.inputs[i])

    def output(self) -> str:
        return self.tensor(self.node.outputs[0])

    def shape(self, name: str) -> str:
        """A static `tml_shape` for an NHWC tensor (vectors as 1 x 1 x N)."""
        dims = self.graph.tensors[name].shape[1:]
        h, w, c = (1, 1, dims[0]) if len(dims) == 1 else dims
        return self.add_static("tml_shape", f"{self._role(name)}_shape", f"{{{h}, {w}, {c}}}")

    def _role(self, name: str) -> str:
        """`input`, `input1`, ... or `output`: what the tensor is to this node, for symbol names."""
        if name in self.node.outputs:
            return "output"
        index = self.node.inputs.index(name)
        return "input" if index == 0 else f"input{index}"


@dataclass
class Kernel:
    """A C implementation of one node: the function, its scratch bytes, and how to call it."""

    function: str
    emit: Callable[[CallSite], str]
    scratch_bytes: int = 0
    headers: tuple[str, ...] = ("tml_nn.h",)
    # why this kernel got the node, for the report: "direct kernel (default)", "weights Huffman-coded", ...
    reason: str = ""


def _fields(**values: int) -> str:
    return "{" + ", ".join(f".{k} = {int(v)}" for k, v in values.items()) + "}"


def conv_params(call: CallSite, output_offset: int | None = None) -> str:
    """The static `tml_conv_params` of a conv2d or dwconv2d node: stride, padding, offsets and clamp.

    `output_offset` stands in for the output's zero point where the node's output is not the int8 tensor the
    kernel requantizes to (a plugin's fused node).
    """
    g, n, a = call.graph, call.node, call.node.attrs
    return call.add_static(
        "tml_conv_params",
        "params",
        _fields(
            stride_h=a["stride"][0], stride_w=a["stride"][1], pad_h=a["padding"][0], pad_w=a["padding"][1],
            depth_multiplier=a.get("depth_multiplier", 1), input_offset=-g.tensors[n.inputs[0]].zero_point,
            output_offset=g.tensors[n.outputs[0]].zero_point if output_offset is None else output_offset,
            act_min=a["act_min"], act_max=a["act_max"],
        ),
    )  # fmt: skip


def emit_conv_call(call: CallSite, function: str) -> str:
    """The C calling `function` with `tml_conv2d_s8`'s arguments for a conv2d or dwconv2d node: the core's
    kernels, and a plugin's that takes the same ones (params, quantization, shapes, buffers, scratch)."""
    g, n = call.graph, call.node
    x, w, b = n.inputs
    out = n.outputs[0]
    params = conv_params(call)
    quant = _quant_channels(call)
    kh, kw = g.tensors[w].shape[1:3]
    in_c = g.tensors[x].shape[-1]
    filt = call.add_static("tml_shape", "filter_shape", f"{{{kh}, {kw}, {in_c}}}")
    return (
        f"status = {function}(&{params}, &{quant}, &{call.shape(x)}, {call.input(0)}, &{filt}, {call.tensor(w)}, "
        f"{call.tensor(b)}, &{call.shape(out)}, {call.output()}, {call.scratch});"
    )


def _emit_conv(call: CallSite) -> str:
    return emit_conv_call(call, "tml_dwconv2d_s8" if call.node.op == "dwconv2d" else "tml_conv2d_s8")


def _quant_channels(call: CallSite) -> str:
    mult = call.add_int32_array("multiplier", call.node.attrs["multiplier"])
    shift = call.add_int32_array("shift", call.node.attrs["shift"])
    return call.add_static("tml_quant_channels", "quant", f"{{{mult}, {shift}}}")


def folded_bias(weights: np.ndarray, bias: np.ndarray | None, input_offset: int) -> np.ndarray:
    """bias + input_offset * sum(weights row) per output row, with int32 wrap-around, as int32.

    `tml_fc_s8` reads it as `params->folded_bias` in place of bias and input offset: the sum of
    (x + input_offset) * w is then sum(x * w) plus this constant, the same integer mod 2^32.
    """
    total = input_offset * weights.astype(np.int64).sum(axis=1)
    if bias is not None:
        total = total + np.asarray(bias, dtype=np.int64)
    return ((total + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def _emit_fc(call: CallSite) -> str:
    g, n, a = call.graph, call.node, call.node.attrs
    x, w, b = n.inputs
    out_f, in_f = g.tensors[w].shape
    input_offset = -g.tensors[x].zero_point
    fold = call.add_int32_array("folded_bias", folded_bias(g.tensors[w].data, g.tensors[b].data, input_offset))
    fields = _fields(
        input_offset=input_offset, output_offset=g.tensors[n.outputs[0]].zero_point,
        act_min=a["act_min"], act_max=a["act_max"],
    )  # fmt: skip
    params = call.add_static("tml_fc_params", "params", f"{fields[:-1]}, .folded_bias = {fold}}}")
    quant = _quant_channels(call)
    return (
        f"status = tml_fc_s8(&{params}, &{quant}, {in_f}, {call.input(0)}, {call.tensor(w)}, {call.tensor(b)}, "
        f"{out_f}, {call.output()});"
    )


def _emit_pool(call: CallSite) -> str:
    n, a = call.node, call.node.attrs
    params = call.add_static(
        "tml_pool_params",
        "params",
        _fields(
            kernel_h=a["kernel"][0], kernel_w=a["kernel"][1], stride_h=a["stride"][0], stride_w=a["stride"][1],
            pad_h=a["padding"][0], pad_w=a["padding"][1], act_min=a["act_min"], act_max=a["act_max"],
        ),
    )  # fmt: skip
    return (
        f"status = tml_{n.op}_s8(&{params}, &{call.shape(n.inputs[0])}, {call.input(0)}, "
        f"&{call.shape(n.outputs[0])}, {call.output()});"
    )


def _emit_add(call: CallSite) -> str:
    n = call.node
    params = call.add_static("tml_add_params", "params", _fields(**{k: n.attrs[k] for k in ADD_PARAM_FIELDS}))
    size = call.graph.tensors[n.outputs[0]].size
    return f"status = tml_add_s8(&{params}, {call.input(0)}, {call.input(1)}, {call.output()}, {size}, {call.scratch});"


def _emit_softmax(call: CallSite) -> str:
    n = call.node
    table = call.add_array("uint32_t", "exp_table", n.attrs["exp_table"], suffix="u")
    shape = call.graph.tensors[n.inputs[0]].shape
    row = shape[-1]
    rows = int(np.prod(shape)) // row
    return f"status = tml_softmax_s8({table}, {call.input(0)}, {rows}, {row}, {call.output()});"


def _emit_concat(call: CallSite) -> str:
    g, n = call.graph, call.node
    entries = [
        f"        {{{call.tensor(name)}, {t.shape[-1]}, {-t.zero_point}, {int(m)}, {int(s)}}},"
        for name, m, s in zip(n.inputs, n.attrs["multipliers"], n.attrs["shifts"], strict=True)
        for t in [g.tensors[name]]
    ]
    # Input pointers point into the arena, which is not a constant expression: build the table at run time.
    out = g.tensors[n.outputs[0]]
    outer = out.size // out.shape[-1]
    return "\n".join(
        [
            "{",
            "    /* data, channels, input_offset, multiplier, shift */",
            f"    const tml_concat_input inputs[{len(entries)}] = {{",
            *entries,
            "    };",
            f"    status = tml_concat_s8(inputs, {len(entries)}, {outer}, {out.zero_point}, {call.output()});",
            "}",
        ]
    )


def _emit_flatten(call: CallSite) -> str:
    return f"status = tml_flatten_s8(&{call.shape(call.node.inputs[0])}, {call.input(0)}, {call.output()});"


EMITTERS: dict[str, Callable[[CallSite], str]] = {
    "conv2d": _emit_conv,
    "dwconv2d": _emit_conv,
    "fc": _emit_fc,
    "maxpool": _emit_pool,
    "avgpool": _emit_pool,
    "add": _emit_add,
    "softmax": _emit_softmax,
    "concat": _emit_concat,
    "flatten": _emit_flatten,
}


Dims = tuple[int, int, int]  # (h, w, c), as a `tml_shape`
CONV_SUMS = 32  # TML_CONV_SUMS in firmware/src/tml_conv2d_s8.c: the int32 sums the DSP paths hold at once


def conv2d_s8_scratch_bytes(input_shape: Dims, filter_shape: Dims, output_shape: Dims, board: Board | None) -> int:
    """Scratch bytes of `tml_conv2d_s8` on `board`; mirrors `tml_conv2d_s8_scratch_bytes` in firmware/src.

    The portable direct loop (the host, boards without the DSP extension) needs none. The DSP paths hold
    `CONV_SUMS` int32 sums; the general variant gathers two output pixels' windows as int16 columns rounded
    up to whole four-tap groups, plus an int8 staging copy of one window when the input channels are not a
    multiple of four; the 1x1 variant (stride 1, no padding) widens two filter rows into the columns' room.
    """
    if board is None or not board.dsp:
        return 0
    in_c = input_shape[2]
    taps = (filter_shape[0] * filter_shape[1] * in_c + 3) & ~3
    return 4 * CONV_SUMS + 4 * taps + (taps if in_c % 4 else 0)


def dwconv2d_s8_scratch_bytes(input_shape: Dims, filter_shape: Dims, output_shape: Dims, board: Board | None) -> int:
    """Scratch bytes of `tml_dwconv2d_s8` on `board`; mirrors `tml_dwconv2d_s8_scratch_bytes` in firmware/src.

    The portable direct loop needs none. The DSP paths prepare, per block of four output channels, their
    starting sums (16 bytes), weights widened to int16 pairs (8 bytes a tap) and requantization (64 bytes),
    and the requantization of each remaining channel (16 bytes); the 3x3 variants (depth multiplier 1,
    stride 1 or 2) add three input rows copied with their padding, (out_w - 1) * stride + 3 <= 2 * out_w + 1
    cells each.
    """
    if board is None or not board.dsp:
        return 0
    out_c, taps = output_shape[2], filter_shape[0] * filter_shape[1]
    tables = out_c // 4 * (80 + 8 * taps) + 16 * (out_c % 4)
    if filter_shape[:2] == (3, 3) and out_c == input_shape[2]:
        return tables + 3 * (2 * output_shape[1] + 1) * input_shape[2]  # the 3x3 variants' padded input rows
    return tables


ADD_TABLE_MIN_SIZE = 1024  # TML_ADD_TABLE_MIN_SIZE in firmware/src/tml_add_s8.c


def add_s8_scratch_bytes(size: int) -> int:
    """Scratch bytes of `tml_add_s8` for `size` elements; mirrors `tml_add_s8_scratch_bytes` in firmware/src.

    From `ADD_TABLE_MIN_SIZE` elements on (on every board: the variant is plain C), the kernel tables both
    inputs' 256 rescaled values as int32 instead of rescaling every element twice.
    """
    return 2 * 256 * 4 if size >= ADD_TABLE_MIN_SIZE else 0


def conv_scratch_bytes(graph: Graph, node: Node, board: Board | None = None) -> int:
    """Scratch bytes of the core's kernel for a conv2d or dwconv2d `node` on `board`."""
    x, w = (graph.tensors[n] for n in node.inputs[:2])
    out = graph.tensors[node.outputs[0]]
    kh, kw = w.shape[1:3]
    fn = dwconv2d_s8_scratch_bytes if node.op == "dwconv2d" else conv2d_s8_scratch_bytes
    return fn(tuple(x.shape[1:]), (kh, kw, x.shape[-1]), tuple(out.shape[1:]), board)


@hookimpl(trylast=True)
def tinyml_select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    """The core's direct kernel for every op: the fallback every plugin can beat."""
    emit = EMITTERS.get(node.op)
    if emit is None:
        return None
    scratch = 0
    if node.op in ("conv2d", "dwconv2d"):
        scratch = conv_scratch_bytes(graph, node, board)
    elif node.op == "add":
        scratch = add_s8_scratch_bytes(graph.tensors[node.outputs[0]].size)
    return Kernel(function=f"tml_{node.op}_s8", emit=emit, scratch_bytes=scratch, reason="direct int8 kernel (default)")


@hookimpl
def tinyml_kernel_sources() -> list:
    from tinyml.resources import FIRMWARE_DIR

    return [FIRMWARE_DIR]
