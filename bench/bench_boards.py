"""Instructions, flash, RAM and stack of the bundled example on every board, measured in QEMU.

    .venv/bin/python bench/bench_boards.py [--boards stm32 cortex-m3 ...] [--example digits] [--json]

Compiles the example for each board (with that board's kernels and scratch, as `tinyml build`
does), builds the firmware (offline PlatformIO), runs it in QEMU and prints one row per board,
with whether the board's outputs equal the numpy oracle's (`outputs_match_reference`).
Instructions are counted exactly by tinyml's QEMU plugin (the "resolution" column is 1; it shows
the timer's resolution when the plugin could not be used).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tinyml.board.boards import builtin_boards, resolve_board
from tinyml.board.project import build_firmware, default_test_inputs
from tinyml.board.qemu import run_firmware
from tinyml.board.size import size_report
from tinyml.compiler import compile_from_recipe
from tinyml.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="*", default=[b.name for b in builtin_boards()])
    parser.add_argument("--example", default="digits")
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = []

    table = Table(title=f"example '{args.example}' on each board")
    for column in ("board", "core", "qemu", "instructions", "resolution", "flash B", "RAM B", "stack B", "= host"):
        table.add_column(column, justify="left" if column in ("board", "core", "qemu") else "right")
    with tempfile.TemporaryDirectory(prefix="tinyml-bench-") as scratch:
        for name in args.boards:
            board = resolve_board(name)
            # compiled for the board, as `tinyml build` does: kernels and scratch are the board's own
            model_dir = Path(scratch) / f"model-{board.name}"
            recipe = load_recipe(None, {"model": {"example": args.example}, "board": board.name})
            compile_from_recipe(recipe, model_dir, progress=False)
            inputs = default_test_inputs(model_dir, args.inputs)
            out = build_firmware(model_dir, board, Path(scratch) / board.name, inputs).out_dir
            result = run_firmware(out, timeout=300)
            sizes = size_report(out)
            row = {
                "board": board.name,
                "core": board.core,
                "qemu_machine": board.qemu_machine,
                "instructions": int(result.instructions.mean()),
                "instruction_resolution": result.instruction_resolution,
                "flash_bytes": sizes.flash_bytes,
                "ram_bytes": sizes.ram_bytes,
                "stack_bytes": result.stack_bytes,
                "outputs_match_reference": result.outputs_match_reference,
            }
            rows.append(row)
            table.add_row(
                *(str(row[k]) for k in ("board", "core", "qemu_machine")),
                *(f"{row[k]:,}" for k in ("instructions", "instruction_resolution", "flash_bytes", "ram_bytes")),
                f"{row['stack_bytes']:,}",
                "yes" if row["outputs_match_reference"] else "NO",
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
