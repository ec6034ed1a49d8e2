"""Instructions, flash, RAM and stack of the bundled example on every board, measured in QEMU.

    .venv/bin/python bench/bench_boards.py [--boards stm32 cortex-m3 ...] [--example digits]

Compiles the example once, builds firmware for each board (offline PlatformIO), runs it in QEMU
and prints one row per board. Instructions are counted under `-icount shift=0`: exact on the
STM32 (TIM2), to one SysTick period (the "resolution" column) on the MPS2 machines.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

    table = Table(title=f"example '{args.example}' on each board")
    for column in ("board", "core", "qemu", "instructions", "resolution", "flash B", "RAM B", "stack B"):
        table.add_column(column, justify="left" if column in ("board", "core", "qemu") else "right")
    with tempfile.TemporaryDirectory(prefix="tinyml-bench-") as scratch:
        model_dir = Path(scratch) / "model"
        compile_from_recipe(load_recipe(None, {"model": {"example": args.example}}), model_dir, progress=False)
        inputs = default_test_inputs(model_dir, args.inputs)
        for name in args.boards:
            board = resolve_board(name)
            out = build_firmware(model_dir, board, Path(scratch) / board.name, inputs).out_dir
            result = run_firmware(out, timeout=300)
            sizes = size_report(out)
            table.add_row(
                board.name,
                board.core,
                board.qemu_machine,
                f"{int(result.instructions.mean()):,}",
                str(result.instruction_resolution),
                f"{sizes.flash_bytes:,}",
                f"{sizes.ram_bytes:,}",
                f"{result.stack_bytes:,}",
            )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
