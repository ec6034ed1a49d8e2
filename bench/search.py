"""Architecture search under RAM limits that bind, measured on the device.

    .venv/bin/python bench/search.py [--json] [--board stm32] [--trials N] [--seed S] [--trainings N]
        [--epochs E] [--finalists N] [--folds K]

On the digits example: first a search with the board's whole RAM (its chosen model is "the best
unconstrained model"); then, for two RAM limits below that model's peak RAM, a search under the
limit. The limits lie halfway and a quarter of the way from the smallest candidate's peak RAM (the
least any candidate of the space needs) to the unconstrained model's, so both bind and both leave
candidates to choose from. Each chosen model is trained in full, built for the board with the
whole held-out split compiled in and run in QEMU: its accuracy is the argmax of the board's int8
outputs, its measured peak RAM the arena and input/output buffers in the ELF plus
the stack high-water QEMU saw. The hand-made baseline for a limit is the bundled digits CNN
(conv, pool, conv, strided conv, linear) at the widest width that fits the same limit, trained
as long and measured the same way.

One full training moves the held-out accuracy of these small models by about a point, as much as
the architectures differ; so the chosen model and the baseline are each trained `--trainings`
times (seeds S, S+1, ...; the first is the search's own written winner), every training is
measured on the board, and `accuracy` / `baseline_accuracy` are the means. Progress goes to
stderr, so `--json` prints only the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import tinyml
from tinyml.board.boards import resolve_board
from tinyml.board.project import build_firmware, default_test_inputs, model_sizes
from tinyml.board.qemu import run_firmware
from tinyml.board.size import size_report
from tinyml.compiler import write_build
from tinyml_plugins.search.config import SearchConfig
from tinyml_plugins.search.cost import build_cost, candidate_cost
from tinyml_plugins.search.results import calibration_draw, write_winner
from tinyml_plugins.search.space import build_model, smallest_candidates
from tinyml_plugins.search.study import SearchData, load_data, run_search
from tinyml_plugins.search.training import fit, resize

SETTINGS = {"trials": 80, "epochs": 8, "final_epochs": 40, "finalists": 6, "workers": 2, "population": 10,
            "space": {"resolutions": [8, 12]}}  # fmt: skip
TRAININGS = 3  # full trainings of the chosen model and of the baseline, each measured on the board
LIMIT_SHARES = (0.5, 0.25)  # of the way from the smallest candidate's peak RAM to the unconstrained winner's
BASELINE_WIDTHS = (16, 12, 8, 6, 4, 2)  # the bundled CNN has 16


def log(message: str) -> None:
    print(f"[search] {message}", file=sys.stderr, flush=True)


def baseline_model(width: int) -> nn.Module:
    """The bundled digits CNN with `width` channels in its first conv (2 x width after)."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, width, 3, padding=1, bias=False), bn1=nn.BatchNorm2d(width), relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), bn2=nn.BatchNorm2d(2 * width),
            relu2=nn.ReLU(),
            conv3=nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2), relu3=nn.ReLU(),
            flatten=nn.Flatten(), classifier=nn.Linear(2 * width * 2 * 2, 10),
        )
    )  # fmt: skip


def measure_on_board(model_dir: Path, board_name: str, y_test: np.ndarray, scratch: Path) -> dict[str, Any]:
    """Build the compiled model with the whole held-out split compiled in, run it in QEMU."""
    board = resolve_board(board_name)
    inputs = default_test_inputs(model_dir, len(y_test))
    out = build_firmware(model_dir, board, scratch / f"{model_dir.name}-fw", inputs).out_dir
    run = run_firmware(out, timeout=900)
    size = size_report(out)
    sizes = model_sizes(model_dir)
    io_bytes = sizes["input_size"] + sizes["output_size"]
    return {
        "accuracy": float((run.outputs.astype(np.int16).argmax(1) == y_test).mean()),
        "outputs_match_reference": bool(run.outputs_match_reference),
        "measured_peak_ram": size.arena_bytes + io_bytes + run.stack_bytes,
        "arena_bytes": size.arena_bytes,
        "io_bytes": io_bytes,
        "stack_bytes": run.stack_bytes,
        "static_ram_plus_stack": size.ram_bytes + run.stack_bytes,
        "elf_flash_bytes": size.flash_bytes - inputs.size,
        "instructions": int(round(float(np.mean(run.instructions)))),
    }


