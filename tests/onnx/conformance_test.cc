// ONNX conformance runner: imports each test of the ONNX backend test data whose ops the engine
// implements, runs it through the engine's public API and compares every output with the
// reference outputs shipped with the test.
//
//   onnx_conformance_test [--filter SUBSTRING] [--verbose] [--data DIR]
//
// A test is skipped when the engine does not support one of its ops (engine::IsSupportedOpType),
// when a convolution or pooling
// works on a tensor of rank other than 4, or when the importer, Model::Create or GetPlan says
// UNIMPLEMENTED (the engine is the authority on what it supports). Anything else that goes
// wrong — a load error, a run error, a wrong shape or value — is a failure. Outputs match when
// |got - expected| <= 1e-5 + 1e-3 * |expected| (bf16: rtol 1/128), NaN equal to NaN; integer
// and bool outputs must be equal. The batch size is the first input's first dimension when a
// model input has a dynamic dimension, else 1 (a fixed-shape model has one plan).
//
// Output: one line per failing test, the skip reasons with their counts, the must-attempt tests
// that were skipped, and last the line "N passed, M failed, K skipped". Exits 1 when M > 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "onnx/onnx_pb.h"
#include "server/engine/engine.h"
#include "server/onnx/importer.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;
using engine::DataType;
using engine::Tensor;
using engine::TensorView;

constexpr const char* kDefaultDataRoot = "/usr/share/libonnx-testdata/data";
constexpr const char* kSuites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};

// Tests of these families exercise the core of a convnet; skipping one of them deserves a
// warning.
constexpr const char* kMustAttemptPrefixes[] = {
    "test_conv_",           "test_basic_conv_", "test_Conv2d", "test_maxpool_2d_",
    "test_averagepool_2d_", "test_batchnorm_",  "test_gemm_",  "test_softmax_",
    "test_concat_",         "test_add_bcast"};

// Convolutions and pooling run on 4-D (NCHW) tensors only.
const std::set<std::string>& SpatialOps() {
  static const auto* const kOps = new std::set<std::string>{"Conv", "MaxPool", "AveragePool",
                                                            "GlobalAveragePool", "GlobalMaxPool"};
  return *kOps;
}

constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-5;
// bf16 keeps 8 significant bits: allow one unit in the last place (references truncate, the
// engine may round to nearest).
constexpr double kBf16Rtol = 1.0 / 128;

// The conformance data stores bfloat16 tensors as UINT16 bit patterns (numpy has no bf16);
// read them as the BF16 the model declares.
void RelabelBf16Bits(Tensor& data, DataType declared) {
  if (declared == DataType::kBFloat16 && data.dtype == DataType::kUint16) {
    data.dtype = DataType::kBFloat16;
  }
}

struct Options {
  std::string filter;
  bool verbose = false;
  fs::path data_root = kDefaultDataRoot;
};

enum class Outcome { kPassed, kFailed, kSkipped };

struct Result {
  Outcome outcome = Outcome::kPassed;
  std::string message;  // the skip reason, or the failure line without the test name
};

Result Pass() { return {Outcome::kPassed, ""}; }
Result Fail(std::string message) { return {Outcome::kFailed, std::move(message)}; }
Result Skip(std::string reason) { return {Outcome::kSkipped, std::move(reason)}; }

std::string StatusText(const absl::Status& status) {
  return std::string(absl::StatusCodeToString(status.code())) + ": " +
         std::string(status.message());
}

bool IsFloat(DataType t) {
  return t == DataType::kFloat32 || t == DataType::kFloat64 || t == DataType::kFloat16 ||
         t == DataType::kBFloat16;
}

std::string Describe(DataType dtype, const engine::Dims& dims) {
  return std::string(engine::DataTypeName(dtype)) + engine::DimsToString(dims);
}

std::string FormatDouble(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.9g", v);
  return buffer;
}

// The values of a float tensor as double (fp64 exactly, the others through float).
std::vector<double> FloatValues(const Tensor& t) {
  if (t.dtype == DataType::kFloat64) {
    return std::vector<double>(t.data<double>(), t.data<double>() + t.num_elements());
  }
  const std::vector<float> f = t.AsFloat();
  return std::vector<double>(f.begin(), f.end());
}

