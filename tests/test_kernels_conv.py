"""tml_conv2d_s8, tml_dwconv2d_s8 and tml_fc_s8 against the numpy reference, byte for byte.

The reference itself is checked against an independent float computation (torch's convolution in
float64), so the oracle is not only compared with itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tinyml import host
from tinyml.numbers import quantize_multiplier
from tinyml.reference.conv import conv2d_s8, conv_output_size, dwconv2d_s8, fc_s8

TML_OK, TML_ARG_ERROR = 0, -1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
# (multiplier, shift) pairs at the edges of what a kernel accepts.
EXTREME_QUANT = [(INT32_MAX, -31), (INT32_MAX, 30), (1 << 30, -31), (1 << 30, 30), (0, 0), (1, 0)]
FUZZ = settings(max_examples=150, deadline=None)



# ---------------------------------------------------------------- strategies


def _quant(n: int, taps: int) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Per-channel (multiplier, shift): either all scaled to the layer so that few outputs saturate
    (a sum of `taps` products of random int8 values is about sqrt(taps) * 5500), or each from reals
    1e-6 .. 10 (log-uniform) and the extremes."""
    typical = 40 / (5500 * math.sqrt(taps))
    scaled = st.floats(-1, 1).map(lambda e: quantize_multiplier(typical * 10.0**e))
    from_real = st.floats(-6, 1).map(lambda e: quantize_multiplier(10.0**e))
    any_pair = st.one_of(scaled, from_real, st.sampled_from(EXTREME_QUANT))
    pairs = st.one_of(st.lists(scaled, min_size=n, max_size=n), st.lists(any_pair, min_size=n, max_size=n))
    return pairs.map(lambda ps: (np.array([p[0] for p in ps], np.int32), np.array([p[1] for p in ps], np.int32)))


def _bias(n: int) -> st.SearchStrategy[np.ndarray | None]:
    """None, small biases, or a mix with the int32 extremes."""
    small = st.integers(-5000, 5000)
    mixed = st.one_of(small, st.integers(INT32_MIN, INT32_MAX), st.sampled_from([INT32_MIN, INT32_MAX]))
    lists = st.one_of(st.lists(small, min_size=n, max_size=n), st.lists(mixed, min_size=n, max_size=n))
    return st.one_of(st.none(), lists.map(lambda b: np.array(b, np.int32)))


zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
# Half the time no clamp at all, else a fused ReLU-like, saturated or random clamp.
clamps = st.integers(0, 3).flatmap(
    lambda k: (
        st.just((-128, 127))
        if k < 2
        else st.one_of(
            st.sampled_from([(-128, -128), (127, 127), (0, 127), (0, 6)]),
            st.tuples(st.integers(-128, 127), st.integers(-128, 127)).map(sorted).map(tuple),
        )
    )
)


def _int8(draw, shape: tuple[int, ...]) -> np.ndarray:
    """Random int8 data; one time in four only the saturating values -128 and 127."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.integers(0, 3)) > 0:
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return rng.choice(np.array([-128, 127], np.int8), size=shape)


@st.composite
def requant_args(draw, out_c: int, taps: int) -> dict:
    multiplier, shift = draw(_quant(out_c, taps))
    act_min, act_max = draw(clamps)
    return dict(
        input_offset=-draw(zero_points),
        output_offset=draw(zero_points),
        multiplier=multiplier,
        shift=shift,
        act_min=act_min,
        act_max=act_max,
    )


@st.composite
def conv_inputs(draw, depthwise: bool, max_in_c: int, max_n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Input, weights and window arguments, with kernels up to the size of the padded input; n is the
    number of output channels, or the depth multiplier if depthwise.
    """
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    kernel = draw(st.integers(1, h + 2 * ph)), draw(st.integers(1, w + 2 * pw))
    window = dict(stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw))
    in_c, n = draw(st.integers(1, max_in_c)), draw(st.integers(1, max_n))
    x = _int8(draw, (h, w, in_c))
    if depthwise:
        return x, _int8(draw, (*kernel, in_c * n)), dict(window, depth_multiplier=n)
    return x, _int8(draw, (n, *kernel, in_c)), window


