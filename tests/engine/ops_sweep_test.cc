// The engine against the naive reference ops (reference_ops.h): seeded random sweeps over
// Conv, pooling, Gemm and Relu configurations, graphs that exercise each pass (BatchNorm
// folding, activation and residual-sum fusion), dynamic batch, concurrent execution of one
// plan, and the error messages of unsupported ops and wrongly shaped inputs.
//
// Every graph is built in code (no ONNX files). Tolerance: |engine - reference| <=
// 1e-4 * max|reference| + 1e-5 per element. A failing sweep case prints its configuration.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/compiler.h"
#include "server/engine/engine.h"
#include "server/engine/graph.h"
#include "server/engine/tensor.h"
#include "tests/engine/reference_ops.h"

namespace convserve::engine {
namespace {

using reference::ConvParams;
using reference::PoolKind;
using reference::PoolParams;
using reference::RefTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// Helpers

int64_t Uniform(std::mt19937& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

RefTensor RandomTensor(std::mt19937& rng, Dims dims, float lo = -1.f, float hi = 1.f) {
  RefTensor t(std::move(dims));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : t.data) v = dist(rng);
  return t;
}

std::vector<float> RandomVector(std::mt19937& rng, int64_t n, float lo = -1.f, float hi = 1.f) {
  return RandomTensor(rng, {n}, lo, hi).data;
}

Tensor ToTensor(const RefTensor& t) {
  Tensor out(DataType::kFloat32, t.dims);
  std::memcpy(out.bytes.data(), t.data.data(), t.data.size() * sizeof(float));
  return out;
}

Tensor VectorTensor(const std::vector<float>& v) {
  return ToTensor(RefTensor({static_cast<int64_t>(v.size())}, v));
}

Tensor ScalarTensor(float v) { return ToTensor(RefTensor({}, {v})); }

Node MakeNode(const std::string& name, const std::string& op_type, std::vector<std::string> inputs,
              std::vector<std::string> outputs,
              std::map<std::string, AttributeValue> attributes = {}) {
  Node node;
  node.name = name;
  node.op_type = op_type;
  node.inputs = std::move(inputs);
  node.outputs = std::move(outputs);
  node.attributes = std::move(attributes);
  node.source_nodes = {name};
  return node;
}

Node ConvNode(const std::string& name, const std::string& x, const std::string& w,
              const std::string& b, const std::string& y, int64_t kernel_h, int64_t kernel_w,
              const ConvParams& p) {
  std::vector<std::string> inputs = {x, w};
  if (!b.empty()) inputs.push_back(b);
  return MakeNode(name, "Conv", inputs, {y},
                  {{"kernel_shape", std::vector<int64_t>{kernel_h, kernel_w}},
                   {"strides", std::vector<int64_t>{p.strides[0], p.strides[1]}},
                   {"dilations", std::vector<int64_t>{p.dilations[0], p.dilations[1]}},
                   {"pads", std::vector<int64_t>(p.pads.begin(), p.pads.end())},
                   {"group", p.group}});
}

std::string StepsToString(const Plan& plan) {
  std::ostringstream out;
  for (const StepInfo& s : plan.steps()) {
    out << "  " << s.kind << " '" << s.name << "' kernel=" << s.kernel << " sources={";
    for (const std::string& n : s.source_nodes) out << n << ",";
    out << "} post_ops={";
    for (const std::string& p : s.post_ops) out << p << ",";
    out << "}\n";
  }
  return out.str();
}

// Runs `plan` on plain inputs; outputs get the plan's output dims.
absl::StatusOr<std::vector<RefTensor>> RunPlan(const Plan& plan, Workspace& workspace,
                                               const std::vector<RefTensor>& inputs) {
  std::vector<TensorView> in_views;
  for (const RefTensor& t : inputs) {
    in_views.push_back({DataType::kFloat32, t.dims, const_cast<float*>(t.data.data())});
  }
  std::vector<RefTensor> outputs;
  for (const ValueInfo& info : plan.output_infos()) {
    RefTensor t(info.dims);
    std::fill(t.data.begin(), t.data.end(), std::nanf(""));  // unwritten elements fail
    outputs.push_back(std::move(t));
  }
  std::vector<TensorView> out_views;
  for (RefTensor& t : outputs) out_views.push_back({DataType::kFloat32, t.dims, t.data.data()});
  absl::Status status = plan.Run(workspace, in_views, out_views);
  if (!status.ok()) return status;
  return outputs;
}

absl::StatusOr<std::vector<RefTensor>> RunPlan(const Plan& plan,
                                               const std::vector<RefTensor>& inputs) {
  std::unique_ptr<Workspace> workspace = plan.CreateWorkspace();
  return RunPlan(plan, *workspace, inputs);
}

// How many sweep cases ran on oneDNN primitives and how many (partly) on the engine's host
// fallback: printed so that a sweep that silently stopped reaching oneDNN is noticed.
struct PathTally {
  int onednn = 0, host = 0;
  void Print(const char* sweep) const {
    std::printf("[ paths    ] %s: %d cases on oneDNN primitives, %d with a host-evaluated step\n",
                sweep, onednn, host);
  }
};

// Model::Create -> GetPlan(batch) -> CreateWorkspace -> Run.
absl::StatusOr<std::vector<RefTensor>> CreateAndRun(Graph graph, int64_t batch,
                                                    const std::vector<RefTensor>& inputs,
                                                    PathTally* tally = nullptr) {
  ModelOptions options;
  options.model_name = graph.name;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(std::move(graph), options);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::shared_ptr<const Plan>> plan = (*model)->GetPlan(batch);
  if (!plan.ok()) return plan.status();
  if (tally != nullptr) {
    bool host = false;
    for (const StepInfo& s : (*plan)->steps()) host = host || s.kernel == "reference";
    ++(host ? tally->host : tally->onednn);
  }
  return RunPlan(**plan, inputs);
}

std::string DimsString(const Dims& dims) { return DimsToString(dims); }

// |actual - expected| <= 1e-4 * max|expected| + 1e-5 everywhere.
::testing::AssertionResult Near(const RefTensor& actual, const RefTensor& expected) {
  if (actual.dims != expected.dims) {
    return ::testing::AssertionFailure()
           << "dims " << DimsString(actual.dims) << ", expected " << DimsString(expected.dims);
  }
  double max_ref = 0.0;
  for (float v : expected.data) max_ref = std::max(max_ref, std::fabs(static_cast<double>(v)));
  const double tolerance = 1e-4 * max_ref + 1e-5;
  double max_diff = 0.0;
  int64_t worst = -1, bad = 0;
  for (int64_t i = 0; i < expected.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(actual.data[i]) - expected.data[i]);
    if (!(diff <= tolerance)) ++bad;  // NaN counts as bad
    if (worst < 0 || !(diff <= max_diff)) {
      max_diff = std::isnan(diff) ? INFINITY : diff;
      worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << expected.size() << " elements off; max |diff| " << max_diff
         << " at flat index " << worst << " (engine " << actual.data[worst] << ", reference "
         << expected.data[worst] << "), tolerance " << tolerance << ", dims "
         << DimsString(expected.dims);
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// The step that covers ONNX node `name`, or nullptr.
const StepInfo* StepCovering(const Plan& plan, const std::string& name) {
  for (const StepInfo& s : plan.steps()) {
    if (Contains(s.source_nodes, name)) return &s;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Conv sweep

struct ConvCase {
  int64_t batch = 1, channels = 1, out_channels = 1, height = 1, width = 1;
  int64_t kernel_h = 1, kernel_w = 1;
  ConvParams params;
  bool bias = true;
  bool dynamic_batch = false;

  std::string ToString() const {
    std::ostringstream out;
    out << "Conv x=[" << batch << "," << channels << "," << height << "," << width << "] w=["
        << out_channels << "," << channels / params.group << "," << kernel_h << "," << kernel_w
        << "] " << params.ToString() << " bias=" << bias << " dynamic_batch=" << dynamic_batch;
    return out.str();
  }
};

ConvCase DrawConvCase(std::mt19937& rng) {
  while (true) {
    ConvCase c;
    c.batch = Uniform(rng, 1, 3);
    switch (Uniform(rng, 0, 3)) {
      case 0:  // dense
        c.channels = Uniform(rng, 1, 40);
        c.out_channels = Uniform(rng, 1, 40);
        c.params.group = 1;
        break;
      case 1:  // depthwise, channel multiplier 1 or 2
        c.channels = Uniform(rng, 1, 40);
        c.params.group = c.channels;
        c.out_channels = c.channels * Uniform(rng, 1, 2);
        break;
      default: {  // 2 or 4 groups
        const int64_t group = Uniform(rng, 0, 1) ? 4 : 2;
        c.params.group = group;
        c.channels = group * Uniform(rng, 1, 40 / group);
        c.out_channels = group * Uniform(rng, 1, 40 / group);
      }
    }
    c.kernel_h = Uniform(rng, 1, 7);
    c.kernel_w = Uniform(rng, 1, 7);
    c.params.strides = {Uniform(rng, 1, 3), Uniform(rng, 1, 3)};
    c.params.dilations = {Uniform(rng, 1, 2), Uniform(rng, 1, 2)};
    for (int64_t& pad : c.params.pads) pad = Uniform(rng, 0, 3);
    c.height = Uniform(rng, 1, 20);
    c.width = Uniform(rng, 1, 20);
    c.bias = Uniform(rng, 0, 3) != 0;
    c.dynamic_batch = Uniform(rng, 0, 1) != 0;
    const int64_t span_h = c.height + c.params.pads[0] + c.params.pads[2] -
                           ((c.kernel_h - 1) * c.params.dilations[0] + 1);
    const int64_t span_w = c.width + c.params.pads[1] + c.params.pads[3] -
                           ((c.kernel_w - 1) * c.params.dilations[1] + 1);
    if (span_h < 0 || span_w < 0) continue;
    const int64_t out_area =
        (span_h / c.params.strides[0] + 1) * (span_w / c.params.strides[1] + 1);
    const int64_t macs = c.batch * c.out_channels * out_area * (c.channels / c.params.group) *
                         c.kernel_h * c.kernel_w;
    if (macs > 4'000'000) continue;  // keeps the naive reference fast
    return c;
  }
}

// The one-Conv graph of `c` with random weights, a random input and the reference's output.
struct ConvProblem {
  Graph graph;
  RefTensor x, expected;
};

ConvProblem MakeConvProblem(const ConvCase& c, std::mt19937& rng) {
  ConvProblem problem;
  problem.x = RandomTensor(rng, {c.batch, c.channels, c.height, c.width});
  const RefTensor w =
      RandomTensor(rng, {c.out_channels, c.channels / c.params.group, c.kernel_h, c.kernel_w});
  const std::vector<float> bias = c.bias ? RandomVector(rng, c.out_channels) : std::vector<float>{};
  problem.expected = reference::Conv2d(problem.x, w, bias, c.params);

  Graph& graph = problem.graph;
  graph.name = "conv_sweep";
  graph.inputs = {
      {"x", DataType::kFloat32, {c.dynamic_batch ? -1 : c.batch, c.channels, c.height, c.width}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers["w"] = ToTensor(w);
  if (c.bias) graph.initializers["b"] = VectorTensor(bias);
  graph.nodes = {
      ConvNode("conv", "x", "w", c.bias ? "b" : "", "y", c.kernel_h, c.kernel_w, c.params)};
  return problem;
}

// Builds the one-Conv graph of `c`, runs it on the engine and compares with the reference.
::testing::AssertionResult CheckConvCase(const ConvCase& c, std::mt19937& rng,
                                         PathTally* tally = nullptr) {
  ConvProblem problem = MakeConvProblem(c, rng);
  auto outputs = CreateAndRun(std::move(problem.graph), c.batch, {problem.x}, tally);
  if (!outputs.ok()) return ::testing::AssertionFailure() << outputs.status();
  return Near((*outputs)[0], problem.expected);
}

TEST(ConvSweep, MatchesReferenceOn200RandomConfigurations) {
  std::mt19937 rng(20240611);
  PathTally tally;
  int failures = 0;
  for (int i = 0; i < 200; ++i) {
    const ConvCase c = DrawConvCase(rng);
    ::testing::AssertionResult result = CheckConvCase(c, rng, &tally);
    if (!result) ++failures;
    EXPECT_TRUE(result) << "case " << i << ": " << c.ToString();
  }
  tally.Print("Conv sweep");
  EXPECT_EQ(failures, 0);
}

// Hand-picked shapes that the random sweep may miss: 1x1 pointwise, 7x7 stride 2 stem,
// depthwise 3x3 stride 2 with asymmetric pads, a kernel as large as the padded input.
TEST(ConvSweep, MatchesReferenceOnNetworkShapes) {
  std::mt19937 rng(7);
  std::vector<ConvCase> cases;
  ConvCase pointwise;
  pointwise.batch = 2, pointwise.channels = 32, pointwise.out_channels = 64;
  pointwise.height = pointwise.width = 14;
  cases.push_back(pointwise);
  ConvCase stem;
  stem.channels = 3, stem.out_channels = 16, stem.height = stem.width = 32;
  stem.kernel_h = stem.kernel_w = 7;
  stem.params.strides = {2, 2};
  stem.params.pads = {3, 3, 3, 3};
  cases.push_back(stem);
  ConvCase depthwise;
  depthwise.batch = 3, depthwise.channels = depthwise.out_channels = 24;
  depthwise.height = depthwise.width = 15;
  depthwise.kernel_h = depthwise.kernel_w = 3;
  depthwise.params.group = 24;
  depthwise.params.strides = {2, 2};
  depthwise.params.pads = {0, 0, 1, 1};
  depthwise.dynamic_batch = true;
  cases.push_back(depthwise);
  ConvCase whole;
  whole.channels = 5, whole.out_channels = 7, whole.height = 3, whole.width = 4;
  whole.kernel_h = 5, whole.kernel_w = 6;
  whole.params.pads = {1, 1, 1, 1};
  whole.bias = false;
  cases.push_back(whole);
  for (const ConvCase& c : cases) EXPECT_TRUE(CheckConvCase(c, rng)) << c.ToString();
}

// ---------------------------------------------------------------------------------------------
// Pooling sweep

struct PoolCase {
  int64_t batch = 1, channels = 1, height = 1, width = 1;
  PoolParams params;
  bool dynamic_batch = false;
  std::string ToString() const {
    std::ostringstream out;
    out << params.ToString() << " x=[" << batch << "," << channels << "," << height << "," << width
        << "] dynamic_batch=" << dynamic_batch;
    return out.str();
  }
};

PoolCase DrawPoolCase(std::mt19937& rng) {
  while (true) {
    PoolCase c;
    c.batch = Uniform(rng, 1, 3);
    c.channels = Uniform(rng, 1, 40);
    c.height = Uniform(rng, 1, 20);
    c.width = Uniform(rng, 1, 20);
    PoolParams& p = c.params;
    p.kind = Uniform(rng, 0, 1) ? PoolKind::kMax : PoolKind::kAverage;
    p.kernel = {Uniform(rng, 1, 5), Uniform(rng, 1, 5)};
    p.strides = {Uniform(rng, 1, 3), Uniform(rng, 1, 3)};
    if (p.kind == PoolKind::kMax) p.dilations = {Uniform(rng, 1, 2), Uniform(rng, 1, 2)};
    for (int64_t& pad : p.pads) pad = Uniform(rng, 0, 3);
    p.ceil_mode = Uniform(rng, 0, 1) != 0;
    p.count_include_pad = p.kind == PoolKind::kAverage && Uniform(rng, 0, 1) != 0;
    c.dynamic_batch = Uniform(rng, 0, 1) != 0;
    bool valid = true;
    for (int axis = 0; axis < 2; ++axis) {
      const int64_t in = axis == 0 ? c.height : c.width;
      // ONNX requires pads smaller than the kernel; every window must also see the input.
      if (p.pads[axis] >= p.kernel[axis] || p.pads[axis + 2] >= p.kernel[axis]) valid = false;
      if (reference::PoolOutputSize(in, p.kernel[axis], p.strides[axis], p.dilations[axis],
                                    p.pads[axis], p.pads[axis + 2], p.ceil_mode) < 1 ||
          !reference::EveryPoolWindowHitsInput(in, p.kernel[axis], p.strides[axis],
                                               p.dilations[axis], p.pads[axis], p.pads[axis + 2],
                                               p.ceil_mode)) {
        valid = false;
      }
    }
    if (valid) return c;
  }
}

::testing::AssertionResult CheckPoolCase(const PoolCase& c, std::mt19937& rng, PathTally* tally) {
  const RefTensor x = RandomTensor(rng, {c.batch, c.channels, c.height, c.width});
  const RefTensor expected = reference::Pool2d(x, c.params);
  const PoolParams& p = c.params;
  std::map<std::string, AttributeValue> attributes = {
      {"kernel_shape", std::vector<int64_t>{p.kernel[0], p.kernel[1]}},
      {"strides", std::vector<int64_t>{p.strides[0], p.strides[1]}},
      {"pads", std::vector<int64_t>(p.pads.begin(), p.pads.end())},
      {"ceil_mode", int64_t{p.ceil_mode}}};
  if (p.kind == PoolKind::kMax) {
    attributes["dilations"] = std::vector<int64_t>{p.dilations[0], p.dilations[1]};
  } else {
    attributes["count_include_pad"] = int64_t{p.count_include_pad};
  }
  Graph graph;
  graph.name = "pool_sweep";
  graph.inputs = {
      {"x", DataType::kFloat32, {c.dynamic_batch ? -1 : c.batch, c.channels, c.height, c.width}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.nodes = {MakeNode("pool", p.kind == PoolKind::kMax ? "MaxPool" : "AveragePool", {"x"},
                          {"y"}, attributes)};
  auto outputs = CreateAndRun(std::move(graph), c.batch, {x}, tally);
  if (!outputs.ok()) return ::testing::AssertionFailure() << outputs.status();
  return Near((*outputs)[0], expected);
}

TEST(PoolSweep, MatchesReferenceOn200RandomConfigurations) {
  std::mt19937 rng(31337);
  PathTally tally;
  int failures = 0;
  for (int i = 0; i < 200; ++i) {
    const PoolCase c = DrawPoolCase(rng);
    ::testing::AssertionResult result = CheckPoolCase(c, rng, &tally);
    if (!result) ++failures;
    EXPECT_TRUE(result) << "case " << i << ": " << c.ToString();
  }
  tally.Print("pooling sweep");
  EXPECT_EQ(failures, 0);
}

TEST(PoolSweep, GlobalPoolsMatchReference) {
  std::mt19937 rng(99);
  for (int i = 0; i < 20; ++i) {
    const Dims dims = {Uniform(rng, 1, 3), Uniform(rng, 1, 40), Uniform(rng, 1, 15),
                       Uniform(rng, 1, 15)};
    const PoolKind kind = i % 2 ? PoolKind::kMax : PoolKind::kAverage;
    const std::string op = kind == PoolKind::kMax ? "GlobalMaxPool" : "GlobalAveragePool";
    const RefTensor x = RandomTensor(rng, dims);
    Graph graph;
    graph.name = "global_pool";
    graph.inputs = {{"x", DataType::kFloat32, dims}};
    graph.outputs = {{"y", DataType::kFloat32, {}}};
    graph.nodes = {MakeNode("pool", op, {"x"}, {"y"})};
    auto outputs = CreateAndRun(std::move(graph), dims[0], {x});
    ASSERT_TRUE(outputs.ok()) << op << " x=" << DimsString(dims) << ": " << outputs.status();
    EXPECT_TRUE(Near((*outputs)[0], reference::GlobalPool2d(x, kind)))
        << op << " x=" << DimsString(dims);
  }
}

// ---------------------------------------------------------------------------------------------
// Gemm sweep

enum class BiasForm { kNone, kScalar, kOne, kRow, kRow2d, kColumn, kFull };
const char* BiasFormName(BiasForm f) {
  switch (f) {
    case BiasForm::kNone:
      return "none";
    case BiasForm::kScalar:
      return "scalar[]";
    case BiasForm::kOne:
      return "[1]";
    case BiasForm::kRow:
      return "[N]";
    case BiasForm::kRow2d:
      return "[1,N]";
    case BiasForm::kColumn:
      return "[M,1]";
    case BiasForm::kFull:
      return "[M,N]";
  }
  return "?";
}

struct GemmCase {
  int64_t m = 1, k = 1, n = 1;
  bool trans_a = false, trans_b = false;
  float alpha = 1.f, beta = 1.f;
  BiasForm bias = BiasForm::kNone;
  bool dynamic_batch = false;
  std::string ToString() const {
    std::ostringstream out;
    out << "Gemm M=" << m << " K=" << k << " N=" << n << " transA=" << trans_a
        << " transB=" << trans_b << " alpha=" << alpha << " beta=" << beta
        << " C=" << BiasFormName(bias) << " dynamic_batch=" << dynamic_batch;
    return out.str();
  }
};

TEST(GemmSweep, MatchesReferenceOn100RandomConfigurations) {
  std::mt19937 rng(4242);
  const float factors[] = {1.f, 0.5f, -1.5f, 2.f};
  PathTally tally;
  int failures = 0;
  for (int i = 0; i < 100; ++i) {
    GemmCase c;
    c.m = Uniform(rng, 1, 8);
    c.k = Uniform(rng, 1, 64);
    c.n = Uniform(rng, 1, 40);
    c.trans_a = Uniform(rng, 0, 3) == 0;
    c.trans_b = Uniform(rng, 0, 1) != 0;
    c.alpha = factors[Uniform(rng, 0, 3)];
    c.beta = factors[Uniform(rng, 0, 3)];
    c.bias = static_cast<BiasForm>(Uniform(rng, 0, 6));
    // A dynamic batch needs an A with the batch (M) first and a C that does not depend on M
    // (Model::Create compiles batch 1 first, which a C of M rows would not broadcast to).
    c.dynamic_batch = !c.trans_a && c.bias != BiasForm::kColumn && c.bias != BiasForm::kFull &&
                      Uniform(rng, 0, 1) != 0;

    const RefTensor a = RandomTensor(rng, c.trans_a ? Dims{c.k, c.m} : Dims{c.m, c.k});
    const RefTensor b = RandomTensor(rng, c.trans_b ? Dims{c.n, c.k} : Dims{c.k, c.n});
    Dims c_dims;
    switch (c.bias) {
      case BiasForm::kNone:
      case BiasForm::kScalar:
        break;
      case BiasForm::kOne:
        c_dims = {1};
        break;
      case BiasForm::kRow:
        c_dims = {c.n};
        break;
      case BiasForm::kRow2d:
        c_dims = {1, c.n};
        break;
      case BiasForm::kColumn:
        c_dims = {c.m, 1};
        break;
      case BiasForm::kFull:
        c_dims = {c.m, c.n};
        break;
    }
    const RefTensor bias = RandomTensor(rng, c_dims);
    const RefTensor expected = reference::Gemm(a, b, c.bias == BiasForm::kNone ? nullptr : &bias,
                                               c.alpha, c.beta, c.trans_a, c.trans_b);
    Graph graph;
    graph.name = "gemm_sweep";
    Dims a_dims = a.dims;
    if (c.dynamic_batch) a_dims[0] = -1;
    graph.inputs = {{"a", DataType::kFloat32, a_dims}};
    graph.outputs = {{"y", DataType::kFloat32, {}}};
    graph.initializers["b"] = ToTensor(b);
    std::vector<std::string> inputs = {"a", "b"};
    if (c.bias != BiasForm::kNone) {
      graph.initializers["c"] = ToTensor(bias);
      inputs.push_back("c");
    }
    graph.nodes = {MakeNode("gemm", "Gemm", inputs, {"y"},
                            {{"alpha", c.alpha},
                             {"beta", c.beta},
                             {"transA", int64_t{c.trans_a}},
                             {"transB", int64_t{c.trans_b}}})};
    auto outputs = CreateAndRun(std::move(graph), a.dims[0], {a}, &tally);
    ::testing::AssertionResult result = outputs.ok()
                                            ? Near((*outputs)[0], expected)
                                            : ::testing::AssertionFailure() << outputs.status();
    if (!result) ++failures;
    EXPECT_TRUE(result) << "case " << i << ": " << c.ToString();
  }
  tally.Print("Gemm sweep");
  EXPECT_EQ(failures, 0);
}

TEST(ReluSweep, MatchesReference) {
  std::mt19937 rng(5);
  const std::vector<Dims> shapes = {{1, 1}, {3, 17}, {2, 5, 7, 9}, {1, 40, 1, 1}, {3, 16, 8, 8}};
  for (const Dims& dims : shapes) {
    const RefTensor x = RandomTensor(rng, dims);
    Graph graph;
    graph.name = "relu";
    graph.inputs = {{"x", DataType::kFloat32, dims}};
    graph.outputs = {{"y", DataType::kFloat32, {}}};
    graph.nodes = {MakeNode("relu", "Relu", {"x"}, {"y"})};
    auto outputs = CreateAndRun(std::move(graph), dims[0], {x});
    ASSERT_TRUE(outputs.ok()) << DimsString(dims) << ": " << outputs.status();
    EXPECT_TRUE(Near((*outputs)[0], reference::Relu(x))) << "Relu x=" << DimsString(dims);
  }
}

// ---------------------------------------------------------------------------------------------
// Passes

ConvParams Padded3x3() {
  ConvParams p;
  p.pads = {1, 1, 1, 1};
  return p;
}

TEST(Passes, ConvBatchNormIsFoldedIntoTheConv) {
  std::mt19937 rng(11);
  const int64_t n = 2, c = 6, m = 8, h = 9, w = 9;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  const RefTensor weights = RandomTensor(rng, {m, c, 3, 3});
  const std::vector<float> bias = RandomVector(rng, m);
  const std::vector<float> scale = RandomVector(rng, m, 0.5f, 2.f), shift = RandomVector(rng, m),
                           mean = RandomVector(rng, m), var = RandomVector(rng, m, 0.1f, 3.f);
  const float epsilon = 1e-3f;
  const RefTensor expected = reference::BatchNorm(reference::Conv2d(x, weights, bias, Padded3x3()),
                                                  scale, shift, mean, var, epsilon);

  Graph graph;
  graph.name = "conv_bn";
  graph.inputs = {{"x", DataType::kFloat32, {-1, c, h, w}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers = {{"w", ToTensor(weights)},       {"b", VectorTensor(bias)},
                        {"scale", VectorTensor(scale)}, {"shift", VectorTensor(shift)},
                        {"mean", VectorTensor(mean)},   {"var", VectorTensor(var)}};
  graph.nodes = {ConvNode("conv", "x", "w", "b", "t", 3, 3, Padded3x3()),
                 MakeNode("bn", "BatchNormalization", {"t", "scale", "shift", "mean", "var"}, {"y"},
                          {{"epsilon", epsilon}})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  for (const Node& node : (*model)->graph().nodes) {
    EXPECT_NE(node.op_type, "BatchNormalization") << "BatchNormalization was not folded";
  }
  auto plan = (*model)->GetPlan(n);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const StepInfo* step = StepCovering(**plan, "conv");
  ASSERT_NE(step, nullptr) << StepsToString(**plan);
  EXPECT_EQ(step->kind, "Conv");
  EXPECT_THAT(step->source_nodes, ElementsAre("conv", "bn")) << StepsToString(**plan);
  auto outputs = RunPlan(**plan, {x});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_TRUE(Near((*outputs)[0], expected));
}

TEST(Passes, ConvReluIsFusedAsPostOp) {
  std::mt19937 rng(12);
  const int64_t n = 1, c = 4, m = 16, h = 10, w = 10;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  const RefTensor weights = RandomTensor(rng, {m, c, 3, 3});
  const std::vector<float> bias = RandomVector(rng, m);
  const RefTensor expected = reference::Relu(reference::Conv2d(x, weights, bias, Padded3x3()));

  Graph graph;
  graph.name = "conv_relu";
  graph.inputs = {{"x", DataType::kFloat32, {n, c, h, w}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers = {{"w", ToTensor(weights)}, {"b", VectorTensor(bias)}};
  graph.nodes = {ConvNode("conv", "x", "w", "b", "t", 3, 3, Padded3x3()),
                 MakeNode("relu", "Relu", {"t"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(n);
  ASSERT_TRUE(plan.ok()) << plan.status();
  bool fused = false;
  for (const StepInfo& s : (*plan)->steps()) {
    if (Contains(s.post_ops, "relu") && Contains(s.source_nodes, "conv") &&
        Contains(s.source_nodes, "relu")) {
      fused = true;
    }
    EXPECT_NE(s.kind, "Relu") << "a separate Relu step remains\n" << StepsToString(**plan);
  }
  EXPECT_TRUE(fused) << StepsToString(**plan);
  auto outputs = RunPlan(**plan, {x});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_TRUE(Near((*outputs)[0], expected));
}

// x -> conv0+relu -> t; conv1(t) -> u; Add(u, t) -> v; Relu(v) -> y. The skip t is also
// conv1's own source: the sum post-op must not accumulate in place into t's buffer while conv1
// still reads it.
TEST(Passes, ConvResidualAddReluBecomesSumPostOp) {
  std::mt19937 rng(13);
  const int64_t n = 2, c = 8, h = 7, w = 7;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  const RefTensor w0 = RandomTensor(rng, {c, c, 3, 3}), w1 = RandomTensor(rng, {c, c, 3, 3});
  const std::vector<float> b0 = RandomVector(rng, c), b1 = RandomVector(rng, c);
  const RefTensor t = reference::Relu(reference::Conv2d(x, w0, b0, Padded3x3()));
  const RefTensor expected =
      reference::Relu(reference::Add(reference::Conv2d(t, w1, b1, Padded3x3()), t));

  Graph graph;
  graph.name = "residual";
  graph.inputs = {{"x", DataType::kFloat32, {-1, c, h, w}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers = {{"w0", ToTensor(w0)},
                        {"b0", VectorTensor(b0)},
                        {"w1", ToTensor(w1)},
                        {"b1", VectorTensor(b1)}};
  graph.nodes = {ConvNode("conv0", "x", "w0", "b0", "t0", 3, 3, Padded3x3()),
                 MakeNode("relu0", "Relu", {"t0"}, {"t"}),
                 ConvNode("conv1", "t", "w1", "b1", "u", 3, 3, Padded3x3()),
                 MakeNode("add", "Add", {"u", "t"}, {"v"}),
                 MakeNode("relu1", "Relu", {"v"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(n);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const StepInfo* step = StepCovering(**plan, "add");
  ASSERT_NE(step, nullptr) << StepsToString(**plan);
  EXPECT_EQ(step->kind, "Conv") << StepsToString(**plan);
  EXPECT_THAT(step->post_ops, ElementsAre("sum", "relu")) << StepsToString(**plan);
  EXPECT_THAT(step->source_nodes, ElementsAre("conv1", "add", "relu1")) << StepsToString(**plan);
  auto outputs = RunPlan(**plan, {x});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_TRUE(Near((*outputs)[0], expected)) << StepsToString(**plan);
}

TEST(Passes, ConvClipIsFusedAndClampsToRelu6) {
  std::mt19937 rng(14);
  const int64_t n = 2, c = 5, m = 12, h = 8, w = 8;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  // Large weights so that many outputs lie above 6 and below 0.
  const RefTensor weights = RandomTensor(rng, {m, c, 3, 3}, -3.f, 3.f);
  const std::vector<float> bias = RandomVector(rng, m);
  const RefTensor conv = reference::Conv2d(x, weights, bias, Padded3x3());
  const RefTensor expected = reference::Clip(conv, 0.f, 6.f);
  int64_t above = 0;
  for (float v : conv.data) above += v > 6.f;
  ASSERT_GT(above, 0) << "the test data must exercise the upper bound";

  Graph graph;
  graph.name = "conv_clip";
  graph.inputs = {{"x", DataType::kFloat32, {n, c, h, w}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers = {{"w", ToTensor(weights)},
                        {"b", VectorTensor(bias)},
                        {"lo", ScalarTensor(0.f)},
                        {"hi", ScalarTensor(6.f)}};
  graph.nodes = {ConvNode("conv", "x", "w", "b", "t", 3, 3, Padded3x3()),
                 MakeNode("clip", "Clip", {"t", "lo", "hi"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(n);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const StepInfo* step = StepCovering(**plan, "clip");
  ASSERT_NE(step, nullptr) << StepsToString(**plan);
  EXPECT_EQ(step->kind, "Conv") << StepsToString(**plan);
  EXPECT_THAT(step->post_ops, ElementsAre("clip")) << StepsToString(**plan);
  auto outputs = RunPlan(**plan, {x});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_TRUE(Near((*outputs)[0], expected));
}

// Conv+Relu -> Flatten -> Gemm(transB) -> Relu: the blocked conv output must be flattened in
// NCHW order, and the Gemm's Relu fused.
TEST(Passes, FlattenGemmAfterConv) {
  std::mt19937 rng(15);
  const int64_t n = 3, c = 3, m = 16, h = 6, w = 5, classes = 10;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  const RefTensor weights = RandomTensor(rng, {m, c, 3, 3});
  const std::vector<float> bias = RandomVector(rng, m);
  const RefTensor fc = RandomTensor(rng, {classes, m * h * w});
  const RefTensor fc_bias = RandomTensor(rng, {classes});
  RefTensor features = reference::Relu(reference::Conv2d(x, weights, bias, Padded3x3()));
  features.dims = {n, m * h * w};
  const RefTensor expected =
      reference::Relu(reference::Gemm(features, fc, &fc_bias, 1.f, 1.f, false, true));

  Graph graph;
  graph.name = "flatten_gemm";
  graph.inputs = {{"x", DataType::kFloat32, {-1, c, h, w}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers = {{"w", ToTensor(weights)},
                        {"b", VectorTensor(bias)},
                        {"fc", ToTensor(fc)},
                        {"fc_bias", ToTensor(fc_bias)}};
  graph.nodes = {ConvNode("conv", "x", "w", "b", "t", 3, 3, Padded3x3()),
                 MakeNode("relu", "Relu", {"t"}, {"r"}),
                 MakeNode("flatten", "Flatten", {"r"}, {"f"}, {{"axis", int64_t{1}}}),
                 MakeNode("gemm", "Gemm", {"f", "fc", "fc_bias"}, {"g"}, {{"transB", int64_t{1}}}),
                 MakeNode("relu_out", "Relu", {"g"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(n);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const StepInfo* gemm = StepCovering(**plan, "gemm");
  ASSERT_NE(gemm, nullptr) << StepsToString(**plan);
  EXPECT_THAT(gemm->source_nodes, ElementsAre("gemm", "relu_out")) << StepsToString(**plan);
  EXPECT_THAT(gemm->post_ops, ElementsAre("relu")) << StepsToString(**plan);
  auto outputs = RunPlan(**plan, {x});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_TRUE(Near((*outputs)[0], expected));
}

// y = Relu(conv(x) + x): the sum post-op must not accumulate into the caller's input buffer.
TEST(Passes, ResidualSkipFromModelInputIsNotOverwritten) {
  std::mt19937 rng(16);
  const int64_t n = 2, c = 16, h = 6, w = 6;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  const RefTensor weights = RandomTensor(rng, {c, c, 3, 3});
  const std::vector<float> bias = RandomVector(rng, c);
  const RefTensor expected =
      reference::Relu(reference::Add(reference::Conv2d(x, weights, bias, Padded3x3()), x));

  Graph graph;
  graph.name = "input_skip";
  graph.inputs = {{"x", DataType::kFloat32, {-1, c, h, w}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.initializers = {{"w", ToTensor(weights)}, {"b", VectorTensor(bias)}};
  graph.nodes = {ConvNode("conv", "x", "w", "b", "u", 3, 3, Padded3x3()),
                 MakeNode("add", "Add", {"u", "x"}, {"v"}), MakeNode("relu", "Relu", {"v"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(n);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::unique_ptr<Workspace> workspace = (*plan)->CreateWorkspace();
  RefTensor input = x;
  auto first = RunPlan(**plan, *workspace, {input});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(input.data, x.data) << "Run modified the caller's input buffer\n"
                                << StepsToString(**plan);
  auto second = RunPlan(**plan, *workspace, {input});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(Near((*first)[0], expected)) << "first run";
  EXPECT_TRUE(Near((*second)[0], expected)) << "second run";
  EXPECT_EQ((*first)[0].data, (*second)[0].data) << "two runs on the same input differ";
}

// The skip value t is read again after the Add (by conv2): a sum post-op in place on t's
// buffer would corrupt conv2's input.
TEST(Passes, ResidualSkipReadAfterTheAddIsNotOverwritten) {
  std::mt19937 rng(17);
  const int64_t n = 1, c = 8, h = 5, w = 5;
  const RefTensor x = RandomTensor(rng, {n, c, h, w});
  const RefTensor w0 = RandomTensor(rng, {c, c, 3, 3}), w1 = RandomTensor(rng, {c, c, 3, 3}),
                  w2 = RandomTensor(rng, {c, c, 1, 1});
  const std::vector<float> b0 = RandomVector(rng, c), b1 = RandomVector(rng, c),
                           b2 = RandomVector(rng, c);
  const RefTensor t = reference::Relu(reference::Conv2d(x, w0, b0, Padded3x3()));
  const RefTensor y1 = reference::Add(reference::Conv2d(t, w1, b1, Padded3x3()), t);
  const RefTensor y2 = reference::Conv2d(t, w2, b2, ConvParams{});

  Graph graph;
  graph.name = "skip_read_later";
  graph.inputs = {{"x", DataType::kFloat32, {n, c, h, w}}};
  graph.outputs = {{"y1", DataType::kFloat32, {}}, {"y2", DataType::kFloat32, {}}};
  graph.initializers = {{"w0", ToTensor(w0)}, {"b0", VectorTensor(b0)},
                        {"w1", ToTensor(w1)}, {"b1", VectorTensor(b1)},
                        {"w2", ToTensor(w2)}, {"b2", VectorTensor(b2)}};
  graph.nodes = {ConvNode("conv0", "x", "w0", "b0", "t0", 3, 3, Padded3x3()),
                 MakeNode("relu0", "Relu", {"t0"}, {"t"}),
                 ConvNode("conv1", "t", "w1", "b1", "u", 3, 3, Padded3x3()),
                 MakeNode("add", "Add", {"u", "t"}, {"y1"}),
                 ConvNode("conv2", "t", "w2", "b2", "y2", 1, 1, ConvParams{})};
  auto outputs = CreateAndRun(std::move(graph), n, {x});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_TRUE(Near((*outputs)[0], y1)) << "y1 (conv1 + skip)";
  EXPECT_TRUE(Near((*outputs)[1], y2)) << "y2 (conv2 of the skip, read after the Add)";
}

// ---------------------------------------------------------------------------------------------
// A small network: dynamic batch, concurrency.
//
// x[N,3,12,12] -> conv(3->8, 3x3, pad 1)+Relu -> MaxPool 2x2/2 -> conv(8->16, 3x3, pad 1)+BN
// -> Add(., conv(8->16, 1x1)) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(16->10)

struct SmallNet {
  RefTensor w0, w1, w2, fc;
  std::vector<float> b0, b1, b2, fc_bias, scale, shift, mean, var;

  explicit SmallNet(std::mt19937& rng)
      : w0(RandomTensor(rng, {8, 3, 3, 3})),
        w1(RandomTensor(rng, {16, 8, 3, 3})),
        w2(RandomTensor(rng, {16, 8, 1, 1})),
        fc(RandomTensor(rng, {10, 16})),
        b0(RandomVector(rng, 8)),
        b1(RandomVector(rng, 16)),
        b2(RandomVector(rng, 16)),
        fc_bias(RandomVector(rng, 10)),
        scale(RandomVector(rng, 16, 0.5f, 2.f)),
        shift(RandomVector(rng, 16)),
        mean(RandomVector(rng, 16)),
        var(RandomVector(rng, 16, 0.1f, 3.f)) {}

  Graph MakeGraph() const {
    Graph graph;
    graph.name = "small_net";
    graph.inputs = {{"x", DataType::kFloat32, {-1, 3, 12, 12}}};
    graph.outputs = {{"logits", DataType::kFloat32, {-1, 10}}};
    graph.initializers = {{"w0", ToTensor(w0)},           {"b0", VectorTensor(b0)},
                          {"w1", ToTensor(w1)},           {"b1", VectorTensor(b1)},
                          {"w2", ToTensor(w2)},           {"b2", VectorTensor(b2)},
                          {"fc", ToTensor(fc)},           {"fc_bias", VectorTensor(fc_bias)},
                          {"scale", VectorTensor(scale)}, {"shift", VectorTensor(shift)},
                          {"mean", VectorTensor(mean)},   {"var", VectorTensor(var)}};
    graph.nodes = {
        ConvNode("conv0", "x", "w0", "b0", "c0", 3, 3, Padded3x3()),
        MakeNode("relu0", "Relu", {"c0"}, {"r0"}),
        MakeNode("pool", "MaxPool", {"r0"}, {"p"},
                 {{"kernel_shape", std::vector<int64_t>{2, 2}},
                  {"strides", std::vector<int64_t>{2, 2}}}),
        ConvNode("conv1", "p", "w1", "b1", "c1", 3, 3, Padded3x3()),
        MakeNode("bn", "BatchNormalization", {"c1", "scale", "shift", "mean", "var"}, {"n1"}),
        ConvNode("conv2", "p", "w2", "b2", "c2", 1, 1, ConvParams{}),
        MakeNode("add", "Add", {"n1", "c2"}, {"s"}),
        MakeNode("relu1", "Relu", {"s"}, {"r1"}),
        MakeNode("gap", "GlobalAveragePool", {"r1"}, {"g"}),
        MakeNode("flatten", "Flatten", {"g"}, {"f"}),
        MakeNode("fc", "Gemm", {"f", "fc", "fc_bias"}, {"logits"}, {{"transB", int64_t{1}}})};
    return graph;
  }

  RefTensor Reference(const RefTensor& x) const {
    PoolParams pool;
    pool.kernel = {2, 2};
    pool.strides = {2, 2};
    const RefTensor p =
        reference::Pool2d(reference::Relu(reference::Conv2d(x, w0, b0, Padded3x3())), pool);
    const RefTensor n1 = reference::BatchNorm(reference::Conv2d(p, w1, b1, Padded3x3()), scale,
                                              shift, mean, var, 1e-5f);
    const RefTensor r1 = reference::Relu(reference::Add(n1, reference::Conv2d(p, w2, b2, {})));
    RefTensor g = reference::GlobalPool2d(r1, PoolKind::kAverage);
    g.dims = {x.dims[0], 16};
    const RefTensor bias({10}, fc_bias);
    return reference::Gemm(g, fc, &bias, 1.f, 1.f, false, true);
  }
};

TEST(SmallNetwork, BatchSizes1_3_8FromOneModel) {
  std::mt19937 rng(21);
  const SmallNet net(rng);
  auto model = Model::Create(net.MakeGraph(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  for (int64_t batch : {1, 3, 8}) {
    auto plan = (*model)->GetPlan(batch);
    ASSERT_TRUE(plan.ok()) << "batch " << batch << ": " << plan.status();
    EXPECT_EQ((*plan)->batch_size(), batch);
    ASSERT_EQ((*plan)->output_infos().size(), 1u);
    EXPECT_EQ((*plan)->output_infos()[0].dims, (Dims{batch, 10}));
    const RefTensor x = RandomTensor(rng, {batch, 3, 12, 12});
    auto outputs = RunPlan(**plan, {x});
    ASSERT_TRUE(outputs.ok()) << "batch " << batch << ": " << outputs.status();
    EXPECT_TRUE(Near((*outputs)[0], net.Reference(x))) << "batch " << batch;
  }
  // Plans are cached per batch size.
  auto again = (*model)->GetPlan(3);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), (*model)->GetPlan(3)->get());
}

// The plans of one model share their reordered constants. Exact: compiling the same plan again
// adds nothing to the cache; and eight batch sizes keep fewer than eight copies (biases are
// plain and always shared; which weights layouts oneDNN picks per batch size depends on the
// CPU), while every plan still computes what the reference computes.
TEST(SmallNetwork, PlansOfEightBatchSizesShareTheirWeights) {
  std::mt19937 rng(23);
  const SmallNet net(rng);
  auto model = Model::Create(net.MakeGraph(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  const auto graph = std::make_shared<const Graph>((*model)->graph());
  const int threads = omp_get_max_threads();  // what the primitives are created for
  ConstantCache cache;
  ASSERT_TRUE(CompilePlan(graph, {}, 1, threads, &cache).ok());
  const size_t one_plan_bytes = cache.bytes(), one_plan_constants = cache.size();
  // Every constant at least once: conv weights and biases (BatchNorm folded into conv1), the
  // Gemm's weights and bias, 4 bytes each.
  constexpr size_t kConstantFloats =
      8 * 3 * 3 * 3 + 8 + 16 * 8 * 3 * 3 + 16 + 16 * 8 + 16 + 10 * 16 + 10;
  EXPECT_GE(one_plan_bytes, kConstantFloats * sizeof(float));
  ASSERT_TRUE(CompilePlan(graph, {}, 1, threads, &cache).ok());
  EXPECT_EQ(cache.bytes(), one_plan_bytes);
  EXPECT_EQ(cache.size(), one_plan_constants);
  for (int64_t batch = 1; batch <= 8; ++batch) {
    auto plan = CompilePlan(graph, {}, batch, threads, &cache);
    ASSERT_TRUE(plan.ok()) << "batch " << batch << ": " << plan.status();
    const RefTensor x = RandomTensor(rng, {batch, 3, 12, 12});
    auto outputs = RunPlan(**plan, {x});
    ASSERT_TRUE(outputs.ok()) << "batch " << batch << ": " << outputs.status();
    EXPECT_TRUE(Near((*outputs)[0], net.Reference(x))) << "batch " << batch;
  }
  EXPECT_LT(cache.bytes(), 8 * one_plan_bytes);
}

// Workspaces of eight batch sizes on one WorkspaceMemory (what a scheduler worker does), run in
// turn twice so that every plan finds the arena last written by another: each result matches the
// reference, and the memory holds what the largest plans need.
TEST(SmallNetwork, PlansOfEightBatchSizesRunInTurnOnOneWorkspaceMemory) {
  std::mt19937 rng(24);
  const SmallNet net(rng);
  auto model = Model::Create(net.MakeGraph(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::unique_ptr<WorkspaceMemory> memory = CreateWorkspaceMemory();
  std::vector<std::shared_ptr<const Plan>> plans;
  std::vector<std::unique_ptr<Workspace>> workspaces;
  size_t largest = 0;
  for (int64_t batch = 1; batch <= 8; ++batch) {
    auto plan = (*model)->GetPlan(batch, 1);
    ASSERT_TRUE(plan.ok()) << "batch " << batch << ": " << plan.status();
    plans.push_back(*plan);
    workspaces.push_back((*plan)->CreateWorkspace(*memory));
    largest = std::max(largest, (*plan)->CreateWorkspace()->byte_size());
    EXPECT_EQ(workspaces.back()->byte_size(), 0u);
  }
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < plans.size(); ++i) {
      const int64_t batch = plans[i]->batch_size();
      const RefTensor x = RandomTensor(rng, {batch, 3, 12, 12});
      auto outputs = RunPlan(*plans[i], *workspaces[i], {x});
      ASSERT_TRUE(outputs.ok()) << "batch " << batch << ": " << outputs.status();
      EXPECT_TRUE(Near((*outputs)[0], net.Reference(x))) << "round " << round << " batch " << batch;
    }
  }
  // The largest arena plus the largest scratchpad: at least the largest workspace, at most two.
  EXPECT_GE(memory->byte_size(), largest);
  EXPECT_LE(memory->byte_size(), 2 * largest);
}

// One WorkspaceMemory under plans whose scratchpads and arenas grow (random convolutions, run in
// order of scratchpad size, then again from the smallest): every growth moves the buffers and
// every workspace rebinds to them, and each result still matches the reference.
TEST(WorkspaceMemory, GrowsUnderLargerScratchpadsAndEveryPlanStillComputesRight) {
  std::mt19937 rng(20261207);
  struct Case {
    ConvCase conv;
    ConvProblem problem;
    std::unique_ptr<Model> model;
    std::shared_ptr<const Plan> plan;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 40; ++i) {
    Case c;
    c.conv = DrawConvCase(rng);
    c.conv.dynamic_batch = false;
    c.problem = MakeConvProblem(c.conv, rng);
    auto model = Model::Create(c.problem.graph, {});
    ASSERT_TRUE(model.ok()) << c.conv.ToString() << ": " << model.status();
    c.model = *std::move(model);
    auto plan = c.model->GetPlan(c.conv.batch, 1);
    ASSERT_TRUE(plan.ok()) << c.conv.ToString() << ": " << plan.status();
    c.plan = *plan;
    cases.push_back(std::move(c));
  }
  std::sort(cases.begin(), cases.end(), [](const Case& a, const Case& b) {
    return a.plan->scratchpad_bytes() < b.plan->scratchpad_bytes();
  });
  std::set<size_t> scratchpads;
  for (const Case& c : cases) {
    if (c.plan->scratchpad_bytes() > 0) scratchpads.insert(c.plan->scratchpad_bytes());
  }
  // Otherwise the scratchpad never grows here and the test checks nothing new.
  ASSERT_GE(scratchpads.size(), 3u);

  std::unique_ptr<WorkspaceMemory> memory = CreateWorkspaceMemory();
  std::vector<std::unique_ptr<Workspace>> workspaces;
  for (const Case& c : cases) workspaces.push_back(c.plan->CreateWorkspace(*memory));
  size_t largest_arena = 0;
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      largest_arena = std::max(largest_arena, c.plan->arena_bytes());
      auto outputs = RunPlan(*c.plan, *workspaces[i], {c.problem.x});
      ASSERT_TRUE(outputs.ok()) << c.conv.ToString() << ": " << outputs.status();
      EXPECT_TRUE(Near((*outputs)[0], c.problem.expected))
          << "round " << round << ", scratchpad " << c.plan->scratchpad_bytes()
          << " bytes: " << c.conv.ToString();
    }
  }
  EXPECT_GE(memory->byte_size(), largest_arena + *scratchpads.rbegin());
}

// ConstantCache::Share hands out one memory per (layout, bytes): equal bytes in the same layout
// are shared, different bytes or another layout are not.
TEST(ConstantCache, SharesOnlyEqualBytesInTheSameLayout) {
  using dnnl::memory;
  const memory::desc ab({2, 3}, memory::data_type::f32, memory::format_tag::ab);
  const memory::desc ba({2, 3}, memory::data_type::f32, memory::format_tag::ba);
  const auto make = [](const memory::desc& desc, float first) {
    memory m(desc, CpuEngine());
    float* data = static_cast<float*>(m.get_data_handle());
    for (int i = 0; i < 6; ++i) data[i] = first + static_cast<float>(i);
    return m;
  };
  ConstantCache cache;
  const memory a = cache.Share(make(ab, 1.f));
  EXPECT_EQ(cache.Share(make(ab, 1.f)).get_data_handle(), a.get_data_handle());
  const memory other_bytes = make(ab, 2.f);
  EXPECT_EQ(cache.Share(other_bytes).get_data_handle(), other_bytes.get_data_handle());
  const memory other_layout = make(ba, 1.f);
  EXPECT_EQ(cache.Share(other_layout).get_data_handle(), other_layout.get_data_handle());
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.bytes(), 3 * 6 * sizeof(float));
}

TEST(SmallNetwork, OnePlanFromFourThreadsWithSeparateWorkspaces) {
  std::mt19937 rng(22);
  const SmallNet net(rng);
  auto model = Model::Create(net.MakeGraph(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t batch = 2;
  auto plan_or = (*model)->GetPlan(batch);
  ASSERT_TRUE(plan_or.ok()) << plan_or.status();
  const std::shared_ptr<const Plan> plan = *plan_or;

  constexpr int kThreads = 4, kIterations = 25;
  std::vector<RefTensor> inputs, serial;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(RandomTensor(rng, {batch, 3, 12, 12}));
    auto outputs = RunPlan(*plan, {inputs.back()});
    ASSERT_TRUE(outputs.ok()) << outputs.status();
    ASSERT_TRUE(Near((*outputs)[0], net.Reference(inputs.back()))) << "serial run " << t;
    serial.push_back((*outputs)[0]);
  }
  // Each thread alternates between two inputs so that a shared buffer would show up as a
  // result belonging to another input.
  std::vector<int> mismatches(kThreads, 0), errors(kThreads, 0);
  std::vector<std::string> first_error(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<Workspace> workspace = plan->CreateWorkspace();
      for (int i = 0; i < kIterations; ++i) {
        const int which = (t + i) % kThreads;
        auto outputs = RunPlan(*plan, *workspace, {inputs[which]});
        if (!outputs.ok()) {
          if (errors[t]++ == 0) first_error[t] = std::string(outputs.status().message());
          continue;
        }
        if ((*outputs)[0].data != serial[which].data) ++mismatches[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], 0) << "thread " << t << ": " << first_error[t];
    EXPECT_EQ(mismatches[t], 0) << "thread " << t << ": " << mismatches[t] << " of " << kIterations
                                << " runs differ from the serial result";
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(Errors, UnsupportedOpTypeNamesNodeAndOp) {
  Graph graph;
  graph.name = "unsupported";
  graph.inputs = {{"x", DataType::kFloat32, {1, 4}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.nodes = {MakeNode("relu", "Relu", {"x"}, {"r"}),
                 MakeNode("mystery_node", "FancyOp", {"r"}, {"y"})};
  ModelOptions options;
  options.model_name = "unsupported_model";
  auto model = Model::Create(std::move(graph), options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("mystery_node"));
  EXPECT_THAT(model.status().message(), HasSubstr("FancyOp"));
  EXPECT_THAT(model.status().message(), HasSubstr("unsupported_model"));
}

TEST(Errors, WrongInputDimsNameInputExpectedAndActual) {
  std::mt19937 rng(31);
  Graph graph;
  graph.name = "dims";
  graph.inputs = {{"image", DataType::kFloat32, {-1, 3, 8, 8}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.nodes = {MakeNode("relu", "Relu", {"image"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const RefTensor wrong = RandomTensor(rng, {2, 3, 8, 9});
  auto outputs = RunPlan(**plan, {wrong});
  ASSERT_FALSE(outputs.ok());
  EXPECT_EQ(outputs.status().code(), absl::StatusCode::kInvalidArgument) << outputs.status();
  EXPECT_THAT(outputs.status().message(), HasSubstr("image"));
  EXPECT_THAT(outputs.status().message(), HasSubstr("[2,3,8,8]"));
  EXPECT_THAT(outputs.status().message(), HasSubstr("[2,3,8,9]"));

  // A batch size other than the plan's is wrong dims too.
  const RefTensor other_batch = RandomTensor(rng, {3, 3, 8, 8});
  outputs = RunPlan(**plan, {other_batch});
  ASSERT_FALSE(outputs.ok());
  EXPECT_EQ(outputs.status().code(), absl::StatusCode::kInvalidArgument) << outputs.status();
  EXPECT_THAT(outputs.status().message(), HasSubstr("[3,3,8,8]"));
}

TEST(Errors, BatchSizeBelowOneIsInvalid) {
  Graph graph;
  graph.name = "batch";
  graph.inputs = {{"x", DataType::kFloat32, {-1, 4}}};
  graph.outputs = {{"y", DataType::kFloat32, {}}};
  graph.nodes = {MakeNode("relu", "Relu", {"x"}, {"y"})};
  auto model = Model::Create(std::move(graph), {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto plan = (*model)->GetPlan(0);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
}

}  // namespace
}  // namespace convserve::engine
