// ONNX → engine Graph: parses ONNX models and normalises them to the canonical form that
// server/engine/graph.h describes, so that the engine never sees opset differences or protobuf.
//
// What the importer does:
//   - accepts default-domain ("" or "ai.onnx") opsets kMinOpset..kMaxOpset; a node of any other
//     domain fails the import and names the domain;
//   - turns initializers, and Constant nodes, into Graph::initializers; graph inputs that are
//     also initializers are not runtime inputs;
//   - names unnamed nodes "<op_type>_<index>" (index in the ONNX node list), keeps names unique
//     and sets source_nodes = {name};
//   - converts attributes (INT, FLOAT, STRING, INTS, FLOATS, TENSOR) and checks the types of the
//     attributes of the ops the engine implements;
//   - rewrites opset-dependent forms into the newest one (Clip, Pad, Slice, Split,
//     Squeeze/Unsqueeze, Reshape take constant inputs, made initializers "<node>/<input>";
//     ReduceMean/ReduceMax take `axes` as an attribute; Softmax/LogSoftmax/Hardmax get an explicit
//     `axis` and, below opset 13, "legacy_2d_coercion" = 1; BatchNormalization keeps only Y);
//   - rewrites the forms of opsets 1..6 that opset 7 removed: `consumed_inputs` and `is_test`
//     are dropped, Add/Sub/Mul/Div `broadcast`+`axis` and PRelu's per-channel 1-D slope become
//     numpy broadcasting (a reshaped constant or an inserted Unsqueeze node; this needs the
//     ranks that the model's value infos state), Gemm's `broadcast` is dropped, Cast's string
//     `to` becomes the type number;
//   - sorts nodes topologically and checks that every value used is defined.
// It does not decide whether the engine supports an op: Model::Create does.
//
// Errors:
//   - INVALID_ARGUMENT: the file is not an ONNX model or is malformed (a tensor whose data does
//     not match its dims, an attribute of the wrong type, an undefined value, a cycle, ...);
//   - UNIMPLEMENTED: a valid model that uses something the importer cannot express in the IR
//     (another op domain, an opset outside the range, subgraph attributes (If/Loop/Scan), sparse,
//     string or external-data tensors, non-tensor inputs, non-constant parameters that the
//     canonical form needs constant, Pad modes other than "constant", BatchNormalization in
//     training mode);
//   - NOT_FOUND: ImportOnnxFile / ReadTensorProtoFile on a file that cannot be opened.
// Messages name the file, node (and its op type), attribute or tensor concerned.
//
// Thread safety: the functions are pure; call them from any thread.
#pragma once

#include <cstdint>
#include <filesystem>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "server/engine/graph.h"
#include "server/engine/tensor.h"

// Named onnx_import, not onnx, so that `onnx::` keeps meaning the ONNX protobuf namespace.
namespace convserve::onnx_import {

inline constexpr int64_t kMinOpset = 1;
inline constexpr int64_t kMaxOpset = 18;

absl::StatusOr<engine::Graph> ImportOnnxFile(const std::filesystem::path& path);
absl::StatusOr<engine::Graph> ImportOnnxModel(const onnx::ModelProto& model);

// A TensorProto as a dense little-endian host tensor. Reads raw_data or the typed field of the
// element type (float_data; int32_data for int32, int16, int8, uint16, uint8, bool, and the bits
// of float16/bfloat16; int64_data; double_data; uint64_data for uint32/uint64). External data is
// rejected (UNIMPLEMENTED); `base_dir` only serves to name the file that would have been read.
absl::StatusOr<engine::Tensor> TensorFromProto(const onnx::TensorProto& tensor,
                                               const std::filesystem::path& base_dir = {});

// Reads a serialized TensorProto file (the conformance data's input_N.pb / output_N.pb).
absl::StatusOr<engine::Tensor> ReadTensorProtoFile(const std::filesystem::path& path);

// The engine's DataType for an ONNX TensorProto::DataType value; kUndefined when there is none.
engine::DataType DataTypeFromOnnx(int32_t onnx_type);

}  // namespace convserve::onnx_import
