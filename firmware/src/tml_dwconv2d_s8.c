/*
 * tml_dwconv2d_s8.c - int8 depthwise convolution, NHWC input, weights [k_h][k_w][out_c].
 *
 * out_c = in_c * depth_multiplier and output channel o reads input channel
 * o / depth_multiplier. filter_shape is {k_h, k_w, in_c}. Direct loop, no scratch.
 * Each window is cropped to the real input cells, so padded cells contribute nothing. With a
 * depth multiplier of 1, four adjacent channels are computed together: in NHWC input and
 * [k_h][k_w][out_c] weights they sit side by side, so they share the loop and pointer work.
 *
 * The DSP path (Cortex-M4, M7, M33) reads those four channels as one word of input and one of
 * weights per tap: SXTAB16 widens the input bytes to int16 pairs with the input offset added,
 * SXTB16 the weights, and SMLABB/SMLATT multiply-accumulate each channel on its own.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* Where a window lies: its size, and the input and filter strides between columns and rows. */
typedef struct {
    int32_t rows;
    int32_t cols;
    int32_t input_step;
    int32_t input_row;
    int32_t filter_step;
    int32_t filter_row;
} window_geometry;

/* sum((x + offset) * w) over a window for one output channel. */
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

/* window_dot for four adjacent channels at once (depth multiplier 1): each tap reads four
 * neighbouring input bytes and four neighbouring weights, sharing the loop and pointer work. */
static inline void window_dot4(const int8_t *x, const int8_t *w, const window_geometry *g, int32_t offset,
                               int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int32_t ky = 0; ky < g->rows; ky++) {
        const int8_t *xk = x + ky * g->input_row;
        const int8_t *wk = w + ky * g->filter_row;
        for (int32_t kx = 0; kx < g->cols; kx++) {
            a0 += (xk[0] + offset) * wk[0];
            a1 += (xk[1] + offset) * wk[1];
            a2 += (xk[2] + offset) * wk[2];
            a3 += (xk[3] + offset) * wk[3];
            xk += g->input_step;
            wk += g->filter_step;
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

#if defined(TML_USE_DSP)
/* window_dot4 with one word of input and of weights per tap; offset2 is the input offset in both halves. */
static inline void window_dot4_dsp(const int8_t *x, const int8_t *w, const window_geometry *g, int32_t offset2,
                                   int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const int32_t xs = g->input_step, ws = g->filter_step, w_span = g->cols * ws;
    for (int32_t ky = 0; ky < g->rows; ky++) {
        const int8_t *xk = x + ky * g->input_row;
        const int8_t *wk = w + ky * g->filter_row;
        const int8_t *const w_end = wk + w_span; /* the weights pointer counts the taps */
        while (wk != w_end) {
            const uint32_t xv = tml_read_u32(xk), wv = tml_read_u32(wk);
            const int32_t xe = __sxtab16(offset2, (int32_t)xv), xo = tml_sxtab16_odd(offset2, xv);
            const int32_t we = tml_sxtb16_even(wv), wo = tml_sxtb16_odd(wv);
            a0 = __smlabb(xe, we, a0);
            a2 = __smlatt(xe, we, a2);
            a1 = __smlabb(xo, wo, a1);
            a3 = __smlatt(xo, wo, a3);
            xk += xs;
            wk += ws;
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* The output step of four channels (tml_requantize_output), out of line so that its operands stay in
 * registers; bias, mult and shift point at the first of the four channels (bias may be NULL). */
__attribute__((noinline)) static void output4_dsp(int8_t *out, const int32_t acc[4], const int32_t *bias,
                                                  const int32_t *mult, const int32_t *shift, const tml_conv_params *p)
{
    const int32_t offset = p->output_offset, lo = p->act_min - offset, hi = p->act_max - offset;
    for (int32_t j = 0; j < 4; j++) {
        const int32_t s = shift[j];
        const uint32_t b = bias != NULL ? (uint32_t)bias[j] : 0u;
        int32_t v = (int32_t)(((uint32_t)acc[j] + b) << (s > 0 ? s : 0));
        v = tml_divide_by_power_of_two(tml_doubling_high_mult(v, mult[j]), s > 0 ? 0 : -s);
        out[j] = (int8_t)(tml_clamp(v, lo, hi) + offset);
    }
}
#endif

tml_status tml_dwconv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const int8_t *input,
                           const tml_shape *filter_shape, const int8_t *filter,
                           const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output, void *scratch)
{
    (void)scratch;
    if (!tml_conv_args_valid(params, quant, input_shape, input, filter_shape, filter, output_shape, output)
        || params->depth_multiplier < 1 || output_shape->c != input_shape->c * params->depth_multiplier) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params local = *params; /* a copy the int8 output stores cannot alias */
    const tml_conv_params *p = &local;
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = output_shape->h, out_w = output_shape->w, out_c = output_shape->c;
    const int32_t multiplier_step = p->depth_multiplier;
    window_geometry g = {0, 0, in_c, in_w * in_c, out_c, k_w * out_c};
    const int32_t *mult = quant->multiplier;
    const int32_t *shift = quant->shift;
    int8_t *out = output;
#if defined(TML_USE_DSP)
    const int32_t offset2 = (int32_t)(((uint32_t)p->input_offset & 0xFFFFu) | ((uint32_t)p->input_offset << 16));
#endif

    for (int32_t oy = 0; oy < out_h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, p->stride_h, p->pad_h, k_h, in_h);
        for (int32_t ox = 0; ox < out_w; ox++, out += out_c) {
            const tml_window_span kx = tml_window_span_at(ox, p->stride_w, p->pad_w, k_w, in_w);
            g.rows = ky.end > ky.begin ? ky.end - ky.begin : 0;
            g.cols = kx.end > kx.begin ? kx.end - kx.begin : 0;
            if (g.rows == 0 || g.cols == 0) { /* the window lies wholly in the padding */
                for (int32_t o = 0; o < out_c; o++) {
                    out[o] = tml_conv_output(0, bias != NULL ? bias[o] : 0, mult[o], shift[o], p);
                }
                continue;
            }
            const int8_t *x = input + (ky.origin + ky.begin) * g.input_row + (kx.origin + kx.begin) * in_c;
            const int8_t *w = filter + ky.begin * g.filter_row + kx.begin * out_c;
            int32_t o = 0;
#if defined(TML_USE_DSP)
            if (multiplier_step == 1) {
                for (; o + 4 <= out_c; o += 4) {
                    int32_t acc[4];
                    window_dot4_dsp(x + o, w + o, &g, offset2, acc);
                    output4_dsp(out + o, acc, bias != NULL ? bias + o : NULL, mult + o, shift + o, p);
                }
            }
#endif
            if (multiplier_step == 1) {
                for (; o + 4 <= out_c; o += 4) {
                    int32_t acc[4];
                    window_dot4(x + o, w + o, &g, p->input_offset, acc);
                    for (int32_t j = 0; j < 4; j++) {
                        out[o + j] = tml_conv_output(acc[j], bias != NULL ? bias[o + j] : 0, mult[o + j],
                                                     shift[o + j], p);
                    }
                }
            }
            for (; o < out_c; o++) {
                const int32_t acc = window_dot(x + o / multiplier_step, w + o, &g, p->input_offset);
                out[o] = tml_conv_output(acc, bias != NULL ? bias[o] : 0, mult[o], shift[o], p);
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
