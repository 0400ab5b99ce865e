// Host ops: hand-computed literals (many from the examples in ONNX's operator docs), error
// messages, and seeded cross-checks between ops (1x1 Conv == MatMul, Gemm == MatMul + Add).
#include "server/engine/host_ops.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace convserve::engine::host {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

using Attributes = std::map<std::string, AttributeValue>;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

template <typename T>
Tensor Make(DataType dtype, Dims dims, const std::vector<T>& values) {
  Tensor t(dtype, std::move(dims));
  EXPECT_EQ(t.bytes.size(), values.size() * sizeof(T)) << "test tensor literal has wrong size";
  if (t.bytes.size() == values.size() * sizeof(T) && !values.empty()) {
    std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  }
  return t;
}
Tensor F32(Dims dims, const std::vector<float>& v) { return Make(DataType::kFloat32, dims, v); }
Tensor F64(Dims dims, const std::vector<double>& v) { return Make(DataType::kFloat64, dims, v); }
Tensor I64(Dims dims, const std::vector<int64_t>& v) { return Make(DataType::kInt64, dims, v); }
Tensor I32(Dims dims, const std::vector<int32_t>& v) { return Make(DataType::kInt32, dims, v); }
Tensor U8(Dims dims, const std::vector<uint8_t>& v) { return Make(DataType::kUint8, dims, v); }
Tensor I8(Dims dims, const std::vector<int8_t>& v) { return Make(DataType::kInt8, dims, v); }
Tensor Bool(Dims dims, const std::vector<uint8_t>& v) { return Make(DataType::kBool, dims, v); }

// 1, 2, ..., n as float.
std::vector<float> Iota(int n, float first = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = first + static_cast<float>(i);
  return v;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  std::vector<T> v(t.bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

Node MakeNode(const std::string& op, Attributes attributes = {}, size_t outputs = 1) {
  Node node;
  node.name = std::string("n");  // not = "n": GCC 12 warns falsely (-Wrestrict) on that
  node.op_type = op;
  node.attributes = std::move(attributes);
  for (size_t i = 0; i < outputs; ++i) node.outputs.push_back(absl::StrCat("y", i));
  return node;
}

// Evaluates `node` on constant inputs (nullptr = absent optional input).
absl::StatusOr<std::vector<Tensor>> RunAll(Node node, const std::vector<const Tensor*>& inputs) {
  node.inputs.clear();
  for (size_t i = 0; i < inputs.size(); ++i) {
    node.inputs.push_back(inputs[i] != nullptr ? absl::StrCat("x", i) : "");
  }
  return EvaluateConstant(node, inputs);
}

// The single (first) output, or an empty tensor after recording the failure.
Tensor Run1(const Node& node, const std::vector<const Tensor*>& inputs) {
  absl::StatusOr<std::vector<Tensor>> outputs = RunAll(node, inputs);
  if (!outputs.ok()) {
    ADD_FAILURE() << outputs.status();
    return Tensor();
  }
  return std::move((*outputs)[0]);
}

std::string Msg(const absl::Status& status) { return std::string(status.message()); }

absl::Status RunStatus(const Node& node, const std::vector<const Tensor*>& inputs) {
  return RunAll(node, inputs).status();
}

std::vector<InputState> States(const std::vector<InputState>& states) { return states; }

absl::StatusOr<std::vector<ValueInfo>> Infer(Node node, const std::vector<InputState>& inputs) {
  node.inputs.assign(inputs.size(), "x");
  return InferOutputs(node, inputs);
}

MATCHER_P(FloatsNear, expected, "") {
  return ::testing::ExplainMatchResult(Pointwise(FloatNear(1e-5f), expected), Values<float>(arg),
                                       result_listener);
}

// ---------------------------------------------------------------------------------------------
// Registry, dtype support, errors

TEST(HostOpsTest, UnknownOpIsUnimplementedWithNodeName) {
  const Node node = MakeNode("Foo");
  const Tensor x = F32({1}, {1.0f});
  const absl::Status status = RunStatus(node, {&x});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Msg(status), "node 'n' (Foo): unsupported op type 'Foo'");
  const std::vector<InputState> states = {{DataType::kFloat32, {1}, nullptr}};
  EXPECT_EQ(Msg(Infer(node, states).status()), "node 'n' (Foo): unsupported op type 'Foo'");
  EXPECT_FALSE(CanEvaluate(node, states));
}

TEST(HostOpsTest, UnsupportedDtypeInfersButDoesNotEvaluate) {
  const Node node = MakeNode("Relu");
  const std::vector<InputState> states = {{DataType::kFloat64, {2}, nullptr}};
  absl::StatusOr<std::vector<ValueInfo>> infos = Infer(node, states);
  ASSERT_TRUE(infos.ok()) << infos.status();
  EXPECT_EQ((*infos)[0].dtype, DataType::kFloat64);
  EXPECT_EQ((*infos)[0].name, "y0");
  EXPECT_FALSE(CanEvaluate(node, states));
  EXPECT_TRUE(CanEvaluate(node, States({{DataType::kFloat32, {2}, nullptr}})));
  const Tensor x = F64({2}, {-1.0, 1.0});
  const absl::Status status = RunStatus(node, {&x});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Msg(status), "node 'n' (Relu): data type FP64 of input 0 is not supported");
}

TEST(HostOpsTest, BroadcastMismatchNamesBothShapes) {
  const Tensor a = F32({2, 3}, Iota(6));
  const Tensor b = F32({4}, Iota(4));
  const absl::Status status = RunStatus(MakeNode("Add"), {&a, &b});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Msg(status), "node 'n' (Add): shapes [2,3] and [4] are not broadcast-compatible");
}

TEST(HostOpsTest, WrongInputCountIsInvalid) {
  const Tensor a = F32({1}, {1.0f});
  const absl::Status status = RunStatus(MakeNode("Add"), {&a});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("node 'n' (Add): expects 2 input(s), got 1"));
}

TEST(HostOpsTest, MismatchedInputTypesAreInvalid) {
  const Tensor a = F32({1}, {1.0f});
  const Tensor b = I64({1}, {1});
  const absl::Status status = RunStatus(MakeNode("Mul"), {&a, &b});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("input 1 has data type INT64 but input 0 has FP32"));
}

TEST(HostOpsTest, EvaluateChecksOutputViews) {
  Node node = MakeNode("Relu");
  node.inputs = {"x"};
  std::vector<float> x = {-1.0f, 2.0f};
  std::vector<float> y(3);
  const TensorView in{DataType::kFloat32, {2}, x.data()};
  const TensorView wrong{DataType::kFloat32, {3}, y.data()};
  const absl::Status status = Evaluate(node, {&in, 1}, {&wrong, 1});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("output 0 is FP32 [3] but the op produces FP32 [2]"));
  const TensorView right{DataType::kFloat32, {2}, y.data()};
  ASSERT_TRUE(Evaluate(node, {&in, 1}, {&right, 1}).ok());
  EXPECT_THAT(y, ElementsAre(0.0f, 2.0f, 0.0f));
}

TEST(HostOpsTest, ShapeLikeInputsMustBeConstant) {
  const InputState data{DataType::kFloat32, {2, 3}, nullptr};
  const InputState unknown{DataType::kInt64, {2}, nullptr};
  const struct {
    const char* op;
    std::vector<InputState> inputs;
    const char* name;
  } cases[] = {
      {"Reshape", {data, unknown}, "shape"},
      {"Expand", {data, unknown}, "shape"},
      {"Tile", {data, unknown}, "repeats"},
      {"Slice", {data, unknown, unknown}, "starts"},
      {"Unsqueeze", {data, unknown}, "axes"},
      {"Squeeze", {data, unknown}, "axes"},
      {"Pad", {data, {DataType::kInt64, {4}, nullptr}}, "pads"},
      {"ConstantOfShape", {unknown}, "input"},
      {"Range",
       {{DataType::kInt64, {}, nullptr},
        {DataType::kInt64, {}, nullptr},
        {DataType::kInt64, {}, nullptr}},
       "start"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.op);
    const absl::Status status = Infer(MakeNode(c.op), c.inputs).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
    EXPECT_EQ(Msg(status),
              absl::StrCat("node 'n' (", c.op, "): requires a constant '", c.name, "' input"));
  }
}

TEST(HostOpsTest, InferKeepsUnknownBatchDims) {
  auto dims_of = [](absl::StatusOr<std::vector<ValueInfo>> infos) {
    EXPECT_TRUE(infos.ok()) << infos.status();
    return infos.ok() ? (*infos)[0].dims : Dims{};
  };
  const Tensor bias = F32({3}, Iota(3));
  EXPECT_EQ(dims_of(Infer(MakeNode("Add"), {{DataType::kFloat32, {-1, 3}, nullptr},
                                            {DataType::kFloat32, {3}, &bias}})),
            (Dims{-1, 3}));
  const Tensor shape = I64({2}, {0, -1});
  EXPECT_EQ(dims_of(Infer(MakeNode("Reshape"), {{DataType::kFloat32, {-1, 3, 4}, nullptr},
                                                {DataType::kInt64, {2}, &shape}})),
            (Dims{-1, 12}));
  const Tensor w = F32({8, 3, 3, 3}, std::vector<float>(216));
  EXPECT_EQ(dims_of(Infer(MakeNode("Conv", {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}),
                          {{DataType::kFloat32, {-1, 3, 16, 16}, nullptr},
                           {DataType::kFloat32, {8, 3, 3, 3}, &w}})),
            (Dims{-1, 8, 16, 16}));
  EXPECT_EQ(dims_of(Infer(MakeNode("Flatten"), {{DataType::kFloat32, {-1, 2, 3}, nullptr}})),
            (Dims{-1, 6}));
  EXPECT_EQ(dims_of(Infer(MakeNode("Shape"), {{DataType::kFloat32, {-1, 2, 3}, nullptr}})),
            (Dims{3}));
}

