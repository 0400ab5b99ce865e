// Reading a model's `config.pbtxt`: parsing (protobuf text format, Triton's syntax), validation
// against what convserve can serve, defaults, and the mapping between the config's DataType enum
// and the KServe datatype strings used on the inference wire.
//
// The usual sequence, which LoadModelConfig performs:
//   ParseModelConfig(text, folder)  ->  ValidateModelConfig(config, folder)
//     ->  ApplyModelConfigDefaults(&config, folder)
//
// Errors are absl::Status values whose message starts with "model '<name>': " and names the
// offending field, e.g. "model 'fashion-k3': input[0] 'input': dims[1] must be >= 1 or -1, got 0".
// Codes: INVALID_ARGUMENT for anything wrong in the file; UNIMPLEMENTED for a valid Triton setting
// convserve does not support (GPU instance groups).
//
// All functions are pure (no I/O, no global state) and safe to call from any thread.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/model_config.pb.h"

namespace convserve::repository {

// The precisions a model may ask for in `precision`; empty means kPrecisionFp32.
inline constexpr std::string_view kPrecisionFp32 = "fp32";
inline constexpr std::string_view kPrecisionBf16 = "bf16";
inline constexpr std::string_view kPrecisionInt8 = "int8";

// Parses the text of a config.pbtxt. Unknown fields, malformed values and repeated singular fields
// are errors. On failure returns INVALID_ARGUMENT with the position of the first error:
//   "model 'x': config.pbtxt:3:7: Expected identifier, got: 12"
// (line and column are 1-based). `model_name_for_errors` is only used in that message.
absl::StatusOr<inference::ModelConfig> ParseModelConfig(std::string_view text,
                                                        std::string_view model_name_for_errors);

// Checks the config's default_model_filename (empty: model.onnx): a file name in the version
// folder, not a path. Part of ValidateModelConfig.
absl::Status ValidateModelFileName(const inference::ModelConfig& config,
                                   std::string_view folder_name);

// Checks a parsed config for a model stored in the folder `folder_name`. Does not modify it;
// settings that ApplyModelConfigDefaults fills in (empty name, instance count 0, empty
// preprocessing.input with one input, empty mean/std) are accepted. Returns the first problem.
absl::Status ValidateModelConfig(const inference::ModelConfig& config,
                                 std::string_view folder_name);

// Fills what a valid config may leave out, so that later stages never look at defaults:
//   name ("" -> folder_name); instance_group (none -> one KIND_CPU group of count 1; count 0 -> 1;
//   KIND_AUTO -> KIND_CPU); precision ("" -> "fp32"); and, when preprocessing is present,
//   input ("" -> the only input), scale (0 -> 1), mean (empty -> zeros), std (empty -> ones).
// Expects a config that passed ValidateModelConfig.
void ApplyModelConfigDefaults(inference::ModelConfig* config, std::string_view folder_name);

// ParseModelConfig + ValidateModelConfig + ApplyModelConfigDefaults.
absl::StatusOr<inference::ModelConfig> LoadModelConfig(std::string_view text,
                                                       std::string_view folder_name);

// Number of image channels of a preprocessing color format: GRAY 1, RGB/BGR 3, unspecified 0.
int ColorFormatChannels(inference::ModelPreprocessing::ColorFormat color_format);

// KServe datatype string of a config data type: TYPE_FP32 -> "FP32", TYPE_STRING -> "BYTES", ...
// Returns an empty view for TYPE_INVALID and values outside the enum.
std::string_view DataTypeToKServe(inference::DataType data_type);

// Config data type of a KServe datatype string ("FP32" -> TYPE_FP32, "BYTES" -> TYPE_STRING).
// Case-sensitive, as the protocol is. Returns TYPE_INVALID for anything else.
inference::DataType DataTypeFromKServe(std::string_view datatype);

// Size in bytes of one element: TYPE_FP32 -> 4, TYPE_BOOL -> 1, ... Returns 0 for TYPE_STRING
// (variable size) and TYPE_INVALID.
int64_t DataTypeByteSize(inference::DataType data_type);

}  // namespace convserve::repository