def _out_channels(w: np.ndarray, depthwise: bool) -> int:
    return w.shape[2] if depthwise else w.shape[0]


@st.composite
def conv_cases(draw, depthwise: bool):
    x, w, window = draw(conv_inputs(depthwise, max_in_c=5, max_n=3 if depthwise else 5))
    out_c = _out_channels(w, depthwise)
    taps = w.shape[0] * w.shape[1] if depthwise else w[0].size
    return x, w, draw(_bias(out_c)), dict(window, **draw(requant_args(out_c, taps)))


@st.composite
def fc_cases(draw):
    n, out_c = draw(st.integers(1, 40)), draw(st.integers(1, 6))
    return _int8(draw, (n,)), _int8(draw, (out_c, n)), draw(_bias(out_c)), draw(requant_args(out_c, n))


# ---------------------------------------------------------------- calling the C kernels


class _Call:
    """Builds the C arguments for one kernel call and keeps their buffers alive."""

    def __init__(self, lib, bias: np.ndarray | None, multiplier: np.ndarray, shift: np.ndarray) -> None:
        self.ffi = lib.ffi
        self.keep: list = []
        self.bias = self.ffi.NULL if bias is None else self.ptr("int32_t[]", bias)
        self.quant = self.ffi.new(
            "tml_quant_channels *",
            {"multiplier": self.ptr("int32_t[]", multiplier), "shift": self.ptr("int32_t[]", shift)},
        )

    def ptr(self, ctype: str, a: np.ndarray):
        a = np.ascontiguousarray(a)
        self.keep.append(a)
        return self.ffi.from_buffer(ctype, a)

    def shape(self, h: int, w: int, c: int):
        return self.ffi.new("tml_shape *", {"h": h, "w": w, "c": c})


def _conv_params(call: _Call, kw: dict):
    return call.ffi.new(
        "tml_conv_params *",
        {
            "stride_h": kw["stride"][0],
            "stride_w": kw["stride"][1],
            "pad_h": kw["padding"][0],
            "pad_w": kw["padding"][1],
            "depth_multiplier": kw.get("depth_multiplier", 1),
            "input_offset": kw["input_offset"],
            "output_offset": kw["output_offset"],
            "act_min": kw["act_min"],
            "act_max": kw["act_max"],
        },
    )


def _out_hw(x: np.ndarray, kernel: tuple[int, int], kw: dict) -> tuple[int, int]:
    return tuple(conv_output_size(x.shape[i], kernel[i], kw["stride"][i], kw["padding"][i]) for i in (0, 1))


def _c_conv(lib, fn: str, x, w, bias, kernel: tuple[int, int], out_c: int, **kw) -> tuple[int, np.ndarray]:
    """Call a convolution kernel (filter shape {kernel, input channels}) into a fresh output."""
    call = _Call(lib, bias, kw["multiplier"], kw["shift"])
    out = np.zeros((*_out_hw(x, kernel, kw), out_c), np.int8)
    status = getattr(lib.lib, fn)(
        _conv_params(call, kw),
        call.quant,
        call.shape(*x.shape),
        call.ptr("int8_t[]", x),
        call.shape(*kernel, x.shape[2]),
        call.ptr("int8_t[]", w),
        call.bias,
        call.shape(*out.shape),
        call.ffi.from_buffer("int8_t[]", out),
        call.ffi.NULL,
    )
    return status, out


def c_conv2d(lib, x, w, bias, **kw) -> tuple[int, np.ndarray]:
    return _c_conv(lib, "tml_conv2d_s8", x, w, bias, w.shape[1:3], w.shape[0], **kw)


