/*
 * tml_conv2d_xnor - binary convolution, 32 output channels at a time in bit-sliced counters.
 *
 * The byte offsets of the weight words of the set input bits under a window are listed, each input
 * column once per output row (tml_xnor_columns_list: sliding windows share them). For each block
 * of 32 output channels the weight words at those offsets are counted lane by lane, the window in
 * one go (tml_xnor_count); each channel's dot product d = 4V - 2A - 2S + n then gives its int8
 * output as tml_conv2d_s8 would (tml_xnor_window_outputs; bias + m * (n - 2S) is computed once per
 * channel for the windows off the padding). Layout in tml_xnor.h.
 */
#include "tml_xnor.h"

int32_t tml_conv2d_xnor_scratch_bytes(const tml_shape *filter_shape, int32_t out_channels)
{
    return tml_xnor_columns_bytes(filter_shape) + 4 * out_channels; /* the lists, a constant per channel */
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
    const int32_t taps = positions * in.c;
    tml_xnor_columns columns = tml_xnor_columns_at(scratch, &filter);
    int32_t *whole_window = (int32_t *)((int8_t *)scratch + tml_xnor_columns_bytes(&filter));
    tml_xnor_whole_window(whole_window, tap_ones, magnitude, bias, out.c, positions, taps);
    const tml_conv_params p = *params; /* a copy: the int8 stores below could alias the caller's */
    uint32_t planes[TML_XNOR_PLANES], lanes_at_least;
    tml_xnor_count_job job = tml_xnor_count_from_zero(planes, &lanes_at_least);
    for (int32_t oy = 0; oy < out.h; oy++) {
        const tml_window_span sy = tml_window_span_at(oy, p.stride_h, p.pad_h, filter.h, in.h);
        const int32_t rows = sy.end > sy.begin ? sy.end - sy.begin : 0; /* none: all padding */
        for (int32_t ox = 0; ox < out.w; ox++) {
            const tml_window_span sx = tml_window_span_at(ox, p.stride_w, p.pad_w, filter.w, in.w);
            const int32_t n = rows * (sx.end > sx.begin ? sx.end - sx.begin : 0) * in.c;
            const int32_t set = tml_xnor_columns_list(&columns, input, &in, filter.w, sy, sx, ox == 0);
            const int32_t used = tml_xnor_planes_for(set);
            job.levels = tml_xnor_levels(used);
            int8_t *y = output + ((size_t)oy * out.w + ox) * out.c;
            for (int32_t first = 0; first < out.c; first += 32) {
                tml_xnor_columns_aim(&columns, weights + (size_t)first / 32 * taps, in.c, sx, &job);
                tml_xnor_count(&job);
                const int32_t lanes = out.c - first < 32 ? out.c - first : 32;
                tml_xnor_window_outputs(planes, used, first, lanes, set, n, taps, sy, sx, filter.w, positions,
                                        whole_window, tap_ones, magnitude, bias, quant, &p, y + first);
            }
        }
    }
    return TML_OK;
}
