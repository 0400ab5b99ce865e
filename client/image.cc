#include "client/image.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace convserve::client {

absl::StatusOr<std::string> ReadBinaryFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

absl::StatusOr<ImageInputSpec> ImageInputSpecFromConfig(const inference::ModelConfig& config,
                                                        const std::string& input_name) {
  if (config.input_size() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", config.name(), "' has no inputs in its configuration"));
  }
  const inference::ModelInput* input = &config.input(0);
  for (const auto& candidate : config.input()) {
    if (candidate.name() == input_name) input = &candidate;
  }
  ImageInputSpec spec;
  spec.hwc = input->format() == inference::ModelInput::FORMAT_NHWC;
  const std::vector<int64_t> dims(input->dims().begin(), input->dims().end());
  if (dims.size() != 3) {
    return absl::FailedPreconditionError(absl::StrCat("input '", input->name(), "' has dims [",
                                                      absl::StrJoin(dims, ","),
                                                      "], not an image (C,H,W)"));
  }
  spec.channels = static_cast<int>(spec.hwc ? dims[2] : dims[0]);
  inference::ModelPreprocessing& pre = spec.preprocessing;
  if (config.has_preprocessing()) pre = config.preprocessing();
  if (pre.height() <= 0) pre.set_height(static_cast<int32_t>(spec.hwc ? dims[0] : dims[1]));
  if (pre.width() <= 0) pre.set_width(static_cast<int32_t>(spec.hwc ? dims[1] : dims[2]));
  if (!config.has_preprocessing()) pre.set_scale(1.0f / 255.0f);
  if (pre.scale() == 0.0f) pre.set_scale(1.0f);
  if (pre.color_format() == inference::ModelPreprocessing::GRAY) spec.channels = 1;
  if (spec.channels != 1 && spec.channels != 3) {
    return absl::FailedPreconditionError(
        absl::StrCat("input '", input->name(), "' has ", spec.channels, " channels; need 1 or 3"));
  }
  if (pre.color_format() == inference::ModelPreprocessing::COLOR_FORMAT_UNSPECIFIED) {
    pre.set_color_format(spec.channels == 1 ? inference::ModelPreprocessing::GRAY
                                            : inference::ModelPreprocessing::RGB);
  }
  while (pre.mean_size() < spec.channels) pre.add_mean(0.0f);
  while (pre.std_size() < spec.channels) pre.add_std(1.0f);
  return spec;
}

}  // namespace convserve::client
