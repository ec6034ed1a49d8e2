/*
 * tml_conv2d_winograd_s8.c - int8 3x3 stride-1 convolution by Winograd F(2x2, 3x3) (see tml_winograd.h).
 *
 * Tiles (2x2 output blocks, row by row) are taken two at a time, as tml_conv2d_s8's DSP path takes
 * two pixels. Each tile's 4x4 input window becomes V = B^T d B per input channel, int16, in
 * scratch, where d = x + input_offset on input cells and 0 on padding:
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 * Every row of B^T has two entries +-1, so |V| <= 4 * max|d| <= 4 * 255 = 1020: int16 holds it.
 * Then per output channel o and position k of the 4x4: M[k] = sum_c U[o][k][c] * V[k][c], with
 * U = 2G g 2G^T (|U| <= 9 * 128 = 1152) from the build, and the 2x2 outputs are A^T M A,
 *   A^T = [1 1 1 0; 0 1 -1 -1],
 * which is 4x the direct sum exactly. The accumulators and A^T M A run modulo 2^32 (a product is
 * at most 1152 * 1020 < 2^21, but in_c4 of them summed, and nine such sums added, need not fit);
 * the end result does fit, as the caller guarantees |4 * direct| < 2^31, so an arithmetic shift
 * right by 2 gives the direct sum, which is then requantized as tml_conv_output does.
 *
 * The DSP path (Cortex-M4, M7, M33) transforms four channels at a time: one word of four int8
 * inputs, split by SXTB16 into pairs (c0, c2) and (c1, c3), transformed by SADD16/SSUB16. Cells
 * outside the input are filled with the input zero point instead of 0 (offset then applied once:
 * B^T J B = 4 at position (1, 1) for J all ones, so V[1][1] += 4 * input_offset), which keeps
 * every lane within +-1024. The products run in tml_winograd_mac_2x2_dsp: two channels by two
 * tiles, per four channels two weight LDRDs, two input LDRDs and eight SMLADs. The portable path
 * computes the same integers one channel at a time, each weight read once for both tiles.
 */
#include "tml_winograd.h"
#include "tml_nn.h"
#include "tml_support.h"

#include <stddef.h>

#define TILE_CELLS 16

/* Input channels rounded up to whole groups of four. */
static int32_t channels4(int32_t c)
{
    return (c + 3) & ~3;
}

/* B^T d B in place on a row-major 4x4 of lanes, ADD and SUB the lane-wise operations. */
#define TML_WINOGRAD_BT_D_B(d, ADD, SUB)                                                                    \
    do {                                                                                                    \
        for (int32_t j = 0; j < 4; j++) {                                                                   \
            const int32_t d0 = (d)[j], d1 = (d)[4 + j], d2 = (d)[8 + j], d3 = (d)[12 + j];                  \
            (d)[j] = SUB(d0, d2);                                                                           \
            (d)[4 + j] = ADD(d1, d2);                                                                       \
            (d)[8 + j] = SUB(d2, d1);                                                                       \
            (d)[12 + j] = SUB(d1, d3);                                                                      \
        }                                                                                                   \
        for (int32_t i = 0; i < 16; i += 4) {                                                               \
            const int32_t t0 = (d)[i], t1 = (d)[i + 1], t2 = (d)[i + 2], t3 = (d)[i + 3];                   \
            (d)[i] = SUB(t0, t2);                                                                           \
            (d)[i + 1] = ADD(t1, t2);                                                                       \
            (d)[i + 2] = SUB(t2, t1);                                                                       \
            (d)[i + 3] = SUB(t1, t3);                                                                       \
        }                                                                                                   \
    } while (0)

/* The geometry tiles are gathered with, and the layer's output step. */
typedef struct {
    const int8_t *input;
    int8_t *output;
    int32_t in_h, in_w, in_c, pad_h, pad_w;
    int32_t out_h, out_w, out_c;
    int32_t tiles_w;
    int32_t c4;                /* channels4(in_c) */
    int32_t input_offset;
    int32_t output_offset;
    int32_t lo, hi;            /* the activation clamp before the output offset */
} tile_geometry;

