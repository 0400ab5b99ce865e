// The host op registry, the public entry points, and the helpers the op families share.
#include "server/engine/host_ops.h"

#include <algorithm>
#include <string_view>

#include "server/common/status.h"
#include "server/engine/host_ops_internal.h"
#include "server/engine/spatial_math.h"

namespace convserve::engine::host {
namespace internal {

std::string NodeLabel(const Node& node) {
  return absl::StrCat("node '", node.name, "' (", node.op_type, ")");
}

absl::Status CheckArity(const Node& node, std::span<const Arg> args, size_t min_inputs,
                        size_t max_inputs, size_t max_outputs) {
  // Trailing absent optional inputs do not count.
  size_t count = args.size();
  while (count > 0 && !args[count - 1].present()) --count;
  if (count < min_inputs || count > max_inputs) {
    if (min_inputs == max_inputs) {
      return InvalidArgument(node, "expects ", min_inputs, " input(s), got ", count);
    }
    return InvalidArgument(node, "expects ", min_inputs, " to ", max_inputs, " inputs, got ",
                           count);
  }
  for (size_t i = 0; i < min_inputs; ++i) {
    if (!args[i].present()) return InvalidArgument(node, "required input ", i, " is absent");
  }
  if (node.outputs.empty() || node.outputs.size() > max_outputs) {
    return InvalidArgument(node, "expects 1 to ", max_outputs, " output(s), got ",
                           node.outputs.size());
  }
  return absl::OkStatus();
}

const Arg* Optional(std::span<const Arg> args, size_t i) {
  return i < args.size() && args[i].present() ? &args[i] : nullptr;
}

absl::Status RequireType(const Node& node, std::span<const Arg> args, size_t i,
                         std::initializer_list<DataType> allowed) {
  if (i >= args.size() || !args[i].present()) return absl::OkStatus();
  if (std::find(allowed.begin(), allowed.end(), args[i].dtype) != allowed.end()) {
    return absl::OkStatus();
  }
  return Unimplemented(node, "data type ", TypeName(args[i].dtype), " of input ", i,
                       " is not supported");
}

absl::Status RequireSameType(const Node& node, std::span<const Arg> args, size_t first,
                             size_t last) {
  for (size_t i = first + 1; i <= last && i < args.size(); ++i) {
    if (args[i].present() && args[i].dtype != args[first].dtype) {
      return InvalidArgument(node, "input ", i, " has data type ", TypeName(args[i].dtype),
                             " but input ", first, " has ", TypeName(args[first].dtype));
    }
  }
  return absl::OkStatus();
}

double ValueAsDouble(const Arg& arg, int64_t i) {
  switch (arg.dtype) {
    case DataType::kFloat32:
      return arg.values<float>()[i];
    case DataType::kFloat64:
      return arg.values<double>()[i];
    case DataType::kFloat16:
      return HalfToFloat(arg.values<uint16_t>()[i]);
    case DataType::kBFloat16:
      return BFloat16ToFloat(arg.values<uint16_t>()[i]);
    case DataType::kInt8:
      return arg.values<int8_t>()[i];
    case DataType::kUint8:
      return arg.values<uint8_t>()[i];
    case DataType::kBool:
      return arg.values<uint8_t>()[i] != 0 ? 1.0 : 0.0;
    case DataType::kInt16:
      return arg.values<int16_t>()[i];
    case DataType::kUint16:
      return arg.values<uint16_t>()[i];
    case DataType::kInt32:
      return arg.values<int32_t>()[i];
    case DataType::kUint32:
      return arg.values<uint32_t>()[i];
    case DataType::kInt64:
      return static_cast<double>(arg.values<int64_t>()[i]);
    case DataType::kUint64:
      return static_cast<double>(arg.values<uint64_t>()[i]);
    case DataType::kUndefined:
      break;
  }
  return 0.0;
}

int64_t ValueAsInt64(const Arg& arg, int64_t i) {
  switch (arg.dtype) {
    case DataType::kInt8:
      return arg.values<int8_t>()[i];
    case DataType::kUint8:
      return arg.values<uint8_t>()[i];
    case DataType::kBool:
      return arg.values<uint8_t>()[i] != 0 ? 1 : 0;
    case DataType::kInt16:
      return arg.values<int16_t>()[i];
    case DataType::kUint16:
      return arg.values<uint16_t>()[i];
    case DataType::kInt32:
      return arg.values<int32_t>()[i];
    case DataType::kUint32:
      return arg.values<uint32_t>()[i];
    case DataType::kInt64:
      return arg.values<int64_t>()[i];
    case DataType::kUint64:
      return static_cast<int64_t>(arg.values<uint64_t>()[i]);
    default:
      return static_cast<int64_t>(ValueAsDouble(arg, i));
  }
}

absl::StatusOr<std::vector<int64_t>> ShapeLikeInput(const Node& node, const Arg& arg,
                                                    const std::string& name) {
  if (arg.dtype != DataType::kInt64 && arg.dtype != DataType::kInt32) {
    return InvalidArgument(node, "input '", name, "' must be INT64 or INT32, got ",
                           TypeName(arg.dtype));
  }
  if (arg.dims.size() > 1) {
    return InvalidArgument(node, "input '", name, "' must be 1-D, got ", DimsToString(arg.dims));
  }
  if (!AllKnown(arg.dims) || !arg.known()) {
    return Unimplemented(node, "requires a constant '", name, "' input");
  }
  std::vector<int64_t> values(static_cast<size_t>(arg.num_elements()));
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = ValueAsInt64(arg, static_cast<int64_t>(i));
  }
  return values;
}

absl::StatusOr<int64_t> NormalizeAxis(const Node& node, int64_t axis, int64_t rank,
                                      const std::string& what) {
  if (axis < -rank || axis >= rank) {
    return InvalidArgument(node, what, " ", axis, " is out of range for rank ", rank);
  }
  return axis < 0 ? axis + rank : axis;
}

absl::StatusOr<std::vector<int64_t>> NormalizeAxes(const Node& node,
                                                   const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<int64_t> result;
  result.reserve(axes.size());
  for (int64_t axis : axes) {
    ASSIGN_OR_RETURN(int64_t normalized, NormalizeAxis(node, axis, rank));
    result.push_back(normalized);
  }
  std::sort(result.begin(), result.end());
  if (std::adjacent_find(result.begin(), result.end()) != result.end()) {
    return InvalidArgument(node, "axes ", DimsToString(axes), " repeat an axis");
  }
  return result;
}

std::vector<ValueInfo> Single(DataType dtype, Dims dims) {
  std::vector<ValueInfo> outputs(1);
  outputs[0].dtype = dtype;
  outputs[0].dims = std::move(dims);
  return outputs;
}

int64_t KnownProduct(const Dims& dims, size_t begin, size_t end) {
  int64_t product = 1;
  for (size_t i = begin; i < end && i < dims.size(); ++i) {
    if (dims[i] < 0) return kUnknownDim;
    product *= dims[i];
  }
  return product;
}

bool AllKnown(const Dims& dims) {
  return std::all_of(dims.begin(), dims.end(), [](int64_t d) { return d >= 0; });
}

absl::StatusOr<Dims> BroadcastDims(const Node& node, const Dims& a, const Dims& b) {
  const size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db) {
      out[i] = da;
    } else if (da == 1) {
      out[i] = db;
    } else if (db == 1) {
      out[i] = da;
    } else if (da == kUnknownDim) {
      out[i] = db;  // must be db at run time
    } else if (db == kUnknownDim) {
      out[i] = da;
    } else {
      return InvalidArgument(node, "shapes ", DimsToString(a), " and ", DimsToString(b),
                             " are not broadcast-compatible");
    }
  }
  return out;
}

