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

/* The starting counts of tml_conv2d_xnor_sign for one layer, computed when the model is built
 * (tinyml_plugins.binarize.starts, which gives the derivation). The output rows fall into classes whose
 * windows have the same real filter rows, the columns likewise; for row class r, column class s, block b of
 * 32 channels and parity a of a window's count of set input bits, the counters start at the 4 * levels planes
 * from planes + 4 * levels * (((r * column_classes + s) * blocks + b) * 2 + a), levels = (bits of
 * 2 * taps + taps / 2 + 2, + 3) / 4. A block with exact[b] = 1 takes the int8 outputs instead. */
typedef struct {
    const uint8_t *row_class;    /* [out.h] */
    const uint8_t *column_class; /* [out.w] */
    int32_t column_classes;
    const uint8_t *exact;        /* [blocks] */
    const uint32_t *planes;
} tml_xnor_sign_starts;

/* Binary convolution fused with the sign after it: the int8 output tml_conv2d_xnor would give (same
 * arguments and ranges, params->output_offset its zero point) compared with threshold int32[out.c]:
 * bit k of an output pixel is 1 when channel k's int8 output is >= threshold[k]. starts: the table of these
 * arguments. output packed [out.h][out.w][words(out.c)], as tml_binarize_s8 writes it. filter.h * filter.w *
 * filter.c <= TML_XNOR_SIGN_MAX_TAPS. scratch: tml_conv2d_xnor_sign_scratch_bytes(filter_shape, out.c) bytes,
 * 4-byte aligned. */
tml_status tml_conv2d_xnor_sign(const tml_conv_params *params, const tml_quant_channels *quant,
                                const tml_shape *input_shape, const uint32_t *input, const tml_shape *filter_shape,
                                const uint32_t *weights, const int16_t *tap_ones, const int32_t *magnitude,
                                const int32_t *bias, const int32_t *threshold, const tml_xnor_sign_starts *starts,
                                const tml_shape *output_shape, uint32_t *output, void *scratch);
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

#define TML_XNOR_LEVELS 4    /* level k holds planes 4k..4k+3 */
#define TML_XNOR_CARRIES 64  /* carries a level keeps: level 0 of a chunk makes at most n / 16 + 1 */
#define TML_XNOR_CHUNK (16 * (TML_XNOR_CARRIES - 1)) /* words tml_xnor_count_chunk adds at most */

/* A count, for one or more blocks of 32 output channels over the same input: block b adds the n words at the
 * byte offsets offsets[0..n) from the address base + b * base_step (an integer: a convolution's base may lie
 * before its weights, the offsets bringing every address into them) lane by lane to its starting count. A
 * count is planes[4 * levels]: bit j of plane p is bit p of lane j's count. Block b's sum, which must stay
 * below 16^levels, goes to planes + TML_XNOR_PLANES * b (which may be its start), and lanes[b] gets the lanes
 * whose sum is at least q. The layout is the one the assembly reads. */
typedef struct {
    uintptr_t base;          /* +0: block 0's */
    const uint32_t *offsets; /* +4 */
    int32_t n;               /* +8: 0..TML_XNOR_CHUNK for tml_xnor_count_chunk, any for tml_xnor_count */
    int32_t levels;          /* +12: 1..TML_XNOR_LEVELS */
    const uint32_t *start;   /* +16: block 0's starting count */
    uint32_t *planes;        /* +20: [blocks][TML_XNOR_PLANES] */
    uint32_t q;              /* +24: below 16^levels */
    int32_t blocks;          /* +28: >= 1 */
    int32_t base_step;       /* +32: bytes */
    int32_t start_step;      /* +36: bytes from one block's starting count to the next's (0: one for all) */
    uint32_t *lanes;         /* +40: [blocks] */
} tml_xnor_count_job;

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
/* The assembly below reads the job at these offsets (pointers are 4 bytes on these cores). */
typedef char tml_xnor_count_job_layout[offsetof(tml_xnor_count_job, lanes) == 40 ? 1 : -1];

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

/* Level 0 reads its words through the byte offsets at r2 (advanced) off the base r1; the levels above read
 * the carries themselves, consecutive words at r2. The order of the words a load gives does not matter. */
