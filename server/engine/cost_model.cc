#include "server/engine/cost_model.h"

#include <algorithm>
#include <map>
#include <string>

#include "server/engine/spatial_math.h"

namespace convserve::engine {
namespace {

// An attribute's i-th value, or `fallback` when the step did not record it.
int64_t AttributeOr(const StepInfo& step, const char* name, size_t i, int64_t fallback) {
  auto it = step.shape_attributes.find(name);
  if (it == step.shape_attributes.end() || i >= it->second.size()) return fallback;
  return it->second[i];
}

int64_t Product(const Dims& dims, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end && i < dims.size(); ++i) p *= dims[i];
  return p;
}

// Kernel, stride, dilation and pads of a Conv or pool over `spatial` spatial dims. A kernel
// that the step did not record stays empty.
struct Window {
  Dims kernel, strides, dilations, pad_begin, pad_end;
};

Window ReadWindow(const StepInfo& step, size_t spatial) {
  Window w;
  auto it = step.shape_attributes.find("kernel_shape");
  if (it != step.shape_attributes.end() && it->second.size() == spatial) w.kernel = it->second;
  for (size_t i = 0; i < spatial; ++i) {
    w.strides.push_back(AttributeOr(step, "strides", i, 1));
    w.dilations.push_back(AttributeOr(step, "dilations", i, 1));
    w.pad_begin.push_back(AttributeOr(step, "pads", i, 0));
    w.pad_end.push_back(AttributeOr(step, "pads", spatial + i, 0));
  }
  return w;
}

// Fills the 2-D view of the window (1-D windows report 1 for the missing W extent).
void SetWindowFields(const Window& w, LayerCost& cost) {
  auto at = [](const Dims& d, size_t i) { return i < d.size() ? d[i] : (d.empty() ? 0 : 1); };
  cost.kernel_h = at(w.kernel, 0);
  cost.kernel_w = at(w.kernel, 1);
  cost.stride_h = at(w.strides, 0);
  cost.stride_w = at(w.strides, 1);
  cost.dilation_h = at(w.dilations, 0);
  cost.dilation_w = at(w.dilations, 1);
}

// [N, C, spatial...] with each spatial extent from WindowOutputSize's floor form: the pads a
// step records already include any ceil_mode or auto_pad adjustment. An extent that cannot be
// derived (window wider than the padded input, stride < 1) is 0.
Dims WindowOutputDims(const Dims& x, int64_t channels, const Window& w) {
  Dims y = {x[0], channels};
  for (size_t i = 0; i + 2 < x.size(); ++i) {
    const int64_t stride = w.strides[i];
    y.push_back(stride < 1 ? 0
                           : WindowOutputSize(x[2 + i], WindowExtent(w.kernel[i], w.dilations[i]),
                                              stride, w.pad_begin[i], w.pad_end[i])
                                 .value_or(0));
  }
  return y;
}

void CostConv(const StepInfo& step, LayerCost& cost) {
  const Dims& x = cost.input_dims;
  const int64_t groups = std::max<int64_t>(1, AttributeOr(step, "group", 0, 1));
  cost.groups = groups;
  if (x.size() < 2) return;  // no runtime data input: nothing to cost from shapes
  const size_t spatial = x.size() - 2;
  const Window w = ReadWindow(step, spatial);
  SetWindowFields(w, cost);
  const bool kernel_known = !w.kernel.empty();
  const int64_t kernel_volume = kernel_known ? Product(w.kernel, 0, spatial) : 0;
  const int64_t c_in = x[1];

  int64_t c_out = 0;
  if (cost.output_dims.size() >= 2) {
    c_out = cost.output_dims[1];
  } else if (kernel_known && kernel_volume * (c_in / groups) > 0) {
    c_out = step.weight_elements / (kernel_volume * (c_in / groups));
  }
  if (cost.output_dims.empty() && kernel_known) cost.output_dims = WindowOutputDims(x, c_out, w);
  const Dims& y = cost.output_dims;
  if (y.size() != x.size()) return;

  if (cost.weight_params == 0 && kernel_known) {
    cost.weight_params = kernel_volume * (c_in / groups) * c_out;
  }
  const int64_t out_positions = Product(y, 2, y.size());
  // Every output element takes kernel_volume·(c_in/groups) MACs, i.e. the weights of its
  // output channel: without a recorded kernel, N·positions·weights is the same count.
  cost.macs = kernel_known ? x[0] * out_positions * kernel_volume * (c_in / groups) * c_out
                           : x[0] * out_positions * cost.weight_params;
  cost.flops = 2 * cost.macs;
  cost.kind = ConvKind(cost.kernel_h, cost.kernel_w, c_in, c_out, groups);
  cost.dense_equivalent_params =
      DenseEquivalentParams(Product(x, 2, x.size()), 1, c_in, out_positions, 1, c_out, true);
}

void CostPool(const StepInfo& step, LayerCost& cost) {
  const Dims& x = cost.input_dims;
  if (x.size() < 2) return;
  const size_t spatial = x.size() - 2;
  Window w = ReadWindow(step, spatial);
  if (w.kernel.empty() && cost.kind == LayerKind::kGlobalPooling) {
    w.kernel = Dims(x.begin() + 2, x.end());
  }
  SetWindowFields(w, cost);
  if (w.kernel.empty()) return;
  if (cost.output_dims.empty()) cost.output_dims = WindowOutputDims(x, x[1], w);
  cost.flops = NumElements(cost.output_dims) * Product(w.kernel, 0, spatial);
}

void CostDense(LayerCost& cost) {
  const Dims& a = cost.input_dims;
  const Dims& y = cost.output_dims;
  if (a.empty()) return;
  // The reduced extent K: A is [..., M, K] (or [K]); a Gemm with transA has A = [K, M]; a MatMul
  // whose A is constant records only B = [..., K, N]. In the last two, A's last extent is not M.
  int64_t k = a.back();
  if (a.size() >= 2 && y.size() >= 2 && a[a.size() - 2] != y[y.size() - 2]) k = a[a.size() - 2];
  cost.macs = NumElements(y) * k;
  cost.flops = 2 * cost.macs;
  cost.dense_equivalent_params = cost.weight_params + cost.bias_params;
}

int64_t SumOfElements(const std::vector<Dims>& dims) {
  int64_t total = 0;
  for (const Dims& d : dims) total += NumElements(d);
  return total;
}

}  // namespace

