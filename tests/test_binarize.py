"""The binarize plugin: XNOR kernels equal the numpy references on the host and in QEMU, the technique
trains binary layers that export as sign + conv/linear, and bad input gets a one-paragraph error.

The C is compiled for the host through `tinyml.host.build_kernels()` (the plugin header's cdef
block) and checked with hypothesis over shapes, strides, padding and channel counts that are not a
multiple of 32; a small trained binary model runs on the host and in QEMU on cortex-m3 and cortex-m4.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tinyml import compiler, plugins
from tinyml.codegen import generate
from tinyml.errors import RecipeError, TinymlError
from tinyml.ir import Graph, Node, Tensor
from tinyml.reference import run_int8
from tinyml.reference.conv import conv2d_s8, fc_s8
from tinyml_plugins.binarize import kernels, packing
from tinyml_plugins.binarize.starts import node_starts, sign_starts
from tinyml_plugins.binarize.technique import Binarize

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# Binary convolutions: square and oblong filters, strides below, equal to and above the filter, padding on each side,
# windows of up to 2080 taps (more set bits than one counting chunk, TML_XNOR_CHUNK = 1008, takes).
CONV_LAYERS = given(
    h=st.integers(1, 8), w=st.integers(1, 8), in_c=st.integers(1, 130), out_c=st.integers(1, 70),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2),
    pw=st.integers(0, 2), density=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
# A layer whose full windows have about 1500 set bits: counted in two chunks.
LONG_WINDOWS = example(h=6, w=5, in_c=129, out_c=40, kh=3, kw=4, sh=1, sw=2, ph=1, pw=0, density=0.97, seed=3)


def binary_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """+m/-m per output channel, m in 0..127 (an all-zero channel now and then)."""
    m = rng.integers(0, 128, size=shape[0])
    m[rng.random(shape[0]) < 0.1] = 0
    signs = np.where(rng.random(shape) < 0.5, -1, 1)
    return (signs * m.reshape(-1, *([1] * (len(shape) - 1)))).astype(np.int8)


def requantization(rng: np.random.Generator, n: int) -> dict:
    return {
        "multiplier": rng.integers(1 << 30, 1 << 31, size=n).astype(np.int32),
        "shift": rng.integers(-12, 3, size=n).astype(np.int32),
        "output_offset": int(rng.integers(-128, 128)),
        "act_min": int(rng.integers(-128, 0)),
        "act_max": int(rng.integers(0, 128)),
    }


def c_conv_params(ffi, stride: tuple[int, int], padding: tuple[int, int], q: dict):
    return ffi.new("tml_conv_params *", {
        "stride_h": stride[0], "stride_w": stride[1], "pad_h": padding[0], "pad_w": padding[1], "depth_multiplier": 1,
        "input_offset": 0, "output_offset": q["output_offset"], "act_min": q["act_min"], "act_max": q["act_max"],
    })  # fmt: skip


def c_quant(ffi, q: dict):
    return ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", q["multiplier"]),
                                            "shift": ffi.from_buffer("int32_t[]", q["shift"])})  # fmt: skip


def conv_case(h, w, in_c, out_c, kh, kw, sh, sw, ph, pw, density, seed) -> tuple:
    """A drawn convolution: its generator (for the draws that follow), output size, input bits (+1 where set)
    and binary weights; windows that do not fit are assumed away."""
    assume(h + 2 * ph >= kh and w + 2 * pw >= kw)
    rng = np.random.default_rng(seed)
    out_hw = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    signs = rng.random((h, w, in_c)) < density
    return rng, out_hw, signs, binary_weights(rng, (out_c, kh, kw, in_c))


@SETTINGS
@CONV_LAYERS
@LONG_WINDOWS
def test_conv2d_xnor_equals_the_references(lib, h, w, in_c, out_c, kh, kw, sh, sw, ph, pw, density, seed):
    """Square and oblong filters, strides below, equal to and above the filter (the column lists that
    sliding windows share, and none shared), padding on each side."""
    ffi, c = lib.ffi, lib.lib
    rng, (out_h, out_w), signs, weights = conv_case(h, w, in_c, out_c, kh, kw, sh, sw, ph, pw, density, seed)
    bias = rng.integers(-20000, 20000, size=out_c).astype(np.int32)
    q = requantization(rng, out_c)
    # the plugin's bit-level reference equals the core's int8 convolution on +1/-1 inputs
    x_packed = packing.pack_bits(signs)
    expected = packing.conv2d_xnor(x_packed, in_c, packing.pack_weights(weights), packing.binary_magnitudes(weights),
                                   bias, stride=(sh, sw), padding=(ph, pw), **q)  # fmt: skip
    plus_minus = np.where(signs, 1, -1).astype(np.int8)
    np.testing.assert_array_equal(
        expected, conv2d_s8(plus_minus, weights, bias, stride=(sh, sw), padding=(ph, pw), input_offset=0, **q)
    )
    params = c_conv_params(ffi, (sh, sw), (ph, pw), q)
    f_shape = ffi.new("tml_shape *", [kh, kw, in_c])
    scratch = np.zeros(c.tml_conv2d_xnor_scratch_bytes(f_shape, out_c), np.int8)
    assert len(scratch) == kernels.conv2d_scratch_bytes((kh, kw, in_c), out_c)
    got = np.zeros((out_h, out_w, out_c), np.int8)
    status = c.tml_conv2d_xnor(
        params, c_quant(ffi, q), ffi.new("tml_shape *", [h, w, in_c]), ffi.from_buffer("uint32_t[]", x_packed),
        f_shape, ffi.from_buffer("uint32_t[]", packing.pack_weight_blocks(weights)),
        ffi.from_buffer("int16_t[]", packing.tap_ones(weights)),
        ffi.from_buffer("int32_t[]", packing.binary_magnitudes(weights).astype(np.int32)),
        ffi.from_buffer("int32_t[]", bias), ffi.new("tml_shape *", [out_h, out_w, out_c]),
        ffi.from_buffer("int8_t[]", got), ffi.from_buffer("int8_t[]", scratch),
    )  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(got, expected)


def extreme_biases(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly moderate, now and then near the int32 limits, where the accumulator may wrap (so the output is not
    monotone in the dot product and tml_conv2d_xnor_sign must take its exact per-lane way)."""
    bias = rng.integers(-20000, 20000, size=n)
    edge = rng.random(n) < 0.1
    bias[edge] = rng.choice([-(2**31), 2**31 - 1, -(2**31) + 5000, 2**31 - 5000], size=int(edge.sum()))
    return bias.astype(np.int32)


