"""huffman: compressed int8 weights on the device, decoded inside the kernels (Deep Compression's last stage).

A graph technique `huffman` chooses per layer how fc, conv2d and dwconv2d weights are stored:

- `packed`: fixed-width codebook indices of 1..8 bits (TFLite Micro's compression);
- `sparse`: nonzeros as (gap to the previous one, index) entries, a filler entry when a gap
  overflows its width (Han et al., Deep Compression);
- `huffman`: canonical Huffman codes per layer over the indices, or over the sparse gaps and
  indices, whichever is smaller;
- `sparse-csr`: the nonzeros by row with their columns (compressed sparse rows), read as stored
  by kernels that skip the zeros (`tml_sparse_fc_s8`, `tml_sparse_conv1x1_s8`): fc and 1x1
  convolutions only, chosen by `auto` where the layer's sparsity is past the measured crossover.

`tinyml_encode_weights` writes the stream, codebook and code tables as C arrays (see `codes`
for the bit format, `storage` for the C); `tinyml_select_kernel` gives those layers kernels that
decode one fc row or conv filter into scratch at a time (`kernels`; sparse fc rows are multiplied
as they are read), so compressed weights cost flash only, and the outputs equal the plain int8
kernels' byte for byte. A depthwise layer, whose kernel cannot decode inside, is decoded whole
into scratch just before the core kernel runs. The decoder's state is scratch too: all the RAM
decoding takes is in the memory plan. The C is in
`c/` (`tml_huffman.h`), compiled into every host and board build.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tinyml.errors import TinymlError
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, Tensor
from tinyml.kernels import Kernel
from tinyml.weights import EncodedTensor
from tinyml_plugins.huffman import codes, csr, kernels, storage
from tinyml_plugins.huffman.technique import Huffman

if TYPE_CHECKING:
    from tinyml.board.boards import Board
    from tinyml.technique import Technique

C_DIR = Path(__file__).resolve().parent / "c"


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [Huffman]


@hookimpl
def tinyml_encode_weights(tensor: Tensor, board: Board | None) -> EncodedTensor | None:
    """The C of a tensor whose `encoding` is packed, sparse, huffman or sparse-csr; None for raw ones."""
    if tensor.encoding not in kernels.STORED:
        return None
    if tensor.dtype != "int8":
        raise TinymlError(f"Constant `{tensor.name}` is {tensor.dtype}; only int8 weights can be {tensor.encoding}.")
    if tensor.encoding == codes.SPARSE_CSR:
        try:
            return storage.csr_tensor(tensor, csr.encode_csr(tensor.data))
        except ValueError as err:
            raise TinymlError(f"Constant `{tensor.name}` cannot be stored {tensor.encoding}: {err}.") from None
    try:
        encoded = codes.encode(tensor.data, tensor.codebook, tensor.encoding)
    except ValueError as err:
        raise TinymlError(f"Constant `{tensor.name}` cannot be stored {tensor.encoding}: {err}.") from None
    return storage.encoded_tensor(tensor, encoded)


@hookimpl
def tinyml_select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    return kernels.select_kernel(node, graph, board)


@hookimpl
def tinyml_kernel_sources() -> list[Path]:
    return [C_DIR]
