/*
 * tml_conv2d_xnor - binary convolution: XOR and popcount over packed input and filter bits.
 *
 * For each output pixel the window's real taps are found once (padded cells are skipped, so they
 * add nothing, as zero-point padding adds nothing in tml_conv2d_s8); a window row is a run of
 * (taps in the row) * words contiguous words in both the input and the filter, and the bits that
 * differ are counted over each run without reducing per word. With n real taps times channels,
 * the dot product of +1/-1 values is d = n - 2 * differing, the int8 accumulator magnitude * d,
 * and the output the requantization of tml_conv2d_s8. Layout and ranges in tml_xnor.h.
 */
#include <stddef.h>

#include "tml_xnor.h"

tml_status tml_conv2d_xnor(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                           const uint32_t *weights, const int32_t *magnitude, const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input_shape == NULL
        || input == NULL || filter_shape == NULL || weights == NULL || magnitude == NULL || output_shape == NULL
        || output == NULL) {
        return TML_ARG_ERROR;
    }
    const tml_shape in = *input_shape, filter = *filter_shape, out = *output_shape;
    if (in.c < 1 || filter.c != in.c || out.c < 1 || params->act_min > params->act_max
        || !tml_window_fits(in.h, filter.h, params->stride_h, params->pad_h, out.h)
        || !tml_window_fits(in.w, filter.w, params->stride_w, params->pad_w, out.w)) {
        return TML_ARG_ERROR;
    }
    const int32_t words = tml_xnor_words(in.c);
    const size_t filter_words = (size_t)filter.h * filter.w * words;
    for (int32_t oy = 0; oy < out.h; oy++) {
        const tml_window_span sy = tml_window_span_at(oy, params->stride_h, params->pad_h, filter.h, in.h);
        for (int32_t ox = 0; ox < out.w; ox++) {
            const tml_window_span sx = tml_window_span_at(ox, params->stride_w, params->pad_w, filter.w, in.w);
            const int32_t rows = sy.end - sy.begin;
            const int32_t run = (sx.end - sx.begin) * words;
            const int32_t taps = rows * (sx.end - sx.begin) * in.c;
            const uint32_t *window = input + ((size_t)(sy.origin + sy.begin) * in.w + sx.origin + sx.begin) * words;
            const size_t row_step = (size_t)in.w * words;
            const size_t tap_offset = ((size_t)sy.begin * filter.w + sx.begin) * words;
            const size_t filter_row = (size_t)filter.w * words;
            int8_t *y = output + ((size_t)oy * out.w + ox) * out.c;
            for (int32_t oc = 0; oc < out.c; oc++) {
                const uint32_t *w = weights + (size_t)oc * filter_words + tap_offset;
                const uint32_t *x = window;
                uint32_t differing = 0;
                for (int32_t r = 0; r < rows; r++) {
                    differing += tml_xor_popcount(x, w, run);
                    x += row_step;
                    w += filter_row;
                }
                const int32_t acc = magnitude[oc] * (taps - 2 * (int32_t)differing);
                y[oc] = tml_conv_output(acc, bias ? bias[oc] : 0, quant->multiplier[oc], quant->shift[oc], params);
            }
        }
    }
    return TML_OK;
}
