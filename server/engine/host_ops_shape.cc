// Data-movement and shape host ops. They copy elements as bytes, so they work for every dtype:
// Identity, Dropout, Shape, Size, Gather, ConstantOfShape, Range, Unsqueeze, Squeeze, Concat,
// Reshape, Flatten, Transpose, Slice, Split, Pad, Expand, Tile.
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "server/common/status.h"
#include "server/engine/host_ops_internal.h"

namespace convserve::engine::host::internal {
namespace {

absl::Status AnyType(const Node&, std::span<const Arg>) { return absl::OkStatus(); }

void CopyBytes(const Arg& in, const TensorView& out) {
  const size_t bytes = out.byte_size();
  if (bytes > 0) std::memcpy(out.data, in.data, bytes);
}

// Evaluation of every op whose output is its input's bytes under another shape.
absl::Status EvalCopy(const Node&, std::span<const Arg> args, std::span<const TensorView> outputs) {
  CopyBytes(args[0], outputs[0]);
  return absl::OkStatus();
}

// ---- Identity, Dropout ----

absl::StatusOr<std::vector<ValueInfo>> InferIdentity(const Node& node, std::span<const Arg> args) {
  if (node.op_type == "Identity") {
    RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
    return Single(args[0].dtype, args[0].dims);
  }
  RETURN_IF_ERROR(CheckArity(node, args, 1, 3, 2));
  const Arg* training_mode = Optional(args, 2);
  if (training_mode != nullptr && training_mode->known() && training_mode->num_elements() > 0 &&
      ValueAsInt64(*training_mode, 0) != 0) {
    return Unimplemented(node, "training_mode = true is not supported");
  }
  std::vector<ValueInfo> outputs = Single(args[0].dtype, args[0].dims);
  if (node.outputs.size() > 1) outputs.push_back({"", DataType::kBool, args[0].dims});
  return outputs;
}

absl::Status EvalIdentity(const Node&, std::span<const Arg> args,
                          std::span<const TensorView> outputs) {
  CopyBytes(args[0], outputs[0]);
  if (outputs.size() > 1 && outputs[1].data != nullptr) {  // Dropout's mask: nothing dropped
    std::memset(outputs[1].data, 1, outputs[1].byte_size());
  }
  return absl::OkStatus();
}

// ---- Shape, Size ----

// [start, end) of Shape's slice of the input dims (opset 15 attributes, clamped).
std::pair<int64_t, int64_t> ShapeRange(const Node& node, int64_t rank) {
  auto clamp = [rank](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
  const int64_t start = clamp(node.GetInt("start", 0));
  const int64_t end = clamp(node.GetInt("end", rank));
  return {start, std::max(start, end)};
}

absl::StatusOr<std::vector<ValueInfo>> InferShape(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  const auto [start, end] = ShapeRange(node, static_cast<int64_t>(args[0].dims.size()));
  return Single(DataType::kInt64, {end - start});
}

absl::Status EvalShape(const Node& node, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  const auto [start, end] = ShapeRange(node, static_cast<int64_t>(args[0].dims.size()));
  int64_t* y = static_cast<int64_t*>(outputs[0].data);
  for (int64_t i = start; i < end; ++i) y[i - start] = args[0].dims[static_cast<size_t>(i)];
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ValueInfo>> InferSize(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  return Single(DataType::kInt64, {});
}

absl::Status EvalSize(const Node&, std::span<const Arg> args, std::span<const TensorView> outputs) {
  *static_cast<int64_t*>(outputs[0].data) = args[0].num_elements();
  return absl::OkStatus();
}

// ---- Gather ----

absl::StatusOr<std::vector<ValueInfo>> InferGather(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  if (args[1].dtype != DataType::kInt32 && args[1].dtype != DataType::kInt64) {
    return InvalidArgument(node, "indices must be INT32 or INT64, got ", TypeName(args[1].dtype));
  }
  const Dims& data = args[0].dims;
  const int64_t rank = static_cast<int64_t>(data.size());
  if (rank == 0) return InvalidArgument(node, "data must have rank >= 1");
  ASSIGN_OR_RETURN(const int64_t axis, NormalizeAxis(node, node.GetInt("axis", 0), rank));
  Dims dims(data.begin(), data.begin() + axis);
  dims.insert(dims.end(), args[1].dims.begin(), args[1].dims.end());
  dims.insert(dims.end(), data.begin() + axis + 1, data.end());
  return Single(args[0].dtype, std::move(dims));
}

absl::Status EvalGather(const Node& node, std::span<const Arg> args,
                        std::span<const TensorView> outputs) {
  const Dims& data = args[0].dims;
  const int64_t rank = static_cast<int64_t>(data.size());
  const int64_t axis = *NormalizeAxis(node, node.GetInt("axis", 0), rank);
  const int64_t outer = KnownProduct(data, 0, static_cast<size_t>(axis));
  const int64_t axis_dim = data[static_cast<size_t>(axis)];
  const size_t block_bytes =
      static_cast<size_t>(KnownProduct(data, axis + 1, data.size())) * ElementSize(args[0].dtype);
  const int64_t count = args[1].num_elements();
  std::vector<int64_t> indices(static_cast<size_t>(count));
  for (int64_t j = 0; j < count; ++j) {
    int64_t index = ValueAsInt64(args[1], j);
    if (index < -axis_dim || index >= axis_dim) {
      return InvalidArgument(node, "index ", index, " is out of range for axis ", axis, " of size ",
                             axis_dim);
    }
    indices[static_cast<size_t>(j)] = index < 0 ? index + axis_dim : index;
  }
  const auto* src = static_cast<const std::byte*>(args[0].data);
  auto* dst = static_cast<std::byte*>(outputs[0].data);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t index : indices) {
      std::memcpy(dst, src + (o * axis_dim + index) * static_cast<int64_t>(block_bytes),
                  block_bytes);
      dst += block_bytes;
    }
  }
  return absl::OkStatus();
}

// ---- ConstantOfShape, Range ----

absl::StatusOr<Tensor> ConstantOfShapeValue(const Node& node) {
  auto it = node.attributes.find("value");
  if (it == node.attributes.end()) {
    Tensor zero(DataType::kFloat32, {1});
    return zero;
  }
  const Tensor* value = std::get_if<Tensor>(&it->second);
  if (value == nullptr || value->num_elements() != 1 ||
      value->bytes.size() != ElementSize(value->dtype)) {
    return InvalidArgument(node, "attribute 'value' must be a one-element tensor");
  }
  return *value;
}

absl::StatusOr<std::vector<ValueInfo>> InferConstantOfShape(const Node& node,
                                                            std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  ASSIGN_OR_RETURN(Dims dims, ShapeLikeInput(node, args[0], "input"));
  for (int64_t d : dims) {
    if (d < 0) return InvalidArgument(node, "shape ", DimsToString(dims), " has a negative dim");
  }
  ASSIGN_OR_RETURN(Tensor value, ConstantOfShapeValue(node));
  return Single(value.dtype, std::move(dims));
}

absl::Status EvalConstantOfShape(const Node& node, std::span<const Arg>,
                                 std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(Tensor value, ConstantOfShapeValue(node));
  const size_t size = value.bytes.size();
  auto* out = static_cast<std::byte*>(outputs[0].data);
  const int64_t n = NumElements(outputs[0].dims);
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * static_cast<int64_t>(size), value.bytes.data(), size);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ValueInfo>> InferRange(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 3, 3));
  RETURN_IF_ERROR(RequireSameType(node, args, 0, 2));
  static constexpr const char* kNames[] = {"start", "limit", "delta"};
  for (size_t i = 0; i < 3; ++i) {
    if (args[i].num_elements() != 1) {
      return InvalidArgument(node, "'", kNames[i], "' must be a scalar, got ",
                             DimsToString(args[i].dims));
    }
    if (!args[i].known()) return Unimplemented(node, "requires a constant '", kNames[i], "' input");
  }
  int64_t count;
  if (args[0].dtype == DataType::kFloat32 || args[0].dtype == DataType::kFloat64) {
    const double start = ValueAsDouble(args[0], 0);
    const double delta = ValueAsDouble(args[2], 0);
    if (delta == 0) return InvalidArgument(node, "delta must not be zero");
    count =
        static_cast<int64_t>(std::max(0.0, std::ceil((ValueAsDouble(args[1], 0) - start) / delta)));
  } else {
    const int64_t start = ValueAsInt64(args[0], 0);
    const int64_t delta = ValueAsInt64(args[2], 0);
    if (delta == 0) return InvalidArgument(node, "delta must not be zero");
    const int64_t span = ValueAsInt64(args[1], 0) - start;
    count = span / delta;
    if (span % delta != 0 && (span < 0) == (delta < 0)) ++count;  // ceil
    count = std::max<int64_t>(count, 0);
  }
  return Single(args[0].dtype, {count});
}