std::vector<int64_t> ContiguousStrides(const Dims& dims) {
  std::vector<int64_t> strides(dims.size());
  int64_t stride = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= dims[i];
  }
  return strides;
}

std::vector<int64_t> BroadcastStrides(const Dims& in, const Dims& out) {
  std::vector<int64_t> strides(out.size(), 0);
  const std::vector<int64_t> in_strides = ContiguousStrides(in);
  const size_t offset = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    strides[offset + i] = in[i] == 1 ? 0 : in_strides[i];
  }
  return strides;
}

void CopyStrided(size_t element_size, const Dims& dims, const void* src, int64_t src_base,
                 const int64_t* src_strides, void* dst, int64_t dst_base,
                 const int64_t* dst_strides) {
  VisitWord(element_size, [&](auto word) {
    using Word = decltype(word);
    const Word* in = static_cast<const Word*>(src);
    Word* out = static_cast<Word*>(dst);
    ForEachStrided<2>(dims, {src_strides, dst_strides}, {src_base, dst_base},
                      [&](const std::array<int64_t, 2>& o) { out[o[1]] = in[o[0]]; });
  });
}

absl::StatusOr<WindowGeometry> ComputeWindowGeometry(const Node& node, const Dims& input_spatial,
                                                     const std::vector<int64_t>& kernel,
                                                     bool allow_ceil_mode) {
  const size_t n = input_spatial.size();
  WindowGeometry g;
  g.kernel = kernel;
  if (kernel.size() != n) {
    return InvalidArgument(node, "kernel_shape ", DimsToString(kernel), " does not match ", n,
                           " spatial dims");
  }
  g.strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  g.dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  std::vector<int64_t> pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  if (g.strides.size() != n || g.dilations.size() != n || pads.size() != 2 * n) {
    return InvalidArgument(node, "strides ", DimsToString(g.strides), ", dilations ",
                           DimsToString(g.dilations), " and pads ", DimsToString(pads),
                           " must have ", n, ", ", n, " and ", 2 * n, " values");
  }
  for (size_t i = 0; i < n; ++i) {
    if (kernel[i] < 1 || g.strides[i] < 1 || g.dilations[i] < 1 || pads[i] < 0 || pads[n + i] < 0) {
      return InvalidArgument(node, "kernel_shape ", DimsToString(kernel), ", strides ",
                             DimsToString(g.strides), ", dilations ", DimsToString(g.dilations),
                             " must be positive and pads ", DimsToString(pads), " non-negative");
    }
  }
  const std::string auto_pad_name = node.GetString("auto_pad", "NOTSET");
  const bool ceil_mode = node.GetInt("ceil_mode", 0) != 0;
  if (ceil_mode && !allow_ceil_mode) return Unimplemented(node, "ceil_mode is not supported");
  const std::optional<AutoPad> auto_pad = ParseAutoPad(auto_pad_name);
  if (!auto_pad) return InvalidArgument(node, "unknown auto_pad '", auto_pad_name, "'");
  g.output.resize(n);
  g.pad_begin.assign(pads.begin(), pads.begin() + static_cast<int64_t>(n));
  g.pad_end.assign(pads.begin() + static_cast<int64_t>(n), pads.end());
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = input_spatial[i];
    const int64_t window = WindowExtent(kernel[i], g.dilations[i]);
    if (*auto_pad == AutoPad::kValid) g.pad_begin[i] = g.pad_end[i] = 0;
    if (in < 0) {
      g.output[i] = kUnknownDim;
      continue;
    }
    const std::optional<WindowAxis> axis = ResolveWindowAxis(
        in, *auto_pad, window, g.strides[i], {g.pad_begin[i], g.pad_end[i]}, ceil_mode);
    if (!axis) {
      return InvalidArgument(node, "window ", window, " is larger than the padded input ",
                             in + g.pad_begin[i] + g.pad_end[i], " in spatial dim ", i);
    }
    g.pad_begin[i] = axis->pads.begin;
    g.pad_end[i] = axis->pads.end;
    g.output[i] = axis->output;
  }
  return g;
}

}  // namespace internal

