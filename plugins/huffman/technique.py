"""The `huffman` technique: choose how each fc, conv2d and dwconv2d layer's int8 weights are stored.

It runs after `quantize-int8` (and after `share-weights`, whose codebook it keeps) and only marks
tensors: it sets `Tensor.encoding` and, when no technique set one, `Tensor.codebook` to the
weights' distinct values. The bits are written at code generation by `tinyml_encode_weights`.

Two choices are made per layer: `auto` keeps the smallest storage in bytes; `speed` gives an fc
or 1x1 conv layer whose sparsity is past the measured crossover (`kernels.SPARSE_CROSSOVER`) the
zero-skipping kernel over `sparse-csr`, and every other layer raw int8 and the dense kernels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinyml.errors import RecipeError, TinymlError
from tinyml.ir import Graph, Node, Tensor
from tinyml.technique import Context, Technique
from tinyml_plugins.huffman.codes import ENCODINGS, SPARSE_CSR, encode, index_of
from tinyml_plugins.huffman.csr import encode_csr
from tinyml_plugins.huffman.kernels import ENCODED_OPS, reads_sparse_rows, sparse_is_faster

Choice = Literal["huffman", "packed", "sparse", "sparse-csr", "auto", "speed", "raw"]


class HuffmanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoding: Choice = Field(
        "huffman",
        description="storage of every fc, conv2d and dwconv2d layer's weights: huffman (canonical Huffman codes over "
        "codebook indices, or over sparse gaps and indices, whichever is smaller), packed (fixed-width "
        "indices), sparse (nonzeros with relative indices), sparse-csr (nonzeros by row with their columns, "
        "read by kernels that skip the zeros; fc and 1x1 conv2d only), raw, auto (the smallest in bytes) or "
        "speed (sparse-csr where a layer's sparsity is past the measured crossover of the sparse kernels, "
        "else raw)",
    )
    layers: dict[str, Choice] = Field(
        default_factory=dict, description="per-layer overrides of `encoding`, by layer name"
    )


def stored_bytes(tensor: Tensor, encoding: str) -> int:
    """Flash the tensor's weights take as `encoding` (raw: the int8 array), tables and struct included."""
    if encoding == "raw":
        return int(tensor.data.nbytes)
    if encoding == SPARSE_CSR:
        return encode_csr(tensor.data).nbytes
    return encode(tensor.data, tensor.codebook, encoding).nbytes


class Huffman(Technique):
    """Compressed weight storage (packed, sparse or Huffman-coded), decoded inside the kernels."""

    name = "huffman"
    stage = "graph"
    Options = HuffmanOptions
    reduces = ("flash",)

    def apply(self, graph: Graph, context: Context) -> Graph:
        if not graph.is_quantized:
            raise RecipeError(
                "Technique 'huffman' encodes int8 weights: list it after `quantize-int8` in the recipe's techniques."
            )
        layers = {node.name: node for node in graph.nodes if node.op in ENCODED_OPS}
        unknown = sorted(set(self.options.layers) - set(layers))
        if unknown:
            raise RecipeError(
                f"technique 'huffman' option `layers` names {', '.join(map(repr, unknown))}, which is no fc, conv2d or "
                f"dwconv2d layer of the model; its layers with weights are: {', '.join(layers) or 'none'}."
            )
        graph = graph.copy()
        for name, node in layers.items():
            choice = self.options.layers.get(name, self.options.encoding)
            weight = graph.tensors[node.inputs[1]]
            if weight.dtype != "int8":
                raise TinymlError(f"Layer `{name}` has {weight.dtype} weights; technique 'huffman' encodes int8 only.")
            if weight.codebook is None:
                weight.codebook = np.unique(weight.data)
            else:
                try:
                    index_of(weight.data, np.unique(weight.codebook))
                except ValueError as err:
                    raise TinymlError(f"Layer `{name}`'s weights do not fit its codebook: {err}.") from None
            if choice == "auto":
                choice = min(("raw", *ENCODINGS), key=lambda e: stored_bytes(weight, e))
            elif choice == "speed":
                choice = SPARSE_CSR if sparse_is_faster(node, graph, context.board) else "raw"
            elif choice == SPARSE_CSR:
                _check_sparse_rows(node, graph)
            weight.encoding = choice
        return graph


def _check_sparse_rows(node: Node, graph: Graph) -> None:
    if not reads_sparse_rows(node, graph):
        kh, kw = graph.tensors[node.inputs[1]].shape[1:3]
        raise RecipeError(
            f"technique 'huffman' stores layer `{node.name}` as {SPARSE_CSR}, but it is a {kh}x{kw} convolution and "
            f"only fc layers and 1x1 convolutions have kernels that read {SPARSE_CSR}; choose another encoding for it "
            "(option `layers`), or `speed`, which uses the sparse kernels only where they run."
        )
