/*
 * tml_conv2d_s8.c - int8 2-D convolution, NHWC input, OHWI weights, per-channel requantization.
 *
 * Direct loop, no scratch. Output channels are the outer loop so that each filter is summed
 * once: where a kernel window lies wholly inside the input, sum((x + offset) * w) is computed
 * as sum(x * w) + offset * sum(w), the same integer with one add fewer per multiply. Windows
 * that reach into the padding add the offset to each real cell instead, so padded cells
 * contribute nothing. One kernel row of a window is contiguous in both the input (NHWC) and
 * the filter (OHWI), so the inner loop is a plain dot product over kernel_w * in_c bytes.
 * A 1x1 kernel with stride 1 and no padding reads the input as one [h * w][c] matrix.
 *
 * The DSP path (Cortex-M4, M7, M33) has two variants, picked from the shape. The general one works
 * on two output pixels at a time. Their kernel windows are gathered (im2col) into scratch as int16
 * with the input offset added (padded cells become 0), four taps at a time in the order SXTB16 splits
 * four weights: (taps 0, 2), (taps 1, 3). The columns are zero-padded to a multiple of four taps, and
 * the two pixels' words interleaved, so the inner loop reads one pointer. It then takes two output
 * channels: per four taps, two weight words widened by SXTB16 and eight SMLADs give sixteen
 * multiply-accumulates. When the input channels are not a multiple of four (a 3-channel first
 * layer: 27 taps, padded to 28), the window is first copied as int8, so that four-tap groups may
 * straddle kernel rows, and every channel pair but the last reads its rows in whole groups (the
 * padding tap multiplies the next row's first weight by 0). The 1x1 variant (stride 1, no padding)
 * gathers nothing: it widens two filter rows once and reads the input rows in place, two pixels at a
 * time. Both loop over pairs in assembly and requantize their sums channel by channel with
 * tml_requant. Scratch: tml_conv2d_s8_scratch_bytes (called with NULL scratch, the DSP build runs
 * the portable loop).
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* The int32 sums the DSP paths hold in scratch at once: the 1x1 path's two channels by TML_CONV_SUMS / 2
 * pixels, the general path's two pixels by TML_CONV_SUMS / 2 channels. */
#define TML_CONV_SUMS 32

/* A 1x1 kernel, stride 1, no padding: the input is one [h * w][c] matrix of columns. */
static int is_pointwise(const tml_conv_params *p, const tml_shape *filter_shape)
{
    return filter_shape->h == 1 && filter_shape->w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0
        && p->pad_w == 0;
}

/* sum((x + offset) * w) over n bytes. Called with a constant 0 offset on the interior path,
 * where the compiler drops the add. */
static inline int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t offset)
{
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        acc += (x[i] + offset) * w[i] + (x[i + 1] + offset) * w[i + 1]
             + (x[i + 2] + offset) * w[i + 2] + (x[i + 3] + offset) * w[i + 3];
    }
    for (; i < n; i++) {
        acc += (x[i] + offset) * w[i];
    }
    return acc;
}

#if defined(TML_USE_DSP)
/* sum((x + offset) * w) over n bytes with SMLAD, four at a time: the one-channel loop's windows. x + offset
 * (at most 255 in magnitude) is formed in int16 halves by SXTAB16; offset2 is the offset in both halves. */
static inline int32_t dot_s8_dsp(const int8_t *x, const int8_t *w, int32_t n, int32_t offset)
{
    const int32_t offset2 = (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
    int32_t acc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t xv = tml_read_u32(x + i), wv = tml_read_u32(w + i);
        acc = __smlad(__sxtab16(offset2, (int32_t)xv), tml_sxtb16_even(wv), acc);
        acc = __smlad(tml_sxtab16_odd(offset2, xv), tml_sxtb16_odd(wv), acc);
    }
    for (; i < n; i++) {
        acc += (x[i] + offset) * w[i];
    }
    return acc;
}
#define TML_CHANNEL_DOT(x, w, n, offset) dot_s8_dsp(x, w, n, offset)
#else
#define TML_CHANNEL_DOT(x, w, n, offset) dot_s8(x, w, n, offset)
#endif

static int32_t sum_s8(const int8_t *w, int32_t n)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += w[i];
    }
    return acc;
}

