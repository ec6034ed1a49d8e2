"""Pooling, add, softmax, concat and flatten: the C kernels give the reference's bytes, and the
reference agrees with an independent float computation (torch or numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinyml import host
from tinyml.kernels import ADD_TABLE_MIN_SIZE, add_s8_scratch_bytes
from tinyml.numbers import dequantize_tensor, quantize_multiplier, quantize_tensor, requantize
from tinyml.reference.elementwise import (
    add_params,
    add_s8,
    concat_s8,
    flatten_s8,
    softmax_exp_table,
    softmax_s8,
)
from tinyml.reference.pool import avgpool_s8, maxpool_s8, pool_output_size

TML_OK, TML_ARG_ERROR = 0, -1
GUARD = 7  # bytes past the output that a kernel must leave alone
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

POOLS = {"maxpool": maxpool_s8, "avgpool": avgpool_s8}



# --- strategies ------------------------------------------------------------------------------------

zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))

# Reals across 1e-6 .. 10 through quantize_multiplier, plus the extremes of the Q31 encoding.
multiplier_shifts = st.one_of(
    st.floats(1e-6, 10.0).map(quantize_multiplier),
    st.sampled_from([(2**31 - 1, -31), (2**31 - 1, 30), (2**30, -31), (2**30, 30), (2**31 - 1, 0), (2**30, 1)]),
)


@st.composite
def act_clamps(draw: st.DrawFn) -> tuple[int, int]:
    kind = draw(st.sampled_from(["full", "random", "saturated"]))
    if kind == "full":
        return -128, 127
    if kind == "saturated":
        v = draw(st.sampled_from([-128, 127]) | st.integers(-128, 127))
        return v, v
    lo, hi = sorted(draw(st.lists(st.integers(-128, 127), min_size=2, max_size=2)))
    return lo, hi


@st.composite
def int8_arrays(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """Random int8 data, or the saturated extremes that exercise rounding and clamping."""
    fill = draw(st.sampled_from(["random", "random", "min", "max", "extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if fill == "min":
        return np.full(shape, -128, dtype=np.int8)
    if fill == "max":
        return np.full(shape, 127, dtype=np.int8)
    if fill == "extremes":
        return rng.choice(np.array([-128, 127], dtype=np.int8), size=shape)
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


@st.composite
def pool_axis(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(size, kernel, stride, pad) for one axis, with pad < kernel <= size + 2*pad."""
    size = draw(st.integers(1, 9))
    pad = draw(st.integers(0, 2))
    kernel = draw(st.one_of(st.just(size + 2 * pad), st.integers(pad + 1, size + 2 * pad)))
    stride = draw(st.integers(1, 3))
    return size, kernel, stride, pad


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple[np.ndarray, dict]:
    h, kh, sh, ph = draw(pool_axis())
    w, kw, sw, pw = draw(pool_axis())
    x = draw(int8_arrays((h, w, draw(st.integers(1, 5)))))
    act_min, act_max = draw(act_clamps())
    return x, dict(kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), act_min=act_min, act_max=act_max)


# --- calling the C kernels -------------------------------------------------------------------------


def _buf(lib: host.HostLibrary, x: np.ndarray, ctype: str = "int8_t[]"):
    return lib.ffi.from_buffer(ctype, np.ascontiguousarray(x))


def _output(size: int) -> np.ndarray:
    """An output buffer with a guard tail of a known pattern."""
    return np.full(size + GUARD, 0x5A, dtype=np.uint8).view(np.int8)


def _checked(out: np.ndarray, size: int) -> np.ndarray:
    assert (out[size:].view(np.uint8) == 0x5A).all(), "kernel wrote past the end of its output"
    return out[:size]


