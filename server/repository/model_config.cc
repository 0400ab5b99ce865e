#include "server/repository/model_config.h"

#include <array>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "server/common/status.h"

namespace convserve::repository {
namespace {

using inference::DataType;
using inference::ModelConfig;
using inference::ModelInput;
using inference::ModelInstanceGroup;
using inference::ModelPreprocessing;

// Keeps the first error only: the text parser stops there, and later messages would describe
// the aftermath rather than the cause.
class FirstErrorCollector final : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (has_error_) return;
    has_error_ = true;
    // The parser reports zero-based positions; editors show one-based ones.
    error_ = absl::StrCat("config.pbtxt:", line + 1, ":", column + 1, ": ", message);
  }

  bool has_error() const { return has_error_; }
  const std::string& error() const { return error_; }

 private:
  bool has_error_ = false;
  std::string error_;
};

struct DataTypeInfo {
  DataType type;
  std::string_view kserve;
  int64_t byte_size;
};

constexpr std::array<DataTypeInfo, 14> kDataTypes = {{
    {inference::TYPE_BOOL, "BOOL", 1},
    {inference::TYPE_UINT8, "UINT8", 1},
    {inference::TYPE_UINT16, "UINT16", 2},
    {inference::TYPE_UINT32, "UINT32", 4},
    {inference::TYPE_UINT64, "UINT64", 8},
    {inference::TYPE_INT8, "INT8", 1},
    {inference::TYPE_INT16, "INT16", 2},
    {inference::TYPE_INT32, "INT32", 4},
    {inference::TYPE_INT64, "INT64", 8},
    {inference::TYPE_FP16, "FP16", 2},
    {inference::TYPE_FP32, "FP32", 4},
    {inference::TYPE_FP64, "FP64", 8},
    {inference::TYPE_STRING, "BYTES", 0},
    {inference::TYPE_BF16, "BF16", 2},
}};

const DataTypeInfo* FindDataType(DataType type) {
  for (const DataTypeInfo& info : kDataTypes) {
    if (info.type == type) return &info;
  }
  return nullptr;
}

// Debian's Abseil is built with its own absl::string_view, and StrCat's AlphaNum does not accept
// a std::string_view: the public API's std::string_views go through this.
absl::string_view AbslView(std::string_view text) { return {text.data(), text.size()}; }

// Builds "model '<name>': <parts...>" errors so every message names the model.
class ErrorBuilder {
 public:
  explicit ErrorBuilder(std::string_view model_name) : model_name_(AbslView(model_name)) {}

  template <typename... Parts>
  absl::Status Invalid(const Parts&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat("model '", model_name_, "': ", parts...));
  }

  template <typename... Parts>
  absl::Status Unimplemented(const Parts&... parts) const {
    return absl::UnimplementedError(absl::StrCat("model '", model_name_, "': ", parts...));
  }

 private:
  absl::string_view model_name_;
};

// "input[0] 'image'" / "output[2]": how messages refer to one tensor of the config.
std::string TensorLabel(absl::string_view kind, int index, absl::string_view name) {
  if (name.empty()) return absl::StrCat(kind, "[", index, "]");
  return absl::StrCat(kind, "[", index, "] '", name, "'");
}

std::string DataTypeLabel(DataType type) {
  if (inference::DataType_IsValid(type)) return inference::DataType_Name(type);
  return absl::StrCat(static_cast<int>(type));
}

