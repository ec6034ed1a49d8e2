"""Binary (XNOR) layers against int8 on Cortex-M: held-out accuracy, weight bytes, instructions per layer.

    .venv/bin/python bench/binary.py [--json] [--board cortex-m4] [--model-board stm32] [--inputs N]

Model: the digits example compiled twice for `--model-board` (default stm32): int8 (`quantize-int8`)
and binary (`binarize`, `quantize-int8`, `fuse-sign`: the inner convolutions binary, the first and last
layers int8, a binary convolution feeding the next one writing its bits directly). Both firmwares
run the held-out split in QEMU and the accuracy is counted from the board's outputs, which must
equal the numpy reference byte for byte. Weight bytes of the binary layers are the packed words in
flash against the same weights as float32.

Layers: a 3x3 convolution 32x32x64 -> 32x32x64 (stride 1, padding 1) and a fully connected layer
1024 -> 1024, each as a one-layer binary graph (a `sign` packing the int8 input, then the layer on
bits: `tml_conv2d_xnor`, `tml_fc_xnor`, int8 out) and as the int8 layer on the same shapes, built at
-O3 and counted exactly by the QEMU instruction-count plugin. The convolution is measured a second
time as it runs between two binary layers (`bits out`): its int8 output goes to a sign (each
channel's threshold setting about half its bits) read by a binary 1x1 convolution,
and `fuse-sign` merges it with the sign into `tml_conv2d_xnor_sign`, which writes the bits with no
int8 output; the int8 layer it is compared with is the same. The int8 layer runs with the kernel the code
generator picks for `--board` (default cortex-m4: the DSP kernels) and, where the layer is eligible,
with Winograd (`tml_conv2d_winograd_s8`); the fewer instructions of the two are the int8 figure.
`speedup` is that int8 figure / binary instructions of the layer itself (the packing of its int8
input is reported apart); `speedup_vs_default_int8_kernel` compares with the default kernel only.
The binary kernels count with bit-sliced carry-save adders over the input's set bits, so their
counts depend on the inputs: these are random, half the bits set, as balanced binary activations
are. Every ELF is searched for `__popcountsi2`, the libgcc call an Armv7-M popcount would become.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import tinyml
from tinyml import graphfile, plugins
from tinyml.board.boards import resolve_board
from tinyml.board.project import ELF_NAME, build_firmware, default_test_inputs
from tinyml.board.qemu import run_firmware
from tinyml.codegen import generate
from tinyml.examples import get_example
from tinyml.ir import Graph, Node, Tensor
from tinyml.manifest import write_manifest
from tinyml.reference import run_int8
from tinyml.reference.conv import conv_output_size
from tinyml.technique import Context
from tinyml_plugins.binarize.fuse import FUSED, fuse
from tinyml_plugins.binarize.starts import node_starts
from tinyml_plugins.winograd.kernels import ineligible
from tinyml_plugins.winograd.technique import Winograd

POPCOUNT_CALL = "__popcountsi2"
SEED = 9


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # conv2d or fc
    input: tuple[int, ...]  # (h, w, c) or (n,)
    out_c: int
    kernel: int = 1
    padding: int = 0
    shift: int = -9
    binary_output: bool = False  # the binary layer's output is a sign's bits (technique `fuse-sign`)

    @property
    def output(self) -> tuple[int, ...]:
        if self.op == "fc":
            return (self.out_c,)
        h, w, _ = self.input
        return (conv_output_size(h, self.kernel, 1, self.padding), conv_output_size(w, self.kernel, 1, self.padding),
                self.out_c)  # fmt: skip

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.op == "fc":
            return (self.out_c, self.input[0])
        return (self.out_c, self.kernel, self.kernel, self.input[2])


LAYERS = (
    Layer("conv3x3 32x32x64->64", "conv2d", (32, 32, 64), 64, kernel=3, padding=1, shift=-10),
    Layer(
        "conv3x3 32x32x64->64, bits out", "conv2d", (32, 32, 64), 64, kernel=3, padding=1, shift=-10, binary_output=True
    ),  # fmt: skip
    Layer("fc 1024->1024", "fc", (1024,), 1024, shift=-8),
)
READER_CHANNELS = 8  # the binary 1x1 conv that reads a `bits out` layer's bits (a sign's bits must be read)


def log(message: str) -> None:
    print(f"[binary] {message}", file=sys.stderr, flush=True)


def layer_input(graph: Graph) -> np.ndarray:
    """The one input every layer graph runs on: random int8, so half the bits of a sign are set."""
    return np.random.default_rng(SEED + 1).integers(-128, 128, size=(1, graph.tensors["x"].size)).astype(np.int8)


def balanced_threshold(values: np.ndarray) -> int:
    """The threshold t that sets the bit (value >= t) of the nearest to half of `values` (outputs tie often)."""
    candidates = np.unique(values)
    return int(min(candidates, key=lambda t: abs(float(np.mean(values >= t)) - 0.5)))


def layer_graph(layer: Layer, binary: bool) -> Graph:
    """One int8 layer (random weights, input zero point -128), or the same shapes binary: sign, then the layer.

    A `bits out` layer is followed by a sign whose threshold sets about half of each channel's bits on the
    bench input (`balanced_threshold`, as batch norm does in a trained binary network), read by a binary 1x1
    conv; the layer and the sign are then merged (technique `fuse-sign`)."""
    rng = np.random.default_rng(SEED)
    weights = rng.integers(-127, 128, size=layer.weight_shape).astype(np.int8)
    if binary:
        weights = np.where(rng.integers(0, 2, size=layer.weight_shape) > 0, 127, -127).astype(np.int8)
    tensors = {
        "x": Tensor("x", (1, *layer.input), "int8", scale=1.0, zero_point=0 if binary else -128),
        "y": Tensor("y", (1, *layer.output), "int8", scale=1.0, zero_point=-128),
        "w": Tensor("w", layer.weight_shape, "int8", data=weights, scale=np.ones(layer.out_c),
                    encoding="binary" if binary else "raw"),  # fmt: skip
        "b": Tensor("b", (layer.out_c,), "int32", data=rng.integers(-16384, 16384, layer.out_c).astype(np.int32)),
    }
    attrs: dict[str, Any] = {
        "activation": "none", "act_min": -128, "act_max": 127,
        "multiplier": rng.integers(1 << 30, 1 << 31, layer.out_c).astype(np.int32),
        "shift": np.full(layer.out_c, layer.shift, dtype=np.int32),
    }  # fmt: skip
    if layer.op == "conv2d":
        attrs.update(stride=(1, 1), padding=(layer.padding, layer.padding))
    nodes = []
    source = "x"
    if binary:
        channels = layer.input[-1]
        tensors["t"] = Tensor("t", (channels,), "int32", data=np.zeros(channels, dtype=np.int32))
        tensors["s"] = Tensor("s", (1, *layer.input), "int8", scale=1.0, zero_point=0)
        nodes.append(Node("sign", "sign", ["x", "t"], ["s"], {}))
        source = "s"
    nodes.append(Node("layer", layer.op, [source, "w", "b"], ["y"], attrs))
    graph = Graph(tensors, nodes, ["x"], ["y"])
    if not (binary and layer.binary_output):
        return graph
    y = run_int8(graph, layer_input(graph).reshape(graph.tensors["x"].shape))["y"]
    threshold = np.array([balanced_threshold(column) for column in y.reshape(-1, layer.out_c).T], dtype=np.int32)
    tensors["t2"] = Tensor("t2", (layer.out_c,), "int32", data=threshold)
    tensors["s2"] = Tensor("s2", (1, *layer.output), "int8", scale=1.0, zero_point=0)
    nodes.append(Node("sign2", "sign", ["y", "t2"], ["s2"], {}))
    reader = np.where(rng.integers(0, 2, size=(READER_CHANNELS, 1, 1, layer.out_c)) > 0, 127, -127).astype(np.int8)
    tensors["w2"] = Tensor("w2", reader.shape, "int8", data=reader, scale=np.ones(READER_CHANNELS), encoding="binary")
    tensors["b2"] = Tensor("b2", (READER_CHANNELS,), "int32", data=np.zeros(READER_CHANNELS, dtype=np.int32))
    tensors["z"] = Tensor("z", (1, *layer.output[:2], READER_CHANNELS), "int8", scale=1.0, zero_point=0)
    reader_attrs = {**attrs, "multiplier": attrs["multiplier"][:READER_CHANNELS],
                    "shift": attrs["shift"][:READER_CHANNELS], "padding": (0, 0)}  # fmt: skip
    nodes.append(Node("reader", "conv2d", ["s2", "w2", "b2"], ["z"], reader_attrs))
    return fuse(Graph(tensors, nodes, ["x"], ["z"]))


def elf_calls_popcount(firmware_dir: Path) -> bool:
    """Whether the ELF has the libgcc popcount among its symbols."""
    from elftools.elf.elffile import ELFFile

    with open(firmware_dir / ELF_NAME, "rb") as stream:
        symbols = ELFFile(stream).get_section_by_name(".symtab").iter_symbols()
        return any(symbol.name == POPCOUNT_CALL for symbol in symbols)


def run_layer(graph: Graph, board_name: str, folder: Path) -> dict[str, Any]:
    """Generate, build at -O3 and run one layer graph; its kernels and per-layer instructions."""
    board = resolve_board(board_name)
    generated = generate(graph, board, plugins.plugin_manager())
    model_dir = folder / "model"
    model_dir.mkdir(parents=True)
    for name, text in generated.files.items():
        (model_dir / name).write_text(text)
    graphfile.save_graph(graph, model_dir)
    write_manifest(model_dir, "model", {"board": board.name}, files=[p.name for p in model_dir.iterdir()])
    firmware = build_firmware(model_dir, board, folder / "firmware", layer_input(graph), optimization="-O3")
    result = run_firmware(firmware.out_dir, timeout=900)
    if not result.outputs_match_reference:
        raise SystemExit(f"{folder.name}: the board's output differs from the numpy reference {result.mismatches()}")
    return {
        "kernels": [generated.kernels[n.name].function for n in graph.nodes],
        "instructions": [int(v) for v in result.layer_instructions[0]],
        "popcount_call": elf_calls_popcount(firmware.out_dir),
        "weight_bytes": generated.weights["w"].nbytes,
        "start_table_bytes": sum(node_starts(n, graph).nbytes for n in graph.nodes if n.op == FUSED),
    }


def int8_layer_runs(layer: Layer, board: str, work: Path) -> dict[str, dict[str, Any]]:
    """The int8 layer on the shape with each of our kernels that can run it: the one the code generator picks
    and, for a 3x3 stride-1 convolution, Winograd (technique `winograd`, which trades flash for speed)."""
    slug = f"{layer.op}-{'x'.join(map(str, layer.input))}-{layer.out_c}-k{layer.kernel}"
    graph = layer_graph(layer, binary=False)
    runs = {"default": run_layer(graph, board, work / f"{slug}-int8")}
    if ineligible(graph.nodes[0], graph) is None:
        winograd = Winograd({"when": "always"}).apply(graph, Context())
        runs["winograd"] = run_layer(winograd, board, work / f"{slug}-int8-winograd")
    return runs


def bench_layer(layer: Layer, board: str, work: Path, int8_runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The binary layer against the fastest of `int8_runs` (`int8_layer_runs` on its shape)."""
    int8 = min(int8_runs.values(), key=lambda run: run["instructions"][0])
    slug = "".join(c if c.isalnum() else "-" for c in layer.name)
    binary = run_layer(layer_graph(layer, binary=True), board, work / f"{slug}-binary")
    row = {
        "layer": layer.name,
        "board": board,
        "int8_kernel": int8["kernels"][0],
        "int8_instructions": int8["instructions"][0],
        "int8_kernels_measured": {run["kernels"][0]: run["instructions"][0] for run in int8_runs.values()},
        "binary_kernel": binary["kernels"][1],
        "binary_instructions": binary["instructions"][1],
        "packing_kernel": binary["kernels"][0],
        "packing_instructions": binary["instructions"][0],
        "speedup": round(int8["instructions"][0] / binary["instructions"][1], 2),
        "speedup_vs_default_int8_kernel": round(int8_runs["default"]["instructions"][0] / binary["instructions"][1], 2),
        "speedup_with_packing": round(int8["instructions"][0] / sum(binary["instructions"]), 2),
        "int8_weight_bytes": int8_runs["default"]["weight_bytes"],  # the int8 weights as they are, not transformed
        "binary_weight_bytes": binary["weight_bytes"],
        "binary_start_table_bytes": binary["start_table_bytes"],  # flash beside the weights (`fuse-sign`)
        "popcountsi2_in_elf": binary["popcount_call"],
        "matches_reference": True,
    }
    measured = ", ".join(f"{kernel} {count:,}" for kernel, count in row["int8_kernels_measured"].items())
    log(f"{layer.name}: int8 {measured}; binary {row['binary_instructions']:,}, speedup {row['speedup']}x")
    return row


