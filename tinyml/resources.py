"""Where the files tinyml reads at run time live: the one place every module asks.

The C kernel library (`firmware/`) and the board files, board runtime and offline PlatformIO
platform (`boards/`) are top-level folders of the source tree. The package reaches them as
`tinyml/data/firmware` and `tinyml/data/boards` (links in a checkout, copies in a wheel), so an
installed `pip install tinyml` finds them exactly where a checkout does.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

FIRMWARE_DIR = DATA_DIR / "firmware"
"""The core C kernel library: `include/` and `src/`, given to every build through `tinyml_kernel_sources`."""
KERNEL_HEADER = FIRMWARE_DIR / "include" / "tml_nn.h"
HARNESS_DIR = FIRMWARE_DIR / "harness"
"""The test harness a firmware runs: it calls the model on the compiled-in inputs and reports."""

BOARDS_DIR = DATA_DIR / "boards"
"""One `<board>.toml` per built-in board."""
RUNTIME_DIR = BOARDS_DIR / "runtime"
"""Startup code, linker template, semihosting and instruction counter of the emulated boards."""
PLATFORM_DIR = BOARDS_DIR / "platform"
"""The offline PlatformIO development platform (`platform.json`, `platform.py`, `builder/`)."""
QEMU_PLUGIN_DIR = BOARDS_DIR / "qemu-plugin"
"""The QEMU TCG plugin's C source (`tml_icount.c`), compiled for the host when `tinyml run` first needs it."""