// ---------------------------------------------------------------------------------------------
// Identity, Dropout, Shape, Size, Gather, Cast, ConstantOfShape, Range

TEST(HostOpsTest, IdentityCopiesAnyType) {
  const Tensor x = I8({3}, {-1, 0, 7});
  EXPECT_THAT(Values<int8_t>(Run1(MakeNode("Identity"), {&x})), ElementsAre(-1, 0, 7));
}

TEST(HostOpsTest, DropoutPassesThroughWithAllTrueMask) {
  const Tensor x = F32({2}, {1.5f, -2.0f});
  const Tensor ratio = F32({}, {0.5f});
  absl::StatusOr<std::vector<Tensor>> out = RunAll(MakeNode("Dropout", {}, 2), {&x, &ratio});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(Values<float>((*out)[0]), ElementsAre(1.5f, -2.0f));
  EXPECT_EQ((*out)[1].dtype, DataType::kBool);
  EXPECT_THAT(Values<uint8_t>((*out)[1]), ElementsAre(1, 1));
}

TEST(HostOpsTest, ShapeWithStartAndEnd) {
  const Tensor x = F32({2, 3, 4, 5}, std::vector<float>(120));
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Shape"), {&x})), ElementsAre(2, 3, 4, 5));
  EXPECT_THAT(
      Values<int64_t>(Run1(MakeNode("Shape", {{"start", int64_t{1}}, {"end", int64_t{-1}}}), {&x})),
      ElementsAre(3, 4));
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Shape", {{"start", int64_t{-10}}}), {&x})),
              ElementsAre(2, 3, 4, 5));
  const Tensor empty = Run1(MakeNode("Shape", {{"start", int64_t{3}}, {"end", int64_t{1}}}), {&x});
  EXPECT_EQ(empty.dims, Dims{0});
}

TEST(HostOpsTest, SizeIsScalarElementCount) {
  const Tensor x = U8({2, 3, 4}, std::vector<uint8_t>(24));
  const Tensor size = Run1(MakeNode("Size"), {&x});
  EXPECT_EQ(size.dims, Dims{});
  EXPECT_THAT(Values<int64_t>(size), ElementsAre(24));
}

TEST(HostOpsTest, GatherAxis0And1WithNegativeIndices) {
  // ONNX Gather examples.
  const Tensor data0 = F32({3, 2}, {1.0f, 1.2f, 2.3f, 3.4f, 4.5f, 5.7f});
  const Tensor indices0 = I64({2, 2}, {0, 1, 1, 2});
  const Tensor y0 = Run1(MakeNode("Gather"), {&data0, &indices0});
  EXPECT_EQ(y0.dims, (Dims{2, 2, 2}));
  EXPECT_THAT(y0, FloatsNear(std::vector<float>{1.0f, 1.2f, 2.3f, 3.4f, 2.3f, 3.4f, 4.5f, 5.7f}));
  const Tensor data1 = F32({3, 3}, {1.0f, 1.2f, 1.9f, 2.3f, 3.4f, 3.9f, 4.5f, 5.7f, 5.9f});
  const Tensor indices1 = I32({1, 2}, {0, -1});
  const Tensor y1 = Run1(MakeNode("Gather", {{"axis", int64_t{1}}}), {&data1, &indices1});
  EXPECT_EQ(y1.dims, (Dims{3, 1, 2}));
  EXPECT_THAT(y1, FloatsNear(std::vector<float>{1.0f, 1.9f, 2.3f, 3.9f, 4.5f, 5.9f}));
  // Scalar index drops the axis.
  const Tensor shape = I64({4}, {1, 3, 28, 28});
  const Tensor last = I64({}, {-1});
  const Tensor y2 = Run1(MakeNode("Gather"), {&shape, &last});
  EXPECT_EQ(y2.dims, Dims{});
  EXPECT_THAT(Values<int64_t>(y2), ElementsAre(28));
}

TEST(HostOpsTest, GatherOutOfRangeIndexIsInvalid) {
  const Tensor data = F32({3}, Iota(3));
  const Tensor indices = I64({1}, {3});
  const absl::Status status = RunStatus(MakeNode("Gather"), {&data, &indices});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("index 3 is out of range for axis 0 of size 3"));
}

TEST(HostOpsTest, CastBetweenNumericTypes) {
  const Tensor x = F32({5}, {-1.7f, 2.9f, 0.0f, 1e20f, std::nanf("")});
  EXPECT_THAT(Values<int32_t>(Run1(MakeNode("Cast", {{"to", int64_t{6}}}), {&x})),
              ElementsAre(-1, 2, 0, std::numeric_limits<int32_t>::max(), 0));
  EXPECT_THAT(Values<uint8_t>(Run1(MakeNode("Cast", {{"to", int64_t{9}}}), {&x})),
              ElementsAre(1, 1, 0, 1, 1));
  const Tensor b = Bool({2}, {1, 0});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Cast", {{"to", int64_t{1}}}), {&b})),
              ElementsAre(1.0f, 0.0f));
  const Tensor i = I64({2}, {-3, 1LL << 40});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Cast", {{"to", int64_t{1}}}), {&i})),
              ElementsAre(-3.0f, 1099511627776.0f));
  EXPECT_THAT(Values<int32_t>(Run1(MakeNode("Cast", {{"to", int64_t{6}}}), {&i})),
              ElementsAre(-3, 0));  // wraps modulo 2^32
  const Tensor d = F64({2}, {0.1, -2.5});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Cast", {{"to", int64_t{1}}}), {&d})),
              ElementsAre(0.1f, -2.5f));
  EXPECT_THAT(Values<double>(Run1(MakeNode("Cast", {{"to", int64_t{11}}}), {&i})),
              ElementsAre(-3.0, 1099511627776.0));
}

TEST(HostOpsTest, CastToAndFromHalfAndBFloat16) {
  const Tensor x = F32({8}, {1.0f, 65504.0f, 1e5f, 0.1f, std::ldexp(1.0f, -24), -2.0f,
                             std::ldexp(1.0f, -26), std::numeric_limits<float>::infinity()});
  const Tensor half = Run1(MakeNode("Cast", {{"to", int64_t{10}}}), {&x});
  EXPECT_EQ(half.dtype, DataType::kFloat16);
  EXPECT_THAT(Values<uint16_t>(half),
              ElementsAre(0x3C00, 0x7BFF, 0x7C00, 0x2E66, 0x0001, 0xC000, 0x0000, 0x7C00));
  EXPECT_THAT(
      Values<float>(Run1(MakeNode("Cast", {{"to", int64_t{1}}}), {&half})),
      ElementsAre(1.0f, 65504.0f, std::numeric_limits<float>::infinity(), 0.0999755859375f,
                  std::ldexp(1.0f, -24), -2.0f, 0.0f, std::numeric_limits<float>::infinity()));
  // bfloat16 rounds to nearest even: 1 + 2^-8 is a tie (down to 1), 1 + 3 * 2^-8 a tie (up).
  const Tensor y = F32({3}, {1.0f, 1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)});
  const Tensor bf16 = Run1(MakeNode("Cast", {{"to", int64_t{16}}}), {&y});
  EXPECT_THAT(Values<uint16_t>(bf16), ElementsAre(0x3F80, 0x3F80, 0x3F82));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Cast", {{"to", int64_t{1}}}), {&bf16})),
              ElementsAre(1.0f, 1.0f, 1.015625f));
}

TEST(HostOpsTest, CastToUnsupportedTypeIsUnimplemented) {
  const Tensor x = F32({1}, {1.0f});
  const absl::Status status = RunStatus(MakeNode("Cast", {{"to", int64_t{8}}}), {&x});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Msg(status), "node 'n' (Cast): cast to ONNX data type 8 is not supported");
}

