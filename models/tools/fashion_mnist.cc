#include "models/tools/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/common/status.h"

namespace convserve::models {
namespace {

constexpr float kScale = 1.f / 255.f, kMean = 0.2860f, kStd = 0.3530f;

absl::StatusOr<std::vector<uint8_t>> ReadGz(const std::filesystem::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path.string(), " not found (apt-get install dataset-fashion-mnist)"));
  }
  std::vector<uint8_t> out;
  unsigned char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.insert(out.end(), buffer, buffer + n);
  gzclose(file);
  return out;
}

// Minimal extraction of a top-level number or string field from the reference JSON.
std::string JsonField(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  size_t pos = json.find(needle);
  if (pos == std::string::npos) return "";
  pos += needle.size();
  while (pos < json.size() && json[pos] == ' ') ++pos;
  if (pos < json.size() && json[pos] == '"') {
    const size_t end = json.find('"', pos + 1);
    return json.substr(pos + 1, end - pos - 1);
  }
  size_t end = pos;
  while (end < json.size() && json[end] != ',' && json[end] != '\n' && json[end] != '}') ++end;
  return json.substr(pos, end - pos);
}

}  // namespace

absl::StatusOr<FashionMnistTestSet> LoadFashionMnistTestSet(const std::filesystem::path& dir) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> images, ReadGz(dir / "t10k-images-idx3-ubyte.gz"));
  ASSIGN_OR_RETURN(std::vector<uint8_t> labels, ReadGz(dir / "t10k-labels-idx1-ubyte.gz"));
  if (images.size() < 16 || labels.size() < 8 || (images.size() - 16) % 784 != 0 ||
      (images.size() - 16) / 784 != labels.size() - 8) {
    return absl::DataLossError(
        absl::StrCat("Fashion-MNIST test files in ", dir.string(), " are damaged"));
  }
  FashionMnistTestSet set;
  set.count = static_cast<int64_t>(labels.size() - 8);
  set.pixels.assign(images.begin() + 16, images.end());
  set.labels.assign(labels.begin() + 8, labels.end());
  return set;
}

absl::StatusOr<PyTorchReference> LoadPyTorchReference(const std::filesystem::path& json_file) {
  std::ifstream in(json_file);
  if (!in) return absl::NotFoundError(absl::StrCat(json_file.string(), " not found"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string json = ss.str();
  PyTorchReference ref;
  ref.predictions = JsonField(json, "predictions");
  const std::string accuracy = JsonField(json, "test_accuracy");
  if (accuracy.empty() || ref.predictions.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(json_file.string(), ": no test_accuracy or predictions"));
  }
  ref.test_accuracy = std::stod(accuracy);
  const std::string total = JsonField(json, "parameters_total");
  const std::string conv = JsonField(json, "parameters_convolution");
  if (!total.empty()) ref.parameters_total = std::stoll(total);
  if (!conv.empty()) ref.parameters_convolution = std::stoll(conv);
  return ref;
}

absl::StatusOr<Evaluation> EvaluateOnTestSet(const engine::Model& model,
                                             const FashionMnistTestSet& data,
                                             const std::string& reference_predictions,
                                             int64_t batch_size) {
  ASSIGN_OR_RETURN(std::shared_ptr<const engine::Plan> plan, model.GetPlan(batch_size));
  auto workspace = plan->CreateWorkspace();
  std::vector<float> input(batch_size * 784), logits(batch_size * 10);
  Evaluation eval;
  eval.predictions.reserve(data.count);
  int64_t correct = 0;
  for (int64_t start = 0; start < data.count; start += batch_size) {
    const int64_t n = std::min(batch_size, data.count - start);
    std::fill(input.begin(), input.end(), 0.f);
    for (int64_t i = 0; i < n * 784; ++i) {
      input[i] = (data.pixels[start * 784 + i] * kScale - kMean) / kStd;
    }
    engine::TensorView in{engine::DataType::kFloat32, {batch_size, 1, 28, 28}, input.data()};
    engine::TensorView out{engine::DataType::kFloat32, {batch_size, 10}, logits.data()};
    RETURN_IF_ERROR(plan->Run(*workspace, {&in, 1}, {&out, 1}));
    for (int64_t b = 0; b < n; ++b) {
      const float* row = logits.data() + b * 10;
      const auto predicted = static_cast<uint8_t>(std::max_element(row, row + 10) - row);
      eval.predictions.push_back(predicted);
      correct += predicted == data.labels[start + b];
      const int64_t index = start + b;
      if (index < static_cast<int64_t>(reference_predictions.size()) &&
          predicted == reference_predictions[index] - '0') {
        ++eval.agreement;
      }
    }
  }
  eval.accuracy = 100.0 * static_cast<double>(correct) / static_cast<double>(data.count);
  return eval;
}

}  // namespace convserve::models
