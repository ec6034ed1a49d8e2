"""Firmware built offline with PlatformIO for every board and run in QEMU.

Each board's firmware is built once per module. The fixture model (tests/fixtures/tiny_model) is
plain C, so the same C compiled for the host through cffi gives the expected outputs; the bundled
example goes through the real code generator and kernel library on a few boards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinyml import host, resources
from tinyml.board import platformio
from tinyml.board.boards import builtin_boards, resolve_board
from tinyml.board.cli import build_command, run_command, size_command
from tinyml.board.fit import check_build_fits
from tinyml.board.project import ELF_NAME, PROJECT_DIR_NAME, build_firmware, default_test_inputs
from tinyml.board.qemu import run_firmware
from tinyml.board.size import size_report
from tinyml.errors import BuildError, FirmwareFault, FirmwareTimeout, FitError

pytestmark = pytest.mark.qemu  # skipped without arm-none-eabi-gcc and qemu-system-arm (tests/conftest.py)

BOARD_NAMES = [b.name for b in builtin_boards()]
INPUTS = np.random.default_rng(11).integers(-128, 128, size=(5, 16), dtype=np.int8)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """The fixture model's firmware for every board."""
    root = tmp_path_factory.mktemp("firmware")
    return {
        name: build_firmware(tiny_model_dir, resolve_board(name), root / name, INPUTS).out_dir for name in BOARD_NAMES
    }


@pytest.fixture(scope="module")
def host_outputs(tiny_model_dir: Path) -> np.ndarray:
    library = host.build(
        cdef=host.MODEL_CDEF,
        source='#include "model.h"\n',
        sources=[tiny_model_dir / "model.c", tiny_model_dir / "model_data.c"],
        include_dirs=[tiny_model_dir, resources.FIRMWARE_DIR / "include"],
    )
    ffi, lib = library.ffi, library.lib
    out = np.zeros((len(INPUTS), 4), dtype=np.int8)
    for i, x in enumerate(INPUTS):
        assert lib.tml_model_invoke(ffi.from_buffer("int8_t[]", x), ffi.from_buffer("int8_t[]", out[i])) == 0
    return out


@pytest.mark.parametrize("board", BOARD_NAMES)
def test_board_runs_the_model_with_the_host_outputs(built, host_outputs, board):
    result = run_firmware(built[board], timeout=30)
    np.testing.assert_array_equal(result.outputs, host_outputs)
    assert result.layer_names == ["fc1", "fc2"]
    assert result.exit_status == 0
    assert (result.instructions > 0).all()
    assert (result.layer_instructions > 0).all()
    # the layers run inside tml_model_invoke: their sum cannot exceed its total
    assert (result.layer_instructions.sum(axis=1) <= result.instructions).all()
    assert 0 < result.stack_bytes < resolve_board(board).ram_bytes


@pytest.mark.parametrize("board", BOARD_NAMES)
def test_instruction_counts_repeat_exactly(built, board):
    first, second = run_firmware(built[board]), run_firmware(built[board])
    np.testing.assert_array_equal(first.instructions, second.instructions)
    np.testing.assert_array_equal(first.layer_instructions, second.layer_instructions)
    assert first.stack_bytes == second.stack_bytes


def test_tim2_counts_single_instructions(built):
    result = run_firmware(built["stm32f405"])
    assert result.instruction_resolution == 1
    # data-dependent clamping makes exact counts differ between inputs
    assert len(set(result.instructions.tolist())) > 1


def test_size_report_attributes_weights_to_layers(built):
    report = size_report(built["stm32f405"])
    by_layer = {layer["name"]: layer["flash_bytes"] for layer in report.layers}
    # fc1: int8 weights [8 * 16] + int32 bias [8]; fc2: int8 [4 * 8] + int32 [4]
    assert by_layer == {"fc1": 8 * 16 + 4 * 8, "fc2": 4 * 8 + 4 * 4}
    assert report.arena_bytes == 8
    assert report.flash_bytes >= sum(by_layer.values()) + report.sections[".text"]
    assert report.flash_limit == 1024 * 1024


