// Elementwise host ops: unary math and activations, broadcasting binary arithmetic and
// comparisons, variadic Min/Max/Sum/Mean, Where, Not, Clip, PRelu and Cast.
#include <bit>
#include <cmath>
#include <limits>
#include <type_traits>

#include "server/common/status.h"
#include "server/engine/host_ops_internal.h"

namespace convserve::engine::host::internal {
namespace {

constexpr std::initializer_list<DataType> kNumericTypes = {DataType::kFloat32, DataType::kInt32,
                                                           DataType::kInt64};

// Integer arithmetic wraps (two's complement) instead of overflowing into undefined behaviour.
template <typename T>
T WrapAdd(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}
template <typename T>
T WrapSub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
  } else {
    return a - b;
  }
}
template <typename T>
T WrapMul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
  } else {
    return a * b;
  }
}
template <typename T>
T WrapNeg(T a) {
  return WrapSub(T{0}, a);
}

// NaN-propagating min/max (numpy's minimum/maximum, which ONNX's reference uses).
template <typename T>
T PropagatingMax(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  }
  return a < b ? b : a;
}
template <typename T>
T PropagatingMin(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  }
  return b < a ? b : a;
}

// out[i] = fn(a[ia], b[ib]) over the broadcast of a and b to out_dims.
template <typename A, typename B, typename O, typename Fn>
void BroadcastBinary(const Arg& a, const Arg& b, const Dims& out_dims, O* out, Fn&& fn) {
  const std::vector<int64_t> sa = BroadcastStrides(a.dims, out_dims);
  const std::vector<int64_t> sb = BroadcastStrides(b.dims, out_dims);
  const A* pa = a.values<A>();
  const B* pb = b.values<B>();
  int64_t o = 0;
  ForEachStrided<2>(
      out_dims, {sa.data(), sb.data()}, {0, 0},
      [&](const std::array<int64_t, 2>& off) { out[o++] = fn(pa[off[0]], pb[off[1]]); });
}

absl::StatusOr<Dims> BroadcastAll(const Node& node, std::span<const Arg> args) {
  Dims dims = args[0].dims;
  for (size_t i = 1; i < args.size(); ++i) {
    if (!args[i].present()) continue;
    ASSIGN_OR_RETURN(dims, BroadcastDims(node, dims, args[i].dims));
  }
  return dims;
}

// ---- unary math and activations ----

bool UnaryAcceptsIntegers(const std::string& op) {
  return op == "Neg" || op == "Abs" || op == "Relu";
}

absl::StatusOr<std::vector<ValueInfo>> InferUnary(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  return Single(args[0].dtype, args[0].dims);
}

absl::Status CheckUnary(const Node& node, std::span<const Arg> args) {
  if (UnaryAcceptsIntegers(node.op_type)) return RequireType(node, args, 0, kNumericTypes);
  return RequireType(node, args, 0, {DataType::kFloat32});
}

template <typename T, typename Fn>
void Map(const Arg& in, const TensorView& out, Fn&& fn) {
  const T* x = in.values<T>();
  T* y = static_cast<T*>(out.data);
  const int64_t n = in.num_elements();
  for (int64_t i = 0; i < n; ++i) y[i] = fn(x[i]);
}

absl::Status EvalIntegerUnary(const Node& node, const Arg& in, const TensorView& out) {
  return VisitNumeric(node, in.dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    const std::string& op = node.op_type;
    if (op == "Neg") {
      Map<T>(in, out, [](T x) { return WrapNeg(x); });
    } else if (op == "Abs") {
      Map<T>(in, out, [](T x) { return x < T{0} ? WrapNeg(x) : x; });
    } else {  // Relu
      Map<T>(in, out, [](T x) { return x < T{0} ? T{0} : x; });
    }
    return absl::OkStatus();
  });
}

