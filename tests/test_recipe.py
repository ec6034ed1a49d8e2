"""The recipe file: fields checked, errors pointing at the field, paths and overrides resolved."""

from __future__ import annotations

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
