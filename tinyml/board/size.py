"""Flash and RAM of a built firmware, by ELF section and by layer (`tinyml size`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyml.board.project import ELF_NAME, manifest_board
from tinyml.errors import InvalidElfError
from tinyml.manifest import read_manifest
from tinyml.weights import MODEL_IDENTIFIERS, SYMBOL_PREFIX, layer_c_names

FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")
RAM_SECTIONS = (".data", ".bss")


@dataclass
class SizeReport:
    """Flash and RAM of a built firmware, by section and by layer, read from its ELF.

    A symbol belongs to a layer when it follows the layer's symbol scheme `tml_<layer C name>_<what>`
    (weights, biases, parameters, multipliers, shapes; see `tinyml.weights.layer_c_names`).
    """

    board: str
    flash_bytes: int
    ram_bytes: int
    flash_limit: int
    ram_limit: int
    stack_reserve: int
    sections: dict[str, int]
    layers: list[dict[str, Any]]
    arena_bytes: int

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _layer_of(symbol: str, layer_names: Sequence[str]) -> str | None:
    """The layer whose symbol scheme `tml_<layer C name>_<what>` `symbol` follows (the longest C name wins)."""
    if symbol in MODEL_IDENTIFIERS or not symbol.startswith(SYMBOL_PREFIX):
        return None
    bare = symbol.removeprefix(SYMBOL_PREFIX)
    owners = [
        (len(c_name), name)
        for name, c_name in zip(layer_names, layer_c_names(layer_names), strict=True)
        if bare.startswith(c_name + "_")
    ]
    return max(owners, default=(0, None))[1]


def check_elf(elf_path: Path) -> None:
    """Raise InvalidElfError unless `elf_path` is a whole 32-bit Arm ELF.

    A truncated or corrupted file would otherwise fail deep inside pyelftools, or make QEMU abort
    with register dumps; checking the header and that every segment and section lies inside the
    file turns both into one sentence.
    """
    from elftools.common.exceptions import ELFError
    from elftools.construct.core import ConstructError
    from elftools.elf.elffile import ELFFile

    problem = None
    try:
        size = elf_path.stat().st_size
        with open(elf_path, "rb") as stream:
            elf = ELFFile(stream)
            if elf["e_machine"] != "EM_ARM" or elf.elfclass != 32:
                problem = f"it is a {elf.elfclass}-bit ELF for {elf['e_machine']}, not for a 32-bit Arm core"
            else:
                ends = [
                    elf["e_shoff"] + elf["e_shnum"] * elf["e_shentsize"],
                    elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"],
                ]
                if max(ends) <= size:
                    ends += [seg["p_offset"] + seg["p_filesz"] for seg in elf.iter_segments()]
                    ends += [s["sh_offset"] + s["sh_size"] for s in elf.iter_sections() if s["sh_type"] != "SHT_NOBITS"]
                if max(ends) > size:
                    problem = f"it is truncated ({size} bytes; its headers describe {max(ends)})"
    except FileNotFoundError:
        problem = "the file does not exist"
    except (ELFError, ConstructError, OSError, ValueError, EOFError) as err:
        problem = f"its header cannot be read ({err})"
    if problem:
        raise InvalidElfError(
            f"{elf_path} is not a valid ELF: {problem}. Build the firmware again with `tinyml build --board NAME`."
        )


def _read_elf(elf_path: Path) -> tuple[dict[str, int], list[tuple[str, int, int, str]], list[str]]:
    """Section sizes, data symbols (name, size, address, section) and the model's layer names."""
    from elftools.elf.elffile import ELFFile

    with open(elf_path, "rb") as stream:
        elf = ELFFile(stream)
        sections = {s.name: s.data_size for s in elf.iter_sections() if s.name in set(FLASH_SECTIONS + RAM_SECTIONS)}
        symbols = []
        names_symbol = None
        for symbol in elf.get_section_by_name(".symtab").iter_symbols():
            kind = symbol["st_info"]["type"]
            index = symbol["st_shndx"]
            if kind != "STT_OBJECT" or not isinstance(index, int) or symbol["st_size"] == 0:
                continue
            section = elf.get_section(index).name
            symbols.append((symbol.name, symbol["st_size"], symbol["st_value"], section))
            if symbol.name == "tml_model_layer_names":
                names_symbol = symbol

        def read(address: int, size: int) -> bytes:
            for s in elf.iter_sections():
                start = s["sh_addr"]
                if s["sh_type"] == "SHT_PROGBITS" and start <= address < start + s.data_size:
                    return s.data()[address - start : address - start + size]
            return b""

        layer_names = []
        if names_symbol is not None:
            table = read(names_symbol["st_value"], names_symbol["st_size"])
            for (pointer,) in np.frombuffer(table, dtype="<u4").reshape(-1, 1):
                text = read(int(pointer), 256)
                layer_names.append(text.split(b"\0", 1)[0].decode(errors="replace"))
    return sections, symbols, layer_names


def size_report(build_dir: str | Path) -> SizeReport:
    """Flash and RAM of the firmware in `build_dir`, by section and by layer."""
    build_dir = Path(build_dir)
    board = manifest_board(read_manifest(build_dir, "firmware"))
    check_elf(build_dir / ELF_NAME)
    sections, symbols, layer_names = _read_elf(build_dir / ELF_NAME)
    layers = {name: {"name": name, "flash_bytes": 0, "ram_bytes": 0, "symbols": []} for name in layer_names}
    arena = 0
    for name, size, _address, section in symbols:
        if "arena" in name and section == ".bss":
            arena += size
        owner = _layer_of(name, layer_names)
        if owner is None:
            continue
        layers[owner]["flash_bytes" if section in (".rodata", ".text") else "ram_bytes"] += size
        layers[owner]["symbols"].append(name)
    return SizeReport(
        board=board.name,
        flash_bytes=sum(sections.get(s, 0) for s in FLASH_SECTIONS),
        ram_bytes=sum(sections.get(s, 0) for s in RAM_SECTIONS),
        flash_limit=board.flash_bytes,
        ram_limit=board.ram_bytes,
        stack_reserve=board.stack_reserve,
        sections=sections,
        layers=list(layers.values()),
        arena_bytes=arena,
    )
