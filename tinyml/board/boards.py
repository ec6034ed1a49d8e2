"""Boards: what a build targets (core, FPU, DSP, memory map, clock) and how QEMU emulates it.

Each board is one TOML file in the repository's `boards/` folder; this module reads them and
offers them through the `tinyml_boards` hook, so a third-party plugin adds a board the same way.
A profile such as `stm32f746` names a real MCU's flash and RAM limits but runs on the QEMU
machine of its core kind, linked at addresses that exist on that machine.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from tinyml.errors import BoardError
from tinyml.resources import BOARDS_DIR

COUNTERS = ("tim2", "systick")
DEFAULT_STACK_RESERVE = 4096

hookimpl = pluggy.HookimplMarker("tinyml")


@dataclass(frozen=True)
class Board:
    """One target: the compiler flags, memory limits and emulator that a firmware build needs.

    `flash_origin`/`ram_origin` are where the image is linked (addresses that exist on the QEMU
    machine); `flash_bytes`/`ram_bytes` are the board's own limits. `counter` says how the
    firmware counts instructions under `qemu-system-arm -icount shift=0` (one instruction per
    nanosecond of virtual time): `tim2` (STM32 TIM2 at 1 GHz) or `systick` (the core clock).
    """

    name: str
    core: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    clock_hz: int
    qemu_machine: str
    counter: str
    counter_hz: int
    fpu: str | None = None
    dsp: bool = False
    description: str = ""
    aliases: tuple[str, ...] = ()
    stack_reserve: int = DEFAULT_STACK_RESERVE

    @property
    def cflags(self) -> list[str]:
        """Flags for every compile and link step: CPU, Thumb, float ABI and FPU."""
        flags = [f"-mcpu={self.core}", "-mthumb"]
        if self.fpu:
            flags += ["-mfloat-abi=hard", f"-mfpu={self.fpu}"]
        else:
            flags += ["-mfloat-abi=soft"]
        return flags

    @property
    def instructions_per_tick(self) -> int:
        """How many instructions one counter tick stands for (1 ns of virtual time each)."""
        return 1_000_000_000 // self.counter_hz

    def summary(self) -> dict[str, Any]:
        """The board as plain values, for tables and JSON."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "core": self.core,
            "fpu": self.fpu,
            "dsp": self.dsp,
            "clock_hz": self.clock_hz,
            "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes,
            "qemu_machine": self.qemu_machine,
            "counter": self.counter,
            "instructions_per_tick": self.instructions_per_tick,
        }


_REQUIRED = object()


def _field(raw: dict[str, Any], dotted: str, path: Path, convert: Any, default: Any = _REQUIRED) -> Any:
    value: Any = raw
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            if default is not _REQUIRED:
                return default
            raise BoardError(f"Board file {path}: required field {dotted!r} is missing.")
        value = value[key]
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise BoardError(f"Board file {path}: field {dotted!r} has a malformed value {value!r}.") from None


def load_board_file(path: Path) -> Board:
    """Read one board TOML file; a malformed one is reported with the file and the field."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise BoardError(f"Cannot read board file {path}: {err}") from None
    board = Board(
        name=_field(raw, "name", path, str),
        core=_field(raw, "core", path, str),
        flash_origin=_field(raw, "flash.origin", path, int),
        flash_bytes=_field(raw, "flash.bytes", path, int),
        ram_origin=_field(raw, "ram.origin", path, int),
        ram_bytes=_field(raw, "ram.bytes", path, int),
        clock_hz=_field(raw, "clock_hz", path, int),
        qemu_machine=_field(raw, "qemu.machine", path, str),
        counter=_field(raw, "qemu.counter", path, str),
        counter_hz=_field(raw, "qemu.counter_hz", path, int),
        fpu=_field(raw, "fpu", path, str, None),
        dsp=_field(raw, "dsp", path, bool, False),
        description=_field(raw, "description", path, str, ""),
        aliases=_field(raw, "aliases", path, tuple, ()),
        stack_reserve=_field(raw, "stack_reserve", path, int, DEFAULT_STACK_RESERVE),
    )
    if board.counter not in COUNTERS:
        raise BoardError(
            f"Board file {path}: qemu.counter must be one of {', '.join(COUNTERS)}, got {board.counter!r}."
        )
    return board


@functools.cache
def builtin_boards() -> tuple[Board, ...]:
    """The boards shipped in `boards/*.toml`, loaded once (the plugin registry compares identities)."""
    return tuple(load_board_file(p) for p in sorted(BOARDS_DIR.glob("*.toml")))


@hookimpl
def tinyml_boards() -> list[Board]:
    return list(builtin_boards())


def resolve_board(name: str | Board) -> Board:
    """The board called `name` (or one of its aliases), from every loaded plugin."""
    if isinstance(name, Board):
        return name
    from tinyml import plugins

    available = plugins.boards()
    if name not in available:
        known = ", ".join(sorted(available)) or "none"
        raise BoardError(f"Unknown board {name!r}. Known boards: {known}. Run `tinyml boards` for details.")
    return available[name]
