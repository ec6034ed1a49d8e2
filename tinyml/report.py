"""report.html: one self-contained page a person reads about a build.

A build folder from `tinyml compile` holds `report.json`, the figures of the compiled model (its
layers and its memory plan) written beside the C. A firmware folder from `tinyml build` holds that
model in `model/`, an ELF whose sizes are read per layer, and, once `tinyml run` ran it, `run.json`.
The page is drawn from those files only, so `tinyml report BUILD_DIR` can redraw it at any time.

The page is a list of `Section`s, each built by one function of `SECTIONS` from a `BuildFolder`
(returning None when the folder holds nothing for it). A technique that has figures to show
(compression per layer) adds its function to `SECTIONS`; a plugin writes its own sections as
`ADDED_SECTIONS` (JSON: ``{"sections": [{"title", "html"}, ...]}``) into the build folder, and they are drawn
after the others (`tinyml search` shows its candidates and Pareto plot so). The page needs no
network: CSS is inline and plots are PNG images in `data:` URIs, drawn by matplotlib through Agg.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyml.codegen import describe_fused
from tinyml.compression_report import compression_report
from tinyml.errors import ReportError, TinymlError
from tinyml.planner import MemoryPlan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tinyml.board.size import SizeReport
    from tinyml.compiler import Build

REPORT_HTML = "report.html"
REPORT_DATA = "report.json"
RUN_FILE = "run.json"
ADDED_SECTIONS = "report_sections.json"
FIRMWARE_MODEL_DIR = "model"
DATA_VERSION = 1
LAYER_FIELDS = ("name", "op", "kernel", "output_shape", "weight_bytes", "arena_bytes")


@dataclass(frozen=True)
class Section:
    """One part of the page: a heading and its HTML (already escaped)."""

    title: str
    html: str


@dataclass
class BuildFolder:
    """What a build folder holds, read once: the compiled model's figures and, for a firmware
    folder, its manifest, its ELF sizes and the results of its last run."""

    path: Path
    model: dict[str, Any] | None
    plan: MemoryPlan | None
    firmware: dict[str, Any] | None = None
    size: SizeReport | None = None
    run: dict[str, Any] | None = None
    name: str = ""  # the page's title; the folder's name when empty

    @property
    def title(self) -> str:
        return self.name or self.path.resolve().name


# ---------------------------------------------------------------------------------------------
# The data: written at compile time, read back by `tinyml report`


def model_data(build: Build) -> dict[str, Any]:
    """The figures of a compiled model that its report shows, as plain JSON values."""
    graph, generated, plan = build.graph, build.generated, build.plan
    weights = build.layer_weight_bytes()
    compression = compression_report(build)
    per_layer = compression.by_layer()
    live = live_bytes(plan, len(graph.nodes))
    layers = []
    for i, node in enumerate(graph.nodes):
        kernel = generated.kernels[node.name]
        layers.append(
            {
                "name": node.name,
                "source": node.source,
                "op": node.op,
                "activation": node.attrs.get("activation") or "none",
                "fused": describe_fused(node),
                "kernel": kernel.function,
                "kernel_reason": kernel.reason,
                "output_shape": list(graph.tensors[node.outputs[0]].shape),
                "weight_bytes": weights[node.name],
                "scratch_bytes": kernel.scratch_bytes,
                "arena_bytes": live[i],
                "compression": per_layer.get(node.name),
            }
        )

    def tensor(name: str) -> dict[str, Any]:
        t = graph.tensors[name]
        return {"name": name, "shape": list(t.shape), "dtype": t.dtype}

    return {
        "version": DATA_VERSION,
        "tinyml": _tinyml_version(),
        "board": build.board.name if build.board else None,
        "techniques": [{"name": t.name, "options": t.options.model_dump(mode="json")} for t in build.techniques],
        "inputs": [tensor(n) for n in graph.inputs],
        "outputs": [tensor(n) for n in graph.outputs],
        "weight_bytes": generated.weight_bytes,
        "layers": layers,
        "compression_total": compression.total.as_dict(),
        "plan": {
            "offsets": plan.offsets,
            "sizes": plan.sizes,
            "lifetimes": {name: list(span) for name, span in plan.lifetimes.items()},
            "arena_bytes": plan.arena_bytes,
            "lower_bound": plan.lower_bound,
            "greedy_bytes": plan.greedy_bytes,
            "strategy": plan.strategy,
        },
    }


def live_bytes(plan: MemoryPlan, steps: int) -> list[int]:
    """Arena bytes in use at each step: the buffers alive then (the caller's input and output are not in the arena)."""
    return [sum(b.size for b in plan.buffers() if b.first <= step <= b.last) for step in range(steps)]


def write_compile_report(build: Build, folder: Path, final_dir: Path) -> Path:
    """Write `report.json` and `report.html` of a compiled model into the staging folder that
    becomes `final_dir` (whose name the page shows)."""
    folder = Path(folder)
    data = model_data(build)
    (folder / REPORT_DATA).write_text(json.dumps(data, indent=1) + "\n")
    return _write_page(BuildFolder(folder, data, build.plan, name=Path(final_dir).name))


def read_folder(path: str | Path) -> BuildFolder:
    """Read what a compile folder or a firmware folder holds, with one clear error for anything else."""
    from tinyml.manifest import MANIFEST_FILES, build_kind, read_manifest

    folder = Path(path)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder; give `tinyml report` a build folder.")
    kind = build_kind(folder)
    if kind == "firmware":
        from tinyml.board.size import size_report

        manifest = read_manifest(folder, "firmware")
        model, plan = _read_model(folder / FIRMWARE_MODEL_DIR / REPORT_DATA, required=False)
        run = _read_json(folder / RUN_FILE) if (folder / RUN_FILE).is_file() else None
        return BuildFolder(folder, model, plan, manifest, size_report(folder), run)
    if kind == "model":
        read_manifest(folder, "model")
        model, plan = _read_model(folder / REPORT_DATA, required=True)
        return BuildFolder(folder, model, plan)
    raise ReportError(
        f"{folder} is not a tinyml build folder: it holds neither a compiled model ({MANIFEST_FILES['model']}, "
        f"written by `tinyml compile`) nor a firmware ({MANIFEST_FILES['firmware']}, written by `tinyml build`). "
        "Give `tinyml report` the folder a build wrote (e.g. build/digits or build/stm32)."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path} cannot be read as JSON ({err}); build again to rewrite it.") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} holds {type(data).__name__}, not a JSON object; build again to rewrite it.")
    return data