// Compares one output with its reference: |got - expected| <= atol + rtol * |expected| for
// floating-point types (NaN equals NaN), exact for the others. Returns the failure or nullopt.
std::optional<std::string> CompareOutput(const std::string& name, const Tensor& got,
                                         Tensor expected) {
  RelabelBf16Bits(expected, got.dtype);
  if (got.dtype != expected.dtype || got.dims != expected.dims) {
    return "output '" + name + "': got " + Describe(got.dtype, got.dims) + ", expected " +
           Describe(expected.dtype, expected.dims);
  }
  int64_t mismatches = 0;
  int64_t first = -1;
  std::string got_text, expected_text;
  if (IsFloat(expected.dtype)) {
    const std::vector<double> a = FloatValues(got);
    const std::vector<double> b = FloatValues(expected);
    const double rtol = expected.dtype == DataType::kBFloat16 ? kBf16Rtol : kRtol;
    for (size_t i = 0; i < b.size(); ++i) {
      const bool equal = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i] ||
                         std::fabs(a[i] - b[i]) <= kAtol + rtol * std::fabs(b[i]);
      if (equal) continue;
      if (mismatches++ == 0) {
        first = static_cast<int64_t>(i);
        got_text = FormatDouble(a[i]);
        expected_text = FormatDouble(b[i]);
      }
    }
  } else {
    const std::vector<int64_t> a = got.AsInt64();
    const std::vector<int64_t> b = expected.AsInt64();
    for (size_t i = 0; i < b.size(); ++i) {
      if (a[i] == b[i]) continue;
      if (mismatches++ == 0) {
        first = static_cast<int64_t>(i);
        got_text = std::to_string(a[i]);
        expected_text = std::to_string(b[i]);
      }
    }
  }
  if (mismatches == 0) return std::nullopt;
  return "output '" + name + "' index " + std::to_string(first) + ": got " + got_text +
         ", expected " + expected_text + " (" + std::to_string(mismatches) + " of " +
         std::to_string(expected.num_elements()) + " elements differ)";
}

// The rank of the tensor a convolution or pooling node works on, as far as the model says.
std::optional<int64_t> SpatialRank(const onnx::NodeProto& node,
                                   const std::map<std::string, int64_t>& ranks) {
  if (node.input_size() > 0) {
    auto it = ranks.find(node.input(0));
    if (it != ranks.end()) return it->second;
  }
  if (node.op_type() == "Conv" && node.input_size() > 1) {
    auto it = ranks.find(node.input(1));  // weights: [C_out, C_in/group, k...]
    if (it != ranks.end()) return it->second;
  }
  for (const auto& a : node.attribute()) {
    if (a.name() == "kernel_shape") return a.ints_size() + 2;
  }
  return std::nullopt;
}

// Checks the ops and ranks of a model before anything runs; returns the skip reason, if any.
std::optional<std::string> PrecheckModel(const onnx::ModelProto& model) {
  const onnx::GraphProto& graph = model.graph();
  std::map<std::string, int64_t> ranks;
  auto add_ranks = [&](const auto& infos) {
    for (const onnx::ValueInfoProto& vi : infos) {
      if (vi.type().has_tensor_type() && vi.type().tensor_type().has_shape()) {
        ranks[vi.name()] = vi.type().tensor_type().shape().dim_size();
      }
    }
  };
  add_ranks(graph.input());
  add_ranks(graph.value_info());
  add_ranks(graph.output());
  for (const auto& t : graph.initializer()) ranks[t.name()] = t.dims_size();

  for (const auto& node : graph.node()) {
    if (!node.domain().empty() && node.domain() != "ai.onnx") {
      return "domain '" + node.domain() + "'";
    }
    // The engine is the authority on its op set; Constant nodes become initializers at import.
    if (node.op_type() != "Constant" && !convserve::engine::IsSupportedOpType(node.op_type())) {
      return "op " + node.op_type() + " not in the supported list";
    }
  }
  for (const auto& node : graph.node()) {
    if (SpatialOps().count(node.op_type()) == 0) continue;
    const std::optional<int64_t> rank = SpatialRank(node, ranks);
    if (rank && *rank != 4) return "rank " + std::to_string(*rank);
  }
  return std::nullopt;
}

std::vector<fs::path> SortedEntries(const fs::path& dir, bool directories) {
  std::vector<fs::path> entries;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory() == directories) entries.push_back(entry.path());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

// Reads prefix_0.pb, prefix_1.pb, ... of a test data set until one is missing.
absl::StatusOr<std::vector<Tensor>> ReadTensors(const fs::path& set_dir,
                                                const std::string& prefix) {
  std::vector<Tensor> tensors;
  for (int i = 0;; ++i) {
    const fs::path path = set_dir / (prefix + "_" + std::to_string(i) + ".pb");
    if (!fs::exists(path)) break;
    auto tensor = onnx_import::ReadTensorProtoFile(path);
    if (!tensor.ok()) return tensor.status();
    tensors.push_back(*std::move(tensor));
  }
  return tensors;
}

