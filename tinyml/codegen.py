"""The code generator: an int8 graph becomes model.h, model.c and model_data.c.

model_data.c holds the constants (weights, biases) as `const` arrays, so they stay in flash.
model.c holds one static arena and `tml_model_invoke`, which calls one kernel per node with
buffers at the offsets the memory planner chose. The caller's input and output buffers are used
in place: the first layer reads `in` directly and the last one writes `out`.

The C is written for a person at a debugger: layers are named by their module path, every C
symbol of a layer is `tml_<layer C name>_<what>` (weights, biases, parameters, shapes), each
call has a comment with its geometry, fused modules and arena ranges, the memory plan is a table
above the arena, `tml_model_failed_layer` says which layer a failing kernel belongs to, and no
line is longer than 120 characters. The same graph always gives the same bytes of C.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tinyml import plugins
from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node
from tinyml.kernels import CallSite, Kernel
from tinyml.planner import SCRATCH_PREFIX, MemoryPlan, graph_buffers, plan_buffers
from tinyml.weights import LINE_WIDTH, SYMBOL_PREFIX, EncodedTensor, c_comment, c_identifier, layer_c_names

if TYPE_CHECKING:
    import pluggy

    from tinyml.board.boards import Board

ARENA_ALIGNMENT = 4
INDENT = "    "


@dataclass
class GeneratedModel:
    """The C files and what went into them: kernels per node, weight encodings, the memory plan."""

    files: dict[str, str]
    plan: MemoryPlan
    kernels: dict[str, Kernel]
    weights: dict[str, EncodedTensor]

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights.values())


def select_kernels(graph: Graph, board: Board | None, pm: pluggy.PluginManager) -> dict[str, Kernel]:
    kernels = {}
    for node in graph.nodes:
        kernel = plugins.first_answer(
            pm, "tinyml_select_kernel", Kernel, f"node `{node.name}` ({node.op})", node=node, graph=graph, board=board
        )
        if kernel is None:
            raise TinymlError(
                f"No kernel implements op `{node.op}` of node `{node.name}` (from `{node.source}`); "
                "is a plugin that provides it disabled?"
            )
        kernels[node.name] = kernel
    return kernels


def plan_memory(graph: Graph, kernels: dict[str, Kernel]) -> MemoryPlan:
    """Arena offsets for every intermediate tensor and scratch buffer (graph input/output live with the caller)."""
    scratch = {name: k.scratch_bytes for name, k in kernels.items() if k.scratch_bytes}
    external = set(graph.inputs) | set(graph.outputs)
    buffers = [b for b in graph_buffers(graph, scratch, ARENA_ALIGNMENT) if b.name not in external]
    return plan_buffers(buffers)


def generate(graph: Graph, board: Board | None, pm: pluggy.PluginManager) -> GeneratedModel:
    """Choose kernels and weight encodings through the plugin hooks, plan memory, write the C."""
    if not graph.is_quantized:
        raise TinymlError(
            "The graph is still float: add an int8 quantization technique (e.g. `quantize-int8`) to the "
            "recipe's techniques before generating C."
        )
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise TinymlError(
            f"The code generator supports one input and one output; this model has inputs {graph.inputs} "
            f"and outputs {graph.outputs}."
        )
    kernels = select_kernels(graph, board, pm)
    plan = plan_memory(graph, kernels)
    names = [node.name for node in graph.nodes]
    c_names = dict(zip(names, layer_c_names(names), strict=True))
    weights = encode_weights(graph, c_names, board, pm)
    files = {
        "model.h": _model_h(graph, plan),
        "model.c": _model_c(graph, plan, kernels, weights, c_names),
        "model_data.c": _model_data_c(weights),
    }
    files = {name: fit_lines(text) for name, text in files.items()}
    return GeneratedModel(files=files, plan=plan, kernels=kernels, weights=weights)


def encode_weights(
    graph: Graph, c_names: dict[str, str], board: Board | None, pm: pluggy.PluginManager
) -> dict[str, EncodedTensor]:
    """The C of every constant, from the `tinyml_encode_weights` hook, keyed by tensor name.

    A layer's constants are named `<layer>.<what>`, so their symbols are `tml_<layer C name>_<what>`.
    Where a layer's C name is not simply its name in identifier characters (it had to be made
    unique), the hook gets its constants renamed `<C name>.<what>` so that they still follow it.
    """
    owner: dict[str, Node] = {}
    for node in graph.nodes:
        for name in node.inputs:
            owner.setdefault(name, node)
    weights: dict[str, EncodedTensor] = {}
    symbols: dict[str, str] = {}
    for tensor in graph.constants():
        node = owner.get(tensor.name)
        asked = tensor
        if (
            node is not None
            and tensor.name.startswith(node.name + ".")
            and c_names[node.name] != c_identifier(node.name)
        ):
            asked = replace(tensor, name=f"{c_names[node.name]}.{tensor.name[len(node.name) + 1 :]}")
        encoded = plugins.first_answer(
            pm, "tinyml_encode_weights", EncodedTensor, f"tensor `{tensor.name}`", tensor=asked, board=board
        )
        if encoded.symbol in symbols:
            raise TinymlError(
                f"Constants `{symbols[encoded.symbol]}` and `{tensor.name}` would both be the C symbol "
                f"`{encoded.symbol}`; rename one of the modules they belong to."
            )
        symbols[encoded.symbol] = tensor.name
        weights[tensor.name] = encoded
    return weights


# --- describing layers and buffers in comments ------------------------------------------------


def describe_fused(node: Node) -> list[str]:
    """What the frontend folded into `node`: `features.bn1 (BatchNorm2d)`, or `aten.relu in block1`."""
    described = []
    for record in node.attrs.get("fused", []):
        module, kind = record.get("module", ""), record.get("type", "")
        if kind.startswith("torch.nn."):
            described.append(f"{module} ({kind.removeprefix('torch.nn.')})" if module else kind)
        else:
            described.append(f"{kind} in {module}" if module else kind)
    return described


def _dims(shape: tuple[int, ...]) -> str:
    """`8x8x16` for a (1, H, W, C) feature map, `128` for a (1, N) vector."""
    return "x".join(str(d) for d in shape[1:])


def _pair(values: Any) -> str:
    h, w = (int(v) for v in values)
    return str(h) if h == w else f"{h}x{w}"


def _geometry(graph: Graph, node: Node) -> str:
    """Kernel, stride, padding and depth multiplier of a windowed op ('' for the others)."""
    a = node.attrs
    parts = []
    if node.op in ("conv2d", "dwconv2d"):
        kh, kw = graph.tensors[node.inputs[1]].shape[1:3]
        parts.append(f"kernel {kh}x{kw}")
    elif "kernel" in a:
        parts.append(f"kernel {int(a['kernel'][0])}x{int(a['kernel'][1])}")
    if "stride" in a:
        parts.append(f"stride {_pair(a['stride'])}")
    if "padding" in a:
        parts.append(f"padding {_pair(a['padding'])}")
    if int(a.get("depth_multiplier", 1)) != 1:
        parts.append(f"depth multiplier {int(a['depth_multiplier'])}")
    return ", ".join(parts)


def _location(graph: Graph, plan: MemoryPlan, name: str) -> str:
    """Where a tensor lives while the model runs: the caller's `in`/`out`, or its arena byte range."""
    if name in graph.inputs:
        return "`in` (the caller's input)"
    if name in graph.outputs:
        return "`out` (the caller's output)"
    offset = plan.offsets[name]
    return f"arena [{offset}, {offset + graph.tensors[name].nbytes})"