static void conv_pointwise(const tml_conv_params *p, const tml_quant_channels *quant, int32_t pixels,
                           int32_t in_c, const int8_t *input, const int8_t *filter, const int32_t *bias,
                           int32_t out_c, int8_t *output)
{
    for (int32_t o = 0; o < out_c; o++) {
        const int8_t *w = filter + o * in_c;
        const int32_t b = bias != NULL ? bias[o] : 0;
        const int32_t multiplier = quant->multiplier[o];
        const int32_t shift = quant->shift[o];
        if (pixels == 1) { /* a fully connected layer: summing the weights would not pay */
            output[o] = tml_conv_output(dot_s8(input, w, in_c, p->input_offset), b, multiplier, shift, p);
            continue;
        }
        const int32_t weight_offset = p->input_offset * sum_s8(w, in_c);
        const int8_t *x = input;
        int8_t *out = output + o;
        for (int32_t i = 0; i < pixels; i++) {
            *out = tml_conv_output(weight_offset + dot_s8(x, w, in_c, 0), b, multiplier, shift, p);
            x += in_c;
            out += out_c;
        }
    }
}

#if defined(TML_USE_DSP)
/* Number of taps of one column: the kernel window rounded up to whole four-tap groups. */
static int32_t column_taps(int32_t kernel_len)
{
    return (kernel_len + 3) & ~3;
}

/* Widen `n` int8 (a multiple of four) to int16 plus the offset pair, group by group: words 0 and 1
 * of each group of four taps at dst[0], dst[1], groups `stride` words apart. */
static void widen_groups(uint32_t *dst, int32_t stride, const int8_t *src, int32_t n, int32_t offset2)
{
    for (int32_t i = 0; i < n; i += 4) {
        const uint32_t v = tml_read_u32(src + i);
        dst[0] = (uint32_t)__sadd16(tml_sxtb16_even(v), offset2);
        dst[1] = (uint32_t)__sadd16(tml_sxtb16_odd(v), offset2);
        dst += stride;
    }
}

static void zero_groups(uint32_t *dst, int32_t stride, int32_t n)
{
    for (int32_t i = 0; i < n; i += 4) {
        dst[0] = 0;
        dst[1] = 0;
        dst += stride;
    }
}

/* `n` bytes of `value`, then `n` more from src... : the int8 staging copy. */
static void fill_s8(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        dst[i] = value;
    }
}

static void copy_s8(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t v = tml_read_u32(src + i);
        __builtin_memcpy(dst + i, &v, 4);
    }
    for (; i < n; i++) {
        dst[i] = src[i];
    }
}

/* The output byte of a requantized value: offset added with saturation, then clamped to int8 and the
 * activation range (the same byte as clamping to [act_min - offset, act_max - offset] before the offset).
 * `full_range` (act_min = -128, act_max = 127, a constant at each call) leaves only QADD and SSAT. */
static inline __attribute__((always_inline)) int8_t dsp_output(int32_t v, int32_t offset, int32_t act_min,
                                                                int32_t act_max, int full_range)
{
    int32_t r = __ssat(__qadd(v, offset), 8);
    if (!full_range) {
        r = tml_clamp(r, act_min, act_max);
    }
    return (int8_t)r;
}

/* The 1x1 path's accumulation for `pairs` pixel pairs: pair k's pixel A at x + k * step, its pixel B `stride`
 * bytes further (int8, widened here by SXTB16), both channels' widened weights at w (four words per group:
 * channel 0 taps (0, 2), (1, 3), channel 1 likewise), `groups` (at least one) four-tap groups. Writes four
 * sums per pair to acc: a00, a01, a10, a11 (channel, pixel). Sixteen multiply-accumulates in sixteen
 * instructions per group, two groups per step after an odd one; the loop over pairs is here too, so that
 * nothing but the sums leaves the registers. */
void tml_conv_1x1_pairs_dsp(const int8_t *x, const uint32_t *w, int32_t groups, int32_t stride, int32_t pairs,
                            int32_t *acc, int32_t step);
#define TML_MAC_1X1_GROUP                                                                                     \
    "    ldr r9, [r0, r3]\n"         /* pixel B: four input channels */                                        \
    "    ldr r8, [r0], #4\n"         /* pixel A */                                                             \
    "    sxtb16 r10, r8\n"                                                                                    \
    "    sxtb16 r8, r8, ror #8\n"                                                                             \
    "    sxtb16 r11, r9\n"                                                                                    \
    "    sxtb16 r9, r9, ror #8\n"                                                                             \
    "    ldrd r12, lr, [r1], #16\n"  /* channel 0: taps (0, 2), (1, 3) */                                      \
    "    smlad r4, r10, r12, r4\n"                                                                            \
    "    smlad r4, r8, lr, r4\n"                                                                              \
    "    smlad r5, r11, r12, r5\n"                                                                            \
    "    smlad r5, r9, lr, r5\n"                                                                              \
    "    ldrd r12, lr, [r1, #-8]\n"  /* channel 1 */                                                           \
    "    smlad r6, r10, r12, r6\n"                                                                            \
    "    smlad r6, r8, lr, r6\n"                                                                              \
    "    smlad r7, r11, r12, r7\n"                                                                            \
    "    smlad r7, r9, lr, r7\n"
