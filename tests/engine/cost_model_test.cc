// Cost model: every expected value is a literal computed by hand from the formula in the comment
// beside it, never by calling the function under test a second way. Steps are built by hand the
// way the op compilers fill StepInfo (server/engine/ops/conv.cc, pool.cc, gemm.cc).
#include "server/engine/cost_model.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace convserve::engine {
namespace {

// A Conv step as ops/conv.cc records it: pads are (l_h, l_w, r_h, r_w), dilation 1 = none.
// weight_elements is the literal size of the weight tensor [c_out, c_in/group, kh, kw].
StepInfo ConvStep(Dims input, Dims output, int64_t k, int64_t stride, int64_t pad, int64_t group,
                  int64_t weight_elements, int64_t bias_elements) {
  StepInfo s;
  s.name = "conv";
  s.kind = "Conv";
  s.input_dims = {std::move(input)};
  s.output_dims = std::move(output);
  s.shape_attributes["kernel_shape"] = {k, k};
  s.shape_attributes["strides"] = {stride, stride};
  s.shape_attributes["dilations"] = {1, 1};
  s.shape_attributes["pads"] = {pad, pad, pad, pad};
  s.shape_attributes["group"] = {group};
  s.weight_elements = weight_elements;
  s.bias_elements = bias_elements;
  return s;
}

StepInfo SimpleStep(const std::string& kind, std::vector<Dims> inputs, Dims output) {
  StepInfo s;
  s.name = kind;
  s.kind = kind;
  s.input_dims = std::move(inputs);
  s.output_dims = std::move(output);
  return s;
}

// The running example: a 3x3 'same' conv 32 -> 64 on 1x32x28x28, with bias.
StepInfo Conv3x3_32To64() {
  return ConvStep({1, 32, 28, 28}, {1, 64, 28, 28}, 3, 1, 1, 1, /*weights 64*32*3*3=*/18432,
                  /*bias=*/64);
}

TEST(CostModelTest, Conv3x3Params) {
  EXPECT_EQ(ConvWeightCount(3, 3, 32, 64, 1), 18432);  // 9*32*64
  const LayerCost c = EstimateStepCost(Conv3x3_32To64());
  EXPECT_EQ(c.kind, LayerKind::kDenseConv);
  EXPECT_EQ(c.weight_params, 18432);
  EXPECT_EQ(c.bias_params, 64);
  EXPECT_EQ(c.params, 18496);  // 9*32*64 + 64
  EXPECT_EQ(c.kernel_h, 3);
  EXPECT_EQ(c.kernel_w, 3);
  EXPECT_EQ(c.stride_h, 1);
  EXPECT_EQ(c.dilation_w, 1);
  EXPECT_EQ(c.groups, 1);
  EXPECT_EQ(c.input_dims, (Dims{1, 32, 28, 28}));
  EXPECT_EQ(c.output_dims, (Dims{1, 64, 28, 28}));
}

TEST(CostModelTest, Conv3x3MacsAndFlops) {
  EXPECT_EQ(ConvMacs(1, 28, 28, 3, 3, 32, 64, 1), 14450688);  // 28*28*9*32*64
  const LayerCost c = EstimateStepCost(Conv3x3_32To64());
  EXPECT_EQ(c.macs, 14450688);
  EXPECT_EQ(c.flops, 28901376);  // 2 * MACs
}

TEST(CostModelTest, FiveByFiveAgainstTwoThreeByThrees) {
  // 25c^2 against 2 * 9c^2 = 18c^2, same 5x5 receptive field.
  EXPECT_EQ(ConvWeightCount(5, 5, 64, 64, 1), 102400);
  EXPECT_EQ(2 * ConvWeightCount(3, 3, 64, 64, 1), 73728);
  EXPECT_EQ(ConvWeightCount(5, 5, 16, 16, 1), 6400);      // 25*256
  EXPECT_EQ(2 * ConvWeightCount(3, 3, 16, 16, 1), 4608);  // 18*256
}

TEST(CostModelTest, DepthwiseSeparableWeights) {
  EXPECT_EQ(SeparableWeightCount(3, 32, 64), 2336);  // 9*32 + 32*64 = 288 + 2048
  // The same pair as two steps: depthwise 3x3 on 32 channels, then a 1x1 32 -> 64.
  const LayerCost dw = EstimateStepCost(
      ConvStep({1, 32, 28, 28}, {1, 32, 28, 28}, 3, 1, 1, 32, /*32*1*3*3=*/288, 0));
  const LayerCost pw =
      EstimateStepCost(ConvStep({1, 32, 28, 28}, {1, 64, 28, 28}, 1, 1, 0, 1, /*64*32=*/2048, 0));
  EXPECT_EQ(dw.kind, LayerKind::kDepthwiseConv);
  EXPECT_EQ(pw.kind, LayerKind::kPointwiseConv);
  EXPECT_EQ(dw.params, 288);
  EXPECT_EQ(pw.params, 2048);
  EXPECT_EQ(dw.macs, 225792);   // 28*28*9*32
  EXPECT_EQ(pw.macs, 1605632);  // 28*28*32*64
}

TEST(CostModelTest, TwoSeparablesAgainstOneFiveByFive) {
  // 2(9c + c^2) against 25c^2 for c = 64: 2*(576 + 4096) = 9344 vs 102400.
  const int64_t separable = 2 * SeparableWeightCount(3, 64, 64);
  const int64_t dense = ConvWeightCount(5, 5, 64, 64, 1);
  EXPECT_EQ(separable, 9344);
  EXPECT_EQ(dense, 102400);
  EXPECT_NEAR(static_cast<double>(dense) / static_cast<double>(separable), 10.96, 0.005);
}

TEST(CostModelTest, DepthwiseWithChannelMultiplierTwo) {
  // group = c_in = 32, c_out = 64: each input channel feeds two 3x3 filters.
  EXPECT_EQ(ConvWeightCount(3, 3, 32, 64, 32), 576);  // 9*1*64
  const LayerCost c = EstimateStepCost(
      ConvStep({1, 32, 28, 28}, {1, 64, 28, 28}, 3, 1, 1, 32, /*64*1*3*3=*/576, 64));
  EXPECT_EQ(c.kind, LayerKind::kDepthwiseConv);
  EXPECT_EQ(c.groups, 32);
  EXPECT_EQ(c.params, 640);    // 576 + 64
  EXPECT_EQ(c.macs, 451584);   // 28*28*9*1*64
  EXPECT_EQ(c.flops, 903168);  // 2 * MACs
}

TEST(CostModelTest, GroupedConvFourGroups) {
  // 3x3, 64 -> 128 in 4 groups: each output channel sees 16 input channels.
  EXPECT_EQ(ConvWeightCount(3, 3, 64, 128, 4), 18432);  // 9*16*128
  const LayerCost c = EstimateStepCost(
      ConvStep({1, 64, 14, 14}, {1, 128, 14, 14}, 3, 1, 1, 4, /*128*16*3*3=*/18432, 128));
  EXPECT_EQ(c.kind, LayerKind::kGroupedConv);
  EXPECT_EQ(c.groups, 4);
  EXPECT_EQ(c.params, 18560);  // 18432 + 128
  EXPECT_EQ(c.macs, 3612672);  // 14*14*9*16*128
  EXPECT_EQ(ConvMacs(1, 14, 14, 3, 3, 64, 128, 4), 3612672);
}

TEST(CostModelTest, PointwiseConv) {
  const LayerCost c = EstimateStepCost(
      ConvStep({1, 64, 14, 14}, {1, 128, 14, 14}, 1, 1, 0, 1, /*128*64=*/8192, 128));
  EXPECT_EQ(c.kind, LayerKind::kPointwiseConv);
  EXPECT_EQ(c.kernel_h, 1);
  EXPECT_EQ(c.kernel_w, 1);
  EXPECT_EQ(c.params, 8320);   // 8192 + 128
  EXPECT_EQ(c.macs, 1605632);  // 14*14*64*128
  // (14*14*64) * (14*14*128) + 14*14*128 = 12544*25088 + 25088
  EXPECT_EQ(c.dense_equivalent_params, 314728960);
}

TEST(CostModelTest, ConvKindClassification) {
  EXPECT_EQ(ConvKind(3, 3, 1, 32, 1), LayerKind::kDenseConv);  // group == c_in == 1: dense
  EXPECT_EQ(ConvKind(1, 1, 1, 32, 1), LayerKind::kPointwiseConv);
  EXPECT_EQ(ConvKind(3, 3, 32, 32, 32), LayerKind::kDepthwiseConv);
  EXPECT_EQ(ConvKind(3, 3, 32, 96, 32), LayerKind::kDepthwiseConv);  // multiplier 3
  EXPECT_EQ(ConvKind(3, 3, 64, 64, 2), LayerKind::kGroupedConv);
  EXPECT_EQ(ConvKind(1, 1, 64, 64, 4), LayerKind::kGroupedConv);  // grouped 1x1 (ShuffleNet)
  EXPECT_EQ(ConvKind(1, 3, 64, 64, 1), LayerKind::kDenseConv);    // 1x3 is not pointwise
}

TEST(CostModelTest, DenseEquivalentOfFirstConv) {
  // 3x3 'same' conv 1 -> 32 on 28x28: (28*28*1)*(28*28*32) + 28*28*32 = 784*25088 + 25088.
  EXPECT_EQ(DenseEquivalentParams(28, 28, 1, 28, 28, 32, true), 19694080);
  EXPECT_EQ(DenseEquivalentParams(28, 28, 1, 28, 28, 32, false), 19668992);  // 784*25088
  // Per image: a batch of 8 multiplies the MACs, not the dense equivalent.
  const LayerCost c =
      EstimateStepCost(ConvStep({8, 1, 28, 28}, {8, 32, 28, 28}, 3, 1, 1, 1, /*32*1*3*3=*/288, 32));
  EXPECT_EQ(c.kind, LayerKind::kDenseConv);
  EXPECT_EQ(c.params, 320);  // 288 + 32
  EXPECT_EQ(c.dense_equivalent_params, 19694080);
  EXPECT_EQ(c.macs, 1806336);  // 8*28*28*9*1*32
}

TEST(CostModelTest, GemmInnerProduct) {
  // Gemm 3136 -> 128 on a batch of 4, as ops/gemm.cc records it (A is the only runtime input).
  StepInfo s = SimpleStep("Gemm", {{4, 3136}}, {4, 128});
  s.weight_elements = 401408;  // 3136*128
  s.bias_elements = 128;
  const LayerCost c = EstimateStepCost(s);
  EXPECT_EQ(c.kind, LayerKind::kDense);
  EXPECT_EQ(c.params, 401536);                   // 3136*128 + 128
  EXPECT_EQ(c.dense_equivalent_params, 401536);  // a dense layer is its own equivalent
  EXPECT_EQ(c.macs, 1605632);                    // 4*3136*128
  EXPECT_EQ(c.flops, 3211264);
  EXPECT_EQ(c.weight_bytes, 1606144);           // 401536*4
  EXPECT_EQ(c.activation_bytes_read, 50176);    // 4*3136*4
  EXPECT_EQ(c.activation_bytes_written, 2048);  // 4*128*4
  EXPECT_EQ(c.kernel_h, 0);
  EXPECT_EQ(c.groups, 0);
}

TEST(CostModelTest, BatchedMatMulAndTransposedGemm) {
  // MatMul [2,8,16] x constant [16,4] -> [2,8,4]: 2*8*4 outputs, 16 MACs each.
  StepInfo matmul = SimpleStep("MatMul", {{2, 8, 16}}, {2, 8, 4});
  matmul.weight_elements = 64;
  EXPECT_EQ(EstimateStepCost(matmul).macs, 1024);
  // Two runtime operands: no parameters, so no dense equivalent.
  const LayerCost both =
      EstimateStepCost(SimpleStep("MatMul", {{2, 8, 16}, {2, 16, 4}}, {2, 8, 4}));
  EXPECT_EQ(both.macs, 1024);
  EXPECT_EQ(both.params, 0);
  EXPECT_EQ(both.dense_equivalent_params, 0);
  EXPECT_EQ(both.activation_bytes_read, 1536);  // (2*8*16 + 2*16*4) * 4 = (256 + 128) * 4
  // Gemm with transA (host-run): A = [K=6, M=3], output [3, 5]: 15 outputs of 6 MACs.
  EXPECT_EQ(EstimateStepCost(SimpleStep("Gemm", {{6, 3}}, {3, 5})).macs, 90);
}

TEST(CostModelTest, MaxPoolTwoByTwoStrideTwo) {
  // As ops/pool.cc records it, but without output dims: the model derives them.
  StepInfo s = SimpleStep("MaxPool", {{1, 32, 28, 28}}, {});
  s.shape_attributes["kernel_shape"] = {2, 2};
  s.shape_attributes["strides"] = {2, 2};
  s.shape_attributes["dilations"] = {1, 1};
  s.shape_attributes["pads"] = {0, 0, 0, 0};
  const LayerCost c = EstimateStepCost(s);
  EXPECT_EQ(c.kind, LayerKind::kPooling);
  EXPECT_EQ(c.output_dims, (Dims{1, 32, 14, 14}));
  EXPECT_EQ(c.kernel_h, 2);
  EXPECT_EQ(c.stride_w, 2);
  EXPECT_EQ(c.flops, 25088);  // 32*14*14 outputs * 4 window elements
  EXPECT_EQ(c.macs, 0);
  EXPECT_EQ(c.params, 0);
  EXPECT_EQ(c.dense_equivalent_params, 0);
  EXPECT_EQ(c.activation_bytes_read, 100352);    // 32*28*28*4
  EXPECT_EQ(c.activation_bytes_written, 25088);  // 32*14*14*4
}

TEST(CostModelTest, GlobalAveragePoolWithoutAttributes) {
  // A host-run global pool records no attributes: the window is the whole 7x7 plane.
  const LayerCost c =
      EstimateStepCost(SimpleStep("GlobalAveragePool", {{2, 64, 7, 7}}, {2, 64, 1, 1}));
  EXPECT_EQ(c.kind, LayerKind::kGlobalPooling);
  EXPECT_EQ(c.kernel_h, 7);
  EXPECT_EQ(c.kernel_w, 7);
  EXPECT_EQ(c.flops, 6272);  // one per input element: 2*64*49
}

TEST(CostModelTest, StridedConvOutputDims) {
  // 3x3 stride 2 pad 1, 16 -> 32 on 1x16x28x28, output dims left for the model to derive.
  const LayerCost c =
      EstimateStepCost(ConvStep({1, 16, 28, 28}, {}, 3, 2, 1, 1, /*32*16*3*3=*/4608, 32));
  EXPECT_EQ(c.output_dims, (Dims{1, 32, 14, 14}));
  EXPECT_EQ(c.stride_h, 2);
  EXPECT_EQ(c.macs, 903168);  // 14*14*9*16*32
}

TEST(CostModelTest, ConvActivationBytesAndIntensity) {
  const LayerCost c = EstimateStepCost(Conv3x3_32To64());
  EXPECT_EQ(c.weight_bytes, 73984);               // 18496*4
  EXPECT_EQ(c.activation_bytes_read, 100352);     // 32*28*28*4
  EXPECT_EQ(c.activation_bytes_written, 200704);  // 64*28*28*4
  // 28901376 / (73984 + 100352 + 200704) = 28901376 / 375040
  EXPECT_NEAR(c.arithmetic_intensity, 77.0621, 1e-4);
  const LayerCost half = EstimateStepCost(Conv3x3_32To64(), 2);
  EXPECT_EQ(half.weight_bytes, 36992);
  EXPECT_EQ(half.activation_bytes_read, 50176);
  EXPECT_EQ(half.activation_bytes_written, 100352);
  EXPECT_EQ(half.flops, 28901376);
}

TEST(CostModelTest, FusedPostOpsAndResidualSum) {
  StepInfo s = Conv3x3_32To64();
  s.post_ops = {"sum", "relu"};
  const LayerCost c = EstimateStepCost(s);
  EXPECT_EQ(c.flops, 29001728);                   // 2*14450688 + 2 * 64*28*28
  EXPECT_EQ(c.macs, 14450688);                    // post-ops are not MACs
  EXPECT_EQ(c.activation_bytes_read, 301056);     // (32*28*28 + 64*28*28) * 4: input + residual
  EXPECT_EQ(c.activation_bytes_written, 200704);  // 64*28*28*4
  // A host-run conv lists the residual among its inputs too: still read once.
  s.input_dims.push_back({1, 64, 28, 28});
  EXPECT_EQ(EstimateStepCost(s).activation_bytes_read, 301056);
}

TEST(CostModelTest, ConvWithPartialRecords) {
  // Kernel recorded, weights not: the weights come from the shapes.
  StepInfo no_weights = Conv3x3_32To64();
  no_weights.weight_elements = 0;
  no_weights.bias_elements = 0;
  EXPECT_EQ(EstimateStepCost(no_weights).weight_params, 18432);  // 9*32*64
  // Weights recorded, kernel not: MACs = N*H'*W'*weights.
  StepInfo no_kernel = Conv3x3_32To64();
  no_kernel.shape_attributes.erase("kernel_shape");
  EXPECT_EQ(EstimateStepCost(no_kernel).macs, 14450688);  // 28*28*18432
}

TEST(CostModelTest, OtherKinds) {
  const Dims x = {1, 64, 28, 28};  // 50176 elements
  const LayerCost relu = EstimateStepCost(SimpleStep("Relu", {x}, x));
  EXPECT_EQ(relu.kind, LayerKind::kEltwise);
  EXPECT_EQ(relu.flops, 50176);
  EXPECT_EQ(relu.activation_bytes_read, 200704);
  EXPECT_DOUBLE_EQ(relu.arithmetic_intensity, 0.125);  // 50176 / (2*200704)

  const LayerCost add = EstimateStepCost(SimpleStep("Add", {x, x}, x));
  EXPECT_EQ(add.kind, LayerKind::kBinary);
  EXPECT_EQ(add.flops, 50176);
  EXPECT_EQ(add.activation_bytes_read, 401408);                                // two inputs
  EXPECT_EQ(EstimateStepCost(SimpleStep("Sum", {x, x, x}, x)).flops, 100352);  // 2 adds each
  EXPECT_EQ(EstimateStepCost(SimpleStep("Mul", {x}, x)).flops, 50176);         // constant operand

  StepInfo bn = SimpleStep("BatchNormalization", {x}, x);
  bn.weight_elements = 256;  // scale, shift, mean, variance of 64 channels
  const LayerCost norm = EstimateStepCost(bn);
  EXPECT_EQ(norm.kind, LayerKind::kNormalization);
  EXPECT_EQ(norm.flops, 100352);  // 2 per element
  EXPECT_EQ(norm.params, 256);
  EXPECT_EQ(norm.dense_equivalent_params, 0);

  const LayerCost softmax = EstimateStepCost(SimpleStep("Softmax", {{4, 10}}, {4, 10}));
  EXPECT_EQ(softmax.kind, LayerKind::kSoftmax);
  EXPECT_EQ(softmax.flops, 200);  // 5 per element

  const LayerCost mean = EstimateStepCost(SimpleStep("ReduceMean", {{1, 64, 7, 7}}, {1, 64, 1, 1}));
  EXPECT_EQ(mean.kind, LayerKind::kReduction);
  EXPECT_EQ(mean.flops, 3136);  // one per input element

  const LayerCost reorder = EstimateStepCost(SimpleStep("Reorder", {x}, x));
  EXPECT_EQ(reorder.kind, LayerKind::kDataMovement);
  EXPECT_EQ(reorder.flops, 0);
  EXPECT_EQ(reorder.activation_bytes_read, 200704);
  EXPECT_EQ(reorder.activation_bytes_written, 200704);
  EXPECT_EQ(EstimateStepCost(SimpleStep("Output", {{1, 10}}, {1, 10})).kind,
            LayerKind::kDataMovement);
  EXPECT_EQ(EstimateStepCost(SimpleStep("Concat", {x, x}, {1, 128, 28, 28})).activation_bytes_read,
            401408);
  EXPECT_EQ(EstimateStepCost(SimpleStep("Shape", {x}, {4})).kind, LayerKind::kOther);
}

TEST(CostModelTest, LayerKindNames) {
  EXPECT_STREQ(LayerKindName(LayerKind::kDenseConv), "dense_conv");
  EXPECT_STREQ(LayerKindName(LayerKind::kDepthwiseConv), "depthwise_conv");
  EXPECT_STREQ(LayerKindName(LayerKind::kGroupedConv), "grouped_conv");
  EXPECT_STREQ(LayerKindName(LayerKind::kPointwiseConv), "pointwise_conv");
  EXPECT_STREQ(LayerKindName(LayerKind::kPooling), "pooling");
  EXPECT_STREQ(LayerKindName(LayerKind::kGlobalPooling), "global_pooling");
  EXPECT_STREQ(LayerKindName(LayerKind::kDense), "dense");
  EXPECT_STREQ(LayerKindName(LayerKind::kEltwise), "eltwise");
  EXPECT_STREQ(LayerKindName(LayerKind::kBinary), "binary");
  EXPECT_STREQ(LayerKindName(LayerKind::kNormalization), "normalization");
  EXPECT_STREQ(LayerKindName(LayerKind::kSoftmax), "softmax");
  EXPECT_STREQ(LayerKindName(LayerKind::kReduction), "reduction");
  EXPECT_STREQ(LayerKindName(LayerKind::kDataMovement), "data_movement");
  EXPECT_STREQ(LayerKindName(LayerKind::kOther), "other");
}

TEST(CostModelTest, SumCostsTotals) {
  // conv 3x3 32->64, max pool 2x2/2 on its output, Gemm 12544 -> 10.
  StepInfo pool = SimpleStep("MaxPool", {{1, 64, 28, 28}}, {1, 64, 14, 14});
  pool.shape_attributes["kernel_shape"] = {2, 2};
  pool.shape_attributes["strides"] = {2, 2};
  StepInfo gemm = SimpleStep("Gemm", {{1, 12544}}, {1, 10});
  gemm.weight_elements = 125440;
  gemm.bias_elements = 10;
  const ModelCost total = SumCosts(
      {EstimateStepCost(Conv3x3_32To64()), EstimateStepCost(pool), EstimateStepCost(gemm)});
  EXPECT_EQ(total.params, 143946);  // 18496 + 0 + 125450
  // conv: (784*32)*(784*64) + 784*64 = 1258865664; gemm: 125450
  EXPECT_EQ(total.dense_equivalent_params, 1258991114);
  EXPECT_EQ(total.macs, 14576128);        // 14450688 + 0 + 125440
  EXPECT_EQ(total.flops, 29202432);       // 28901376 + 12544*4 + 2*125440
  EXPECT_EQ(total.weight_bytes, 575784);  // (18496 + 125450) * 4
  // conv 100352+200704, pool 200704+50176, gemm 50176+40
  EXPECT_EQ(total.activation_bytes, 602152);

  const ModelCost empty = SumCosts({});
  EXPECT_EQ(empty.params, 0);
  EXPECT_EQ(empty.flops, 0);
  EXPECT_EQ(empty.activation_bytes, 0);
}

}  // namespace
}  // namespace convserve::engine