/* The input cell under each of the 16 window positions of tile `tile`, NULL outside the input. */
static void tile_cells(const tile_geometry *g, int32_t tile, const int8_t *cells[TILE_CELLS])
{
    const int32_t ty = tile / g->tiles_w, tx = tile - ty * g->tiles_w;
    const int32_t y0 = 2 * ty - g->pad_h, x0 = 2 * tx - g->pad_w;
    for (int32_t i = 0; i < 4; i++) {
        const int32_t y = y0 + i;
        for (int32_t j = 0; j < 4; j++) {
            const int32_t x = x0 + j;
            cells[i * 4 + j] = y >= 0 && y < g->in_h && x >= 0 && x < g->in_w
                                   ? g->input + (y * g->in_w + x) * g->in_c : NULL;
        }
    }
}

/* Where a tile's four outputs go, channel 0 (row-major in the tile): offsets into the output, -1 for one
 * past its edge (the last tiles of an odd size). */
typedef struct {
    int32_t offset[4];
} tile_output;

static tile_output tile_output_at(const tile_geometry *g, int32_t tile)
{
    const int32_t ty = tile / g->tiles_w, tx = tile - ty * g->tiles_w;
    const int32_t oy = 2 * ty, ox = 2 * tx;
    const int32_t at = (oy * g->out_w + ox) * g->out_c, row = g->out_w * g->out_c;
    const int32_t right = ox + 1 < g->out_w, below = oy + 1 < g->out_h;
    const tile_output t = {{at, right ? at + g->out_c : -1, below ? at + row : -1,
                            right && below ? at + row + g->out_c : -1}};
    return t;
}

/* One output channel's requantization, its steps shared by the tile outputs: tml_requantize_output with
 * tml_divide_by_power_of_two's mask and threshold computed once. */
typedef struct {
    uint32_t bias;
    int32_t multiplier, left, right, mask, half;
} channel_quant;

static channel_quant channel_quant_at(const tml_quant_channels *quant, const int32_t *bias, int32_t ch)
{
    const int32_t shift = quant->shift[ch];
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t mask = (int32_t)((1u << right) - 1u);
    const channel_quant q = {
        .bias = bias != NULL ? (uint32_t)bias[ch] : 0u,
        .multiplier = quant->multiplier[ch],
        .left = shift > 0 ? shift : 0,
        .right = right,
        .mask = mask,
        .half = mask >> 1,
    };
    return q;
}

/* A^T M A of one tile (M[k] = m[k * stride]): 4x the direct sums of its 2x2 outputs, row-major. */
static inline void output_transform(const int32_t *m, int32_t stride, uint32_t y[4])
{
    uint32_t t0[4], t1[4];
    for (int32_t j = 0; j < 4; j++) {
        const uint32_t m0 = (uint32_t)m[j * stride], m1 = (uint32_t)m[(4 + j) * stride];
        const uint32_t m2 = (uint32_t)m[(8 + j) * stride], m3 = (uint32_t)m[(12 + j) * stride];
        t0[j] = m0 + m1 + m2;
        t1[j] = m1 - m2 - m3;
    }
    y[0] = t0[0] + t0[1] + t0[2];
    y[1] = t0[1] - t0[2] - t0[3];
    y[2] = t1[0] + t1[1] + t1[2];
    y[3] = t1[1] - t1[2] - t1[3];
}

/* Channel ch of tiles a and b (M of tile a at m[k * stride], of b one word after; b == a: one tile), divided
 * by 4, requantized and stored: the bytes tml_conv_output gives the direct sums. */
static void finish_tiles(const tile_geometry *g, const tile_output *ta, const tile_output *tb, int32_t same,
                         int8_t *output, const int32_t *m, int32_t stride, const channel_quant *q)
{
    uint32_t y[8];
    int32_t at[8];
    output_transform(m, stride, y);
    output_transform(m + 1, stride, y + 4);
    for (int32_t k = 0; k < 4; k++) {
        at[k] = ta->offset[k];
        at[4 + k] = same ? -1 : tb->offset[k];
    }
    /* locals: the int8 stores below may alias anything, which would make the compiler read these again */
    const uint32_t bias = q->bias;
    const int32_t multiplier = q->multiplier, left = q->left, right = q->right, mask = q->mask, half = q->half;
    const int32_t lo = g->lo, hi = g->hi, offset = g->output_offset;
    for (int32_t k = 0; k < 8; k++) {
        if (at[k] < 0) {
            continue;
        }
        int32_t v = (int32_t)(((uint32_t)((int32_t)y[k] >> 2) + bias) << left);
        v = tml_doubling_high_mult(v, multiplier);
        const int32_t remainder = v & mask;
        v >>= right;
        v += remainder > half + (v < 0);
        output[at[k]] = (int8_t)(tml_clamp(v, lo, hi) + offset);
    }
}