@SETTINGS
@CONV_LAYERS
@LONG_WINDOWS
def test_conv2d_xnor_sign_writes_the_bits_of_conv_then_sign(
    lib, h, w, in_c, out_c, kh, kw, sh, sw, ph, pw, density, seed
):
    """The fused kernel's bits are the int8 convolution's outputs compared with the thresholds: every threshold
    from 'always' (-128) to 'never' (128), left shifts, zero magnitudes and biases that wrap the accumulator."""
    ffi, c = lib.ffi, lib.lib
    rng, (out_h, out_w), signs, weights = conv_case(h, w, in_c, out_c, kh, kw, sh, sw, ph, pw, density, seed)
    bias = extreme_biases(rng, out_c)
    q = requantization(rng, out_c)
    threshold = rng.integers(-128, 129, size=out_c).astype(np.int32)
    plus_minus = np.where(signs, 1, -1).astype(np.int8)
    y = conv2d_s8(plus_minus, weights, bias, stride=(sh, sw), padding=(ph, pw), input_offset=0, **q)
    expected = packing.binarize_s8(y.reshape(-1, out_c), threshold).reshape(out_h, out_w, -1)
    params = c_conv_params(ffi, (sh, sw), (ph, pw), q)
    f_shape = ffi.new("tml_shape *", [kh, kw, in_c])
    scratch = np.zeros(c.tml_conv2d_xnor_sign_scratch_bytes(f_shape, out_c), np.int8)
    assert len(scratch) == kernels.conv2d_sign_scratch_bytes((kh, kw, in_c), out_c)
    got = np.full((out_h, out_w, packing.words(out_c)), 0xA5A5A5A5, np.uint32)
    starts = sign_starts(weights, bias, q["multiplier"], q["shift"], q["output_offset"], q["act_min"], q["act_max"],
                         threshold, (h, w), (out_h, out_w), (sh, sw), (ph, pw))  # fmt: skip
    arrays = [np.ascontiguousarray(a) for a in (starts.row_class, starts.column_class, starts.exact, starts.planes)]
    starts_c = ffi.new("tml_xnor_sign_starts *", {
        "row_class": ffi.from_buffer("uint8_t[]", arrays[0]), "column_class": ffi.from_buffer("uint8_t[]", arrays[1]),
        "column_classes": starts.column_classes, "exact": ffi.from_buffer("uint8_t[]", arrays[2]),
        "planes": ffi.from_buffer("uint32_t[]", arrays[3]),
    })  # fmt: skip
    status = c.tml_conv2d_xnor_sign(
        params, c_quant(ffi, q), ffi.new("tml_shape *", [h, w, in_c]),
        ffi.from_buffer("uint32_t[]", packing.pack_bits(signs)), f_shape,
        ffi.from_buffer("uint32_t[]", packing.pack_weight_blocks(weights)),
        ffi.from_buffer("int16_t[]", packing.tap_ones(weights)),
        ffi.from_buffer("int32_t[]", packing.binary_magnitudes(weights).astype(np.int32)),
        ffi.from_buffer("int32_t[]", bias), ffi.from_buffer("int32_t[]", threshold), starts_c,
        ffi.new("tml_shape *", [out_h, out_w, out_c]), ffi.from_buffer("uint32_t[]", got),
        ffi.from_buffer("int8_t[]", scratch),
    )  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(got, expected)


