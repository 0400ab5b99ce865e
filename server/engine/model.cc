#include <omp.h>

#include "absl/strings/str_cat.h"
#include "server/common/status.h"
#include "server/engine/compiler.h"
#include "server/engine/engine.h"
#include "server/engine/passes.h"

namespace convserve::engine {

absl::StatusOr<std::unique_ptr<Model>> Model::Create(Graph graph, ModelOptions options) {
  const std::string context = absl::StrCat("model '", options.model_name, "'");
  for (const Node& node : graph.nodes) {
    if (!IsSupportedOpType(node.op_type)) {
      return absl::UnimplementedError(absl::StrCat(context, ": node '", node.name, "' (",
                                                   node.op_type, "): unsupported op type '",
                                                   node.op_type, "'"));
    }
  }
  for (const Node& node : graph.nodes) {
    // Dropout in training mode is random: only inference (training_mode absent or false) runs.
    if (node.op_type != "Dropout" || node.inputs.size() < 3 || node.inputs[2].empty()) continue;
    auto it = graph.initializers.find(node.inputs[2]);
    if (it == graph.initializers.end() || it->second.AsInt64().empty() ||
        it->second.AsInt64()[0] != 0) {
      return absl::UnimplementedError(absl::StrCat(
          context, ": node '", node.name, "' (Dropout): training_mode must be a constant false"));
    }
  }
  if (options.precision != Precision::kFp32) {
    return absl::UnimplementedError(
        absl::StrCat(context, ": only fp32 precision is implemented so far"));
  }
  RETURN_IF_ERROR(Annotate(RunPasses(graph), context));
  auto model = std::unique_ptr<Model>(
      new Model(std::make_shared<const Graph>(std::move(graph)), std::move(options)));
  // Compile the smallest plan now so that a broken model fails at load, not at first request.
  RETURN_IF_ERROR(model->GetPlan(1).status());
  return model;
}

Model::Model(std::shared_ptr<const Graph> graph, ModelOptions options)
    : graph_(std::move(graph)),
      options_(std::move(options)),
      constants_(std::make_unique<ConstantCache>()) {}

Model::~Model() = default;

size_t Model::ConstantBytes() const { return constants_->bytes(); }

size_t Model::InitializerBytes() const {
  size_t total = 0;
  for (const auto& [name, tensor] : graph_->initializers) total += tensor.bytes.size();
  return total;
}

absl::StatusOr<std::shared_ptr<const Plan>> Model::GetPlan(int64_t batch_size,
                                                           int num_threads) const {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name(), "': batch size must be >= 1, got ", batch_size));
  }
  // Only a dynamic first dimension (-1) is a batch dimension; a model whose inputs are all
  // fixed has a single plan whatever batch size is asked for.
  bool has_batch = false;
  for (const ValueInfo& in : inputs()) has_batch |= !in.dims.empty() && in.dims[0] < 0;
  if (!has_batch) batch_size = 1;
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  const auto key = std::make_pair(batch_size, threads);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  // Primitives are created under the thread count they will run with.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto plan = CompilePlan(graph_, options_, batch_size, threads, constants_.get());
  omp_set_num_threads(saved);
  if (!plan.ok()) return plan.status();
  plans_[key] = *plan;
  return *plan;
}

}  // namespace convserve::engine
