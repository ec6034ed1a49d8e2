"""Instructions per call of the eight reference layers (CMSIS-NN comparison), on Cortex-M4, M7 and M3 at -O3.

    .venv/bin/python bench/layers.py [--json] [--boards cortex-m4 ...] [--layers L1 L6 ...]

Each layer is a one-node int8 graph with the reference data (xorshift32 seeded 1000 + layer index,
drawn in the order input, weights, bias, multipliers, shifts), compiled by the code generator for
the board (so the kernel, its scratch and the constants the emitter precomputes are what a user
gets), built at -O3 and run once in QEMU. The board's output must equal the numpy reference
(`tinyml.reference`) byte for byte, else the script stops with an error. Counts are what
`tinyml.board.qemu.run_firmware` reports for the layer: exact on every board (the QEMU
instruction-count plugin). `target` is 0.9x CMSIS-NN's count on Cortex-M4 at -O3. Kernel code bytes
are the linked sizes, from the ELF's symbol table, of the functions the kernel's object file defines
(its entry point, the variants the wrapper may pick, their helpers), as built for that board.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from elftools.elf.elffile import ELFFile
from rich.console import Console
from rich.table import Table

from tinyml import graphfile, plugins
from tinyml.board.boards import resolve_board
from tinyml.board.project import FirmwareBuild, build_firmware
from tinyml.board.qemu import run_firmware
from tinyml.codegen import generate
from tinyml.ir import Graph, Node, Tensor
from tinyml.manifest import write_manifest
from tinyml.reference.conv import conv_output_size

BOARDS = ("cortex-m4", "cortex-m7", "cortex-m3")
INPUT_OFFSET, OUTPUT_OFFSET = 128, -128


@dataclass(frozen=True)
class Layer:
    """One reference layer: NHWC input (h, w, c), output channels, window, the first shift's base."""

    name: str
    op: str  # conv2d, dwconv2d, fc, avgpool
    input: tuple[int, int, int]
    out_c: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    shift_base: int = 0
    cmsis: int = 0  # CMSIS-NN's instructions on Cortex-M4 at -O3
    target: int = 0  # 0.9x that, the target
    per_tensor: bool = False  # one multiplier and shift for every channel (the first drawn)

    @property
    def output(self) -> tuple[int, int, int]:
        h, w, _ = self.input
        if self.op == "fc":
            return (1, 1, self.out_c)
        axes = zip((h, w), self.kernel, self.stride, self.padding, strict=True)
        return (*(conv_output_size(size, k, s, p) for size, k, s, p in axes), self.out_c)

    @property
    def macs(self) -> int:
        oh, ow, oc = self.output
        kh, kw = self.kernel
        if self.op == "conv2d":
            return oh * ow * oc * kh * kw * self.input[2]
        if self.op == "fc":
            return self.out_c * self.input[2]
        return oh * ow * oc * kh * kw  # depthwise taps, pooling additions


LAYERS = (
    Layer("L1", "conv2d", (32, 32, 3), 16, (3, 3), (1, 1), (1, 1), -8, 2_134_139, 1_920_725),
    Layer("L2", "conv2d", (32, 32, 16), 16, (3, 3), (1, 1), (1, 1), -9, 5_487_500, 4_938_750),
    Layer("L3", "conv2d", (32, 32, 16), 32, (3, 3), (2, 2), (1, 1), -9, 2_519_229, 2_267_306),
    Layer("L4", "dwconv2d", (25, 5, 64), 64, (3, 3), (1, 1), (1, 1), -7, 599_612, 539_651),
    Layer("L5", "conv2d", (25, 5, 64), 64, (1, 1), (1, 1), (0, 0), -9, 1_068_929, 962_036),
    Layer("L6", "fc", (1, 1, 640), 128, shift_base=-10, cmsis=160_046, target=144_041, per_tensor=True),
    Layer("L7", "dwconv2d", (48, 48, 8), 8, (3, 3), (2, 2), (1, 1), -7, 413_861, 372_475),
    Layer("L8", "avgpool", (16, 16, 32), 32, (2, 2), (2, 2), (0, 0), 0, 84_865, 76_379),
)


