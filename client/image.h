// Client-side image preprocessing for `classify --preprocess client`: decode JPEG/PNG, convert to
// gray or RGB, bilinear (or nearest) resize to the model's input, x * scale, (x - mean) / std per
// channel, NCHW or NHWC. The same steps the server applies to BYTES inputs, from the same
// ModelConfig.preprocessing, so both paths give the same tensor for the same file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace convserve::client {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;             // 1 (gray) or 3 (RGB)
  std::vector<uint8_t> pixels;  // row-major, interleaved
};

// `channels`: 1 = gray, 3 = RGB. INVALID_ARGUMENT for anything but a complete JPEG or PNG.
absl::StatusOr<Image> DecodeImage(std::string_view bytes, int channels);

struct PreprocessParams {
  int width = 0;
  int height = 0;
  bool bgr = false;  // reverse the channel order of an RGB image
  bool nearest = false;
  float scale = 1.0f;
  std::vector<float> mean;  // per channel; missing = 0
  std::vector<float> std;   // per channel; missing = 1
  bool hwc = false;         // NHWC instead of NCHW
};

// Writes params.width * params.height * image.channels floats to `out`.
void PreprocessImage(const Image& image, const PreprocessParams& params, float* out);

absl::StatusOr<std::string> ReadBinaryFile(const std::string& path);

}  // namespace convserve::client