#define TML_XNOR_LOAD4_AT_ASM(a, b, c, d)       \
    "ldm r2!, {" a ", " b ", " c ", " d "}\n\t" \
    "ldr " a ", [r1, " a "]\n\t"                \
    "ldr " b ", [r1, " b "]\n\t"                \
    "ldr " c ", [r1, " c "]\n\t"                \
    "ldr " d ", [r1, " d "]\n\t"
#define TML_XNOR_LOAD2_AT_ASM "ldm r2!, {r0, r9}\n\tldr r0, [r1, r0]\n\tldr r9, [r1, r9]\n\t"
#define TML_XNOR_LOAD1_AT_ASM "ldr r0, [r2]\n\tldr r0, [r1, r0]\n\t"
#define TML_XNOR_LOAD4_ASM(a, b, c, d) "ldm r2!, {" a ", " b ", " c ", " d "}\n\t"
#define TML_XNOR_LOAD2_ASM "ldm r2!, {r0, r9}\n\t"
#define TML_XNOR_LOAD1_ASM "ldr r0, [r2]\n\t"

/* Eight words into ones (r4) and twos (r5): the lanes that carry four in a, two clobbered registers b, c
 * and r11, r12. */
#define TML_XNOR_ADD8_ASM(LOAD4, a, b, c)   \
    LOAD4(a, b, c, "r11")                   \
    TML_XNOR_CSA_ASM(a, b, "r4")            \
    TML_XNOR_CSA_ASM(c, "r11", "r4")        \
    TML_XNOR_CSA_ASM(a, c, "r5")            \
    LOAD4(b, c, "r11", "r12")               \
    TML_XNOR_CSA_ASM(b, c, "r4")            \
    TML_XNOR_CSA_ASM("r11", "r12", "r4")    \
    TML_XNOR_CSA_ASM(b, "r11", "r5")        \
    TML_XNOR_CSA_ASM(a, b, "r6") /* a: the eights */

/* The lanes of `word` added at twos (r5), rippled through fours and eights (r6, r7), their carry out gathered
 * in lr; t1 and t2 are clobbered. */
#define TML_XNOR_TWOS_ASM(word, t1, t2) \
    TML_XNOR_HA_ASM(t1, word, "r5")     \
    TML_XNOR_HA_ASM(t2, t1, "r6")       \
    TML_XNOR_HA_ASM(t1, t2, "r7")       \
    "orr lr, lr, " t1 "\n"

/* Adds r3 words to one level, its planes in r4..r7 (Harley-Seal): 16 at a time, each group storing its carry
 * at r8 (advanced), then 8, 4, 2 and 1 as r3 has them, each piece rippling its top into eights, their carries
 * out (a lane carries once in fewer than 16 words) stored as one word. At most r3 / 16 + 1 carries; a carry is
 * stored after the words before it are read, so the carries may overwrite the words they come from. */
#define TML_XNOR_LEVEL_ASM(LOAD4, LOAD2, LOAD1)                  \
    "subs r3, r3, #16\n\t"                                        \
    "blt 2f\n"                                                    \
    "1:\n\t" /* r3 = words left - 16 */                           \
    TML_XNOR_ADD8_ASM(LOAD4, "r0", "r9", "r10")                   \
    TML_XNOR_ADD8_ASM(LOAD4, "r9", "r10", "lr")                   \
    TML_XNOR_CSA_ASM("r0", "r9", "r7")                            \
    "str r0, [r8], #4\n\t"                                        \
    "subs r3, r3, #16\n\t"                                        \
    "bge 1b\n"                                                    \
    "2:\n\t" /* the low four bits of r3 are the words left; lr gathers their carry */ \
    "ands r3, r3, #15\n\t"                                        \
    "beq 6f\n\t"                                                  \
    "mov lr, #0\n\t"                                              \
    "lsls r0, r3, #29\n\t" /* C: 8 words are left, N: 4 more */  \
    "bcc 3f\n\t"                                                  \
    TML_XNOR_ADD8_ASM(LOAD4, "r0", "r9", "r10")                   \
    TML_XNOR_HA_ASM("lr", "r0", "r7")                             \
    "3:\n\t" /* the pieces below change no flag */               \
    "bpl 4f\n\t"                                                  \
    LOAD4("r0", "r9", "r10", "r11")                               \
    TML_XNOR_CSA_ASM("r0", "r9", "r4")                            \
    TML_XNOR_CSA_ASM("r10", "r11", "r4")                          \
    TML_XNOR_CSA_ASM("r0", "r10", "r5")                           \
    TML_XNOR_HA_ASM("r9", "r0", "r6")                             \
    TML_XNOR_HA_ASM("r10", "r9", "r7")                            \
    "orr lr, lr, r10\n"                                           \
    "4:\n\t"                                                      \
    "lsls r0, r3, #31\n\t" /* C: 2 more, N: 1 more */            \
    "bcc 5f\n\t"                                                  \
    LOAD2                                                         \
    TML_XNOR_CSA_ASM("r0", "r9", "r4")                            \
    TML_XNOR_TWOS_ASM("r0", "r9", "r10")                          \
    "5:\n\t"                                                      \
    "bpl 7f\n\t"                                                  \
    LOAD1                                                         \
    TML_XNOR_HA_ASM("r9", "r0", "r4")                             \
    TML_XNOR_TWOS_ASM("r9", "r10", "r0")                          \
    "7:\n\t"                                                      \
    "str lr, [r8], #4\n"                                          \
    "6:\n\t"