def c_dwconv2d(lib, x, w, bias, **kw) -> tuple[int, np.ndarray]:
    return _c_conv(lib, "tml_dwconv2d_s8", x, w, bias, w.shape[:2], w.shape[2], **kw)


def c_fc(lib, x, w, bias, **kw) -> tuple[int, np.ndarray]:
    call = _Call(lib, bias, kw["multiplier"], kw["shift"])
    params = call.ffi.new(
        "tml_fc_params *", {k: kw[k] for k in ("input_offset", "output_offset", "act_min", "act_max")}
    )
    out = np.zeros(w.shape[0], np.int8)
    status = lib.lib.tml_fc_s8(
        params,
        call.quant,
        x.size,
        call.ptr("int8_t[]", x),
        call.ptr("int8_t[]", w),
        call.bias,
        w.shape[0],
        call.ffi.from_buffer("int8_t[]", out),
    )
    return status, out


# ---------------------------------------------------------------- C against the reference


# op: (its cases, the C kernel, the reference)
KERNELS = {
    "conv2d": (conv_cases(depthwise=False), c_conv2d, conv2d_s8),
    "dwconv2d": (conv_cases(depthwise=True), c_dwconv2d, dwconv2d_s8),
    "fc": (fc_cases(), c_fc, fc_s8),
}


def _assert_matches_reference(lib, op: str, x, w, bias, kw: dict) -> None:
    _, c_kernel, reference = KERNELS[op]
    status, out = c_kernel(lib, x, w, bias, **kw)
    assert status == TML_OK
    np.testing.assert_array_equal(out, reference(x, w, bias, **kw))


@pytest.mark.parametrize("op", KERNELS)
@FUZZ
@given(data=st.data())
def test_kernel_matches_reference(lib, op, data):
    _assert_matches_reference(lib, op, *data.draw(KERNELS[op][0]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 9), st.integers(1, 5), st.data())
def test_pointwise_conv2d_matches_reference(lib, h, w_, in_c, out_c, data):
    """1x1 kernel, stride 1, no padding: the kernel's pointwise path."""
    x, w = _int8(data.draw, (h, w_, in_c)), _int8(data.draw, (out_c, 1, 1, in_c))
    kw = dict(stride=(1, 1), padding=(0, 0), **data.draw(requant_args(out_c, in_c)))
    _assert_matches_reference(lib, "conv2d", x, w, data.draw(_bias(out_c)), kw)


def test_scratch_is_not_needed(lib):
    shape = lib.ffi.new("tml_shape *", {"h": 5, "w": 5, "c": 3})
    assert lib.lib.tml_conv2d_s8_scratch_bytes(shape, shape, shape) == 0
    assert lib.lib.tml_dwconv2d_s8_scratch_bytes(shape, shape, shape) == 0


_dims = st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 256))


@pytest.fixture(scope="module")
def dsp_scratch_lib():
    """The library built as a DSP target sizes its scratch (TML_DSP_SCRATCH; the host runs no DSP code)."""
    return host.build_kernels([("TML_DSP_SCRATCH", "1")])


_kernel_sides = st.one_of(st.just(1), st.integers(1, 7))  # 1x1 filters often: they have their own DSP variant


