"""Weight storage: how each constant tensor is written into flash as C, and the C names of layers.

The `tinyml_encode_weights` hook returns an `EncodedTensor`. The core's answer, used when no
plugin claims a tensor, is a plain `const` array of the tensor's type, shape in a comment.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinyml.hookspecs import hookimpl
from tinyml.ir import Tensor

if TYPE_CHECKING:
    from tinyml.board.boards import Board

C_TYPES = {"int8": "int8_t", "int32": "int32_t", "uint8": "uint8_t", "int16": "int16_t", "uint32": "uint32_t"}
VALUES_PER_LINE = 16
LINE_WIDTH = 120  # no line of generated C is longer
SYMBOL_PREFIX = "tml_"
# What a generated model.c defines besides its layers' symbols.
MODEL_IDENTIFIERS = frozenset(
    {
        "tml_model_invoke",
        "tml_model_layer_names",
        "tml_model_failed_layer",
        "tml_model_fail",
        "tml_arena",
        "tml_arena_words",
    }
)


@dataclass
class EncodedTensor:
    """C for one constant: `definition` goes into model_data.c, `declaration` into model.c.

    `symbol` is what kernels receive: the data as they read it (a raw array, or for an encoded
    tensor whatever its decoding kernel takes, e.g. a `tml_huffman_weights`), and `nbytes` is the
    flash it takes, every table included. Nothing is decoded at start-up: a plugin that encodes a
    tensor also claims its layer with a kernel that decodes as it runs (`tinyml_select_kernel`),
    into scratch the planner knows (`Kernel.scratch_bytes`).
    """

    symbol: str
    declaration: str
    definition: str
    nbytes: int
    encoding: str = "raw"


def c_values(values: Sequence[int] | np.ndarray, suffix: str = "", indent: str = "    ") -> str:
    """An initializer body: the values comma-separated, as many a line as fit LINE_WIDTH (at most 16).

    Every line has the same count, so columns of a table read down; `suffix` follows each value (`u`).
    """
    flat = [f"{int(v)}{suffix}" for v in np.ravel(values)]
    widest = max((len(v) for v in flat), default=1)
    per_line = max(1, min(VALUES_PER_LINE, (LINE_WIDTH - len(indent)) // (widest + 2)))
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    return f",\n{indent}".join(lines)


def c_array(c_type: str, symbol: str, values: np.ndarray, comment: str) -> str:
    """`const <c_type> symbol[n] = {...};` with `comment` above it, values wrapped to LINE_WIDTH."""
    n = int(np.size(values))
    return f"/* {comment} */\nconst {c_type} {symbol}[{n}] = {{\n    {c_values(values)}\n}};\n"


def c_identifier(name: str) -> str:
    """`name` as C identifier characters: every character but ASCII letters, digits and `_` becomes `_`.

    With the `tml_` prefix every generated symbol has, the result is a valid C identifier.
    """
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


MAX_C_NAME = 40  # longer layer names are shortened (with a hash), so symbols and lines stay readable


@functools.cache
def library_types() -> frozenset[str]:
    """The `tml_` type names the core C headers declare (`tml_fc_params`, `tml_shape`...)."""
    from tinyml.resources import FIRMWARE_DIR

    found = set()
    for header in sorted((FIRMWARE_DIR / "include").glob("*.h")):
        text = header.read_text()
        found.update(re.findall(r"}\s*(tml_\w+)\s*;", text))  # typedef struct {...} tml_x;
        found.update(re.findall(r"typedef\s+\w+\s+(tml_\w+)\s*;", text))  # typedef int32_t tml_x;
    return frozenset(found)


def layer_c_names(names: Sequence[str]) -> list[str]:
    """The C name of each layer, in order: its name in identifier characters, unique among the layers.

    Every C symbol of a layer is `tml_<C name>_<what>`, so a map file or ELF reads by layer. A name
    whose symbols could be a C library type or a model.c name (a layer `fc` and `tml_fc_params`)
    gets `_layer`; one longer than MAX_C_NAME is cut and ends in a hash of the whole name; two
    layers whose names differ only in punctuation (`a.b`, `a_b`) get `_2`, `_3`... on the later ones.
    """
    reserved = library_types() | MODEL_IDENTIFIERS

    def clashes(c_name: str) -> bool:
        symbol = SYMBOL_PREFIX + c_name
        return any(name == symbol or name.startswith(symbol + "_") for name in reserved)

    taken: set[str] = set()
    result = []
    for i, name in enumerate(names):
        base = c_identifier(name) or f"layer{i}"
        if len(base) > MAX_C_NAME:
            base = f"{base[: MAX_C_NAME - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        base = f"{base}_layer" if clashes(base) else base
        c_name, k = base, 1
        while c_name in taken:
            k += 1
            c_name = f"{base}_{k}"
        taken.add(c_name)
        result.append(c_name)
    return result


def c_comment(text: str) -> str:
    """`text` safe inside a C comment: it cannot end the comment, break the line or form a trigraph."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return text.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?")


def symbol_for(tensor: Tensor) -> str:
    """A C symbol for a constant tensor: `tml_` + its name as identifier characters.

    The frontend names a layer's constants `<layer>.weight`, `<layer>.bias`, so this is
    `tml_<layer C name>_weight`: the layer's symbol scheme.
    """
    return SYMBOL_PREFIX + c_identifier(tensor.name)


@hookimpl(trylast=True)
def tinyml_encode_weights(tensor: Tensor, board: Board | None) -> EncodedTensor:
    """Raw storage: the array exactly as the kernels read it."""
    c_type = C_TYPES[tensor.dtype]
    symbol = symbol_for(tensor)
    comment = c_comment(f"{tensor.name}: {tensor.dtype} {list(tensor.data.shape)}")
    return EncodedTensor(
        symbol=symbol,
        declaration=f"extern const {c_type} {symbol}[{tensor.data.size}];",
        definition=c_array(c_type, symbol, tensor.data, comment),
        nbytes=int(tensor.data.nbytes),
    )
