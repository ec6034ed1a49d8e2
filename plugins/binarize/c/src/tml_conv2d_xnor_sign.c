/*
 * tml_conv2d_xnor_sign - binary convolution fused with the sign after it: packed output bits.
 *
 * Where a channel's int8 output is monotone in the window's dot product, its bit is the window's count V
 * of set weights under set inputs compared with a constant that depends on the channel, the window's shape
 * and the parity of its count A of set input bits (tinyml_plugins.binarize.starts gives the derivation).
 * The build tables, per window shape, block and parity, each lane's starting count K (tml_xnor_sign_starts),
 * so that the bit is K + V >= n + 1 + floor(A / 2), n the window's real taps: the counters start at K, count
 * V, and the 32 lanes of a block are compared at once with that one number, level by level as the count
 * settles (tml_xnor_count). Nothing is requantized and no lane is extracted. A block marked exact (a channel
 * whose accumulator could wrap) takes tml_conv2d_xnor's way: counts per lane, int8 outputs, then each
 * compared with its threshold.
 */
#include "tml_xnor.h"

int32_t tml_conv2d_xnor_sign_scratch_bytes(const tml_shape *filter_shape, int32_t out_channels)
{
    /* the column lists, per channel the constant of a whole window, per block its count */
    return tml_xnor_columns_bytes(filter_shape) + 4 * out_channels
         + 4 * TML_XNOR_PLANES * tml_xnor_words(out_channels);
}

tml_status tml_conv2d_xnor_sign(const tml_conv_params *params, const tml_quant_channels *quant,
                                const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                                const uint32_t *weights, const int16_t *tap_ones, const int32_t *magnitude,
                                const int32_t *bias, const int32_t *threshold, const tml_xnor_sign_starts *starts,
                                const tml_shape *output_shape, uint32_t *output, void *scratch)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input_shape == NULL
        || input == NULL || filter_shape == NULL || weights == NULL || tap_ones == NULL || magnitude == NULL
        || threshold == NULL || starts == NULL || starts->row_class == NULL || starts->column_class == NULL
        || starts->exact == NULL || starts->planes == NULL || output_shape == NULL || output == NULL
        || scratch == NULL) {
        return TML_ARG_ERROR;
    }
    const tml_shape in = *input_shape, filter = *filter_shape, out = *output_shape;
    const int32_t positions = filter.h * filter.w;
    if (in.c < 1 || filter.c != in.c || out.c < 1 || params->act_min > params->act_max
        || positions * in.c > TML_XNOR_SIGN_MAX_TAPS || starts->column_classes < 1
        || !tml_window_fits(in.h, filter.h, params->stride_h, params->pad_h, out.h)
        || !tml_window_fits(in.w, filter.w, params->stride_w, params->pad_w, out.w)) {
        return TML_ARG_ERROR;
    }
    const int32_t out_words = tml_xnor_words(out.c);
    const int32_t taps = positions * in.c;
    tml_xnor_columns columns = tml_xnor_columns_at(scratch, &filter);
    int32_t *whole_window = (int32_t *)((int8_t *)scratch + tml_xnor_columns_bytes(&filter)); /* per channel */
    uint32_t *planes = (uint32_t *)(whole_window + out.c); /* per block: its count */
    const tml_conv_params p = *params;
    int32_t all_fast = 1;
    for (int32_t block = 0; block < out_words; block++) {
        all_fast &= !starts->exact[block];
    }
    if (!all_fast) {
        tml_xnor_whole_window(whole_window, tap_ones, magnitude, bias, out.c, positions, taps);
    }
    const int32_t levels = tml_xnor_levels(tml_xnor_planes_for(2 * taps + taps / 2 + 2));
    const int32_t shape_words = out_words * 2 * 4 * levels; /* one window shape's planes */
    const uint32_t last_lanes = out.c % 32 == 0 ? 0xFFFFFFFFu : (1u << (out.c % 32)) - 1u;
    tml_xnor_count_job every_block = tml_xnor_count_from_zero(planes, output); /* all_fast: every block at once */
    every_block.levels = levels;
    every_block.blocks = out_words;
    every_block.base_step = 4 * taps;
    every_block.start_step = 4 * 2 * 4 * levels;
    int8_t values[32];
    for (int32_t oy = 0; oy < out.h; oy++) {
        const tml_window_span sy = tml_window_span_at(oy, p.stride_h, p.pad_h, filter.h, in.h);
        const int32_t rows = sy.end > sy.begin ? sy.end - sy.begin : 0; /* none: all padding */
        const uint32_t *row_starts
            = starts->planes + (size_t)starts->row_class[oy] * (size_t)starts->column_classes * (size_t)shape_words;
        for (int32_t ox = 0; ox < out.w; ox++) {
            const tml_window_span sx = tml_window_span_at(ox, p.stride_w, p.pad_w, filter.w, in.w);
            const int32_t n = rows * (sx.end > sx.begin ? sx.end - sx.begin : 0) * in.c;
            const int32_t set = tml_xnor_columns_list(&columns, input, &in, filter.w, sy, sx, ox == 0);
            /* this window's shape and parity of A: block b's planes follow at 2 * 4 * levels words apart */
            const uint32_t *start = row_starts + (size_t)starts->column_class[ox] * (size_t)shape_words
                                  + (size_t)(set & 1) * (size_t)(4 * levels);
            const uint32_t q = (uint32_t)(n + 1 + set / 2);
            uint32_t *y = output + ((size_t)oy * out.w + ox) * out_words;
            if (all_fast) { /* every block in one go */
                tml_xnor_columns_aim(&columns, weights, in.c, sx, &every_block);
                every_block.start = start;
                every_block.q = q;
                every_block.lanes = y;
                tml_xnor_count(&every_block);
                if (last_lanes != 0xFFFFFFFFu) {
                    y[out_words - 1] &= last_lanes;
                }
                continue;
            }
            for (int32_t block = 0; block < out_words; block++) {
                const int32_t first = 32 * block;
                const int32_t lanes = out.c - first < 32 ? out.c - first : 32;
                tml_xnor_count_job job = tml_xnor_count_from_zero(planes, y + block);
                tml_xnor_columns_aim(&columns, weights + (size_t)block * taps, in.c, sx, &job);
                if (!starts->exact[block]) {
                    job.levels = levels;
                    job.start = start + (size_t)block * 2 * 4 * (size_t)levels;
                    job.q = q;
                    tml_xnor_count(&job);
                    y[block] &= block == out_words - 1 ? last_lanes : 0xFFFFFFFFu;
                    continue;
                }
                const int32_t used = tml_xnor_planes_for(set);
                job.levels = tml_xnor_levels(used);
                tml_xnor_count(&job);
                tml_xnor_window_outputs(planes, used, first, lanes, set, n, taps, sy, sx, filter.w, positions,
                                        whole_window, tap_ones, magnitude, bias, quant, &p, values);
                uint32_t bits = 0;
                for (int32_t lane = 0; lane < lanes; lane++) {
                    bits |= (uint32_t)(values[lane] >= threshold[first + lane]) << lane;
                }
                y[block] = bits;
            }
        }
    }
    return TML_OK;
}