__asm__(
    "    .section .text.tml_conv_1x1_pairs_dsp,\"ax\",%progbits\n"
    "    .syntax unified\n"
    "    .thumb\n"
    "    .align 2\n"
    "    .global tml_conv_1x1_pairs_dsp\n"
    "    .type tml_conv_1x1_pairs_dsp, %function\n"
    "    .thumb_func\n"
    "tml_conv_1x1_pairs_dsp:\n"
    "    push {r4-r11, lr}\n"
    "    sub sp, sp, #12\n"          /* [sp] w, [sp, #4] groups, [sp, #8] step - 4 * groups */
    "    ldr r12, [sp, #56]\n"       /* step */
    "    sub r12, r12, r2, lsl #2\n"
    "    strd r1, r2, [sp]\n"
    "    str r12, [sp, #8]\n"
    "3:\n"
    "    movs r4, #0\n"
    "    movs r5, #0\n"
    "    movs r6, #0\n"
    "    movs r7, #0\n"
    "    ldrd r1, r2, [sp]\n"
    "    tst r2, #1\n"
    "    beq 1f\n"
    TML_MAC_1X1_GROUP
    "    subs r2, r2, #1\n"
    "    beq 2f\n"
    "1:\n"
    TML_MAC_1X1_GROUP
    TML_MAC_1X1_GROUP
    "    subs r2, r2, #2\n"
    "    bne 1b\n"
    "2:\n"
    "    ldrd r8, r9, [sp, #48]\n"   /* pairs, acc */
    "    ldr r10, [sp, #8]\n"
    "    stm r9!, {r4-r7}\n"
    "    add r0, r0, r10\n"
    "    subs r8, r8, #1\n"
    "    strd r8, r9, [sp, #48]\n"
    "    bne 3b\n"
    "    add sp, sp, #12\n"
    "    pop {r4-r11, pc}\n"
    "    .size tml_conv_1x1_pairs_dsp, .-tml_conv_1x1_pairs_dsp\n"
    "    .text\n");
#undef TML_MAC_1X1_GROUP

/* The last, partial group of a row (1..3 bytes), zero-padded to a word. */
static uint32_t tail_word(const int8_t *w, int32_t n)
{
    uint32_t v = (uint8_t)w[0];
    if (n > 1) {
        v |= (uint32_t)(uint8_t)w[1] << 8;
    }
    if (n > 2) {
        v |= (uint32_t)(uint8_t)w[2] << 16;
    }
    return v;
}

/* Widen the filter rows w0, w1 (n taps) into dst as the 1x1 loop reads them, the last group zero-padded;
 * returns their sums in sums[0], sums[1]. */
static void widen_pair(uint32_t *dst, const int8_t *w0, const int8_t *w1, int32_t n, int32_t sums[2])
{
    const int32_t ones = 0x00010001;
    int32_t s0 = 0, s1 = 0;
    for (int32_t i = 0; i < n; i += 4) {
        const uint32_t a = i + 4 <= n ? tml_read_u32(w0 + i) : tail_word(w0 + i, n - i);
        const uint32_t b = i + 4 <= n ? tml_read_u32(w1 + i) : tail_word(w1 + i, n - i);
        const int32_t ae = tml_sxtb16_even(a), ao = tml_sxtb16_odd(a);
        const int32_t be = tml_sxtb16_even(b), bo = tml_sxtb16_odd(b);
        dst[0] = (uint32_t)ae;
        dst[1] = (uint32_t)ao;
        dst[2] = (uint32_t)be;
        dst[3] = (uint32_t)bo;
        dst += 4;
        s0 = __smlad(ae, ones, __smlad(ao, ones, s0));
        s1 = __smlad(be, ones, __smlad(bo, ones, s1));
    }
    sums[0] = s0;
    sums[1] = s1;
}

/* Requantize one channel of a chunk: pixel i's sum at sums[(i / 2) * 4 + i % 2], its output byte at
 * out + i * out_c; `fast` is q.fast, a constant in each copy. */
