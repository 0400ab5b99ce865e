// Reductions (ReduceMean/Max/Min/Sum/Prod) and Softmax/LogSoftmax on the host.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "server/common/status.h"
#include "server/engine/host_ops_internal.h"

namespace convserve::engine::host::internal {
namespace {

// ---- Reduce* ----

struct ReduceParams {
  Dims dims;                  // output dims (keepdims applied)
  std::vector<bool> reduced;  // per input dim
  bool noop = false;          // empty axes with noop_with_empty_axes: output = input
};

absl::StatusOr<ReduceParams> PrepareReduce(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 2));
  const Dims& in = args[0].dims;
  // Axes are an input for ReduceSum (opset 13) and every Reduce* from opset 18, an attribute
  // before; accept either.
  std::vector<int64_t> axes = node.GetInts("axes");
  if (const Arg* axes_input = Optional(args, 1)) {
    ASSIGN_OR_RETURN(axes, ShapeLikeInput(node, *axes_input, "axes"));
  }
  ReduceParams p;
  p.reduced.assign(in.size(), axes.empty());
  if (axes.empty() && node.GetInt("noop_with_empty_axes", 0) != 0) {
    p.noop = true;
    p.dims = in;
    p.reduced.assign(in.size(), false);
    return p;
  }
  ASSIGN_OR_RETURN(const std::vector<int64_t> normalized,
                   NormalizeAxes(node, axes, static_cast<int64_t>(in.size())));
  for (int64_t axis : normalized) p.reduced[static_cast<size_t>(axis)] = true;
  const bool keep_dims = node.GetInt("keepdims", 1) != 0;
  for (size_t d = 0; d < in.size(); ++d) {
    if (!p.reduced[d]) {
      p.dims.push_back(in[d]);
    } else if (keep_dims) {
      p.dims.push_back(1);
    }
  }
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferReduce(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(ReduceParams p, PrepareReduce(node, args));
  return Single(args[0].dtype, std::move(p.dims));
}

absl::Status CheckReduce(const Node& node, std::span<const Arg> args) {
  if (node.op_type == "ReduceMean") return RequireType(node, args, 0, {DataType::kFloat32});
  return RequireType(node, args, 0, {DataType::kFloat32, DataType::kInt32, DataType::kInt64});
}

// Calls fn(output offset, input offset) for every input element.
template <typename Fn>
void ForEachReduced(const Dims& in, const std::vector<bool>& reduced, Fn&& fn) {
  Dims kept = in;
  for (size_t d = 0; d < in.size(); ++d) {
    if (reduced[d]) kept[d] = 1;
  }
  std::vector<int64_t> out_strides = ContiguousStrides(kept);
  for (size_t d = 0; d < in.size(); ++d) {
    if (reduced[d]) out_strides[d] = 0;
  }
  const std::vector<int64_t> in_strides = ContiguousStrides(in);
  ForEachStrided<2>(in, {out_strides.data(), in_strides.data()}, {0, 0},
                    [&](const std::array<int64_t, 2>& off) { fn(off[0], off[1]); });
}

template <typename T>
void Reduce(const Node& node, const Arg& in, const ReduceParams& p, const TensorView& out) {
  const T* x = in.values<T>();
  T* y = static_cast<T*>(out.data);
  const int64_t n = NumElements(out.dims);
  const std::string& op = node.op_type;
  if (op == "ReduceMax" || op == "ReduceMin") {
    const bool is_max = op == "ReduceMax";
    T init;
    if constexpr (std::is_floating_point_v<T>) {
      init = is_max ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    } else {
      init = is_max ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
    }
    for (int64_t i = 0; i < n; ++i) y[i] = init;
    ForEachReduced(in.dims, p.reduced, [&](int64_t o, int64_t i) {
      const T v = x[i];
      if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(v) || std::isnan(y[o])) {
          y[o] = std::numeric_limits<T>::quiet_NaN();
          return;
        }
      }
      if (is_max ? v > y[o] : v < y[o]) y[o] = v;
    });
    return;
  }
  // Sum, Mean, Prod: double accumulators for floats, wrapping 64-bit ones for integers.
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;
  const bool is_prod = op == "ReduceProd";
  std::vector<Acc> acc(static_cast<size_t>(n), is_prod ? Acc{1} : Acc{0});
  ForEachReduced(in.dims, p.reduced, [&](int64_t o, int64_t i) {
    const Acc v = static_cast<Acc>(x[i]);
    if (is_prod) {
      acc[static_cast<size_t>(o)] *= v;
    } else {
      acc[static_cast<size_t>(o)] += v;
    }
  });
  if (op == "ReduceMean") {
    const int64_t count = n == 0 ? 0 : in.num_elements() / n;
    for (int64_t i = 0; i < n; ++i) {
      y[i] = static_cast<T>(static_cast<double>(acc[static_cast<size_t>(i)]) /
                            static_cast<double>(count));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(acc[static_cast<size_t>(i)]);
}

absl::Status EvalReduce(const Node& node, std::span<const Arg> args,
                        std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const ReduceParams p, PrepareReduce(node, args));
  if (p.noop) {
    std::memcpy(outputs[0].data, args[0].data, outputs[0].byte_size());
    return absl::OkStatus();
  }
  return VisitNumeric(node, args[0].dtype, [&](auto tag) -> absl::Status {
    Reduce<typename decltype(tag)::type>(node, args[0], p, outputs[0]);
    return absl::OkStatus();
  });
}

