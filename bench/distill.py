"""Knowledge distillation on the device: a tiny digits CNN trained alone against distilled from the digits CNN.

    .venv/bin/python bench/distill.py [--json] [--seeds 5] [--board stm32] [--inputs N]
        [--student cnn|mlp] [--hidden 16[,16]] [--temperature T] [--alpha A] [--epochs E]
        [--alone-epochs E] [--select [--select-seeds 3]]

The teacher is the bundled `digits` CNN (its trained weights saved to a state_dict and given to
`distill` as `teacher` / `teacher_weights`, as a recipe would). The student is a capacity-limited
CNN, or with `--student mlp` a perceptron with `--hidden` units per hidden layer; either way its
int8 weights (measured on the compiled int8 graph) stay within 2 KB. For every seed the student
starts from the same initialization and is trained twice with the same loop, epochs, optimizer
and batch order: alone (`distill` with alpha = 0, the hard labels only) and distilled
(alpha > 0). Each of the trained students is compiled to int8 (`quantize-int8`), built for the
board with the whole held-out split compiled in, and run in QEMU: the int8 accuracy is the argmax
of the board's outputs (checked byte for byte against the numpy reference). Progress goes to
stderr, so `--json` prints only the JSON.

`--select` chooses the student and the schedules without looking at the held-out split: it holds
out a validation fifth of the training split, trains every student of `SELECTION_STUDENTS` in
float on the other four fifths, alone for each of `SELECTION_EPOCHS` and distilled for each
temperature/alpha of `SELECTION_SOFT` and each epoch count, over `--select-seeds` seeds, and keeps
the student whose best distilled schedule beats its best alone schedule by the most on the
validation fifth. The bench then runs that student with the two schedules found, each trained on
the whole training split and measured on the held-out split as above.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import tinyml
from tinyml.examples import Example, digits, get_example
from tinyml.technique import Context
from tinyml_plugins.distill import Distill

WEIGHT_LIMIT = 2048  # bytes of int8 weights the student may have
# Chosen with short float-only runs on the digits split (T = 2, alpha = 0.5 did better than T = 4, alpha = 0.9
# for this student); long enough that the student alone has converged.
DISTILL = {"epochs": 200, "lr": 1e-2, "temperature": 2.0, "alpha": 0.5, "batch_size": 64}


# What `--select` tries, every one scored on a validation fifth of the training split, never on the held-out split.
# (student, hidden layers): the CNN has none to choose
SELECTION_STUDENTS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("cnn", ()), ("mlp", (10,)), ("mlp", (16,)), ("mlp", (24,)), ("mlp", (10, 10)), ("mlp", (16, 16)),
)  # fmt: skip
SELECTION_SOFT = ((2.0, 0.5), (4.0, 0.9))  # (temperature, alpha) of the distilled student
SELECTION_EPOCHS = (50, 100, 200)
VALIDATION_FRACTION = 0.2


def make_student() -> nn.Module:
    """conv 1->4 3x3, max pool, conv 4->8 3x3 stride 2, linear 32->10: 644 weights, capacity-limited on digits."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(4, 8, 3, padding=1, stride=2),
            relu2=nn.ReLU(),
            flatten=nn.Flatten(),
            classifier=nn.Linear(8 * 2 * 2, 10),
        )
    )