static inline __attribute__((always_inline)) void requantize_chunk_as(tml_requant q, const int32_t *sums, int32_t n,
                                                                      int8_t *out, int32_t out_c, int32_t offset,
                                                                      int32_t act_min, int32_t act_max,
                                                                      int full_range, int32_t fast)
{
    for (int32_t i = 0; i + 1 < n; i += 2) {
        out[0] = dsp_output(tml_requant_apply_as(&q, sums[0], fast), offset, act_min, act_max, full_range);
        out[out_c] = dsp_output(tml_requant_apply_as(&q, sums[1], fast), offset, act_min, act_max, full_range);
        sums += 4;
        out += 2 * out_c;
    }
    if (n & 1) {
        out[0] = dsp_output(tml_requant_apply_as(&q, sums[0], fast), offset, act_min, act_max, full_range);
    }
}

static inline __attribute__((always_inline)) void requantize_chunk(tml_requant q, const int32_t *sums, int32_t n,
                                                                   int8_t *out, int32_t out_c, int32_t offset,
                                                                   int32_t act_min, int32_t act_max,
                                                                   int full_range)
{
    if (q.fast) {
        requantize_chunk_as(q, sums, n, out, out_c, offset, act_min, act_max, full_range, 1);
    } else {
        requantize_chunk_as(q, sums, n, out, out_c, offset, act_min, act_max, full_range, 0);
    }
}

/* 1x1, stride 1, no padding: the input rows are the columns, read in place. Two output channels at a time
 * (a lone last channel computed twice): their filter rows widened once into scratch, their input offset
 * folded into the bias (sum((x + offset) * w) = sum(x * w) + offset * sum(w), mod 2^32); then chunks of
 * pixels, two at a time (a lone last pixel read twice), summed into scratch and requantized channel by
 * channel. Scratch: the sums, then the widened rows (4 * taps bytes). */
static inline __attribute__((always_inline)) void conv_1x1_dsp_range(
    const tml_conv_params *p, const tml_quant_channels *quant, int32_t pixels, int32_t in_c, const int8_t *input,
    const int8_t *filter, const int32_t *bias, int32_t out_c, int8_t *output, void *scratch, int full_range)
{
    const int32_t groups = in_c >> 2, rest = in_c & 3;
    int32_t *sums = (int32_t *)scratch;
    uint32_t *wide = (uint32_t *)scratch + TML_CONV_SUMS;
    const int32_t offset = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    for (int32_t o = 0; o < out_c; o += 2) {
        const int32_t pair = o + 1 < out_c;
        const int8_t *w0 = filter + o * in_c;
        int32_t weight_sums[2];
        widen_pair(wide, w0, pair ? w0 + in_c : w0, in_c, weight_sums);
        const int32_t o1 = pair ? o + 1 : o;
        const uint32_t b0 = bias != NULL ? (uint32_t)bias[o] : 0u, b1 = bias != NULL ? (uint32_t)bias[o1] : 0u;
        const tml_requant q0 = tml_requant_make((int32_t)(b0 + (uint32_t)p->input_offset * (uint32_t)weight_sums[0]),
                                                quant->multiplier[o], quant->shift[o]);
        const tml_requant q1 = tml_requant_make((int32_t)(b1 + (uint32_t)p->input_offset * (uint32_t)weight_sums[1]),
                                                quant->multiplier[o1], quant->shift[o1]);
        for (int32_t pixel = 0; pixel < pixels; pixel += TML_CONV_SUMS / 2) {
            const int32_t n = pixels - pixel < TML_CONV_SUMS / 2 ? pixels - pixel : TML_CONV_SUMS / 2;
            const int32_t pairs = n >> 1;
            const int8_t *x = input + pixel * in_c;
            if (groups > 0) {
                if (pairs > 0) {
                    tml_conv_1x1_pairs_dsp(x, wide, groups, in_c, pairs, sums, 2 * in_c);
                }
                if (n & 1) { /* a lone last pixel: its pair partner is itself */
                    tml_conv_1x1_pairs_dsp(x + 2 * pairs * in_c, wide, groups, 0, 1, sums + 4 * pairs, 0);
                }
            } else {
                for (int32_t i = 0; i < 4 * ((n + 1) >> 1); i++) {
                    sums[i] = 0;
                }
            }
            if (rest != 0) { /* the last, partial group of every pixel */
                const uint32_t *w = wide + groups * 4;
                for (int32_t i = 0; i < n; i++) {
                    const uint32_t v = tail_word(x + i * in_c + groups * 4, rest);
                    const int32_t e = tml_sxtb16_even(v), od = tml_sxtb16_odd(v);
                    int32_t *s = sums + (i >> 1) * 4 + (i & 1);
                    s[0] = __smlad(od, (int32_t)w[1], __smlad(e, (int32_t)w[0], s[0]));
                    s[2] = __smlad(od, (int32_t)w[3], __smlad(e, (int32_t)w[2], s[2]));
                }
            }
            int8_t *out = output + pixel * out_c + o;
            requantize_chunk(q0, sums, n, out, out_c, offset, act_min, act_max, full_range);
            if (pair) {
                requantize_chunk(q1, sums + 2, n, out + 1, out_c, offset, act_min, act_max, full_range);
            }
        }
    }
}

