/*
 * tml_huffman.c - decoding encoded int8 weights (tml_huffman_weights), a few at a time.
 *
 * Fields are read MSB first from the stream; bit k is bit 7 - k % 8 of byte k / 8. The reader
 * keeps up to 32 bits of the stream in a left-aligned accumulator, loaded a byte at a time; past
 * the stream's data it loads zeros, and a read that used more bits than the stream holds is
 * reported as corrupt. A Huffman code is decoded as in canonical decoders (e.g. zstd's): the next
 * first TML_HUFFMAN_LOOKUP_BITS bits index a look-up table of the short codes (most of a skewed
 * stream); past it, the next TML_HUFFMAN_MAX_BITS bits, left-aligned, are compared with each
 * longer length's limit, shortest first;
 * the first length whose limit is above them is the code's. The limits are computed from the
 * table's counts when the reader starts (in the reader, which the fused kernels keep in their
 * scratch), so the flash holds counts and symbols only.
 */
#include "tml_huffman.h"

#include <stddef.h>
#include <string.h>

/* Top the accumulator up to at least 25 bits. */
static inline void refill(tml_huffman_reader *r)
{
    while (r->acc_bits <= 24) {
        const uint32_t byte = r->next < r->end ? *r->next++ : 0u;
        r->acc |= byte << (24 - r->acc_bits);
        r->acc_bits += 8;
    }
}

static inline int32_t take_bits(tml_huffman_reader *r, int32_t n)
{
    refill(r);
    const int32_t value = (int32_t)(r->acc >> (32 - n));
    r->acc <<= n;
    r->acc_bits -= n;
    r->bits_used += n;
    return value;
}

/* One symbol of a canonical Huffman code, or -1 if the bits are no code of the table. Codes of at most
 * TML_HUFFMAN_LOOKUP_BITS bits are one look-up of the next bits (symbol << 4 | length, 0 for a longer
 * code); longer ones are compared with each length's limit. */
static inline int32_t take_symbol(tml_huffman_reader *r, const tml_huffman_table *table, const uint16_t *lookup,
                                  const uint16_t *limit, const int16_t *base)
{
    refill(r);
    const uint32_t entry = lookup[r->acc >> (32 - TML_HUFFMAN_LOOKUP_BITS)];
    if (entry != 0) {
        const int32_t len = (int32_t)(entry & 15u);
        r->acc <<= len;
        r->acc_bits -= len;
        r->bits_used += len;
        return (int32_t)(entry >> 4);
    }
    const uint32_t window = r->acc >> (32 - TML_HUFFMAN_MAX_BITS);
    for (int32_t len = TML_HUFFMAN_LOOKUP_BITS + 1; len <= table->max_bits; len++) {
        if (window < limit[len]) {
            r->acc <<= len;
            r->acc_bits -= len;
            r->bits_used += len;
            return table->symbols[base[len] + (int32_t)(window >> (TML_HUFFMAN_MAX_BITS - len))];
        }
    }
    return -1;
}

/* Per length: the first code past that length's codes, left-aligned, and where its symbols start; and the
 * look-up of every code of at most TML_HUFFMAN_LOOKUP_BITS bits (each fills the entries its bits begin). */
static int prepare(const tml_huffman_table *t, uint16_t *lookup, uint16_t *limit, int16_t *base)
{
    memset(lookup, 0, sizeof(uint16_t) << TML_HUFFMAN_LOOKUP_BITS);
    if (t == NULL) {
        return 1;
    }
    if (t->count == NULL || t->symbols == NULL || t->max_bits < 0 || t->max_bits > TML_HUFFMAN_MAX_BITS
        || t->count[0] != 0) {
        return 0;
    }
    int32_t first = 0, index = 0;
    limit[0] = 0;
    base[0] = 0;
    for (int32_t len = 1; len <= t->max_bits; len++) {
        const int32_t count = t->count[len];
        if (first + count > (1 << len)) {
            return 0; /* more codes than a length has: not a prefix code */
        }
        base[len] = (int16_t)(index - first);
        limit[len] = (uint16_t)((first + count) << (TML_HUFFMAN_MAX_BITS - len));
        if (len <= TML_HUFFMAN_LOOKUP_BITS) {
            const int32_t spread = TML_HUFFMAN_LOOKUP_BITS - len;
            for (int32_t k = 0; k < count; k++) {
                const uint16_t entry = (uint16_t)(t->symbols[index + k] << 4 | len);
                for (int32_t e = (first + k) << spread; e < (first + k + 1) << spread; e++) {
                    lookup[e] = entry;
                }
            }
        }
        index += count;
        first = (first + count) << 1;
    }
    return 1;
}

