/*
 * tml_dwconv2d_s8.c - int8 depthwise convolution, NHWC input, weights [k_h][k_w][out_c].
 *
 * out_c = in_c * depth_multiplier and output channel o reads input channel
 * o / depth_multiplier. filter_shape is {k_h, k_w, in_c}.
 * Each window is cropped to the real input cells, so padded cells contribute nothing. With a
 * depth multiplier of 1, four adjacent channels are computed together: in NHWC input and
 * [k_h][k_w][out_c] weights they sit side by side, so they share the loop and pointer work.
 * The portable path (and a DSP target called with NULL scratch) is a direct loop with no scratch.
 *
 * The DSP paths (Cortex-M4, M7, M33) take output channels four at a time ("blocks"). Scratch holds,
 * prepared once per call, each block's weights widened to int16 pairs and each channel's requantization
 * (tml_requant_smlal: one SMLAL and a shift per output, when every channel has that form). The variants,
 * picked from the shape:
 *   - 3x3, stride 1 or 2, depth multiplier 1: every window is read whole from the three input rows of its
 *     output row, copied to scratch with their padded cells holding the input zero point (so that with
 *     the offset they are 0); the input offset is folded into the sums' starting values, and the nine taps of
 *     a block run in assembly: per two taps, two input words rearranged by PKHBT/PKHTB and widened by
 *     SXTB16 into each channel's pair of taps, four SMLADs;
 *   - general (any kernel and stride), depth multiplier 1: each window cropped to the input, one input
 *     word per tap widened by SXTAB16 (offset added), SMLABB/SMLATT per channel;
 *   - depth multiplier > 1: the same loop, with a block's four input bytes gathered from the input
 *     channels its outputs read (o / depth_multiplier).
 * Channels beyond the last whole block are computed one by one. Scratch: tml_dwconv2d_s8_scratch_bytes.
 */
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

/* Where a window lies: its size, and the input and filter strides between columns and rows. */
typedef struct {
    int32_t rows;
    int32_t cols;
    int32_t input_step;
    int32_t input_row;
    int32_t filter_step;
    int32_t filter_row;
} window_geometry;

/* sum((x + offset) * w) over a window for one output channel. */
static inline int32_t window_dot(const int8_t *x, const int8_t *w, const window_geometry *g, int32_t offset)
{
    int32_t acc = 0;
    for (int32_t ky = 0; ky < g->rows; ky++) {
        const int8_t *xk = x + ky * g->input_row;
        const int8_t *wk = w + ky * g->filter_row;
        for (int32_t kx = 0; kx < g->cols; kx++) {
            acc += (*xk + offset) * *wk;
            xk += g->input_step;
            wk += g->filter_step;
        }
    }
    return acc;
}

/* window_dot for four adjacent channels at once (depth multiplier 1): each tap reads four
 * neighbouring input bytes and four neighbouring weights, sharing the loop and pointer work. */
