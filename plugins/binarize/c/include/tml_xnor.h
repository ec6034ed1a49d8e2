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
 * the byte offsets of the weight words of the window's set input bits are listed once (uint32, in
 * scratch; a convolution lists each input column once for the windows that share it), and for each
 * block the weight words at those offsets are summed lane by lane in a bit-sliced carry-save counter
 * (Harley-Seal: 16 words at a time into ones/twos/fours/eights, each group's carry of sixteen counted
 * the same way a level up), so no popcount instruction or call is needed: Armv7-M has none, and
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

#define TML_XNOR_MAX_TAPS 65535 /* a count fits 16 planes */
#define TML_XNOR_PLANES 16 /* counts up to 65535 */
#define TML_XNOR_SIGN_MAX_TAPS 16383 /* tml_conv2d_xnor_sign's counters (started at <= 1.5 taps + 2) fit the planes */

/* Words a pixel of `channels` binary channels takes. */
static inline int32_t tml_xnor_words(int32_t channels)
{
    return (channels + 31) / 32;
}

/* Append to `offsets` the byte offset base + 4 * k of the word of every set bit k of `bits`, in ascending
 * order; returns the new end. */
static inline uint32_t *tml_xnor_set_bits(uint32_t bits, uint32_t base, uint32_t *offsets)
{
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
    /* RBIT puts bit 0 on top; CLZ then finds the lowest set bit, and shifting it out walks upwards. */
    uint32_t x;
    __asm__("rbit %0, %1" : "=r"(x) : "r"(bits));
    while (x != 0) {
        const uint32_t k = (uint32_t)__builtin_clz(x);
        *offsets++ = base + 4u * k;
        x &= ~(0x80000000u >> k);
    }
#else
    while (bits != 0) {
        *offsets++ = base + 4u * (uint32_t)__builtin_ctz(bits);
        bits &= bits - 1;
    }
#endif
    return offsets;
}

#define TML_XNOR_LEVELS 4   /* level k holds planes 4k..4k+3 */
#define TML_XNOR_CHUNK 384  /* words a level-0 call adds at most: at most 25 carries */
#define TML_XNOR_WAITING 40 /* carries waiting for a level: up to 15, then a call's 25 */

/* Planes 4k..4k+3 of a count (ones, twos, fours, eights of the words of weight 16^k added at level k),
 * and where the next carry (a word of weight 16^(k+1)) goes. The layout tml_xnor_count_words reads. */
typedef struct {
    uint32_t ones, twos, fours, eights;
    uint32_t *carry;
} tml_xnor_level;

/* Lane by lane, how many of the words counted so far have each bit set: bit j of planes[p] is bit p
 * of lane j's count. While counting, words are added at level 0; level k's carries wait in waiting[k]
 * until level k + 1 adds them (level 3's are zero: counts stay below 65536). tml_xnor_count_finish
 * adds what waits and fills planes. */
typedef struct {
    tml_xnor_level level[TML_XNOR_LEVELS];
    uint32_t waiting[TML_XNOR_LEVELS][TML_XNOR_WAITING];
    uint32_t planes[TML_XNOR_PLANES];
} tml_xnor_counter;

/* The byte offsets of consecutive words: a level adds the carries waiting in a buffer. */
static inline const uint32_t *tml_xnor_consecutive(void)
{
    static const uint32_t offsets[TML_XNOR_WAITING] = {
        0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 76, 80, 84, 88, 92, 96, 100, 104,
        108, 112, 116, 120, 124, 128, 132, 136, 140, 144, 148, 152, 156
    };
    return offsets;
}

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
/* One carry-save adder in place: (a, c) = (high, low) of a + b + c, lane by lane; b is clobbered. */
#define TML_XNOR_CSA_ASM(a, b, c) \
    "eor " b ", " b ", " a "\n\t" \
    "bic " a ", " a ", " b "\n\t" \
    "eor " c ", " c ", " b "\n\t" \
    "bic " b ", " b ", " c "\n\t" \
    "orr " a ", " a ", " b "\n\t"