#if defined(TML_USE_DSP)
/* n (1..3) input bytes and the zero point in the rest of the word: the last, partial group. */
static uint32_t tail_word(const int8_t *x, int32_t n, int8_t zero_point)
{
    uint32_t v = 0;
    for (int32_t i = 3; i >= 0; i--) {
        v = (v << 8) | (uint8_t)(i < n ? x[i] : zero_point);
    }
    return v;
}

/* B on the right of one row of four cells' int16 pairs, (d0 - d2, d1 + d2, d2 - d1, d1 - d3): the even pairs
 * to dst[0], dst[stride], dst[2 * stride], dst[3 * stride], the odd pairs one word after each. */
static inline void row_transform_dsp(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, uint32_t *dst, int32_t stride)
{
    int32_t d0 = tml_sxtb16_even(w0), d1 = tml_sxtb16_even(w1), d2 = tml_sxtb16_even(w2), d3 = tml_sxtb16_even(w3);
    dst[0] = (uint32_t)__ssub16(d0, d2);
    dst[stride] = (uint32_t)__sadd16(d1, d2);
    dst[2 * stride] = (uint32_t)__ssub16(d2, d1);
    dst[3 * stride] = (uint32_t)__ssub16(d1, d3);
    d0 = tml_sxtb16_odd(w0);
    d1 = tml_sxtb16_odd(w1);
    d2 = tml_sxtb16_odd(w2);
    d3 = tml_sxtb16_odd(w3);
    dst[1] = (uint32_t)__ssub16(d0, d2);
    dst[stride + 1] = (uint32_t)__sadd16(d1, d2);
    dst[2 * stride + 1] = (uint32_t)__ssub16(d2, d1);
    dst[3 * stride + 1] = (uint32_t)__ssub16(d1, d3);
}

/* Four channels from c of a cell as one word: the zero point outside the input and past in_c. */
static inline uint32_t cell_word(const tile_geometry *g, const int8_t *cell, int32_t c, uint32_t zero4)
{
    if (cell == NULL) {
        return zero4;
    }
    const int32_t n = g->in_c - c;
    return n >= 4 ? tml_read_u32(cell + c) : tail_word(cell + c, n, (int8_t)zero4);
}

/* V of one tile, four channels at a time as int16 pairs, into tile slot t (0 or 1) of the scratch layout
 * [16 positions][in_c4 / 4 groups][2 tiles][2 words]: B on the right of each row of cells, written in place,
 * then B^T on the left of each column, where the offset is added. */