def c_pool(lib: host.HostLibrary, op: str, x: np.ndarray, p: dict, out_hw: tuple[int, int] | None = None):
    ffi = lib.ffi
    h, w, c = x.shape
    if out_hw is None:
        out_hw = tuple(
            pool_output_size(n, k, s, pad)
            for n, k, s, pad in zip((h, w), p["kernel"], p["stride"], p["padding"], strict=True)
        )
    params = ffi.new(
        "tml_pool_params *",
        dict(
            kernel_h=p["kernel"][0],
            kernel_w=p["kernel"][1],
            stride_h=p["stride"][0],
            stride_w=p["stride"][1],
            pad_h=p["padding"][0],
            pad_w=p["padding"][1],
            act_min=p["act_min"],
            act_max=p["act_max"],
        ),
    )
    size = out_hw[0] * out_hw[1] * c
    out = _output(size)
    status = getattr(lib.lib, f"tml_{op}_s8")(
        params,
        ffi.new("tml_shape *", dict(h=h, w=w, c=c)),
        _buf(lib, x),
        ffi.new("tml_shape *", dict(h=out_hw[0], w=out_hw[1], c=c)),
        _buf(lib, out),
    )
    return status, _checked(out, size).reshape(out_hw[0], out_hw[1], c)


def c_add(lib: host.HostLibrary, a: np.ndarray, b: np.ndarray, params: dict, scratch: bool = True):
    """tml_add_s8 with the scratch its size asks for (with guard bytes after it), or NULL."""
    out = _output(a.size)
    size = lib.lib.tml_add_s8_scratch_bytes(a.size)
    assert size == add_s8_scratch_bytes(a.size), "the code generator sizes this scratch in Python"
    room = np.full(size + GUARD, 0x5A, np.uint8)
    buffer = _buf(lib, room) if scratch and size else lib.ffi.NULL
    status = lib.lib.tml_add_s8(
        lib.ffi.new("tml_add_params *", params), _buf(lib, a), _buf(lib, b), _buf(lib, out), a.size, buffer
    )
    assert (room[size:] == 0x5A).all(), "tml_add_s8 wrote past its scratch"
    return status, _checked(out, a.size).reshape(a.shape)


def c_softmax(lib: host.HostLibrary, x: np.ndarray, table: np.ndarray):
    out = _output(x.size)
    table = np.ascontiguousarray(table, dtype=np.uint32)
    status = lib.lib.tml_softmax_s8(
        _buf(lib, table, "uint32_t[]"), _buf(lib, x), x.shape[0], x.shape[1], _buf(lib, out)
    )
    return status, _checked(out, x.size).reshape(x.shape)


def c_concat(lib: host.HostLibrary, inputs: list[tuple[np.ndarray, int, int, int]], output_offset: int):
    ffi = lib.ffi
    h, w = inputs[0][0].shape[:2]
    keep = [np.ascontiguousarray(x) for x, *_ in inputs]
    descs = ffi.new(
        "tml_concat_input[]",
        [
            dict(data=_buf(lib, x), channels=x.shape[2], input_offset=off, multiplier=m, shift=s)
            for x, (_, off, m, s) in zip(keep, inputs, strict=True)
        ],
    )
    channels = sum(x.shape[2] for x in keep)
    out = _output(h * w * channels)
    status = lib.lib.tml_concat_s8(descs, len(inputs), h * w, output_offset, _buf(lib, out))
    return status, _checked(out, h * w * channels).reshape(h, w, channels)


def c_flatten(lib: host.HostLibrary, x: np.ndarray):
    h, w, c = x.shape
    out = _output(x.size)
    status = lib.lib.tml_flatten_s8(lib.ffi.new("tml_shape *", dict(h=h, w=w, c=c)), _buf(lib, x), _buf(lib, out))
    return status, _checked(out, x.size)


# --- pooling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(POOLS))
@FUZZ
@given(case=pool_cases())
def test_pool_c_matches_reference(lib, op, case):
    x, p = case
    status, got = c_pool(lib, op, x, p)
    assert status == TML_OK
    np.testing.assert_array_equal(got, POOLS[op](x, **p))


