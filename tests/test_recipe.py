"""The recipe file: fields checked, errors pointing at the field, paths and overrides resolved."""

from __future__ import annotations

import io
import textwrap
import types
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

from tinyml import plugins
from tinyml.errors import DataError, RecipeError
from tinyml.recipe import load_factory_model, load_recipe, load_samples
from tinyml.technique import Technique


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibration: Literal["minmax", "percentile"] = "minmax"
    percentile: float = Field(99.99, gt=50.0, le=100.0)


class Demo(Technique):
    name = "quantize-int8"
    stage = "graph"
    Options = DemoOptions


class Prune(Technique):
    name = "prune"
    stage = "train"


BOARD = types.SimpleNamespace(name="stm32f405", aliases=("stm32",))


@pytest.fixture(autouse=True)
def known_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "techniques", lambda: {"quantize-int8": Demo, "prune": Prune})
    monkeypatch.setattr(plugins, "boards", lambda: {"stm32f405": BOARD, "stm32": BOARD})


def write(folder: Path, text: str) -> Path:
    path = folder / "tinyml.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path | None, overrides: dict | None = None) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_full_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(
            tmp_path,
            """
            board = "stm32"

            [model]
            factory = "models/net.py:make_model"
            weights = "net.pt"
            input_shape = [1, 1, 8, 8]

            [data]
            calibration = "calib.npz"
            validation = "/abs/val.npz"
            train = "data/train.npz"

            [[techniques]]
            name = "prune"

            [[techniques]]
            name = "quantize-int8"
            [techniques.options]
            calibration = "percentile"
            percentile = 99.9
            """,
        )
    )
    assert recipe.board is BOARD
    assert recipe.model.factory_file == tmp_path / "models" / "net.py"
    assert recipe.model.factory_function == "make_model"
    assert recipe.model.weights == tmp_path / "net.pt"
    assert recipe.model.input_shape == [1, 1, 8, 8]
    assert recipe.data.calibration == tmp_path / "calib.npz"
    assert recipe.data.validation == Path("/abs/val.npz")
    assert recipe.data.train == tmp_path / "data" / "train.npz"
    assert [type(t) for t in recipe.techniques] == [Prune, Demo]
    assert recipe.techniques[1].options == DemoOptions(calibration="percentile", percentile=99.9)


def test_defaults_without_a_file() -> None:
    recipe = load_recipe(None)
    assert recipe.model.example == "digits"
    assert recipe.board is None
    assert [t.name for t in recipe.techniques] == ["quantize-int8"]
    assert recipe.techniques[0].options == DemoOptions()


