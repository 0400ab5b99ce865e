#include "server/repository/model.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status.h"
#include "server/onnx/importer.h"
#include "server/repository/model_config.h"

namespace convserve::repository {
namespace {

constexpr int kDerivedMaxBatchSize = 64;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path.string(), "'"));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inference::DataType ConfigType(engine::DataType type) {
  return DataTypeFromKServe(engine::DataTypeName(type));
}

std::string DimsString(const google::protobuf::RepeatedField<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// Checks one config tensor against the graph's value info; `batched` says whether the graph's
// first dim is the batch dimension (excluded from the config's dims).
template <typename ConfigTensor>
absl::Status CheckTensor(const std::string& model, const char* kind, const ConfigTensor& tensor,
                         const engine::ValueInfo& info, bool batched) {
  const inference::DataType type = ConfigType(info.dtype);
  if (type != tensor.data_type()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", model, "': ", kind, " '", tensor.name(), "' has data_type ",
                     inference::DataType_Name(tensor.data_type()), " in config.pbtxt but ",
                     inference::DataType_Name(type), " in the model file"));
  }
  engine::Dims graph_dims = info.dims;
  if (batched && !graph_dims.empty()) graph_dims.erase(graph_dims.begin());
  bool match = graph_dims.size() == static_cast<size_t>(tensor.dims_size());
  for (size_t d = 0; match && d < graph_dims.size(); ++d) {
    const int64_t a = graph_dims[d], b = tensor.dims(static_cast<int>(d));
    if (a != b && a != -1 && b != -1) match = false;
  }
  if (!match) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model, "': ", kind, " '", tensor.name(), "' has dims ",
        DimsString(tensor.dims()), " in config.pbtxt but ", engine::DimsToString(graph_dims),
        " in the model file", batched ? " (without the batch dimension)" : ""));
  }
  return absl::OkStatus();
}

std::vector<std::string> ReadLabels(const std::string& text) {
  std::vector<std::string> labels;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  return labels;
}

}  // namespace

absl::Status ValidateModelName(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("model name is empty");
  if (name.find('/') != std::string::npos || name.find('\\') != std::string::npos || name == "." ||
      name == ".." || name.front() == '.' || name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model name '", name, "' is not valid: it must be a folder name of the repository"));
  }
  return absl::OkStatus();
}