@pytest.mark.parametrize("op", sorted(POOLS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 6)).flatmap(int8_arrays))
def test_global_pool(lib, op, x):
    p = dict(kernel=x.shape[:2], stride=(1, 1), padding=(0, 0), act_min=-128, act_max=127)
    status, got = c_pool(lib, op, x, p)
    assert status == TML_OK and got.shape == (1, 1, x.shape[2])
    np.testing.assert_array_equal(got, POOLS[op](x, **p))


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


@settings(max_examples=60, deadline=None)
@given(case=pool_cases())
def test_pool_reference_matches_torch(case):
    """Independent float check: torch pools (padding ignored, not counted) then round and clamp."""
    x, p = case
    assume(all(pad <= k // 2 for pad, k in zip(p["padding"], p["kernel"], strict=True)))  # torch's limit
    t = torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1).unsqueeze(0)
    args = dict(kernel_size=p["kernel"], stride=p["stride"], padding=p["padding"])
    expected_max = F.max_pool2d(t, **args)[0].permute(1, 2, 0).numpy()
    expected_avg = _round_half_away(F.avg_pool2d(t, count_include_pad=False, **args)[0].permute(1, 2, 0).numpy())
    for op, expected in (("maxpool", expected_max), ("avgpool", expected_avg)):
        want = np.clip(expected, p["act_min"], p["act_max"]).astype(np.int8)
        np.testing.assert_array_equal(POOLS[op](x, **p), want, err_msg=op)


def test_avgpool_rounds_half_away_from_zero(lib):
    """Windows of two cells: sums 3, -3, 1, -1 give 1.5, -1.5, 0.5, -0.5 -> 2, -2, 1, -1."""
    x = np.array([[[1], [2], [-1], [-2], [0], [1], [0], [-1]]], dtype=np.int8)
    p = dict(kernel=(1, 2), stride=(1, 2), padding=(0, 0), act_min=-128, act_max=127)
    want = np.array([2, -2, 1, -1], dtype=np.int8).reshape(1, 4, 1)
    np.testing.assert_array_equal(avgpool_s8(x, **p), want)
    np.testing.assert_array_equal(c_pool(lib, "avgpool", x, p)[1], want)


def test_avgpool_divides_by_real_cells_only(lib):
    """A 3x3 window at a padded corner of a 2x2 input averages its 4 real cells, not 9."""
    x = np.array([[[10], [20]], [[30], [41]]], dtype=np.int8)
    p = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), act_min=-128, act_max=127)
    want = np.full((2, 2, 1), round((10 + 20 + 30 + 41) / 4), dtype=np.int8)  # 25.25 -> 25
    np.testing.assert_array_equal(avgpool_s8(x, **p), want)
    np.testing.assert_array_equal(c_pool(lib, "avgpool", x, p)[1], want)


AVGPOOL_RECIPROCAL_MAX = 5770  # TML_AVGPOOL_RECIPROCAL_MAX in firmware/src/tml_avgpool_s8.c


