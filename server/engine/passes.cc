#include "server/engine/passes.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "server/common/status.h"
#include "server/engine/compiler.h"
#include "server/engine/host_ops.h"

namespace convserve::engine {
namespace {

// Which nodes read each value; graph outputs count as a reader (index -1).
std::map<std::string, std::vector<int>> Consumers(const Graph& graph) {
  std::map<std::string, std::vector<int>> consumers;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    for (const std::string& in : graph.nodes[n].inputs) {
      if (!in.empty()) consumers[in].push_back(static_cast<int>(n));
    }
  }
  for (const ValueInfo& out : graph.outputs) consumers[out.name].push_back(-1);
  return consumers;
}

// The single consumer node of `value`, or -1 (none, several, or a graph output).
int SingleConsumer(const std::map<std::string, std::vector<int>>& consumers,
                   const std::string& value) {
  auto it = consumers.find(value);
  if (it == consumers.end() || it->second.size() != 1) return -1;
  return it->second[0];
}

void EraseNodes(Graph& graph, const std::set<int>& dead) {
  std::vector<Node> kept;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    if (!dead.count(static_cast<int>(n))) kept.push_back(std::move(graph.nodes[n]));
  }
  graph.nodes = std::move(kept);
}

bool IsGraphOutput(const Graph& graph, const std::string& value) {
  for (const ValueInfo& out : graph.outputs) {
    if (out.name == value) return true;
  }
  return false;
}

void RemoveNoOps(Graph& graph) {
  std::set<int> dead;
  std::map<std::string, std::string> rename;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    Node& node = graph.nodes[n];
    for (std::string& in : node.inputs) {
      auto it = rename.find(in);
      if (it != rename.end()) in = it->second;
    }
    const bool noop =
        node.op_type == "Identity" ||
        (node.op_type == "Dropout" && (node.outputs.size() < 2 || node.outputs[1].empty()));
    if (!noop || node.inputs.empty() || node.inputs[0].empty() ||
        IsGraphOutput(graph, node.outputs[0])) {
      continue;
    }
    rename[node.outputs[0]] = node.inputs[0];
    dead.insert(static_cast<int>(n));
  }
  EraseNodes(graph, dead);
}

absl::Status FoldBatchNorm(Graph& graph) {
  auto consumers = Consumers(graph);
  std::set<int> dead;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    Node& conv = graph.nodes[n];
    if (conv.op_type != "Conv" || conv.inputs.size() < 2) continue;
    const int bn_index = SingleConsumer(consumers, conv.outputs[0]);
    if (bn_index < 0) continue;
    Node& bn = graph.nodes[bn_index];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() < 5 ||
        bn.inputs[0] != conv.outputs[0])
      continue;
    auto weight_it = graph.initializers.find(conv.inputs[1]);
    if (weight_it == graph.initializers.end() || weight_it->second.dtype != DataType::kFloat32)
      continue;
    const Tensor* params[4];
    bool constant = true;
    for (int k = 0; k < 4; ++k) {
      auto it = graph.initializers.find(bn.inputs[k + 1]);
      if (it == graph.initializers.end()) {
        constant = false;
        break;
      }
      params[k] = &it->second;
    }
    if (!constant) continue;
    const Tensor& w = weight_it->second;
    const int64_t out_channels = w.dims.empty() ? 0 : w.dims[0];
    std::vector<float> scale = params[0]->AsFloat(), shift = params[1]->AsFloat(),
                       mean = params[2]->AsFloat(), var = params[3]->AsFloat();
    if (static_cast<int64_t>(scale.size()) != out_channels || shift.size() != scale.size() ||
        mean.size() != scale.size() || var.size() != scale.size()) {
      continue;
    }
    std::vector<float> bias(out_channels, 0.f);
    if (conv.inputs.size() > 2 && !conv.inputs[2].empty()) {
      auto it = graph.initializers.find(conv.inputs[2]);
      if (it == graph.initializers.end()) continue;
      bias = it->second.AsFloat();
      if (static_cast<int64_t>(bias.size()) != out_channels) continue;
    }
    const float epsilon = bn.GetFloat("epsilon", 1e-5f);
    Tensor new_w(DataType::kFloat32, w.dims);
    const int64_t per_channel = w.num_elements() / std::max<int64_t>(out_channels, 1);
    Tensor new_b(DataType::kFloat32, {out_channels});
    for (int64_t o = 0; o < out_channels; ++o) {
      const float factor = scale[o] / std::sqrt(var[o] + epsilon);
      for (int64_t k = 0; k < per_channel; ++k) {
        new_w.data<float>()[o * per_channel + k] = w.data<float>()[o * per_channel + k] * factor;
      }
      new_b.data<float>()[o] = (bias[o] - mean[o]) * factor + shift[o];
    }
    const std::string w_name = conv.name + ".bn_folded_weight";
    const std::string b_name = conv.name + ".bn_folded_bias";
    graph.initializers[w_name] = std::move(new_w);
    graph.initializers[b_name] = std::move(new_b);
    conv.inputs.resize(3);
    conv.inputs[1] = w_name;
    conv.inputs[2] = b_name;
    conv.outputs = {bn.outputs[0]};
    conv.source_nodes.insert(conv.source_nodes.end(), bn.source_nodes.begin(),
                             bn.source_nodes.end());
    dead.insert(bn_index);
  }
  EraseNodes(graph, dead);
  return absl::OkStatus();
}

