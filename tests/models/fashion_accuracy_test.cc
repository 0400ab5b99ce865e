// The bundled models evaluated by the engine on all 10,000 Fashion-MNIST test images, against
// what PyTorch recorded when the training script exported them (models/repository/<name>/1/
// pytorch_reference.json): accuracy within 0.1 points, predictions agreeing on >= 99.9% of the
// images. The data set comes from Debian's dataset-fashion-mnist; without it the test fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "models/tools/fashion_mnist.h"
#include "server/engine/engine.h"
#include "server/onnx/importer.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;

const fs::path kRepository = fs::path(CONVSERVE_SOURCE_DIR) / "models" / "repository";

class FashionAccuracyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FashionAccuracyTest, EngineMatchesPyTorch) {
  const std::string name = GetParam();
  auto data = models::LoadFashionMnistTestSet();
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_EQ(data->count, 10000);

  const fs::path model_dir = kRepository / name / "1";
  auto reference = models::LoadPyTorchReference(model_dir / "pytorch_reference.json");
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(reference->predictions.size(), 10000u);

  auto graph = onnx_import::ImportOnnxFile(model_dir / "model.onnx");
  ASSERT_TRUE(graph.ok()) << graph.status();
  auto model = engine::Model::Create(*std::move(graph), {name, engine::Precision::kFp32});
  ASSERT_TRUE(model.ok()) << model.status();
  auto eval = models::EvaluateOnTestSet(**model, *data, reference->predictions);
  ASSERT_TRUE(eval.ok()) << eval.status();

  std::printf("%s: engine accuracy %.2f%%, PyTorch %.2f%%, agreement %.2f%%\n", name.c_str(),
              eval->accuracy, reference->test_accuracy, eval->agreement / 100.0);
  EXPECT_NEAR(eval->accuracy, reference->test_accuracy, 0.1);
  EXPECT_GE(eval->agreement, 9990)
      << "predictions differ from PyTorch's on " << 10000 - eval->agreement << " images";
  if (name == "fashion-k3") {
    EXPECT_GE(eval->accuracy, 91.0);
  }
}

std::vector<std::string> BundledModels() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(kRepository, error)) {
    if (fs::exists(entry.path() / "1" / "pytorch_reference.json")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// With no bundled model at all, AllFiveVariantsAreBundled below fails and says so.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FashionAccuracyTest);
INSTANTIATE_TEST_SUITE_P(Bundled, FashionAccuracyTest, ::testing::ValuesIn(BundledModels()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(FashionModelsTest, AllFiveVariantsAreBundled) {
  const std::vector<std::string> expected = {"fashion-bottleneck", "fashion-k3", "fashion-k5",
                                             "fashion-mlp", "fashion-sep"};
  EXPECT_EQ(BundledModels(), expected);
}

}  // namespace
}  // namespace convserve
