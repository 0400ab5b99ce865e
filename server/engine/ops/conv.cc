#include "absl/strings/str_cat.h"
#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

absl::Status CompileConv(CompileContext& ctx) {
  const Node& node = ctx.node();
  const Dims& x = ctx.InputDims(0);
  if (x.size() != 4 || !ctx.IsConstant(1) || ctx.InputType(0) != DataType::kFloat32 ||
      ctx.IsConstant(0)) {
    return UseHostFallback();
  }
  const Tensor& w = ctx.Constant(1);  // [O, I/G, kh, kw]
  const bool has_bias = !ctx.IsAbsent(2);
  if (has_bias && !ctx.IsConstant(2)) return UseHostFallback();
  const int64_t group = node.GetInt("group", 1);
  const Dims& y = ctx.OutputInfo(0).dims;
  const Spatial sp = SpatialParams(node, x, y, {w.dims[2], w.dims[3]});
  const int sum_input = static_cast<int>(node.GetInt("convserve.sum_input", -1));

  const auto f32 = memory::data_type::f32;
  memory::dims weight_dims =
      group == 1 ? memory::dims{w.dims[0], w.dims[1], w.dims[2], w.dims[3]}
                 : memory::dims{group, w.dims[0] / group, w.dims[1], w.dims[2], w.dims[3]};
  const memory::desc src_any({x.begin(), x.end()}, f32, memory::format_tag::any);
  const memory::desc weights_any(weight_dims, f32, memory::format_tag::any);
  const memory::desc bias_desc({w.dims[0]}, f32, memory::format_tag::a);
  const memory::desc dst_any({y.begin(), y.end()}, f32, memory::format_tag::any);

  dnnl::post_ops chain;
  for (const PostOp& op : DecodePostOps(node)) {
    if (op.kind == "sum") {
      chain.append_sum(1.f);
    } else {
      AppendEltwisePostOp(op, chain);
    }
  }
  dnnl::primitive_attr attr = DefaultAttr();
  attr.set_post_ops(chain);

  dnnl::convolution_forward::desc desc =
      has_bias
          ? dnnl::convolution_forward::desc(
                dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_any,
                weights_any, bias_desc, dst_any, sp.strides, sp.dilations, sp.pad_l, sp.pad_r)
          : dnnl::convolution_forward::desc(
                dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_any,
                weights_any, dst_any, sp.strides, sp.dilations, sp.pad_l, sp.pad_r);
  dnnl::convolution_forward::primitive_desc pd(desc, attr, CpuEngine());

  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, pd.src_desc()));
  ASSIGN_OR_RETURN(memory weights, ctx.ConstantMemory(w, pd.weights_desc()));
  std::vector<StepArg> args = {{DNNL_ARG_SRC, src_slot, std::nullopt},
                               {DNNL_ARG_WEIGHTS, -1, weights}};
  if (has_bias) {
    ASSIGN_OR_RETURN(memory bias, ctx.ConstantMemory(ctx.Constant(2), pd.bias_desc()));
    args.push_back({DNNL_ARG_BIAS, -1, bias});
  }
  int dst_slot = -1;
  if (sum_input >= 0) {
    // The sum post-op accumulates into dst: it must hold the residual before the conv runs.
    dst_slot = ctx.TryInPlaceOutput(0, sum_input, pd.dst_desc());
    if (dst_slot < 0) {
      ASSIGN_OR_RETURN(int residual, ctx.InputSlot(sum_input, ctx.InputDesc(sum_input)));
      dst_slot = ctx.DefineOutput(0, pd.dst_desc());
      RETURN_IF_ERROR(ctx.AddReorder(residual, dst_slot, node.inputs[sum_input]));
    }
  } else {
    dst_slot = ctx.DefineOutput(0, pd.dst_desc());
  }
  args.push_back({DNNL_ARG_DST, dst_slot, std::nullopt});

  StepInfo info = ctx.BaseInfo();
  if (sum_input >= 0 && info.input_dims.size() > 1) info.input_dims.resize(1);
  info.src_format = FormatName(pd.src_desc());
  info.weights_format = FormatName(pd.weights_desc());
  info.dst_format = FormatName(pd.dst_desc());
  info.shape_attributes["kernel_shape"] = {w.dims[2], w.dims[3]};
  info.shape_attributes["strides"] = {sp.strides[0], sp.strides[1]};
  info.shape_attributes["dilations"] = {sp.dilations[0] + 1, sp.dilations[1] + 1};
  info.shape_attributes["pads"] = {sp.pad_l[0], sp.pad_l[1], sp.pad_r[0], sp.pad_r[1]};
  info.shape_attributes["group"] = {group};
  info.weight_elements = w.num_elements();
  info.bias_elements = has_bias ? ctx.Constant(2).num_elements() : 0;
  ctx.AddPrimitive(dnnl::convolution_forward(pd), pd, std::move(args), std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
