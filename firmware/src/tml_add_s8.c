/*
 * tml_add_s8.c - int8 elementwise addition (TFLite's int8 ADD, as CMSIS-NN's
 * arm_elementwise_add_s8).
 *
 * Both inputs are offset, shifted left by left_shift for headroom, rescaled to a
 * common scale, summed and rescaled to the output. Additions that could
 * overflow with extreme parameters wrap (unsigned) instead of being undefined,
 * exactly as the reference does. The requantizations are prepared once per call (tml_requant), so the
 * loop has no shift set-up and no division; on a DSP core the output offset is a saturating add. With
 * scratch (tml_add_s8_scratch_bytes: tensors of TML_ADD_TABLE_MIN_SIZE elements or more) the inputs'
 * rescaled values are tabled per call, so each element costs two loads and one requantization.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* From this many elements on, tabling both inputs' 256 rescaled values pays for itself. */
#define TML_ADD_TABLE_MIN_SIZE 1024

/* One input's value on the common scale: ((x + offset) << left_shift) requantized (its steps prepared). */
static inline int32_t scaled_input(int8_t x, int32_t offset, int32_t left_shift, const tml_requant *q)
{
    const uint32_t shifted = ((uint32_t)(int32_t)x + (uint32_t)offset) << left_shift;
    return tml_requant_apply(q, (int32_t)shifted);
}

/* The output byte of the sum of two rescaled inputs. */
static inline int8_t add_output(int32_t a, int32_t b, const tml_requant *q, int32_t output_offset, int32_t act_min,
                                int32_t act_max)
{
    const int32_t sum = (int32_t)((uint32_t)a + (uint32_t)b);
#if defined(TML_USE_DSP)
    /* the offset added with saturation: beyond int32 the clamp gives the same byte */
    return (int8_t)tml_clamp(__qadd(tml_requant_apply(q, sum), output_offset), act_min, act_max);
#else
    const int64_t v = (int64_t)tml_requant_apply(q, sum) + output_offset;
    return (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
#endif
}

tml_status tml_add_s8(const tml_add_params *params, const int8_t *input1, const int8_t *input2,
                      int8_t *output, int32_t size, void *scratch)
{
    if (params == NULL || input1 == NULL || input2 == NULL || output == NULL || size < 1
        || params->left_shift < 0 || params->left_shift > 31 || params->act_min > params->act_max) {
        return TML_ARG_ERROR;
    }
    /* The three requantizations' shift and rounding set-up, once per call instead of per element. */
    const tml_requant q1 = tml_requant_make(0, params->in1_multiplier, params->in1_shift);
    const tml_requant q2 = tml_requant_make(0, params->in2_multiplier, params->in2_shift);
    const tml_requant qo = tml_requant_make(0, params->out_multiplier, params->out_shift);
    const int32_t in1_offset = params->in1_offset, in2_offset = params->in2_offset;
    const int32_t left_shift = params->left_shift, output_offset = params->output_offset;
    const int32_t act_min = params->act_min, act_max = params->act_max;
    if (scratch != NULL && size >= TML_ADD_TABLE_MIN_SIZE) {
        /* Each input takes 256 values: its rescaled values, tabled once, replace two requantizations per
         * element (the tables are indexed by the byte, x + 128). */
        int32_t *table1 = (int32_t *)scratch;
        int32_t *table2 = table1 + 256;
        for (int32_t x = -128; x < 128; x++) {
            table1[x + 128] = scaled_input((int8_t)x, in1_offset, left_shift, &q1);
            table2[x + 128] = scaled_input((int8_t)x, in2_offset, left_shift, &q2);
        }
        table1 += 128;
        table2 += 128;
        for (int32_t i = 0; i < size; i++) {
            output[i] = add_output(table1[input1[i]], table2[input2[i]], &qo, output_offset, act_min, act_max);
        }
        return TML_OK;
    }
    for (int32_t i = 0; i < size; i++) {
        const int32_t a = scaled_input(input1[i], in1_offset, left_shift, &q1);
        const int32_t b = scaled_input(input2[i], in2_offset, left_shift, &q2);
        output[i] = add_output(a, b, &qo, output_offset, act_min, act_max);
    }
    return TML_OK;
}

int32_t tml_add_s8_scratch_bytes(int32_t size)
{
    return size >= TML_ADD_TABLE_MIN_SIZE ? 2 * 256 * (int32_t)sizeof(int32_t) : 0;
}
