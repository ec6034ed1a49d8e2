"""Firmware for a board: write a PlatformIO project, build it, and the manifest of what was built.

A model directory holds the generated `model.h`, `model.c` and `model_data.c` (the contract:
`TML_MODEL_INPUT_SIZE`, `TML_MODEL_OUTPUT_SIZE`, `TML_MODEL_ARENA_BYTES`, `TML_MODEL_LAYER_COUNT`,
`tml_model_invoke`, `tml_model_layer_names`, and `TML_LAYER_BEGIN(i)`/`TML_LAYER_END(i)` around
each layer). `build_firmware` turns it into a firmware directory::

    <out_dir>/firmware.elf     the image QEMU or a board runs
    <out_dir>/firmware.json    what `tinyml run` and `tinyml size` need (board, machine, sizes); its
                               manifest (`tinyml.manifest`)
    <out_dir>/test_inputs.npy  the int8 inputs compiled in, one row per inference the harness runs
    <out_dir>/reference_outputs.npy  what the numpy oracle (`tinyml.reference.run_int8`) computes
                               for those inputs from the model's graph; `tinyml run` compares the
                               board's outputs with it (absent when the model folder has no graph)
    <out_dir>/model/           the model files it was built from
    <out_dir>/project/         a complete PlatformIO project: `pio run` inside it rebuilds the ELF

The project compiles the model, the kernel library (from the `tinyml_kernel_sources` hook), the
test harness (`firmware/harness`) with the test inputs, and the board runtime (`boards/runtime`:
reset, vector table, fault report, semihosting, instruction counter) with release flags (-O2 unless
`build_firmware` asks for another level, function and data sections, --gc-sections). It is built
in a temporary folder with a plain path (PlatformIO cannot build where the path has `$`, spaces or
quotes) and moved into place only when the build succeeds; `tinyml.staging` decides which output
folders may be replaced.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyml.board import platformio
from tinyml.board.boards import Board
from tinyml.errors import BuildError, BuildFolderError
from tinyml.graphfile import has_graph
from tinyml.manifest import MANIFEST_FILES, write_manifest
from tinyml.resources import HARNESS_DIR, PLATFORM_DIR, RUNTIME_DIR
from tinyml.staging import output_path, staged_directory

MODEL_FILES = ("model.h", "model.c", "model_data.c")
ELF_NAME = "firmware.elf"
TEST_INPUTS_NAME = "test_inputs.npy"
REFERENCE_OUTPUTS_NAME = "reference_outputs.npy"
PROJECT_DIR_NAME = "project"
LOCAL_PLATFORM = "tinyml-arm"


@dataclass
class FirmwareBuild:
    """A built firmware directory and what its build printed."""

    out_dir: Path
    elf: Path
    board: Board
    log: str
    has_reference: bool = False  # reference outputs were computed (the model folder had a graph)


def kernel_source_dirs() -> list[Path]:
    """Directories (each with include/ and src/) that every build compiles, from the plugins."""
    from tinyml import plugins

    return plugins.kernel_source_dirs()


OPTIMIZATION_LEVELS = ("-O2", "-O3", "-Os")


def board_json(board: Board, optimization: str = "-O2") -> dict[str, Any]:
    """The PlatformIO board definition (project `boards/<name>.json`), with the optimisation level to build at."""
    return {
        "build": {
            "cpu": board.core,
            "mcu": board.name,
            "f_cpu": f"{board.clock_hz}L",
            "tinyml": {"cflags": board.cflags, "optimization": optimization},
        },
        "frameworks": [],
        "name": board.description or board.name,
        "upload": {"maximum_size": board.flash_bytes, "maximum_ram_size": board.ram_bytes},
        "url": "https://developer.arm.com/",
        "vendor": "tinyml",
    }


def linker_script(board: Board) -> str:
    """The runtime's linker script template filled with the board's memory map."""
    text = (RUNTIME_DIR / "tinyml.ld.in").read_text()
    values = {
        "FLASH_ORIGIN": board.flash_origin,
        "FLASH_BYTES": board.flash_bytes,
        "RAM_ORIGIN": board.ram_origin,
        "RAM_BYTES": board.ram_bytes,
        "STACK_RESERVE": board.stack_reserve,
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", f"0x{value:08X}")
    return text


def build_flags(board: Board, defines: Iterable[str]) -> list[str]:
    """Preprocessor flags: profiling on, the board's instruction counter, extra defines."""
    flags = [
        "-DTML_PROFILE",
        f"-DTML_COUNTER_{board.counter.upper()}",
        f"-DTML_INSTRUCTIONS_PER_TICK={board.instructions_per_tick}",
    ]
    return flags + [f"-D{d}" for d in defines]


