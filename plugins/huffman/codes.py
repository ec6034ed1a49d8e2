"""Weight encodings as bits: fixed-width codebook indices, sparse (gap, index) entries, canonical Huffman.

Every encoding stores a tensor's int8 values (flattened in the layout the kernels read: fc
[out][in], conv OHWI) as indices into its sorted `codebook`, in one bitstream. The C decoders in
`c/src/tml_huffman.c` read exactly this format; `decode` here is their mirror, bit for bit.

The bitstream: fields one after another with no padding between them, each written most
significant bit first; bit k of the stream is bit (7 - k % 8) of byte k // 8. One zero byte
follows the last field, so a fixed-width read may load two bytes at any field.

- dense (`gap_bits == 0`): one index per weight, `count` of them.
- sparse (`gap_bits` 1..8): `entries` pairs (gap, index), the gap first. An entry stands for
  `gap` zeros followed by `codebook[index]`; the weights after the last entry are zeros. A run of
  more than 2**gap_bits - 1 zeros is split with filler entries (gap 2**gap_bits - 1, the index of
  0), as in Han et al.'s Deep Compression. Runs span rows: the tensor is one sequence.
- a field is fixed-width (`index_bits`, `gap_bits` wide) or, when its `HuffmanTable` is set, a
  canonical Huffman code (lengths 1..MAX_CODE_BITS) of that table.

A canonical table is `count[length]` (codes of each length, count[0] = 0) and the symbols in code
order (by length, then symbol). Codes are assigned as in DEFLATE: the first code of each length is
(first code of the length before + its count) << 1; this is what `tml_huffman_symbol` walks.

`sparse-csr` is no bitstream but compressed sparse rows, the form the zero-skipping kernels
(`tml_sparse_fc_s8`, `tml_sparse_conv1x1_s8`, `c/include/tml_sparse.h`) walk without decoding; it
is built and read back by `csr`. The weights as a [rows][columns] matrix (fc [out][in], 1x1 conv
[out_c][in_c]): `values` int8 [nonzeros], the nonzero weights row by row, columns ascending;
`columns` [nonzeros] the column of each, uint8 when a row has at most 256 weights, else uint16
(rows of at most 65535); `row_counts` uint16 [rows], the nonzeros of each row, so row r starts
after the counts of the rows before it; `row_sums` int32 [rows], the sum of each row's values, so
the input offset costs one multiply a row instead of an add a nonzero. Flash: nonzeros x (1 +
column bytes) + 6 x rows + the struct. Larger than `sparse` at the same sparsity, but a nonzero
costs one value load, one column load, one input load and one multiply-accumulate.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

MAX_CODE_BITS = 15  # TML_HUFFMAN_MAX_BITS: longer codes are avoided by flattening the frequencies
STRUCT_BYTES = 36  # sizeof(tml_huffman_weights) on a 32-bit target: 4 pointers, 4 int32, 2 bytes, padding
TABLE_STRUCT_BYTES = 12  # sizeof(tml_huffman_table): 2 pointers and an int32
ENCODINGS = ("packed", "sparse", "huffman")  # the bitstream encodings, decoded by tml_huffman_*
SPARSE_CSR = "sparse-csr"  # compressed sparse rows, read by tml_sparse_* (see `csr`)


class CorruptStreamError(ValueError):
    """The bits do not decode: a Huffman code no table holds, or the stream ends too soon."""


@dataclass(frozen=True)
class HuffmanTable:
    """A canonical Huffman code: `count[length]` codes of each length 0..MAX_CODE_BITS, symbols in code order."""

    count: tuple[int, ...]
    symbols: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Flash of the table in C: uint16 counts, uint8 symbols, the struct (none for an empty code)."""
        return 2 * len(self.count) + len(self.symbols) + TABLE_STRUCT_BYTES if self.symbols else 0

    def codes(self) -> dict[int, tuple[int, int]]:
        """symbol -> (code, length), the canonical assignment."""
        result: dict[int, tuple[int, int]] = {}
        code, index = 0, 0
        for length in range(1, len(self.count)):
            for _ in range(self.count[length]):
                result[self.symbols[index]] = (code, length)
                code += 1
                index += 1
            code <<= 1
        return result