namespace {

using internal::Arg;
using internal::OpKernels;
using internal::TypeName;

struct OpEntry {
  std::string_view op_type;
  const OpKernels* kernels;
};

// Every op the host path knows, and the kernels that implement it.
const OpKernels* FindOp(std::string_view op_type) {
  using namespace internal;  // NOLINT: the registry names every family
  static constexpr OpEntry kOps[] = {
      // data movement and shape arithmetic
      {"Identity", &kIdentityOp},
      {"Dropout", &kIdentityOp},
      {"Shape", &kShapeOp},
      {"Size", &kSizeOp},
      {"Gather", &kGatherOp},
      {"Cast", &kCastOp},
      {"ConstantOfShape", &kConstantOfShapeOp},
      {"Range", &kRangeOp},
      {"Unsqueeze", &kUnsqueezeOp},
      {"Squeeze", &kSqueezeOp},
      {"Concat", &kConcatOp},
      {"Reshape", &kReshapeOp},
      {"Flatten", &kFlattenOp},
      {"Transpose", &kTransposeOp},
      {"Slice", &kSliceOp},
      {"Split", &kSplitOp},
      {"Pad", &kPadOp},
      {"Expand", &kExpandOp},
      {"Tile", &kTileOp},
      {"Where", &kWhereOp},
      // comparison and logic
      {"Equal", &kCompareOp},
      {"Less", &kCompareOp},
      {"Greater", &kCompareOp},
      {"Not", &kNotOp},
      // arithmetic
      {"Add", &kBinaryOp},
      {"Sub", &kBinaryOp},
      {"Mul", &kBinaryOp},
      {"Div", &kBinaryOp},
      {"Pow", &kBinaryOp},
      {"Min", &kVariadicOp},
      {"Max", &kVariadicOp},
      {"Sum", &kVariadicOp},
      {"Mean", &kVariadicOp},
      {"Neg", &kUnaryOp},
      {"Abs", &kUnaryOp},
      {"Sqrt", &kUnaryOp},
      {"Exp", &kUnaryOp},
      {"Log", &kUnaryOp},
      {"Reciprocal", &kUnaryOp},
      {"Floor", &kUnaryOp},
      {"Ceil", &kUnaryOp},
      {"Erf", &kUnaryOp},
      // activations
      {"Relu", &kUnaryOp},
      {"LeakyRelu", &kUnaryOp},
      {"PRelu", &kPReluOp},
      {"Clip", &kClipOp},
      {"Sigmoid", &kUnaryOp},
      {"HardSigmoid", &kUnaryOp},
      {"HardSwish", &kUnaryOp},
      {"Tanh", &kUnaryOp},
      {"Elu", &kUnaryOp},
      {"Selu", &kUnaryOp},
      {"Softplus", &kUnaryOp},
      {"Softsign", &kUnaryOp},
      {"Softmax", &kSoftmaxOp},
      {"LogSoftmax", &kSoftmaxOp},
      // reductions
      {"ReduceMean", &kReduceOp},
      {"ReduceMax", &kReduceOp},
      {"ReduceMin", &kReduceOp},
      {"ReduceSum", &kReduceOp},
      {"ReduceProd", &kReduceOp},
      // linear algebra and convnet layers
      {"MatMul", &kMatMulOp},
      {"Gemm", &kGemmOp},
      {"BatchNormalization", &kBatchNormOp},
      {"MaxPool", &kPoolOp},
      {"AveragePool", &kPoolOp},
      {"GlobalAveragePool", &kGlobalPoolOp},
      {"GlobalMaxPool", &kGlobalPoolOp},
      {"Conv", &kConvOp},
  };
  for (const OpEntry& entry : kOps) {
    if (entry.op_type == op_type) return entry.kernels;
  }
  return nullptr;
}

absl::Status UnsupportedOp(const Node& node) {
  return internal::Unimplemented(node, "unsupported op type '", node.op_type, "'");
}

bool InputNamed(const Node& node, size_t i) {
  return i >= node.inputs.size() || !node.inputs[i].empty();
}

absl::StatusOr<std::vector<Arg>> ArgsFromStates(const Node& node,
                                                std::span<const InputState> inputs) {
  std::vector<Arg> args(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const InputState& state = inputs[i];
    if (!InputNamed(node, i) || state.dtype == DataType::kUndefined) continue;
    args[i].dtype = state.dtype;
    args[i].dims = state.dims;
    if (state.constant != nullptr) {
      const Tensor& c = *state.constant;
      if (c.dtype != state.dtype || c.dims != state.dims ||
          c.bytes.size() < static_cast<size_t>(c.num_elements()) * ElementSize(c.dtype)) {
        return internal::InvalidArgument(node, "constant input ", i, " (", TypeName(c.dtype), " ",
                                         DimsToString(c.dims), ") does not match its declared ",
                                         TypeName(state.dtype), " ", DimsToString(state.dims));
      }
      args[i].data = c.bytes.data();
    }
  }
  return args;
}

std::vector<Arg> ArgsFromViews(const Node& node, std::span<const TensorView> inputs) {
  std::vector<Arg> args(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorView& view = inputs[i];
    const bool absent = !InputNamed(node, i) || view.dtype == DataType::kUndefined ||
                        (view.data == nullptr && NumElements(view.dims) != 0);
    if (absent) continue;
    args[i].dtype = view.dtype;
    args[i].dims = view.dims;
    args[i].data = view.data;
  }
  return args;
}

absl::StatusOr<std::vector<ValueInfo>> Infer(const Node& node, const OpKernels& op,
                                             std::span<const Arg> args) {
  ASSIGN_OR_RETURN(std::vector<ValueInfo> outputs, op.infer(node, args));
  outputs.resize(std::max(outputs.size(), node.outputs.size()));
  for (size_t i = 0; i < outputs.size() && i < node.outputs.size(); ++i) {
    outputs[i].name = node.outputs[i];
  }
  return outputs;
}

}  // namespace