def platformio_ini(board: Board, defines: Iterable[str], pio_platform: str | None) -> str:
    """platformio.ini of the project: tinyml's core dir, the local platform, the board's flags."""
    platform = pio_platform or f"symlink://{PLATFORM_DIR}"
    lines = [
        f"; Firmware for board {board.name}, written by tinyml. Rebuild with `pio run` here.",
        "; The core dir holds the offline tool-scons link that tinyml sets up (see tinyml.board.platformio).",
        "[platformio]",
        f"core_dir = {platformio.core_dir()}",
        f"default_envs = {board.name}",
        "",
        f"[env:{board.name}]",
        f"platform = {platform}",
        f"board = {board.name}",
        "board_build.ldscript = tinyml.ld",
        "build_flags = " + " ".join(build_flags(board, defines)),
        "",
    ]
    return "\n".join(lines)


def test_inputs_c(inputs: np.ndarray) -> str:
    """`tml_test_inputs[N][TML_MODEL_INPUT_SIZE]` and `tml_test_input_count` as C."""
    from tinyml.weights import LINE_WIDTH, c_values

    def row_c(row: np.ndarray) -> str:  # one line when it fits, else wrapped as the model's constants are
        line = "    {" + ", ".join(str(int(v)) for v in row) + "}"
        return line if len(line) < LINE_WIDTH else "    {\n        " + c_values(row, indent=" " * 8) + "\n    }"

    rows = ",\n".join(row_c(row) for row in inputs)
    return (
        "/* Test inputs the harness runs, written by tinyml. */\n"
        '#include "model.h"\n\n'
        f"const int32_t tml_test_input_count = {len(inputs)};\n"
        f"const int8_t tml_test_inputs[{len(inputs)}][TML_MODEL_INPUT_SIZE] = {{\n{rows}\n}};\n"
    )


def model_sizes(model_dir: Path) -> dict[str, int]:
    """The TML_MODEL_* size macros of a model.h."""
    header = (model_dir / "model.h").read_text()
    sizes = {}
    for name in ("INPUT_SIZE", "OUTPUT_SIZE", "ARENA_BYTES", "LAYER_COUNT"):
        match = re.search(rf"#define\s+TML_MODEL_{name}\s+\(?(\d+)", header)
        if not match:
            raise BuildError(f"{model_dir / 'model.h'} does not define TML_MODEL_{name} as a number.")
        sizes[name.lower()] = int(match.group(1))
    return sizes


def default_test_inputs(model_dir: str | Path, count: int = 4) -> np.ndarray:
    """Inputs for the harness: the first `count` validation samples of a compiled model directory,
    quantized with the model's input scale, else seeded random int8 (instruction counts of int8
    kernels hardly depend on the values)."""
    from tinyml.frontend import nchw_to_graph
    from tinyml.host import model_macros
    from tinyml.numbers import quantize_tensor

    model_dir = Path(model_dir)
    input_size = model_sizes(model_dir)["input_size"]
    validation = model_dir / "validation.npz"
    if validation.is_file():
        try:
            with np.load(validation, allow_pickle=False) as data:
                x = nchw_to_graph(data["x"][:count]).reshape(-1, input_size)
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise BuildFolderError(
                f"{validation} is damaged or not what tinyml wrote ({err}); compile the model again."
            ) from err
        macros = model_macros(model_dir / "model.h")
        return quantize_tensor(x, macros["TML_MODEL_INPUT_SCALE"], int(macros["TML_MODEL_INPUT_ZERO_POINT"]))
    return np.random.default_rng(0).integers(-128, 128, size=(count, input_size), dtype=np.int8)