static void conv_1x1_dsp(const tml_conv_params *p, const tml_quant_channels *quant, int32_t pixels, int32_t in_c,
                         const int8_t *input, const int8_t *filter, const int32_t *bias, int32_t out_c,
                         int8_t *output, void *scratch)
{
    if (p->act_min == INT8_MIN && p->act_max == INT8_MAX) {
        conv_1x1_dsp_range(p, quant, pixels, in_c, input, filter, bias, out_c, output, scratch, 1);
    } else {
        conv_1x1_dsp_range(p, quant, pixels, in_c, input, filter, bias, out_c, output, scratch, 0);
    }
}

/* The geometry the DSP path gathers windows with. */
typedef struct {
    const tml_conv_params *p;
    const int8_t *input;
    int32_t in_h, in_w, in_c, k_h, k_w, out_w;
    int32_t taps;     /* column_taps(kernel_len) */
    int32_t offset2;  /* input_offset in both int16 halves */
    int8_t *staging;  /* NULL when in_c is a multiple of four */
} dsp_geometry;

/* Gather the window of output pixel `pixel` into the column at `col` (every other group pair). */
__attribute__((noinline)) static void im2col(const dsp_geometry *g, int32_t pixel, uint32_t *col)
{
    const tml_conv_params *p = g->p;
    const int32_t oy = pixel / g->out_w, ox = pixel - oy * g->out_w;
    const tml_window_span ky = tml_window_span_at(oy, p->stride_h, p->pad_h, g->k_h, g->in_h);
    const tml_window_span kx = tml_window_span_at(ox, p->stride_w, p->pad_w, g->k_w, g->in_w);
    const int32_t row_len = g->k_w * g->in_c;
    const int32_t lead = kx.begin * g->in_c;
    const int32_t real = kx.end > kx.begin ? (kx.end - kx.begin) * g->in_c : 0;
    const int8_t zero_point = (int8_t)(-p->input_offset);
    if (g->staging == NULL) { /* rows are whole groups: widen straight from the input */
        for (int32_t row = 0; row < g->k_h; row++) {
            uint32_t *dst = col + (row * row_len / 4) * 4;
            if (row < ky.begin || row >= ky.end || real == 0) {
                zero_groups(dst, 4, row_len);
                continue;
            }
            const int8_t *src = g->input + ((ky.origin + row) * g->in_w + kx.origin + kx.begin) * g->in_c;
            zero_groups(dst, 4, lead);
            widen_groups(dst + lead, 4, src, real, g->offset2);
            zero_groups(dst + (lead + real), 4, row_len - lead - real);
        }
        return;
    }
    int8_t *s = g->staging;
    for (int32_t row = 0; row < g->k_h; row++) {
        int8_t *dst = s + row * row_len;
        if (row < ky.begin || row >= ky.end || real == 0) {
            fill_s8(dst, zero_point, row_len);
            continue;
        }
        const int8_t *src = g->input + ((ky.origin + row) * g->in_w + kx.origin + kx.begin) * g->in_c;
        fill_s8(dst, zero_point, lead);
        copy_s8(dst + lead, src, real);
        fill_s8(dst + lead + real, zero_point, row_len - lead - real);
    }
    const int32_t kernel_len = g->k_h * row_len;
    fill_s8(s + kernel_len, zero_point, g->taps - kernel_len);
    widen_groups(col, 4, s, g->taps, g->offset2);
}

/* The general path's accumulation for `pairs` channel pairs over two gathered columns (pixel A's and B's
 * words interleaved, `groups` (at least one) four-tap groups): pair k's weight rows at w + 2 k row and
 * w + (2 k + 1) row (int8, widened here by SXTB16). Writes four sums per pair to acc: a00, a01, a10, a11
 * (channel, pixel). Per group two weight words, the two pixels' column words, four SXTB16 and eight SMLAD,
 * two groups per step after an odd one; the loop over pairs is here too, so that nothing but the sums
 * leaves the registers. */
void tml_conv_mac_pairs_dsp(const uint32_t *col, const int8_t *w, int32_t groups, int32_t row, int32_t pairs,
                            int32_t *acc);
