"""A model too large for the board fails before anything is built, with the numbers."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import tinyml.compiler as compiler
from tinyml.board.boards import resolve_board
from tinyml.board.fit import CODE_BYTES_ESTIMATE, check_build_fits
from tinyml.cli import main
from tinyml.errors import FitError

MODELS = """
from torch import nn

def wide_activations():
    # one 64x64x48 feature map = 196,608 bytes, more than the stm32's 128 KB of SRAM
    return nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(48, 10))

def heavy_weights():
    # 1200 x 1000 int8 weights = 1.2 MB, more than the stm32's 1 MB of flash
    return nn.Sequential(nn.Linear(1000, 1200), nn.ReLU(), nn.Linear(1200, 10))
"""


def _compile(tmp_path, factory: str, shape: tuple[int, ...]):
    from tinyml.recipe import load_recipe

    (tmp_path / "models.py").write_text(MODELS)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32))
    recipe = load_recipe(None, {"model": {"factory": f"{tmp_path}/models.py:{factory}"},
                                "data": {"calibration": str(tmp_path / "calib.npz")}})  # fmt: skip
    return compiler.compile_from_recipe(recipe, None, progress=False)


def test_activations_too_large_for_stm32_ram(tmp_path) -> None:
    build = _compile(tmp_path, "wide_activations", (3, 64, 64))
    with pytest.raises(FitError) as err:
        check_build_fits(build, resolve_board("stm32"))
    message = str(err.value)
    assert "RAM" in message and "bytes more" in message
    # the layers that hold the 196,608-byte feature map: the convolution writing it or the pool reading it
    assert "layer '0' sets the peak" in message or "layer '2' sets the peak" in message
    # The same model fits a board with more RAM.
    assert check_build_fits(build, resolve_board("nucleo-l4r5zi")).ram_bytes > 128 * 1024


def test_weights_too_large_for_stm32_flash(tmp_path) -> None:
    build = _compile(tmp_path, "heavy_weights", (1000,))
    with pytest.raises(FitError) as err:
        check_build_fits(build, resolve_board("stm32"))
    message = str(err.value)
    over = sum(build.layer_weight_bytes().values()) + CODE_BYTES_ESTIMATE - resolve_board("stm32").flash_bytes
    assert f"{over} bytes more" in message
    assert "layer '0' holds the most weights" in message  # the 1000 x 1200 layer


def test_cli_build_refuses_a_model_that_does_not_fit(tmp_path, monkeypatch) -> None:
    (tmp_path / "models.py").write_text(MODELS)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    (tmp_path / "tinyml.toml").write_text(
        '[model]\nfactory = "models.py:wide_activations"\n[data]\ncalibration = "calib.npz"\n'
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["build", "--board", "stm32", "--recipe", "tinyml.toml"])
    assert result.exit_code == 1
    assert "bytes more" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "build" / "stm32" / "firmware.elf").exists()
