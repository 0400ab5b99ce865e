#include "server/onnx/importer.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status.h"

namespace convserve::onnx_import {
namespace {

static_assert(std::endian::native == std::endian::little,
              "TensorFromProto copies ONNX's little-endian raw_data as is");

using engine::AttributeValue;
using engine::DataType;
using engine::Dims;
using engine::Node;
using engine::Tensor;
using AttrType = onnx::AttributeProto::AttributeType;

// Tensors above this many elements are rejected before any allocation: no real convnet comes
// near it, and it keeps a malformed dims field from requesting terabytes.
constexpr int64_t kMaxTensorElements = int64_t{1} << 34;

std::string OnnxTypeName(int32_t onnx_type) {
  if (onnx::TensorProto::DataType_IsValid(onnx_type)) {
    return onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(onnx_type));
  }
  return absl::StrCat("type ", onnx_type);
}

std::string AttrTypeName(AttrType type) { return onnx::AttributeProto::AttributeType_Name(type); }

std::string NodeContext(const std::string& name, const std::string& op_type) {
  return absl::StrCat("node '", name, "' (", op_type, ")");
}

// The attribute types of the ops the engine implements, as the ONNX operator schemas define
// them; an attribute of another type is a malformed model. Attributes not listed pass as is.
const std::map<std::string_view, std::map<std::string_view, AttrType>>& ExpectedAttributeTypes() {
  using A = onnx::AttributeProto;
  static const auto* const kTable =
      new std::map<std::string_view, std::map<std::string_view, AttrType>>{
          {"Conv",
           {{"auto_pad", A::STRING},
            {"dilations", A::INTS},
            {"group", A::INT},
            {"kernel_shape", A::INTS},
            {"pads", A::INTS},
            {"strides", A::INTS}}},
          {"MaxPool",
           {{"auto_pad", A::STRING},
            {"ceil_mode", A::INT},
            {"dilations", A::INTS},
            {"kernel_shape", A::INTS},
            {"pads", A::INTS},
            {"storage_order", A::INT},
            {"strides", A::INTS}}},
          {"AveragePool",
           {{"auto_pad", A::STRING},
            {"ceil_mode", A::INT},
            {"count_include_pad", A::INT},
            {"kernel_shape", A::INTS},
            {"pads", A::INTS},
            {"strides", A::INTS}}},
          {"BatchNormalization",
           {{"epsilon", A::FLOAT},
            {"momentum", A::FLOAT},
            {"spatial", A::INT},
            {"training_mode", A::INT}}},
          {"LeakyRelu", {{"alpha", A::FLOAT}}},
          {"Elu", {{"alpha", A::FLOAT}}},
          {"HardSigmoid", {{"alpha", A::FLOAT}, {"beta", A::FLOAT}}},
          {"Clip", {{"min", A::FLOAT}, {"max", A::FLOAT}}},
          {"Gemm",
           {{"alpha", A::FLOAT}, {"beta", A::FLOAT}, {"transA", A::INT}, {"transB", A::INT}}},
          {"Concat", {{"axis", A::INT}}},
          {"Split", {{"axis", A::INT}, {"split", A::INTS}, {"num_outputs", A::INT}}},
          {"Slice", {{"starts", A::INTS}, {"ends", A::INTS}, {"axes", A::INTS}}},
          {"Flatten", {{"axis", A::INT}}},
          {"Reshape", {{"allowzero", A::INT}, {"shape", A::INTS}}},
          {"Transpose", {{"perm", A::INTS}}},
          {"Squeeze", {{"axes", A::INTS}}},
          {"Unsqueeze", {{"axes", A::INTS}}},
          {"Pad", {{"mode", A::STRING}, {"pads", A::INTS}, {"value", A::FLOAT}}},
          {"ReduceMean",
           {{"axes", A::INTS}, {"keepdims", A::INT}, {"noop_with_empty_axes", A::INT}}},
          {"ReduceMax",
           {{"axes", A::INTS}, {"keepdims", A::INT}, {"noop_with_empty_axes", A::INT}}},
          {"Softmax", {{"axis", A::INT}}},
          {"LogSoftmax", {{"axis", A::INT}}},
          {"Hardmax", {{"axis", A::INT}}},
          {"Dropout", {{"ratio", A::FLOAT}, {"seed", A::INT}}},
          {"Shape", {{"start", A::INT}, {"end", A::INT}}},
          {"Gather", {{"axis", A::INT}}},
          {"Cast", {{"to", A::INT}}},
          {"ConstantOfShape", {{"value", A::TENSOR}}},
          {"Constant",
           {{"value", A::TENSOR},
            {"value_float", A::FLOAT},
            {"value_floats", A::FLOATS},
            {"value_int", A::INT},
            {"value_ints", A::INTS},
            {"value_string", A::STRING},
            {"value_strings", A::STRINGS}}},
      };
  return *kTable;
}

// Old exporters leave AttributeProto.type unset; infer it from the field that holds a value.
AttrType ResolvedType(const onnx::AttributeProto& a) {
  using A = onnx::AttributeProto;
  if (a.type() != A::UNDEFINED) return a.type();
  if (a.has_f()) return A::FLOAT;
  if (a.has_i()) return A::INT;
  if (a.has_s()) return A::STRING;
  if (a.has_t()) return A::TENSOR;
  if (a.has_g()) return A::GRAPH;
  if (a.has_sparse_tensor()) return A::SPARSE_TENSOR;
  if (a.floats_size() > 0) return A::FLOATS;
  if (a.ints_size() > 0) return A::INTS;
  if (a.strings_size() > 0) return A::STRINGS;
  if (a.tensors_size() > 0) return A::TENSORS;
  if (a.graphs_size() > 0) return A::GRAPHS;
  return A::UNDEFINED;
}

absl::StatusOr<AttributeValue> ConvertAttribute(const onnx::AttributeProto& a,
                                                const std::string& context) {
  using A = onnx::AttributeProto;
  const std::string where = absl::StrCat(context, ": attribute '", a.name(), "'");
  if (!a.ref_attr_name().empty()) {
    return absl::UnimplementedError(absl::StrCat(where, " refers to function attribute '",
                                                 a.ref_attr_name(),
                                                 "'; model-local functions are not supported"));
  }
  const AttrType type = ResolvedType(a);
  switch (type) {
    case A::INT:
      return AttributeValue(static_cast<int64_t>(a.i()));
    case A::FLOAT:
      return AttributeValue(a.f());
    case A::STRING:
      return AttributeValue(a.s());
    case A::INTS:
    case A::UNDEFINED:  // an empty list whose type was not recorded
      return AttributeValue(std::vector<int64_t>(a.ints().begin(), a.ints().end()));
    case A::FLOATS:
      return AttributeValue(std::vector<float>(a.floats().begin(), a.floats().end()));
    case A::TENSOR: {
      auto tensor = TensorFromProto(a.t());
      if (!tensor.ok()) return Annotate(tensor.status(), where);
      return AttributeValue(*std::move(tensor));
    }
    case A::GRAPH:
    case A::GRAPHS:
      return absl::UnimplementedError(
          absl::StrCat(where, " is a subgraph; control flow (If/Loop/Scan) is not supported"));
    default:
      return absl::UnimplementedError(
          absl::StrCat(where, " has type ", AttrTypeName(type), ", which is not supported"));
  }
}

Tensor Int64Vector(const std::vector<int64_t>& values) {
  Tensor t(DataType::kInt64, {static_cast<int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

template <typename T>
Tensor Scalar(DataType dtype, T value) {
  Tensor t(dtype, {});
  std::memcpy(t.bytes.data(), &value, sizeof(T));
  return t;
}

std::optional<AttributeValue> TakeAttribute(Node& node, const std::string& key) {
  auto it = node.attributes.find(key);
  if (it == node.attributes.end()) return std::nullopt;
  AttributeValue value = std::move(it->second);
  node.attributes.erase(it);
  return value;
}

void SetInput(Node& node, size_t index, const std::string& value) {
  if (node.inputs.size() <= index) node.inputs.resize(index + 1);
  node.inputs[index] = value;
}

void TrimTrailingAbsentInputs(Node& node) {
  while (!node.inputs.empty() && node.inputs.back().empty()) node.inputs.pop_back();
}

class Importer {
 public:
  explicit Importer(const onnx::ModelProto& model) : model_(model) {}

  absl::StatusOr<engine::Graph> Import() {
    const onnx::GraphProto& graph = model_.graph();
    graph_.name = graph.name();
    RETURN_IF_ERROR(ReadOpset());
    CollectValueNames();
    RETURN_IF_ERROR(ReadInitializers());
    CollectRanks();
    RETURN_IF_ERROR(ReadInputsAndOutputs());
    RETURN_IF_ERROR(ReadNodes());
    RETURN_IF_ERROR(SortNodes());
    return std::move(graph_);
  }

 private:
  absl::Status ReadOpset() {
    for (const auto& opset : model_.opset_import()) {
      if (opset.domain().empty() || opset.domain() == "ai.onnx") opset_ = opset.version();
    }
    if (opset_ >= 0 && (opset_ < kMinOpset || opset_ > kMaxOpset)) {
      return absl::UnimplementedError(absl::StrCat("opset ", opset_,
                                                   " of the default domain is not supported "
                                                   "(supported: ",
                                                   kMinOpset, "..", kMaxOpset, ")"));
    }
    return absl::OkStatus();
  }

  void CollectValueNames() {
    const onnx::GraphProto& graph = model_.graph();
    for (const auto& t : graph.initializer()) value_names_.insert(t.name());
    for (const auto& v : graph.input()) value_names_.insert(v.name());
    for (const auto& v : graph.output()) value_names_.insert(v.name());
    for (const auto& n : graph.node()) {
      for (const auto& name : n.input()) {
        value_names_.insert(name);
        consumed_.insert(name);
      }
      for (const auto& name : n.output()) value_names_.insert(name);
    }
    for (const auto& v : graph.output()) consumed_.insert(v.name());
  }

  // Ranks the model states (inputs, outputs, value_info, initializers): the legacy broadcast
  // forms need them, as there is no shape inference here.
  void CollectRanks() {
    const onnx::GraphProto& graph = model_.graph();
    auto add = [&](const auto& infos) {
      for (const onnx::ValueInfoProto& vi : infos) {
        if (vi.type().has_tensor_type() && vi.type().tensor_type().has_shape()) {
          ranks_[vi.name()] = vi.type().tensor_type().shape().dim_size();
        }
      }
    };
    add(graph.input());
    add(graph.output());
    add(graph.value_info());
    for (const auto& [name, tensor] : graph_.initializers) {
      ranks_[name] = static_cast<int64_t>(tensor.dims.size());
    }
  }

  std::optional<int64_t> RankOf(const std::string& value) const {
    auto it = ranks_.find(value);
    if (it == ranks_.end()) return std::nullopt;
    return it->second;
  }

  absl::Status ReadInitializers() {
    const onnx::GraphProto& graph = model_.graph();
    if (graph.sparse_initializer_size() > 0) {
      return absl::UnimplementedError(absl::StrCat("sparse initializer '",
                                                   graph.sparse_initializer(0).values().name(),
                                                   "': sparse tensors are not supported"));
    }
    for (const auto& proto : graph.initializer()) {
      if (proto.name().empty()) return absl::InvalidArgumentError("an initializer has no name");
      auto tensor = TensorFromProto(proto);
      if (!tensor.ok()) return Annotate(tensor.status(), "initializer");
      if (!graph_.initializers.emplace(proto.name(), *std::move(tensor)).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("initializer '", proto.name(), "' is defined twice"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<engine::ValueInfo> ConvertValueInfo(const onnx::ValueInfoProto& proto,
                                                     bool is_input) {
    const char* kind = is_input ? "input" : "output";
    const std::string where = absl::StrCat("graph ", kind, " '", proto.name(), "'");
    if (proto.name().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("a graph ", kind, " has no name"));
    }
    engine::ValueInfo info;
    info.name = proto.name();
    info.dtype = DataType::kUndefined;
    const onnx::TypeProto& type = proto.type();
    if (type.value_case() == onnx::TypeProto::VALUE_NOT_SET) {
      // Outputs without a type are tolerated: the engine infers them.
      if (is_input) return absl::InvalidArgumentError(absl::StrCat(where, " has no type"));
      return info;
    }
    if (!type.has_tensor_type()) {
      return absl::UnimplementedError(
          absl::StrCat(where,
                       " is not a tensor (sequence, map, optional or sparse tensor); only "
                       "dense tensors are supported"));
    }
    const onnx::TypeProto::Tensor& tensor_type = type.tensor_type();
    if (tensor_type.elem_type() != onnx::TensorProto::UNDEFINED) {
      info.dtype = DataTypeFromOnnx(tensor_type.elem_type());
      if (info.dtype == DataType::kUndefined) {
        return absl::UnimplementedError(absl::StrCat(where, " has element type ",
                                                     OnnxTypeName(tensor_type.elem_type()),
                                                     ", which is not supported"));
      }
    } else if (is_input) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has no element type"));
    }
    if (!tensor_type.has_shape()) {
      if (is_input) {
        return absl::UnimplementedError(
            absl::StrCat(where, " has no shape (unknown rank); inputs need a known rank"));
      }
      return info;  // unknown rank: left empty, the engine infers it
    }
    for (const auto& dim : tensor_type.shape().dim()) {
      if (dim.has_dim_value()) {
        if (dim.dim_value() < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, " has a negative dimension ", dim.dim_value()));
        }
        info.dims.push_back(dim.dim_value());
      } else {
        info.dims.push_back(-1);  // dim_param or unknown
      }
    }
    return info;
  }

  absl::Status ReadInputsAndOutputs() {
    const onnx::GraphProto& graph = model_.graph();
    for (const auto& proto : graph.input()) {
      if (graph_.initializers.count(proto.name()) > 0) continue;  // a parameter, not an input
      ASSIGN_OR_RETURN(auto info, ConvertValueInfo(proto, /*is_input=*/true));
      graph_.inputs.push_back(std::move(info));
    }
    for (const auto& proto : graph.output()) {
      ASSIGN_OR_RETURN(auto info, ConvertValueInfo(proto, /*is_input=*/false));
      graph_.outputs.push_back(std::move(info));
    }
    return absl::OkStatus();
  }

  // Unique node names: ONNX's own where given, "<op_type>_<index>" otherwise; a name already
  // taken (by an earlier node, or an ONNX name of any node) gets a "_<k>" suffix.
  std::vector<std::string> AssignNodeNames() {
    const auto& nodes = model_.graph().node();
    std::set<std::string> onnx_names;
    for (const auto& n : nodes) {
      if (!n.name().empty()) onnx_names.insert(n.name());
    }
    std::set<std::string> used;
    std::vector<std::string> names;
    names.reserve(nodes.size());
    for (int i = 0; i < nodes.size(); ++i) {
      const auto& n = nodes[i];
      const bool generated = n.name().empty();
      const std::string base = generated ? absl::StrCat(n.op_type(), "_", i) : n.name();
      std::string name = base;
      for (int k = 1; used.count(name) > 0 || (generated && onnx_names.count(name) > 0); ++k) {
        name = absl::StrCat(base, "_", k);
      }
      used.insert(name);
      names.push_back(std::move(name));
    }
    node_names_ = std::move(used);
    return names;
  }

  absl::Status CheckDomain(const onnx::NodeProto& proto, const std::string& context) {
    if (!proto.domain().empty() && proto.domain() != "ai.onnx") {
      return absl::UnimplementedError(absl::StrCat(context, ": domain '", proto.domain(),
                                                   "' is not supported (only the default "
                                                   "ONNX domain is)"));
    }
    if (opset_ < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": the model imports no opset of the default domain"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::map<std::string, AttributeValue>> ConvertAttributes(
      const onnx::NodeProto& proto, const std::string& context) {
    std::map<std::string, AttributeValue> attributes;
    const auto& table = ExpectedAttributeTypes();
    const auto op_it = table.find(proto.op_type());
    for (const auto& a : proto.attribute()) {
      if (a.name().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(context, ": an attribute has no name"));
      }
      const bool legacy_cast = proto.op_type() == "Cast" && opset_ < 6;  // `to` was a STRING
      if (op_it != table.end() && !legacy_cast) {
        const auto expected = op_it->second.find(a.name());
        const AttrType type = ResolvedType(a);
        if (expected != op_it->second.end() && type != expected->second &&
            !(type == onnx::AttributeProto::UNDEFINED &&
              expected->second == onnx::AttributeProto::INTS)) {
          return absl::InvalidArgumentError(
              absl::StrCat(context, ": attribute '", a.name(), "' has type ", AttrTypeName(type),
                           ", expected ", AttrTypeName(expected->second)));
        }
      }
      ASSIGN_OR_RETURN(auto value, ConvertAttribute(a, context));
      if (!attributes.emplace(a.name(), std::move(value)).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(context, ": attribute '", a.name(), "' is given twice"));
      }
    }
    return attributes;
  }

  // Constant → initializer named after its output.
  absl::Status ConvertConstant(const onnx::NodeProto& proto, const std::string& context) {
    if (proto.output_size() != 1 || proto.output(0).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": expected one output"));
    }
    if (proto.attribute_size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": expected exactly one value attribute, got ", proto.attribute_size()));
    }
    const std::string& key = proto.attribute(0).name();
    if (key == "sparse_value" || key == "value_string" || key == "value_strings") {
      return absl::UnimplementedError(absl::StrCat(context, ": attribute '", key,
                                                   "': sparse and string constants are not "
                                                   "supported"));
    }
    ASSIGN_OR_RETURN(auto attributes, ConvertAttributes(proto, context));
    const AttributeValue& value = attributes.begin()->second;
    Tensor tensor;
    if (key == "value") {
      tensor = std::get<Tensor>(value);
    } else if (key == "value_float") {
      tensor = Scalar(DataType::kFloat32, std::get<float>(value));
    } else if (key == "value_int") {
      tensor = Scalar(DataType::kInt64, std::get<int64_t>(value));
    } else if (key == "value_floats") {
      const auto& floats = std::get<std::vector<float>>(value);
      tensor = Tensor(DataType::kFloat32, {static_cast<int64_t>(floats.size())});
      if (!floats.empty()) std::memcpy(tensor.bytes.data(), floats.data(), tensor.bytes.size());
    } else if (key == "value_ints") {
      tensor = Int64Vector(std::get<std::vector<int64_t>>(value));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(context, ": unknown attribute '", key, "'"));
    }
    const std::string& output = proto.output(0);
    ranks_[output] = static_cast<int64_t>(tensor.dims.size());
    if (!graph_.initializers.emplace(output, std::move(tensor)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": output '", output, "' is also an initializer"));
    }
    return absl::OkStatus();
  }

  absl::Status ReadNodes() {
    const auto& nodes = model_.graph().node();
    const std::vector<std::string> names = AssignNodeNames();
    // Constants first, so that canonicalisation can read constant inputs whatever the order.
    for (int i = 0; i < nodes.size(); ++i) {
      if (nodes[i].op_type() != "Constant") continue;
      const std::string context = NodeContext(names[i], nodes[i].op_type());
      RETURN_IF_ERROR(CheckDomain(nodes[i], context));
      RETURN_IF_ERROR(ConvertConstant(nodes[i], context));
    }
    for (int i = 0; i < nodes.size(); ++i) {
      const onnx::NodeProto& proto = nodes[i];
      if (proto.op_type() == "Constant") continue;
      const std::string context = NodeContext(names[i], proto.op_type());
      if (proto.op_type().empty()) {
        return absl::InvalidArgumentError(absl::StrCat("node '", names[i], "' has no op_type"));
      }
      RETURN_IF_ERROR(CheckDomain(proto, context));
      Node node;
      node.name = names[i];
      node.op_type = proto.op_type();
      node.inputs.assign(proto.input().begin(), proto.input().end());
      node.outputs.assign(proto.output().begin(), proto.output().end());
      ASSIGN_OR_RETURN(node.attributes, ConvertAttributes(proto, context));
      node.source_nodes = {node.name};
      RETURN_IF_ERROR(Canonicalize(node, context));
      graph_.nodes.push_back(std::move(node));
    }
    return absl::OkStatus();
  }

  std::string AddInitializer(const Node& node, const std::string& what, Tensor tensor) {
    const std::string name = NewValueName(absl::StrCat(node.name, "/", what));
    ranks_[name] = static_cast<int64_t>(tensor.dims.size());
    graph_.initializers.emplace(name, std::move(tensor));
    return name;
  }

  // Moves an attribute into input `index` as a new initializer; leaves the input as it is when
  // the attribute is absent (optional), fails when it is absent and `required`.
  absl::Status AttributeToInput(Node& node, const std::string& context, const std::string& key,
                                size_t index, bool required) {
    std::optional<AttributeValue> value = TakeAttribute(node, key);
    if (!value) {
      if (required) {
        return absl::InvalidArgumentError(
            absl::StrCat(context, ": missing required attribute '", key, "'"));
      }
      if (node.inputs.size() <= index) SetInput(node, index, "");
      return absl::OkStatus();
    }
    Tensor tensor;
    if (const auto* ints = std::get_if<std::vector<int64_t>>(&*value)) {
      tensor = Int64Vector(*ints);
    } else if (const float* f = std::get_if<float>(&*value)) {
      tensor = Scalar(DataType::kFloat32, *f);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": attribute '", key, "' has an unexpected type"));
    }
    SetInput(node, index, AddInitializer(node, key, std::move(tensor)));
    return absl::OkStatus();
  }

  // Input `index` when it names an initializer; nullopt when it is absent.
  absl::StatusOr<std::optional<Tensor>> ConstantInput(const Node& node, const std::string& context,
                                                      size_t index, const std::string& what) {
    if (node.inputs.size() <= index || node.inputs[index].empty()) return std::nullopt;
    auto it = graph_.initializers.find(node.inputs[index]);
    if (it == graph_.initializers.end()) {
      return absl::UnimplementedError(absl::StrCat(context, ": input '", node.inputs[index], "' (",
                                                   what,
                                                   ") must be a constant (an initializer or "
                                                   "Constant output)"));
    }
    return it->second;
  }

  absl::Status Canonicalize(Node& node, const std::string& context) {
    if (opset_ < 7) RETURN_IF_ERROR(CanonicalizeLegacy(node, context));
    const std::string& op = node.op_type;
    if (op == "Clip" && opset_ < 11) {
      node.inputs.resize(1);
      RETURN_IF_ERROR(AttributeToInput(node, context, "min", 1, false));
      RETURN_IF_ERROR(AttributeToInput(node, context, "max", 2, false));
      TrimTrailingAbsentInputs(node);
    } else if (op == "Pad") {
      const std::string mode = node.GetString("mode", "constant");
      if (mode != "constant") {
        return absl::UnimplementedError(
            absl::StrCat(context, ": mode '", mode, "' is not supported (only 'constant')"));
      }
      if (opset_ < 11) {
        node.inputs.resize(1);
        RETURN_IF_ERROR(AttributeToInput(node, context, "pads", 1, true));
        RETURN_IF_ERROR(AttributeToInput(node, context, "value", 2, false));
        TrimTrailingAbsentInputs(node);
      } else if (node.inputs.size() > 3 && !node.inputs[3].empty()) {
        return absl::UnimplementedError(
            absl::StrCat(context, ": the 'axes' input (opset 18) is not supported"));
      }
    } else if (op == "Slice" && opset_ < 10) {
      node.inputs.resize(1);
      RETURN_IF_ERROR(AttributeToInput(node, context, "starts", 1, true));
      RETURN_IF_ERROR(AttributeToInput(node, context, "ends", 2, true));
      RETURN_IF_ERROR(AttributeToInput(node, context, "axes", 3, false));
      TrimTrailingAbsentInputs(node);
    } else if (op == "Split" && opset_ < 13) {
      RETURN_IF_ERROR(AttributeToInput(node, context, "split", 1, false));
      TrimTrailingAbsentInputs(node);
    } else if ((op == "Squeeze" || op == "Unsqueeze") && opset_ < 13) {
      RETURN_IF_ERROR(AttributeToInput(node, context, "axes", 1, op == "Unsqueeze"));
      TrimTrailingAbsentInputs(node);
    } else if (op == "Reshape" && node.HasAttribute("shape")) {  // Reshape-1 (opset < 5)
      node.inputs.resize(1);
      RETURN_IF_ERROR(AttributeToInput(node, context, "shape", 1, true));
    } else if ((op == "ReduceMean" || op == "ReduceMax") && opset_ >= 18) {
      ASSIGN_OR_RETURN(auto axes, ConstantInput(node, context, 1, "axes"));
      node.inputs.resize(1);
      const bool noop_with_empty_axes = node.GetInt("noop_with_empty_axes", 0) != 0;
      node.attributes.erase("noop_with_empty_axes");
      if (axes && axes->num_elements() > 0) {
        node.attributes["axes"] = axes->AsInt64();
      } else if (noop_with_empty_axes) {
        node.op_type = "Identity";
        node.attributes.clear();
      }
    } else if (op == "Softmax" || op == "LogSoftmax" || op == "Hardmax") {
      if (opset_ < 13) {
        node.attributes["legacy_2d_coercion"] = int64_t{1};
        node.attributes.emplace("axis", int64_t{1});
      } else {
        node.attributes.emplace("axis", int64_t{-1});
      }
    } else if (op == "BatchNormalization") {
      if (std::optional<AttributeValue> spatial = TakeAttribute(node, "spatial")) {
        if (std::get<int64_t>(*spatial) != 1) {
          return absl::UnimplementedError(
              absl::StrCat(context, ": spatial=0 (per-activation statistics) is not supported"));
        }
      }
      if (std::optional<AttributeValue> training = TakeAttribute(node, "training_mode")) {
        if (std::get<int64_t>(*training) != 0) {
          return absl::UnimplementedError(
              absl::StrCat(context, ": training_mode=1 is not supported (inference only)"));
        }
      }
      for (size_t i = 1; i < node.outputs.size(); ++i) {
        if (!node.outputs[i].empty() && consumed_.count(node.outputs[i]) > 0) {
          return absl::UnimplementedError(absl::StrCat(
              context, ": output '", node.outputs[i],
              "' (training statistics) is used; only the inference output Y is supported"));
        }
      }
      node.outputs.resize(1);
    }
    return absl::OkStatus();
  }

  // Opsets 1..6: attributes and broadcasting rules that opset 7 removed.
  absl::Status CanonicalizeLegacy(Node& node, const std::string& context) {
    const std::string& op = node.op_type;
    node.attributes.erase("consumed_inputs");  // an opset-1 memory hint without semantics
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      // broadcast=1 broadcasts B to A: aligned at `axis` if given, else at the trailing dims
      // (which is what multidirectional broadcasting does).
      std::optional<AttributeValue> broadcast = TakeAttribute(node, "broadcast");
      std::optional<AttributeValue> axis = TakeAttribute(node, "axis");
      const auto* b = broadcast ? std::get_if<int64_t>(&*broadcast) : nullptr;
      const auto* a = axis ? std::get_if<int64_t>(&*axis) : nullptr;
      if (b && *b != 0 && a && node.inputs.size() == 2) {
        RETURN_IF_ERROR(AlignForBroadcast(node, context, 1, *a));
      }
    } else if (op == "Gemm") {
      node.attributes.erase("broadcast");  // Gemm-7 always broadcasts C
    } else if (op == "PRelu") {
      // PRelu-6 applies a 1-D slope per channel (axis 1); numpy broadcasting needs [C,1,..,1].
      if (node.inputs.size() == 2) {
        auto slope = graph_.initializers.find(node.inputs[1]);
        const bool per_channel =
            slope == graph_.initializers.end()
                ? RankOf(node.inputs[1]) == 1
                : slope->second.dims.size() == 1 && slope->second.num_elements() > 1;
        if (per_channel) RETURN_IF_ERROR(AlignForBroadcast(node, context, 1, 1));
      }
    } else if (op == "BatchNormalization" || op == "Dropout") {
      if (std::optional<AttributeValue> is_test = TakeAttribute(node, "is_test")) {
        const auto* v = std::get_if<int64_t>(&*is_test);
        if (op == "BatchNormalization" && v && *v == 0) {
          return absl::UnimplementedError(
              absl::StrCat(context, ": is_test=0 (training) is not supported"));
        }
      }
    } else if (op == "Concat") {
      node.attributes.emplace("axis", int64_t{1});  // Concat-1 defaulted to 1
    } else if (op == "Pad" && opset_ < 2) {
      if (std::optional<AttributeValue> paddings = TakeAttribute(node, "paddings")) {
        node.attributes["pads"] = std::move(*paddings);
      }
    } else if (op == "Cast") {
      auto it = node.attributes.find("to");
      if (const auto* to =
              it == node.attributes.end() ? nullptr : std::get_if<std::string>(&it->second)) {
        onnx::TensorProto::DataType type;
        if (!onnx::TensorProto::DataType_Parse(*to, &type)) {
          return absl::InvalidArgumentError(
              absl::StrCat(context, ": attribute 'to' names no data type: '", *to, "'"));
        }
        it->second = static_cast<int64_t>(type);
      }
    }
    return absl::OkStatus();
  }

  // Makes input `index` broadcast numpy-style against input 0 as legacy broadcasting did when
  // aligning it at `axis` of input 0: appends rank(A) - axis - rank(B) unit dims to it, by
  // reshaping a constant or by inserting an Unsqueeze node.
  absl::Status AlignForBroadcast(Node& node, const std::string& context, size_t index,
                                 int64_t axis) {
    const std::optional<int64_t> rank_a = RankOf(node.inputs[0]);
    const std::optional<int64_t> rank_b = RankOf(node.inputs[index]);
    if (!rank_a || !rank_b) {
      return absl::UnimplementedError(
          absl::StrCat(context, ": legacy broadcasting (opset < 7) of '", node.inputs[index],
                       "' needs the ranks of the inputs, which the model does not state"));
    }
    if (axis < 0) axis += *rank_a;
    const int64_t trailing = *rank_a - axis - *rank_b;
    if (axis < 0 || trailing < 0) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": cannot broadcast a rank-", *rank_b,
                                                     " input to a rank-", *rank_a,
                                                     " input at axis ", axis));
    }
    if (trailing == 0) return absl::OkStatus();
    const std::string& b = node.inputs[index];
    auto constant = graph_.initializers.find(b);
    if (constant != graph_.initializers.end()) {
      Tensor aligned = constant->second;
      aligned.dims.insert(aligned.dims.end(), trailing, 1);
      node.inputs[index] = AddInitializer(node, b, std::move(aligned));
    } else {
      std::vector<int64_t> axes;
      for (int64_t i = 0; i < trailing; ++i) axes.push_back(*rank_b + i);
      Node unsqueeze;
      unsqueeze.name = UniqueNodeName(absl::StrCat(node.name, "/unsqueeze"));
      unsqueeze.op_type = "Unsqueeze";
      unsqueeze.inputs = {b, AddInitializer(node, "unsqueeze_axes", Int64Vector(axes))};
      unsqueeze.outputs = {NewValueName(absl::StrCat(node.name, "/", b, "_aligned"))};
      unsqueeze.source_nodes = {node.name};
      node.inputs[index] = unsqueeze.outputs[0];
      graph_.nodes.push_back(std::move(unsqueeze));
    }
    ranks_[node.inputs[index]] = *rank_a - axis;
    return absl::OkStatus();
  }

  std::string UniqueNodeName(const std::string& base) {
    std::string name = base;
    for (int k = 1; node_names_.count(name) > 0; ++k) name = absl::StrCat(base, "_", k);
    node_names_.insert(name);
    return name;
  }

  std::string NewValueName(const std::string& base) {
    std::string name = base;
    for (int k = 1; value_names_.count(name) > 0; ++k) name = absl::StrCat(base, "_", k);
    value_names_.insert(name);
    return name;
  }

  // Kahn's algorithm, taking the lowest original index first so that an already sorted graph
  // keeps its order; checks that every value is defined once.
  absl::Status SortNodes() {
    std::set<std::string> available = {""};
    for (const auto& input : graph_.inputs) available.insert(input.name);
    for (const auto& [name, tensor] : graph_.initializers) available.insert(name);

    std::map<std::string, size_t> producer;
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      const Node& node = graph_.nodes[i];
      for (const auto& output : node.outputs) {
        if (output.empty()) continue;
        if (available.count(output) > 0 || !producer.emplace(output, i).second) {
          return absl::InvalidArgumentError(
              absl::StrCat(NodeContext(node.name, node.op_type), ": output '", output,
                           "' is already defined by a graph input, initializer or node"));
        }
      }
    }
    const size_t n = graph_.nodes.size();
    std::vector<int> pending(n, 0);
    std::vector<std::vector<size_t>> consumers(n);
    for (size_t i = 0; i < n; ++i) {
      const Node& node = graph_.nodes[i];
      std::set<size_t> deps;
      for (const auto& input : node.inputs) {
        if (available.count(input) > 0) continue;
        auto it = producer.find(input);
        if (it == producer.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat(NodeContext(node.name, node.op_type), ": input '", input,
                           "' is not a graph input, an initializer or the output of any node"));
        }
        deps.insert(it->second);
      }
      pending[i] = static_cast<int>(deps.size());
      for (size_t d : deps) consumers[d].push_back(i);
    }
    std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
    for (size_t i = 0; i < n; ++i) {
      if (pending[i] == 0) ready.push(i);
    }
    std::vector<Node> sorted;
    sorted.reserve(n);
    while (!ready.empty()) {
      const size_t i = ready.top();
      ready.pop();
      for (size_t c : consumers[i]) {
        if (--pending[c] == 0) ready.push(c);
      }
      sorted.push_back(std::move(graph_.nodes[i]));
    }
    if (sorted.size() != n) {
      for (size_t i = 0; i < n; ++i) {
        if (pending[i] > 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("the graph has a cycle through ",
                           NodeContext(graph_.nodes[i].name, graph_.nodes[i].op_type)));
        }
      }
    }
    graph_.nodes = std::move(sorted);
    for (const auto& output : graph_.outputs) {
      if (available.count(output.name) == 0 && producer.count(output.name) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph output '", output.name, "' is not produced by any node"));
      }
    }
    return absl::OkStatus();
  }

  const onnx::ModelProto& model_;
  int64_t opset_ = -1;                    // default-domain opset; -1 when the model imports none
  std::set<std::string> value_names_;     // every value name, to keep invented names unique
  std::set<std::string> consumed_;        // values read by a node or that are graph outputs
  std::set<std::string> node_names_;      // every node name, to keep invented names unique
  std::map<std::string, int64_t> ranks_;  // ranks the model states, see CollectRanks
  engine::Graph graph_;
};

}  // namespace

