/*
 * tml_maxpool_s8.c - int8 max pooling, NHWC.
 *
 * Padded cells are skipped: each window is cropped to the real input, so the
 * output keeps the input's scale and zero point. Requires pad < kernel so that
 * no window lies wholly in the padding.
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
            /* Channels innermost: every read and write walks memory contiguously. */
            for (int32_t c = 0; c < channels; c++) {
                out[c] = INT8_MIN;
            }
            for (int32_t y = y_begin; y < y_end; y++) {
                for (int32_t x = x_begin; x < x_end; x++) {
                    const int8_t *cell = input + (y * input_shape->w + x) * channels;
                    for (int32_t c = 0; c < channels; c++) {
                        out[c] = cell[c] > out[c] ? cell[c] : out[c];
                    }
                }
            }
            for (int32_t c = 0; c < channels; c++) {
                out[c] = (int8_t)tml_clamp(out[c], params->act_min, params->act_max);
            }
        }
    }
    return TML_OK;
}
