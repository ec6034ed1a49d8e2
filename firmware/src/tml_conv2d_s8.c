/*
 * tml_conv2d_s8.c - int8 2-D convolution, NHWC input, OHWI weights, per-channel requantization.
 *
 * Direct loop, no scratch. Output channels are the outer loop so that each filter is summed
 * once: where a kernel window lies wholly inside the input, sum((x + offset) * w) is computed
 * as sum(x * w) + offset * sum(w), the same integer with one add fewer per multiply. Windows
 * that reach into the padding add the offset to each real cell instead, so padded cells
 * contribute nothing. One kernel row of a window is contiguous in both the input (NHWC) and
 * the filter (OHWI), so the inner loop is a plain dot product over kernel_w * in_c bytes.
 * A 1x1 kernel with stride 1 and no padding reads the input as one [h * w][c] matrix.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* sum((x + offset) * w) over n bytes. Called with a constant 0 offset on the interior path,
 * where the compiler drops the add. */
static inline int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t offset)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        acc += (x[i] + offset) * w[i] + (x[i + 1] + offset) * w[i + 1]
             + (x[i + 2] + offset) * w[i + 2] + (x[i + 3] + offset) * w[i + 3];
    }
    for (; i < n; i++) {
        acc += (x[i] + offset) * w[i];
    }
    return acc;
}

static int32_t sum_s8(const int8_t *w, int32_t n)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += w[i];
    }
    return acc;
}

static void conv_pointwise(const tml_conv_params *p, const tml_quant_channels *quant, int32_t pixels,
                           int32_t in_c, const int8_t *input, const int8_t *filter, const int32_t *bias,
                           int32_t out_c, int8_t *output)
{
    for (int32_t o = 0; o < out_c; o++) {
        const int8_t *w = filter + o * in_c;
        const int32_t b = bias != NULL ? bias[o] : 0;
        const int32_t multiplier = quant->multiplier[o];
        const int32_t shift = quant->shift[o];
        if (pixels == 1) { /* a fully connected layer: summing the weights would not pay */
            output[o] = tml_conv_output(dot_s8(input, w, in_c, p->input_offset), b, multiplier, shift, p);
            continue;
        }
        const int32_t weight_offset = p->input_offset * sum_s8(w, in_c);
        const int8_t *x = input;
        int8_t *out = output + o;
        for (int32_t i = 0; i < pixels; i++) {
            *out = tml_conv_output(weight_offset + dot_s8(x, w, in_c, 0), b, multiplier, shift, p);
            x += in_c;
            out += out_c;
        }
    }
}

tml_status tml_conv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                         const tml_shape *input_shape, const int8_t *input,
                         const tml_shape *filter_shape, const int8_t *filter,
                         const int32_t *bias,
                         const tml_shape *output_shape, int8_t *output, void *scratch)
{
    (void)scratch;
    if (!tml_conv_args_valid(params, quant, input_shape, input, filter_shape, filter, output_shape, output)) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params local = *params; /* a copy the int8 output stores cannot alias */
    const tml_conv_params *p = &local;
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = output_shape->h, out_w = output_shape->w, out_c = output_shape->c;

    if (k_h == 1 && k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0) {
        conv_pointwise(p, quant, in_h * in_w, in_c, input, filter, bias, out_c, output);
        return TML_OK;
    }

    const int32_t row_len = k_w * in_c;       /* one kernel row: contiguous in input and filter */
    const int32_t kernel_len = k_h * row_len;
    const int32_t input_row = in_w * in_c;
    for (int32_t o = 0; o < out_c; o++) {
        const int8_t *w = filter + o * kernel_len;
        const int32_t weight_offset = p->input_offset * sum_s8(w, kernel_len);
        const int32_t b = bias != NULL ? bias[o] : 0;
        const int32_t multiplier = quant->multiplier[o];
        const int32_t shift = quant->shift[o];
        int8_t *out = output + o;
        for (int32_t oy = 0; oy < out_h; oy++) {
            const tml_window_span ky = tml_window_span_at(oy, p->stride_h, p->pad_h, k_h, in_h);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const tml_window_span kx = tml_window_span_at(ox, p->stride_w, p->pad_w, k_w, in_w);
                int32_t acc = 0;
                if (ky.begin == 0 && ky.end == k_h && kx.begin == 0 && kx.end == k_w) {
                    const int8_t *x = input + ky.origin * input_row + kx.origin * in_c;
                    acc = weight_offset;
                    for (int32_t row = 0; row < k_h; row++) {
                        acc += dot_s8(x + row * input_row, w + row * row_len, row_len, 0);
                    }
                } else if (kx.end > kx.begin) {
                    const int32_t n = (kx.end - kx.begin) * in_c;
                    for (int32_t row = ky.begin; row < ky.end; row++) {
                        acc += dot_s8(input + (ky.origin + row) * input_row + (kx.origin + kx.begin) * in_c,
                                     w + row * row_len + kx.begin * in_c, n, p->input_offset);
                    }
                }
                *out = tml_conv_output(acc, b, multiplier, shift, p);
                out += out_c;
            }
        }
    }
    return TML_OK;
}

int32_t tml_conv2d_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *filter_shape,
                                    const tml_shape *output_shape)
{
    (void)input_shape;
    (void)filter_shape;
    (void)output_shape;
    return 0;
}
