/*
 * tml_support.h - integer arithmetic shared by the kernels.
 *
 * tml_requantize is CMSIS-NN's arm_nn_requantize (double rounding), with the
 * left shift done on unsigned so that overflow wraps instead of being undefined.
 * tinyml/numbers.py mirrors it exactly.
 */
#ifndef TML_SUPPORT_H
#define TML_SUPPORT_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP) && !defined(TML_PORTABLE)
#include <arm_acle.h>
#define TML_USE_DSP 1
#endif

static inline int32_t tml_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* round(a * b / 2^31), ties away from zero, no saturation (b is never INT32_MIN). */
static inline int32_t tml_doubling_high_mult(int32_t a, int32_t b)
{
    int64_t round = (int64_t)1 << 30;
    if ((a < 0) != (b < 0)) {
        round = 1 - round;
    }
    return (int32_t)(((int64_t)a * b + round) / ((int64_t)1 << 31));
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

#endif /* TML_SUPPORT_H */
