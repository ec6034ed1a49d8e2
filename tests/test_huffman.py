"""The huffman plugin: weight encodings round-trip exactly in Python and in C, fused kernels equal the raw ones.

The C decoders and kernels are compiled for the host through `tinyml.host.build_kernels()` (the
plugin header's cdef block); the compiled MLP runs on the host and in QEMU on cortex-m3 and
cortex-m4, its outputs checked against the numpy reference.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tinyml import compiler, host
from tinyml.errors import RecipeError, TinymlError
from tinyml.reference import run_int8
from tinyml_plugins.huffman import codes
from tinyml_plugins.huffman.codes import CorruptStreamError, Encoded, decode, encode
from tinyml_plugins.huffman.kernels import READER_BYTES, conv2d_scratch_bytes, fc_scratch_bytes, layer_scratch_bytes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])



# --- encoded tensors in C ---------------------------------------------------------------------


def c_weights(lib: host.HostLibrary, e: Encoded) -> tuple[object, list[object]]:
    """A `tml_huffman_weights` for `e`, with every array it points to kept alive in the returned list."""
    ffi = lib.ffi
    keep: list[object] = []

    def table(t: codes.HuffmanTable | None) -> object:
        if t is None or not t.symbols:
            return ffi.NULL
        count, symbols = ffi.new("uint16_t[]", list(t.count)), ffi.new("uint8_t[]", list(t.symbols))
        c = ffi.new("tml_huffman_table *", {"count": count, "symbols": symbols, "max_bits": len(t.count) - 1})
        keep.extend([count, symbols, c])
        return c

    stream = ffi.new("uint8_t[]", e.stream)
    codebook = ffi.new("int8_t[]", [int(v) for v in e.codebook])
    keep += [stream, codebook]
    w = ffi.new(
        "tml_huffman_weights *",
        {
            "stream": stream, "codebook": codebook, "index_code": table(e.index_table),
            "gap_code": table(e.gap_table), "count": e.count, "entries": e.entries,
            "codebook_size": len(e.codebook), "stream_bytes": len(e.stream), "index_bits": e.index_bits,
            "gap_bits": e.gap_bits,
        },
    )  # fmt: skip
    keep.append(w)
    return w, keep


def c_decode(lib: host.HostLibrary, e: Encoded, chunks: list[int] | None = None) -> tuple[int, np.ndarray]:
    """(status, values) from `tml_huffman_decode_s8`, or from `tml_huffman_read_s8` in `chunks` of weights."""
    ffi = lib.ffi
    w, _keep = c_weights(lib, e)
    out = np.zeros(e.count, dtype=np.int8)
    reader = ffi.new("tml_huffman_reader *")
    if chunks is None:
        return lib.lib.tml_huffman_decode_s8(w, ffi.from_buffer("int8_t[]", out), reader), out
    status = lib.lib.tml_huffman_reader_init(reader, w)
    start = 0
    for n in chunks:
        if status != 0:
            break
        status = lib.lib.tml_huffman_read_s8(reader, ffi.from_buffer("int8_t[]", out[start:]), n)
        start += n
    return status, out


# --- round trips ------------------------------------------------------------------------------


@st.composite
def layers(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Int8 weights over a codebook of 1..256 values (index widths 1..8), a share of them zero."""
    bits = draw(st.integers(1, 8))
    size = draw(st.integers(1, 1 << bits))
    codebook = np.asarray(draw(st.lists(st.integers(-128, 127), min_size=size, max_size=size, unique=True)), np.int8)
    n = draw(st.integers(1, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    skew = draw(st.floats(0.0, 3.0))  # 0: uniform indices; larger: a few values dominate (Huffman wins)
    p = np.exp(-skew * np.arange(size))
    values = codebook[rng.choice(size, size=n, p=p / p.sum())]
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
    if sparsity:
        values = np.where(rng.random(n) < sparsity, 0, values).astype(np.int8)
        codebook = np.union1d(codebook, [0]).astype(np.int8)
    return values, codebook


KINDS = st.sampled_from(codes.ENCODINGS)


@SETTINGS
@given(layer=layers(), kind=KINDS, gap_bits=st.one_of(st.none(), st.integers(1, 8)))
@example(layer=(np.full(50, 7, np.int8), np.array([7], np.int8)), kind="huffman", gap_bits=None)  # one symbol
@example(layer=(np.zeros(300, np.int8), None), kind="sparse", gap_bits=None)  # all zeros
@example(layer=(np.zeros(300, np.int8), None), kind="huffman", gap_bits=None)
@example(layer=(np.eye(1, 300, 299, dtype=np.int8)[0], None), kind="sparse", gap_bits=3)  # one nonzero, far
@example(layer=(np.eye(1, 300, 0, dtype=np.int8)[0] * -128, None), kind="huffman", gap_bits=1)
@example(layer=(np.eye(1, 8, 7, dtype=np.int8)[0], None), kind="sparse", gap_bits=1)  # gaps overflow width 1
def test_python_and_c_decode_what_was_encoded(lib, layer, kind, gap_bits):
    values, codebook = layer
    gap_bits = gap_bits if kind != "packed" else None
    encoded = encode(values, codebook, kind, gap_bits)
    np.testing.assert_array_equal(decode(encoded), values)
    status, out = c_decode(lib, encoded)
    assert status == 0
    np.testing.assert_array_equal(out, values)


@SETTINGS
@given(layer=layers(), kind=KINDS, data=st.data())
def test_c_decodes_row_by_row(lib, layer, kind, data):
    """The fused kernels read a row or filter at a time; any split gives the same weights."""
    values, codebook = layer
    encoded = encode(values, codebook, kind)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(values) - 1), max_size=8)) if len(values) > 1 else [])
    chunks = np.diff([0, *cuts, len(values)]).tolist()
    status, out = c_decode(lib, encoded, chunks)
    assert status == 0
    np.testing.assert_array_equal(out, values)


