"""Which convolutions run as Winograd F(2x2, 3x3), what that is predicted to save, and the C that calls it.

A conv2d is eligible when its kernel is 3x3, its stride 1, its weights raw int8 with at most
MAX_INPUT_CHANNELS input channels, and 4x its largest possible sum fits int32 (the kernel's exactness
condition, checked from the weights and the input offset). Among those, the plugin claims a layer
where the cost model below predicts fewer instructions than the core's direct kernel on the board.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node
from tinyml.kernels import CallSite, Kernel, emit_conv_call
from tinyml_plugins.winograd.transform import MAX_INPUT_CHANNELS, SCALE, channels4, max_direct_sum

if TYPE_CHECKING:
    from tinyml.board.boards import Board

ENCODING = "winograd"  # Tensor.encoding of weights stored transformed
FUNCTION = "tml_conv2d_winograd_s8"
DIRECT = "tml_conv2d_s8"
HEADER = "tml_winograd.h"


@dataclass(frozen=True)
class ConvShape:
    """What the cost model needs of a 3x3 stride-1 convolution."""

    out_h: int
    out_w: int
    in_c: int
    out_c: int

    @classmethod
    def of(cls, node: Node, graph: Graph) -> ConvShape:
        _, out_h, out_w, out_c = graph.tensors[node.outputs[0]].shape
        return cls(out_h, out_w, graph.tensors[node.inputs[0]].shape[-1], out_c)

    def direct_terms(self, dsp: bool) -> np.ndarray:
        """The direct kernel's work: multiply-accumulates, outputs, gathered taps, pixels, calls of its
        two-by-two inner loop, output channels. The DSP path computes pixels and channels in pairs (a lone
        last one twice) over windows rounded up to four taps."""
        pixels = self.out_h * self.out_w
        taps = (9 * self.in_c + 3) & ~3
        macs = _even(pixels) * _even(self.out_c) * taps if dsp else pixels * self.out_c * 9 * self.in_c
        pairs = ((pixels + 1) // 2) * ((self.out_c + 1) // 2)
        return np.array([macs, pixels * self.out_c, pixels * taps, pixels, pairs, self.out_c])

    def winograd_terms(self, dsp: bool) -> np.ndarray:
        """The Winograd kernel's work: multiply-accumulates (16 per tile, output and input channel), tile outputs,
        transformed tile inputs, tiles, calls of the two-by-two product loop, output channels. Tiles go in
        pairs (a lone last one twice), and on the DSP path channels too."""
        tiles = ((self.out_h + 1) // 2) * ((self.out_w + 1) // 2)
        c4 = channels4(self.in_c)
        macs = _even(tiles) * (_even(self.out_c) if dsp else self.out_c) * 16 * c4
        pairs = ((tiles + 1) // 2) * ((self.out_c + 1) // 2)
        return np.array([macs, tiles * self.out_c, tiles * c4, tiles, pairs, self.out_c])


def _even(n: int) -> int:
    """n rounded up to a pair."""
    return n + (n & 1)


# Instructions per term of `direct_terms` / `winograd_terms`, per kernel path: non-negative least squares of
# the relative error over exact QEMU counts of both kernels at -O3 on twelve 3x3 stride-1 layers (2x2 to
# 16x16 outputs, 3 to 64 channels: FIT_LAYERS in bench/winograd.py), printed by
#   .venv/bin/python bench/winograd.py --fit --boards cortex-m4 cortex-m3
COSTS = {  # largest relative error of the fit on those layers: 3.9%, 4.4%, 5.4%, 2.6%
    "dsp": {
        "direct": (1.036, 0.0, 2.222, 233.822, 229.782, 11.219),
        "winograd": (0.789, 171.3, 90.016, 442.971, 330.404, 127.924),
    },
    "portable": {
        "direct": (3.832, 0.0, 0.0, 0.0, 576.758, 1160.704),
        "winograd": (3.486, 124.0, 256.598, 346.189, 721.977, 273.049),
    },
}


def kernel_path(board: Board | None) -> str:
    """The path both kernels take on `board`: "dsp" with the DSP extension (SMLAD), else "portable"."""
    return "dsp" if board is not None and board.dsp else "portable"


def predicted_instructions(shape: ConvShape, board: Board | None) -> tuple[float, float]:
    """(direct, Winograd) instructions the cost model predicts for one call on `board`."""
    path = kernel_path(board)
    costs, dsp = COSTS[path], path == "dsp"
    return float(shape.direct_terms(dsp) @ costs["direct"]), float(shape.winograd_terms(dsp) @ costs["winograd"])


def predicted_speedup(node: Node, graph: Graph, board: Board | None) -> float:
    """Direct over Winograd instructions, as predicted for `node` on `board`."""
    direct, winograd = predicted_instructions(ConvShape.of(node, graph), board)
    return direct / winograd


def ineligible(node: Node, graph: Graph) -> str | None:
    """Why `node` cannot run as Winograd F(2x2, 3x3), or None when it can."""
    if node.op != "conv2d":
        return f"it is a {node.op} layer, not a conv2d"
    w = graph.tensors[node.inputs[1]]
    kh, kw = w.shape[1:3]
    if (kh, kw) != (3, 3):
        return f"its kernel is {kh}x{kw}, not 3x3"
    stride = tuple(int(s) for s in node.attrs["stride"])
    if stride != (1, 1):
        return f"its stride is {stride[0]}x{stride[1]}, not 1"
    if w.dtype != "int8" or w.data is None:
        return f"its weights are {w.dtype}, not int8 constants"
    if w.encoding not in ("raw", ENCODING):
        return f"its weights are stored {w.encoding}"
    in_c = w.shape[3]
    if in_c > MAX_INPUT_CHANNELS:
        return f"it has {in_c} input channels, more than the kernel's {MAX_INPUT_CHANNELS}"
    offset = -graph.tensors[node.inputs[0]].zero_point
    if SCALE * max_direct_sum(w.data, offset) >= 2**31:
        return "4x its largest possible sum does not fit int32"
    return None


def scratch_bytes(input_c: int) -> int:
    """Scratch of `tml_conv2d_winograd_s8`: two tiles' transformed windows, 16 x 2 x in_c4 int16.

    Mirrors `tml_conv2d_winograd_s8_scratch_bytes`; the same on every board.
    """
    return 16 * 2 * channels4(input_c) * 2


def _emit(call: CallSite) -> str:
    """`tml_conv2d_winograd_s8` takes `tml_conv2d_s8`'s arguments, its weights the transformed ones."""
    return emit_conv_call(call, FUNCTION)


def board_name(board: Board | None) -> str:
    return board.name if board is not None else "the host"


def select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    """The Winograd kernel of a conv2d whose weights the `winograd` technique stored transformed; else None."""
    if len(node.inputs) < 2 or graph.tensors[node.inputs[1]].encoding != ENCODING:
        return None
    why = ineligible(node, graph)
    if why is not None:
        raise TinymlError(
            f"Layer `{node.name}` has weights stored for Winograd F(2x2, 3x3), but {why}; only 3x3 stride-1 conv2d "
            "layers with raw int8 weights can run it. Leave the layer out of technique 'winograd' (option `layers`)."
        )
    speedup = predicted_speedup(node, graph, board)
    if speedup >= 1:
        why = f"predicted {speedup:.1f}x fewer instructions than {DIRECT} on {board_name(board)}"
    else:
        why = f'asked for (`when = "always"`), predicted {1 / speedup:.1f}x more instructions than {DIRECT} on '
        why += board_name(board)
    return Kernel(
        function=FUNCTION, emit=_emit, scratch_bytes=scratch_bytes(graph.tensors[node.inputs[0]].shape[-1]),
        headers=("tml_nn.h", HEADER), reason=f"Winograd F(2x2,3x3): {why}",
    )  # fmt: skip
