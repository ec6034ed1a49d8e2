"""The recipe, `tinyml.toml`: which model, which data, which board, which techniques in which order.

Read with tomllib, checked with pydantic; every error names the file and the field, e.g.
``tinyml.toml: techniques[0].options.percentile: Input should be a valid number, got 'high'``.
Relative paths resolve against the recipe's folder; command-line overrides against the current
directory. The README has a full example with every field.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, PositiveInt

from tinyml import plugins, samples
from tinyml.errors import RecipeError
from tinyml.technique import Technique, describe_validation_error

if TYPE_CHECKING:
    import torch

    from tinyml.board.boards import Board

DEFAULT_EXAMPLE = "digits"
DEFAULT_TECHNIQUES = ({"name": "quantize-int8"},)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Section):
    """`[model]`: a bundled example, or a factory function in a Python file plus its weights."""

    example: str | None = None
    factory: str | None = None  # "path/to/net.py:make_model"
    weights: Path | None = None  # a state_dict saved with torch.save
    input_shape: list[PositiveInt] | None = None  # NCHW with batch 1; default: from the calibration data

    @pydantic.field_validator("input_shape")
    @classmethod
    def _batch_of_one(cls, shape: list[int] | None) -> list[int] | None:
        if shape is not None and (len(shape) not in (2, 4) or shape[0] != 1):
            raise ValueError(
                "must be [1, C, H, W] or [1, F]: the firmware runs one sample at a time, so the batch axis "
                "(the first) is 1"
            )
        return shape

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.example is None) == (self.factory is None):
            raise ValueError("give exactly one of `example` (a bundled model) or `factory` (FILE.py:FUNC)")
        if self.example is not None and (self.weights or self.input_shape):
            raise ValueError("`weights` and `input_shape` belong with `factory`, not with `example`")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError(f"`factory` must be FILE.py:FUNCTION, got {self.factory!r}")
        return self

    @property
    def factory_file(self) -> Path:
        return Path(self.factory.rsplit(":", 1)[0]) if self.factory else Path()

    @property
    def factory_function(self) -> str:
        return self.factory.rsplit(":", 1)[1] if self.factory else ""


class DataSpec(_Section):
    """`[data]`: .npz files holding `x` (N, C, H, W float32) and integer labels `y`.

    `calibration` sets the int8 ranges (`y` optional); `validation` is what `tinyml validate`
    measures accuracy on (`y` required); `train` is what fine-tuning techniques train on
    (`Context.train_data`, `y` required).
    """

    calibration: Path | None = None
    validation: Path | None = None
    train: Path | None = None


class TechniqueEntry(_Section):
    """One `[[techniques]]` entry: a technique's name and its `[techniques.options]` table."""

    name: str
    options: dict[str, Any] = {}


class RecipeFile(_Section):
    """The whole file as written."""

    board: str | None = None
    model: ModelSpec = ModelSpec(example=DEFAULT_EXAMPLE)
    data: DataSpec = DataSpec()
    techniques: list[TechniqueEntry] = [TechniqueEntry(**t) for t in DEFAULT_TECHNIQUES]


@dataclass
class Recipe:
    """A checked recipe: paths absolute, the board found, each technique built with its options."""

    model: ModelSpec
    data: DataSpec
    board: Board | None
    techniques: list[Technique]
    path: Path | None = None  # the tinyml.toml it came from, if any


# (table, key) pairs holding a path, resolved against the folder of whoever wrote them
_PATH_FIELDS = (
    ("model", "factory"),
    ("model", "weights"),
    ("data", "calibration"),
    ("data", "validation"),
    ("data", "train"),
)
# the command-line flag of each recipe field that names a file, for error messages
FIELD_FLAGS = {
    "model.factory": "--model",
    "model.weights": "--weights",
    "data.calibration": "--calib",
    "data.validation": "--val",
    "data.train": "--train",
}


def field_label(field: str) -> str:
    """A recipe field with its command-line flag, e.g. ``data.validation (--val)``."""
    return f"{field} ({FIELD_FLAGS[field]})" if field in FIELD_FLAGS else field


def recipe_inputs(recipe: Recipe) -> list[Path]:
    """Every file a build reads: the recipe, the model file, weights and data (an output folder must not hold them)."""
    files = [recipe.path, recipe.model.weights, recipe.data.calibration, recipe.data.validation, recipe.data.train]
    if recipe.model.factory:
        files.append(recipe.model.factory_file)
    return [Path(f) for f in files if f is not None]


