/*
 * tml_support.h - integer arithmetic shared by the kernels.
 *
 * tml_requantize is CMSIS-NN's arm_nn_requantize (double rounding), with the
 * left shift done on unsigned so that overflow wraps instead of being undefined.
 * tinyml/numbers.py mirrors it exactly.
 */
#ifndef TML_SUPPORT_H
#define TML_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "tml_nn.h"

#if defined(__ARM_FEATURE_DSP) && !defined(TML_PORTABLE)
#include <arm_acle.h>
#define TML_USE_DSP 1
#endif

/* Scratch sizes follow the path a target runs; TML_DSP_SCRATCH makes a host build answer the
 * DSP figures, so tests can compare them with what the code generator computes for a DSP board. */
#if defined(TML_USE_DSP) && !defined(TML_DSP_SCRATCH)
#define TML_DSP_SCRATCH 1
#endif

/* Four bytes from any address (Cortex-M3/M4/M7/M33 load unaligned words; memcpy says so to C). */
static inline uint32_t tml_read_u32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

#if defined(TML_USE_DSP)
/* Bytes 0 and 2 of x, sign-extended, as an int16 pair (SXTB16). */
static inline int32_t tml_sxtb16_even(uint32_t x)
{
    return __sxtb16((int32_t)x);
}

/* Bytes 1 and 3 of x, sign-extended, as an int16 pair: one SXTB16 with its built-in rotation
 * (GCC 12 does not merge a rotate into __sxtb16 by itself). */
static inline int32_t tml_sxtb16_odd(uint32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* add + bytes 1 and 3 of x, sign-extended, halfword by halfword (SXTAB16 with its rotation). */
static inline int32_t tml_sxtab16_odd(int32_t add, uint32_t x)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(add), "r"(x));
    return r;
}
#endif

static inline int32_t tml_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* round(a * b / 2^31), ties rounded up (toward +inf) as CMSIS-NN does, no saturation (b is never INT32_MIN).
 * CMSIS-NN adds 2^30 (or 1 - 2^30 when the product is negative) and divides, truncating toward zero:
 * both are floor((a * b + 2^30) / 2^31), an arithmetic shift (one SMLAL-like sequence, no division). */
static inline int32_t tml_doubling_high_mult(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* a / 2^exponent rounded to nearest, ties away from zero; exponent 0..31. */
static inline int32_t tml_divide_by_power_of_two(int32_t a, int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t remainder = a & mask;
    int32_t threshold = mask >> 1;
    int32_t result = a >> exponent;
    if (result < 0) {
        threshold++;
    }
    if (remainder > threshold) {
        result++;
    }
    return result;
}

/* val * multiplier * 2^(shift - 31), rounded as CMSIS-NN does. */
static inline int32_t tml_requantize(int32_t val, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)val << left);
    return tml_divide_by_power_of_two(tml_doubling_high_mult(shifted, multiplier), right);
}

/* tml_requantize(total, multiplier, shift) as one 64-bit multiply-accumulate (SMLAL on Arm) and a shift, for
 * the common case of a right shift of at least 2 (a real multiplier below 1/4) and multiplier >= 0.
 *
 * With e = -shift, tml_requantize is r = floor((P + 2^30) / 2^31), P = total * multiplier, then
 * floor((r + 2^(e-1) - [r < 0]) / 2^e) (rounding half away from zero). Floors of integer quotients
 * compose, so that is floor((P + 2^30 + 2^(30+e) - [r < 0] * 2^31) / 2^(31+e)). For e >= 1 and
 * multiplier >= 0, [r < 0] may be replaced by [total < 0]: they differ only when total < 0 and r = 0,
 * where both roundings give 0. The constant then is (2^(e-2) - [total < 0]) * 2^32 (the high word) plus
 * 2^30 + [total < 0] * 2^31 (the low word), and since 31 + e >= 32 the result is the high word of the
 * sum shifted right by e - 1. A zero multiplier gives 0 with any e >= 1, so it takes e = 2. */
