"""Weight storage: how each constant tensor is written into flash as C.

The `tinyml_encode_weights` hook returns an `EncodedTensor`. The core's answer, used when no
plugin claims a tensor, is a plain `const` array of the tensor's type, shape in a comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinyml.hookspecs import hookimpl
from tinyml.ir import Tensor

if TYPE_CHECKING:
    from tinyml.board.boards import Board

C_TYPES = {"int8": "int8_t", "int32": "int32_t", "uint8": "uint8_t", "int16": "int16_t", "uint32": "uint32_t"}
VALUES_PER_LINE = 16


@dataclass
class EncodedTensor:
    """C for one constant: `definition` goes into model_data.c, `declaration` into model.c.

    `symbol` is what kernels receive (a pointer to the data as they read it) and `nbytes` is the
    flash it takes. An encoding whose kernels cannot read it directly (e.g. a compressed stream)
    sets `decode`: a C statement run at start-up that fills `symbol` in RAM.
    """

    symbol: str
    declaration: str
    definition: str
    nbytes: int
    encoding: str = "raw"
    decode: str | None = None


def c_array(c_type: str, symbol: str, values: np.ndarray, comment: str) -> str:
    """`const <c_type> symbol[n] = {...};` with `comment` above it, VALUES_PER_LINE values a line."""
    flat = [str(int(v)) for v in np.ravel(values)]
    lines = [", ".join(flat[i : i + VALUES_PER_LINE]) for i in range(0, len(flat), VALUES_PER_LINE)]
    body = ",\n    ".join(lines)
    return f"/* {comment} */\nconst {c_type} {symbol}[{len(flat)}] = {{\n    {body}\n}};\n"


def c_identifier(name: str) -> str:
    """`name` with every character that may not appear in a C identifier replaced by `_`."""
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def symbol_for(tensor: Tensor) -> str:
    """A C symbol for a constant tensor, readable and stable: `tml_` + its name as an identifier."""
    return "tml_" + c_identifier(tensor.name)


@hookimpl(trylast=True)
def tinyml_encode_weights(tensor: Tensor, board: Board | None) -> EncodedTensor:
    """Raw storage: the array exactly as the kernels read it."""
    c_type = C_TYPES[tensor.dtype]
    symbol = symbol_for(tensor)
    comment = f"{tensor.name}: {tensor.dtype} {list(tensor.data.shape)}"
    return EncodedTensor(
        symbol=symbol,
        declaration=f"extern const {c_type} {symbol}[{tensor.data.size}];",
        definition=c_array(c_type, symbol, tensor.data, comment),
        nbytes=int(tensor.data.nbytes),
    )
