"""Boards: what a build targets (core, FPU, DSP, memory map, clock) and how QEMU emulates it.

Each board is one TOML file in the repository's `boards/` folder, checked against `BoardFile` (a
misspelt key or a wrong type is an error naming the file and field); this module reads them and
offers them through the `tinyml_boards` hook, so a third-party plugin adds a board the same way.
A profile such as `stm32f746` names a real MCU's flash and RAM limits but runs on the QEMU
machine of its core kind, linked at addresses that exist on that machine.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pluggy
import pydantic

from tinyml.errors import BoardError
from tinyml.resources import BOARDS_DIR
from tinyml.technique import describe_validation_error

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


class _Memory(pydantic.BaseModel):
    """A memory region of a board file: where the image is linked, and how many bytes the board has."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    origin: int = pydantic.Field(ge=0, lt=2**32)
    bytes: int = pydantic.Field(gt=0, le=2**32)


class _Qemu(pydantic.BaseModel):
    """How QEMU emulates the board and how the firmware counts instructions there."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    machine: str
    counter: Literal["tim2", "systick"]
    counter_hz: int = pydantic.Field(gt=0, le=1_000_000_000)


class BoardFile(pydantic.BaseModel):
    """The schema of a board TOML file (`boards/*.toml`); a misspelt or unknown key is an error."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    name: str = pydantic.Field(min_length=1)
    aliases: list[str] = []
    description: str = ""
    core: str = pydantic.Field(min_length=1)
    fpu: str | None = None
    dsp: bool = False
    clock_hz: int = pydantic.Field(gt=0)
    flash: _Memory
    ram: _Memory
    qemu: _Qemu
    stack_reserve: int = pydantic.Field(DEFAULT_STACK_RESERVE, gt=0)

    def to_board(self) -> Board:
        return Board(
            name=self.name,
            core=self.core,
            flash_origin=self.flash.origin,
            flash_bytes=self.flash.bytes,
            ram_origin=self.ram.origin,
            ram_bytes=self.ram.bytes,
            clock_hz=self.clock_hz,
            qemu_machine=self.qemu.machine,
            counter=self.qemu.counter,
            counter_hz=self.qemu.counter_hz,
            fpu=self.fpu,
            dsp=self.dsp,
            description=self.description,
            aliases=tuple(self.aliases),
            stack_reserve=self.stack_reserve,
        )


def load_board_file(path: Path) -> Board:
    """Read one board TOML file; a malformed one is reported with the file and each bad field."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BoardError(f"Cannot read board file {path}: {err}") from None
    try:
        spec = BoardFile.model_validate(raw)
    except pydantic.ValidationError as err:
        problems = describe_validation_error(err, f"Board file {path}:", BoardFile)
        example = BOARDS_DIR / "stm32f405.toml"
        raise BoardError(f"{problems}\n(A complete board file to compare with: {example}.)") from None
    return spec.to_board()


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
