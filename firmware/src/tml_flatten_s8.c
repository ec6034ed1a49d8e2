/*
 * tml_flatten_s8.c - flatten an NHWC tensor in PyTorch's (C, H, W) order, so a
 * linear layer exported from PyTorch reads its inputs in the order it was
 * trained with.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

tml_status tml_flatten_s8(const tml_shape *input_shape, const int8_t *input, int8_t *output)
{
    if (input_shape == NULL || input == NULL || output == NULL
        || input_shape->h < 1 || input_shape->w < 1 || input_shape->c < 1) {
        return TML_ARG_ERROR;
    }
    const int32_t plane = input_shape->h * input_shape->w;
    const int32_t channels = input_shape->c;
    for (int32_t c = 0; c < channels; c++) {
        int8_t *dst = output + c * plane;
        for (int32_t i = 0; i < plane; i++) {
            dst[i] = input[i * channels + c];
        }
    }
    return TML_OK;
}
