// Data-movement ops: reshapes are free (a plain view of the same buffer), the rest are oneDNN
// reorders between descriptors (transposed strides, sub-memories) or a concat primitive.
#include <algorithm>

#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

namespace {

memory::dims Strides(const Dims& dims) {
  memory::dims strides(dims.size(), 1);
  for (int k = static_cast<int>(dims.size()) - 2; k >= 0; --k)
    strides[k] = strides[k + 1] * dims[k + 1];
  return strides;
}

// One reorder from a view of input `i` to a new plain buffer for output `j`.
absl::Status ReorderViewToOutput(CompileContext& ctx, size_t i, size_t j, const memory::desc& view,
                                 const char* kind) {
  ASSIGN_OR_RETURN(int src, ctx.InputView(i, view));
  const ValueInfo& out = ctx.OutputInfo(j);
  const int dst = ctx.DefineOutput(j, PlainDesc(out.dims, *ToDnnl(out.dtype)));
  RETURN_IF_ERROR(ctx.AddReorder(src, dst, ctx.node().name));
  (void)kind;
  return absl::OkStatus();
}

}  // namespace

absl::Status CompileReshape(CompileContext& ctx) {
  if (ctx.IsConstant(0) || !ToDnnl(ctx.InputType(0))) return UseHostFallback();
  return ctx.AliasOutput(0, 0, /*plain_reshape=*/true);
}

absl::Status CompileIdentity(CompileContext& ctx) {
  if (ctx.IsConstant(0) || ctx.OutputUsed(1)) return UseHostFallback();  // Dropout mask
  return ctx.AliasOutput(0, 0, /*plain_reshape=*/false);
}

absl::Status CompileTranspose(CompileContext& ctx) {
  auto dt = ToDnnl(ctx.InputType(0));
  const Dims& x = ctx.InputDims(0);
  if (ctx.IsConstant(0) || !dt || x.empty()) return UseHostFallback();
  std::vector<int64_t> perm = ctx.node().GetInts("perm");
  if (perm.empty()) {
    for (int64_t k = static_cast<int64_t>(x.size()) - 1; k >= 0; --k) perm.push_back(k);
  }
  const memory::dims in_strides = Strides(x);
  memory::dims out_dims, view_strides;
  for (int64_t p : perm) {
    out_dims.push_back(x[p]);
    view_strides.push_back(in_strides[p]);
  }
  return ReorderViewToOutput(ctx, 0, 0, memory::desc(out_dims, *dt, view_strides), "Transpose");
}

absl::Status CompileSlice(CompileContext& ctx) {
  auto dt = ToDnnl(ctx.InputType(0));
  const Dims& x = ctx.InputDims(0);
  if (ctx.IsConstant(0) || !dt || x.empty()) return UseHostFallback();
  for (size_t i = 1; i < ctx.node().inputs.size(); ++i) {
    if (!ctx.IsAbsent(i) && !ctx.IsConstant(i)) return UseHostFallback();
  }
  const std::vector<int64_t> starts = ctx.Constant(1).AsInt64();
  const int64_t rank = static_cast<int64_t>(x.size());
  std::vector<int64_t> axes;
  if (!ctx.IsAbsent(3)) {
    axes = ctx.Constant(3).AsInt64();
  } else {
    for (size_t k = 0; k < starts.size(); ++k) axes.push_back(static_cast<int64_t>(k));
  }
  if (!ctx.IsAbsent(4)) {
    for (int64_t step : ctx.Constant(4).AsInt64()) {
      if (step != 1) return UseHostFallback();
    }
  }
  memory::dims offsets(x.size(), 0);
  for (size_t k = 0; k < axes.size() && k < starts.size(); ++k) {
    int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k];
    if (axis < 0 || axis >= rank) return UseHostFallback();
    int64_t start = starts[k] < 0 ? starts[k] + x[axis] : starts[k];
    offsets[axis] = std::clamp<int64_t>(start, 0, x[axis]);
  }
  const Dims& y = ctx.OutputInfo(0).dims;
  if (NumElements(y) == 0) return UseHostFallback();
  const memory::desc view = PlainDesc(x, *dt).submemory_desc({y.begin(), y.end()}, offsets);
  return ReorderViewToOutput(ctx, 0, 0, view, "Slice");
}