def test_avgpool_reciprocal_is_exact_up_to_its_limit():
    """The claim tml_avgpool_s8 divides by: (n * m) >> 32 with m = floor((2^32 - 1) / d) + 1 is floor(n / d)
    for every n a window of d cells can give (n <= 128 d + d / 2), d = 2 .. the limit; past it, it is not."""
    d = np.arange(2, AVGPOOL_RECIPROCAL_MAX + 2, dtype=np.uint64)
    m = (np.uint64(2**32 - 1) // d) + np.uint64(1)
    n_max = np.uint64(128) * d + d // np.uint64(2)
    exact = []
    for n in (n_max, n_max - np.uint64(1), (n_max // d) * d - np.uint64(1), (n_max // d) * d, d - np.uint64(1)):
        exact.append((n * m) >> np.uint64(32) == n // d)
    assert np.all(exact, axis=0)[:-1].all()
    # the bound the proof uses: n * e < 2^32 with e = m d - 2^32 <= d - 1, up to the limit
    e = m * d - np.uint64(2**32)
    assert (e < d).all() and (n_max[:-1] * e[:-1] < np.uint64(2**32)).all()
    assert 129 * AVGPOOL_RECIPROCAL_MAX * (AVGPOOL_RECIPROCAL_MAX - 1) < 2**32


@pytest.mark.parametrize("cells", [(1, 2), (3, 3), (10, 577), (29, 199)])  # 2, 9, the limit 5770, 5771: divides
@pytest.mark.parametrize("fill", [-128, 127, None])
def test_avgpool_large_windows(lib, cells, fill):
    """Global pools whose cell counts reach and pass the reciprocal's limit, at the extreme sums and random ones."""
    rng = np.random.default_rng(sum(cells))
    shape = (*cells, 4)
    x = rng.integers(-128, 128, size=shape, dtype=np.int8) if fill is None else np.full(shape, fill, np.int8)
    p = dict(kernel=cells, stride=(1, 1), padding=(0, 0), act_min=-128, act_max=127)
    status, got = c_pool(lib, "avgpool", x, p)
    assert status == TML_OK
    np.testing.assert_array_equal(got, avgpool_s8(x, **p))


@pytest.mark.parametrize("op", sorted(POOLS))
def test_pool_rejects_bad_arguments(lib, op):
    x = np.zeros((4, 4, 2), dtype=np.int8)
    good = dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0), act_min=-128, act_max=127)
    assert c_pool(lib, op, x, good)[0] == TML_OK
    assert c_pool(lib, op, x, good, out_hw=(3, 2))[0] == TML_ARG_ERROR
    assert c_pool(lib, op, x, {**good, "padding": (2, 0)})[0] == TML_ARG_ERROR
    assert c_pool(lib, op, x, {**good, "act_min": 5, "act_max": 4}, out_hw=(2, 2))[0] == TML_ARG_ERROR
    assert c_pool(lib, op, x, {**good, "stride": (0, 1)}, out_hw=(2, 2))[0] == TML_ARG_ERROR
    ffi = lib.ffi
    shape = ffi.new("tml_shape *", dict(h=4, w=4, c=2))
    assert getattr(lib.lib, f"tml_{op}_s8")(ffi.NULL, shape, _buf(lib, x), shape, _buf(lib, x)) == (
        TML_ARG_ERROR
    )
    with pytest.raises(ValueError, match="padding 2 must be smaller than the kernel 2"):
        POOLS[op](x, **{**good, "padding": (2, 0)})
    with pytest.raises(ValueError, match="int8"):
        POOLS[op](x.astype(np.int32), **good)


# --- add -------------------------------------------------------------------------------------------


@st.composite
def raw_add_params(draw: st.DrawFn) -> dict[str, int]:
    """Any field values: offsets from int8 zero points, multipliers across the whole Q31 range."""
    (m1, s1), (m2, s2), (mo, so) = (draw(multiplier_shifts) for _ in range(3))
    act_min, act_max = draw(act_clamps())
    return dict(
        in1_offset=-draw(zero_points),
        in1_multiplier=m1,
        in1_shift=s1,
        in2_offset=-draw(zero_points),
        in2_multiplier=m2,
        in2_shift=s2,
        left_shift=draw(st.sampled_from([0, 20, 31]) | st.integers(0, 31)),
        output_offset=draw(zero_points),
        out_multiplier=mo,
        out_shift=so,
        act_min=act_min,
        act_max=act_max,
    )


scales = st.floats(1e-3, 1.0)


@st.composite
def recipe_add_params(draw: st.DrawFn) -> tuple[dict[str, int], tuple]:
    """Parameters as the quantizer makes them, from scales and zero points."""
    s1, s2 = draw(scales), draw(scales)
    out_scale = (s1 + s2) * draw(st.floats(0.05, 4.0))
    q = (s1, draw(zero_points), s2, draw(zero_points), out_scale, draw(zero_points))
    return add_params(*q), q


@FUZZ
@given(
    params=st.one_of(raw_add_params(), recipe_add_params().map(lambda pq: pq[0])),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 7), st.integers(1, 3)),
    data=st.data(),
)
def test_add_c_matches_reference(lib, params, shape, data):
    a, b = data.draw(int8_arrays(shape)), data.draw(int8_arrays(shape))
    status, got = c_add(lib, a, b, params)
    assert status == TML_OK
    np.testing.assert_array_equal(got, add_s8(a, b, **params))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.one_of(raw_add_params(), recipe_add_params().map(lambda pq: pq[0])),
    size=st.one_of(st.just(ADD_TABLE_MIN_SIZE - 1), st.integers(ADD_TABLE_MIN_SIZE, ADD_TABLE_MIN_SIZE + 300)),
    data=st.data(),
)
def test_add_tables_give_the_reference_bytes(lib, params, size, data):
    """Tensors large enough for the tabled variant: with scratch and with NULL, the reference's bytes."""
    a, b = data.draw(int8_arrays((size,))), data.draw(int8_arrays((size,)))
    want = add_s8(a, b, **params)
    for scratch in (True, False):
        status, got = c_add(lib, a, b, params, scratch=scratch)
        assert status == TML_OK
        np.testing.assert_array_equal(got, want, err_msg=f"scratch={scratch}")


