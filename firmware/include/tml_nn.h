/*
 * tml_nn.h - the tinyml kernel library.
 *
 * Flat C99 API in the style of CMSIS-NN: one function per op and type,
 * `tml_<op>_<type>`, one kernel per source file, scratch sizes asked for by
 * `tml_<op>_<type>_scratch_bytes`. Activations are NHWC int8, batch 1.
 * No malloc, no floating point. Every kernel has one portable C path (the
 * definition) and may have an `__ARM_FEATURE_DSP` path giving identical bytes.
 *
 * Everything between the cdef markers is plain declarations so the host
 * runner can hand it to cffi unchanged.
 */
#ifndef TML_NN_H
#define TML_NN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
typedef int32_t tml_status; /* TML_OK or TML_ARG_ERROR */

/* Height, width and channels of an NHWC tensor (batch is always 1).
 * For a filter: h, w are the kernel size and c the input channels. */
typedef struct {
    int32_t h;
    int32_t w;
    int32_t c;
} tml_shape;

/* Per-output-channel requantization: real multiplier = multiplier * 2^(shift - 31). */
typedef struct {
    const int32_t *multiplier;
    const int32_t *shift;
} tml_quant_channels;

typedef struct {
    int32_t stride_h;
    int32_t stride_w;
    int32_t pad_h;          /* zero rows above the input; rows below as needed */
    int32_t pad_w;          /* zero columns left of the input */
    int32_t depth_multiplier; /* depthwise only: out_c = in_c * depth_multiplier */
    int32_t input_offset;   /* minus the input zero point */
    int32_t output_offset;  /* the output zero point */
    int32_t act_min;        /* fused activation clamp, int8 domain */
    int32_t act_max;
} tml_conv_params;

typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min;
    int32_t act_max;
    /* NULL, or int32[out_features]: bias[o] + input_offset * sum(weights[o]) with int32
     * wrap-around, which the code generator computes at build time. When set, the kernel reads
     * neither `bias` nor `input_offset`. */
    const int32_t *folded_bias;
} tml_fc_params;

typedef struct {
    int32_t kernel_h;
    int32_t kernel_w;
    int32_t stride_h;
    int32_t stride_w;
    int32_t pad_h;
    int32_t pad_w;
    int32_t act_min;
    int32_t act_max;
} tml_pool_params;

/* TFLite's int8 ADD: both inputs are offset, shifted left by left_shift,
 * rescaled to a common scale, summed and rescaled to the output. */
typedef struct {
    int32_t in1_offset;
    int32_t in1_multiplier;
    int32_t in1_shift;
    int32_t in2_offset;
    int32_t in2_multiplier;
    int32_t in2_shift;
    int32_t left_shift;
    int32_t output_offset;
    int32_t out_multiplier;
    int32_t out_shift;
    int32_t act_min;
    int32_t act_max;
} tml_add_params;

/* One input of a concatenation: its channel count and how its values map
 * to the output's scale (out = output_offset + requantize(x + input_offset)). */
typedef struct {
    const int8_t *data;
    int32_t channels;
    int32_t input_offset;
    int32_t multiplier;
    int32_t shift;
} tml_concat_input;

/* Convolution, weights OHWI [out_c][k_h][k_w][in_c], bias int32[out_c] or NULL. scratch: 4-byte
 * aligned, tml_conv2d_s8_scratch_bytes long (0 on the portable path; on a DSP target, windows
 * gathered as int16), or NULL, with which a DSP target runs the portable loop instead. */
tml_status tml_conv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                         const tml_shape *input_shape, const int8_t *input,
                         const tml_shape *filter_shape, const int8_t *filter,
                         const int32_t *bias,
                         const tml_shape *output_shape, int8_t *output, void *scratch);
int32_t tml_conv2d_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *filter_shape,
                                    const tml_shape *output_shape);

