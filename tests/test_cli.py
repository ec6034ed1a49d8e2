"""The `tinyml` command: plugin listing, compile and validate from a recipe, clean error reports."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tinyml.cli import main
from tinyml.errors import RecipeError, TinymlError
from tinyml.frontend import nchw_to_graph

MODEL_FILE = """
import torch
from torch import nn


def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )
"""


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a model factory, its weights, calibration and validation data, a tinyml.toml."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "net.py").write_text(MODEL_FILE)
    namespace: dict = {}
    exec(MODEL_FILE, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make_model"]().state_dict(), folder / "net.pt")
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", x=rng.normal(size=(64, 1, 8, 8)).astype(np.float32))
    np.savez(folder / "val.npz", x=rng.normal(size=(20, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 20))
    (folder / "tinyml.toml").write_text(
        textwrap.dedent(
            """
            [model]
            factory = "net.py:make_model"
            weights = "net.pt"

            [data]
            calibration = "calib.npz"
            validation = "val.npz"

            [[techniques]]
            name = "quantize-int8"
            """
        )
    )
    return folder


@pytest.fixture(scope="module")
def build_dir(project: Path) -> Path:
    """`tinyml compile` run in the project folder, picking up ./tinyml.toml by itself."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        result = run("compile", "--out", "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "quantize-int8" in result.stdout
    return project / "out"


def test_plugins_lists_the_builtin_technique() -> None:
    result = run("plugins")
    assert result.exit_code == 0
    assert "quantize-int8" in result.stdout
    listed = {info["name"]: info for info in json.loads(run("plugins", "--json").stdout)}
    assert "tinyml_techniques" in listed["quantize-int8"]["hooks"]


def test_compile_writes_the_c_sources(build_dir: Path) -> None:
    assert {"model.h", "model.c", "model_data.c"} <= {p.name for p in build_dir.iterdir()}


def test_validate_reports_c_equal_to_reference(build_dir: Path) -> None:
    result = run("validate", str(build_dir), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["c_matches_reference"] is True
    assert report["samples"] == 20


def test_pytest_fixture_runs_the_build(build_dir: Path, project: Path, tinyml_model) -> None:
    model = tinyml_model(build_dir)
    data = np.load(project / "val.npz")
    predictions = model(model.quantize(nchw_to_graph(data["x"]))).argmax(axis=1)
    report = json.loads(run("validate", str(build_dir), "--json").stdout)
    assert np.mean(predictions == data["y"]) == pytest.approx(report["int8_accuracy"])


def test_recipe_error_is_one_clean_paragraph(tmp_path: Path) -> None:
    recipe = tmp_path / "tinyml.toml"
    recipe.write_text('[[techniques]]\nname = "quantize-int8"\noptions = { percentile = "high" }\n')
    result = run("compile", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {recipe}: techniques[0].options.percentile: Input should be a valid")
    assert "Traceback" not in result.stderr + result.stdout


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    result = run("--debug", "compile", "--example", "digits", "--board", "no-such-board", "--out", str(tmp_path))
    assert isinstance(result.exception, RecipeError)
    assert "no-such-board" in str(result.exception)


def test_added_commands_get_the_same_error_handling() -> None:
    @main.command("fail-for-test")
    def fail() -> None:
        raise TinymlError("Something named went wrong.")

    try:
        result = run("fail-for-test")
    finally:
        main.commands.pop("fail-for-test")
    assert (result.exit_code, result.stderr) == (1, "Error: Something named went wrong.\n")


def test_conflicting_model_options_are_a_usage_error() -> None:
    result = run("compile", "--example", "digits", "--model", "net.py:make")
    assert result.exit_code == 2
    assert "either --example or --model" in result.stderr
