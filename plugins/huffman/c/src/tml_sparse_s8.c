/*
 * tml_sparse_s8.c - int8 fully connected and 1x1 convolution over CSR weights (tml_sparse_weights).
 *
 * Each output channel walks its row's nonzeros (value, column) and nothing else: its output is
 * input_offset * row_sums[o] + sum(w * x[col]), the offset term taken once per channel as
 * tml_conv2d_s8 takes it (the stored row sum saves a pass over the row, and an add per nonzero
 * in a fully connected layer); a 1x1 convolution's pixel in the padding is 0. These are the dense
 * kernels' integers (a zero weight adds nothing), and the requantization is theirs (tml_requant,
 * prepared once per channel), so the outputs equal theirs byte for byte. A pointwise convolution
 * walks each row once for two pixels.
 */
#include "tml_sparse.h"
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* sum(x[col[i]] * v[i]) over a row's n nonzeros, for one column width; unrolled by four. */
#define TML_SPARSE_DOT(name, column_type)                                                          \
    static inline int32_t name(const int8_t *v, const column_type *col, int32_t n, const int8_t *x) \
    {                                                                                              \
        int32_t acc = 0;                                                                           \
        for (; n >= 4; n -= 4, v += 4, col += 4) {                                                 \
            acc += x[col[0]] * v[0];                                                               \
            acc += x[col[1]] * v[1];                                                               \
            acc += x[col[2]] * v[2];                                                               \
            acc += x[col[3]] * v[3];                                                               \
        }                                                                                          \
        for (; n > 0; n--) {                                                                       \
            acc += x[*col++] * *v++;                                                               \
        }                                                                                          \
        return acc;                                                                                \
    }

TML_SPARSE_DOT(dot_u8, uint8_t)
TML_SPARSE_DOT(dot_u16, uint16_t)

/* The int8 output of a sum: requantized as prepared in q (one SMLAL where `fast`), clamped, offset. */
static inline __attribute__((always_inline)) int8_t channel_output(const tml_requant *q, int32_t acc, int32_t fast,
                                                                   const tml_conv_params *p)
{
    return tml_clamp_output(tml_requant_apply_as(q, acc, fast), p->output_offset, p->act_min, p->act_max);
}

/* One output channel of a pointwise 1x1 convolution (stride 1, no padding) over all `pixels` of the
 * input matrix x [pixels][in_c]: two pixels at a time share each nonzero's value and column loads.
 * `fast` is q->fast, passed as a constant by the caller so the requantization step is chosen once. */
#define TML_SPARSE_POINTWISE(name, column_type)                                                            \
    static inline __attribute__((always_inline)) void name(                                                \
        const int8_t *v, const column_type *col, int32_t n, const int8_t *x, int32_t pixels, int32_t in_c, \
        int32_t start, const tml_requant *q, int32_t fast, const tml_conv_params *p, int8_t *out,          \
        int32_t out_c)                                                                                     \
    {                                                                                                      \
        int32_t i = 0;                                                                                     \
        for (; i + 2 <= pixels; i += 2, x += 2 * in_c, out += 2 * out_c) {                                 \
            const int8_t *x1 = x + in_c;                                                                   \
            int32_t a0 = start, a1 = start;                                                                \
            for (int32_t k = 0; k < n; k++) {                                                              \
                const int32_t c = col[k], w = v[k];                                                        \
                a0 += x[c] * w;                                                                            \
                a1 += x1[c] * w;                                                                           \
            }                                                                                              \
            out[0] = channel_output(q, a0, fast, p);                                                       \
            out[out_c] = channel_output(q, a1, fast, p);                                                   \
        }                                                                                                  \
        if (i < pixels) {                                                                                  \
            int32_t a0 = start;                                                                            \
            for (int32_t k = 0; k < n; k++) {                                                              \
                a0 += x[col[k]] * v[k];                                                                    \
            }                                                                                              \
            out[0] = channel_output(q, a0, fast, p);                                                       \
        }                                                                                                  \
    }

TML_SPARSE_POINTWISE(pointwise_u8, uint8_t)
TML_SPARSE_POINTWISE(pointwise_u16, uint16_t)

/* Where one row's nonzeros start; advanced row by row. */
typedef struct {
    const int8_t *values;
    const uint8_t *columns8;
    const uint16_t *columns16;
} row_cursor;

static inline int32_t row_dot(const row_cursor *r, int32_t n, const int8_t *x)
{
    return r->columns8 != NULL ? dot_u8(r->values, r->columns8, n, x) : dot_u16(r->values, r->columns16, n, x);
}