@settings(max_examples=200, deadline=None)
@given(_dims, _kernel_sides, _kernel_sides, _dims)
@example((5, 5, 3), 1, 1, (5, 5, 8))  # 1x1, a staging copy
@example((5, 5, 64), 1, 1, (5, 5, 8))  # 1x1, none
@example((25, 5, 64), 3, 3, (25, 5, 64))  # depthwise 3x3, depth multiplier 1: padded rows
@example((48, 48, 9), 3, 3, (24, 24, 9))  # the same, a channel beyond the last block
@example((5, 5, 6), 3, 3, (5, 5, 12))  # depthwise 3x3, depth multiplier 2: no rows
def test_python_scratch_sizes_equal_the_c_library(lib, dsp_scratch_lib, in_dims, kh, kw, out_dims):
    """Code generation sizes scratch in Python (it never compiles C): the C library must agree on every board."""
    from tinyml.board.boards import builtin_boards
    from tinyml.kernels import conv2d_s8_scratch_bytes, dwconv2d_s8_scratch_bytes

    filter_dims = (kh, kw, in_dims[2])
    in_c = {}
    for dsp, built in ((False, lib), (True, dsp_scratch_lib)):
        dims = (in_dims, filter_dims, out_dims)
        args = [built.ffi.new("tml_shape *", dict(zip("hwc", d, strict=True))) for d in dims]
        in_c[dsp] = (built.lib.tml_conv2d_s8_scratch_bytes(*args), built.lib.tml_dwconv2d_s8_scratch_bytes(*args))
    assert in_c[True][0] > 0, "the DSP convolution gathers windows into scratch"
    for board in [None, *builtin_boards()]:
        sizes = (
            fn(in_dims, filter_dims, out_dims, board) for fn in (conv2d_s8_scratch_bytes, dwconv2d_s8_scratch_bytes)
        )
        assert tuple(sizes) == in_c[board is not None and board.dsp], board


def test_kernel_selection_does_not_import_the_host_compiler():
    """Generating C must not compile or load C: tinyml.kernels and tinyml.codegen stay clear of tinyml.host."""
    import subprocess
    import sys

    code = "import sys, tinyml.codegen, tinyml.kernels; print('tinyml.host' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------- bad arguments


def _small_conv():
    x = np.arange(-8, 8, dtype=np.int8).reshape(4, 4, 1)
    w = np.ones((2, 3, 3, 1), np.int8)
    kw = dict(
        stride=(1, 1),
        padding=(1, 1),
        input_offset=0,
        output_offset=0,
        multiplier=np.full(2, 1 << 30, np.int32),
        shift=np.ones(2, np.int32),
        act_min=-128,
        act_max=127,
    )
    return x, w, kw


def test_conv_kernels_reject_bad_arguments(lib):
    x, w, kw = _small_conv()
    call = _Call(lib, None, kw["multiplier"], kw["shift"])
    ffi, c = lib.ffi, lib.lib
    params, xin, win = _conv_params(call, kw), call.ptr("int8_t[]", x), call.ptr("int8_t[]", w)
    out = ffi.new("int8_t[]", 64)
    in_shape, f_shape, out_shape = call.shape(4, 4, 1), call.shape(3, 3, 1), call.shape(4, 4, 2)
    args = [params, call.quant, in_shape, xin, f_shape, win, call.bias, out_shape, out, ffi.NULL]
    assert c.tml_conv2d_s8(*args) == TML_OK
    for i in (0, 1, 2, 3, 4, 5, 7, 8):
        assert c.tml_conv2d_s8(*args[:i], ffi.NULL, *args[i + 1 :]) == TML_ARG_ERROR, f"NULL argument {i}"
    bad_shapes = {
        "output height": (in_shape, f_shape, call.shape(3, 4, 2)),
        "filter channels": (in_shape, call.shape(3, 3, 2), out_shape),
        "kernel larger than padded input": (in_shape, call.shape(7, 3, 1), call.shape(0, 4, 2)),
        "zero channels": (call.shape(4, 4, 0), call.shape(3, 3, 0), out_shape),
    }
    for what, (i_s, f_s, o_s) in bad_shapes.items():
        assert (
            c.tml_conv2d_s8(params, call.quant, i_s, xin, f_s, win, call.bias, o_s, out, ffi.NULL) == TML_ARG_ERROR
        ), what
    zero_stride = _conv_params(call, {**kw, "stride": (0, 1)})
    assert c.tml_conv2d_s8(zero_stride, *args[1:]) == TML_ARG_ERROR
    dw_out = call.shape(4, 4, 1)
    assert (
        c.tml_dwconv2d_s8(params, call.quant, in_shape, xin, f_shape, win, call.bias, dw_out, out, ffi.NULL) == TML_OK
    )
    assert (
        c.tml_dwconv2d_s8(params, call.quant, in_shape, xin, f_shape, win, call.bias, out_shape, out, ffi.NULL)
        == TML_ARG_ERROR
    )
    fc_params = ffi.new("tml_fc_params *", {"act_min": -128, "act_max": 127})
    assert c.tml_fc_s8(fc_params, call.quant, 0, xin, win, call.bias, 2, out) == TML_ARG_ERROR
    assert c.tml_fc_s8(fc_params, call.quant, 9, xin, ffi.NULL, call.bias, 2, out) == TML_ARG_ERROR


