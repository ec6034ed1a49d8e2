"""The pipeline, top to bottom: train-time techniques, export, graph techniques, C, build directory.

`compile` is the notebook entry point; `compile_from_recipe` is what `tinyml compile` and
`tinyml build` call. A build directory holds the generated C and what validation needs (the int8
graph as data, `graph.json` + `graph.npz` (see `tinyml.graphfile`), held-out data and the float
model's predictions on it), and `manifest.json` (see `tinyml.manifest`). It is written to a
temporary folder and moved into place only when complete.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyml import graphfile, plugins
from tinyml.codegen import GeneratedModel, describe_fused, generate
from tinyml.compression_report import compression_report
from tinyml.errors import CalibrationError, DataError, PluginError, RecipeError, TinymlError
from tinyml.ir import Graph
from tinyml.manifest import read_manifest, write_manifest
from tinyml.progress import progress_bar
from tinyml.report import write_compile_report
from tinyml.samples import check_labels, check_sample_shape, check_samples
from tinyml.staging import check_output_dir, output_path, staged_directory
from tinyml.technique import Context, Technique, silent_progress

if TYPE_CHECKING:
    import torch

    from tinyml.board.boards import Board
    from tinyml.planner import MemoryPlan
    from tinyml.recipe import Recipe

VALIDATION_FILE = "validation.npz"

TechniqueSpec = Technique | str | tuple[str, dict[str, Any]]


@dataclass
class Build:
    """A compiled model: its int8 graph, the generated C, and the directory it was written to."""

    out_dir: Path | None
    graph: Graph
    float_graph: Graph
    generated: GeneratedModel
    board: Board | None
    techniques: list[Technique]

    @property
    def plan(self) -> MemoryPlan:
        return self.generated.plan

    def layer_weight_bytes(self) -> dict[str, int]:
        """Flash taken by each layer's constants, by node name."""
        return {
            node.name: sum(self.generated.weights[n].nbytes for n in node.inputs if n in self.generated.weights)
            for node in self.graph.nodes
        }

    def summary(self) -> dict[str, Any]:
        """The figures of the build, for scripts (`tinyml compile --json`) and the build's manifest.json."""
        weights = self.layer_weight_bytes()
        compression = compression_report(self)
        per_layer = compression.by_layer()
        return {
            "board": self.board.name if self.board else None,
            "techniques": [{"name": t.name, "options": t.options.model_dump()} for t in self.techniques],
            "weight_bytes": self.generated.weight_bytes,
            "arena_bytes": self.plan.arena_bytes,
            "arena_lower_bound": self.plan.lower_bound,
            "arena_greedy_bytes": self.plan.greedy_bytes,
            "layers": [
                {
                    "name": n.name,
                    "op": n.op,
                    "kernel": self.generated.kernels[n.name].function,
                    "source": n.source,
                    "fused": describe_fused(n),
                    "weight_bytes": weights[n.name],
                    "compression": per_layer.get(n.name),
                }
                for n in self.graph.nodes
            ],
            "compression_total": compression.total.as_dict(),
        }

    def report(self) -> str:
        """Layers, kernels, weight and arena bytes, then each layer's weights against float32 and int8, as tables."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"tinyml build{f' -> {self.out_dir}' if self.out_dir else ''}")
        for col in ("#", "layer", "op", "kernel", "fused", "output", "weights (B)"):
            table.add_column(col, justify="right" if col in ("#", "weights (B)") else "left")
        weights = self.layer_weight_bytes()
        for i, node in enumerate(self.graph.nodes):
            out = self.graph.tensors[node.outputs[0]]
            kernel = self.generated.kernels[node.name].function
            fused = ", ".join(describe_fused(node))
            table.add_row(
                str(i), node.name, node.op, kernel, fused, "x".join(map(str, out.shape[1:])), str(weights[node.name])
            )
        console = Console(width=120, record=True, file=io.StringIO())
        console.print(table)
        compression = compression_report(self)
        if compression.layers:  # a model without constants (pooling only) has nothing to compress
            console.print(compression.table())
        console.print(f"techniques: {', '.join(t.name for t in self.techniques) or 'none'}")
        console.print(f"weights (flash): {self.generated.weight_bytes} bytes")
        console.print(self.plan.report())
        return console.export_text()


def resolve_techniques(specs: Sequence[TechniqueSpec]) -> list[Technique]:
    """Technique instances from instances, names, or (name, options) pairs."""
    available = plugins.techniques()
    result = []
    for spec in specs:
        if isinstance(spec, Technique):
            result.append(spec)
            continue
        name, options = (spec, {}) if isinstance(spec, str) else spec
        if name not in available:
            raise RecipeError(f"Unknown technique {name!r}. Available techniques: {', '.join(sorted(available))}.")
        result.append(available[name](options))
    return result


def compile(  # noqa: A001 - the verb users expect: tinyml.compile(model, data)
    model: torch.nn.Module,
    calibration_data: np.ndarray,
    techniques: Sequence[TechniqueSpec] = ("quantize-int8",),
    *,
    board: Board | None = None,
    out_dir: str | Path | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    train_data: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = True,
) -> Build:
    """Compile a PyTorch model to C.

    `calibration_data` is a batch of representative inputs in PyTorch layout (N, C, H, W) or
    (N, F), float32, finite. `validation` (inputs, labels) is kept in the build for `tinyml
    validate`; its inputs are shaped like the calibration samples and its labels index the model's
    outputs. `train_data` (inputs, labels) is what fine-tuning techniques get as `Context.train_data`.
    With `out_dir`, the C and the validation data are written there; it must be new, empty or an
    earlier tinyml build (`tinyml.staging`), so a folder of the user's is never replaced.
    """
    import torch

    from tinyml.frontend import from_torch, nchw_to_graph

    if out_dir is not None:
        check_output_dir(out_dir)  # before the work, so a refused folder costs no compile time
    calibration_data = check_samples(calibration_data, "calibration data", CalibrationError)
    if validation is not None:
        validation = _check_labelled(validation, calibration_data.shape[1:], "validation data")
    if train_data is not None:
        train_data = _check_labelled(train_data, calibration_data.shape[1:], "training data")
    chosen = resolve_techniques(techniques)
    pm = plugins.plugin_manager()
    context = Context(
        train_data=train_data,
        example_input=torch.from_numpy(calibration_data[:1]),
        board=board,
        progress=progress_bar if progress else silent_progress,
    )
    model = copy.deepcopy(model).eval()
    for technique in (t for t in chosen if t.stage == "train"):
        model = _apply_technique(technique, model, context, torch.nn.Module).eval()
    float_graph = from_torch(model, context.example_input)
    context.calibration = nchw_to_graph(calibration_data)
    graph = float_graph
    for technique in (t for t in chosen if t.stage == "graph"):
        graph = _apply_technique(technique, graph, context, Graph)
    generated = generate(graph, board, pm)
    build = Build(None, graph, float_graph, generated, board, chosen)
    if out_dir is not None:
        float_pred = None
        if validation is not None:
            with torch.no_grad():
                float_pred = model(torch.from_numpy(validation[0])).numpy()
            outputs = int(np.prod(float_pred.shape[1:]))
            validation = (validation[0], check_labels(validation[1], len(validation[0]), outputs, "validation data"))
        write_build(build, Path(out_dir), validation, float_pred)
    return build


def _check_labelled(pair: tuple[Any, Any], sample_shape: tuple[int, ...], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs shaped like the calibration samples, with one integer label each (validation, training)."""
    x, y = pair
    x = check_samples(x, what)
    check_sample_shape(x, sample_shape, what, "calibration samples")
    if y is None:
        raise DataError(f"The {what} has no labels: pass (inputs, labels), one integer class label per sample.")
    return x, check_labels(y, len(x), None, what)