static inline void window_dot4(const int8_t *x, const int8_t *w, const window_geometry *g, int32_t offset,
                               int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int32_t ky = 0; ky < g->rows; ky++) {
        const int8_t *xk = x + ky * g->input_row;
        const int8_t *wk = w + ky * g->filter_row;
        for (int32_t kx = 0; kx < g->cols; kx++) {
            a0 += (xk[0] + offset) * wk[0];
            a1 += (xk[1] + offset) * wk[1];
            a2 += (xk[2] + offset) * wk[2];
            a3 += (xk[3] + offset) * wk[3];
            xk += g->input_step;
            wk += g->filter_step;
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

#if defined(TML_USE_DSP)

/* Scratch, filled once per call by prepare(): per block of four output channels, in 32-bit words,
 *   [0, 4)              the sums' starting values for a whole window (the 3x3 variants): the bias plus
 *                       input_offset times the sum of the channel's weights;
 *   [4, 4 + 2 * taps)   the weights as int16 pairs: per tap, channels (0, 2) and (1, 3); in the 3x3
 *                       variants per two taps t, t + 1, one word per channel (tap t low), tap 8 alone;
 *   then                tml_requant_smlal[4], the channels' requantization (its .bias: their bias);
 * after the blocks, tml_requant_smlal for each remaining channel; in the 3x3 variants then three input
 * rows with their padding. */
static inline int32_t block_words(int32_t taps)
{
    return 4 + 2 * taps + 4 * (int32_t)(sizeof(tml_requant_smlal) / 4);
}

/* The layer's output step: SMLAL requantization (every channel has that form and the clamp lies inside
 * int8), else the general tml_requantize_output with the channel's multiplier and shift. */
typedef struct {
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t offset;
    int32_t act_min;
    int32_t act_max;
    int32_t smlal;
    int32_t full_range; /* the clamp is -128..127: SSAT alone clamps */
} dw_output;

/* What the loops over pixels read. */
typedef struct {
    const int8_t *input;
    const int8_t *filter;          /* [k_h][k_w][out_c] */
    const int32_t *blocks;         /* scratch, as above */
    const tml_requant_smlal *rest; /* the channels after the last block */
    int32_t in_h, in_w, in_c, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w, pad_h, pad_w;
    int32_t multiplier_step; /* depth multiplier */
    int32_t input_offset;
    int32_t offset2; /* the input offset in both halfwords */
} dw_layer;

/* The general output step of channel o, out of line: the SMLAL form is the common case. */
static __attribute__((noinline)) int8_t output_general(int32_t total, int32_t o, const dw_output *d)
{
    return tml_requantize_output(total, 0, d->multiplier[o], d->shift[o], d->offset, d->act_min, d->act_max);
}

/* The output step of channel o; total is its sum with the bias added. */
static inline int8_t output_one(int32_t total, const tml_requant_smlal *q, int32_t o, const dw_output *d)
{
    if (!d->smlal) {
        return output_general(total, o, d);
    }
    const int32_t v = __ssat(__qadd(tml_requant_smlal_apply(q, total), d->offset), 8);
    return (int8_t)tml_clamp(v, d->act_min, d->act_max);
}

/* tml_requant_smlal_apply, the output offset added (saturating) and SSAT to int8, for the four channels of
 * a block in place (a0 .. a3: the sums with the bias added). In assembly so that each channel's multiplier
 * and high word come in one LDRD. */
#define REQUANT_SMLAL(a, at)                                                                                       \
    "ldrd %[m], %[hi], [%[q], #" #at " + 4]\n\t"                                                                   \
    "ldr %[sh], [%[q], #" #at " + 12]\n\t"                                                                         \
    "and %[lo], %[" a "], #0x80000000\n\t"                                                                         \
    "orr %[lo], %[lo], #0x40000000\n\t"                                                                            \
    "add %[hi], %[hi], %[" a "], asr #31\n\t"                                                                      \
    "smlal %[lo], %[hi], %[" a "], %[m]\n\t"                                                                       \
    "asr %[hi], %[hi], %[sh]\n\t"                                                                                  \
    "qadd %[hi], %[hi], %[offset]\n\t"                                                                             \
    "ssat %[" a "], #8, %[hi]\n\t"

static inline __attribute__((always_inline)) void requant_block(const tml_requant_smlal *q, int32_t offset,
                                                                int32_t *a0, int32_t *a1, int32_t *a2,
                                                                int32_t *a3)
{
    int32_t m, hi, sh, lo;
    __asm__(REQUANT_SMLAL("a0", 0) REQUANT_SMLAL("a1", 16) REQUANT_SMLAL("a2", 32) REQUANT_SMLAL("a3", 48)
            : [a0] "+r"(*a0), [a1] "+r"(*a1), [a2] "+r"(*a2), [a3] "+r"(*a3), [m] "=&r"(m), [hi] "=&r"(hi),
              [sh] "=&r"(sh), [lo] "=&r"(lo)
            : [q] "r"(q), [offset] "r"(offset), "m"(*(const tml_requant_smlal(*)[4])q));
}

/* The output step of block channels o .. o + 3 (a: their sums with the bias added; q: the block's). */
static inline __attribute__((always_inline)) void output_block(int8_t *out, int32_t a0, int32_t a1, int32_t a2,
                                                               int32_t a3, const tml_requant_smlal *q, int32_t o,
                                                               const dw_output *d)
{
    if (!d->smlal) {
        out[0] = output_general(a0, o, d);
        out[1] = output_general(a1, o + 1, d);
        out[2] = output_general(a2, o + 2, d);
        out[3] = output_general(a3, o + 3, d);
        return;
    }
    requant_block(q, d->offset, &a0, &a1, &a2, &a3);
    if (!d->full_range) {
        a0 = tml_clamp(a0, d->act_min, d->act_max);
        a1 = tml_clamp(a1, d->act_min, d->act_max);
        a2 = tml_clamp(a2, d->act_min, d->act_max);
        a3 = tml_clamp(a3, d->act_min, d->act_max);
    }
    out[0] = (int8_t)a0;
    out[1] = (int8_t)a1;
    out[2] = (int8_t)a2;
    out[3] = (int8_t)a3;
}

/* One tap of a block: input int16 pairs (x0, x2) and (x1, x3) times the block's weight words for the tap. */
#define BLOCK_TAP(xe, xo, w)                                                                                       \
    do {                                                                                                           \
        const int32_t we_ = (w)[0], wo_ = (w)[1];                                                                  \
        a0 = __smlabb((xe), we_, a0);                                                                              \
        a2 = __smlatt((xe), we_, a2);                                                                              \
        a1 = __smlabb((xo), wo_, a1);                                                                              \
        a3 = __smlatt((xo), wo_, a3);                                                                              \
    } while (0)

/* Every output pixel, each window cropped to the input cells: the general loop. */
static void dw_pixels(const dw_layer *L, const dw_output *d, int32_t out_h, int8_t *output)
{
    const int32_t in_c = L->in_c, out_c = L->out_c, m = L->multiplier_step, taps = L->k_h * L->k_w;
    const int32_t blocks = out_c / 4, words = block_words(taps), offset2 = L->offset2;
    const int32_t input_row = L->in_w * in_c;
    for (int32_t oy = 0; oy < out_h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, L->stride_h, L->pad_h, L->k_h, L->in_h);
        for (int32_t ox = 0; ox < L->out_w; ox++) {
            int8_t *out = output + (oy * L->out_w + ox) * out_c;
            const tml_window_span kx = tml_window_span_at(ox, L->stride_w, L->pad_w, L->k_w, L->in_w);
            const int32_t rows = ky.end > ky.begin ? ky.end - ky.begin : 0;
            const int32_t cols = kx.end > kx.begin ? kx.end - kx.begin : 0;
            const int32_t inside = rows > 0 && cols > 0; /* else the window lies wholly in the padding */
            const int32_t first_tap = inside ? ky.begin * L->k_w + kx.begin : 0;
            const int8_t *x = L->input;
            if (inside) {
                x += (ky.origin + ky.begin) * input_row + (kx.origin + kx.begin) * in_c;
            }
            const int32_t *block = L->blocks;
            int32_t c0 = 0, d1 = 1, d2 = 2, d3 = 3; /* the input channels of the block's outputs, from c0 */
            for (int32_t o = 0; o < 4 * blocks; o += 4, block += words) {
                const tml_requant_smlal *q = (const tml_requant_smlal *)(block + 4 + 2 * taps);
                int32_t a0 = q[0].bias, a1 = q[1].bias, a2 = q[2].bias, a3 = q[3].bias;
                if (m > 1) {
                    c0 = o / m;
                    d1 = (o + 1) / m - c0;
                    d2 = (o + 2) / m - c0;
                    d3 = (o + 3) / m - c0;
                } else {
                    c0 = o;
                }
                for (int32_t r = 0; r < rows; r++) {
                    const int8_t *xk = x + c0 + r * input_row;
                    const int32_t *wk = block + 4 + 2 * (first_tap + r * L->k_w);
                    const int32_t *const w_end = wk + 2 * cols; /* the weights pointer counts the taps */
                    if (m == 1) {
                        for (; wk != w_end; wk += 2, xk += in_c) {
                            const uint32_t xv = tml_read_u32(xk);
                            BLOCK_TAP(__sxtab16(offset2, (int32_t)xv), tml_sxtab16_odd(offset2, xv), wk);
                        }
                        continue;
                    }
                    for (; wk != w_end; wk += 2, xk += in_c) { /* gather the block's input bytes */
                        const uint8_t *xu = (const uint8_t *)xk;
                        const int32_t even = (int32_t)(xu[0] | ((uint32_t)xu[d2] << 16));
                        const int32_t odd = (int32_t)(xu[d1] | ((uint32_t)xu[d3] << 16));
                        BLOCK_TAP(__sxtab16(offset2, even), __sxtab16(offset2, odd), wk);
                    }
                }
                output_block(out + o, a0, a1, a2, a3, q, o, d);
            }
            const window_geometry g = {rows, cols, in_c, input_row, out_c, L->k_w * out_c};
            for (int32_t o = 4 * blocks; o < out_c; o++) {
                const int8_t *w = L->filter + (inside ? ky.begin * g.filter_row + kx.begin * out_c : 0) + o;
                const tml_requant_smlal *q = &L->rest[o - 4 * blocks];
                const int32_t sum = window_dot(x + o / m, w, &g, L->input_offset);
                out[o] = output_one((int32_t)((uint32_t)sum + (uint32_t)q->bias), q, o, d);
            }
        }
    }
}

/* Two taps of a block whose input words are in t0 and t1 (offsets w_offset .. + 15 of the block: one weight
 * pair word per channel): PKHBT and PKHTB put each channel's two input bytes in bytes 0 and 2 (channels
 * 0, 2) or 1 and 3 (channels 1, 3) of a word, SXTB16 widens them, SMLAD multiplies both taps at once. */
#define TAP_PAIR(w_offset)                                                                                         \
    "pkhbt %[u], %[t0], %[t1], lsl #16\n\t"                                                                        \
    "pkhtb %[t1], %[t1], %[t0], asr #16\n\t"                                                                       \
    "ldrd %[w0], %[w1], [%[w], #" #w_offset "]\n\t"                                                                \
    "sxtb16 %[t0], %[u]\n\t"                                                                                       \
    "smlad %[a0], %[t0], %[w0], %[a0]\n\t"                                                                         \
    "sxtb16 %[u], %[u], ror #8\n\t"                                                                                \
    "smlad %[a1], %[u], %[w1], %[a1]\n\t"                                                                          \
    "ldrd %[w0], %[w1], [%[w], #" #w_offset " + 8]\n\t"                                                            \
    "sxtb16 %[t0], %[t1]\n\t"                                                                                      \
    "smlad %[a2], %[t0], %[w0], %[a2]\n\t"                                                                         \
    "sxtb16 %[t1], %[t1], ror #8\n\t"                                                                              \
    "smlad %[a3], %[t1], %[w1], %[a3]\n\t"

/* The nine taps of a block over a whole 3x3 window at x (rows `row` bytes apart, cells c): four tap pairs
 * and tap 8 alone (SMLABB/SMLATT on channels (0, 2) and (1, 3)). block: its words as prepare() lays them
 * out for the 3x3 variants. In assembly so that the nine addresses come from x, c and row without
 * spilling (GCC runs out of registers for them). */
static inline __attribute__((always_inline)) void block_3x3(const int8_t *x, int32_t c, int32_t row,
                                                            const int32_t *block, int32_t *a0, int32_t *a1,
                                                            int32_t *a2, int32_t *a3)
{
    int32_t t0, t1, u, w0, w1;
    __asm__("ldr %[t0], [%[x]]\n\t"
            "ldr %[t1], [%[x], %[c]]\n\t" TAP_PAIR(16)
            "ldr %[t0], [%[x], %[c], lsl #1]\n\t"
            "add %[x], %[x], %[row]\n\t"
            "ldr %[t1], [%[x]]\n\t" TAP_PAIR(32)
            "ldr %[t0], [%[x], %[c]]\n\t"
            "ldr %[t1], [%[x], %[c], lsl #1]\n\t" TAP_PAIR(48)
            "add %[x], %[x], %[row]\n\t"
            "ldr %[t0], [%[x]]\n\t"
            "ldr %[t1], [%[x], %[c]]\n\t" TAP_PAIR(64)
            "ldr %[t0], [%[x], %[c], lsl #1]\n\t"
            "ldrd %[w0], %[w1], [%[w], #80]\n\t"
            "sxtb16 %[u], %[t0]\n\t"
            "sxtb16 %[t0], %[t0], ror #8\n\t"
            "smlabb %[a0], %[u], %[w0], %[a0]\n\t"
            "smlatt %[a2], %[u], %[w0], %[a2]\n\t"
            "smlabb %[a1], %[t0], %[w1], %[a1]\n\t"
            "smlatt %[a3], %[t0], %[w1], %[a3]\n\t"
            : [a0] "+r"(*a0), [a1] "+r"(*a1), [a2] "+r"(*a2), [a3] "+r"(*a3), [x] "+r"(x), [t0] "=&r"(t0),
              [t1] "=&r"(t1), [u] "=&r"(u), [w0] "=&r"(w0), [w1] "=&r"(w1)
            : [c] "r"(c), [row] "r"(row), [w] "r"(block)
            : "memory");
}

/* n bytes from src to dst, in aligned 16-byte LDM/STM chunks where both allow. */
static inline void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    if ((((uintptr_t)dst | (uintptr_t)src) & 3u) == 0) {
        for (; i + 16 <= n; i += 16) {
            __builtin_memcpy(__builtin_assume_aligned(dst + i, 4), __builtin_assume_aligned(src + i, 4), 16);
        }
        for (; i + 4 <= n; i += 4) {
            __builtin_memcpy(__builtin_assume_aligned(dst + i, 4), __builtin_assume_aligned(src + i, 4), 4);
        }
    }
    for (; i < n; i++) {
        dst[i] = src[i];
    }
}