// ---- Softmax, LogSoftmax ----

struct SoftmaxParams {
  int64_t outer = 1;   // independent rows before the axis
  int64_t length = 1;  // elements normalised together
  int64_t inner = 1;   // stride between them
};

// Opset 13 normalises along `axis` (default -1). Nodes from older opsets (legacy_2d_coercion)
// flatten the input to 2-D at `axis` (default 1) and normalise each row.
absl::StatusOr<SoftmaxParams> PrepareSoftmax(const Node& node, const Dims& dims) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  const bool legacy = node.GetInt("legacy_2d_coercion", 0) != 0;
  int64_t axis = node.GetInt("axis", legacy ? 1 : -1);
  if (axis < -rank || axis > (legacy ? rank : rank - 1)) {
    return InvalidArgument(node, "axis ", axis, " is out of range for rank ", rank);
  }
  if (axis < 0) axis += rank;
  const size_t a = static_cast<size_t>(axis);
  SoftmaxParams p;
  p.outer = KnownProduct(dims, 0, a);
  if (legacy) {
    p.length = KnownProduct(dims, a, dims.size());
  } else {
    p.length = dims[a];
    p.inner = KnownProduct(dims, a + 1, dims.size());
  }
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferSoftmax(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  RETURN_IF_ERROR(PrepareSoftmax(node, args[0].dims).status());
  return Single(args[0].dtype, args[0].dims);
}

absl::Status CheckSoftmax(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, {DataType::kFloat32});
}

absl::Status EvalSoftmax(const Node& node, std::span<const Arg> args,
                         std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const SoftmaxParams p, PrepareSoftmax(node, args[0].dims));
  const bool log = node.op_type == "LogSoftmax";
  const float* x = args[0].values<float>();
  float* y = static_cast<float*>(outputs[0].data);
  for (int64_t o = 0; o < p.outer; ++o) {
    for (int64_t i = 0; i < p.inner; ++i) {
      const int64_t base = o * p.length * p.inner + i;
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < p.length; ++k) max = std::fmax(max, x[base + k * p.inner]);
      double sum = 0.0;
      for (int64_t k = 0; k < p.length; ++k) sum += std::exp(x[base + k * p.inner] - max);
      const float log_sum = static_cast<float>(std::log(sum));
      const float scale = static_cast<float>(1.0 / sum);
      for (int64_t k = 0; k < p.length; ++k) {
        const int64_t j = base + k * p.inner;
        y[j] = log ? x[j] - max - log_sum : std::exp(x[j] - max) * scale;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

const OpKernels kReduceOp = {InferReduce, CheckReduce, EvalReduce};
const OpKernels kSoftmaxOp = {InferSoftmax, CheckSoftmax, EvalSoftmax};

}  // namespace convserve::engine::host::internal
