/*
 * tml_xnor.h - binary (XNOR) layers: activations and weights of +1/-1 packed 32 to a word.
 *
 * Activations: a binary feature map [h][w][c] is stored pixel by pixel, each pixel as
 * tml_xnor_words(c) uint32 words; channel k is bit (k % 32) of word (k / 32), 1 meaning +1 and 0
 * meaning -1; the bits past the last channel are 0. A vector of n features is one pixel of n
 * channels. Written by tml_binarize_s8.
 *
 * Weights are packed across output channels: 32 output channels make a block, and a block holds
 * one word per tap of the filter, taps in OHWI order [kh][kw][c] (an fc row: [in_features]); bit j
 * of a word is 1 when output channel 32 * block + j has a positive weight there (0 for the
 * channels past the last). `tap_ones` int16 [out_c][kh * kw] counts each output channel's positive
 * weights at each filter position (over the channels).
 *
 * A layer's output channel o over the n real taps of a window (padded cells are skipped, as zero
 * point padding adds nothing in tml_conv2d_s8) is the dot product of +1/-1 values
 *     d = 4 * V - 2 * A - 2 * S + n
 * with A the set input bits of the window, S the positive weights at the window's taps
 * (`tap_ones`) and V the taps where both are set. V is counted for 32 output channels at once:
 * the offsets of the window's set input bits are listed once (in scratch; a convolution lists each
 * input column once for the windows that share it), and for each block the weight words at those
 * offsets are summed lane by lane in a bit-sliced carry-save counter
 * (Harley-Seal: 16 words at a time into ones/twos/fours/eights, the sixteens rippled into higher
 * planes), so no popcount instruction or call is needed: Armv7-M has none, and
 * __builtin_popcount would call libgcc's __popcountsi2. The work follows the set bits of the
 * input (half the taps for balanced activations). A channel's weights are +m or -m (m in 0..127,
 * the int8 weights of a binary layer), its int8 accumulator m * d, and its output requantized
 * exactly as tml_conv2d_s8 / tml_fc_s8 requantize: the bytes of those kernels on +1/-1 input.
 */
#ifndef TML_XNOR_H
#define TML_XNOR_H

#include <stddef.h>
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

/* Binary convolution. input packed [in.h][in.w][words(in.c)]; weights packed in blocks
 * [(out.c + 31) / 32][filter.h][filter.w][filter.c], filter.c == in.c >= 1, filter.h * filter.w *
 * filter.c <= 65535; tap_ones int16 [out.c][filter.h * filter.w]. params: stride >= 1, padding >= 0
 * (padded cells skipped), input_offset and depth_multiplier unused, output_offset and clamp as
 * tml_conv2d_s8. magnitude int32[out.c]: each channel's |weight| in the int8 domain (0..127); bias
 * int32[out.c] or NULL; quant per output channel. output int8 [out.h][out.w][out.c]. scratch:
 * tml_conv2d_xnor_scratch_bytes(filter_shape, out.c) bytes, 4-byte aligned. */
tml_status tml_conv2d_xnor(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                           const uint32_t *weights, const int16_t *tap_ones, const int32_t *magnitude,
                           const int32_t *bias, const tml_shape *output_shape, int8_t *output, void *scratch);
int32_t tml_conv2d_xnor_scratch_bytes(const tml_shape *filter_shape, int32_t out_channels);

/* Binary convolution fused with the sign after it: the int8 output tml_conv2d_xnor would give (same
 * arguments and ranges, params->output_offset its zero point) compared with threshold int32[out.c]:
 * bit k of an output pixel is 1 when channel k's int8 output is >= threshold[k]. output packed
 * [out.h][out.w][words(out.c)], as tml_binarize_s8 writes it. filter.h * filter.w * filter.c <=
 * TML_XNOR_SIGN_MAX_TAPS. scratch: tml_conv2d_xnor_sign_scratch_bytes(filter_shape, out.c) bytes,
 * 4-byte aligned. */
tml_status tml_conv2d_xnor_sign(const tml_conv_params *params, const tml_quant_channels *quant,
                                const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                                const uint32_t *weights, const int16_t *tap_ones, const int32_t *magnitude,
                                const int32_t *bias, const int32_t *threshold, const tml_shape *output_shape,
                                uint32_t *output, void *scratch);
int32_t tml_conv2d_xnor_sign_scratch_bytes(const tml_shape *filter_shape, int32_t out_channels);

/* Binary fully connected layer: input packed words(in_features); weights packed in blocks
 * [(out_features + 31) / 32][in_features], 1 <= in_features <= 65535; tap_ones int16
 * [out_features] (positive weights of each row). params: output_offset and clamp as tml_fc_s8
 * (input_offset and folded_bias unused). magnitude, bias and quant as tml_conv2d_xnor. output int8
 * [out_features]. scratch: tml_fc_xnor_scratch_bytes(in_features) bytes, 4-byte aligned. */
