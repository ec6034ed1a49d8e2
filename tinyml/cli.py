"""The `tinyml` command. `main` is a click group: other modules add their commands with `main.add_command`.

Every `TinymlError` is printed as one clean paragraph with exit code 1; `tinyml --debug ...`
shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tinyml import plugins
from tinyml.board.cli import register as register_board_commands
from tinyml.errors import TinymlError
from tinyml.model_options import default_out_name, model_options, recipe_from_options


class TinymlGroup(click.Group):
    """A click group that turns a `TinymlError` (or a bad option value) from any subcommand into one
    paragraph and exit code 1; other usage errors keep click's usage text and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings(), _sigterm_as_exit():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except TinymlError as err:
                if ctx.meta.get("tinyml.debug"):
                    raise
                click.echo(f"Error: {err}", err=True)
                ctx.exit(1)
            except click.BadParameter as err:
                # a value out of range is the user's data, like any other: one paragraph, exit 1
                command = err.ctx.command_path if err.ctx else ctx.command_path
                click.echo(f"Error: {err.format_message()} See `{command} --help`.", err=True)
                ctx.exit(1)


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM, so builds unwind and remove their staging folders."""


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into an exception (exit code 143) for the duration of a command.

    By default SIGTERM ends the process on the spot, leaving a half-written staging folder; raised
    as an exception it unwinds through every `finally`. A second SIGTERM during that clean-up is
    ignored so the clean-up completes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        click.echo("Terminated: stopping and removing partial output.", err=True)
        raise Terminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
@model_options
@click.option("--board", metavar="NAME", help="The target board (see the README's board list).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: build/<model name>).")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary (layers, bytes, arena) as JSON.")
def compile_command(board: str | None, out: str | None, as_json: bool, **options: str | None) -> None:
    """Compile a model to C: apply the recipe's techniques, plan memory, generate the C sources.

    The output folder must be new, empty, or an earlier tinyml build: a folder holding anything
    else (your project, your data) is never replaced.
    """
    from tinyml.compiler import compile_from_recipe

    loaded = recipe_from_options(**options, board=board)
    out_dir = Path(out) if out else Path("build") / default_out_name(loaded)
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


register_board_commands(main)
plugins.register_commands(main)

if __name__ == "__main__":
    sys.exit(main())