static void transform_tile_dsp(const tile_geometry *g, const int8_t *const cells[TILE_CELLS], uint32_t *v, int32_t t)
{
    const uint32_t zero4 = (uint8_t)(-g->input_offset) * 0x01010101u;
    const int32_t offset4 = 4 * g->input_offset;
    const int32_t offset4_pair = (int32_t)(((uint32_t)offset4 & 0xFFFFu) | ((uint32_t)offset4 << 16));
    const int32_t ps = g->c4; /* words per position: c4 / 4 groups * 2 tiles * 2 words */
    uint32_t *base = v + t * 2;
    for (int32_t i = 0; i < 4; i++) {
        const int8_t *const *row = cells + i * 4;
        uint32_t *dst = base + i * 4 * ps;
        int32_t c = 0;
        if (row[0] != NULL && row[1] != NULL && row[2] != NULL && row[3] != NULL) { /* four adjacent cells */
            const int8_t *x = row[0];
            const int32_t step = g->in_c;
            for (; c + 4 <= g->in_c; c += 4) {
                row_transform_dsp(tml_read_u32(x + c), tml_read_u32(x + c + step), tml_read_u32(x + c + 2 * step),
                                  tml_read_u32(x + c + 3 * step), dst, ps);
                dst += 4;
            }
        }
        for (; c < g->c4; c += 4) { /* cells outside the input, the last partial group */
            row_transform_dsp(cell_word(g, row[0], c, zero4), cell_word(g, row[1], c, zero4),
                              cell_word(g, row[2], c, zero4), cell_word(g, row[3], c, zero4), dst, ps);
            dst += 4;
        }
    }
    for (int32_t c = 0; c < g->c4; c += 4) {
        for (int32_t j = 0; j < 8; j++) { /* column j / 2, even and odd pairs */
            uint32_t *p = base + c + (j >> 1) * ps + (j & 1);
            const int32_t d0 = (int32_t)p[0], d1 = (int32_t)p[4 * ps], d2 = (int32_t)p[8 * ps];
            const int32_t d3 = (int32_t)p[12 * ps];
            const int32_t r1 = __sadd16(d1, d2);
            p[0] = (uint32_t)__ssub16(d0, d2);
            p[4 * ps] = (uint32_t)((j >> 1) == 1 ? __sadd16(r1, offset4_pair) : r1);
            p[8 * ps] = (uint32_t)__ssub16(d2, d1);
            p[12 * ps] = (uint32_t)__ssub16(d1, d3);
        }
    }
}

/* The products of two channels by two tiles at all 16 positions, in assembly so that the fourteen operands
 * of the inner loop stay in registers: per group of four channels, two LDRD of weights (channel o, o + 1),
 * two of the tiles' V and eight SMLAD (the first group of a position SMUAD, which starts the sums).
 * v: the scratch ([16][groups][2 tiles][2 words]); u: channel o's weights ([16][in_c4], contiguous);
 * groups: in_c4 / 4 (at least 1); acc: [16][4] = (o, a), (o, b), (o + 1, a), (o + 1, b) per position;
 * pair_offset: bytes from channel o's weights to o + 1's (16 * in_c4 * 2, or 0 for a lone last channel). */
void tml_winograd_mac_2x2_dsp(const uint32_t *v, const int16_t *u, int32_t groups, int32_t *acc, int32_t pair_offset);
#define TML_WINOGRAD_LOAD_GROUP                                                                               \
    "    ldrd r8, r9, [r1], #8\n"    /* channel o: (c0, c2), (c1, c3) */                                       \
    "    ldrd r12, lr, [r2], #8\n"   /* channel o + 1 */                                                       \
    "    ldrd r10, r11, [r0], #16\n" /* tile a */
#define TML_WINOGRAD_MAC_GROUP                                                                                \
    TML_WINOGRAD_LOAD_GROUP                                                                                   \
    "    smlad r4, r10, r8, r4\n"                                                                             \
    "    smlad r4, r11, r9, r4\n"                                                                             \
    "    smlad r6, r10, r12, r6\n"                                                                            \
    "    smlad r6, r11, lr, r6\n"                                                                             \
    "    ldrd r10, r11, [r0, #-8]\n" /* tile b */                                                              \
    "    smlad r5, r10, r8, r5\n"                                                                             \
    "    smlad r5, r11, r9, r5\n"                                                                             \
    "    smlad r7, r10, r12, r7\n"                                                                            \
    "    smlad r7, r11, lr, r7\n"