tml_status tml_fc_xnor(const tml_fc_params *params, const tml_quant_channels *quant, int32_t in_features,
                       const uint32_t *input, const uint32_t *weights, const int16_t *tap_ones,
                       const int32_t *magnitude, const int32_t *bias, int32_t out_features, int8_t *output,
                       void *scratch);
int32_t tml_fc_xnor_scratch_bytes(int32_t in_features);
/* cdef-end */

#if defined(__GNUC__)
#define TML_XNOR_NOINLINE __attribute__((noinline, unused)) /* a loop of its own gets every register */
#else
#define TML_XNOR_NOINLINE
#endif

#define TML_XNOR_MAX_TAPS 65535
#define TML_XNOR_PLANES 16 /* counts up to 65535 */
#define TML_XNOR_SIGN_MAX_TAPS 16383 /* tml_conv2d_xnor_sign's counters (started at <= 1.5 taps + 2) fit the planes */

/* Words a pixel of `channels` binary channels takes. */
static inline int32_t tml_xnor_words(int32_t channels)
{
    return (channels + 31) / 32;
}

/* Append to `offsets` base + k for every set bit k of `bits`, in ascending order; returns the new end. */
static inline uint16_t *tml_xnor_set_bits(uint32_t bits, int32_t base, uint16_t *offsets)
{
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
    /* RBIT puts bit 0 on top; CLZ then finds the lowest set bit, and shifting it out walks upwards. */
    uint32_t x;
    __asm__("rbit %0, %1" : "=r"(x) : "r"(bits));
    while (x != 0) {
        const uint32_t k = (uint32_t)__builtin_clz(x);
        *offsets++ = (uint16_t)(base + (int32_t)k);
        x &= ~(0x80000000u >> k);
    }
#else
    while (bits != 0) {
        *offsets++ = (uint16_t)(base + __builtin_ctz(bits));
        bits &= bits - 1;
    }
#endif
    return offsets;
}

/* One carry-save adder: (high, low) = a + b + c, lane by lane. */
#define TML_XNOR_CSA(high, low, a, b, c) \
    do {                                 \
        const uint32_t u_ = (a) ^ (b);   \
        const uint32_t c_ = (c);         \
        high = ((a) & (b)) | (u_ & c_);  \
        low = u_ ^ c_;                   \
    } while (0)

/* Eight words block[at[0..7]] into the counter planes ones, twos and fours of the calling scope (with
 * its temporaries twos_a, twos_b, fours_a, fours_b); `eights_out` gets the lanes that carry eight. */
#define TML_XNOR_ADD8(eights_out, block, at)                                  \
    do {                                                                      \
        TML_XNOR_CSA(twos_a, ones, ones, (block)[(at)[0]], (block)[(at)[1]]); \
        TML_XNOR_CSA(twos_b, ones, ones, (block)[(at)[2]], (block)[(at)[3]]); \
        TML_XNOR_CSA(fours_a, twos, twos, twos_a, twos_b);                    \
        TML_XNOR_CSA(twos_a, ones, ones, (block)[(at)[4]], (block)[(at)[5]]); \
        TML_XNOR_CSA(twos_b, ones, ones, (block)[(at)[6]], (block)[(at)[7]]); \
        TML_XNOR_CSA(fours_b, twos, twos, twos_a, twos_b);                    \
        TML_XNOR_CSA(eights_out, fours, fours, fours_a, fours_b);             \
    } while (0)

/* Lane by lane, how many of the words counted so far have each bit set: bit j of planes[p] is bit p
 * of lane j's count. ones..eights are planes 0..3 while counting (kept in registers by
 * tml_xnor_count_add); tml_xnor_count_finish stores them into planes. */
typedef struct {
    uint32_t ones, twos, fours, eights;
    uint32_t planes[TML_XNOR_PLANES];
} tml_xnor_counter;

static inline void tml_xnor_count_start(tml_xnor_counter *counter)
{
    counter->ones = counter->twos = counter->fours = counter->eights = 0;
    for (int32_t p = 4; p < TML_XNOR_PLANES; p++) {
        counter->planes[p] = 0;
    }
}