def _call_comment(graph: Graph, plan: MemoryPlan, index: int, node: Node, kernel: Kernel) -> list[str]:
    """The comment above a layer's call: what it computes, what was fused into it, where its data is."""
    a = node.attrs
    ins = [name for name in node.inputs if not graph.tensors[name].is_constant]
    out = node.outputs[0]
    shapes = f"{', '.join(_dims(graph.tensors[n].shape) for n in ins)} -> {_dims(graph.tensors[out].shape)}"
    geometry = _geometry(graph, node)
    lines = [f"{index} {node.name}: {node.op}, {kernel.function}", f"{geometry}: {shapes}" if geometry else shapes]
    if "activation" in a:
        clamp = f", output clamped to [{a['act_min']}, {a['act_max']}]" if "act_min" in a else ""
        lines.append(f"activation {a['activation']}{clamp}")
    fused = describe_fused(node)
    if fused:
        lines.append(f"fused: {', '.join(fused)}")
    for k, name in enumerate(ins):
        label = "in" if len(ins) == 1 else f"in{k}"
        lines.append(f"{label}: {name}, {_location(graph, plan, name)}")
    lines.append(f"out: {out}, {_location(graph, plan, out)}")
    scratch = SCRATCH_PREFIX + node.name
    if scratch in plan.offsets:
        offset = plan.offsets[scratch]
        lines.append(f"scratch: arena [{offset}, {offset + plan.sizes[scratch]})")
    return comment_block([lines[0], *(f"  {line}" for line in lines[1:])], INDENT)


