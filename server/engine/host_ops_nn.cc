// Convnet layers on the host: MatMul, Gemm, BatchNormalization, MaxPool/AveragePool (1-D to
// 3-D, with MaxPool's Indices), GlobalAveragePool/GlobalMaxPool, and a naive Conv that serves as
// the fallback for configurations oneDNN does not take and as a check of the oneDNN path.
#include <algorithm>
#include <cmath>
#include <limits>

#include "server/common/status.h"
#include "server/engine/host_ops_internal.h"

namespace convserve::engine::host::internal {
namespace {

absl::Status RequireFloat(const Node& node, std::span<const Arg> args) {
  for (size_t i = 0; i < args.size(); ++i) {
    RETURN_IF_ERROR(RequireType(node, args, i, {DataType::kFloat32}));
  }
  return absl::OkStatus();
}

bool DimsMatch(int64_t a, int64_t b) { return a == b || a == kUnknownDim || b == kUnknownDim; }

// ---- MatMul ----

struct MatMulParams {
  Dims dims;              // output dims
  Dims batch;             // broadcast batch dims
  Dims a_batch, b_batch;  // operand batch dims
  int64_t m = 1, k = 1, n = 1;
};

absl::StatusOr<MatMulParams> PrepareMatMul(const Node& node, const Dims& a, const Dims& b) {
  if (a.empty() || b.empty()) {
    return InvalidArgument(node, "operands must have rank >= 1, got ", DimsToString(a), " and ",
                           DimsToString(b));
  }
  // numpy: a 1-D left operand is a row [1, K], a 1-D right operand a column [K, 1]; the
  // added dim is removed from the result.
  const Dims a2 = a.size() == 1 ? Dims{1, a[0]} : a;
  const Dims b2 = b.size() == 1 ? Dims{b[0], 1} : b;
  MatMulParams p;
  p.m = a2[a2.size() - 2];
  p.k = a2[a2.size() - 1];
  p.n = b2[b2.size() - 1];
  if (!DimsMatch(p.k, b2[b2.size() - 2])) {
    return InvalidArgument(node, "inner dims of ", DimsToString(a), " and ", DimsToString(b),
                           " differ");
  }
  p.a_batch.assign(a2.begin(), a2.end() - 2);
  p.b_batch.assign(b2.begin(), b2.end() - 2);
  absl::StatusOr<Dims> batch = BroadcastDims(node, p.a_batch, p.b_batch);
  if (!batch.ok()) {
    return InvalidArgument(node, "batch dims of ", DimsToString(a), " and ", DimsToString(b),
                           " are not broadcast-compatible");
  }
  p.batch = *batch;
  p.dims = p.batch;
  if (a.size() > 1) p.dims.push_back(p.m);
  if (b.size() > 1) p.dims.push_back(p.n);
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferMatMul(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 1));
  ASSIGN_OR_RETURN(MatMulParams p, PrepareMatMul(node, args[0].dims, args[1].dims));
  return Single(args[0].dtype, std::move(p.dims));
}

absl::Status EvalMatMul(const Node& node, std::span<const Arg> args,
                        std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const MatMulParams p, PrepareMatMul(node, args[0].dims, args[1].dims));
  std::vector<int64_t> a_strides = BroadcastStrides(p.a_batch, p.batch);
  std::vector<int64_t> b_strides = BroadcastStrides(p.b_batch, p.batch);
  for (int64_t& s : a_strides) s *= p.m * p.k;
  for (int64_t& s : b_strides) s *= p.k * p.n;
  const float* a = args[0].values<float>();
  const float* b = args[1].values<float>();
  float* y = static_cast<float*>(outputs[0].data);
  std::fill(y, y + NumElements(outputs[0].dims), 0.0f);
  float* c = y;
  ForEachStrided<2>(p.batch, {a_strides.data(), b_strides.data()}, {0, 0},
                    [&](const std::array<int64_t, 2>& off) {
                      const float* am = a + off[0];
                      const float* bm = b + off[1];
                      for (int64_t i = 0; i < p.m; ++i) {
                        for (int64_t kk = 0; kk < p.k; ++kk) {
                          const float aik = am[i * p.k + kk];
                          const float* brow = bm + kk * p.n;
                          float* crow = c + i * p.n;
                          for (int64_t j = 0; j < p.n; ++j) crow[j] += aik * brow[j];
                        }
                      }
                      c += p.m * p.n;
                    });
  return absl::OkStatus();
}