#define TML_MAC_2X2_GROUP                                                                                     \
    "    ldr r8, [r1], #4\n"         /* four weights of channel 0 */                                           \
    "    ldr r9, [r2], #4\n"         /* and of channel 1 */                                                    \
    "    ldrd r10, r11, [r0], #16\n" /* pixel A: taps (0, 2), (1, 3) */                                        \
    "    sxtb16 r12, r8\n"                                                                                    \
    "    sxtb16 r8, r8, ror #8\n"                                                                             \
    "    smlad r4, r10, r12, r4\n"                                                                            \
    "    smlad r4, r11, r8, r4\n"                                                                             \
    "    sxtb16 lr, r9\n"                                                                                     \
    "    sxtb16 r9, r9, ror #8\n"                                                                             \
    "    smlad r6, r10, lr, r6\n"                                                                             \
    "    smlad r6, r11, r9, r6\n"                                                                             \
    "    ldrd r10, r11, [r0, #-8]\n" /* pixel B */                                                             \
    "    smlad r5, r10, r12, r5\n"                                                                            \
    "    smlad r5, r11, r8, r5\n"                                                                             \
    "    smlad r7, r10, lr, r7\n"                                                                             \
    "    smlad r7, r11, r9, r7\n"
__asm__(
    "    .section .text.tml_conv_mac_pairs_dsp,\"ax\",%progbits\n"
    "    .syntax unified\n"
    "    .thumb\n"
    "    .align 2\n"
    "    .global tml_conv_mac_pairs_dsp\n"
    "    .type tml_conv_mac_pairs_dsp, %function\n"
    "    .thumb_func\n"
    "tml_conv_mac_pairs_dsp:\n"
    "    push {r4-r11, lr}\n"
    "    sub sp, sp, #16\n"          /* [sp] col, [sp, #4] groups, [sp, #8] the next pair's w, [sp, #12] row */
    "    strd r0, r2, [sp]\n"
    "    strd r1, r3, [sp, #8]\n"
    "3:\n"
    "    movs r4, #0\n"             /* a00: channel 0, pixel A */
    "    movs r5, #0\n"             /* a01: channel 0, pixel B */
    "    movs r6, #0\n"             /* a10 */
    "    movs r7, #0\n"             /* a11 */
    "    ldrd r0, r3, [sp]\n"
    "    ldrd r1, r12, [sp, #8]\n"
    "    add r2, r1, r12\n"
    "    add r12, r2, r12\n"
    "    str r12, [sp, #8]\n"
    "    tst r3, #1\n"              /* an odd group first, then two per step */
    "    beq 1f\n"
    TML_MAC_2X2_GROUP
    "    subs r3, r3, #1\n"
    "    beq 2f\n"
    "1:\n"
    TML_MAC_2X2_GROUP
    TML_MAC_2X2_GROUP
    "    subs r3, r3, #2\n"
    "    bne 1b\n"
    "2:\n"
    "    ldrd r8, r9, [sp, #52]\n"  /* pairs, acc */
    "    stm r9!, {r4-r7}\n"
    "    subs r8, r8, #1\n"
    "    strd r8, r9, [sp, #52]\n"
    "    bne 3b\n"
    "    add sp, sp, #16\n"
    "    pop {r4-r11, pc}\n"
    "    .size tml_conv_mac_pairs_dsp, .-tml_conv_mac_pairs_dsp\n"
    "    .text\n");
#undef TML_MAC_2X2_GROUP

/* Two channels (w0 and w0 + row; row 0 for a lone channel) by two pixels (interleaved columns), over
 * kernel_len taps: acc[channel * 2 + pixel]. */
