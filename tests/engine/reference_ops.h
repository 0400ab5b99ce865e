// Naive plain-loop reference implementations of the ops the engine lowers to oneDNN: the
// oracle of the engine tests. They follow the ONNX operator definitions directly and share no
// code with the engine (not even its host ops or shape helpers), so that a bug in the engine's
// own arithmetic cannot hide in both. Accumulation is in double so that the reference is the
// more accurate side of every comparison.
//
// Layouts are ONNX's: activations NCHW row-major, convolution weights [M, C/group, kH, kW],
// Gemm operands row-major 2-D. Pads are in ONNX order {top, left, bottom, right}
// (x1_begin, x2_begin, x1_end, x2_end).
//
// Preconditions (shape consistency, a non-empty output, no pooling window that lies entirely
// in padding) are checked with assert-like aborts: the tests draw only valid configurations.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace convserve::engine::reference {

// A dense row-major float tensor.
struct RefTensor {
  std::vector<int64_t> dims;
  std::vector<float> data;

  RefTensor() = default;
  explicit RefTensor(std::vector<int64_t> d);  // zero-filled
  RefTensor(std::vector<int64_t> d, std::vector<float> values);
  int64_t size() const { return static_cast<int64_t>(data.size()); }
};

struct ConvParams {
  int64_t group = 1;
  std::array<int64_t, 2> strides = {1, 1};
  std::array<int64_t, 2> dilations = {1, 1};
  std::array<int64_t, 4> pads = {0, 0, 0, 0};  // top, left, bottom, right
  std::string ToString() const;
};

// ONNX Conv (2-D, explicit pads). x: [N, C, H, W]; w: [M, C/group, kH, kW]; bias: empty or [M].
// Output spatial size floor((in + pad_begin + pad_end - ((k - 1) * d + 1)) / s) + 1.
RefTensor Conv2d(const RefTensor& x, const RefTensor& w, const std::vector<float>& bias,
                 const ConvParams& params);

enum class PoolKind { kMax, kAverage };

struct PoolParams {
  PoolKind kind = PoolKind::kMax;
  std::array<int64_t, 2> kernel = {1, 1};
  std::array<int64_t, 2> strides = {1, 1};
  std::array<int64_t, 2> dilations = {1, 1};  // MaxPool only (AveragePool has none before opset 19)
  std::array<int64_t, 4> pads = {0, 0, 0, 0};  // top, left, bottom, right
  bool ceil_mode = false;
  bool count_include_pad = false;  // AveragePool only
  std::string ToString() const;
};

// Output length of one pooled axis. With ceil_mode the size is rounded up, and a last window
// that would start beyond the padded input's begin + in (that is, entirely in the end padding
// or the overhang) is dropped, as PyTorch does and the current ONNX reference does.
int64_t PoolOutputSize(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                       int64_t pad_begin, int64_t pad_end, bool ceil_mode);

// True if every window of the pooled axis covers at least one input element (false = some
// output would be the max/average of nothing, which ONNX leaves undefined).
bool EveryPoolWindowHitsInput(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                              int64_t pad_begin, int64_t pad_end, bool ceil_mode);

// ONNX MaxPool / AveragePool (2-D, explicit pads). Max ignores padding. Average divides by the
// number of taps inside the input, or with count_include_pad by the number of taps inside the
// explicitly padded input (the ceil_mode overhang beyond the end padding never counts).
RefTensor Pool2d(const RefTensor& x, const PoolParams& params);

// ONNX GlobalAveragePool / GlobalMaxPool: [N, C, H, W] -> [N, C, 1, 1].
RefTensor GlobalPool2d(const RefTensor& x, PoolKind kind);

// ONNX Gemm: Y = alpha * A' * B' + beta * C, A' = transA ? A^T : A, B' likewise. A' is [M, K],
// B' is [K, N]; c (optional: empty dims and data = absent) broadcasts unidirectionally to
// [M, N] (scalar, [N], [1, N], [M, 1], [M, N]).
RefTensor Gemm(const RefTensor& a, const RefTensor& b, const RefTensor* c, float alpha, float beta,
               bool trans_a, bool trans_b);

// ONNX BatchNormalization in inference mode over channel axis 1:
// y = scale * (x - mean) / sqrt(var + epsilon) + shift.
RefTensor BatchNorm(const RefTensor& x, const std::vector<float>& scale,
                    const std::vector<float>& shift, const std::vector<float>& mean,
                    const std::vector<float>& var, float epsilon);

RefTensor Relu(const RefTensor& x);
RefTensor Clip(const RefTensor& x, float min_value, float max_value);
RefTensor Add(const RefTensor& a, const RefTensor& b);  // same dims only

}  // namespace convserve::engine::reference