// ---- Gemm ----

struct GemmParams {
  int64_t m, k, n;
  bool trans_a, trans_b;
};

absl::StatusOr<GemmParams> PrepareGemm(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 3));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 2));
  const Dims& a = args[0].dims;
  const Dims& b = args[1].dims;
  if (a.size() != 2 || b.size() != 2) {
    return InvalidArgument(node, "A ", DimsToString(a), " and B ", DimsToString(b), " must be 2-D");
  }
  GemmParams p;
  p.trans_a = node.GetInt("transA", 0) != 0;
  p.trans_b = node.GetInt("transB", 0) != 0;
  p.m = p.trans_a ? a[1] : a[0];
  p.k = p.trans_a ? a[0] : a[1];
  const int64_t kb = p.trans_b ? b[1] : b[0];
  p.n = p.trans_b ? b[0] : b[1];
  if (!DimsMatch(p.k, kb)) {
    return InvalidArgument(node, "inner dims of A ", DimsToString(a), " and B ", DimsToString(b),
                           " differ (transA=", p.trans_a, ", transB=", p.trans_b, ")");
  }
  if (const Arg* c = Optional(args, 2)) {
    const Dims mn = {p.m, p.n};
    absl::StatusOr<Dims> broadcast = BroadcastDims(node, c->dims, mn);
    if (!broadcast.ok() || *broadcast != mn) {
      return InvalidArgument(node, "C ", DimsToString(c->dims), " does not broadcast to ",
                             DimsToString(mn));
    }
  }
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferGemm(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(const GemmParams p, PrepareGemm(node, args));
  return Single(args[0].dtype, {p.m, p.n});
}

absl::Status EvalGemm(const Node& node, std::span<const Arg> args,
                      std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const GemmParams p, PrepareGemm(node, args));
  const float alpha = node.GetFloat("alpha", 1.0f);
  const float beta = node.GetFloat("beta", 1.0f);
  const float* a = args[0].values<float>();
  const float* b = args[1].values<float>();
  float* y = static_cast<float*>(outputs[0].data);
  // Element strides of op(A)[i][k] and op(B)[k][j].
  const int64_t a_si = p.trans_a ? 1 : p.k, a_sk = p.trans_a ? p.m : 1;
  const int64_t b_sk = p.trans_b ? 1 : p.n, b_sj = p.trans_b ? p.k : 1;
  std::fill(y, y + p.m * p.n, 0.0f);
  for (int64_t i = 0; i < p.m; ++i) {
    float* row = y + i * p.n;
    for (int64_t kk = 0; kk < p.k; ++kk) {
      const float aik = a[i * a_si + kk * a_sk];
      const float* bk = b + kk * b_sk;
      for (int64_t j = 0; j < p.n; ++j) row[j] += aik * bk[j * b_sj];
    }
  }
  for (int64_t i = 0; i < p.m * p.n; ++i) y[i] *= alpha;
  if (const Arg* c = Optional(args, 2)) {
    const Dims mn = {p.m, p.n};
    const std::vector<int64_t> c_strides = BroadcastStrides(c->dims, mn);
    const float* cv = c->values<float>();
    int64_t o = 0;
    ForEachStrided<1>(mn, {c_strides.data()}, {0},
                      [&](const std::array<int64_t, 1>& off) { y[o++] += beta * cv[off[0]]; });
  }
  return absl::OkStatus();
}

// ---- BatchNormalization ----

absl::StatusOr<std::vector<ValueInfo>> InferBatchNorm(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 5, 5));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 4));
  if (node.GetInt("training_mode", 0) != 0) {
    return Unimplemented(node, "training_mode = 1 is not supported");
  }
  const Dims& x = args[0].dims;
  if (x.size() < 2) return InvalidArgument(node, "X ", DimsToString(x), " must have rank >= 2");
  static constexpr const char* kNames[] = {"", "scale", "B", "input_mean", "input_var"};
  for (size_t i = 1; i < 5; ++i) {
    if (args[i].dims.size() != 1 || !DimsMatch(args[i].dims[0], x[1])) {
      return InvalidArgument(node, kNames[i], " ", DimsToString(args[i].dims),
                             " must be [C] for X ", DimsToString(x));
    }
  }
  return Single(args[0].dtype, x);
}