@SETTINGS
@given(in_f=st.integers(1, 2100), out_f=st.integers(1, 80), density=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_fc_xnor_equals_the_references(lib, in_f, out_f, density, seed):
    ffi, c = lib.ffi, lib.lib
    rng = np.random.default_rng(seed)
    signs = rng.random(in_f) < density
    weights = binary_weights(rng, (out_f, in_f))
    bias = rng.integers(-20000, 20000, size=out_f).astype(np.int32)
    q = requantization(rng, out_f)
    x_packed = packing.pack_bits(signs)
    expected = packing.fc_xnor(x_packed, in_f, packing.pack_weights(weights), packing.binary_magnitudes(weights),
                               bias, **q)  # fmt: skip
    np.testing.assert_array_equal(expected, fc_s8(np.where(signs, 1, -1).astype(np.int8), weights, bias,
                                                  input_offset=0, **q))  # fmt: skip
    params = ffi.new(
        "tml_fc_params *",
        {
            "input_offset": 0,
            "output_offset": q["output_offset"],
            "act_min": q["act_min"],
            "act_max": q["act_max"],
            "folded_bias": ffi.NULL,
        },
    )
    scratch = np.zeros(c.tml_fc_xnor_scratch_bytes(in_f), np.int8)
    assert len(scratch) == kernels.fc_scratch_bytes(in_f)
    got = np.zeros(out_f, np.int8)
    status = c.tml_fc_xnor(
        params, c_quant(ffi, q), in_f, ffi.from_buffer("uint32_t[]", x_packed),
        ffi.from_buffer("uint32_t[]", packing.pack_weight_blocks(weights)),
        ffi.from_buffer("int16_t[]", packing.tap_ones(weights)),
        ffi.from_buffer("int32_t[]", packing.binary_magnitudes(weights).astype(np.int32)),
        ffi.from_buffer("int32_t[]", bias), out_f, ffi.from_buffer("int8_t[]", got),
        ffi.from_buffer("int8_t[]", scratch),
    )  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(got, expected)


@SETTINGS
@given(pixels=st.integers(1, 9), channels=st.integers(1, 100), seed=st.integers(0, 2**32 - 1))
def test_binarize_s8_packs_what_the_reference_packs(lib, pixels, channels, seed):
    ffi, c = lib.ffi, lib.lib
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(pixels, channels)).astype(np.int8)
    threshold = rng.integers(-130, 131, size=channels).astype(np.int32)
    got = np.full((pixels, packing.words(channels)), 0xFFFFFFFF, np.uint32)
    assert c.tml_binarize_s8(ffi.from_buffer("int8_t[]", x), pixels, channels, ffi.from_buffer("int32_t[]", threshold),
                             ffi.from_buffer("uint32_t[]", got)) == 0  # fmt: skip
    np.testing.assert_array_equal(got, packing.binarize_s8(x, threshold))
    np.testing.assert_array_equal(packing.unpack_bits(got, channels), x >= threshold)


