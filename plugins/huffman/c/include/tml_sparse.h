/*
 * tml_sparse.h - int8 kernels over pruned weights stored as compressed sparse rows (CSR).
 *
 * A weight matrix [rows][columns] (fc [out][in], 1x1 conv [out_c][in_c]) keeps only its nonzero
 * values, row by row, each with its column; row_counts[r] says how many belong to row r, and
 * row_sums[r] what they add up to. The kernels walk those nonzeros and nothing else: an output is
 * sum(w * (x[col] + input_offset)) = sum(w * x[col]) + input_offset * row_sums[r] over its row's
 * nonzeros, so the work falls with the sparsity. The integers are the dense
 * kernels' own (zeros add nothing to a sum), and the requantization is theirs, so the outputs
 * equal tml_fc_s8 / tml_conv2d_s8 byte for byte. The format ("sparse-csr") is documented in
 * tinyml_plugins/huffman/codes.py and written by its csr.py; the kernels check the shape and the
 * row counts, not every column (O(rows), not O(nonzeros)).
 */
#ifndef TML_SPARSE_H
#define TML_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "tml_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
/* Nonzero weights by row. Exactly one of columns8 / columns16 is set: one byte a column when the
 * rows are at most 256 long (columns8), two otherwise. Columns ascend within a row. */
typedef struct {
    const int8_t *values;       /* [nonzeros] row 0's nonzeros, then row 1's, ... */
    const uint8_t *columns8;    /* [nonzeros] the column of each value, or NULL */
    const uint16_t *columns16;  /* [nonzeros] the column of each value, or NULL */
    const uint16_t *row_counts; /* [rows] nonzeros in each row */
    const int32_t *row_sums;    /* [rows] the sum of each row's values */
    int32_t rows;               /* output channels */
    int32_t columns;            /* row length: fc in_features, 1x1 conv in_c; 1..65535 */
    int32_t nonzeros;           /* sum of row_counts */
} tml_sparse_weights;

/* tml_fc_s8 over CSR weights [out_features][in_features]: no scratch. */
tml_status tml_sparse_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                            int32_t in_features, const int8_t *input,
                            const tml_sparse_weights *weights, const int32_t *bias,
                            int32_t out_features, int8_t *output);

/* tml_conv2d_s8 with a 1x1 kernel (any stride and padding) over CSR weights [out_c][in_c]: no scratch. */
tml_status tml_sparse_conv1x1_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                 const tml_shape *input_shape, const int8_t *input,
                                 const tml_sparse_weights *weights, const int32_t *bias,
                                 const tml_shape *output_shape, int8_t *output);
/* cdef-end */

#ifdef __cplusplus
}
#endif

#endif /* TML_SPARSE_H */
