// The bundled models evaluated by the engine on all 10,000 Fashion-MNIST test images, against
// what PyTorch recorded when the training script exported them (models/repository/<name>/1/
// pytorch_reference.json): accuracy within 0.1 points, predictions agreeing on >= 99.9% of the
// images. The data set comes from Debian's dataset-fashion-mnist; without it the test fails.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "server/engine/engine.h"
#include "server/onnx/importer.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;

const fs::path kDataDir = "/usr/share/datasets/fashion-mnist";
const fs::path kRepository = fs::path(CONVSERVE_SOURCE_DIR) / "models" / "repository";
constexpr float kScale = 1.f / 255.f, kMean = 0.2860f, kStd = 0.3530f;

std::vector<unsigned char> ReadGz(const fs::path& path) {
  std::vector<unsigned char> out;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return out;
  unsigned char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.insert(out.end(), buffer, buffer + n);
  gzclose(file);
  return out;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Minimal extraction of a top-level number or string field from the reference JSON.
std::string JsonField(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  size_t pos = json.find(needle);
  if (pos == std::string::npos) return "";
  pos += needle.size();
  while (pos < json.size() && json[pos] == ' ') ++pos;
  if (json[pos] == '"') {
    const size_t end = json.find('"', pos + 1);
    return json.substr(pos + 1, end - pos - 1);
  }
  size_t end = pos;
  while (end < json.size() && json[end] != ',' && json[end] != '\n' && json[end] != '}') ++end;
  return json.substr(pos, end - pos);
}

class FashionAccuracyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FashionAccuracyTest, EngineMatchesPyTorch) {
  const std::string name = GetParam();
  const auto images = ReadGz(kDataDir / "t10k-images-idx3-ubyte.gz");
  const auto labels = ReadGz(kDataDir / "t10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(images.size(), 16u + 10000u * 784u)
      << "Fashion-MNIST test set missing or damaged in " << kDataDir
      << " (apt-get install dataset-fashion-mnist)";
  ASSERT_EQ(labels.size(), 8u + 10000u);

  const fs::path model_dir = kRepository / name / "1";
  ASSERT_TRUE(fs::exists(model_dir / "model.onnx")) << model_dir;
  const std::string reference = ReadText(model_dir / "pytorch_reference.json");
  const std::string predictions = JsonField(reference, "predictions");
  ASSERT_EQ(predictions.size(), 10000u) << "no predictions in pytorch_reference.json";
  const double pytorch_accuracy = std::stod(JsonField(reference, "test_accuracy"));

  auto graph = onnx_import::ImportOnnxFile(model_dir / "model.onnx");
  ASSERT_TRUE(graph.ok()) << graph.status();
  auto model = engine::Model::Create(*std::move(graph), {name, engine::Precision::kFp32});
  ASSERT_TRUE(model.ok()) << model.status();
  constexpr int64_t kBatch = 100;
  auto plan = (*model)->GetPlan(kBatch);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto workspace = (*plan)->CreateWorkspace();

  std::vector<float> input(kBatch * 784), logits(kBatch * 10);
  int correct = 0, agree = 0;
  for (int64_t start = 0; start < 10000; start += kBatch) {
    for (int64_t i = 0; i < kBatch * 784; ++i) {
      input[i] = (images[16 + start * 784 + i] * kScale - kMean) / kStd;
    }
    engine::TensorView in{engine::DataType::kFloat32, {kBatch, 1, 28, 28}, input.data()};
    engine::TensorView out{engine::DataType::kFloat32, {kBatch, 10}, logits.data()};
    ASSERT_TRUE((*plan)->Run(*workspace, {&in, 1}, {&out, 1}).ok());
    for (int64_t b = 0; b < kBatch; ++b) {
      const float* row = logits.data() + b * 10;
      const int predicted = static_cast<int>(std::max_element(row, row + 10) - row);
      correct += predicted == labels[8 + start + b];
      agree += predicted == predictions[start + b] - '0';
    }
  }
  const double accuracy = correct / 100.0;
  std::printf("%s: engine accuracy %.2f%%, PyTorch %.2f%%, agreement %.2f%%\n", name.c_str(),
              accuracy, pytorch_accuracy, agree / 100.0);
  EXPECT_NEAR(accuracy, pytorch_accuracy, 0.1);
  EXPECT_GE(agree, 9990) << "predictions differ from PyTorch's on " << 10000 - agree << " images";
  if (name == "fashion-k3") {
    EXPECT_GE(accuracy, 91.0);
  }
}

std::vector<std::string> BundledModels() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(kRepository)) {
    if (fs::exists(entry.path() / "1" / "pytorch_reference.json")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

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