_Static_assert(sizeof(tml_huffman_reader) <= TML_HUFFMAN_READER_BYTES, "the reader outgrew its scratch");

int32_t tml_huffman_reader_bytes(void)
{
    return TML_HUFFMAN_READER_BYTES;
}

tml_status tml_huffman_reader_init(tml_huffman_reader *reader, const tml_huffman_weights *weights)
{
    if (reader == NULL || weights == NULL || weights->stream == NULL || weights->codebook == NULL
        || weights->count < 1 || weights->entries < 0 || weights->stream_bytes < 1
        || weights->codebook_size < 1 || weights->codebook_size > 256
        || weights->index_bits < 1 || weights->index_bits > 8 || weights->gap_bits > 8
        || !prepare(weights->index_code, reader->index_lookup, reader->index_limit, reader->index_base)
        || !prepare(weights->gap_code, reader->gap_lookup, reader->gap_limit, reader->gap_base)) {
        return TML_ARG_ERROR;
    }
    reader->weights = weights;
    reader->next = weights->stream;
    reader->end = weights->stream + weights->stream_bytes - 1;
    reader->acc = 0;
    reader->acc_bits = 0;
    reader->bits_used = 0;
    reader->done = 0;
    reader->entries_left = weights->gap_bits != 0 ? weights->entries : 0;
    reader->zeros_left = 0;
    reader->has_value = 0;
    reader->value = 0;
    return TML_OK;
}

/* The next codebook value, or 1000 (no int8) on a corrupt stream. */
static inline int32_t take_value(tml_huffman_reader *r)
{
    const tml_huffman_weights *w = r->weights;
    const int32_t index = w->index_code != NULL
        ? take_symbol(r, w->index_code, r->index_lookup, r->index_limit, r->index_base)
        : take_bits(r, w->index_bits);
    return index >= 0 && index < w->codebook_size ? w->codebook[index] : 1000;
}

static inline int32_t take_gap(tml_huffman_reader *r)
{
    const tml_huffman_weights *w = r->weights;
    return w->gap_code != NULL ? take_symbol(r, w->gap_code, r->gap_lookup, r->gap_limit, r->gap_base)
                               : take_bits(r, w->gap_bits);
}

/* Dense weights: one index per weight, fixed-width or Huffman-coded. */
static int32_t read_dense(tml_huffman_reader *restrict r, int8_t *restrict out, int32_t n)
{
    const tml_huffman_weights *w = r->weights;
    const int8_t *codebook = w->codebook;
    const uint32_t size = (uint32_t)w->codebook_size;
    uint32_t bad = 0;
    if (w->index_code == NULL) {
        const int32_t bits = w->index_bits;
        for (int32_t i = 0; i < n; i++) {
            const uint32_t index = (uint32_t)take_bits(r, bits);
            bad |= index >= size;
            out[i] = codebook[index < size ? index : 0];
        }
    } else {
        for (int32_t i = 0; i < n; i++) {
            const uint32_t index =
                (uint32_t)take_symbol(r, w->index_code, r->index_lookup, r->index_limit, r->index_base);
            bad |= index >= size; /* -1, no code, is past any codebook too */
            out[i] = codebook[index < size ? index : 0];
        }
    }
    return bad != 0;
}

