/*
 * tml_binarize_s8 - an int8 tensor to packed bits: the boundary from int8 layers into binary ones.
 *
 * Bit k of a pixel is input[k] >= threshold[k]: the sign of the real value minus the layer's
 * threshold, with the threshold carried into the int8 domain by the quantizer (see
 * tinyml_plugins/binarize/sign.py). Layout in tml_xnor.h.
 */
#include <stddef.h>

#include "tml_xnor.h"

tml_status tml_binarize_s8(const int8_t *input, int32_t pixels, int32_t channels, const int32_t *threshold,
                           uint32_t *output)
{
    if (input == NULL || threshold == NULL || output == NULL || pixels < 1 || channels < 1) {
        return TML_ARG_ERROR;
    }
    const int32_t words = tml_xnor_words(channels);
    for (int32_t p = 0; p < pixels; p++) {
        const int8_t *x = input + (size_t)p * channels;
        uint32_t *out = output + (size_t)p * words;
        for (int32_t word = 0; word < words; word++) {
            const int32_t first = word * 32;
            const int32_t count = channels - first < 32 ? channels - first : 32;
            uint32_t bits = 0;
            for (int32_t k = 0; k < count; k++) {
                bits |= (uint32_t)(x[first + k] >= threshold[first + k]) << k;
            }
            out[word] = bits;
        }
    }
    return TML_OK;
}