/* Compares one level's planes (r4..r7) with the next four bits of q (r12, shifted out) in the borrow of
 * count - q (lr): a plane p with q's bit set borrows where p is 0 or a borrow comes in, else where both. Two
 * bits at a time: shifting q left by 31 puts its bit 0 in N and its bit 1 in C, by 29 its bits 2 and 3 (r3 is
 * free here). */
#define TML_XNOR_BORROW2_ASM(shift, low, high) \
    "lsls r3, r12, #" shift "\n\t"              \
    "ite mi\n\t"                                \
    "ornmi lr, lr, " low "\n\t"                 \
    "bicpl lr, lr, " low "\n\t"                 \
    "ite cs\n\t"                                \
    "orncs lr, lr, " high "\n\t"                \
    "biccc lr, lr, " high "\n\t"
#define TML_XNOR_BORROW_ASM                                                  \
    TML_XNOR_BORROW2_ASM("31", "r4", "r5") TML_XNOR_BORROW2_ASM("29", "r6", "r7") \
    "lsr r12, r12, #4\n\t"

/* The frame offsets of tml_xnor_count_chunk (256, 276, 328) are those of 64 carries. */
typedef char tml_xnor_count_frame_layout[TML_XNOR_CARRIES == 64 ? 1 : -1];

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter" /* read by the assembly */
/* tml_xnor_count_job, on Armv7-M, block by block: level 0 adds the words to the starting planes of level 0 and
 * leaves its carries on the stack; each level above adds the carries of the one below, in place, to its own
 * starting planes. A level's planes are stored, and compared with q, as soon as it is done. The frame: the
 * carries (4 * TML_XNOR_CARRIES bytes); at 256 the level's state (levels left, start, planes, q, the borrow of
 * the count less q); at 276 the job, advanced block by block. */
