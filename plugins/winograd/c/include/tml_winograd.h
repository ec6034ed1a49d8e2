/*
 * tml_winograd.h - int8 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3).
 *
 * Each 2x2 block of outputs (a tile) is computed from its 4x4 input window d as
 * A^T [(2G g 2G^T) . (B^T d B)] A, which is 4x the direct convolution exactly: with 2G in place
 * of G every transform is an integer matrix (Lavin & Gray, 2016), so 16 multiplies per tile and
 * channel pair replace the direct convolution's 36. The weights are transformed at build time
 * (tinyml_plugins/winograd/transform.py); the kernel divides the factor 4 out and requantizes as
 * tml_conv2d_s8 does, so the outputs are that kernel's bytes.
 *
 * Transformed weights (int16) are laid out [out_c][16 positions][in_c4], position = row * 4 +
 * column of the 4x4 transform, in_c4 = in_c rounded up to a multiple of 4 (extra channels 0),
 * and within each group of four channels in the order c0, c2, c1, c3: two int16 pairs that
 * SMLAD multiplies with the pairs SXTB16 splits four int8 inputs into.
 */
#ifndef TML_WINOGRAD_H
#define TML_WINOGRAD_H

#include <stdint.h>

#include "tml_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
/* A 3x3, stride-1 convolution with any padding, NHWC int8 in and out.
 *   params:       as for tml_conv2d_s8; stride_h = stride_w = 1, pad_h, pad_w >= 0, depth_multiplier unused.
 *   quant:        per-output-channel multiplier (0x40000000..0x7FFFFFFF) and shift (-31..30).
 *   input_shape:  h, w >= 1, c in 1..1024; input: [h][w][c].
 *   filter_shape: {3, 3, input_shape->c} (the weights before the transform).
 *   filter:       the transformed weights, int16 [out_c][16][in_c4] as above, each |value| <= 1152
 *                 (9 * 128: 2G g 2G^T of int8 weights).
 *   bias:         int32 [out_c] or NULL.
 *   output_shape: h = input h + 2 * pad_h - 2, w likewise, c = out_c >= 1; output: [h][w][c].
 *   scratch:      4-byte aligned, tml_conv2d_winograd_s8_scratch_bytes long (two tiles' transformed
 *                 input windows, int16); not NULL.
 * The caller guarantees 4 * |direct convolution sum| < 2^31 (the code generator checks it from
 * the weights and the input offset), so the accumulators, kept modulo 2^32, end exact.
 * Returns TML_ARG_ERROR, writing nothing, for a NULL pointer, a shape that does not fit, a
 * stride other than 1 or a filter other than 3x3. */
tml_status tml_conv2d_winograd_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                                  const tml_shape *input_shape, const int8_t *input,
                                  const tml_shape *filter_shape, const int16_t *filter,
                                  const int32_t *bias,
                                  const tml_shape *output_shape, int8_t *output, void *scratch);

/* Scratch bytes of tml_conv2d_winograd_s8: 16 positions x 2 tiles x in_c4 int16 (64 * in_c4), the
 * same on every target. */
int32_t tml_conv2d_winograd_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *output_shape);
/* cdef-end */

#ifdef __cplusplus
}
#endif

#endif /* TML_WINOGRAD_H */