absl::Status CheckRange(const Node& node, std::span<const Arg> args) {
  return RequireType(node, args, 0, {DataType::kFloat32, DataType::kInt32, DataType::kInt64});
}

absl::Status EvalRange(const Node& node, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  return VisitNumeric(node, args[0].dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    const T start = args[0].values<T>()[0];
    const T delta = args[2].values<T>()[0];
    T* y = static_cast<T*>(outputs[0].data);
    const int64_t n = NumElements(outputs[0].dims);
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_integral_v<T>) {
        using U = std::make_unsigned_t<T>;
        y[i] = static_cast<T>(static_cast<U>(start) + static_cast<U>(i) * static_cast<U>(delta));
      } else {
        y[i] = start + static_cast<T>(i) * delta;
      }
    }
    return absl::OkStatus();
  });
}

// ---- Unsqueeze, Squeeze, Reshape, Flatten ----

// Axes from input 1 when present, else from the attribute (pre-opset-13 form) when present.
absl::StatusOr<std::optional<std::vector<int64_t>>> AxesInputOrAttribute(
    const Node& node, std::span<const Arg> args) {
  if (const Arg* axes = Optional(args, 1)) {
    ASSIGN_OR_RETURN(std::vector<int64_t> values, ShapeLikeInput(node, *axes, "axes"));
    return std::optional<std::vector<int64_t>>(std::move(values));
  }
  if (node.HasAttribute("axes")) return std::optional<std::vector<int64_t>>(node.GetInts("axes"));
  return std::optional<std::vector<int64_t>>();
}