absl::Status CompileSplit(CompileContext& ctx) {
  auto dt = ToDnnl(ctx.InputType(0));
  const Dims& x = ctx.InputDims(0);
  if (ctx.IsConstant(0) || !dt || x.empty()) return UseHostFallback();
  int64_t axis = ctx.node().GetInt("axis", 0);
  if (axis < 0) axis += static_cast<int64_t>(x.size());
  memory::dims offsets(x.size(), 0);
  const memory::desc plain = PlainDesc(x, *dt);
  for (size_t j = 0; j < ctx.node().outputs.size(); ++j) {
    const Dims& y = ctx.OutputInfo(j).dims;
    if (ctx.OutputUsed(j) && NumElements(y) > 0) {
      RETURN_IF_ERROR(ReorderViewToOutput(
          ctx, 0, j, plain.submemory_desc({y.begin(), y.end()}, offsets), "Split"));
    } else if (NumElements(y) == 0) {
      return UseHostFallback();
    }
    offsets[axis] += y[axis];
  }
  return absl::OkStatus();
}

absl::Status CompileConcat(CompileContext& ctx) {
  const Node& node = ctx.node();
  auto dt = ToDnnl(ctx.OutputInfo(0).dtype);
  const Dims& y = ctx.OutputInfo(0).dims;
  if (!dt || y.empty()) return UseHostFallback();
  int64_t axis = node.GetInt("axis", 0);
  if (axis < 0) axis += static_cast<int64_t>(y.size());
  std::vector<memory::desc> srcs;
  std::vector<size_t> used;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (ctx.IsAbsent(i)) continue;
    if (NumElements(ctx.InputDims(i)) == 0) continue;  // empty inputs contribute nothing
    srcs.push_back(ctx.IsConstant(i) ? PlainDesc(ctx.InputDims(i), *dt) : ctx.InputDesc(i));
    used.push_back(i);
  }
  if (srcs.empty()) return UseHostFallback();
  const memory::desc dst_any({y.begin(), y.end()}, *dt, memory::format_tag::any);
  dnnl::concat::primitive_desc pd(dst_any, static_cast<int>(axis), srcs, CpuEngine(),
                                  DefaultAttr());
  std::vector<StepArg> args;
  for (size_t k = 0; k < used.size(); ++k) {
    if (ctx.IsConstant(used[k])) {
      ASSIGN_OR_RETURN(memory m, ctx.ConstantMemory(ctx.Constant(used[k]), srcs[k]));
      args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), -1, m});
    } else {
      ASSIGN_OR_RETURN(int slot, ctx.InputSlot(used[k], srcs[k]));
      args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), slot, std::nullopt});
    }
  }
  args.push_back({DNNL_ARG_DST, ctx.DefineOutput(0, pd.dst_desc()), std::nullopt});
  StepInfo info = ctx.BaseInfo();
  info.dst_format = FormatName(pd.dst_desc());
  ctx.AddPrimitive(dnnl::concat(pd), pd, std::move(args), std::move(info));
  return absl::OkStatus();
}

absl::Status CompileCast(CompileContext& ctx) {
  const DataType from = ctx.InputType(0), to = ctx.OutputInfo(0).dtype;
  if (ctx.IsConstant(0)) return UseHostFallback();
  if (from == to) return ctx.AliasOutput(0, 0, /*plain_reshape=*/false);
  // Float-to-float conversions only: oneDNN rounds float->int where ONNX truncates.
  auto is_float = [](DataType t) {
    return t == DataType::kFloat32 || t == DataType::kBFloat16 || t == DataType::kFloat16;
  };
  if (!is_float(from) || !is_float(to)) return UseHostFallback();
  const Dims& x = ctx.InputDims(0);
  return ReorderViewToOutput(ctx, 0, 0, PlainDesc(x, *ToDnnl(from)), "Cast");
}

}  // namespace convserve::engine::ops