absl::StatusOr<std::vector<ValueInfo>> InferOutputs(const Node& node,
                                                    std::span<const InputState> inputs) {
  const OpKernels* op = FindOp(node.op_type);
  if (op == nullptr) return UnsupportedOp(node);
  ASSIGN_OR_RETURN(std::vector<Arg> args, ArgsFromStates(node, inputs));
  return Infer(node, *op, args);
}

bool CanEvaluate(const Node& node, std::span<const InputState> inputs) {
  const OpKernels* op = FindOp(node.op_type);
  if (op == nullptr) return false;
  absl::StatusOr<std::vector<Arg>> args = ArgsFromStates(node, inputs);
  if (!args.ok() || !op->check(node, *args).ok()) return false;
  return op->infer(node, *args).ok();
}

absl::Status Evaluate(const Node& node, std::span<const TensorView> inputs,
                      std::span<const TensorView> outputs) {
  const OpKernels* op = FindOp(node.op_type);
  if (op == nullptr) return UnsupportedOp(node);
  const std::vector<Arg> args = ArgsFromViews(node, inputs);
  RETURN_IF_ERROR(op->check(node, args));
  ASSIGN_OR_RETURN(std::vector<ValueInfo> expected, Infer(node, *op, args));
  // Outputs the caller does not want (absent view or unnamed) reach the op with data == nullptr,
  // except output 0, which every op writes: it gets a scratch buffer.
  std::vector<TensorView> views(expected.size());
  std::vector<std::byte> scratch;
  for (size_t i = 0; i < expected.size(); ++i) {
    views[i].dtype = expected[i].dtype;
    views[i].dims = expected[i].dims;
    const bool wanted =
        i < outputs.size() && (i >= node.outputs.size() || !node.outputs[i].empty());
    if (!wanted || (outputs[i].data == nullptr && NumElements(expected[i].dims) != 0)) {
      if (i == 0) {
        scratch.resize(views[0].byte_size());
        views[0].data = scratch.data();
      }
      continue;
    }
    if (outputs[i].dtype != expected[i].dtype || outputs[i].dims != expected[i].dims) {
      return internal::InvalidArgument(
          node, "output ", i, " is ", internal::TypeName(outputs[i].dtype), " ",
          DimsToString(outputs[i].dims), " but the op produces ",
          internal::TypeName(expected[i].dtype), " ", DimsToString(expected[i].dims));
    }
    views[i].data = outputs[i].data;
  }
  return op->eval(node, args, views);
}

