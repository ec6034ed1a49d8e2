/*
 * tml_fc_xnor - binary fully connected layer: XOR and popcount of the packed input with each row.
 *
 * An output is d = in_features - 2 * popcount(input ^ row), times the row's magnitude, requantized
 * as tml_fc_s8 requantizes. Layout and ranges in tml_xnor.h.
 */
#include <stddef.h>

#include "tml_xnor.h"

tml_status tml_fc_xnor(const tml_fc_params *params, const tml_quant_channels *quant, int32_t in_features,
                       const uint32_t *input, const uint32_t *weights, const int32_t *magnitude,
                       const int32_t *bias, int32_t out_features, int8_t *output)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input == NULL
        || weights == NULL || magnitude == NULL || output == NULL || in_features < 1 || out_features < 1
        || params->act_min > params->act_max) {
        return TML_ARG_ERROR;
    }
    const int32_t words = tml_xnor_words(in_features);
    for (int32_t o = 0; o < out_features; o++) {
        const uint32_t differing = tml_xor_popcount(input, weights + (size_t)o * words, words);
        const int32_t acc = magnitude[o] * (in_features - 2 * (int32_t)differing);
        output[o] = tml_requantize_output(acc, bias ? bias[o] : 0, quant->multiplier[o], quant->shift[o],
                                          params->output_offset, params->act_min, params->act_max);
    }
    return TML_OK;
}
