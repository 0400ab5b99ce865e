// Profiler and kernel-design comparison: rows per step, parameter totals against an independent
// count from the initializers, MACs against the formula, output shapes of every alternative and
// parameter ratios against hand-computed counts.
#include "server/engine/profiler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <set>

#include "server/onnx/importer.h"

namespace convserve::engine {
namespace {

Tensor RandomTensor(Dims dims, std::mt19937& rng) {
  Tensor t(DataType::kFloat32, std::move(dims));
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

Node MakeNode(const std::string& name, const std::string& op, std::vector<std::string> inputs,
              std::vector<std::string> outputs) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.source_nodes = {name};
  return n;
}

// conv3x3 1->8 + relu, maxpool 2, conv3x3 8->16 + relu, flatten, gemm 16*7*7 -> 10.
Graph SmallConvNet() {
  std::mt19937 rng(7);
  Graph g;
  g.inputs.push_back({"x", DataType::kFloat32, {-1, 1, 14, 14}});
  g.outputs.push_back({"y", DataType::kFloat32, {-1, 10}});
  g.initializers["w1"] = RandomTensor({8, 1, 3, 3}, rng);
  g.initializers["b1"] = RandomTensor({8}, rng);
  g.initializers["w2"] = RandomTensor({16, 8, 3, 3}, rng);
  g.initializers["b2"] = RandomTensor({16}, rng);
  g.initializers["wf"] = RandomTensor({10, 16 * 7 * 7}, rng);
  g.initializers["bf"] = RandomTensor({10}, rng);
  Node c1 = MakeNode("conv1", "Conv", {"x", "w1", "b1"}, {"c1"});
  c1.attributes["kernel_shape"] = std::vector<int64_t>{3, 3};
  c1.attributes["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  Node p1 = MakeNode("pool1", "MaxPool", {"r1"}, {"p1"});
  p1.attributes["kernel_shape"] = std::vector<int64_t>{2, 2};
  p1.attributes["strides"] = std::vector<int64_t>{2, 2};
  Node c2 = MakeNode("conv2", "Conv", {"p1", "w2", "b2"}, {"c2"});
  c2.attributes["kernel_shape"] = std::vector<int64_t>{3, 3};
  c2.attributes["pads"] = std::vector<int64_t>{1, 1, 1, 1};
  Node gemm = MakeNode("fc", "Gemm", {"f", "wf", "bf"}, {"y"});
  gemm.attributes["transB"] = int64_t{1};
  g.nodes = {
      c1,  MakeNode("relu1", "Relu", {"c1"}, {"r1"}), p1,
      c2,  MakeNode("relu2", "Relu", {"c2"}, {"r2"}), MakeNode("flatten", "Flatten", {"r2"}, {"f"}),
      gemm};
  return g;
}

TEST(ProfilerTest, ACancelledMeasurementStopsWithCancelled) {
  auto model = Model::Create(SmallConvNet(), {"small", Precision::kFp32});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<float> input(14 * 14, 0.5f);
  TensorView view{DataType::kFloat32, {1, 1, 14, 14}, input.data()};
  std::atomic<bool> cancel{true};
  ProfileOptions options;
  options.iterations = 5;
  options.cancel = &cancel;
  auto profile = ProfilePlan(**plan, std::span<const TensorView>(&view, 1), options);
  EXPECT_EQ(profile.status().code(), absl::StatusCode::kCancelled) << profile.status();
  cancel.store(false);
  EXPECT_TRUE(ProfilePlan(**plan, std::span<const TensorView>(&view, 1), options).ok());
}

TEST(ProfilerTest, ReportRowsMatchTheModel) {
  auto model = Model::Create(SmallConvNet(), {"small", Precision::kFp32});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<float> input(2 * 14 * 14);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(0.f, 1.f);
  for (float& v : input) v = dist(rng);
  TensorView view{DataType::kFloat32, {2, 1, 14, 14}, input.data()};
  ProfileOptions options;
  options.warmup_iterations = 2;
  options.iterations = 5;
  auto profile = ProfilePlan(**plan, std::span<const TensorView>(&view, 1), options);
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_EQ(profile->steps.size(), (*plan)->steps().size());
  EXPECT_EQ(profile->iterations, 5);

  // Parameters: counted independently from the initializers.
  int64_t initializer_params = 0;
  for (const auto& [name, t] : SmallConvNet().initializers) initializer_params += t.num_elements();
  EXPECT_EQ(profile->totals.params, initializer_params);

  bool saw_fused_conv = false;
  for (const StepProfile& s : profile->steps) {
    EXPECT_GT(s.median_ms, 0) << s.info.name;
    EXPECT_LE(s.min_ms, s.median_ms) << s.info.name;
    EXPECT_LE(s.median_ms, s.p90_ms) << s.info.name;
    EXPECT_FALSE(s.info.kernel.empty()) << s.info.name;
    if (s.info.name == "conv1") {
      saw_fused_conv = true;
      EXPECT_EQ(s.info.source_nodes, (std::vector<std::string>{"conv1", "relu1"}));
      // MACs = N * H' * W' * k*k * c_in * c_out.
      EXPECT_EQ(s.cost.macs, 2 * 14 * 14 * 9 * 1 * 8);
      EXPECT_EQ(s.cost.flops, 2 * s.cost.macs + 2 * 14 * 14 * 8);  // + the fused ReLU
    }
    if (s.info.name == "conv2") {
      EXPECT_EQ(s.cost.macs, 2 * 7 * 7 * 9 * 8 * 16);
    }
    if (s.info.name == "fc") {
      EXPECT_EQ(s.cost.macs, 2 * 784 * 10);
    }
  }
  EXPECT_TRUE(saw_fused_conv);
  EXPECT_GT(profile->peak_gflops, 0);
  EXPECT_GT(profile->end_to_end_median_ms, 0);
}

TEST(ProfilerTest, RejectsZeroIterations) {
  auto model = Model::Create(SmallConvNet(), {"small", Precision::kFp32});
  ASSERT_TRUE(model.ok());
  auto plan = (*model)->GetPlan(1);
  ASSERT_TRUE(plan.ok());
  std::vector<float> input(14 * 14, 0.5f);
  TensorView view{DataType::kFloat32, {1, 1, 14, 14}, input.data()};
  ProfileOptions options;
  options.iterations = 0;
  EXPECT_EQ(ProfilePlan(**plan, std::span<const TensorView>(&view, 1), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The report of every bundled model: one row per executed step, every ONNX node covered by
// exactly one step (Flatten, a free view, by none), parameters adding up to the initializers of
// the ONNX file, conv MACs from the weight dims, positive latencies, kernel names.
TEST(ProfilerTest, BundledModelsReport) {
  namespace fs = std::filesystem;
  const fs::path repository = fs::path(CONVSERVE_SOURCE_DIR) / "models" / "repository";
  int models = 0;
  for (const char* name :
       {"fashion-k3", "fashion-k5", "fashion-sep", "fashion-bottleneck", "fashion-mlp"}) {
    SCOPED_TRACE(name);
    const fs::path file = repository / name / "1" / "model.onnx";
    ASSERT_TRUE(fs::exists(file)) << file;
    auto imported = onnx_import::ImportOnnxFile(file);
    ASSERT_TRUE(imported.ok()) << imported.status();
    int64_t initializer_params = 0;
    std::map<std::string, Dims> conv_weights;  // node name -> weight dims
    std::set<std::string> onnx_nodes;
    for (const auto& [init, tensor] : imported->initializers)
      initializer_params += tensor.num_elements();
    for (const Node& node : imported->nodes) {
      if (node.op_type != "Flatten") onnx_nodes.insert(node.name);
      if (node.op_type == "Conv")
        conv_weights[node.name] = imported->initializers.at(node.inputs[1]).dims;
    }
    auto model = Model::Create(*std::move(imported), {name, Precision::kFp32});
    ASSERT_TRUE(model.ok()) << model.status();
    auto plan = (*model)->GetPlan(1);
    ASSERT_TRUE(plan.ok()) << plan.status();
    std::vector<float> input(28 * 28, 0.25f);
    TensorView view{DataType::kFloat32, {1, 1, 28, 28}, input.data()};
    ProfileOptions options;
    options.warmup_iterations = 1;
    options.iterations = 3;
    auto profile = ProfilePlan(**plan, std::span<const TensorView>(&view, 1), options);
    ASSERT_TRUE(profile.ok()) << profile.status();
    ASSERT_EQ(profile->steps.size(), (*plan)->steps().size());
    EXPECT_EQ(profile->totals.params, initializer_params);
    std::multiset<std::string> covered;
    for (const StepProfile& s : profile->steps) {
      EXPECT_GT(s.median_ms, 0) << s.info.name;
      EXPECT_FALSE(s.info.kernel.empty()) << s.info.name;
      for (const auto& node : s.info.source_nodes) covered.insert(node);
      if (s.info.kind == "Conv") {
        const Dims& w = conv_weights.at(s.info.source_nodes.at(0));
        const Dims& y = s.info.output_dims;
        EXPECT_EQ(s.cost.macs, y[0] * y[2] * y[3] * w[0] * w[1] * w[2] * w[3]) << s.info.name;
      }
    }
    EXPECT_EQ(covered, std::multiset<std::string>(onnx_nodes.begin(), onnx_nodes.end()));
    ++models;
  }
  EXPECT_EQ(models, 5);
}

TEST(KernelCompareTest, AlternativesKeepTheShapeAndMatchTheFormulas) {
  ConvShape shape;
  shape.batch = 1;
  shape.height = shape.width = 16;
  shape.in_channels = shape.out_channels = 32;
  shape.kernel = 5;
  ProfileOptions options;
  options.warmup_iterations = 1;
  options.iterations = 3;
  auto results = CompareKernelDesigns(shape, options);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 5u);
  const int64_t c = 32, mid = 8;
  const std::map<std::string, int64_t> expected_params = {
      {"as_is", 25 * c * c + c},
      {"stack_3x3", 2 * (9 * c * c + c)},
      {"depthwise_separable", (25 * c + c) + (c * c + c)},
      {"bottleneck_1x1", (c * mid + mid) + (25 * mid * mid + mid) + (mid * c + c)},
      {"factorized_kx1_1xk", 2 * (5 * c * c + c)},
  };
  const double base = 25.0 * c * c + c;
  for (const DesignResult& r : *results) {
    SCOPED_TRACE(r.design);
    EXPECT_EQ(r.output_dims, (Dims{1, 32, 16, 16}));
    ASSERT_TRUE(expected_params.count(r.design));
    EXPECT_EQ(r.params, expected_params.at(r.design));
    EXPECT_DOUBLE_EQ(r.params_ratio, expected_params.at(r.design) / base);
    EXPECT_GT(r.median_ms, 0);
    EXPECT_FALSE(r.kernels.empty());
  }
  // MACs of "as is": H*W*k*k*c*c.
  EXPECT_EQ(results->front().macs, 16 * 16 * 25 * c * c);
}

TEST(KernelCompareTest, StridedConvKeepsItsOutputShape) {
  ConvShape shape;
  shape.height = 15;
  shape.width = 15;
  shape.in_channels = 8;
  shape.out_channels = 16;
  shape.kernel = 7;
  shape.stride = 2;
  ProfileOptions options;
  options.warmup_iterations = 0;
  options.iterations = 1;
  auto results = CompareKernelDesigns(shape, options);
  ASSERT_TRUE(results.ok()) << results.status();
  for (const DesignResult& r : *results) {
    EXPECT_EQ(r.output_dims, (Dims{1, 16, 8, 8})) << r.design;
  }
}

TEST(KernelCompareTest, InvalidShapeIsRejected) {
  ConvShape shape;
  shape.height = 8;
  shape.width = 8;
  shape.in_channels = 6;
  shape.out_channels = 8;
  shape.groups = 4;  // 6 channels do not split into 4 groups
  auto results = CompareKernelDesigns(shape, {});
  ASSERT_FALSE(results.ok());
  EXPECT_EQ(results.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(results.status().message()).find("groups 4"), std::string::npos);
}

}  // namespace
}  // namespace convserve::engine