def _read_model(path: Path, required: bool) -> tuple[dict[str, Any] | None, MemoryPlan | None]:
    if not path.is_file():
        if required:
            raise ReportError(f"{path} is missing; compile again to write it.")
        return None, None
    data = _read_json(path)
    if data.get("version") != DATA_VERSION:
        raise ReportError(
            f"{path} is report data of version {data.get('version')!r}, written by tinyml "
            f"{data.get('tinyml', 'unknown')}; this tinyml ({_tinyml_version()}) reads version {DATA_VERSION}. "
            "Compile again to rewrite it."
        )
    try:
        p = data["plan"]
        plan = MemoryPlan(
            offsets={str(k): int(v) for k, v in p["offsets"].items()},
            sizes={str(k): int(v) for k, v in p["sizes"].items()},
            lifetimes={str(k): (int(v[0]), int(v[1])) for k, v in p["lifetimes"].items()},
            arena_bytes=int(p["arena_bytes"]),
            lower_bound=int(p["lower_bound"]),
            greedy_bytes=int(p["greedy_bytes"]),
            strategy=str(p["strategy"]),
        )
        missing = sorted({key for layer in data["layers"] for key in LAYER_FIELDS if key not in layer})
        if missing:
            raise KeyError(", ".join(missing))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ReportError(
            f"{path} is not complete report data (bad or missing field: {err}); compile again to rewrite it."
        ) from None
    return data, plan


# ---------------------------------------------------------------------------------------------
# Writing and refreshing the page


def write_report(path: str | Path, name: str = "") -> Path:
    """(Re)draw `report.html` in a build folder from what it holds; returns the page's path.

    `name` is the title (default: the folder's name). The page is written beside the folder's
    files under a temporary name and then renamed, so a reader never sees half a page.
    """
    folder = read_folder(path)
    folder.name = name
    return _write_page(folder)


def _write_page(folder: BuildFolder) -> Path:
    page = folder.path / REPORT_HTML
    partial = folder.path / f".{REPORT_HTML}.partial"
    try:
        partial.write_text(render(folder), encoding="utf-8")
        os.replace(partial, page)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise ReportError(f"Cannot write {page}: {err.strerror or err}.") from None
    return page