float Sigmoid(float x) {
  if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

absl::Status EvalUnary(const Node& node, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  const Arg& in = args[0];
  const TensorView& out = outputs[0];
  if (in.dtype != DataType::kFloat32) return EvalIntegerUnary(node, in, out);
  const std::string& op = node.op_type;
  if (op == "Neg") {
    Map<float>(in, out, [](float x) { return -x; });
  } else if (op == "Abs") {
    Map<float>(in, out, [](float x) { return std::fabs(x); });
  } else if (op == "Sqrt") {
    Map<float>(in, out, [](float x) { return std::sqrt(x); });
  } else if (op == "Exp") {
    Map<float>(in, out, [](float x) { return std::exp(x); });
  } else if (op == "Log") {
    Map<float>(in, out, [](float x) { return std::log(x); });
  } else if (op == "Reciprocal") {
    Map<float>(in, out, [](float x) { return 1.0f / x; });
  } else if (op == "Floor") {
    Map<float>(in, out, [](float x) { return std::floor(x); });
  } else if (op == "Ceil") {
    Map<float>(in, out, [](float x) { return std::ceil(x); });
  } else if (op == "Erf") {
    Map<float>(in, out, [](float x) { return std::erf(x); });
  } else if (op == "Relu") {
    Map<float>(in, out, [](float x) { return x < 0.0f ? 0.0f : x; });
  } else if (op == "LeakyRelu") {
    const float alpha = node.GetFloat("alpha", 0.01f);
    Map<float>(in, out, [alpha](float x) { return x < 0.0f ? alpha * x : x; });
  } else if (op == "Sigmoid") {
    Map<float>(in, out, Sigmoid);
  } else if (op == "HardSigmoid") {
    const float alpha = node.GetFloat("alpha", 0.2f);
    const float beta = node.GetFloat("beta", 0.5f);
    Map<float>(in, out,
               [=](float x) { return std::fmax(0.0f, std::fmin(1.0f, alpha * x + beta)); });
  } else if (op == "HardSwish") {
    Map<float>(in, out,
               [](float x) { return x * std::fmax(0.0f, std::fmin(1.0f, x / 6.0f + 0.5f)); });
  } else if (op == "Tanh") {
    Map<float>(in, out, [](float x) { return std::tanh(x); });
  } else if (op == "Elu") {
    const float alpha = node.GetFloat("alpha", 1.0f);
    Map<float>(in, out, [alpha](float x) { return x < 0.0f ? alpha * std::expm1(x) : x; });
  } else if (op == "Selu") {
    const float alpha = node.GetFloat("alpha", 1.67326319217681884765625f);
    const float gamma = node.GetFloat("gamma", 1.05070102214813232421875f);
    Map<float>(in, out,
               [=](float x) { return x <= 0.0f ? gamma * alpha * std::expm1(x) : gamma * x; });
  } else if (op == "Softplus") {
    Map<float>(in, out, [](float x) {
      return x > 0.0f ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    });
  } else if (op == "Softsign") {
    Map<float>(in, out, [](float x) { return x / (1.0f + std::fabs(x)); });
  } else {
    return Unimplemented(node, "unsupported op type '", op, "'");
  }
  return absl::OkStatus();
}

// ---- binary arithmetic ----

absl::StatusOr<std::vector<ValueInfo>> InferBinary(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  if (node.op_type != "Pow") RETURN_IF_ERROR(RequireSameType(node, args, 0, 1));
  ASSIGN_OR_RETURN(Dims dims, BroadcastDims(node, args[0].dims, args[1].dims));
  return Single(args[0].dtype, std::move(dims));
}

absl::Status CheckBinary(const Node& node, std::span<const Arg> args) {
  if (node.op_type == "Pow") {
    RETURN_IF_ERROR(RequireType(node, args, 0, {DataType::kFloat32}));
    return RequireType(node, args, 1, kNumericTypes);
  }
  return RequireType(node, args, 0, kNumericTypes);
}

absl::Status EvalPow(const Node& node, std::span<const Arg> args, const TensorView& out) {
  float* y = static_cast<float*>(out.data);
  return VisitNumeric(node, args[1].dtype, [&](auto tag) -> absl::Status {
    using E = typename decltype(tag)::type;
    BroadcastBinary<float, E>(args[0], args[1], out.dims, y,
                              [](float a, E b) { return std::pow(a, static_cast<float>(b)); });
    return absl::OkStatus();
  });
}

absl::Status EvalBinary(const Node& node, std::span<const Arg> args,
                        std::span<const TensorView> outputs) {
  const TensorView& out = outputs[0];
  if (node.op_type == "Pow") return EvalPow(node, args, out);
  return VisitNumeric(node, args[0].dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    T* y = static_cast<T*>(out.data);
    const std::string& op = node.op_type;
    if (op == "Add") {
      BroadcastBinary<T, T>(args[0], args[1], out.dims, y, WrapAdd<T>);
    } else if (op == "Sub") {
      BroadcastBinary<T, T>(args[0], args[1], out.dims, y, WrapSub<T>);
    } else if (op == "Mul") {
      BroadcastBinary<T, T>(args[0], args[1], out.dims, y, WrapMul<T>);
    } else if constexpr (std::is_integral_v<T>) {  // Div: truncates toward zero, like C
      bool divided_by_zero = false;
      BroadcastBinary<T, T>(args[0], args[1], out.dims, y, [&](T a, T b) {
        if (b == 0) {
          divided_by_zero = true;
          return T{0};
        }
        return b == -1 ? WrapNeg(a) : static_cast<T>(a / b);
      });
      if (divided_by_zero) return InvalidArgument(node, "integer division by zero");
    } else {
      BroadcastBinary<T, T>(args[0], args[1], out.dims, y, [](T a, T b) { return a / b; });
    }
    return absl::OkStatus();
  });
}