def test_index_widths_and_fillers():
    assert [codes.bits_for(n) for n in (1, 2, 3, 4, 5, 128, 129, 256)] == [1, 1, 2, 2, 3, 7, 8, 8]
    idx = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2])  # a nonzero after 7 zeros, gap width 2 (max 3)
    gaps, indices = codes.sparse_entries(idx, zero_index=0, gap_bits=2)
    assert gaps.tolist() == [3, 3, 3] and indices.tolist() == [0, 1, 2]  # 3 zeros + filler zero, 3 zeros + 1, 3 + 2


def test_huffman_codes_are_canonical_and_length_limited():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    symbols = np.repeat(np.arange(30), fib)  # Fibonacci frequencies: an unlimited code would be 29 bits long
    table = codes.huffman_table(symbols)
    assert len(table.count) - 1 <= codes.MAX_CODE_BITS  # the optimal code would need 29 bits
    assigned = table.codes()
    # prefix-free: no code is the start of another
    strings = [format(c, f"0{n}b") for c, n in assigned.values()]
    assert not any(a != b and b.startswith(a) for a in strings for b in strings)
    encoded = encode(symbols.astype(np.int8), None, "huffman")
    np.testing.assert_array_equal(decode(encoded), symbols)


def test_huffman_beats_fixed_width_on_skewed_indices():
    rng = np.random.default_rng(0)
    values = rng.choice(np.arange(-8, 8, dtype=np.int8), size=5000, p=np.r_[[0.6], np.full(15, 0.4 / 15)])
    assert encode(values, None, "huffman").nbytes < 0.8 * encode(values, None, "packed").nbytes


