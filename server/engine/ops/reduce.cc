#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

absl::Status CompileReduce(CompileContext& ctx) {
  const Node& node = ctx.node();
  const Dims& x = ctx.InputDims(0);
  if (ctx.InputType(0) != DataType::kFloat32 || ctx.IsConstant(0) || x.empty() ||
      node.inputs.size() > 1) {
    return UseHostFallback();
  }
  const int64_t rank = static_cast<int64_t>(x.size());
  std::vector<int64_t> axes = node.GetInts("axes");
  if (axes.empty()) {
    if (node.GetInt("noop_with_empty_axes", 0) != 0) return UseHostFallback();
    for (int64_t k = 0; k < rank; ++k) axes.push_back(k);
  }
  Dims kept = x;
  for (int64_t a : axes) {
    if (a < 0) a += rank;
    if (a < 0 || a >= rank) return UseHostFallback();
    kept[a] = 1;
  }
  if (kept == x) return UseHostFallback();  // nothing to reduce: a copy
  const auto f32 = memory::data_type::f32;
  const memory::desc src = PlainDesc(x, f32), dst = PlainDesc(kept, f32);
  const dnnl::algorithm alg = node.op_type == "ReduceMax" ? dnnl::algorithm::reduction_max
                                                          : dnnl::algorithm::reduction_mean;
  dnnl::reduction::desc desc(alg, src, dst, 0.f, 0.f);
  dnnl::reduction::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, src));
  const int dst_slot = ctx.DefineOutput(0, dst);
  StepInfo info = ctx.BaseInfo();
  info.src_format = FormatName(src);
  info.dst_format = FormatName(dst);
  ctx.AddPrimitive(dnnl::reduction(pd), pd,
                   {{DNNL_ARG_SRC, src_slot, std::nullopt}, {DNNL_ARG_DST, dst_slot, std::nullopt}},
                   std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