// ---- comparisons and logic ----

absl::StatusOr<std::vector<ValueInfo>> InferCompare(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 1));
  ASSIGN_OR_RETURN(Dims dims, BroadcastDims(node, args[0].dims, args[1].dims));
  return Single(DataType::kBool, std::move(dims));
}

absl::Status CheckCompare(const Node& node, std::span<const Arg> args) {
  if (node.op_type == "Equal") {
    return RequireType(node, args, 0,
                       {DataType::kFloat32, DataType::kInt32, DataType::kInt64, DataType::kBool});
  }
  return RequireType(node, args, 0, kNumericTypes);
}

template <typename T>
void Compare(const Node& node, std::span<const Arg> args, const TensorView& out) {
  uint8_t* y = static_cast<uint8_t*>(out.data);
  if (node.op_type == "Equal") {
    BroadcastBinary<T, T>(args[0], args[1], out.dims, y,
                          [](T a, T b) { return static_cast<uint8_t>(a == b); });
  } else if (node.op_type == "Less") {
    BroadcastBinary<T, T>(args[0], args[1], out.dims, y,
                          [](T a, T b) { return static_cast<uint8_t>(a < b); });
  } else {
    BroadcastBinary<T, T>(args[0], args[1], out.dims, y,
                          [](T a, T b) { return static_cast<uint8_t>(a > b); });
  }
}

absl::Status EvalCompare(const Node& node, std::span<const Arg> args,
                         std::span<const TensorView> outputs) {
  if (args[0].dtype == DataType::kBool) {
    BroadcastBinary<uint8_t, uint8_t>(
        args[0], args[1], outputs[0].dims, static_cast<uint8_t*>(outputs[0].data),
        [](uint8_t a, uint8_t b) { return static_cast<uint8_t>((a != 0) == (b != 0)); });
    return absl::OkStatus();
  }
  return VisitNumeric(node, args[0].dtype, [&](auto tag) -> absl::Status {
    Compare<typename decltype(tag)::type>(node, args, outputs[0]);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<ValueInfo>> InferNot(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  return Single(DataType::kBool, args[0].dims);
}

absl::Status CheckNot(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, {DataType::kBool});
}

absl::Status EvalNot(const Node&, std::span<const Arg> args, std::span<const TensorView> outputs) {
  Map<uint8_t>(args[0], outputs[0], [](uint8_t x) { return static_cast<uint8_t>(x == 0); });
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ValueInfo>> InferWhere(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 3, 3));
  RETURN_IF_ERROR(RequireSameType(node, args, 1, 2));
  ASSIGN_OR_RETURN(Dims dims, BroadcastAll(node, args));
  return Single(args[1].dtype, std::move(dims));
}

absl::Status CheckWhere(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, {DataType::kBool});
}

