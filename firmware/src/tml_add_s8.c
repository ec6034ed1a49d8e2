/*
 * tml_add_s8.c - int8 elementwise addition (TFLite's int8 ADD, as CMSIS-NN's
 * arm_elementwise_add_s8).
 *
 * Both inputs are offset, shifted left by left_shift for headroom, rescaled to a
 * common scale, summed and rescaled to the output. Additions that could
 * overflow with extreme parameters wrap (unsigned) instead of being undefined,
 * exactly as the reference does.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

static int32_t scaled_input(int8_t x, int32_t offset, int32_t left_shift, int32_t multiplier, int32_t shift)
{
    const uint32_t shifted = ((uint32_t)(int32_t)x + (uint32_t)offset) << left_shift;
    return tml_requantize((int32_t)shifted, multiplier, shift);
}

tml_status tml_add_s8(const tml_add_params *params, const int8_t *input1, const int8_t *input2,
                      int8_t *output, int32_t size)
{
    if (params == NULL || input1 == NULL || input2 == NULL || output == NULL || size < 1
        || params->left_shift < 0 || params->left_shift > 31 || params->act_min > params->act_max) {
        return TML_ARG_ERROR;
    }
    for (int32_t i = 0; i < size; i++) {
        const int32_t a = scaled_input(input1[i], params->in1_offset, params->left_shift,
                                       params->in1_multiplier, params->in1_shift);
        const int32_t b = scaled_input(input2[i], params->in2_offset, params->left_shift,
                                       params->in2_multiplier, params->in2_shift);
        const int32_t sum = (int32_t)((uint32_t)a + (uint32_t)b);
        const int64_t v = (int64_t)tml_requantize(sum, params->out_multiplier, params->out_shift)
                          + params->output_offset;
        output[i] = (int8_t)(v < params->act_min ? params->act_min : (v > params->act_max ? params->act_max : v));
    }
    return TML_OK;
}