TIMELINE_COLUMNS = 64
_BUFFER_MARKS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _arena_definition(plan: MemoryPlan) -> list[str]:
    """The arena, or a comment where no tensor or scratch lives in it (an unused array only draws warnings)."""
    if not plan.offsets:
        return ["/* No arena: no intermediate tensor or scratch; layers use the caller's input and output only. */", ""]
    return [
        "static int32_t tml_arena_words[(TML_MODEL_ARENA_BYTES + 3) / 4]; /* int32 for alignment */",
        "#define tml_arena ((int8_t *)tml_arena_words)",
        "",
    ]


def _plan_comment(graph: Graph, plan: MemoryPlan) -> list[str]:
    """The memory plan as a table, then as TFLite Micro's PrintMemoryPlan draws it: one row per layer."""
    names = [node.name for node in graph.nodes]

    def layer(step: int) -> str:
        return f"{step} {names[step]}" if 0 <= step < len(names) else str(step)

    timeline = plan.timeline()
    rows = [("", "buffer", "bytes", "arena bytes", "first layer", "last layer")]
    for i, (name, first, last, offset, size) in enumerate(timeline):
        label = f"scratch of {name.removeprefix(SCRATCH_PREFIX)}" if name.startswith(SCRATCH_PREFIX) else name
        mark = _BUFFER_MARKS[i] if i < len(_BUFFER_MARKS) else "*"
        rows.append((mark, label, f"{size:,}", f"[{offset}, {offset + size})", layer(first), layer(last)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    table = [
        "  ".join(cell.rjust(widths[c]) if c == 2 else cell.ljust(widths[c]) for c, cell in enumerate(row))
        for row in rows
    ]
    lines = [
        f"Memory plan: an arena of {plan.arena_bytes:,} bytes (lower bound {plan.lower_bound:,} B, TFLite Micro's "
        f"greedy planner {plan.greedy_bytes:,} B), placed by {plan.strategy}. Layer i runs at step i; a buffer "
        "lives from the layer that writes it to the last layer that reads it.",
        "",
        *(line.rstrip() for line in table),
    ]
    external = [
        f"`{'in' if name in graph.inputs else 'out'}` ({name}, {graph.tensors[name].nbytes:,} B)"
        for name in graph.inputs + graph.outputs
    ]
    lines += ["", f"Outside the arena, the caller's buffers: {' and '.join(external)}."]
    if timeline and plan.arena_bytes > 0:
        lines += ["", f"Arena by layer (one column = {plan.arena_bytes / TIMELINE_COLUMNS:.4g} bytes, '.' = free):"]
        name_width = min(max(len(layer(s)) for s in range(len(names))), LINE_WIDTH - TIMELINE_COLUMNS - 10)
        for step in range(len(names)):
            cells = []
            for column in range(TIMELINE_COLUMNS):  # a column shows a buffer that overlaps its bytes
                low = column * plan.arena_bytes // TIMELINE_COLUMNS
                high = max((column + 1) * plan.arena_bytes // TIMELINE_COLUMNS, low + 1)
                mark = "."
                for i, (_, first, last, offset, size) in enumerate(timeline):
                    if first <= step <= last and offset < high and low < offset + size:
                        mark = _BUFFER_MARKS[i] if i < len(_BUFFER_MARKS) else "*"
                        break
                cells.append(mark)
            label = layer(step)
            label = label if len(label) <= name_width else label[: name_width - 3] + "..."
            lines.append(f"{label.ljust(name_width)} |{''.join(cells)}|")
    return comment_block(lines, "")


def comment_block(lines: list[str], indent: str) -> list[str]:
    """`/* ... */` around `lines`, each wrapped to LINE_WIDTH (continuations two spaces deeper)."""
    out = [f"{indent}/*"]
    for line in lines:
        line = c_comment(line)
        if not line:
            out.append(f"{indent} *")
            continue
        depth = len(line) - len(line.lstrip(" "))
        lead = indent + " * " + " " * depth
        hang = lead + "  " if depth else lead  # an indented item's continuation hangs; prose does not
        out += textwrap.wrap(line.strip(), LINE_WIDTH, initial_indent=lead, subsequent_indent=hang)
    out.append(f"{indent} */")
    return out


def c_string(text: str) -> str:
    """A C string literal holding `text` as UTF-8 (quotes, backslashes, `?` and control bytes escaped)."""
    chars = []
    for byte in text.encode("utf-8"):
        if chr(byte) in '"\\?':
            chars.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            chars.append(chr(byte))
        else:
            chars.append(f"\\{byte:03o}")
    return '"' + "".join(chars) + '"'


def c_string_lines(text: str, width: int = LINE_WIDTH - 2 * len(INDENT)) -> str:
    """`c_string(text)`, cut into adjacent literals on lines of their own when it is longer than `width`."""
    literal = c_string(text)
    if len(literal) <= width:
        return literal
    pieces, current = [], ""
    for token in re.findall(r"\\[0-7]{3}|\\.|[^\\]", literal[1:-1]):  # never split an escape sequence
        if len(current) + len(token) + 2 > width:
            pieces.append(f'"{current}"')
            current = ""
        current += token
    pieces.append(f'"{current}"')
    return f"\n{INDENT}".join(pieces)


# --- wrapping ----------------------------------------------------------------------------------


def fit_lines(text: str, width: int = LINE_WIDTH) -> str:
    """`text` with every line longer than `width` broken: code after a comma, comments between words."""
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(_wrap_line(line, width) if len(line) > width else [line])
    return "\n".join(out)


def _wrap_line(line: str, width: int) -> list[str]:
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if stripped.startswith("#"):
        return [line]  # a preprocessor line may not be broken
    if stripped.startswith("/*") and stripped.endswith("*/"):
        body = c_comment(stripped[2:-2].strip())
        wrapped = textwrap.wrap(body, width - 3, initial_indent=indent + "/* ", subsequent_indent=indent + " *   ")
        return [*wrapped[:-1], wrapped[-1] + " */"]
    if stripped.startswith("*"):
        lead = indent + "* "
        return textwrap.wrap(stripped[1:].strip(), width, initial_indent=lead, subsequent_indent=lead + "  ")
    pieces = _split_after_commas(stripped)
    opening = min((i for i in (stripped.find("("), stripped.find("{")) if i >= 0), default=-1)
    hang = indent + " " * (opening + 1) if 0 <= opening <= 60 else indent + INDENT * 2
    lines = [indent + pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) <= width:
            lines[-1] += " " + piece
        else:
            lines.append(hang + piece)
    return lines


def _split_after_commas(code: str) -> list[str]:
    """`code` cut after each `, ` outside a string or character literal (commas kept), and after a
    `= ` outside brackets (so `.field = value` in an initializer stays on one line)."""
    pieces, start, quote, depth, i = [], 0, "", 0, 0
    while i < len(code):
        ch = code[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif code.startswith(", ", i) or (depth == 0 and i > 0 and code.startswith(" = ", i - 1)):
            pieces.append(code[start : i + 1])
            start = i + 2
            i += 1
        i += 1
    pieces.append(code[start:])
    return pieces


# --- the files ---------------------------------------------------------------------------------


def _shape_macros(prefix: str, shape: tuple[int, ...]) -> list[str]:
    dims = shape[1:]
    h, w, c = (1, 1, dims[0]) if len(dims) == 1 else dims
    return [f"#define {prefix}_H {h}", f"#define {prefix}_W {w}", f"#define {prefix}_C {c}"]


def _model_h(graph: Graph, plan: MemoryPlan) -> str:
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    lines = [
        "/* Generated by tinyml: the model's interface. */",
        "#ifndef TML_MODEL_H",
        "#define TML_MODEL_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define TML_MODEL_INPUT_SIZE {x.size}",
        *_shape_macros("TML_MODEL_INPUT", x.shape),
        f"#define TML_MODEL_INPUT_SCALE {float(x.scale)!r}f",
        f"#define TML_MODEL_INPUT_ZERO_POINT {x.zero_point}",
        f"#define TML_MODEL_OUTPUT_SIZE {y.size}",
        f"#define TML_MODEL_OUTPUT_SCALE {float(y.scale)!r}f",
        f"#define TML_MODEL_OUTPUT_ZERO_POINT {y.zero_point}",
        f"#define TML_MODEL_ARENA_BYTES {max(plan.arena_bytes, ARENA_ALIGNMENT)}",
        f"#define TML_MODEL_LAYER_COUNT {len(graph.nodes)}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        "/* Names of the layers (their module paths), in the order tml_model_invoke runs them. */",
        "extern const char *const tml_model_layer_names[TML_MODEL_LAYER_COUNT];",
        "",
        "/* After tml_model_invoke: the index in tml_model_layer_names of the layer whose kernel failed, or -1. */",
        "extern int tml_model_failed_layer;",
        "",
        "/* Run the model: `in` holds TML_MODEL_INPUT_SIZE int8 values (NHWC), `out` receives",
        " * TML_MODEL_OUTPUT_SIZE. Returns 0, or the first kernel error (its layer in tml_model_failed_layer).",
        " * Not reentrant (one arena). */",
        "int tml_model_invoke(const int8_t *in, int8_t *out);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        "#endif /* TML_MODEL_H */",
        "",
    ]
    return "\n".join(lines)


def _model_c(
    graph: Graph,
    plan: MemoryPlan,
    kernels: dict[str, Kernel],
    weights: dict[str, EncodedTensor],
    c_names: dict[str, str],
) -> str:
    inputs, outputs = set(graph.inputs), set(graph.outputs)

    def tensor_expr(name: str) -> str:
        if name in weights:
            return weights[name].symbol
        if name in inputs:
            return "in"
        if name in outputs:
            return "out"
        return f"(tml_arena + {plan.offsets[name]})"

    headers = sorted({h for k in kernels.values() for h in k.headers})
    owners = {w.symbol: f"constant `{name}`" for name, w in weights.items()}
    statics: list[str] = []
    calls: list[str] = []
    for i, node in enumerate(graph.nodes):
        kernel = kernels[node.name]
        scratch_key = SCRATCH_PREFIX + node.name
        scratch = f"(tml_arena + {plan.offsets[scratch_key]})" if scratch_key in plan.offsets else "NULL"
        prefix = SYMBOL_PREFIX + c_names[node.name]
        site = CallSite(graph=graph, node=node, prefix=prefix, tensor=tensor_expr, scratch=scratch)
        call = kernel.emit(site)
        for symbol in site.symbols:
            if symbol in owners:
                raise TinymlError(
                    f"Layer `{node.name}` ({kernel.function}) and {owners[symbol]} both define the C symbol "
                    f"`{symbol}`; rename one of their modules, or the kernel's static."
                )
            owners[symbol] = f"layer `{node.name}`"
        source = f", from {node.source}" if node.source and node.source != node.name else ""
        statics += [f"/* {c_comment(f'{i} {node.name}: {node.op}{source}; symbols {prefix}_*')} */"]
        statics += [*site.statics, ""]
        calls += [
            "",
            *_call_comment(graph, plan, i, node, kernel),
            f"    TML_LAYER_BEGIN({i});",
            textwrap.indent(call, INDENT),
            f"    TML_LAYER_END({i});",
            f"    if (status != 0) return tml_model_fail({i}, status);",
        ]
    names = [f"{INDENT}{literal}," for node in graph.nodes for literal in [c_string_lines(node.name)]]
    lines = [
        *comment_block(
            [
                "Generated by tinyml: the model's layers, run over one static arena.",
                "",
                "tml_model_invoke calls one kernel per layer, in the order of tml_model_layer_names. Every C symbol "
                "of a layer is tml_<layer C name>_<what> (weight, bias, params, multiplier, shift, shapes), so a "
                "map file reads by layer. Shapes are H x W x C (NHWC, batch 1) or a vector's length; arena ranges "
                "are byte offsets [first, end) into tml_arena.",
            ],
            "",
        ),
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        '#include "model.h"',
        *[f'#include "{h}"' for h in headers],
        "",
        "#ifdef TML_PROFILE",
        '#include "tml_profile.h"',
        "#else",
        "#define TML_LAYER_BEGIN(i)",
        "#define TML_LAYER_END(i)",
        "#endif",
        "",
        "/* Constants from model_data.c */",
        *[w.declaration for w in weights.values()],
        "",
        *_plan_comment(graph, plan),
        *_arena_definition(plan),
        *statics,
        "const char *const tml_model_layer_names[TML_MODEL_LAYER_COUNT] = {",
        *names,
        "};",
        "",
        "int tml_model_failed_layer = -1;",
        "",
        "/* Note which layer failed and pass its kernel's status on. */",
        "static int tml_model_fail(int layer, int status)",
        "{",
        "    tml_model_failed_layer = layer;",
        "    return status;",
        "}",
        "",
        "int tml_model_invoke(const int8_t *in, int8_t *out)",
        "{",
        "    int status;",
        "    tml_model_failed_layer = -1;",
        *calls,
        "    return 0;",
        "}",
        "",
    ]
    return "\n".join(lines)


def _model_data_c(weights: dict[str, EncodedTensor]) -> str:
    parts = ["/* Generated by tinyml: the model's constants, kept in flash. */", "#include <stdint.h>", ""]
    parts += [w.definition for w in weights.values()]
    return "\n".join(parts)
