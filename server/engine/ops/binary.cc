#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

absl::Status CompileBinary(CompileContext& ctx) {
  const Node& node = ctx.node();
  const std::string& op = node.op_type;
  if (ctx.InputType(0) != DataType::kFloat32 || ctx.InputType(1) != DataType::kFloat32) {
    return UseHostFallback();
  }
  const Dims& y = ctx.OutputInfo(0).dims;
  size_t first = 0, second = 1;
  // oneDNN broadcasts only src1: the full-shape operand must be src0 (swap when commutative).
  if (AlignRank(ctx.InputDims(0), y.size()) != y) {
    if ((op != "Add" && op != "Mul") || AlignRank(ctx.InputDims(1), y.size()) != y) {
      return UseHostFallback();
    }
    std::swap(first, second);
  }
  if (ctx.IsConstant(first)) return UseHostFallback();  // both constant is folded earlier
  const dnnl::algorithm alg = op == "Add"   ? dnnl::algorithm::binary_add
                              : op == "Sub" ? dnnl::algorithm::binary_sub
                              : op == "Mul" ? dnnl::algorithm::binary_mul
                                            : dnnl::algorithm::binary_div;
  const auto f32 = memory::data_type::f32;
  const Dims src1_dims = AlignRank(ctx.InputDims(second), y.size());
  const bool same_shape = src1_dims == y;
  // Same shapes keep src0's layout (blocked stays blocked); broadcasting works on plain data.
  const memory::desc src0 = same_shape ? ctx.InputDesc(first) : PlainDesc(y, f32);
  const memory::desc src1 = same_shape ? src0 : PlainDesc(src1_dims, f32);
  dnnl::binary::desc desc(alg, src0, src1, src0);
  dnnl::binary::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src0_slot, ctx.InputSlot(first, src0));
  StepArg arg1{DNNL_ARG_SRC_1, -1, std::nullopt};
  if (ctx.IsConstant(second)) {
    ASSIGN_OR_RETURN(memory m, ctx.ConstantMemory(ctx.Constant(second), src1));
    arg1.constant = m;
  } else if (same_shape) {
    ASSIGN_OR_RETURN(arg1.slot, ctx.InputSlot(second, src1));
  } else {
    ASSIGN_OR_RETURN(arg1.slot, ctx.InputView(second, src1));
  }
  int dst_slot = -1;
  if (ctx.UsesAfterThisNode(first) == 0) dst_slot = ctx.TryInPlaceOutput(0, first, pd.dst_desc());
  if (dst_slot < 0) dst_slot = ctx.DefineOutput(0, pd.dst_desc());
  StepInfo info = ctx.BaseInfo();
  info.src_format = info.dst_format = FormatName(pd.dst_desc());
  ctx.AddPrimitive(
      dnnl::binary(pd), pd,
      {{DNNL_ARG_SRC_0, src0_slot, std::nullopt}, arg1, {DNNL_ARG_DST, dst_slot, std::nullopt}},
      std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
