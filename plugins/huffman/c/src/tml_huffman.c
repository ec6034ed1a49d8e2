/*
 * tml_huffman.c - decoding encoded int8 weights (tml_huffman_weights), a few at a time.
 *
 * Fields are read MSB first from the stream; bit k is bit 7 - k % 8 of byte k / 8. A fixed-width
 * field of up to 8 bits lies within two bytes, so it is read with one 16-bit window (the stream
 * ends in a padding byte for this). A Huffman code is walked one bit at a time through the
 * canonical table (as zlib's puff.c does): no lookup table, nothing in RAM but the reader.
 */
#include "tml_huffman.h"

#include <stddef.h>

static int32_t read_bits(tml_huffman_reader *r, int32_t n)
{
    const tml_huffman_weights *w = r->weights;
    const int32_t byte = r->bit >> 3;
    if (((r->bit + n + 7) >> 3) > w->stream_bytes - 1) { /* the padding byte is never data */
        return -1;
    }
    const uint32_t window = ((uint32_t)w->stream[byte] << 8) | w->stream[byte + 1];
    const int32_t value = (int32_t)((window >> (16 - (r->bit & 7) - n)) & ((1u << n) - 1u));
    r->bit += n;
    return value;
}

/* One symbol of a canonical Huffman code, or -1 if the bits are no code of the table. */
static int32_t read_symbol(tml_huffman_reader *r, const tml_huffman_table *table)
{
    int32_t code = 0, first = 0, index = 0;
    for (int32_t len = 1; len <= table->max_bits; len++) {
        const int32_t bit = read_bits(r, 1);
        if (bit < 0) {
            return -1;
        }
        code |= bit;
        const int32_t count = table->count[len];
        if (code - first < count) {
            return table->symbols[index + code - first];
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

static int32_t read_field(tml_huffman_reader *r, const tml_huffman_table *table, int32_t bits)
{
    return table != NULL ? read_symbol(r, table) : read_bits(r, bits);
}

static int table_valid(const tml_huffman_table *t)
{
    return t == NULL
        || (t->count != NULL && t->symbols != NULL && t->max_bits >= 0 && t->max_bits <= TML_HUFFMAN_MAX_BITS);
}

tml_status tml_huffman_reader_init(tml_huffman_reader *reader, const tml_huffman_weights *weights)
{
    if (reader == NULL || weights == NULL || weights->stream == NULL || weights->codebook == NULL
        || weights->count < 1 || weights->entries < 0 || weights->stream_bytes < 1
        || weights->codebook_size < 1 || weights->codebook_size > 256
        || weights->index_bits < 1 || weights->index_bits > 8 || weights->gap_bits > 8
        || !table_valid(weights->index_code) || !table_valid(weights->gap_code)) {
        return TML_ARG_ERROR;
    }
    reader->weights = weights;
    reader->bit = 0;
    reader->done = 0;
    reader->entries_left = weights->gap_bits != 0 ? weights->entries : 0;
    reader->zeros_left = 0;
    reader->has_value = 0;
    reader->value = 0;
    return TML_OK;
}

/* The next codebook value, or TML_ARG_ERROR (as a value outside int8) on a corrupt stream. */
static int32_t read_value(tml_huffman_reader *r)
{
    const tml_huffman_weights *w = r->weights;
    const int32_t index = read_field(r, w->index_code, w->index_bits);
    if (index < 0 || index >= w->codebook_size) {
        return 1000;
    }
    return w->codebook[index];
}

tml_status tml_huffman_read_s8(tml_huffman_reader *reader, int8_t *out, int32_t n)
{
    if (reader == NULL || reader->weights == NULL || out == NULL || n < 1 || n > reader->weights->count - reader->done) {
        return TML_ARG_ERROR;
    }
    tml_huffman_reader *r = reader;
    const tml_huffman_weights *w = r->weights;
    r->done += n;
    if (w->gap_bits == 0) {
        for (int32_t i = 0; i < n; i++) {
            const int32_t value = read_value(r);
            if (value > 127) {
                return TML_ARG_ERROR;
            }
            out[i] = (int8_t)value;
        }
        return TML_OK;
    }
    int32_t i = 0;
    while (i < n) {
        if (!r->has_value) {
            if (r->entries_left == 0) { /* the trailing zeros */
                for (; i < n; i++) {
                    out[i] = 0;
                }
                break;
            }
            const int32_t gap = read_field(r, w->gap_code, w->gap_bits);
            const int32_t value = read_value(r);
            if (gap < 0 || value > 127) {
                return TML_ARG_ERROR;
            }
            r->zeros_left = gap;
            r->value = value;
            r->has_value = 1;
            r->entries_left--;
        }
        for (; r->zeros_left > 0 && i < n; r->zeros_left--) {
            out[i++] = 0;
        }
        if (i < n) {
            out[i++] = (int8_t)r->value;
            r->has_value = 0;
        }
    }
    if (r->done == w->count && (r->has_value || r->entries_left != 0)) {
        return TML_ARG_ERROR; /* entries left over: they lie past the tensor */
    }
    return TML_OK;
}

tml_status tml_huffman_decode_s8(const tml_huffman_weights *weights, int8_t *out)
{
    tml_huffman_reader reader;
    tml_status status = tml_huffman_reader_init(&reader, weights);
    if (status != TML_OK) {
        return status;
    }
    return tml_huffman_read_s8(&reader, out, weights->count);
}