absl::StatusOr<std::vector<ValueInfo>> InferUnsqueeze(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 2));
  ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes, AxesInputOrAttribute(node, args));
  if (!axes.has_value()) return Unimplemented(node, "requires a constant 'axes' input");
  const Dims& in = args[0].dims;
  const int64_t rank = static_cast<int64_t>(in.size() + axes->size());
  ASSIGN_OR_RETURN(std::vector<int64_t> sorted, NormalizeAxes(node, *axes, rank));
  Dims dims;
  dims.reserve(static_cast<size_t>(rank));
  auto next_axis = sorted.begin();
  auto next_in = in.begin();
  for (int64_t i = 0; i < rank; ++i) {
    if (next_axis != sorted.end() && *next_axis == i) {
      dims.push_back(1);
      ++next_axis;
    } else {
      dims.push_back(*next_in++);
    }
  }
  return Single(args[0].dtype, std::move(dims));
}

absl::StatusOr<std::vector<ValueInfo>> InferSqueeze(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 2));
  ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes, AxesInputOrAttribute(node, args));
  const Dims& in = args[0].dims;
  const int64_t rank = static_cast<int64_t>(in.size());
  std::vector<bool> drop(in.size(), false);
  if (axes.has_value() && !axes->empty()) {
    ASSIGN_OR_RETURN(std::vector<int64_t> sorted, NormalizeAxes(node, *axes, rank));
    for (int64_t axis : sorted) {
      const int64_t d = in[static_cast<size_t>(axis)];
      if (d != 1 && d != kUnknownDim) {
        return InvalidArgument(node, "cannot squeeze axis ", axis, " of size ", d, " in ",
                               DimsToString(in));
      }
      drop[static_cast<size_t>(axis)] = true;
    }
  } else {
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] == kUnknownDim) {
        return Unimplemented(node, "cannot squeeze unspecified axes of ", DimsToString(in),
                             " with unknown dims");
      }
      drop[i] = in[i] == 1;
    }
  }
  Dims dims;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!drop[i]) dims.push_back(in[i]);
  }
  return Single(args[0].dtype, std::move(dims));
}

