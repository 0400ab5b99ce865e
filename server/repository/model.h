// A loaded model version: its configuration, the compiled engine model, labels, and where the
// config's tensors sit in the engine's input/output order.
//
// A ModelVersion is immutable once loaded and shared (std::shared_ptr<const ModelVersion>) by
// the repository and every request that uses it: reloading never pulls a model from under a
// request. Loading reads files and compiles; it may take a while and may run on any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/model_config.pb.h"
#include "server/engine/engine.h"

namespace convserve::repository {

struct ModelVersion {
  std::string name;
  int64_t version = 0;
  std::filesystem::path path;     // the version folder
  inference::ModelConfig config;  // validated, defaults applied
  std::unique_ptr<engine::Model> engine_model;
  // input_order[i] = index in config.input() of engine input i; same for outputs.
  std::vector<int> engine_input_of_config;   // config input i -> engine input index
  std::vector<int> engine_output_of_config;  // config output i -> engine output index
  // labels[o] = the labels of config output o (empty when it has no label_filename).
  std::vector<std::vector<std::string>> labels;

  std::string version_string() const { return std::to_string(version); }
};

// A model name must be one folder name of the repository: not empty, no '/', '\\', no "." or
// "..", no leading '.'. INVALID_ARGUMENT otherwise.
absl::Status ValidateModelName(const std::string& name);

// Numeric subfolders of a model folder, ascending. Non-numeric entries are ignored.
std::vector<int64_t> ListVersions(const std::filesystem::path& model_dir);

// The model file of a version folder: config.default_model_filename or "model.onnx".
std::filesystem::path ModelFilePath(const std::filesystem::path& version_dir,
                                    const inference::ModelConfig& config);

// The config of a model folder: config.pbtxt parsed, validated and completed; without a
// config.pbtxt, derived from the model file (model.onnx) of `version_dir_for_derivation` (names,
// datatypes, dims without the batch dimension; max_batch_size 64 when the first dim of every
// input and output is dynamic). Inputs and outputs missing from a config.pbtxt are also taken
// from that version's model file (its default_model_filename, when that is a plain file name).
absl::StatusOr<inference::ModelConfig> ReadModelConfig(
    const std::filesystem::path& model_dir, const std::string& name,
    const std::filesystem::path& version_dir_for_derivation);

// Builds a config from the engine graph's inputs and outputs (see ReadModelConfig).
inference::ModelConfig DeriveModelConfig(const std::string& name, const engine::Graph& graph);

// Versions of `available` that `policy` selects (latest 1 by default), ascending.
std::vector<int64_t> SelectVersions(const inference::ModelVersionPolicy& policy,
                                    const std::vector<int64_t>& available);

// Loads one version: imports the ONNX file, creates the engine model, checks the config's
// inputs/outputs against the graph (names, datatypes, dims), reads label files and compiles the
// batch-1 plan. Errors name the model, version and file.
absl::StatusOr<std::shared_ptr<const ModelVersion>> LoadModelVersion(
    const std::filesystem::path& model_dir, const std::string& name, int64_t version,
    const inference::ModelConfig& config);

}  // namespace convserve::repository