typedef struct {
    int32_t bias;       /* added to the accumulator before the call, with wrap-around */
    int32_t multiplier; /* >= 0 */
    int32_t high;       /* 2^(e-2) */
    int32_t shift;      /* e - 1, 1..30 */
} tml_requant_smlal;

/* Prepares q for (bias, multiplier, shift); returns 0 (q unusable) outside the case described above. */
static inline int tml_requant_smlal_make(tml_requant_smlal *q, int32_t bias, int32_t multiplier, int32_t shift)
{
    const int32_t e = multiplier == 0 ? 2 : -shift;
    q->bias = bias;
    q->multiplier = multiplier;
    q->high = 1;
    q->shift = 1;
    if (multiplier < 0 || e < 2 || e > 31) {
        return 0;
    }
    q->high = (int32_t)(1u << (e - 2));
    q->shift = e - 1;
    return 1;
}

/* tml_requantize(total, multiplier, shift) for a q made from them; total includes the bias. */
static inline int32_t tml_requant_smlal_apply(const tml_requant_smlal *q, int32_t total)
{
    const uint32_t lo = ((uint32_t)total & 0x80000000u) | 0x40000000u;
    const int32_t hi = q->high + (total >> 31);
    const int64_t sum = (int64_t)(((uint64_t)(uint32_t)hi << 32) | lo) + (int64_t)total * q->multiplier;
    return (int32_t)(sum >> 32) >> q->shift;
}

/* One output channel's requantization prepared once (bias, multiplier, shifts and rounding terms), so that
 * the step per output has no shift set-up: tml_requant_apply(q, acc) is tml_requantize(acc + bias, ...)
 * exactly. The rounding division by 2^right adds 2^(right-1) to values >= 0 (unsigned: no overflow) and
 * 2^(right-1) - 1 to negative ones before the shift, which is rounding half away from zero. Most layers'
 * pairs (multiplier >= 0, a right shift of 2 or more) take the cheaper tml_requant_smlal step instead. */
typedef struct {
    uint32_t bias;     /* added to the accumulator with wrap-around */
    int32_t multiplier;
    int32_t left;      /* 0..31 */
    int32_t right;     /* 0..31 */
    uint32_t half;     /* 2^(right-1), or 0 when right = 0 */
    uint32_t half_neg; /* half - 1, or 0 when right = 0 */
    int32_t fast;      /* 1: the pair is in tml_requant_smlal's form and .smlal is used (one SMLAL, a shift) */
    tml_requant_smlal smlal;
} tml_requant;

static inline tml_requant tml_requant_make(int32_t bias, int32_t multiplier, int32_t shift)
{
    tml_requant q;
    q.bias = (uint32_t)bias;
    q.multiplier = multiplier;
    q.left = shift > 0 ? shift : 0;
    q.right = shift > 0 ? 0 : -shift;
    q.half = q.right > 0 ? 1u << (q.right - 1) : 0u;
    q.half_neg = q.right > 0 ? q.half - 1u : 0u;
    q.fast = tml_requant_smlal_make(&q.smlal, 0, multiplier, shift);
    return q;
}

/* tml_requant_apply with the choice of step made by the caller: `fast` must be q->fast. A loop over many
 * outputs of one channel calls it with a constant, so that the choice is made once, outside the loop. */
static inline __attribute__((always_inline)) int32_t tml_requant_apply_as(const tml_requant *q, int32_t acc,
                                                                          int32_t fast)
{
    if (fast) {
        return tml_requant_smlal_apply(&q->smlal, (int32_t)((uint32_t)acc + q->bias));
    }
    const int32_t v = (int32_t)(((uint32_t)acc + q->bias) << q->left);
    const int32_t t = tml_doubling_high_mult(v, q->multiplier);
    if (t < 0) {
        return (int32_t)((uint32_t)t + q->half_neg) >> q->right;
    }
    return (int32_t)(((uint32_t)t + q->half) >> q->right);
}

static inline int32_t tml_requant_apply(const tml_requant *q, int32_t acc)
{
    return tml_requant_apply_as(q, acc, q->fast);
}