def test_kernels_refuse_bad_arguments(lib):
    ffi, c = lib.ffi, lib.lib
    params = ffi.new("tml_fc_params *", {"act_min": -128, "act_max": 127})
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.new("int32_t[1]"), "shift": ffi.new("int32_t[1]")})
    words, ones, mag, out = ffi.new("uint32_t[4]"), ffi.new("int16_t[1]"), ffi.new("int32_t[1]"), ffi.new("int8_t[1]")
    scratch = ffi.new("int8_t[256]")
    assert c.tml_fc_xnor(params, quant, 0, words, words, ones, mag, ffi.NULL, 1, out, scratch) == -1
    assert c.tml_fc_xnor(params, quant, 70000, words, words, ones, mag, ffi.NULL, 1, out, scratch) == -1
    assert c.tml_fc_xnor(params, quant, 4, words, words, ones, mag, ffi.NULL, 1, out, ffi.NULL) == -1
    assert c.tml_binarize_s8(ffi.new("int8_t[1]"), 1, 0, ffi.new("int32_t[1]"), words) == -1


# --- the technique and a whole model ----------------------------------------------------------


def small_cnn() -> torch.nn.Module:
    """int8 conv, then a binary conv (stride 2, 12 channels) and a binary linear, then the int8 classifier."""
    torch.manual_seed(0)
    return torch.nn.Sequential(OrderedDict(
        conv1=torch.nn.Conv2d(1, 8, 3, padding=1), relu1=torch.nn.ReLU(),
        conv2=torch.nn.Conv2d(8, 12, 3, stride=2, padding=1), bn2=torch.nn.BatchNorm2d(12), relu2=torch.nn.ReLU(),
        flatten=torch.nn.Flatten(), fc1=torch.nn.Linear(12 * 4 * 4, 40), relu3=torch.nn.ReLU(),
        classifier=torch.nn.Linear(40, 4),
    )).eval()  # fmt: skip


def samples(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, n)