class XorShift32:
    """The data generator: x ^= x << 13; x ^= x >> 17; x ^= x << 5 (32-bit)."""

    def __init__(self, seed: int) -> None:
        self.x = seed & 0xFFFFFFFF

    def next(self) -> int:
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def draw(self, n: int, f) -> np.ndarray:
        return np.array([f(self.next()) for _ in range(n)], dtype=np.int64)


def layer_data(layer: Layer, index: int) -> dict[str, np.ndarray]:
    """Input, weights, bias, multipliers and shifts of `layer` (L1 has index 0), drawn in that order."""
    rng = XorShift32(1000 + index)
    h, w, c = layer.input
    data = {"input": rng.draw(h * w * c, lambda x: ((x >> 24) ^ 0x80) - 0x80).astype(np.int8).reshape(h, w, c)}
    if layer.op == "avgpool":
        return data
    kh, kw = layer.kernel
    if layer.op == "conv2d":
        shape = (layer.out_c, kh, kw, c)
    elif layer.op == "dwconv2d":
        shape = (1, kh, kw, layer.out_c)
    else:
        shape = (layer.out_c, c)
    data["weights"] = rng.draw(int(np.prod(shape)), lambda x: x % 255 - 127).astype(np.int8).reshape(shape)
    data["bias"] = rng.draw(layer.out_c, lambda x: x % 32768 - 16384).astype(np.int32)
    multiplier = rng.draw(layer.out_c, lambda x: 0x40000000 + (x >> 2))
    shift = rng.draw(layer.out_c, lambda x: layer.shift_base + x % 3 - 1)
    if layer.per_tensor:
        multiplier, shift = np.full_like(multiplier, multiplier[0]), np.full_like(shift, shift[0])
    data["multiplier"], data["shift"] = multiplier.astype(np.int32), shift.astype(np.int32)
    return data


def layer_graph(layer: Layer, data: dict[str, np.ndarray]) -> Graph:
    """The int8 graph of one layer: input zero point -128 (offset +128), output zero point -128, no clamp."""
    in_shape = (1, layer.input[2]) if layer.op == "fc" else (1, *layer.input)
    out_shape = (1, layer.out_c) if layer.op == "fc" else (1, *layer.output)
    tensors = {
        "x": Tensor("x", in_shape, "int8", scale=1.0, zero_point=-INPUT_OFFSET),
        "y": Tensor("y", out_shape, "int8", scale=1.0, zero_point=OUTPUT_OFFSET),
    }
    attrs = {"activation": "none", "act_min": -128, "act_max": 127}
    if layer.op == "avgpool":
        attrs.update(kernel=layer.kernel, stride=layer.stride, padding=layer.padding)
        return Graph(tensors, [Node(layer.name, "avgpool", ["x"], ["y"], attrs)], ["x"], ["y"])
    tensors["w"] = Tensor("w", data["weights"].shape, "int8", data=data["weights"], scale=np.ones(layer.out_c))
    tensors["b"] = Tensor("b", (layer.out_c,), "int32", data=data["bias"])
    attrs.update(multiplier=data["multiplier"], shift=data["shift"])
    if layer.op != "fc":
        attrs.update(stride=layer.stride, padding=layer.padding)
    if layer.op == "dwconv2d":
        attrs["depth_multiplier"] = layer.out_c // layer.input[2]
    return Graph(tensors, [Node(layer.name, layer.op, ["x", "w", "b"], ["y"], attrs)], ["x"], ["y"])


def _functions(path: Path) -> list[tuple[str, str, str, int]]:
    """(source file, name, binding, size) of every function symbol of an ELF or object file, in table order.

    A local symbol's source file is the STT_FILE symbol before it; globals carry none ("")."""
    functions, source = [], ""
    with path.open("rb") as f:
        for symbol in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            kind, bind = symbol["st_info"]["type"], symbol["st_info"]["bind"]
            if kind == "STT_FILE":
                source = symbol.name
            elif kind == "STT_FUNC" and symbol["st_shndx"] != "SHN_UNDEF":
                functions.append((source if bind == "STB_LOCAL" else "", symbol.name, bind, symbol["st_size"]))
    return functions


