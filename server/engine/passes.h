// Graph-level optimisation passes, run once by Model::Create before any plan is compiled:
//   1. RemoveNoOps: Identity and Dropout (inference) are bypassed.
//   2. FoldBatchNorm: Conv -> BatchNormalization with constant parameters becomes one Conv with
//      rescaled weights and bias.
//   3. FuseActivations: Conv/Gemm -> activation (Relu, LeakyRelu, Clip, Elu, Tanh, Sigmoid,
//      HardSwish, HardSigmoid) becomes a oneDNN eltwise post-op of the Conv/Gemm.
//   4. FuseResidualAdd: Conv -> Add(conv, other) with other of the same shape becomes a Conv with
//      a `sum` post-op (other is pre-loaded into the output buffer), followed by any activation.
// Every fused node records its ONNX sources in Node::source_nodes, in execution order.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/graph.h"

namespace convserve::engine {

absl::Status RunPasses(Graph& graph);

// Shapes of every value for one batch size (constants folded on the way), used by passes that
// must know whether two values have the same shape. Values: name -> dims; constants flagged.
struct ShapeInfo {
  Dims dims;
  bool constant = false;
};
absl::StatusOr<std::map<std::string, ShapeInfo>> InferGraphShapes(const Graph& graph,
                                                                  int64_t batch_size);

}  // namespace convserve::engine