// Runs one test data set; returns the failure or skip, or a pass.
Result RunDataSet(const engine::Model& model, const fs::path& set_dir) {
  const std::string set_name = set_dir.filename().string();
  auto inputs = ReadTensors(set_dir, "input");
  if (!inputs.ok()) return Fail(set_name + ": " + StatusText(inputs.status()));
  auto expected = ReadTensors(set_dir, "output");
  if (!expected.ok()) return Fail(set_name + ": " + StatusText(expected.status()));
  if (inputs->size() != model.inputs().size()) {
    return Fail(set_name + ": the data has " + std::to_string(inputs->size()) +
                " inputs, the model " + std::to_string(model.inputs().size()));
  }

  bool dynamic = false;
  for (const auto& info : model.inputs()) {
    dynamic = dynamic || std::count(info.dims.begin(), info.dims.end(), -1) > 0;
  }
  const int64_t batch =
      dynamic && !inputs->empty() && !(*inputs)[0].dims.empty() ? (*inputs)[0].dims[0] : 1;
  auto plan = model.GetPlan(batch);
  if (!plan.ok()) {
    if (plan.status().code() == absl::StatusCode::kUnimplemented) {
      return Skip("engine (compile): " + std::string(plan.status().message()));
    }
    return Fail(set_name + ": GetPlan(" + std::to_string(batch) +
                "): " + StatusText(plan.status()));
  }
  const engine::Plan& p = **plan;

  if (p.input_infos().size() != inputs->size()) {
    return Fail(set_name + ": the plan has " + std::to_string(p.input_infos().size()) +
                " inputs, the data " + std::to_string(inputs->size()));
  }
  std::vector<TensorView> input_views;
  for (size_t i = 0; i < inputs->size(); ++i) {
    Tensor& data = (*inputs)[i];
    const engine::ValueInfo& info = p.input_infos().at(i);
    RelabelBf16Bits(data, info.dtype);
    // A few tests ship data that contradicts the input shape their model declares (e.g. the
    // unused 'like' input of test_castlike_*_expanded): the model cannot take that data.
    const engine::ValueInfo& declared = model.inputs()[i];
    bool contradicts = declared.dims.size() != data.dims.size();
    for (size_t d = 0; !contradicts && d < data.dims.size(); ++d) {
      contradicts = declared.dims[d] >= 0 && declared.dims[d] != data.dims[d];
    }
    if (contradicts) {
      return Skip("test data contradicts the model's declared input shape");
    }
    if (info.dtype != data.dtype || info.dims != data.dims) {
      return Fail(set_name + ": input '" + info.name + "': the plan (batch " +
                  std::to_string(batch) + ") expects " + Describe(info.dtype, info.dims) +
                  ", the data is " + Describe(data.dtype, data.dims));
    }
    input_views.push_back({data.dtype, data.dims, data.bytes.data()});
  }
  if (p.output_infos().size() < expected->size()) {
    return Fail(set_name + ": the plan has " + std::to_string(p.output_infos().size()) +
                " outputs, the reference " + std::to_string(expected->size()));
  }
  std::vector<Tensor> outputs;
  for (const auto& info : p.output_infos()) {
    for (int64_t d : info.dims) {
      if (d < 0) {
        return Fail(set_name + ": output '" + info.name + "' has no concrete dims " +
                    engine::DimsToString(info.dims));
      }
    }
    outputs.emplace_back(info.dtype, info.dims);
  }
  std::vector<TensorView> output_views;
  for (Tensor& t : outputs) output_views.push_back({t.dtype, t.dims, t.bytes.data()});

  auto workspace = p.CreateWorkspace();
  const absl::Status run = p.Run(*workspace, input_views, output_views);
  if (!run.ok()) return Fail(set_name + ": Run: " + StatusText(run));

  for (size_t i = 0; i < expected->size(); ++i) {
    const std::string name = p.output_infos()[i].name;
    if (auto failure = CompareOutput(name, outputs[i], (*expected)[i])) {
      return Fail(set_name + ": " + *failure);
    }
  }
  return Pass();
}