@dataclass(frozen=True)
class Encoded:
    """One tensor's stream and how to read it; `nbytes` is its flash in C, every table and the struct counted."""

    stream: bytes
    codebook: np.ndarray  # int8, sorted
    count: int  # weights in the tensor
    index_bits: int  # 1..8
    gap_bits: int = 0  # 0: dense; 1..8: sparse
    entries: int = 0  # sparse: (gap, index) entries
    index_table: HuffmanTable | None = None
    gap_table: HuffmanTable | None = None

    @property
    def kind(self) -> str:
        """The encoding's name: packed, sparse or huffman."""
        return "huffman" if self.index_table is not None else ("sparse" if self.gap_bits else "packed")

    @property
    def nbytes(self) -> int:
        tables = sum(t.nbytes for t in (self.index_table, self.gap_table) if t is not None)
        return len(self.stream) + len(self.codebook) + tables + STRUCT_BYTES


def bits_for(n: int) -> int:
    """Fixed index width for a codebook of `n` values: ceil(log2(n)), at least 1 (TFLite Micro's rule)."""
    return max(1, int(n - 1).bit_length())


def index_of(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The codebook index of every value; ValueError naming a value the codebook lacks."""
    codebook = np.asarray(codebook, dtype=np.int8)
    flat = np.asarray(values, dtype=np.int8).ravel()
    idx = np.searchsorted(codebook, flat)
    idx = np.minimum(idx, len(codebook) - 1)
    bad = codebook[idx] != flat
    if bad.any():
        missing = sorted({int(v) for v in flat[bad]})[:5]
        raise ValueError(f"values {missing} are not in the codebook {codebook.tolist()}")
    return idx.astype(np.int64)


def _pack(fields: np.ndarray, lengths: np.ndarray) -> bytes:
    """Fields written MSB first, back to back, then one zero byte."""
    fields = np.asarray(fields, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return b"\0"
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(len(fields)), lengths)
    position = np.arange(total) - starts[owner]
    bits = (fields[owner] >> (lengths[owner] - 1 - position)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes() + b"\0"


def huffman_table(symbols: np.ndarray) -> HuffmanTable:
    """A canonical Huffman code for the symbols' frequencies, no code longer than MAX_CODE_BITS.

    One distinct symbol gets a 1-bit code. Where the optimal code would be too long, the
    frequencies are halved (keeping every symbol at least 1) until it is not.
    """
    values, freq = np.unique(np.asarray(symbols, dtype=np.int64), return_counts=True)
    if len(values) == 0:
        return HuffmanTable(count=(0,), symbols=())
    weights = [int(f) for f in freq]
    while True:
        lengths = _code_lengths(weights)
        if max(lengths) <= MAX_CODE_BITS:
            break
        weights = [max(1, w >> 1) for w in weights]
    longest = max(lengths)
    count = [0] * (longest + 1)
    for n in lengths:
        count[n] += 1
    order = sorted(range(len(values)), key=lambda i: (lengths[i], int(values[i])))
    return HuffmanTable(count=tuple(count), symbols=tuple(int(values[i]) for i in order))


def _code_lengths(weights: list[int]) -> list[int]:
    """Huffman code length of each symbol (1 for a lone symbol); ties broken by index, so deterministic."""
    if len(weights) == 1:
        return [1]
    heap = [(w, i, (i,)) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    lengths = [0] * len(weights)
    tiebreak = len(weights)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        for i in a + b:
            lengths[i] += 1
        heapq.heappush(heap, (w1 + w2, tiebreak, a + b))
        tiebreak += 1
    return lengths


def sparse_entries(idx: np.ndarray, zero_index: int | None, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, indices) of the sparse form of the index sequence `idx`, fillers included."""
    nonzero = np.flatnonzero(idx != zero_index) if zero_index is not None else np.arange(len(idx))
    max_gap = (1 << gap_bits) - 1
    gaps, indices = [], []
    previous = -1
    for position in nonzero.tolist():
        gap = position - previous - 1
        while gap > max_gap:  # a filler: max_gap zeros, then the zero itself
            gaps.append(max_gap)
            indices.append(zero_index)
            gap -= max_gap + 1
        gaps.append(gap)
        indices.append(int(idx[position]))
        previous = position
    return np.asarray(gaps, dtype=np.int64), np.asarray(indices, dtype=np.int64)


def encode(values: np.ndarray, codebook: np.ndarray | None, kind: str, gap_bits: int | None = None) -> Encoded:
    """Encode int8 `values` as `kind` (packed, sparse or huffman) over the sorted `codebook`.

    `codebook` None is the values' distinct set. `gap_bits` (1..8) fixes the sparse index width;
    None tries every width and keeps the smallest. `huffman` is the smaller of Huffman-coded
    dense indices and Huffman-coded sparse (gap, index) entries.
    """
    if kind not in ENCODINGS:
        raise ValueError(f"unknown encoding {kind!r}; expected one of {', '.join(ENCODINGS)}")
    values = np.asarray(values, dtype=np.int8).ravel()
    if codebook is None:
        codebook = np.unique(values)
    codebook = np.unique(np.asarray(codebook, dtype=np.int8))
    if len(codebook) == 0:
        codebook = np.zeros(1, dtype=np.int8)
    if len(codebook) > 256:
        raise ValueError("a codebook holds at most 256 int8 values")
    idx = index_of(values, codebook)
    index_bits = bits_for(len(codebook))
    base = dict(codebook=codebook, count=len(values), index_bits=index_bits)
    if kind == "packed":
        return Encoded(stream=_pack(idx, np.full(len(idx), index_bits)), **base)
    widths = [gap_bits] if gap_bits is not None else list(range(1, 9))
    for width in widths:
        if not 1 <= width <= 8:
            raise ValueError(f"gap_bits must be 1..8, got {width}")
    zero = np.searchsorted(codebook, 0)
    zero_index = int(zero) if zero < len(codebook) and codebook[zero] == 0 else None
    candidates = []
    if kind == "huffman":
        table = huffman_table(idx)
        codes = table.codes()
        fields = np.asarray([codes[int(i)][0] for i in idx], dtype=np.int64)
        lengths = np.asarray([codes[int(i)][1] for i in idx], dtype=np.int64)
        candidates.append(Encoded(stream=_pack(fields, lengths), index_table=table, **base))
    for width in widths:
        gaps, indices = sparse_entries(idx, zero_index, width)
        if kind == "sparse":
            fields = np.column_stack([gaps, indices]).ravel()
            lengths = np.tile([width, index_bits], len(gaps))
            candidates.append(Encoded(stream=_pack(fields, lengths), gap_bits=width, entries=len(gaps), **base))
        else:
            gap_table, index_table = huffman_table(gaps), huffman_table(indices)
            gap_codes, index_codes = gap_table.codes(), index_table.codes()
            pairs = [(gap_codes[int(g)], index_codes[int(i)]) for g, i in zip(gaps, indices, strict=True)]
            fields = np.asarray([c for pair in pairs for c, _ in pair], dtype=np.int64)
            lengths = np.asarray([n for pair in pairs for _, n in pair], dtype=np.int64)
            candidates.append(
                Encoded(
                    stream=_pack(fields, lengths), gap_bits=width, entries=len(gaps),
                    index_table=index_table, gap_table=gap_table, **base,
                )
            )  # fmt: skip
    return min(candidates, key=lambda e: e.nbytes)


class BitReader:
    """Reads fields MSB first from a stream, as `tml_huffman_reader` does."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.bit = 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self._next()
        return value

    def _next(self) -> int:
        byte = self.bit >> 3
        if byte >= len(self.stream) - 1:  # the last byte is padding, never data
            raise CorruptStreamError(f"the stream ends at bit {self.bit}")
        value = (self.stream[byte] >> (7 - (self.bit & 7))) & 1
        self.bit += 1
        return value

    def symbol(self, table: HuffmanTable) -> int:
        """One canonical Huffman code of `table`, decoded a bit at a time."""
        code = first = index = 0
        for length in range(1, len(table.count)):
            code |= self._next()
            n = table.count[length]
            if code - first < n:
                return table.symbols[index + code - first]
            index += n
            first = (first + n) << 1
            code <<= 1
        raise CorruptStreamError(f"no code of the table ends at bit {self.bit}")

    def field(self, table: HuffmanTable | None, bits: int) -> int:
        return self.symbol(table) if table is not None else self.read(bits)


def decode(encoded: Encoded) -> np.ndarray:
    """The int8 values `encoded` stores, flattened: the Python mirror of `tml_huffman_read_s8`."""
    reader = BitReader(encoded.stream)
    codebook = encoded.codebook
    out = np.zeros(encoded.count, dtype=np.int8)
    if not encoded.gap_bits:
        for i in range(encoded.count):
            out[i] = codebook[_checked(reader.field(encoded.index_table, encoded.index_bits), codebook)]
        return out
    position = 0
    for _ in range(encoded.entries):
        position += reader.field(encoded.gap_table, encoded.gap_bits)
        value = codebook[_checked(reader.field(encoded.index_table, encoded.index_bits), codebook)]
        if position >= encoded.count:
            raise CorruptStreamError(f"an entry lies past the tensor's {encoded.count} weights")
        out[position] = value
        position += 1
    return out


def _checked(index: int, codebook: np.ndarray) -> int:
    if index >= len(codebook):
        raise CorruptStreamError(f"index {index} is outside the codebook of {len(codebook)} values")
    return index