__attribute__((naked, noinline, unused)) static void tml_xnor_count_chunk(const tml_xnor_count_job *job)
{
    __asm__("push {r4-r11, lr}\n\t"
            "sub sp, sp, #328\n\t"
            "add r12, sp, #276\n\t"
            "ldm r0!, {r1-r7}\n\t"
            "stm r12!, {r1-r7}\n\t"
            "ldm r0, {r1-r4}\n\t"
            "stm r12, {r1-r4}\n"
            "10:\n\t" /* a block */
            "add r0, sp, #276\n\t"
            "ldm r0, {r1-r7}\n\t" /* base, offsets, n, levels, start, planes, q */
            "mov r8, #0\n\t"
            "add r0, sp, #256\n\t"
            "stm r0, {r4-r8}\n\t"
            "ldm r5, {r4-r7}\n\t"
            "mov r8, sp\n\t"
            TML_XNOR_LEVEL_ASM(TML_XNOR_LOAD4_AT_ASM, TML_XNOR_LOAD2_AT_ASM, TML_XNOR_LOAD1_AT_ASM)
            "9:\n\t" /* a level is done: its planes in r4..r7, its carries on the stack up to r8 */
            "add r0, sp, #256\n\t"
            "ldm r0, {r9-r12, lr}\n\t"
            "stm r11!, {r4-r7}\n\t"
            TML_XNOR_BORROW_ASM
            "add r10, r10, #16\n\t"
            "subs r9, r9, #1\n\t"
            "stm r0, {r9-r12, lr}\n\t"
            "beq 8f\n\t"
            "ldm r10, {r4-r7}\n\t"
            "mov r2, sp\n\t"
            "sub r3, r8, r2\n\t"
            "lsrs r3, r3, #2\n\t"
            "mov r8, sp\n\t"
            TML_XNOR_LEVEL_ASM(TML_XNOR_LOAD4_ASM, TML_XNOR_LOAD2_ASM, TML_XNOR_LOAD1_ASM)
            "b 9b\n"
            "8:\n\t" /* the block is done: no borrow where the count is at least q */
            "add r12, sp, #276\n\t"
            "ldm r12, {r0-r10}\n\t" /* the job as advanced so far */
            "mvn lr, lr\n\t"
            "str lr, [r10], #4\n\t"
            "add r0, r0, r8\n\t"
            "add r4, r4, r9\n\t"
            "add r5, r5, #64\n\t"
            "subs r7, r7, #1\n\t"
            "stm r12, {r0-r10}\n\t"
            "bne 10b\n\t"
            "add sp, sp, #328\n\t"
            "pop {r4-r11, pc}\n\t");
}
#pragma GCC diagnostic pop
#else
/* The word at byte offset `at` from the address `base`. */
#define TML_XNOR_AT(base, at) (*(const uint32_t *)((base) + (uintptr_t)(at)))

/* Adds n words to one level's planes[4], one at a time, storing the carry out of every 16 (a lane carries at
 * most once in them) into carries; the words are words[i] or, when words is NULL, at the byte offsets
 * offsets[i] from base. Returns the carries stored; a carry is stored after the words before it are read. */
static int32_t tml_xnor_count_level(uint32_t planes[4], const uint32_t *words, uintptr_t base,
                                    const uint32_t *offsets, int32_t n, uint32_t *carries)
{
    int32_t stored = 0;
    for (int32_t i = 0; i < n; i += 16) {
        uint32_t out = 0;
        for (int32_t j = i; j < n && j < i + 16; j++) {
            uint32_t carry = words ? words[j] : TML_XNOR_AT(base, offsets[j]);
            for (int32_t p = 0; p < 4; p++) {
                const uint32_t next = planes[p] & carry;
                planes[p] ^= carry;
                carry = next;
            }
            out |= carry;
        }
        carries[stored++] = out;
    }
    return stored;
}

/* tml_xnor_count_job, portable: block by block, level by level, each level adding the carries of the one below. */
static void tml_xnor_count_chunk(const tml_xnor_count_job *job)
{
    uint32_t carries[TML_XNOR_CARRIES];
    for (int32_t block = 0; block < job->blocks; block++) {
        const uint32_t *start = job->start + (size_t)block * (size_t)job->start_step / 4;
        uint32_t *planes = job->planes + (size_t)block * TML_XNOR_PLANES;
        const uintptr_t base = job->base + (uintptr_t)((intptr_t)block * job->base_step);
        uint32_t borrow = 0, q = job->q;
        int32_t n = job->n;
        for (int32_t k = 0; k < job->levels; k++) {
            uint32_t level[4];
            for (int32_t p = 0; p < 4; p++) {
                level[p] = start[4 * k + p];
            }
            n = tml_xnor_count_level(level, k == 0 ? NULL : carries, base, job->offsets, n, carries);
            for (int32_t p = 0; p < 4; p++, q >>= 1) {
                planes[4 * k + p] = level[p];
                borrow = (q & 1u) ? (borrow | ~level[p]) : (borrow & ~level[p]);
            }
        }
        job->lanes[block] = ~borrow;
    }
}
#endif

/* A count of zero in every lane. */
static const uint32_t tml_xnor_zero_count[TML_XNOR_PLANES] = {0};

/* tml_xnor_count_job for any n: in chunks, each block's sum so far the start of its next chunk. */
static inline void tml_xnor_count(const tml_xnor_count_job *job)
{
    if (job->n <= TML_XNOR_CHUNK) {
        tml_xnor_count_chunk(job);
        return;
    }
    tml_xnor_count_job chunk = *job;
    chunk.n = TML_XNOR_CHUNK;
    tml_xnor_count_chunk(&chunk);
    for (int32_t done = chunk.n; done < job->n; done += chunk.n) {
        chunk.offsets += chunk.n;
        chunk.n = job->n - done < TML_XNOR_CHUNK ? job->n - done : TML_XNOR_CHUNK;
        chunk.start = chunk.planes;
        chunk.start_step = 4 * TML_XNOR_PLANES;
        tml_xnor_count_chunk(&chunk);
    }
}