const char* LayerKindName(LayerKind kind) {
  switch (kind) {
    case LayerKind::kDenseConv:
      return "dense_conv";
    case LayerKind::kDepthwiseConv:
      return "depthwise_conv";
    case LayerKind::kGroupedConv:
      return "grouped_conv";
    case LayerKind::kPointwiseConv:
      return "pointwise_conv";
    case LayerKind::kPooling:
      return "pooling";
    case LayerKind::kGlobalPooling:
      return "global_pooling";
    case LayerKind::kDense:
      return "dense";
    case LayerKind::kEltwise:
      return "eltwise";
    case LayerKind::kBinary:
      return "binary";
    case LayerKind::kNormalization:
      return "normalization";
    case LayerKind::kSoftmax:
      return "softmax";
    case LayerKind::kReduction:
      return "reduction";
    case LayerKind::kDataMovement:
      return "data_movement";
    case LayerKind::kOther:
      return "other";
  }
  return "other";
}

LayerKind LayerKindOfOpType(const std::string& op_type) {
  static const auto* kinds = new std::map<std::string, LayerKind>{
      {"Conv", LayerKind::kDenseConv},
      {"MaxPool", LayerKind::kPooling},
      {"AveragePool", LayerKind::kPooling},
      {"LpPool", LayerKind::kPooling},
      {"GlobalAveragePool", LayerKind::kGlobalPooling},
      {"GlobalMaxPool", LayerKind::kGlobalPooling},
      {"GlobalLpPool", LayerKind::kGlobalPooling},
      {"Gemm", LayerKind::kDense},
      {"MatMul", LayerKind::kDense},
      {"Relu", LayerKind::kEltwise},
      {"LeakyRelu", LayerKind::kEltwise},
      {"PRelu", LayerKind::kEltwise},
      {"Clip", LayerKind::kEltwise},
      {"Sigmoid", LayerKind::kEltwise},
      {"HardSigmoid", LayerKind::kEltwise},
      {"HardSwish", LayerKind::kEltwise},
      {"Tanh", LayerKind::kEltwise},
      {"Elu", LayerKind::kEltwise},
      {"Selu", LayerKind::kEltwise},
      {"Softplus", LayerKind::kEltwise},
      {"Softsign", LayerKind::kEltwise},
      {"Gelu", LayerKind::kEltwise},
      {"Mish", LayerKind::kEltwise},
      {"Neg", LayerKind::kEltwise},
      {"Abs", LayerKind::kEltwise},
      {"Sqrt", LayerKind::kEltwise},
      {"Exp", LayerKind::kEltwise},
      {"Log", LayerKind::kEltwise},
      {"Reciprocal", LayerKind::kEltwise},
      {"Floor", LayerKind::kEltwise},
      {"Ceil", LayerKind::kEltwise},
      {"Round", LayerKind::kEltwise},
      {"Erf", LayerKind::kEltwise},
      {"Not", LayerKind::kEltwise},
      {"Add", LayerKind::kBinary},
      {"Sub", LayerKind::kBinary},
      {"Mul", LayerKind::kBinary},
      {"Div", LayerKind::kBinary},
      {"Pow", LayerKind::kBinary},
      {"Min", LayerKind::kBinary},
      {"Max", LayerKind::kBinary},
      {"Sum", LayerKind::kBinary},
      {"Mean", LayerKind::kBinary},
      {"Equal", LayerKind::kBinary},
      {"Less", LayerKind::kBinary},
      {"Greater", LayerKind::kBinary},
      {"Where", LayerKind::kBinary},
      {"BatchNormalization", LayerKind::kNormalization},
      {"InstanceNormalization", LayerKind::kNormalization},
      {"LayerNormalization", LayerKind::kNormalization},
      {"LpNormalization", LayerKind::kNormalization},
      {"LRN", LayerKind::kNormalization},
      {"Softmax", LayerKind::kSoftmax},
      {"LogSoftmax", LayerKind::kSoftmax},
      {"ArgMax", LayerKind::kReduction},
      {"ArgMin", LayerKind::kReduction},
      {"Reorder", LayerKind::kDataMovement},
      {"Output", LayerKind::kDataMovement},
      {"Concat", LayerKind::kDataMovement},
      {"Reshape", LayerKind::kDataMovement},
      {"Flatten", LayerKind::kDataMovement},
      {"Squeeze", LayerKind::kDataMovement},
      {"Unsqueeze", LayerKind::kDataMovement},
      {"Transpose", LayerKind::kDataMovement},
      {"Slice", LayerKind::kDataMovement},
      {"Split", LayerKind::kDataMovement},
      {"Identity", LayerKind::kDataMovement},
      {"Dropout", LayerKind::kDataMovement},
      {"Cast", LayerKind::kDataMovement},
      {"Pad", LayerKind::kDataMovement},
      {"Expand", LayerKind::kDataMovement},
      {"Tile", LayerKind::kDataMovement},
      {"Gather", LayerKind::kDataMovement},
  };
  auto it = kinds->find(op_type);
  if (it != kinds->end()) return it->second;
  if (op_type.rfind("Reduce", 0) == 0) return LayerKind::kReduction;  // ReduceMean, ReduceL2...
  return LayerKind::kOther;
}

