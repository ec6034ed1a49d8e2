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
from tinyml.board.project import (
    ELF_NAME,
    PROJECT_DIR_NAME,
    REFERENCE_OUTPUTS_NAME,
    build_firmware,
    default_test_inputs,
)
from tinyml.board.qemu import run_firmware
from tinyml.board.size import check_elf, size_report
from tinyml.cli import main
from tinyml.errors import BuildError, FirmwareError, FirmwareFault, FirmwareTimeout, FitError
from tinyml.weights import layer_c_names

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
    assert result.outputs_match_reference is None  # the fixture is bare C: no graph, so no reference
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
    summary = json.loads(ran.stdout)
    assert summary["instruction_resolution"] == 1 and len(summary["outputs"]) == len(INPUTS)
    assert summary["outputs_match_reference"] is None and summary["mismatched_inputs"] == []
    assert json.loads((built["cortex-m4"] / "firmware.json").read_text())["reference_outputs"] is None
    table = runner.invoke(run_command, [str(built["cortex-m4"])])
    assert table.exit_code == 0 and "no reference outputs" in table.output
    sized = runner.invoke(size_command, [str(built["cortex-m4"]), "--json"])
    assert sized.exit_code == 0, sized.output
    assert json.loads(sized.output)["board"] == "cortex-m4"
    # a firmware of a hand-written model (no report data in model/) still gets a page of what it holds
    page = (built["cortex-m4"] / "report.html").read_text()
    assert json.loads((built["cortex-m4"] / "run.json").read_text()) == summary
    assert "<h2>On the board</h2>" in page and "<h2>Layers</h2>" not in page
    assert "<code>fc1</code></td><td class=num>" in page and "<code>fc2</code></td><td class=num>" in page


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
    assert out.has_reference
    ran = CliRunner().invoke(run_command, [str(out.out_dir), "--json", "--timeout", "60"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert summary["outputs_match_reference"] is True and summary["mismatched_inputs"] == []
    np.testing.assert_array_equal(np.array(summary["outputs"]), host.load_model(model_dir)(inputs))
    assert [layer["name"] for layer in summary["layers"]] == [node.name for node in digits_build.graph.nodes]


@pytest.fixture(scope="module")
def example_firmware(digits_build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example's firmware for stm32, with two test inputs."""
    model_dir = digits_build.out_dir
    out = tmp_path_factory.mktemp("example-firmware") / "stm32"
    return build_firmware(model_dir, resolve_board("stm32"), out, default_test_inputs(model_dir, 2)).out_dir


def test_size_report_of_the_example_reads_by_layer(digits_build, example_firmware):
    report = size_report(example_firmware)
    layers = {layer["name"]: layer for layer in report.layers}
    names = [node.name for node in digits_build.graph.nodes]
    assert list(layers) == names
    weights = digits_build.layer_weight_bytes()
    for name, c_name in zip(names, layer_c_names(names), strict=True):
        assert all(symbol.startswith(f"tml_{c_name}_") for symbol in layers[name]["symbols"]), layers[name]
        assert layers[name]["flash_bytes"] >= weights[name]
    conv2 = layers["features.conv2"]
    for what in ("weight", "bias", "params", "multiplier", "shift", "quant", "filter_shape", "output_shape"):
        assert f"tml_features_conv2_{what}" in conv2["symbols"]
    # int8 weights 32x3x3x16 and int32 bias; 9-int32 params, 32 multipliers and shifts, two pointers, three shapes
    assert conv2["flash_bytes"] == 32 * 3 * 3 * 16 + 4 * 32 + 4 * 9 + 2 * 4 * 32 + 2 * 4 + 3 * 12
    assert layers["flatten"]["symbols"] == ["tml_flatten_input_shape"]
    table = CliRunner().invoke(size_command, [str(example_firmware)])
    assert table.exit_code == 0, table.output
    assert all(name in table.output for name in names)


def test_a_failing_layer_is_named_by_the_board(digits_build, tmp_path):
    """A kernel that rejects its arguments on the board: the error names the layer and the test input."""
    broken = tmp_path / "model"
    shutil.copytree(digits_build.out_dir, broken)
    model_c = (broken / "model.c").read_text()
    params = "tml_features_conv2_params = {.stride_h = 1,"
    assert params in model_c
    (broken / "model.c").write_text(model_c.replace(params, params.replace("= 1,", "= 0,")))
    board = resolve_board("stm32")
    out = build_firmware(broken, board, tmp_path / "fw", default_test_inputs(broken, 2))
    with pytest.raises(
        FirmwareError, match=rf"returned -1 in layer 2 `features.conv2` on test input 0 on board {board.name}"
    ):
        run_firmware(out.out_dir, timeout=60)


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
    result = run_firmware(firmware_dir)
    assert len(result.outputs) == 2 and result.outputs_match_reference is True

    # a reference that no longer matches (here: edited) makes `run` say so and exit 1
    reference_file = firmware_dir / REFERENCE_OUTPUTS_NAME
    reference = np.load(reference_file)
    reference[1, 3] ^= 1
    np.save(reference_file, reference)
    ran = CliRunner().invoke(main, ["run", str(firmware_dir), "--json"])
    assert ran.exit_code == 1
    summary = json.loads(ran.stdout)
    assert summary["outputs_match_reference"] is False
    assert summary["mismatched_inputs"] == [{"input": 1, "values_differing": 1, "max_difference": 1}]
    assert "outputs differ from the host reference" in ran.stderr and "on 1 of 2 inputs: input 1" in ran.stderr
    table = CliRunner().invoke(main, ["run", str(firmware_dir)])
    assert table.exit_code == 1 and "NO" in table.stdout

    # a reference file that is not what tinyml wrote is one paragraph too
    reference_file.write_bytes(reference_file.read_bytes()[:40])
    ran = CliRunner().invoke(main, ["run", str(firmware_dir)])
    assert ran.exit_code == 1 and "reference_outputs.npy (the outputs the board must give) cannot be read" in ran.output


@pytest.mark.parametrize("damage", ["truncated", "not an ELF", "empty", "host ELF"])
def test_run_and_size_refuse_a_damaged_elf(built, tmp_path, damage):
    firmware_dir = Path(shutil.copytree(built["cortex-m3"], tmp_path / "fw"))
    elf = firmware_dir / ELF_NAME
    whole = elf.read_bytes()
    replacement = {
        "truncated": whole[: len(whole) // 3],
        "not an ELF": b"#!/bin/sh\n" * 50,
        "empty": b"",
        "host ELF": Path("/bin/true").resolve().read_bytes(),
    }
    elf.write_bytes(replacement[damage])
    for command in ("run", "size"):
        done = CliRunner().invoke(main, [command, str(firmware_dir)])
        assert done.exit_code == 1, done.output
        message = done.output.strip()
        assert message.startswith(f"Error: {elf} is not a valid ELF") and "\n" not in message, message
        assert "status -6" not in message and "Traceback" not in message


def test_check_elf_accepts_every_built_firmware(built):
    for firmware_dir in built.values():
        check_elf(firmware_dir / ELF_NAME)


def test_firmware_folders_are_marked_as_tinyml_builds(built):
    from tinyml.manifest import build_kind, read_manifest

    for firmware_dir in built.values():
        assert build_kind(firmware_dir) == "firmware"
        assert set(read_manifest(firmware_dir, "firmware")["files"]) == {ELF_NAME, "test_inputs.npy"}
