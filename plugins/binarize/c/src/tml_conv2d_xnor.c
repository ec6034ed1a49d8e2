/*
 * tml_conv2d_xnor - binary convolution, 32 output channels at a time in bit-sliced counters.
 *
 * For each input column under the window the offsets of its set input bits (over the window's real
 * rows; padded cells are skipped) are listed once in scratch, in a ring of filter.w column lists
 * that sliding windows share: a stride-1 row lists one new column per output pixel. For each block
 * of 32 output channels the weight words at those offsets (moved by the column's place in the
 * window) are counted lane by lane (tml_xnor_count_add); each channel's dot product
 * d = 4V - 2A - 2S + n then gives its int8 output as tml_conv2d_s8 would (bias + m * (n - 2S) is
 * computed once per channel for the windows off the padding). Layout in tml_xnor.h.
 */
#include "tml_xnor.h"

int32_t tml_conv2d_xnor_scratch_bytes(const tml_shape *filter_shape, int32_t out_channels)
{
    /* filter.w column lists of the byte offsets of set bits' words (uint32, filter.h * filter.c each at most),
     * the input column and length of each list (int32), then a constant per channel (int32) */
    const int32_t taps = filter_shape->h * filter_shape->w * filter_shape->c;
    return 4 * taps + 8 * filter_shape->w + 4 * out_channels;
}

tml_status tml_conv2d_xnor(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                           const uint32_t *weights, const int16_t *tap_ones, const int32_t *magnitude,
                           const int32_t *bias, const tml_shape *output_shape, int8_t *output, void *scratch)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input_shape == NULL
        || input == NULL || filter_shape == NULL || weights == NULL || tap_ones == NULL || magnitude == NULL
        || output_shape == NULL || output == NULL || scratch == NULL) {
        return TML_ARG_ERROR;
    }
    const tml_shape in = *input_shape, filter = *filter_shape, out = *output_shape;
    const int32_t positions = filter.h * filter.w;
    if (in.c < 1 || filter.c != in.c || out.c < 1 || params->act_min > params->act_max
        || positions * in.c > TML_XNOR_MAX_TAPS
        || !tml_window_fits(in.h, filter.h, params->stride_h, params->pad_h, out.h)
        || !tml_window_fits(in.w, filter.w, params->stride_w, params->pad_w, out.w)) {
        return TML_ARG_ERROR;
    }
    const int32_t words = tml_xnor_words(in.c);
    const int32_t taps = positions * in.c;
    const int32_t column_taps = filter.h * in.c;
    uint32_t *column_lists = (uint32_t *)scratch; /* slot k: input columns x with x % filter.w == k */
    int32_t *column_x = (int32_t *)(column_lists + taps);
    int32_t *column_n = column_x + filter.w;
    /* Per channel, the accumulator of a whole window less magnitude * (4V - 2A): bias + m * (taps - 2S). */
    int32_t *whole_window = column_n + filter.w;
    for (int32_t oc = 0; oc < out.c; oc++) {
        int32_t s = 0;
        for (int32_t k = 0; k < positions; k++) {
            s += tap_ones[oc * positions + k];
        }
        whole_window[oc] = (int32_t)((uint32_t)(bias ? bias[oc] : 0) + (uint32_t)(magnitude[oc] * (taps - 2 * s)));
    }
    const int32_t *multiplier = quant->multiplier, *shift = quant->shift;
    const tml_conv_params p = *params; /* a copy: the int8 stores below could alias the caller's */
    tml_xnor_counter counter;
    int32_t counts[32], border[32];
    for (int32_t oy = 0; oy < out.h; oy++) {
        const tml_window_span sy = tml_window_span_at(oy, p.stride_h, p.pad_h, filter.h, in.h);
        const int32_t rows = sy.end > sy.begin ? sy.end - sy.begin : 0; /* none: all padding */
        for (int32_t k = 0; k < filter.w; k++) {
            column_x[k] = -1; /* the lists hold other rows */
        }
        for (int32_t ox = 0; ox < out.w; ox++) {
            const tml_window_span sx = tml_window_span_at(ox, p.stride_w, p.pad_w, filter.w, in.w);
            const int32_t columns = sx.end > sx.begin ? sx.end - sx.begin : 0;
            const int32_t n = rows * columns * in.c;
            int32_t set = 0;
            for (int32_t kx = sx.begin; kx < sx.end; kx++) { /* list the columns new to this window */
                const int32_t x = sx.origin + kx, slot = x % filter.w;
                if (column_x[slot] != x) {
                    uint32_t *end = column_lists + (size_t)slot * column_taps;
                    const uint32_t *first = end;
                    for (int32_t ky = sy.begin; ky < sy.end; ky++) {
                        const uint32_t *pixel = input + ((size_t)(sy.origin + ky) * in.w + x) * words;
                        const uint32_t base = 4u * (uint32_t)(ky * filter.w * in.c);
                        for (int32_t j = 0; j < words; j++) {
                            end = tml_xnor_set_bits(pixel[j], base + 128u * (uint32_t)j, end);
                        }
                    }
                    column_x[slot] = x;
                    column_n[slot] = (int32_t)(end - first);
                }
                set += column_n[slot];
            }
            const int32_t used = tml_xnor_planes_for(set);
            int8_t *y = output + ((size_t)oy * out.w + ox) * out.c;
            for (int32_t block = 0; 32 * block < out.c; block++) {
                const uint32_t *block_weights = weights + (size_t)block * taps;
                tml_xnor_count_start(&counter);
                for (int32_t kx = sx.begin; kx < sx.end; kx++) {
                    const int32_t slot = (sx.origin + kx) % filter.w;
                    tml_xnor_count_add(&counter, block_weights + kx * in.c, column_lists + (size_t)slot * column_taps,
                                       column_n[slot]);
                }
                tml_xnor_count_finish(&counter, used);
                tml_xnor_lanes(counter.planes, used, counts);
                const int32_t first = 32 * block;
                const int32_t lanes = out.c - first < 32 ? out.c - first : 32;
                const int32_t *constant = whole_window + first;
                if (n != taps) { /* a window over the padding: S over its real taps only */
                    for (int32_t lane = 0; lane < lanes; lane++) {
                        const int32_t oc = first + lane;
                        int32_t s = 0;
                        for (int32_t ky = sy.begin; ky < sy.end; ky++) {
                            for (int32_t kx = sx.begin; kx < sx.end; kx++) {
                                s += tap_ones[oc * positions + ky * filter.w + kx];
                            }
                        }
                        const uint32_t b = (uint32_t)(bias ? bias[oc] : 0);
                        border[lane] = (int32_t)(b + (uint32_t)(magnitude[oc] * (n - 2 * s)));
                    }
                    constant = border;
                }
                tml_xnor_outputs(counts, lanes, -2 * set, constant, magnitude + first, multiplier + first,
                                 shift + first, p.output_offset, p.act_min, p.act_max, y + first);
            }
        }
    }
    return TML_OK;
}
