// Files and images on the client side. Decoding and preprocessing are the server's own code
// (server/serving/image.h, library convserve_image), so that `classify --preprocess client`
// produces exactly the tensor the server would for the same file and ModelConfig.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "proto/model_config.pb.h"

namespace convserve::client {

absl::StatusOr<std::string> ReadBinaryFile(const std::string& path);

// What the model's config says an image becomes: the preprocessing with every default applied
// (size from the input's dims, scale 1/255 when the config has none, mean 0 / std 1 per
// channel), the channel count and whether the input is NHWC.
struct ImageInputSpec {
  inference::ModelPreprocessing preprocessing;
  int channels = 1;
  bool hwc = false;
};
absl::StatusOr<ImageInputSpec> ImageInputSpecFromConfig(const inference::ModelConfig& config,
                                                        const std::string& input_name);

}  // namespace convserve::client