__asm__(
    "    .section .text.tml_winograd_mac_2x2_dsp,\"ax\",%progbits\n"
    "    .syntax unified\n"
    "    .thumb\n"
    "    .align 2\n"
    "    .global tml_winograd_mac_2x2_dsp\n"
    "    .type tml_winograd_mac_2x2_dsp, %function\n"
    "    .thumb_func\n"
    "tml_winograd_mac_2x2_dsp:\n"
    "    push {r4-r11, lr}\n"
    "    ldr r12, [sp, #36]\n"         /* pair_offset */
    "    sub sp, sp, #12\n"
    "    str r2, [sp]\n"               /* groups */
    "    str r3, [sp, #4]\n"           /* where the next four sums go */
    "    add r4, r0, r2, lsl #8\n"
    "    str r4, [sp, #8]\n"           /* the end of v: 16 positions of groups * 16 bytes */
    "    add r2, r1, r12\n"            /* channel o + 1 */
    "3:\n"
    "    ldr r3, [sp]\n"
    TML_WINOGRAD_LOAD_GROUP
    "    smuad r4, r10, r8\n"
    "    smlad r4, r11, r9, r4\n"
    "    smuad r6, r10, r12\n"
    "    smlad r6, r11, lr, r6\n"
    "    ldrd r10, r11, [r0, #-8]\n"
    "    smuad r5, r10, r8\n"
    "    smlad r5, r11, r9, r5\n"
    "    smuad r7, r10, r12\n"
    "    smlad r7, r11, lr, r7\n"
    "    subs r3, r3, #1\n"
    "    beq 2f\n"
    "    tst r3, #1\n"                 /* an odd group, then two per step */
    "    beq 1f\n"
    TML_WINOGRAD_MAC_GROUP
    "    subs r3, r3, #1\n"
    "    beq 2f\n"
    "1:\n"
    TML_WINOGRAD_MAC_GROUP
    TML_WINOGRAD_MAC_GROUP
    "    subs r3, r3, #2\n"
    "    bne 1b\n"
    "2:\n"
    "    ldr r8, [sp, #4]\n"
    "    stmia r8!, {r4-r7}\n"
    "    str r8, [sp, #4]\n"
    "    ldr r8, [sp, #8]\n"
    "    cmp r0, r8\n"
    "    bne 3b\n"
    "    add sp, sp, #12\n"
    "    pop {r4-r11, pc}\n"
    "    .size tml_winograd_mac_2x2_dsp, .-tml_winograd_mac_2x2_dsp\n"
    "    .text\n");
#undef TML_WINOGRAD_MAC_GROUP
#undef TML_WINOGRAD_LOAD_GROUP

/* Tiles a and b (b == a: one tile), all channels, two at a time (a lone last one on its own). */
static void tile_pair_dsp(const tile_geometry *g, const tml_quant_channels *quant, const uint32_t *v,
                          const int16_t *filter, const int32_t *bias, int32_t a, int32_t b)
{
    const tile_output ta = tile_output_at(g, a), tb = tile_output_at(g, b);
    const int32_t c4 = g->c4, filter_row = TILE_CELLS * c4;
    int32_t acc[TILE_CELLS * 4];
    for (int32_t o = 0; o < g->out_c; o += 2) {
        const int32_t pair = o + 1 < g->out_c;
        tml_winograd_mac_2x2_dsp(v, filter + o * filter_row, c4 >> 2, acc, pair ? filter_row * 2 : 0);
        for (int32_t c = 0; c <= pair; c++) {
            const channel_quant q = channel_quant_at(quant, bias, o + c);
            finish_tiles(g, &ta, &tb, b == a, g->output + o + c, acc + c * 2, 4, &q);
        }
    }
}
#else
/* Where channel c sits in its group of four: c0, c2, c1, c3. */
static int32_t group_slot(int32_t c)
{
    return ((c & 1) << 1) | ((c >> 1) & 1);
}

#define TML_ADD(a, b) ((a) + (b))
#define TML_SUB(a, b) ((a) - (b))

/* V of one tile, channel by channel, into tile slot t (0 or 1) of the scratch layout
 * [16 positions][in_c4 / 4 groups][2 tiles][4 slots] int16. */
static void transform_tile(const tile_geometry *g, const int8_t *const cells[TILE_CELLS], int16_t *v, int32_t t)
{
    const int32_t position_stride = 2 * g->c4;
    for (int32_t c = 0; c < g->c4; c++) {
        int32_t d[TILE_CELLS];
        for (int32_t k = 0; k < TILE_CELLS; k++) {
            d[k] = c < g->in_c && cells[k] != NULL ? cells[k][c] + g->input_offset : 0;
        }
        TML_WINOGRAD_BT_D_B(d, TML_ADD, TML_SUB);
        int16_t *dst = v + (c >> 2) * 8 + t * 4 + group_slot(c);
        for (int32_t k = 0; k < TILE_CELLS; k++) {
            dst[k * position_stride] = (int16_t)d[k];
        }
    }
}

