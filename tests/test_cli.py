"""The `tinyml` command: plugin listing, compile and validate from a recipe, clean error reports."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from user_project import write_user_project

from tinyml.cli import main
from tinyml.errors import RecipeError, TinymlError
from tinyml.frontend import nchw_to_graph


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a model factory, its weights, calibration and validation data, a tinyml.toml."""
    return write_user_project(tmp_path_factory.mktemp("project"))


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


def test_compile_with_flags_only_then_validate(project: Path, tmp_path: Path) -> None:
    """The README's own-model line, with --val, gives a build that `tinyml validate` measures."""
    out = tmp_path / "net"
    result = run(
        "compile",
        *("--model", f"{project / 'net.py'}:make_model", "--weights", str(project / "net.pt")),
        *("--calib", str(project / "calib.npz"), "--val", str(project / "val.npz"), "--out", str(out)),
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(run("validate", str(out), "--json").stdout)
    assert report["samples"] == 20 and report["c_matches_reference"] is True


def _npz(**arrays: np.ndarray):
    return lambda path: _savez(path, arrays)


def _savez(path: Path, arrays: dict) -> None:
    with path.open("wb") as f:
        np.savez(f, **arrays)


def _with(x: np.ndarray, index: tuple, value: float) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


def _truncated(path: Path) -> None:
    _savez(path, {"x": RNG.normal(size=(64, 1, 8, 8)).astype(np.float32)})
    path.write_bytes(path.read_bytes()[:3000])


def _npy(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, X)


RNG = np.random.default_rng(1)
X = RNG.normal(size=(12, 1, 8, 8)).astype(np.float32)
Y = RNG.integers(0, 3, 12)

# (flag, file content, words the one-paragraph error must contain)
DATA_ERRORS = {
    "calib-nan": ("--calib", _npz(x=_with(X, (2, 0, 1, 1), np.nan)), ["data.calibration (--calib)", "NaN or infinite"]),
    "calib-inf": ("--calib", _npz(x=_with(X, (0, 0, 0, 0), np.inf)), ["data.calibration (--calib)", "sample 0"]),
    "calib-npy": ("--calib", _npy, ["data.calibration (--calib)", "single array", "np.savez"]),
    "calib-text": ("--calib", lambda p: p.write_text("1 2 3\n"), ["data.calibration (--calib)", "not an .npz"]),
    "calib-truncated": ("--calib", _truncated, ["data.calibration (--calib)", "bad.npz"]),
    "val-shape": ("--val", _npz(x=X[:, :, :7, :], y=Y), ["data.validation (--val)", "[1, 7, 8]", "[1, 8, 8]"]),
    "val-no-labels": ("--val", _npz(x=X), ["data.validation (--val)", "has no labels `y`"]),
    "val-negative": ("--val", _npz(x=X, y=_with(Y, 3, -1)), ["data.validation (--val)", "0 to 2", "e.g. -1"]),
    "val-57": ("--val", _npz(x=X, y=_with(Y, 5, 57)), ["data.validation (--val)", "3 outputs", "e.g. 57"]),
    "train-no-labels": ("--train", _npz(x=X), ["data.train (--train)", "has no labels `y`"]),
}


@pytest.mark.parametrize("case", DATA_ERRORS, ids=list(DATA_ERRORS))
def test_bad_data_is_one_paragraph_at_compile_time(case: str, project: Path, tmp_path: Path) -> None:
    flag, write, words = DATA_ERRORS[case]
    bad = tmp_path / "bad.npz"
    write(bad)
    data = {"--calib": str(project / "calib.npz"), flag: str(bad)}
    result = run(
        "compile",
        *("--model", f"{project / 'net.py'}:make_model", "--out", str(tmp_path / "out")),
        *(item for pair in data.items() for item in pair),
    )
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for word in words:
        assert word in result.stderr
    assert not (tmp_path / "out").exists()


def test_factory_that_raises_is_one_paragraph(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def make_model():\n    raise RuntimeError('no GPU here')\n")
    np.savez(tmp_path / "calib.npz", x=X)
    result = run("compile", "--model", f"{tmp_path / 'net.py'}:make_model", "--calib", str(tmp_path / "calib.npz"))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: model.factory (--model): {tmp_path / 'net.py'}:make_model() raised RuntimeError: no GPU here\n"
    )


def test_input_shape_with_batch_four_is_rejected(project: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tinyml.toml"
    recipe.write_text(f'[model]\nfactory = "{project / "net.py"}:make_model"\ninput_shape = [4, 1, 8, 8]\n')
    result = run("compile", "--recipe", str(recipe), "--calib", str(project / "calib.npz"))
    assert result.exit_code == 1
    assert "model.input_shape" in result.stderr and "batch axis (the first) is 1" in result.stderr


@pytest.mark.parametrize("count", ["0", "-5"])
def test_build_needs_at_least_one_input(count: str) -> None:
    result = run("build", "--board", "stm32", "--inputs", count)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message
    assert "--inputs" in message and "x>=1" in message and "build --help" in message


def test_build_takes_the_model_and_data_flags() -> None:
    result = run("build", "--help")
    for flag in ("--model", "--weights", "--calib", "--val", "--train", "--example", "--recipe"):
        assert flag in result.stdout


def test_train_file_feeds_the_techniques_context(project: Path, tmp_path: Path) -> None:
    """`[data] train` (here --train's override) reaches Context.train_data, checked and as given."""
    from tinyml.compiler import compile_from_recipe
    from tinyml.recipe import load_recipe
    from tinyml.technique import Technique

    seen = {}

    class Recorder(Technique):
        name = "record-train-data"
        stage = "train"

        def apply(self, model, context):
            seen["train"] = context.require_train_data(self.name)
            return model

    x_train, y_train = X[:10], Y[:10]
    np.savez(tmp_path / "train.npz", x=x_train, y=y_train)
    recipe = load_recipe(project / "tinyml.toml", {"data": {"train": str(tmp_path / "train.npz")}})
    recipe.techniques.insert(0, Recorder())
    compile_from_recipe(recipe, None, progress=False)
    np.testing.assert_array_equal(seen["train"][0], x_train)
    np.testing.assert_array_equal(seen["train"][1], y_train)
