"""The `tinyml` command. `main` is a click group: other modules add their commands with `main.add_command`.

Every `TinymlError` is printed as one clean paragraph with exit code 1; `tinyml --debug ...`
shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tinyml import plugins
from tinyml.board.cli import register as register_board_commands
from tinyml.errors import TinymlError
from tinyml.recipe import load_recipe

DEFAULT_RECIPE = Path("tinyml.toml")


class TinymlGroup(click.Group):
    """A click group that turns a `TinymlError` from any subcommand into a message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except TinymlError as err:
                if ctx.meta.get("tinyml.debug"):
                    raise
                click.echo(f"Error: {err}", err=True)
                ctx.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a plugin that failed to load) as one line on stderr, without source lines."""
    click.echo(f"Warning: {message}", err=True)


@click.group(cls=TinymlGroup)
@click.option("--debug", is_flag=True, help="Show the full traceback when an error is reported.")
@click.version_option(package_name="tinyml")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Take a PyTorch model onto a Cortex-M microcontroller: compress, quantize, generate C, build, run."""
    ctx.meta["tinyml.debug"] = debug


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins_command(as_json: bool) -> None:
    """List the loaded plugins: name, distribution, version and the hooks each implements."""
    infos = plugins.plugin_infos()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
        return
    table = Table("plugin", "distribution", "version", "hooks")
    for info in infos:
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks))
    Console().print(table)


@main.command("compile")
@click.option("--example", metavar="NAME", help="A bundled example model, e.g. digits.")
@click.option("--model", "factory", metavar="FILE:FUNC", help="A Python file and its model function.")
@click.option("--weights", type=click.Path(dir_okay=False), help="A state_dict saved with torch.save.")
@click.option("--calib", type=click.Path(dir_okay=False), help="Calibration data: .npz with `x` (N,C,H,W).")
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False),
    help=f"A recipe file (default: ./{DEFAULT_RECIPE} if present). Options given here override it.",
)
@click.option("--board", metavar="NAME", help="The target board (see the README's board list).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: build/<model name>).")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary (layers, bytes, arena) as JSON.")
def compile_command(
    example: str | None,
    factory: str | None,
    weights: str | None,
    calib: str | None,
    recipe: str | None,
    board: str | None,
    out: str | None,
    as_json: bool,
) -> None:
    """Compile a model to C: apply the recipe's techniques, plan memory, generate the C sources."""
    from tinyml.compiler import compile_from_recipe

    if example and factory:
        raise click.UsageError("Give either --example or --model, not both.")
    if weights and not factory:
        raise click.UsageError("--weights belongs with --model FILE:FUNC.")
    loaded = load_recipe(_recipe_path(recipe), _overrides(example, factory, weights, calib, board))
    out_dir = Path(out) if out else Path("build") / (loaded.model.example or loaded.model.factory_file.stem)
    build = compile_from_recipe(loaded, out_dir, progress=not as_json)
    click.echo(json.dumps(build.summary(), indent=2) if as_json else build.report())


@main.command("validate")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def validate_command(build_dir: str, as_json: bool) -> None:
    """Run a build's C on the host: accuracy against PyTorch, bytes against the integer reference.

    Exits with 1 when the C output differs from the reference on any sample.
    """
    from tinyml.validation import format_report, validate

    result = validate(Path(build_dir))
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
    if not result["c_matches_reference"]:
        sys.exit(1)


@main.command("report")
@click.argument("build_dir", type=click.Path(file_okay=False))
@click.option("--no-open", is_flag=True, help="Only write report.html; do not open it in a browser.")
def report_command(build_dir: str, no_open: bool) -> None:
    """Redraw BUILD_DIR/report.html (a compile folder, or a firmware folder from `tinyml build`) and open it.

    The page shows the layers, the memory plan as a timeline, and for firmware the flash per layer
    and, once `tinyml run` ran it, the instructions per layer. It needs no network to view.
    """
    from tinyml.report import open_report, write_report

    page = write_report(Path(build_dir))
    click.echo(str(page.resolve()))
    if not no_open:
        open_report(page)


def _recipe_path(recipe: str | None) -> Path | None:
    if recipe is not None:
        return Path(recipe)
    return DEFAULT_RECIPE if DEFAULT_RECIPE.is_file() else None


def _overrides(
    example: str | None, factory: str | None, weights: str | None, calib: str | None, board: str | None
) -> dict[str, Any]:
    """Command-line options in the recipe's shape, so they override the file field by field."""
    model = {k: v for k, v in {"example": example, "factory": factory, "weights": weights}.items() if v}
    overrides: dict[str, Any] = {}
    if model:
        overrides["model"] = model
    if calib:
        overrides["data"] = {"calibration": calib}
    if board:
        overrides["board"] = board
    return overrides


register_board_commands(main)

if __name__ == "__main__":
    sys.exit(main())