/* A window geometry is consistent: out == (in + 2 * pad - kernel) / stride + 1, every size positive. */
static inline int tml_window_fits(int32_t in, int32_t kernel, int32_t stride, int32_t pad, int32_t out)
{
    return in > 0 && kernel > 0 && stride > 0 && pad >= 0 && in + 2 * pad >= kernel
        && out == (in + 2 * pad - kernel) / stride + 1;
}

/* One axis of a kernel window: its tap 0 lies at input coordinate `origin` (negative inside the
 * leading padding), and taps [begin, end) lie on real input cells (none when end <= begin). */
typedef struct {
    int32_t origin;
    int32_t begin;
    int32_t end;
} tml_window_span;

/* The span of output position `index` along an axis of `size` input cells. */
static inline tml_window_span tml_window_span_at(int32_t index, int32_t stride, int32_t pad, int32_t kernel,
                                                 int32_t size)
{
    tml_window_span s;
    s.origin = index * stride - pad;
    s.begin = s.origin < 0 ? -s.origin : 0;
    s.end = size - s.origin < kernel ? size - s.origin : kernel;
    return s;
}

/* A requantized value as int8: clamped before the output offset is added, so that a value near the
 * int32 limits cannot overflow. */
static inline int8_t tml_clamp_output(int32_t scaled, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return (int8_t)(tml_clamp(scaled, act_min - output_offset, act_max - output_offset) + output_offset);
}

/* The end of every multiply-accumulate kernel: bias added with 32-bit wrap-around, requantized,
 * clamped and offset (tml_clamp_output). */
static inline int8_t tml_requantize_output(int32_t acc, int32_t bias, int32_t multiplier, int32_t shift,
                                           int32_t output_offset, int32_t act_min, int32_t act_max)
{
    const int32_t total = (int32_t)((uint32_t)acc + (uint32_t)bias);
    return tml_clamp_output(tml_requantize(total, multiplier, shift), output_offset, act_min, act_max);
}

/* The output step of a convolution with this layer's offset and clamp. */
static inline int8_t tml_conv_output(int32_t acc, int32_t bias, int32_t multiplier, int32_t shift,
                                     const tml_conv_params *p)
{
    return tml_requantize_output(acc, bias, multiplier, shift, p->output_offset, p->act_min, p->act_max);
}

/* Convolution arguments are usable: pointers set, filter channels matching the input, shapes
 * consistent, a valid clamp. How many output channels there must be is the caller's to check. */
static inline int tml_conv_args_valid(const tml_conv_params *p, const tml_quant_channels *quant,
                                      const tml_shape *in, const int8_t *input, const tml_shape *filter,
                                      const int8_t *weights, const tml_shape *out, const int8_t *output)
{
    if (p == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL || in == NULL
        || input == NULL || filter == NULL || weights == NULL || out == NULL || output == NULL) {
        return 0;
    }
    return in->c > 0 && filter->c == in->c && out->c > 0 && p->act_min <= p->act_max
        && tml_window_fits(in->h, filter->h, p->stride_h, p->pad_h, out->h)
        && tml_window_fits(in->w, filter->w, p->stride_w, p->pad_w, out->w);
}

/* Pool arguments are usable: pointers set, padding smaller than the kernel, shapes consistent. */
static inline int tml_pool_args_valid(const tml_pool_params *p, const tml_shape *in, const int8_t *input,
                                      const tml_shape *out, const int8_t *output)
{
    if (p == NULL || in == NULL || input == NULL || out == NULL || output == NULL) {
        return 0;
    }
    return in->c > 0 && out->c == in->c && p->pad_h < p->kernel_h && p->pad_w < p->kernel_w
        && p->act_min <= p->act_max
        && tml_window_fits(in->h, p->kernel_h, p->stride_h, p->pad_h, out->h)
        && tml_window_fits(in->w, p->kernel_w, p->stride_w, p->pad_w, out->w);
}

#endif /* TML_SUPPORT_H */