absl::StatusOr<std::vector<Tensor>> EvaluateConstant(const Node& node,
                                                     std::span<const Tensor* const> inputs) {
  std::vector<InputState> states(inputs.size());
  std::vector<TensorView> input_views(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) {
      input_views[i].dtype = DataType::kUndefined;
      continue;
    }
    states[i] = {inputs[i]->dtype, inputs[i]->dims, inputs[i]};
    input_views[i] = {inputs[i]->dtype, inputs[i]->dims,
                      const_cast<std::byte*>(inputs[i]->bytes.data())};
  }
  ASSIGN_OR_RETURN(std::vector<ValueInfo> infos, InferOutputs(node, states));
  std::vector<Tensor> results;
  std::vector<TensorView> output_views;
  results.reserve(infos.size());
  for (const ValueInfo& info : infos) {
    if (!internal::AllKnown(info.dims)) {
      return internal::InvalidArgument(node, "output dims ", DimsToString(info.dims),
                                       " are not known");
    }
    results.emplace_back(info.dtype, info.dims);
  }
  for (Tensor& t : results) output_views.push_back({t.dtype, t.dims, t.bytes.data()});
  RETURN_IF_ERROR(Evaluate(node, input_views, output_views));
  return results;
}

}  // namespace convserve::engine::host