/* One half adder: (high, c) = (carry, low) of a + c, lane by lane. */
#define TML_XNOR_HA_ASM(high, a, c)   \
    "and " high ", " c ", " a "\n\t" \
    "eor " c ", " c ", " a "\n\t"

/* Four words at the byte offsets read from r2 (advanced) off the base r1, into registers a..d. */
#define TML_XNOR_LOAD4_ASM(a, b, c, d)          \
    "ldm r2!, {" a ", " b ", " c ", " d "}\n\t" \
    "ldr " a ", [r1, " a "]\n\t"                \
    "ldr " b ", [r1, " b "]\n\t"                \
    "ldr " c ", [r1, " c "]\n\t"                \
    "ldr " d ", [r1, " d "]\n\t"

/* Eight words into ones (r4) and twos (r5): the lanes that carry four in a, two clobbered registers b, c
 * and r11, r12. */
#define TML_XNOR_ADD8_ASM(a, b, c)                    \
    TML_XNOR_LOAD4_ASM(a, b, c, "r11")                \
    TML_XNOR_CSA_ASM(a, b, "r4")                      \
    TML_XNOR_CSA_ASM(c, "r11", "r4")                  \
    TML_XNOR_CSA_ASM(a, c, "r5")                      \
    TML_XNOR_LOAD4_ASM(b, c, "r11", "r12")            \
    TML_XNOR_CSA_ASM(b, c, "r4")                      \
    TML_XNOR_CSA_ASM("r11", "r12", "r4")              \
    TML_XNOR_CSA_ASM(b, "r11", "r5")                  \
    TML_XNOR_CSA_ASM(a, b, "r6") /* a: the eights */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter" /* read by the assembly */
/* Adds the n words at the byte offsets offsets[0..n) from the address base to level (its planes in r4..r7, the
 * carry pointer in r8; Harley-Seal): 16 at a time, each group storing its carry, then 8, 4, 2 and 1 as n
 * has them, each piece rippling its top into eights, their carries out (a lane carries once in fewer
 * than 16 words) stored as one word. At most n / 16 + 1 carries. */
__attribute__((naked, noinline, unused)) static void tml_xnor_count_words(tml_xnor_level *level, uintptr_t base,
                                                                        const uint32_t *offsets, int32_t n)
{
    __asm__("push {r0, r4-r11, lr}\n\t"
            "ldm r0, {r4-r8}\n\t"
            "subs r3, r3, #16\n\t"
            "blt 2f\n"
            "1:\n\t" /* r3 = words left - 16 */
            TML_XNOR_ADD8_ASM("r0", "r9", "r10")
            TML_XNOR_ADD8_ASM("r9", "r10", "lr")
            TML_XNOR_CSA_ASM("r0", "r9", "r7")
            "str r0, [r8], #4\n\t"
            "subs r3, r3, #16\n\t"
            "bge 1b\n"
            "2:\n\t" /* the low four bits of r3 are the words left; lr gathers their carry */
            "ands r3, r3, #15\n\t"
            "beq 6f\n\t"
            "mov lr, #0\n\t"
            "tst r3, #8\n\t"
            "beq 3f\n\t"
            TML_XNOR_ADD8_ASM("r0", "r9", "r10")
            TML_XNOR_HA_ASM("lr", "r0", "r7")
            "3:\n\t"
            "tst r3, #4\n\t"
            "beq 4f\n\t"
            TML_XNOR_LOAD4_ASM("r0", "r9", "r10", "r11")
            TML_XNOR_CSA_ASM("r0", "r9", "r4")
            TML_XNOR_CSA_ASM("r10", "r11", "r4")
            TML_XNOR_CSA_ASM("r0", "r10", "r5")
            TML_XNOR_HA_ASM("r9", "r0", "r6")
            TML_XNOR_HA_ASM("r10", "r9", "r7")
            "orr lr, lr, r10\n"
            "4:\n\t"
            "tst r3, #2\n\t"
            "beq 5f\n\t"
            "ldm r2!, {r0, r9}\n\t"
            "ldr r0, [r1, r0]\n\t"
            "ldr r9, [r1, r9]\n\t"
            TML_XNOR_CSA_ASM("r0", "r9", "r4")
            TML_XNOR_HA_ASM("r9", "r0", "r5")
            TML_XNOR_HA_ASM("r10", "r9", "r6")
            TML_XNOR_HA_ASM("r9", "r10", "r7")
            "orr lr, lr, r9\n"
            "5:\n\t"
            "tst r3, #1\n\t"
            "beq 7f\n\t"
            "ldr r0, [r2]\n\t"
            "ldr r0, [r1, r0]\n\t"
            TML_XNOR_HA_ASM("r9", "r0", "r4")
            TML_XNOR_HA_ASM("r10", "r9", "r5")
            TML_XNOR_HA_ASM("r9", "r10", "r6")
            TML_XNOR_HA_ASM("r10", "r9", "r7")
            "orr lr, lr, r10\n"
            "7:\n\t"
            "str lr, [r8], #4\n"
            "6:\n\t"
            "pop {r0}\n\t"
            "stm r0, {r4-r8}\n\t"
            "pop {r4-r11, pc}\n\t");
}
#pragma GCC diagnostic pop
#else
/* One carry-save adder: (high, low) = a + b + c, lane by lane. */
#define TML_XNOR_CSA(high, low, a, b, c) \
    do {                                 \
        const uint32_t u_ = (a) ^ (b);   \
        const uint32_t c_ = (c);         \
        high = ((a) & (b)) | (u_ & c_);  \
        low = u_ ^ c_;                   \
    } while (0)

