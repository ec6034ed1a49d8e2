/*
 * tml_conv2d_xnor_sign - binary convolution fused with the sign after it: packed output bits.
 *
 * Each channel's int8 output (tml_conv2d_xnor's), and so its bit, is monotone in the window's dot
 * product d when the magnitude and multiplier are >= 0 and the accumulator bias + m * d, for every
 * |d| <= taps, neither wraps nor overflows the requantization's left shift (checked per channel
 * here). The bit is then d >= D, D the least d that gives 1, found at the start by bisection over
 * the exact int8 output. A window with n real taps has d = 4V - 2A - 2S + n (tml_xnor.h), so with
 * E = D + 2S - n = 4a + r (0 <= r <= 3) the bit is V >= c + floor(A / 2), where c is a + [r > 0]
 * for an even count A of set input bits and a + 1 + [r == 3] for an odd one. Each lane of a
 * block's counter starts at K = B - c (B = n + 1; c clamped to [-n / 2 - 1, n + 1], which changes
 * no bit, keeps K >= 0 and the counts within 16 planes), and after counting V the 32 lanes are
 * compared at once, plane by plane, with the one number B + floor(A / 2): no lane is extracted and
 * nothing is requantized. The starting planes depend on the window's real taps (S and n), so they
 * are kept for the last few window shapes met (TML_XNOR_SIGN_SLOTS; a layer with padding 1 meets
 * nine in all). A block with a channel outside the monotone case takes tml_conv2d_xnor's way:
 * counts per lane, int8 outputs, then each compared with its threshold.
 */
#include "tml_xnor.h"

#define TML_XNOR_SIGN_SLOTS 4

/* Words of one slot: the window shape it holds (4), then planes[block][parity of A][plane]. */
static int32_t tml_xnor_sign_slot_words(int32_t out_channels)
{
    return 4 + tml_xnor_words(out_channels) * 2 * TML_XNOR_PLANES;
}

int32_t tml_conv2d_xnor_sign_scratch_bytes(const tml_shape *filter_shape, int32_t out_channels)
{
    /* the column lists, per channel the constant of a whole window and D, a flag per block, the slots, per
     * block a count */
    return tml_xnor_columns_bytes(filter_shape) + 8 * out_channels + 4 * tml_xnor_words(out_channels)
         + 4 * TML_XNOR_SIGN_SLOTS * tml_xnor_sign_slot_words(out_channels)
         + 4 * TML_XNOR_PLANES * tml_xnor_words(out_channels);
}

/* Whether bias + m * d, |d| <= taps, keeps a channel's int8 output monotone in d (see above). */
static int tml_xnor_sign_monotone(int32_t bias, int32_t m, int32_t multiplier, int32_t shift, int32_t taps)
{
    if (m < 0 || multiplier < 0) {
        return 0;
    }
    const int64_t reach = (int64_t)m * taps;
    const int64_t limit = (int64_t)1 << (31 - (shift > 0 ? shift : 0)); /* x << left fits: -limit <= x < limit */
    return (int64_t)bias - reach >= -limit && (int64_t)bias + reach < limit;
}