/* A job counting one block from zero into planes (its lanes, q being 0, all set, in *lanes). */
static inline tml_xnor_count_job tml_xnor_count_from_zero(uint32_t planes[TML_XNOR_PLANES], uint32_t *lanes)
{
    const tml_xnor_count_job job = {0, NULL, 0, 1, tml_xnor_zero_count, planes, 0, 1, 0, 0, lanes};
    return job;
}

/* Levels a count below 2^used needs. */
static inline int32_t tml_xnor_levels(int32_t used)
{
    return (used + 3) / 4;
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

/* Moves n words from `from` down to `to` (to <= from; the two may overlap). */
static inline void tml_xnor_move_down(uint32_t *to, const uint32_t *from, int32_t n)
{
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
    for (; n >= 4; n -= 4) { /* four words a load and a store */
        __asm__ volatile("ldm %0!, {r4, r5, r6, r12}\n\tstm %1!, {r4, r5, r6, r12}" /* r7 may be the frame pointer */
                         : "+r"(from), "+r"(to)
                         :
                         : "r4", "r5", "r6", "r12", "memory");
    }
#endif
    for (; n > 0; n--) {
        *to++ = *from++;
    }
}

/* Appends to `end` the entries of `rows` pixels of a column, the first at `pixel` and each row_words words after
 * the one before: the offset of every set bit's word, from `base` for the first pixel and row_step bytes more
 * for each next one; returns the new end. */
static TML_XNOR_NOINLINE uint32_t *tml_xnor_list_column(const uint32_t *pixel, size_t row_words, int32_t words,
                                                        int32_t rows, uint32_t base, uint32_t row_step,
                                                        uint32_t *end)
{
    for (; rows > 0; rows--, pixel += row_words, base += row_step) {
        for (int32_t j = 0; j < words; j++) {
            end = tml_xnor_set_bits(pixel[j], base + 128u * (uint32_t)j, end);
        }
    }
    return end;
}

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
            tml_xnor_move_down(c->entries, c->entries + keep, c->end - keep);
            for (int32_t k = 0; k < filter_w; k++) {
                c->first[k] -= keep;
            }
            c->end -= keep;
        }
        c->first[x % filter_w] = c->end;
        c->column[x % filter_w] = x;
        const uint32_t *pixel = input + ((size_t)(sy.origin + sy.begin) * (size_t)in->w + (size_t)x) * (size_t)words;
        const uint32_t *end = tml_xnor_list_column(pixel, (size_t)in->w * (size_t)words, words, sy.end - sy.begin,
                                                   4u * (uint32_t)((sy.begin * filter_w + x) * in->c),
                                                   4u * (uint32_t)(filter_w * in->c), c->entries + c->end);
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

/* Points a count job at a window's entries over the weights [filter.h][filter.w][in.c] of the block from
 * block_weights (its base, offsets and n). */
static inline void tml_xnor_columns_aim(const tml_xnor_columns *c, const uint32_t *block_weights, int32_t in_c,
                                        tml_window_span sx, tml_xnor_count_job *job)
{
    job->base = tml_xnor_columns_base(block_weights, sx.origin, in_c);
    job->offsets = c->entries + c->window;
    job->n = c->end - c->window;
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
 * taps, `set` of them set) from its count's planes: the constant of a window on real cells, or over the
 * padding S and n of its real taps only. */
static inline void tml_xnor_window_outputs(const uint32_t *planes, int32_t used, int32_t first,
                                           int32_t lanes, int32_t set, int32_t n, int32_t taps,
                                           tml_window_span sy, tml_window_span sx, int32_t filter_w,
                                           int32_t positions, const int32_t *whole_window, const int16_t *tap_ones,
                                           const int32_t *magnitude, const int32_t *bias,
                                           const tml_quant_channels *quant, const tml_conv_params *p, int8_t *y)
{
    int32_t counts[32], border[32];
    tml_xnor_lanes(planes, used, counts);
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
