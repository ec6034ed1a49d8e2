"""Exact instruction counts from QEMU: build the TCG plugin, point it at the markers, read its report.

`boards/qemu-plugin/tml_icount.c` counts every executed guest instruction by class and reports,
at each `tml_mark_end`, the instructions since the matching `tml_mark_begin` (see the harness:
slot 0 is one `tml_model_invoke`, slot 1 + i is layer i, and the first region of each kind is an
empty one that measures the markers' own cost). It is compiled with the host's gcc the first time
`tinyml run` needs it and kept in the cache, named by a hash of its source and flags; a cached
library whose checksum no longer agrees (truncated, overwritten) is compiled again before QEMU
ever loads it. When it cannot be built, `tinyml run` says why and keeps the board timer's counts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from tinyml.board.cycles import MIX_CLASSES, TIMING_FACTS, estimated_cycles
from tinyml.errors import BuildError
from tinyml.host import cache_dir
from tinyml.resources import QEMU_PLUGIN_DIR

PLUGIN_SOURCE = QEMU_PLUGIN_DIR / "tml_icount.c"
PLUGIN_NAME = "tml_icount.so"
HOST_CC = "gcc"
PLUGIN_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden")
COLUMNS = MIX_CLASSES + TIMING_FACTS
"""The plugin's counters, in the order of its report lines."""
SLOT_INVOKE = 0
SLOT_LAYER0 = 1


def plugin_cache_dir() -> Path:
    """Where built plugins are kept: beside the host builds in $TINYML_CACHE_DIR (or ~/.cache/tinyml)."""
    return cache_dir().parent / "qemu-plugin"


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(library: Path) -> bool:
    """Whether a cached plugin is byte for byte what was built (QEMU would refuse or crash on a damaged one)."""
    try:
        return library.with_name(library.name + ".sha256").read_text().strip() == _checksum(library)
    except OSError:
        return False


