// The static cost of a layer: a pure function of the shapes and attributes a compiled step
// records (StepInfo), with no oneDNN and no timing. The per-layer cost report joins it with the
// profiler's measured latencies; the kernel-design comparison uses the free-standing formulas to
// price convolutions that do not exist yet.
//
// Conventions (every count is an int64; nothing here allocates beyond the returned Dims):
//  - Parameters: weights and biases actually used by the step (StepInfo::weight_elements and
//    bias_elements; for a Conv whose step did not record them, k·k·(c_in/groups)·c_out from the
//    shapes). params = weight_params + bias_params.
//  - dense_equivalent_params: the parameters of a fully connected layer that maps the same input
//    to the same output, per image: (H·W·c_in)·(H'·W'·c_out) + H'·W'·c_out (with a bias, always).
//    For Dense (Gemm/MatMul) layers it is their own params. 0 for every other kind, including
//    layers whose parameters are per channel (BatchNormalization, PRelu): they are not a linear
//    map that weight sharing could replace.
//  - MACs: per whole batch, counted for convolutions (N·H'·W'·kh·kw·(c_in/groups)·c_out) and
//    dense layers (M·N·K, batch dimensions of a MatMul included); 0 for every other kind.
//  - FLOPs: per whole batch.
//      conv, dense:         2·MACs (a multiply and an add); the bias add is not counted.
//      pooling:             one per window element per output element (a comparison for max, an
//                           add for average; the divide is not counted; border windows count as
//                           full windows). Global pooling: one per input element.
//      eltwise:             one per output element, whatever the function (Relu, Sigmoid, ...).
//      binary:              one per output element per operand beyond the first (Add, Sum of 3...).
//      normalization:       two per output element (the per-channel scale and shift; statistics
//                           that Instance/Layer normalization compute at run time not counted).
//      softmax:             five per element (max, subtract, exp, sum, divide; LogSoftmax alike).
//      reduction:           one per input element.
//      data movement/other: 0.
//    Every fused post-op adds one FLOP per output element; a "sum" post-op (residual add) also
//    reads the residual, an output-sized tensor, so activation_bytes_read includes it.
//  - Bytes: dtype_bytes (4 = fp32) per element. weight_bytes = params·dtype_bytes.
//    activation_bytes_read = the runtime data inputs (StepInfo::input_dims; for a Conv only the
//    first, the data tensor) plus residuals; activation_bytes_written = the output.
//  - arithmetic_intensity = flops / (weight_bytes + activation_bytes_read +
//    activation_bytes_written); 0 when no bytes move.
//  - Fields that do not apply to a kind (kernel, stride, dilation, groups of a Gemm) are 0.
//    Convolutions and pools with a 1-D spatial input report kernel_w = stride_w = dilation_w = 1.
//  - Output dims: StepInfo::output_dims when set; when empty, derived from the input and the
//    attributes for Conv and pools (WindowOutputSize in spatial_math.h, floor form: the recorded
//    pads include any ceil_mode or auto_pad adjustment) and equal to the input for
//    shape-preserving kinds (eltwise, normalization, softmax).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/engine/engine.h"
#include "server/engine/tensor.h"

namespace convserve::engine {

enum class LayerKind {
  kDenseConv,
  kDepthwiseConv,
  kGroupedConv,
  kPointwiseConv,
  kPooling,
  kGlobalPooling,
  kDense,  // Gemm/MatMul inner product
  kEltwise,
  kBinary,
  kNormalization,
  kSoftmax,
  kReduction,
  kDataMovement,  // reorder, concat, reshape, transpose, slice, output copy, ...
  kOther
};

// "dense_conv", "depthwise_conv", "grouped_conv", "pointwise_conv", "pooling", "global_pooling",
// "dense", "eltwise", "binary", "normalization", "softmax", "reduction", "data_movement", "other".
const char* LayerKindName(LayerKind kind);

// The kind of a step from its StepInfo::kind (an ONNX op type, "Reorder" or "Output"); a Conv
// is classified by ConvKind once its shapes are known, kDenseConv here.
LayerKind LayerKindOfOpType(const std::string& op_type);

// group == 1: pointwise for a 1x1 kernel, dense otherwise. group == c_in (> 1): depthwise
// (c_out may be a multiple of c_in: a channel multiplier). Any other group > 1: grouped.
LayerKind ConvKind(int64_t kernel_h, int64_t kernel_w, int64_t c_in, int64_t c_out, int64_t groups);

struct LayerCost {
  LayerKind kind = LayerKind::kOther;
  int64_t kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 0, stride_w = 0;
  int64_t dilation_h = 0, dilation_w = 0;
  int64_t groups = 0;
  Dims input_dims;  // the first runtime data input
  Dims output_dims;
  int64_t weight_params = 0, bias_params = 0;
  int64_t params = 0;  // weight_params + bias_params
  int64_t dense_equivalent_params = 0;
  int64_t macs = 0, flops = 0;  // per whole batch
  int64_t weight_bytes = 0, activation_bytes_read = 0, activation_bytes_written = 0;
  double arithmetic_intensity = 0.0;  // flops per byte moved
};

// The cost of one step, with dtype_bytes bytes per element (4: fp32, 2: bf16, 1: int8).
LayerCost EstimateStepCost(const StepInfo& step, int64_t dtype_bytes = 4);

struct ModelCost {
  int64_t params = 0, dense_equivalent_params = 0;
  int64_t macs = 0, flops = 0;
  int64_t weight_bytes = 0;
  int64_t activation_bytes = 0;  // read + written, over all layers
};
ModelCost SumCosts(const std::vector<LayerCost>& layers);

// Free-standing formulas, for the kernel-design comparison and the tests.

// kh·kw·(c_in/groups)·c_out: the weights of a convolution (no bias).
int64_t ConvWeightCount(int64_t kh, int64_t kw, int64_t c_in, int64_t c_out, int64_t groups);
// n·h_out·w_out·kh·kw·(c_in/groups)·c_out.
int64_t ConvMacs(int64_t n, int64_t h_out, int64_t w_out, int64_t kh, int64_t kw, int64_t c_in,
                 int64_t c_out, int64_t groups);
// A depthwise k×k on c_in channels followed by a 1x1 from c_in to c_out: k²·c_in + c_in·c_out
// (no biases).
int64_t SeparableWeightCount(int64_t k, int64_t c_in, int64_t c_out);
// A fully connected layer from an h×w×c_in input to an h_out×w_out×c_out output:
// (h·w·c_in)·(h_out·w_out·c_out), plus h_out·w_out·c_out if with_bias.
int64_t DenseEquivalentParams(int64_t h, int64_t w, int64_t c_in, int64_t h_out, int64_t w_out,
                              int64_t c_out, bool with_bias);

}  // namespace convserve::engine