/* The least d in [-taps, taps] whose int8 output reaches the threshold, or taps + 1 when none does. */
static int32_t tml_xnor_sign_least_d(int32_t bias, int32_t m, int32_t multiplier, int32_t shift,
                                     const tml_conv_params *p, int32_t threshold, int32_t taps)
{
    int32_t lo = -taps, hi = taps + 1;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        const int32_t acc = (int32_t)((uint32_t)bias + (uint32_t)(m * mid));
        if (tml_xnor_output(acc, multiplier, shift, p->output_offset, p->act_min, p->act_max) >= threshold) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* The counter's starting planes, planes[block][parity of A][plane], for the windows whose real taps are
 * filter rows [y0, y1) and columns [x0, x1), n of them: lane j of a monotone block holds K for channel
 * 32 * block + j (see above), the other blocks' planes are left 0. */
static void tml_xnor_sign_fill(uint32_t *planes, int32_t y0, int32_t y1, int32_t x0, int32_t x1, int32_t n,
                               const int32_t *least, const int32_t *monotone, const int16_t *tap_ones,
                               int32_t filter_w, int32_t positions, int32_t out_c)
{
    for (int32_t i = 0; i < tml_xnor_words(out_c) * 2 * TML_XNOR_PLANES; i++) {
        planes[i] = 0;
    }
    const int32_t base = n + 1, lowest = -(n / 2) - 1;
    for (int32_t oc = 0; oc < out_c; oc++) {
        if (!monotone[oc / 32]) {
            continue;
        }
        const int32_t s = tml_xnor_window_ones(tap_ones, oc, positions, filter_w, y0, y1, x0, x1);
        const int32_t e = least[oc] + 2 * s - n;
        const int32_t r = ((e % 4) + 4) % 4, a = (e - r) / 4;
        for (int32_t parity = 0; parity < 2; parity++) {
            int32_t c = parity == 0 ? a + (r > 0) : a + 1 + (r == 3);
            c = c < lowest ? lowest : (c > base ? base : c);
            const uint32_t k = (uint32_t)(base - c);
            uint32_t *lane_planes = planes + ((size_t)(oc / 32) * 2 + (size_t)parity) * TML_XNOR_PLANES;
            for (int32_t plane = 0; plane < TML_XNOR_PLANES; plane++) {
                lane_planes[plane] |= ((k >> plane) & 1u) << (oc % 32);
            }
        }
    }
}

/* Whether a slot holds the planes of the window shape (y0, y1, x0, x1). */
static inline int tml_xnor_sign_holds(const uint32_t *slot, int32_t y0, int32_t y1, int32_t x0, int32_t x1)
{
    return slot[0] == (uint32_t)y0 && slot[1] == (uint32_t)y1 && slot[2] == (uint32_t)x0 && slot[3] == (uint32_t)x1;
}

tml_status tml_conv2d_xnor_sign(const tml_conv_params *params, const tml_quant_channels *quant,
                                const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                                const uint32_t *weights, const int16_t *tap_ones, const int32_t *magnitude,
                                const int32_t *bias, const int32_t *threshold, const tml_shape *output_shape,
                                uint32_t *output, void *scratch)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input_shape == NULL
        || input == NULL || filter_shape == NULL || weights == NULL || tap_ones == NULL || magnitude == NULL
        || threshold == NULL || output_shape == NULL || output == NULL || scratch == NULL) {
        return TML_ARG_ERROR;
    }
    const tml_shape in = *input_shape, filter = *filter_shape, out = *output_shape;
    const int32_t positions = filter.h * filter.w;
    if (in.c < 1 || filter.c != in.c || out.c < 1 || params->act_min > params->act_max
        || positions * in.c > TML_XNOR_SIGN_MAX_TAPS
        || !tml_window_fits(in.h, filter.h, params->stride_h, params->pad_h, out.h)
        || !tml_window_fits(in.w, filter.w, params->stride_w, params->pad_w, out.w)) {
        return TML_ARG_ERROR;
    }
    const int32_t out_words = tml_xnor_words(out.c);
    const int32_t taps = positions * in.c;
    tml_xnor_columns columns = tml_xnor_columns_at(scratch, &filter);
    int32_t *whole_window = (int32_t *)((int8_t *)scratch + tml_xnor_columns_bytes(&filter)); /* per channel */
    int32_t *least = whole_window + out.c;                                                    /* per channel: D */
    int32_t *monotone = least + out.c;                                                        /* per block */
    uint32_t *slots = (uint32_t *)(monotone + out_words);
    const int32_t slot_words = tml_xnor_sign_slot_words(out.c);
    const tml_conv_params p = *params;
    tml_xnor_whole_window(whole_window, tap_ones, magnitude, bias, out.c, positions, taps);
    for (int32_t block = 0; block < out_words; block++) {
        monotone[block] = 1;
    }
    for (int32_t oc = 0; oc < out.c; oc++) {
        const int32_t b = bias ? bias[oc] : 0, m = magnitude[oc];
        const int32_t multiplier = quant->multiplier[oc], shift = quant->shift[oc];
        if (tml_xnor_sign_monotone(b, m, multiplier, shift, taps)) {
            least[oc] = tml_xnor_sign_least_d(b, m, multiplier, shift, &p, threshold[oc], taps);
        } else {
            monotone[oc / 32] = 0;
        }
    }
    int32_t any_monotone = 0, all_monotone = 1;
    for (int32_t block = 0; block < out_words; block++) {
        any_monotone |= monotone[block];
        all_monotone &= monotone[block];
    }
    const uint32_t last_lanes = out.c % 32 == 0 ? 0xFFFFFFFFu : (1u << (out.c % 32)) - 1u;
    for (int32_t k = 0; k < TML_XNOR_SIGN_SLOTS; k++) {
        slots[(size_t)k * slot_words] = (uint32_t)-1; /* holds no window shape (a begin is never -1) */
    }
    int32_t victim = 0;
    const uint32_t *start = slots + 4;
    const int32_t sign_levels = tml_xnor_levels(tml_xnor_planes_for(2 * taps + taps / 2 + 2));
    uint32_t *planes = slots + (size_t)TML_XNOR_SIGN_SLOTS * slot_words; /* per block: its count */
    int8_t values[32];
    for (int32_t oy = 0; oy < out.h; oy++) {
        const tml_window_span sy = tml_window_span_at(oy, p.stride_h, p.pad_h, filter.h, in.h);
        const int32_t rows = sy.end > sy.begin ? sy.end - sy.begin : 0; /* none: all padding */
        for (int32_t ox = 0; ox < out.w; ox++) {
            const tml_window_span sx = tml_window_span_at(ox, p.stride_w, p.pad_w, filter.w, in.w);
            const int32_t columns_real = sx.end > sx.begin ? sx.end - sx.begin : 0;
            const int32_t n = rows * columns_real * in.c;
            const int32_t set = tml_xnor_columns_list(&columns, input, &in, filter.w, sy, sx, ox == 0);
            if (any_monotone) { /* the starting planes of this window's shape, kept in a slot */
                const int32_t y0 = rows ? sy.begin : 0, y1 = rows ? sy.end : 0;
                const int32_t x0 = columns_real ? sx.begin : 0, x1 = columns_real ? sx.end : 0;
                if (!tml_xnor_sign_holds(start - 4, y0, y1, x0, x1)) {
                    uint32_t *found = NULL;
                    for (int32_t k = 0; k < TML_XNOR_SIGN_SLOTS && found == NULL; k++) {
                        uint32_t *at = slots + (size_t)k * slot_words;
                        found = tml_xnor_sign_holds(at, y0, y1, x0, x1) ? at : NULL;
                    }
                    if (found == NULL) {
                        found = slots + (size_t)victim * slot_words;
                        victim = (victim + 1) % TML_XNOR_SIGN_SLOTS;
                        tml_xnor_sign_fill(found + 4, y0, y1, x0, x1, n, least, monotone, tap_ones, filter.w,
                                           positions, out.c);
                        found[0] = (uint32_t)y0;
                        found[1] = (uint32_t)y1;
                        found[2] = (uint32_t)x0;
                        found[3] = (uint32_t)x1;
                    }
                    start = found + 4;
                }
            }
            uint32_t *y = output + ((size_t)oy * out.w + ox) * out_words;
            const uint32_t q = (uint32_t)(n + 1 + set / 2);
            if (all_monotone) { /* every block in one go, from the planes of its parity of A */
                tml_xnor_count_job job = tml_xnor_columns_job(&columns, weights, in.c, sx, sign_levels, planes, y);
                job.start = start + (size_t)(set & 1) * TML_XNOR_PLANES;
                job.q = q;
                job.blocks = out_words;
                job.base_step = 4 * taps;
                job.start_step = 4 * 2 * TML_XNOR_PLANES;
                tml_xnor_count(job);
                y[out_words - 1] &= last_lanes;
                continue;
            }
            for (int32_t block = 0; block < out_words; block++) {
                const int32_t first = 32 * block;
                const int32_t lanes = out.c - first < 32 ? out.c - first : 32;
                tml_xnor_count_job job = tml_xnor_columns_job(&columns, weights + (size_t)block * taps, in.c, sx, 1,
                                                              planes, y + block);
                if (monotone[block]) {
                    job.levels = sign_levels;
                    job.start = start + ((size_t)block * 2 + (size_t)(set & 1)) * TML_XNOR_PLANES;
                    job.q = q;
                    tml_xnor_count(job);
                    y[block] &= lanes == 32 ? 0xFFFFFFFFu : (1u << lanes) - 1u;
                    continue;
                }
                const int32_t used = tml_xnor_planes_for(set);
                job.levels = tml_xnor_levels(used);
                tml_xnor_count(job);
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
