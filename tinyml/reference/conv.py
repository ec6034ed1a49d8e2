"""Integer-exact int8 convolution, depthwise convolution and fully connected layers.

These are the definitions `tml_conv2d_s8`, `tml_dwconv2d_s8` and `tml_fc_s8` must match byte for
byte. Each output is

    acc = wrap_int32(bias[o] + sum((x + input_offset) * w))
    out = clamp(requantize(acc, multiplier[o], shift[o]) + output_offset, act_min, act_max)

where padded input cells contribute nothing (as if they held the input zero point). The bias is
added with 32-bit wrap-around, as the C kernels do, so extreme biases stay defined.

The sums of products are computed in float64 so numpy can use BLAS: every product of an offset
input (|x| <= 255) and a weight (|w| <= 128) is an integer below 2^15, and a sum of fewer than
2^38 of them stays below 2^53, where float64 represents every integer exactly.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

import numpy as np

from tinyml.numbers import requantize, saturate_int8


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of one axis: (size + 2*pad - kernel) // stride + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def _check_array(op: str, name: str, a: np.ndarray, dtype: type, ndim: int) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim:
        got = f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{op}: `{name}` must be a {ndim}-d {np.dtype(dtype).name} array, got {got}")


def _check_window(op: str, x: np.ndarray, kernel: tuple[int, int], stride, padding) -> None:
    for axis, size, k, s, p in zip(("height", "width"), x.shape[:2], kernel, stride, padding, strict=True):
        if k < 1 or s < 1 or p < 0:
            raise ValueError(f"{op} {axis}: kernel {k} and stride {s} must be >= 1 and padding {p} >= 0")
        if size + 2 * p < k:
            raise ValueError(f"{op} {axis}: kernel {k} is larger than the padded input {size} + 2*{p}")


def _check_channels(op: str, out_c: int, bias, multiplier, shift, act_min: int, act_max: int) -> None:
    for name, a in (("bias", bias), ("multiplier", multiplier), ("shift", shift)):
        if a is not None and np.shape(a) != (out_c,):
            raise ValueError(
                f"{op}: `{name}` must have one value per output channel ({out_c}), got shape {np.shape(a)}"
            )
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"{op}: activation clamp [{act_min}, {act_max}] is not an int8 range")


def _windows(op: str, x: np.ndarray, kernel: tuple[int, int], stride, padding, input_offset: int) -> np.ndarray:
    """Every kernel window of the offset input as a float64 [OH, OW, KH, KW, C] view; padding is 0."""
    _check_window(op, x, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_h = conv_output_size(x.shape[0], kh, sh, ph)
    out_w = conv_output_size(x.shape[1], kw, sw, pw)
    need_h, need_w = (out_h - 1) * sh + kh, (out_w - 1) * sw + kw
    padded = np.zeros((max(need_h, x.shape[0] + ph), max(need_w, x.shape[1] + pw), x.shape[2]))
    padded[ph : ph + x.shape[0], pw : pw + x.shape[1]] = x.astype(np.float64) + input_offset
    view = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(0, 1))  # [H', W', C, KH, KW]
    return view[: need_h - kh + 1 : sh, : need_w - kw + 1 : sw].transpose(0, 1, 3, 4, 2)


class OutputQuantization(TypedDict):
    """The keyword arguments every multiply-accumulate op takes after its input offset."""

    output_offset: int
    multiplier: np.ndarray
    shift: np.ndarray
    act_min: int
    act_max: int


def _finish(
    op: str, sums: np.ndarray, bias, *, output_offset: int, multiplier, shift, act_min: int, act_max: int
) -> np.ndarray:
    """Add the bias (32-bit wrap-around), requantize per output channel (last axis), offset and clamp."""
    _check_channels(op, sums.shape[-1], bias, multiplier, shift, act_min, act_max)
    acc = sums.astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    acc = (acc + (1 << 31)) % (1 << 32) - (1 << 31)
    out = requantize(acc, np.asarray(multiplier, dtype=np.int64), np.asarray(shift, dtype=np.int64))
    return saturate_int8(out + output_offset, act_min, act_max)


def conv2d_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    input_offset: int,
    **quant: Unpack[OutputQuantization],
) -> np.ndarray:
    """Convolve x [H, W, Cin] with OHWI weights w [Cout, KH, KW, Cin]; returns int8 [OH, OW, Cout]."""
    _check_array("conv2d", "x", x, np.int8, 3)
    _check_array("conv2d", "w", w, np.int8, 4)
    if w.shape[3] != x.shape[2]:
        raise ValueError(f"conv2d: weights have {w.shape[3]} input channels but the input has {x.shape[2]}")
    windows = _windows("conv2d", x, w.shape[1:3], stride, padding, input_offset)
    sums = np.tensordot(windows, w.astype(np.float64), axes=([2, 3, 4], [1, 2, 3]))
    return _finish("conv2d", sums, bias, **quant)


def dwconv2d_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    depth_multiplier: int,
    input_offset: int,
    **quant: Unpack[OutputQuantization],
) -> np.ndarray:
    """Depthwise convolution: output channel o of [OH, OW, C*M] reads input channel o // M with w[:, :, o]."""
    _check_array("dwconv2d", "x", x, np.int8, 3)
    _check_array("dwconv2d", "w", w, np.int8, 3)
    if depth_multiplier < 1 or w.shape[2] != x.shape[2] * depth_multiplier:
        raise ValueError(
            f"dwconv2d: weights have {w.shape[2]} channels, expected input channels "
            f"{x.shape[2]} x depth multiplier {depth_multiplier}"
        )
    windows = np.repeat(_windows("dwconv2d", x, w.shape[:2], stride, padding, input_offset), depth_multiplier, -1)
    sums = np.einsum("yxklc,klc->yxc", windows, w.astype(np.float64))
    return _finish("dwconv2d", sums, bias, **quant)


def fc_s8(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, input_offset: int, **quant: Unpack[OutputQuantization]
) -> np.ndarray:
    """Fully connected: x [N] times w [Cout, N]; returns int8 [Cout]."""
    _check_array("fc", "x", x, np.int8, 1)
    _check_array("fc", "w", w, np.int8, 2)
    if w.shape[1] != x.shape[0]:
        raise ValueError(f"fc: weights take {w.shape[1]} input features but the input has {x.shape[0]}")
    sums = w.astype(np.float64) @ (x.astype(np.float64) + input_offset)
    return _finish("fc", sums, bias, **quant)
