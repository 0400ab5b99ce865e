// Private to the host_ops*.cc files: the per-op kernel interface, the registry's entries and the
// shared shape/stride helpers. Not part of the engine's API.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/engine/graph.h"
#include "server/engine/tensor.h"

namespace convserve::engine::host::internal {

// One input of a node as an op sees it, both at inference (values known only for constants) and
// at evaluation (values always known).
struct Arg {
  DataType dtype = DataType::kUndefined;  // kUndefined: absent optional input
  Dims dims;
  const void* data = nullptr;  // the values when known

  bool present() const { return dtype != DataType::kUndefined; }
  bool known() const { return data != nullptr || (present() && num_elements() == 0); }
  int64_t num_elements() const { return NumElements(dims); }
  template <typename T>
  const T* values() const {
    return static_cast<const T*>(data);
  }
};

// The three phases of an op. `infer` validates inputs and attributes and returns one entry per
// node output (names are filled by the caller). `check` says whether `eval` supports the input
// types (UNIMPLEMENTED naming the type when not). `eval` runs on known inputs; the caller has
// checked that the output views have the inferred dtypes and dims.
using InferFn = absl::StatusOr<std::vector<ValueInfo>> (*)(const Node&, std::span<const Arg>);
using CheckFn = absl::Status (*)(const Node&, std::span<const Arg>);
using EvalFn = absl::Status (*)(const Node&, std::span<const Arg>, std::span<const TensorView>);
struct OpKernels {
  InferFn infer;
  CheckFn check;
  EvalFn eval;
};

// Op families, one per group of ops sharing their kernels (the op reads node.op_type).
// host_ops_elementwise.cc
extern const OpKernels kUnaryOp;    // Neg, Abs, Sqrt, Exp, ..., activations
extern const OpKernels kBinaryOp;   // Add, Sub, Mul, Div, Pow
extern const OpKernels kCompareOp;  // Equal, Less, Greater
extern const OpKernels kNotOp;
extern const OpKernels kWhereOp;
extern const OpKernels kVariadicOp;  // Min, Max, Sum, Mean
extern const OpKernels kClipOp;
extern const OpKernels kPReluOp;
extern const OpKernels kCastOp;
// host_ops_shape.cc
extern const OpKernels kIdentityOp;  // Identity, Dropout
extern const OpKernels kShapeOp;
extern const OpKernels kSizeOp;
extern const OpKernels kGatherOp;
extern const OpKernels kConstantOfShapeOp;
extern const OpKernels kRangeOp;
extern const OpKernels kUnsqueezeOp;
extern const OpKernels kSqueezeOp;
extern const OpKernels kConcatOp;
extern const OpKernels kReshapeOp;
extern const OpKernels kFlattenOp;
extern const OpKernels kTransposeOp;
extern const OpKernels kSliceOp;
extern const OpKernels kSplitOp;
extern const OpKernels kPadOp;
extern const OpKernels kExpandOp;
extern const OpKernels kTileOp;
// host_ops_reduce.cc
extern const OpKernels kReduceOp;   // ReduceMean, ReduceMax, ReduceMin, ReduceSum, ReduceProd
extern const OpKernels kSoftmaxOp;  // Softmax, LogSoftmax
// host_ops_nn.cc
extern const OpKernels kMatMulOp;
extern const OpKernels kGemmOp;
extern const OpKernels kBatchNormOp;
extern const OpKernels kPoolOp;        // MaxPool, AveragePool
extern const OpKernels kGlobalPoolOp;  // GlobalAveragePool, GlobalMaxPool
extern const OpKernels kConvOp;

// ---- errors ("node 'NAME' (OP): ...") ----

std::string NodeLabel(const Node& node);
// DataTypeName as a std::string (absl::StrCat may not take std::string_view).
inline std::string TypeName(DataType dtype) { return std::string(DataTypeName(dtype)); }

template <typename... Parts>
absl::Status InvalidArgument(const Node& node, const Parts&... parts) {
  return absl::InvalidArgumentError(absl::StrCat(NodeLabel(node), ": ", parts...));
}
template <typename... Parts>
absl::Status Unimplemented(const Node& node, const Parts&... parts) {
  return absl::UnimplementedError(absl::StrCat(NodeLabel(node), ": ", parts...));
}

// ---- inputs, outputs, attributes ----

// Checks the node has between `min_inputs` and `max_inputs` inputs, that the first
// `min_inputs` are present, and that it has between 1 and `max_outputs` outputs.
absl::Status CheckArity(const Node& node, std::span<const Arg> args, size_t min_inputs,
                        size_t max_inputs, size_t max_outputs = 1);

// The optional input `i`, or nullptr when absent (or beyond the inputs given).
const Arg* Optional(std::span<const Arg> args, size_t i);

// UNIMPLEMENTED "data type X of input i is not supported" unless args[i] has one of `allowed`.
absl::Status RequireType(const Node& node, std::span<const Arg> args, size_t i,
                         std::initializer_list<DataType> allowed);
// INVALID_ARGUMENT unless all present inputs in [first, last] share args[first]'s dtype.
absl::Status RequireSameType(const Node& node, std::span<const Arg> args, size_t first,
                             size_t last);

// The values of an integer (int32/int64) input that the output shape depends on.
// UNIMPLEMENTED "requires a constant '<name>' input" when not known.
absl::StatusOr<std::vector<int64_t>> ShapeLikeInput(const Node& node, const Arg& arg,
                                                    const std::string& name);

// Element `i` of a known numeric input converted to double / int64.
double ValueAsDouble(const Arg& arg, int64_t i);
int64_t ValueAsInt64(const Arg& arg, int64_t i);

// Axis in [-rank, rank) normalised to [0, rank); INVALID_ARGUMENT otherwise.
absl::StatusOr<int64_t> NormalizeAxis(const Node& node, int64_t axis, int64_t rank,
                                      const std::string& what = "axis");

// Sorted, unique, normalised axes; INVALID_ARGUMENT for out-of-range or repeated axes.
absl::StatusOr<std::vector<int64_t>> NormalizeAxes(const Node& node,
                                                   const std::vector<int64_t>& axes, int64_t rank);

// One output of the given type and dims.
std::vector<ValueInfo> Single(DataType dtype, Dims dims);

// ---- dims and strides ----

// Dims of -1 are unknown (symbolic). Unknown-aware product: -1 when any factor is unknown.
constexpr int64_t kUnknownDim = -1;
int64_t KnownProduct(const Dims& dims, size_t begin, size_t end);
bool AllKnown(const Dims& dims);

// Numpy multidirectional broadcast of a and b; INVALID_ARGUMENT naming both shapes.
absl::StatusOr<Dims> BroadcastDims(const Node& node, const Dims& a, const Dims& b);

// Row-major strides of dims (in elements).
std::vector<int64_t> ContiguousStrides(const Dims& dims);
// Strides of `in` read as a tensor of dims `out` (in right-aligned, broadcast dims stride 0).
std::vector<int64_t> BroadcastStrides(const Dims& in, const Dims& out);

// Visits every index of `dims` in row-major order, calling fn(offsets) where offsets[k] is the
// element offset of operand k: base[k] + sum(index[d] * strides[k][d]). O(1) per element.
template <size_t N, typename Fn>
void ForEachStrided(const Dims& dims, const std::array<const int64_t*, N>& strides,
                    std::array<int64_t, N> base, Fn&& fn) {
  for (int64_t d : dims) {
    if (d <= 0) return;
  }
  const size_t rank = dims.size();
  if (rank == 0) {
    fn(static_cast<const std::array<int64_t, N>&>(base));
    return;
  }
  std::array<int64_t, N> inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = strides[k][rank - 1];
  const int64_t inner = dims[rank - 1];
  std::vector<int64_t> index(rank, 0);
  while (true) {
    std::array<int64_t, N> offsets = base;
    for (int64_t i = 0; i < inner; ++i) {
      fn(static_cast<const std::array<int64_t, N>&>(offsets));
      for (size_t k = 0; k < N; ++k) offsets[k] += inner_stride[k];
    }
    int64_t d = static_cast<int64_t>(rank) - 2;
    for (; d >= 0; --d) {
      for (size_t k = 0; k < N; ++k) base[k] += strides[k][d];
      if (++index[d] < dims[d]) break;
      for (size_t k = 0; k < N; ++k) base[k] -= strides[k][d] * dims[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

// Unsigned word of the given byte size, for dtype-agnostic data movement.
template <size_t kBytes>
struct WordOf;
template <>
struct WordOf<1> {
  using type = uint8_t;
};
template <>
struct WordOf<2> {
  using type = uint16_t;
};
template <>
struct WordOf<4> {
  using type = uint32_t;
};
template <>
struct WordOf<8> {
  using type = uint64_t;
};

// Calls fn(Word{}) with the unsigned word type of `element_size` bytes (1, 2, 4 or 8).
template <typename Fn>
void VisitWord(size_t element_size, Fn&& fn) {
  switch (element_size) {
    case 1:
      fn(uint8_t{});
      break;
    case 2:
      fn(uint16_t{});
      break;
    case 4:
      fn(uint32_t{});
      break;
    default:
      fn(uint64_t{});
      break;
  }
}

// dst[dst_base + sum(i*dst_strides)] = src[src_base + sum(i*src_strides)] over `dims`, for
// elements of `element_size` bytes. Strides may be 0 (broadcast) or negative.
void CopyStrided(size_t element_size, const Dims& dims, const void* src, int64_t src_base,
                 const int64_t* src_strides, void* dst, int64_t dst_base,
                 const int64_t* dst_strides);

// Type tags for dispatch on element types.
template <typename T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<T>{}) for float32, int32 or int64 and returns its status; UNIMPLEMENTED otherwise.
template <typename Fn>
absl::Status VisitNumeric(const Node& node, DataType dtype, Fn&& fn) {
  switch (dtype) {
    case DataType::kFloat32:
      return fn(Tag<float>{});
    case DataType::kInt32:
      return fn(Tag<int32_t>{});
    case DataType::kInt64:
      return fn(Tag<int64_t>{});
    default:
      return Unimplemented(node, "data type ", DataTypeName(dtype), " is not supported");
  }
}

// ---- sliding windows (pools and convolutions) ----

struct WindowGeometry {
  Dims output;  // output spatial dims
  std::vector<int64_t> pad_begin, pad_end;
  std::vector<int64_t> kernel, strides, dilations;
};

// Output spatial dims and effective pads from the ONNX attributes (kernel_shape, strides, pads,
// dilations, auto_pad, ceil_mode) for the given input spatial dims. Unknown input dims give
// unknown output dims. In ceil mode a last window that would start in the end padding is dropped.
absl::StatusOr<WindowGeometry> ComputeWindowGeometry(const Node& node, const Dims& input_spatial,
                                                     const std::vector<int64_t>& kernel,
                                                     bool allow_ceil_mode);

// Float <-> IEEE half and bfloat16 with round-to-nearest-even (host_ops_elementwise.cc).
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);
float BFloat16ToFloat(uint16_t bits);

}  // namespace convserve::engine::host::internal