def test_bad_option_value_points_at_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[techniques]]
        name = "quantize-int8"
        [techniques.options]
        percentile = "high"
        """,
    )
    message = error_of(path)
    assert message.startswith(f"{path}: techniques[0].options.percentile: Input should be a valid number")
    assert message.endswith("got 'high'")


def test_unknown_option_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[[techniques]]\nname = "quantize-int8"\noptions = { percentil = 99.0 }\n')
    message = error_of(path)
    assert "techniques[0].options.percentil: Extra inputs are not permitted" in message
    assert "calibration, percentile" in message


def test_unknown_technique_lists_available(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[techniques]]\nname = "quantise"\n'))
    assert "techniques[0].name: unknown technique 'quantise'" in message
    assert "prune, quantize-int8" in message


def test_unknown_board_lists_available(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, 'board = "esp32"\n'))
    assert "board: Unknown board 'esp32'" in message
    assert "stm32, stm32f405" in message


def test_unknown_table_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[model]\nexample = "digits"\nwieghts = "w.pt"\n'))
    assert f"{tmp_path / 'tinyml.toml'}: model.wieghts: Extra inputs are not permitted" in message


def test_model_needs_exactly_one_source(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[model]\nexample = "digits"\nfactory = "net.py:make"\n'))
    assert "model: Value error, give exactly one of `example`" in message


def test_wrong_type_in_list(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[model]\nfactory = "net.py:make"\ninput_shape = [1, "x", 8, 8]\n'))
    assert "model.input_shape[1]: Input should be a valid integer" in message


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[model\n")
    message = error_of(path)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 1" in message


def test_missing_recipe_file(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "nope.toml")


def test_command_line_model_replaces_recipe_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[model]\nfactory = "net.py:make"\nweights = "net.pt"\n[data]\ncalibration = "c.npz"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(path, {"model": {"example": "digits"}, "data": {"validation": "v.npz"}, "board": "stm32"})
    assert recipe.model.example == "digits" and recipe.model.weights is None
    assert recipe.data.calibration == tmp_path / "c.npz", "recipe paths resolve against the recipe's folder"
    assert recipe.data.validation == elsewhere / "v.npz", "command-line paths resolve against the current folder"
    assert recipe.board is BOARD


def test_factory_model_with_weights(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n")
    trained = torch.nn.Linear(4, 3)
    torch.save(trained.state_dict(), tmp_path / "net.pt")
    recipe = load_recipe(write(tmp_path, '[model]\nfactory = "net.py:make"\nweights = "net.pt"\n'))
    model = load_factory_model(recipe.model)
    torch.testing.assert_close(model.weight, trained.weight)
    assert not model.training


def test_factory_weights_that_do_not_fit(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n")
    torch.save(torch.nn.Linear(5, 3).state_dict(), tmp_path / "net.pt")
    recipe = load_recipe(write(tmp_path, '[model]\nfactory = "net.py:make"\nweights = "net.pt"\n'))
    with pytest.raises(RecipeError, match=r"model.weights \(--weights\): .*net.pt does not fit .*size mismatch"):
        load_factory_model(recipe.model)


def test_factory_function_missing(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def other():\n    pass\n")
    recipe = load_recipe(write(tmp_path, '[model]\nfactory = "net.py:make"\n'))
    with pytest.raises(RecipeError, match="has no function 'make'"):
        load_factory_model(recipe.model)


def test_samples(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(5))
    got_x, got_y = load_samples(tmp_path / "ok.npz", "data.calibration")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, np.arange(5))

    np.savez(tmp_path / "no_x.npz", images=x)
    with pytest.raises(DataError, match=r"data.calibration: .* has no array `x` \(found: images\)"):
        load_samples(tmp_path / "no_x.npz", "data.calibration")
    np.savez(tmp_path / "short_y.npz", x=x, y=np.arange(4))
    with pytest.raises(DataError, match="one integer label per sample"):
        load_samples(tmp_path / "short_y.npz", "data.validation")


def test_input_shape_with_a_batch_other_than_one_is_rejected(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[model]\nfactory = "net.py:make"\ninput_shape = [4, 1, 8, 8]\n'))
    assert "model.input_shape: Value error, must be [1, C, H, W] or [1, F]" in message
    assert "[4, 1, 8, 8]" in message


BLOCKS_A = "from torch import nn\n\ndef block():\n    return nn.Linear(4, 3)\n"
BLOCKS_B = "from torch import nn\n\ndef block():\n    return nn.Linear(4, 5)\n"
NET = "from blocks import block\n\ndef make():\n    return block()\n"


def test_model_file_imports_its_helper_module(tmp_path: Path) -> None:
    """`from blocks import ...` beside the model file works; afterwards sys.path and sys.modules are as before,
    and a second model folder whose helper has the same name gets its own helper."""
    import sys

    for name, blocks in (("a", BLOCKS_A), ("b", BLOCKS_B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "blocks.py").write_text(blocks)
        (tmp_path / name / "net.py").write_text(NET)
    path_before = list(sys.path)
    sentinel = types.ModuleType("blocks")  # a module of the same name the user's session already had
    sys.modules["blocks"] = sentinel
    try:
        spec_a = load_recipe(None, {"model": {"factory": f"{tmp_path / 'a' / 'net.py'}:make"}}).model
        spec_b = load_recipe(None, {"model": {"factory": f"{tmp_path / 'b' / 'net.py'}:make"}}).model
        assert load_factory_model(spec_a).out_features == 3
        assert load_factory_model(spec_b).out_features == 5
        assert load_factory_model(spec_a).out_features == 3
        assert sys.path == path_before
        assert sys.modules["blocks"] is sentinel
    finally:
        sys.modules.pop("blocks", None)


def test_factory_that_raises_is_one_paragraph_naming_file_and_function(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def make():\n    raise ValueError('width must be\\neven')\n")
    recipe = load_recipe(write(tmp_path, '[model]\nfactory = "net.py:make"\n'))
    with pytest.raises(RecipeError) as info:
        load_factory_model(recipe.model)
    message = str(info.value)
    assert message == f"model.factory (--model): {tmp_path / 'net.py'}:make() raised ValueError: width must be even"


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 1, 8, 8), np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda p: p.write_bytes(_npy_bytes()), "holds a single array"),
        (lambda p: p.write_text("0.1 0.2 0.3\n"), "not an .npz file numpy can read"),
        (lambda p: p.write_bytes(b""), "not an .npz file numpy can read"),
    ],
    ids=["npy", "text", "empty"],
)
def test_files_that_are_not_npz(tmp_path: Path, content, expected: str) -> None:
    path = tmp_path / "calib.npz"
    content(path)
    with pytest.raises(DataError, match=expected) as info:
        load_samples(path, "data.calibration (--calib)")
    assert str(info.value).startswith(f"data.calibration (--calib): {path}")
    assert "\n" not in str(info.value)


def test_npy_file_is_named_as_a_single_array(tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="holds a single array"):
        load_samples(tmp_path / "calib.npy", "data.calibration")


def test_truncated_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "full.npz", x=np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"data.calibration: .*cut.npz (is not an .npz file|is damaged)"):
        load_samples(tmp_path / "cut.npz", "data.calibration")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_samples_with_nan_or_inf(tmp_path: Path, bad: float) -> None:
    x = np.zeros((10, 1, 8, 8), np.float32)
    x[3, 0, 2, 2] = bad
    x[7, 0, 0, 0] = bad
    np.savez(tmp_path / "calib.npz", x=x)
    with pytest.raises(DataError, match=r"NaN or infinite values in 2 of 10 samples \(the first is sample 3\)"):
        load_samples(tmp_path / "calib.npz", "data.calibration")


def test_labels_required(tmp_path: Path) -> None:
    np.savez(tmp_path / "val.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"data.validation: .*val.npz has no labels `y`"):
        load_samples(tmp_path / "val.npz", "data.validation", labels_required=True)