def make_mlp_student(hidden: tuple[int, ...] = (16,)) -> nn.Module:
    """A perceptron on the 64 pixels: linear layers of `hidden` units with ReLU, then linear to 10 classes."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = 64
    for i, units in enumerate(hidden):
        layers[f"hidden{i}"] = nn.Linear(width, units)
        layers[f"relu{i}"] = nn.ReLU()
        width = units
    layers["classifier"] = nn.Linear(width, 10)
    return nn.Sequential(layers)


@dataclass
class BenchConfig:
    """What to measure; the defaults are the published run, a test shrinks them."""

    seeds: int = 5
    board: str | None = "stm32"  # None: no firmware; the int8 accuracy is the generated C's on the host
    inputs: int | None = None  # held-out inputs to run (None: the whole split)
    distill: dict[str, Any] | None = None  # options of `distill` (default: DISTILL)
    student: str = "cnn"  # "cnn" (make_student) or "mlp" (make_mlp_student)
    hidden: tuple[int, ...] = (16,)  # the perceptron's hidden layers
    alone_epochs: int | None = None  # epochs of the student trained alone (None: the distilled student's)

    def make_student(self) -> nn.Module:
        return make_student() if self.student == "cnn" else make_mlp_student(self.hidden)

    @property
    def student_label(self) -> str:
        return self.student if self.student == "cnn" else f"mlp 64-{'-'.join(map(str, self.hidden))}-10"


def log(message: str) -> None:
    print(f"[distill] {message}", file=sys.stderr, flush=True)


def int8_weight_bytes(build: tinyml.compiler.Build) -> int:
    """Bytes of the int8 weights in the compiled graph (biases, int32, left out)."""
    graph = build.graph
    names = {name for node in graph.nodes for name in node.inputs[1:2] if graph.tensors[name].is_constant}
    return sum(graph.tensors[name].nbytes for name in names if graph.tensors[name].dtype == "int8")


def device_accuracy(
    model: nn.Module, example: Example, config: BenchConfig, scratch: Path, slug: str
) -> tuple[float, bool, int]:
    """int8 accuracy of `model` over the held-out split on the board (or the host C), whether its outputs
    match the numpy reference, and its int8 weight bytes."""
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware, default_test_inputs
    from tinyml.board.qemu import run_firmware

    count = len(example.x_test) if config.inputs is None else min(config.inputs, len(example.x_test))
    x_test, y_test = example.x_test[:count], example.y_test[:count]
    board = None if config.board is None else resolve_board(config.board)
    build = tinyml.compile(
        model, example.calibration, ["quantize-int8"], board=board, out_dir=scratch / slug,
        validation=(x_test, y_test), progress=False,
    )  # fmt: skip
    weights = int8_weight_bytes(build)
    if board is None:
        result = tinyml.validate(scratch / slug)
        return result["int8_accuracy"], result["c_matches_reference"], weights
    inputs = default_test_inputs(scratch / slug, count)
    run = run_firmware(build_firmware(scratch / slug, board, scratch / f"{slug}-{board.name}", inputs).out_dir)
    predicted = run.outputs.astype(np.int16).argmax(1)
    return float((predicted == y_test).mean()), run.outputs_match_reference, weights


@dataclass(frozen=True)
class Schedule:
    """One way to train a student: alone (alpha = 0) or distilled with a temperature and alpha, for some epochs."""

    epochs: int
    temperature: float = DISTILL["temperature"]
    alpha: float = 0.0

    @property
    def label(self) -> str:
        soft = "alone" if self.alpha == 0.0 else f"T {self.temperature:g} alpha {self.alpha:g}"
        return f"{soft}, {self.epochs} epochs"


def selection_schedules() -> list[Schedule]:
    alone = [Schedule(epochs) for epochs in SELECTION_EPOCHS]
    return alone + [Schedule(e, t, a) for t, a in SELECTION_SOFT for e in SELECTION_EPOCHS]


def select_student(seeds: int = 3, scratch: Path | None = None) -> dict[str, Any]:
    """Every student of SELECTION_STUDENTS under every schedule, in float, trained on four fifths of the training
    split and scored on the other fifth; the student whose best distilled schedule beats its best alone schedule
    by the most is chosen (with both schedules). The held-out split is not read."""
    from sklearn.model_selection import train_test_split

    example = get_example("digits")
    x_fit, x_val, y_fit, y_val = train_test_split(
        example.x_train, example.y_train, test_size=VALIDATION_FRACTION, random_state=0, stratify=example.y_train
    )
    context = Context(train_data=(x_fit, y_fit))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyml-distill-select-") as tmp:
        teacher = save_teacher(example, Path(scratch or tmp))
        for student, hidden in SELECTION_STUDENTS:
            config = BenchConfig(student=student, hidden=hidden)
            for schedule in selection_schedules():
                started = time.monotonic()
                scores = []
                for seed in range(seeds):
                    torch.manual_seed(seed)
                    options = {**DISTILL, **teacher, "epochs": schedule.epochs, "temperature": schedule.temperature}
                    distill = Distill({**options, "alpha": schedule.alpha, "seed": seed})
                    scores.append(digits.accuracy(distill.apply(config.make_student(), context), x_val, y_val))
                rows.append(
                    {"student": config.student_label, "hidden": list(config.hidden), "kind": config.student,
                     "schedule": schedule.label, "epochs": schedule.epochs, "temperature": schedule.temperature,
                     "alpha": schedule.alpha, "validation_mean": statistics.fmean(scores), "per_seed": scores}
                )  # fmt: skip
                log(
                    f"select {config.student_label}, {schedule.label}: validation "
                    f"{100 * statistics.fmean(scores):.2f}% ({time.monotonic() - started:.0f} s)"
                )
    best = best_schedules(rows)
    label = max(best, key=lambda student: best[student]["gain"])
    alone, distilled = best[label]["alone"], best[label]["distilled"]
    chosen = {"student": label, "kind": alone["kind"], "hidden": alone["hidden"], "alone_epochs": alone["epochs"]}
    chosen |= {key: distilled[key] for key in ("epochs", "temperature", "alpha")}
    chosen["validation_gain_points"] = 100 * best[label]["gain"]
    return {"validation_samples": len(x_val), "seeds": seeds, "rows": rows, "chosen": chosen}


def best_schedules(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per student (in the rows' order): its best `alone` and best `distilled` row on the validation split, and
    the `gain` of the one over the other."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        arm = "alone" if row["alpha"] == 0.0 else "distilled"
        kept = best.setdefault(row["student"], {}).get(arm)
        if kept is None or row["validation_mean"] > kept["validation_mean"]:
            best[row["student"]][arm] = row
    for arms in best.values():
        arms["gain"] = arms["distilled"]["validation_mean"] - arms["alone"]["validation_mean"]
    return best


def save_teacher(example: Example, scratch: Path) -> dict[str, str]:
    """`distill`'s teacher options for the bundled digits CNN, its trained weights saved under `scratch`."""
    teacher_weights = scratch / "teacher.pt"
    torch.save(example.model.state_dict(), teacher_weights)
    return {"teacher": f"{digits.__file__}:make_model", "teacher_weights": str(teacher_weights)}


