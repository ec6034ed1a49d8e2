/*
 * tml_huffman_fc_s8.c - int8 fully connected layer whose weights are encoded (tml_huffman_weights).
 *
 * Row by row: row o's in_features weights are decoded into scratch, then tml_fc_s8 computes
 * output o from them with the channel's bias, multiplier and shift. The arithmetic is the plain
 * kernel's own, so the outputs are tml_fc_s8's on the decoded weights, byte for byte; the RAM is
 * one row of scratch.
 */
#include "tml_huffman.h"
#include "tml_nn.h"

#include <stddef.h>

tml_status tml_huffman_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                             int32_t in_features, const int8_t *input,
                             const tml_huffman_weights *weights, const int32_t *bias,
                             int32_t out_features, int8_t *output, int8_t *scratch)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input == NULL
        || output == NULL || scratch == NULL || in_features < 1 || out_features < 1 || weights == NULL
        || weights->count != in_features * out_features) {
        return TML_ARG_ERROR;
    }
    tml_huffman_reader reader;
    tml_status status = tml_huffman_reader_init(&reader, weights);
    for (int32_t o = 0; o < out_features && status == TML_OK; o++) {
        status = tml_huffman_read_s8(&reader, scratch, in_features);
        if (status == TML_OK) {
            const tml_quant_channels row = {quant->multiplier + o, quant->shift + o};
            status = tml_fc_s8(params, &row, in_features, input, scratch, bias != NULL ? bias + o : NULL, 1,
                               output + o);
        }
    }
    return status;
}

int32_t tml_huffman_fc_s8_scratch_bytes(int32_t in_features)
{
    return in_features;
}