def refresh_report(path: str | Path) -> Path | None:
    """Redraw a firmware folder's report after `tinyml build` or `tinyml run`; a failure is a warning,
    since the build or run it follows did succeed."""
    try:
        return write_report(path)
    except TinymlError as err:
        warnings.warn(f"{Path(path) / REPORT_HTML} was not updated: {err}", stacklevel=2)
        return None


def record_run(path: str | Path, summary: Mapping[str, Any]) -> Path | None:
    """Save a run's results (`tinyml run`) as `run.json` in its firmware folder and redraw the report."""
    run_file = Path(path) / RUN_FILE
    try:
        run_file.write_text(json.dumps(summary, indent=1) + "\n")
    except OSError as err:
        warnings.warn(f"{run_file} was not written: {err.strerror or err}", stacklevel=2)
        return None
    return refresh_report(path)


def open_report(page: Path) -> bool:
    """Open the page in the desktop's browser; False when there is no display to show it on."""
    import click

    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless:
        return False
    return click.launch(str(page)) == 0


# ---------------------------------------------------------------------------------------------
# The page


def render(folder: BuildFolder, sections: Sequence[SectionBuilder] | None = None) -> str:
    """The whole page: header, then every section that the folder has figures for."""
    built = [s for s in (build(folder) for build in (SECTIONS if sections is None else sections)) if s is not None]
    if sections is None:
        built += added_sections(folder)
    body = "\n".join(f'<section id="{_anchor(s.title)}">\n<h2>{_e(s.title)}</h2>\n{s.html}\n</section>' for s in built)
    nav = " · ".join(f'<a href="#{_anchor(s.title)}">{_e(s.title)}</a>' for s in built)
    return PAGE.format(
        title=_e(f"tinyml report: {folder.title}"),
        heading=_e(folder.title),
        subtitle=_subtitle(folder),
        nav=nav,
        body=body,
        css=CSS,
        version=_e(_tinyml_version()),
    )


def added_sections(folder: BuildFolder) -> list[Section]:
    """The sections a plugin wrote into the folder (`ADDED_SECTIONS`); a damaged file is reported."""
    path = folder.path / ADDED_SECTIONS
    if not path.is_file():
        return []
    entries = _read_json(path).get("sections")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"title", "html"} <= e.keys() for e in entries):
        raise ReportError(f"{path} is damaged: it is not a list of sections with a title and html.")
    return [Section(str(e["title"]), str(e["html"])) for e in entries]


def _subtitle(folder: BuildFolder) -> str:
    parts = []
    if folder.firmware is not None:
        board = folder.firmware.get("board", {})
        what = f"firmware for {board.get('name', '?')}"
        details = [board.get("description") or "", board.get("core", "")]
        if board.get("clock_hz"):
            details.append(f"{board['clock_hz'] / 1e6:g} MHz")
        details = [d for d in details if d]
        parts.append(f"<b>{_e(what)}</b>" + (f" ({_e(', '.join(details))})" if details else ""))
    else:
        board = folder.model.get("board") if folder.model else None
        parts.append("<b>compiled model</b>" + (f" for {_e(board)}" if board else " (no board)"))
    if folder.model:
        techniques = [_technique_label(t) for t in folder.model.get("techniques", [])]
        parts.append("techniques: " + _e(", ".join(techniques) or "none"))
        ins = ", ".join(_tensor_label(t) for t in folder.model.get("inputs", []))
        outs = ", ".join(_tensor_label(t) for t in folder.model.get("outputs", []))
        parts.append(f"input {_e(ins)} &rarr; output {_e(outs)}")
    return " &middot; ".join(parts)


def _technique_label(technique: Mapping[str, Any]) -> str:
    options = technique.get("options") or {}
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"{technique.get('name', '?')}" + (f" ({shown})" if shown else "")


def _tensor_label(tensor: Mapping[str, Any]) -> str:
    return f"{_shape(tensor.get('shape', []))} {tensor.get('dtype', '')}".strip()


