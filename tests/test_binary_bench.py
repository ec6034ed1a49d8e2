"""bench/binary.py on small layers: the bits-out layer is fused with its sign, and every kernel it measures
gives the reference's bytes on the board."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tinyml.reference import run_int8


@pytest.fixture(scope="module")
def bench(load_bench_script) -> ModuleType:
    return load_bench_script("binary")


def small_layer(bench: ModuleType, binary_output: bool) -> object:
    return bench.Layer("small", "conv2d", (5, 6, 40), 36, kernel=3, padding=1, shift=-8, binary_output=binary_output)


def test_a_bits_out_layer_is_fused_with_a_sign_of_balanced_bits(bench: ModuleType) -> None:
    graph = bench.layer_graph(small_layer(bench, True), binary=True)
    assert [n.op for n in graph.nodes] == ["sign", "conv2d_sign", "conv2d"]
    bits = run_int8(graph, bench.layer_input(graph).reshape(graph.tensors["x"].shape))[graph.nodes[1].outputs[0]]
    assert 0.25 < (bits > 0).mean() < 0.75  # about half of each channel's bits: 30 windows, outputs tie


@pytest.mark.qemu
def test_both_binary_layers_and_the_int8_kernels_run_on_the_board(bench: ModuleType, tmp_path: Path) -> None:
    int8_runs = bench.int8_layer_runs(small_layer(bench, False), "cortex-m4", tmp_path)
    assert set(int8_runs) == {"default", "winograd"}
    rows = [bench.bench_layer(small_layer(bench, bits), "cortex-m4", tmp_path / str(bits), int8_runs)
            for bits in (False, True)]  # fmt: skip
    assert [r["binary_kernel"] for r in rows] == ["tml_conv2d_xnor", "tml_conv2d_xnor_sign"]
    for row in rows:
        assert row["matches_reference"] and not row["popcountsi2_in_elf"] and row["speedup"] > 0
    # the fused layer's table: 3 x 3 window shapes, 2 blocks, 2 parities, 12 planes; the classes of 5 rows and
    # 6 columns and a flag per block
    assert [r["binary_start_table_bytes"] for r in rows] == [0, 3 * 3 * 2 * 2 * 12 * 4 + 5 + 6 + 2]
