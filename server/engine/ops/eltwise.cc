#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

namespace {

// Output 0 in input 0's buffer when the input dies here, else a new buffer; same layout.
int ElementwiseOutput(CompileContext& ctx, const memory::desc& desc) {
  if (ctx.UsesAfterThisNode(0) == 0) {
    const int slot = ctx.TryInPlaceOutput(0, 0, desc);
    if (slot >= 0) return slot;
  }
  return ctx.DefineOutput(0, desc);
}

}  // namespace

absl::Status CompileActivation(CompileContext& ctx) {
  const Node& node = ctx.node();
  if (ctx.InputType(0) != DataType::kFloat32 || ctx.IsConstant(0)) return UseHostFallback();
  std::map<std::string, Tensor> bounds;  // Clip's min/max, when constant
  for (size_t i = 1; i < node.inputs.size(); ++i) {
    if (ctx.IsAbsent(i)) continue;
    if (!ctx.IsConstant(i)) return UseHostFallback();
    bounds[node.inputs[i]] = ctx.Constant(i);
  }
  std::optional<PostOp> op = ActivationPostOp(node, bounds);
  if (!op) return UseHostFallback();
  // The activation itself is the first eltwise; anything after it (HardSigmoid's clip) is a
  // post-op of the same primitive.
  dnnl::post_ops chain;
  AppendEltwisePostOp(*op, chain);
  dnnl::algorithm alg;
  float alpha, beta;
  float first_scale;
  chain.get_params_eltwise(0, first_scale, alg, alpha, beta);
  const memory::desc src = ctx.InputDesc(0);
  dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src, alpha, beta);
  dnnl::eltwise_forward::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, pd.src_desc()));
  const int dst_slot = ElementwiseOutput(ctx, pd.dst_desc());
  StepInfo info = ctx.BaseInfo();
  info.src_format = info.dst_format = FormatName(pd.dst_desc());
  ctx.AddPrimitive(dnnl::eltwise_forward(pd), pd,
                   {{DNNL_ARG_SRC, src_slot, std::nullopt}, {DNNL_ARG_DST, dst_slot, std::nullopt}},
                   info);
  // Further eltwise stages (HardSigmoid's clip) run in place on dst: oneDNN 2.6's eltwise
  // post-ops give wrong results on small 1-D tensors.
  for (int k = 1; k < chain.len(); ++k) {
    float scale, a, b;
    dnnl::algorithm stage_alg;
    chain.get_params_eltwise(k, scale, stage_alg, a, b);
    dnnl::eltwise_forward::desc stage(dnnl::prop_kind::forward_inference, stage_alg, pd.dst_desc(),
                                      a, b);
    dnnl::eltwise_forward::primitive_desc stage_pd(stage, DefaultAttr(), CpuEngine());
    ctx.AddPrimitive(
        dnnl::eltwise_forward(stage_pd), stage_pd,
        {{DNNL_ARG_SRC, dst_slot, std::nullopt}, {DNNL_ARG_DST, dst_slot, std::nullopt}}, info);
  }
  return absl::OkStatus();
}

absl::Status CompilePRelu(CompileContext& ctx) {
  const Dims& x = ctx.InputDims(0);
  if (ctx.InputType(0) != DataType::kFloat32 || ctx.IsConstant(0) || !ctx.IsConstant(1) ||
      ctx.InputDims(1).size() > x.size()) {
    return UseHostFallback();
  }
  const auto f32 = memory::data_type::f32;
  const memory::desc src = PlainDesc(x, f32);
  const memory::desc slope = PlainDesc(AlignRank(ctx.InputDims(1), x.size()), f32);
  dnnl::prelu_forward::desc desc(dnnl::prop_kind::forward_inference, src, slope);
  dnnl::prelu_forward::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, src));
  ASSIGN_OR_RETURN(memory w, ctx.ConstantMemory(ctx.Constant(1), pd.weights_desc()));
  const int dst_slot = ElementwiseOutput(ctx, pd.dst_desc());
  StepInfo info = ctx.BaseInfo();
  info.src_format = info.dst_format = FormatName(src);
  info.weight_elements = ctx.Constant(1).num_elements();
  ctx.AddPrimitive(dnnl::prelu_forward(pd), pd,
                   {{DNNL_ARG_SRC, src_slot, std::nullopt},
                    {DNNL_ARG_WEIGHTS, -1, w},
                    {DNNL_ARG_DST, dst_slot, std::nullopt}},
                   std::move(info));
  return absl::OkStatus();
}

absl::Status CompileBatchNorm(CompileContext& ctx) {
  const Node& node = ctx.node();
  const Dims& x = ctx.InputDims(0);
  if (ctx.InputType(0) != DataType::kFloat32 || ctx.IsConstant(0) || x.size() < 2) {
    return UseHostFallback();
  }
  for (size_t i = 1; i < 5; ++i) {
    if (ctx.IsAbsent(i) || !ctx.IsConstant(i) || ctx.Constant(i).num_elements() != x[1]) {
      return UseHostFallback();
    }
  }
  const auto flags = dnnl::normalization_flags::use_global_stats |
                     dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  const memory::desc src = ctx.InputDesc(0);
  dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, src,
                                               node.GetFloat("epsilon", 1e-5f), flags);
  dnnl::batch_normalization_forward::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, pd.src_desc()));
  const memory::desc channel = PlainDesc({x[1]}, memory::data_type::f32);
  ASSIGN_OR_RETURN(memory scale, ctx.ConstantMemory(ctx.Constant(1), channel));
  ASSIGN_OR_RETURN(memory shift, ctx.ConstantMemory(ctx.Constant(2), channel));
  ASSIGN_OR_RETURN(memory mean, ctx.ConstantMemory(ctx.Constant(3), channel));
  ASSIGN_OR_RETURN(memory variance, ctx.ConstantMemory(ctx.Constant(4), channel));
  const int dst_slot = ElementwiseOutput(ctx, pd.dst_desc());
  StepInfo info = ctx.BaseInfo();
  info.src_format = info.dst_format = FormatName(pd.dst_desc());
  info.weight_elements = 4 * x[1];
  ctx.AddPrimitive(dnnl::batch_normalization_forward(pd), pd,
                   {{DNNL_ARG_SRC, src_slot, std::nullopt},
                    {DNNL_ARG_SCALE, -1, scale},
                    {DNNL_ARG_SHIFT, -1, shift},
                    {DNNL_ARG_MEAN, -1, mean},
                    {DNNL_ARG_VARIANCE, -1, variance},
                    {DNNL_ARG_DST, dst_slot, std::nullopt}},
                   std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