absl::Status EvalBatchNorm(const Node& node, std::span<const Arg> args,
                           std::span<const TensorView> outputs) {
  const Dims& dims = args[0].dims;
  const float epsilon = node.GetFloat("epsilon", 1e-5f);
  const int64_t channels = dims[1];
  const int64_t inner = KnownProduct(dims, 2, dims.size());
  const int64_t batch = dims[0];
  const float* x = args[0].values<float>();
  const float* scale = args[1].values<float>();
  const float* bias = args[2].values<float>();
  const float* mean = args[3].values<float>();
  const float* var = args[4].values<float>();
  float* y = static_cast<float*>(outputs[0].data);
  for (int64_t c = 0; c < channels; ++c) {
    const float s = scale[c] / std::sqrt(var[c] + epsilon);
    const float shift = bias[c] - mean[c] * s;
    for (int64_t n = 0; n < batch; ++n) {
      const int64_t base = (n * channels + c) * inner;
      for (int64_t i = 0; i < inner; ++i) y[base + i] = x[base + i] * s + shift;
    }
  }
  return absl::OkStatus();
}

// ---- sliding windows in 3-D form ----

// A 1-D to 3-D window geometry with leading unit spatial dims added, so one loop nest serves all.
struct Window3 {
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad_begin[3] = {0, 0, 0};
  int64_t pad_end[3] = {0, 0, 0};
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
};

Window3 To3D(const WindowGeometry& g, const Dims& input_spatial) {
  Window3 w;
  const size_t offset = 3 - input_spatial.size();
  for (size_t i = 0; i < input_spatial.size(); ++i) {
    w.in[offset + i] = input_spatial[i];
    w.out[offset + i] = g.output[i];
    w.kernel[offset + i] = g.kernel[i];
    w.stride[offset + i] = g.strides[i];
    w.dilation[offset + i] = g.dilations[i];
    w.pad_begin[offset + i] = g.pad_begin[i];
    w.pad_end[offset + i] = g.pad_end[i];
  }
  return w;
}

absl::Status CheckSpatialRank(const Node& node, const Dims& x) {
  if (x.size() < 3 || x.size() > 5) {
    return InvalidArgument(node, "X ", DimsToString(x),
                           " must be (N, C, D1[, D2[, D3]]) with 1 to 3 spatial dims");
  }
  return absl::OkStatus();
}

// ---- MaxPool, AveragePool ----

struct PoolParams {
  WindowGeometry geometry;
  Dims dims;  // output dims
};

absl::StatusOr<PoolParams> PreparePool(const Node& node, std::span<const Arg> args) {
  const bool is_max = node.op_type == "MaxPool";
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1, is_max ? 2 : 1));
  const Dims& x = args[0].dims;
  RETURN_IF_ERROR(CheckSpatialRank(node, x));
  if (!node.HasAttribute("kernel_shape")) {
    return InvalidArgument(node, "attribute 'kernel_shape' is required");
  }
  if (is_max && node.GetInt("storage_order", 0) != 0 && node.GetInt("storage_order", 0) != 1) {
    return InvalidArgument(node, "storage_order must be 0 or 1");
  }
  const Dims spatial(x.begin() + 2, x.end());
  PoolParams p;
  ASSIGN_OR_RETURN(p.geometry,
                   ComputeWindowGeometry(node, spatial, node.GetInts("kernel_shape"), true));
  p.dims = {x[0], x[1]};
  p.dims.insert(p.dims.end(), p.geometry.output.begin(), p.geometry.output.end());
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferPool(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(PoolParams p, PreparePool(node, args));
  std::vector<ValueInfo> outputs = Single(args[0].dtype, p.dims);
  if (node.outputs.size() > 1) outputs.push_back({"", DataType::kInt64, p.dims});
  return outputs;
}

absl::Status CheckPool(const Node& node, std::span<const Arg> args) {
  if (node.op_type == "MaxPool") {
    return RequireType(node, args, 0, {DataType::kFloat32, DataType::kUint8, DataType::kInt8});
  }
  return RequireType(node, args, 0, {DataType::kFloat32});
}

// Taps k in [0, kernel) of a window starting at `start` sit at start + k * dilation; returns
// [first, last) of the taps whose position is in [lo, hi).
std::pair<int64_t, int64_t> TapRange(int64_t start, int64_t kernel, int64_t dilation, int64_t lo,
                                     int64_t hi) {
  int64_t first = start < lo ? (lo - start + dilation - 1) / dilation : 0;
  int64_t last = hi > start ? (hi - start - 1) / dilation + 1 : 0;
  first = std::min(first, kernel);
  last = std::clamp(last, first, kernel);
  return {first, last};
}

