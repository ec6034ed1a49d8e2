/*
 * tml_fc_xnor - binary fully connected layer, 32 outputs at a time in bit-sliced counters.
 *
 * The offsets of the input's set bits are listed once (in scratch); for each block of 32 rows
 * the weight words at those offsets are counted lane by lane (tml_xnor_count), and each row's dot
 * product d = 4V - 2A - 2S + n gives its int8 output as tml_fc_s8 would. Layout in tml_xnor.h.
 */
#include "tml_xnor.h"

int32_t tml_fc_xnor_scratch_bytes(int32_t in_features)
{
    return 4 * in_features; /* the byte offsets of the set input bits' words, uint32 */
}

tml_status tml_fc_xnor(const tml_fc_params *params, const tml_quant_channels *quant, int32_t in_features,
                       const uint32_t *input, const uint32_t *weights, const int16_t *tap_ones,
                       const int32_t *magnitude, const int32_t *bias, int32_t out_features, int8_t *output,
                       void *scratch)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input == NULL
        || weights == NULL || tap_ones == NULL || magnitude == NULL || output == NULL || scratch == NULL
        || in_features < 1 || in_features > TML_XNOR_MAX_TAPS || out_features < 1
        || params->act_min > params->act_max) {
        return TML_ARG_ERROR;
    }
    uint32_t *offsets = (uint32_t *)scratch;
    uint32_t *end = offsets;
    for (int32_t j = 0; j < tml_xnor_words(in_features); j++) {
        end = tml_xnor_set_bits(input[j], 128u * (uint32_t)j, end);
    }
    const int32_t set = (int32_t)(end - offsets);
    const int32_t used = tml_xnor_planes_for(set);
    uint32_t planes[TML_XNOR_PLANES], lanes_at_least;
    tml_xnor_count_job job = tml_xnor_count_from_zero(planes, &lanes_at_least);
    job.offsets = offsets;
    job.n = set;
    job.levels = tml_xnor_levels(used);
    int32_t counts[32], constant[32];
    for (int32_t block = 0; 32 * block < out_features; block++) {
        job.base = (uintptr_t)(weights + (size_t)block * in_features);
        tml_xnor_count(&job);
        tml_xnor_lanes(planes, used, counts);
        const int32_t first = 32 * block;
        const int32_t lanes = out_features - first < 32 ? out_features - first : 32;
        for (int32_t lane = 0; lane < lanes; lane++) {
            const int32_t o = first + lane;
            constant[lane] = (int32_t)((uint32_t)(bias ? bias[o] : 0)
                                       + (uint32_t)(magnitude[o] * (in_features - 2 * tap_ones[o])));
        }
        tml_xnor_outputs(counts, lanes, -2 * set, constant, magnitude + first, quant->multiplier + first,
                         quant->shift + first, params->output_offset, params->act_min, params->act_max,
                         output + first);
    }
    return TML_OK;
}