/* Input row iy as the 3x3 variants read it: `span` cells from input column -pad_w, those outside the input
 * (the padding, or the whole row when iy lies outside) holding the zero point, so that with the input offset
 * added they are 0 and contribute nothing. */
static __attribute__((noinline)) void padded_row(int8_t *dst, const dw_layer *L, int32_t iy, int32_t span,
                                                 int8_t zero_point)
{
    const int32_t c = L->in_c;
    const int32_t left = iy < 0 || iy >= L->in_h ? span : (L->pad_w < span ? L->pad_w : span);
    const int32_t real = L->in_w < span - left ? L->in_w : span - left;
    __builtin_memset(dst, zero_point, (size_t)(left * c));
    copy_bytes(dst + left * c, L->input + iy * L->in_w * c, real * c);
    __builtin_memset(dst + (left + real) * c, zero_point, (size_t)((span - left - real) * c));
}

/* A 3x3 depth-multiplier-1 layer with the given stride (a constant in each caller). Per output row, the
 * three input rows it reads are copied with their padding into scratch (`rows`), so that every window is
 * whole: nine taps per block in assembly, from the sums' starting values with the input offset folded in. */
static inline __attribute__((always_inline)) void dw_3x3(const dw_layer *L, const dw_output *d, int32_t stride,
                                                         int32_t out_h, int8_t *output, int8_t *rows)
{
    const int32_t c = L->in_c, out_c = L->out_c, blocks = out_c / 4, span = (L->out_w - 1) * stride + 3;
    const int32_t row = span * c;
    const window_geometry g = {3, 3, c, row, out_c, 3 * out_c};
    const int32_t *const first_block = L->blocks;
    const int32_t *const end_block = first_block + blocks * block_words(9);
    const dw_output out_step = *d; /* a copy the int8 output stores cannot alias */
    int8_t *out_pixel = output;
    for (int32_t oy = 0; oy < out_h; oy++) {
        for (int32_t k = 0; k < 3; k++) {
            padded_row(rows + k * row, L, oy * stride - L->pad_h + k, span, (int8_t)-L->input_offset);
        }
        const int8_t *x_pixel = rows;
        for (int32_t ox = 0; ox < L->out_w; ox++, x_pixel += stride * c, out_pixel += out_c) {
            const int8_t *x = x_pixel;
            int8_t *out = out_pixel;
            for (const int32_t *block = first_block; block != end_block; block += block_words(9), x += 4, out += 4) {
                int32_t a0 = block[0], a1 = block[1], a2 = block[2], a3 = block[3];
                block_3x3(x, c, row, block, &a0, &a1, &a2, &a3);
                const tml_requant_smlal *q = (const tml_requant_smlal *)(block + 22);
                output_block(out, a0, a1, a2, a3, q, (int32_t)(out - out_pixel), &out_step);
            }
            const tml_requant_smlal *q = L->rest;
            for (int32_t o = 4 * blocks; o < out_c; o++, q++) {
                const int32_t sum = window_dot(x_pixel + o, L->filter + o, &g, L->input_offset);
                out_pixel[o] = output_one((int32_t)((uint32_t)sum + (uint32_t)q->bias), q, o, &out_step);
            }
        }
    }
}

