"""What a technique is: a named step with typed options that turns a model into a smaller one.

A `train` technique takes and returns a `torch.nn.Module` (pruning, distillation, QAT); a `graph`
technique takes and returns a `tinyml.ir.Graph` (int8 quantization, weight clipping). Plugins
provide them through the `tinyml_techniques` hook; a recipe lists them in order with options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pydantic

from tinyml.errors import DataError, RecipeError

if TYPE_CHECKING:
    import torch

    from tinyml.board.boards import Board

Advance = Callable[[int], None]
Progress = Callable[[str, int], AbstractContextManager[Advance]]


@contextmanager
def silent_progress(description: str, total: int) -> Iterator[Advance]:
    """A progress reporter that shows nothing; `tinyml.progress.progress_bar` draws one."""
    yield lambda n=1: None


@dataclass
class Context:
    """What a technique may use besides its subject: data, the target board and a progress bar.

    `calibration` is a float batch in the graph's layout (NHWC); `train_data` is (inputs NCHW
    float32, integer labels), checked against the model before any technique runs: from the
    recipe's `[data] train` (`--train`), else the calibration file when it has labels `y`, else
    the bundled example's training split. `example_input` is the torch tensor the model was
    exported with. Use `progress` as ``with context.progress("calibrating", total=n) as advance: advance(1)``.
    """

    calibration: np.ndarray | None = None
    train_data: tuple[np.ndarray, np.ndarray] | None = None
    example_input: torch.Tensor | None = None
    board: Board | None = None
    progress: Progress = silent_progress

    def require_train_data(self, technique: str) -> tuple[np.ndarray, np.ndarray]:
        """The labelled training data a fine-tuning technique needs; a `DataError` naming where to give it."""
        if self.train_data is None or self.train_data[1] is None:
            raise DataError(
                f"Technique {technique!r} fine-tunes the model and needs labelled training data: set "
                '`[data] train = "train.npz"` in the recipe or pass --train FILE (an .npz with inputs `x` and '
                "integer labels `y`)."
            )
        return self.train_data


class NoOptions(pydantic.BaseModel):
    """Options of a technique that takes none."""

    model_config = pydantic.ConfigDict(extra="forbid")


class Technique:
    """Base of every technique. Subclasses set `name`, `stage`, `Options` and implement `apply`.

    `Options` is a pydantic model with ``extra="forbid"`` whose fields carry defaults, so a recipe
    entry without options works and a misspelt option is an error rather than silently ignored.
    """

    name: ClassVar[str]
    stage: ClassVar[Literal["train", "graph"]]
    Options: ClassVar[type[pydantic.BaseModel]] = NoOptions
    # What the technique makes smaller, for the fit check's advice: "flash" (weights), "ram" (activations).
    reduces: ClassVar[tuple[Literal["flash", "ram"], ...]] = ()
    # Options that name files (a teacher model's file and weights): a recipe resolves a relative path
    # against its own folder, as it does `[model] factory`; a "FILE.py:FUNCTION" value keeps its function.
    path_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: pydantic.BaseModel | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(options, pydantic.BaseModel):
            options = options.model_dump()
        merged = {**(options or {}), **kwargs}
        self.options = self.parse_options(merged, where=f"technique {self.name!r} options")

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any], where: str) -> pydantic.BaseModel:
        """Validate `raw` against `Options`; a bad value raises `RecipeError` naming `where`.field."""
        try:
            return cls.Options.model_validate(dict(raw))
        except pydantic.ValidationError as err:
            raise RecipeError(describe_validation_error(err, where, cls.Options)) from None

    def apply(self, subject: Any, context: Context) -> Any:
        """Return the transformed model: a new `nn.Module` (train stage) or `Graph` (graph stage)."""
        raise NotImplementedError(f"technique {self.name!r} does not implement apply()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


def describe_validation_error(
    err: pydantic.ValidationError, where: str, model: type[pydantic.BaseModel] | None = None
) -> str:
    """One line per problem naming the field: ``where.field[0]: message, got 'value'``.

    A `where` ending in ":" (a file name) is followed by the field path, anything else is its parent field.
    """
    lines = []
    for problem in err.errors():
        path = ""
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        if where.endswith(":"):
            path = f"{where} {path.lstrip('.')}"
        else:
            path = where + path
        message = problem["msg"]
        if problem["type"] == "extra_forbidden" and model is not None and len(problem["loc"]) == 1:
            message += f" (expected one of: {', '.join(model.model_fields) or 'none'})"
        elif problem["type"] != "missing" and not isinstance(problem["input"], dict):
            message += f", got {problem['input']!r}"
        lines.append(f"{path}: {message}")
    return "\n".join(lines)
