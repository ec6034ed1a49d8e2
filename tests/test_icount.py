"""Exact instruction counts from the QEMU plugin (boards/qemu-plugin/tml_icount.c).

One firmware per board (the fixture model, plain C) is built for the module. The plugin counts
must repeat exactly, agree with TIM2 on netduinoplus2 (itself exact), and sort every counted
instruction into exactly one class of the mix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyml.board import icount
from tinyml.board.boards import resolve_board
from tinyml.board.cycles import CORTEX_M4, CORTEX_M7, ESTIMATE_LABEL, MIX_CLASSES, estimated_cycles
from tinyml.board.project import ELF_NAME, build_firmware
from tinyml.board.qemu import run_firmware
from tinyml.errors import BuildError

INPUTS = np.random.default_rng(5).integers(-128, 128, size=(3, 16), dtype=np.int8)
BOARDS = ("cortex-m3", "stm32f405")
# The fixture model's layers: fc1 16 -> 8, fc2 8 -> 4 (one multiply-accumulate per weight).
MACS = {"fc1": 16 * 8, "fc2": 8 * 4}
# TIM2 and the plugin take their markers' cost out of each layer the same way (an empty pair
# measured before the first inference), so their per-layer counts agree exactly. The whole
# tml_model_invoke differs by a constant: the timer's window also holds the two marker calls
# and half of each timer read (26 instructions at -O2 with GCC 12).
LAYER_TOLERANCE = 0
INVOKE_MAX_GAP = 64


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("icount")
    return {b: build_firmware(tiny_model_dir, resolve_board(b), root / b, INPUTS).out_dir for b in BOARDS}


@pytest.fixture(scope="module")
def runs(firmware: dict[str, Path]) -> dict[str, tuple]:
    """Two runs of each board's firmware."""
    return {b: (run_firmware(firmware[b], timeout=30), run_firmware(firmware[b], timeout=30)) for b in BOARDS}


@pytest.mark.qemu
@pytest.mark.parametrize("board", BOARDS)
def test_plugin_counts_are_exact_and_repeat(runs, board):
    first, second = runs[board]
    assert first.instruction_source == "plugin", first.instruction_count_note
    assert first.instruction_resolution == 1 and first.instruction_count_note is None
    np.testing.assert_array_equal(first.instructions, second.instructions)
    np.testing.assert_array_equal(first.layer_instructions, second.layer_instructions)
    np.testing.assert_array_equal(first.plugin_counts.invocations, second.plugin_counts.invocations)
    np.testing.assert_array_equal(first.plugin_counts.layers, second.plugin_counts.layers)
    # exact counts see the data-dependent paths (clamping) that make inputs differ
    assert len(set(first.instructions.tolist())) > 1
    assert (first.layer_instructions.sum(axis=1) < first.instructions).all()


@pytest.mark.qemu
def test_plugin_agrees_with_tim2_on_netduinoplus2(runs):
    result = runs["stm32f405"][0]
    gap = np.abs(result.layer_instructions - result.timer_layer_instructions)
    assert gap.max() <= LAYER_TOLERANCE, (result.layer_instructions, result.timer_layer_instructions)
    invoke_gap = result.timer_instructions - result.instructions
    assert len(set(invoke_gap.tolist())) == 1 and 0 < invoke_gap[0] <= INVOKE_MAX_GAP


@pytest.mark.qemu
def test_plugin_is_within_one_systick_period_of_the_mps2_timer(runs):
    result = runs["cortex-m3"][0]
    resolution = resolve_board("cortex-m3").instructions_per_tick
    assert (np.abs(result.layer_instructions - result.timer_layer_instructions) <= 2 * resolution).all()


@pytest.mark.qemu
@pytest.mark.parametrize("board", BOARDS)
def test_mix_sums_to_the_counts_and_sees_the_multiplies(runs, board):
    result = runs[board][0]
    summary = result.summary()
    mix = summary["instruction_mix"]
    assert list(mix) == list(MIX_CLASSES)
    assert np.sum([mix[c] for c in MIX_CLASSES], axis=0).tolist() == summary["instructions"]
    for i, layer in enumerate(summary["layers"]):
        sums = np.sum([layer["instruction_mix"][c] for c in MIX_CLASSES], axis=0)
        assert sums.tolist() == result.layer_instructions[:, i].tolist()
        # a multiply instruction does one multiply-accumulate per weight, or two (SMLAD on DSP cores)
        assert min(layer["instruction_mix"]["multiplies"]) >= MACS[layer["name"]] // 2
        assert min(layer["instruction_mix"]["loads"]) > 0 and min(layer["instruction_mix"]["branches"]) > 0
        assert layer["estimated_cycles"]["label"] == ESTIMATE_LABEL
    cycles = summary["estimated_cycles"]
    assert cycles["label"] == ESTIMATE_LABEL and "Table 3-1" in cycles["basis"]["cortex-m4"]
    assert all(0 < m7 < m4 for m4, m7 in zip(cycles["cortex-m4"], cycles["cortex-m7"], strict=True))


def test_cycle_tables_follow_the_documented_costs():
    counts = dict.fromkeys(icount.COLUMNS, 0) | {"loads": 4, "pipelined": 3, "multiplies": 2, "branches": 1}
    # M4: four single loads in a row 2 + 1 + 1 + 1, two MACs 1 each, one branch 1 + P (P = 2)
    assert CORTEX_M4.cycles(counts) == 5 + 2 + 3
    counts |= {"stores": 1, "multiple": 1, "multiple_words": 4, "other": 2}  # a PUSH of four registers
    assert CORTEX_M4.cycles(counts) == 5 + 2 + 3 + (1 + 4) + 2
    assert CORTEX_M7.cycles(counts) == 4 + 2 + 1 + (1 + 2) + 1
    assert estimated_cycles(counts) == {"cortex-m4": 17, "cortex-m7": 11}


@pytest.mark.qemu
def test_damaged_plugin_is_rebuilt(tmp_path, monkeypatch, firmware):
    monkeypatch.setenv("TINYML_CACHE_DIR", str(tmp_path / "cache"))
    library = icount.build_plugin()
    assert library.is_relative_to(tmp_path) and icount.build_plugin() == library
    size = library.stat().st_size
    library.write_bytes(library.read_bytes()[: size // 3])  # truncated: QEMU would refuse or crash on it
    assert icount.build_plugin() == library and library.stat().st_size == size
    result = run_firmware(firmware["stm32f405"], timeout=30)
    assert result.instruction_source == "plugin"


@pytest.mark.qemu
def test_without_a_compiler_the_timer_counts_stand(tmp_path, monkeypatch, firmware):
    monkeypatch.setenv("TINYML_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(icount, "HOST_CC", "no-such-cc")
    with pytest.raises(BuildError, match="no-such-cc"):
        icount.build_plugin()
    result = run_firmware(firmware["stm32f405"], timeout=30)
    assert result.instruction_source == "timer" and result.instruction_resolution == 1
    assert "no-such-cc" in result.instruction_count_note
    summary = result.summary()
    assert "instruction_mix" not in summary and summary["instruction_count_note"]


@pytest.mark.qemu
def test_markers_are_found_in_the_elf(firmware):
    markers = icount.find_markers(firmware["cortex-m3"] / ELF_NAME)
    assert markers is not None
    assert markers.marks_size == 1 + len(MACS)  # slot 0 the inference, one slot per layer
    assert 0 < markers.begin_size <= 16 and markers.begin & 1  # Thumb function symbols