def _apply_technique(technique: Technique, subject: Any, context: Context, expected: type) -> Any:
    """`technique.apply`, with a technique that raises or returns the wrong thing named with its plugin."""
    try:
        result = technique.apply(subject, context)
    except TinymlError:
        raise
    except Exception as err:
        raise PluginError(
            f"{plugins.describe_technique(technique)} failed: {type(err).__name__}: {err}. Run with --debug for the "
            "traceback; check the technique's options, or report it to the plugin's authors."
        ) from err
    if not isinstance(result, expected):
        raise PluginError(
            f"{plugins.describe_technique(technique)} returned {type(result).__name__} from apply(); a "
            f"{technique.stage}-stage technique must return the transformed {expected.__qualname__}."
        )
    return result


def write_build(
    build: Build,
    out_dir: Path,
    validation: tuple[np.ndarray, np.ndarray] | None,
    float_pred: np.ndarray | None,
    extra_files: Mapping[str, bytes] | None = None,
) -> None:
    """Write everything into a temporary sibling of `out_dir`, then swap it in; the manifest goes last.

    `extra_files` (relative path -> content) are what a plugin keeps with the build (e.g. the model
    factory and weights a search found, `tinyml.report.ADDED_SECTIONS`); the manifest lists them.
    """
    out_dir = output_path(out_dir)
    with staged_directory(out_dir) as tmp:
        for name, content in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(content)
        for name, text in build.generated.files.items():
            (tmp / name).write_text(text)
        graphfile.save_graph(build.graph, tmp)
        if validation is not None:
            np.savez_compressed(tmp / VALIDATION_FILE, x=validation[0], y=validation[1], float_pred=float_pred)
        (tmp / "report.txt").write_text(build.report())
        required = [p.name for p in tmp.iterdir()]  # report.html is redrawn by `tinyml report` when missing
        write_compile_report(build, tmp, out_dir)
        write_manifest(tmp, "model", build.summary(), files=required)
    build.out_dir = out_dir


