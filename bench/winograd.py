"""Winograd F(2x2, 3x3) against the direct 3x3 convolution: the same bytes, fewer instructions, more flash.

    .venv/bin/python bench/winograd.py [--json] [--boards cortex-m4 cortex-m3] [--examples 20] [--qemu-examples 3]
    .venv/bin/python bench/winograd.py --fit [--boards cortex-m4 cortex-m3]

Exactness: hypothesis draws chains of one to three 3x3 stride-1 convolutions (sizes 1..10, 1..12
channels, padding 0..3 per axis, any zero points, multipliers, shifts and clamps, full-range int8
weights). Each chain is compiled for the host twice, with every layer on `tml_conv2d_winograd_s8`
(technique `winograd`, `when = "always"`) and with none, and the two libraries' outputs must equal
each other and the numpy reference byte for byte; the first `--qemu-examples` chains are also built
for each board (cortex-m4 takes the DSP path, cortex-m3 the portable one) and run in QEMU, where the
outputs must equal the reference. Any difference stops the script with an error.

Speed: the layers 32x32x16 -> 32x32x16 and 16x16x32 -> 16x16x32 (3x3, padding 1; data drawn as
bench/layers.py draws it) are built at -O3 for each board with the direct kernel the tree has
(`tml_conv2d_s8`) and with the Winograd one; instructions are exact QEMU counts of the layer, and
`speedup` is direct / Winograd, computed here from the two counts. `weight_bytes` are the int8
weights, `winograd_weight_bytes` the transformed int16 ones the build stores in flash.

`--fit` measures both kernels on the FIT_LAYERS and prints the costs per term (non-negative least
squares of the relative error) that `plugins/winograd/kernels.py` holds in `COSTS` (the plugin's cost model).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from layers import Layer, layer_data, layer_graph, write_model
from rich.console import Console
from rich.table import Table
from scipy.optimize import nnls

from tinyml import host, plugins
from tinyml.board.boards import resolve_board
from tinyml.board.project import build_firmware
from tinyml.board.qemu import run_firmware
from tinyml.codegen import generate
from tinyml.ir import Graph, Node, Tensor
from tinyml.reference import run_int8
from tinyml.technique import Context
from tinyml_plugins.winograd.kernels import FUNCTION, ConvShape, predicted_instructions
from tinyml_plugins.winograd.technique import Winograd
from tinyml_plugins.winograd.transform import stored_bytes

BOARDS = ("cortex-m4", "cortex-m3")
SPEED_LAYERS = (
    Layer("32x32x16", "conv2d", (32, 32, 16), 16, (3, 3), (1, 1), (1, 1), -9),
    Layer("16x16x32", "conv2d", (16, 16, 32), 32, (3, 3), (1, 1), (1, 1), -9),
)
# Shapes that move each term of the cost model apart (outputs, channels in and out, tiles).
FIT_LAYERS = (
    Layer("fit-8x8x16-16", "conv2d", (8, 8, 16), 16, (3, 3), (1, 1), (1, 1), -9),
    Layer("fit-16x16x16-16", "conv2d", (16, 16, 16), 16, (3, 3), (1, 1), (1, 1), -9),
    Layer("fit-8x8x32-32", "conv2d", (8, 8, 32), 32, (3, 3), (1, 1), (1, 1), -9),
    Layer("fit-8x8x8-32", "conv2d", (8, 8, 8), 32, (3, 3), (1, 1), (1, 1), -8),
    Layer("fit-8x8x32-8", "conv2d", (8, 8, 32), 8, (3, 3), (1, 1), (1, 1), -9),
    Layer("fit-16x16x4-4", "conv2d", (16, 16, 4), 4, (3, 3), (1, 1), (1, 1), -7),
    Layer("fit-12x12x12-20", "conv2d", (12, 12, 12), 20, (3, 3), (1, 1), (0, 0), -9),
    Layer("fit-6x6x64-64", "conv2d", (6, 6, 64), 64, (3, 3), (1, 1), (1, 1), -10),
    Layer("fit-16x16x3-16", "conv2d", (16, 16, 3), 16, (3, 3), (1, 1), (1, 1), -8),
    Layer("fit-4x4x16-16", "conv2d", (4, 4, 16), 16, (3, 3), (1, 1), (0, 0), -9),
    Layer("fit-3x3x32-32", "conv2d", (3, 3, 32), 32, (3, 3), (1, 1), (0, 0), -9),
    Layer("fit-9x9x8-8", "conv2d", (9, 9, 8), 8, (3, 3), (1, 1), (1, 1), -8),
)


def on_winograd(graph: Graph) -> Graph:
    """The graph with every eligible layer stored for and run by the Winograd kernel."""
    return Winograd({"when": "always"}).apply(graph, Context())


# --- exactness over drawn chains ---------------------------------------------------------------


@st.composite
def chains(draw: st.DrawFn) -> dict:
    """A chain of 3x3 stride-1 convolutions: input (h, w, c) and zero point, then each layer's parameters."""
    h, w, c = draw(st.integers(1, 10)), draw(st.integers(1, 10)), draw(st.integers(1, 12))
    first = (h, w, c)
    zero_point = draw(st.sampled_from([-128, 127, 0]) | st.integers(-128, 127))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        pad = tuple(draw(st.integers(max(0, (4 - size) // 2), 3)) for size in (h, w))
        h, w = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
        out_c = draw(st.integers(1, 12))
        act_min = draw(st.integers(-128, 0))
        layers.append({
            "padding": pad, "out_c": out_c, "seed": draw(st.integers(0, 2**32 - 1)),
            "zero_point": draw(st.sampled_from([-128, 127]) | st.integers(-128, 127)),
            "act_min": act_min, "act_max": draw(st.integers(act_min, 127)),
        })  # fmt: skip
    return {"input": first, "zero_point": zero_point, "layers": layers}


def chain_graph(chain: dict) -> Graph:
    """The int8 graph of a drawn chain, weights, biases and requantization drawn from each layer's seed."""
    h, w, c = chain["input"]
    tensors = {"x": Tensor("x", (1, h, w, c), "int8", scale=1.0, zero_point=chain["zero_point"])}
    nodes, previous = [], "x"
    for i, layer in enumerate(chain["layers"]):
        rng = np.random.default_rng(layer["seed"])
        out_c, (ph, pw) = layer["out_c"], layer["padding"]
        h, w = h + 2 * ph - 2, w + 2 * pw - 2
        name = f"conv{i}"
        weights = rng.integers(-128, 128, size=(out_c, 3, 3, c), dtype=np.int8)
        tensors[f"{name}.weight"] = Tensor(f"{name}.weight", weights.shape, "int8", data=weights,
                                           scale=np.ones(out_c))  # fmt: skip
        bias = rng.integers(-(2**20), 2**20, size=out_c, dtype=np.int32)
        tensors[f"{name}.bias"] = Tensor(f"{name}.bias", (out_c,), "int32", data=bias)
        out = f"y{i}"
        tensors[out] = Tensor(out, (1, h, w, out_c), "int8", scale=1.0, zero_point=layer["zero_point"])
        attrs = {
            "activation": "none", "act_min": layer["act_min"], "act_max": layer["act_max"],
            "multiplier": rng.integers(2**30, 2**31 - 1, size=out_c).astype(np.int32),
            "shift": rng.integers(-16, 2, size=out_c).astype(np.int32), "stride": (1, 1), "padding": (ph, pw),
        }  # fmt: skip
        nodes.append(Node(name, "conv2d", [previous, f"{name}.weight", f"{name}.bias"], [out], attrs))
        previous, c = out, out_c
    return Graph(tensors, nodes, ["x"], [previous])


def chain_inputs(graph: Graph, seed: int, n: int = 3) -> np.ndarray:
    """n inputs: every value 127, every value -128 (the transformed windows' extremes), then random ones."""
    size = int(np.prod(graph.tensors[graph.inputs[0]].shape[1:]))
    x = np.random.default_rng(seed).integers(-128, 128, size=(n, size), dtype=np.int8)
    x[0], x[1] = 127, -128
    return x


def check_on_host(graph: Graph, x: np.ndarray, work: Path) -> None:
    """Winograd and direct host libraries of `graph`: both equal the reference byte for byte, else an error."""
    expected = run_int8(graph, x.reshape(-1, *graph.tensors[graph.inputs[0]].shape[1:]))[graph.outputs[0]]
    expected = expected.reshape(len(x), -1)
    for label, g in (("winograd", on_winograd(graph)), ("direct", graph)):
        folder = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
        for name, text in generate(g, None, plugins.plugin_manager()).files.items():
            (folder / name).write_text(text)
        got = host.load_model(folder)(x)
        if not np.array_equal(got.reshape(len(x), -1), expected):
            raise AssertionError(f"host {label} kernel differs from the numpy reference on {describe(graph)}")


def check_on_board(graph: Graph, x: np.ndarray, board: str, work: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix=f"{board}-", dir=work))
    winograd = on_winograd(graph)
    write_model(winograd, board, folder / "model")
    firmware = build_firmware(folder / "model", resolve_board(board), folder / "firmware", x, optimization="-O3")
    result = run_firmware(firmware.out_dir, timeout=120)
    if not result.outputs_match_reference:
        raise AssertionError(f"{board}: the Winograd kernel differs from the numpy reference on {describe(graph)} "
                             f"{result.mismatches()}")  # fmt: skip


def describe(graph: Graph) -> str:
    parts = [f"{'x'.join(map(str, graph.tensors[graph.inputs[0]].shape[1:]))} zp {graph.tensors['x'].zero_point}"]
    for node in graph.nodes:
        out = graph.tensors[node.outputs[0]]
        parts.append(f"pad {tuple(node.attrs['padding'])} -> {'x'.join(map(str, out.shape[1:]))} zp {out.zero_point}")
    return "; ".join(parts)


def exactness(boards: list[str], examples: int, qemu_examples: int, work: Path) -> dict:
    """Host checks on `examples` drawn chains, board checks on the first `qemu_examples` of them."""
    checked = {"host": 0, **{board: 0 for board in boards}}

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None)
    @given(chain=chains())
    def check(chain: dict) -> None:
        graph = chain_graph(chain)
        x = chain_inputs(graph, seed=len(graph.nodes))
        check_on_host(graph, x, work)
        checked["host"] += 1
        if checked["host"] <= qemu_examples:
            for board in boards:
                check_on_board(graph, x, board, work)
                checked[board] += 1

    check()
    return checked


# --- instructions -------------------------------------------------------------------------------


def layer_instructions(graph: Graph, board: str, folder: Path, x: np.ndarray) -> tuple[int, np.ndarray, int]:
    """(instructions of the one layer, the board's outputs, scratch bytes) of a -O3 build run in QEMU."""
    scratch, _ = write_model(graph, board, folder / "model")
    firmware = build_firmware(folder / "model", resolve_board(board), folder / "firmware", x, optimization="-O3")
    result = run_firmware(firmware.out_dir, timeout=600)
    if not result.outputs_match_reference:
        raise SystemExit(f"{folder.name}: the board's output differs from the numpy reference {result.mismatches()}")
    return int(result.layer_instructions[0, 0]), np.asarray(result.outputs), scratch


def measure(layer: Layer, board: str, work: Path) -> dict:
    """Direct and Winograd kernels on one layer and board: counts, speedup, flash and scratch."""
    data = layer_data(layer, 1)
    graph = layer_graph(layer, data)
    x = data["input"].reshape(1, -1)
    direct, direct_out, direct_scratch = layer_instructions(graph, board, work / f"{layer.name}-{board}-direct", x)
    winograd_graph = on_winograd(graph)
    wino, wino_out, wino_scratch = layer_instructions(winograd_graph, board, work / f"{layer.name}-{board}-wino", x)
    if not np.array_equal(direct_out, wino_out):
        raise SystemExit(f"{layer.name} on {board}: the Winograd kernel's bytes differ from the direct kernel's")
    shape = ConvShape.of(graph.nodes[0], graph)
    predicted_direct, predicted_wino = predicted_instructions(shape, resolve_board(board))
    weights = data["weights"]
    return {
        "layer": layer.name,
        "board": board,
        "shape": f"{'x'.join(map(str, layer.input))} -> {'x'.join(map(str, layer.output))}",
        "direct_instructions": direct,
        "winograd_instructions": wino,
        "speedup": round(direct / wino, 3),
        "predicted_speedup": round(predicted_direct / predicted_wino, 3),
        "weight_bytes": int(weights.nbytes),
        "winograd_weight_bytes": stored_bytes(weights),
        "flash_ratio": round(stored_bytes(weights) / weights.nbytes, 3),
        "direct_scratch_bytes": direct_scratch,
        "winograd_scratch_bytes": wino_scratch,
        "same_bytes": True,
        "kernel": FUNCTION,
    }


def fit(boards: list[str], work: Path) -> dict:
    """Least-squares instructions per cost-model term, per kernel path, from FIT_LAYERS measured on `boards`."""
    costs = {}
    for board in boards:
        dsp = resolve_board(board).dsp
        rows = [measure(layer, board, work) for layer in FIT_LAYERS]
        shapes = [ConvShape(*layer.output[:2], layer.input[2], layer.out_c) for layer in FIT_LAYERS]
        result = {}
        for kernel, terms in (("direct", ConvShape.direct_terms), ("winograd", ConvShape.winograd_terms)):
            a = np.array([terms(s, dsp) for s in shapes], dtype=np.float64)
            b = np.array([row[f"{kernel}_instructions"] for row in rows], dtype=np.float64)
            coefficients = nnls(a / b[:, None], np.ones_like(b))[0]  # non-negative, relative error
            error = float(np.max(np.abs(a @ coefficients - b) / b))
            result[kernel] = {
                "costs": [round(float(v), 3) for v in coefficients],
                "max_relative_error": round(error, 4),
                "instructions": [int(v) for v in b],
            }
        path = "dsp" if dsp else "portable"
        costs[path] = {"board": board, **result}
    return costs


def print_table(rows: list[dict], checked: dict) -> None:
    table = Table(title="Winograd F(2x2,3x3) against the direct kernel, -O3, exact QEMU counts per call")
    columns = ("layer", "board", "direct", "winograd", "speedup", "predicted", "int8 weights B", "winograd B",
               "flash x", "scratch B")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "board") else "right")
    for r in rows:
        table.add_row(
            r["shape"], r["board"], f"{r['direct_instructions']:,}", f"{r['winograd_instructions']:,}",
            f"{r['speedup']:.2f}x", f"{r['predicted_speedup']:.2f}x", f"{r['weight_bytes']:,}",
            f"{r['winograd_weight_bytes']:,}", f"{r['flash_ratio']:.2f}", f"{r['winograd_scratch_bytes']:,}",
        )  # fmt: skip
    console = Console(width=140)
    console.print(table)
    console.print(
        "same bytes as the direct kernel and the numpy reference: "
        + ", ".join(f"{n} drawn chains on {where}" for where, n in checked.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--boards", nargs="*", default=list(BOARDS))
    parser.add_argument("--examples", type=int, default=20, help="drawn chains checked on the host")
    parser.add_argument("--qemu-examples", type=int, default=3, help="of those, how many also run on each board")
    parser.add_argument("--fit", action="store_true", help="measure FIT_LAYERS and print the cost model's costs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tinyml-winograd-") as scratch:
        work = Path(scratch)
        if args.fit:
            print(json.dumps(fit(args.boards, work), indent=2))
            return
        checked = exactness(args.boards, args.examples, args.qemu_examples, work)
        rows = []
        for board in args.boards:
            for layer in SPEED_LAYERS:
                rows.append(measure(layer, board, work))
                if not args.json:
                    print(f"{layer.name} {board}: {rows[-1]['speedup']:.2f}x", file=sys.stderr)
    if args.json:
        print(json.dumps({"exactness": checked, "layers": rows}, indent=2))
    else:
        print_table(rows, checked)


if __name__ == "__main__":
    main()
