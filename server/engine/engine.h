// The engine's public API: an immutable Model built from a Graph, compiled into one Plan per
// batch size, executed with a per-caller Workspace.
//
// Thread safety: Model and Plan are immutable once created and may be shared by any number of
// threads. A Workspace belongs to one execution at a time. Model::GetPlan is thread-safe (plans
// are compiled once per batch size and cached).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/graph.h"
#include "server/engine/tensor.h"

namespace convserve::engine {

enum class Precision { kFp32, kBf16, kInt8 };

// Every ONNX op type the engine accepts (on a oneDNN primitive or on the host).
bool IsSupportedOpType(const std::string& op_type);

struct ModelOptions {
  std::string model_name = "model";  // used in error messages and logs
  Precision precision = Precision::kFp32;
};

// What one executed step of a plan is, for reports: filled at compile time.
struct StepInfo {
  std::string name;                       // the main ONNX node's name
  std::string kind;                       // "Conv", "MaxPool", "Reorder", ...
  std::vector<std::string> source_nodes;  // every ONNX node the step covers
  std::string kernel;                     // oneDNN impl_info_str(), or "reference"/"copy"
  std::vector<std::string> post_ops;      // fused operations, e.g. {"relu", "sum"}
  std::vector<Dims> input_dims;           // logical (NCHW) dims of the data inputs
  Dims output_dims;
  std::string src_format, weights_format, dst_format;  // memory formats, e.g. "nChw16c"
  // Attributes that the cost model reads (kernel, strides, dilations, pads, group,...).
  std::map<std::string, std::vector<int64_t>> shape_attributes;
  int64_t weight_elements = 0;  // weights used by the step (the bias is bias_elements)
  int64_t bias_elements = 0;
};

class Plan;
class ConstantCache;  // compiler.h: reordered weights shared by the plans of one model

// Per-execution state: activation arena, scratchpad. Create one per worker thread.
class Workspace {
 public:
  virtual ~Workspace() = default;
  // Bytes it allocated itself (activation arena and scratchpad; 0 when it uses a
  // WorkspaceMemory).
  virtual size_t byte_size() const = 0;
};

// An activation arena and a scratchpad that the workspaces of several plans share, grown to the
// largest of them. For a thread that runs one plan after another (a scheduler's worker running
// batches of varying size): every plan's activations then live in the same memory, which stays
// in cache from one batch to the next, where one arena per plan spread them over megabytes
// (measured in-process on fashion-sep, batch sizes 1..8 in turn: batch 1 took 98-112 us with one
// WorkspaceMemory, 132-146 us with one arena per plan, 87 us run alone). Workspaces of one
// WorkspaceMemory must never run at the same time; the WorkspaceMemory must outlive them.
class WorkspaceMemory {
 public:
  virtual ~WorkspaceMemory() = default;
  virtual size_t byte_size() const = 0;  // may be read from any thread
};
std::unique_ptr<WorkspaceMemory> CreateWorkspaceMemory();

struct RunOptions {
  int num_threads = 0;  // OpenMP threads for this execution; 0 = the plan's num_threads()
};

// One compiled plan for a fixed batch size.
class Plan {
 public:
  virtual ~Plan() = default;
  virtual int64_t batch_size() const = 0;
  virtual int num_threads() const = 0;  // the OpenMP threads its primitives were created for
  // What a workspace of it needs: the activation arena (every intermediate tensor, laid out
  // once) and the scratchpad (the largest any of its primitives asks for).
  virtual size_t arena_bytes() const = 0;
  virtual size_t scratchpad_bytes() const = 0;
  virtual std::unique_ptr<Workspace> CreateWorkspace() const = 0;
  // A workspace whose arena and scratchpad are `shared`'s (see WorkspaceMemory).
  virtual std::unique_ptr<Workspace> CreateWorkspace(WorkspaceMemory& shared) const = 0;

  // inputs: one view per model input, in Model::inputs() order, plain row-major with the
  // plan's batch size; outputs: preallocated views in Model::outputs() order, filled on
  // success. Never throws.
  virtual absl::Status Run(Workspace& workspace, std::span<const TensorView> inputs,
                           std::span<const TensorView> outputs,
                           const RunOptions& options = {}) const = 0;

  // Like Run, but times each step; step_ns receives one duration per step (steps() order).
  virtual absl::Status RunProfiled(Workspace& workspace, std::span<const TensorView> inputs,
                                   std::span<const TensorView> outputs,
                                   std::vector<int64_t>& step_ns,
                                   const RunOptions& options = {}) const = 0;

  virtual const std::vector<StepInfo>& steps() const = 0;
  virtual const std::vector<ValueInfo>& input_infos() const = 0;   // concrete dims
  virtual const std::vector<ValueInfo>& output_infos() const = 0;  // concrete dims
};

class Model {
 public:
  // Runs the passes (fold BatchNorm, fuse activations and residual adds, drop no-ops) and
  // checks every op is supported; errors name the model, node, op and what is unsupported.
  static absl::StatusOr<std::unique_ptr<Model>> Create(Graph graph, ModelOptions options);
  ~Model();

  const std::string& name() const { return options_.model_name; }
  const std::vector<ValueInfo>& inputs() const { return graph_->inputs; }
  const std::vector<ValueInfo>& outputs() const { return graph_->outputs; }
  const Graph& graph() const { return *graph_; }  // after passes
  const ModelOptions& options() const { return options_; }

  // The plan for `batch_size` (bound to every input whose first dimension is dynamic) and
  // `num_threads` OpenMP threads (0: the calling thread's current maximum), compiled on first use
  // and cached. oneDNN partitions each primitive's work for the thread count it was created
  // with, so a plan runs with its own thread count (RunOptions::num_threads 0 = the plan's).
  // A model without a dynamic first dimension has one plan per thread count.
  absl::StatusOr<std::shared_ptr<const Plan>> GetPlan(int64_t batch_size,
                                                      int num_threads = 0) const;
  // Bytes of reordered constants (weights, biases) the compiled plans hold together: each
  // distinct constant once, however many plans use it.
  size_t ConstantBytes() const;
  // Bytes of the imported weights the model keeps in plain form (the graph's initializers).
  size_t InitializerBytes() const;

 private:
  Model(std::shared_ptr<const Graph> graph, ModelOptions options);
  std::shared_ptr<const Graph> graph_;  // shared with every plan compiled from it
  ModelOptions options_;
  // One reordered copy of each constant for all the plans (batch sizes, thread counts).
  std::unique_ptr<ConstantCache> constants_;
  mutable std::mutex mutex_;
  mutable std::map<std::pair<int64_t, int>, std::shared_ptr<const Plan>> plans_;
};

}  // namespace convserve::engine