def load_graph(build_dir: str | Path) -> Graph:
    """The int8 graph of a compiled model folder, once its manifest says it is one this version reads."""
    read_manifest(build_dir, "model")
    return graphfile.load_graph(build_dir)


def compile_from_recipe(recipe: Recipe, out_dir: str | Path | None, progress: bool = True) -> Build:
    """Compile what a recipe names: the bundled example, or a model factory with weights and data.

    Every data file is checked against the model before any work starts: calibration finite,
    validation and training data shaped like it with labels `y` that index the model's outputs.
    """
    from tinyml.recipe import field_label, load_factory_model, load_samples, recipe_inputs

    if out_dir is not None:
        check_output_dir(out_dir, recipe_inputs(recipe))
    validation = train_data = None
    if recipe.model.example:
        from tinyml.examples import get_example

        example = get_example(recipe.model.example)
        model, calibration = example.model, example.calibration
        validation = (example.x_test, example.y_test)
        train_data = (example.x_train, example.y_train)
    else:
        model = load_factory_model(recipe.model)
        if recipe.data.calibration is None:
            raise CalibrationError(
                'No calibration data: set `[data] calibration = "calib.npz"` in the recipe or pass --calib FILE '
                "(an .npz with an array `x` of representative inputs, shaped (N, C, H, W))."
            )
    if recipe.data.calibration is not None:
        calibration, labels = load_samples(recipe.data.calibration, field_label("data.calibration"))
        train_data = (calibration, labels) if labels is not None else train_data
    if recipe.model.input_shape is not None and list(calibration.shape[1:]) != list(recipe.model.input_shape[1:]):
        raise CalibrationError(
            f"model.input_shape is {list(recipe.model.input_shape)} but the calibration samples are shaped "
            f"{list(calibration.shape[1:])} (without the batch axis); make them agree or drop input_shape."
        )
    for field in ("data.validation", "data.train"):
        path = getattr(recipe.data, field.split(".")[1])
        if path is None:
            continue
        label = field_label(field)
        x, y = load_samples(path, label, labels_required=True)
        check_sample_shape(x, calibration.shape[1:], f"{label} file {path}", "calibration samples")
        check_labels(y, len(x), _output_count(model, calibration, recipe), f"{label} file {path}")
        if field == "data.validation":
            validation = (x, y)
        else:
            train_data = (x, y)
    return compile(
        model,
        calibration,
        recipe.techniques,
        board=recipe.board,
        out_dir=out_dir,
        validation=validation,
        train_data=train_data,
        progress=progress,
    )


def _output_count(model: torch.nn.Module, calibration: np.ndarray, recipe: Recipe) -> int | None:
    """How many values the float model's (first) output has per sample, which a class label indexes.

    Found by running one calibration sample, so labels are checked before any work starts.
    """
    import torch

    source = recipe.model.example or recipe.model.factory
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(calibration[:1]))
    except Exception as err:
        raise CalibrationError(
            f"The model {source} fails on a calibration sample shaped {list(calibration.shape[1:])}: "
            f"{type(err).__name__}: {' '.join(str(err).split())}. Give calibration data shaped like the model's input."
        ) from err
    if isinstance(out, list | tuple) and out:
        out = out[0]  # validation compares the first output, as `tinyml validate` does
    return int(np.prod(out.shape[1:])) if isinstance(out, torch.Tensor) else None
