// Small model repositories for the server tests, built from scratch: an ONNX model whose output
// is easy to compute by hand (the oracle), config files, labels, and encoded test images.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "proto/inference.grpc.pb.h"

namespace convserve::testing {

inline constexpr int kImageSide = 28;
inline constexpr int kPixels = kImageSide * kImageSide;
inline constexpr int kClasses = 10;

// logits[k] = sum_p x[p] * (p % 10 == k ? 1/784 : 0) + bias_offset + k / 1000.
// Input "input" FP32 [N,1,28,28] (N dynamic), output "logits" FP32 [N,10].
void WriteLinearOnnx(const std::filesystem::path& path, float bias_offset);

// The oracle for WriteLinearOnnx.
std::array<float, kClasses> LinearLogits(const float* pixels, float bias_offset);

// A 28x28 gray image that WriteLinearOnnx classifies as `label` (bright where p % 10 == label).
std::vector<uint8_t> PatternImage(int label, int side = kImageSide);

// PatternImage(label) as floats scaled to [0, 1] (what the tiny model's preprocessing makes of it).
std::vector<float> PatternFloats(int label);

// A ModelInfer request (id "req") for the linear test model: input "input" FP32
// [labels.size(), 1, 28, 28], image i = PatternFloats(labels[i]), in raw_input_contents when
// `raw`, else in fp32_contents.
inference::ModelInferRequest PatternRequest(const std::string& model,
                                            const std::vector<int>& labels, bool raw = true);

// A ModelInfer request for the linear test model: input "input" UINT8 [1, 1, 28, 28] holding
// `pixels` (28 * 28 bytes) in raw_input_contents.
inference::ModelInferRequest Uint8Request(const std::string& model,
                                          const std::vector<uint8_t>& pixels);

std::string EncodePng(const std::vector<uint8_t>& gray, int width, int height);
// A PNG of libpng's simplified `format` (PNG_FORMAT_RGB, PNG_FORMAT_LINEAR_Y: 16-bit samples...).
std::string EncodePngFormat(uint32_t format, int width, int height, const void* samples);
std::string EncodeJpeg(const std::vector<uint8_t>& gray, int width, int height);
// A 4-component JPEG of `cmyk` (4 samples a pixel, stored as given: Photoshop's files hold them
// inverted), quality 100, no subsampling; stored as YCCK when `ycck` (libjpeg converts), with an
// Adobe APP14 marker (libjpeg's default for CMYK and YCCK) unless `adobe_marker` is false.
std::string EncodeCmykJpeg(const std::vector<uint8_t>& cmyk, int width, int height, bool ycck,
                           bool adobe_marker);

// The test repository:
//   tiny/       config.pbtxt (max_batch_size 8, dynamic batching 20 ms, GRAY 28x28 preprocessing,
//               scale 1/255), labels.txt ("class0".."class9"), 1/model.onnx (bias 0)
//   derived/    1/model.onnx only (config derived)
//   broken/     malformed config.pbtxt, 1/model.onnx
//   badfile/    config.pbtxt like tiny, 1/model.onnx that is not ONNX
void BuildTestRepository(const std::filesystem::path& root);

// A fresh, empty temporary directory (removed by the caller).
std::filesystem::path MakeTempDir(const std::string& prefix);

// The Triton statistics of `model` (empty message, and a test failure, if the RPC fails).
inference::ModelStatistics FetchModelStatistics(inference::GRPCInferenceService::Stub& stub,
                                                const std::string& model);

}  // namespace convserve::testing
