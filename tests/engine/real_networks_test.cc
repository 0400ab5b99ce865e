// Real networks against PyTorch: models/training/export_torchvision.py exports seeded,
// untrained torchvision models (mobilenet_v2, mobilenet_v3_small, resnet18, resnet50) to ONNX
// together with PyTorch's logits for seeded inputs at batch 1 and 4. Each model is imported
// (convserve::onnx_import), run by the engine at both batch sizes from one Model, and its logits
// must satisfy max|engine - pytorch| <= 1e-4 * max|pytorch|.
//
// The export needs /usr/bin/python3 with torch, torchvision and onnx; without them the tests
// fail (never skip) with the exporter's output. The exported files live in a fresh temporary
// directory that is removed at the end.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "server/onnx/importer.h"

#ifndef CONVSERVE_SOURCE_DIR
#error "CONVSERVE_SOURCE_DIR (the repository root) must be defined by the build"
#endif

namespace convserve::engine {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";
const char* const kModels[] = {"mobilenet_v2", "mobilenet_v3_small", "resnet18", "resnet50"};
const int64_t kBatches[] = {1, 4};

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Reads a raw little-endian float32 file that must hold exactly `count` values.
bool ReadFloats(const fs::path& path, int64_t count, std::vector<float>& values,
                std::string& error) {
  std::error_code ec;
  const auto bytes = fs::file_size(path, ec);
  if (ec) {
    error = "cannot stat " + path.string() + ": " + ec.message();
    return false;
  }
  if (bytes != static_cast<uintmax_t>(count) * sizeof(float)) {
    error = path.string() + " has " + std::to_string(bytes) + " bytes, expected " +
            std::to_string(count) + " float32 values";
    return false;
  }
  values.resize(static_cast<size_t>(count));
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(bytes));
  if (!in) {
    error = "cannot read " + path.string();
    return false;
  }
  return true;
}

// Exports all models once for the whole suite.
class RealNetworkTest : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    std::random_device random;
    dir_ = fs::temp_directory_path() / ("convserve_real_networks_" + std::to_string(::getpid()) +
                                        "_" + std::to_string(random()));
    fs::create_directories(dir_);
    if (::access(kPython, X_OK) != 0) {
      export_error_ = std::string(kPython) + " is not installed (or not executable): the " +
                      "real-network tests need python3 with torch, torchvision and onnx";
      return;
    }
    std::string models;
    for (const char* m : kModels) models += std::string(models.empty() ? "" : ",") + m;
    const fs::path script =
        fs::path(CONVSERVE_SOURCE_DIR) / "models/training/export_torchvision.py";
    const fs::path log = dir_ / "export.log";
    const std::string command = std::string(kPython) + " '" + script.string() + "' --out '" +
                                dir_.string() + "' --models " + models + " --batch 1,4 > '" +
                                log.string() + "' 2>&1";
    const auto start = std::chrono::steady_clock::now();
    const int rc = std::system(command.c_str());
    export_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("[ export   ] %s: exit status %d after %.1f s\n", models.c_str(), rc,
                export_seconds_);
    if (rc != 0) {
      export_error_ = "the export failed (exit status " + std::to_string(rc) + "): " + command +
                      "\n--- exporter output ---\n" + ReadText(log) +
                      "--- (the real-network tests need python3 with torch, torchvision and "
                      "onnx) ---";
    }
  }

  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static fs::path dir_;
  static std::string export_error_;
  static double export_seconds_;
};

fs::path RealNetworkTest::dir_;
std::string RealNetworkTest::export_error_;
double RealNetworkTest::export_seconds_ = 0.0;

TEST_P(RealNetworkTest, LogitsMatchPyTorch) {
  ASSERT_TRUE(export_error_.empty()) << export_error_;
  const std::string name = GetParam();
  const fs::path onnx_file = dir_ / (name + ".onnx");
  ASSERT_TRUE(fs::exists(dir_ / (name + ".json"))) << "the exporter wrote no " << name << ".json";

  absl::StatusOr<Graph> graph = onnx_import::ImportOnnxFile(onnx_file);
  ASSERT_TRUE(graph.ok()) << graph.status();
  ModelOptions options;
  options.model_name = name;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(std::move(*graph), options);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->inputs().size(), 1u);
  ASSERT_EQ((*model)->outputs().size(), 1u);

  for (int64_t batch : kBatches) {
    SCOPED_TRACE(name + " batch " + std::to_string(batch));
    absl::StatusOr<std::shared_ptr<const Plan>> plan = (*model)->GetPlan(batch);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const ValueInfo& in_info = (*plan)->input_infos()[0];
    const ValueInfo& out_info = (*plan)->output_infos()[0];
    ASSERT_EQ(in_info.dims, (Dims{batch, 3, 224, 224}));
    ASSERT_EQ(out_info.dims.size(), 2u);
    ASSERT_EQ(out_info.dims[0], batch);

    const std::string prefix = name + "_b" + std::to_string(batch);
    std::vector<float> input, expected;
    std::string error;
    ASSERT_TRUE(ReadFloats(dir_ / (prefix + "_input.bin"), NumElements(in_info.dims), input, error))
        << error;
    ASSERT_TRUE(
        ReadFloats(dir_ / (prefix + "_output.bin"), NumElements(out_info.dims), expected, error))
        << error;

    std::vector<float> actual(expected.size(), std::nanf(""));
    const TensorView in_view{DataType::kFloat32, in_info.dims, input.data()};
    const TensorView out_view{DataType::kFloat32, out_info.dims, actual.data()};
    std::unique_ptr<Workspace> workspace = (*plan)->CreateWorkspace();
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = (*plan)->Run(*workspace, {&in_view, 1}, {&out_view, 1});
    const double run_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(status.ok()) << status;

    double max_ref = 0.0, max_diff = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(expected[i])));
      const double diff = std::fabs(static_cast<double>(actual[i]) - expected[i]);
      if (!(diff <= max_diff)) {
        max_diff = std::isnan(diff) ? INFINITY : diff;
        worst = i;
      }
    }
    const double relative = max_ref > 0 ? max_diff / max_ref : max_diff;
    std::printf(
        "[ accuracy ] %-18s batch %lld: max|diff| %.3g, max|pytorch| %.4g, "
        "max relative error %.3g (limit 1e-4), first run %.0f ms\n",
        name.c_str(), static_cast<long long>(batch), max_diff, max_ref, relative, run_ms);
    std::fflush(stdout);
    EXPECT_GT(max_ref, 0.0) << "PyTorch's logits are all zero: the comparison would be vacuous";
    EXPECT_LE(max_diff, 1e-4 * max_ref)
        << "max relative error " << relative << " at logit " << worst << " (engine "
        << actual[worst] << ", pytorch " << expected[worst] << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(TorchVision, RealNetworkTest, ::testing::ValuesIn(kModels),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace convserve::engine
