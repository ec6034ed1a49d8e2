"""bench/layers.py: a reference layer's row, with the kernel's code bytes read from the ELF's symbol table."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

ROW_KEYS = {
    "layer", "board", "instructions", "target_instructions", "instructions_per_mac", "scratch_bytes",
    "kernel_function", "kernel_code_bytes", "matches_reference",
}  # fmt: skip


@pytest.fixture(scope="module")
def bench(load_bench_script) -> ModuleType:
    return load_bench_script("layers")


@pytest.mark.qemu
def test_pointwise_layer_row_on_a_dsp_board(bench: ModuleType, tmp_path: Path) -> None:
    """L5 on cortex-m4: the reference bytes, the 1x1 variant's scratch, and code bytes that count the
    kernel's own functions (its assembly inner loops included) and nothing of another kernel's."""
    from tinyml.board.boards import resolve_board
    from tinyml.kernels import conv2d_s8_scratch_bytes

    index = [layer.name for layer in bench.LAYERS].index("L5")
    layer = bench.LAYERS[index]
    row = bench.measure(layer, index, "cortex-m4", tmp_path)
    assert ROW_KEYS <= row.keys() and row["matches_reference"]
    assert row["instructions"] > layer.macs  # at most two multiply-accumulates per SMLAD, plus the rest
    assert row["scratch_bytes"] == conv2d_s8_scratch_bytes(
        layer.input, (*layer.kernel, layer.input[2]), layer.output, resolve_board("cortex-m4")
    )
    (elf,) = tmp_path.glob("L5-cortex-m4/firmware.elf")
    functions = bench._functions(elf)
    sizes = {name: size for _, name, _, size in functions}
    own = sizes["tml_conv2d_s8"] + sizes["tml_conv_1x1_pairs_dsp"] + sizes["tml_conv_mac_pairs_dsp"]
    everything = sum(size for *_, size in functions)
    assert own < row["kernel_code_bytes"] <= everything - sizes["main"] - sizes["tml_model_invoke"]