static __attribute__((noinline)) void dw_3x3_stride1(const dw_layer *L, const dw_output *d, int32_t out_h,
                                                     int8_t *output, int8_t *rows)
{
    dw_3x3(L, d, 1, out_h, output, rows);
}

static __attribute__((noinline)) void dw_3x3_stride2(const dw_layer *L, const dw_output *d, int32_t out_h,
                                                     int8_t *output, int8_t *rows)
{
    dw_3x3(L, d, 2, out_h, output, rows);
}

/* Fills scratch (see block_words) for the layer, the weights in the 3x3 variants' order when pairs is
 * set; returns whether every channel has the SMLAL form. */
static int32_t prepare(int32_t *scratch, const int8_t *filter, const int32_t *bias, const tml_quant_channels *quant,
                       int32_t taps, int32_t out_c, int32_t input_offset, int32_t pairs)
{
    int32_t smlal = 1;
    int32_t *block = scratch;
    const int32_t whole = out_c - out_c % 4; /* channels in blocks */
    for (int32_t o = 0; o < out_c; o++) {
        const int32_t j = o % 4;
        const int32_t b = bias != NULL ? bias[o] : 0;
        tml_requant_smlal *q = o < whole ? (tml_requant_smlal *)(block + 4 + 2 * taps) + j
                                         : (tml_requant_smlal *)block + (o - whole);
        smlal &= tml_requant_smlal_make(q, b, quant->multiplier[o], quant->shift[o]);
        if (o >= whole) {
            continue;
        }
        uint32_t folded = (uint32_t)b;
        for (int32_t t = 0; t < taps; t++) {
            folded += (uint32_t)(input_offset * filter[t * out_c + o]);
        }
        block[j] = (int32_t)folded;
        int32_t t = 0;
        for (; pairs && t + 2 <= taps; t += 2) { /* channel j's taps t and t + 1 as one int16 pair */
            const uint32_t lo = (uint16_t)filter[t * out_c + o], hi = (uint16_t)filter[(t + 1) * out_c + o];
            block[4 + 2 * t + j] = (int32_t)(lo | hi << 16);
        }
        if (j == 3) {
            for (; t < taps; t++) {
                const uint32_t wv = tml_read_u32(filter + t * out_c + o - 3);
                block[4 + 2 * t] = tml_sxtb16_even(wv);
                block[5 + 2 * t] = tml_sxtb16_odd(wv);
            }
            block += block_words(taps);
        }
    }
    return smlal;
}
#endif

