/*
 * tml_xnor.h - binary (XNOR) layers: activations and weights of +1/-1 packed 32 to a word.
 *
 * Bit layout: a binary feature map [h][w][c] is stored pixel by pixel, each pixel as
 * tml_xnor_words(c) uint32 words; channel k is bit (k % 32) of word (k / 32), 1 meaning +1 and
 * 0 meaning -1. The bits past the last channel (the padding to a multiple of 32) are 0. A
 * vector of n features is one pixel of n channels. Weights are packed the same way: a conv
 * filter OHWI [o][kh][kw][c] as o * kh * kw pixels of c channels, an fc matrix [o][n] as o
 * pixels of n channels, with 1 for a positive weight.
 *
 * The product of an input and a filter over n real taps is d = n - 2 * popcount(x ^ w): padding
 * bits are 0 on both sides and add nothing, and so do padded cells of a convolution (they are
 * skipped). A layer's weights are +m or -m per output channel (m in 0..127, the int8 weights of a
 * binary layer), so its int8 accumulator is m * d and the output is requantized exactly as
 * tml_conv2d_s8 / tml_fc_s8 requantize theirs: the same bytes as those kernels on +1/-1 input.
 *
 * Armv7-M has no popcount instruction and __builtin_popcount compiles to a call to __popcountsi2,
 * so the count is inlined: a bit-slice reduction of each word to byte counts, summed over up to
 * 31 words before the bytes are reduced once (a multiply, or USADA8 on cores with the DSP
 * extension). bench/binary.py measures it against a 256-entry table (TML_XNOR_POPCOUNT_TABLE).
 */
#ifndef TML_XNOR_H
#define TML_XNOR_H

#include <stdint.h>

#include "tml_nn.h"
#include "tml_support.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
/* Binarize an int8 tensor of `pixels` pixels of `channels` channels (NHWC, or a vector as one
 * pixel): bit k of a pixel is 1 when input[k] >= threshold[k] (threshold int32[channels], any
 * value: <= -128 gives all 1, >= 128 all 0). output: pixels * tml_xnor_words(channels) words. */
tml_status tml_binarize_s8(const int8_t *input, int32_t pixels, int32_t channels, const int32_t *threshold,
                           uint32_t *output);

/* Binary convolution: input packed [in.h][in.w][words(in.c)], weights packed
 * [out.c][filter.h][filter.w][words(filter.c)], filter.c == in.c >= 1. params: stride >= 1, padding
 * >= 0 (padded cells skipped), input_offset and depth_multiplier unused, output_offset and clamp as
 * tml_conv2d_s8. magnitude int32[out.c]: each channel's |weight| in the int8 domain (0..127); bias
 * int32[out.c] or NULL; quant per output channel. output int8 [out.h][out.w][out.c]. No scratch. */
tml_status tml_conv2d_xnor(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                           const uint32_t *weights, const int32_t *magnitude, const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output);

/* Binary fully connected layer: input packed words(in_features), weights packed
 * [out_features][words(in_features)], in_features and out_features >= 1. params: output_offset and
 * clamp as tml_fc_s8 (input_offset and folded_bias unused). magnitude, bias and quant as
 * tml_conv2d_xnor. output int8 [out_features]. No scratch. */
tml_status tml_fc_xnor(const tml_fc_params *params, const tml_quant_channels *quant, int32_t in_features,
                       const uint32_t *input, const uint32_t *weights, const int32_t *magnitude,
                       const int32_t *bias, int32_t out_features, int8_t *output);
/* cdef-end */

/* Words a pixel of `channels` binary channels takes. */
static inline int32_t tml_xnor_words(int32_t channels)
{
    return (channels + 31) / 32;
}

#ifdef TML_XNOR_POPCOUNT_TABLE
extern const uint8_t tml_xnor_bit_counts[256];
#endif

/* The number of bits set in a[i] ^ b[i] over n >= 0 words. */
static inline uint32_t tml_xor_popcount(const uint32_t *a, const uint32_t *b, int32_t n)
{
    uint32_t total = 0;
#ifdef TML_XNOR_POPCOUNT_TABLE
    for (int32_t i = 0; i < n; i++) {
        const uint32_t v = a[i] ^ b[i];
        total += (uint32_t)tml_xnor_bit_counts[v & 0xFFu] + tml_xnor_bit_counts[(v >> 8) & 0xFFu]
               + tml_xnor_bit_counts[(v >> 16) & 0xFFu] + tml_xnor_bit_counts[v >> 24];
    }
#else
    while (n > 0) {
        /* Each byte of `bytes` counts up to 8 bits a word; 31 words stay below 256. */
        int32_t chunk = n < 31 ? n : 31;
        uint32_t bytes = 0;
        n -= chunk;
        do {
            uint32_t v = *a++ ^ *b++;
            v = v - ((v >> 1) & 0x55555555u);
            v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
            bytes += (v + (v >> 4)) & 0x0F0F0F0Fu;
        } while (--chunk);
#ifdef TML_USE_DSP
        total = __usada8(bytes, 0u, total);
#else
        total += (bytes * 0x01010101u) >> 24;
#endif
    }
#endif
    return total;
}

#ifdef __cplusplus
}
#endif

#endif /* TML_XNOR_H */
