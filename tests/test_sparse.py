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
from tinyml_plugins.huffman.kernels import SPARSE_CROSSOVER

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPARSITIES = st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9, 0.97, 1.0])



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
            "row_counts": array("uint16_t", csr.row_counts), "row_sums": array("int32_t", csr.row_sums),
            "rows": csr.shape[0], "columns": csr.shape[1],
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
    np.testing.assert_array_equal(csr.row_sums, w.astype(np.int64).sum(axis=1))
    assert csr.nbytes == csr.nonzeros * (1 + csr.column_bytes) + 6 * rows + 32


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
    """Row counts that do not add up, two column arrays, or byte columns for rows past 256 are argument errors."""
    ffi, c = lib.ffi, lib.lib
    params = ffi.new("tml_fc_params *", {"input_offset": 0, "output_offset": 0, "act_min": -128, "act_max": 127})
    mult, shift = np.full(3, 1 << 30, np.int32), np.zeros(3, np.int32)
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    out = np.zeros(3, np.int8)

    def run(weights: object, in_f: int) -> int:
        x = np.zeros(in_f, np.int8)
        return c.tml_sparse_fc_s8(params, quant, in_f, ffi.from_buffer("int8_t[]", x), weights, ffi.NULL, 3,
                                  ffi.from_buffer("int8_t[]", out))  # fmt: skip

    narrow, _keep = c_sparse(lib, encode_csr(pruned(np.random.default_rng(4), (3, 10), 0.5)))
    assert run(narrow, 10) == 0
    narrow.nonzeros += 1
    assert run(narrow, 10) != 0
    narrow.nonzeros -= 1
    narrow.columns16 = ffi.cast("uint16_t *", narrow.columns8)
    assert run(narrow, 10) != 0
    wide, _keep2 = c_sparse(lib, encode_csr(pruned(np.random.default_rng(5), (3, 300), 0.5)))
    assert run(wide, 300) == 0
    wide.columns8, wide.columns16 = ffi.cast("uint8_t *", wide.columns16), ffi.NULL
    assert run(wide, 300) != 0


# --- the choice and a whole model ---------------------------------------------------------------