def summary_section(folder: BuildFolder) -> Section | None:
    """The totals first: flash, RAM, arena against its bounds, layers, and what a run measured."""
    cards: list[tuple[str, str, str]] = []  # (label, figure, note)
    model, plan = folder.model, folder.plan
    if folder.size is not None:
        size = folder.size
        flash_note = f"{_pct(size.flash_bytes, size.flash_limit)} of {_bytes(size.flash_limit)}"
        cards.append(("flash", _bytes(size.flash_bytes), flash_note))
        ram_note = f"{_pct(size.ram_bytes, size.ram_limit)} of {_bytes(size.ram_limit)} (+ stack)"
        cards.append(("RAM", _bytes(size.ram_bytes), ram_note))
    if model is not None and plan is not None:
        ops = ", ".join(sorted({layer["op"] for layer in model["layers"]}))
        cards.append(("weights", _bytes(model["weight_bytes"]), "constants, in flash"))
        cards.append(("arena", _bytes(plan.arena_bytes), _arena_note(plan)))
        cards.append(("layers", str(len(model["layers"])), ops))
    if folder.run is not None:
        run = folder.run
        per_input = run.get("instructions") or []
        if per_input:
            mean = sum(per_input) / len(per_input)
            where = f"per inference, mean of {len(per_input)} on qemu {run.get('machine', '')}"
            cards.append(("instructions", f"{mean:,.0f}", where))
        if "stack_bytes" in run:
            cards.append(("stack", _bytes(int(run["stack_bytes"])), "high-water mark of the run"))
        if "outputs_match_reference" in run:
            match = bool(run["outputs_match_reference"])
            cards.append(("outputs", "match" if match else "DIFFER", "board against the host's reference"))
    if not cards:
        return None
    html_cards = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div><div class="figure">{_e(figure)}</div>'
        f'<div class="note">{_e(note)}</div></div>'
        for label, figure, note in cards
    )
    return Section("Summary", f'<div class="cards">{html_cards}</div>')


def _arena_note(plan: MemoryPlan) -> str:
    bound = plan.lower_bound
    over = f"+{100 * (plan.arena_bytes - bound) / bound:.1f}% over" if plan.arena_bytes > bound else "equals"
    return f"{over} the lower bound {_bytes(bound)}; TFLM greedy {_bytes(plan.greedy_bytes)}"


def layers_section(folder: BuildFolder) -> Section | None:
    """One row per layer: module path, op, kernel, output shape, weight bytes, arena bytes in use."""
    if folder.model is None:
        return None
    layers = folder.model["layers"]
    peak = max((layer["arena_bytes"] for layer in layers), default=0) or 1
    rows = []
    for i, layer in enumerate(layers):
        source = layer.get("source") or ""
        name = f"<code>{_e(layer['name'])}</code>"
        if source and source != layer["name"]:
            name += f'<div class="sub">{_e(source)}</div>'
        if layer.get("fused"):
            name += f'<div class="sub">fused: {_e(", ".join(layer["fused"]))}</div>'
        op = layer["op"] + (f" + {layer['activation']}" if layer.get("activation", "none") != "none" else "")
        share = 100 * layer["arena_bytes"] / peak
        why = f'<div class="sub">{_e(layer["kernel_reason"])}</div>' if layer.get("kernel_reason") else ""
        rows.append(
            f"<tr><td class=num>{i}</td><td>{name}</td><td>{_e(op)}</td>"
            f"<td><code>{_e(layer['kernel'])}</code>{why}</td>"
            f"<td>{_e(_shape(layer['output_shape']))}</td><td class=num>{layer['weight_bytes']:,}</td>"
            f"<td class=num>{layer.get('scratch_bytes', 0):,}</td>"
            f'<td class="num bar" style="--share:{share:.1f}%">{layer["arena_bytes"]:,}</td></tr>'
        )
    total_weights = sum(layer["weight_bytes"] for layer in layers)
    table = (
        "<table><thead><tr><th class=num>#</th><th>layer (module path)</th><th>op</th><th>kernel</th>"
        "<th>output</th><th class=num>weights (B)</th><th class=num>scratch (B)</th>"
        "<th class=num>arena in use (B)</th></tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody><tfoot><tr><td></td><td>total</td><td></td><td></td><td></td><td class=num>{total_weights:,}</td>"
        f"<td></td><td class=num>peak {max((x['arena_bytes'] for x in layers), default=0):,}</td></tr></tfoot></table>"
    )
    note = (
        '<p class="note">Output shapes are NHWC with batch 1. <i>Arena in use</i> counts the arena bytes alive '
        "while the layer runs (its inputs and outputs that live in the arena, tensors kept for later layers, its "
        "scratch); the model's own input and output buffers belong to the caller.</p>"
    )
    return Section("Layers", table + note)


