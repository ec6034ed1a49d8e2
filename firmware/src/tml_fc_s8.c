/*
 * tml_fc_s8.c - int8 fully connected layer, weights [out_features][in_features].
 *
 * A fully connected layer is a 1x1 convolution of a 1x1 image with in_features channels, and
 * its weights are already that convolution's OHWI layout, so it runs tml_conv2d_s8's pointwise
 * path: one definition of the arithmetic for both.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

tml_status tml_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                     int32_t in_features, const int8_t *input,
                     const int8_t *weights, const int32_t *bias,
                     int32_t out_features, int8_t *output)
{
    if (params == NULL || in_features < 1 || out_features < 1) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params conv = {
        .stride_h = 1,
        .stride_w = 1,
        .pad_h = 0,
        .pad_w = 0,
        .depth_multiplier = 1,
        .input_offset = params->input_offset,
        .output_offset = params->output_offset,
        .act_min = params->act_min,
        .act_max = params->act_max,
    };
    const tml_shape input_shape = {1, 1, in_features};
    const tml_shape output_shape = {1, 1, out_features};
    return tml_conv2d_s8(&conv, quant, &input_shape, input, &input_shape, weights, bias, &output_shape,
                         output, NULL);
}