bool CanTakePostOps(const Graph& graph, const Node& node) {
  if (node.op_type == "Conv") return true;
  if (node.op_type == "Gemm") {
    // Only the inner-product path (constant B, no transA) takes post-ops.
    return node.inputs.size() >= 2 && graph.initializers.count(node.inputs[1]) &&
           node.GetInt("transA", 0) == 0;
  }
  return false;
}

void FuseActivations(Graph& graph) {
  bool changed = true;
  while (changed) {
    changed = false;
    auto consumers = Consumers(graph);
    std::set<int> dead;
    for (size_t n = 0; n < graph.nodes.size(); ++n) {
      if (dead.count(static_cast<int>(n))) continue;
      Node& node = graph.nodes[n];
      if (!CanTakePostOps(graph, node) || node.outputs.size() != 1) continue;
      const int next = SingleConsumer(consumers, node.outputs[0]);
      if (next < 0 || dead.count(next)) continue;
      Node& act = graph.nodes[next];
      if (act.inputs.empty() || act.inputs[0] != node.outputs[0]) continue;
      std::optional<PostOp> op = ActivationPostOp(act, graph.initializers);
      if (!op) continue;
      std::vector<PostOp> ops = DecodePostOps(node);
      ops.push_back(*op);
      node.attributes[kPostOpsAttribute] = EncodePostOps(ops);
      node.outputs = {act.outputs[0]};
      node.source_nodes.insert(node.source_nodes.end(), act.source_nodes.begin(),
                               act.source_nodes.end());
      dead.insert(next);
      changed = true;
    }
    EraseNodes(graph, dead);
  }
}

