// ONNX window arithmetic (server/engine/spatial_math.h) against hand-computed values, and the
// host shape inference built on it (statuses for invalid configurations).
#include "server/engine/spatial_math.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/host_ops.h"

namespace convserve::engine {
namespace {

using ::testing::HasSubstr;

TEST(SpatialMathTest, ParseAutoPad) {
  EXPECT_EQ(ParseAutoPad("NOTSET"), AutoPad::kNotSet);
  EXPECT_EQ(ParseAutoPad("SAME_UPPER"), AutoPad::kSameUpper);
  EXPECT_EQ(ParseAutoPad("SAME_LOWER"), AutoPad::kSameLower);
  EXPECT_EQ(ParseAutoPad("VALID"), AutoPad::kValid);
  EXPECT_EQ(ParseAutoPad("same_upper"), std::nullopt);
  EXPECT_EQ(ParseAutoPad(""), std::nullopt);
}

TEST(SpatialMathTest, WindowExtent) {
  EXPECT_EQ(WindowExtent(3, 1), 3);
  EXPECT_EQ(WindowExtent(3, 2), 5);  // taps at 0, 2, 4
  EXPECT_EQ(WindowExtent(2, 3), 4);  // taps at 0, 3
  EXPECT_EQ(WindowExtent(1, 7), 1);
}

TEST(SpatialMathTest, OutputSizeFloor) {
  EXPECT_EQ(WindowOutputSize(28, 3, 2, 1, 1), 14);                   // floor((28+2-3)/2)+1
  EXPECT_EQ(WindowOutputSize(224, 7, 2, 3, 3), 112);                 // ResNet stem: floor(223/2)+1
  EXPECT_EQ(WindowOutputSize(28, 3, 1, 0, 0), 26);                   // no padding
  EXPECT_EQ(WindowOutputSize(28, WindowExtent(3, 2), 1, 2, 2), 28);  // dilation 2: extent 5
  EXPECT_EQ(WindowOutputSize(7, 2, 2, 0, 1), 4);                     // floor(6/2)+1
  EXPECT_EQ(WindowOutputSize(5, 3, 1, 2, 0), 5);  // asymmetric pads: floor(4/1)+1
  EXPECT_EQ(WindowOutputSize(3, 3, 2, 0, 0), 1);  // window exactly the input
}

TEST(SpatialMathTest, OutputSizeCeilMode) {
  // 7, window 2, stride 2: floor(5/2)+1 = 3; ceil(5/2)+1 = 4, last window starts at 6 < 7.
  EXPECT_EQ(WindowOutputSize(7, 2, 2, 0, 0, /*ceil_mode=*/false), 3);
  EXPECT_EQ(WindowOutputSize(7, 2, 2, 0, 0, /*ceil_mode=*/true), 4);
  // 5 with pads 1+1, window 2, stride 2: ceil(5/2)+1 = 4, but the 4th window would start at
  // padded position 6 = in + pad_begin, all end padding: dropped (ONNX, PyTorch) -> 3.
  EXPECT_EQ(WindowOutputSize(5, 2, 2, 1, 1, /*ceil_mode=*/false), 3);
  EXPECT_EQ(WindowOutputSize(5, 2, 2, 1, 1, /*ceil_mode=*/true), 3);
  // 6 with pads 1+1, window 3, stride 2: floor(5/2)+1 = 3; ceil -> 4, the 4th window starts at
  // padded 6 < 7, inside the input: kept.
  EXPECT_EQ(WindowOutputSize(6, 3, 2, 1, 1, /*ceil_mode=*/false), 3);
  EXPECT_EQ(WindowOutputSize(6, 3, 2, 1, 1, /*ceil_mode=*/true), 4);
  // 5, window 1, stride 3: ceil(4/3)+1 = 3, the 3rd window at 6 is past the input -> 2.
  EXPECT_EQ(WindowOutputSize(5, 1, 3, 0, 0, /*ceil_mode=*/true), 2);
  // Divisible spans: ceil and floor agree.
  EXPECT_EQ(WindowOutputSize(8, 2, 2, 0, 0, /*ceil_mode=*/true), 4);
}

TEST(SpatialMathTest, OutputSizeWindowWiderThanPaddedInput) {
  EXPECT_EQ(WindowOutputSize(2, 5, 1, 1, 1), std::nullopt);  // 4 < 5
  // span -1 with stride 2: truncating division would give 0 + 1 = 1 window; there is none.
  EXPECT_EQ(WindowOutputSize(1, 2, 2, 0, 0), std::nullopt);
  EXPECT_EQ(WindowOutputSize(1, 2, 2, 0, 0, /*ceil_mode=*/true), std::nullopt);
  EXPECT_EQ(WindowOutputSize(1, 2, 2, 0, 1), 1);  // padded to 2: one window
}

TEST(SpatialMathTest, PaddingForOutput) {
  EXPECT_EQ(WindowPaddingForOutput(7, 4, 3, 2), 2);    // 3*2 + 3 - 7
  EXPECT_EQ(WindowPaddingForOutput(8, 4, 3, 2), 1);    // 3*2 + 3 - 8
  EXPECT_EQ(WindowPaddingForOutput(6, 3, 1, 2), -1);   // 2*2 + 1 - 6: last input unused
  EXPECT_EQ(WindowPaddingForOutput(28, 28, 5, 1), 4);  // 'same' 3x3 dilation 2
}

TEST(SpatialMathTest, SplitPadding) {
  EXPECT_EQ(SplitPadding(4, AutoPad::kSameUpper), (WindowPads{2, 2}));
  EXPECT_EQ(SplitPadding(4, AutoPad::kSameLower), (WindowPads{2, 2}));
  EXPECT_EQ(SplitPadding(3, AutoPad::kSameUpper), (WindowPads{1, 2}));  // extra at the end
  EXPECT_EQ(SplitPadding(3, AutoPad::kSameLower), (WindowPads{2, 1}));  // extra at the beginning
  EXPECT_EQ(SplitPadding(1, AutoPad::kSameUpper), (WindowPads{0, 1}));
  EXPECT_EQ(SplitPadding(1, AutoPad::kSameLower), (WindowPads{1, 0}));
  EXPECT_EQ(SplitPadding(0, AutoPad::kSameLower), (WindowPads{0, 0}));
  EXPECT_EQ(SplitPadding(3, AutoPad::kNotSet), (WindowPads{1, 2}));
}

TEST(SpatialMathTest, ResolveSameUpperAndLower) {
  // 7, window 3, stride 2: out ceil(7/2) = 4, total 3*2+3-7 = 2 (even) -> 1 + 1 either way.
  for (AutoPad mode : {AutoPad::kSameUpper, AutoPad::kSameLower}) {
    const auto axis = ResolveWindowAxis(7, mode, 3, 2, {}, false);
    ASSERT_TRUE(axis);
    EXPECT_EQ(axis->output, 4);
    EXPECT_EQ(axis->pads, (WindowPads{1, 1}));
  }
  // 8, window 3, stride 2: out 4, total 1 (odd): UPPER pads the end, LOWER the beginning.
  auto upper = ResolveWindowAxis(8, AutoPad::kSameUpper, 3, 2, {}, false);
  auto lower = ResolveWindowAxis(8, AutoPad::kSameLower, 3, 2, {}, false);
  ASSERT_TRUE(upper && lower);
  EXPECT_EQ(upper->output, 4);
  EXPECT_EQ(upper->pads, (WindowPads{0, 1}));
  EXPECT_EQ(lower->output, 4);
  EXPECT_EQ(lower->pads, (WindowPads{1, 0}));
  // Dilation: kernel 2 dilation 3 (extent 4), stride 1 on 10: out 10, total 3 -> 1+2 / 2+1.
  upper = ResolveWindowAxis(10, AutoPad::kSameUpper, WindowExtent(2, 3), 1, {}, false);
  lower = ResolveWindowAxis(10, AutoPad::kSameLower, WindowExtent(2, 3), 1, {}, false);
  ASSERT_TRUE(upper && lower);
  EXPECT_EQ(upper->output, 10);
  EXPECT_EQ(upper->pads, (WindowPads{1, 2}));
  EXPECT_EQ(lower->pads, (WindowPads{2, 1}));
  // Explicit pads and ceil_mode are ignored; a negative total (6, window 1, stride 2: out 3,
  // 2*2+1-6 = -1) is no padding.
  const auto ignored = ResolveWindowAxis(6, AutoPad::kSameUpper, 1, 2, {5, 5}, true);
  ASSERT_TRUE(ignored);
  EXPECT_EQ(ignored->output, 3);
  EXPECT_EQ(ignored->pads, (WindowPads{0, 0}));
}

TEST(SpatialMathTest, ResolveValidAndNotSet) {
  // VALID drops the explicit pads: 7, window 3, stride 2 -> floor(4/2)+1 = 3.
  auto axis = ResolveWindowAxis(7, AutoPad::kValid, 3, 2, {1, 1}, false);
  ASSERT_TRUE(axis);
  EXPECT_EQ(axis->output, 3);
  EXPECT_EQ(axis->pads, (WindowPads{0, 0}));
  // NOTSET keeps them: floor((7+2-3)/2)+1 = 4.
  axis = ResolveWindowAxis(7, AutoPad::kNotSet, 3, 2, {1, 1}, false);
  ASSERT_TRUE(axis);
  EXPECT_EQ(axis->output, 4);
  EXPECT_EQ(axis->pads, (WindowPads{1, 1}));
  // ceil_mode both ways through NOTSET (the drop rule applies).
  axis = ResolveWindowAxis(5, AutoPad::kNotSet, 2, 2, {1, 1}, true);
  ASSERT_TRUE(axis);
  EXPECT_EQ(axis->output, 3);
  axis = ResolveWindowAxis(7, AutoPad::kNotSet, 2, 2, {0, 0}, true);
  ASSERT_TRUE(axis);
  EXPECT_EQ(axis->output, 4);
  // Window wider than the padded input; VALID ignores the pads that would have made room.
  EXPECT_EQ(ResolveWindowAxis(2, AutoPad::kNotSet, 5, 1, {1, 1}, false), std::nullopt);
  EXPECT_EQ(ResolveWindowAxis(2, AutoPad::kValid, 3, 1, {5, 5}, false), std::nullopt);
}

// ---- the host shape inference on top of the helper ----

Node MakeNode(const std::string& op_type, std::map<std::string, AttributeValue> attributes) {
  Node node;
  node.name = "n";
  node.op_type = op_type;
  node.inputs =
      op_type == "Conv" ? std::vector<std::string>{"x", "w"} : std::vector<std::string>{"x"};
  node.outputs = {"y"};
  node.attributes = std::move(attributes);
  return node;
}

absl::StatusOr<Dims> InferDims(const Node& node, const Dims& x) {
  std::vector<host::InputState> inputs = {{DataType::kFloat32, x, nullptr}};
  if (node.op_type == "Conv") inputs.push_back({DataType::kFloat32, {1, 1, 3, 3}, nullptr});
  absl::StatusOr<std::vector<ValueInfo>> outputs = host::InferOutputs(node, inputs);
  if (!outputs.ok()) return outputs.status();
  return (*outputs)[0].dims;
}

TEST(SpatialMathTest, HostPoolShapes) {
  // H 7 pads 0: floor 3, ceil 4. W 5 pads 1+1: floor 3, ceil 4 -> last window dropped -> 3.
  const std::map<std::string, AttributeValue> pool = {{"kernel_shape", std::vector<int64_t>{2, 2}},
                                                      {"strides", std::vector<int64_t>{2, 2}},
                                                      {"pads", std::vector<int64_t>{0, 1, 0, 1}}};
  EXPECT_EQ(InferDims(MakeNode("MaxPool", pool), {1, 1, 7, 5}).value(), (Dims{1, 1, 3, 3}));
  auto ceil = pool;
  ceil["ceil_mode"] = int64_t{1};
  EXPECT_EQ(InferDims(MakeNode("MaxPool", ceil), {1, 1, 7, 5}).value(), (Dims{1, 1, 4, 3}));
  auto same = pool;
  same["auto_pad"] = std::string("SAME_LOWER");
  EXPECT_EQ(InferDims(MakeNode("MaxPool", same), {1, 1, 7, 5}).value(), (Dims{1, 1, 4, 3}));
  auto valid = pool;
  valid["auto_pad"] = std::string("VALID");
  EXPECT_EQ(InferDims(MakeNode("MaxPool", valid), {1, 1, 7, 5}).value(), (Dims{1, 1, 3, 2}));
}

TEST(SpatialMathTest, HostInvalidConfigurations) {
  absl::StatusOr<Dims> dims = InferDims(
      MakeNode("MaxPool",
               {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"auto_pad", std::string("SAME")}}),
      {1, 1, 4, 4});
  EXPECT_EQ(dims.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dims.status().message(), HasSubstr("node 'n' (MaxPool): unknown auto_pad 'SAME'"));

  dims = InferDims(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                        {"dilations", std::vector<int64_t>{2, 1}}}),
                   {1, 1, 4, 4});
  EXPECT_EQ(dims.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dims.status().message(),
              HasSubstr("window 5 is larger than the padded input 4 in spatial dim 0"));

  // Conv has no ceil_mode: UNIMPLEMENTED, checked before auto_pad.
  dims = InferDims(MakeNode("Conv", {{"ceil_mode", int64_t{1}}, {"auto_pad", std::string("X")}}),
                   {1, 1, 5, 5});
  EXPECT_EQ(dims.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(dims.status().message(), HasSubstr("ceil_mode is not supported"));
}

}  // namespace
}  // namespace convserve::engine