TEST(HostOpsTest, ConstantOfShape) {
  const Tensor shape = I64({2}, {2, 3});
  const Tensor zeros = Run1(MakeNode("ConstantOfShape"), {&shape});
  EXPECT_EQ(zeros.dtype, DataType::kFloat32);
  EXPECT_EQ(zeros.dims, (Dims{2, 3}));
  EXPECT_THAT(Values<float>(zeros), ElementsAre(0, 0, 0, 0, 0, 0));
  const Tensor seven = I64({1}, {7});
  const Tensor shape2 = I64({1}, {3});
  const Tensor filled = Run1(MakeNode("ConstantOfShape", {{"value", seven}}), {&shape2});
  EXPECT_EQ(filled.dtype, DataType::kInt64);
  EXPECT_THAT(Values<int64_t>(filled), ElementsAre(7, 7, 7));
  const Tensor negative = I64({1}, {-1});
  EXPECT_EQ(RunStatus(MakeNode("ConstantOfShape"), {&negative}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, RangeIntegerFloatAndNegativeDelta) {
  const Tensor s = I64({}, {1}), l = I64({}, {10}), d = I64({}, {3});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Range"), {&s, &l, &d})), ElementsAre(1, 4, 7));
  const Tensor fs = F32({}, {0.0f}), fl = F32({}, {1.0f}), fd = F32({}, {0.25f});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Range"), {&fs, &fl, &fd})),
              ElementsAre(0.0f, 0.25f, 0.5f, 0.75f));
  const Tensor ns = I32({}, {10}), nl = I32({}, {4}), nd = I32({}, {-3});
  EXPECT_THAT(Values<int32_t>(Run1(MakeNode("Range"), {&ns, &nl, &nd})), ElementsAre(10, 7));
  const Tensor es = I64({}, {5}), el = I64({}, {1}), ed = I64({}, {1});
  EXPECT_EQ(Run1(MakeNode("Range"), {&es, &el, &ed}).dims, Dims{0});
  const Tensor zero = I64({}, {0});
  EXPECT_EQ(RunStatus(MakeNode("Range"), {&s, &l, &zero}).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Unsqueeze, Squeeze, Concat, Reshape, Flatten, Transpose

TEST(HostOpsTest, UnsqueezeWithNegativeAxes) {
  const Tensor x = F32({3, 4}, Iota(12));
  const Tensor axes = I64({2}, {0, -1});
  const Tensor y = Run1(MakeNode("Unsqueeze"), {&x, &axes});
  EXPECT_EQ(y.dims, (Dims{1, 3, 4, 1}));
  EXPECT_THAT(y, FloatsNear(Iota(12)));
  const Tensor repeated = I64({2}, {1, 1});
  EXPECT_EQ(RunStatus(MakeNode("Unsqueeze"), {&x, &repeated}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, SqueezeAllOrGivenAxes) {
  const Tensor x = F32({1, 3, 1, 2}, Iota(6));
  EXPECT_EQ(Run1(MakeNode("Squeeze"), {&x}).dims, (Dims{3, 2}));
  const Tensor axes = I64({1}, {-2});
  EXPECT_EQ(Run1(MakeNode("Squeeze"), {&x, &axes}).dims, (Dims{1, 3, 2}));
  const Tensor bad = I64({1}, {1});
  const absl::Status status = RunStatus(MakeNode("Squeeze"), {&x, &bad});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("cannot squeeze axis 1 of size 3"));
}

TEST(HostOpsTest, ConcatAlongAxis) {
  const Tensor a = F32({2, 1}, {1, 2});
  const Tensor b = F32({2, 2}, {3, 4, 5, 6});
  const Tensor y = Run1(MakeNode("Concat", {{"axis", int64_t{1}}}), {&a, &b});
  EXPECT_EQ(y.dims, (Dims{2, 3}));
  EXPECT_THAT(Values<float>(y), ElementsAre(1, 3, 4, 2, 5, 6));
  const Tensor s1 = I64({1}, {-1}), s2 = I64({2}, {3, 4});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Concat", {{"axis", int64_t{-1}}}), {&s1, &s2})),
              ElementsAre(-1, 3, 4));
  const absl::Status status = RunStatus(MakeNode("Concat", {{"axis", int64_t{0}}}), {&a, &b});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("input 1 [2,2] does not match input 0 [2,1]"));
}

TEST(HostOpsTest, ReshapeCopiesZeroAndInfersMinusOne) {
  const Tensor x = F32({2, 3, 4}, Iota(24));
  const Tensor s1 = I64({2}, {0, -1});
  const Tensor y1 = Run1(MakeNode("Reshape"), {&x, &s1});
  EXPECT_EQ(y1.dims, (Dims{2, 12}));
  EXPECT_THAT(y1, FloatsNear(Iota(24)));
  const Tensor s2 = I64({3}, {4, 0, -1});
  EXPECT_EQ(Run1(MakeNode("Reshape"), {&x, &s2}).dims, (Dims{4, 3, 2}));
  const Tensor s3 = I64({2}, {-1, -1});
  EXPECT_THAT(Msg(RunStatus(MakeNode("Reshape"), {&x, &s3})), HasSubstr("has more than one -1"));
  const Tensor s4 = I64({2}, {5, -1});
  EXPECT_EQ(Msg(RunStatus(MakeNode("Reshape"), {&x, &s4})),
            "node 'n' (Reshape): cannot reshape [2,3,4] to [5,-1]");
}

TEST(HostOpsTest, ReshapeAllowZero) {
  const Tensor empty = F32({0, 3}, {});
  const Tensor shape = I64({2}, {3, 0});
  // allowzero=1: 0 is a real zero dim.
  EXPECT_EQ(Run1(MakeNode("Reshape", {{"allowzero", int64_t{1}}}), {&empty, &shape}).dims,
            (Dims{3, 0}));
  // allowzero=0: 0 copies dim 1 (3), and 9 elements do not fit in 0.
  EXPECT_EQ(RunStatus(MakeNode("Reshape"), {&empty, &shape}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, FlattenAxes) {
  const Tensor x = F32({2, 3, 4, 5}, std::vector<float>(120));
  EXPECT_EQ(Run1(MakeNode("Flatten"), {&x}).dims, (Dims{2, 60}));
  EXPECT_EQ(Run1(MakeNode("Flatten", {{"axis", int64_t{2}}}), {&x}).dims, (Dims{6, 20}));
  EXPECT_EQ(Run1(MakeNode("Flatten", {{"axis", int64_t{-1}}}), {&x}).dims, (Dims{24, 5}));
  EXPECT_EQ(Run1(MakeNode("Flatten", {{"axis", int64_t{0}}}), {&x}).dims, (Dims{1, 120}));
  EXPECT_EQ(RunStatus(MakeNode("Flatten", {{"axis", int64_t{5}}}), {&x}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, TransposeDefaultAndExplicitPerm) {
  const Tensor x = F32({2, 3}, Iota(6));
  const Tensor y = Run1(MakeNode("Transpose"), {&x});
  EXPECT_EQ(y.dims, (Dims{3, 2}));
  EXPECT_THAT(Values<float>(y), ElementsAre(1, 4, 2, 5, 3, 6));
  const Tensor z = U8({2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  const Tensor t = Run1(MakeNode("Transpose", {{"perm", std::vector<int64_t>{2, 0, 1}}}), {&z});
  EXPECT_THAT(Values<uint8_t>(t), ElementsAre(0, 2, 4, 6, 1, 3, 5, 7));
  EXPECT_EQ(RunStatus(MakeNode("Transpose", {{"perm", std::vector<int64_t>{0, 0}}}), {&x}).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Slice, Split, Pad, Expand, Tile, Where

TEST(HostOpsTest, SliceWithAxesAndSteps) {
  // ONNX Slice example 1.
  const Tensor data = F32({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Tensor starts = I64({2}, {1, 0}), ends = I64({2}, {2, 3});
  const Tensor axes = I64({2}, {0, 1}), steps = I64({2}, {1, 2});
  const Tensor y = Run1(MakeNode("Slice"), {&data, &starts, &ends, &axes, &steps});
  EXPECT_EQ(y.dims, (Dims{1, 2}));
  EXPECT_THAT(Values<float>(y), ElementsAre(5, 7));
  // ONNX Slice example 2: ends past the end clamp; axes absent.
  const Tensor starts2 = I32({2}, {0, 1}), ends2 = I32({2}, {-1, 1000});
  const Tensor y2 = Run1(MakeNode("Slice"), {&data, &starts2, &ends2});
  EXPECT_EQ(y2.dims, (Dims{1, 3}));
  EXPECT_THAT(Values<float>(y2), ElementsAre(2, 3, 4));
}

TEST(HostOpsTest, SliceNegativeStepsAndSentinels) {
  const Tensor x = I64({10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto slice = [&](int64_t start, int64_t end, int64_t step) {
    const Tensor s = I64({1}, {start}), e = I64({1}, {end}), a = I64({1}, {0});
    const Tensor st = I64({1}, {step});
    return Values<int64_t>(Run1(MakeNode("Slice"), {&x, &s, &e, &a, &st}));
  };
  EXPECT_THAT(slice(-1, kInt64Min, -1), ElementsAre(9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
  EXPECT_THAT(slice(20, 0, -3), ElementsAre(9, 6, 3));
  EXPECT_THAT(slice(-1, -1000, -2), ElementsAre(9, 7, 5, 3, 1));
  EXPECT_THAT(slice(kInt64Max, 5, -1), ElementsAre(9, 8, 7, 6));
  EXPECT_THAT(slice(2, kInt64Max, 3), ElementsAre(2, 5, 8));
  EXPECT_THAT(slice(-3, kInt64Max, 1), ElementsAre(7, 8, 9));
  EXPECT_THAT(slice(5, 2, 1), ElementsAre());
  EXPECT_THAT(slice(2, 5, -1), ElementsAre());
  // 2-D reversal of both axes (negative axis).
  const Tensor m = F32({2, 3}, Iota(6));
  const Tensor s = I64({2}, {-1, -1}), e = I64({2}, {kInt64Min, kInt64Min});
  const Tensor a = I64({2}, {0, -1}), st = I64({2}, {-1, -1});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Slice"), {&m, &s, &e, &a, &st})),
              ElementsAre(6, 5, 4, 3, 2, 1));
  const Tensor zero = I64({2}, {0, 0});
  EXPECT_THAT(Msg(RunStatus(MakeNode("Slice"), {&m, &s, &e, &a, &zero})),
              HasSubstr("steps must not be 0"));
}

TEST(HostOpsTest, SplitEqualGivenAndNumOutputs) {
  const Tensor x = F32({6}, Iota(6));
  absl::StatusOr<std::vector<Tensor>> equal = RunAll(MakeNode("Split", {}, 3), {&x});
  ASSERT_TRUE(equal.ok()) << equal.status();
  EXPECT_THAT(Values<float>((*equal)[0]), ElementsAre(1, 2));
  EXPECT_THAT(Values<float>((*equal)[1]), ElementsAre(3, 4));
  EXPECT_THAT(Values<float>((*equal)[2]), ElementsAre(5, 6));
  const Tensor split = I64({2}, {2, 4});
  absl::StatusOr<std::vector<Tensor>> given = RunAll(MakeNode("Split", {}, 2), {&x, &split});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_THAT(Values<float>((*given)[0]), ElementsAre(1, 2));
  EXPECT_THAT(Values<float>((*given)[1]), ElementsAre(3, 4, 5, 6));
  const Tensor x7 = F32({7}, Iota(7));
  absl::StatusOr<std::vector<Tensor>> uneven =
      RunAll(MakeNode("Split", {{"num_outputs", int64_t{3}}}, 3), {&x7});
  ASSERT_TRUE(uneven.ok()) << uneven.status();
  EXPECT_EQ((*uneven)[0].dims, Dims{3});
  EXPECT_EQ((*uneven)[1].dims, Dims{3});
  EXPECT_THAT(Values<float>((*uneven)[2]), ElementsAre(7));
  // 2-D along axis 1.
  const Tensor m = F32({2, 3}, Iota(6));
  const Tensor parts = I64({2}, {1, 2});
  absl::StatusOr<std::vector<Tensor>> columns =
      RunAll(MakeNode("Split", {{"axis", int64_t{1}}}, 2), {&m, &parts});
  ASSERT_TRUE(columns.ok()) << columns.status();
  EXPECT_THAT(Values<float>((*columns)[0]), ElementsAre(1, 4));
  EXPECT_THAT(Values<float>((*columns)[1]), ElementsAre(2, 3, 5, 6));
  const Tensor wrong = I64({2}, {2, 3});
  EXPECT_THAT(Msg(RunStatus(MakeNode("Split", {}, 2), {&x, &wrong})),
              HasSubstr("does not sum to dim 6"));
}

TEST(HostOpsTest, PadConstantNegativeAndAxes) {
  const Tensor x = F32({2, 2}, {1, 2, 3, 4});
  const Tensor pads = I64({4}, {0, 1, 1, 0});
  const Tensor value = F32({}, {9});
  const Tensor y = Run1(MakeNode("Pad"), {&x, &pads, &value});
  EXPECT_EQ(y.dims, (Dims{3, 3}));
  EXPECT_THAT(Values<float>(y), ElementsAre(9, 1, 2, 9, 3, 4, 9, 9, 9));
  const Tensor crop = I64({4}, {0, -1, 0, 1});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Pad"), {&x, &crop})), ElementsAre(2, 0, 4, 0));
  const Tensor axis_pads = I64({2}, {1, 1});
  const Tensor axes = I64({1}, {-1});
  const Tensor i = I64({2, 2}, {1, 2, 3, 4});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Pad"), {&i, &axis_pads, nullptr, &axes})),
              ElementsAre(0, 1, 2, 0, 0, 3, 4, 0));
  const absl::Status reflect =
      RunStatus(MakeNode("Pad", {{"mode", std::string("reflect")}}), {&x, &pads});
  EXPECT_EQ(reflect.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Msg(reflect), "node 'n' (Pad): mode 'reflect' is not supported");
  const Tensor too_much = I64({4}, {0, -2, 0, -1});
  EXPECT_EQ(RunStatus(MakeNode("Pad"), {&x, &too_much}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, ExpandBroadcastsBothWays) {
  const Tensor x = F32({3, 1}, {1, 2, 3});
  const Tensor shape = I64({3}, {2, 1, 4});
  const Tensor y = Run1(MakeNode("Expand"), {&x, &shape});
  EXPECT_EQ(y.dims, (Dims{2, 3, 4}));
  EXPECT_THAT(Values<float>(y),
              ElementsAreArray(std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                                  1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}));
  const Tensor wide = I64({1}, {2});
  EXPECT_EQ(Run1(MakeNode("Expand"), {&x, &wide}).dims, (Dims{3, 2}));
  const Tensor bad = I64({2}, {2, 1});
  EXPECT_EQ(Msg(RunStatus(MakeNode("Expand"), {&x, &bad})),
            "node 'n' (Expand): shapes [3,1] and [2,1] are not broadcast-compatible");
}

TEST(HostOpsTest, Tile) {
  const Tensor x = F32({2, 2}, {0, 1, 2, 3});
  const Tensor repeats = I64({2}, {2, 2});
  const Tensor y = Run1(MakeNode("Tile"), {&x, &repeats});
  EXPECT_EQ(y.dims, (Dims{4, 4}));
  EXPECT_THAT(Values<float>(y), ElementsAre(0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1, 2, 3, 2, 3));
  const Tensor v = I32({2}, {5, 6});
  const Tensor r = I64({1}, {3});
  EXPECT_THAT(Values<int32_t>(Run1(MakeNode("Tile"), {&v, &r})), ElementsAre(5, 6, 5, 6, 5, 6));
}

TEST(HostOpsTest, WhereBroadcasts) {
  const Tensor cond = Bool({2, 1}, {1, 0});
  const Tensor x = F32({1, 2}, {1, 2});
  const Tensor y = F32({}, {9});
  const Tensor out = Run1(MakeNode("Where"), {&cond, &x, &y});
  EXPECT_EQ(out.dims, (Dims{2, 2}));
  EXPECT_THAT(Values<float>(out), ElementsAre(1, 2, 9, 9));
  const Tensor xi = I64({2}, {1, 2}), yi = I64({2}, {-1, -2});
  const Tensor c = Bool({2}, {0, 1});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Where"), {&c, &xi, &yi})), ElementsAre(-1, 2));
}

// ---------------------------------------------------------------------------------------------
// Comparison, logic, arithmetic

TEST(HostOpsTest, ComparisonsAndNot) {
  const Tensor a = F32({3}, {1, 2, 3}), b = F32({3}, {1, 5, 3});
  EXPECT_THAT(Values<uint8_t>(Run1(MakeNode("Equal"), {&a, &b})), ElementsAre(1, 0, 1));
  const Tensor c = I64({2, 1}, {1, 5}), d = I64({2}, {3, 4});
  const Tensor less = Run1(MakeNode("Less"), {&c, &d});
  EXPECT_EQ(less.dtype, DataType::kBool);
  EXPECT_EQ(less.dims, (Dims{2, 2}));
  EXPECT_THAT(Values<uint8_t>(less), ElementsAre(1, 1, 0, 0));
  EXPECT_THAT(Values<uint8_t>(Run1(MakeNode("Greater"), {&c, &d})), ElementsAre(0, 0, 1, 1));
  const Tensor e = Bool({3}, {1, 0, 1}), f = Bool({3}, {1, 1, 0});
  EXPECT_THAT(Values<uint8_t>(Run1(MakeNode("Equal"), {&e, &f})), ElementsAre(1, 0, 0));
  EXPECT_THAT(Values<uint8_t>(Run1(MakeNode("Not"), {&e})), ElementsAre(0, 1, 0));
}

TEST(HostOpsTest, ArithmeticBroadcasting) {
  const Tensor a = F32({2, 3}, Iota(6));
  const Tensor row = F32({3}, {10, 20, 30});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Add"), {&a, &row})),
              ElementsAre(11, 22, 33, 14, 25, 36));
  const Tensor col = F32({2, 1}, {1, 2});
  const Tensor line = F32({1, 3}, {10, 20, 30});
  const Tensor outer = Run1(MakeNode("Add"), {&col, &line});
  EXPECT_EQ(outer.dims, (Dims{2, 3}));
  EXPECT_THAT(Values<float>(outer), ElementsAre(11, 21, 31, 12, 22, 32));
  const Tensor one = F32({}, {1});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Sub"), {&row, &one})), ElementsAre(9, 19, 29));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Sub"), {&one, &row})), ElementsAre(-9, -19, -29));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Mul"), {&col, &line})),
              ElementsAre(10, 20, 30, 20, 40, 60));
  const Tensor two = F32({1}, {2});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Div"), {&row, &two})), ElementsAre(5, 10, 15));
}

TEST(HostOpsTest, IntegerArithmeticTruncatesAndWraps) {
  const Tensor a = I64({3}, {-7, 7, 6}), b = I64({3}, {2, -2, 3});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Div"), {&a, &b})), ElementsAre(-3, -3, 2));
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Mul"), {&a, &b})), ElementsAre(-14, -14, 18));
  const Tensor big = I32({1}, {std::numeric_limits<int32_t>::max()}), one = I32({1}, {1});
  EXPECT_THAT(Values<int32_t>(Run1(MakeNode("Add"), {&big, &one})),
              ElementsAre(std::numeric_limits<int32_t>::min()));
  const Tensor zero = I64({1}, {0});
  const absl::Status status = RunStatus(MakeNode("Div"), {&a, &zero});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Msg(status), "node 'n' (Div): integer division by zero");
}

TEST(HostOpsTest, PowWithFloatAndIntegerExponents) {
  const Tensor x = F32({2}, {2, 3});
  const Tensor e = I64({1}, {3});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Pow"), {&x, &e})), ElementsAre(8, 27));
  const Tensor half = F32({}, {0.5f});
  const Tensor sq = F32({2}, {4, 9});
  EXPECT_THAT(Run1(MakeNode("Pow"), {&sq, &half}), FloatsNear(std::vector<float>{2, 3}));
}

TEST(HostOpsTest, VariadicMinMaxSumMean) {
  const Tensor a = F32({2}, {1, 5});
  const Tensor b = F32({2, 1}, {3, 0});
  const Tensor c = F32({}, {4});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Max"), {&a, &b})), ElementsAre(3, 5, 1, 5));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Max"), {&a, &b, &c})), ElementsAre(4, 5, 4, 5));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Min"), {&a, &b, &c})), ElementsAre(1, 3, 0, 0));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Sum"), {&a, &b, &c})), ElementsAre(8, 12, 5, 9));
  EXPECT_THAT(Run1(MakeNode("Mean"), {&a, &b, &c}),
              FloatsNear(std::vector<float>{8.0f / 3, 4, 5.0f / 3, 3}));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Sum"), {&a})), ElementsAre(1, 5));
  const Tensor i = I64({2}, {-1, 9}), j = I64({2}, {2, 3});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Min"), {&i, &j})), ElementsAre(-1, 3));
}

