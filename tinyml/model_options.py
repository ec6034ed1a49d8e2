"""The model and data options that `tinyml compile` and `tinyml build` share, and the recipe they make.

Both commands read `./tinyml.toml` when it exists and `--recipe` is not given; the options override
the recipe field by field (`--model` and `--example` replace its whole `[model]` table). Without
a recipe or a model option the bundled example `digits` is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tinyml.recipe import Recipe, load_recipe

DEFAULT_RECIPE = Path("tinyml.toml")

_FILE = click.Path(dir_okay=False)
_OPTIONS = (
    click.option("--example", metavar="NAME", help="A bundled example model, e.g. digits."),
    click.option(
        "--model", "factory", metavar="FILE:FUNC", help="A Python file and its function that returns the model."
    ),
    click.option("--weights", type=_FILE, help="A state_dict saved with torch.save, loaded into --model's model."),
    click.option("--calib", type=_FILE, help="Calibration data: .npz with `x` shaped (N, C, H, W) or (N, F)."),
    click.option("--val", type=_FILE, help="Validation data for `tinyml validate`: .npz with `x` and labels `y`."),
    click.option("--train", type=_FILE, help="Training data for techniques that fine-tune: .npz with `x` and `y`."),
    click.option(
        "--recipe",
        type=_FILE,
        help=f"A recipe file (default: ./{DEFAULT_RECIPE} if present). Options given here override it.",
    ),
)


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --example --model --weights --calib --val --train --recipe to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def recipe_from_options(
    example: str | None,
    factory: str | None,
    weights: str | None,
    calib: str | None,
    val: str | None,
    train: str | None,
    recipe: str | None,
    board: str | None = None,
) -> Recipe:
    """The recipe the options describe: ./tinyml.toml or --recipe, overridden by the other options."""
    if example and factory:
        raise click.UsageError("Give either --example or --model, not both.")
    path = Path(recipe) if recipe is not None else (DEFAULT_RECIPE if DEFAULT_RECIPE.is_file() else None)
    if weights and not factory and path is None:
        raise click.UsageError("--weights belongs with --model FILE:FUNC (or a recipe whose [model] has a factory).")
    model = {k: v for k, v in {"example": example, "factory": factory, "weights": weights}.items() if v}
    data = {k: v for k, v in {"calibration": calib, "validation": val, "train": train}.items() if v}
    overrides: dict[str, Any] = {}
    if model:
        overrides["model"] = model
    if data:
        overrides["data"] = data
    if board:
        overrides["board"] = board
    return load_recipe(path, overrides)


def default_out_name(recipe: Recipe) -> str:
    """The model's name for a default output folder: the example's, or the model file's stem."""
    return recipe.model.example or recipe.model.factory_file.stem