def test_reference_rejects_bad_arguments():
    x, w, kw = _small_conv()
    with pytest.raises(ValueError, match="input channels"):
        conv2d_s8(x, np.ones((2, 3, 3, 2), np.int8), None, **kw)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d_s8(x, np.ones((2, 7, 3, 1), np.int8), None, **kw)
    with pytest.raises(ValueError, match="one value per output channel"):
        conv2d_s8(x, w, np.zeros(3, np.int32), **kw)
    with pytest.raises(ValueError, match="int8"):
        conv2d_s8(x.astype(np.int32), w, None, **kw)
    with pytest.raises(ValueError, match="depth multiplier"):
        dwconv2d_s8(x, np.ones((3, 3, 2), np.int8), None, depth_multiplier=1, **kw)


# ---------------------------------------------------------------- the reference against float arithmetic


def _round_half_up(v: np.ndarray) -> np.ndarray:
    """The rounding of a doubling high multiply by 2^30 (a multiplier of exactly 1/2): ties go up."""
    return np.floor(v + 0.5)


def _float_expected(acc: np.ndarray, bias, real: float, kw: dict) -> np.ndarray:
    acc = acc + (0 if bias is None else bias.astype(np.float64))
    return np.clip(_round_half_up(acc * real) + kw["output_offset"], kw["act_min"], kw["act_max"])


def _float_conv(x, w_oihw, bias, kw, groups: int) -> np.ndarray:
    xt = torch.from_numpy(x.astype(np.float64) + kw["input_offset"]).permute(2, 0, 1)[None]
    y = torch.nn.functional.conv2d(
        xt,
        torch.from_numpy(w_oihw.astype(np.float64)),
        stride=kw["stride"],
        padding=kw["padding"],
        groups=groups,
    )
    return y[0].permute(1, 2, 0).numpy()


@st.composite
def float_checked_cases(draw, depthwise: bool):
    """Small cases whose accumulators stay far from int32 limits, with one real multiplier."""
    x, w, window = draw(conv_inputs(depthwise, max_in_c=4, max_n=4))
    out_c = _out_channels(w, depthwise)
    bias = draw(
        st.one_of(
            st.none(),
            st.lists(st.integers(-20000, 20000), min_size=out_c, max_size=out_c).map(lambda b: np.array(b, np.int32)),
        )
    )
    exact = draw(st.booleans())
    real = draw(st.sampled_from([0.5, 1.0, 2.0]) if exact else st.floats(1e-6, 1.0))
    mult, shift = quantize_multiplier(real)
    act_min, act_max = draw(clamps)
    kw = dict(
        window,
        input_offset=-draw(zero_points),
        output_offset=draw(zero_points),
        multiplier=np.full(out_c, mult, np.int32),
        shift=np.full(out_c, shift, np.int32),
        act_min=act_min,
        act_max=act_max,
    )
    return x, w, bias, kw, real, exact