def _check_inputs(model_dir: Path, test_inputs: np.ndarray) -> np.ndarray:
    input_size = model_sizes(model_dir)["input_size"]
    inputs = np.asarray(test_inputs)
    if inputs.ndim == 1:
        inputs = inputs[None, :]
    inputs = inputs.reshape(len(inputs), -1)
    if len(inputs) == 0 or inputs.shape[1] != input_size:
        raise BuildError(
            f"Test inputs shaped {np.shape(test_inputs)} do not match the model in {model_dir}, which takes "
            f"{input_size} int8 values per input: pass an array shaped (N, {input_size})."
        )
    if inputs.dtype != np.int8:
        if inputs.min() < -128 or inputs.max() > 127:
            raise BuildError(f"Test inputs for {model_dir} must be int8 values in [-128, 127].")
        inputs = inputs.astype(np.int8)
    return inputs


def write_project(
    project: Path,
    model_dir: Path,
    board: Board,
    test_inputs: np.ndarray,
    defines: Iterable[str] = (),
    pio_platform: str | None = None,
    optimization: str = "-O2",
) -> None:
    """Write a complete PlatformIO project for `board` into the empty folder `project`."""
    src = project / "src"
    (project / "boards").mkdir(parents=True)
    src.mkdir()
    defines = list(defines)
    (project / "platformio.ini").write_text(platformio_ini(board, defines, pio_platform))
    (project / "boards" / f"{board.name}.json").write_text(json.dumps(board_json(board, optimization), indent=2) + "\n")
    (project / "tinyml.ld").write_text(linker_script(board))
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, src / name)
    for path in sorted([*HARNESS_DIR.glob("*.[ch]"), *RUNTIME_DIR.glob("*.[ch]")]):
        shutil.copy2(path, src / path.name)
    (src / "test_inputs.c").write_text(test_inputs_c(test_inputs))
    for index, kernels in enumerate(kernel_source_dirs()):
        library = project / "lib" / f"kernels{index}_{kernels.name}"
        for part in ("include", "src"):
            if (kernels / part).is_dir():
                shutil.copytree(kernels / part, library / part, ignore=shutil.ignore_patterns("__pycache__"))


