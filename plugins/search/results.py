"""What a search leaves: the table of candidates, the Pareto plot, and the chosen model trained in full.

The output folder is the chosen model compiled for the board (a `tinyml compile` folder: `tinyml
validate` and `tinyml report` read it) with, beside the C, what the search found::

    winner.py      the model factory (``make_model``), for `tinyml build --model winner.py:make_model`
    winner.pt      its trained weights (a state_dict), for ``--weights``
    calib.npz      calibration inputs at the model's resolution, for ``--calib``
    val.npz        the held-out split at that resolution, for ``--val``
    tinyml.toml    a recipe naming the four: ``tinyml build --board NAME --recipe <folder>/tinyml.toml``
    search.json    every candidate (cost, accuracy, Pareto front), the limits, the chosen one
    pareto.png     accuracy against MACs or instructions

The folder follows `tinyml.staging`: written complete or not at all, and never over a user's folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyml_plugins.search.cost import Cost, build_cost
from tinyml_plugins.search.training import accuracy, resize, train

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

    from tinyml_plugins.search.study import Candidate, SearchData, SearchResult

CALIBRATION_SAMPLES = 256
FACTORY = '''"""The model `tinyml search` chose: {label}.

Build it: tinyml build --board {board} --recipe {recipe}
"""

from tinyml_plugins.search.space import Architecture, build_model

ARCHITECTURE = {architecture}


def make_model():
    """The untrained module; load winner.pt into it."""
    return build_model(Architecture.from_dict(ARCHITECTURE))
'''
RECIPE = '''# Written by `tinyml search`: the chosen model, its weights and data at its input resolution.
board = "{board}"

[model]
factory = "winner.py:make_model"
weights = "winner.pt"

[data]
calibration = "calib.npz"
validation = "val.npz"
'''


@dataclass
class FinalModel:
    """The chosen candidate trained in full: its float accuracy on the test split and its int8 cost."""

    candidate: Candidate
    accuracy: float
    cost: Cost
    out_dir: Path


def _objective_label(objective: str) -> str:
    return "estimated instructions" if objective == "instructions" else "MACs"


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def results_table(result: SearchResult, limit: int = 25) -> Table:
    """The trained candidates, most accurate first (the chosen one marked), with their costs."""
    from rich.table import Table

    chosen = result.chosen.number
    table = Table(title=f"tinyml search on {result.board.name}: RAM <= {result.ram_limit:,} B, "
                        f"flash <= {result.flash_limit:,} B")  # fmt: skip
    for column in ("trial", "candidate", "MACs", "peak RAM (B)", "flash (B)", "est. instructions", "accuracy",
                   "in full", ""):  # fmt: skip
        table.add_column(column, justify="left" if column in ("candidate", "") else "right")
    trained = sorted((c for c in result.candidates if c.fits), key=lambda c: (-c.accuracy, c.cost.macs))
    for c in trained[:limit]:
        mark = "chosen" if c.number == chosen else ("pareto" if c.pareto else "")
        full = "" if c.final is None else f"{100 * c.final[0]:.1f}% ({c.final[1]:.3f})"
        table.add_row(str(c.number), c.architecture.label(), _num(c.cost.macs), _num(c.cost.peak_ram),
                      _num(c.cost.flash), _num(c.cost.instructions), f"{100 * c.accuracy:.1f}%", full,
                      mark)  # fmt: skip
    rejected = sum(not c.fits for c in result.candidates)
    table.caption = (f"{len(trained)} trained ({result.config.epochs} epochs each), {rejected} rejected before "
                     "training (over a limit)" + (f"; the {limit} most accurate shown" if len(trained) > limit else "")
                     + f"; in full: the finalists' mean accuracy (cross-entropy) over {result.config.finalist_folds} "
                     f"cross-validation folds of {result.config.final_epochs} epochs")  # fmt: skip
    return table


def pareto_figure(result: SearchResult) -> Figure:
    """Accuracy against the objective: every trained candidate, the Pareto front, the chosen one."""
    from matplotlib.figure import Figure

    objective = result.config.objective
    trained = [c for c in result.candidates if c.fits]
    front = sorted((c for c in trained if c.pareto), key=lambda c: _x(c.cost, objective))
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    ax.scatter([_x(c.cost, objective) for c in trained], [100 * c.accuracy for c in trained], s=18, color="#9aa7b6",
               label="trained candidates")  # fmt: skip
    ax.step([_x(c.cost, objective) for c in front], [100 * c.accuracy for c in front], where="post", color="#2f6fb3",
            marker="o", label="Pareto front")  # fmt: skip
    chosen = result.chosen
    ax.scatter([_x(chosen.cost, objective)], [100 * chosen.accuracy], marker="*", s=220, color="#d9822b", zorder=3,
               label=f"chosen: {chosen.architecture.label()}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(_objective_label(objective) + " per inference")
    ax.set_ylabel(f"validation accuracy after {result.config.epochs} epochs (%)")
    ax.set_title(f"{result.board.name}, RAM <= {result.ram_limit:,} B, flash <= {result.flash_limit:,} B", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _x(cost: Cost, objective: str) -> int:
    from tinyml_plugins.search.study import objective_value

    return objective_value(cost, objective)


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def report_section(result: SearchResult, final: dict[str, Any], png: bytes) -> dict[str, str]:
    """The search's part of report.html: the limits, the chosen model, the Pareto plot, the candidates."""
    e = html.escape
    chosen = result.chosen
    rows = []
    for c in sorted((c for c in result.candidates if c.fits), key=lambda c: (-c.accuracy, c.cost.macs)):
        mark = "chosen" if c is chosen else ("Pareto" if c.pareto else "")
        rows.append(
            f"<tr><td>{c.number}</td><td>{e(c.architecture.label())}</td><td>{_num(c.cost.macs)}</td>"
            f"<td>{_num(c.cost.peak_ram)}</td><td>{_num(c.cost.flash)}</td><td>{_num(c.cost.instructions)}</td>"
            f"<td>{100 * c.accuracy:.1f}%</td><td>{mark}</td></tr>"
        )
    rejected = sum(not c.fits for c in result.candidates)
    image = base64.b64encode(png).decode("ascii")
    body = (
        f"<p>{len(rows)} candidates trained, {rejected} rejected before training; limits RAM {result.ram_limit:,} B "
        f"and flash {result.flash_limit:,} B on {e(result.board.name)}. Chosen: <b>{e(chosen.architecture.label())}"
        f"</b>, test accuracy {100 * final['accuracy']:.2f}% after {result.config.final_epochs} epochs (float), "
        f"peak RAM {final['cost']['peak_ram']:,} B, flash {final['cost']['flash']:,} B.</p>"
        f'<figure><img alt="Pareto plot" src="data:image/png;base64,{image}"></figure>'
        "<table><thead><tr><th>trial</th><th>candidate</th><th>MACs</th><th>peak RAM (B)</th><th>flash (B)</th>"
        "<th>est. instructions</th><th>accuracy</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    return {"title": "Architecture search", "html": body}


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def candidate_summary(c: Candidate) -> dict[str, Any]:
    final = None if c.final is None else {"validation_accuracy": c.final[0], "validation_cross_entropy": c.final[1]}
    return {"trial": c.number, "label": c.architecture.label(), "architecture": c.architecture.as_dict(),
            "cost": c.cost.as_dict(), "accuracy": c.accuracy, "pareto": c.pareto, "finalist": final}  # fmt: skip


def calibration_draw(x: np.ndarray, resolution: int, seed: int) -> np.ndarray:
    """The chosen model's calibration inputs: `CALIBRATION_SAMPLES` of `x` drawn with `seed`, at `resolution`."""
    rng = np.random.default_rng(seed)
    return resize(x[rng.choice(len(x), size=min(CALIBRATION_SAMPLES, len(x)), replace=False)], resolution)


def write_winner(result: SearchResult, data: SearchData, out_dir: Path, progress: bool = True) -> FinalModel:
    """Train the chosen candidate in full, compile it for the board and write the output folder."""
    import torch

    import tinyml
    from tinyml.compiler import write_build
    from tinyml.progress import progress_bar
    from tinyml.report import ADDED_SECTIONS
    from tinyml.technique import silent_progress

    config, chosen = result.config, result.chosen
    arch = chosen.architecture
    x_all = np.concatenate([data.x_train, data.x_val])
    y_all = np.concatenate([data.y_train, data.y_val])
    bar = progress_bar if progress else silent_progress
    with bar(f"training {arch.label()}", config.final_epochs) as advance:
        model = train(arch, x_all, y_all, config.final_epochs, config.seed, advance)
    test_accuracy = accuracy(model, arch, data.x_test, data.y_test)
    calibration = calibration_draw(x_all, arch.resolution, config.seed)
    x_test = resize(data.x_test, arch.resolution)
    build = tinyml.compile(model, calibration, ["quantize-int8"], board=result.board, progress=False)
    cost = build_cost(build, result.probe)
    with torch.no_grad():
        float_pred = model(torch.from_numpy(x_test)).numpy()
    final = {"candidate": candidate_summary(chosen), "accuracy": test_accuracy, "cost": cost.as_dict(),
             "final_epochs": config.final_epochs}  # fmt: skip
    png = _png_bytes(pareto_figure(result))
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    recipe = out_dir / "tinyml.toml"
    summary = {
        "board": result.board.name,
        "ram_limit": result.ram_limit,
        "flash_limit": result.flash_limit,
        "objective": config.objective,
        "probe": {"stack_bytes": result.probe.stack_bytes, "code_bytes": result.probe.code_bytes,
                  "measured": result.probe.measured},  # fmt: skip
        "study": {"name": result.study_name, "journal": str(result.journal)},
        "settings": config.model_dump(),
        "chosen": final,
        "candidates": [candidate_summary(c) for c in result.candidates],
    }
    extra = {
        "winner.py": FACTORY.format(label=arch.label(), board=result.board.name, recipe=recipe,
                                    architecture=json.dumps(arch.as_dict(), indent=4)).encode(),  # fmt: skip
        "winner.pt": weights.getvalue(),
        "calib.npz": _npz(x=calibration),
        "val.npz": _npz(x=x_test, y=data.y_test),
        "tinyml.toml": RECIPE.format(board=result.board.name).encode(),
        "search.json": (json.dumps(summary, indent=1) + "\n").encode(),
        "pareto.png": png,
        ADDED_SECTIONS: json.dumps({"sections": [report_section(result, final, png)]}).encode(),
    }
    write_build(build, out_dir, (x_test, data.y_test), float_pred, extra)
    return FinalModel(chosen, test_accuracy, cost, out_dir)
