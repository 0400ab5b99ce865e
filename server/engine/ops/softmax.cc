#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

absl::Status CompileSoftmax(CompileContext& ctx) {
  const Node& node = ctx.node();
  const Dims& x = ctx.InputDims(0);
  if (ctx.InputType(0) != DataType::kFloat32 || ctx.IsConstant(0) || x.empty()) {
    return UseHostFallback();
  }
  const bool legacy = node.GetInt("legacy_2d_coercion", 0) != 0;
  const int64_t rank = static_cast<int64_t>(x.size());
  int64_t axis = node.GetInt("axis", legacy ? 1 : -1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return UseHostFallback();  // host reports the error
  Dims view = x;
  int softmax_axis = static_cast<int>(axis);
  if (legacy) {
    // Opset < 13: the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])].
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k < rank; ++k) (k < axis ? outer : inner) *= x[k];
    view = {outer, inner};
    softmax_axis = 1;
  }
  const auto f32 = memory::data_type::f32;
  const memory::desc desc_plain = PlainDesc(view, f32);
  const dnnl::algorithm alg = node.op_type == "LogSoftmax" ? dnnl::algorithm::softmax_log
                                                           : dnnl::algorithm::softmax_accurate;
  dnnl::softmax_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg, desc_plain,
                                      desc_plain, softmax_axis);
  dnnl::softmax_v2_forward::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputView(0, desc_plain));
  const int dst_slot = ctx.DefineOutput(0, desc_plain);
  StepInfo info = ctx.BaseInfo();
  info.src_format = info.dst_format = FormatName(desc_plain);
  ctx.AddPrimitive(dnnl::softmax_v2_forward(pd), pd,
                   {{DNNL_ARG_SRC, src_slot, std::nullopt}, {DNNL_ARG_DST, dst_slot, std::nullopt}},
                   std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