absl::StatusOr<std::vector<ValueInfo>> InferReshape(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  ASSIGN_OR_RETURN(const std::vector<int64_t> shape, ShapeLikeInput(node, args[1], "shape"));
  const Dims& in = args[0].dims;
  const bool allow_zero = node.GetInt("allowzero", 0) != 0;
  Dims dims = shape;
  int64_t inferred = -1;
  bool has_zero = false;
  std::vector<bool> copied_unknown(in.size(), false);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (inferred >= 0)
        return InvalidArgument(node, "shape ", DimsToString(shape), " has more than one -1");
      inferred = static_cast<int64_t>(i);
    } else if (shape[i] == 0) {
      has_zero = true;
      if (allow_zero) continue;
      if (i >= in.size()) {
        return InvalidArgument(node, "shape ", DimsToString(shape), " copies dim ", i,
                               " that input ", DimsToString(in), " does not have");
      }
      dims[i] = in[i];
      if (in[i] == kUnknownDim) copied_unknown[i] = true;
    } else if (shape[i] < -1) {
      return InvalidArgument(node, "shape ", DimsToString(shape), " has a negative dim");
    }
  }
  if (allow_zero && has_zero && inferred >= 0) {
    return InvalidArgument(node, "shape ", DimsToString(shape),
                           " has both 0 and -1 with allowzero");
  }
  // Unknown input dims copied to the same position by a 0 cancel out of the element count.
  int64_t in_known = 1;
  bool in_unknown = false;
  for (size_t i = 0; i < in.size(); ++i) {
    if (copied_unknown[i]) continue;
    if (in[i] < 0) {
      in_unknown = true;
    } else {
      in_known *= in[i];
    }
  }
  int64_t out_known = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (static_cast<int64_t>(i) == inferred || (i < in.size() && copied_unknown[i])) continue;
    out_known *= dims[i];
  }
  if (inferred >= 0) {
    if (in_unknown) {
      dims[static_cast<size_t>(inferred)] = kUnknownDim;
    } else if (out_known == 0 || in_known % out_known != 0) {
      return InvalidArgument(node, "cannot reshape ", DimsToString(in), " to ",
                             DimsToString(shape));
    } else {
      dims[static_cast<size_t>(inferred)] = in_known / out_known;
    }
  } else if (!in_unknown && in_known != out_known) {
    return InvalidArgument(node, "cannot reshape ", DimsToString(in), " (", in_known,
                           " elements) to ", DimsToString(shape));
  }
  return Single(args[0].dtype, std::move(dims));
}

absl::StatusOr<std::vector<ValueInfo>> InferFlatten(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  const Dims& in = args[0].dims;
  const int64_t rank = static_cast<int64_t>(in.size());
  int64_t axis = node.GetInt("axis", 1);
  if (axis < -rank || axis > rank) {
    return InvalidArgument(node, "axis ", axis, " is out of range for rank ", rank);
  }
  if (axis < 0) axis += rank;
  return Single(args[0].dtype, {KnownProduct(in, 0, static_cast<size_t>(axis)),
                                KnownProduct(in, static_cast<size_t>(axis), in.size())});
}

// ---- Concat ----

absl::StatusOr<std::vector<ValueInfo>> InferConcat(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, std::numeric_limits<size_t>::max()));
  for (size_t i = 0; i < args.size(); ++i) {
    if (!args[i].present()) return InvalidArgument(node, "input ", i, " is absent");
  }
  RETURN_IF_ERROR(RequireSameType(node, args, 0, args.size() - 1));
  if (!node.HasAttribute("axis")) return InvalidArgument(node, "attribute 'axis' is required");
  const int64_t rank = static_cast<int64_t>(args[0].dims.size());
  ASSIGN_OR_RETURN(const int64_t axis, NormalizeAxis(node, node.GetInt("axis", 0), rank));
  Dims dims = args[0].dims;
  for (size_t i = 1; i < args.size(); ++i) {
    const Dims& other = args[i].dims;
    bool compatible = other.size() == dims.size();
    for (size_t d = 0; compatible && d < dims.size(); ++d) {
      if (static_cast<int64_t>(d) == axis) continue;
      if (dims[d] == kUnknownDim) {
        dims[d] = other[d];
      } else if (other[d] != kUnknownDim && other[d] != dims[d]) {
        compatible = false;
      }
    }
    if (!compatible) {
      return InvalidArgument(node, "input ", i, " ", DimsToString(other),
                             " does not match input 0 ", DimsToString(args[0].dims),
                             " outside axis ", axis);
    }
    int64_t& total = dims[static_cast<size_t>(axis)];
    const int64_t add = other[static_cast<size_t>(axis)];
    total = total == kUnknownDim || add == kUnknownDim ? kUnknownDim : total + add;
  }
  return Single(args[0].dtype, std::move(dims));
}

absl::Status EvalConcat(const Node& node, std::span<const Arg> args,
                        std::span<const TensorView> outputs) {
  const Dims& out = outputs[0].dims;
  const int64_t axis =
      *NormalizeAxis(node, node.GetInt("axis", 0), static_cast<int64_t>(out.size()));
  const int64_t outer = KnownProduct(out, 0, static_cast<size_t>(axis));
  const int64_t inner_bytes = KnownProduct(out, static_cast<size_t>(axis) + 1, out.size()) *
                              static_cast<int64_t>(ElementSize(outputs[0].dtype));
  auto* dst = static_cast<std::byte*>(outputs[0].data);
  for (int64_t o = 0; o < outer; ++o) {
    for (const Arg& arg : args) {
      const int64_t bytes = arg.dims[static_cast<size_t>(axis)] * inner_bytes;
      if (bytes == 0) continue;
      std::memcpy(dst, static_cast<const std::byte*>(arg.data) + o * bytes,
                  static_cast<size_t>(bytes));
      dst += bytes;
    }
  }
  return absl::OkStatus();
}