/* The next sparse entry into the reader: `zeros_left` zeros, then `value`; 1 on a corrupt stream. */
static inline int32_t next_entry(tml_huffman_reader *r)
{
    const int32_t gap = take_gap(r);
    const int32_t value = take_value(r);
    if (gap < 0 || value > 127) {
        return 1;
    }
    r->zeros_left = gap;
    r->value = value;
    r->has_value = 1;
    r->entries_left--;
    return 0;
}

/* Sparse weights: (gap, index) entries, the zeros between them written out. */
static int32_t read_sparse(tml_huffman_reader *restrict r, int8_t *restrict out, int32_t n)
{
    const tml_huffman_weights *w = r->weights;
    int32_t i = 0;
    while (i < n) {
        if (!r->has_value) {
            if (r->entries_left == 0) { /* the trailing zeros */
                memset(out + i, 0, (size_t)(n - i));
                break;
            }
            if (next_entry(r)) {
                return 1;
            }
        }
        const int32_t zeros = r->zeros_left < n - i ? r->zeros_left : n - i;
        r->zeros_left -= zeros;
        memset(out + i, 0, (size_t)zeros);
        i += zeros;
        if (i < n) {
            out[i++] = (int8_t)r->value;
            r->has_value = 0;
        }
    }
    /* entries left when the tensor is complete lie past its end */
    return r->done == w->count && (r->has_value || r->entries_left != 0);
}

tml_status tml_huffman_read_s8(tml_huffman_reader *reader, int8_t *out, int32_t n)
{
    if (reader == NULL || reader->weights == NULL || out == NULL || n < 1
        || n > reader->weights->count - reader->done) {
        return TML_ARG_ERROR;
    }
    /* `restrict`: the int8 stores to `out` do not alias the reader, so its state stays in registers. */
    tml_huffman_reader *r = reader;
    r->done += n;
    int32_t bad = r->weights->gap_bits == 0 ? read_dense(r, out, n) : read_sparse(r, out, n);
    bad |= r->bits_used > 8 * (r->weights->stream_bytes - 1); /* read past the stream's data */
    return bad ? TML_ARG_ERROR : TML_OK;
}

/* Sparse weights as a dot product with x: the zeros are skipped, never written. */
static int32_t dot_sparse(tml_huffman_reader *restrict r, const int8_t *restrict x, int32_t n, int32_t *dot,
                          int32_t *sum)
{
    int32_t i = 0, acc = 0, total = 0;
    while (i < n) {
        if (!r->has_value) {
            if (r->entries_left == 0) { /* the trailing zeros */
                break;
            }
            if (next_entry(r)) {
                return 1;
            }
        }
        if (r->zeros_left >= n - i) { /* the entry's weight lies in a later row */
            r->zeros_left -= n - i;
            break;
        }
        i += r->zeros_left;
        r->zeros_left = 0;
        acc += x[i++] * r->value;
        total += r->value;
        r->has_value = 0;
    }
    *dot = acc;
    *sum = total;
    return r->done == r->weights->count && (r->has_value || r->entries_left != 0);
}

tml_status tml_huffman_dot_sparse_s8(tml_huffman_reader *reader, const int8_t *x, int32_t n, int32_t *dot,
                                     int32_t *sum)
{
    if (reader == NULL || reader->weights == NULL || reader->weights->gap_bits == 0 || x == NULL || dot == NULL
        || sum == NULL || n < 1 || n > reader->weights->count - reader->done) {
        return TML_ARG_ERROR;
    }
    tml_huffman_reader *r = reader;
    r->done += n;
    int32_t bad = dot_sparse(r, x, n, dot, sum);
    bad |= r->bits_used > 8 * (r->weights->stream_bytes - 1);
    return bad ? TML_ARG_ERROR : TML_OK;
}

tml_status tml_huffman_decode_s8(const tml_huffman_weights *weights, int8_t *out, tml_huffman_reader *reader)
{
    tml_status status = tml_huffman_reader_init(reader, weights);
    if (status != TML_OK) {
        return status;
    }
    return tml_huffman_read_s8(reader, out, weights->count);
}