TEST(HostOpsTest, UnaryMath) {
  const Tensor x = F32({3}, {-1.5f, 0.5f, 2.0f});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Neg"), {&x})), ElementsAre(1.5f, -0.5f, -2.0f));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Abs"), {&x})), ElementsAre(1.5f, 0.5f, 2.0f));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Floor"), {&x})), ElementsAre(-2, 0, 2));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Ceil"), {&x})), ElementsAre(-1, 1, 2));
  const Tensor p = F32({2}, {4, 9});
  EXPECT_THAT(Run1(MakeNode("Sqrt"), {&p}), FloatsNear(std::vector<float>{2, 3}));
  const Tensor l = F32({2}, {1, std::exp(1.0f)});
  EXPECT_THAT(Run1(MakeNode("Log"), {&l}), FloatsNear(std::vector<float>{0, 1}));
  const Tensor r = F32({2}, {2, -4});
  EXPECT_THAT(Run1(MakeNode("Reciprocal"), {&r}), FloatsNear(std::vector<float>{0.5f, -0.25f}));
  const Tensor e = F32({3}, {-1, 0, 2});
  EXPECT_THAT(Run1(MakeNode("Exp"), {&e}),
              FloatsNear(std::vector<float>{0.36787944f, 1.0f, 7.3890561f}));
  EXPECT_THAT(Run1(MakeNode("Erf"), {&e}),
              FloatsNear(std::vector<float>{-0.84270079f, 0.0f, 0.99532227f}));
  EXPECT_THAT(Run1(MakeNode("Tanh"), {&e}),
              FloatsNear(std::vector<float>{-0.76159416f, 0.0f, 0.96402758f}));
  const Tensor i = I64({3}, {-4, 0, 5});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Neg"), {&i})), ElementsAre(4, 0, -5));
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Abs"), {&i})), ElementsAre(4, 0, 5));
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Relu"), {&i})), ElementsAre(0, 0, 5));
  EXPECT_EQ(RunStatus(MakeNode("Sqrt"), {&i}).code(), absl::StatusCode::kUnimplemented);
}