@settings(max_examples=80, deadline=None)
@given(pq=recipe_add_params(), data=st.data())
def test_add_reference_matches_float_add(pq, data):
    params, (s1, zp1, s2, zp2, so, zpo) = pq
    a, b = data.draw(int8_arrays((37,))), data.draw(int8_arrays((37,)))
    real = dequantize_tensor(a, s1, zp1).astype(np.float64) + dequantize_tensor(b, s2, zp2)
    want = quantize_tensor(real, so, zpo).astype(np.int32)
    got = add_s8(a, b, **params).astype(np.int32)
    assert np.abs(got - want).max() <= 1


def test_add_rejects_bad_arguments(lib):
    a = np.zeros(4, dtype=np.int8)
    params = add_params(0.1, 0, 0.2, 3, 0.25, -1)
    assert c_add(lib, a, a, params)[0] == TML_OK
    assert c_add(lib, a, a, {**params, "left_shift": 32})[0] == TML_ARG_ERROR
    assert c_add(lib, a, a, {**params, "act_min": 1, "act_max": 0})[0] == TML_ARG_ERROR
    ffi = lib.ffi
    p = ffi.new("tml_add_params *", params)
    assert lib.lib.tml_add_s8(p, ffi.NULL, _buf(lib, a), _buf(lib, a), 4, ffi.NULL) == TML_ARG_ERROR
    assert lib.lib.tml_add_s8(p, _buf(lib, a), _buf(lib, a), _buf(lib, a), 0, ffi.NULL) == TML_ARG_ERROR
    with pytest.raises(ValueError, match="different shapes"):
        add_s8(a, a[:3], **params)
    with pytest.raises(ValueError, match="output scale"):
        add_params(1.0, 0, 1.0, 0, 1e-20, 0)


# --- softmax ---------------------------------------------------------------------------------------


@FUZZ
@given(
    scale=st.one_of(st.sampled_from([1e-3, 1.0 / 16, 0.5]), st.floats(1e-3, 1.0)),
    shape=st.tuples(st.integers(1, 4), st.one_of(st.just(1), st.integers(1, 40))),
    data=st.data(),
)
def test_softmax_c_matches_reference(lib, scale, shape, data):
    x = data.draw(int8_arrays(shape))
    table = softmax_exp_table(scale)
    status, got = c_softmax(lib, x, table)
    assert status == TML_OK
    np.testing.assert_array_equal(got, softmax_s8(x, table))


def test_softmax_long_row(lib):
    x = np.random.default_rng(1).integers(-128, 128, size=(2, 3000), dtype=np.int8)
    table = softmax_exp_table(0.05)
    np.testing.assert_array_equal(c_softmax(lib, x, table)[1], softmax_s8(x, table))