LayerKind ConvKind(int64_t kernel_h, int64_t kernel_w, int64_t c_in, int64_t c_out,
                   int64_t groups) {
  if (groups <= 1) {
    return kernel_h == 1 && kernel_w == 1 ? LayerKind::kPointwiseConv : LayerKind::kDenseConv;
  }
  if (groups == c_in && c_out % c_in == 0) return LayerKind::kDepthwiseConv;
  return LayerKind::kGroupedConv;
}

LayerCost EstimateStepCost(const StepInfo& step, int64_t dtype_bytes) {
  LayerCost cost;
  cost.kind = LayerKindOfOpType(step.kind);
  if (!step.input_dims.empty()) cost.input_dims = step.input_dims[0];
  cost.output_dims = step.output_dims;
  cost.weight_params = step.weight_elements;
  cost.bias_params = step.bias_elements;

  // Runtime data read besides residuals: a Conv reads only its data tensor (input_dims[0]; a
  // host-run Conv may also list a residual, which the "sum" post-op accounts for below).
  int64_t elements_read = SumOfElements(step.input_dims);
  switch (cost.kind) {
    case LayerKind::kDenseConv:
      CostConv(step, cost);
      elements_read = step.input_dims.empty() ? 0 : NumElements(cost.input_dims);
      break;
    case LayerKind::kPooling:
    case LayerKind::kGlobalPooling:
      CostPool(step, cost);
      break;
    case LayerKind::kDense:
      CostDense(cost);
      break;
    case LayerKind::kEltwise:
    case LayerKind::kNormalization:
    case LayerKind::kSoftmax: {
      if (cost.output_dims.empty()) cost.output_dims = cost.input_dims;
      const int64_t per_element = cost.kind == LayerKind::kEltwise         ? 1
                                  : cost.kind == LayerKind::kNormalization ? 2
                                                                           : 5;
      cost.flops = per_element * NumElements(cost.output_dims);
      break;
    }
    case LayerKind::kBinary: {
      // Sum/Mean/Min/Max take any number of operands; a constant operand is not in input_dims.
      const int64_t operands = static_cast<int64_t>(step.input_dims.size());
      const int64_t per_element = step.kind == "Where" ? 1 : std::max<int64_t>(1, operands - 1);
      cost.flops = per_element * NumElements(cost.output_dims);
      break;
    }
    case LayerKind::kReduction:
      cost.flops = SumOfElements(step.input_dims);
      break;
    default:
      break;
  }

  const int64_t output_elements = NumElements(cost.output_dims);
  for (const std::string& op : step.post_ops) {
    cost.flops += output_elements;
    if (op == "sum") elements_read += output_elements;  // the residual, accumulated into dst
  }

  cost.params = cost.weight_params + cost.bias_params;
  cost.weight_bytes = cost.params * dtype_bytes;
  cost.activation_bytes_read = elements_read * dtype_bytes;
  cost.activation_bytes_written = output_elements * dtype_bytes;
  const int64_t bytes =
      cost.weight_bytes + cost.activation_bytes_read + cost.activation_bytes_written;
  cost.arithmetic_intensity =
      bytes > 0 ? static_cast<double>(cost.flops) / static_cast<double>(bytes) : 0.0;
  return cost;
}