TEST(HostOpsTest, Activations) {
  const Tensor x = F32({3}, {-1, 0, 2});
  auto run = [&](const std::string& op, Attributes attributes = {}) {
    return Run1(MakeNode(op, std::move(attributes)), {&x});
  };
  EXPECT_THAT(run("Relu"), FloatsNear(std::vector<float>{0, 0, 2}));
  EXPECT_THAT(run("LeakyRelu"), FloatsNear(std::vector<float>{-0.01f, 0, 2}));
  EXPECT_THAT(run("LeakyRelu", {{"alpha", 0.5f}}), FloatsNear(std::vector<float>{-0.5f, 0, 2}));
  EXPECT_THAT(run("Sigmoid"), FloatsNear(std::vector<float>{0.26894142f, 0.5f, 0.88079708f}));
  EXPECT_THAT(run("HardSigmoid"), FloatsNear(std::vector<float>{0.3f, 0.5f, 0.9f}));
  EXPECT_THAT(run("HardSigmoid", {{"alpha", 0.5f}, {"beta", 0.25f}}),
              FloatsNear(std::vector<float>{0.0f, 0.25f, 1.0f}));
  EXPECT_THAT(run("HardSwish"), FloatsNear(std::vector<float>{-1.0f / 3, 0, 5.0f / 3}));
  EXPECT_THAT(run("Elu"), FloatsNear(std::vector<float>{-0.63212056f, 0, 2}));
  EXPECT_THAT(run("Elu", {{"alpha", 2.0f}}), FloatsNear(std::vector<float>{-1.2642411f, 0, 2}));
  EXPECT_THAT(run("Selu"), FloatsNear(std::vector<float>{-1.1113307f, 0, 2.1014020f}));
  EXPECT_THAT(run("Softplus"),
              FloatsNear(std::vector<float>{0.31326169f, 0.69314718f, 2.12692801f}));
  EXPECT_THAT(run("Softsign"), FloatsNear(std::vector<float>{-0.5f, 0, 2.0f / 3}));
}

TEST(HostOpsTest, PReluBroadcastsSlopeToX) {
  const Tensor x = F32({1, 2, 1, 2}, {-1, 2, -4, 3});
  const Tensor slope = F32({2, 1, 1}, {0.1f, 0.5f});
  EXPECT_THAT(Run1(MakeNode("PRelu"), {&x, &slope}),
              FloatsNear(std::vector<float>{-0.1f, 2, -2, 3}));
  const Tensor wide = F32({1, 2, 2, 2}, std::vector<float>(8));
  const absl::Status status = RunStatus(MakeNode("PRelu"), {&x, &wide});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("slope [1,2,2,2] does not broadcast to X [1,2,1,2]"));
}

TEST(HostOpsTest, ClipWithOptionalBounds) {
  const Tensor x = F32({3}, {-2, 0.5f, 3});
  const Tensor lo = F32({}, {-1}), hi = F32({}, {1});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Clip"), {&x, &lo, &hi})), ElementsAre(-1, 0.5f, 1));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Clip"), {&x, nullptr, &hi})), ElementsAre(-2, 0.5f, 1));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Clip"), {&x, &lo})), ElementsAre(-1, 0.5f, 3));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Clip"), {&x})), ElementsAre(-2, 0.5f, 3));
  const Tensor i = I64({2}, {-5, 5}), zero = I64({}, {0});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("Clip"), {&i, &zero})), ElementsAre(0, 5));
}

// ---------------------------------------------------------------------------------------------
// Softmax, reductions

TEST(HostOpsTest, SoftmaxAndLogSoftmaxLastAxis) {
  const Tensor x = F32({2, 3}, {1, 2, 3, 1, 1, 1});
  EXPECT_THAT(Run1(MakeNode("Softmax"), {&x}),
              FloatsNear(std::vector<float>{0.09003057f, 0.24472847f, 0.66524096f, 1.0f / 3,
                                            1.0f / 3, 1.0f / 3}));
  EXPECT_THAT(Run1(MakeNode("LogSoftmax"), {&x}),
              FloatsNear(std::vector<float>{-2.40760596f, -1.40760596f, -0.40760596f, -1.09861229f,
                                            -1.09861229f, -1.09861229f}));
}

