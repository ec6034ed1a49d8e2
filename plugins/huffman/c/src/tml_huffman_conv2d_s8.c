/*
 * tml_huffman_conv2d_s8.c - int8 2-D convolution whose OHWI weights are encoded (tml_huffman_weights).
 *
 * Filter by filter: filter o (k_h * k_w * in_c weights) is decoded into scratch and run over
 * every output position before the next is decoded, so the RAM the weights take is one filter.
 * The loop is tml_conv2d_s8's direct loop for one output channel, with the same sums in the
 * same integers (interior windows sum(x * w) + offset * sum(w), windows reaching into the
 * padding sum (x + offset) * w over their real cells) and the same requantization, so the
 * outputs equal tml_conv2d_s8's on the decoded weights byte for byte.
 */
#include "tml_huffman.h"
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* sum((x + offset) * w) over n bytes. */
static int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t offset)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += (x[i] + offset) * w[i];
    }
    return acc;
}

/* Output channel o of the convolution, from its decoded filter w. */
static void conv_channel(const tml_conv_params *p, int32_t o, const int8_t *w, int32_t b, int32_t multiplier,
                         int32_t shift, const tml_shape *in, const int8_t *input, const tml_shape *filter,
                         const tml_shape *out, int8_t *output)
{
    const int32_t in_c = in->c, k_h = filter->h, k_w = filter->w;
    const int32_t row_len = k_w * in_c;
    const int32_t input_row = in->w * in_c;
    int32_t sum = 0;
    for (int32_t i = 0; i < k_h * row_len; i++) {
        sum += w[i];
    }
    const int32_t interior_offset = p->input_offset * sum;
    int8_t *dst = output + o;
    for (int32_t oy = 0; oy < out->h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, p->stride_h, p->pad_h, k_h, in->h);
        for (int32_t ox = 0; ox < out->w; ox++) {
            const tml_window_span kx = tml_window_span_at(ox, p->stride_w, p->pad_w, k_w, in->w);
            int32_t acc = 0;
            if (ky.begin == 0 && ky.end == k_h && kx.begin == 0 && kx.end == k_w) {
                const int8_t *x = input + ky.origin * input_row + kx.origin * in_c;
                acc = interior_offset;
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
            *dst = tml_conv_output(acc, b, multiplier, shift, p);
            dst += out->c;
        }
    }
}

tml_status tml_huffman_conv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                 const tml_shape *input_shape, const int8_t *input,
                                 const tml_shape *filter_shape, const tml_huffman_weights *weights,
                                 const int32_t *bias,
                                 const tml_shape *output_shape, int8_t *output, int8_t *scratch)
{
    if (weights == NULL || scratch == NULL
        || !tml_conv_args_valid(params, quant, input_shape, input, filter_shape, scratch, output_shape, output)) {
        return TML_ARG_ERROR;
    }
    const int32_t filter_len = filter_shape->h * filter_shape->w * filter_shape->c;
    if (weights->count != filter_len * output_shape->c) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params p = *params; /* a copy the int8 output stores cannot alias */
    tml_huffman_reader reader;
    tml_status status = tml_huffman_reader_init(&reader, weights);
    for (int32_t o = 0; o < output_shape->c && status == TML_OK; o++) {
        status = tml_huffman_read_s8(&reader, scratch, filter_len);
        if (status == TML_OK) {
            conv_channel(&p, o, scratch, bias != NULL ? bias[o] : 0, quant->multiplier[o], quant->shift[o],
                         input_shape, input, filter_shape, output_shape, output);
        }
    }
    return status;
}

int32_t tml_huffman_conv2d_s8_scratch_bytes(const tml_shape *filter_shape)
{
    return filter_shape->h * filter_shape->w * filter_shape->c;
}