// Checks what inputs and outputs share: a name, a real data type, dims of >= 1 or -1, a name
// not used by an earlier tensor of the same kind.
template <typename Tensors>
absl::Status ValidateTensors(const ErrorBuilder& errors, absl::string_view kind,
                             const Tensors& tensors) {
  for (int i = 0; i < tensors.size(); ++i) {
    const auto& tensor = tensors.Get(i);
    const std::string label = TensorLabel(kind, i, tensor.name());
    if (tensor.name().empty()) return errors.Invalid(label, ": name is required");
    for (int j = 0; j < i; ++j) {
      if (tensors.Get(j).name() == tensor.name()) {
        return errors.Invalid(label, ": duplicate ", kind, " name (also ", kind, "[", j, "])");
      }
    }
    if (tensor.data_type() == inference::TYPE_INVALID) {
      return errors.Invalid(label, ": data_type is required");
    }
    if (FindDataType(tensor.data_type()) == nullptr) {
      return errors.Invalid(label, ": data_type ", DataTypeLabel(tensor.data_type()),
                            " is not a valid data type");
    }
    if (tensor.dims_size() == 0) return errors.Invalid(label, ": dims is required");
    for (int d = 0; d < tensor.dims_size(); ++d) {
      const int64_t dim = tensor.dims(d);
      if (dim < 1 && dim != -1) {
        return errors.Invalid(label, ": dims[", d, "] must be >= 1 or -1, got ", dim);
      }
    }
  }
  return absl::OkStatus();
}

// Image geometry of an input with FORMAT_NCHW / FORMAT_NHWC: the last three dims (the batch
// dimension may precede them when max_batch_size is 0). -1 where variable.
struct ImageDims {
  int64_t channels;
  int64_t height;
  int64_t width;
};

ImageDims ImageDimsOf(const ModelInput& input) {
  const int n = input.dims_size();
  if (input.format() == ModelInput::FORMAT_NHWC) {
    return {input.dims(n - 1), input.dims(n - 3), input.dims(n - 2)};
  }
  return {input.dims(n - 3), input.dims(n - 2), input.dims(n - 1)};
}

absl::Status ValidateInputs(const ErrorBuilder& errors, const ModelConfig& config) {
  if (config.input_size() == 0) return errors.Invalid("input: at least one input is required");
  return ValidateTensors(errors, "input", config.input());
}

absl::Status ValidateOutputs(const ErrorBuilder& errors, const ModelConfig& config) {
  if (config.output_size() == 0) {
    return errors.Invalid("output: at least one output is required");
  }
  return ValidateTensors(errors, "output", config.output());
}

absl::Status ValidateInputFormats(const ErrorBuilder& errors, const ModelConfig& config) {
  // With batching the dims exclude the batch dimension; without, they may include it.
  const int max_rank = config.max_batch_size() > 0 ? 3 : 4;
  for (int i = 0; i < config.input_size(); ++i) {
    const ModelInput& input = config.input(i);
    if (!ModelInput::Format_IsValid(input.format())) {
      return errors.Invalid(TensorLabel("input", i, input.name()), ": format ",
                            static_cast<int>(input.format()), " is not a valid format");
    }
    if (input.format() == ModelInput::FORMAT_NONE) continue;
    if (input.dims_size() < 3 || input.dims_size() > max_rank) {
      return errors.Invalid(TensorLabel("input", i, input.name()), ": format ",
                            ModelInput::Format_Name(input.format()), " needs 3 dims (",
                            input.format() == ModelInput::FORMAT_NCHW ? "C, H, W" : "H, W, C",
                            max_rank == 4 ? ", optionally preceded by the batch dimension" : "",
                            "), got ", input.dims_size());
    }
  }
  return absl::OkStatus();
}

// Checks a file name that the config names and the server opens inside one folder of the
// repository (`folder`: "model folder", "version folder"): it must be a plain name in that
// folder, since a path could reach outside the repository. `field` names the setting
// ("default_model_filename", "output[0] 'logits': label_filename").
absl::Status ValidateFileNameInFolder(const ErrorBuilder& errors, absl::string_view field,
                                      const std::string& file, absl::string_view folder) {
  const std::string shown = absl::CEscape(file);
  if (absl::StripAsciiWhitespace(file).empty()) {
    return errors.Invalid(field, " '", shown, "' must be a file name in the ", folder,
                          ", not blank");
  }
  if (file.find('\0') != std::string::npos) {
    return errors.Invalid(field, " '", shown, "' must be a file name in the ", folder,
                          ", not a name with a NUL character");
  }
  if (file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "." ||
      file == "..") {
    return errors.Invalid(field, " '", shown, "' must be a file name in the ", folder,
                          ", not a path");
  }
  return absl::OkStatus();
}

