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
  if (options.precision != Precision::kFp32) {
    return absl::UnimplementedError(
        absl::StrCat(context, ": only fp32 precision is implemented so far"));
  }
  RETURN_IF_ERROR(Annotate(RunPasses(graph), context));
  auto model = std::unique_ptr<Model>(
      new Model(std::make_shared<const Graph>(std::move(graph)), std::move(options)));
  // Compile the smallest plan now so that a broken model fails at load, not at first request.
  int64_t batch = 1;
  if (!model->inputs().empty() && !model->inputs()[0].dims.empty() &&
      model->inputs()[0].dims[0] > 0) {
    batch = model->inputs()[0].dims[0];
  }
  RETURN_IF_ERROR(model->GetPlan(batch).status());
  return model;
}

absl::StatusOr<std::shared_ptr<const Plan>> Model::GetPlan(int64_t batch_size) const {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name(), "': batch size must be >= 1, got ", batch_size));
  }
  for (const ValueInfo& in : inputs()) {
    if (!in.dims.empty() && in.dims[0] > 0 && in.dims[0] != batch_size) {
      return absl::InvalidArgumentError(absl::StrCat("model '", name(), "': input '", in.name,
                                                     "' has a fixed batch of ", in.dims[0],
                                                     ", got ", batch_size));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plans_.find(batch_size);
  if (it != plans_.end()) return it->second;
  ASSIGN_OR_RETURN(std::shared_ptr<const Plan> plan, CompilePlan(graph_, options_, batch_size));
  plans_[batch_size] = plan;
  return plan;
}

}  // namespace convserve::engine