def build_plugin() -> Path:
    """The plugin library, compiled on first use and whenever the cached copy is missing or damaged.

    Raises BuildError, one paragraph saying what to install or fix, when it cannot be compiled.
    """
    compiler = shutil.which(HOST_CC)
    if compiler is None:
        raise BuildError(
            f"Exact instruction counts need the QEMU plugin {PLUGIN_SOURCE.name}, compiled with the host's C "
            f"compiler, and `{HOST_CC}` is not on PATH: install it (Debian: apt-get install gcc). Until then "
            "`tinyml run` reports the board timer's counts."
        )
    try:
        source = PLUGIN_SOURCE.read_bytes()
    except OSError as err:
        raise BuildError(
            f"The QEMU plugin source {PLUGIN_SOURCE} cannot be read ({err.strerror}); the tinyml installation is "
            "incomplete: reinstall it."
        ) from None
    digest = hashlib.sha256(source + repr((compiler, PLUGIN_CFLAGS)).encode()).hexdigest()[:20]
    library = plugin_cache_dir() / digest / PLUGIN_NAME
    if _intact(library):
        return library
    tmp = library.parent.with_name(f"{digest}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        built = tmp / PLUGIN_NAME
        compiled = subprocess.run(
            [compiler, *PLUGIN_CFLAGS, "-o", str(built), str(PLUGIN_SOURCE)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if compiled.returncode != 0:
            raise BuildError(
                f"Compiling the QEMU instruction-count plugin {PLUGIN_SOURCE} with {compiler} failed: "
                f"{compiled.stderr.strip()[-800:] or 'no message'}. `tinyml run` falls back to the board "
                "timer's counts; report this with the compiler's message."
            )
        library.parent.mkdir(parents=True, exist_ok=True)
        checksum = tmp / "checksum"
        checksum.write_text(_checksum(built) + "\n")
        os.replace(checksum, library.with_name(library.name + ".sha256"))  # first: a half-done pair reads damaged
        os.replace(built, library)
    except OSError as err:
        raise BuildError(
            f"Cannot write the QEMU plugin into the cache {plugin_cache_dir()} ({err.strerror}); set "
            "TINYML_CACHE_DIR to a writable folder. `tinyml run` falls back to the board timer's counts."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return library


@dataclass(frozen=True)
class Markers:
    """Where the firmware's marker functions and slot bytes are (from its ELF symbol table)."""

    begin: int
    begin_size: int
    end: int
    end_size: int
    marks: int
    marks_size: int


def find_markers(elf: Path) -> Markers | None:
    """The marker symbols of a firmware, or None when it was built without them (an older harness)."""
    wanted = {"tml_mark_begin", "tml_mark_end", "tml_marks"}
    found: dict[str, tuple[int, int]] = {}
    try:
        with open(elf, "rb") as stream:
            table = ELFFile(stream).get_section_by_name(".symtab")
            if not isinstance(table, SymbolTableSection):
                return None
            for symbol in table.iter_symbols():
                if symbol.name in wanted and symbol["st_size"] > 0:
                    found[symbol.name] = (symbol["st_value"], symbol["st_size"])
    except (OSError, ELFError):
        return None
    if len(found) != len(wanted):
        return None
    return Markers(*found["tml_mark_begin"], *found["tml_mark_end"], *found["tml_marks"])


def plugin_option(library: Path, markers: Markers, report: Path) -> str:
    """The value of QEMU's `-plugin` option (commas in paths doubled, as QEMU's option syntax wants)."""
    values = {
        "begin": hex(markers.begin),
        "begin_size": str(markers.begin_size),
        "end": hex(markers.end),
        "end_size": str(markers.end_size),
        "marks": hex(markers.marks),
        "marks_size": str(markers.marks_size),
        "out": str(report).replace(",", ",,"),
    }
    return ",".join([str(library).replace(",", ",,"), *(f"{key}={value}" for key, value in values.items())])


@dataclass
class PluginCounts:
    """Exact counts of one run: per inference `invocations` [N, columns], per layer `layers` [N, L, columns].

    Columns are COLUMNS: the instruction mix (MIX_CLASSES, which sum to the instructions) then the
    timing facts. The markers' own cost (the empty regions before the first inference) is taken out.
    """

    invocations: np.ndarray
    layers: np.ndarray

    @property
    def instructions(self) -> np.ndarray:
        """Instructions per inference [N]."""
        return self.invocations[:, : len(MIX_CLASSES)].sum(axis=1)

    @property
    def layer_instructions(self) -> np.ndarray:
        """Instructions per inference and layer [N, L]."""
        return self.layers[:, :, : len(MIX_CLASSES)].sum(axis=2)

    def mix(self, counts: np.ndarray) -> dict[str, list[int]]:
        """The instruction mix of [..., columns] counts, one list per class."""
        return {name: counts[..., i].tolist() for i, name in enumerate(MIX_CLASSES)}

    def cycles(self, counts: np.ndarray) -> dict[str, list[int]]:
        """Estimated cycles per core for each row of [rows, columns] counts."""
        per_row = [estimated_cycles(dict(zip(COLUMNS, (int(v) for v in row), strict=True))) for row in counts]
        cores = per_row[0].keys() if per_row else estimated_cycles(dict.fromkeys(COLUMNS, 0)).keys()
        return {core: [row[core] for row in per_row] for core in cores}


class ReportIncomplete(Exception):
    """The plugin's report cannot be trusted (cut short, or not what the harness ran); the timer counts stand."""


def parse_report(text: str, inferences: int, layer_count: int) -> PluginCounts:
    """Turn the plugin's "TMLI ..." lines into per-inference and per-layer counts.

    The first slot-0 region and the first layer region are the harness's empty calibration pairs;
    every later layer region belongs to the inference whose slot-0 region ends next.
    """
    lines = text.splitlines()
    if not lines or lines[-1].strip() != "TMLI exit":
        raise ReportIncomplete("the report does not end with `TMLI exit` (QEMU did not exit normally)")
    header = lines[0].split()
    if header[:2] != ["TMLI", "classes"] or tuple(header[2:]) != COLUMNS:
        raise ReportIncomplete(f"unexpected columns {header[2:]} (expected {list(COLUMNS)})")
    invoke_overhead: np.ndarray | None = None
    layer_overhead: np.ndarray | None = None
    invocations: list[np.ndarray] = []
    layers: list[np.ndarray] = []
    pending = np.zeros((layer_count, len(COLUMNS)), dtype=np.int64)
    for line in lines[1:-1]:
        words = line.split()
        if len(words) != 3 + len(COLUMNS) or words[:2] != ["TMLI", "end"]:
            raise ReportIncomplete(f"unreadable line {line!r}")
        slot, counts = int(words[2]), np.array([int(v) for v in words[3:]], dtype=np.int64)
        if slot == SLOT_INVOKE:
            if invoke_overhead is None:
                invoke_overhead = counts
                continue
            invocations.append(counts - invoke_overhead)
            layers.append(pending)
            pending = np.zeros_like(pending)
        elif SLOT_LAYER0 <= slot < SLOT_LAYER0 + layer_count:
            if layer_overhead is None:
                layer_overhead = counts
                continue
            pending[slot - SLOT_LAYER0] += counts - layer_overhead
        else:
            raise ReportIncomplete(f"slot {slot} outside the {layer_count} layers")
    if len(invocations) != inferences:
        raise ReportIncomplete(f"{len(invocations)} inferences marked, the harness reported {inferences}")
    return PluginCounts(
        invocations=np.array(invocations, dtype=np.int64).reshape(inferences, len(COLUMNS)),
        layers=np.array(layers, dtype=np.int64).reshape(inferences, layer_count, len(COLUMNS)),
    )