/* The word at byte offset `at` from the address `base` (an integer: a convolution's base may lie before its
 * weights, the offsets bringing every address into them). */
#define TML_XNOR_AT(base, at) (*(const uint32_t *)((base) + (uintptr_t)(at)))

/* Eight words at the byte offsets at[0..7] from base into ones, twos and fours of the calling scope
 * (with its temporaries twos_a, twos_b, fours_a, fours_b); `eights_out` gets the lanes that carry eight. */
#define TML_XNOR_ADD8(eights_out, base, at)                                                        \
    do {                                                                                            \
        TML_XNOR_CSA(twos_a, ones, ones, TML_XNOR_AT(base, (at)[0]), TML_XNOR_AT(base, (at)[1])); \
        TML_XNOR_CSA(twos_b, ones, ones, TML_XNOR_AT(base, (at)[2]), TML_XNOR_AT(base, (at)[3])); \
        TML_XNOR_CSA(fours_a, twos, twos, twos_a, twos_b);                                          \
        TML_XNOR_CSA(twos_a, ones, ones, TML_XNOR_AT(base, (at)[4]), TML_XNOR_AT(base, (at)[5])); \
        TML_XNOR_CSA(twos_b, ones, ones, TML_XNOR_AT(base, (at)[6]), TML_XNOR_AT(base, (at)[7])); \
        TML_XNOR_CSA(fours_b, twos, twos, twos_a, twos_b);                                          \
        TML_XNOR_CSA(eights_out, fours, fours, fours_a, fours_b);                                   \
    } while (0)

/* Adds the n words at the byte offsets offsets[0..n) from the address base to level (Harley-Seal): 16 at a time,
 * each group storing its carry, then the last words one at a time rippled into eights, their carries
 * out (a lane carries once in fewer than 16 words) stored as one word. At most n / 16 + 1 carries. */
static TML_XNOR_NOINLINE void tml_xnor_count_words(tml_xnor_level *level, uintptr_t base,
                                                   const uint32_t *offsets, int32_t n)
{
    uint32_t ones = level->ones, twos = level->twos, fours = level->fours, eights = level->eights;
    uint32_t *carry = level->carry;
    uint32_t twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, sixteens;
    for (; n >= 16; n -= 16, offsets += 16) {
        TML_XNOR_ADD8(eights_a, base, offsets);
        TML_XNOR_ADD8(eights_b, base, offsets + 8);
        TML_XNOR_CSA(sixteens, eights, eights, eights_a, eights_b);
        *carry++ = sixteens;
    }
    if (n > 0) {
        uint32_t out = 0;
        for (; n > 0; n--) {
            uint32_t c = TML_XNOR_AT(base, *offsets++), next;
            next = ones & c;
            ones ^= c;
            c = twos & next;
            twos ^= next;
            next = fours & c;
            fours ^= c;
            out |= eights & next;
            eights ^= next;
        }
        *carry++ = out;
    }
    level->ones = ones;
    level->twos = twos;
    level->fours = fours;
    level->eights = eights;
    level->carry = carry;
}
#endif