template <typename T>
void MaxPool(const Window3& w, int64_t planes, bool column_major, const T* x, T* y,
             int64_t* indices) {
  const int64_t in_size = w.in_size();
  int64_t o = 0;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* xp = x + plane * in_size;
    for (int64_t o0 = 0; o0 < w.out[0]; ++o0) {
      const int64_t s0 = o0 * w.stride[0] - w.pad_begin[0];
      const auto [a0, b0] = TapRange(s0, w.kernel[0], w.dilation[0], 0, w.in[0]);
      for (int64_t o1 = 0; o1 < w.out[1]; ++o1) {
        const int64_t s1 = o1 * w.stride[1] - w.pad_begin[1];
        const auto [a1, b1] = TapRange(s1, w.kernel[1], w.dilation[1], 0, w.in[1]);
        for (int64_t o2 = 0; o2 < w.out[2]; ++o2, ++o) {
          const int64_t s2 = o2 * w.stride[2] - w.pad_begin[2];
          const auto [a2, b2] = TapRange(s2, w.kernel[2], w.dilation[2], 0, w.in[2]);
          T best = std::numeric_limits<T>::lowest();
          int64_t best_index = -1;
          for (int64_t k0 = a0; k0 < b0; ++k0) {
            const int64_t p0 = s0 + k0 * w.dilation[0];
            for (int64_t k1 = a1; k1 < b1; ++k1) {
              const int64_t p1 = s1 + k1 * w.dilation[1];
              for (int64_t k2 = a2; k2 < b2; ++k2) {
                const int64_t p2 = s2 + k2 * w.dilation[2];
                const int64_t i = (p0 * w.in[1] + p1) * w.in[2] + p2;
                if (best_index < 0 || xp[i] > best) {
                  best = xp[i];
                  best_index = column_major ? p0 + (p1 + p2 * w.in[1]) * w.in[0] : i;
                }
              }
            }
          }
          y[o] = best;
          if (indices != nullptr) {
            indices[o] = best_index < 0 ? -1 : plane * in_size + best_index;
          }
        }
      }
    }
  }
}

// With count_include_pad the divisor counts the taps inside the padded input (the ceil-mode
// overhang past the end padding does not count), otherwise the taps inside the input.
void AveragePool(const Window3& w, int64_t planes, bool count_include_pad, const float* x,
                 float* y) {
  const int64_t in_size = w.in_size();
  int64_t o = 0;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* xp = x + plane * in_size;
    for (int64_t o0 = 0; o0 < w.out[0]; ++o0) {
      const int64_t s0 = o0 * w.stride[0] - w.pad_begin[0];
      const auto [a0, b0] = TapRange(s0, w.kernel[0], w.dilation[0], 0, w.in[0]);
      const auto [pa0, pb0] =
          TapRange(s0, w.kernel[0], w.dilation[0], -w.pad_begin[0], w.in[0] + w.pad_end[0]);
      for (int64_t o1 = 0; o1 < w.out[1]; ++o1) {
        const int64_t s1 = o1 * w.stride[1] - w.pad_begin[1];
        const auto [a1, b1] = TapRange(s1, w.kernel[1], w.dilation[1], 0, w.in[1]);
        const auto [pa1, pb1] =
            TapRange(s1, w.kernel[1], w.dilation[1], -w.pad_begin[1], w.in[1] + w.pad_end[1]);
        for (int64_t o2 = 0; o2 < w.out[2]; ++o2, ++o) {
          const int64_t s2 = o2 * w.stride[2] - w.pad_begin[2];
          const auto [a2, b2] = TapRange(s2, w.kernel[2], w.dilation[2], 0, w.in[2]);
          const auto [pa2, pb2] =
              TapRange(s2, w.kernel[2], w.dilation[2], -w.pad_begin[2], w.in[2] + w.pad_end[2]);
          double sum = 0.0;
          for (int64_t k0 = a0; k0 < b0; ++k0) {
            const int64_t p0 = s0 + k0 * w.dilation[0];
            for (int64_t k1 = a1; k1 < b1; ++k1) {
              const int64_t p1 = s1 + k1 * w.dilation[1];
              for (int64_t k2 = a2; k2 < b2; ++k2) {
                sum += xp[(p0 * w.in[1] + p1) * w.in[2] + s2 + k2 * w.dilation[2]];
              }
            }
          }
          const int64_t count = count_include_pad ? (pb0 - pa0) * (pb1 - pa1) * (pb2 - pa2)
                                                  : (b0 - a0) * (b1 - a1) * (b2 - a2);
          y[o] = count > 0 ? static_cast<float>(sum / static_cast<double>(count))
                           : std::numeric_limits<float>::quiet_NaN();
        }
      }
    }
  }
}

