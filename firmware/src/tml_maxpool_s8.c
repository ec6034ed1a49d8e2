/*
 * tml_maxpool_s8.c - int8 max pooling, NHWC.
 *
 * Padded cells are skipped: each window is cropped to the real input, so the
 * output keeps the input's scale and zero point. Requires pad < kernel so that
 * no window lies wholly in the padding.
 *
 * The DSP path (Cortex-M4, M7, M33) takes four channels per word: SSUB8 sets the GE flags of the bytes
 * where the new cell is at least the running maximum and SEL keeps those bytes, a four-lane signed max;
 * the clamp is two more such maxima and minima.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

tml_status tml_maxpool_s8(const tml_pool_params *params,
                          const tml_shape *input_shape, const int8_t *input,
                          const tml_shape *output_shape, int8_t *output)
{
    if (!tml_pool_args_valid(params, input_shape, input, output_shape, output)) {
        return TML_ARG_ERROR;
    }
    const int32_t channels = input_shape->c;
    for (int32_t oy = 0; oy < output_shape->h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, params->stride_h, params->pad_h, params->kernel_h,
                                                      input_shape->h);
        const int32_t y_begin = ky.origin + ky.begin, y_end = ky.origin + ky.end;
        for (int32_t ox = 0; ox < output_shape->w; ox++) {
            const tml_window_span kx = tml_window_span_at(ox, params->stride_w, params->pad_w, params->kernel_w,
                                                          input_shape->w);
            const int32_t x_begin = kx.origin + kx.begin, x_end = kx.origin + kx.end;
            int8_t *out = output + (oy * output_shape->w + ox) * channels;
            int32_t c = 0;
#if defined(TML_USE_DSP)
            const uint32_t lo4 = (uint8_t)params->act_min * 0x01010101u, hi4 = (uint8_t)params->act_max * 0x01010101u;
            const int32_t row_step = input_shape->w * channels;
            for (; c + 4 <= channels; c += 4) {
                uint32_t m = lo4; /* the clamp's lower end is the first maximum */
                const int8_t *row = input + (y_begin * input_shape->w + x_begin) * channels + c;
                for (int32_t y = y_begin; y < y_end; y++, row += row_step) {
                    const int8_t *cell = row;
                    for (int32_t x = x_begin; x < x_end; x++, cell += channels) {
                        const uint32_t v = tml_read_u32(cell);
                        (void)__ssub8((int32_t)v, (int32_t)m);
                        m = (uint32_t)__sel((int32_t)v, (int32_t)m);
                    }
                }
                (void)__ssub8((int32_t)m, (int32_t)hi4);
                m = (uint32_t)__sel((int32_t)hi4, (int32_t)m);
                __builtin_memcpy(out + c, &m, 4);
            }
            if (c == channels) {
                continue;
            }
#endif
            /* Channels innermost: every read and write walks memory contiguously. */
            for (int32_t k = c; k < channels; k++) {
                out[k] = INT8_MIN;
            }
            for (int32_t y = y_begin; y < y_end; y++) {
                for (int32_t x = x_begin; x < x_end; x++) {
                    const int8_t *cell = input + (y * input_shape->w + x) * channels;
                    for (int32_t k = c; k < channels; k++) {
                        out[k] = cell[k] > out[k] ? cell[k] : out[k];
                    }
                }
            }
            for (int32_t k = c; k < channels; k++) {
                out[k] = (int8_t)tml_clamp(out[k], params->act_min, params->act_max);
            }
        }
    }
    return TML_OK;
}
