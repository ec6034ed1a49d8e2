"""Accuracy and size of the digits example under each int8 quantization setting, measured through the C code.

    .venv/bin/python bench/bench_quantization.py [--json]

Every int8 figure comes from the generated C compiled for this machine (cffi), on the held-out
split; the float figure from PyTorch on the same images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import tinyml
from tinyml.examples import get_example

SETTINGS = {
    "min/max PTQ": {},
    "percentile 99.99 PTQ": {"calibration": "percentile", "percentile": 99.99},
    "min/max + QAT 3 epochs": {"qat_epochs": 3},
}
# Calibration data a user might give by mistake: constant batches give no activation ranges, and
# quantize-int8 warns and takes the ranges from the weights instead (see its `guard_ranges`).
CALIBRATION = {
    "digits": None,
    "all zeros": 0.0,
    "all 0.5": 0.5,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    example = get_example("digits")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(label, options, "digits") for label, options in SETTINGS.items()]
        cases += [("min/max PTQ", {}, name) for name in CALIBRATION if CALIBRATION[name] is not None]
        for label, options, calibration_name in cases:
            out = Path(tmp) / f"{label}_{calibration_name}".replace(" ", "_").replace("/", "")
            value = CALIBRATION[calibration_name]
            calibration = example.calibration if value is None else np.full_like(example.calibration, value)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                build = tinyml.compile(
                    example.model,
                    calibration,
                    [("quantize-int8", options)],
                    out_dir=out,
                    validation=(example.x_test, example.y_test),
                    train_data=(example.x_train, example.y_train),
                    progress=not args.json,
                )
            result = tinyml.validate(out)
            rows.append(
                {
                    "setting": label,
                    "calibration": calibration_name,
                    "degenerate_range_warning": any("degenerate" in str(w.message) for w in caught),
                    "samples": result["samples"],
                    "float_accuracy": result["float_accuracy"],
                    "int8_accuracy": result["int8_accuracy"],
                    "c_matches_reference": result["c_matches_reference"],
                    "weight_bytes": build.generated.weight_bytes,
                    "arena_bytes": build.plan.arena_bytes,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="digits: int8 accuracy through the C code (held-out split)")
    columns = ("setting", "calibration", "warned", "samples", "float acc", "int8 acc (C)", "drop (pts)", "C == ref",
               "weights B", "arena B")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("setting", "calibration") else "right")
    for r in rows:
        table.add_row(
            r["setting"],
            r["calibration"],
            "yes" if r["degenerate_range_warning"] else "no",
            str(r["samples"]),
            f"{100 * r['float_accuracy']:.2f}%",
            f"{100 * r['int8_accuracy']:.2f}%",
            f"{100 * (r['float_accuracy'] - r['int8_accuracy']):.2f}",
            "yes" if r["c_matches_reference"] else "NO",
            str(r["weight_bytes"]),
            str(r["arena_bytes"]),
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