/* A counter holding start[p] as plane p (each lane its own starting count). */
static inline void tml_xnor_count_start_at(tml_xnor_counter *counter, const uint32_t start[TML_XNOR_PLANES])
{
    for (int32_t k = 0; k < TML_XNOR_LEVELS; k++) {
        tml_xnor_level *level = &counter->level[k];
        level->ones = start[4 * k];
        level->twos = start[4 * k + 1];
        level->fours = start[4 * k + 2];
        level->eights = start[4 * k + 3];
        level->carry = counter->waiting[k];
    }
}

/* A counter at zero in every lane (tml_xnor_count_start_at with zero planes, without reading them). */
static inline void tml_xnor_count_start(tml_xnor_counter *counter)
{
    for (int32_t k = 0; k < TML_XNOR_LEVELS; k++) {
        tml_xnor_level *level = &counter->level[k];
        level->ones = level->twos = level->fours = level->eights = 0;
        level->carry = counter->waiting[k];
    }
}

/* Every level above 0 below `levels` adds the carries waiting for it when there are more than `most`. */
static inline void tml_xnor_count_carries(tml_xnor_counter *counter, int32_t most, int32_t levels)
{
    for (int32_t k = 1; k < levels; k++) {
        const int32_t n = (int32_t)(counter->level[k - 1].carry - counter->waiting[k - 1]);
        if (n > most) {
            tml_xnor_count_words(&counter->level[k], (uintptr_t)counter->waiting[k - 1], tml_xnor_consecutive(), n);
            counter->level[k - 1].carry = counter->waiting[k - 1];
        }
    }
    counter->level[TML_XNOR_LEVELS - 1].carry = counter->waiting[TML_XNOR_LEVELS - 1];
}

/* Adds the words at the byte offsets offsets[i] (i < n) from the address base to the counter. */
static inline void tml_xnor_count_add(tml_xnor_counter *counter, uintptr_t base, const uint32_t *offsets, int32_t n)
{
    for (; n > 0; n -= TML_XNOR_CHUNK, offsets += TML_XNOR_CHUNK) {
        tml_xnor_count_words(&counter->level[0], base, offsets, n < TML_XNOR_CHUNK ? n : TML_XNOR_CHUNK);
        tml_xnor_count_carries(counter, TML_XNOR_WAITING - TML_XNOR_CHUNK / 16 - 1, TML_XNOR_LEVELS);
    }
}

/* Adds the carries still waiting (those of weight 2^used and up are zero: the count is below 2^used); the
 * count is then in the levels' planes. */
static inline void tml_xnor_count_settle(tml_xnor_counter *counter, int32_t used)
{
    tml_xnor_count_carries(counter, 0, (used + 3) / 4);
}

/* The lanes of a settled counter whose count is at least q (q < 2^used), most significant plane first;
 * the planes above `used` are zero, so whole levels are compared. */
static inline uint32_t tml_xnor_count_at_least(const tml_xnor_counter *counter, int32_t used, uint32_t q)
{
    uint32_t greater = 0, equal = 0xFFFFFFFFu;
    for (int32_t k = (used - 1) >> 2; k >= 0; k--) {
        const tml_xnor_level *level = &counter->level[k];
        const uint32_t planes[4] = {level->ones, level->twos, level->fours, level->eights};
        for (int32_t i = 3; i >= 0; i--) {
            if ((q >> (4 * k + i)) & 1u) {
                equal &= planes[i];
            } else {
                greater |= equal & planes[i];
                equal &= ~planes[i];
            }
        }
    }
    return greater | equal;
}