absl::Status EvalWhere(const Node&, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  const Dims& dims = outputs[0].dims;
  const std::vector<int64_t> sc = BroadcastStrides(args[0].dims, dims);
  const std::vector<int64_t> sx = BroadcastStrides(args[1].dims, dims);
  const std::vector<int64_t> sy = BroadcastStrides(args[2].dims, dims);
  const uint8_t* cond = args[0].values<uint8_t>();
  VisitWord(ElementSize(args[1].dtype), [&](auto word) {
    using Word = decltype(word);
    const Word* x = args[1].values<Word>();
    const Word* y = args[2].values<Word>();
    Word* out = static_cast<Word*>(outputs[0].data);
    int64_t o = 0;
    ForEachStrided<3>(dims, {sc.data(), sx.data(), sy.data()}, {0, 0, 0},
                      [&](const std::array<int64_t, 3>& off) {
                        out[o++] = cond[off[0]] != 0 ? x[off[1]] : y[off[2]];
                      });
  });
  return absl::OkStatus();
}

// ---- variadic Min / Max / Sum / Mean ----

absl::StatusOr<std::vector<ValueInfo>> InferVariadic(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, std::numeric_limits<size_t>::max()));
  for (size_t i = 0; i < args.size(); ++i) {
    if (!args[i].present()) return InvalidArgument(node, "input ", i, " is absent");
  }
  RETURN_IF_ERROR(RequireSameType(node, args, 0, args.size() - 1));
  ASSIGN_OR_RETURN(Dims dims, BroadcastAll(node, args));
  return Single(args[0].dtype, std::move(dims));
}

absl::Status CheckVariadic(const Node& node, std::span<const Arg> args) {
  if (node.op_type == "Mean") return RequireType(node, args, 0, {DataType::kFloat32});
  return RequireType(node, args, 0, kNumericTypes);
}

absl::Status EvalVariadic(const Node& node, std::span<const Arg> args,
                          std::span<const TensorView> outputs) {
  const TensorView& out = outputs[0];
  return VisitNumeric(node, args[0].dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    T* y = static_cast<T*>(out.data);
    const std::vector<int64_t> out_strides = ContiguousStrides(out.dims);
    const std::vector<int64_t> first = BroadcastStrides(args[0].dims, out.dims);
    CopyStrided(sizeof(T), out.dims, args[0].data, 0, first.data(), y, 0, out_strides.data());
    auto fold = [&](auto fn) {
      for (size_t i = 1; i < args.size(); ++i) {
        const std::vector<int64_t> strides = BroadcastStrides(args[i].dims, out.dims);
        const T* x = args[i].values<T>();
        ForEachStrided<2>(
            out.dims, {out_strides.data(), strides.data()}, {0, 0},
            [&](const std::array<int64_t, 2>& off) { y[off[0]] = fn(y[off[0]], x[off[1]]); });
      }
    };
    const std::string& op = node.op_type;
    if (op == "Min") {
      fold(PropagatingMin<T>);
    } else if (op == "Max") {
      fold(PropagatingMax<T>);
    } else {
      fold(WrapAdd<T>);
      if (op == "Mean") {
        const int64_t n = NumElements(out.dims);
        const T count = static_cast<T>(args.size());
        for (int64_t i = 0; i < n; ++i) y[i] /= count;
      }
    }
    return absl::OkStatus();
  });
}

// ---- Clip, PRelu ----

absl::StatusOr<std::vector<ValueInfo>> InferClip(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 3));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 2));
  for (size_t i = 1; i < 3; ++i) {
    const Arg* bound = Optional(args, i);
    if (bound != nullptr && bound->num_elements() != 1) {
      return InvalidArgument(node, i == 1 ? "min" : "max", " must be a scalar, got ",
                             DimsToString(bound->dims));
    }
  }
  return Single(args[0].dtype, args[0].dims);
}

