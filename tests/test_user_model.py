"""A user's own model, start to finish, with command-line flags only (no recipe).

The model lives in two files in a folder of its own, `net.py` importing its blocks from the
`blocks.py` beside it, with trained weights and data files, as a user brings them. It is compiled
and validated on the host, built for stm32 and run in QEMU, and the board's outputs equal the
same C on the host.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from user_project import snapshot, write_user_project

from tinyml.cli import main
from tinyml.frontend import nchw_to_graph
from tinyml.host import load_model

MODEL_FLAGS = ("--model", "net.py:make_model", "--weights", "net.pt", "--calib", "calib.npz", "--val", "val.npz")


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_user_project(tmp_path_factory.mktemp("user") / "my-model", two_files=True, recipe=False)
    assert not (folder / "tinyml.toml").exists()
    return folder


@pytest.fixture
def in_user_folder(user_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(user_folder)
    return user_folder


def test_compile_and_validate_with_flags(in_user_folder: Path) -> None:
    before = snapshot(in_user_folder)
    compiled = run("compile", *MODEL_FLAGS, "--out", "build/net", "--json")
    summary = json.loads(compiled.stdout)
    sources = {layer["source"] for layer in summary["layers"]}
    assert any("features" in source for source in sources), sources  # the layers of Net from net.py and blocks.py
    report = json.loads(run("validate", "build/net", "--json").stdout)
    assert report["samples"] == 20
    assert report["c_matches_reference"] is True
    after = snapshot(in_user_folder)
    assert {k: v for k, v in after.items() if not k.startswith("build")} == before


@pytest.mark.qemu
@pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs arm-none-eabi-gcc and qemu-system-arm",
)
def test_build_for_stm32_and_run_in_qemu_with_flags(in_user_folder: Path) -> None:
    run("build", "--board", "stm32", *MODEL_FLAGS, "--inputs", "3", "--out", "fw")
    firmware = in_user_folder / "fw"
    assert (firmware / "firmware.elf").is_file()
    result = json.loads(run("run", "fw", "--json").stdout)
    assert result["exit_status"] == 0 and result["inputs"] == 3
    inputs = np.load(firmware / "test_inputs.npy")
    host = load_model(firmware / "model")
    np.testing.assert_array_equal(np.array(result["outputs"], dtype=np.int8), host(inputs))
    with np.load(in_user_folder / "val.npz") as val:  # the compiled-in inputs are the first validation samples
        np.testing.assert_array_equal(inputs, host.quantize(nchw_to_graph(val["x"][:3])).reshape(3, -1))