tml_status tml_dwconv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const int8_t *input,
                           const tml_shape *filter_shape, const int8_t *filter,
                           const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output, void *scratch)
{
    if (!tml_conv_args_valid(params, quant, input_shape, input, filter_shape, filter, output_shape, output)
        || params->depth_multiplier < 1 || output_shape->c != input_shape->c * params->depth_multiplier) {
        return TML_ARG_ERROR;
    }
    const tml_conv_params local = *params; /* a copy the int8 output stores cannot alias */
    const tml_conv_params *p = &local;
    const int32_t in_h = input_shape->h, in_w = input_shape->w, in_c = input_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = output_shape->h, out_w = output_shape->w, out_c = output_shape->c;
    const int32_t multiplier_step = p->depth_multiplier;
#if defined(TML_USE_DSP)
    if (scratch != NULL) {
        const int32_t taps = k_h * k_w, blocks = out_c / 4;
        /* the 3x3 variants pad with the input zero point, which must be an int8 */
        const int32_t square3 = multiplier_step == 1 && k_h == 3 && k_w == 3 && p->stride_h == p->stride_w
                             && (p->stride_h == 1 || p->stride_h == 2) && p->input_offset >= -127
                             && p->input_offset <= 128;
        const int32_t smlal = prepare(scratch, filter, bias, quant, taps, out_c, p->input_offset, square3);
        const dw_output d = {
            quant->multiplier, quant->shift, p->output_offset, p->act_min, p->act_max,
            smlal && p->act_min >= -128 && p->act_max <= 127, p->act_min == -128 && p->act_max == 127,
        };
        const int32_t *tables = scratch;
        const tml_requant_smlal *rest = (const tml_requant_smlal *)(tables + blocks * block_words(taps));
        const dw_layer L = {
            input, filter, scratch, rest, in_h, in_w, in_c, out_w, out_c, k_h, k_w, p->stride_h, p->stride_w,
            p->pad_h, p->pad_w, multiplier_step, p->input_offset,
            (int32_t)(((uint32_t)p->input_offset & 0xFFFFu) | ((uint32_t)p->input_offset << 16)),
        };
        int8_t *rows = (int8_t *)(rest + out_c % 4);
        if (square3 && p->stride_h == 1) {
            dw_3x3_stride1(&L, &d, out_h, output, rows);
        } else if (square3) {
            dw_3x3_stride2(&L, &d, out_h, output, rows);
        } else {
            dw_pixels(&L, &d, out_h, output);
        }
        return TML_OK;
    }
#else
    (void)scratch;
#endif
    window_geometry g = {0, 0, in_c, in_w * in_c, out_c, k_w * out_c};
    const int32_t *mult = quant->multiplier;
    const int32_t *shift = quant->shift;
    int8_t *out = output;

    for (int32_t oy = 0; oy < out_h; oy++) {
        const tml_window_span ky = tml_window_span_at(oy, p->stride_h, p->pad_h, k_h, in_h);
        for (int32_t ox = 0; ox < out_w; ox++, out += out_c) {
            const tml_window_span kx = tml_window_span_at(ox, p->stride_w, p->pad_w, k_w, in_w);
            g.rows = ky.end > ky.begin ? ky.end - ky.begin : 0;
            g.cols = kx.end > kx.begin ? kx.end - kx.begin : 0;
            if (g.rows == 0 || g.cols == 0) { /* the window lies wholly in the padding */
                for (int32_t o = 0; o < out_c; o++) {
                    out[o] = tml_conv_output(0, bias != NULL ? bias[o] : 0, mult[o], shift[o], p);
                }
                continue;
            }
            const int8_t *x = input + (ky.origin + ky.begin) * g.input_row + (kx.origin + kx.begin) * in_c;
            const int8_t *w = filter + ky.begin * g.filter_row + kx.begin * out_c;
            int32_t o = 0;
            if (multiplier_step == 1) {
                for (; o + 4 <= out_c; o += 4) {
                    int32_t acc[4];
                    window_dot4(x + o, w + o, &g, p->input_offset, acc);
                    for (int32_t j = 0; j < 4; j++) {
                        out[o + j] = tml_conv_output(acc[j], bias != NULL ? bias[o + j] : 0, mult[o + j],
                                                     shift[o + j], p);
                    }
                }
            }
            for (; o < out_c; o++) {
                const int32_t acc = window_dot(x + o / multiplier_step, w + o, &g, p->input_offset);
                out[o] = tml_conv_output(acc, bias != NULL ? bias[o] : 0, mult[o], shift[o], p);
            }
        }
    }
    return TML_OK;
}

int32_t tml_dwconv2d_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *filter_shape,
                                      const tml_shape *output_shape)
{
#if defined(TML_DSP_SCRATCH)
    const int32_t out_c = output_shape->c, taps = filter_shape->h * filter_shape->w;
    const int32_t tables = (out_c / 4) * (80 + 8 * taps) + 16 * (out_c % 4);
    if (filter_shape->h == 3 && filter_shape->w == 3 && out_c == input_shape->c) {
        /* three padded input rows of the 3x3 variants: (out_w - 1) * stride + 3 cells, stride <= 2 */
        return tables + 3 * (2 * output_shape->w + 1) * input_shape->c;
    }
    return tables;
#else
    (void)input_shape;
    (void)filter_shape;
    (void)output_shape;
    return 0;
#endif
}