/* One output channel o of the direct convolution loop (SMLAD on a DSP target),
 * from that channel's filter (filter_o:
 * [k_h][k_w][in_c], e.g. decoded into scratch by a kernel whose weights are stored encoded).
 * params and shapes as for tml_conv2d_s8, arguments already checked; output is the whole NHWC
 * output, of which channel o is written. Gives tml_conv2d_s8's bytes for that channel. */
void tml_conv2d_s8_channel(const tml_conv_params *params, const tml_quant_channels *quant, int32_t o,
                           const tml_shape *input_shape, const int8_t *input,
                           const tml_shape *filter_shape, const int8_t *filter_o, const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output);

/* Depthwise convolution, weights [k_h][k_w][out_c], out_c = in_c * depth_multiplier,
 * output channel o reads input channel o / depth_multiplier. scratch: 4-byte aligned,
 * tml_dwconv2d_s8_scratch_bytes long (0 on the portable path; on a DSP target, prepared weights and
 * requantization, and padded input rows for a 3x3 filter), or NULL, with which a DSP target runs the
 * portable loop instead. */
tml_status tml_dwconv2d_s8(const tml_conv_params *params, const tml_quant_channels *quant,
                           const tml_shape *input_shape, const int8_t *input,
                           const tml_shape *filter_shape, const int8_t *filter,
                           const int32_t *bias,
                           const tml_shape *output_shape, int8_t *output, void *scratch);
int32_t tml_dwconv2d_s8_scratch_bytes(const tml_shape *input_shape, const tml_shape *filter_shape,
                                      const tml_shape *output_shape);

/* Fully connected, weights [out_features][in_features], per-output-channel quantization.
 * params->folded_bias (when set) replaces bias and input_offset: see tml_fc_params. */
tml_status tml_fc_s8(const tml_fc_params *params, const tml_quant_channels *quant,
                     int32_t in_features, const int8_t *input,
                     const int8_t *weights, const int32_t *bias,
                     int32_t out_features, int8_t *output);

/* Pooling: output has the input's scale and zero point. Padding must be smaller than
 * the kernel. Padded positions are not counted: avgpool divides by the number of valid
 * inputs, rounding half away from zero. */
tml_status tml_maxpool_s8(const tml_pool_params *params,
                          const tml_shape *input_shape, const int8_t *input,
                          const tml_shape *output_shape, int8_t *output);
tml_status tml_avgpool_s8(const tml_pool_params *params,
                          const tml_shape *input_shape, const int8_t *input,
                          const tml_shape *output_shape, int8_t *output);

/* Elementwise addition of two tensors of `size` elements. scratch: 4-byte aligned,
 * tml_add_s8_scratch_bytes(size) long (two int32[256] tables of the inputs' rescaled values, or 0 bytes
 * for small tensors), or NULL, with which every element is rescaled as it comes. */
tml_status tml_add_s8(const tml_add_params *params, const int8_t *input1, const int8_t *input2,
                      int8_t *output, int32_t size, void *scratch);
int32_t tml_add_s8_scratch_bytes(int32_t size);

/* Softmax over the last axis of [rows][row_size]. exp_table[d] = round(65536 * exp(-d * s_in))
 * for d = max - x in 0..255 (entries at most 65536, row_size at most 65535, so the uint32 row
 * sum cannot overflow). Output scale 1/256, zero point -128. */
tml_status tml_softmax_s8(const uint32_t *exp_table, const int8_t *input, int32_t rows,
                          int32_t row_size, int8_t *output);

/* Concatenation along channels of NHWC tensors that share h and w (outer = h * w). */
tml_status tml_concat_s8(const tml_concat_input *inputs, int32_t n_inputs, int32_t outer,
                         int32_t output_offset, int8_t *output);

/* Flatten an NHWC tensor in PyTorch's (C, H, W) order:
 * output[c * h * w + y * w + x] = input[(y * w + x) * c_count + c]. */
tml_status tml_flatten_s8(const tml_shape *input_shape, const int8_t *input, int8_t *output);
/* cdef-end */

#define TML_OK 0
#define TML_ARG_ERROR (-1)

#ifdef __cplusplus
}
#endif

#endif /* TML_NN_H */