def memory_section(folder: BuildFolder) -> Section | None:
    """The memory plan: the timeline plot, how it compares with its bounds, and every buffer's place."""
    if folder.plan is None or folder.model is None:
        return None
    plan = folder.plan
    names = [layer["name"] for layer in folder.model["layers"]]
    plot = _png(plan.figure(step_labels=names), "memory timeline: tensors by arena offset and layer step")
    saved = plan.greedy_bytes - plan.arena_bytes
    figures = (
        f"<p>Arena <b>{plan.arena_bytes:,} B</b>; lower bound (bytes alive at the busiest step) "
        f"<b>{plan.lower_bound:,} B</b>; TensorFlow Lite Micro's greedy planner would need "
        f"<b>{plan.greedy_bytes:,} B</b>"
        + (f" ({saved:,} B more)" if saved > 0 else "")
        + f". Plan found by: {_e(plan.strategy)}.</p>"
    )
    rows = []
    for name, first, last, offset, size in sorted(plan.timeline(), key=lambda r: (r[1], r[3])):
        steps = f"{first}&ndash;{last}" if last != first else str(first)
        when = _e(names[first] if first < len(names) else "?")
        if last != first:
            when += " &rarr; " + _e(names[last] if last < len(names) else "?")
        rows.append(
            f"<tr><td><code>{_e(name)}</code></td><td class=num>{size:,}</td>"
            f"<td class=num>{offset:,}&ndash;{offset + size:,}</td><td class=num>{steps}</td><td>{when}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>buffer</th><th class=num>bytes</th><th class=num>offset range</th>"
        "<th class=num>steps</th><th>alive from layer &rarr; to layer</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    return Section("Memory plan", figures + plot + table)


def compression_section(folder: BuildFolder) -> Section | None:
    """Each layer's constants as float32, int8 and stored (`tinyml.compression_report`), with a bar chart.

    Shown for every build whose data has the figures, raw int8 ones too: the ratio to float32 is
    then what quantization alone gives, and two builds of a model read side by side. With a run,
    each layer's instructions stand beside its encoding, so what decoding costs shows.
    """
    model = folder.model
    total = model.get("compression_total") if model else None
    if model is None or not isinstance(total, dict):
        return None
    layers = [layer for layer in model["layers"] if isinstance(layer.get("compression"), dict)]
    if not layers:
        return None  # no layer has constants
    instructions: dict[str, float] = {}
    for layer in (folder.run or {}).get("layers", []):
        counts = layer.get("instructions") or []
        instructions[layer["name"]] = sum(counts) / len(counts) if counts else 0.0
    rows = []
    for i, layer in enumerate(layers):
        c = layer["compression"]
        encoding = c["encoding"] + (f" ({c['codebook_size']} values)" if c.get("codebook_size") else "")
        count = instructions.get(layer["name"])
        rows.append(
            f"<tr><td class=num>{i}</td><td><code>{_e(layer['name'])}</code></td>{_compression_cells(c)}"
            f"<td>{_e(encoding)}</td><td><code>{_e(c['kernel'])}</code></td>"
            + ("" if not instructions else f"<td class=num>{'' if count is None else f'{count:,.0f}'}</td>")
            + "</tr>"
        )
    table = (
        "<table><thead><tr><th class=num>#</th><th>layer</th><th class=num>parameters</th>"
        "<th class=num>nonzeros</th><th class=num>bits / weight</th><th class=num>float32 (B)</th>"
        "<th class=num>int8 (B)</th><th class=num>stored (B)</th><th class=num>ratio</th><th>encoding</th>"
        "<th>kernel</th>"
        + ("<th class=num>instructions</th>" if instructions else "")
        + "</tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody><tfoot><tr><td colspan=2>total</td>{_compression_cells(total)}<td>{_e(total['encoding'])}</td>"
        + "<td></td>"
        + ("<td></td>" if instructions else "")
        + "</tr></tfoot></table>"
    )
    figures = (
        f"<p>Constants <b>{total['stored_bytes']:,} B</b> stored, against {total['int8_bytes']:,} B as raw int8 and "
        f"{total['float32_bytes']:,} B as float32: <b>{total['ratio']:.1f}&times;</b> smaller than float32, "
        f"{total['bits_per_weight']:.2f} bits per parameter.</p>"
    )
    note = (
        '<p class="note">Parameters count every element of a layer\'s constants (weights and biases); nonzeros are '
        "those not zero in int8. <i>Stored</i> is the flash the constants take as generated, indices, values and "
        "code tables included; <i>bits / weight</i> is stored bits over parameters. int8 is the constants stored "
        "raw (int8 weights, int32 biases)."
        + (
            " <i>Instructions</i>: the layer's mean per inference in the last <code>tinyml run</code>; a layer "
            "whose encoding is not raw decodes its weights inside that count."
            if instructions
            else ""
        )
        + "</p>"
    )
    plot = _png(_compression_bars(layers), "stored bytes per layer against int8 and float32")
    return Section("Compression", figures + plot + table + note)


def _compression_cells(c: Mapping[str, Any]) -> str:
    return (
        f"<td class=num>{c['parameters']:,}</td><td class=num>{c['nonzeros']:,}</td>"
        f"<td class=num>{c['bits_per_weight']:.2f}</td><td class=num>{c['float32_bytes']:,}</td>"
        f"<td class=num>{c['int8_bytes']:,}</td><td class=num>{c['stored_bytes']:,}</td>"
        f"<td class=num>{c['ratio']:.1f}&times;</td>"
    )


def _compression_bars(layers: Sequence[Mapping[str, Any]]) -> Figure:
    """Grouped horizontal bars per layer: float32, int8 and stored bytes, each labelled with its figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    kinds = (("float32", "float32_bytes", "C7"), ("int8", "int8_bytes", "C0"), ("stored", "stored_bytes", "C2"))
    fig = Figure(figsize=(10.0, 1.5 + 0.55 * max(len(layers), 1)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    height = 0.8 / len(kinds)
    top = max((int(layer["compression"]["float32_bytes"]) for layer in layers), default=0) or 1
    for k, (label, key, color) in enumerate(kinds):
        values = [int(layer["compression"][key]) for layer in layers]
        positions = [i + (k - 1) * height for i in range(len(layers))]
        ax.barh(positions, values, height=height, color=color, label=label)
        for y, value in zip(positions, values, strict=True):
            ax.text(value + top * 0.01, y, f"{value:,}", va="center", fontsize=7)
    ax.set_xlabel("bytes")
    ax.set_xlim(0, top * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(axis="x", alpha=0.3)
    ax.set_yticks(range(len(layers)), [f"{i}: {layer['name']}" for i, layer in enumerate(layers)], fontsize=8)
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(kinds), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def firmware_section(folder: BuildFolder) -> Section | None:
    """Per layer on the board: flash from the ELF (`tinyml size`) and instructions from the last `tinyml run`."""
    if folder.size is None:
        return Section(
            "On the board",
            '<p class="note">Not built for a board. <code>tinyml build --board NAME</code> builds firmware; its '
            "report adds flash per layer, and <code>tinyml run</code> adds instructions per layer.</p>",
        )
    size = folder.size
    flash = {layer["name"]: layer["flash_bytes"] for layer in size.layers}
    ram = {layer["name"]: layer["ram_bytes"] for layer in size.layers}
    names = [layer["name"] for layer in size.layers]
    instructions: dict[str, float] = {}
    run = folder.run
    if run is not None:
        for layer in run.get("layers", []):
            counts = layer.get("instructions") or []
            instructions[layer["name"]] = sum(counts) / len(counts) if counts else 0.0
            if layer["name"] not in flash:
                names.append(layer["name"])
    total = sum(instructions.values()) or 1.0
    rows = []
    for i, name in enumerate(names):
        count = instructions.get(name)
        rows.append(
            f"<tr><td class=num>{i}</td><td><code>{_e(name)}</code></td>"
            f"<td class=num>{'' if count is None else f'{count:,.0f}'}</td>"
            f"<td class=num>{'' if count is None else f'{100 * count / total:.1f}%'}</td>"
            f"<td class=num>{flash.get(name, 0):,}</td><td class=num>{ram.get(name, 0):,}</td></tr>"
        )
    table = (
        "<table><thead><tr><th class=num>#</th><th>layer</th><th class=num>instructions</th><th class=num>share</th>"
        "<th class=num>flash (B)</th><th class=num>RAM (B)</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    if run is None:
        intro = (
            f'<p class="note">Flash per layer read from the ELF (weights and parameters). Not run yet: '
            f"<code>tinyml run {_e(str(folder.path))}</code> measures instructions per layer and adds them here.</p>"
        )
    else:
        intro = (
            f'<p class="note">Instructions per layer: mean over {run.get("inputs", "?")} inputs on QEMU '
            f"{_e(str(run.get('machine', '')))}, to a resolution of {_e(_instructions(run))} (instructions, not "
            "cycles: QEMU models no timing). Flash per layer read from the ELF (weights and parameters).</p>"
        )
    plot = _png(_layer_bars(names, instructions, flash), "instructions and flash per layer")
    sections = ", ".join(f"{name} {value:,} B" for name, value in size.sections.items())
    sizes = (
        f"<p>Flash {size.flash_bytes:,} of {size.flash_limit:,} B; RAM {size.ram_bytes:,} of {size.ram_limit:,} B "
        f"(arena {size.arena_bytes:,} B) plus a stack reserve of {size.stack_reserve:,} B. "
        f"Sections: {_e(sections)}.</p>"
    )
    return Section("On the board", intro + sizes + plot + table)


def _layer_bars(names: Sequence[str], instructions: Mapping[str, float], flash: Mapping[str, int]) -> Figure:
    """Horizontal bars per layer: instructions (when measured) and flash bytes, sharing the layer axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    panels = [("flash (bytes)", [flash.get(n, 0) for n in names], "C1")]
    if instructions:
        panels.insert(0, ("instructions (mean per inference)", [instructions.get(n, 0) for n in names], "C0"))
    fig = Figure(figsize=(10.0, 1.2 + 0.32 * max(len(names), 1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = list(range(len(names)))
    for ax, (label, values, color) in zip(axes, panels, strict=True):
        ax.barh(positions, values, color=color)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        top = max(values, default=0) or 1
        ax.set_xlim(0, top * 1.18)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        for y, value in zip(positions, values, strict=True):
            ax.text(value + top * 0.01, y, f"{value:,.0f}", va="center", fontsize=7)
    axes[0].set_yticks(positions, [f"{i}: {n}" for i, n in enumerate(names)], fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig


SectionBuilder = Callable[[BuildFolder], "Section | None"]

SECTIONS: list[SectionBuilder] = [
    summary_section,
    layers_section,
    compression_section,
    memory_section,
    firmware_section,
]
"""The page's sections in order. A technique with figures to show adds its builder here."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def _png(fig: Figure, alt: str) -> str:
    """A figure as an <img> with the PNG inline (no metadata: the page holds no outside address)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower())


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


def _bytes(n: int) -> str:
    return f"{n:,} B" if n < 10 * 1024 else f"{n / 1024:,.1f} KB"


def _instructions(run: Mapping[str, Any]) -> str:
    n = run.get("instruction_resolution", "?")
    return f"{n} instruction" + ("" if n == 1 else "s")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _tinyml_version() -> str:
    try:
        return metadata.version("tinyml")
    except metadata.PackageNotFoundError:
        return "unknown"


CSS = """
:root { --fg: #1d232b; --muted: #5d6876; --line: #d9dee5; --accent: #2f6fb3; --bar: #d6e6f7; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header h1 span { color: var(--muted); font-weight: 400; }
header .subtitle { color: var(--muted); font-size: 14px; }
nav { margin: 10px 0 4px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
h2 { font-size: 19px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
code { font: 13px ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 130px; flex: 1 1 130px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .figure { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .note { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
tfoot td { font-weight: 600; border-top: 2px solid var(--line); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.bar { background: linear-gradient(to left, var(--bar) var(--share), transparent var(--share)); }
.sub { color: var(--muted); font-size: 12px; }
.note { color: var(--muted); font-size: 13px; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
<header>
<h1><span>tinyml report:</span> {heading}</h1>
<div class="subtitle">{subtitle}</div>
<nav>{nav}</nav>
</header>
{body}
<footer>Written by tinyml {version}. Redraw with <code>tinyml report FOLDER</code>.</footer>
</main>
</body>
</html>
"""