def _assert_agrees_with_float(got: np.ndarray, expected: np.ndarray, exact: bool) -> None:
    """Exact for multipliers 0.5, 1, 2 (one rounding, ties up); within 1 otherwise (two roundings)."""
    if exact:
        np.testing.assert_array_equal(got.astype(np.float64), expected)
    else:
        assert np.max(np.abs(got.astype(np.float64) - expected), initial=0) <= 1


@settings(max_examples=60, deadline=None)
@given(float_checked_cases(depthwise=False))
def test_reference_conv2d_agrees_with_float_conv(case):
    x, w, bias, kw, real, exact = case
    expected = _float_expected(_float_conv(x, w.transpose(0, 3, 1, 2), bias, kw, groups=1), bias, real, kw)
    _assert_agrees_with_float(conv2d_s8(x, w, bias, **kw), expected, exact)


@settings(max_examples=60, deadline=None)
@given(float_checked_cases(depthwise=True))
def test_reference_dwconv2d_agrees_with_float_conv(case):
    x, w, bias, kw, real, exact = case
    w_oihw = w.transpose(2, 0, 1)[:, None]  # [C*M, 1, KH, KW]: torch's grouped layout, o reads o // M
    expected = _float_expected(_float_conv(x, w_oihw, bias, kw, groups=x.shape[2]), bias, real, kw)
    _assert_agrees_with_float(dwconv2d_s8(x, w, bias, **kw), expected, exact)


def test_reference_fc_agrees_with_float_matmul():
    rng = np.random.default_rng(7)
    x, w = rng.integers(-128, 128, 37, dtype=np.int8), rng.integers(-127, 128, (5, 37), dtype=np.int8)
    bias = rng.integers(-3000, 3000, 5).astype(np.int32)
    kw = dict(
        input_offset=-11,
        output_offset=4,
        multiplier=np.full(5, 1 << 30, np.int32),
        shift=np.full(5, -6, np.int32),  # with the multiplier 2^30: exactly 2^-7
        act_min=-128,
        act_max=127,
    )
    acc = w.astype(np.float64) @ (x.astype(np.float64) - 11) + bias
    expected = np.clip(_round_half_up(acc / 128) + 4, -128, 127)
    got = fc_s8(x, w, bias, **kw)
    assert np.any((expected > -128) & (expected < 127)), "the case should not saturate everywhere"
    # Double rounding (to 2^-1, then by 2^6) may move a value by one step from the single float rounding.
    assert np.max(np.abs(got - expected)) <= 1


def test_reference_conv2d_hand_computed():
    """A 2x2 input, 2x2 kernel of ones, padding 1 on both sides, multiplier exactly 1/2."""
    x = np.array([[1, 2], [3, 4]], np.int8).reshape(2, 2, 1)
    w = np.ones((1, 2, 2, 1), np.int8)
    mult, shift = quantize_multiplier(0.5)
    out = conv2d_s8(
        x,
        w,
        np.array([1], np.int32),
        stride=(1, 1),
        padding=(1, 1),
        input_offset=1,
        output_offset=-3,
        multiplier=np.array([mult], np.int32),
        shift=np.array([shift], np.int32),
        act_min=-128,
        act_max=127,
    )
    # x + 1 = [[2, 3], [4, 5]]; the 3x3 outputs sum the cells each window covers, plus bias 1:
    # [[2, 5, 3], [6, 14, 8], [4, 9, 5]] + 1 = [[3, 6, 4], [7, 15, 9], [5, 10, 6]];
    # halved with ties away from zero: [[2, 3, 2], [4, 8, 5], [3, 5, 3]]; minus 3:
    expected = np.array([[-1, 0, -1], [1, 5, 2], [0, 2, 0]], np.int8)
    np.testing.assert_array_equal(out[:, :, 0], expected)


# ---------------------------------------------------------------- the prepared requantization steps