TEST(HostOpsTest, SoftmaxLegacyCoercesTo2DWhileOpset13UsesOneAxis) {
  const Tensor x = F32({1, 2, 2}, {0, 1, 2, 3});
  // Legacy default axis 1: the row is everything from axis 1 on.
  const std::vector<float> whole = {0.0320586f, 0.0871443f, 0.2368828f, 0.6439143f};
  EXPECT_THAT(Run1(MakeNode("Softmax", {{"legacy_2d_coercion", int64_t{1}}}), {&x}),
              FloatsNear(whole));
  // Opset 13 default axis -1.
  EXPECT_THAT(Run1(MakeNode("Softmax"), {&x}),
              FloatsNear(std::vector<float>{0.2689414f, 0.7310586f, 0.2689414f, 0.7310586f}));
  // Same axis 1, different semantics.
  EXPECT_THAT(Run1(MakeNode("Softmax", {{"axis", int64_t{1}}}), {&x}),
              FloatsNear(std::vector<float>{0.1192029f, 0.1192029f, 0.8807971f, 0.8807971f}));
  EXPECT_THAT(
      Run1(MakeNode("LogSoftmax", {{"axis", int64_t{0}}, {"legacy_2d_coercion", int64_t{1}}}),
           {&x}),
      FloatsNear(std::vector<float>{std::log(whole[0]), std::log(whole[1]), std::log(whole[2]),
                                    std::log(whole[3])}));
  EXPECT_EQ(RunStatus(MakeNode("Softmax", {{"axis", int64_t{3}}}), {&x}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, ReduceMeanOnnxExample) {
  const Tensor x = F32({3, 2, 2}, {5, 1, 20, 2, 30, 1, 40, 2, 55, 1, 60, 2});
  const Tensor y = Run1(MakeNode("ReduceMean", {{"axes", std::vector<int64_t>{1}}}), {&x});
  EXPECT_EQ(y.dims, (Dims{3, 1, 2}));
  EXPECT_THAT(y, FloatsNear(std::vector<float>{12.5f, 1.5f, 35, 1.5f, 57.5f, 1.5f}));
  const Tensor all = Run1(MakeNode("ReduceMean", {{"keepdims", int64_t{0}}}), {&x});
  EXPECT_EQ(all.dims, Dims{});
  EXPECT_THAT(all, FloatsNear(std::vector<float>{18.25f}));
}

TEST(HostOpsTest, ReduceVariants) {
  const Tensor x = F32({2, 2}, {1, 2, 3, 4});
  const Tensor last = I64({1}, {-1});
  const Tensor sum = Run1(MakeNode("ReduceSum", {{"keepdims", int64_t{0}}}), {&x, &last});
  EXPECT_EQ(sum.dims, Dims{2});
  EXPECT_THAT(Values<float>(sum), ElementsAre(3, 7));
  EXPECT_THAT(Values<float>(Run1(MakeNode("ReduceSum", {{"axes", std::vector<int64_t>{0}}}), {&x})),
              ElementsAre(4, 6));
  const Tensor max = Run1(MakeNode("ReduceMax"), {&x});
  EXPECT_EQ(max.dims, (Dims{1, 1}));
  EXPECT_THAT(Values<float>(max), ElementsAre(4));
  EXPECT_THAT(Values<float>(Run1(MakeNode("ReduceMin", {{"axes", std::vector<int64_t>{0}}}), {&x})),
              ElementsAre(1, 2));
  const Tensor i = I64({2, 2}, {1, 2, 3, 4});
  EXPECT_THAT(Values<int64_t>(Run1(MakeNode("ReduceProd", {{"axes", std::vector<int64_t>{1}},
                                                           {"keepdims", int64_t{0}}}),
                                   {&i})),
              ElementsAre(2, 12));
  EXPECT_THAT(
      Values<int64_t>(Run1(MakeNode("ReduceMax", {{"axes", std::vector<int64_t>{1}}}), {&i})),
      ElementsAre(2, 4));
  const Tensor noop = Run1(MakeNode("ReduceSum", {{"noop_with_empty_axes", int64_t{1}}}), {&x});
  EXPECT_EQ(noop.dims, (Dims{2, 2}));
  EXPECT_THAT(Values<float>(noop), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(RunStatus(MakeNode("ReduceMean"), {&i}).code(), absl::StatusCode::kUnimplemented);
}

// ---------------------------------------------------------------------------------------------
// MatMul, Gemm, BatchNormalization

TEST(HostOpsTest, MatMul2DAnd1DOperands) {
  const Tensor a = F32({2, 3}, Iota(6));
  const Tensor b = F32({3, 2}, {1, 0, 0, 1, 1, 1});
  const Tensor ab = Run1(MakeNode("MatMul"), {&a, &b});
  EXPECT_EQ(ab.dims, (Dims{2, 2}));
  EXPECT_THAT(Values<float>(ab), ElementsAre(4, 5, 10, 11));
  const Tensor ones = F32({3}, {1, 1, 1});
  const Tensor vb = Run1(MakeNode("MatMul"), {&ones, &b});
  EXPECT_EQ(vb.dims, Dims{2});
  EXPECT_THAT(Values<float>(vb), ElementsAre(2, 2));
  const Tensor v = F32({3}, {1, 0, 1});
  const Tensor av = Run1(MakeNode("MatMul"), {&a, &v});
  EXPECT_EQ(av.dims, Dims{2});
  EXPECT_THAT(Values<float>(av), ElementsAre(4, 10));
  const Tensor u = F32({3}, {4, 5, 6});
  const Tensor dot = Run1(MakeNode("MatMul"), {&v, &u});
  EXPECT_EQ(dot.dims, Dims{});
  EXPECT_THAT(Values<float>(dot), ElementsAre(10));
}

TEST(HostOpsTest, MatMulBroadcastsBatchDims) {
  // Batch [2, 1] x batch [3] -> batch [2, 3]; each product is a [1, 2] x [2, 1] dot.
  const Tensor a = F32({2, 1, 1, 2}, {1, 2, 3, 4});
  const Tensor b = F32({3, 2, 1}, {1, 0, 0, 1, 1, 1});
  const Tensor y = Run1(MakeNode("MatMul"), {&a, &b});
  EXPECT_EQ(y.dims, (Dims{2, 3, 1, 1}));
  EXPECT_THAT(Values<float>(y), ElementsAre(1, 2, 3, 3, 4, 7));
  const Tensor c = F32({3, 4}, std::vector<float>(12));
  const absl::Status status = RunStatus(MakeNode("MatMul"), {&a, &c});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("inner dims of [2,1,1,2] and [3,4] differ"));
  const Tensor d = F32({4, 1, 1}, std::vector<float>(4));
  EXPECT_THAT(Msg(RunStatus(MakeNode("MatMul"), {&b, &d})),
              HasSubstr("batch dims of [3,2,1] and [4,1,1] are not broadcast-compatible"));
}

TEST(HostOpsTest, GemmFlagsAndBias) {
  const Tensor a = F32({2, 3}, Iota(6));
  const Tensor b = F32({3, 2}, {1, 0, 0, 1, 1, 1});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Gemm"), {&a, &b})), ElementsAre(4, 5, 10, 11));
  const Tensor c = F32({2}, {10, 20});
  EXPECT_THAT(Run1(MakeNode("Gemm", {{"alpha", 2.0f}, {"beta", 0.5f}}), {&a, &b, &c}),
              FloatsNear(std::vector<float>{13, 20, 25, 32}));
  const Tensor at = F32({3, 2}, {1, 4, 2, 5, 3, 6});
  const Tensor bt = F32({2, 3}, {1, 0, 1, 0, 1, 1});
  const Tensor column = F32({2, 1}, {1, 2});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Gemm", {{"transA", int64_t{1}}, {"transB", int64_t{1}}}),
                                 {&at, &bt, &column})),
              ElementsAre(5, 6, 12, 13));
  const Tensor scalar = F32({}, {100});
  EXPECT_THAT(Values<float>(Run1(MakeNode("Gemm", {{"transA", int64_t{1}}}), {&at, &b, &scalar})),
              ElementsAre(104, 105, 110, 111));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Gemm", {{"transB", int64_t{1}}}), {&a, &bt})),
              ElementsAre(4, 5, 10, 11));
  const Tensor bad = F32({3}, {1, 2, 3});
  const absl::Status status = RunStatus(MakeNode("Gemm"), {&a, &b, &bad});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(status), HasSubstr("C [3] does not broadcast to [2,2]"));
}

TEST(HostOpsTest, BatchNormalizationOnnxExample) {
  const Tensor x = F32({1, 2, 1, 3}, {-1, 0, 1, 2, 3, 4});
  const Tensor scale = F32({2}, {1.0f, 1.5f}), bias = F32({2}, {0, 1});
  const Tensor mean = F32({2}, {0, 3}), var = F32({2}, {1, 1.5f});
  EXPECT_THAT(Run1(MakeNode("BatchNormalization"), {&x, &scale, &bias, &mean, &var}),
              FloatsNear(std::vector<float>{-0.999995f, 0, 0.999995f, -0.2247408f, 1, 2.2247408f}));
  const Tensor short_mean = F32({1}, {0});
  EXPECT_EQ(
      RunStatus(MakeNode("BatchNormalization"), {&x, &scale, &bias, &short_mean, &var}).code(),
      absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Pools

TEST(HostOpsTest, MaxPoolCeilModeOnnxExample) {
  const Tensor x = F32({1, 1, 4, 4}, Iota(16));
  const Node node = MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                         {"strides", std::vector<int64_t>{2, 2}},
                                         {"ceil_mode", int64_t{1}}});
  const Tensor y = Run1(node, {&x});
  EXPECT_EQ(y.dims, (Dims{1, 1, 2, 2}));
  EXPECT_THAT(Values<float>(y), ElementsAre(11, 12, 15, 16));
  const Node floor = MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                          {"strides", std::vector<int64_t>{2, 2}}});
  EXPECT_EQ(Run1(floor, {&x}).dims, (Dims{1, 1, 1, 1}));
}

