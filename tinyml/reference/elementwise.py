"""Integer-exact add, softmax, concatenation and flatten: the definitions of their C kernels.

`add_s8` is TFLite's int8 ADD (CMSIS-NN's arm_elementwise_add_s8). `softmax_s8` uses a 256-entry
exponential table, so no floating point is needed on the target. `concat_s8` rescales each input
to the output's quantization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tinyml.numbers import quantize_multiplier, requantize, saturate_int8

ADD_LEFT_SHIFT = 20
SOFTMAX_ONE = 65536  # exp(0) in the table's fixed point
SOFTMAX_MAX_ROW = 65535  # the uint32 row sum of at most this many table[0] entries cannot overflow
SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0
SOFTMAX_OUTPUT_ZERO_POINT = -128


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap, as the C kernels' unsigned arithmetic gives."""
    return (np.asarray(x, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)


def add_params(scale1: float, zp1: int, scale2: float, zp2: int, out_scale: float, out_zp: int) -> dict[str, int]:
    """The integer fields of `tml_add_params` for inputs and output of the given quantization.

    TFLite's recipe: both inputs go to a common scale of twice the larger input scale, with
    20 bits of headroom, then to the output scale.
    """
    for name, scale in (("input 1", scale1), ("input 2", scale2), ("output", out_scale)):
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"add: the {name} scale must be a positive finite number, got {scale}")
    twice_max = 2.0 * max(scale1, scale2)
    in1_multiplier, in1_shift = quantize_multiplier(scale1 / twice_max)
    in2_multiplier, in2_shift = quantize_multiplier(scale2 / twice_max)
    real_out = twice_max / ((1 << ADD_LEFT_SHIFT) * out_scale)
    try:
        out_multiplier, out_shift = quantize_multiplier(real_out)
    except ValueError as err:
        raise ValueError(
            f"add: output scale {out_scale} is too small for input scales {scale1} and {scale2} ({err})"
        ) from None
    return {
        "in1_offset": -int(zp1),
        "in1_multiplier": in1_multiplier,
        "in1_shift": in1_shift,
        "in2_offset": -int(zp2),
        "in2_multiplier": in2_multiplier,
        "in2_shift": in2_shift,
        "left_shift": ADD_LEFT_SHIFT,
        "output_offset": int(out_zp),
        "out_multiplier": out_multiplier,
        "out_shift": out_shift,
        "act_min": -128,
        "act_max": 127,
    }


# The integer parameters of an int8 ADD, in tml_add_params order (the keys add_params returns).
ADD_PARAM_FIELDS = (
    "in1_offset", "in1_multiplier", "in1_shift", "in2_offset", "in2_multiplier", "in2_shift",
    "left_shift", "output_offset", "out_multiplier", "out_shift", "act_min", "act_max",
)  # fmt: skip


def add_s8(
    a: np.ndarray,
    b: np.ndarray,
    *,
    in1_offset: int,
    in1_multiplier: int,
    in1_shift: int,
    in2_offset: int,
    in2_multiplier: int,
    in2_shift: int,
    left_shift: int,
    output_offset: int,
    out_multiplier: int,
    out_shift: int,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """Elementwise a + b of two int8 tensors of one shape, each rescaled to a common scale first."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"add: the inputs have different shapes {a.shape} and {b.shape}")
    if not 0 <= left_shift <= 31:
        raise ValueError(f"add: left_shift {left_shift} is outside 0..31")
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"add: activation clamp [{act_min}, {act_max}] is not an int8 range")
    in1 = requantize(_wrap_int32((a.astype(np.int64) + in1_offset) << left_shift), in1_multiplier, in1_shift)
    in2 = requantize(_wrap_int32((b.astype(np.int64) + in2_offset) << left_shift), in2_multiplier, in2_shift)
    out = requantize(_wrap_int32(in1 + in2), out_multiplier, out_shift) + output_offset
    return saturate_int8(out, act_min, act_max)


def softmax_exp_table(input_scale: float) -> np.ndarray:
    """uint32[256] with table[d] = round(65536 * exp(-d * input_scale)), d = row max - x."""
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"softmax: the input scale must be a positive finite number, got {input_scale}")
    d = np.arange(256, dtype=np.float64)
    return np.round(SOFTMAX_ONE * np.exp(-d * input_scale)).astype(np.uint32)


def softmax_s8(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of int8 [rows, n]; output scale 1/256, zero point -128."""
    x = np.asarray(x)
    table = np.asarray(table)
    if x.ndim != 2 or x.dtype != np.int8:
        raise ValueError(f"softmax expects an int8 [rows, n] array, got {x.dtype} of shape {x.shape}")
    if not 1 <= x.shape[1] <= SOFTMAX_MAX_ROW:
        raise ValueError(f"softmax: row length {x.shape[1]} is outside 1..{SOFTMAX_MAX_ROW}")
    if table.shape != (256,) or table[0] == 0 or int(table.max()) > SOFTMAX_ONE:
        raise ValueError("softmax: the table must be 256 entries in 0..65536 with table[0] > 0")
    x = x.astype(np.int64)
    e = table.astype(np.int64)[x.max(axis=1, keepdims=True) - x]
    total = e.sum(axis=1, keepdims=True)
    out = (e * 256 + total // 2) // total - 128
    return saturate_int8(out)


def concat_s8(inputs: Sequence[tuple[np.ndarray, int, int, int]], output_offset: int) -> np.ndarray:
    """Concatenate [H, W, Ci] along channels; each input is (x, input_offset, multiplier, shift).

    Identity rescaling is multiplier 2^30 with shift 1.
    """
    if not inputs:
        raise ValueError("concat: no inputs")
    spatial = {np.shape(x)[:2] for x, *_ in inputs}
    if len(spatial) != 1 or any(np.ndim(x) != 3 for x, *_ in inputs):
        raise ValueError(f"concat: inputs must be [H, W, C] with one H and W, got {sorted(spatial)}")
    parts = [
        saturate_int8(output_offset + requantize(np.asarray(x, dtype=np.int64) + offset, multiplier, shift))
        for x, offset, multiplier, shift in inputs
    ]
    return np.concatenate(parts, axis=2)


def flatten_s8(x: np.ndarray) -> np.ndarray:
    """NHWC [H, W, C] to a vector in PyTorch's (C, H, W) order."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"flatten expects an [H, W, C] array, got shape {x.shape}")
    return np.ascontiguousarray(x.transpose(2, 0, 1)).reshape(-1)
