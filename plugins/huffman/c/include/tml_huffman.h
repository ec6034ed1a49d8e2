/*
 * tml_huffman.h - compressed int8 weights and the kernels that decode them as they run.
 *
 * A tensor's int8 weights (flattened as the plain kernels read them: fc [out][in], conv OHWI)
 * are stored as indices into a small codebook, in one bitstream: fixed-width indices of 1..8
 * bits ("packed"), (gap, index) entries that skip zeros ("sparse"), or either with canonical
 * Huffman codes ("huffman"). The format is documented in tinyml_plugins/huffman/codes.py,
 * whose Python decoder gives the same values bit for bit.
 *
 * The fused kernels decode one output channel's weights (an fc row, a conv filter) into a
 * scratch buffer and use it before decoding the next, so weights cost flash only and the RAM
 * they take is the scratch that tml_huffman_*_scratch_bytes names: the decoder's state (a
 * tml_huffman_reader, tml_huffman_reader_bytes) followed by one row or filter. An fc layer whose
 * weights are sparse is not decoded into a row at all: each entry's weight is multiplied as it is
 * read, so the zeros cost nothing. Results equal tml_fc_s8 / tml_conv2d_s8 on the decoded weights
 * byte for byte.
 */
#ifndef TML_HUFFMAN_H
#define TML_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

#include "tml_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
#define TML_HUFFMAN_MAX_BITS 15 /* longest Huffman code */
#define TML_HUFFMAN_LOOKUP_BITS 6 /* codes this short are decoded by one table look-up */
#define TML_HUFFMAN_READER_BYTES 448 /* scratch kept for a tml_huffman_reader on any target, 32 or 64-bit */

/* A canonical Huffman code. count[len] codes have length len (count[0] == 0, len <= max_bits);
 * symbols[] lists the symbols in code order: by length, then by symbol. */
typedef struct {
    const uint16_t *count;  /* [max_bits + 1] */
    const uint8_t *symbols; /* [sum of count] */
    int32_t max_bits;       /* 1..TML_HUFFMAN_MAX_BITS; 0 for an empty code */
} tml_huffman_table;

/* One encoded weight tensor. `stream` holds fields written MSB first, back to back; one padding
 * byte follows the last. gap_bits == 0: `count` indices, one per weight. gap_bits 1..8: `entries`
 * (gap, index) pairs, each `gap` zero weights then codebook[index]; weights after the last entry
 * are zero. A field is a Huffman code of its table, or a fixed-width number when the table is NULL. */
typedef struct {
    const uint8_t *stream;
    const int8_t *codebook;               /* [at most 256] the value of each index */
    const tml_huffman_table *index_code;  /* NULL: indices are index_bits wide */
    const tml_huffman_table *gap_code;    /* NULL: gaps are gap_bits wide */
    int32_t count;                        /* weights in the tensor, >= 1 */
    int32_t entries;                      /* sparse entries (0 when dense) */
    int32_t codebook_size;                /* 1..256 */
    int32_t stream_bytes;                 /* bytes of stream, padding included */
    uint8_t index_bits;                   /* 1..8 */
    uint8_t gap_bits;                     /* 0 dense, 1..8 sparse */
} tml_huffman_weights;

/* Where decoding stands; set up by tml_huffman_reader_init, opaque to callers. The fused kernels keep
 * it at the start of their scratch (4-byte aligned), not on the stack, so the memory plan holds it. `acc` holds the
 * next `acc_bits` bits of the stream left-aligned; `limit` and `base` are each table's canonical
 * code in the form a decode takes (per length, the first code past it left-aligned to
 * TML_HUFFMAN_MAX_BITS bits, and the symbols[] position of code 0 of that length); `*_lookup`
 * decodes the codes of at most TML_HUFFMAN_LOOKUP_BITS bits by their first bits. All are built from
 * the table's counts and symbols when the reader starts, so flash holds those only. A sparse
 * entry read but not yet placed is `zeros_left` zeros, then `value`. */