std::vector<int64_t> ListVersions(const std::filesystem::path& model_dir) {
  std::vector<int64_t> versions;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory(ec) || name.empty() || name.size() > 18) continue;
    if (!std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    versions.push_back(std::stoll(name));
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

std::filesystem::path ModelFilePath(const std::filesystem::path& version_dir,
                                    const inference::ModelConfig& config) {
  return version_dir / (config.default_model_filename().empty() ? std::string("model.onnx")
                                                                : config.default_model_filename());
}

inference::ModelConfig DeriveModelConfig(const std::string& name, const engine::Graph& graph) {
  inference::ModelConfig config;
  config.set_name(name);
  config.set_platform("onnxruntime_onnx");
  bool batched = !graph.inputs.empty();
  for (const auto* infos : {&graph.inputs, &graph.outputs}) {
    for (const auto& info : *infos) {
      if (info.dims.empty() || info.dims[0] != -1) batched = false;
    }
  }
  if (batched) config.set_max_batch_size(kDerivedMaxBatchSize);
  for (const auto& info : graph.inputs) {
    auto* input = config.add_input();
    input->set_name(info.name);
    input->set_data_type(ConfigType(info.dtype));
    for (size_t d = batched ? 1 : 0; d < info.dims.size(); ++d) input->add_dims(info.dims[d]);
  }
  for (const auto& info : graph.outputs) {
    auto* output = config.add_output();
    output->set_name(info.name);
    output->set_data_type(ConfigType(info.dtype));
    for (size_t d = batched ? 1 : 0; d < info.dims.size(); ++d) output->add_dims(info.dims[d]);
  }
  return config;
}

absl::StatusOr<inference::ModelConfig> ReadModelConfig(
    const std::filesystem::path& model_dir, const std::string& name,
    const std::filesystem::path& version_dir_for_derivation) {
  const std::filesystem::path config_path = model_dir / "config.pbtxt";
  std::error_code ec;
  if (!std::filesystem::exists(config_path, ec)) {
    if (version_dir_for_derivation.empty()) {
      return absl::NotFoundError(
          absl::StrCat("model '", name, "': no config.pbtxt and no version folder to derive it"));
    }
    ASSIGN_OR_RETURN(engine::Graph graph,
                     onnx_import::ImportOnnxFile(ModelFilePath(version_dir_for_derivation, {})));
    inference::ModelConfig config = DeriveModelConfig(name, graph);
    RETURN_IF_ERROR(ValidateModelConfig(config, name));
    ApplyModelConfigDefaults(&config, name);
    return config;
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  ASSIGN_OR_RETURN(inference::ModelConfig parsed, ParseModelConfig(text, name));
  // A default_model_filename that is not a plain file name is not opened: validation refuses it.
  if ((parsed.input_size() == 0 || parsed.output_size() == 0) &&
      !version_dir_for_derivation.empty() && ValidateModelFileName(parsed, name).ok()) {
    // Triton's auto-complete: what the config leaves out comes from the model file.
    ASSIGN_OR_RETURN(engine::Graph graph, onnx_import::ImportOnnxFile(
                                              ModelFilePath(version_dir_for_derivation, parsed)));
    const inference::ModelConfig derived = DeriveModelConfig(name, graph);
    if (parsed.input_size() == 0) *parsed.mutable_input() = derived.input();
    if (parsed.output_size() == 0) *parsed.mutable_output() = derived.output();
    if (parsed.max_batch_size() == 0 && !parsed.has_dynamic_batching()) {
      parsed.set_max_batch_size(derived.max_batch_size());
    }
  }
  RETURN_IF_ERROR(ValidateModelConfig(parsed, name));
  ApplyModelConfigDefaults(&parsed, name);
  return parsed;
}

std::vector<int64_t> SelectVersions(const inference::ModelVersionPolicy& policy,
                                    const std::vector<int64_t>& available) {
  std::vector<int64_t> selected;
  switch (policy.policy_choice_case()) {
    case inference::ModelVersionPolicy::kAll:
      return available;
    case inference::ModelVersionPolicy::kSpecific:
      for (int64_t v : available) {
        const auto& wanted = policy.specific().versions();
        if (std::find(wanted.begin(), wanted.end(), v) != wanted.end()) selected.push_back(v);
      }
      return selected;
    default: {
      const size_t n = policy.has_latest() && policy.latest().num_versions() > 0
                           ? policy.latest().num_versions()
                           : 1;
      const size_t first = available.size() > n ? available.size() - n : 0;
      return std::vector<int64_t>(available.begin() + static_cast<long>(first), available.end());
    }
  }
}

absl::StatusOr<std::shared_ptr<const ModelVersion>> LoadModelVersion(
    const std::filesystem::path& model_dir, const std::string& name, int64_t version,
    const inference::ModelConfig& config) {
  auto model = std::make_shared<ModelVersion>();
  model->name = name;
  model->version = version;
  model->path = model_dir / std::to_string(version);
  model->config = config;
  const std::string context = absl::StrCat("model '", name, "' version ", version);

  const std::filesystem::path file = ModelFilePath(model->path, config);
  absl::StatusOr<engine::Graph> graph = onnx_import::ImportOnnxFile(file);
  if (!graph.ok()) return Annotate(graph.status(), context);

  engine::ModelOptions options;
  options.model_name = name;
  if (config.precision() == kPrecisionBf16) options.precision = engine::Precision::kBf16;
  if (config.precision() == kPrecisionInt8) options.precision = engine::Precision::kInt8;
  auto engine_model = engine::Model::Create(*std::move(graph), options);
  if (!engine_model.ok()) return Annotate(engine_model.status(), context);
  model->engine_model = *std::move(engine_model);

  const bool batched = config.max_batch_size() > 0;
  const auto& inputs = model->engine_model->inputs();
  const auto& outputs = model->engine_model->outputs();
  if (static_cast<size_t>(config.input_size()) != inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name, "': config.pbtxt declares ",
                                                   config.input_size(),
                                                   " inputs, the model file has ", inputs.size()));
  }
  for (const auto& input : config.input()) {
    auto it = std::find_if(inputs.begin(), inputs.end(),
                           [&](const engine::ValueInfo& v) { return v.name == input.name(); });
    if (it == inputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", name, "': input '", input.name(),
                                                     "' of config.pbtxt is not an input of ",
                                                     file.string()));
    }
    RETURN_IF_ERROR(CheckTensor(name, "input", input, *it, batched));
    model->engine_input_of_config.push_back(static_cast<int>(it - inputs.begin()));
  }
  for (const auto& output : config.output()) {
    auto it = std::find_if(outputs.begin(), outputs.end(),
                           [&](const engine::ValueInfo& v) { return v.name == output.name(); });
    if (it == outputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", name, "': output '", output.name(),
                                                     "' of config.pbtxt is not an output of ",
                                                     file.string()));
    }
    RETURN_IF_ERROR(CheckTensor(name, "output", output, *it, batched));
    model->engine_output_of_config.push_back(static_cast<int>(it - outputs.begin()));
    std::vector<std::string> labels;
    if (!output.label_filename().empty()) {
      auto text = ReadFile(model_dir / output.label_filename());
      if (!text.ok()) return Annotate(text.status(), absl::StrCat("model '", name, "'"));
      labels = ReadLabels(*text);
    }
    model->labels.push_back(std::move(labels));
  }
  // Compile the batch-1 plan now: a model that cannot run fails at load, not at the first request.
  auto plan = model->engine_model->GetPlan(1);
  if (!plan.ok()) return Annotate(plan.status(), context);
  return std::shared_ptr<const ModelVersion>(std::move(model));
}

}  // namespace convserve::repository