def measure_training(make: Callable[[], nn.Module], resolution: int, seed: int, config: SearchConfig,
                     data: SearchData, scratch: Path, tag: str) -> dict[str, Any]:  # fmt: skip
    """One full training of `make()` (seeded, on the training and validation data at `resolution`), compiled
    as the search writes its winner (same calibration draw), built and run on the board."""
    x_all = np.concatenate([data.x_train, data.x_val])
    y_all = np.concatenate([data.y_train, data.y_val])
    torch.manual_seed(seed)
    torch.set_num_threads(config.workers)
    model = fit(make(), resize(x_all, resolution), y_all, config.final_epochs, seed)
    calibration = calibration_draw(x_all, resolution, config.seed)
    x_test = resize(data.x_test, resolution)
    build = tinyml.compile(model, calibration, board=resolve_board(config.board), progress=False)
    with torch.no_grad():
        float_pred = model(torch.from_numpy(x_test)).numpy()
    model_dir = scratch / f"{tag}-seed{seed}"
    write_build(build, model_dir, (x_test, data.y_test), float_pred)
    return measure_on_board(model_dir, config.board, data.y_test, scratch)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Several trainings' device rows as one: mean accuracy, per-training accuracies, the highest RAM."""
    accuracies = [r["accuracy"] for r in rows]
    return {
        **max(rows, key=lambda r: r["measured_peak_ram"]),
        "accuracy": float(np.mean(accuracies)),
        "accuracy_per_training": accuracies,
        "outputs_match_reference": all(r["outputs_match_reference"] for r in rows),
    }


def baseline(limit: int, config: SearchConfig, data: SearchData, probe: Any, scratch: Path,
             trainings: int) -> dict[str, Any]:  # fmt: skip
    """The widest bundled-CNN baseline whose peak RAM (same planner, same probe) fits `limit`, trained
    `trainings` times and measured."""
    board = resolve_board(config.board)
    calibration = data.x_train[:256]
    for width in BASELINE_WIDTHS:
        torch.manual_seed(config.seed)
        cost = build_cost(tinyml.compile(baseline_model(width).eval(), calibration, board=board, progress=False),
                          probe)  # fmt: skip
        if cost.peak_ram <= limit:
            break
    else:
        raise SystemExit(f"no baseline width fits {limit} bytes")
    rows = [measure_training(partial(baseline_model, width), data.x_train.shape[-1], config.seed + k, config, data,
                             scratch, f"baseline-{limit}") for k in range(trainings)]  # fmt: skip
    return {**summarize(rows), "width": width, "estimated_peak_ram": cost.peak_ram}


def smallest_peak_ram(result: Any) -> int:
    """The least peak RAM any candidate of the searched space needs, by the search's own estimate."""
    data = load_data(result.config)
    candidates = smallest_candidates(result.config.space, data.x_train.shape[1], data.classes)
    return min(candidate_cost(arch, result.board, result.probe).peak_ram for arch in candidates)


def search_under(limit: int | None, settings: dict[str, Any], scratch: Path, tag: str) -> tuple[Any, Any, float]:
    started = time.monotonic()
    config = SearchConfig(**settings, ram=limit)
    result = run_search(config, scratch / f"{tag}.journal")
    final = write_winner(result, load_data(config), scratch / tag)
    return result, final, time.monotonic() - started


