"""The C of an encoded weight tensor: its stream, codebook and code tables, and the `tml_huffman_weights` kernels read.

Everything is `const` (flash). The tensor's symbol names the `tml_huffman_weights` struct; its
parts are `<symbol>_stream`, `_codebook`, `_index_count`/`_index_symbols`/`_index_code` and the
same for `_gap`, so a map file attributes every byte to the layer. A `sparse-csr` tensor's symbol
names a `tml_sparse_weights`, with parts `<symbol>_values`, `_columns`, `_row_counts` and `_row_sums`.
"""

from __future__ import annotations

import numpy as np

from tinyml.ir import Tensor
from tinyml.weights import EncodedTensor, c_array, c_comment, symbol_for
from tinyml_plugins.huffman.codes import SPARSE_CSR, Encoded, HuffmanTable
from tinyml_plugins.huffman.csr import Csr

HEADER = "tml_huffman.h"
SPARSE_HEADER = "tml_sparse.h"


def _table(symbol: str, role: str, table: HuffmanTable | None) -> tuple[list[str], str]:
    """The C of one code table and the expression a `tml_huffman_weights` field takes (NULL: fixed width)."""
    if table is None or not table.symbols:
        return [], "NULL"
    name = f"{symbol}_{role}"
    parts = [
        c_array(
            "uint16_t", f"{name}_count", np.asarray(table.count), f"codes of each length 0..{len(table.count) - 1}"
        ),
        c_array("uint8_t", f"{name}_symbols", np.asarray(table.symbols), f"{role} symbols in code order"),
        f"const tml_huffman_table {name}_code = {{{name}_count, {name}_symbols, {len(table.count) - 1}}};\n",
    ]
    return parts, f"&{name}_code"


def encoded_tensor(tensor: Tensor, encoded: Encoded) -> EncodedTensor:
    """`encoded` as C definitions for model_data.c and the declaration model.c needs."""
    symbol = symbol_for(tensor)
    index_parts, index_code = _table(symbol, "index", encoded.index_table)
    gap_parts, gap_code = _table(symbol, "gap", encoded.gap_table)
    layout = f"sparse, {encoded.entries} entries, gaps {encoded.gap_bits} bits" if encoded.gap_bits else "dense"
    codes = "Huffman-coded" if encoded.index_table is not None else f"{encoded.index_bits}-bit"
    summary = c_comment(
        f"{tensor.name}: int8 {list(tensor.data.shape)} as {encoded.kind} ({layout}, {codes} indices into "
        f"{len(encoded.codebook)} values): {encoded.nbytes} bytes, raw {tensor.data.nbytes}"
    )
    fields = [
        f"    .stream = {symbol}_stream,",
        f"    .codebook = {symbol}_codebook,",
        f"    .index_code = {index_code},",
        f"    .gap_code = {gap_code},",
        f"    .count = {encoded.count},",
        f"    .entries = {encoded.entries},",
        f"    .codebook_size = {len(encoded.codebook)},",
        f"    .stream_bytes = {len(encoded.stream)},",
        f"    .index_bits = {encoded.index_bits},",
        f"    .gap_bits = {encoded.gap_bits},",
    ]
    parts = [
        c_array("uint8_t", f"{symbol}_stream", np.frombuffer(encoded.stream, dtype=np.uint8), "bitstream"),
        c_array("int8_t", f"{symbol}_codebook", encoded.codebook, "the value of each index"),
        *index_parts,
        *gap_parts,
    ]
    return _struct_tensor(symbol, HEADER, "tml_huffman_weights", summary, parts, fields, encoded.nbytes, encoded.kind)


def csr_tensor(tensor: Tensor, csr: Csr) -> EncodedTensor:
    """`csr` as the `tml_sparse_weights` the zero-skipping kernels read (NULL arrays when there are no nonzeros)."""
    symbol = symbol_for(tensor)
    rows, columns = csr.shape
    summary = c_comment(
        f"{tensor.name}: int8 {list(tensor.data.shape)} as {SPARSE_CSR} ({csr.nonzeros} nonzeros of {rows * columns}, "
        f"{csr.column_bytes}-byte columns): {csr.nbytes} bytes, raw {tensor.data.nbytes}"
    )
    parts = [
        c_array("uint16_t", f"{symbol}_row_counts", csr.row_counts, "nonzeros of each row"),
        c_array("int32_t", f"{symbol}_row_sums", csr.row_sums, "the sum of each row's values"),
    ]
    values = columns8 = columns16 = "NULL"
    if csr.nonzeros:
        values = f"{symbol}_values"
        column_type = "uint8_t" if csr.column_bytes == 1 else "uint16_t"
        parts.append(c_array("int8_t", values, csr.values, "the nonzero weights, row by row"))
        parts.append(c_array(column_type, f"{symbol}_columns", csr.columns, "the column of each value"))
        columns8, columns16 = (f"{symbol}_columns", "NULL") if csr.column_bytes == 1 else ("NULL", f"{symbol}_columns")
    fields = [
        f"    .values = {values},",
        f"    .columns8 = {columns8},",
        f"    .columns16 = {columns16},",
        f"    .row_counts = {symbol}_row_counts,",
        f"    .row_sums = {symbol}_row_sums,",
        f"    .rows = {rows},",
        f"    .columns = {columns},",
        f"    .nonzeros = {csr.nonzeros},",
    ]
    return _struct_tensor(symbol, SPARSE_HEADER, "tml_sparse_weights", summary, parts, fields, csr.nbytes, SPARSE_CSR)


def _struct_tensor(
    symbol: str, header: str, c_type: str, summary: str, parts: list[str], fields: list[str], nbytes: int,
    encoding: str,
) -> EncodedTensor:
    """The arrays in `parts` and a `const c_type symbol` struct of `fields` pointing at them."""
    definition = "\n".join(
        [f'#include "{header}"', f"/* {summary} */", *parts, f"const {c_type} {symbol} = {{", *fields, "};", ""]
    )
    return EncodedTensor(
        symbol=symbol,
        declaration=f"extern const {c_type} {symbol};",
        definition=definition,
        nbytes=nbytes,
        encoding=encoding,
    )
