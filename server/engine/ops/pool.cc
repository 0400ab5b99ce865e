#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

absl::Status CompilePool(CompileContext& ctx) {
  const Node& node = ctx.node();
  const std::string& op = node.op_type;
  const Dims& x = ctx.InputDims(0);
  if (x.size() != 4 || ctx.IsConstant(0)) return UseHostFallback();
  // MaxPool's Indices output has no oneDNN equivalent.
  if (op == "MaxPool" && ctx.OutputUsed(1)) return UseHostFallback();
  const bool is_max = op == "MaxPool" || op == "GlobalMaxPool";
  auto dt = ToDnnl(ctx.InputType(0));
  if (!dt || (!is_max && *dt != memory::data_type::f32)) return UseHostFallback();
  const Dims& y = ctx.OutputInfo(0).dims;

  Spatial sp;
  dnnl::algorithm alg = dnnl::algorithm::pooling_max;
  if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
    sp.kernel = {x[2], x[3]};
    sp.strides = {1, 1};
    sp.dilations = {0, 0};
    sp.pad_l = {0, 0};
    sp.pad_r = {0, 0};
    alg = is_max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding;
  } else {
    const std::vector<int64_t> kernel = node.GetInts("kernel_shape");
    if (kernel.size() != 2) return UseHostFallback();
    sp = SpatialParams(node, x, y, kernel);
    const std::vector<int64_t> pads = node.GetInts("pads", std::vector<int64_t>(4, 0));
    if (!is_max) {
      const bool include_pad = node.GetInt("count_include_pad", 0) != 0;
      // ONNX counts explicit padding but never the ceil_mode overhang; oneDNN's
      // include-padding mode would count both, so that case goes to the host.
      const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
      if (include_pad) {
        if (auto_pad != "NOTSET" && auto_pad != "VALID") return UseHostFallback();
        for (int k = 0; k < 2; ++k) {
          if (sp.pad_r[k] != pads[2 + k]) return UseHostFallback();
        }
      }
      alg = include_pad ? dnnl::algorithm::pooling_avg_include_padding
                        : dnnl::algorithm::pooling_avg_exclude_padding;
    }
    for (int k = 0; k < 2; ++k) {
      if (sp.pad_r[k] < 0) return UseHostFallback();
    }
  }
  const memory::desc& src = ctx.InputDesc(0);
  const memory::desc dst_any({y.begin(), y.end()}, *dt, memory::format_tag::any);
  dnnl::pooling_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src, dst_any,
                                      sp.strides, sp.kernel, sp.dilations, sp.pad_l, sp.pad_r);
  dnnl::pooling_v2_forward::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, pd.src_desc()));
  const int dst_slot = ctx.DefineOutput(0, pd.dst_desc());
  StepInfo info = ctx.BaseInfo();
  info.src_format = FormatName(pd.src_desc());
  info.dst_format = FormatName(pd.dst_desc());
  info.shape_attributes["kernel_shape"] = {sp.kernel[0], sp.kernel[1]};
  info.shape_attributes["strides"] = {sp.strides[0], sp.strides[1]};
  info.shape_attributes["dilations"] = {sp.dilations[0] + 1, sp.dilations[1] + 1};
  info.shape_attributes["pads"] = {sp.pad_l[0], sp.pad_l[1], sp.pad_r[0], sp.pad_r[1]};
  ctx.AddPrimitive(dnnl::pooling_v2_forward(pd), pd,
                   {{DNNL_ARG_SRC, src_slot, std::nullopt}, {DNNL_ARG_DST, dst_slot, std::nullopt}},
                   std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