DataType DataTypeFromOnnx(int32_t onnx_type) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT:
      return DataType::kFloat32;
    case onnx::TensorProto::UINT8:
      return DataType::kUint8;
    case onnx::TensorProto::INT8:
      return DataType::kInt8;
    case onnx::TensorProto::UINT16:
      return DataType::kUint16;
    case onnx::TensorProto::INT16:
      return DataType::kInt16;
    case onnx::TensorProto::INT32:
      return DataType::kInt32;
    case onnx::TensorProto::INT64:
      return DataType::kInt64;
    case onnx::TensorProto::BOOL:
      return DataType::kBool;
    case onnx::TensorProto::FLOAT16:
      return DataType::kFloat16;
    case onnx::TensorProto::DOUBLE:
      return DataType::kFloat64;
    case onnx::TensorProto::UINT32:
      return DataType::kUint32;
    case onnx::TensorProto::UINT64:
      return DataType::kUint64;
    case onnx::TensorProto::BFLOAT16:
      return DataType::kBFloat16;
    default:
      return DataType::kUndefined;
  }
}

absl::StatusOr<Tensor> TensorFromProto(const onnx::TensorProto& proto,
                                       const std::filesystem::path& base_dir) {
  const std::string what =
      proto.name().empty() ? std::string("tensor") : absl::StrCat("tensor '", proto.name(), "'");
  if (proto.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    for (const auto& entry : proto.external_data()) {
      if (entry.key() == "location") location = entry.value();
    }
    return absl::UnimplementedError(absl::StrCat(
        what, ": external data ('", (base_dir / location).string(), "') is not supported"));
  }
  if (proto.has_segment()) {
    return absl::UnimplementedError(absl::StrCat(what, ": segmented tensors are not supported"));
  }
  const DataType dtype = DataTypeFromOnnx(proto.data_type());
  if (dtype == DataType::kUndefined) {
    if (proto.data_type() == onnx::TensorProto::UNDEFINED) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": no data type"));
    }
    return absl::UnimplementedError(absl::StrCat(
        what, ": element type ", OnnxTypeName(proto.data_type()), " is not supported"));
  }
  Dims dims(proto.dims().begin(), proto.dims().end());
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in ", engine::DimsToString(dims)));
    }
    if (d != 0 && count > kMaxTensorElements / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": too many elements in ", engine::DimsToString(dims)));
    }
    count *= d;
  }
  const std::string described =
      absl::StrCat(engine::DimsToString(dims), " ", std::string(engine::DataTypeName(dtype)));
  const size_t element_size = engine::ElementSize(dtype);
  const size_t byte_size = static_cast<size_t>(count) * element_size;

  if (proto.has_raw_data()) {
    if (proto.raw_data().size() != byte_size) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": raw_data has ",
                                                     proto.raw_data().size(), " bytes, expected ",
                                                     byte_size, " for ", described));
    }
    Tensor tensor(dtype, std::move(dims));
    if (byte_size > 0) std::memcpy(tensor.bytes.data(), proto.raw_data().data(), byte_size);
    return tensor;
  }

  // Typed fields: check the count before allocating.
  auto check_count = [&](int size, const char* field) -> absl::Status {
    if (size != count) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": ", field, " has ", size, " values, expected ", count, " for ", described));
    }
    return absl::OkStatus();
  };
  // Narrows each value of `field` to the stored type T (int32_data holds the small types and
  // the bits of the 16-bit floats; uint64_data holds uint32).
  auto fill = [&](const auto& field, auto tag) {
    using T = decltype(tag);
    Tensor tensor(dtype, std::move(dims));
    T* out = tensor.data<T>();
    for (int i = 0; i < field.size(); ++i) out[i] = static_cast<T>(field.Get(i));
    return tensor;
  };
  switch (dtype) {
    case DataType::kFloat32:
      RETURN_IF_ERROR(check_count(proto.float_data_size(), "float_data"));
      return fill(proto.float_data(), float{});
    case DataType::kFloat64:
      RETURN_IF_ERROR(check_count(proto.double_data_size(), "double_data"));
      return fill(proto.double_data(), double{});
    case DataType::kInt64:
      RETURN_IF_ERROR(check_count(proto.int64_data_size(), "int64_data"));
      return fill(proto.int64_data(), int64_t{});
    case DataType::kUint32:
      RETURN_IF_ERROR(check_count(proto.uint64_data_size(), "uint64_data"));
      return fill(proto.uint64_data(), uint32_t{});
    case DataType::kUint64:
      RETURN_IF_ERROR(check_count(proto.uint64_data_size(), "uint64_data"));
      return fill(proto.uint64_data(), uint64_t{});
    case DataType::kInt32:
      RETURN_IF_ERROR(check_count(proto.int32_data_size(), "int32_data"));
      return fill(proto.int32_data(), int32_t{});
    case DataType::kInt16:
      RETURN_IF_ERROR(check_count(proto.int32_data_size(), "int32_data"));
      return fill(proto.int32_data(), int16_t{});
    case DataType::kInt8:
      RETURN_IF_ERROR(check_count(proto.int32_data_size(), "int32_data"));
      return fill(proto.int32_data(), int8_t{});
    case DataType::kUint16:
    case DataType::kFloat16:
    case DataType::kBFloat16:
      RETURN_IF_ERROR(check_count(proto.int32_data_size(), "int32_data"));
      return fill(proto.int32_data(), uint16_t{});
    case DataType::kUint8:
      RETURN_IF_ERROR(check_count(proto.int32_data_size(), "int32_data"));
      return fill(proto.int32_data(), uint8_t{});
    case DataType::kBool: {
      RETURN_IF_ERROR(check_count(proto.int32_data_size(), "int32_data"));
      Tensor tensor(dtype, std::move(dims));
      uint8_t* out = tensor.data<uint8_t>();
      for (int i = 0; i < proto.int32_data_size(); ++i) out[i] = proto.int32_data(i) != 0;
      return tensor;
    }
    case DataType::kUndefined:
      break;
  }
  return absl::InternalError(absl::StrCat(what, ": unhandled element type"));
}

absl::StatusOr<Tensor> ReadTensorProtoFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path.string(), "'"));
  onnx::TensorProto proto;
  if (!proto.ParseFromIstream(&in)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path.string(), "' is not a serialized ONNX TensorProto"));
  }
  auto tensor = TensorFromProto(proto, path.parent_path());
  if (!tensor.ok()) return Annotate(tensor.status(), absl::StrCat("'", path.string(), "'"));
  return tensor;
}

absl::StatusOr<engine::Graph> ImportOnnxModel(const onnx::ModelProto& model) {
  if (!model.has_graph()) return absl::InvalidArgumentError("not an ONNX model (no graph)");
  return Importer(model).Import();
}

absl::StatusOr<engine::Graph> ImportOnnxFile(const std::filesystem::path& path) {
  const std::string where = absl::StrCat("model file '", path.string(), "'");
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(where, ": no such file"));
  }
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(where, ": cannot open"));
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&in) || model.ir_version() <= 0 || !model.has_graph()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not an ONNX model"));
  }
  auto graph = ImportOnnxModel(model);
  if (!graph.ok()) return Annotate(graph.status(), where);
  return graph;
}

}  // namespace convserve::onnx_import
