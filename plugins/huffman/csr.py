"""Compressed sparse rows (`sparse-csr`): the storage the zero-skipping kernels walk.

The format is in `codes` (module docstring); this module builds it from a weight tensor, reads
it back, and counts its flash. Unlike the bitstream encodings, nothing here is a codebook index:
the values are the int8 weights themselves, so a kernel reads a value and its column with one
load each and no decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_COLUMNS = 65535  # columns and row counts are uint16
BYTE_COLUMNS = 256  # rows this long or shorter store one byte per column
STRUCT_BYTES = 32  # sizeof(tml_sparse_weights) on a 32-bit target: 5 pointers, 3 int32


@dataclass(frozen=True)
class Csr:
    """A [rows][columns] int8 matrix's nonzeros by row: values, their columns, each row's count and sum."""

    values: np.ndarray  # int8 [nonzeros]
    columns: np.ndarray  # uint8 or uint16 [nonzeros], ascending within a row
    row_counts: np.ndarray  # uint16 [rows]
    row_sums: np.ndarray  # int32 [rows]: the kernels take input_offset * row sum once per row
    shape: tuple[int, int]

    @property
    def column_bytes(self) -> int:
        return int(self.columns.dtype.itemsize)

    @property
    def nonzeros(self) -> int:
        return len(self.values)

    @property
    def nbytes(self) -> int:
        """Flash in C: values, columns, row counts and sums, and the struct."""
        return self.nonzeros * (1 + self.column_bytes) + 6 * self.shape[0] + STRUCT_BYTES


def as_matrix(values: np.ndarray) -> np.ndarray:
    """A weight tensor as the [rows][columns] matrix the kernels read: fc [out][in], 1x1 conv OHWI [out][in_c]."""
    values = np.asarray(values, dtype=np.int8)
    return values.reshape(values.shape[0], -1)


def encode_csr(values: np.ndarray) -> Csr:
    """The CSR form of an int8 weight tensor (first axis: rows); ValueError when a row is too long."""
    matrix = as_matrix(values)
    rows, columns = matrix.shape
    if columns > MAX_COLUMNS:
        raise ValueError(f"rows of {columns} weights are longer than sparse-csr's {MAX_COLUMNS}")
    row_index, column_index = np.nonzero(matrix)  # row-major: rows in order, columns ascending
    column_type = np.uint8 if columns <= BYTE_COLUMNS else np.uint16
    return Csr(
        values=matrix[row_index, column_index].astype(np.int8),
        columns=column_index.astype(column_type),
        row_counts=np.bincount(row_index, minlength=rows).astype(np.uint16),
        row_sums=matrix.astype(np.int32).sum(axis=1, dtype=np.int32),
        shape=(rows, columns),
    )


def decode_csr(csr: Csr) -> np.ndarray:
    """The dense [rows][columns] int8 matrix `csr` stores."""
    matrix = np.zeros(csr.shape, dtype=np.int8)
    rows = np.repeat(np.arange(csr.shape[0]), csr.row_counts.astype(np.int64))
    matrix[rows, csr.columns.astype(np.int64)] = csr.values
    return matrix
