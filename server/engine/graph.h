// The engine's graph IR: what the ONNX importer produces and the passes and the compiler read.
//
// Nodes keep ONNX op type names and ONNX semantics, normalised by the importer to the latest
// opset form this engine implements ("canonical form", below), so that the engine needs no
// knowledge of opset versions and no protobuf.
//
// Canonical form (the importer guarantees it, the engine relies on it):
//   - Inputs that are compile-time parameters in newer opsets but attributes in older ones are
//     graph *inputs* as in the newest opset: Clip(min,max), Pad(pads,value), Slice(starts,ends,
//     axes,steps), Split(split), Squeeze/Unsqueeze(axes), Reshape(shape), ReduceMean/ReduceMax
//     take `axes` as an attribute (ints), Resize is not supported.
//   - An optional input that is absent is the empty string "".
//   - Softmax/LogSoftmax: opsets < 13 coerce to 2-D at `axis`; the importer marks such nodes
//     with attribute "legacy_2d_coercion" = 1 and the engine honours it.
//   - BatchNormalization: only inference outputs (Y) remain.
//   - Dropout: kept (the engine removes it); Identity: kept (removed by a pass).
//   - Constant nodes become initializers.
// Attribute values keep ONNX's types: int, float, string, ints, floats, tensor.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "server/engine/tensor.h"

namespace convserve::engine {

using AttributeValue =
    std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>, Tensor>;

struct Node {
  std::string name;     // unique; the importer invents "<op_type>_<index>" for unnamed nodes
  std::string op_type;  // ONNX op type, e.g. "Conv"
  std::vector<std::string> inputs;   // value names; "" = absent optional input
  std::vector<std::string> outputs;  // value names; "" = unused optional output
  std::map<std::string, AttributeValue> attributes;

  // Which original ONNX nodes this node stands for (itself, plus nodes fused into it by
  // passes, in execution order). Filled by the importer with {name}; passes append.
  std::vector<std::string> source_nodes;

  // Typed attribute access with defaults. Int/float/ints/floats/string.
  int64_t GetInt(const std::string& key, int64_t default_value) const;
  float GetFloat(const std::string& key, float default_value) const;
  std::string GetString(const std::string& key, const std::string& default_value) const;
  std::vector<int64_t> GetInts(const std::string& key,
                               const std::vector<int64_t>& default_value = {}) const;
  std::vector<float> GetFloats(const std::string& key,
                               const std::vector<float>& default_value = {}) const;
  bool HasAttribute(const std::string& key) const { return attributes.count(key) > 0; }
};

// A graph input or output. Dims of -1 are unknown (symbolic or dynamic, typically the batch).
struct ValueInfo {
  std::string name;
  DataType dtype = DataType::kFloat32;
  Dims dims;
};

struct Graph {
  std::string name;
  std::vector<ValueInfo> inputs;  // runtime inputs only (initializers excluded)
  std::vector<ValueInfo> outputs;
  std::vector<Node> nodes;  // topologically sorted
  std::map<std::string, Tensor> initializers;
};

}  // namespace convserve::engine