def test_corrupt_streams_are_refused(lib):
    values = np.arange(-50, 50, dtype=np.int8)
    for kind in codes.ENCODINGS:
        encoded = encode(values, None, kind)
        cut = Encoded(**{**encoded.__dict__, "stream": encoded.stream[: len(encoded.stream) // 2] + b"\0"})
        with pytest.raises(CorruptStreamError):
            decode(cut)
        assert c_decode(lib, cut)[0] != 0
    bad = encode(values, None, "packed")
    bad = Encoded(**{**bad.__dict__, "codebook": bad.codebook[:50]})  # indices 50..99 point past the codebook
    with pytest.raises(CorruptStreamError):
        decode(bad)
    assert c_decode(lib, bad)[0] != 0


def test_values_outside_the_codebook_are_refused():
    with pytest.raises(ValueError, match=r"\[3\] are not in the codebook"):
        encode(np.array([1, 2, 3], np.int8), np.array([1, 2], np.int8), "packed")


# --- fused kernels against the raw ones -------------------------------------------------------


def requantization(rng: np.random.Generator, channels: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        rng.integers(1 << 29, (1 << 31) - 1, size=channels, dtype=np.int32),
        rng.integers(-12, 0, size=channels, dtype=np.int32),
    )


def test_the_decoder_state_fits_the_scratch_python_gives_it(lib):
    """The reader lives in the fused kernels' scratch: Python's size is the C's, and holds the struct."""
    assert lib.lib.tml_huffman_reader_bytes() == lib.lib.TML_HUFFMAN_READER_BYTES == READER_BYTES
    assert lib.ffi.sizeof("tml_huffman_reader") <= READER_BYTES and READER_BYTES % 8 == 0


@SETTINGS
@given(
    in_f=st.integers(1, 80), out_f=st.integers(1, 40), kind=KINDS, seed=st.integers(0, 2**32 - 1),
    sparsity=st.sampled_from([0.0, 0.7, 1.0]), bits=st.integers(1, 8),
)  # fmt: skip
def test_fused_fc_equals_the_raw_kernel(lib, in_f, out_f, kind, seed, sparsity, bits):
    ffi, c = lib.ffi, lib.lib
    rng = np.random.default_rng(seed)
    codebook = rng.choice(np.arange(-128, 128), size=1 << bits, replace=False).astype(np.int8)
    w = rng.choice(codebook, size=(out_f, in_f))
    w = np.where(rng.random(w.shape) < sparsity, 0, w).astype(np.int8)
    x = rng.integers(-128, 128, size=in_f, dtype=np.int8)
    bias = rng.integers(-5000, 5000, size=out_f, dtype=np.int32)
    mult, shift = requantization(rng, out_f)
    params = ffi.new("tml_fc_params *", {"input_offset": int(rng.integers(-127, 129)), "output_offset": 3,
                                         "act_min": -128, "act_max": 127})  # fmt: skip
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    xb, bb = ffi.from_buffer("int8_t[]", x), ffi.from_buffer("int32_t[]", bias)
    expected = np.zeros(out_f, np.int8)
    assert c.tml_fc_s8(params, quant, in_f, xb, ffi.from_buffer("int8_t[]", w), bb, out_f,
                       ffi.from_buffer("int8_t[]", expected)) == 0  # fmt: skip
    encoded = encode(w, np.union1d(codebook, [0]), kind)
    weights, _keep = c_weights(lib, encoded)
    scratch = np.zeros(c.tml_huffman_fc_s8_scratch_bytes(in_f), np.int8)
    assert len(scratch) == fc_scratch_bytes(in_f)
    got = np.zeros(out_f, np.int8)
    status = c.tml_huffman_fc_s8(params, quant, in_f, xb, weights, bb, out_f, ffi.from_buffer("int8_t[]", got),
                                 ffi.from_buffer("int8_t[]", scratch))  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(got, expected)
    # a tensor of the wrong size is an argument error, not a read past its stream
    assert c.tml_huffman_fc_s8(params, quant, in_f + 1, xb, weights, bb, out_f, ffi.from_buffer("int8_t[]", got),
                               ffi.NULL) != 0  # fmt: skip


@SETTINGS
@given(
    h=st.integers(1, 9), w=st.integers(1, 9), in_c=st.integers(1, 6), out_c=st.integers(1, 6),
    k=st.integers(1, 3), stride=st.integers(1, 2), pad=st.integers(0, 1), kind=KINDS,
    seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_fused_conv_equals_the_raw_kernel(lib, h, w, in_c, out_c, k, stride, pad, kind, seed):
    assume(h + 2 * pad >= k and w + 2 * pad >= k)
    ffi, c = lib.ffi, lib.lib
    rng = np.random.default_rng(seed)
    out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    weights = rng.choice(np.array([-90, -3, 0, 0, 0, 5, 64, 127], np.int8), size=(out_c, k, k, in_c))
    x = rng.integers(-128, 128, size=(h, w, in_c), dtype=np.int8)
    bias = rng.integers(-5000, 5000, size=out_c, dtype=np.int32)
    mult, shift = requantization(rng, out_c)
    params = ffi.new("tml_conv_params *", {
        "stride_h": stride, "stride_w": stride, "pad_h": pad, "pad_w": pad, "depth_multiplier": 1,
        "input_offset": int(rng.integers(-127, 129)), "output_offset": -7, "act_min": -100, "act_max": 127,
    })  # fmt: skip
    quant = ffi.new("tml_quant_channels *", {"multiplier": ffi.from_buffer("int32_t[]", mult),
                                             "shift": ffi.from_buffer("int32_t[]", shift)})  # fmt: skip
    in_shape = ffi.new("tml_shape *", [h, w, in_c])
    f_shape = ffi.new("tml_shape *", [k, k, in_c])
    o_shape = ffi.new("tml_shape *", [out_h, out_w, out_c])
    xb, bb = ffi.from_buffer("int8_t[]", x), ffi.from_buffer("int32_t[]", bias)
    expected = np.zeros((out_h, out_w, out_c), np.int8)
    assert c.tml_conv2d_s8(params, quant, in_shape, xb, f_shape, ffi.from_buffer("int8_t[]", weights), bb, o_shape,
                           ffi.from_buffer("int8_t[]", expected), ffi.NULL) == 0  # fmt: skip
    encoded, _ = c_weights(lib, encode(weights, None, kind))
    scratch = np.zeros(c.tml_huffman_conv2d_s8_scratch_bytes(f_shape), np.int8)
    assert len(scratch) == conv2d_scratch_bytes((k, k, in_c))
    got = np.zeros_like(expected)
    status = c.tml_huffman_conv2d_s8(params, quant, in_shape, xb, f_shape, encoded, bb, o_shape,
                                     ffi.from_buffer("int8_t[]", got),
                                     ffi.from_buffer("int8_t[]", scratch))  # fmt: skip
    assert status == 0
    np.testing.assert_array_equal(got, expected)


# --- the technique and whole models -----------------------------------------------------------


def mlp(sizes: tuple[int, ...] = (64, 300, 100, 10), seed: int = 0) -> torch.nn.Module:
    """LeNet-300-100's shape for 8x8 inputs, random weights with half of them pruned to zero."""
    torch.manual_seed(seed)
    layers: dict[str, torch.nn.Module] = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        linear = layers[f"fc{i}"] = torch.nn.Linear(a, b)
        with torch.no_grad():
            linear.weight.mul_(torch.rand_like(linear.weight) > 0.5)
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = torch.nn.ReLU()
    return torch.nn.Sequential(OrderedDict(layers)).eval()


def cnn() -> torch.nn.Module:
    """conv, depthwise conv (decoded a layer at a time), strided conv, fc."""
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 3 * 3, 10),
    ).eval()  # fmt: skip


def calibration(shape: tuple[int, ...], n: int = 32) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    out = tmp_path_factory.mktemp("huffman") / "mlp"
    return compiler.compile(
        mlp(), calibration((64,)), ["quantize-int8", ("huffman", {"layers": {"fc2": "sparse", "fc3": "packed"}})],
        out_dir=out, progress=False,
    )  # fmt: skip


def test_mlp_with_encoded_weights_equals_the_reference_on_the_host(mlp_build):
    graph, generated = mlp_build.graph, mlp_build.generated
    assert [graph.tensors[n.inputs[1]].encoding for n in graph.nodes] == ["huffman", "sparse", "packed"]
    assert [generated.kernels[n.name].function for n in graph.nodes] == ["tml_huffman_fc_s8"] * 3
    for node in graph.nodes:  # one row of scratch each, known to the planner
        assert generated.plan.sizes[f"scratch:{node.name}"] >= graph.tensors[node.inputs[1]].shape[1]
    for node in graph.nodes[:2]:  # half the weights pruned: sparse and Huffman storage pay
        assert generated.weights[node.inputs[1]].nbytes < graph.tensors[node.inputs[1]].nbytes
    assert "tml_huffman_weights" in generated.files["model_data.c"]
    model = host.load_model(mlp_build.out_dir)
    x = np.random.default_rng(5).integers(-128, 128, size=(20, 64), dtype=np.int8)
    np.testing.assert_array_equal(model(x), run_int8(graph, x)[graph.outputs[0]].reshape(20, -1))


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    out = tmp_path_factory.mktemp("huffman") / "cnn"
    return compiler.compile(cnn(), calibration((1, 8, 8)), ["quantize-int8", "huffman"], out_dir=out, progress=False)


def test_cnn_with_encoded_weights_equals_the_reference_on_the_host(cnn_build):
    graph = cnn_build.graph
    functions = [cnn_build.generated.kernels[n.name].function for n in graph.nodes]
    assert functions == [
        "tml_huffman_conv2d_s8", "tml_dwconv2d_s8", "tml_huffman_conv2d_s8", "tml_flatten_s8", "tml_huffman_fc_s8"
    ]  # fmt: skip
    assert all(graph.tensors[n.inputs[1]].encoding == "huffman" for n in graph.nodes if n.op != "flatten")
    dw, conv = graph.nodes[1:3]
    assert cnn_build.generated.plan.sizes[f"scratch:{conv.name}"] == READER_BYTES + 3 * 3 * 8  # state, one filter
    # the depthwise layer is decoded whole into scratch just before tml_dwconv2d_s8 runs on it
    assert cnn_build.generated.plan.sizes[f"scratch:{dw.name}"] == layer_scratch_bytes(3 * 3 * 8, 0)
    assert "tml_huffman_decode_s8(" in cnn_build.generated.files["model.c"]
    model = host.load_model(cnn_build.out_dir)
    x = np.random.default_rng(6).integers(-128, 128, size=(10, 8, 8, 1), dtype=np.int8)
    np.testing.assert_array_equal(model(x), run_int8(graph, x)[graph.outputs[0]].reshape(10, -1))


def test_raw_layers_keep_the_core_kernels_and_auto_picks_the_smallest():
    from tinyml_plugins.huffman.technique import stored_bytes

    build = compiler.compile(
        mlp((16, 12, 4)),
        calibration((16,)),
        ["quantize-int8", ("huffman", {"encoding": "auto", "layers": {"fc2": "raw"}})],
        progress=False,
    )  # fmt: skip
    first, second = (build.graph.tensors[n.inputs[1]] for n in build.graph.nodes)
    assert second.encoding == "raw" and build.generated.kernels["fc2"].function == "tml_fc_s8"
    sizes = {e: stored_bytes(first, e) for e in ("raw", *codes.ENCODINGS)}
    assert first.encoding == min(sizes, key=sizes.get)


def test_bad_options_are_one_paragraph():
    bad = ("huffman", {"layers": {"fc9": "raw"}})
    with pytest.raises(RecipeError, match=r"`layers` names 'fc9', which is no fc, conv2d or dwconv2d layer.*fc1, fc2"):
        compiler.compile(mlp((16, 12, 4)), calibration((16,)), ["quantize-int8", bad], progress=False)
    with pytest.raises(RecipeError, match="after `quantize-int8`"):
        compiler.compile(mlp((16, 12, 4)), calibration((16,)), ["huffman", "quantize-int8"], progress=False)
    with pytest.raises(RecipeError, match=r"huffman.*encoding"):
        compiler.compile(mlp((16, 12, 4)), calibration((16,)), [("huffman", {"encoding": "zip"})], progress=False)


def test_a_codebook_that_misses_values_is_refused():
    from tinyml.technique import Context
    from tinyml_plugins.huffman.technique import Huffman

    graph = compiler.compile(mlp((16, 12, 4)), calibration((16,)), progress=False).graph
    graph.tensors[graph.nodes[0].inputs[1]].codebook = np.array([0, 1], np.int8)
    with pytest.raises(TinymlError, match=r"Layer `fc1`'s weights do not fit its codebook"):
        Huffman().apply(graph, Context())


# --- on the boards ----------------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["cortex-m3", "cortex-m4"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_encoded_weights_run_on_the_board(mlp_build, cnn_build, model, board, tmp_path: Path):
    """The fused fc and conv2d kernels in firmware: the board's outputs equal the numpy reference."""
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware

    build = mlp_build if model == "mlp" else cnn_build
    graph = build.graph
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = np.random.default_rng(7).integers(-128, 128, size=(4, *shape), dtype=np.int8)
    firmware = build_firmware(build.out_dir, resolve_board(board), tmp_path / board, x.reshape(4, -1))
    result = run_firmware(firmware.out_dir, timeout=60)
    assert result.outputs_match_reference is True
    np.testing.assert_array_equal(result.outputs, run_int8(graph, x)[graph.outputs[0]].reshape(4, -1))


@pytest.mark.qemu
def test_compressed_ram_is_no_more_than_int8_ram_plus_the_declared_scratch(mlp_build, tmp_path: Path):
    """RAM (.data + .bss + stack high water) of the encoded MLP on stm32 against the same model in plain int8:
    every byte decoding takes is scratch the memory plan declares, none hides on the stack."""
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware
    from tinyml.board.size import size_report

    board = resolve_board("stm32")
    plain = compiler.compile(mlp(), calibration((64,)), ["quantize-int8"], out_dir=tmp_path / "int8", progress=False)
    x = np.random.default_rng(8).integers(-128, 128, size=(2, 64), dtype=np.int8)
    ram = {}
    for name, build in (("int8", plain), ("encoded", mlp_build)):
        out = build_firmware(build.out_dir, board, tmp_path / f"{name}-fw", x).out_dir
        run = run_firmware(out, timeout=60)
        assert run.outputs_match_reference is True
        ram[name] = size_report(out).ram_bytes + run.stack_bytes
    declared = sum(mlp_build.generated.kernels[n.name].scratch_bytes for n in mlp_build.graph.nodes)
    assert declared >= 3 * READER_BYTES
    assert ram["encoded"] <= ram["int8"] + declared, ram


def test_an_encoded_constant_no_kernel_reads_is_refused():
    from tinyml import plugins
    from tinyml.codegen import generate

    graph = compiler.compile(mlp((16, 12, 4)), calibration((16,)), progress=False).graph
    graph.tensors[graph.nodes[0].inputs[2]].encoding = "packed"  # a bias: the fused kernels read weights only
    with pytest.raises(TinymlError, match=r"Layer `fc1` \(fc\) has encoded constants \['fc1.bias'\]"):
        generate(graph, None, plugins.plugin_manager())