def kernel_code_bytes(firmware: FirmwareBuild, function: str) -> int:
    """Linked bytes of the functions that the kernel's object file (`<function>.o`) defines."""
    objects = sorted(firmware.out_dir.glob(f"project/.pio/build/**/{function}.o"))
    if len(objects) != 1:
        raise SystemExit(f"{function}: expected one object file {function}.o in the build, found {len(objects)}")
    defined = {(bind, name) for _, name, bind, _ in _functions(objects[0])}
    source = f"{function}.c"
    return sum(
        size
        for file, name, bind, size in _functions(firmware.elf)
        if (bind, name) in defined and (bind != "STB_LOCAL" or file == source)
    )


def write_model(graph: Graph, board_name: str, folder: Path) -> tuple[int, str]:
    """Generate the C of `graph` for the board into `folder` as a compiled model; returns its scratch bytes
    and the C function of its one kernel."""
    board = resolve_board(board_name)
    generated = generate(graph, board, plugins.plugin_manager())
    folder.mkdir(parents=True)
    for name, text in generated.files.items():
        (folder / name).write_text(text)
    graphfile.save_graph(graph, folder)
    files = [p.name for p in folder.iterdir()]
    write_manifest(folder, "model", {"board": board.name}, files=files)
    (kernel,) = generated.kernels.values()
    return kernel.scratch_bytes, kernel.function


def measure(layer: Layer, index: int, board_name: str, work: Path) -> dict:
    """Build, run and check one layer on one board; one row of the result."""
    data = layer_data(layer, index)
    graph = layer_graph(layer, data)
    model_dir = work / f"{layer.name}-{board_name}-model"
    scratch, function = write_model(graph, board_name, model_dir)
    inputs = data["input"].reshape(1, -1)
    firmware = build_firmware(model_dir, resolve_board(board_name), work / f"{layer.name}-{board_name}", inputs,
                              optimization="-O3")  # fmt: skip
    result = run_firmware(firmware.out_dir, timeout=600)
    if not result.outputs_match_reference:
        raise SystemExit(f"{layer.name} on {board_name}: the board's output differs from the numpy reference "
                         f"{result.mismatches()}")  # fmt: skip
    instructions = int(result.layer_instructions[0, 0])
    return {
        "layer": layer.name,
        "op": layer.op,
        "board": board_name,
        "instructions": instructions,
        "target_instructions": layer.target,
        "cmsis_nn_instructions": layer.cmsis,
        "instructions_per_mac": round(instructions / layer.macs, 3),
        "macs": layer.macs,
        "scratch_bytes": scratch,
        "kernel_function": function,
        "kernel_code_bytes": kernel_code_bytes(firmware, function),
        "instruction_resolution": result.instruction_resolution,
        "matches_reference": True,
    }


def print_table(rows: list[dict]) -> None:
    table = Table(title="reference layers at -O3: instructions per call (target = 0.9x CMSIS-NN on Cortex-M4)")
    columns = ("layer", "board", "instructions", "target", "ours / target", "instr/MAC", "code B", "scratch B", "±")
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "board") else "right")
    for row in rows:
        ratio = row["instructions"] / row["target_instructions"]
        style = "green" if ratio <= 1 else "red"
        table.add_row(
            row["layer"],
            row["board"],
            f"{row['instructions']:,}",
            f"{row['target_instructions']:,}",
            f"[{style}]{ratio:.2f}x[/{style}]",
            f"{row['instructions_per_mac']:.2f}",
            f"{row['kernel_code_bytes']:,}",
            f"{row['scratch_bytes']:,}",
            str(row["instruction_resolution"]),
        )
    Console(width=130).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--boards", nargs="*", default=list(BOARDS))
    parser.add_argument("--layers", nargs="*", default=[layer.name for layer in LAYERS])
    args = parser.parse_args()
    unknown = sorted(set(args.layers) - {layer.name for layer in LAYERS})
    if unknown:
        parser.error(f"unknown layers {unknown}; the layers are L1 .. L8")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyml-layers-") as scratch:
        for board_name in args.boards:
            for index, layer in enumerate(LAYERS):
                if layer.name in args.layers:
                    rows.append(measure(layer, index, board_name, Path(scratch)))
                    if not args.json:
                        print(f"{layer.name} {board_name}: {rows[-1]['instructions']:,}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
