"""Zero-skipping kernels over `sparse-csr` weights: exact against the dense kernels, chosen by the crossover.

`tml_sparse_fc_s8` and `tml_sparse_conv1x1_s8` (plugins/huffman/c) are compiled for the host with
every kernel library (`tinyml.host.build_kernels()`) and compared with `tml_fc_s8` /
`tml_conv2d_s8` on the same weights, byte for byte, over many shapes, sparsities from none to
all, and extreme offsets and multipliers; a compiled model with sparse layers runs on the host
and in QEMU on cortex-m3 and cortex-m4.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tinyml import compiler, host
from tinyml.errors import RecipeError, TinymlError
from tinyml.reference import run_int8
from tinyml_plugins.huffman.csr import Csr, decode_csr, encode_csr

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPARSITIES = st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9, 0.97, 1.0])


@pytest.fixture(scope="module")
def lib() -> host.HostLibrary:
    return host.build_kernels()


def c_sparse(lib: host.HostLibrary, csr: Csr) -> tuple[object, list[object]]:
    """A `tml_sparse_weights` for `csr`, with the arrays it points to kept alive in the returned list."""
    ffi = lib.ffi
    keep: list[object] = []

    def array(c_type: str, values: np.ndarray) -> object:
        if len(values) == 0:
            return ffi.NULL
        buffer = ffi.new(f"{c_type}[]", [int(v) for v in values])
        keep.append(buffer)
        return buffer

    wide = csr.column_bytes == 2
    weights = ffi.new(
        "tml_sparse_weights *",
        {
            "values": array("int8_t", csr.values),
            "columns8": ffi.NULL if wide else array("uint8_t", csr.columns),
            "columns16": array("uint16_t", csr.columns) if wide else ffi.NULL,
            "row_counts": array("uint16_t", csr.row_counts), "rows": csr.shape[0], "columns": csr.shape[1],
            "nonzeros": csr.nonzeros,
        },
    )  # fmt: skip
    keep.append(weights)
    return weights, keep


def pruned(rng: np.random.Generator, shape: tuple[int, ...], sparsity: float) -> np.ndarray:
    """Int8 weights over the whole range (-128 included), each zero with probability `sparsity`."""
    w = rng.integers(-128, 128, size=shape, dtype=np.int8)
    return np.where(rng.random(shape) < sparsity, 0, w).astype(np.int8)


@st.composite
def requantization(draw: st.DrawFn, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers and shifts up to the extremes the kernels accept: Q31 near 2^31, shifts -31..+8."""
    mult = draw(st.lists(st.sampled_from([1, 1 << 30, (1 << 31) - 1, 1518500250]) | st.integers(1, (1 << 31) - 1),
                         min_size=channels, max_size=channels))  # fmt: skip
    shift = draw(st.lists(st.integers(-31, 8), min_size=channels, max_size=channels))
    return np.asarray(mult, np.int32), np.asarray(shift, np.int32)


OFFSETS = st.sampled_from([-127, 128, 0]) | st.integers(-127, 128)


# --- the storage ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 20), columns=st.integers(1, 600), sparsity=SPARSITIES, seed=st.integers(0, 2**32 - 1))
def test_csr_gives_back_the_weights(rows, columns, sparsity, seed):
    w = pruned(np.random.default_rng(seed), (rows, columns), sparsity)
    csr = encode_csr(w)
    np.testing.assert_array_equal(decode_csr(csr), w)
    assert csr.nonzeros == np.count_nonzero(w) and csr.row_counts.sum() == csr.nonzeros
    assert csr.column_bytes == (1 if columns <= 256 else 2)
    assert csr.nbytes == csr.nonzeros * (1 + csr.column_bytes) + 2 * rows + 28


def test_a_conv_filter_is_a_row():
    w = pruned(np.random.default_rng(0), (5, 1, 1, 7), 0.5)
    np.testing.assert_array_equal(decode_csr(encode_csr(w)), w.reshape(5, 7))


def test_rows_too_long_are_refused():
    with pytest.raises(ValueError, match="65535"):
        encode_csr(np.zeros((1, 65536), np.int8))


# --- the kernels against the dense ones ---------------------------------------------------------