@pytest.fixture(scope="module")
def binary_build(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    x, y = samples(96)
    return compiler.compile(
        small_cnn(), x[:32], [("binarize", {"epochs": 1}), "quantize-int8"], train_data=(x, y),
        validation=samples(16, seed=4), out_dir=tmp_path_factory.mktemp("binarize") / "cnn", progress=False,
    )  # fmt: skip


def two_binary_convs(size: int = 8) -> torch.nn.Module:
    """int8 conv, two binary convs in a row (40 channels: a block and a part of one), the int8 classifier; for
    `size` x `size` inputs."""
    torch.manual_seed(0)
    return torch.nn.Sequential(OrderedDict(
        conv1=torch.nn.Conv2d(1, 8, 3, padding=1), relu1=torch.nn.ReLU(),
        conv2=torch.nn.Conv2d(8, 40, 3, padding=1), bn2=torch.nn.BatchNorm2d(40), relu2=torch.nn.ReLU(),
        conv3=torch.nn.Conv2d(40, 12, 3, stride=2, padding=1), bn3=torch.nn.BatchNorm2d(12), relu3=torch.nn.ReLU(),
        flatten=torch.nn.Flatten(), classifier=torch.nn.Linear(12 * (size // 2) ** 2, 4),
    )).eval()  # fmt: skip


@pytest.fixture(scope="module")
def fused_build(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    x, y = samples(96)
    return compiler.compile(
        two_binary_convs(), x[:32], [("binarize", {"epochs": 1}), "quantize-int8", "fuse-sign"], train_data=(x, y),
        validation=samples(16, seed=4), out_dir=tmp_path_factory.mktemp("binarize") / "fused", progress=False,
    )  # fmt: skip


def test_fuse_sign_merges_a_binary_conv_with_the_sign_after_it(fused_build):
    kernel = {name: k.function for name, k in fused_build.generated.kernels.items()}
    ops = [(n.op, kernel[n.name]) for n in fused_build.graph.nodes]
    assert ops == [
        ("conv2d", "tml_conv2d_s8"), ("sign", "tml_binarize_s8"), ("conv2d_sign", "tml_conv2d_xnor_sign"),
        ("conv2d", "tml_conv2d_xnor"), ("flatten", "tml_flatten_s8"), ("fc", "tml_fc_s8"),
    ]  # fmt: skip
    fused = fused_build.graph.nodes[2]
    assert "fuse-sign" in fused_build.generated.kernels[fused.name].reason
    # the int8 output between the conv and its sign is gone; the sign's bits are the conv's output
    assert fused.outputs == [fused_build.graph.nodes[3].inputs[0]]
    conv = next(n for n in fused_build.float_graph.nodes if n.name == fused.name)
    assert set(fused_build.float_graph.tensors) - set(fused_build.graph.tensors) == {conv.outputs[0]}


def test_fused_model_c_equals_the_reference_on_the_host(fused_build):
    from tinyml.validation import validate

    result = validate(fused_build.out_dir)
    assert result["c_matches_reference"] is True and result["samples"] == 16


def test_the_fused_reference_gives_the_bits_of_the_pair():
    from tinyml_plugins.binarize.fuse import FUSED, fuse

    x, y = samples(96)
    graph = compiler.compile(two_binary_convs(), x[:32], [("binarize", {"epochs": 1}), "quantize-int8"],
                             train_data=(x, y), progress=False).graph  # fmt: skip
    fused = fuse(graph)
    node = next(n for n in fused.nodes if n.op == FUSED)
    inputs = np.random.default_rng(5).integers(-128, 128, size=(8, 8, 8, 1), dtype=np.int8)
    pair, merged = run_int8(graph, inputs), run_int8(fused, inputs)
    bits = merged[node.outputs[0]]
    assert 0.05 < (bits > 0).mean() < 0.95  # both signs occur: the comparison is not trivial
    np.testing.assert_array_equal(bits, pair[node.outputs[0]])
    np.testing.assert_array_equal(merged[fused.outputs[0]], pair[graph.outputs[0]])
    assert len(fused.nodes) == len(graph.nodes) - 1


def test_fuse_sign_tables_the_starting_counts_of_every_window_shape():
    """A 4x4 output with padding 1 has 16 windows in 9 shapes: fused all the same, its table holds 3 x 3 shapes,
    each with the planes of an even and an odd count of set bits; an option is refused in one paragraph."""
    from tinyml_plugins.binarize.fuse import FUSED, FuseSign
    from tinyml_plugins.binarize.starts import sign_levels

    rng = np.random.default_rng(3)
    x, y = rng.random((32, 1, 4, 4)).astype(np.float32), rng.integers(0, 4, 32)
    graph = compiler.compile(two_binary_convs(4), x, [("binarize", {"epochs": 1}), "quantize-int8"],
                             train_data=(x, y), progress=False).graph  # fmt: skip
    fused_graph = FuseSign().apply(graph, None)
    fused = next(n for n in fused_graph.nodes if n.op == FUSED)
    w = graph.tensors[fused.inputs[1]].data
    assert fused_graph.tensors[fused.inputs[0]].shape[1:3] == fused_graph.tensors[fused.outputs[0]].shape[1:3] == (4, 4)
    assert tuple(fused.attrs["padding"]) == (1, 1)
    starts = node_starts(fused, fused_graph)
    assert list(starts.row_class) == list(starts.column_class) == [0, 1, 1, 2]
    taps = int(np.prod(w.shape[1:]))
    assert starts.planes.shape == (3, 3, packing.words(w.shape[0]), 2, 4 * sign_levels(taps))
    with pytest.raises(RecipeError, match="when"):
        FuseSign.parse_options({"when": "always"}, "fuse-sign")


def test_fuse_sign_leaves_a_layer_whose_windows_take_too_many_shapes():
    """A 1x300 filter over 600 columns with padding 299 makes 300 window shapes along the row, more than the
    table's uint8 classes hold: that conv2d stays unfused, a 1x3 filter over the same row is fused."""
    from tinyml_plugins.binarize.fuse import fusable

    def conv_then_sign(kernel_w: int) -> tuple[Graph, Node]:
        out_w = 600 + 2 * (kernel_w - 1) - kernel_w + 1
        tensors = {
            "s": Tensor("s", (1, 1, 600, 32), "int8", scale=1.0, zero_point=0),
            "w": Tensor("w", (32, 1, kernel_w, 32), "int8", data=np.ones((32, 1, kernel_w, 32), np.int8),
                        scale=np.ones(32), encoding="binary"),
            "b": Tensor("b", (32,), "int32", data=np.zeros(32, np.int32)),
            "y": Tensor("y", (1, 1, out_w, 32), "int8", scale=1.0, zero_point=0),
            "t": Tensor("t", (32,), "int32", data=np.zeros(32, np.int32)),
            "z": Tensor("z", (1, 1, out_w, 32), "int8", scale=1.0, zero_point=0),
        }  # fmt: skip
        conv = Node("conv", "conv2d", ["s", "w", "b"], ["y"], {"stride": (1, 1), "padding": (0, kernel_w - 1)})
        return Graph(tensors, [conv, Node("sign", "sign", ["y", "t"], ["z"], {})], ["s"], ["z"]), conv

    graph, conv = conv_then_sign(300)
    assert fusable(conv, graph) is None
    graph, conv = conv_then_sign(3)
    assert fusable(conv, graph) is not None


def test_fuse_sign_before_quantization_is_one_paragraph():
    x, y = samples(16)
    with pytest.raises(RecipeError, match="list it after `quantize-int8`"):
        compiler.compile(two_binary_convs(), x, [("binarize", {"epochs": 1}), "fuse-sign", "quantize-int8"],
                         train_data=(x, y), progress=False)  # fmt: skip


def test_binary_layers_get_the_xnor_kernels_and_packed_weights(binary_build):
    kernel = {name: k.function for name, k in binary_build.generated.kernels.items()}
    ops = [(n.op, kernel[n.name]) for n in binary_build.graph.nodes]
    assert ops == [
        ("conv2d", "tml_conv2d_s8"), ("sign", "tml_binarize_s8"), ("conv2d", "tml_conv2d_xnor"),
        ("flatten", "tml_flatten_s8"), ("sign", "tml_binarize_s8"), ("fc", "tml_fc_xnor"), ("fc", "tml_fc_s8"),
    ]  # fmt: skip
    reasons = [binary_build.generated.kernels[n.name].reason for n in binary_build.graph.nodes]
    assert "bit-sliced" in reasons[2] and "packed 32 channels to a word" in reasons[1]
    conv = binary_build.graph.nodes[2]
    weight = binary_build.graph.tensors[conv.inputs[1]]
    assert weight.encoding == "binary" and packing.binary_magnitudes(weight.data) is not None
    assert binary_build.generated.weights[weight.name].nbytes == 4 * 9 * 8  # one block of 32 channels, 72 taps
    assert "__builtin_popcount" not in binary_build.generated.files["model.c"]


def test_binary_model_c_equals_the_reference_on_the_host(binary_build):
    from tinyml.validation import validate

    result = validate(binary_build.out_dir)
    assert result["c_matches_reference"] is True and result["samples"] == 16


def test_sign_op_is_exact_in_float_and_int8():
    from tinyml_plugins.binarize.sign import int8_threshold, sign

    x = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    assert sign(x, torch.tensor([0.0, 0.0, 0.5, 3.0])).tolist() == [[-1.0, 1.0, 1.0, -1.0]]
    # q >= threshold exactly when (q - zp) * scale >= t
    t = np.array([-1e9, -0.26, 0.0, 0.26, 1e9])
    q = int8_threshold(t, 0.1, 3)
    assert q.tolist() == [-128, 1, 3, 6, 128]


def test_the_first_and_last_layers_stay_int8_and_bad_options_are_one_paragraph():
    assert Binarize().choose_layers(small_cnn()) == ["conv2", "fc1"]
    with pytest.raises(RecipeError, match=r"names `conv1`, the model's first or last conv/linear layer"):
        Binarize({"layers": ["conv1"]}).choose_layers(small_cnn())
    with pytest.raises(RecipeError, match=r"names `conv9`, which is no conv/linear layer of the model"):
        Binarize({"layers": ["conv9"]}).choose_layers(small_cnn())
    with pytest.raises(RecipeError, match=r"technique 'binarize' options.epochs: Input should be greater"):
        Binarize({"epochs": 0})
    with pytest.raises(RecipeError, match="needs at least 3"):
        Binarize().choose_layers(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)))
    tiny_input = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
    with pytest.raises(RecipeError, match=r"`1` is a layer with 2 inputs per position"):
        Binarize().choose_layers(tiny_input)


def test_binarize_needs_training_data():
    from tinyml.errors import DataError

    with pytest.raises(DataError, match="needs labelled training data"):
        compiler.compile(small_cnn(), samples(8)[0], ["binarize", "quantize-int8"], progress=False)


def test_a_binary_activation_read_by_an_int8_layer_is_refused(binary_build):
    graph = binary_build.graph.copy()
    fc = graph.nodes[5]
    graph.tensors[fc.inputs[1]].encoding = "raw"
    graph.tensors[fc.inputs[1]].data[0, 0] = 5  # no longer +m/-m
    with pytest.raises(TinymlError, match=r"The binary activation `fc1.sign` \(from `fc1`\) is read by `fc1.fc`"):
        generate(graph, None, plugins.plugin_manager())
    graph.tensors[fc.inputs[1]].encoding = "binary"
    with pytest.raises(TinymlError, match="is marked binary but is not int8 weights of \\+m or -m"):
        generate(graph, None, plugins.plugin_manager())


# --- on the boards ----------------------------------------------------------------------------


def symbols_on_the_board(build: compiler.Build, board: str, folder: Path) -> set[str]:
    """Run `build` in QEMU on `board` (-O3): its outputs must equal the reference; the ELF's symbol names."""
    from elftools.elf.elffile import ELFFile

    from tinyml.board.boards import resolve_board
    from tinyml.board.project import ELF_NAME, build_firmware
    from tinyml.board.qemu import run_firmware

    graph = build.graph
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = np.random.default_rng(7).integers(-128, 128, size=(6, *shape), dtype=np.int8)
    firmware = build_firmware(build.out_dir, resolve_board(board), folder / board, x.reshape(6, -1),
                              optimization="-O3")  # fmt: skip
    result = run_firmware(firmware.out_dir, timeout=60)
    assert result.outputs_match_reference is True
    np.testing.assert_array_equal(result.outputs, run_int8(graph, x)[graph.outputs[0]].reshape(6, -1))
    with open(firmware.out_dir / ELF_NAME, "rb") as stream:
        return {s.name for s in ELFFile(stream).get_section_by_name(".symtab").iter_symbols()}


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["cortex-m3", "cortex-m4"])
def test_binary_model_runs_on_the_board(binary_build, board, tmp_path: Path):
    """The XNOR kernels in firmware (portable and DSP cores): outputs equal the reference, no __popcountsi2."""
    names = symbols_on_the_board(binary_build, board, tmp_path)
    assert "tml_conv2d_xnor" in names and "tml_fc_xnor" in names
    assert "__popcountsi2" not in names


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["cortex-m3", "cortex-m4"])
def test_fused_model_runs_on_the_board(fused_build, board, tmp_path: Path):
    names = symbols_on_the_board(fused_build, board, tmp_path)
    assert "tml_conv2d_xnor_sign" in names and "__popcountsi2" not in names


