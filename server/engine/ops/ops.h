// The op compilers with a oneDNN path. Each lowers one ONNX op kind (with fused post-ops where
// the passes attached them) to oneDNN primitives through a CompileContext, or returns
// UseHostFallback() for configurations no primitive covers. The registry (registry.cc) is the one
// list of supported op types.
#pragma once

#include "server/engine/compiler.h"

namespace convserve::engine::ops {

absl::Status CompileConv(CompileContext& ctx);        // conv.cc
absl::Status CompilePool(CompileContext& ctx);        // pool.cc: Max/Average/Global*Pool
absl::Status CompileGemm(CompileContext& ctx);        // gemm.cc
absl::Status CompileMatMul(CompileContext& ctx);      // gemm.cc
absl::Status CompileActivation(CompileContext& ctx);  // eltwise.cc
absl::Status CompilePRelu(CompileContext& ctx);       // eltwise.cc
absl::Status CompileBatchNorm(CompileContext& ctx);   // eltwise.cc
absl::Status CompileBinary(CompileContext& ctx);      // binary.cc: Add/Sub/Mul/Div
absl::Status CompileSoftmax(CompileContext& ctx);     // softmax.cc: Softmax/LogSoftmax
absl::Status CompileReduce(CompileContext& ctx);      // reduce.cc: ReduceMean/ReduceMax
absl::Status CompileReshape(CompileContext& ctx);     // layout.cc: Reshape/Flatten/(Un)Squeeze
absl::Status CompileIdentity(CompileContext& ctx);    // layout.cc: Identity/Dropout
absl::Status CompileTranspose(CompileContext& ctx);   // layout.cc
absl::Status CompileConcat(CompileContext& ctx);      // layout.cc
absl::Status CompileSlice(CompileContext& ctx);       // layout.cc
absl::Status CompileSplit(CompileContext& ctx);       // layout.cc
absl::Status CompileCast(CompileContext& ctx);        // layout.cc

// Shared spatial arithmetic (conv and pooling): ONNX pads/auto_pad -> oneDNN left/right
// padding that reproduces the output size shape inference computed.
struct Spatial {
  dnnl::memory::dims kernel, strides, dilations /* oneDNN: d-1 */, pad_l, pad_r;
};
Spatial SpatialParams(const Node& node, const Dims& input, const Dims& output, const Dims& kernel);
// Default attributes: scratchpad in user mode (concurrent executions share primitives).
dnnl::primitive_attr DefaultAttr();
// Rank-aligns `dims` to `rank` by prepending ones (numpy broadcasting).
Dims AlignRank(const Dims& dims, size_t rank);

}  // namespace convserve::engine::ops
