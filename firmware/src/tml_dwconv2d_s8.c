/*
 * tml_dwconv2d_s8.c - int8 depthwise convolution, NHWC input, weights [k_h][k_w][out_c].
 *
 * out_c = in_c * depth_multiplier and output channel o reads input channel
 * o / depth_multiplier. filter_shape is {k_h, k_w, in_c}. Direct loop, no scratch.
 * Output channels are the outer loop so that each channel's weights are summed once: where a
 * kernel window lies wholly inside the input, sum((x + offset) * w) is computed as
 * sum(x * w) + offset * sum(w), the same integer with one add fewer per multiply. Windows that
 * reach into the padding add the offset to each real cell instead, so padded cells contribute
 * nothing.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* out == (in + 2 * pad - kernel) / stride + 1, with every size positive. */
static int window_fits(int32_t in, int32_t kernel, int32_t stride, int32_t pad, int32_t out)
{
    return in > 0 && kernel > 0 && stride > 0 && pad >= 0 && in + 2 * pad >= kernel
        && out == (in + 2 * pad - kernel) / stride + 1;
}

/* Bias added with 32-bit wrap-around; the clamp is applied before the output offset is added
 * so that a requantized value near the int32 limits cannot overflow. */
static int8_t finish(int32_t acc, int32_t bias, int32_t multiplier, int32_t shift,
                     const tml_conv_params *p)
{
    const int32_t total = (int32_t)((uint32_t)acc + (uint32_t)bias);
    const int32_t scaled = tml_requantize(total, multiplier, shift);
    return (int8_t)(tml_clamp(scaled, p->act_min - p->output_offset, p->act_max - p->output_offset)
                    + p->output_offset);
}

/* Where one channel's window lies: the input and filter strides between columns and rows. */
typedef struct {
    int32_t rows;
    int32_t cols;
    int32_t input_step;
    int32_t input_row;
    int32_t filter_step;
    int32_t filter_row;
} window_geometry;

/* sum((x + offset) * w) over a window. Called with a constant 0 offset on the interior path,
 * where the compiler drops the add. */
static inline int32_t window_dot(const int8_t *x, const int8_t *w, const window_geometry *g, int32_t offset)
{
    int32_t acc = 0;
    for (int32_t ky = 0; ky < g->rows; ky++) {
        const int8_t *xk = x + ky * g->input_row;
        const int8_t *wk = w + ky * g->filter_row;
        for (int32_t kx = 0; kx < g->cols; kx++) {
            acc += (*xk + offset) * *wk;
            xk += g->input_step;
            wk += g->filter_step;
        }
    }
    return acc;
}

tml_status tml_dwconv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const int8_t *input,
                           const tml_shape *filter_shape, const int8_t *filter,
                           const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output, void *scratch)
{
    (void)scratch;
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL
        || input_shape == NULL || input == NULL || filter_shape == NULL || filter == NULL
        || output_shape == NULL || output == NULL) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params *p = params;
    if (input_shape->c < 1 || filter_shape->c != input_shape->c || p->depth_multiplier < 1
        || output_shape->c != input_shape->c * p->depth_multiplier
        || !window_fits(input_shape->h, filter_shape->h, p->stride_h, p->pad_h, output_shape->h)
        || !window_fits(input_shape->w, filter_shape->w, p->stride_w, p->pad_w, output_shape->w)
        || p->act_min > p->act_max) {
        return TML_ARG_ERROR;
    }
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = output_shape->h, out_w = output_shape->w, out_c = output_shape->c;
    const int32_t input_row = in_w * in_c;
    const int32_t filter_row = k_w * out_c;
    const window_geometry g = {k_h, k_w, in_c, input_row, out_c, filter_row};

    for (int32_t o = 0; o < out_c; o++) {
        const int8_t *channel = input + o / p->depth_multiplier;
        const int8_t *w = filter + o;
        int32_t weight_sum = 0;
        for (int32_t k = 0; k < k_h * k_w; k++) {
            weight_sum += w[k * out_c];
        }
        const int32_t weight_offset = p->input_offset * weight_sum;
        const int32_t b = bias != NULL ? bias[o] : 0;
        const int32_t multiplier = quant->multiplier[o];
        const int32_t shift = quant->shift[o];
        int8_t *out = output + o;
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int32_t ky_begin = y0 < 0 ? -y0 : 0;
            const int32_t ky_end = in_h - y0 < k_h ? in_h - y0 : k_h;
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                const int32_t kx_begin = x0 < 0 ? -x0 : 0;
                const int32_t kx_end = in_w - x0 < k_w ? in_w - x0 : k_w;
                int32_t acc = 0;
                if (ky_begin == 0 && ky_end == k_h && kx_begin == 0 && kx_end == k_w) {
                    acc = weight_offset + window_dot(channel + y0 * input_row + x0 * in_c, w, &g, 0);
                } else if (ky_end > ky_begin && kx_end > kx_begin) {
                    window_geometry border = g;
                    border.rows = ky_end - ky_begin;
                    border.cols = kx_end - kx_begin;
                    acc = window_dot(channel + (y0 + ky_begin) * input_row + (x0 + kx_begin) * in_c,
                                     w + ky_begin * filter_row + kx_begin * out_c, &border,
                                     p->input_offset);
                }
                *out = finish(acc, b, multiplier, shift, p);
                out += out_c;
            }
        }
    }
    return TML_OK;
}

int32_t tml_dwconv2d_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *filter_shape,
                                      const tml_shape *output_shape)
{
    (void)input_shape;
    (void)filter_shape;
    (void)output_shape;
    return 0;
}