def test_cli_run_and_size_print_json(built):
    runner = CliRunner()
    ran = runner.invoke(run_command, [str(built["cortex-m4"]), "--json"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.output)
    assert summary["instruction_resolution"] == 40 and len(summary["outputs"]) == len(INPUTS)
    sized = runner.invoke(size_command, [str(built["cortex-m4"]), "--json"])
    assert sized.exit_code == 0, sized.output
    assert json.loads(sized.output)["board"] == "cortex-m4"


@pytest.mark.parametrize("board", ["stm32f405", "cortex-m33"])
def test_fault_is_reported_with_registers(tmp_path, board, tiny_model_dir):
    out = build_firmware(
        tiny_model_dir, resolve_board(board), tmp_path / "fw", INPUTS[:1], defines=["TML_INJECT_FAULT"]
    )
    with pytest.raises(FirmwareFault) as err:
        run_firmware(out.out_dir, timeout=30)
    registers = err.value.registers
    assert registers["exception"] == 3  # HardFault (UsageFault escalated)
    assert registers["cfsr"] & (1 << 16)  # UNDEFINSTR
    assert "pc=" in str(err.value) and "addr2line" in str(err.value)


def test_hang_is_reported_as_timeout(tmp_path, tiny_model_dir):
    out = build_firmware(
        tiny_model_dir, resolve_board("cortex-m3"), tmp_path / "fw", INPUTS[:1], defines=["TML_INJECT_HANG"]
    )
    with pytest.raises(FirmwareTimeout, match="did not exit within 2 s"):
        run_firmware(out.out_dir, timeout=2)


def test_failed_build_keeps_the_previous_firmware(built, tmp_path, tiny_model_dir):
    out_dir = tmp_path / "fw"
    shutil.copytree(built["cortex-m3"], out_dir)
    before = (out_dir / ELF_NAME).read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.c").write_text((broken / "model.c").read_text() + "\nthis is not C;\n")
    with pytest.raises(BuildError, match="model.c"):
        build_firmware(broken, resolve_board("cortex-m3"), out_dir, INPUTS)
    assert (out_dir / ELF_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "fw"]


def test_plain_pio_run_inside_the_project_works_offline(built, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(built["stm32f405"] / PROJECT_DIR_NAME, project, ignore=shutil.ignore_patterns(".pio"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATFORMIO_")}
    env["PATH"] = f"{Path(platformio.pio_executable()).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["pio", "run"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (project / ".pio" / "build" / "stm32f405" / ELF_NAME).is_file()


@pytest.mark.parametrize("board", BOARD_NAMES)
def test_example_model_matches_the_host_build(digits_build, tmp_path, board):
    """The digits model on every board: 100 held-out images, QEMU's bytes equal the host's."""
    model_dir = digits_build.out_dir
    inputs = default_test_inputs(model_dir, 100)
    assert len(inputs) == 100
    out = build_firmware(model_dir, resolve_board(board), tmp_path / "fw", inputs)
    result = run_firmware(out.out_dir, timeout=60)
    np.testing.assert_array_equal(result.outputs, host.load_model(model_dir)(inputs))
    assert result.layer_names == [node.name for node in digits_build.graph.nodes]


def test_fit_check_of_a_build_names_a_layer_of_its_graph(digits_build):
    board = replace(resolve_board("stm32"), ram_bytes=digits_build.plan.arena_bytes)
    with pytest.raises(FitError) as err:
        check_build_fits(digits_build, board)
    layers = [node.name for node in digits_build.graph.nodes]
    assert any(f"layer '{name}' sets the peak" in str(err.value) for name in layers)
    graph = digits_build.graph
    io_bytes = sum(graph.tensors[name].nbytes for name in graph.inputs + graph.outputs)
    expected_ram = digits_build.plan.arena_bytes + io_bytes  # the caller's input and output buffers too
    assert check_build_fits(digits_build, resolve_board("stm32")).parts["arena"] == expected_ram


def test_cli_build_makes_firmware_for_the_bundled_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no tinyml.toml here: the bundled example is built
    done = CliRunner().invoke(build_command, ["--board", "mps2-an385", "--inputs", "2", "--json"])
    assert done.exit_code == 0, done.output
    firmware_dir = tmp_path / "build" / "mps2-an385"
    assert (firmware_dir / ELF_NAME).is_file() and (firmware_dir / PROJECT_DIR_NAME / "platformio.ini").is_file()
    summary = json.loads(done.output)
    assert summary["size"]["board"] == "cortex-m3"
    assert summary["fit_estimate"]["ram_bytes"] >= summary["size"]["sections"][".bss"]
    assert len(run_firmware(firmware_dir).outputs) == 2
