/*
 * tml_softmax_s8.c - int8 softmax over the last axis, integer only.
 *
 * exp(x - max) comes from a 256-entry table in Q16 (table[0] = 65536), so the
 * row sum of at most 65535 entries fits in uint32. The output is
 * round(256 * e / sum) - 128: scale 1/256, zero point -128.
 *
 * No division per element: with r = floor((2^32 - 1) / sum), computed once per row, (n * r) >> 32 is
 * floor(n / sum) or one less (the error n * (2^32 - r * sum) / (sum * 2^32) is below n / 2^32 < 1), and
 * one comparison of the remainder corrects it.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

#define TML_SOFTMAX_MAX_ROW 65535

tml_status tml_softmax_s8(const uint32_t *exp_table, const int8_t *input, int32_t rows,
                          int32_t row_size, int8_t *output)
{
    if (exp_table == NULL || input == NULL || output == NULL || rows < 1 || row_size < 1
        || row_size > TML_SOFTMAX_MAX_ROW || exp_table[0] == 0u) {
        return TML_ARG_ERROR;
    }
    for (int32_t r = 0; r < rows; r++) {
        const int8_t *in = input + r * row_size;
        int8_t *out = output + r * row_size;
        int32_t max = INT8_MIN;
        for (int32_t i = 0; i < row_size; i++) {
            max = in[i] > max ? in[i] : max;
        }
        uint32_t sum = 0;
        for (int32_t i = 0; i < row_size; i++) {
            sum += exp_table[max - in[i]];
        }
        const uint32_t reciprocal = 0xFFFFFFFFu / sum;
        for (int32_t i = 0; i < row_size; i++) {
            const uint32_t numerator = exp_table[max - in[i]] * 256u + sum / 2u; /* < 2^24 + 2^31 */
            uint32_t quotient = (uint32_t)(((uint64_t)numerator * reciprocal) >> 32);
            if (numerator - quotient * sum >= sum) {
                quotient++;
            }
            const int32_t q = (int32_t)quotient - 128;
            out[i] = (int8_t)tml_clamp(q, INT8_MIN, INT8_MAX);
        }
    }
    return TML_OK;
}
