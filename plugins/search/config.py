"""The search's settings: a `search.toml` file (optional) overridden by command-line options.

Every field has a default, so ``tinyml search --ram 8KB`` works alone; a mistake names the file
and the field. Sizes are bytes or strings such as ``"32KB"`` (1 KB = 1024 bytes).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, PositiveInt

from tinyml.errors import RecipeError
from tinyml.technique import describe_validation_error
from tinyml_plugins.search.space import SearchSpace

EXECUTORS = ("local", "ray")
OBJECTIVES = ("macs", "instructions")
_UNITS = {"": 1, "b": 1, "kb": 1024, "kib": 1024, "k": 1024, "mb": 1024**2, "mib": 1024**2, "m": 1024**2}


def parse_bytes(value: Any) -> int:
    """Bytes from an int or a string like ``32KB``, ``1.5 MB``, ``4096``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be a positive number of bytes")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{value!r} is not a size: give bytes or a number with KB or MB, e.g. 32KB")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError("must be a positive number of bytes")
    return size


class SearchConfig(BaseModel):
    """Everything a search needs; see the README's search section for each field."""

    model_config = ConfigDict(extra="forbid")

    example: str = "digits"  # the bundled example whose data the candidates learn
    board: str = "stm32"
    ram: int | None = None  # bytes; default: the board's RAM
    flash: int | None = None  # bytes; default: the board's flash
    stack: Literal["measured"] | PositiveInt = "measured"  # bytes, or measured once in QEMU
    trials: PositiveInt = 20  # candidates trained (those that do not fit are rejected and not counted)
    epochs: PositiveInt = 4  # short training: the accuracy estimate of a candidate
    final_epochs: PositiveInt = 40  # full training of the chosen candidate
    finalists: PositiveInt = 3  # most accurate candidates cross-validated with full trainings; the best one
    # (mean accuracy, then cross-entropy) is chosen: short trainings on one split tie and rank noisily
    finalist_folds: Annotated[int, pydantic.Field(ge=2)] = 3  # folds of that cross-validation
    train_samples: PositiveInt | None = None  # use only the first N training samples (quick trials)
    objective: str = "macs"  # accuracy against "macs" or "instructions"
    executor: str = "local"
    workers: PositiveInt = 2
    population: PositiveInt = 8  # NSGA-II population per generation
    seed: int = 0
    space: SearchSpace = SearchSpace()

    @pydantic.field_validator("ram", "flash", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        return None if value is None else parse_bytes(value)

    @pydantic.field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(
                f"unknown executor {value!r}: use 'local' (processes on this machine) or 'ray' (Ray tasks on a "
                "cluster; pip install 'tinyml[ray]')"
            )
        return value

    @pydantic.field_validator("objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        if value not in OBJECTIVES:
            raise ValueError(f"unknown objective {value!r}: use 'macs' or 'instructions'")
        return value


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> SearchConfig:
    """The settings in `path` (a TOML file), overridden by the `overrides` that are not None."""
    raw: dict[str, Any] = {}
    where = "search settings:"
    if path is not None:
        path = Path(path)
        where = f"{path}:"
        try:
            with path.open("rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise RecipeError(f"The search settings file {path} does not exist.") from None
        except tomllib.TOMLDecodeError as err:
            raise RecipeError(f"{path}: not valid TOML: {err}.") from None
    raw.update({key: value for key, value in overrides.items() if value is not None})
    if isinstance(raw.get("space"), dict):
        empty = [name for name, value in raw["space"].items() if value == []]
        if empty:
            raise RecipeError(
                f"{where} the search space is empty: space.{empty[0]} lists no value, so no candidate can be drawn. "
                f"Give at least one value in each of {', '.join(f'space.{n}' for n in empty)}, or remove the "
                "field to use its default."
            )
    try:
        return SearchConfig(**raw)
    except pydantic.ValidationError as err:
        raise RecipeError(describe_validation_error(err, where, SearchConfig).replace("\n", "; ") + ".") from None