absl::Status CheckClip(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, kNumericTypes);
}

absl::Status EvalClip(const Node& node, std::span<const Arg> args,
                      std::span<const TensorView> outputs) {
  return VisitNumeric(node, args[0].dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    const Arg* min = Optional(args, 1);
    const Arg* max = Optional(args, 2);
    const T lo = min != nullptr ? min->values<T>()[0] : std::numeric_limits<T>::lowest();
    const T hi = max != nullptr ? max->values<T>()[0] : std::numeric_limits<T>::max();
    // min > max gives max everywhere, as the spec says.
    Map<T>(args[0], outputs[0], [=](T x) {
      const T low_clipped = x < lo ? lo : x;
      return low_clipped > hi ? hi : low_clipped;
    });
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<ValueInfo>> InferPRelu(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 1));
  ASSIGN_OR_RETURN(Dims dims, BroadcastDims(node, args[0].dims, args[1].dims));
  if (dims != args[0].dims) {
    return InvalidArgument(node, "slope ", DimsToString(args[1].dims), " does not broadcast to X ",
                           DimsToString(args[0].dims));
  }
  return Single(args[0].dtype, std::move(dims));
}

absl::Status CheckPRelu(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, {DataType::kFloat32});
}

absl::Status EvalPRelu(const Node&, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  BroadcastBinary<float, float>(args[0], args[1], outputs[0].dims,
                                static_cast<float*>(outputs[0].data),
                                [](float x, float slope) { return x < 0.0f ? slope * x : x; });
  return absl::OkStatus();
}

// ---- Cast ----

// Storage types of the element types without a C++ arithmetic type.
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};
struct Bool {
  uint8_t value;
};

// ONNX TensorProto.DataType numbers.
absl::StatusOr<DataType> DataTypeFromOnnx(const Node& node, int64_t onnx_type) {
  switch (onnx_type) {
    case 1:
      return DataType::kFloat32;
    case 2:
      return DataType::kUint8;
    case 3:
      return DataType::kInt8;
    case 4:
      return DataType::kUint16;
    case 5:
      return DataType::kInt16;
    case 6:
      return DataType::kInt32;
    case 7:
      return DataType::kInt64;
    case 9:
      return DataType::kBool;
    case 10:
      return DataType::kFloat16;
    case 11:
      return DataType::kFloat64;
    case 12:
      return DataType::kUint32;
    case 13:
      return DataType::kUint64;
    case 16:
      return DataType::kBFloat16;
    default:
      return Unimplemented(node, "cast to ONNX data type ", onnx_type, " is not supported");
  }
}

template <typename Fn>
void VisitAnyType(DataType dtype, Fn&& fn) {
  switch (dtype) {
    case DataType::kFloat32:
      fn(Tag<float>{});
      break;
    case DataType::kFloat64:
      fn(Tag<double>{});
      break;
    case DataType::kFloat16:
      fn(Tag<Half>{});
      break;
    case DataType::kBFloat16:
      fn(Tag<BFloat16>{});
      break;
    case DataType::kInt8:
      fn(Tag<int8_t>{});
      break;
    case DataType::kUint8:
      fn(Tag<uint8_t>{});
      break;
    case DataType::kInt16:
      fn(Tag<int16_t>{});
      break;
    case DataType::kUint16:
      fn(Tag<uint16_t>{});
      break;
    case DataType::kInt32:
      fn(Tag<int32_t>{});
      break;
    case DataType::kUint32:
      fn(Tag<uint32_t>{});
      break;
    case DataType::kInt64:
      fn(Tag<int64_t>{});
      break;
    case DataType::kUint64:
      fn(Tag<uint64_t>{});
      break;
    case DataType::kBool:
      fn(Tag<Bool>{});
      break;
    case DataType::kUndefined:
      break;
  }
}

