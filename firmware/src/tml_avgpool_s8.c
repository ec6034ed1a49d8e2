/*
 * tml_avgpool_s8.c - int8 average pooling, NHWC.
 *
 * Each window is cropped to the real input and divided by the number of real
 * cells, rounding half away from zero; the output keeps the input's scale and
 * zero point. A global average pool is kernel = input size with no padding.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

tml_status tml_avgpool_s8(const tml_pool_params *params,
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
            const int32_t count = (y_end - y_begin) * (x_end - x_begin);
            int8_t *out = output + (oy * output_shape->w + ox) * channels;
            for (int32_t c = 0; c < channels; c++) {
                int32_t sum = 0;
                for (int32_t y = y_begin; y < y_end; y++) {
                    const int8_t *cell = input + (y * input_shape->w + x_begin) * channels + c;
                    for (int32_t x = x_begin; x < x_end; x++, cell += channels) {
                        sum += *cell;
                    }
                }
                const int32_t mean = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                out[c] = (int8_t)tml_clamp(mean, params->act_min, params->act_max);
            }
        }
    }
    return TML_OK;
}
