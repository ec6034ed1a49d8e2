/*
 * tml_fc_s8.c - int8 fully connected layer, weights [out_features][in_features].
 *
 * Each output row o is acc = fold[o] + sum(x * w[o]), where fold[o] = bias[o] + input_offset *
 * sum(w[o]) (int32 wrap-around): the same integer as bias[o] + sum((x + input_offset) * w[o]),
 * with no add per multiply. The code generator computes fold once, at build time, and passes it
 * as params->folded_bias; without it the kernel sums each row first.
 *
 * The DSP path (Cortex-M4, M7, M33) takes four rows at a time (the inner loop in assembly), so each
 * input word is loaded and widened once per four rows: SXTB16 splits four int8 into the int16 pairs (bytes 0, 2) and
 * (bytes 1, 3), and SMLAD multiplies and adds two pairs in one instruction. Both paths give the
 * same bytes: integer sums wrap the same way in any order.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* sum(w) over n bytes. */
static int32_t sum_s8(const int8_t *w, int32_t n)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += w[i];
    }
    return acc;
}

/* bias[o] + input_offset * sum(w[o]), with int32 wrap-around. */
static int32_t row_fold(const tml_fc_params *p, const int32_t *bias, const int8_t *w, int32_t n, int32_t o)
{
    if (p->folded_bias != NULL) {
        return p->folded_bias[o];
    }
    const uint32_t b = bias != NULL ? (uint32_t)bias[o] : 0u;
    return (int32_t)(b + (uint32_t)p->input_offset * (uint32_t)sum_s8(w, n));
}

static inline int8_t row_output(const tml_fc_params *p, const tml_quant_channels *quant, int32_t o, int32_t acc,
                                int32_t fold)
{
    return tml_requantize_output(acc, fold, quant->multiplier[o], quant->shift[o], p->output_offset, p->act_min,
                                 p->act_max);
}

/* sum(x * w) over n bytes. */
static inline int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        acc += x[i] * w[i] + x[i + 1] * w[i + 1] + x[i + 2] * w[i + 2] + x[i + 3] * w[i + 3];
    }
    for (; i < n; i++) {
        acc += x[i] * w[i];
    }
    return acc;
}

#if defined(TML_USE_DSP)
/* acc + the dot product of four int8 (x as its even and odd int16 pairs) with the four in w. */
static inline int32_t mac4_dsp(int32_t acc, int32_t x02, int32_t x13, uint32_t w)
{
    acc = __smlad(x02, tml_sxtb16_even(w), acc);
    return __smlad(x13, tml_sxtb16_odd(w), acc);
}

/* Four rows of sum(x * w) over `groups` (at least one) words of x, in assembly so that every operand stays
 * in a register (GCC 12 spills): per word of x, SXTB16 twice, then per row a load, SXTB16 twice and two
 * SMLADs. Row r starts at w0 + r * n.
 *   void tml_fc_dot4_dsp(const int8_t *x, const int8_t *w0, int32_t n, int32_t groups, int32_t acc[4]); */
