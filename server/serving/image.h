// Encoded images (JPEG, PNG) to model input tensors: decode with libjpeg / libpng, convert the
// color format, resize and normalise as a model's `preprocessing` says.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/model_config.pb.h"

namespace convserve::serving {

// An 8-bit image, interleaved (HWC), 1 (gray) or 3 (RGB) channels.
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;
};

// Default limit on width * height of a decoded image: protects against decompression bombs.
inline constexpr int64_t kDefaultMaxImagePixels = 16 * 1024 * 1024;

// Decodes a JPEG or PNG file into `channels` (1 = gray, 3 = RGB) channels. CMYK and YCCK JPEGs
// are converted to RGB as Pillow does (the samples read as stored inverted, Adobe's convention,
// with or without its APP14 marker).
// INVALID_ARGUMENT: not a JPEG/PNG, corrupt or truncated data, or more than `max_pixels` pixels
// (checked from the header, before decompression).
absl::StatusOr<Image> DecodeImage(std::string_view bytes, int channels, int64_t max_pixels);

// Width * height from a PNG's or baseline/progressive JPEG's header, without decoding it; -1 when
// the header does not say (not a PNG or JPEG, or truncated before the size). For deciding where
// to decode (a large image is not decoded on a thread that receives requests).
int64_t EncodedImagePixels(std::string_view bytes);

// Resizes (bilinear with half-pixel centres, or nearest) and normalises an image decoded with
// ColorFormatChannels(pre.color_format()) channels: value = (pixel * scale - mean[c]) / std[c],
// with BGR swapping the channels. Writes channels * pre.height() * pre.width() floats to `out`,
// planar (CHW) or interleaved (HWC) when `hwc`. `pre` must have its defaults applied.
void PreprocessImage(const Image& image, const inference::ModelPreprocessing& pre, bool hwc,
                     float* out);

// UINT8 tensor elements to floats. With `pre` (the model's preprocessing feeds this input, its
// defaults applied: the scale is used as it is):
// value = x * scale, then minus mean[c] and divided by std[c] where given, c being the channel of
// the element: (e % sample) / plane % channels for NCHW, e % channels for NHWC. Without `pre`: x.
void Uint8ToFloat(const uint8_t* in, size_t count, int64_t sample, int64_t plane, int64_t channels,
                  bool nhwc, const inference::ModelPreprocessing* pre, float* out);

}  // namespace convserve::serving