@pytest.mark.parametrize("row", [1, 2, 3, 255, 65535])
def test_softmax_equal_values_up_to_the_longest_row(lib, row):
    """Rows of equal values: every entry is table[0] = 65536, so the row sum reaches 65535 * 65536 (just
    under 2^32), where the per-row reciprocal leaves the least room; the output is round(256 / row) - 128
    (clamped: a row of one gives 128)."""
    x = np.full((1, row), 5, np.int8)
    table = softmax_exp_table(0.1)
    status, got = c_softmax(lib, x, table)
    assert status == TML_OK
    np.testing.assert_array_equal(got, softmax_s8(x, table))
    assert int(got[0, 0]) == min(127, math.floor(256 / row + 0.5) - 128)


@settings(max_examples=80, deadline=None)
@given(scale=st.floats(1e-3, 1.0), shape=st.tuples(st.integers(1, 3), st.integers(1, 30)), data=st.data())
def test_softmax_reference_matches_float_softmax(scale, shape, data):
    x = data.draw(int8_arrays(shape))
    real = x.astype(np.float64) * scale
    p = np.exp(real - real.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    want = quantize_tensor(p, 1.0 / 256, -128).astype(np.int32)
    got = softmax_s8(x, softmax_exp_table(scale)).astype(np.int32)
    assert np.abs(got - want).max() <= 1


def test_softmax_exp_table_is_q16_exponential():
    scale = 0.1
    table = softmax_exp_table(scale)
    assert table.dtype == np.uint32 and table.shape == (256,)
    assert table[0] == 65536
    for d in (1, 7, 255):
        assert table[d] == round(65536 * math.exp(-d * scale))
    assert (np.diff(table.astype(np.int64)) <= 0).all()


def test_softmax_rejects_bad_arguments(lib):
    x = np.zeros((2, 3), dtype=np.int8)
    table = softmax_exp_table(0.1)
    assert c_softmax(lib, x, table)[0] == TML_OK
    zero_head = table.copy()
    zero_head[0] = 0
    assert c_softmax(lib, x, zero_head)[0] == TML_ARG_ERROR
    ffi = lib.ffi
    t = _buf(lib, table, "uint32_t[]")
    assert lib.lib.tml_softmax_s8(t, _buf(lib, x), 2, 0, _buf(lib, x)) == TML_ARG_ERROR
    assert lib.lib.tml_softmax_s8(t, _buf(lib, x), 1, 65536, _buf(lib, x)) == TML_ARG_ERROR
    assert lib.lib.tml_softmax_s8(ffi.NULL, _buf(lib, x), 2, 3, _buf(lib, x)) == TML_ARG_ERROR
    with pytest.raises(ValueError, match="positive"):
        softmax_exp_table(0.0)
    with pytest.raises(ValueError, match="int8"):
        softmax_s8(x.astype(np.int16), table)


# --- concat ----------------------------------------------------------------------------------------

IDENTITY = (2**30, 1)


def test_identity_requantization_is_exact_for_int8():
    v = np.arange(-128, 128) + np.arange(-255, 256)[:, None]  # every int8 plus any offset an int8 zp gives
    np.testing.assert_array_equal(requantize(v, *IDENTITY), v)


@st.composite
def concat_cases(draw: st.DrawFn) -> tuple[list, int]:
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    output_offset = draw(zero_points)
    inputs = []
    for _ in range(draw(st.integers(1, 4))):
        x = draw(int8_arrays((h, w, draw(st.integers(1, 5)))))
        kind = draw(st.sampled_from(["copy", "identity", "rescale"]))
        if kind == "copy":  # same quantization as the output
            inputs.append((x, -output_offset, *IDENTITY))
        elif kind == "identity":
            inputs.append((x, -draw(zero_points), *IDENTITY))
        else:
            inputs.append((x, -draw(zero_points), *draw(multiplier_shifts)))
    return inputs, output_offset


@FUZZ
@given(case=concat_cases())
def test_concat_c_matches_reference(lib, case):
    inputs, output_offset = case
    status, got = c_concat(lib, inputs, output_offset)
    assert status == TML_OK
    np.testing.assert_array_equal(got, concat_s8(inputs, output_offset))


@settings(max_examples=60, deadline=None)
@given(
    qs=st.lists(st.tuples(scales, zero_points), min_size=1, max_size=3),
    out_q=st.tuples(scales, zero_points),
    data=st.data(),
)
def test_concat_reference_matches_float_rescale(qs, out_q, data):
    xs = [data.draw(int8_arrays((2, 3, 2))) for _ in qs]
    inputs = [(x, -zp, *quantize_multiplier(s / out_q[0])) for x, (s, zp) in zip(xs, qs, strict=True)]
    real = np.concatenate([dequantize_tensor(x, s, zp) for x, (s, zp) in zip(xs, qs, strict=True)], axis=2)
    want = quantize_tensor(real.astype(np.float64), *out_q).astype(np.int32)
    got = concat_s8(inputs, out_q[1]).astype(np.int32)
    assert np.abs(got - want).max() <= 1


def test_concat_of_same_quantization_is_plain_concatenation(lib):
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, size=(3, 2, c), dtype=np.int8) for c in (1, 4, 3)]
    want = np.concatenate(xs, axis=2)
    inputs = [(x, 5, *IDENTITY) for x in xs]
    np.testing.assert_array_equal(concat_s8(inputs, -5), want)
    np.testing.assert_array_equal(c_concat(lib, inputs, -5)[1], want)


