"""winograd: 3x3 stride-1 int8 convolutions by Winograd's minimal filtering F(2x2, 3x3), exact.

A graph technique `winograd` marks the layers to run this way (`technique`); at code generation
`tinyml_encode_weights` stores their weights transformed (int16, `transform`) and
`tinyml_select_kernel` gives them `tml_conv2d_winograd_s8` with its tile scratch (`kernels`), whose
outputs equal `tml_conv2d_s8`'s byte for byte. The C is in `c/` (`tml_winograd.h`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tinyml.errors import TinymlError
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, Tensor
from tinyml.kernels import Kernel
from tinyml.weights import EncodedTensor, c_array, c_comment, symbol_for
from tinyml_plugins.winograd import kernels
from tinyml_plugins.winograd.technique import Winograd
from tinyml_plugins.winograd.transform import stored_bytes, transformed_weights

if TYPE_CHECKING:
    from tinyml.board.boards import Board
    from tinyml.technique import Technique

C_DIR = Path(__file__).resolve().parent / "c"


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [Winograd]


@hookimpl
def tinyml_encode_weights(tensor: Tensor, board: Board | None) -> EncodedTensor | None:
    """The transformed int16 weights of a tensor whose `encoding` is winograd; None for every other one."""
    if tensor.encoding != kernels.ENCODING:
        return None
    if tensor.dtype != "int8" or tensor.data.ndim != 4 or tensor.data.shape[1:3] != (3, 3):
        raise TinymlError(
            f"Constant `{tensor.name}` ({tensor.dtype} {list(tensor.data.shape)}) is marked for Winograd storage, "
            "which takes int8 3x3 conv2d weights only; leave its layer out of technique 'winograd'."
        )
    values = transformed_weights(tensor.data)
    symbol = symbol_for(tensor)
    nbytes = stored_bytes(tensor.data)
    comment = c_comment(
        f"{tensor.name}: int8 {list(tensor.data.shape)} as Winograd F(2x2,3x3) weights 2G g 2G^T, int16 "
        f"[{values.shape[0]}][16][{values.shape[2]}]: {nbytes} bytes, raw {tensor.data.nbytes}"
    )
    return EncodedTensor(
        symbol=symbol,
        declaration=f"extern const int16_t {symbol}[{values.size}];",
        definition=c_array("int16_t", symbol, values, comment),
        nbytes=nbytes,
        encoding=kernels.ENCODING,
    )


@hookimpl
def tinyml_select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    return kernels.select_kernel(node, graph, board)


@hookimpl
def tinyml_kernel_sources() -> list[Path]:
    return [C_DIR]