Result RunTest(const fs::path& dir, const std::string& name) {
  const fs::path model_path = dir / "model.onnx";
  onnx::ModelProto proto;
  {
    std::ifstream in(model_path, std::ios::binary);
    if (!in || !proto.ParseFromIstream(&in)) return Fail("cannot parse " + model_path.string());
  }
  if (auto reason = PrecheckModel(proto)) return Skip(*reason);

  auto graph = onnx_import::ImportOnnxModel(proto);
  if (!graph.ok()) {
    if (graph.status().code() == absl::StatusCode::kUnimplemented) {
      return Skip("importer: " + std::string(graph.status().message()));
    }
    return Fail("import: " + StatusText(graph.status()));
  }
  engine::ModelOptions options;
  options.model_name = name;
  auto model = engine::Model::Create(*std::move(graph), options);
  if (!model.ok()) {
    if (model.status().code() == absl::StatusCode::kUnimplemented) {
      return Skip("engine: " + std::string(model.status().message()));
    }
    return Fail("Model::Create: " + StatusText(model.status()));
  }
  const std::vector<fs::path> sets = SortedEntries(dir, /*directories=*/true);
  if (sets.empty()) return Fail("no test_data_set_* directories");
  for (const fs::path& set : sets) {
    Result result = RunDataSet(**model, set);
    if (result.outcome != Outcome::kPassed) return result;
  }
  return Pass();
}

// Skip reasons name the model and node; group them without the "model 'x': " prefix.
std::string GroupingKey(const std::string& reason, const std::string& name) {
  std::string key = reason;
  const std::string prefix = "model '" + name + "': ";
  for (size_t at; (at = key.find(prefix)) != std::string::npos;) key.erase(at, prefix.size());
  return key;
}

// The "_expanded" variants spell an op out in other ops (Softmax as Exp, ReduceSum, Div...):
// they test those ops, not the family's.
bool IsMustAttempt(const std::string& test_name) {
  if (test_name.ends_with("_expanded")) return false;
  for (const char* prefix : kMustAttemptPrefixes) {
    if (test_name.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

int Main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--filter" && i + 1 < argc) {
      options.filter = argv[++i];
    } else if (arg.rfind("--filter=", 0) == 0) {
      options.filter = arg.substr(9);
    } else if (arg == "--verbose" || arg == "-v") {
      options.verbose = true;
    } else if (arg == "--data" && i + 1 < argc) {
      options.data_root = argv[++i];
    } else {
      std::cerr << "usage: " << argv[0] << " [--filter SUBSTRING] [--verbose] [--data DIR]\n";
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (!fs::exists(options.data_root)) {
    std::cerr << "conformance data not found at " << options.data_root
              << " (install libonnx-testdata)\n";
    return 2;
  }

  int passed = 0, failed = 0, skipped = 0;
  std::map<std::string, int> skip_reasons;
  std::vector<std::string> must_attempt_skipped;
  for (const char* suite : kSuites) {
    for (const fs::path& dir : SortedEntries(options.data_root / suite, /*directories=*/true)) {
      const std::string test_name = dir.filename().string();
      const std::string name = std::string(suite) + "/" + test_name;
      if (name.find(options.filter) == std::string::npos) continue;
      if (!fs::exists(dir / "model.onnx")) continue;
      Result result;
      try {
        result = RunTest(dir, name);
      } catch (const std::exception& e) {
        result = Fail(std::string("exception: ") + e.what());
      } catch (...) {
        result = Fail("unknown exception");
      }
      switch (result.outcome) {
        case Outcome::kPassed:
          ++passed;
          if (options.verbose) std::cout << "PASS " << name << "\n";
          break;
        case Outcome::kFailed:
          ++failed;
          std::cout << "FAIL " << name << ": " << result.message << "\n";
          break;
        case Outcome::kSkipped:
          ++skipped;
          ++skip_reasons[GroupingKey(result.message, name)];
          if (IsMustAttempt(test_name))
            must_attempt_skipped.push_back(name + ": " + result.message);
          if (options.verbose) std::cout << "SKIP " << name << ": " << result.message << "\n";
          break;
      }
      std::cout.flush();
    }
  }

  std::vector<std::pair<std::string, int>> reasons(skip_reasons.begin(), skip_reasons.end());
  std::stable_sort(reasons.begin(), reasons.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (!reasons.empty()) std::cout << "\nskip reasons:\n";
  for (const auto& [reason, count] : reasons) {
    std::cout << "  " << count << "  " << reason << "\n";
  }
  if (!must_attempt_skipped.empty()) {
    std::cout << "\nWARNING: " << must_attempt_skipped.size()
              << " must-attempt tests were skipped:\n";
    for (const auto& line : must_attempt_skipped) std::cout << "  " << line << "\n";
  }
  std::cout << "\n" << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  return failed > 0 ? 1 : 0;
}

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) { return convserve::Main(argc, argv); }
