"""Validation of a build: the generated C, run on the host, against PyTorch and the numpy oracle.

Reports the float model's accuracy (PyTorch), the int8 model's accuracy measured through the
C code, and whether the C output equals the numpy reference byte for byte on every sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyml.compiler import VALIDATION_FILE, load_graph
from tinyml.errors import TinymlError
from tinyml.host import load_model
from tinyml.reference import run_int8


def validate(build_dir: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Run the build's held-out data through C and the reference; accuracies and byte equality."""
    build_dir = Path(build_dir)
    graph = load_graph(build_dir)
    data_path = build_dir / VALIDATION_FILE
    if not data_path.exists():
        raise TinymlError(
            f'{build_dir} has no validation data: compile with `[data] validation = "val.npz"` in the recipe '
            "(an .npz with inputs `x` and integer labels `y`) or use a bundled example."
        )
    with np.load(data_path) as data:
        x, y, float_pred = data["x"], data["y"], data["float_pred"]
    if limit is not None:
        x, y, float_pred = x[:limit], y[:limit], float_pred[:limit]
    from tinyml.frontend import nchw_to_graph

    model = load_model(build_dir)
    xq = model.quantize(nchw_to_graph(x))
    c_out = model(xq)
    ref_out = run_int8(graph, xq)[graph.outputs[0]].reshape(len(x), -1)
    mismatched = int(np.sum(np.any(c_out != ref_out, axis=1)))
    float_acc = float(np.mean(float_pred.reshape(len(x), -1).argmax(1) == y))
    int8_acc = float(np.mean(c_out.argmax(1) == y))
    return {
        "build_dir": str(build_dir),
        "samples": len(x),
        "float_accuracy": float_acc,
        "int8_accuracy": int8_acc,
        "accuracy_drop_points": round(100.0 * (float_acc - int8_acc), 3),
        "c_matches_reference": mismatched == 0,
        "mismatched_samples": mismatched,
        "arena_bytes": model.arena_bytes,
    }


def format_report(result: dict[str, Any]) -> str:
    """The validation result as a small table."""
    rows = [
        ("samples", str(result["samples"])),
        ("float accuracy (PyTorch)", f"{100 * result['float_accuracy']:.2f}%"),
        ("int8 accuracy (C on host)", f"{100 * result['int8_accuracy']:.2f}%"),
        ("accuracy drop", f"{result['accuracy_drop_points']:.2f} points"),
        ("C == numpy reference", "yes, byte for byte" if result["c_matches_reference"] else
         f"NO: {result['mismatched_samples']} samples differ"),
        ("arena", f"{result['arena_bytes']} bytes"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
