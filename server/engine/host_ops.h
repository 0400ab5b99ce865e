// Shape inference and plain-loop host evaluation of every op the engine knows.
//
// Two uses: (1) the compiler folds constant subgraphs at plan-build time (Shape -> Gather ->
// Unsqueeze -> Concat -> Reshape, Constant arithmetic, ...) by evaluating nodes whose inputs are
// all known; (2) the compiler falls back to host evaluation for rare configurations no oneDNN
// primitive covers (e.g. MaxPool with an Indices output, Slice with steps, Pad).
// ONNX semantics, canonical form as documented in graph.h. No oneDNN here.
//
// Thread safety: pure functions.
#pragma once

#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/graph.h"
#include "server/engine/tensor.h"

namespace convserve::engine::host {

// What the compiler knows about one input of a node. `constant` is non-null when the value is
// known at compile time (initializer or folded). An absent optional input ("") has
// dtype kUndefined.
struct InputState {
  DataType dtype = DataType::kUndefined;
  Dims dims;
  const Tensor* constant = nullptr;
};

// Output dtypes and dims of `node` (one per node output; unused outputs "" still get an entry).
// INVALID_ARGUMENT for inconsistent shapes/attributes, UNIMPLEMENTED for unsupported ops,
// attributes or data types; messages name the node and op ("node 'x' (Op): ...").
absl::StatusOr<std::vector<ValueInfo>> InferOutputs(const Node& node,
                                                    std::span<const InputState> inputs);

// True when Evaluate supports this node with these input types.
bool CanEvaluate(const Node& node, std::span<const InputState> inputs);

// Computes `node` on plain row-major buffers. Output views are preallocated with the dims that
// InferOutputs returned. Absent inputs/outputs have data == nullptr.
absl::Status Evaluate(const Node& node, std::span<const TensorView> inputs,
                      std::span<const TensorView> outputs);

// Convenience for constant folding: infers, allocates and evaluates.
absl::StatusOr<std::vector<Tensor>> EvaluateConstant(const Node& node,
                                                     std::span<const Tensor* const> inputs);

}  // namespace convserve::engine::host