// Float to integer: truncation toward zero, saturating at the type's range, NaN to 0 (C leaves
// out-of-range conversions undefined; ONNX does not specify them).
template <typename D, typename F>
D FloatToInteger(F value) {
  if (std::isnan(value)) return D{0};
  if (value <= static_cast<F>(std::numeric_limits<D>::lowest())) {
    return std::numeric_limits<D>::lowest();
  }
  if (value >= static_cast<F>(std::numeric_limits<D>::max())) return std::numeric_limits<D>::max();
  return static_cast<D>(value);
}

template <typename D, typename S>
D Convert(S value) {
  if constexpr (std::is_same_v<S, Half>) {
    return Convert<D>(HalfToFloat(value.bits));
  } else if constexpr (std::is_same_v<S, BFloat16>) {
    return Convert<D>(BFloat16ToFloat(value.bits));
  } else if constexpr (std::is_same_v<S, Bool>) {
    return Convert<D>(static_cast<uint8_t>(value.value != 0 ? 1 : 0));
  } else if constexpr (std::is_same_v<D, Half>) {
    return Half{FloatToHalf(static_cast<float>(value))};
  } else if constexpr (std::is_same_v<D, BFloat16>) {
    return BFloat16{FloatToBFloat16(static_cast<float>(value))};
  } else if constexpr (std::is_same_v<D, Bool>) {
    return Bool{static_cast<uint8_t>(value != S{0} ? 1 : 0)};
  } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    return FloatToInteger<D>(value);
  } else {
    return static_cast<D>(value);
  }
}

absl::StatusOr<std::vector<ValueInfo>> InferCast(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  if (!node.HasAttribute("to")) return InvalidArgument(node, "attribute 'to' is required");
  ASSIGN_OR_RETURN(DataType to, DataTypeFromOnnx(node, node.GetInt("to", 0)));
  return Single(to, args[0].dims);
}

absl::Status CheckCast(const Node& node, std::span<const Arg> args) {
  if (args.empty() || !args[0].present()) return absl::OkStatus();
  return DataTypeFromOnnx(node, node.GetInt("to", 0)).status();
}

absl::Status EvalCast(const Node&, std::span<const Arg> args, std::span<const TensorView> outputs) {
  const int64_t n = args[0].num_elements();
  VisitAnyType(args[0].dtype, [&](auto source) {
    using S = typename decltype(source)::type;
    VisitAnyType(outputs[0].dtype, [&](auto dest) {
      using D = typename decltype(dest)::type;
      const S* x = args[0].values<S>();
      D* y = static_cast<D*>(outputs[0].data);
      for (int64_t i = 0; i < n; ++i) y[i] = Convert<D>(x[i]);
    });
  });
  return absl::OkStatus();
}

}  // namespace

uint16_t FloatToHalf(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exponent = (x >> 23) & 0xffu;
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xffu) {  // inf stays inf, NaN stays a (quiet) NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (mantissa != 0 ? 0x200u | (mantissa >> 13) : 0));
  }
  const int32_t e = static_cast<int32_t>(exponent) - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (e <= 0) {                                                 // half subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u) != 0)) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(e) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u) != 0)) ++half;
  return static_cast<uint16_t>(half);
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) {
    return std::bit_cast<float>(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
  }
  const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // subnormal or zero
  return sign != 0 ? -magnitude : magnitude;
}

uint16_t FloatToBFloat16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

const OpKernels kUnaryOp = {InferUnary, CheckUnary, EvalUnary};
const OpKernels kBinaryOp = {InferBinary, CheckBinary, EvalBinary};
const OpKernels kCompareOp = {InferCompare, CheckCompare, EvalCompare};
const OpKernels kNotOp = {InferNot, CheckNot, EvalNot};
const OpKernels kWhereOp = {InferWhere, CheckWhere, EvalWhere};
const OpKernels kVariadicOp = {InferVariadic, CheckVariadic, EvalVariadic};
const OpKernels kClipOp = {InferClip, CheckClip, EvalClip};
const OpKernels kPReluOp = {InferPRelu, CheckPRelu, EvalPRelu};
const OpKernels kCastOp = {InferCast, CheckCast, EvalCast};

}  // namespace convserve::engine::host::internal
