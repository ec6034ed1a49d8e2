/*
 * tml_huffman_conv2d_s8.c - int8 2-D convolution whose OHWI weights are encoded (tml_huffman_weights).
 *
 * Filter by filter: filter o (k_h * k_w * in_c weights) is decoded into scratch and run over
 * every output position before the next is decoded, so the RAM the weights take is one filter
 * (after the decoder's state, which the scratch holds too).
 * Each filter runs through tml_conv2d_s8_channel, the core's own portable loop for one output
 * channel, so the outputs equal tml_conv2d_s8's on the decoded weights byte for byte.
 */
#include "tml_huffman.h"
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

tml_status tml_huffman_conv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                 const tml_shape *input_shape, const int8_t *input,
                                 const tml_shape *filter_shape, const tml_huffman_weights *weights,
                                 const int32_t *bias,
                                 const tml_shape *output_shape, int8_t *output, int8_t *scratch)
{
    if (weights == NULL || scratch == NULL
        || !tml_conv_args_valid(params, quant, input_shape, input, filter_shape, scratch, output_shape, output)) {
        return TML_ARG_ERROR;
    }
    const int32_t filter_len = filter_shape->h * filter_shape->w * filter_shape->c;
    if (weights->count != filter_len * output_shape->c) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params p = *params; /* a copy the int8 output stores cannot alias */
    tml_huffman_reader *reader = (tml_huffman_reader *)(void *)scratch;
    int8_t *filter = scratch + TML_HUFFMAN_READER_BYTES;
    tml_status status = tml_huffman_reader_init(reader, weights);
    for (int32_t o = 0; o < output_shape->c && status == TML_OK; o++) {
        status = tml_huffman_read_s8(reader, filter, filter_len);
        if (status == TML_OK) {
            tml_conv2d_s8_channel(&p, quant, o, input_shape, input, filter_shape, filter, bias, output_shape,
                                  output);
        }
    }
    return status;
}

int32_t tml_huffman_conv2d_s8_scratch_bytes(const tml_shape *filter_shape)
{
    return tml_huffman_reader_bytes() + filter_shape->h * filter_shape->w * filter_shape->c;
}