ModelCost SumCosts(const std::vector<LayerCost>& layers) {
  ModelCost total;
  for (const LayerCost& c : layers) {
    total.params += c.params;
    total.dense_equivalent_params += c.dense_equivalent_params;
    total.macs += c.macs;
    total.flops += c.flops;
    total.weight_bytes += c.weight_bytes;
    total.activation_bytes += c.activation_bytes_read + c.activation_bytes_written;
  }
  return total;
}

int64_t ConvWeightCount(int64_t kh, int64_t kw, int64_t c_in, int64_t c_out, int64_t groups) {
  return kh * kw * (c_in / groups) * c_out;
}

int64_t ConvMacs(int64_t n, int64_t h_out, int64_t w_out, int64_t kh, int64_t kw, int64_t c_in,
                 int64_t c_out, int64_t groups) {
  return n * h_out * w_out * ConvWeightCount(kh, kw, c_in, c_out, groups);
}

int64_t SeparableWeightCount(int64_t k, int64_t c_in, int64_t c_out) {
  return ConvWeightCount(k, k, c_in, c_in, c_in) + ConvWeightCount(1, 1, c_in, c_out, 1);
}

int64_t DenseEquivalentParams(int64_t h, int64_t w, int64_t c_in, int64_t h_out, int64_t w_out,
                              int64_t c_out, bool with_bias) {
  const int64_t inputs = h * w * c_in, outputs = h_out * w_out * c_out;
  return inputs * outputs + (with_bias ? outputs : 0);
}

}  // namespace convserve::engine
