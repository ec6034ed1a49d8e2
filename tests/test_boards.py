"""Boards, the offline PlatformIO set-up, the project writer and the fit check (no compiler, no QEMU)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinyml import resources
from tinyml.board import fit, platformio, size
from tinyml.board import project as firmware_project
from tinyml.board.boards import BoardError, builtin_boards, load_board_file, resolve_board
from tinyml.board.cli import boards_command
from tinyml.errors import BuildError, FitError

EXPECTED_BOARDS = ("stm32f405", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "stm32f746", "nucleo-l4r5zi")


def test_every_board_is_shipped_and_stm32_is_the_stm32f405():
    names = {b.name for b in builtin_boards()}
    assert set(EXPECTED_BOARDS) <= names
    stm32 = resolve_board("stm32")
    assert stm32.name == "stm32f405"
    assert (stm32.qemu_machine, stm32.ram_origin, stm32.ram_bytes) == ("netduinoplus2", 0x20000000, 128 * 1024)


def test_profiles_run_on_the_machine_of_their_core_with_their_own_limits():
    m7, f746 = resolve_board("cortex-m7"), resolve_board("stm32f746")
    assert f746.qemu_machine == m7.qemu_machine
    assert (f746.flash_bytes, f746.ram_bytes) == (1024 * 1024, 320 * 1024)
    assert f746.ram_origin == m7.ram_origin and f746.ram_bytes < m7.ram_bytes
    l4 = resolve_board("nucleo-l4r5zi")
    assert l4.qemu_machine == resolve_board("cortex-m4").qemu_machine
    assert (l4.flash_bytes, l4.ram_bytes) == (2 * 1024 * 1024, 640 * 1024)


def test_cortex_m33_links_at_the_secure_addresses():
    m33 = resolve_board("cortex-m33")
    assert (m33.flash_origin, m33.ram_origin) == (0x10000000, 0x38000000)


def test_cflags_follow_the_fpu():
    assert resolve_board("cortex-m3").cflags == ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"]
    assert "-mfpu=fpv4-sp-d16" in resolve_board("stm32").cflags
    assert "-mfloat-abi=hard" in resolve_board("cortex-m7").cflags


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError) as err:
        resolve_board("esp32")
    message = str(err.value)
    assert "'esp32'" in message
    for name in EXPECTED_BOARDS:
        assert name in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ((r"clock_hz = .*", 'clock_hz = "fast"'), r"bad\.toml: clock_hz: Input should be a valid integer, got 'fast'"),
        ((r"\ncore = .*", ""), r"bad\.toml: core: Field required"),
        ((r"origin = 0x08", "orgin = 0x08"), r"bad\.toml: flash\.orgin: Extra inputs are not permitted"),
        ((r"\ndsp = true", "\ndsp = true\nspeed = 3"), r"bad\.toml: speed: Extra inputs.*expected one of: name,"),
        ((r'"tim2"', '"dwt"'), r"bad\.toml: qemu\.counter: Input should be 'tim2' or 'systick', got 'dwt'"),
        ((r"bytes = 131_072", "bytes = -1"), r"bad\.toml: ram\.bytes: Input should be greater than 0"),
        ((r"dsp = true", "dsp = 1"), r"bad\.toml: dsp: Input should be a valid boolean"),
    ],
)
def test_malformed_board_file_names_the_file_and_field(tmp_path: Path, change: tuple[str, str], expected: str):
    path = tmp_path / "bad.toml"
    good = (resources.BOARDS_DIR / "stm32f405.toml").read_text()
    changed = re.sub(*change, good, count=1)
    assert changed != good
    path.write_text(changed)
    with pytest.raises(BoardError, match=expected):
        load_board_file(path)


def test_unreadable_board_file_is_named(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x\n')
    with pytest.raises(BoardError, match=r"Cannot read board file .*broken\.toml"):
        load_board_file(path)


def test_board_from_a_file_is_frozen_and_hashable():
    board = resolve_board("stm32")
    assert board == load_board_file(resources.BOARDS_DIR / "stm32f405.toml")
    assert len({board, resolve_board("stm32f405")}) == 1
    with pytest.raises(AttributeError):
        board.ram_bytes = 1  # type: ignore[misc]


def test_boards_command_lists_every_board_as_json():
    result = CliRunner().invoke(boards_command, ["--json"])
    assert result.exit_code == 0, result.output
    listed = {b["name"]: b for b in json.loads(result.output)}
    assert set(EXPECTED_BOARDS) <= set(listed)
    assert listed["stm32f405"]["aliases"] == ["stm32"]


def test_core_dir_links_tool_scons_with_the_version_platformio_wants(pio_core_dir: Path):
    from platformio.dependencies import get_core_dependencies

    root = platformio.prepare_core_dir()
    assert root == pio_core_dir
    link = json.loads((root / "packages" / "tool-scons.pio-link").read_text())
    assert link["spec"]["owner"] == "platformio" and link["spec"]["name"] == "tool-scons"
    package = Path(link["spec"]["uri"].removeprefix("symlink://"))
    version = json.loads((package / "package.json").read_text())["version"]
    rule = get_core_dependencies()["tool-scons"]
    assert version == re.sub(r"^\D+", "", rule)
    assert "SCons.Script" in (package / "scons.py").read_text()
    # rewritten on every run
    (root / "packages" / "tool-scons.pio-link").write_text("{}")
    platformio.prepare_core_dir()
    assert json.loads((root / "packages" / "tool-scons.pio-link").read_text()) == link
    assert json.loads((root / "appstate.json").read_text())["settings"]["enable_telemetry"] is False


def test_pio_env_is_offline(pio_core_dir: Path):
    env = platformio.pio_env()
    assert env["PLATFORMIO_SETTING_ENABLE_TELEMETRY"] == "no"
    assert env["PLATFORMIO_DISABLE_UPGRADE_CHECK"] == "true"
    assert env["PLATFORMIO_CORE_DIR"] == str(pio_core_dir)


def test_platform_class_is_named_from_platform_json():
    from platformio.platform.factory import PlatformFactory

    name = json.loads((resources.PLATFORM_DIR / "platform.json").read_text())["name"]
    class_name = PlatformFactory.get_clsname(name)
    assert f"class {class_name}(" in (resources.PLATFORM_DIR / "platform.py").read_text()


def test_written_project_is_complete_and_has_no_test_folder(tmp_path: Path, pio_core_dir: Path, tiny_model_dir: Path):
    board = resolve_board("stm32")
    inputs = np.arange(32, dtype=np.int8).reshape(2, 16)
    project = tmp_path / "project"
    firmware_project.write_project(project, tiny_model_dir, board, inputs, defines=["EXTRA=1"])
    ini = (project / "platformio.ini").read_text()
    assert f"platform = symlink://{resources.PLATFORM_DIR}" in ini
    assert f"core_dir = {pio_core_dir}" in ini
    assert "-DTML_PROFILE" in ini and "-DTML_COUNTER_TIM2" in ini and "-DEXTRA=1" in ini
    board_json = json.loads((project / "boards" / "stm32f405.json").read_text())
    assert board_json["upload"]["maximum_size"] == board.flash_bytes
    assert board_json["build"]["tinyml"]["cflags"] == board.cflags
    sources = {p.name for p in (project / "src").iterdir()}
    assert {"model.h", "model.c", "model_data.c", "main.c", "tml_profile.h", "startup.c", "test_inputs.c"} <= sources
    assert not (project / "test").exists()
    assert any((project / "lib").glob("*/include/tml_nn.h"))
    ld = (project / "tinyml.ld").read_text()
    assert "ORIGIN = 0x08000000, LENGTH = 0x00100000" in ld and "@" not in ld
    table = (project / "src" / "test_inputs.c").read_text()
    assert "tml_test_input_count = 2;" in table and "{16, 17, 18" in table


def test_build_rejects_inputs_of_the_wrong_size(tmp_path: Path, tiny_model_dir: Path):
    with pytest.raises(BuildError, match=r"16 int8 values per input"):
        inputs = np.zeros((2, 15), np.int8)
        firmware_project.build_firmware(tiny_model_dir, resolve_board("stm32"), tmp_path / "fw", inputs)
    assert not (tmp_path / "fw").exists()


def test_build_rejects_a_folder_without_a_model(tmp_path: Path):
    with pytest.raises(BuildError, match="model.c"):
        firmware_project.build_firmware(tmp_path, resolve_board("stm32"), tmp_path / "fw", np.zeros((1, 16), np.int8))


def test_fit_check_passes_and_reports_the_estimate():
    board = resolve_board("stm32")
    estimate = fit.check_fit(board, 1000, {"a": 300, "b": 200}, code_bytes=5000)
    assert estimate.flash_bytes == 5500
    assert estimate.ram_bytes == 1000 + board.stack_reserve


def test_fit_check_names_the_overflow_and_the_heaviest_layer():
    board = resolve_board("stm32")
    weights = {"conv1": 1000, "fc_big": board.flash_bytes, "fc2": 10}
    with pytest.raises(FitError) as err:
        fit.check_fit(board, 1000, weights, code_bytes=4096)
    over = sum(weights.values()) + 4096 - board.flash_bytes
    message = str(err.value)
    assert f"{over} bytes more" in message and "'fc_big'" in message


def _flash_and_ram_misfit(board) -> str:
    with pytest.raises(FitError) as err:
        fit.check_fit(board, board.ram_bytes, {"fc": board.flash_bytes}, live_arena_bytes={"conv": board.ram_bytes})
    return str(err.value)


def test_fit_advice_names_no_technique_that_is_not_installed(monkeypatch: pytest.MonkeyPatch):
    from tinyml import plugins

    # Installed: only the techniques that make nothing smaller (quantize-int8, not prune).
    plain = {name: cls for name, cls in plugins.techniques().items() if not getattr(cls, "reduces", ())}
    monkeypatch.setattr(plugins, "techniques", lambda: plain)
    message = _flash_and_ram_misfit(resolve_board("stm32"))
    assert message.count("no installed technique is marked to") == 2
    for missing in ("huffman", "binariz", "architecture search under", "'prune"):
        assert missing not in message.lower()


def test_fit_advice_names_the_installed_techniques_that_help(monkeypatch: pytest.MonkeyPatch):
    from tinyml import plugins
    from tinyml.technique import Technique

    class Prune(Technique):
        name, stage, reduces = "prune-magnitude", "train", ("flash",)

    class Shrink(Technique):
        name, stage, reduces = "shrink-width", "train", ("ram", "flash")

    class Clip(Technique):
        name, stage = "clip-weights", "graph"

    techniques = {cls.name: cls for cls in (Prune, Shrink, Clip)}
    monkeypatch.setattr(plugins, "techniques", lambda: techniques)
    message = _flash_and_ram_misfit(resolve_board("stm32"))
    flash, ram = message.split("; RAM: ")
    assert "installed techniques that make weights smaller: 'prune-magnitude', 'shrink-width'" in flash
    assert "installed techniques that make activations smaller: 'shrink-width'" in ram
    assert "clip-weights" not in message and "no installed technique" not in message


def test_fit_check_names_the_layer_that_sets_the_ram_peak():
    board = resolve_board("stm32f746")
    arena = board.ram_bytes
    with pytest.raises(FitError) as err:
        fit.check_fit(board, arena, {"conv": 10}, live_arena_bytes={"conv": arena, "pool": 100})
    message = str(err.value)
    assert f"{board.stack_reserve} bytes more" in message and "'conv' sets the peak" in message


def test_live_bytes_by_layer_sums_the_buffers_alive_at_each_step():
    plan = type("Plan", (), {"sizes": {"x": 10, "y": 20, "z": 5}, "lifetimes": {"x": (0, 1), "y": (1, 2), "z": (2, 2)}})
    assert fit.live_bytes_by_layer(plan, ["a", "b", "c"]) == {"a": 10, "b": 30, "c": 25}


def test_manifest_board_round_trips():
    board = resolve_board("cortex-m33")
    manifest = json.loads(json.dumps({"board": firmware_project.asdict_board(board)}))
    assert firmware_project.manifest_board(manifest) == replace(board)


def test_symbols_are_attributed_to_their_layer():
    layers = ["0", "features.conv1", "features.conv1.x", "fc", "a.b", "a_b"]
    assert size._layer_of("tml_0_bias", layers) == "0"
    assert size._layer_of("tml_features_conv1_weight", layers) == "features.conv1"
    assert size._layer_of("tml_features_conv1_params", layers) == "features.conv1"
    assert size._layer_of("tml_features_conv1_x_multiplier", layers) == "features.conv1.x"  # the longest C name
    assert size._layer_of("tml_fc_layer_params", layers) == "fc"  # `fc` would reach into the type tml_fc_params
    assert size._layer_of("tml_a_b_weight", layers) == "a.b"
    assert size._layer_of("tml_a_b_2_weight", layers) == "a_b"  # the same C name made unique
    assert size._layer_of("tml_arena_words", layers) is None
    assert size._layer_of("tml_model_layer_names", layers) is None
    assert size._layer_of("fc_weight", layers) is None
