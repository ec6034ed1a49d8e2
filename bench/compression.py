"""Deep Compression on the device: pruning, weight sharing and Huffman-coded weights, measured in QEMU.

    .venv/bin/python bench/compression.py [--json] [--board stm32] [--inputs N]

For the bundled `mlp` (64-300-100-10, LeNet-300-100's shape) and `digits` (CNN) examples, stage by
stage as in Han, Mao and Dally's paper: plain int8; pruning (+ int8, weights stored raw); pruning +
weight sharing (indices stored fixed-width, `packed` or `sparse`, whichever is smaller per layer);
pruning + sharing + Huffman (`huffman` technique, `encoding = "auto"`). Every stage is compiled,
built for the board with the whole held-out split compiled in, and run in QEMU: the device
accuracy is the argmax of the board's int8 outputs, which are also checked byte for byte against
the numpy reference. Stored bytes are the model's constants as generated (weights and biases in
their encoding, code tables included); float32 bytes are the float model's weights and biases.
ELF flash leaves out the compiled-in test inputs; RAM is .data + .bss + the stack's high water, and
every stage is checked against the rule that it be no more than plain int8's plus the scratch the
memory plan declares for the kernels that decode weights ("RAM <= int8 + it").
Then Huffman against fixed-width indices on the same codebooks, and structured pruning of half
the digits CNN's channels. Progress goes to stderr, so `--json` prints only the JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import tinyml
from tinyml.compiler import Build, resolve_techniques
from tinyml.examples import Example, get_example
from tinyml.technique import Context

# Tuned with short runs on the digits split (see the goals: MLP >= 40x, CNN >= 20x, within a point).
PRUNE = {
    "mlp": {"sparsity": 0.95, "steps": 5, "epochs_per_step": 6},
    "digits": {"sparsity": 0.85, "steps": 5, "epochs_per_step": 4},
}
SHARE = {
    "mlp": {"bits": 3, "epochs": 2},
    "digits": {"bits": 4, "epochs": 2},
}
STRUCTURED = {"mode": "filters", "sparsity": 0.5, "types": ["conv"], "steps": 2, "epochs_per_step": 10}
FIXED_WIDTH = ("packed", "sparse")


@dataclass
class BenchConfig:
    """What to measure; the defaults are the published run, a test shrinks them."""

    models: tuple[str, ...] = ("mlp", "digits")
    board: str | None = "stm32"  # None: no firmware; the accuracy is the generated C's on the host
    inputs: int | None = None  # held-out inputs to run (None: the whole split)
    prune: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(PRUNE))
    share: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(SHARE))
    structured: dict[str, Any] | None = field(default_factory=lambda: dict(STRUCTURED))


def log(message: str) -> None:
    print(f"[compression] {message}", file=sys.stderr, flush=True)


def float_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def float32_bytes(build: Build) -> int:
    """Bytes of the float model's weights and biases as float32 (the paper's baseline), batch norms folded."""
    graph = build.float_graph
    constants = {name for node in graph.nodes for name in node.inputs if graph.tensors[name].is_constant}
    return 4 * sum(graph.tensors[name].size for name in constants)


def encoded_weights(build: Build) -> list[Any]:
    """The weight tensors the huffman technique gave a codebook (fc, conv2d and dwconv2d layers)."""
    from tinyml_plugins.huffman.kernels import ENCODED_OPS

    graph = build.graph
    return [
        (node.name, graph.tensors[node.inputs[1]])
        for node in graph.nodes
        if node.op in ENCODED_OPS and graph.tensors[node.inputs[1]].codebook is not None
    ]


def decode_scratch_bytes(build: Build) -> int:
    """Scratch the planner holds for the kernels that read encoded weights (the decoders' state, rows, layers)."""
    graph = build.graph
    return sum(
        build.generated.kernels[node.name].scratch_bytes
        for node in graph.nodes
        if any(graph.tensors[name].encoding != "raw" for name in node.inputs)
    )


def train_stage(example: Example, spec: tuple[str, dict[str, Any]]) -> torch.nn.Module:
    """The model a train-stage technique returns, so later stages reuse one pruning run."""
    (technique,) = resolve_techniques([spec])
    context = Context(
        train_data=(example.x_train, example.y_train), example_input=torch.from_numpy(example.calibration[:1])
    )
    return technique.apply(copy.deepcopy(example.model).eval(), context).eval()


def fixed_width_choice(build: Build) -> dict[str, str]:
    """Per encoded layer, the smaller fixed-width storage (packed or sparse) of its shared weights."""
    from tinyml_plugins.huffman.technique import stored_bytes

    return {
        name: min(FIXED_WIDTH, key=lambda e, w=weight: stored_bytes(w, e)) for name, weight in encoded_weights(build)
    }


def huffman_vs_packed(build: Build) -> dict[str, int]:
    """Bytes of every encoded layer's weights as Huffman codes and as packed indices, same codebooks."""
    from tinyml_plugins.huffman.technique import stored_bytes

    totals = {"huffman_bytes": 0, "packed_bytes": 0, "fixed_width_bytes": 0}
    for _name, weight in encoded_weights(build):
        totals["huffman_bytes"] += stored_bytes(weight, "huffman")
        totals["packed_bytes"] += stored_bytes(weight, "packed")
        totals["fixed_width_bytes"] += min(stored_bytes(weight, e) for e in FIXED_WIDTH)
    return totals


def savings(totals: dict[str, int]) -> dict[str, float]:
    """Huffman's saving in % against packed indices, and against the smaller of packed and sparse per layer."""
    return {
        "saving_percent": 100 * (1 - totals["huffman_bytes"] / totals["packed_bytes"]),
        "saving_vs_fixed_width_percent": 100 * (1 - totals["huffman_bytes"] / totals["fixed_width_bytes"]),
    }


def measure(
    name: str,
    stage: str,
    model: torch.nn.Module,
    example: Example,
    techniques: list[Any],
    config: BenchConfig,
    scratch: Path,
) -> tuple[dict[str, Any], Build]:
    """Compile `model` with `techniques`, run it on the board (or the host), and return its row."""
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware, default_test_inputs
    from tinyml.board.qemu import run_firmware
    from tinyml.board.size import size_report

    count = len(example.x_test) if config.inputs is None else min(config.inputs, len(example.x_test))
    x_test, y_test = example.x_test[:count], example.y_test[:count]
    slug = f"{name}-{stage}".replace(" ", "").replace("+", "-")
    model_dir = scratch / slug
    started = time.monotonic()
    build = tinyml.compile(
        model,
        example.calibration,
        techniques,
        board=None if config.board is None else resolve_board(config.board),  # the board's kernels and scratch
        out_dir=model_dir,
        validation=(x_test, y_test),
        train_data=(example.x_train, example.y_train),
        progress=False,
    )
    row: dict[str, Any] = {
        "model": name,
        "stage": stage,
        "float_accuracy": float_accuracy(model, x_test, y_test),
        "stored_bytes": build.generated.weight_bytes,
        "scratch_bytes": sum(k.scratch_bytes for k in build.generated.kernels.values()),
        "decode_scratch_bytes": decode_scratch_bytes(build),
        "samples": count,
    }
    if config.board is None:
        result = tinyml.validate(model_dir)
        row.update(device_accuracy=result["int8_accuracy"], outputs_match_reference=result["c_matches_reference"])
        log(f"{name} / {stage}: host C {100 * row['device_accuracy']:.2f}% ({time.monotonic() - started:.0f} s)")
        return row, build
    board = resolve_board(config.board)
    inputs = default_test_inputs(model_dir, count)
    out = build_firmware(model_dir, board, scratch / f"{slug}-{board.name}", inputs).out_dir
    run = run_firmware(out, timeout=600)
    sizes = size_report(out)
    predicted = run.outputs.astype(np.int16).argmax(1)
    row.update(
        device_accuracy=float((predicted == y_test).mean()),
        outputs_match_reference=run.outputs_match_reference,
        elf_flash_bytes=sizes.flash_bytes - inputs.size,  # tml_test_inputs is int8 [N][input size] in flash
        ram_bytes=sizes.ram_bytes + run.stack_bytes,
        ram_static_bytes=sizes.ram_bytes,
        stack_bytes=run.stack_bytes,
        arena_bytes=build.plan.arena_bytes,
        instructions=int(round(float(np.mean(run.instructions)))),
    )
    log(
        f"{name} / {stage}: {board.name} {100 * row['device_accuracy']:.2f}%, {row['instructions']:,} instructions, "
        f"{row['stored_bytes']:,} B stored ({time.monotonic() - started:.0f} s)"
    )
    return row, build


def bench_model(name: str, config: BenchConfig, scratch: Path) -> tuple[dict[str, Any], list[dict], dict[str, Any]]:
    """The four stages of one model: its `models` entry, its stage rows and its Huffman-vs-packed totals."""
    example = get_example(name)
    log(f"{name}: pruning {config.prune[name]}")
    pruned = train_stage(example, ("prune", config.prune[name]))
    share = ("share-weights", config.share[name])
    rows = []

    def stage(label: str, model: torch.nn.Module, techniques: list[Any]) -> Build:
        row, build = measure(name, label, model, example, techniques, config, scratch)
        rows.append(row)
        return build

    base = float32_bytes(stage("int8", example.model, ["quantize-int8"]))
    stage("prune", pruned, ["quantize-int8"])
    huffman = stage("prune + share + huffman", pruned, ["quantize-int8", share, ("huffman", {"encoding": "auto"})])
    fixed = ("huffman", {"encoding": "packed", "layers": fixed_width_choice(huffman)})
    stage("prune + share", pruned, ["quantize-int8", share, fixed])
    rows[2], rows[3] = rows[3], rows[2]  # the paper's order; the Huffman build came first for its codebooks
    for row in rows:
        row["float32_bytes"], row["compression_ratio"] = base, base / row["stored_bytes"]
        if config.board is not None:  # RAM (.data + .bss + stack high water) within int8's plus the declared scratch
            row["ram_within_int8_plus_scratch"] = row["ram_bytes"] <= rows[0]["ram_bytes"] + row["decode_scratch_bytes"]
    int8, final = rows[0], rows[-1]
    entry = {
        "model": name,
        "float_accuracy": float_accuracy(
            example.model, example.x_test[: final["samples"]], example.y_test[: final["samples"]]
        ),
        "device_accuracy": final["device_accuracy"],
        "float32_bytes": base,
        "stored_bytes": final["stored_bytes"],
        "compression_ratio": final["compression_ratio"],
        "outputs_match_reference": all(r["outputs_match_reference"] for r in rows),
        "samples": final["samples"],
    }
    entry["accuracy_drop_points"] = 100 * (entry["float_accuracy"] - entry["device_accuracy"])
    for key in ("elf_flash_bytes", "instructions", "ram_bytes", "ram_static_bytes", "stack_bytes", "arena_bytes"):
        entry[key] = final.get(key)
        entry[f"{key}_int8"] = int8.get(key)
    entry["scratch_bytes"] = final["scratch_bytes"]
    entry["decode_scratch_bytes"] = final["decode_scratch_bytes"]
    if config.board is not None:
        entry["ram_within_int8_plus_scratch"] = all(r["ram_within_int8_plus_scratch"] for r in rows)
    totals = huffman_vs_packed(huffman)
    totals.update(savings(totals))
    return entry, rows, {name: totals}


def bench_structured(config: BenchConfig, scratch: Path, int8_row: dict[str, Any] | None) -> dict[str, Any]:
    """Half of the digits CNN's conv channels removed: instructions, flash and accuracy against plain int8."""
    example = get_example("digits")
    log(f"digits: structured pruning {config.structured}")
    pruned = train_stage(example, ("prune", config.structured))
    if int8_row is None:
        int8_row, _ = measure("digits", "int8", example.model, example, ["quantize-int8"], config, scratch)
    row, _ = measure("digits", "filters 50%", pruned, example, ["quantize-int8"], config, scratch)
    result = {
        "model": "digits",
        "options": config.structured,
        "float_accuracy": float_accuracy(
            example.model, example.x_test[: row["samples"]], example.y_test[: row["samples"]]
        ),
        "pruned_float_accuracy": row["float_accuracy"],
        "device_accuracy": row["device_accuracy"],
        "device_accuracy_int8": int8_row["device_accuracy"],
        "outputs_match_reference": row["outputs_match_reference"],
        "stored_bytes": row["stored_bytes"],
        "stored_bytes_int8": int8_row["stored_bytes"],
    }
    for key in ("instructions", "elf_flash_bytes", "ram_bytes"):
        result[key], result[f"{key}_int8"] = row.get(key), int8_row.get(key)
    if result["instructions"] is not None:
        result["instructions_saving_percent"] = 100 * (1 - result["instructions"] / result["instructions_int8"])
    return result


def run_bench(config: BenchConfig, scratch: Path | None = None) -> dict[str, Any]:
    """Every measurement of the bench as plain JSON-ready values (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="tinyml-compression-") as tmp:
        scratch = Path(scratch or tmp)
        report: dict[str, Any] = {"board": config.board, "models": [], "stages": [], "huffman_vs_packed": {}}
        for name in config.models:
            entry, rows, totals = bench_model(name, config, scratch)
            report["models"].append(entry)
            report["stages"].extend(rows)
            report["huffman_vs_packed"].update(totals)
        per_model = report["huffman_vs_packed"]
        if per_model:
            keys = ("huffman_bytes", "packed_bytes", "fixed_width_bytes")
            total = {key: sum(t[key] for t in per_model.values()) for key in keys}
            per_model["total"] = {**total, **savings(total)}
        if config.structured is not None:
            int8_row = next((r for r in report["stages"] if r["model"] == "digits" and r["stage"] == "int8"), None)
            report["structured"] = bench_structured(config, scratch, int8_row)
    return report


def _num(value: Any, fmt: str = ",") -> str:
    return "-" if value is None else format(value, fmt)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def print_tables(report: dict[str, Any], console: Console) -> None:
    board = report["board"] or "host C"
    stages = Table(title=f"Deep Compression stage by stage ({board}, held-out split)")
    columns = ("model", "stage", "float acc", "device acc", "= ref", "stored B", "float32 B", "ratio", "flash B",
               "RAM B", "decode scratch B", "RAM <= int8 + it", "instructions")  # fmt: skip
    for col in columns:
        stages.add_column(col, justify="left" if col in ("model", "stage") else "right")
    for r in report["stages"]:
        stages.add_row(
            r["model"], r["stage"], f"{100 * r['float_accuracy']:.2f}%", f"{100 * r['device_accuracy']:.2f}%",
            "yes" if r["outputs_match_reference"] else "NO", _num(r["stored_bytes"]), _num(r["float32_bytes"]),
            f"{r['compression_ratio']:.1f}x", _num(r.get("elf_flash_bytes")), _num(r.get("ram_bytes")),
            _num(r["decode_scratch_bytes"]), _yes_no(r.get("ram_within_int8_plus_scratch")),
            _num(r.get("instructions")),
        )  # fmt: skip
    console.print(stages)
    models = Table(title="Compressed (prune + share + huffman) against float32 and plain int8")
    columns = ("model", "float acc", "device acc", "drop (pts)", "ratio", "flash B / int8", "RAM B / int8 + scratch",
               "instructions / int8")  # fmt: skip
    for col in columns:
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in report["models"]:
        models.add_row(
            m["model"], f"{100 * m['float_accuracy']:.2f}%", f"{100 * m['device_accuracy']:.2f}%",
            f"{m['accuracy_drop_points']:.2f}", f"{m['compression_ratio']:.1f}x",
            f"{_num(m['elf_flash_bytes'])} / {_num(m['elf_flash_bytes_int8'])}",
            f"{_num(m['ram_bytes'])} / {_num(m['ram_bytes_int8'])} + {m['decode_scratch_bytes']}",
            f"{_num(m['instructions'])} / {_num(m['instructions_int8'])}",
        )  # fmt: skip
    console.print(models)
    huff = Table(title="Huffman codes against fixed-width indices, same codebooks (encoded weights only)")
    for col in ("model", "packed B", "huffman B", "saving", "packed or sparse B", "saving "):
        huff.add_column(col, justify="left" if col == "model" else "right")
    for name, t in report["huffman_vs_packed"].items():
        huff.add_row(
            name, _num(t["packed_bytes"]), _num(t["huffman_bytes"]), f"{t['saving_percent']:.1f}%",
            _num(t["fixed_width_bytes"]), f"{t['saving_vs_fixed_width_percent']:.1f}%",
        )  # fmt: skip
    console.print(huff)
    s = report.get("structured")
    if s:
        table = Table(title="Structured pruning: half of the digits CNN's conv channels removed, against int8")
        for col in ("", "pruned", "int8"):
            table.add_column(col, justify="left" if not col else "right")
        table.add_row(
            "device accuracy", f"{100 * s['device_accuracy']:.2f}%", f"{100 * s['device_accuracy_int8']:.2f}%"
        )
        table.add_row("float accuracy", f"{100 * s['pruned_float_accuracy']:.2f}%", f"{100 * s['float_accuracy']:.2f}%")
        for key, label in (("instructions", "instructions"), ("elf_flash_bytes", "flash B"), ("ram_bytes", "RAM B"),
                           ("stored_bytes", "stored B")):  # fmt: skip
            table.add_row(label, _num(s[key]), _num(s[f"{key}_int8"]))
        if s.get("instructions_saving_percent") is not None:
            table.add_row("instructions saved", f"{s['instructions_saving_percent']:.1f}%", "")
        console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--board", default="stm32", help="board to run on; 'host' runs the C on this machine")
    parser.add_argument("--inputs", type=int, default=None, help="held-out inputs to run (default: all)")
    args = parser.parse_args(argv)
    config = BenchConfig(board=None if args.board == "host" else args.board, inputs=args.inputs)
    started = time.monotonic()
    report = run_bench(config)
    log(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_tables(report, Console(width=160))


if __name__ == "__main__":
    main()
