"""`tinyml boards`, `tinyml build`, `tinyml run`, `tinyml size`: from a model to figures measured on a board.

`tinyml.cli` adds these commands to its `main` group.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from tinyml.model_options import model_options, recipe_from_options

if TYPE_CHECKING:
    from tinyml.board.qemu import RunResult


def _print_table(table: Table) -> None:
    Console(width=120).print(table)


def _kib(value: int) -> str:
    return f"{value / 1024:g} KB"


@click.command("boards")
@click.option("--json", "as_json", is_flag=True, help="Print the boards as JSON.")
def boards_command(as_json: bool) -> None:
    """List the boards a firmware can be built for, with the QEMU machine that runs each."""
    from tinyml import plugins

    unique = {board.name: board for board in plugins.boards().values()}
    boards = [unique[name] for name in sorted(unique)]
    if as_json:
        click.echo(json.dumps([b.summary() for b in boards], indent=2))
        return
    table = Table(title="tinyml boards")
    for column in ("board", "aliases", "core", "FPU", "DSP", "clock", "flash", "RAM", "emulator"):
        table.add_column(column)
    for b in boards:
        table.add_row(
            b.name,
            ", ".join(b.aliases),
            b.core,
            b.fpu or "-",
            "yes" if b.dsp else "no",
            f"{b.clock_hz / 1e6:g} MHz",
            _kib(b.flash_bytes),
            _kib(b.ram_bytes),
            f"qemu {b.qemu_machine}",
        )
    _print_table(table)


@click.command("build")
@click.option("--board", "board_name", metavar="NAME", required=True, help="Target board (`tinyml boards`).")
@model_options
@click.option("--out", type=click.Path(file_okay=False), help="Firmware folder (default: build/<board as given>).")
@click.option(
    "--inputs",
    "input_count",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Test inputs compiled in for `run` (the first validation samples).",
)
@click.option(
    "--pio-platform",
    metavar="SPEC",
    help="Another PlatformIO platform instead of tinyml's offline one (e.g. ststm32; needs network).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the fit estimate and the built sizes as JSON.")
def build_command(
    board_name: str, out: str | None, input_count: int, pio_platform: str | None, as_json: bool, **options: str | None
) -> None:
    """Compile the model and build firmware for a board: <out>/firmware.elf and a PlatformIO project.

    Takes the same model and data options as `tinyml compile` (default: ./tinyml.toml, else the
    bundled 'digits' example). The model must fit the board's flash and RAM (checked before
    anything is built); the firmware runs the model on the first --inputs validation samples when
    started (`tinyml run`). The output folder must be new, empty, or an earlier tinyml build.
    """
    from tinyml.board.boards import resolve_board
    from tinyml.board.fit import check_build_fits
    from tinyml.board.project import build_firmware, default_test_inputs
    from tinyml.board.size import size_report
    from tinyml.compiler import compile_from_recipe
    from tinyml.compression_report import compression_report
    from tinyml.recipe import recipe_inputs
    from tinyml.report import refresh_report
    from tinyml.staging import check_output_dir

    board = resolve_board(board_name)
    loaded = recipe_from_options(**options, board=board_name)
    out_dir = Path(out) if out else Path("build") / board_name
    check_output_dir(out_dir, recipe_inputs(loaded))  # before compiling, so a refused folder costs nothing
    with tempfile.TemporaryDirectory(prefix="tinyml-model-") as scratch:
        model_dir = Path(scratch) / "model"
        build = compile_from_recipe(loaded, model_dir, progress=not as_json)
        estimate = check_build_fits(build, board)
        compression = compression_report(build)
        if not as_json and compression.layers:
            _print_table(compression.table())
            click.echo(
                f"fits {board.name}: about {estimate.flash_bytes} of {board.flash_bytes} bytes of flash, "
                f"{estimate.ram_bytes} of {board.ram_bytes} bytes of RAM"
            )
        inputs = default_test_inputs(model_dir, input_count)
        built = build_firmware(model_dir, board, out_dir, inputs, pio_platform=pio_platform)
    report = size_report(built.out_dir)
    refresh_report(built.out_dir)  # report.html with flash per layer from the ELF
    if as_json:
        summary = {
            "elf": str(built.elf),
            "fit_estimate": asdict(estimate),
            "size": report.summary(),
            "compression": {"layers": compression.by_layer(), "total": compression.total.as_dict()},
        }
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"built {built.elf}: flash {report.flash_bytes} bytes, RAM {report.ram_bytes} bytes "
        f"(+ stack); run it with `tinyml run {built.out_dir}`"
    )


@click.command("run")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds before a hung firmware is stopped.")
def run_command(build_dir: str, as_json: bool, timeout: float) -> None:
    """Run a firmware folder in QEMU: outputs, instructions per inference and per layer, stack.

    Instructions are counted exactly on every board by tinyml's QEMU plugin, with the instruction
    mix and estimated Cortex-M4/M7 cycles; when the plugin cannot be built the emulated board's
    timer counts them (`instruction_source`, `instruction_resolution`). QEMU models no cycles:
    counts are not times, and the cycles are estimates from a timing table.

    The outputs are compared with the reference the numpy oracle computed when the firmware was
    built (`outputs_match_reference`); exits with 1 when they differ.
    """
    from tinyml.board.qemu import run_firmware
    from tinyml.report import record_run

    result = run_firmware(build_dir, timeout=timeout)
    encoded = _encoded_layers(Path(build_dir))
    summary = result.summary()
    for layer in summary["layers"]:
        layer.update(encoded.get(layer["name"], {}))  # an encoded layer's count includes its decoding
    record_run(build_dir, summary)  # run.json, and report.html with instructions per layer
    matches = result.outputs_match_reference
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_run_tables(result, encoded)
    if matches is None and not as_json:
        click.echo(
            "no reference outputs: the firmware was built from a model folder without a graph, so the board's "
            "outputs were not compared with the host's"
        )
    elif matches and not as_json:
        click.echo(f"outputs equal the host reference (numpy oracle) on all {len(result.outputs)} inputs")
    elif matches is False:
        differing = result.mismatches()
        shown = ", ".join(
            f"input {m['input']} ({m['values_differing']} of {result.outputs.shape[1]} values, "
            f"by up to {m['max_difference']})"
            for m in differing[:5]
        )
        click.echo(
            f"Error: the board's outputs differ from the host reference (numpy oracle, computed when the firmware "
            f"was built) on {len(differing)} of {len(result.outputs)} inputs: {shown}"
            f"{', ...' if len(differing) > 5 else ''}. The firmware in {build_dir} does not compute what its "
            "compiled graph defines, or the folder was changed after it was built: build it again, and report it "
            "if it persists.",
            err=True,
        )
        sys.exit(1)


def _encoded_layers(build_dir: Path) -> dict[str, dict[str, str]]:
    """The firmware's layers whose weights are encoded, from the model it was built from (none when that
    model folder is not a tinyml compile, e.g. hand-written C)."""
    from tinyml.compression_report import encoded_layers
    from tinyml.errors import TinymlError
    from tinyml.manifest import read_manifest
    from tinyml.report import FIRMWARE_MODEL_DIR

    try:
        return encoded_layers(read_manifest(build_dir / FIRMWARE_MODEL_DIR, "model"))
    except TinymlError:
        return {}


def _print_run_tables(result: RunResult, encoded: dict[str, dict[str, str]]) -> None:
    """Per-inference and per-layer tables of a QEMU run; an encoded layer is marked with its encoding and
    the kernel that decodes it, whose instructions include the decoding."""
    table = Table(title=f"{result.board} on qemu {result.machine}: per inference")
    for column in ("input", "output (argmax)", "= host", "instructions"):
        table.add_column(column, justify="right")
    wrong = {m["input"] for m in result.mismatches()}
    for k, (row, count) in enumerate(zip(result.outputs, result.instructions, strict=True)):
        same = "-" if result.reference_outputs is None else ("NO" if k in wrong else "yes")
        table.add_row(str(k), str(int(np.argmax(row))), same, f"{int(count):,}")
    _print_table(table)
    layers = Table(title="per layer (mean over inputs)")
    columns = (
        ("#", "layer", "weights decoded by", "instructions", "share")
        if encoded
        else ("#", "layer", "instructions", "share")
    )
    for column in columns:
        layers.add_column(column, justify="right" if column in ("#", "instructions", "share") else "left")
    means = result.layer_instructions.mean(axis=0) if len(result.outputs) else np.zeros(len(result.layer_names))
    total = max(float(means.sum()), 1.0)
    for i, (name, mean) in enumerate(zip(result.layer_names, means, strict=True)):
        decoded = [f"{encoded[name]['encoding']}: {encoded[name]['kernel']}" if name in encoded else "-"]
        layers.add_row(str(i), name, *(decoded if encoded else []), f"{mean:,.0f}", f"{100 * mean / total:.1f}%")
    _print_table(layers)
    click.echo(f"stack high-water: {result.stack_bytes} bytes; instruction resolution: {result.instruction_resolution}")
    if result.plugin_counts is not None:
        cycles = result.plugin_counts.cycles(result.plugin_counts.invocations)
        means = ", ".join(f"{core} {np.mean(values):,.0f}" for core, values in cycles.items())
        click.echo(f"instructions counted exactly by the QEMU plugin; estimated cycles per inference (mean): {means}")
    elif result.instruction_count_note:
        click.echo(f"instructions from the board timer: {result.instruction_count_note}")


@click.command("size")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the sizes as JSON.")
def size_command(build_dir: str, as_json: bool) -> None:
    """Flash and RAM of a firmware folder, by ELF section and by layer (weights and parameters)."""
    from tinyml.board.size import size_report

    report = size_report(build_dir)
    if as_json:
        click.echo(json.dumps(report.summary(), indent=2))
        return
    sections = Table(title=f"{report.board}: sections")
    for column in ("section", "bytes", "in"):
        sections.add_column(column, justify="right" if column == "bytes" else "left")
    for name, size in report.sections.items():
        where = "flash + RAM" if name == ".data" else ("RAM" if name == ".bss" else "flash")
        sections.add_row(name, f"{size:,}", where)
    _print_table(sections)
    layers = Table(title="by layer")
    for column in ("layer", "flash bytes", "RAM bytes"):
        layers.add_column(column, justify="left" if column == "layer" else "right")
    for layer in report.layers:
        layers.add_row(layer["name"], f"{layer['flash_bytes']:,}", f"{layer['ram_bytes']:,}")
    _print_table(layers)
    for label, used, limit in (
        ("flash", report.flash_bytes, report.flash_limit),
        ("RAM", report.ram_bytes, report.ram_limit),
    ):
        click.echo(f"{label}: {used:,} of {limit:,} bytes ({100 * used / limit:.1f}%)")
    click.echo(f"arena: {report.arena_bytes:,} bytes; stack reserve: {report.stack_reserve:,} bytes")


COMMANDS = (boards_command, build_command, run_command, size_command)


def register(group: click.Group) -> None:
    """Add the board commands to the `tinyml` group."""
    for command in COMMANDS:
        group.add_command(command)