static inline void next_row(row_cursor *r, int32_t n)
{
    r->values += n;
    if (r->columns8 != NULL) {
        r->columns8 += n;
    } else {
        r->columns16 += n;
    }
}

/* The weights are usable for `rows` x `columns`: arrays set where there are nonzeros, one column
 * width (bytes only for rows of at most 256), row counts that add up. O(rows), no column checked. */
static int weights_valid(const tml_sparse_weights *w, int32_t rows, int32_t columns)
{
    if (w == NULL || w->row_counts == NULL || w->row_sums == NULL || w->rows != rows || w->columns != columns
        || columns < 1 || columns > 65535 || w->nonzeros < 0) {
        return 0;
    }
    if (w->nonzeros > 0
        && (w->values == NULL || (w->columns8 == NULL) == (w->columns16 == NULL)
            || (w->columns8 != NULL && columns > 256))) {
        return 0;
    }
    int32_t total = 0;
    for (int32_t r = 0; r < rows; r++) {
        if (w->row_counts[r] > columns) {
            return 0;
        }
        total += w->row_counts[r];
    }
    return total == w->nonzeros;
}

static row_cursor cursor_at(const tml_sparse_weights *w)
{
    const row_cursor r = {w->values, w->columns8, w->columns8 == NULL ? w->columns16 : NULL};
    return r;
}

tml_status tml_sparse_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                            int32_t in_features, const int8_t *input,
                            const tml_sparse_weights *weights, const int32_t *bias,
                            int32_t out_features, int8_t *output)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input == NULL
        || output == NULL || out_features < 1 || params->act_min > params->act_max
        || !weights_valid(weights, out_features, in_features)) {
        return TML_ARG_ERROR;
    }
    const tml_fc_params p = *params; /* a copy the int8 output stores cannot alias */
    row_cursor row = cursor_at(weights);
    for (int32_t o = 0; o < out_features; o++) {
        const int32_t n = weights->row_counts[o];
        const int32_t acc = p.input_offset * weights->row_sums[o] + row_dot(&row, n, input);
        next_row(&row, n);
        output[o] = tml_requantize_output(acc, bias != NULL ? bias[o] : 0, quant->multiplier[o], quant->shift[o],
                                          p.output_offset, p.act_min, p.act_max);
    }
    return TML_OK;
}

tml_status tml_sparse_conv1x1_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                 const tml_shape *input_shape, const int8_t *input,
                                 const tml_sparse_weights *weights, const int32_t *bias,
                                 const tml_shape *output_shape, int8_t *output)
{
    if (input_shape == NULL || output_shape == NULL) {
        return TML_ARG_ERROR;
    }
    const tml_shape filter = {1, 1, input_shape->c};
    /* the kernel reads no dense filter: the input stands in for it in the shared argument check */
    if (!tml_conv_args_valid(params, quant, input_shape, input, &filter, input, output_shape, output)
        || !weights_valid(weights, output_shape->c, input_shape->c)) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params p = *params;
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t out_h = output_shape->h, out_w = output_shape->w, out_c = output_shape->c;
    const int pointwise = p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
    const int32_t pixels = out_h * out_w;
    row_cursor row = cursor_at(weights);
    for (int32_t o = 0; o < out_c; o++) {
        const int32_t n = weights->row_counts[o];
        const int32_t weight_offset = p.input_offset * weights->row_sums[o];
        const tml_requant q = tml_requant_make(bias != NULL ? bias[o] : 0, quant->multiplier[o], quant->shift[o]);
        int8_t *out = output + o;
        if (pointwise) { /* the input is one [pixels][in_c] matrix, read in order */
            if (row.columns8 != NULL && q.fast) {
                pointwise_u8(row.values, row.columns8, n, input, pixels, in_c, weight_offset, &q, 1, &p, out, out_c);
            } else if (row.columns8 != NULL) {
                pointwise_u8(row.values, row.columns8, n, input, pixels, in_c, weight_offset, &q, 0, &p, out, out_c);
            } else if (q.fast) {
                pointwise_u16(row.values, row.columns16, n, input, pixels, in_c, weight_offset, &q, 1, &p, out, out_c);
            } else {
                pointwise_u16(row.values, row.columns16, n, input, pixels, in_c, weight_offset, &q, 0, &p, out, out_c);
            }
            next_row(&row, n);
            continue;
        }
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t iy = oy * p.stride_h - p.pad_h;
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t ix = ox * p.stride_w - p.pad_w;
                int32_t acc = 0;
                if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
                    acc = weight_offset + row_dot(&row, n, input + (iy * in_w + ix) * in_c);
                }
                *out = channel_output(&q, acc, q.fast, &p);
                out += out_c;
            }
        }
        next_row(&row, n);
    }
    return TML_OK;
}