// ---- Transpose ----

absl::StatusOr<std::vector<int64_t>> Permutation(const Node& node, size_t rank) {
  std::vector<int64_t> perm(rank);
  for (size_t i = 0; i < rank; ++i) perm[i] = static_cast<int64_t>(rank - 1 - i);
  perm = node.GetInts("perm", perm);
  std::vector<bool> seen(rank, false);
  bool valid = perm.size() == rank;
  for (size_t i = 0; valid && i < rank; ++i) {
    valid =
        perm[i] >= 0 && perm[i] < static_cast<int64_t>(rank) && !seen[static_cast<size_t>(perm[i])];
    if (valid) seen[static_cast<size_t>(perm[i])] = true;
  }
  if (!valid) {
    return InvalidArgument(node, "perm ", DimsToString(perm), " is not a permutation of ", rank,
                           " axes");
  }
  return perm;
}

absl::StatusOr<std::vector<ValueInfo>> InferTranspose(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 1));
  const Dims& in = args[0].dims;
  ASSIGN_OR_RETURN(const std::vector<int64_t> perm, Permutation(node, in.size()));
  Dims dims(in.size());
  for (size_t i = 0; i < in.size(); ++i) dims[i] = in[static_cast<size_t>(perm[i])];
  return Single(args[0].dtype, std::move(dims));
}

absl::Status EvalTranspose(const Node& node, std::span<const Arg> args,
                           std::span<const TensorView> outputs) {
  const Dims& in = args[0].dims;
  ASSIGN_OR_RETURN(const std::vector<int64_t> perm, Permutation(node, in.size()));
  const std::vector<int64_t> in_strides = ContiguousStrides(in);
  std::vector<int64_t> src_strides(in.size());
  for (size_t i = 0; i < in.size(); ++i) src_strides[i] = in_strides[static_cast<size_t>(perm[i])];
  const std::vector<int64_t> dst_strides = ContiguousStrides(outputs[0].dims);
  CopyStrided(ElementSize(args[0].dtype), outputs[0].dims, args[0].data, 0, src_strides.data(),
              outputs[0].data, 0, dst_strides.data());
  return absl::OkStatus();
}

// ---- Slice ----

struct SliceParams {
  Dims dims;                   // output dims
  std::vector<int64_t> start;  // first input index per dim
  std::vector<int64_t> step;   // input step per dim
};

absl::StatusOr<SliceParams> PrepareSlice(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 3, 5));
  const Dims& in = args[0].dims;
  const int64_t rank = static_cast<int64_t>(in.size());
  ASSIGN_OR_RETURN(const std::vector<int64_t> starts, ShapeLikeInput(node, args[1], "starts"));
  ASSIGN_OR_RETURN(const std::vector<int64_t> ends, ShapeLikeInput(node, args[2], "ends"));
  std::vector<int64_t> axes(starts.size());
  for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
  std::vector<int64_t> steps(starts.size(), 1);
  if (const Arg* a = Optional(args, 3)) {
    ASSIGN_OR_RETURN(axes, ShapeLikeInput(node, *a, "axes"));
  }
  if (const Arg* s = Optional(args, 4)) {
    ASSIGN_OR_RETURN(steps, ShapeLikeInput(node, *s, "steps"));
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return InvalidArgument(node, "starts, ends, axes and steps must have the same length, got ",
                           starts.size(), ", ", ends.size(), ", ", axes.size(), ", ", steps.size());
  }
  SliceParams p{in, std::vector<int64_t>(in.size(), 0), std::vector<int64_t>(in.size(), 1)};
  std::vector<bool> seen(in.size(), false);
  for (size_t i = 0; i < axes.size(); ++i) {
    ASSIGN_OR_RETURN(const int64_t axis, NormalizeAxis(node, axes[i], rank));
    const size_t a = static_cast<size_t>(axis);
    if (seen[a]) return InvalidArgument(node, "axes ", DimsToString(axes), " repeat an axis");
    seen[a] = true;
    const int64_t step = steps[i];
    if (step == 0) return InvalidArgument(node, "steps must not be 0");
    p.step[a] = step;
    const int64_t dim = in[a];
    if (dim == kUnknownDim) {
      p.dims[a] = kUnknownDim;
      continue;
    }
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t end = ends[i] < 0 ? ends[i] + dim : ends[i];
    int64_t count;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      count = end > start ? (end - start + step - 1) / step : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      count = start > end ? (start - end - step - 1) / -step : 0;
    }
    p.start[a] = start;
    p.dims[a] = count;
  }
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferSlice(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(SliceParams p, PrepareSlice(node, args));
  return Single(args[0].dtype, std::move(p.dims));
}