def binary_conv_chain(seed: int = 5) -> Graph:
    """sign with nearly every bit set, binary conv (171 -> 75 channels, 3x2, stride 2x1, padding 1x1), sign with
    mostly set bits, binary conv (75 -> 70 channels, 5x3, stride 1x2, padding 2x1): odd channel counts, partial
    blocks and words, windows of more set bits than one counting chunk takes (TML_XNOR_CHUNK, 1008), and a
    bias near the int32 limit, so that the fused layer has an exact block beside its fast ones."""
    rng = np.random.default_rng(seed)
    tensors = {"x": Tensor("x", (1, 9, 11, 171), "int8", scale=1.0, zero_point=0)}
    nodes = []
    source = "x"
    layers = [
        ("a", 75, (3, 2), (2, 1), (1, 1), (5, 12), (-128, -120)),
        ("b", 70, (5, 3), (1, 2), (2, 1), (5, 6), (-128, 0)),
    ]
    for name, out_c, kernel, stride, padding, out_hw, thresholds in layers:
        in_c = tensors[source].shape[-1]
        shape = (out_c, *kernel, in_c)
        weights = (rng.integers(1, 128, size=(out_c, 1, 1, 1)) * rng.choice([-1, 1], size=shape)).astype(np.int8)
        tensors[f"t{name}"] = Tensor(
            f"t{name}", (in_c,), "int32", data=rng.integers(*thresholds, in_c).astype(np.int32)
        )
        tensors[f"s{name}"] = Tensor(f"s{name}", tensors[source].shape, "int8", scale=1.0, zero_point=0)
        tensors[f"w{name}"] = Tensor(f"w{name}", shape, "int8", data=weights, scale=np.ones(out_c), encoding="binary")
        bias = rng.integers(-4096, 4096, out_c).astype(np.int32)
        bias[40] = 2**31 - 5000  # the accumulator may wrap: channel 40's block takes the exact path when fused
        tensors[f"b{name}"] = Tensor(f"b{name}", (out_c,), "int32", data=bias)
        tensors[f"y{name}"] = Tensor(f"y{name}", (1, *out_hw, out_c), "int8", scale=1.0, zero_point=-3)
        attrs = {
            "activation": "none", "act_min": -128, "act_max": 127, "stride": stride, "padding": padding,
            "multiplier": rng.integers(1 << 30, 1 << 31, out_c).astype(np.int32),
            "shift": np.full(out_c, -9, dtype=np.int32),
        }  # fmt: skip
        nodes.append(Node(f"sign{name}", "sign", [source, f"t{name}"], [f"s{name}"], {}))
        nodes.append(Node(f"conv{name}", "conv2d", [f"s{name}", f"w{name}", f"b{name}"], [f"y{name}"], attrs))
        source = f"y{name}"
    return Graph(tensors, nodes, ["x"], [source])


