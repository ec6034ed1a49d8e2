"""Fixed-point number conversion shared by the quantizer, the numpy reference and the C kernels.

The rules are TFLite's int8 specification with CMSIS-NN's rounding: a real multiplier is a Q31
integer and a power-of-two shift, and `requantize` is `arm_nn_requantize` bit for bit (its C twin
is `tml_requantize` in firmware/include/tml_support.h).
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
Q31_ONE = 1 << 31
SHIFT_MIN, SHIFT_MAX = -31, 30


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Return (multiplier, shift) with real ~= multiplier * 2**(shift - 31), multiplier in [2^30, 2^31).

    A multiplier too small to represent becomes (0, 0); one too large raises ValueError.
    """
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"multiplier must be finite and non-negative, got {real}")
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)  # real = mantissa * 2**shift, mantissa in [0.5, 1)
    q = round(mantissa * Q31_ONE)
    if q == Q31_ONE:
        q //= 2
        shift += 1
    if shift < SHIFT_MIN:
        return 0, 0
    if shift > SHIFT_MAX:
        raise ValueError(f"multiplier {real} is too large for Q31 with shift <= {SHIFT_MAX}")
    return int(q), int(shift)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `quantize_multiplier`: int32 arrays of multipliers and shifts."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    mult = np.array([p[0] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    shift = np.array([p[1] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    return mult, shift


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int64)


def doubling_high_mult(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """round(a * b / 2^31) with ties rounded up, as CMSIS-NN does; int64 result (inputs in int32 range)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    prod = a * b
    round_ = np.where((a < 0) != (b < 0), 1 - (1 << 30), 1 << 30)
    total = prod + round_
    # C integer division truncates toward zero.
    q = np.abs(total) >> 31
    return np.where(total < 0, -q, q)


def divide_by_power_of_two(a: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """a / 2^exponent rounded to nearest, ties away from zero (exponent 0..31)."""
    a = np.asarray(a, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = a & mask
    threshold = (mask >> 1) + (a < 0)
    result = a >> exponent
    # C compares with the sign of the shifted result; a < 0 iff result < 0 for arithmetic shifts.
    return result + (remainder > threshold)


def requantize(val: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """val * multiplier * 2^(shift - 31) exactly as `tml_requantize` computes it (int64 result)."""
    val = np.asarray(val, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = _wrap_int32(val << left)
    return divide_by_power_of_two(doubling_high_mult(shifted, multiplier), right)


def saturate_int8(x: np.ndarray, act_min: int = INT8_MIN, act_max: int = INT8_MAX) -> np.ndarray:
    """Clamp to [act_min, act_max] and return int8."""
    return np.clip(x, act_min, act_max).astype(np.int8)


def quantize_tensor(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float to int8 with round-half-to-even, as TFLite's quantize op."""
    return saturate_int8(np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point)


def dequantize_tensor(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 back to float32."""
    return ((np.asarray(q, dtype=np.float64) - zero_point) * scale).astype(np.float32)
