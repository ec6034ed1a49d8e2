"""Winograd F(2x2, 3x3) in integers: the weight transform the build stores, and the sums the kernel computes.

With 2G in place of Lavin & Gray's G, every matrix is an integer one:

    B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   (4x4 input window d -> V = B^T d B)
    2G  = [2 0 0; 1 1 1; 1 -1 1; 0 0 2]              (3x3 filter g -> U = 2G g 2G^T)
    A^T = [1 1 1 0; 0 1 -1 -1]                        (4x4 products -> 2x2 outputs A^T (U . V) A)

and A^T (U . V) A is 4x the direct convolution of the window, exactly. Bounds: the rows of 2G sum
to at most 3 in absolute value, so an int8 filter gives |U| <= 3 * 3 * 128 = 1152; each row of B^T
has two entries +-1, so an input window offset to |d| <= 255 gives |V| <= 2 * 2 * 255 = 1020: both
fit int16, and a product fits 21 bits.

`transformed_weights` is the int16 array `tml_conv2d_winograd_s8` reads (layout in tml_winograd.h);
`winograd_sums` is the kernel's arithmetic in numpy, for tests and for anyone checking the identity.
"""

from __future__ import annotations

import numpy as np

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64)
SCALE = 4  # A^T (U . V) A = SCALE x the direct sum
MAX_INPUT_CHANNELS = 1024  # the kernel's limit (tml_winograd.h)
GROUP_ORDER = (0, 2, 1, 3)  # channels of a group of four as stored: the pairs SXTB16 splits a word into


def channels4(channels: int) -> int:
    """Input channels rounded up to whole groups of four, as the kernel stores them."""
    return (channels + 3) & ~3


def weight_transform(weights: np.ndarray) -> np.ndarray:
    """U = 2G g 2G^T of OHWI 3x3 weights [O, 3, 3, I] as int64 [4, 4, O, I]."""
    return np.einsum("ia,oabc,jb->ijoc", G2, weights.astype(np.int64), G2)


def transformed_weights(weights: np.ndarray) -> np.ndarray:
    """The int16 weights the kernel reads: [O][16 positions][I rounded up to 4], each group as c0, c2, c1, c3."""
    out_c, kh, kw, in_c = weights.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs 3x3 weights, got {kh}x{kw}")
    u = weight_transform(weights).reshape(16, out_c, in_c).transpose(1, 0, 2)
    c4 = channels4(in_c)
    padded = np.zeros((out_c, 16, c4), dtype=np.int64)
    padded[..., :in_c] = u
    order = [g + s for g in range(0, c4, 4) for s in GROUP_ORDER]
    return np.ascontiguousarray(padded[..., order], dtype=np.int16)


def stored_bytes(weights: np.ndarray) -> int:
    """Flash of the transformed weights of OHWI 3x3 weights: 16 int16 per (output, input channel rounded to 4)."""
    out_c, _, _, in_c = weights.shape
    return 16 * out_c * channels4(in_c) * 2


def winograd_sums(x: np.ndarray, weights: np.ndarray, padding: tuple[int, int], input_offset: int) -> np.ndarray:
    """A^T (U . V) A for every tile, cropped to the output: int64 [OH, OW, O], SCALE x the direct sums.

    x is int8 [H, W, I]; padded cells (and those past the input in the last, partial tiles) are 0
    after the offset, as in the direct convolution.
    """
    h, w, in_c = x.shape
    ph, pw = padding
    out_h, out_w = h + 2 * ph - 2, w + 2 * pw - 2
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    d = np.zeros((2 * tiles_h + 2, 2 * tiles_w + 2, in_c), dtype=np.int64)
    d[ph : ph + h, pw : pw + w] = x.astype(np.int64) + input_offset
    windows = np.lib.stride_tricks.sliding_window_view(d, (4, 4), axis=(0, 1))[::2, ::2]  # [TH, TW, I, 4, 4]
    v = np.einsum("ia,yxcab,jb->yxijc", BT, windows, BT)
    m = np.einsum("yxijc,ijoc->yxijo", v, weight_transform(weights))
    y = np.einsum("pi,yxijo,qj->ypxqo", AT, m, AT).reshape(2 * tiles_h, 2 * tiles_w, -1)
    return y[:out_h, :out_w]


def max_direct_sum(weights: np.ndarray, input_offset: int) -> int:
    """The largest |sum((x + input_offset) * w)| any int8 input can give: the int32 headroom the kernel needs."""
    largest_input = max(abs(-128 + input_offset), abs(127 + input_offset))
    return int(np.abs(weights.astype(np.int64)).reshape(weights.shape[0], -1).sum(axis=1).max()) * largest_input