/* Tiles a and b (b == a: one tile), channel by channel: each weight read once for both tiles. */
static void tile_pair(const tile_geometry *g, const tml_quant_channels *quant, const int16_t *v,
                      const int16_t *filter, const int32_t *bias, int32_t a, int32_t b)
{
    const tile_output ta = tile_output_at(g, a), tb = tile_output_at(g, b);
    const int32_t c4 = g->c4;
    for (int32_t o = 0; o < g->out_c; o++) {
        int32_t m[TILE_CELLS * 2]; /* [position][tile] */
        const int16_t *u = filter + o * TILE_CELLS * c4;
        for (int32_t k = 0; k < TILE_CELLS; k++) {
            const int16_t *vk = v + k * 2 * c4;
            uint32_t sa = 0, sb = 0;
            for (int32_t c = 0; c < c4; c += 4) {
                for (int32_t s = 0; s < 4; s++) {
                    const int32_t w = u[c + s];
                    sa += (uint32_t)(w * vk[2 * c + s]);
                    sb += (uint32_t)(w * vk[2 * c + 4 + s]);
                }
            }
            m[k * 2] = (int32_t)sa;
            m[k * 2 + 1] = (int32_t)sb;
            u += c4;
        }
        const channel_quant q = channel_quant_at(quant, bias, o);
        finish_tiles(g, &ta, &tb, b == a, g->output + o, m, 2, &q);
    }
}
#endif

tml_status tml_conv2d_winograd_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                  const tml_shape *input_shape, const int8_t *input,
                                  const tml_shape *filter_shape, const int16_t *filter,
                                  const int32_t *bias,
                                  const tml_shape *output_shape, int8_t *output, void *scratch)
{
    if (scratch == NULL
        || !tml_conv_args_valid(params, quant, input_shape, input, filter_shape, (const int8_t *)filter,
                                output_shape, output)
        || filter_shape->h != 3 || filter_shape->w != 3 || params->stride_h != 1 || params->stride_w != 1
        || input_shape->c > 1024 || params->input_offset < -127 || params->input_offset > 128) {
        return TML_ARG_ERROR;
    }
    const int32_t tiles_h = (output_shape->h + 1) / 2, tiles_w = (output_shape->w + 1) / 2;
    const tile_geometry g = {
        .input = input,
        .output = output,
        .in_h = input_shape->h, .in_w = input_shape->w, .in_c = input_shape->c,
        .pad_h = params->pad_h, .pad_w = params->pad_w,
        .out_h = output_shape->h, .out_w = output_shape->w, .out_c = output_shape->c,
        .tiles_w = tiles_w,
        .c4 = channels4(input_shape->c),
        .input_offset = params->input_offset,
        .output_offset = params->output_offset,
        .lo = params->act_min - params->output_offset,
        .hi = params->act_max - params->output_offset,
    };
    const int32_t tiles = tiles_h * tiles_w;
    for (int32_t a = 0; a < tiles; a += 2) {
        const int32_t b = a + 1 < tiles ? a + 1 : a; /* a lone last tile is transformed twice */
        const int8_t *cells_a[TILE_CELLS], *cells_b[TILE_CELLS];
        tile_cells(&g, a, cells_a);
        tile_cells(&g, b, cells_b);
#if defined(TML_USE_DSP)
        transform_tile_dsp(&g, cells_a, (uint32_t *)scratch, 0);
        transform_tile_dsp(&g, cells_b, (uint32_t *)scratch, 1);
        tile_pair_dsp(&g, quant, (const uint32_t *)scratch, filter, bias, a, b);
#else
        transform_tile(&g, cells_a, (int16_t *)scratch, 0);
        transform_tile(&g, cells_b, (int16_t *)scratch, 1);
        tile_pair(&g, quant, (const int16_t *)scratch, filter, bias, a, b);
#endif
    }
    return TML_OK;
}

int32_t tml_conv2d_winograd_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *output_shape)
{
    (void)output_shape;
    if (input_shape == NULL) {
        return 0;
    }
    return TILE_CELLS * 2 * channels4(input_shape->c) * (int32_t)sizeof(int16_t);
}