def run_bench(config: BenchConfig, scratch: Path | None = None) -> dict[str, Any]:
    """Every measurement of the bench as plain JSON-ready values (see the module docstring)."""
    example = get_example("digits")
    options = dict(config.distill or DISTILL)
    context = Context(train_data=(example.x_train, example.y_train))
    runs: dict[str, dict[str, list]] = {
        kind: {"float": [], "int8": [], "matches_reference": []} for kind in ("alone", "distilled")
    }
    weights = None
    with tempfile.TemporaryDirectory(prefix="tinyml-distill-") as tmp:
        scratch = Path(scratch or tmp)
        teacher = save_teacher(example, scratch)
        for seed in range(config.seeds):
            alone = {**options, "alpha": 0.0, "epochs": config.alone_epochs or options["epochs"]}
            for kind, kind_options in (("alone", alone), ("distilled", options)):
                started = time.monotonic()
                torch.manual_seed(seed)
                distill = Distill({**kind_options, **teacher, "seed": seed})
                student = distill.apply(config.make_student(), context)
                float_acc = digits.accuracy(student, example.x_test, example.y_test)
                int8_acc, matches, weights = device_accuracy(student, example, config, scratch, f"{kind}-{seed}")
                runs[kind]["float"].append(float_acc)
                runs[kind]["int8"].append(int8_acc)
                runs[kind]["matches_reference"].append(matches)
                log(
                    f"seed {seed} {kind}: float {100 * float_acc:.2f}%, int8 on {config.board or 'host'} "
                    f"{100 * int8_acc:.2f}% ({time.monotonic() - started:.0f} s)"
                )
    report: dict[str, Any] = {
        "board": config.board,
        "samples": len(example.x_test) if config.inputs is None else min(config.inputs, len(example.x_test)),
        "seeds": config.seeds,
        "student": config.student_label,
        "options": options,
        "alone_epochs": config.alone_epochs or options["epochs"],
        "student_int8_weight_bytes": weights,
        "student_within_limit": weights is not None and weights <= WEIGHT_LIMIT,
        "teacher_float_accuracy": digits.accuracy(example.model, example.x_test, example.y_test),
        "outputs_match_reference": all(all(r["matches_reference"]) for r in runs.values()),
    }
    for kind, key in (("alone", "student_alone"), ("distilled", "distilled")):
        for measure in ("int8", "float"):
            values = runs[kind][measure]
            suffix = "" if measure == "int8" else "_float"
            report[f"{key}{suffix}_mean"] = statistics.fmean(values)
            report[f"{key}{suffix}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            report[f"{key}_{measure}_per_seed"] = values
    report["gain_points"] = 100 * (report["distilled_mean"] - report["student_alone_mean"])
    report["gain_points_float"] = 100 * (report["distilled_float_mean"] - report["student_alone_float_mean"])
    return report


def print_table(report: dict[str, Any], console: Console) -> None:
    board = report["board"] or "host C"
    table = Table(
        title=f"Student {report['student']} ({report['student_int8_weight_bytes']} B of int8 weights) alone against "
        f"distilled from the digits CNN ({100 * report['teacher_float_accuracy']:.2f}%), {report['seeds']} seeds, "
        f"{report['samples']} held-out images"
    )
    for col in ("student", "float mean", "float std", f"int8 on {board} mean", "int8 std", "int8 per seed"):
        table.add_column(col, justify="left" if col == "student" else "right")
    for label, key in (("alone", "student_alone"), ("distilled", "distilled")):
        table.add_row(
            label, f"{100 * report[f'{key}_float_mean']:.2f}%", f"{100 * report[f'{key}_float_std']:.2f}",
            f"{100 * report[f'{key}_mean']:.2f}%", f"{100 * report[f'{key}_std']:.2f}",
            " ".join(f"{100 * v:.1f}" for v in report[f"{key}_int8_per_seed"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"distilled - alone: {report['gain_points']:+.2f} points int8, {report['gain_points_float']:+.2f} float; "
        f"outputs match the reference: {'yes' if report['outputs_match_reference'] else 'NO'}"
    )


def print_selection(selection: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"Choosing the student on a validation split ({selection['validation_samples']} images of the training "
        f"split, float, {selection['seeds']} seeds; the held-out split is not read)"
    )
    for col in ("student", "best alone", "validation", "best distilled", "validation", "gain"):
        table.add_column(col, justify="left" if col in ("student", "best alone", "best distilled") else "right")
    for student, best in best_schedules(selection["rows"]).items():
        alone, distilled = best["alone"], best["distilled"]
        table.add_row(
            student, alone["schedule"], f"{100 * alone['validation_mean']:.2f}%", distilled["schedule"],
            f"{100 * distilled['validation_mean']:.2f}%", f"{100 * best['gain']:+.2f}",
        )  # fmt: skip
    console.print(table)
    chosen = selection["chosen"]
    console.print(
        f"chosen: {chosen['student']}, alone for {chosen['alone_epochs']} epochs against distilled with "
        f"T {chosen['temperature']:g}, alpha {chosen['alpha']:g} for {chosen['epochs']} epochs "
        f"({chosen['validation_gain_points']:+.2f} points on the validation split)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (students trained per kind)")
    parser.add_argument("--board", default="stm32", help="board to run on; 'host' runs the C on this machine")
    parser.add_argument("--inputs", type=int, default=None, help="held-out inputs to run (default: all)")
    parser.add_argument("--student", choices=("cnn", "mlp"), default="cnn", help="the student model")
    parser.add_argument("--hidden", default="16", help="the mlp student's hidden layer widths, comma-separated")
    parser.add_argument("--temperature", type=float, default=DISTILL["temperature"], help="distill's temperature")
    parser.add_argument("--alpha", type=float, default=DISTILL["alpha"], help="distill's weight of the soft loss")
    parser.add_argument("--epochs", type=int, default=DISTILL["epochs"], help="epochs of the distilled training")
    parser.add_argument(
        "--alone-epochs", type=int, default=None, help="epochs of the training alone (default: --epochs)"
    )
    parser.add_argument(
        "--select", action="store_true",
        help="choose the student, temperature, alpha and both epoch counts on a validation split first "
        "(overrides --student, --hidden, --temperature, --alpha, --epochs and --alone-epochs)",
    )  # fmt: skip
    parser.add_argument("--select-seeds", type=int, default=3, help="seeds per student and schedule in --select")
    args = parser.parse_args(argv)
    config = BenchConfig(
        seeds=args.seeds, board=None if args.board == "host" else args.board, inputs=args.inputs,
        distill={**DISTILL, "temperature": args.temperature, "alpha": args.alpha, "epochs": args.epochs},
        student=args.student, hidden=tuple(int(h) for h in args.hidden.split(",")), alone_epochs=args.alone_epochs,
    )  # fmt: skip
    started = time.monotonic()
    selection = None
    if args.select:
        selection = select_student(args.select_seeds)
        chosen = selection["chosen"]
        config = replace(
            config, student=chosen["kind"], hidden=tuple(chosen["hidden"]), alone_epochs=chosen["alone_epochs"],
            distill={**DISTILL, **{key: chosen[key] for key in ("temperature", "alpha", "epochs")}},
        )  # fmt: skip
    report = run_bench(config)
    if selection is not None:
        report["selection"] = selection
    log(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    console = Console(width=160)
    if selection is not None:
        print_selection(selection, console)
    print_table(report, console)


if __name__ == "__main__":
    main()
