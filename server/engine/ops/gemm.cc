#include "server/common/status.h"
#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

using dnnl::memory;

namespace {

// Gemm with a constant B as a oneDNN inner product: alpha folded into the weights, beta*C into
// the bias. Returns UseHostFallback() when the form does not fit.
absl::Status CompileInnerProduct(CompileContext& ctx) {
  const Node& node = ctx.node();
  const Dims& a = ctx.InputDims(0);
  const Tensor& b = ctx.Constant(1);
  const float alpha = node.GetFloat("alpha", 1.f), beta = node.GetFloat("beta", 1.f);
  const bool trans_b = node.GetInt("transB", 0) != 0;
  if (a.size() != 2 || b.dims.size() != 2 || b.dtype != DataType::kFloat32)
    return UseHostFallback();
  const int64_t k = a[1], n = trans_b ? b.dims[0] : b.dims[1];
  if ((trans_b ? b.dims[1] : b.dims[0]) != k) return UseHostFallback();

  // Weights as [N, K] (oneDNN's O x I), scaled by alpha.
  Tensor weights(DataType::kFloat32, {n, k});
  const float* bsrc = b.data<float>();
  float* wdst = weights.data<float>();
  for (int64_t o = 0; o < n; ++o) {
    for (int64_t i = 0; i < k; ++i) {
      wdst[o * k + i] = alpha * (trans_b ? bsrc[o * k + i] : bsrc[i * n + o]);
    }
  }
  std::optional<Tensor> bias;
  if (!ctx.IsAbsent(2)) {
    if (!ctx.IsConstant(2)) return UseHostFallback();
    const Tensor& c = ctx.Constant(2);
    const int64_t count = c.num_elements();
    const bool row_vector =
        count == n && (c.dims.size() <= 1 || (c.dims.size() == 2 && c.dims[0] == 1));
    if (!(count == 1 || row_vector)) return UseHostFallback();
    std::vector<float> values = c.AsFloat();
    bias = Tensor(DataType::kFloat32, {n});
    for (int64_t o = 0; o < n; ++o) bias->data<float>()[o] = beta * values[count == 1 ? 0 : o];
  }
  const auto f32 = memory::data_type::f32;
  const Dims& y = ctx.OutputInfo(0).dims;
  const memory::desc src_any({a.begin(), a.end()}, f32, memory::format_tag::any);
  const memory::desc weights_any({n, k}, f32, memory::format_tag::any);
  const memory::desc bias_desc({n}, f32, memory::format_tag::a);
  const memory::desc dst_any({y.begin(), y.end()}, f32, memory::format_tag::any);
  dnnl::post_ops chain;
  for (const PostOp& op : DecodePostOps(node)) AppendEltwisePostOp(op, chain);
  dnnl::primitive_attr attr = DefaultAttr();
  attr.set_post_ops(chain);
  auto desc = bias ? dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, src_any,
                                                       weights_any, bias_desc, dst_any)
                   : dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, src_any,
                                                       weights_any, dst_any);
  dnnl::inner_product_forward::primitive_desc pd(desc, attr, CpuEngine());
  ASSIGN_OR_RETURN(int src_slot, ctx.InputSlot(0, pd.src_desc()));
  ASSIGN_OR_RETURN(memory w, ctx.ConstantMemory(weights, pd.weights_desc()));
  std::vector<StepArg> args = {{DNNL_ARG_SRC, src_slot, std::nullopt}, {DNNL_ARG_WEIGHTS, -1, w}};
  if (bias) {
    ASSIGN_OR_RETURN(memory bm, ctx.ConstantMemory(*bias, pd.bias_desc()));
    args.push_back({DNNL_ARG_BIAS, -1, bm});
  }
  args.push_back({DNNL_ARG_DST, ctx.DefineOutput(0, pd.dst_desc()), std::nullopt});
  StepInfo info = ctx.BaseInfo();
  info.src_format = FormatName(pd.src_desc());
  info.weights_format = FormatName(pd.weights_desc());
  info.dst_format = FormatName(pd.dst_desc());
  info.weight_elements = n * k;
  info.bias_elements = bias ? n : 0;
  ctx.AddPrimitive(dnnl::inner_product_forward(pd), pd, std::move(args), std::move(info));
  return absl::OkStatus();
}

}  // namespace

absl::Status CompileGemm(CompileContext& ctx) {
  const Node& node = ctx.node();
  if (ctx.IsConstant(0) || !ctx.IsConstant(1) || node.GetInt("transA", 0) != 0 ||
      ctx.InputType(0) != DataType::kFloat32) {
    return UseHostFallback();
  }
  return CompileInnerProduct(ctx);
}

absl::Status CompileMatMul(CompileContext& ctx) {
  const Dims& a = ctx.InputDims(0);
  const Dims& b = ctx.InputDims(1);
  if (a.size() < 2 || b.size() < 2 || ctx.InputType(0) != DataType::kFloat32 ||
      ctx.InputType(1) != DataType::kFloat32 || (ctx.IsConstant(0) && ctx.IsConstant(1))) {
    return UseHostFallback();
  }
  const Dims& y = ctx.OutputInfo(0).dims;
  const size_t rank = y.size();
  const Dims a_dims = AlignRank(a, rank), b_dims = AlignRank(b, rank);
  const auto f32 = memory::data_type::f32;
  const memory::desc a_desc = PlainDesc(a_dims, f32), b_desc = PlainDesc(b_dims, f32);
  const memory::desc y_desc = PlainDesc(y, f32);
  dnnl::matmul::desc desc(a_desc, b_desc, y_desc);
  dnnl::matmul::primitive_desc pd(desc, DefaultAttr(), CpuEngine());
  std::vector<StepArg> args;
  const memory::desc* descs[2] = {&a_desc, &b_desc};
  const int roles[2] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS};
  for (size_t i = 0; i < 2; ++i) {
    if (ctx.IsConstant(i)) {
      ASSIGN_OR_RETURN(memory m, ctx.ConstantMemory(ctx.Constant(i), *descs[i]));
      args.push_back({roles[i], -1, m});
    } else {
      ASSIGN_OR_RETURN(int slot, ctx.InputView(i, *descs[i]));
      args.push_back({roles[i], slot, std::nullopt});
    }
  }
  args.push_back({DNNL_ARG_DST, ctx.DefineOutput(0, y_desc), std::nullopt});
  StepInfo info = ctx.BaseInfo();
  info.src_format = FormatName(a_desc);
  info.weights_format = FormatName(b_desc);
  info.dst_format = FormatName(y_desc);
  if (ctx.IsConstant(1)) info.weight_elements = ctx.Constant(1).num_elements();
  ctx.AddPrimitive(dnnl::matmul(pd), pd, std::move(args), std::move(info));
  return absl::OkStatus();
}

}  // namespace convserve::engine::ops