def build_firmware(
    model_dir: str | Path,
    board: Board,
    out_dir: str | Path,
    test_inputs: np.ndarray,
    *,
    defines: Iterable[str] = (),
    pio_platform: str | None = None,
    optimization: str = "-O2",
) -> FirmwareBuild:
    """Write the PlatformIO project for `board`, build it with `pio run`, and put it in `out_dir`.

    `test_inputs` (int8, shaped (N, input size)) are compiled in for the harness to run.
    `defines` are extra preprocessor macros (e.g. TML_INJECT_FAULT, which makes the harness
    execute an undefined instruction). `pio_platform` replaces the offline tinyml platform with
    another PlatformIO platform spec (e.g. `ststm32`, which needs network access to install).
    `optimization` is the compiler's optimisation level (one of OPTIMIZATION_LEVELS; the
    benchmarks build at -O3, as CMSIS-NN's published counts are).
    """
    if optimization not in OPTIMIZATION_LEVELS:
        raise BuildError(
            f"Optimisation level {optimization!r} is not one tinyml builds at: use one of "
            f"{', '.join(OPTIMIZATION_LEVELS)}."
        )
    model_dir = Path(model_dir).resolve()
    out_dir = output_path(out_dir)
    defines = list(defines)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise BuildError(
            f"{model_dir} is not a generated model: {', '.join(missing)} missing. Run `tinyml compile` first."
        )
    inputs = _check_inputs(model_dir, test_inputs)
    reference = reference_outputs(model_dir, inputs)
    with staged_directory(out_dir) as staging, _plain_work_dir() as work:
        project = work / PROJECT_DIR_NAME
        write_project(project, model_dir, board, inputs, defines, pio_platform, optimization)
        log = platformio.run_pio(project, "run", "--environment", board.name)
        built = project / ".pio" / "build" / board.name / ELF_NAME
        if not built.is_file():
            raise BuildError(f"`pio run` in {project} succeeded but made no {ELF_NAME}.")
        shutil.copytree(project, staging / PROJECT_DIR_NAME, symlinks=True)
        shutil.copy2(built, staging / ELF_NAME)
        np.save(staging / TEST_INPUTS_NAME, inputs)
        files = [ELF_NAME, TEST_INPUTS_NAME]
        if reference is not None:
            np.save(staging / REFERENCE_OUTPUTS_NAME, reference)
            files.append(REFERENCE_OUTPUTS_NAME)
        shutil.copytree(model_dir, staging / "model", ignore=shutil.ignore_patterns("__pycache__"))
        (staging / "build.log").write_text(log)
        manifest = {
            "board": asdict_board(board),
            "test_inputs": len(inputs),
            "reference_outputs": REFERENCE_OUTPUTS_NAME if reference is not None else None,
            "defines": defines,
            "optimization": optimization,
            "model_sizes": model_sizes(model_dir),
        }
        write_manifest(staging, "firmware", manifest, files=files)
    return FirmwareBuild(out_dir, out_dir / ELF_NAME, board, log, has_reference=reference is not None)


def reference_outputs(model_dir: Path, inputs: np.ndarray) -> np.ndarray | None:
    """What the numpy oracle computes for `inputs` from the model folder's graph, int8 (N, output size).

    None for a model folder that is not a tinyml build (hand-written or copied C, no graph): there
    is then nothing to compare the board with. A tinyml build whose graph cannot be read is an error.
    """
    from tinyml.compiler import load_graph
    from tinyml.reference import run_int8

    if not (model_dir / MANIFEST_FILES["model"]).exists() and not has_graph(model_dir):
        return None
    graph = load_graph(model_dir)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    if int(np.prod(shape)) != inputs.shape[1]:
        raise BuildError(
            f"The graph in {model_dir} takes {int(np.prod(shape))} input values but its model.h says "
            f"{inputs.shape[1]}: the C and the graph are from different compilations. Compile the model again."
        )
    output = run_int8(graph, inputs.reshape(len(inputs), *shape))[graph.outputs[0]].reshape(len(inputs), -1)
    expected = model_sizes(model_dir)["output_size"]
    if output.shape[1] != expected:
        raise BuildError(
            f"The graph in {model_dir} gives {output.shape[1]} outputs but its model.h says {expected}: the C and "
            "the graph are from different compilations. Compile the model again."
        )
    return output.astype(np.int8)


@contextmanager
def _plain_work_dir() -> Iterator[Path]:
    """A temporary folder whose path PlatformIO can build in.

    SCons expands `$` in paths and the compiler flags break on spaces and quotes, so the project is
    built here rather than in the output folder (whose path the user chose) and copied over after.
    """
    with tempfile.TemporaryDirectory(prefix="tinyml-pio-") as work:
        if not re.fullmatch(r"[\w./+-]+", work):
            raise BuildError(
                f"The temporary folder {work} has characters PlatformIO cannot build in ($, spaces, quotes); "
                "set TMPDIR to a plain path."
            )
        yield Path(work)


def asdict_board(board: Board) -> dict[str, Any]:
    """Every field of a board, for the firmware manifest (so running needs no board registry)."""
    values = asdict(board)
    values["aliases"] = list(board.aliases)
    return values


def manifest_board(manifest: Mapping[str, Any]) -> Board:
    """The board a firmware was built for, rebuilt from its manifest."""
    values = dict(manifest["board"])
    values["aliases"] = tuple(values.get("aliases", ()))
    return Board(**values)