absl::Status ValidateLabelFiles(const ErrorBuilder& errors, const ModelConfig& config) {
  for (int i = 0; i < config.output_size(); ++i) {
    const std::string& file = config.output(i).label_filename();
    if (file.empty()) continue;
    RETURN_IF_ERROR(ValidateFileNameInFolder(
        errors, absl::StrCat(TensorLabel("output", i, config.output(i).name()), ": label_filename"),
        file, "model folder"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDynamicBatching(const ErrorBuilder& errors, const ModelConfig& config) {
  if (!config.has_dynamic_batching()) return absl::OkStatus();
  if (config.max_batch_size() == 0) {
    return errors.Invalid("dynamic_batching requires max_batch_size > 0");
  }
  const auto& batching = config.dynamic_batching();
  for (int i = 0; i < batching.preferred_batch_size_size(); ++i) {
    const int32_t size = batching.preferred_batch_size(i);
    if (size < 1 || size > config.max_batch_size()) {
      return errors.Invalid("dynamic_batching.preferred_batch_size[", i, "] must be in [1, ",
                            config.max_batch_size(), "] (max_batch_size), got ", size);
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateInstanceGroups(const ErrorBuilder& errors, const ModelConfig& config) {
  for (int i = 0; i < config.instance_group_size(); ++i) {
    const ModelInstanceGroup& group = config.instance_group(i);
    if (group.count() < 0) {
      return errors.Invalid("instance_group[", i, "].count must be >= 0, got ", group.count());
    }
    if (group.kind() == ModelInstanceGroup::KIND_GPU) {
      return errors.Unimplemented("instance_group[", i,
                                  "].kind KIND_GPU is not supported: convserve runs on CPU only "
                                  "(use KIND_CPU)");
    }
    if (!ModelInstanceGroup::Kind_IsValid(group.kind())) {
      return errors.Invalid("instance_group[", i, "].kind ", static_cast<int>(group.kind()),
                            " is not a valid kind (KIND_AUTO or KIND_CPU)");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePrecision(const ErrorBuilder& errors, const ModelConfig& config) {
  const std::string& precision = config.precision();
  if (precision.empty() || precision == kPrecisionFp32 || precision == kPrecisionBf16 ||
      precision == kPrecisionInt8) {
    return absl::OkStatus();
  }
  return errors.Invalid("precision '", precision, "' is not supported (", AbslView(kPrecisionFp32),
                        ", ", AbslView(kPrecisionBf16), " or ", AbslView(kPrecisionInt8), ")");
}

// Index of the input that preprocessing feeds, or -1 when it cannot be determined.
int PreprocessedInputIndex(const ModelConfig& config) {
  const std::string& name = config.preprocessing().input();
  if (name.empty()) return config.input_size() == 1 ? 0 : -1;
  for (int i = 0; i < config.input_size(); ++i) {
    if (config.input(i).name() == name) return i;
  }
  return -1;
}

absl::Status ValidatePerChannel(const ErrorBuilder& errors, absl::string_view field,
                                const google::protobuf::RepeatedField<float>& values, int channels,
                                absl::string_view color_format, bool nonzero) {
  // Empty means the identity (mean 0, std 1); otherwise one value per channel.
  if (!values.empty() && values.size() != channels) {
    return errors.Invalid("preprocessing.", field, " has ", values.size(),
                          values.size() == 1 ? " value" : " values", " but ", color_format, " has ",
                          channels, channels == 1 ? " channel" : " channels");
  }
  for (int i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return errors.Invalid("preprocessing.", field, "[", i, "] must be finite, got ", values[i]);
    }
    if (nonzero && values[i] == 0.0f) {
      return errors.Invalid("preprocessing.", field, "[", i, "] must be non-zero");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePreprocessing(const ErrorBuilder& errors, const ModelConfig& config) {
  if (!config.has_preprocessing()) return absl::OkStatus();
  const ModelPreprocessing& pre = config.preprocessing();

  const int channels = ColorFormatChannels(pre.color_format());
  if (channels == 0) {
    return errors.Invalid("preprocessing.color_format is required (GRAY, RGB or BGR)");
  }
  const std::string& color_format = ModelPreprocessing::ColorFormat_Name(pre.color_format());
  if (!ModelPreprocessing::ResizeMode_IsValid(pre.resize())) {
    return errors.Invalid("preprocessing.resize ", static_cast<int>(pre.resize()),
                          " is not a valid mode (BILINEAR or NEAREST)");
  }
  if (pre.width() <= 0) {
    return errors.Invalid("preprocessing.width must be > 0, got ", pre.width());
  }
  if (pre.height() <= 0) {
    return errors.Invalid("preprocessing.height must be > 0, got ", pre.height());
  }
  if (!std::isfinite(pre.scale())) {
    return errors.Invalid("preprocessing.scale must be finite, got ", pre.scale());
  }
  RETURN_IF_ERROR(ValidatePerChannel(errors, "mean", pre.mean(), channels, color_format, false));
  RETURN_IF_ERROR(ValidatePerChannel(errors, "std", pre.std(), channels, color_format, true));

  const int index = PreprocessedInputIndex(config);
  if (index < 0) {
    if (pre.input().empty()) {
      return errors.Invalid("preprocessing.input is required when the model has ",
                            config.input_size(), " inputs");
    }
    std::vector<std::string> names;
    for (const ModelInput& input : config.input()) names.push_back(input.name());
    return errors.Invalid("preprocessing.input '", pre.input(), "' is not an input of the model (",
                          names.empty() ? "none" : absl::StrJoin(names, ", "), ")");
  }

  // The image must come out exactly as the input expects it.
  const ModelInput& input = config.input(index);
  if (input.format() == ModelInput::FORMAT_NONE) return absl::OkStatus();
  const ImageDims dims = ImageDimsOf(input);
  const std::string label = TensorLabel("input", index, input.name());
  if (dims.channels != -1 && dims.channels != channels) {
    return errors.Invalid("preprocessing.color_format ", color_format, " gives ", channels,
                          " channel", channels == 1 ? "" : "s", " but ", label, " has ",
                          dims.channels);
  }
  if (dims.height != -1 && dims.height != pre.height()) {
    return errors.Invalid("preprocessing.height ", pre.height(), " does not match ", label,
                          " height ", dims.height);
  }
  if (dims.width != -1 && dims.width != pre.width()) {
    return errors.Invalid("preprocessing.width ", pre.width(), " does not match ", label, " width ",
                          dims.width);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text,
                                             std::string_view model_name_for_errors) {
  ModelConfig config;
  FirstErrorCollector collector;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  google::protobuf::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  if (!parser.Parse(&input, &config)) {
    return ErrorBuilder(model_name_for_errors)
        .Invalid(collector.has_error() ? collector.error()
                                       : std::string("config.pbtxt: cannot be parsed"));
  }
  return config;
}

absl::Status ValidateModelFileName(const ModelConfig& config, std::string_view folder_name) {
  // Empty means "model.onnx".
  if (config.default_model_filename().empty()) return absl::OkStatus();
  return ValidateFileNameInFolder(ErrorBuilder(folder_name), "default_model_filename",
                                  config.default_model_filename(), "version folder");
}

absl::Status ValidateModelConfig(const ModelConfig& config, std::string_view folder_name) {
  const ErrorBuilder errors(folder_name);
  if (!config.name().empty() && config.name() != folder_name) {
    return errors.Invalid("name '", config.name(), "' does not match the model folder '",
                          AbslView(folder_name), "'");
  }
  if (config.max_batch_size() < 0) {
    return errors.Invalid("max_batch_size must be >= 0, got ", config.max_batch_size());
  }
  // In the order of the fields in the file, so the first problem reported is the first one there.
  RETURN_IF_ERROR(ValidateInputs(errors, config));
  RETURN_IF_ERROR(ValidateInputFormats(errors, config));
  RETURN_IF_ERROR(ValidateOutputs(errors, config));
  RETURN_IF_ERROR(ValidateLabelFiles(errors, config));
  RETURN_IF_ERROR(ValidateModelFileName(config, folder_name));
  RETURN_IF_ERROR(ValidateDynamicBatching(errors, config));
  RETURN_IF_ERROR(ValidateInstanceGroups(errors, config));
  RETURN_IF_ERROR(ValidatePrecision(errors, config));
  RETURN_IF_ERROR(ValidatePreprocessing(errors, config));
  return absl::OkStatus();
}

void ApplyModelConfigDefaults(ModelConfig* config, std::string_view folder_name) {
  if (config->name().empty()) config->set_name(std::string(folder_name));
  // The backend that serves it (a Triton config names its own, e.g. "onnxruntime": kept as
  // written).
  if (config->backend().empty()) config->set_backend("convserve");
  if (config->instance_group_size() == 0) config->add_instance_group();
  int group_index = 0;
  for (ModelInstanceGroup& group : *config->mutable_instance_group()) {
    // Named as Triton names them: <model>_<index in instance_group>.
    if (group.name().empty()) group.set_name(absl::StrCat(config->name(), "_", group_index));
    ++group_index;
    if (group.count() == 0) group.set_count(1);
    if (group.kind() == ModelInstanceGroup::KIND_AUTO) group.set_kind(ModelInstanceGroup::KIND_CPU);
  }
  if (config->precision().empty()) config->set_precision(std::string(kPrecisionFp32));
  // The version policy that applies, spelled out as Triton's ModelConfig does: the latest one.
  if (config->version_policy().policy_choice_case() ==
          inference::ModelVersionPolicy::POLICY_CHOICE_NOT_SET ||
      (config->version_policy().has_latest() &&
       config->version_policy().latest().num_versions() == 0)) {
    config->mutable_version_policy()->mutable_latest()->set_num_versions(1);
  }

  if (!config->has_preprocessing()) return;
  ModelPreprocessing* pre = config->mutable_preprocessing();
  if (pre->input().empty() && config->input_size() == 1) {
    pre->set_input(config->input(0).name());
  }
  if (pre->scale() == 0.0f) pre->set_scale(1.0f);
  const int channels = ColorFormatChannels(pre->color_format());
  if (pre->mean().empty()) pre->mutable_mean()->Resize(channels, 0.0f);
  if (pre->std().empty()) pre->mutable_std()->Resize(channels, 1.0f);
}

absl::StatusOr<ModelConfig> LoadModelConfig(std::string_view text, std::string_view folder_name) {
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(text, folder_name));
  RETURN_IF_ERROR(ValidateModelConfig(config, folder_name));
  ApplyModelConfigDefaults(&config, folder_name);
  return config;
}

int ColorFormatChannels(ModelPreprocessing::ColorFormat color_format) {
  switch (color_format) {
    case ModelPreprocessing::GRAY:
      return 1;
    case ModelPreprocessing::RGB:
    case ModelPreprocessing::BGR:
      return 3;
    default:
      return 0;
  }
}

std::string_view DataTypeToKServe(DataType data_type) {
  const DataTypeInfo* info = FindDataType(data_type);
  return info == nullptr ? std::string_view() : info->kserve;
}

DataType DataTypeFromKServe(std::string_view datatype) {
  for (const DataTypeInfo& info : kDataTypes) {
    if (info.kserve == datatype) return info.type;
  }
  return inference::TYPE_INVALID;
}

int64_t DataTypeByteSize(DataType data_type) {
  const DataTypeInfo* info = FindDataType(data_type);
  return info == nullptr ? 0 : info->byte_size;
}

}  // namespace convserve::repository