absl::Status EvalPool(const Node& node, std::span<const Arg> args,
                      std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const PoolParams p, PreparePool(node, args));
  const Dims& x = args[0].dims;
  const Window3 w = To3D(p.geometry, Dims(x.begin() + 2, x.end()));
  const int64_t planes = x[0] * x[1];
  if (node.op_type == "AveragePool") {
    AveragePool(w, planes, node.GetInt("count_include_pad", 0) != 0, args[0].values<float>(),
                static_cast<float*>(outputs[0].data));
    return absl::OkStatus();
  }
  int64_t* indices = outputs.size() > 1 ? static_cast<int64_t*>(outputs[1].data) : nullptr;
  const bool column_major = node.GetInt("storage_order", 0) == 1;
  switch (args[0].dtype) {
    case DataType::kUint8:
      MaxPool(w, planes, column_major, args[0].values<uint8_t>(),
              static_cast<uint8_t*>(outputs[0].data), indices);
      break;
    case DataType::kInt8:
      MaxPool(w, planes, column_major, args[0].values<int8_t>(),
              static_cast<int8_t*>(outputs[0].data), indices);
      break;
    default:
      MaxPool(w, planes, column_major, args[0].values<float>(),
              static_cast<float*>(outputs[0].data), indices);
      break;
  }
  return absl::OkStatus();
}

// ---- GlobalAveragePool, GlobalMaxPool ----

absl::StatusOr<std::vector<ValueInfo>> InferGlobalPool(const Node& node,
                                                       std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  const Dims& x = args[0].dims;
  if (x.size() < 2) return InvalidArgument(node, "X ", DimsToString(x), " must have rank >= 2");
  Dims dims(x.size(), 1);
  dims[0] = x[0];
  dims[1] = x[1];
  return Single(args[0].dtype, std::move(dims));
}

absl::Status CheckGlobalPool(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, {DataType::kFloat32});
}

absl::Status EvalGlobalPool(const Node& node, std::span<const Arg> args,
                            std::span<const TensorView> outputs) {
  const Dims& x = args[0].dims;
  const int64_t planes = x[0] * x[1];
  const int64_t size = KnownProduct(x, 2, x.size());
  const bool is_max = node.op_type == "GlobalMaxPool";
  const float* in = args[0].values<float>();
  float* y = static_cast<float*>(outputs[0].data);
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* xp = in + plane * size;
    if (is_max) {
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < size; ++i) best = std::max(best, xp[i]);
      y[plane] = best;
    } else {
      double sum = 0.0;
      for (int64_t i = 0; i < size; ++i) sum += xp[i];
      y[plane] = static_cast<float>(sum / static_cast<double>(size));
    }
  }
  return absl::OkStatus();
}

// ---- Conv ----

struct ConvParams {
  WindowGeometry geometry;
  Dims dims;  // output dims
  int64_t group;
};

absl::StatusOr<ConvParams> PrepareConv(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 3));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 2));
  const Dims& x = args[0].dims;
  const Dims& w = args[1].dims;
  RETURN_IF_ERROR(CheckSpatialRank(node, x));
  if (w.size() != x.size() || !AllKnown(w)) {
    return InvalidArgument(node, "W ", DimsToString(w), " must be (M, C/group, k...) for X ",
                           DimsToString(x));
  }
  ConvParams p;
  p.group = node.GetInt("group", 1);
  const int64_t channels = x[1];
  if (p.group < 1 || w[0] % p.group != 0 ||
      (channels != kUnknownDim && (channels % p.group != 0 || w[1] != channels / p.group))) {
    return InvalidArgument(node, "W ", DimsToString(w), " does not match X ", DimsToString(x),
                           " with group ", p.group);
  }
  const std::vector<int64_t> kernel(w.begin() + 2, w.end());
  if (node.HasAttribute("kernel_shape") && node.GetInts("kernel_shape") != kernel) {
    return InvalidArgument(node, "kernel_shape ", DimsToString(node.GetInts("kernel_shape")),
                           " does not match W ", DimsToString(w));
  }
  if (const Arg* bias = Optional(args, 2)) {
    if (bias->dims != Dims{w[0]}) {
      return InvalidArgument(node, "B ", DimsToString(bias->dims), " must be [", w[0], "]");
    }
  }
  ASSIGN_OR_RETURN(p.geometry,
                   ComputeWindowGeometry(node, Dims(x.begin() + 2, x.end()), kernel, false));
  p.dims = {x[0], w[0]};
  p.dims.insert(p.dims.end(), p.geometry.output.begin(), p.geometry.output.end());
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferConv(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(ConvParams p, PrepareConv(node, args));
  return Single(args[0].dtype, std::move(p.dims));
}

