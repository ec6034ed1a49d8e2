/*
 * tml_avgpool_s8.c - int8 average pooling, NHWC.
 *
 * Each window is cropped to the real input and divided by the number of real
 * cells, rounding half away from zero; the output keeps the input's scale and
 * zero point. A global average pool is kernel = input size with no padding.
 *
 * The DSP path (Cortex-M4, M7, M33) sums four channels per word: SXTAB16 adds bytes 0 and 2, and
 * (rotated) bytes 1 and 3, to two int16 pairs, exact while a window has at most 255 cells
 * (|sum| <= 128 * 255 fits int16), and stores the four means as one word; larger windows (and windows of
 * one cell) take the portable loop.
 *
 * No division per output: a window's mean is |sum| + count / 2 divided by count, which is
 * (n * m) >> 32 with m = floor((2^32 - 1) / count) + 1, computed once per distinct count (interior
 * windows share one). Exact: m * count = 2^32 + e with 0 <= e <= count - 1, so n * m / 2^32 is n / count
 * plus n * e / (count * 2^32), below the next integer while n * e < 2^32; n <= 128.5 * count makes that
 * hold for every count up to TML_AVGPOOL_RECIPROCAL_MAX (129 * 5770 * 5769 < 2^32). Larger windows divide.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

#define TML_AVGPOOL_RECIPROCAL_MAX 5770

/* The reciprocal of a window's cell count: see the file comment (0 when count must divide). */
static inline uint32_t count_reciprocal(int32_t count)
{
    return count >= 2 && count <= TML_AVGPOOL_RECIPROCAL_MAX ? 0xFFFFFFFFu / (uint32_t)count + 1u : 0u;
}

/* sum / count rounded half away from zero, for 2 <= count <= TML_AVGPOOL_RECIPROCAL_MAX: |sum| + half
 * (count / 2) times the count's reciprocal, the sign put back; branch-free. */
static inline int32_t rounded_mean(int32_t sum, uint32_t half, uint32_t reciprocal)
{
    const int32_t sign = sum >> 31; /* 0 or -1 */
    const uint32_t n = (uint32_t)((sum ^ sign) - sign) + half;
    const int32_t q = (int32_t)(((uint64_t)n * reciprocal) >> 32);
    return (q ^ sign) - sign;
}

/* The mean of `count` cells summing to `sum`, rounded half away from zero, clamped. */
static inline int8_t mean_output(int32_t sum, int32_t count, uint32_t reciprocal, int32_t act_min, int32_t act_max)
{
    int32_t mean;
    if (reciprocal != 0u) {
        mean = rounded_mean(sum, (uint32_t)(count / 2), reciprocal);
    } else if (count == 1) {
        mean = sum;
    } else { /* windows beyond the reciprocal's range */
        mean = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
    }
    return (int8_t)tml_clamp(mean, act_min, act_max);
}

tml_status tml_avgpool_s8(const tml_pool_params *params,
                          const tml_shape *input_shape, const int8_t *input,
                          const tml_shape *output_shape, int8_t *output)
{
    if (!tml_pool_args_valid(params, input_shape, input, output_shape, output)) {
        return TML_ARG_ERROR;
    }
    const int32_t channels = input_shape->c;
    int32_t reciprocal_count = 0;
    uint32_t reciprocal = 0u;
    for (int32_t oy = 0; oy < output_shape->h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, params->stride_h, params->pad_h, params->kernel_h,
                                                      input_shape->h);
        const int32_t y_begin = ky.origin + ky.begin, y_end = ky.origin + ky.end;
        for (int32_t ox = 0; ox < output_shape->w; ox++) {
            const tml_window_span kx = tml_window_span_at(ox, params->stride_w, params->pad_w, params->kernel_w,
                                                          input_shape->w);
            const int32_t x_begin = kx.origin + kx.begin, x_end = kx.origin + kx.end;
            const int32_t count = (y_end - y_begin) * (x_end - x_begin);
            if (count != reciprocal_count) {
                reciprocal_count = count;
                reciprocal = count_reciprocal(count);
            }
            int8_t *out = output + (oy * output_shape->w + ox) * channels;
            int32_t c = 0;
#if defined(TML_USE_DSP)
            if (count <= 255 && reciprocal != 0u) { /* 2 .. 255 cells */
                const uint32_t half = (uint32_t)(count / 2);
                const int32_t act_min = params->act_min, act_max = params->act_max;
                const int full_range = act_min == INT8_MIN && act_max == INT8_MAX; /* a mean needs no clamp */
                const int32_t row_step = input_shape->w * channels;
                const int8_t *first = input + (y_begin * input_shape->w + x_begin) * channels;
                for (; c + 4 <= channels; c += 4) {
                    int32_t s02 = 0, s13 = 0;
                    const int8_t *row = first + c;
                    for (int32_t y = y_begin; y < y_end; y++, row += row_step) {
                        const int8_t *cell = row;
                        for (int32_t x = x_begin; x < x_end; x++, cell += channels) {
                            const uint32_t v = tml_read_u32(cell);
                            s02 = __sxtab16(s02, (int32_t)v);
                            s13 = tml_sxtab16_odd(s13, v);
                        }
                    }
                    int32_t m0 = rounded_mean((int16_t)s02, half, reciprocal);
                    int32_t m1 = rounded_mean((int16_t)s13, half, reciprocal);
                    int32_t m2 = rounded_mean(s02 >> 16, half, reciprocal);
                    int32_t m3 = rounded_mean(s13 >> 16, half, reciprocal);
                    if (!full_range) {
                        m0 = tml_clamp(m0, act_min, act_max);
                        m1 = tml_clamp(m1, act_min, act_max);
                        m2 = tml_clamp(m2, act_min, act_max);
                        m3 = tml_clamp(m3, act_min, act_max);
                    }
                    const uint32_t word = (uint8_t)m0 | (uint32_t)(uint8_t)m1 << 8 | (uint32_t)(uint8_t)m2 << 16
                                        | (uint32_t)(uint8_t)m3 << 24;
                    __builtin_memcpy(out + c, &word, 4);
                }
            }
#endif
            for (; c < channels; c++) {
                int32_t sum = 0;
                for (int32_t y = y_begin; y < y_end; y++) {
                    const int8_t *cell = input + (y * input_shape->w + x_begin) * channels + c;
                    for (int32_t x = x_begin; x < x_end; x++, cell += channels) {
                        sum += *cell;
                    }
                }
                out[c] = mean_output(sum, count, reciprocal, params->act_min, params->act_max);
            }
        }
    }
    return TML_OK;
}