REQUANT_SMLAL_CDEF = """
void requant_smlal_many(const int32_t *total, const int32_t *multiplier, const int32_t *shift, int32_t *out,
                        int32_t *usable, int32_t *prepared, int32_t n);
"""
REQUANT_SMLAL_C = """
#include "tml_support.h"
void requant_smlal_many(const int32_t *total, const int32_t *multiplier, const int32_t *shift, int32_t *out,
                        int32_t *usable, int32_t *prepared, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        tml_requant_smlal q;
        usable[i] = tml_requant_smlal_make(&q, 0, multiplier[i], shift[i]);
        out[i] = usable[i] ? tml_requant_smlal_apply(&q, total[i]) : 0;
        const tml_requant r = tml_requant_make(0, multiplier[i], shift[i]); /* either step, as it chooses */
        prepared[i] = tml_requant_apply(&r, total[i]);
    }
}
"""


@pytest.fixture(scope="module")
def requant_smlal():
    """tml_support.h's SMLAL requantization compiled for the host (the same C expression the DSP build turns
    into one SMLAL), applied element by element."""
    from tinyml.resources import FIRMWARE_DIR

    built = host.build(REQUANT_SMLAL_CDEF, REQUANT_SMLAL_C, [], [FIRMWARE_DIR / "include"])

    def run(total, multiplier, shift) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = [np.ascontiguousarray(a, dtype=np.int32) for a in (total, multiplier, shift)]
        out, usable, prepared = (np.zeros(arrays[0].size, np.int32) for _ in range(3))
        ptr = [built.ffi.from_buffer("int32_t[]", a) for a in (*arrays, out, usable, prepared)]
        built.lib.requant_smlal_many(*ptr, arrays[0].size)
        return out, usable.astype(bool), prepared

    return run


def _smlal_form(multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return (multiplier == 0) | ((multiplier > 0) & (shift <= -2))


def test_smlal_requantization_equals_the_reference_on_extremes(requant_smlal):
    """Every accumulator edge, with ties (multiplier 2^30 and small shifts) and the largest multipliers and
    shifts: the SMLAL form is taken exactly where it applies, and gives the reference's value."""
    from tinyml.numbers import requantize

    rng = np.random.default_rng(3)
    edges = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -3, -2, -1, 0, 1, 2, 3, 1 << 30,
                      INT32_MAX - 1, INT32_MAX], np.int64)  # fmt: skip
    totals = np.concatenate([edges, rng.integers(-5000, 5000, 4000), rng.integers(INT32_MIN, INT32_MAX, 4000,
                                                                                   endpoint=True)])  # fmt: skip
    pairs = [(m, s) for m in (0, 1, 2, 3, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, INT32_MAX, -1, INT32_MIN + 1)
             for s in (-31, -30, -17, -5, -3, -2, -1, 0, 1, 30)]  # fmt: skip
    m = np.repeat([p[0] for p in pairs], totals.size)
    s = np.repeat([p[1] for p in pairs], totals.size)
    t = np.tile(totals, len(pairs))
    got, usable, prepared = requant_smlal(t, m, s)
    np.testing.assert_array_equal(usable, _smlal_form(m, s))
    np.testing.assert_array_equal(got[usable], requantize(t, m, s)[usable])
    np.testing.assert_array_equal(prepared, requantize(t, m, s))  # tml_requant: SMLAL where it applies, else not


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=64),
    st.one_of(st.integers(0, INT32_MAX), st.sampled_from([0, 1, 1 << 30, INT32_MAX])),
    st.integers(-31, 30),
)
def test_smlal_requantization_equals_the_reference(requant_smlal, totals, multiplier, shift):
    from tinyml.numbers import requantize

    n = len(totals)
    got, usable, prepared = requant_smlal(totals, [multiplier] * n, [shift] * n)
    assert usable.all() == bool(multiplier == 0 or shift <= -2)
    if usable.all():
        np.testing.assert_array_equal(got, requantize(np.array(totals), multiplier, shift))
    np.testing.assert_array_equal(prepared, requantize(np.array(totals), multiplier, shift))
