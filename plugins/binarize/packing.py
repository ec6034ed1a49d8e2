"""Bits packed 32 to a word, and the numpy reference of the binary kernels on packed bits.

The layouts are `c/include/tml_xnor.h`'s: a pixel of c binary channels is `words(c)` uint32 words,
channel k in bit k % 32 of word k // 32, 1 for +1, 0 for -1 and for the padding past the last
channel; the kernels read weights packed across output channels (`pack_weight_blocks`), 32 to a
word. The references count the differing bits of input and filter (XOR, popcount) and requantize
with the core's integer rules, so `conv2d_xnor` equals `tinyml.reference.conv.conv2d_s8` on
+1/-1 inputs and +m/-m weights byte for byte (a test holds the two equal); the kernels count
another way (tml_xnor.h) and must give the same bytes.
"""

from __future__ import annotations

import numpy as np

from tinyml.reference.conv import _finish, conv_output_size

WORD_BITS = 32


def words(channels: int) -> int:
    """uint32 words a pixel of `channels` binary channels takes (`tml_xnor_words`)."""
    return (channels + WORD_BITS - 1) // WORD_BITS


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Booleans [..., c] as uint32 [..., words(c)], padding bits 0."""
    bits = np.asarray(bits, dtype=bool)
    c = bits.shape[-1]
    padded = np.zeros((*bits.shape[:-1], words(c) * WORD_BITS), dtype=np.uint64)
    padded[..., :c] = bits
    weights = np.left_shift(np.uint64(1), np.arange(WORD_BITS, dtype=np.uint64))
    grouped = padded.reshape(*bits.shape[:-1], words(c), WORD_BITS)
    return (grouped * weights).sum(axis=-1).astype(np.uint32)


def unpack_bits(packed: np.ndarray, channels: int) -> np.ndarray:
    """uint32 [..., words] back to booleans [..., channels]."""
    packed = np.asarray(packed, dtype=np.uint32)
    shifts = np.arange(WORD_BITS, dtype=np.uint32)
    bits = (packed[..., None] >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :channels].astype(bool)


def binary_magnitudes(weights: np.ndarray) -> np.ndarray | None:
    """Each output channel's m when every int8 weight of it is +m or -m (axis 0 is the channel); else None."""
    w = np.asarray(weights).reshape(len(weights), -1).astype(np.int32)
    m = np.abs(w).max(axis=1)
    if not np.all(np.abs(w) == m[:, None]):
        return None
    return m


def pack_weights(weights: np.ndarray) -> np.ndarray:
    """int8 weights [o, ..., c] (+m/-m) as the kernels read them: uint32 [o, ..., words(c)], 1 for positive."""
    return pack_bits(np.asarray(weights) > 0)


def pack_weight_blocks(weights: np.ndarray) -> np.ndarray:
    """int8 weights [o, ..., c] as the kernels read them: uint32 [(o + 31) // 32, taps], taps in [..., c]
    order, bit j of a word set when output channel 32 * block + j has a positive weight there."""
    w = np.asarray(weights)
    positive = (w.reshape(len(w), -1) > 0).T  # [taps, o]
    return pack_bits(positive).T.copy()  # [blocks, taps]


def tap_ones(weights: np.ndarray) -> np.ndarray:
    """int16 [o, kh * kw] (an fc: [o, 1]): each output channel's positive weights at each filter position."""
    w = np.asarray(weights)
    channels = w.shape[-1]
    return (w.reshape(len(w), -1, channels) > 0).sum(axis=2).astype(np.int16)


def binarize_s8(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """int8 [..., c] to packed bits: x >= threshold per channel (`tml_binarize_s8`)."""
    return pack_bits(np.asarray(x, dtype=np.int32) >= np.asarray(threshold, dtype=np.int32))


def _differing(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(x, w)).astype(np.int64)


def conv2d_xnor(
    x: np.ndarray, channels: int, w: np.ndarray, magnitude: np.ndarray, bias: np.ndarray | None, *,
    stride: tuple[int, int], padding: tuple[int, int], output_offset: int, multiplier: np.ndarray,
    shift: np.ndarray, act_min: int, act_max: int,
) -> np.ndarray:  # fmt: skip
    """`tml_conv2d_xnor`: packed x [H, W, words], packed OHWI filters [O, KH, KW, words] -> int8 [OH, OW, O]."""
    h, wd, _ = x.shape
    out_c, kh, kw, _ = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
    differing = np.zeros((oh, ow, out_c), dtype=np.int64)
    taps = np.zeros((oh, ow), dtype=np.int64)
    for ky in range(kh):
        iy = np.arange(oh) * sh - ph + ky
        for kx in range(kw):
            ix = np.arange(ow) * sw - pw + kx
            valid = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < wd))[None, :]
            window = x[np.clip(iy, 0, h - 1)][:, np.clip(ix, 0, wd - 1)]  # [OH, OW, words]
            counts = _differing(window[:, :, None, :], w[None, None, :, ky, kx, :]).sum(axis=-1)
            differing += np.where(valid[:, :, None], counts, 0)
            taps += valid
    d = (taps * channels)[:, :, None] - 2 * differing
    sums = d * np.asarray(magnitude, dtype=np.int64)
    return _finish("conv2d_xnor", sums, bias, output_offset=output_offset, multiplier=multiplier, shift=shift,
                   act_min=act_min, act_max=act_max)  # fmt: skip


def fc_xnor(
    x: np.ndarray, in_features: int, w: np.ndarray, magnitude: np.ndarray, bias: np.ndarray | None, *,
    output_offset: int, multiplier: np.ndarray, shift: np.ndarray, act_min: int, act_max: int,
) -> np.ndarray:  # fmt: skip
    """`tml_fc_xnor`: packed x [words], packed rows [O, words] -> int8 [O]."""
    d = in_features - 2 * _differing(np.asarray(x)[None, :], w).sum(axis=-1)
    sums = d * np.asarray(magnitude, dtype=np.int64)
    return _finish("fc_xnor", sums, bias, output_offset=output_offset, multiplier=multiplier, shift=shift,
                   act_min=act_min, act_max=act_max)  # fmt: skip