TEST(HostOpsTest, CeilModeDropsWindowStartingInEndPadding) {
  // in 4, kernel 2, stride 2, end pad 1: ceil((4 + 1 - 2) / 2) + 1 = 3 windows, but the third
  // would start at 4, inside the padding, so there are 2.
  const Tensor x = F32({1, 1, 4}, {1, 2, 3, 4});
  const Node node = MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{2}},
                                         {"strides", std::vector<int64_t>{2}},
                                         {"pads", std::vector<int64_t>{0, 1}},
                                         {"ceil_mode", int64_t{1}}});
  const Tensor y = Run1(node, {&x});
  EXPECT_EQ(y.dims, (Dims{1, 1, 2}));
  EXPECT_THAT(Values<float>(y), ElementsAre(2, 4));
}

TEST(HostOpsTest, MaxPoolIndicesRowAndColumnMajor) {
  // ONNX maxpool_with_argmax_2d_precomputed_strides.
  const Tensor x = F32({1, 1, 5, 5}, Iota(25));
  Attributes attributes = {{"kernel_shape", std::vector<int64_t>{2, 2}},
                           {"strides", std::vector<int64_t>{2, 2}}};
  absl::StatusOr<std::vector<Tensor>> row = RunAll(MakeNode("MaxPool", attributes, 2), {&x});
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_THAT(Values<float>((*row)[0]), ElementsAre(7, 9, 17, 19));
  EXPECT_EQ((*row)[1].dtype, DataType::kInt64);
  EXPECT_THAT(Values<int64_t>((*row)[1]), ElementsAre(6, 8, 16, 18));
  attributes["storage_order"] = int64_t{1};
  absl::StatusOr<std::vector<Tensor>> column = RunAll(MakeNode("MaxPool", attributes, 2), {&x});
  ASSERT_TRUE(column.ok()) << column.status();
  EXPECT_THAT(Values<int64_t>((*column)[1]), ElementsAre(6, 16, 8, 18));
}

TEST(HostOpsTest, EvaluateSkipsUnwantedOutputs) {
  // Only MaxPool's Indices wanted: Y is unnamed and has no buffer.
  Node node = MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{2}}}, 2);
  node.inputs = {"x"};
  node.outputs[0] = "";
  std::vector<float> x = {1, 3, 2};
  std::vector<int64_t> indices(2, -7);
  const TensorView in{DataType::kFloat32, {1, 1, 3}, x.data()};
  const TensorView outs[] = {{DataType::kFloat32, {1, 1, 2}, nullptr},
                             {DataType::kInt64, {1, 1, 2}, indices.data()}};
  ASSERT_TRUE(Evaluate(node, {&in, 1}, outs).ok());
  EXPECT_THAT(indices, ElementsAre(1, 1));
  // Dropout without its mask.
  Node dropout = MakeNode("Dropout", {}, 2);
  dropout.inputs = {"x"};
  dropout.outputs[1] = "";
  std::vector<float> y(3);
  const TensorView y_view{DataType::kFloat32, {3}, y.data()};
  const TensorView x_view{DataType::kFloat32, {3}, x.data()};
  ASSERT_TRUE(Evaluate(dropout, {&x_view, 1}, {&y_view, 1}).ok());
  EXPECT_THAT(y, ElementsAre(1, 3, 2));
}

TEST(HostOpsTest, MaxPoolIndicesWithPadsAndChannelOffsets) {
  // ONNX maxpool_with_argmax_2d_precomputed_pads.
  const Tensor x = F32({1, 1, 5, 5}, Iota(25));
  const Node node = MakeNode(
      "MaxPool",
      {{"kernel_shape", std::vector<int64_t>{5, 5}}, {"pads", std::vector<int64_t>{2, 2, 2, 2}}},
      2);
  absl::StatusOr<std::vector<Tensor>> out = RunAll(node, {&x});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(Values<float>((*out)[0]), ElementsAreArray(std::vector<float>{
                                            13, 14, 15, 15, 15, 18, 19, 20, 20, 20, 23, 24, 25,
                                            25, 25, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25}));
  EXPECT_THAT(Values<int64_t>((*out)[1]), ElementsAreArray(std::vector<int64_t>{
                                              12, 13, 14, 14, 14, 17, 18, 19, 19, 19, 22, 23, 24,
                                              24, 24, 22, 23, 24, 24, 24, 22, 23, 24, 24, 24}));
  // Indices count every (n, c) plane before the selected element.
  const Tensor planes = F32({2, 2, 1, 2}, {1, 2, 4, 3, 0, 9, 8, 7});
  absl::StatusOr<std::vector<Tensor>> flat =
      RunAll(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{1, 2}}}, 2), {&planes});
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_THAT(Values<float>((*flat)[0]), ElementsAre(2, 4, 9, 8));
  EXPECT_THAT(Values<int64_t>((*flat)[1]), ElementsAre(1, 2, 5, 6));
}

TEST(HostOpsTest, MaxPoolAutoPadDilations1DAnd3D) {
  // ONNX maxpool_2d_precomputed_same_upper.
  const Tensor x = F32({1, 1, 5, 5}, Iota(25));
  const Tensor same = Run1(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                                {"strides", std::vector<int64_t>{2, 2}},
                                                {"auto_pad", std::string("SAME_UPPER")}}),
                           {&x});
  EXPECT_THAT(Values<float>(same), ElementsAre(7, 9, 10, 17, 19, 20, 22, 24, 25));
  // ONNX maxpool_2d_dilations.
  const Tensor x4 = F32({1, 1, 4, 4}, Iota(16));
  const Tensor dilated = Run1(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{2, 2}},
                                                   {"dilations", std::vector<int64_t>{2, 2}}}),
                              {&x4});
  EXPECT_THAT(Values<float>(dilated), ElementsAre(11, 12, 15, 16));
  const Tensor x1 = F32({1, 1, 5}, {1, 3, 2, 5, 4});
  EXPECT_THAT(
      Values<float>(Run1(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{2}}}), {&x1})),
      ElementsAre(3, 3, 5, 5));
  const Tensor x3 = F32({1, 1, 2, 2, 2}, {1, 8, 3, 4, 5, 6, 7, 2});
  const Tensor y3 =
      Run1(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{2, 2, 2}}}), {&x3});
  EXPECT_EQ(y3.dims, (Dims{1, 1, 1, 1, 1}));
  EXPECT_THAT(Values<float>(y3), ElementsAre(8));
  const Tensor bytes = U8({1, 1, 1, 4}, {200, 3, 7, 255});
  EXPECT_THAT(
      Values<uint8_t>(Run1(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{1, 2}},
                                                {"strides", std::vector<int64_t>{1, 2}}}),
                           {&bytes})),
      ElementsAre(200, 255));
  const Tensor signed_bytes = I8({1, 1, 1, 2}, {-128, -5});
  EXPECT_THAT(
      Values<int8_t>(Run1(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{1, 2}}}),
                          {&signed_bytes})),
      ElementsAre(-5));
}

TEST(HostOpsTest, AveragePoolCountIncludePadBothWays) {
  const Tensor x = F32({1, 1, 2, 2}, {1, 2, 3, 4});
  Attributes attributes = {{"kernel_shape", std::vector<int64_t>{2, 2}},
                           {"pads", std::vector<int64_t>{1, 1, 1, 1}}};
  EXPECT_THAT(Run1(MakeNode("AveragePool", attributes), {&x}),
              FloatsNear(std::vector<float>{1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4}));
  attributes["count_include_pad"] = int64_t{1};
  EXPECT_THAT(Run1(MakeNode("AveragePool", attributes), {&x}),
              FloatsNear(std::vector<float>{0.25f, 0.75f, 0.5f, 1, 2.5f, 1.5f, 0.75f, 1.75f, 1}));
}

TEST(HostOpsTest, AveragePoolOnnxPrecomputedPads) {
  const Tensor x = F32({1, 1, 5, 5}, Iota(25));
  Attributes attributes = {{"kernel_shape", std::vector<int64_t>{5, 5}},
                           {"pads", std::vector<int64_t>{2, 2, 2, 2}}};
  EXPECT_THAT(Run1(MakeNode("AveragePool", attributes), {&x}),
              FloatsNear(std::vector<float>{7,  7.5f,  8,  8.5f,  9,  9.5f,  10, 10.5f, 11, 11.5f,
                                            12, 12.5f, 13, 13.5f, 14, 14.5f, 15, 15.5f, 16, 16.5f,
                                            17, 17.5f, 18, 18.5f, 19}));
  attributes["count_include_pad"] = int64_t{1};
  EXPECT_THAT(
      Run1(MakeNode("AveragePool", attributes), {&x}),
      FloatsNear(std::vector<float>{2.52f,  3.6f,  4.8f,  4.08f, 3.24f, 4.56f, 6.4f,  8.4f, 7.04f,
                                    5.52f,  7.2f,  10,    13,    10.8f, 8.4f,  6.96f, 9.6f, 12.4f,
                                    10.24f, 7.92f, 6.12f, 8.4f,  10.8f, 8.88f, 6.84f}));
}