@pytest.mark.parametrize("input_offset", [2**30, -(2**30), 2**31 - 1])
def test_concat_identity_with_offsets_beyond_int8_wraps_like_reference(lib, input_offset):
    """Offsets that cancel but overflow the doubling must not take the plain-copy path."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(4, 8, 8)
    inputs = [(x, input_offset, *IDENTITY)]
    want = concat_s8(inputs, -input_offset)
    assert not np.array_equal(want, x)  # the wrap makes this no identity
    np.testing.assert_array_equal(c_concat(lib, inputs, -input_offset)[1], want)


def test_concat_rejects_bad_arguments(lib):
    x = np.zeros((2, 2, 3), dtype=np.int8)
    assert c_concat(lib, [(x, 0, *IDENTITY)], 0)[0] == TML_OK
    ffi = lib.ffi
    out = _buf(lib, np.zeros(12, dtype=np.int8))
    bad_channels = ffi.new("tml_concat_input[]", [dict(data=_buf(lib, x), channels=0, multiplier=2**30, shift=1)])
    assert lib.lib.tml_concat_s8(bad_channels, 1, 4, 0, out) == TML_ARG_ERROR
    null_data = ffi.new("tml_concat_input[]", [dict(data=ffi.NULL, channels=3, multiplier=2**30, shift=1)])
    assert lib.lib.tml_concat_s8(null_data, 1, 4, 0, out) == TML_ARG_ERROR
    assert lib.lib.tml_concat_s8(ffi.NULL, 1, 4, 0, out) == TML_ARG_ERROR
    with pytest.raises(ValueError, match="one H and W"):
        concat_s8([(x, 0, *IDENTITY), (x[:1], 0, *IDENTITY)], 0)


# --- flatten ---------------------------------------------------------------------------------------


@FUZZ
@given(x=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)).flatmap(int8_arrays))
def test_flatten_matches_reference_and_torch(lib, x):
    want = torch.flatten(torch.from_numpy(x).permute(2, 0, 1)).numpy()  # NCHW flatten, as PyTorch models do
    np.testing.assert_array_equal(flatten_s8(x), want)
    status, got = c_flatten(lib, x)
    assert status == TML_OK
    np.testing.assert_array_equal(got, want)


def test_flatten_rejects_bad_arguments(lib):
    x = np.zeros((2, 2, 2), dtype=np.int8)
    ffi = lib.ffi
    bad = ffi.new("tml_shape *", dict(h=2, w=0, c=2))
    assert lib.lib.tml_flatten_s8(bad, _buf(lib, x), _buf(lib, x)) == TML_ARG_ERROR
    good = ffi.new("tml_shape *", dict(h=2, w=2, c=2))
    assert lib.lib.tml_flatten_s8(good, ffi.NULL, _buf(lib, x)) == TML_ARG_ERROR
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        flatten_s8(x[0])
