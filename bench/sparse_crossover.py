"""Where the zero-skipping kernels start to pay: dense against sparse-csr instructions on `stm32`.

    .venv/bin/python bench/sparse_crossover.py [--board stm32] [--json]

For one fully connected layer (300 -> 100, the MLP 64-300-100-10's middle layer) and one 1x1
convolution (32 -> 64 channels over 8x8 pixels), the same weights are magnitude-pruned to each
sparsity and run twice in one firmware: raw int8 through the dense kernel (`tml_fc_s8`,
`tml_conv2d_s8`) and `sparse-csr` through the zero-skipping one (`tml_sparse_fc_s8`,
`tml_sparse_conv1x1_s8`). Instructions are the exact per-layer counts of a QEMU run (what
`tinyml run --json` reports under `layers`); the firmware's outputs are checked against the
numpy oracle. The crossover is the sparsity where the sparse kernel's count meets the dense
one's, interpolated linearly between the measured sparsities; `SPARSE_CROSSOVER` in
`plugins/huffman/kernels.py` holds the figures this prints.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tinyml.board.boards import resolve_board
from tinyml.board.project import build_firmware, default_test_inputs
from tinyml.board.qemu import run_firmware
from tinyml.compiler import compile
from tinyml_plugins.huffman.csr import encode_csr

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)


class Branches(torch.nn.Module):
    """One input through several copies of a layer, their outputs added: one firmware, many layers."""

    def __init__(self, layers: list[torch.nn.Module]) -> None:
        super().__init__()
        self.branch = torch.nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch[0](x)
        for layer in self.branch[1:]:
            out = out + layer(x)
        return out


def pruned(make: Any, sparsity: float, seed: int = 0) -> torch.nn.Module:
    """A fresh layer from `make`, its smallest-magnitude weights set to zero to `sparsity`."""
    torch.manual_seed(seed)
    layer = make()
    with torch.no_grad():
        w = layer.weight
        k = int(round(sparsity * w.numel()))
        if k:
            threshold = w.abs().flatten().kthvalue(k).values
            w.mul_(w.abs() > threshold)
    return layer


LAYERS = {
    "fc 300x100": (lambda: torch.nn.Linear(300, 100), (300,)),
    "conv1x1 32->64 8x8": (lambda: torch.nn.Conv2d(32, 64, 1), (32, 8, 8)),
}


def crossover(sparsities: list[float], dense: list[float], sparse: list[float]) -> float | None:
    """The sparsity where sparse meets dense, linear between measured points.

    0 when sparse is faster from the first point on; None when it is never faster.
    """
    diff = [s - d for s, d in zip(sparse, dense, strict=True)]
    if diff[0] < 0:
        return 0.0
    for i in range(1, len(diff)):
        if diff[i - 1] >= 0 > diff[i]:
            s0, s1 = sparsities[i - 1], sparsities[i]
            return s0 + (s1 - s0) * diff[i - 1] / (diff[i - 1] - diff[i])
    return None


def measure(name: str, board: str, scratch: Path) -> dict[str, Any]:
    """Dense and sparse instructions of layer `name` at every sparsity, from one firmware."""
    make, shape = LAYERS[name]
    layers = [pruned(make, s) for s in SPARSITIES for _ in ("dense", "sparse")]
    encodings = {f"branch.{2 * i + 1}": "sparse-csr" for i in range(len(SPARSITIES))}
    calibration = np.random.default_rng(1).normal(size=(16, *shape)).astype(np.float32)
    model_dir = scratch / name.replace(" ", "_").replace(">", "")
    build = compile(
        Branches(layers).eval(), calibration,
        ["quantize-int8", ("huffman", {"encoding": "raw", "layers": encodings})], board=resolve_board(board),
        out_dir=model_dir, progress=False,
    )  # fmt: skip
    kernels = {n.name: build.generated.kernels[n.name].function for n in build.graph.nodes}
    firmware = build_firmware(model_dir, resolve_board(board), scratch / f"{model_dir.name}-fw",
                              default_test_inputs(model_dir, 1))  # fmt: skip
    result = run_firmware(firmware.out_dir, timeout=600)
    summary = result.summary()
    counts = {layer["name"]: float(np.mean(layer["instructions"])) for layer in summary["layers"]}
    rows = []
    for i, target in enumerate(SPARSITIES):
        dense, sparse = f"branch.{2 * i}", f"branch.{2 * i + 1}"
        weights = build.graph.tensors[f"{sparse}.weight"].data
        rows.append(
            {
                "sparsity": target,
                "int8_sparsity": round(1.0 - np.count_nonzero(weights) / weights.size, 4),
                "dense_kernel": kernels[dense],
                "sparse_kernel": kernels[sparse],
                "dense_instructions": int(counts[dense]),
                "sparse_instructions": int(counts[sparse]),
                "dense_bytes": int(weights.nbytes),
                "sparse_bytes": encode_csr(weights).nbytes,
            }
        )
    point = crossover(
        [r["int8_sparsity"] for r in rows], [r["dense_instructions"] for r in rows],
        [r["sparse_instructions"] for r in rows],
    )  # fmt: skip
    return {
        "layer": name,
        "board": board,
        "outputs_match_reference": result.outputs_match_reference,
        "rows": rows,
        "crossover": None if point is None else round(point, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="stm32")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tinyml-sparse-") as scratch:
        results = [measure(name, args.board, Path(scratch)) for name in LAYERS]
    if args.json:
        print(json.dumps({"board": args.board, "layers": results}, indent=2))
        return
    console = Console(width=130)
    for result in results:
        table = Table(title=f"{result['layer']} on {result['board']}: dense against sparse-csr")
        for column in ("sparsity", "int8 zeros", "dense instr", "sparse instr", "sparse/dense", "raw B", "csr B"):
            table.add_column(column, justify="right")
        for r in result["rows"]:
            table.add_row(
                f"{r['sparsity']:.0%}", f"{r['int8_sparsity']:.1%}", f"{r['dense_instructions']:,}",
                f"{r['sparse_instructions']:,}", f"{r['sparse_instructions'] / r['dense_instructions']:.2f}",
                f"{r['dense_bytes']:,}", f"{r['sparse_bytes']:,}",
            )  # fmt: skip
        console.print(table)
        point, first = result["crossover"], result["rows"][0]
        if point is None:
            where = "never (the dense kernel is faster at every sparsity measured)"
        elif point == 0.0 and first["sparse_instructions"] < first["dense_instructions"]:
            where = "0% (the sparse kernel is faster at every sparsity measured)"
        else:
            where = f"{point:.1%} sparsity"
        match = "yes" if result["outputs_match_reference"] else "NO"
        console.print(f"crossover: {where}   (outputs equal the numpy reference: {match})\n")


if __name__ == "__main__":
    main()