absl::Status EvalConv(const Node& node, std::span<const Arg> args,
                      std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const ConvParams p, PrepareConv(node, args));
  const Dims& xd = args[0].dims;
  const Dims& wd = args[1].dims;
  const Window3 w = To3D(p.geometry, Dims(xd.begin() + 2, xd.end()));
  const int64_t batch = xd[0], channels = xd[1], filters = wd[0];
  const int64_t group_channels = channels / p.group;
  const int64_t group_filters = filters / p.group;
  const int64_t in_size = w.in_size();
  const int64_t kernel_size = w.kernel[0] * w.kernel[1] * w.kernel[2];
  const float* x = args[0].values<float>();
  const float* weights = args[1].values<float>();
  const Arg* bias_arg = Optional(args, 2);
  const float* bias = bias_arg != nullptr ? bias_arg->values<float>() : nullptr;
  float* y = static_cast<float*>(outputs[0].data);
  int64_t o = 0;
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t m = 0; m < filters; ++m) {
      const int64_t g = m / group_filters;
      const float* xg = x + (n * channels + g * group_channels) * in_size;
      const float* wm = weights + m * group_channels * kernel_size;
      for (int64_t o0 = 0; o0 < w.out[0]; ++o0) {
        const int64_t s0 = o0 * w.stride[0] - w.pad_begin[0];
        const auto [a0, b0] = TapRange(s0, w.kernel[0], w.dilation[0], 0, w.in[0]);
        for (int64_t o1 = 0; o1 < w.out[1]; ++o1) {
          const int64_t s1 = o1 * w.stride[1] - w.pad_begin[1];
          const auto [a1, b1] = TapRange(s1, w.kernel[1], w.dilation[1], 0, w.in[1]);
          for (int64_t o2 = 0; o2 < w.out[2]; ++o2, ++o) {
            const int64_t s2 = o2 * w.stride[2] - w.pad_begin[2];
            const auto [a2, b2] = TapRange(s2, w.kernel[2], w.dilation[2], 0, w.in[2]);
            double sum = bias != nullptr ? bias[m] : 0.0;
            for (int64_t c = 0; c < group_channels; ++c) {
              const float* xc = xg + c * in_size;
              const float* wc = wm + c * kernel_size;
              for (int64_t k0 = a0; k0 < b0; ++k0) {
                const int64_t p0 = s0 + k0 * w.dilation[0];
                for (int64_t k1 = a1; k1 < b1; ++k1) {
                  const int64_t p1 = s1 + k1 * w.dilation[1];
                  const float* xrow = xc + (p0 * w.in[1] + p1) * w.in[2];
                  const float* wrow = wc + (k0 * w.kernel[1] + k1) * w.kernel[2];
                  for (int64_t k2 = a2; k2 < b2; ++k2) {
                    sum += static_cast<double>(xrow[s2 + k2 * w.dilation[2]]) * wrow[k2];
                  }
                }
              }
            }
            y[o] = static_cast<float>(sum);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

const OpKernels kMatMulOp = {InferMatMul, RequireFloat, EvalMatMul};
const OpKernels kGemmOp = {InferGemm, RequireFloat, EvalGemm};
const OpKernels kBatchNormOp = {InferBatchNorm, RequireFloat, EvalBatchNorm};
const OpKernels kPoolOp = {InferPool, CheckPool, EvalPool};
const OpKernels kGlobalPoolOp = {InferGlobalPool, CheckGlobalPool, EvalGlobalPool};
const OpKernels kConvOp = {InferConv, RequireFloat, EvalConv};

}  // namespace convserve::engine::host::internal