absl::Status EvalSlice(const Node& node, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const SliceParams p, PrepareSlice(node, args));
  const std::vector<int64_t> in_strides = ContiguousStrides(args[0].dims);
  int64_t base = 0;
  std::vector<int64_t> src_strides(in_strides.size());
  for (size_t d = 0; d < in_strides.size(); ++d) {
    base += p.start[d] * in_strides[d];
    src_strides[d] = p.step[d] * in_strides[d];
  }
  const std::vector<int64_t> dst_strides = ContiguousStrides(p.dims);
  CopyStrided(ElementSize(args[0].dtype), p.dims, args[0].data, base, src_strides.data(),
              outputs[0].data, 0, dst_strides.data());
  return absl::OkStatus();
}

// ---- Split ----

struct SplitParams {
  int64_t axis;
  std::vector<int64_t> sizes;  // per output, kUnknownDim when the axis is unknown
};

absl::StatusOr<SplitParams> PrepareSplit(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 1, 2, std::numeric_limits<size_t>::max()));
  const Dims& in = args[0].dims;
  SplitParams p;
  ASSIGN_OR_RETURN(p.axis,
                   NormalizeAxis(node, node.GetInt("axis", 0), static_cast<int64_t>(in.size())));
  const int64_t dim = in[static_cast<size_t>(p.axis)];
  const int64_t outputs = static_cast<int64_t>(node.outputs.size());
  if (const Arg* split = Optional(args, 1)) {
    ASSIGN_OR_RETURN(p.sizes, ShapeLikeInput(node, *split, "split"));
    int64_t total = 0;
    for (int64_t s : p.sizes) {
      if (s < 0)
        return InvalidArgument(node, "split ", DimsToString(p.sizes), " has a negative size");
      total += s;
    }
    if (static_cast<int64_t>(p.sizes.size()) != outputs) {
      return InvalidArgument(node, "split ", DimsToString(p.sizes), " has ", p.sizes.size(),
                             " sizes for ", outputs, " outputs");
    }
    if (dim != kUnknownDim && total != dim) {
      return InvalidArgument(node, "split ", DimsToString(p.sizes), " does not sum to dim ", dim,
                             " of axis ", p.axis);
    }
    return p;
  }
  if (node.HasAttribute("num_outputs") && node.GetInt("num_outputs", 0) != outputs) {
    return InvalidArgument(node, "num_outputs ", node.GetInt("num_outputs", 0),
                           " but the node has ", outputs, " outputs");
  }
  if (dim == kUnknownDim) {
    p.sizes.assign(static_cast<size_t>(outputs), kUnknownDim);
    return p;
  }
  // Equal parts; when the dim does not divide, all but the last are ceil(dim / n) long.
  const int64_t chunk = (dim + outputs - 1) / outputs;
  p.sizes.assign(static_cast<size_t>(outputs), chunk);
  p.sizes.back() = dim - chunk * (outputs - 1);
  if (p.sizes.back() < 0) {
    return InvalidArgument(node, "cannot split dim ", dim, " into ", outputs, " parts");
  }
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferSplit(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(const SplitParams p, PrepareSplit(node, args));
  std::vector<ValueInfo> outputs(p.sizes.size());
  for (size_t i = 0; i < p.sizes.size(); ++i) {
    outputs[i].dtype = args[0].dtype;
    outputs[i].dims = args[0].dims;
    outputs[i].dims[static_cast<size_t>(p.axis)] = p.sizes[i];
  }
  return outputs;
}

absl::Status EvalSplit(const Node& node, std::span<const Arg> args,
                       std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const SplitParams p, PrepareSplit(node, args));
  const Dims& in = args[0].dims;
  const int64_t outer = KnownProduct(in, 0, static_cast<size_t>(p.axis));
  const int64_t inner_bytes = KnownProduct(in, static_cast<size_t>(p.axis) + 1, in.size()) *
                              static_cast<int64_t>(ElementSize(args[0].dtype));
  const int64_t row_bytes = in[static_cast<size_t>(p.axis)] * inner_bytes;
  const auto* src = static_cast<const std::byte*>(args[0].data);
  int64_t offset = 0;
  for (size_t k = 0; k < p.sizes.size(); ++k) {
    const int64_t bytes = p.sizes[k] * inner_bytes;
    if (outputs[k].data != nullptr && bytes > 0) {
      auto* dst = static_cast<std::byte*>(outputs[k].data);
      for (int64_t o = 0; o < outer; ++o) {
        std::memcpy(dst + o * bytes, src + o * row_bytes + offset, static_cast<size_t>(bytes));
      }
    }
    offset += bytes;
  }
  return absl::OkStatus();
}

