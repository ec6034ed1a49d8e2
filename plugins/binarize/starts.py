"""The starting counts of `tml_conv2d_xnor_sign`, computed when the model is built.

A channel's bit is its int8 output compared with the sign's threshold. Where the output is monotone in
the window's dot product d (magnitude and multiplier >= 0, and bias + m * d, |d| <= taps, neither wraps
nor overflows the requantization's left shift), the bit is d >= D, D the least d whose output reaches
the threshold. With d = 4V - 2A - 2S + n (`tml_xnor.h`) and E = D + 2S - n = 4a + r (0 <= r <= 3), the
bit is V >= c + floor(A / 2), c = a + [r > 0] for an even count A of set input bits and a + 1 + [r == 3]
for an odd one. The kernel starts each lane's bit-sliced counter at K = n + 1 - c (c clamped to
[-n / 2 - 1, n + 1], which changes no bit) and compares all 32 lanes at once with n + 1 + floor(A / 2).

K depends on the window's real taps (S and n), so it is tabled per window shape: the rows of the output
fall into classes with the same real filter rows, the columns likewise, and the table holds, per row
class, column class, block of 32 channels and parity of A, the counter's 4 * levels bit planes. A block
with a channel outside the monotone case is marked exact and takes the int8 outputs instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node
from tinyml.numbers import requantize
from tinyml_plugins.binarize.packing import binary_magnitudes, tap_ones, words

PLANES_PER_LEVEL = 4


def planes_for(n: int) -> int:
    """Bit planes a count of at most n needs (`tml_xnor_planes_for`)."""
    return max(1, int(n).bit_length())


def sign_levels(taps: int) -> int:
    """Levels of four planes the fused kernel's counters use (`sign_levels` in `tml_conv2d_xnor_sign`)."""
    return (planes_for(2 * taps + taps // 2 + 2) + PLANES_PER_LEVEL - 1) // PLANES_PER_LEVEL


MAX_CLASSES = 255  # a class is a uint8


def window_spans(out: int, size: int, kernel: int, stride: int, pad: int) -> list[tuple[int, int]]:
    """Per output index along one axis, the real filter positions [begin, end) of its window
    (`tml_window_span_at`; (0, 0) for a window wholly in the padding)."""
    spans = []
    for o in range(out):
        origin = o * stride - pad
        begin, end = max(0, -origin), min(kernel, size - origin)
        spans.append((begin, end) if end > begin else (0, 0))
    return spans


def span_classes(out: int, size: int, kernel: int, stride: int, pad: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per output index its class, and per class the span of its windows (`window_spans`)."""
    spans = window_spans(out, size, kernel, stride, pad)
    distinct = list(dict.fromkeys(spans))
    if len(distinct) > MAX_CLASSES:
        raise TinymlError(
            f"A binary convolution fused with its sign (technique `fuse-sign`) has windows of {len(distinct)} shapes "
            f"along one axis (kernel {kernel}, stride {stride}, padding {pad}); its table takes at most "
            f"{MAX_CLASSES}. Leave `fuse-sign` out of the recipe for this model."
        )
    return np.array([distinct.index(span) for span in spans], dtype=np.uint8), distinct


def monotone_channels(bias: np.ndarray, magnitude: np.ndarray, multiplier: np.ndarray, shift: np.ndarray,
                      taps: int) -> np.ndarray:  # fmt: skip
    """Per channel whether its int8 output is monotone in d (see the module's docstring)."""
    reach = magnitude.astype(np.int64) * taps
    limit = np.int64(1) << (31 - np.maximum(shift.astype(np.int64), 0))
    bias = bias.astype(np.int64)
    return (magnitude >= 0) & (multiplier >= 0) & (bias - reach >= -limit) & (bias + reach < limit)


def least_dot_products(bias: np.ndarray, magnitude: np.ndarray, multiplier: np.ndarray, shift: np.ndarray,
                       output_offset: int, act_min: int, act_max: int, threshold: np.ndarray,
                       taps: int) -> np.ndarray:  # fmt: skip
    """Per channel D, the least d in [-taps, taps] whose int8 output reaches the threshold (taps + 1 when none
    does), for the channels whose output is monotone in d."""
    d = np.arange(-taps, taps + 1, dtype=np.int64)
    acc = bias.astype(np.int64)[:, None] + magnitude.astype(np.int64)[:, None] * d[None, :]
    out = requantize(acc, multiplier[:, None], shift[:, None]) + output_offset
    reached = np.clip(out, act_min, act_max) >= threshold.astype(np.int64)[:, None]
    return np.where(reached.any(axis=1), d[np.argmax(reached, axis=1)], taps + 1)


def starting_counts(least: np.ndarray, ones: np.ndarray, n: int) -> np.ndarray:
    """K per channel (axis 0) and parity of A (axis 1) for windows with n real taps and ones[channel] = S."""
    e = least.astype(np.int64) + 2 * ones.astype(np.int64) - n
    r = e % 4
    a = (e - r) // 4
    c = np.stack([a + (r > 0), a + 1 + (r == 3)], axis=1)
    return (n + 1) - np.clip(c, -(n // 2) - 1, n + 1)


def bit_planes(counts: np.ndarray, planes: int) -> np.ndarray:
    """counts [blocks * 32] as bit planes [blocks][planes]: bit j of plane p is bit p of lane j's count."""
    lanes = counts.reshape(-1, 32).astype(np.uint64)
    bits = (lanes[:, None, :] >> np.arange(planes, dtype=np.uint64)[None, :, None]) & np.uint64(1)
    return (bits << np.arange(32, dtype=np.uint64)[None, None, :]).sum(axis=2).astype(np.uint32)


@dataclass(frozen=True)
class SignStarts:
    """What `tml_xnor_sign_starts` holds."""

    row_class: np.ndarray  # uint8 [out_h]
    column_class: np.ndarray  # uint8 [out_w]
    column_classes: int
    exact: np.ndarray  # uint8 [blocks]: 1 where a block takes the int8 outputs
    planes: np.ndarray  # uint32 [row classes][column classes][blocks][parity][4 * levels]

    @property
    def nbytes(self) -> int:
        """The flash the table takes."""
        return sum(a.nbytes for a in (self.row_class, self.column_class, self.exact, self.planes))


def sign_starts(
    weights: np.ndarray, bias: np.ndarray | None, multiplier: np.ndarray, shift: np.ndarray, output_offset: int,
    act_min: int, act_max: int, threshold: np.ndarray, input_hw: tuple[int, int], output_hw: tuple[int, int],
    stride: tuple[int, int], padding: tuple[int, int],
) -> SignStarts:
    """The table of a binary convolution fused with its sign: weights int8 OHWI of +m/-m per channel, the
    convolution's requantization (to output_offset, clamped to [act_min, act_max]) and the sign's threshold."""
    out_c, kh, kw, in_c = weights.shape
    taps = kh * kw * in_c
    magnitude = binary_magnitudes(weights)
    bias = np.zeros(out_c, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    multiplier, shift = np.asarray(multiplier, dtype=np.int64), np.asarray(shift, dtype=np.int64)
    blocks = words(out_c)
    monotone = np.ones(blocks * 32, dtype=bool)
    monotone[:out_c] = monotone_channels(bias, magnitude, multiplier, shift, taps)
    exact = (~monotone.reshape(blocks, 32).all(axis=1)).astype(np.uint8)
    least = np.zeros(blocks * 32, dtype=np.int64)
    least[:out_c] = least_dot_products(bias, magnitude, multiplier, shift, output_offset, act_min, act_max,
                                       np.asarray(threshold), taps)  # fmt: skip
    least[: out_c][~monotone[:out_c]] = 0  # an exact block's planes are never read
    rows, row_spans = span_classes(output_hw[0], input_hw[0], kh, stride[0], padding[0])
    columns, column_spans = span_classes(output_hw[1], input_hw[1], kw, stride[1], padding[1])
    ones = np.zeros((blocks * 32, kh, kw), dtype=np.int64)
    ones[:out_c] = tap_ones(weights).reshape(out_c, kh, kw)
    levels = sign_levels(taps)
    table = np.zeros((len(row_spans), len(column_spans), blocks, 2, PLANES_PER_LEVEL * levels), dtype=np.uint32)
    for i, (y0, y1) in enumerate(row_spans):
        for j, (x0, x1) in enumerate(column_spans):
            n = (y1 - y0) * (x1 - x0) * in_c
            counts = starting_counts(least, ones[:, y0:y1, x0:x1].sum(axis=(1, 2)), n)
            counts[out_c:] = 0  # the lanes past the last channel
            for parity in range(2):
                table[i, j, :, parity] = bit_planes(counts[:, parity], PLANES_PER_LEVEL * levels)
    return SignStarts(rows, columns, len(column_spans), exact, table)


def _geometry(node: Node, graph: Graph) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A conv2d node's input and output height and width, stride and padding."""
    shape = graph.tensors[node.inputs[0]].shape[1:3], graph.tensors[node.outputs[0]].shape[1:3]
    return (*shape, tuple(node.attrs["stride"]), tuple(node.attrs["padding"]))


def tabled(node: Node, graph: Graph) -> bool:
    """Whether the windows of a binary conv2d take at most MAX_CLASSES shapes along each axis, so that its table
    can be built when it is fused with its sign."""
    input_hw, output_hw, stride, padding = _geometry(node, graph)
    kernel = graph.tensors[node.inputs[1]].shape[1:3]
    return all(
        len(set(window_spans(output_hw[i], input_hw[i], kernel[i], stride[i], padding[i]))) <= MAX_CLASSES
        for i in range(2)
    )


def node_starts(node: Node, graph: Graph) -> SignStarts:
    """The table of a `conv2d_sign` node (technique `fuse-sign`)."""
    a = node.attrs
    _, w, b, threshold = (graph.tensors[name] for name in node.inputs)
    return sign_starts(
        w.data, b.data, a["multiplier"], a["shift"], a["conv_zero_point"], a["act_min"], a["act_max"], threshold.data,
        *_geometry(node, graph),
    )  # fmt: skip