void tml_fc_dot4_dsp(const int8_t *x, const int8_t *w0, int32_t n, int32_t groups, int32_t acc[4]);
__asm__(
    "    .section .text.tml_fc_dot4_dsp,\"ax\",%progbits\n"
    "    .syntax unified\n"
    "    .thumb\n"
    "    .align 2\n"
    "    .global tml_fc_dot4_dsp\n"
    "    .type tml_fc_dot4_dsp, %function\n"
    "    .thumb_func\n"
    "tml_fc_dot4_dsp:\n"
    "    push {r4-r11, lr}\n"
    "    mov r5, r3\n"                   /* word count */
    "    add r4, r2, r2\n"
    "    add r3, r1, r4\n"               /* w2 = w0 + 2n */
    "    add r4, r3, r2\n"               /* w3 = w2 + n */
    "    add r2, r1, r2\n"               /* w1 = w0 + n */
    "    movs r6, #0\n"
    "    movs r7, #0\n"
    "    movs r8, #0\n"
    "    movs r9, #0\n"
    "1:\n"
    "    ldr r12, [r0], #4\n"
    "    sxtb16 r10, r12\n"              /* x bytes (0, 2) */
    "    sxtb16 r11, r12, ror #8\n"      /* x bytes (1, 3) */
    "    ldr r12, [r1], #4\n"
    "    sxtb16 lr, r12\n"
    "    sxtb16 r12, r12, ror #8\n"
    "    smlad r6, r10, lr, r6\n"
    "    smlad r6, r11, r12, r6\n"
    "    ldr r12, [r2], #4\n"
    "    sxtb16 lr, r12\n"
    "    sxtb16 r12, r12, ror #8\n"
    "    smlad r7, r10, lr, r7\n"
    "    smlad r7, r11, r12, r7\n"
    "    ldr r12, [r3], #4\n"
    "    sxtb16 lr, r12\n"
    "    sxtb16 r12, r12, ror #8\n"
    "    smlad r8, r10, lr, r8\n"
    "    smlad r8, r11, r12, r8\n"
    "    ldr r12, [r4], #4\n"
    "    sxtb16 lr, r12\n"
    "    sxtb16 r12, r12, ror #8\n"
    "    smlad r9, r10, lr, r9\n"
    "    smlad r9, r11, r12, r9\n"
    "    subs r5, r5, #1\n"
    "    bne 1b\n"
    "    ldr r12, [sp, #36]\n"
    "    stm r12, {r6-r9}\n"
    "    pop {r4-r11, pc}\n"
    "    .size tml_fc_dot4_dsp, .-tml_fc_dot4_dsp\n"
    "    .text\n");

/* Four rows of sum(x * w) at once; w0 is row o, the others follow at `n` bytes. */
static void dot4_s8_dsp(const int8_t *x, const int8_t *w0, int32_t n, int32_t acc[4])
{
    const int32_t groups = n >> 2;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    if (groups > 0) {
        int32_t sums[4];
        tml_fc_dot4_dsp(x, w0, n, groups, sums);
        a0 = sums[0];
        a1 = sums[1];
        a2 = sums[2];
        a3 = sums[3];
    }
    const int8_t *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    for (int32_t i = groups * 4; i < n; i++) {
        const int32_t xi = x[i];
        a0 += xi * w0[i];
        a1 += xi * w1[i];
        a2 += xi * w2[i];
        a3 += xi * w3[i];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* One row of sum(x * w) with SMLAD. */
static int32_t dot_s8_dsp(const int8_t *x, const int8_t *w, int32_t n)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t xv = tml_read_u32(x + i);
        acc = mac4_dsp(acc, tml_sxtb16_even(xv), tml_sxtb16_odd(xv), tml_read_u32(w + i));
    }
    for (; i < n; i++) {
        acc += x[i] * w[i];
    }
    return acc;
}
#endif

tml_status tml_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                     int32_t in_features, const int8_t *input,
                     const int8_t *weights, const int32_t *bias,
                     int32_t out_features, int8_t *output)
{
    if (params == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || input == NULL
        || weights == NULL || output == NULL || in_features < 1 || out_features < 1
        || params->act_min > params->act_max) {
        return TML_ARG_ERROR;
    }
    const tml_fc_params local = *params; /* a copy the int8 output stores cannot alias */
    const tml_fc_params *p = &local;
    const int32_t n = in_features;
    int32_t o = 0;
#if defined(TML_USE_DSP)
    for (; o + 4 <= out_features; o += 4) {
        const int8_t *w = weights + o * n;
        int32_t acc[4];
        dot4_s8_dsp(input, w, n, acc);
        for (int32_t r = 0; r < 4; r++) {
            output[o + r] = row_output(p, quant, o + r, acc[r], row_fold(p, bias, w + r * n, n, o + r));
        }
    }
    for (; o < out_features; o++) {
        const int8_t *w = weights + o * n;
        output[o] = row_output(p, quant, o, dot_s8_dsp(input, w, n), row_fold(p, bias, w, n, o));
    }
#else
    for (; o < out_features; o++) {
        const int8_t *w = weights + o * n;
        output[o] = row_output(p, quant, o, dot_s8(input, w, n), row_fold(p, bias, w, n, o));
    }
#endif
    return TML_OK;
}