@pytest.mark.qemu
@pytest.mark.parametrize(("board", "optimization"), [("cortex-m4", "-O3"), ("cortex-m3", "-Os")])
@pytest.mark.parametrize("fused", [False, True])
def test_binary_convolutions_of_odd_shapes_run_on_the_board(board, optimization, fused, tmp_path: Path):
    """The Arm counting path on strides, padding, partial blocks and long windows, with the first convolution
    writing int8 or (fused with the sign after it) bits, built at two optimization levels: outputs equal the
    reference."""
    from tinyml import graphfile
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware
    from tinyml.manifest import write_manifest
    from tinyml_plugins.binarize.fuse import fuse

    graph = fuse(binary_conv_chain()) if fused else binary_conv_chain()
    target = resolve_board(board)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    generated = generate(graph, target, plugins.plugin_manager())
    convs = [generated.kernels[n.name].function for n in graph.nodes if n.op != "sign"]
    assert convs == ["tml_conv2d_xnor_sign" if fused else "tml_conv2d_xnor", "tml_conv2d_xnor"]
    for name, text in generated.files.items():
        (model_dir / name).write_text(text)
    graphfile.save_graph(graph, model_dir)
    write_manifest(model_dir, "model", {"board": target.name}, files=[p.name for p in model_dir.iterdir()])
    x = np.random.default_rng(8).integers(-128, 128, size=(3, 9 * 11 * 171), dtype=np.int8)
    firmware = build_firmware(model_dir, target, tmp_path / "firmware", x, optimization=optimization)
    result = run_firmware(firmware.out_dir, timeout=120)
    assert result.outputs_match_reference is True
    np.testing.assert_array_equal(result.outputs, run_int8(graph, x.reshape(3, 9, 11, 171))["yb"].reshape(3, -1))