def bench_digits(board_name: str, inputs: int | None, work: Path) -> dict[str, Any]:
    """The digits example int8 and binary: accuracy from the board's outputs, weight bytes of the binary layers."""
    example = get_example("digits")
    count = len(example.x_test) if inputs is None else min(inputs, len(example.x_test))
    x_test, y_test = example.x_test[:count], example.y_test[:count]
    board = resolve_board(board_name)
    result: dict[str, Any] = {"model": "digits", "board": board.name, "samples": count}
    for variant, techniques in (("int8", ["quantize-int8"]), ("binary", ["binarize", "quantize-int8", "fuse-sign"])):
        log(f"digits {variant}: compiling")
        build = tinyml.compile(
            example.model, example.calibration, techniques, board=board, out_dir=work / f"digits-{variant}",
            validation=(x_test, y_test), train_data=(example.x_train, example.y_train), progress=False,
        )  # fmt: skip
        test_inputs = default_test_inputs(build.out_dir, count)
        firmware = build_firmware(build.out_dir, board, work / f"digits-{variant}-{board.name}", test_inputs)
        run = run_firmware(firmware.out_dir, timeout=900)
        accuracy = float((run.outputs.astype(np.int16).argmax(1) == y_test).mean())
        result[f"{variant}_accuracy"] = accuracy
        result[f"{variant}_matches_reference"] = bool(run.outputs_match_reference)
        result[f"{variant}_instructions"] = int(round(float(np.mean(run.instructions))))
        result[f"{variant}_weight_bytes"] = build.generated.weight_bytes
        if variant == "binary":
            binary_layers = [n for n in build.graph.nodes if "_xnor" in build.generated.kernels[n.name].function]
            weights = [build.graph.tensors[n.inputs[1]] for n in binary_layers]
            packed = sum(build.generated.weights[w.name].nbytes for w in weights)
            result["binary_layers"] = [n.name for n in binary_layers]
            result["binary_layer_weight_bytes"] = packed
            result["binary_layer_float32_bytes"] = sum(4 * w.size for w in weights)
            result["binary_layer_int8_bytes"] = sum(w.size for w in weights)
            result["weight_reduction_vs_float32"] = round(result["binary_layer_float32_bytes"] / packed, 1)
            fused = [n for n in build.graph.nodes if n.op == FUSED]
            result["fused_start_table_bytes"] = sum(node_starts(n, build.graph).nbytes for n in fused)
            result["popcountsi2_in_elf"] = elf_calls_popcount(firmware.out_dir)
        log(f"digits {variant}: {100 * accuracy:.2f}% on {board.name}")
    return result