def run_bench(settings: dict[str, Any], scratch: Path, trainings: int = TRAININGS) -> dict[str, Any]:
    started = time.monotonic()
    log("unconstrained search (the board's whole RAM)")
    free, free_final, free_seconds = search_under(None, settings, scratch, "unconstrained")
    best_ram = free_final.cost.peak_ram
    log(f"unconstrained: {free_final.candidate.architecture.label()}, {best_ram} B peak RAM, "
        f"{100 * free_final.accuracy:.2f}% (float) in {free_seconds:.0f} s")  # fmt: skip
    report: dict[str, Any] = {
        "board": free.board.name,
        "settings": settings,
        "trainings": trainings,
        "unconstrained": {"label": free_final.candidate.architecture.label(), "estimated_peak_ram": best_ram,
                          "float_accuracy": free_final.accuracy, "seconds": free_seconds},  # fmt: skip
        "limits": [],
    }
    smallest = smallest_peak_ram(free)
    if smallest >= best_ram:
        raise SystemExit(f"the unconstrained winner ({best_ram} B) is as small as the space's smallest candidate "
                         f"({smallest} B): no RAM limit can bind and leave a candidate")  # fmt: skip
    report["smallest_candidate_peak_ram"] = smallest
    for share in LIMIT_SHARES:
        limit = int(smallest + share * (best_ram - smallest))
        log(f"search under {limit} B of RAM")
        result, final, seconds = search_under(limit, settings, scratch, f"ram-{limit}")
        data = load_data(result.config)
        arch = final.candidate.architecture
        rows = [measure_on_board(final.out_dir, result.config.board, data.y_test, scratch)]
        rows += [measure_training(partial(build_model, arch), arch.resolution, result.config.seed + k, result.config,
                                  data, scratch, f"winner-{limit}") for k in range(1, trainings)]  # fmt: skip
        row = summarize(rows)
        base = baseline(limit, result.config, data, result.probe, scratch, trainings)
        entry = {
            "ram_limit": limit,
            "measured_peak_ram": row["measured_peak_ram"],
            "accuracy": row["accuracy"],
            "baseline_accuracy": base["accuracy"],
            "accuracy_per_training": row["accuracy_per_training"],
            "baseline_accuracy_per_training": base["accuracy_per_training"],
            "seconds": seconds,
            "binds": best_ram > limit,
            "winner": final.candidate.architecture.label(),
            "estimated_peak_ram": final.cost.peak_ram,
            "float_accuracy": final.accuracy,
            "winner_device": row,
            "baseline_width": base["width"],
            "baseline_measured_peak_ram": base["measured_peak_ram"],
            "baseline_device": base,
            "trials_trained": sum(c.fits for c in result.candidates),
            "trials_rejected": sum(not c.fits for c in result.candidates),
        }
        log(f"{limit} B: {entry['winner']} {100 * entry['accuracy']:.2f}% on the board, measured "
            f"{entry['measured_peak_ram']} B; baseline width {base['width']} {100 * base['accuracy']:.2f}% "
            f"({seconds:.0f} s)")  # fmt: skip
        report["limits"].append(entry)
    report["seconds"] = time.monotonic() - started
    return report


def print_tables(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Search under RAM limits on {report['board']} (digits, held-out split, measured in QEMU)")
    n = report["trainings"]
    columns = ("RAM limit", "winner", "measured peak RAM", "(est.)", f"accuracy (mean of {n})", "per training",
               f"baseline (mean of {n})", "per training", "baseline RAM", "trained/rejected", "seconds")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "winner" else "right")
    for e in report["limits"]:
        table.add_row(
            f"{e['ram_limit']:,}", e["winner"], f"{e['measured_peak_ram']:,}", f"{e['estimated_peak_ram']:,}",
            f"{100 * e['accuracy']:.2f}%", " ".join(f"{100 * a:.1f}" for a in e["accuracy_per_training"]),
            f"{100 * e['baseline_accuracy']:.2f}% (w{e['baseline_width']})",
            " ".join(f"{100 * a:.1f}" for a in e["baseline_accuracy_per_training"]),
            f"{e['baseline_measured_peak_ram']:,}", f"{e['trials_trained']}/{e['trials_rejected']}",
            f"{e['seconds']:.0f}",
        )  # fmt: skip
    console.print(table)
    u = report["unconstrained"]
    console.print(f"unconstrained winner: {u['label']}, {u['estimated_peak_ram']:,} B peak RAM, "
                  f"{100 * u['float_accuracy']:.2f}% (float); whole bench {report['seconds']:.0f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--board", default="stm32", help="board to search for and run on")
    parser.add_argument("--trials", type=int, default=SETTINGS["trials"], help="candidates trained per search")
    parser.add_argument("--seed", type=int, default=0, help="seed of the searches, trainings and baselines")
    parser.add_argument("--trainings", type=int, default=TRAININGS,
                        help="full trainings of the chosen model and of the baseline, each measured on the board")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"], help="epochs of a candidate's short training")
    parser.add_argument("--finalists", type=int, default=SETTINGS["finalists"], help="candidates cross-validated")
    parser.add_argument("--folds", type=int, default=SearchConfig.model_fields["finalist_folds"].default,
                        help="folds of the finalists' cross-validation")
    args = parser.parse_args(argv)
    settings = {**SETTINGS, "board": args.board, "trials": args.trials, "seed": args.seed, "epochs": args.epochs,
                "finalists": args.finalists, "finalist_folds": args.folds}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tinyml-search-bench-") as tmp:
        report = run_bench(settings, Path(tmp), args.trainings)
    log(f"done in {report['seconds']:.0f} s")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_tables(report, Console(width=160))


if __name__ == "__main__":
    main()