def prune_(layer: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """Zero the smallest-magnitude `sparsity` of the layer's weights, in place."""
    with torch.no_grad():
        w = layer.weight
        k = int(round(sparsity * w.numel()))
        if k:
            w.mul_(w.abs() > w.abs().flatten().kthvalue(k).values)
    return layer


def no_zeros(layer: torch.nn.Module) -> torch.nn.Module:
    """Weights of magnitude 0.1..0.2 in every row: at least 63 in int8, so not one is zero."""
    with torch.no_grad():
        w = layer.weight
        w.copy_(torch.where(w < 0, -1.0, 1.0) * (0.1 + 0.1 * torch.rand_like(w)))
    return layer


def model() -> torch.nn.Module:
    """Every case of the choice: a 3x3 conv, 1x1 convs and fc layers below and past their crossovers."""
    torch.manual_seed(0)
    return torch.nn.Sequential(OrderedDict([
        ("conv3x3", prune_(torch.nn.Conv2d(1, 8, 3, padding=1), 0.9)),  # sparse, but no sparse kernel
        ("relu1", torch.nn.ReLU()),
        ("pw_sparse", prune_(torch.nn.Conv2d(8, 16, 1), 0.9)),
        ("relu2", torch.nn.ReLU()),
        ("pw_dense", no_zeros(torch.nn.Conv2d(16, 8, 1))),  # no zero weight: below every crossover
        ("flatten", torch.nn.Flatten()),
        ("fc_sparse", prune_(torch.nn.Linear(8 * 8 * 8, 20), 0.9)),  # 512 columns: two bytes each
        ("relu3", torch.nn.ReLU()),
        ("fc_dense", no_zeros(torch.nn.Linear(20, 10))),  # no zero weight: below every crossover
    ])).eval()  # fmt: skip


def calibration(n: int = 32) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def speed_build(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    out = tmp_path_factory.mktemp("sparse") / "model"
    return compiler.compile(model(), calibration(), ["quantize-int8", ("huffman", {"encoding": "speed"})],
                            out_dir=out, progress=False)  # fmt: skip


def sparsity(build: compiler.Build, layer: str) -> float:
    node = next(n for n in build.graph.nodes if n.name == layer)
    w = build.graph.tensors[node.inputs[1]].data
    return 1.0 - np.count_nonzero(w) / w.size


def test_speed_picks_the_sparse_kernels_past_the_crossover(speed_build):
    graph, kernels = speed_build.graph, speed_build.generated.kernels
    functions = {n.name: kernels[n.name].function for n in graph.nodes if n.op in ("fc", "conv2d")}
    assert functions == {
        "conv3x3": "tml_conv2d_s8", "pw_sparse": "tml_sparse_conv1x1_s8", "pw_dense": "tml_conv2d_s8",
        "fc_sparse": "tml_sparse_fc_s8", "fc_dense": "tml_fc_s8",
    }  # fmt: skip
    # the choice is the measured crossover, not an accident of these sparsities
    crossover = SPARSE_CROSSOVER["portable"]  # compiled without a board: the portable kernels
    assert sparsity(speed_build, "pw_sparse") > crossover["conv1x1"] >= sparsity(speed_build, "pw_dense")
    assert sparsity(speed_build, "fc_sparse") > crossover["fc"] >= sparsity(speed_build, "fc_dense")
    assert sparsity(speed_build, "conv3x3") > 0.5
    encodings = {n.name: graph.tensors[n.inputs[1]].encoding for n in graph.nodes if n.op in ("fc", "conv2d")}
    assert encodings["fc_sparse"] == encodings["pw_sparse"] == "sparse-csr"
    assert {encodings[k] for k in ("conv3x3", "pw_dense", "fc_dense")} == {"raw"}
    assert "tml_sparse_weights" in speed_build.generated.files["model_data.c"]
    assert speed_build.generated.weights["fc_sparse.weight"].nbytes < graph.tensors["fc_sparse.weight"].nbytes


@pytest.mark.parametrize(("layer", "kind"), [("fc_dense", "fc"), ("pw_dense", "conv1x1")])
def test_a_layer_just_at_the_crossover_stays_dense(layer, kind):
    from tinyml.technique import Context
    from tinyml_plugins.huffman.technique import Huffman

    graph = compiler.compile(model(), calibration(), ["quantize-int8"], progress=False).graph
    w = graph.tensors[f"{layer}.weight"]
    shape, size = w.data.shape, w.data.size
    at = int(np.floor(SPARSE_CROSSOVER["portable"][kind] * size))  # as many zeros as the crossover allows, not past it
    for zeros, expected in ((at, "raw"), (at + 1, "sparse-csr")):
        flat = np.ones(size, np.int8)
        flat[:zeros] = 0
        w.data = flat.reshape(shape)
        assert Huffman({"encoding": "speed"}).apply(graph, Context()).tensors[w.name].encoding == expected


def test_the_model_equals_the_reference_on_the_host(speed_build):
    graph = speed_build.graph
    run = host.load_model(speed_build.out_dir)
    x = np.random.default_rng(6).integers(-128, 128, size=(12, 8, 8, 1), dtype=np.int8)
    np.testing.assert_array_equal(run(x), run_int8(graph, x)[graph.outputs[0]].reshape(12, -1))


def test_sparse_csr_on_a_wider_convolution_is_one_paragraph():
    bad = ("huffman", {"layers": {"conv3x3": "sparse-csr"}})
    with pytest.raises(RecipeError, match=r"layer `conv3x3` as sparse-csr, but it is a 3x3 convolution.*`layers`"):
        compiler.compile(model(), calibration(), ["quantize-int8", bad], progress=False)
    graph = compiler.compile(model(), calibration(), ["quantize-int8"], progress=False).graph
    graph.tensors["conv3x3.weight"].encoding = "sparse-csr"  # past the technique: the kernel choice refuses it
    from tinyml import plugins
    from tinyml.codegen import generate

    with pytest.raises(TinymlError, match=r"Layer `conv3x3` \(conv2d, 3x3 kernel\) has sparse-csr weights"):
        generate(graph, None, plugins.plugin_manager())


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["cortex-m3", "cortex-m4"])
def test_sparse_kernels_run_on_the_board(speed_build, board, tmp_path: Path):
    """tml_sparse_fc_s8 and tml_sparse_conv1x1_s8 in firmware: the board's outputs equal the numpy reference."""
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware

    graph = speed_build.graph
    x = np.random.default_rng(7).integers(-128, 128, size=(4, 8, 8, 1), dtype=np.int8)
    firmware = build_firmware(speed_build.out_dir, resolve_board(board), tmp_path / board, x.reshape(4, -1))
    result = run_firmware(firmware.out_dir, timeout=60)
    assert result.outputs_match_reference is True
    np.testing.assert_array_equal(result.outputs, run_int8(graph, x)[graph.outputs[0]].reshape(4, -1))


def test_a_dsp_board_needs_more_zeros_for_the_sparse_kernels():
    """The crossover follows the dense kernels the board runs: SMLAD makes dense fc cheaper per weight."""
    from tinyml.board.boards import resolve_board
    from tinyml.technique import Context
    from tinyml_plugins.huffman.kernels import kernel_path
    from tinyml_plugins.huffman.technique import Huffman

    assert kernel_path(resolve_board("stm32")) == "dsp" and kernel_path(resolve_board("cortex-m3")) == "portable"
    assert kernel_path(None) == "portable"
    graph = compiler.compile(model(), calibration(), ["quantize-int8"], progress=False).graph
    w = graph.tensors["fc_sparse.weight"]
    flat = np.ones(w.data.size, np.int8)
    flat[: w.data.size // 2] = 0  # 50% zeros: past the portable crossover, below the DSP one
    w.data = flat.reshape(w.data.shape)
    on = {name: Huffman({"encoding": "speed"}).apply(graph, Context(board=resolve_board(name))) for name in
          ("cortex-m3", "stm32")}  # fmt: skip
    assert on["cortex-m3"].tensors[w.name].encoding == "sparse-csr"
    assert on["stm32"].tensors[w.name].encoding == "raw"