// ---- Pad ----

struct PadParams {
  Dims dims;                        // output dims
  std::vector<int64_t> begin, end;  // per dim, negative crops
};

absl::StatusOr<PadParams> PreparePad(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 4));
  const std::string mode = node.GetString("mode", "constant");
  if (mode != "constant") return Unimplemented(node, "mode '", mode, "' is not supported");
  const Dims& in = args[0].dims;
  const int64_t rank = static_cast<int64_t>(in.size());
  ASSIGN_OR_RETURN(const std::vector<int64_t> pads, ShapeLikeInput(node, args[1], "pads"));
  std::vector<int64_t> axes(in.size());
  for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
  if (const Arg* a = Optional(args, 3)) {
    ASSIGN_OR_RETURN(const std::vector<int64_t> given, ShapeLikeInput(node, *a, "axes"));
    axes.clear();
    for (int64_t axis : given) {
      ASSIGN_OR_RETURN(const int64_t normalized, NormalizeAxis(node, axis, rank));
      axes.push_back(normalized);
    }
  }
  if (pads.size() != 2 * axes.size()) {
    return InvalidArgument(node, "pads ", DimsToString(pads), " must have ", 2 * axes.size(),
                           " values for input ", DimsToString(in));
  }
  if (const Arg* value = Optional(args, 2)) {
    if (value->dtype != args[0].dtype || value->num_elements() != 1) {
      return InvalidArgument(node, "constant_value must be a one-element ", TypeName(args[0].dtype),
                             " tensor");
    }
  }
  PadParams p{in, std::vector<int64_t>(in.size(), 0), std::vector<int64_t>(in.size(), 0)};
  for (size_t i = 0; i < axes.size(); ++i) {
    const size_t a = static_cast<size_t>(axes[i]);
    p.begin[a] = pads[i];
    p.end[a] = pads[axes.size() + i];
  }
  for (size_t d = 0; d < in.size(); ++d) {
    if (in[d] == kUnknownDim) continue;
    p.dims[d] = in[d] + p.begin[d] + p.end[d];
    if (p.dims[d] < 0) {
      return InvalidArgument(node, "pads ", DimsToString(pads), " crop more than input ",
                             DimsToString(in));
    }
  }
  return p;
}

absl::StatusOr<std::vector<ValueInfo>> InferPad(const Node& node, std::span<const Arg> args) {
  ASSIGN_OR_RETURN(PadParams p, PreparePad(node, args));
  return Single(args[0].dtype, std::move(p.dims));
}

absl::Status EvalPad(const Node& node, std::span<const Arg> args,
                     std::span<const TensorView> outputs) {
  ASSIGN_OR_RETURN(const PadParams p, PreparePad(node, args));
  const size_t element_size = ElementSize(args[0].dtype);
  const Arg* value = Optional(args, 2);
  const int64_t n = NumElements(p.dims);
  VisitWord(element_size, [&](auto word) {
    using Word = decltype(word);
    Word fill{};
    if (value != nullptr) std::memcpy(&fill, value->data, sizeof(Word));
    Word* out = static_cast<Word*>(outputs[0].data);
    for (int64_t i = 0; i < n; ++i) out[i] = fill;
  });
  // Copy the part of the input that lands inside the output.
  const Dims& in = args[0].dims;
  const std::vector<int64_t> in_strides = ContiguousStrides(in);
  const std::vector<int64_t> out_strides = ContiguousStrides(p.dims);
  Dims region(in.size());
  int64_t src_base = 0;
  int64_t dst_base = 0;
  for (size_t d = 0; d < in.size(); ++d) {
    const int64_t first = std::max<int64_t>(0, -p.begin[d]);
    const int64_t last = std::min(in[d], p.dims[d] - p.begin[d]);
    region[d] = std::max<int64_t>(0, last - first);
    src_base += first * in_strides[d];
    dst_base += (first + p.begin[d]) * out_strides[d];
  }
  CopyStrided(element_size, region, args[0].data, src_base, in_strides.data(), outputs[0].data,
              dst_base, out_strides.data());
  return absl::OkStatus();
}

