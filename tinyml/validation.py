"""Validation of a build: the generated C, run on the host, against PyTorch and the numpy oracle.

Reports the float model's accuracy (PyTorch), the int8 model's accuracy measured through the
C code, and whether the C output equals the numpy reference byte for byte on every sample.

An int8 output has 256 levels, so two classes often share the maximum (a softmax output saturates
at 127; on DS-CNN 31 of 100 samples tie). `int8_accuracy` gives a tie to the first maximum, as
`argmax` on the board does; the ties are counted apart, with the accuracy bounds they imply
(every tie wrong, every tie right when the label is among the tied classes), so a drop caused by
ties is not mistaken for a quantization error.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tinyml.compiler import VALIDATION_FILE, load_graph
from tinyml.errors import BuildFolderError, TinymlError
from tinyml.host import load_model
from tinyml.reference import run_int8


def validate(build_dir: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Run the build's held-out data through C and the reference; accuracies, ties and byte equality."""
    build_dir = Path(build_dir)
    graph = load_graph(build_dir)
    x, y, float_pred = _load_validation(build_dir)
    if limit is not None:
        x, y, float_pred = x[:limit], y[:limit], float_pred[:limit]
    from tinyml.frontend import nchw_to_graph

    model = load_model(build_dir)
    xq = model.quantize(nchw_to_graph(x))
    c_out = model(xq)
    ref_out = run_int8(graph, xq)[graph.outputs[0]].reshape(len(x), -1)
    mismatched = int(np.sum(np.any(c_out != ref_out, axis=1)))
    float_acc = float(np.mean(float_pred.reshape(len(x), -1).argmax(1) == y))
    ties = count_ties(c_out, y)
    return {
        "build_dir": str(build_dir),
        "samples": len(x),
        "float_accuracy": float_acc,
        "int8_accuracy": ties["first_maximum"],
        "accuracy_drop_points": round(100.0 * (float_acc - ties["first_maximum"]), 3),
        "tied_samples": ties["tied"],
        "tied_samples_with_label_among_maxima": ties["tied_with_label"],
        "int8_accuracy_ties_wrong": ties["ties_wrong"],
        "int8_accuracy_ties_right": ties["ties_right"],
        "c_matches_reference": mismatched == 0,
        "mismatched_samples": mismatched,
        "arena_bytes": model.arena_bytes,
    }


def count_ties(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy of int8 `outputs` (N, classes) against `labels` three ways, and how many samples tie.

    `first_maximum`: the first of the tied classes wins (numpy's and the board's argmax);
    `ties_wrong`: a sample whose maximum is shared is never right; `ties_right`: it is right when
    its label is one of the classes sharing the maximum.
    """
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    labels = np.asarray(labels).reshape(-1)
    if len(outputs) == 0:
        return {"first_maximum": 0.0, "ties_wrong": 0.0, "ties_right": 0.0, "tied": 0, "tied_with_label": 0}
    at_max = outputs == outputs.max(axis=1, keepdims=True)
    tied = at_max.sum(axis=1) > 1
    known = (labels >= 0) & (labels < outputs.shape[1])  # a label no class has is never right
    label_at_max = known & at_max[np.arange(len(labels)), np.where(known, labels, 0)]
    return {
        "first_maximum": float(np.mean(outputs.argmax(axis=1) == labels)),
        "ties_wrong": float(np.mean(label_at_max & ~tied)),
        "ties_right": float(np.mean(label_at_max)),
        "tied": int(tied.sum()),
        "tied_with_label": int((tied & label_at_max).sum()),
    }


def _load_validation(build_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, labels and the float model's outputs kept in the build, with a clear error when missing or damaged."""
    data_path = build_dir / VALIDATION_FILE
    if not data_path.exists():
        raise TinymlError(
            f'{build_dir} has no validation data: compile with `[data] validation = "val.npz"` in the recipe '
            "(an .npz with inputs `x` and integer labels `y`) or use a bundled example."
        )
    try:
        with np.load(data_path, allow_pickle=False) as data:
            return data["x"], data["y"].astype(np.int64), data["float_pred"]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise BuildFolderError(
            f"{data_path} is damaged or not what tinyml wrote ({err}); compile the model again with `tinyml compile`."
        ) from err


def format_report(result: dict[str, Any]) -> str:
    """The validation result as a small table."""
    samples, tied = result["samples"], result["tied_samples"]
    with_label = result["tied_samples_with_label_among_maxima"]
    rows = [
        ("samples", str(samples)),
        ("float accuracy (PyTorch)", f"{100 * result['float_accuracy']:.2f}%"),
        ("int8 accuracy (C on host)", f"{100 * result['int8_accuracy']:.2f}%"
         + (" (a tie goes to the first class)" if tied else "")),
        ("accuracy drop", f"{result['accuracy_drop_points']:.2f} points"),
        ("tied int8 maxima", f"{tied} of {samples} samples ({with_label} with the label among the tied classes)"
         if tied else "none"),
        *([("int8 accuracy, ties wrong / right", f"{100 * result['int8_accuracy_ties_wrong']:.2f}% / "
            f"{100 * result['int8_accuracy_ties_right']:.2f}%")] if tied else []),
        ("C == numpy reference", "yes, byte for byte" if result["c_matches_reference"] else
         f"NO: {result['mismatched_samples']} samples differ"),
        ("arena", f"{result['arena_bytes']} bytes"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