def load_recipe(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read `path` (optional), apply command-line `overrides` (same shape as the TOML), check it all.

    `overrides` is nested like the file: ``{"board": "stm32", "model": {"example": "digits"}}``.
    Giving `model.example` or `model.factory` replaces the recipe's model source entirely.
    """
    where = str(path) if path is not None else "recipe"
    raw: dict[str, Any] = {}
    base = Path.cwd()  # the techniques come from the recipe file only
    if path is not None:
        path = Path(path)
        base = path.resolve().parent
        raw = _resolve_paths(_read_toml(path), base)
    raw = _merge(raw, _resolve_paths(overrides or {}, Path.cwd()))
    try:
        spec = RecipeFile.model_validate(raw)
    except pydantic.ValidationError as err:
        raise RecipeError(describe_validation_error(err, f"{where}:")) from None
    return Recipe(
        model=spec.model,
        data=spec.data,
        board=_find_board(spec.board, where),
        techniques=[_build_technique(entry, i, where, base) for i, entry in enumerate(spec.techniques)],
        path=path,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"Recipe file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML: {err}.") from None


def _resolve_paths(table: dict[str, Any], base: Path) -> dict[str, Any]:
    table = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    for section, key in _PATH_FIELDS:
        fields = table.get(section)
        value = fields.get(key) if isinstance(fields, dict) else None
        if not isinstance(value, str):
            continue
        fields[key] = _resolve_path(value, base, function=key == "factory")
    return table


def _resolve_path(value: str, base: Path, function: bool) -> str:
    """`value` against `base`; with `function`, a "FILE.py:FUNCTION" value keeps its function."""
    if function and ":" in value:
        file, name = value.rsplit(":", 1)
        return f"{base / Path(file).expanduser()}:{name}"
    return str(base / Path(value).expanduser())


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            table = dict(merged[key])
            if key == "model" and ({"example", "factory"} & value.keys()):
                table = {}  # a new model source: the recipe's weights and shape belonged to the old one
            merged[key] = {**table, **value}
        else:
            merged[key] = value
    return merged


def _find_board(name: str | None, where: str) -> Board | None:
    if name is None:
        return None
    from tinyml.board.boards import BoardError, resolve_board

    try:
        return resolve_board(name)
    except BoardError as err:
        raise RecipeError(f"{where}: board: {err}") from None


def _build_technique(entry: TechniqueEntry, index: int, where: str, base: Path) -> Technique:
    available = plugins.techniques()
    if entry.name not in available:
        names = ", ".join(sorted(available)) or "none (no technique plugin is loaded)"
        raise RecipeError(
            f"{where}: techniques[{index}].name: unknown technique {entry.name!r}. Available techniques: {names}."
        )
    cls = available[entry.name]
    options = dict(entry.options)
    for key in cls.path_options:
        if isinstance(options.get(key), str):
            options[key] = _resolve_path(options[key], base, function=options[key].split(":")[0].endswith(".py"))
    return cls(cls.parse_options(options, where=f"{where}: techniques[{index}].options"))


def load_factory_model(spec: ModelSpec) -> torch.nn.Module:
    """Call the `[model] factory` function and load `weights` into the module it returns (see `load_factory`)."""
    return load_factory(
        spec.factory_file,
        spec.factory_function,
        spec.weights,
        field_label("model.factory"),
        field_label("model.weights"),
    )


def load_factory(
    file: Path, function: str, weights: Path | None, factory_field: str, weights_field: str
) -> torch.nn.Module:
    """Call `function` of the Python file `file` and load `weights` (a state_dict) into the module it returns.

    Errors name `factory_field` or `weights_field`, the recipe field the file came from. While the
    file loads and the function runs, the file's folder comes first on `sys.path`, so
    the model may import helper modules beside it (``from blocks import InvertedResidual``), as
    it would when run as a script. Afterwards `sys.path` and `sys.modules` are as they were: two
    model files whose helper modules share a name do not see each other's.
    """
    import torch

    where = f"{factory_field}: {file}:{function}"
    if not file.is_file():
        raise RecipeError(f"{factory_field}: the file {file} does not exist.")
    with _importable_folder(file.resolve().parent):
        module_spec = importlib.util.spec_from_file_location(f"tinyml_user_model_{abs(hash(file))}", file)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            raise RecipeError(
                f"{factory_field}: importing {file} failed: {type(err).__name__}: {_one_line(err)}"
            ) from err
        make = getattr(module, function, None)
        if not callable(make):
            raise RecipeError(f"{factory_field}: {file} has no function {function!r}.")
        try:
            model = make()
        except Exception as err:
            raise RecipeError(f"{where}() raised {type(err).__name__}: {_one_line(err)}") from err
    if not isinstance(model, torch.nn.Module):
        raise RecipeError(f"{where}() returned {type(model).__name__}, not a torch.nn.Module.")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.state_dict() if isinstance(state, torch.nn.Module) else state)
        except FileNotFoundError:
            raise RecipeError(f"{weights_field}: the file {weights} does not exist.") from None
        except Exception as err:
            raise RecipeError(
                f"{weights_field}: {weights} does not fit the model from {file}:{function}: {_one_line(err)}"
            ) from err
    return model.eval()


@contextmanager
def _importable_folder(folder: Path) -> Iterator[None]:
    """Make `folder`'s modules importable by plain name for the duration, then undo it all.

    Modules already loaded under a name that a file in `folder` also has (another model's
    `blocks`) are set aside, so the import finds this folder's; modules imported from `folder`
    are dropped afterwards and the set-aside ones put back. Objects created meanwhile keep their
    classes (a module need not stay in `sys.modules` for its classes to work).
    """
    local = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}
    set_aside = {
        name: module
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in local and not _is_library(name, module)
    }
    for name in set_aside:
        del sys.modules[name]
    saved_path = list(sys.path)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            if _module_file(module).is_relative_to(folder):
                del sys.modules[name]
        sys.modules.update(set_aside)
        importlib.invalidate_caches()


def _module_file(module: Any) -> Path:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else Path("/nonexistent-module-file")


def _is_library(name: str, module: Any) -> bool:
    """The standard library and installed packages are never set aside, whatever a user's file is called."""
    parts = _module_file(module).parts
    return name.split(".")[0] in sys.stdlib_module_names or "site-packages" in parts or "dist-packages" in parts


def load_samples(path: Path, field_name: str, labels_required: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read `x` and integer labels `y` from the .npz named by the recipe field `field_name`; see `tinyml.samples`."""
    return samples.load_samples(path, field_name, labels_required)


def _one_line(err: BaseException) -> str:
    """An exception's message as one line, so the error stays one paragraph."""
    return " ".join(str(err).split())