absl::Status FuseResidualAdd(Graph& graph) {
  // Same shape at two batch sizes and both operands runtime values: the sum is legal.
  auto shapes1 = InferGraphShapes(graph, 1);
  auto shapes2 = InferGraphShapes(graph, 2);
  if (!shapes1.ok() || !shapes2.ok()) return absl::OkStatus();  // compile will report errors
  auto same_runtime_shape = [&](const std::string& a, const std::string& b) {
    for (const auto* shapes : {&*shapes1, &*shapes2}) {
      auto ia = shapes->find(a), ib = shapes->find(b);
      if (ia == shapes->end() || ib == shapes->end()) return false;
      if (ia->second.constant || ib->second.constant || ia->second.dims != ib->second.dims)
        return false;
    }
    return true;
  };
  auto consumers = Consumers(graph);
  std::map<std::string, int> producer;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    for (const std::string& out : graph.nodes[n].outputs) producer[out] = static_cast<int>(n);
  }
  std::set<int> dead;
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    Node& add = graph.nodes[n];
    if (add.op_type != "Add" || add.inputs.size() != 2 || add.inputs[0] == add.inputs[1]) continue;
    int best = -1;
    int other = -1;
    for (int k = 0; k < 2; ++k) {
      auto it = producer.find(add.inputs[k]);
      if (it == producer.end() || dead.count(it->second)) continue;
      const Node& conv = graph.nodes[it->second];
      if (conv.op_type != "Conv" || conv.HasAttribute("convserve.sum_input")) continue;
      if (SingleConsumer(consumers, add.inputs[k]) != static_cast<int>(n)) continue;
      if (best < 0 || it->second > best) {
        best = it->second;
        other = 1 - k;
      }
    }
    if (best < 0 || !same_runtime_shape(add.inputs[0], add.inputs[1])) continue;
    Node fused = graph.nodes[best];
    while (fused.inputs.size() < 3) fused.inputs.push_back("");
    fused.attributes["convserve.sum_input"] = static_cast<int64_t>(fused.inputs.size());
    fused.inputs.push_back(add.inputs[other]);
    std::vector<PostOp> ops = DecodePostOps(fused);
    ops.push_back(PostOp{"sum"});
    fused.attributes[kPostOpsAttribute] = EncodePostOps(ops);
    fused.outputs = add.outputs;
    fused.source_nodes.insert(fused.source_nodes.end(), add.source_nodes.begin(),
                              add.source_nodes.end());
    dead.insert(best);
    graph.nodes[n] = std::move(fused);  // runs where the Add ran: both operands exist by then
  }
  EraseNodes(graph, dead);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, ShapeInfo>> InferGraphShapes(const Graph& graph,
                                                                  int64_t batch_size) {
  std::map<std::string, ShapeInfo> shapes;
  std::map<std::string, Tensor> folded;
  auto constant_of = [&](const std::string& name) -> const Tensor* {
    auto it = graph.initializers.find(name);
    if (it != graph.initializers.end()) return &it->second;
    auto jt = folded.find(name);
    return jt == folded.end() ? nullptr : &jt->second;
  };
  std::map<std::string, DataType> types;
  for (const auto& [name, t] : graph.initializers) {
    shapes[name] = {t.dims, true};
    types[name] = t.dtype;
  }
  for (const ValueInfo& in : graph.inputs) {
    Dims dims = in.dims;
    if (!dims.empty() && dims[0] < 0) dims[0] = batch_size;
    shapes[in.name] = {dims, false};
    types[in.name] = in.dtype;
  }
  for (const Node& node : graph.nodes) {
    Node plain = node;
    plain.attributes.erase(kPostOpsAttribute);
    const int sum_input = static_cast<int>(node.GetInt("convserve.sum_input", -1));
    if (sum_input >= 0) {
      plain.inputs.resize(sum_input);
      plain.attributes.erase("convserve.sum_input");
    }
    std::vector<host::InputState> states;
    bool all_constant = true;
    std::vector<const Tensor*> constants;
    for (const std::string& in : plain.inputs) {
      host::InputState s;
      if (!in.empty()) {
        auto it = shapes.find(in);
        if (it == shapes.end())
          return absl::InvalidArgumentError(absl::StrCat("unknown value '", in, "'"));
        s.dims = it->second.dims;
        s.dtype = types[in];
        s.constant = constant_of(in);
        if (!s.constant) all_constant = false;
      }
      constants.push_back(s.constant);
      states.push_back(s);
    }
    ASSIGN_OR_RETURN(std::vector<ValueInfo> outs, host::InferOutputs(plain, states));
    std::vector<Tensor> values;
    if (all_constant && host::CanEvaluate(plain, states)) {
      auto evaluated = host::EvaluateConstant(plain, constants);
      if (evaluated.ok()) values = std::move(*evaluated);
    }
    for (size_t j = 0; j < plain.outputs.size() && j < outs.size(); ++j) {
      if (plain.outputs[j].empty()) continue;
      const bool is_constant = j < values.size();
      shapes[plain.outputs[j]] = {outs[j].dims, is_constant};
      types[plain.outputs[j]] = outs[j].dtype;
      if (is_constant) folded[plain.outputs[j]] = std::move(values[j]);
    }
  }
  return shapes;
}

absl::Status RunPasses(Graph& graph) {
  RemoveNoOps(graph);
  RETURN_IF_ERROR(FoldBatchNorm(graph));
  FuseActivations(graph);
  RETURN_IF_ERROR(FuseResidualAdd(graph));
  FuseActivations(graph);
  return absl::OkStatus();
}

}  // namespace convserve::engine
