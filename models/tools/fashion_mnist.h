// Fashion-MNIST test set (Debian's dataset-fashion-mnist, IDX files) and the evaluation of a
// bundled model on it, shared by the accuracy test and the model-study tool.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/engine.h"

namespace convserve::models {

inline const std::filesystem::path kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct FashionMnistTestSet {
  int64_t count = 0;
  std::vector<uint8_t> pixels;  // count x 28 x 28, row-major
  std::vector<uint8_t> labels;  // count
};

// Reads t10k-images/labels; NOT_FOUND naming the package when the files are missing.
absl::StatusOr<FashionMnistTestSet> LoadFashionMnistTestSet(
    const std::filesystem::path& dir = kFashionMnistDir);

// PyTorch's results recorded by models/training/train.py beside the model.
struct PyTorchReference {
  double test_accuracy = 0;  // percent
  std::string predictions;   // one digit per test image
  int64_t parameters_total = 0, parameters_convolution = 0;
};
absl::StatusOr<PyTorchReference> LoadPyTorchReference(const std::filesystem::path& json_file);

struct Evaluation {
  double accuracy = 0;    // percent
  int64_t agreement = 0;  // images where the engine's class equals `reference`'s
  std::vector<uint8_t> predictions;
};

// Runs the model on every test image (training normalisation: x/255, mean 0.2860, std 0.3530).
absl::StatusOr<Evaluation> EvaluateOnTestSet(const engine::Model& model,
                                             const FashionMnistTestSet& data,
                                             const std::string& reference_predictions,
                                             int64_t batch_size = 100);

}  // namespace convserve::models