static inline void mac_2x2(const uint32_t *col, const int8_t *w0, int32_t row, int32_t kernel_len, int32_t acc[4])
{
    const int32_t groups = kernel_len >> 2;
    const int8_t *w1 = w0 + row;
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
    if (groups > 0) {
        int32_t sums[4];
        tml_conv_mac_pairs_dsp(col, w0, groups, row, 1, sums);
        a00 = sums[0];
        a01 = sums[1];
        a10 = sums[2];
        a11 = sums[3];
        col += groups * 4;
        w0 += groups * 4;
        w1 += groups * 4;
    }
    const int32_t rest = kernel_len & 3;
    if (rest != 0) {
        const uint32_t v0 = tail_word(w0, rest), v1 = tail_word(w1, rest);
        const int32_t ae = (int32_t)col[0], ao = (int32_t)col[1], be = (int32_t)col[2], bo = (int32_t)col[3];
        int32_t e = tml_sxtb16_even(v0), o = tml_sxtb16_odd(v0);
        a00 = __smlad(ao, o, __smlad(ae, e, a00));
        a01 = __smlad(bo, o, __smlad(be, e, a01));
        e = tml_sxtb16_even(v1);
        o = tml_sxtb16_odd(v1);
        a10 = __smlad(ao, o, __smlad(ae, e, a10));
        a11 = __smlad(bo, o, __smlad(be, e, a11));
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* The general DSP path for rows of `full_range` (a constant at each call: see dsp_output). Two pixels'
 * windows are gathered, then two channels at a time run over them, up to TML_CONV_SUMS / 4 pairs in one
 * call, whose sums are then requantized channel by channel. The column is zero-padded to whole four-tap
 * groups, so where a pair's weight rows are followed by another row in the filter (every pair but the
 * last), the inner loop reads the padding taps' weights too (they multiply 0) and needs no tail.
 * Scratch: the sums, the two columns, the staging copy (when in_c is not a multiple of four). */
static inline __attribute__((always_inline)) void conv_dsp_range(
    const tml_conv_params *p, const tml_quant_channels *quant, const tml_shape *in, const int8_t *input,
    const tml_shape *filter_shape, const int8_t *filter, const int32_t *bias, const tml_shape *out, int8_t *output,
    void *scratch, int full_range)
{
    const int32_t kernel_len = filter_shape->h * filter_shape->w * in->c;
    const int32_t taps = column_taps(kernel_len);
    int32_t *sums = (int32_t *)scratch;
    uint32_t *cols = (uint32_t *)scratch + TML_CONV_SUMS;
    const dsp_geometry g = {
        .p = p,
        .input = input,
        .in_h = in->h, .in_w = in->w, .in_c = in->c,
        .k_h = filter_shape->h, .k_w = filter_shape->w, .out_w = out->w,
        .taps = taps,
        .offset2 = (int32_t)(((uint32_t)p->input_offset & 0xFFFFu) | ((uint32_t)p->input_offset << 16)),
        .staging = (in->c & 3) != 0 ? (int8_t *)(cols + taps) : NULL,
    };
    const int32_t out_c = out->c;
    const int32_t pixels = out->h * out->w;
    const int32_t offset = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    /* the pairs whose rows may be read in whole groups: all of them when no row has a partial group */
    const int32_t whole_pairs = (kernel_len & 3) == 0 ? out_c >> 1 : (out_c - 1) >> 1;
    for (int32_t pixel = 0; pixel < pixels; pixel += 2) {
        const int32_t second = pixel + 1 < pixels; /* a lone last pixel is gathered twice */
        im2col(&g, pixel, cols);
        im2col(&g, second ? pixel + 1 : pixel, cols + 2);
        int8_t *out_a = output + pixel * out_c;
        int8_t *out_b = out_a + out_c;
        for (int32_t first = 0; first < whole_pairs; first += TML_CONV_SUMS / 4) {
            const int32_t pairs = whole_pairs - first < TML_CONV_SUMS / 4 ? whole_pairs - first : TML_CONV_SUMS / 4;
            tml_conv_mac_pairs_dsp(cols, filter + 2 * first * kernel_len, taps >> 2, kernel_len, pairs, sums);
            for (int32_t c = 0; c < 2 * pairs; c++) {
                const int32_t ch = 2 * first + c;
                const tml_requant q = tml_requant_make(bias != NULL ? bias[ch] : 0, quant->multiplier[ch],
                                                       quant->shift[ch]);
                const int32_t *sum = sums + (c >> 1) * 4 + (c & 1) * 2;
                out_a[ch] = dsp_output(tml_requant_apply(&q, sum[0]), offset, act_min, act_max, full_range);
                if (second) {
                    out_b[ch] = dsp_output(tml_requant_apply(&q, sum[1]), offset, act_min, act_max, full_range);
                }
            }
        }
        for (int32_t o = 2 * whole_pairs; o < out_c; o += 2) { /* the last pair, or a lone last channel */
            const int32_t pair = o + 1 < out_c;
            int32_t acc[4];
            mac_2x2(cols, filter + o * kernel_len, pair ? kernel_len : 0, kernel_len, acc);
            for (int32_t c = 0; c <= pair; c++) {
                const int32_t ch = o + c;
                const tml_requant q = tml_requant_make(bias != NULL ? bias[ch] : 0, quant->multiplier[ch],
                                                       quant->shift[ch]);
                out_a[ch] = dsp_output(tml_requant_apply(&q, acc[c * 2]), offset, act_min, act_max, full_range);
                if (second) {
                    out_b[ch] = dsp_output(tml_requant_apply(&q, acc[c * 2 + 1]), offset, act_min, act_max,
                                           full_range);
                }
            }
        }
    }
}

static void conv_dsp(const tml_conv_params *p, const tml_quant_channels *quant, const tml_shape *in,
                     const int8_t *input, const tml_shape *filter_shape, const int8_t *filter, const int32_t *bias,
                     const tml_shape *out, int8_t *output, void *scratch)
{
    if (p->act_min == INT8_MIN && p->act_max == INT8_MAX) {
        conv_dsp_range(p, quant, in, input, filter_shape, filter, bias, out, output, scratch, 1);
    } else {
        conv_dsp_range(p, quant, in, input, filter_shape, filter, bias, out, output, scratch, 0);
    }
}
#endif

void tml_conv2d_s8_channel(const tml_conv_params *p, const tml_quant_channels *quant, int32_t o,
                           const tml_shape *input_shape, const int8_t *input,
                           const tml_shape *filter_shape, const int8_t *w, const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output)
{
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = output_shape->h, out_w = output_shape->w, out_c = output_shape->c;
    const int32_t row_len = k_w * in_c;       /* one kernel row: contiguous in input and filter */
    const int32_t input_row = in_w * in_c;
    const int32_t weight_offset = p->input_offset * sum_s8(w, k_h * row_len);
    const int32_t b = bias != NULL ? bias[o] : 0;
    const int32_t multiplier = quant->multiplier[o];
    const int32_t shift = quant->shift[o];
    int8_t *out = output + o;
    for (int32_t oy = 0; oy < out_h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, p->stride_h, p->pad_h, k_h, in_h);
        for (int32_t ox = 0; ox < out_w; ox++) {
            const tml_window_span kx = tml_window_span_at(ox, p->stride_w, p->pad_w, k_w, in_w);
            int32_t acc = 0;
            if (ky.begin == 0 && ky.end == k_h && kx.begin == 0 && kx.end == k_w) {
                const int8_t *x = input + ky.origin * input_row + kx.origin * in_c;
                acc = weight_offset;
                for (int32_t row = 0; row < k_h; row++) {
                    acc += TML_CHANNEL_DOT(x + row * input_row, w + row * row_len, row_len, 0);
                }
            } else if (kx.end > kx.begin) {
                const int32_t n = (kx.end - kx.begin) * in_c;
                for (int32_t row = ky.begin; row < ky.end; row++) {
                    acc += TML_CHANNEL_DOT(input + (ky.origin + row) * input_row + (kx.origin + kx.begin) * in_c,
                                           w + row * row_len + kx.begin * in_c, n, p->input_offset);
                }
            }
            *out = tml_conv_output(acc, b, multiplier, shift, p);
            out += out_c;
        }
    }
}