def print_tables(report: dict[str, Any]) -> None:
    console = Console(width=180)
    d = report["digits"]
    table = Table(title=f"digits, {d['samples']} held-out samples run on {d['board']} (QEMU)")
    for column in ("model", "accuracy", "instructions / inference", "weights B (all)", "matches reference"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for variant in ("int8", "binary"):
        table.add_row(variant, f"{100 * d[f'{variant}_accuracy']:.2f}%", f"{d[f'{variant}_instructions']:,}",
                      f"{d[f'{variant}_weight_bytes']:,}", str(d[f"{variant}_matches_reference"]))  # fmt: skip
    console.print(table)
    console.print(
        f"binary layers {', '.join(d['binary_layers'])}: {d['binary_layer_weight_bytes']:,} B packed, "
        f"{d['binary_layer_int8_bytes']:,} B as int8, {d['binary_layer_float32_bytes']:,} B as float32 "
        f"({d['weight_reduction_vs_float32']}x smaller); fused layers' start tables "
        f"{d['fused_start_table_bytes']:,} B; __popcountsi2 in the ELF: {d['popcountsi2_in_elf']}"
    )
    table = Table(title=f"one layer at -O3 on {report['layers'][0]['board']}: instructions (QEMU, exact)")
    for column in ("layer", "int8 kernel", "int8", "binary kernel", "binary", "packing input", "speedup",
                   "vs default int8", "weights B int8 / binary", "__popcountsi2"):  # fmt: skip
        table.add_column(column, justify="left" if "kernel" in column or column == "layer" else "right")
    for r in report["layers"]:
        weights = f"{r['int8_weight_bytes']:,} / {r['binary_weight_bytes']:,}" + (
            f" + {r['binary_start_table_bytes']:,} table" if r["binary_start_table_bytes"] else "")  # fmt: skip
        table.add_row(r["layer"], r["int8_kernel"], f"{r['int8_instructions']:,}", r["binary_kernel"],
                      f"{r['binary_instructions']:,}", f"{r['packing_instructions']:,}", f"{r['speedup']:.2f}x",
                      f"{r['speedup_vs_default_int8_kernel']:.2f}x", weights, str(r["popcountsi2_in_elf"]))  # fmt: skip
    console.print(table)
    console.print("int8 kernels measured: " + "; ".join(
        f"{r['layer']}: " + ", ".join(f"{k} {v:,}" for k, v in r["int8_kernels_measured"].items())
        for r in report["layers"]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--board", default="cortex-m4", help="board of the layer counts (default cortex-m4)")
    parser.add_argument("--model-board", default="stm32", help="board the digits models run on (default stm32)")
    parser.add_argument("--inputs", type=int, default=None, help="held-out samples to run (default: all)")
    parser.add_argument("--skip-model", action="store_true", help="measure the layers only")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tinyml-binary-") as scratch:
        work = Path(scratch)
        int8_runs: dict[tuple, dict[str, dict[str, Any]]] = {}  # the bits-out layer shares its int8 layer
        report["layers"] = []
        for layer in LAYERS:
            shape = (layer.op, layer.input, layer.out_c, layer.kernel, layer.padding, layer.shift)
            if shape not in int8_runs:
                int8_runs[shape] = int8_layer_runs(layer, args.board, work)
            report["layers"].append(bench_layer(layer, args.board, work, int8_runs[shape]))
        if not args.skip_model:
            report["digits"] = bench_digits(args.model_board, args.inputs, work)
    if args.json:
        print(json.dumps(report, indent=2))
    elif "digits" in report:
        print_tables(report)
    else:
        print(json.dumps(report["layers"], indent=2))


if __name__ == "__main__":
    main()