typedef struct {
    const tml_huffman_weights *weights;
    const uint8_t *next;   /* next byte to load into acc */
    const uint8_t *end;    /* the padding byte: zeros are loaded from here on */
    uint32_t acc;
    int32_t acc_bits;
    int32_t bits_used;     /* bits taken from the stream so far */
    int32_t done;          /* weights decoded so far */
    int32_t entries_left;
    int32_t zeros_left;
    int32_t has_value;
    int32_t value;
    uint16_t index_limit[TML_HUFFMAN_MAX_BITS + 1];
    int16_t index_base[TML_HUFFMAN_MAX_BITS + 1];
    uint16_t gap_limit[TML_HUFFMAN_MAX_BITS + 1];
    int16_t gap_base[TML_HUFFMAN_MAX_BITS + 1];
    uint16_t index_lookup[1 << TML_HUFFMAN_LOOKUP_BITS]; /* symbol << 4 | length by the next bits; 0: longer */
    uint16_t gap_lookup[1 << TML_HUFFMAN_LOOKUP_BITS];
} tml_huffman_reader;

/* The scratch the decoder's state takes at the start of a fused kernel's scratch: TML_HUFFMAN_READER_BYTES,
 * at least sizeof(tml_huffman_reader) with 32 or 64-bit pointers, a multiple of 8, so the row or filter
 * after it starts at the same offset whatever the target. */
int32_t tml_huffman_reader_bytes(void);

/* Start decoding `weights` from its first weight; TML_ARG_ERROR if its fields are out of range. */
tml_status tml_huffman_reader_init(tml_huffman_reader *reader, const tml_huffman_weights *weights);

/* Decode the next `n` weights (1..count - already decoded) into out[n]. TML_ARG_ERROR on a
 * corrupt stream: a code no table holds, an index past the codebook, bits past the stream. */
tml_status tml_huffman_read_s8(tml_huffman_reader *reader, int8_t *out, int32_t n);

/* For sparse weights (gap_bits 1..8): the next n weights (1..count - already decoded) as a row, without
 * writing them out: *dot = sum(x[i] * w[i]) and *sum = sum(w[i]) over the row's nonzeros, int32 with
 * wrap-around. TML_ARG_ERROR for dense weights and on a corrupt stream, as tml_huffman_read_s8. */
tml_status tml_huffman_dot_sparse_s8(tml_huffman_reader *reader, const int8_t *x, int32_t n, int32_t *dot,
                                     int32_t *sum);

/* Decode the whole tensor into out[weights->count], `reader` (in scratch, TML_HUFFMAN_READER_BYTES) as
 * the state: a layer whose kernel cannot decode inside (depthwise) is decoded into scratch this way
 * just before the core kernel runs on it. */
tml_status tml_huffman_decode_s8(const tml_huffman_weights *weights, int8_t *out, tml_huffman_reader *reader);

/* tml_fc_s8 with encoded weights [out_features][in_features]: decodes one row into `scratch`
 * (4-byte aligned, tml_huffman_fc_s8_scratch_bytes(in_features) bytes: the reader, then the row),
 * multiplies it, then the next row; sparse weights are multiplied entry by entry as they are read.
 * params->folded_bias, when set, replaces bias and input_offset as for tml_fc_s8. */
tml_status tml_huffman_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                             int32_t in_features, const int8_t *input,
                             const tml_huffman_weights *weights, const int32_t *bias,
                             int32_t out_features, int8_t *output, int8_t *scratch);
int32_t tml_huffman_fc_s8_scratch_bytes(int32_t in_features);

/* tml_conv2d_s8 with encoded OHWI weights: decodes one filter (k_h * k_w * in_c weights) into
 * `scratch` (4-byte aligned, tml_huffman_conv2d_s8_scratch_bytes bytes: the reader, then the
 * filter) and runs it over the whole output before
 * decoding the next. Output channel o is written at output[pixel * out_c + o], as tml_conv2d_s8 does. */
tml_status tml_huffman_conv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                 const tml_shape *input_shape, const int8_t *input,
                                 const tml_shape *filter_shape, const tml_huffman_weights *weights,
                                 const int32_t *bias,
                                 const tml_shape *output_shape, int8_t *output, int8_t *scratch);
int32_t tml_huffman_conv2d_s8_scratch_bytes(const tml_shape *filter_shape);
/* cdef-end */

#ifdef __cplusplus
}
#endif

#endif /* TML_HUFFMAN_H */
