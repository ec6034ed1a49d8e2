/*
 * tml_huffman_fc_s8.c - int8 fully connected layer whose weights are encoded (tml_huffman_weights).
 *
 * Row by row. Dense weights (packed or Huffman-coded indices): row o's in_features weights are
 * decoded into scratch, then tml_fc_s8 (its DSP dot product on a DSP core) computes output o from
 * them with the channel's folded bias, multiplier and shift. Sparse weights ((gap, index) entries):
 * each entry's weight is multiplied with its input as it is read, so a zero costs nothing and the
 * row is never written out. Either way the integer sums are the plain kernel's, so the outputs are
 * tml_fc_s8's on the decoded weights, byte for byte. Scratch: the decoder's state, then one row.
 */
#include "tml_huffman.h"
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

tml_status tml_huffman_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                             int32_t in_features, const int8_t *input,
                             const tml_huffman_weights *weights, const int32_t *bias,
                             int32_t out_features, int8_t *output, int8_t *scratch)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input == NULL
        || output == NULL || scratch == NULL || in_features < 1 || out_features < 1 || weights == NULL
        || weights->count != in_features * out_features || params->act_min > params->act_max) {
        return TML_ARG_ERROR;
    }
    tml_huffman_reader *reader = (tml_huffman_reader *)(void *)scratch;
    int8_t *row = scratch + TML_HUFFMAN_READER_BYTES;
    tml_status status = tml_huffman_reader_init(reader, weights);
    if (weights->gap_bits == 0) {
        tml_fc_params local = *params;
        for (int32_t o = 0; o < out_features && status == TML_OK; o++) {
            status = tml_huffman_read_s8(reader, row, in_features);
            if (status == TML_OK) {
                const tml_quant_channels one = {quant->multiplier + o, quant->shift + o};
                local.folded_bias = params->folded_bias != NULL ? params->folded_bias + o : NULL;
                status = tml_fc_s8(&local, &one, in_features, input, row, bias != NULL ? bias + o : NULL, 1,
                                   output + o);
            }
        }
        return status;
    }
    const tml_fc_params p = *params; /* a copy the int8 output stores cannot alias */
    for (int32_t o = 0; o < out_features && status == TML_OK; o++) {
        int32_t dot, sum;
        status = tml_huffman_dot_sparse_s8(reader, input, in_features, &dot, &sum);
        const int32_t fold = p.folded_bias != NULL
            ? p.folded_bias[o]
            : (int32_t)((bias != NULL ? (uint32_t)bias[o] : 0u) + (uint32_t)p.input_offset * (uint32_t)sum);
        output[o] = tml_requantize_output(dot, fold, quant->multiplier[o], quant->shift[o], p.output_offset,
                                          p.act_min, p.act_max);
    }
    return status;
}

int32_t tml_huffman_fc_s8_scratch_bytes(int32_t in_features)
{
    return tml_huffman_reader_bytes() + in_features;
}