/* Adds the words block[offsets[i]] (i < n) to the counter. */
static TML_XNOR_NOINLINE void tml_xnor_count_add(tml_xnor_counter *counter, const uint32_t *block,
                                                 const uint16_t *offsets, int32_t n)
{
    uint32_t ones = counter->ones, twos = counter->twos, fours = counter->fours, eights = counter->eights;
    uint32_t *planes = counter->planes;
    uint32_t twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, sixteens;
    for (; n >= 16; n -= 16, offsets += 16) {
        TML_XNOR_ADD8(eights_a, block, offsets);
        TML_XNOR_ADD8(eights_b, block, offsets + 8);
        TML_XNOR_CSA(sixteens, eights, eights, eights_a, eights_b);
        for (int32_t p = 4; sixteens != 0; p++) { /* ripple the sixteens into the higher planes */
            const uint32_t carry = planes[p] & sixteens;
            planes[p] ^= sixteens;
            sixteens = carry;
        }
    }
    if (n >= 8) { /* eight words: into ones, twos, fours, the eights rippled on */
        TML_XNOR_ADD8(eights_a, block, offsets);
        sixteens = eights & eights_a;
        eights ^= eights_a;
        for (int32_t p = 4; sixteens != 0; p++) {
            const uint32_t carry = planes[p] & sixteens;
            planes[p] ^= sixteens;
            sixteens = carry;
        }
        n -= 8;
        offsets += 8;
    }
    for (; n > 0; n--) { /* the last words, one at a time */
        uint32_t carry = block[*offsets++];
        uint32_t next = ones & carry;
        ones ^= carry;
        carry = next;
        next = twos & carry;
        twos ^= carry;
        carry = next;
        next = fours & carry;
        fours ^= carry;
        carry = next;
        next = eights & carry;
        eights ^= carry;
        for (int32_t p = 4; next != 0; p++) {
            carry = planes[p] & next;
            planes[p] ^= next;
            next = carry;
        }
    }
    counter->ones = ones;
    counter->twos = twos;
    counter->fours = fours;
    counter->eights = eights;
}

/* A counter holding start[p] as plane p (each lane its own starting count). */
static inline void tml_xnor_count_start_at(tml_xnor_counter *counter, const uint32_t start[TML_XNOR_PLANES])
{
    counter->ones = start[0];
    counter->twos = start[1];
    counter->fours = start[2];
    counter->eights = start[3];
    for (int32_t p = 4; p < TML_XNOR_PLANES; p++) {
        counter->planes[p] = start[p];
    }
}

static inline void tml_xnor_count_finish(tml_xnor_counter *counter)
{
    counter->planes[0] = counter->ones;
    counter->planes[1] = counter->twos;
    counter->planes[2] = counter->fours;
    counter->planes[3] = counter->eights;
}

/* Every lane's count out of the planes (only the first `used` can be nonzero) into counts[32]. Four
 * lanes at a time: a nibble of a plane spread to four bytes (bit i to byte i) is added at the
 * plane's weight, planes 0..7 in one word and 8..15 in another, so no byte overflows. */
static inline void tml_xnor_lanes(const uint32_t planes[TML_XNOR_PLANES], int32_t used, int32_t counts[32])
{
    static const uint32_t spread[16] = {
        0x00000000u, 0x00000001u, 0x00000100u, 0x00000101u, 0x00010000u, 0x00010001u, 0x00010100u, 0x00010101u,
        0x01000000u, 0x01000001u, 0x01000100u, 0x01000101u, 0x01010000u, 0x01010001u, 0x01010100u, 0x01010101u,
    };
    const int32_t low_planes = used < 8 ? used : 8;
    for (int32_t group = 0; group < 8; group++) {
        const int32_t shift = 4 * group;
        uint32_t low = 0, high = 0;
        for (int32_t p = 0; p < low_planes; p++) {
            low += spread[(planes[p] >> shift) & 15u] << p;
        }
        for (int32_t p = 8; p < used; p++) {
            high += spread[(planes[p] >> shift) & 15u] << (p - 8);
        }
        for (int32_t i = 0; i < 4; i++) {
            counts[shift + i] = (int32_t)(((low >> (8 * i)) & 255u) | (((high >> (8 * i)) & 255u) << 8));
        }
    }
}

/* One channel's int8 output for the accumulator acc: requantized, offset and clamped as every
 * multiply-accumulate kernel does. */
static inline int8_t tml_xnor_output(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                     int32_t act_min, int32_t act_max)
{
    tml_requant_smlal q; /* one SMLAL where the pair allows it, else tml_requantize */
    const int32_t scaled = tml_requant_smlal_make(&q, 0, multiplier, shift) ? tml_requant_smlal_apply(&q, acc)
                                                                            : tml_requantize(acc, multiplier, shift);
    return tml_clamp_output(scaled, output_offset, act_min, act_max);
}

/* The int8 outputs of `lanes` channels: accumulator constant[i] + magnitude[i] * (4 * counts[i] + minus_2a),
 * through tml_xnor_output. */
static TML_XNOR_NOINLINE void tml_xnor_outputs(const int32_t *counts, int32_t lanes, int32_t minus_2a,
                                               const int32_t *constant, const int32_t *magnitude,
                                               const int32_t *multiplier, const int32_t *shift,
                                               int32_t output_offset, int32_t act_min, int32_t act_max, int8_t *y)
{
    for (int32_t i = 0; i < lanes; i++) {
        const int32_t acc = (int32_t)((uint32_t)constant[i] + (uint32_t)(magnitude[i] * (4 * counts[i] + minus_2a)));
        y[i] = tml_xnor_output(acc, multiplier[i], shift[i], output_offset, act_min, act_max);
    }
}

/* Planes a count of at most n needs. */
static inline int32_t tml_xnor_planes_for(int32_t n)
{
    int32_t used = 1;
    while ((n >> used) != 0) {
        used++;
    }
    return used;
}

#ifdef __cplusplus
}
#endif

#endif /* TML_XNOR_H */
