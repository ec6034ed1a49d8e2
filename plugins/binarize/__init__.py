"""binarize: binary (XNOR) networks on Cortex-M, trained in torch and run on packed bits.

The train-stage technique `binarize` (`technique`) turns the model's inner conv and linear layers
into binary ones (XNOR-Net: sign of weights and inputs, a straight-through estimator, a scale per
output channel, an optional learnable threshold per input channel) and fine-tunes them; the first
and last layers stay int8. A trained binary layer exports as a `sign` op (`sign`, added to the IR
through `tinyml_ops`) and an ordinary conv2d or linear with +a/-a weights, so `quantize-int8`
quantizes it like any layer, and batch norm and scales fold into integer thresholds and
multipliers. At code generation (`kernels`) the sign packs the int8 activation into bits, 32 to a
word, and the layer runs `tml_conv2d_xnor` / `tml_fc_xnor` (XOR and popcount) on weights packed
the same way (`tinyml_encode_weights`), with the bytes of the int8 kernels. The graph-stage
technique `fuse-sign` (`fuse`), listed after `quantize-int8`, merges a binary convolution with the
sign after it, so that binary layers in a row pass packed bits with no int8 between them
(`tml_conv2d_xnor_sign`, whose counters start from a table built with the model: `starts`). The C is
in `c/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, OpDefinition, Tensor
from tinyml.kernels import Kernel
from tinyml.weights import EncodedTensor
from tinyml_plugins.binarize import fuse, kernels, sign
from tinyml_plugins.binarize.fuse import FuseSign
from tinyml_plugins.binarize.technique import Binarize

if TYPE_CHECKING:
    from tinyml.board.boards import Board
    from tinyml.technique import Technique

C_DIR = Path(__file__).resolve().parent / "c"


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [Binarize, FuseSign]


@hookimpl
def tinyml_ops() -> list[OpDefinition]:
    return [sign.DEFINITION, fuse.DEFINITION]


@hookimpl
def tinyml_select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    return kernels.select_kernel(node, graph, board)


@hookimpl
def tinyml_encode_weights(tensor: Tensor, board: Board | None) -> EncodedTensor | None:
    return kernels.encode_weights(tensor)


@hookimpl
def tinyml_kernel_sources() -> list[Path]:
    return [C_DIR]