tml_status tml_conv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                         const tml_shape *input_shape, const int8_t *input,
                         const tml_shape *filter_shape, const int8_t *filter,
                         const int32_t *bias,
                         const tml_shape *output_shape, int8_t *output, void *scratch)
{
    if (!tml_conv_args_valid(params, quant, input_shape, input, filter_shape, filter, output_shape, output)) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params local = *params; /* a copy the int8 output stores cannot alias */
    const tml_conv_params *p = &local;
#if defined(TML_USE_DSP)
    if (scratch != NULL) { /* without scratch (C generated for another target) the portable loop runs */
        if (is_pointwise(p, filter_shape)) {
            conv_1x1_dsp(p, quant, input_shape->h * input_shape->w, input_shape->c, input, filter, bias,
                         output_shape->c, output, scratch);
            return TML_OK;
        }
        conv_dsp(p, quant, input_shape, input, filter_shape, filter, bias, output_shape, output, scratch);
        return TML_OK;
    }
#else
    (void)scratch;
#endif
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_c = output_shape->c;

    if (is_pointwise(p, filter_shape)) {
        conv_pointwise(p, quant, in_h * in_w, in_c, input, filter, bias, out_c, output);
        return TML_OK;
    }

    const int32_t kernel_len = k_h * k_w * in_c;
    for (int32_t o = 0; o < out_c; o++) {
        tml_conv2d_s8_channel(p, quant, o, input_shape, input, filter_shape, filter + o * kernel_len, bias,
                              output_shape, output);
    }
    return TML_OK;
}

int32_t tml_conv2d_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *filter_shape,
                                    const tml_shape *output_shape)
{
    (void)output_shape;
    if (input_shape == NULL || filter_shape == NULL) {
        return 0;
    }
#if defined(TML_DSP_SCRATCH)
    /* The sums; the general path's two interleaved int16 columns and, when in_c is not a multiple of 4, its
     * int8 staging copy of a window; the 1x1 path's two widened filter rows take no more than the columns. */
    const int32_t taps = (filter_shape->h * filter_shape->w * input_shape->c + 3) & ~3;
    return 4 * TML_CONV_SUMS + 4 * taps + ((input_shape->c & 3) != 0 ? taps : 0);
#else
    return 0;
#endif
}
