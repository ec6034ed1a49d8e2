"""The winograd plugin: tml_conv2d_winograd_s8 gives tml_conv2d_s8's bytes, and the technique picks it per layer.

Host tests call both kernels through cffi over drawn shapes, paddings, zero points and
requantizations; the QEMU tests run drawn chains of convolutions (bench/winograd.py's strategy) on
cortex-m4 (DSP path) and cortex-m3 (portable path), and a compiled model on cortex-m4.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinyml import compiler, host
from tinyml.board.boards import resolve_board
from tinyml.errors import RecipeError, TinymlError
from tinyml.reference import run_int8
from tinyml.reference.conv import conv2d_s8
from tinyml_plugins.winograd import kernels
from tinyml_plugins.winograd.transform import (
    channels4,
    max_direct_sum,
    stored_bytes,
    transformed_weights,
    weight_transform,
    winograd_sums,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BENCH = Path(__file__).resolve().parent.parent / "bench" / "winograd.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    import sys

    sys.path.insert(0, str(BENCH.parent))  # the script imports its sibling bench/layers.py
    try:
        spec = importlib.util.spec_from_file_location("winograd_bench", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def direct_sums(x: np.ndarray, w: np.ndarray, padding: tuple[int, int], offset: int) -> np.ndarray:
    """sum((x + offset) * w) per output, padding 0, as int64 (the direct convolution before the bias)."""
    ph, pw = padding
    h, w_, c = x.shape
    d = np.zeros((h + 2 * ph, w_ + 2 * pw, c), np.int64)
    d[ph : ph + h, pw : pw + w_] = x.astype(np.int64) + offset
    windows = np.lib.stride_tricks.sliding_window_view(d, (3, 3), axis=(0, 1))  # [OH, OW, C, 3, 3]
    return np.einsum("yxcab,oabc->yxo", windows, w.astype(np.int64))


int8s = st.sampled_from([-128, 127]) | st.integers(-128, 127)


@settings(max_examples=100, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), in_c=st.integers(1, 5), out_c=st.integers(1, 4),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), zero_point=int8s,
       seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_integer_transforms_give_four_times_the_direct_sums(h, w, in_c, out_c, pad, zero_point, seed):
    assume(h + 2 * pad[0] >= 3 and w + 2 * pad[1] >= 3)
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (h, w, in_c), dtype=np.int8)
    weights = rng.choice(np.array([-128, 127, 0, -1, 1], np.int8), (out_c, 3, 3, in_c))
    sums = direct_sums(x, weights, pad, -zero_point)
    np.testing.assert_array_equal(winograd_sums(x, weights, pad, -zero_point), 4 * sums)


def test_transformed_weights_fit_int16_with_their_bound_and_layout():
    extreme = np.full((2, 3, 3, 5), -128, np.int8)
    extreme[1] = 127
    u = weight_transform(extreme)
    assert np.abs(u).max() == 9 * 128  # the bound tml_winograd.h states, reached
    stored = transformed_weights(extreme)
    assert stored.dtype == np.int16 and stored.shape == (2, 16, channels4(5))
    assert stored.nbytes == stored_bytes(extreme) == 2 * 16 * 8 * 2
    # a group of four channels is stored c0, c2, c1, c3; the second group holds channel 4 and three zeros
    np.testing.assert_array_equal(stored[..., :4], weight_transform(extreme).reshape(16, 2, 5)[..., [0, 2, 1, 3]]
                                  .transpose(1, 0, 2))  # fmt: skip
    np.testing.assert_array_equal(stored[..., 4], weight_transform(extreme).reshape(16, 2, 5)[..., 4].T)
    np.testing.assert_array_equal(stored[..., 5:], 0)


def call_conv(lib, kernel: str, x, weights, bias, mult, shift, pad, params_fields) -> tuple[int, np.ndarray]:
    """Run tml_conv2d_s8 or tml_conv2d_winograd_s8 through cffi; (status, output)."""
    ffi, c = lib.ffi, lib.lib
    h, w, in_c = x.shape
    out_c = len(bias)
    out_h, out_w = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    params = ffi.new("tml_conv_params *", {"stride_h": 1, "stride_w": 1, "pad_h": pad[0], "pad_w": pad[1],
                                           "depth_multiplier": 1, **params_fields})  # fmt: skip
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    in_shape, f_shape = ffi.new("tml_shape *", [h, w, in_c]), ffi.new("tml_shape *", [3, 3, in_c])
    o_shape = ffi.new("tml_shape *", [out_h, out_w, out_c])
    out = np.zeros((out_h, out_w, out_c), np.int8)
    xb, bb, ob = (ffi.from_buffer(t, a) for t, a in (("int8_t[]", x), ("int32_t[]", bias), ("int8_t[]", out)))
    if kernel == "direct":
        status = c.tml_conv2d_s8(params, quant, in_shape, xb, f_shape, ffi.from_buffer("int8_t[]", weights), bb,
                                 o_shape, ob, ffi.NULL)  # fmt: skip
        return status, out
    scratch = np.zeros(c.tml_conv2d_winograd_s8_scratch_bytes(in_shape, o_shape), np.int8)
    assert len(scratch) == kernels.scratch_bytes(in_c)  # the planner's figure is the C's
    status = c.tml_conv2d_winograd_s8(params, quant, in_shape, xb, f_shape,
                                      ffi.from_buffer("int16_t[]", transformed_weights(weights)), bb, o_shape, ob,
                                      ffi.from_buffer("int8_t[]", scratch))  # fmt: skip
    return status, out


@SETTINGS
@given(h=st.integers(1, 9), w=st.integers(1, 9), in_c=st.integers(1, 9), out_c=st.integers(1, 7),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), zero_points=st.tuples(int8s, int8s),
       shifts=st.tuples(st.integers(-31, 0), st.integers(-31, 4)), clamp=st.tuples(int8s, int8s),
       seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_winograd_equals_the_direct_kernel_on_the_host(lib, h, w, in_c, out_c, pad, zero_points, shifts, clamp, seed):
    assume(h + 2 * pad[0] >= 3 and w + 2 * pad[1] >= 3)
    rng = np.random.default_rng(seed)
    values = [-128, 127] if seed % 4 == 0 else list(range(-128, 128))  # sometimes only the extremes
    x = rng.choice(np.array(values, np.int8), (h, w, in_c))
    weights = rng.choice(np.array([-128, 127, 0, *rng.integers(-128, 128, 5)], np.int8), (out_c, 3, 3, in_c))
    bias = rng.choice([rng.integers(-(2**31), 2**31), rng.integers(-5000, 5000)], out_c).astype(np.int32)
    mult = rng.integers(2**30, 2**31, out_c).astype(np.int32)
    shift = rng.integers(min(shifts), max(shifts) + 1, out_c).astype(np.int32)
    fields = {"input_offset": -zero_points[0], "output_offset": zero_points[1], "act_min": min(clamp),
              "act_max": max(clamp)}  # fmt: skip
    status, expected = call_conv(lib, "direct", x, weights, bias, mult, shift, pad, fields)
    assert status == 0
    status, got = call_conv(lib, "winograd", x, weights, bias, mult, shift, pad, fields)
    assert status == 0
    np.testing.assert_array_equal(got, expected)
    reference = conv2d_s8(x, weights, bias, stride=(1, 1), padding=pad, input_offset=-zero_points[0],
                          output_offset=zero_points[1], multiplier=mult, shift=shift, act_min=min(clamp),
                          act_max=max(clamp))  # fmt: skip
    np.testing.assert_array_equal(got, reference)


def test_bad_arguments_are_refused(lib):
    ffi, c = lib.ffi, lib.lib
    x = np.zeros((4, 4, 2), np.int8)
    u = transformed_weights(np.zeros((1, 3, 3, 2), np.int8))
    one = np.array([2**30], np.int32)
    params = ffi.new("tml_conv_params *", {"stride_h": 1, "stride_w": 1, "pad_h": 0, "pad_w": 0, "act_min": -128,
                                           "act_max": 127})  # fmt: skip
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", one),
                                             "shift": ffi.from_buffer("int32_t[]", np.zeros(1, np.int32))})  # fmt: skip
    in_shape, f_shape = ffi.new("tml_shape *", [4, 4, 2]), ffi.new("tml_shape *", [3, 3, 2])
    o_shape = ffi.new("tml_shape *", [2, 2, 1])
    out = np.full((2, 2, 1), 9, np.int8)
    scratch = np.zeros(kernels.scratch_bytes(2), np.int8)
    args = [params, quant, in_shape, ffi.from_buffer("int8_t[]", x), f_shape, ffi.from_buffer("int16_t[]", u),
            ffi.NULL, o_shape, ffi.from_buffer("int8_t[]", out), ffi.from_buffer("int8_t[]", scratch)]  # fmt: skip
    assert c.tml_conv2d_winograd_s8(*args) == 0
    assert c.tml_conv2d_winograd_s8(*args[:-1], ffi.NULL) != 0  # no scratch
    params.stride_h = 2
    assert c.tml_conv2d_winograd_s8(*args) != 0
    params.stride_h = 1
    f_shape.h = 5
    assert c.tml_conv2d_winograd_s8(*args) != 0
    f_shape.h = 3
    o_shape.w = 3  # does not fit the input
    out[:] = 9
    assert c.tml_conv2d_winograd_s8(*args) != 0
    assert (out == 9).all()  # nothing written


# --- the technique, the kernel choice and whole models -------------------------------------------


def cnn() -> torch.nn.Module:
    """Two 3x3 stride-1 convolutions the plugin may take, a stride-2 one it may not."""
    torch.manual_seed(2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    ).eval()  # fmt: skip


def calibration(n: int = 16) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, 4, 10, 10)).astype(np.float32)


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    """The model compiled for cortex-m4 with the recipe ["quantize-int8", "winograd"]."""
    out = tmp_path_factory.mktemp("winograd") / "cortex-m4"
    return compiler.compile(cnn(), calibration(), ["quantize-int8", "winograd"], board=resolve_board("cortex-m4"),
                            out_dir=out, progress=False)  # fmt: skip


def test_a_recipe_with_winograd_compiles_and_equals_the_reference_on_the_host(cnn_build):
    graph, generated = cnn_build.graph, cnn_build.generated
    chosen = [generated.kernels[node.name] for node in graph.nodes]
    assert [k.function for k in chosen[:3]] == [kernels.FUNCTION, kernels.FUNCTION, "tml_conv2d_s8"]
    board = cnn_build.board.name
    for kernel in chosen[:2]:
        assert kernel.reason.startswith("Winograd F(2x2,3x3): predicted ")
        assert f"x fewer instructions than tml_conv2d_s8 on {board}" in kernel.reason
    for node in graph.nodes[:2]:  # transformed weights in flash, their scratch in the plan
        weights = graph.tensors[node.inputs[1]]
        assert generated.weights[weights.name].nbytes == stored_bytes(weights.data)
        assert generated.plan.sizes[f"scratch:{node.name}"] == kernels.scratch_bytes(weights.shape[-1])
    page = (cnn_build.out_dir / "report.html").read_text()
    assert kernels.FUNCTION in page and "Winograd F(2x2,3x3): predicted" in page
    model = host.load_model(cnn_build.out_dir)
    x = np.random.default_rng(5).integers(-128, 128, size=(6, 10, 10, 4), dtype=np.int8)
    np.testing.assert_array_equal(model(x), run_int8(graph, x)[graph.outputs[0]].reshape(6, -1))


@pytest.mark.qemu
def test_a_recipe_with_winograd_equals_the_reference_on_the_board(cnn_build, tmp_path: Path):
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware

    graph = cnn_build.graph
    x = np.random.default_rng(7).integers(-128, 128, size=(3, 10, 10, 4), dtype=np.int8)
    firmware = build_firmware(cnn_build.out_dir, cnn_build.board, tmp_path / "fw", x.reshape(3, -1))
    result = run_firmware(firmware.out_dir, timeout=60)
    assert result.outputs_match_reference is True
    np.testing.assert_array_equal(result.outputs, run_int8(graph, x)[graph.outputs[0]].reshape(3, -1))


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["cortex-m4", "cortex-m3"])
def test_drawn_chains_equal_the_reference_on_the_board(bench, board, tmp_path: Path):
    """Chains of 3x3 convolutions with any padding and zero points, every layer on the Winograd kernel."""

    @settings(max_examples=3, derandomize=True, database=None, deadline=None)
    @given(chain=bench.chains())
    def check(chain: dict) -> None:
        graph = bench.chain_graph(chain)
        bench.check_on_board(graph, bench.chain_inputs(graph, seed=1), board, tmp_path)

    check()


def test_when_faster_follows_the_cost_model_and_when_always_takes_every_eligible_layer():
    from tinyml.technique import Context
    from tinyml_plugins.winograd.technique import Winograd

    graph = compiler.compile(cnn(), calibration(), progress=False).graph
    conv1, conv2, conv3 = graph.nodes[:3]
    m4 = resolve_board("cortex-m4")
    for node in (conv1, conv2):
        assert kernels.predicted_speedup(node, graph, m4) > 1
    marked = Winograd().apply(graph, Context(board=m4))
    assert [marked.tensors[n.inputs[1]].encoding for n in (conv1, conv2, conv3)] == ["winograd", "winograd", "raw"]
    assert graph.tensors[conv1.inputs[1]].encoding == "raw"  # the technique copies the graph
    # a layer the model predicts slower (one output: a tile computes four) stays direct unless asked
    tiny = kernels.ConvShape(1, 1, 3, 4)
    direct, winograd = kernels.predicted_instructions(tiny, m4)
    assert winograd > direct
    only = Winograd({"layers": [conv2.name]}).apply(graph, Context(board=m4))
    assert [only.tensors[n.inputs[1]].encoding for n in (conv1, conv2)] == ["raw", "winograd"]


def test_eligibility_says_why():
    graph = compiler.compile(cnn(), calibration(), progress=False).graph
    conv1, _, conv3, _, fc = graph.nodes
    assert kernels.ineligible(conv1, graph) is None
    assert kernels.ineligible(conv3, graph) == "its stride is 2x2, not 1"
    assert kernels.ineligible(fc, graph) == "it is a fc layer, not a conv2d"
    w = graph.tensors[conv1.inputs[1]].data
    assert 4 * max_direct_sum(w, 128) < 2**31


def test_bad_options_are_one_paragraph():
    model, data = cnn(), calibration()
    with pytest.raises(RecipeError, match=r"`layers` names 'conv9', which is no conv2d layer.*its conv2d layers are"):
        compiler.compile(model, data, ["quantize-int8", ("winograd", {"layers": ["conv9"]})], progress=False)
    stride2 = compiler.compile(model, data, progress=False).graph.nodes[2].name
    with pytest.raises(RecipeError, match=rf"names '{stride2}', which cannot run Winograd.*stride is 2x2, not 1"):
        compiler.compile(model, data, ["quantize-int8", ("winograd", {"layers": [stride2]})], progress=False)
    with pytest.raises(RecipeError, match=r"winograd.*when"):
        compiler.compile(model, data, ["quantize-int8", ("winograd", {"when": "sometimes"})], progress=False)
    with pytest.raises(RecipeError, match="after `quantize-int8`"):
        compiler.compile(model, data, ["winograd", "quantize-int8"], progress=False)


def test_weights_marked_for_a_layer_that_cannot_run_it_are_refused():
    from tinyml import plugins
    from tinyml.codegen import generate

    graph = compiler.compile(cnn(), calibration(), progress=False).graph
    stride2 = graph.nodes[2]
    graph.tensors[stride2.inputs[1]].encoding = "winograd"
    with pytest.raises(TinymlError, match=rf"Layer `{stride2.name}` has weights stored for Winograd.*stride is 2x2"):
        generate(graph, None, plugins.plugin_manager())


def test_tinyml_plugins_lists_it_with_its_hooks():
    import json

    from click.testing import CliRunner

    from tinyml.cli import main

    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.stderr
    hooks = {info["name"]: info["hooks"] for info in json.loads(result.stdout)}["winograd"]
    for hook in ("tinyml_techniques", "tinyml_select_kernel", "tinyml_encode_weights", "tinyml_kernel_sources"):
        assert hook in hooks