// ---- Expand, Tile ----

absl::StatusOr<std::vector<ValueInfo>> InferExpand(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  ASSIGN_OR_RETURN(const std::vector<int64_t> shape, ShapeLikeInput(node, args[1], "shape"));
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument(node, "shape ", DimsToString(shape), " has a negative dim");
  }
  ASSIGN_OR_RETURN(Dims dims, BroadcastDims(node, args[0].dims, shape));
  return Single(args[0].dtype, std::move(dims));
}

absl::Status EvalExpand(const Node&, std::span<const Arg> args,
                        std::span<const TensorView> outputs) {
  const Dims& out = outputs[0].dims;
  const std::vector<int64_t> src_strides = BroadcastStrides(args[0].dims, out);
  const std::vector<int64_t> dst_strides = ContiguousStrides(out);
  CopyStrided(ElementSize(args[0].dtype), out, args[0].data, 0, src_strides.data(), outputs[0].data,
              0, dst_strides.data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ValueInfo>> InferTile(const Node& node, std::span<const Arg> args) {
  RETURN_IF_ERROR(CheckArity(node, args, 2, 2));
  ASSIGN_OR_RETURN(const std::vector<int64_t> repeats, ShapeLikeInput(node, args[1], "repeats"));
  const Dims& in = args[0].dims;
  if (repeats.size() != in.size()) {
    return InvalidArgument(node, "repeats ", DimsToString(repeats),
                           " must have one value per dim of ", DimsToString(in));
  }
  Dims dims(in.size());
  for (size_t d = 0; d < in.size(); ++d) {
    if (repeats[d] < 0)
      return InvalidArgument(node, "repeats ", DimsToString(repeats), " has a negative value");
    dims[d] = in[d] == kUnknownDim ? kUnknownDim : in[d] * repeats[d];
  }
  return Single(args[0].dtype, std::move(dims));
}

absl::Status EvalTile(const Node&, std::span<const Arg> args, std::span<const TensorView> outputs) {
  // The output read as dims [r0, d0, r1, d1, ...]: repeat k of dim d starts at k * d0 rows.
  const Dims& in = args[0].dims;
  const Dims& out = outputs[0].dims;
  const std::vector<int64_t> in_strides = ContiguousStrides(in);
  const std::vector<int64_t> out_strides = ContiguousStrides(out);
  Dims dims;
  std::vector<int64_t> src_strides, dst_strides;
  for (size_t d = 0; d < in.size(); ++d) {
    dims.push_back(in[d] == 0 ? 0 : out[d] / in[d]);
    src_strides.push_back(0);
    dst_strides.push_back(in[d] * out_strides[d]);
    dims.push_back(in[d]);
    src_strides.push_back(in_strides[d]);
    dst_strides.push_back(out_strides[d]);
  }
  CopyStrided(ElementSize(args[0].dtype), dims, args[0].data, 0, src_strides.data(),
              outputs[0].data, 0, dst_strides.data());
  return absl::OkStatus();
}

}  // namespace

const OpKernels kIdentityOp = {InferIdentity, AnyType, EvalIdentity};
const OpKernels kShapeOp = {InferShape, AnyType, EvalShape};
const OpKernels kSizeOp = {InferSize, AnyType, EvalSize};
const OpKernels kGatherOp = {InferGather, AnyType, EvalGather};
const OpKernels kConstantOfShapeOp = {InferConstantOfShape, AnyType, EvalConstantOfShape};
const OpKernels kRangeOp = {InferRange, CheckRange, EvalRange};
const OpKernels kUnsqueezeOp = {InferUnsqueeze, AnyType, EvalCopy};
const OpKernels kSqueezeOp = {InferSqueeze, AnyType, EvalCopy};
const OpKernels kConcatOp = {InferConcat, AnyType, EvalConcat};
const OpKernels kReshapeOp = {InferReshape, AnyType, EvalCopy};
const OpKernels kFlattenOp = {InferFlatten, AnyType, EvalCopy};
const OpKernels kTransposeOp = {InferTranspose, AnyType, EvalTranspose};
const OpKernels kSliceOp = {InferSlice, AnyType, EvalSlice};
const OpKernels kSplitOp = {InferSplit, AnyType, EvalSplit};
const OpKernels kPadOp = {InferPad, AnyType, EvalPad};
const OpKernels kExpandOp = {InferExpand, AnyType, EvalExpand};
const OpKernels kTileOp = {InferTile, AnyType, EvalTile};

}  // namespace convserve::engine::host::internal
