/*
 * tml_concat_s8.c - int8 concatenation along channels of NHWC tensors.
 *
 * Each input is rescaled to the output's quantization:
 * out = clamp(output_offset + requantize(x + input_offset), -128, 127).
 * An input already in the output's quantization (multiplier 2^30, shift 1,
 * offsets that cancel) is copied, which gives the same bytes.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>
#include <string.h>

#define TML_IDENTITY_MULTIPLIER (1 << 30)

static int is_identity(const tml_concat_input *in, int32_t output_offset)
{
    /* |x + input_offset| stays far below 2^30, so requantize(v, 2^30, 1) == v exactly. */
    return in->multiplier == TML_IDENTITY_MULTIPLIER && in->shift == 1
        && in->input_offset >= -255 && in->input_offset <= 255
        && in->input_offset + output_offset == 0;
}

static void rescale(const tml_concat_input *in, int32_t output_offset, int32_t outer,
                    int32_t out_channels, int8_t *output)
{
    for (int32_t p = 0; p < outer; p++) {
        const int8_t *src = in->data + p * in->channels;
        int8_t *dst = output + p * out_channels;
        for (int32_t c = 0; c < in->channels; c++) {
            const int32_t v = (int32_t)((uint32_t)(int32_t)src[c] + (uint32_t)in->input_offset);
            const int64_t q = (int64_t)tml_requantize(v, in->multiplier, in->shift) + output_offset;
            dst[c] = (int8_t)(q < INT8_MIN ? INT8_MIN : (q > INT8_MAX ? INT8_MAX : q));
        }
    }
}

tml_status tml_concat_s8(const tml_concat_input *inputs, int32_t n_inputs, int32_t outer,
                         int32_t output_offset, int8_t *output)
{
    if (inputs == NULL || output == NULL || n_inputs < 1 || outer < 1) {
        return TML_ARG_ERROR;
    }
    int32_t out_channels = 0;
    for (int32_t i = 0; i < n_inputs; i++) {
        if (inputs[i].data == NULL || inputs[i].channels < 1) {
            return TML_ARG_ERROR;
        }
        out_channels += inputs[i].channels;
    }
    int32_t first_channel = 0;
    for (int32_t i = 0; i < n_inputs; i++) {
        const tml_concat_input *in = &inputs[i];
        if (is_identity(in, output_offset)) {
            for (int32_t p = 0; p < outer; p++) {
                memcpy(output + p * out_channels + first_channel, in->data + p * in->channels,
                       (size_t)in->channels);
            }
        } else {
            rescale(in, output_offset, outer, out_channels, output + first_channel);
        }
        first_channel += in->channels;
    }
    return TML_OK;
}