TEST(HostOpsTest, AveragePoolCeilModeExcludesOverhangFromDivisor) {
  // ONNX averagepool_2d_ceil.
  const Tensor x4 = F32({1, 1, 4, 4}, Iota(16));
  EXPECT_THAT(Run1(MakeNode("AveragePool", {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                            {"strides", std::vector<int64_t>{2, 2}},
                                            {"ceil_mode", int64_t{1}}}),
                   {&x4}),
              FloatsNear(std::vector<float>{6, 7.5f, 12, 13.5f}));
  // The last window covers only 5, with or without count_include_pad.
  const Tensor x5 = F32({1, 1, 5}, Iota(5));
  for (int64_t include : {0, 1}) {
    SCOPED_TRACE(include);
    EXPECT_THAT(Run1(MakeNode("AveragePool", {{"kernel_shape", std::vector<int64_t>{2}},
                                              {"strides", std::vector<int64_t>{2}},
                                              {"ceil_mode", int64_t{1}},
                                              {"count_include_pad", include}}),
                     {&x5}),
                FloatsNear(std::vector<float>{1.5f, 3.5f, 5}));
  }
  // With pads, the divisor counts the padding but not the overhang past it: the last window
  // [5, 6, 7] covers x[5] = 6 and the end pad (position 6); position 7 is overhang.
  const Tensor x6 = F32({1, 1, 6}, Iota(6));
  Attributes attributes = {{"kernel_shape", std::vector<int64_t>{3}},
                           {"strides", std::vector<int64_t>{2}},
                           {"pads", std::vector<int64_t>{1, 1}},
                           {"ceil_mode", int64_t{1}},
                           {"count_include_pad", int64_t{1}}};
  EXPECT_THAT(Run1(MakeNode("AveragePool", attributes), {&x6}),
              FloatsNear(std::vector<float>{1, 3, 5, 3}));
  attributes["count_include_pad"] = int64_t{0};
  EXPECT_THAT(Run1(MakeNode("AveragePool", attributes), {&x6}),
              FloatsNear(std::vector<float>{1.5f, 3, 5, 6}));
}

TEST(HostOpsTest, AveragePoolSameUpper) {
  // ONNX averagepool_2d_precomputed_same_upper.
  const Tensor x = F32({1, 1, 5, 5}, Iota(25));
  EXPECT_THAT(Run1(MakeNode("AveragePool", {{"kernel_shape", std::vector<int64_t>{3, 3}},
                                            {"strides", std::vector<int64_t>{2, 2}},
                                            {"auto_pad", std::string("SAME_UPPER")}}),
                   {&x}),
              FloatsNear(std::vector<float>{4, 5.5f, 7, 11.5f, 13, 14.5f, 19, 20.5f, 22}));
}

TEST(HostOpsTest, PoolAttributeErrors) {
  const Tensor x = F32({1, 1, 4, 4}, Iota(16));
  EXPECT_EQ(Msg(RunStatus(MakeNode("MaxPool"), {&x})),
            "node 'n' (MaxPool): attribute 'kernel_shape' is required");
  EXPECT_EQ(
      RunStatus(MakeNode("MaxPool", {{"kernel_shape", std::vector<int64_t>{5, 5}}}), {&x}).code(),
      absl::StatusCode::kInvalidArgument);
  const Tensor flat = F32({4, 4}, Iota(16));
  EXPECT_EQ(RunStatus(MakeNode("AveragePool", {{"kernel_shape", std::vector<int64_t>{2}}}), {&flat})
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostOpsTest, GlobalPools) {
  const Tensor x = F32({1, 2, 2, 2}, {1, 2, 3, 4, -1, -5, -2, -3});
  const Tensor avg = Run1(MakeNode("GlobalAveragePool"), {&x});
  EXPECT_EQ(avg.dims, (Dims{1, 2, 1, 1}));
  EXPECT_THAT(avg, FloatsNear(std::vector<float>{2.5f, -2.75f}));
  EXPECT_THAT(Values<float>(Run1(MakeNode("GlobalMaxPool"), {&x})), ElementsAre(4, -1));
}

// ---------------------------------------------------------------------------------------------
// Conv

TEST(HostOpsTest, ConvOnnxExamples) {
  const Tensor x = F32({1, 1, 5, 5}, Iota(25, 0));
  const Tensor w = F32({1, 1, 3, 3}, std::vector<float>(9, 1.0f));
  const Tensor padded =
      Run1(MakeNode("Conv", {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}), {&x, &w});
  EXPECT_THAT(Values<float>(padded),
              ElementsAreArray(std::vector<float>{12,  21,  27, 33,  24,  33,  54, 63,  72,
                                                  51,  63,  99, 108, 117, 81,  93, 144, 153,
                                                  162, 111, 72, 111, 117, 123, 84}));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Conv"), {&x, &w})),
              ElementsAre(54, 63, 72, 99, 108, 117, 144, 153, 162));
  // conv_with_strides_padding on a 7x5 input.
  const Tensor x7 = F32({1, 1, 7, 5}, Iota(35, 0));
  EXPECT_THAT(Values<float>(Run1(MakeNode("Conv", {{"pads", std::vector<int64_t>{1, 1, 1, 1}},
                                                   {"strides", std::vector<int64_t>{2, 2}}}),
                                 {&x7, &w})),
              ElementsAre(12, 27, 24, 63, 108, 81, 123, 198, 141, 112, 177, 124));
  // conv_with_autopad_same (SAME_LOWER, stride 2).
  EXPECT_THAT(Values<float>(Run1(MakeNode("Conv", {{"auto_pad", std::string("SAME_LOWER")},
                                                   {"strides", std::vector<int64_t>{2, 2}}}),
                                 {&x, &w})),
              ElementsAre(12, 27, 24, 63, 108, 81, 72, 117, 84));
}

TEST(HostOpsTest, ConvGroupsDilationsAndBias) {
  const Tensor x = F32({1, 2, 5}, {1, 2, 3, 4, 5, 10, 20, 30, 40, 50});
  const Tensor w = F32({2, 1, 2}, {1, 1, 1, -1});
  const Tensor b = F32({2}, {0.5f, -1});
  const Tensor y =
      Run1(MakeNode("Conv", {{"group", int64_t{2}}, {"dilations", std::vector<int64_t>{2}}}),
           {&x, &w, &b});
  EXPECT_EQ(y.dims, (Dims{1, 2, 3}));
  EXPECT_THAT(Values<float>(y), ElementsAre(4.5f, 6.5f, 8.5f, -21, -21, -21));
  const Tensor wrong = F32({2, 2, 2}, std::vector<float>(8));
  EXPECT_THAT(Msg(RunStatus(MakeNode("Conv", {{"group", int64_t{2}}}), {&x, &wrong})),
              HasSubstr("W [2,2,2] does not match X [1,2,5] with group 2"));
}

// A 1x1 convolution is a matrix product: W[M, C] x X[C, H*W]. Seeded sweep over shapes.
TEST(HostOpsTest, PointwiseConvMatchesMatMulSweep) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int64_t> size(1, 5);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t c = size(rng), m = size(rng), h = size(rng), w = size(rng);
    SCOPED_TRACE(absl::StrCat("C=", c, " M=", m, " H=", h, " W=", w));
    std::vector<float> xv(static_cast<size_t>(c * h * w)), wv(static_cast<size_t>(m * c));
    for (float& v : xv) v = value(rng);
    for (float& v : wv) v = value(rng);
    const Tensor x = F32({1, c, h, w}, xv), weights = F32({m, c, 1, 1}, wv);
    const Tensor x2 = F32({c, h * w}, xv), w2 = F32({m, c}, wv);
    const Tensor conv = Run1(MakeNode("Conv"), {&x, &weights});
    const Tensor matmul = Run1(MakeNode("MatMul"), {&w2, &x2});
    EXPECT_EQ(conv.dims, (Dims{1, m, h, w}));
    EXPECT_THAT(conv, FloatsNear(Values<float>(matmul)));
  }
}

// Gemm(A, B, C) == MatMul(A, B) + C with alpha = beta = 1. Seeded sweep over shapes.
TEST(HostOpsTest, GemmMatchesMatMulPlusAddSweep) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int64_t> size(1, 6);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t m = size(rng), k = size(rng), n = size(rng);
    SCOPED_TRACE(absl::StrCat("M=", m, " K=", k, " N=", n));
    auto random = [&](int64_t count) {
      std::vector<float> v(static_cast<size_t>(count));
      for (float& f : v) f = value(rng);
      return v;
    };
    const Tensor a = F32({m, k}, random(m * k)), b = F32({k, n}, random(k * n));
    const Tensor c = F32({n}, random(n));
    const Tensor gemm = Run1(MakeNode("Gemm"), {&a, &b, &c});
    const Tensor product = Run1(MakeNode("MatMul"), {&a, &b});
    const Tensor sum = Run1(MakeNode("Add"), {&product, &c});
    EXPECT_THAT(gemm, FloatsNear(Values<float>(sum)));
  }
}

}  // namespace
}  // namespace convserve::engine::host
