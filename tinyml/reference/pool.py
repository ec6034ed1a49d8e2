"""Integer-exact max and average pooling over an [H, W, C] int8 feature map.

These are the definitions `tml_maxpool_s8` and `tml_avgpool_s8` must match byte for byte. Padded
cells are skipped, never counted: a window always holds at least one real cell because the
padding is smaller than the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NotRequired, TypedDict, Unpack

import numpy as np

from tinyml.numbers import saturate_int8
from tinyml.reference.conv import conv_output_size as pool_output_size


def _check_pool_args(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    act_min: int,
    act_max: int,
) -> None:
    if x.ndim != 3 or x.dtype != np.int8:
        raise ValueError(f"pooling expects an int8 [H, W, C] array, got {x.dtype} of shape {x.shape}")
    for axis, size, k, s, p in zip(("height", "width"), x.shape[:2], kernel, stride, padding, strict=True):
        if k < 1 or s < 1 or p < 0:
            raise ValueError(f"pooling {axis}: kernel {k} and stride {s} must be >= 1 and padding {p} >= 0")
        if p >= k:
            raise ValueError(
                f"pooling {axis}: padding {p} must be smaller than the kernel {k}, "
                "otherwise a window can lie wholly in the padding"
            )
        if size + 2 * p < k:
            raise ValueError(f"pooling {axis}: kernel {k} is larger than the padded input {size + 2 * p}")
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"pooling: activation clamp [{act_min}, {act_max}] is not an int8 range")


def _windows(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (oy, ox, window) with the window cropped to the real input cells."""
    height, width = x.shape[:2]
    out_h = pool_output_size(height, kernel[0], stride[0], padding[0])
    out_w = pool_output_size(width, kernel[1], stride[1], padding[1])
    for oy in range(out_h):
        y0 = oy * stride[0] - padding[0]
        for ox in range(out_w):
            x0 = ox * stride[1] - padding[1]
            window = x[max(y0, 0) : min(y0 + kernel[0], height), max(x0, 0) : min(x0 + kernel[1], width)]
            yield oy, ox, window


class PoolWindow(TypedDict):
    """The keyword arguments of both pools; the clamp defaults to the whole int8 range."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    act_min: NotRequired[int]
    act_max: NotRequired[int]


def _pool(
    x: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray],
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    x = np.asarray(x)
    _check_pool_args(x, kernel, stride, padding, act_min, act_max)
    height, width, channels = x.shape
    out = np.empty(
        (
            pool_output_size(height, kernel[0], stride[0], padding[0]),
            pool_output_size(width, kernel[1], stride[1], padding[1]),
            channels,
        ),
        dtype=np.int64,
    )
    for oy, ox, window in _windows(x, kernel, stride, padding):
        out[oy, ox] = reduce(window.reshape(-1, channels).astype(np.int64))
    return saturate_int8(out, act_min, act_max)


def maxpool_s8(x: np.ndarray, **window: Unpack[PoolWindow]) -> np.ndarray:
    """Per-channel maximum over each window's real cells, then the activation clamp."""
    return _pool(x, lambda cells: cells.max(axis=0), **window)


def _rounded_mean(cells: np.ndarray) -> np.ndarray:
    """sum / count rounded half away from zero, as C's truncating (sum +- count/2) / count."""
    count = cells.shape[0]
    total = cells.sum(axis=0)
    return np.sign(total) * ((np.abs(total) + count // 2) // count)


def avgpool_s8(x: np.ndarray, **window: Unpack[PoolWindow]) -> np.ndarray:
    """Per-channel mean over each window's real cells (the output keeps the input's quantization)."""
    return _pool(x, _rounded_mean, **window)