@SETTINGS
@given(
    in_f=st.integers(1, 300), out_f=st.integers(1, 24), sparsity=SPARSITIES, seed=st.integers(0, 2**32 - 1),
    offset=OFFSETS, out_offset=st.integers(-128, 127), data=st.data(),
)  # fmt: skip
@example(in_f=257, out_f=3, sparsity=0.0, seed=1, offset=128, out_offset=-128, data=None)  # uint16 columns
@example(in_f=1, out_f=1, sparsity=1.0, seed=2, offset=-127, out_offset=127, data=None)  # no nonzeros at all
def test_sparse_fc_equals_the_dense_kernel(lib, in_f, out_f, sparsity, seed, offset, out_offset, data):
    ffi, c = lib.ffi, lib.lib
    rng = np.random.default_rng(seed)
    w = pruned(rng, (out_f, in_f), sparsity)
    x = rng.integers(-128, 128, size=in_f, dtype=np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, size=out_f, dtype=np.int32)
    if data is None:
        mult, shift = np.full(out_f, (1 << 31) - 1, np.int32), np.full(out_f, -7, np.int32)
    else:
        mult, shift = data.draw(requantization(out_f))
    act_min, act_max = sorted(rng.integers(-128, 128, size=2).tolist())
    params = ffi.new("tml_fc_params *", {"input_offset": offset, "output_offset": out_offset,
                                         "act_min": act_min, "act_max": act_max})  # fmt: skip
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    xb, bb = ffi.from_buffer("int8_t[]", x), ffi.from_buffer("int32_t[]", bias)
    expected = np.zeros(out_f, np.int8)
    assert c.tml_fc_s8(params, quant, in_f, xb, ffi.from_buffer("int8_t[]", w), bb, out_f,
                       ffi.from_buffer("int8_t[]", expected)) == 0  # fmt: skip
    weights, _keep = c_sparse(lib, encode_csr(w))
    got = np.full(out_f, 99, np.int8)
    assert c.tml_sparse_fc_s8(params, quant, in_f, xb, weights, bb, out_f, ffi.from_buffer("int8_t[]", got)) == 0
    np.testing.assert_array_equal(got, expected)
    # weights of another shape are an argument error, not a read past their arrays
    assert c.tml_sparse_fc_s8(params, quant, in_f + 1, xb, weights, bb, out_f, ffi.from_buffer("int8_t[]", got)) != 0


@SETTINGS
@given(
    h=st.integers(1, 7), w=st.integers(1, 7), in_c=st.integers(1, 40), out_c=st.integers(1, 12),
    stride=st.integers(1, 2), pad=st.integers(0, 1), sparsity=SPARSITIES, seed=st.integers(0, 2**32 - 1),
    offset=OFFSETS, data=st.data(),
)  # fmt: skip
@example(h=2, w=3, in_c=300, out_c=2, stride=1, pad=0, sparsity=0.5, seed=3, offset=128, data=None)  # uint16
def test_sparse_conv1x1_equals_the_dense_kernel(lib, h, w, in_c, out_c, stride, pad, sparsity, seed, offset, data):
    ffi, c = lib.ffi, lib.lib
    rng = np.random.default_rng(seed)
    out_h, out_w = (h + 2 * pad - 1) // stride + 1, (w + 2 * pad - 1) // stride + 1
    weights = pruned(rng, (out_c, 1, 1, in_c), sparsity)
    x = rng.integers(-128, 128, size=(h, w, in_c), dtype=np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, size=out_c, dtype=np.int32)
    if data is None:
        mult, shift = np.full(out_c, 1 << 30, np.int32), np.full(out_c, -9, np.int32)
    else:
        mult, shift = data.draw(requantization(out_c))
    params = ffi.new("tml_conv_params *", {
        "stride_h": stride, "stride_w": stride, "pad_h": pad, "pad_w": pad, "depth_multiplier": 1,
        "input_offset": offset, "output_offset": int(rng.integers(-128, 128)), "act_min": -128, "act_max": 127,
    })  # fmt: skip
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    in_shape = ffi.new("tml_shape *", [h, w, in_c])
    f_shape = ffi.new("tml_shape *", [1, 1, in_c])
    o_shape = ffi.new("tml_shape *", [out_h, out_w, out_c])
    xb, bb = ffi.from_buffer("int8_t[]", x), ffi.from_buffer("int32_t[]", bias)
    expected = np.zeros((out_h, out_w, out_c), np.int8)
    assert c.tml_conv2d_s8(params, quant, in_shape, xb, f_shape, ffi.from_buffer("int8_t[]", weights), bb, o_shape,
                           ffi.from_buffer("int8_t[]", expected), ffi.NULL) == 0  # fmt: skip
    sparse, _keep = c_sparse(lib, encode_csr(weights))
    got = np.full_like(expected, 99)
    status = c.tml_sparse_conv1x1_s8(params, quant, in_shape, xb, sparse, bb, o_shape,
                                     ffi.from_buffer("int8_t[]", got))  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(got, expected)


def test_inconsistent_weights_are_refused(lib):
    """Row counts that do not add up, or byte columns for rows longer than 256, are argument errors."""
    ffi, c = lib.ffi, lib.lib
    w = pruned(np.random.default_rng(4), (3, 10), 0.5)
    csr = encode_csr(w)
    weights, _keep = c_sparse(lib, csr)
    params = ffi.new("tml_fc_params *", {"input_offset": 0, "output_offset": 0, "act_min": -128, "act_max": 127})
    mult, shift = np.full(3, 1 << 30, np.int32), np.zeros(3, np.int32)
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    x, out = np.zeros(10, np.int8), np.zeros(3, np.int8)

    def run() -> int:
        return c.tml_sparse_fc_s8(params, quant, 10, ffi.from_buffer("int8_t[]", x), weights, ffi.NULL, 3,
                                  ffi.from_buffer("int8_t[]", out))  # fmt: skip

    assert run() == 0
    weights.nonzeros += 1
    assert run() != 0
    weights.nonzeros -= 1
    weights.columns16, weights.columns8 = ffi.cast("uint16_t *", weights.columns8), ffi.NULL
    weights.columns8 = ffi.cast("uint8_t *", weights.columns16)  # both widths set
    assert run() != 0