/* Settles the counter and stores the count into planes. */
static inline void tml_xnor_count_finish(tml_xnor_counter *counter, int32_t used)
{
    tml_xnor_count_settle(counter, used);
    for (int32_t k = 0; k < TML_XNOR_LEVELS; k++) {
        counter->planes[4 * k] = counter->level[k].ones;
        counter->planes[4 * k + 1] = counter->level[k].twos;
        counter->planes[4 * k + 2] = counter->level[k].fours;
        counter->planes[4 * k + 3] = counter->level[k].eights;
    }
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

/* What the binary convolutions (tml_conv2d_xnor, tml_conv2d_xnor_sign) share: the byte offsets of the
 * weight words of the set input bits under a window, as one list that every block counts in one go.
 * Along an output row the input columns are listed once each, in order, over the row's real filter
 * rows (padded cells are skipped), into one buffer: a window's columns are then its last entries.
 * An entry of column x is 4 * ((ky * filter.w + x) * in.c + channel), so a window whose tap 0 lies
 * at column `origin` reads the words from the address of its block's weights less 4 * origin * in.c
 * (tml_xnor_columns_base): the same entry serves every window over the column. When the buffer
 * (room for two windows) has no room for another column, the columns still needed move to its
 * start. The buffer lives in scratch: tml_xnor_columns_bytes. */
typedef struct {
    uint32_t *entries;  /* 2 * filter.h * filter.w * in.c */
    int32_t *first;     /* per filter column slot x % filter.w: where column x's entries begin */
    int32_t *column;    /* the column x a slot holds (-1: none) */
    int32_t end;        /* entries in use */
    int32_t next;       /* the next input column to list */
    int32_t capacity;
    int32_t window;     /* the current window's first entry */
} tml_xnor_columns;

/* Scratch bytes of the buffer (4-byte aligned). */
static inline int32_t tml_xnor_columns_bytes(const tml_shape *filter_shape)
{
    return 8 * filter_shape->h * filter_shape->w * filter_shape->c + 8 * filter_shape->w;
}

/* The buffer at the start of `scratch` (the first window of each output row starts it afresh). */
static inline tml_xnor_columns tml_xnor_columns_at(void *scratch, const tml_shape *filter_shape)
{
    tml_xnor_columns c;
    c.capacity = 2 * filter_shape->h * filter_shape->w * filter_shape->c;
    c.entries = (uint32_t *)scratch;
    c.first = (int32_t *)(c.entries + c.capacity);
    c.column = c.first + filter_shape->w;
    c.end = c.next = c.window = 0;
    return c;
}

/* Lists the window's columns not listed yet (`row_start`: the first window of an output row) and makes its
 * entries entries[window .. end); returns A, the set input bits of the window's real cells. */
static inline int32_t tml_xnor_columns_list(tml_xnor_columns *c, const uint32_t *input, const tml_shape *in,
                                            int32_t filter_w, tml_window_span sy, tml_window_span sx, int row_start)
{
    const int32_t words = tml_xnor_words(in->c);
    const int32_t room = (sy.end > sy.begin ? sy.end - sy.begin : 0) * in->c; /* entries a column may have */
    const int32_t begin = sx.origin + sx.begin, stop = sx.origin + sx.end; /* the window's real columns */
    if (row_start) {
        c->end = 0;
        c->next = begin;
        for (int32_t k = 0; k < filter_w; k++) {
            c->column[k] = -1;
        }
    }
    if (c->next < begin) { /* a stride wider than the filter skips columns */
        c->next = begin;
        c->end = 0;
    }
    for (; c->next < stop; c->next++) {
        const int32_t x = c->next;
        if (c->end + room > c->capacity) { /* move the columns this and later windows need to the start */
            const int32_t keep = c->column[begin % filter_w] == begin ? c->first[begin % filter_w] : c->end;
            for (int32_t i = keep; i < c->end; i++) {
                c->entries[i - keep] = c->entries[i];
            }
            for (int32_t k = 0; k < filter_w; k++) {
                c->first[k] -= keep;
            }
            c->end -= keep;
        }
        c->first[x % filter_w] = c->end;
        c->column[x % filter_w] = x;
        uint32_t *end = c->entries + c->end;
        for (int32_t ky = sy.begin; ky < sy.end; ky++) {
            const uint32_t *pixel = input + ((size_t)(sy.origin + ky) * (size_t)in->w + (size_t)x) * (size_t)words;
            const uint32_t base = 4u * (uint32_t)((ky * filter_w + x) * in->c);
            for (int32_t j = 0; j < words; j++) {
                end = tml_xnor_set_bits(pixel[j], base + 128u * (uint32_t)j, end);
            }
        }
        c->end = (int32_t)(end - c->entries);
    }
    c->window = begin < stop ? c->first[begin % filter_w] : c->end;
    return c->end - c->window;
}

/* The address a window's entries count one block's weights [filter.h][filter.w][in.c] from. */
static inline uintptr_t tml_xnor_columns_base(const uint32_t *block_weights, int32_t origin, int32_t in_c)
{
    return (uintptr_t)block_weights - (uintptr_t)(4 * (intptr_t)origin * in_c);
}

/* Adds to the counter the weight words of one block at the window's entries. */
static inline void tml_xnor_columns_count(const tml_xnor_columns *c, tml_xnor_counter *counter,
                                          const uint32_t *block_weights, int32_t in_c, tml_window_span sx)
{
    tml_xnor_count_add(counter, tml_xnor_columns_base(block_weights, sx.origin, in_c), c->entries + c->window,
                       c->end - c->window);
}

/* S of a window: channel oc's positive weights at filter rows [y0, y1) and columns [x0, x1). */
static inline int32_t tml_xnor_window_ones(const int16_t *tap_ones, int32_t oc, int32_t positions, int32_t filter_w,
                                           int32_t y0, int32_t y1, int32_t x0, int32_t x1)
{
    int32_t s = 0;
    for (int32_t ky = y0; ky < y1; ky++) {
        for (int32_t kx = x0; kx < x1; kx++) {
            s += tap_ones[oc * positions + ky * filter_w + kx];
        }
    }
    return s;
}

/* Per channel, bias + m * (taps - 2S): the int8 accumulator of a window on real cells only, less
 * m * (4V - 2A). */
static inline void tml_xnor_whole_window(int32_t *constant, const int16_t *tap_ones, const int32_t *magnitude,
                                         const int32_t *bias, int32_t out_c, int32_t positions, int32_t taps)
{
    for (int32_t oc = 0; oc < out_c; oc++) {
        int32_t s = 0;
        for (int32_t k = 0; k < positions; k++) {
            s += tap_ones[oc * positions + k];
        }
        constant[oc] = (int32_t)((uint32_t)(bias ? bias[oc] : 0) + (uint32_t)(magnitude[oc] * (taps - 2 * s)));
    }
}

/* The int8 outputs y[0..lanes) of the block of channels from `first` for a window (spans sy, sx; n real
 * taps, `set` of them set) from its finished counter: the constant of a window on real cells, or over the
 * padding S and n of its real taps only. */
static inline void tml_xnor_window_outputs(const tml_xnor_counter *counter, int32_t used, int32_t first,
                                           int32_t lanes, int32_t set, int32_t n, int32_t taps,
                                           tml_window_span sy, tml_window_span sx, int32_t filter_w,
                                           int32_t positions, const int32_t *whole_window, const int16_t *tap_ones,
                                           const int32_t *magnitude, const int32_t *bias,
                                           const tml_quant_channels *quant, const tml_conv_params *p, int8_t *y)
{
    int32_t counts[32], border[32];
    tml_xnor_lanes(counter->planes, used, counts);
    const int32_t *constant = whole_window + first;
    if (n != taps) {
        for (int32_t lane = 0; lane < lanes; lane++) {
            const int32_t oc = first + lane;
            const int32_t s = tml_xnor_window_ones(tap_ones, oc, positions, filter_w, sy.begin, sy.end, sx.begin,
                                                   sx.end);
            const uint32_t b = (uint32_t)(bias ? bias[oc] : 0);
            border[lane] = (int32_t)(b + (uint32_t)(magnitude[oc] * (n - 2 * s)));
        }
        constant = border;
    }
    tml_xnor_outputs(counts, lanes, -2 * set, constant, magnitude + first, quant->multiplier + first,
                     quant->shift + first, p->output_offset, p->act_min, p->act_max, y);
}

#ifdef __cplusplus
}
#endif

#endif /* TML_XNOR_H */
