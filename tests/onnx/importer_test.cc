#include "server/onnx/importer.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace convserve::onnx_import {
namespace {

using engine::DataType;
using engine::Graph;
using engine::Node;
using engine::Tensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---- helpers that build small models in code ------------------------------------------------

onnx::ModelProto MakeModel(int64_t opset) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  model.mutable_graph()->set_name("g");
  return model;
}

void AddValueInfo(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list,
                  const std::string& name, const std::vector<std::string>& dims,
                  int32_t elem_type = onnx::TensorProto::FLOAT) {
  auto* vi = list->Add();
  vi->set_name(name);
  auto* tensor_type = vi->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(elem_type);
  auto* shape = tensor_type->mutable_shape();
  for (const auto& d : dims) {
    auto* dim = shape->add_dim();
    if (d == "?") continue;  // neither value nor param
    if (std::isdigit(static_cast<unsigned char>(d[0]))) {
      dim->set_dim_value(std::stoll(d));
    } else {
      dim->set_dim_param(d);
    }
  }
}

void AddInput(onnx::ModelProto& m, const std::string& name, const std::vector<std::string>& dims,
              int32_t elem_type = onnx::TensorProto::FLOAT) {
  AddValueInfo(m.mutable_graph()->mutable_input(), name, dims, elem_type);
}
void AddOutput(onnx::ModelProto& m, const std::string& name, const std::vector<std::string>& dims) {
  AddValueInfo(m.mutable_graph()->mutable_output(), name, dims);
}

onnx::NodeProto* AddNode(onnx::ModelProto& m, const std::string& op_type,
                         const std::vector<std::string>& inputs,
                         const std::vector<std::string>& outputs, const std::string& name = "") {
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type(op_type);
  node->set_name(name);
  for (const auto& i : inputs) node->add_input(i);
  for (const auto& o : outputs) node->add_output(o);
  return node;
}

void SetInts(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}
void SetInt(onnx::NodeProto* node, const std::string& name, int64_t value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}
void SetFloat(onnx::NodeProto* node, const std::string& name, float value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}
void SetString(onnx::NodeProto* node, const std::string& name, const std::string& value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(value);
}

onnx::TensorProto Int64Proto(const std::string& name, const std::vector<int64_t>& values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::INT64);
  t.add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) t.add_int64_data(v);
  return t;
}

void AddInitializer(onnx::ModelProto& m, const onnx::TensorProto& t) {
  *m.mutable_graph()->add_initializer() = t;
}

const Node& FindNode(const Graph& g, const std::string& op_type) {
  auto it = std::find_if(g.nodes.begin(), g.nodes.end(),
                         [&](const Node& n) { return n.op_type == op_type; });
  EXPECT_NE(it, g.nodes.end()) << "no " << op_type << " node";
  return *it;
}

std::vector<int64_t> InitializerInts(const Graph& g, const std::string& name) {
  auto it = g.initializers.find(name);
  EXPECT_NE(it, g.initializers.end()) << "no initializer '" << name << "'";
  if (it == g.initializers.end()) return {};
  EXPECT_EQ(it->second.dtype, DataType::kInt64);
  return it->second.AsInt64();
}

std::vector<float> InitializerFloats(const Graph& g, const std::string& name) {
  auto it = g.initializers.find(name);
  EXPECT_NE(it, g.initializers.end()) << "no initializer '" << name << "'";
  if (it == g.initializers.end()) return {};
  return it->second.AsFloat();
}

// A one-node model X -> op -> Y.
onnx::ModelProto UnaryModel(int64_t opset, const std::string& op_type,
                            onnx::NodeProto** node = nullptr) {
  auto m = MakeModel(opset);
  AddInput(m, "X", {"N", "3", "4", "4"});
  AddOutput(m, "Y", {});
  auto* n = AddNode(m, op_type, {"X"}, {"Y"}, "n");
  if (node) *node = n;
  return m;
}

// ---- graph-level import --------------------------------------------------------------------

TEST(ImportOnnxModel, InputsInitializersAndDynamicDims) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"batch", "3", "?", "8"});
  AddInput(m, "W", {"4", "3", "1", "1"});  // also an initializer: a parameter, not an input
  AddOutput(m, "Y", {"batch", "4", "?", "8"});
  onnx::TensorProto w;
  w.set_name("W");
  w.set_data_type(onnx::TensorProto::FLOAT);
  for (int d : {4, 3, 1, 1}) w.add_dims(d);
  for (int i = 0; i < 12; ++i) w.add_float_data(static_cast<float>(i));
  AddInitializer(m, w);
  auto* conv = AddNode(m, "Conv", {"X", "W"}, {"Y"}, "conv1");
  SetInts(conv, "kernel_shape", {1, 1});

  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->name, "g");
  ASSERT_EQ(g->inputs.size(), 1u);
  EXPECT_EQ(g->inputs[0].name, "X");
  EXPECT_EQ(g->inputs[0].dtype, DataType::kFloat32);
  EXPECT_THAT(g->inputs[0].dims, ElementsAre(-1, 3, -1, 8));
  ASSERT_EQ(g->outputs.size(), 1u);
  EXPECT_THAT(g->outputs[0].dims, ElementsAre(-1, 4, -1, 8));
  ASSERT_EQ(g->initializers.count("W"), 1u);
  EXPECT_THAT(g->initializers.at("W").dims, ElementsAre(4, 3, 1, 1));
  EXPECT_EQ(g->initializers.at("W").AsFloat()[11], 11.0f);
  ASSERT_EQ(g->nodes.size(), 1u);
  const Node& n = g->nodes[0];
  EXPECT_EQ(n.name, "conv1");
  EXPECT_THAT(n.source_nodes, ElementsAre("conv1"));
  EXPECT_THAT(n.inputs, ElementsAre("X", "W"));
  EXPECT_THAT(n.GetInts("kernel_shape"), ElementsAre(1, 1));
  EXPECT_EQ(n.GetInt("group", 1), 1);
}

TEST(ImportOnnxModel, UnnamedNodesGetUniqueNames) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1", "4"});
  AddOutput(m, "Z", {"1", "4"});
  AddNode(m, "Relu", {"X"}, {"A"});               // -> Relu_0
  AddNode(m, "Relu", {"A"}, {"B"}, "Relu_1");     // ONNX name kept
  AddNode(m, "Relu", {"B"}, {"C"});               // Relu_2
  AddNode(m, "Sigmoid", {"C"}, {"D"}, "Relu_2");  // duplicate ONNX name -> suffixed
  AddNode(m, "Relu", {"D"}, {"Z"});               // Relu_4
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  std::vector<std::string> names;
  for (const auto& n : g->nodes) names.push_back(n.name);
  // The generated "Relu_2" must not take the explicit name of the 4th node... which is itself a
  // duplicate of nothing earlier, so the generated one is suffixed instead.
  EXPECT_THAT(names, ElementsAre("Relu_0", "Relu_1", "Relu_2_1", "Relu_2", "Relu_4"));
  for (const auto& n : g->nodes) EXPECT_THAT(n.source_nodes, ElementsAre(n.name));
}

TEST(ImportOnnxModel, DuplicateOnnxNamesAreSuffixed) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1"});
  AddOutput(m, "B", {"1"});
  AddNode(m, "Relu", {"X"}, {"A"}, "same");
  AddNode(m, "Relu", {"A"}, {"B"}, "same");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].name, "same");
  EXPECT_EQ(g->nodes[1].name, "same_1");
}

TEST(ImportOnnxModel, ConstantNodesBecomeInitializers) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"2", "3"});
  AddOutput(m, "Y", {"3", "2"});
  auto* c1 = AddNode(m, "Constant", {}, {"shape"});
  auto* a = c1->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  *a->mutable_t() = Int64Proto("", {3, 2});
  auto* c2 = AddNode(m, "Constant", {}, {"f"});
  SetFloat(c2, "value_float", 2.5f);
  auto* c3 = AddNode(m, "Constant", {}, {"ints"});
  SetInts(c3, "value_ints", {7, 8, 9});
  auto* c4 = AddNode(m, "Constant", {}, {"i"});
  SetInt(c4, "value_int", -4);
  auto* c5 = AddNode(m, "Constant", {}, {"fs"});
  auto* fa = c5->add_attribute();
  fa->set_name("value_floats");
  fa->set_type(onnx::AttributeProto::FLOATS);
  fa->add_floats(1.5f);
  fa->add_floats(-2.0f);
  AddNode(m, "Reshape", {"X", "shape"}, {"Y"});

  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->nodes.size(), 1u);
  EXPECT_EQ(g->nodes[0].op_type, "Reshape");
  EXPECT_EQ(g->nodes[0].name, "Reshape_5");
  EXPECT_THAT(InitializerInts(*g, "shape"), ElementsAre(3, 2));
  EXPECT_EQ(g->initializers.at("f").dtype, DataType::kFloat32);
  EXPECT_TRUE(g->initializers.at("f").dims.empty());
  EXPECT_THAT(InitializerFloats(*g, "f"), ElementsAre(2.5f));
  EXPECT_THAT(InitializerInts(*g, "ints"), ElementsAre(7, 8, 9));
  EXPECT_THAT(g->initializers.at("ints").dims, ElementsAre(3));
  EXPECT_THAT(InitializerInts(*g, "i"), ElementsAre(-4));
  EXPECT_TRUE(g->initializers.at("i").dims.empty());
  EXPECT_THAT(InitializerFloats(*g, "fs"), ElementsAre(1.5f, -2.0f));
}

TEST(ImportOnnxModel, UnsortedNodesAreSortedTopologically) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1"});
  AddOutput(m, "C", {"1"});
  AddNode(m, "Relu", {"B"}, {"C"}, "third");
  AddNode(m, "Relu", {"X"}, {"A"}, "first");
  AddNode(m, "Relu", {"A"}, {"B"}, "second");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].name, "first");
  EXPECT_EQ(g->nodes[1].name, "second");
  EXPECT_EQ(g->nodes[2].name, "third");
}

TEST(ImportOnnxModel, UndefinedInputIsAnError) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1"});
  AddOutput(m, "Y", {"1"});
  AddNode(m, "Add", {"X", "nowhere"}, {"Y"}, "add");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(g.status().message(), HasSubstr("node 'add' (Add): input 'nowhere'"));
}

TEST(ImportOnnxModel, CycleIsAnError) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1"});
  AddOutput(m, "B", {"1"});
  AddNode(m, "Add", {"X", "B"}, {"A"}, "a");
  AddNode(m, "Relu", {"A"}, {"B"}, "b");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("cycle"));
}

TEST(ImportOnnxModel, UnsupportedDomainNamesIt) {
  auto m = MakeModel(13);
  auto* op = m.add_opset_import();
  op->set_domain("com.microsoft");
  op->set_version(1);
  AddInput(m, "X", {"1"});
  AddOutput(m, "Y", {"1"});
  auto* n = AddNode(m, "FusedGemm", {"X"}, {"Y"}, "fg");
  n->set_domain("com.microsoft");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(),
              HasSubstr("node 'fg' (FusedGemm): domain 'com.microsoft' is not supported"));
}

TEST(ImportOnnxModel, AiOnnxDomainIsTheDefaultDomain) {
  auto m = MakeModel(13);
  m.mutable_opset_import(0)->set_domain("ai.onnx");
  AddInput(m, "X", {"1"});
  AddOutput(m, "Y", {"1"});
  AddNode(m, "Relu", {"X"}, {"Y"})->set_domain("ai.onnx");
  auto g = ImportOnnxModel(m);
  EXPECT_TRUE(g.ok()) << g.status();
}

TEST(ImportOnnxModel, OpsetOutOfRange) {
  for (int64_t opset : {0, 19}) {
    auto m = UnaryModel(opset, "Relu");
    auto g = ImportOnnxModel(m);
    ASSERT_FALSE(g.ok()) << opset;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(g.status().message(), HasSubstr(absl::StrCat("opset ", opset)));
  }
}

TEST(ImportOnnxModel, SubgraphAttributeNamesNode) {
  auto m = MakeModel(13);
  AddInput(m, "cond", {}, onnx::TensorProto::BOOL);
  AddOutput(m, "Y", {"1"});
  auto* n = AddNode(m, "If", {"cond"}, {"Y"}, "branch");
  auto* a = n->add_attribute();
  a->set_name("then_branch");
  a->set_type(onnx::AttributeProto::GRAPH);
  a->mutable_g()->set_name("then");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(),
              HasSubstr("node 'branch' (If): attribute 'then_branch' is a subgraph"));
}

TEST(ImportOnnxModel, WrongAttributeTypeIsNamed) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1", "1", "3", "3"});
  AddInput(m, "W", {"1", "1", "3", "3"});
  AddOutput(m, "Y", {"1", "1", "1", "1"});
  AddNode(m, "Relu", {"X"}, {"A"});
  AddNode(m, "Relu", {"A"}, {"B"});
  AddNode(m, "Relu", {"B"}, {"C"});
  auto* conv = AddNode(m, "Conv", {"C", "W"}, {"Y"});
  SetString(conv, "kernel_shape", "3x3");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.status().message(),
            "node 'Conv_3' (Conv): attribute 'kernel_shape' has type STRING, expected INTS");
}

TEST(ImportOnnxModel, AllAttributeKindsConvert) {
  auto m = UnaryModel(13, "MyOp");  // unknown op: attributes pass as they are
  auto* n = m.mutable_graph()->mutable_node(0);
  SetInt(n, "i", 3);
  SetFloat(n, "f", 0.5f);
  SetString(n, "s", "hello");
  SetInts(n, "is", {1, 2});
  auto* fs = n->add_attribute();
  fs->set_name("fs");
  fs->set_type(onnx::AttributeProto::FLOATS);
  fs->add_floats(0.25f);
  auto* t = n->add_attribute();
  t->set_name("t");
  t->set_type(onnx::AttributeProto::TENSOR);
  *t->mutable_t() = Int64Proto("", {5});
  auto* untyped = n->add_attribute();  // old exporters: type unset, inferred from the field
  untyped->set_name("untyped");
  untyped->set_f(1.5f);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& node = g->nodes[0];
  EXPECT_EQ(node.GetInt("i", 0), 3);
  EXPECT_EQ(node.GetFloat("f", 0), 0.5f);
  EXPECT_EQ(node.GetString("s", ""), "hello");
  EXPECT_THAT(node.GetInts("is"), ElementsAre(1, 2));
  EXPECT_THAT(node.GetFloats("fs"), ElementsAre(0.25f));
  EXPECT_EQ(std::get<Tensor>(node.attributes.at("t")).AsInt64(), std::vector<int64_t>{5});
  EXPECT_EQ(node.GetFloat("untyped", 0), 1.5f);
  // Accessors fall back to the default on a missing key or another type.
  EXPECT_EQ(node.GetInt("missing", 42), 42);
  EXPECT_EQ(node.GetInt("f", 7), 7);
}

TEST(ImportOnnxModel, StringsAttributeIsUnsupported) {
  auto m = UnaryModel(13, "MyOp");
  auto* a = m.mutable_graph()->mutable_node(0)->add_attribute();
  a->set_name("acts");
  a->set_type(onnx::AttributeProto::STRINGS);
  a->add_strings("Tanh");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(),
              HasSubstr("node 'n' (MyOp): attribute 'acts' has type STRINGS"));
}

TEST(ImportOnnxModel, NonTensorInputIsUnsupported) {
  auto m = MakeModel(13);
  auto* vi = m.mutable_graph()->add_input();
  vi->set_name("seq");
  vi->mutable_type()->mutable_sequence_type();
  AddOutput(m, "seq", {});
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("graph input 'seq' is not a tensor"));
}

// ---- canonical forms -----------------------------------------------------------------------

TEST(Canonicalize, ClipAttributesBecomeInputs) {
  onnx::NodeProto* n;
  auto m = UnaryModel(6 + 4, "Clip", &n);  // opset 10
  SetFloat(n, "min", 0.0f);
  SetFloat(n, "max", 6.0f);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& clip = FindNode(*g, "Clip");
  EXPECT_TRUE(clip.attributes.empty());
  ASSERT_EQ(clip.inputs.size(), 3u);
  EXPECT_EQ(clip.inputs[0], "X");
  EXPECT_EQ(clip.inputs[1], "n/min");
  EXPECT_EQ(clip.inputs[2], "n/max");
  EXPECT_TRUE(g->initializers.at("n/min").dims.empty());
  EXPECT_EQ(g->initializers.at("n/min").dtype, DataType::kFloat32);
  EXPECT_THAT(InitializerFloats(*g, "n/min"), ElementsAre(0.0f));
  EXPECT_THAT(InitializerFloats(*g, "n/max"), ElementsAre(6.0f));
}

TEST(Canonicalize, ClipOnlyMaxLeavesMinAbsent) {
  onnx::NodeProto* n;
  auto m = UnaryModel(7, "Clip", &n);
  SetFloat(n, "max", 1.0f);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Clip").inputs, ElementsAre("X", "", "n/max"));
}

TEST(Canonicalize, ClipWithoutBoundsHasOneInput) {
  auto m = UnaryModel(9, "Clip");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Clip").inputs, ElementsAre("X"));
}

TEST(Canonicalize, ClipOpset11IsUnchanged) {
  auto m = MakeModel(11);
  AddInput(m, "X", {"1"});
  AddOutput(m, "Y", {"1"});
  AddNode(m, "Clip", {"X", "", "hi"}, {"Y"});
  AddInitializer(m, [] {
    onnx::TensorProto t;
    t.set_name("hi");
    t.set_data_type(onnx::TensorProto::FLOAT);
    t.add_float_data(3.0f);
    return t;
  }());
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Clip").inputs, ElementsAre("X", "", "hi"));
  EXPECT_EQ(g->initializers.size(), 1u);
}

TEST(Canonicalize, InventedInitializerNamesAvoidExistingValues) {
  auto m = MakeModel(10);
  AddInput(m, "n/min", {"1"});  // an input already named like the invented initializer
  AddOutput(m, "Y", {"1"});
  auto* n = AddNode(m, "Clip", {"n/min"}, {"Y"}, "n");
  SetFloat(n, "min", -1.0f);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Clip").inputs, ElementsAre("n/min", "n/min_1"));
  EXPECT_THAT(InitializerFloats(*g, "n/min_1"), ElementsAre(-1.0f));
}

TEST(Canonicalize, SqueezeAndUnsqueezeAxesBecomeInputs) {
  for (const char* op : {"Squeeze", "Unsqueeze"}) {
    onnx::NodeProto* n;
    auto m = UnaryModel(11, op, &n);
    SetInts(n, "axes", {0, -1});
    auto g = ImportOnnxModel(m);
    ASSERT_TRUE(g.ok()) << g.status();
    const Node& node = FindNode(*g, op);
    EXPECT_FALSE(node.HasAttribute("axes")) << op;
    EXPECT_THAT(node.inputs, ElementsAre("X", "n/axes")) << op;
    EXPECT_THAT(InitializerInts(*g, "n/axes"), ElementsAre(0, -1)) << op;
    EXPECT_THAT(g->initializers.at("n/axes").dims, ElementsAre(2)) << op;
  }
}

TEST(Canonicalize, SqueezeWithoutAxes) {
  auto m = UnaryModel(11, "Squeeze");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Squeeze").inputs, ElementsAre("X"));
}

TEST(Canonicalize, UnsqueezeWithoutAxesBeforeOpset13IsAnError) {
  auto m = UnaryModel(12, "Unsqueeze");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(),
              HasSubstr("node 'n' (Unsqueeze): missing required attribute 'axes'"));
}

TEST(Canonicalize, Opset13SqueezeKeepsItsInput) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1", "3"});
  AddOutput(m, "Y", {"3"});
  AddInitializer(m, Int64Proto("ax", {0}));
  AddNode(m, "Squeeze", {"X", "ax"}, {"Y"});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Squeeze").inputs, ElementsAre("X", "ax"));
}

TEST(Canonicalize, PadAttributesBecomeInputs) {
  onnx::NodeProto* n;
  auto m = UnaryModel(10, "Pad", &n);
  SetInts(n, "pads", {0, 0, 1, 1, 0, 0, 1, 1});
  SetFloat(n, "value", 1.5f);
  SetString(n, "mode", "constant");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& pad = FindNode(*g, "Pad");
  EXPECT_THAT(pad.inputs, ElementsAre("X", "n/pads", "n/value"));
  EXPECT_THAT(InitializerInts(*g, "n/pads"), ElementsAre(0, 0, 1, 1, 0, 0, 1, 1));
  EXPECT_THAT(InitializerFloats(*g, "n/value"), ElementsAre(1.5f));
  EXPECT_EQ(pad.GetString("mode", ""), "constant");
  EXPECT_FALSE(pad.HasAttribute("pads"));
}

TEST(Canonicalize, PadNonConstantModeIsUnimplemented) {
  onnx::NodeProto* n;
  auto m = UnaryModel(10, "Pad", &n);
  SetInts(n, "pads", {0, 0, 1, 1, 0, 0, 1, 1});
  SetString(n, "mode", "reflect");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("node 'n' (Pad): mode 'reflect'"));
}

TEST(Canonicalize, SliceAttributesBecomeInputs) {
  onnx::NodeProto* n;
  auto m = UnaryModel(9, "Slice", &n);
  SetInts(n, "starts", {1});
  SetInts(n, "ends", {3});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& slice = FindNode(*g, "Slice");
  EXPECT_THAT(slice.inputs, ElementsAre("X", "n/starts", "n/ends"));
  EXPECT_THAT(InitializerInts(*g, "n/starts"), ElementsAre(1));
  EXPECT_THAT(InitializerInts(*g, "n/ends"), ElementsAre(3));
  EXPECT_TRUE(slice.attributes.empty());

  SetInts(m.mutable_graph()->mutable_node(0), "axes", {2});
  g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "Slice").inputs, ElementsAre("X", "n/starts", "n/ends", "n/axes"));
}

TEST(Canonicalize, SplitAttributeBecomesInput) {
  auto m = MakeModel(11);
  AddInput(m, "X", {"6"});
  AddOutput(m, "A", {"2"});
  AddOutput(m, "B", {"4"});
  auto* n = AddNode(m, "Split", {"X"}, {"A", "B"}, "s");
  SetInt(n, "axis", 0);
  SetInts(n, "split", {2, 4});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& split = FindNode(*g, "Split");
  EXPECT_THAT(split.inputs, ElementsAre("X", "s/split"));
  EXPECT_THAT(InitializerInts(*g, "s/split"), ElementsAre(2, 4));
  EXPECT_EQ(split.GetInt("axis", -1), 0);
}

TEST(Canonicalize, ReduceMeanOpset18AxesInputBecomesAttribute) {
  auto m = MakeModel(18);
  AddInput(m, "X", {"1", "3", "4", "4"});
  AddOutput(m, "Y", {"1", "3", "1", "1"});
  AddInitializer(m, Int64Proto("axes", {2, 3}));
  auto* n = AddNode(m, "ReduceMean", {"X", "axes"}, {"Y"}, "r");
  SetInt(n, "keepdims", 1);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& r = FindNode(*g, "ReduceMean");
  EXPECT_THAT(r.inputs, ElementsAre("X"));
  EXPECT_THAT(r.GetInts("axes"), ElementsAre(2, 3));
  EXPECT_EQ(r.GetInt("keepdims", 0), 1);
}

TEST(Canonicalize, ReduceMaxOpset18AxesFromConstantNode) {
  auto m = MakeModel(18);
  AddInput(m, "X", {"1", "3", "4", "4"});
  AddOutput(m, "Y", {"1", "3"});
  auto* c = AddNode(m, "Constant", {}, {"axes"});
  SetInts(c, "value_ints", {-1, -2});
  auto* n = AddNode(m, "ReduceMax", {"X", "axes"}, {"Y"}, "r");
  SetInt(n, "keepdims", 0);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "ReduceMax").GetInts("axes"), ElementsAre(-1, -2));
}

TEST(Canonicalize, ReduceOpset18NonConstantAxesIsUnimplemented) {
  auto m = MakeModel(18);
  AddInput(m, "X", {"1", "3", "4", "4"});
  AddInput(m, "axes", {"2"}, onnx::TensorProto::INT64);
  AddOutput(m, "Y", {"1", "3"});
  AddNode(m, "ReduceMean", {"X", "axes"}, {"Y"}, "r");
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("node 'r' (ReduceMean): input 'axes'"));
}

TEST(Canonicalize, ReduceOpset18EmptyAxesWithNoopIsIdentity) {
  onnx::NodeProto* n;
  auto m = UnaryModel(18, "ReduceMean", &n);
  SetInt(n, "noop_with_empty_axes", 1);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].op_type, "Identity");
  EXPECT_EQ(g->nodes[0].name, "n");
}

TEST(Canonicalize, ReduceMeanBeforeOpset18KeepsAttribute) {
  onnx::NodeProto* n;
  auto m = UnaryModel(13, "ReduceMean", &n);
  SetInts(n, "axes", {1});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(FindNode(*g, "ReduceMean").GetInts("axes"), ElementsAre(1));
  EXPECT_THAT(FindNode(*g, "ReduceMean").inputs, ElementsAre("X"));
}

TEST(Canonicalize, SoftmaxLegacyCoercionAndDefaultAxis) {
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) {
    auto old_model = UnaryModel(12, op);
    auto g = ImportOnnxModel(old_model);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->nodes[0].GetInt("legacy_2d_coercion", 0), 1) << op;
    EXPECT_EQ(g->nodes[0].GetInt("axis", 99), 1) << op;

    auto new_model = UnaryModel(13, op);
    g = ImportOnnxModel(new_model);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_FALSE(g->nodes[0].HasAttribute("legacy_2d_coercion")) << op;
    EXPECT_EQ(g->nodes[0].GetInt("axis", 99), -1) << op;
  }
  onnx::NodeProto* n;
  auto explicit_axis = UnaryModel(11, "Softmax", &n);
  SetInt(n, "axis", 3);
  auto g = ImportOnnxModel(explicit_axis);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].GetInt("axis", 99), 3);
  EXPECT_EQ(g->nodes[0].GetInt("legacy_2d_coercion", 0), 1);
}

onnx::ModelProto BatchNormModel(int64_t opset, std::vector<std::string> outputs) {
  auto m = MakeModel(opset);
  AddInput(m, "X", {"1", "2", "3", "3"});
  for (const char* p : {"s", "b", "m", "v"}) AddInput(m, p, {"2"});
  AddOutput(m, "Y", {"1", "2", "3", "3"});
  AddNode(m, "BatchNormalization", {"X", "s", "b", "m", "v"}, outputs, "bn");
  return m;
}

TEST(Canonicalize, BatchNormKeepsOnlyY) {
  auto m = BatchNormModel(7, {"Y", "mean", "var", "saved_mean", "saved_var"});
  SetInt(m.mutable_graph()->mutable_node(0), "spatial", 1);
  SetFloat(m.mutable_graph()->mutable_node(0), "epsilon", 1e-3f);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& bn = FindNode(*g, "BatchNormalization");
  EXPECT_THAT(bn.outputs, ElementsAre("Y"));
  EXPECT_FALSE(bn.HasAttribute("spatial"));
  EXPECT_FLOAT_EQ(bn.GetFloat("epsilon", 0), 1e-3f);
}

TEST(Canonicalize, BatchNormSpatialZeroIsUnimplemented) {
  auto m = BatchNormModel(8, {"Y"});
  SetInt(m.mutable_graph()->mutable_node(0), "spatial", 0);
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("node 'bn' (BatchNormalization): spatial=0"));
}

TEST(Canonicalize, BatchNormTrainingModeIsUnimplemented) {
  auto m = BatchNormModel(15, {"Y", "rm", "rv"});
  SetInt(m.mutable_graph()->mutable_node(0), "training_mode", 1);
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("training_mode=1"));
}

TEST(Canonicalize, BatchNormUsedTrainingOutputIsUnimplemented) {
  auto m = BatchNormModel(9, {"Y", "mean"});
  AddOutput(m, "mean", {"2"});
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("output 'mean' (training statistics) is used"));
}

TEST(Canonicalize, DropoutIsKeptWithItsRatio) {
  onnx::NodeProto* n;
  auto m = UnaryModel(10, "Dropout", &n);
  SetFloat(n, "ratio", 0.25f);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].op_type, "Dropout");
  EXPECT_FLOAT_EQ(g->nodes[0].GetFloat("ratio", 0), 0.25f);
}

// ---- opsets 1..6 ---------------------------------------------------------------------------

TEST(CanonicalizeLegacy, AddBroadcastAxisReshapesConstant) {
  auto m = MakeModel(6);
  AddInput(m, "X", {"2", "3", "4", "5"});
  AddOutput(m, "Y", {"2", "3", "4", "5"});
  onnx::TensorProto b;
  b.set_name("B");
  b.set_data_type(onnx::TensorProto::FLOAT);
  b.add_dims(3);
  for (float v : {1.0f, 2.0f, 3.0f}) b.add_float_data(v);
  AddInitializer(m, b);
  auto* n = AddNode(m, "Add", {"X", "B"}, {"Y"}, "add");
  SetInt(n, "broadcast", 1);
  SetInt(n, "axis", 1);
  SetInts(n, "consumed_inputs", {0, 0});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  const Node& add = FindNode(*g, "Add");
  EXPECT_TRUE(add.attributes.empty());
  ASSERT_THAT(add.inputs, ElementsAre("X", "add/B"));
  EXPECT_THAT(g->initializers.at("add/B").dims, ElementsAre(3, 1, 1));
  EXPECT_THAT(InitializerFloats(*g, "add/B"), ElementsAre(1, 2, 3));
  EXPECT_THAT(g->initializers.at("B").dims, ElementsAre(3));  // the original is left as it was
}

TEST(CanonicalizeLegacy, AddBroadcastAxisInsertsUnsqueezeForRuntimeInput) {
  auto m = MakeModel(6);
  AddInput(m, "X", {"2", "3", "4"});
  AddInput(m, "B", {"2"});
  AddOutput(m, "Y", {"2", "3", "4"});
  auto* n = AddNode(m, "Mul", {"X", "B"}, {"Y"}, "mul");
  SetInt(n, "broadcast", 1);
  SetInt(n, "axis", 0);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->nodes.size(), 2u);
  const Node& unsqueeze = g->nodes[0];
  EXPECT_EQ(unsqueeze.op_type, "Unsqueeze");
  EXPECT_EQ(unsqueeze.name, "mul/unsqueeze");
  EXPECT_THAT(unsqueeze.source_nodes, ElementsAre("mul"));
  ASSERT_EQ(unsqueeze.inputs.size(), 2u);
  EXPECT_EQ(unsqueeze.inputs[0], "B");
  EXPECT_THAT(InitializerInts(*g, unsqueeze.inputs[1]), ElementsAre(1, 2));
  const Node& mul = g->nodes[1];
  EXPECT_THAT(mul.inputs, ElementsAre("X", unsqueeze.outputs[0]));
  EXPECT_TRUE(mul.attributes.empty());
}

TEST(CanonicalizeLegacy, BroadcastWithoutAxisNeedsNothing) {
  auto m = MakeModel(6);
  AddInput(m, "X", {"2", "3"});
  AddInput(m, "B", {"3"});
  AddOutput(m, "Y", {"2", "3"});
  SetInt(AddNode(m, "Sub", {"X", "B"}, {"Y"}, "sub"), "broadcast", 1);
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->nodes[0].inputs, ElementsAre("X", "B"));
  EXPECT_TRUE(g->nodes[0].attributes.empty());
}

TEST(CanonicalizeLegacy, BroadcastAxisWithUnknownRankIsUnimplemented) {
  auto m = MakeModel(6);
  AddInput(m, "X", {"2", "3", "4"});
  AddInput(m, "B", {"3"});
  AddOutput(m, "Y", {});
  AddNode(m, "Relu", {"X"}, {"R"});  // R: rank not stated
  auto* n = AddNode(m, "Add", {"R", "B"}, {"Y"}, "add");
  SetInt(n, "broadcast", 1);
  SetInt(n, "axis", 1);
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(g.status().message(), HasSubstr("node 'add' (Add): legacy broadcasting"));
}

TEST(CanonicalizeLegacy, PReluPerChannelSlope) {
  auto m = MakeModel(6);
  AddInput(m, "X", {"2", "3", "4"});
  AddOutput(m, "Y", {"2", "3", "4"});
  onnx::TensorProto slope;
  slope.set_name("slope");
  slope.set_data_type(onnx::TensorProto::FLOAT);
  slope.add_dims(3);
  for (float v : {0.1f, 0.2f, 0.3f}) slope.add_float_data(v);
  AddInitializer(m, slope);
  AddNode(m, "PRelu", {"X", "slope"}, {"Y"}, "p");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->nodes[0].inputs, ElementsAre("X", "p/slope"));
  EXPECT_THAT(g->initializers.at("p/slope").dims, ElementsAre(3, 1));

  // A single shared slope broadcasts as it is.
  m.mutable_graph()->mutable_initializer(0)->clear_float_data();
  m.mutable_graph()->mutable_initializer(0)->set_dims(0, 1);
  m.mutable_graph()->mutable_initializer(0)->add_float_data(0.5f);
  g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->nodes[0].inputs, ElementsAre("X", "slope"));
}

TEST(CanonicalizeLegacy, IsTestGemmBroadcastAndConsumedInputsDropped) {
  auto m = BatchNormModel(6, {"Y"});
  auto* bn = m.mutable_graph()->mutable_node(0);
  SetInt(bn, "is_test", 1);
  SetInts(bn, "consumed_inputs", {0, 0, 0, 1, 1});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->nodes[0].attributes.empty());

  bn->mutable_attribute(0)->set_i(0);  // is_test=0: training
  g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("node 'bn' (BatchNormalization): is_test=0"));

  auto gemm = MakeModel(6);
  AddInput(gemm, "A", {"2", "3"});
  AddInput(gemm, "B", {"3", "4"});
  AddInput(gemm, "C", {"4"});
  AddOutput(gemm, "Y", {"2", "4"});
  SetInt(AddNode(gemm, "Gemm", {"A", "B", "C"}, {"Y"}), "broadcast", 1);
  g = ImportOnnxModel(gemm);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE(g->nodes[0].HasAttribute("broadcast"));
}

TEST(CanonicalizeLegacy, CastStringTypeBecomesNumber) {
  onnx::NodeProto* n;
  auto m = UnaryModel(1, "Cast", &n);
  SetString(n, "to", "FLOAT16");
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].GetInt("to", 0), onnx::TensorProto::FLOAT16);

  n->mutable_attribute(0)->set_s("NOT_A_TYPE");
  g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("attribute 'to' names no data type"));
}

TEST(CanonicalizeLegacy, ConcatDefaultAxis) {
  auto m = MakeModel(3);
  AddInput(m, "A", {"1", "2"});
  AddInput(m, "B", {"1", "2"});
  AddOutput(m, "Y", {"1", "4"});
  AddNode(m, "Concat", {"A", "B"}, {"Y"});
  auto g = ImportOnnxModel(m);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes[0].GetInt("axis", -1), 1);
}

// ---- TensorFromProto -----------------------------------------------------------------------

template <typename T>
onnx::TensorProto RawProto(int32_t type, const std::vector<int64_t>& dims,
                           const std::vector<T>& values) {
  onnx::TensorProto t;
  t.set_data_type(type);
  for (int64_t d : dims) t.add_dims(d);
  t.set_raw_data(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T)));
  return t;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}

TEST(TensorFromProto, Float32RawAndTyped) {
  auto raw = TensorFromProto(RawProto<float>(onnx::TensorProto::FLOAT, {2, 2}, {1, -2, 3.5, 4}));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->dtype, DataType::kFloat32);
  EXPECT_THAT(raw->dims, ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(*raw), ElementsAre(1, -2, 3.5, 4));

  onnx::TensorProto typed;
  typed.set_data_type(onnx::TensorProto::FLOAT);
  typed.add_dims(3);
  for (float v : {0.5f, 1.5f, -7.0f}) typed.add_float_data(v);
  auto t = TensorFromProto(typed);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Values<float>(*t), ElementsAre(0.5f, 1.5f, -7.0f));
}

TEST(TensorFromProto, Float64) {
  auto raw = TensorFromProto(RawProto<double>(onnx::TensorProto::DOUBLE, {2}, {1.25, -3}));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->dtype, DataType::kFloat64);
  EXPECT_THAT(Values<double>(*raw), ElementsAre(1.25, -3));
  onnx::TensorProto typed;
  typed.set_data_type(onnx::TensorProto::DOUBLE);
  typed.add_dims(1);
  typed.add_double_data(2.5);
  auto t = TensorFromProto(typed);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Values<double>(*t), ElementsAre(2.5));
}

TEST(TensorFromProto, Int64AndInt32) {
  auto raw64 =
      TensorFromProto(RawProto<int64_t>(onnx::TensorProto::INT64, {3}, {-1, 0, 1LL << 40}));
  ASSERT_TRUE(raw64.ok()) << raw64.status();
  EXPECT_THAT(Values<int64_t>(*raw64), ElementsAre(-1, 0, 1LL << 40));
  onnx::TensorProto typed64 = Int64Proto("x", {5, -6});
  auto t64 = TensorFromProto(typed64);
  ASSERT_TRUE(t64.ok()) << t64.status();
  EXPECT_EQ(t64->dtype, DataType::kInt64);
  EXPECT_THAT(Values<int64_t>(*t64), ElementsAre(5, -6));

  auto raw32 = TensorFromProto(RawProto<int32_t>(onnx::TensorProto::INT32, {2}, {-9, 9}));
  ASSERT_TRUE(raw32.ok());
  EXPECT_THAT(Values<int32_t>(*raw32), ElementsAre(-9, 9));
  onnx::TensorProto typed32;
  typed32.set_data_type(onnx::TensorProto::INT32);
  typed32.add_dims(2);
  typed32.add_int32_data(-100000);
  typed32.add_int32_data(7);
  auto t32 = TensorFromProto(typed32);
  ASSERT_TRUE(t32.ok());
  EXPECT_EQ(t32->dtype, DataType::kInt32);
  EXPECT_THAT(Values<int32_t>(*t32), ElementsAre(-100000, 7));
}

// The small integer types travel in int32_data, one value per element.
TEST(TensorFromProto, SmallIntegerTypesFromInt32Data) {
  struct Case {
    int32_t onnx_type;
    DataType dtype;
    std::vector<int32_t> values;
  };
  for (const Case& c : std::vector<Case>{
           {onnx::TensorProto::INT8, DataType::kInt8, {-128, 0, 127}},
           {onnx::TensorProto::UINT8, DataType::kUint8, {0, 200, 255}},
           {onnx::TensorProto::INT16, DataType::kInt16, {-32768, 5, 32767}},
           {onnx::TensorProto::UINT16, DataType::kUint16, {0, 40000, 65535}},
           {onnx::TensorProto::BOOL, DataType::kBool, {1, 0, 1}},
       }) {
    onnx::TensorProto p;
    p.set_data_type(c.onnx_type);
    p.add_dims(3);
    for (int32_t v : c.values) p.add_int32_data(v);
    auto t = TensorFromProto(p);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->dtype, c.dtype);
    EXPECT_EQ(t->bytes.size(), 3 * engine::ElementSize(c.dtype));
    std::vector<int64_t> expected(c.values.begin(), c.values.end());
    EXPECT_EQ(t->AsInt64(), expected) << engine::DataTypeName(c.dtype);
  }
}

TEST(TensorFromProto, SmallIntegerTypesRaw) {
  auto i8 = TensorFromProto(RawProto<int8_t>(onnx::TensorProto::INT8, {2}, {-3, 4}));
  ASSERT_TRUE(i8.ok());
  EXPECT_THAT(Values<int8_t>(*i8), ElementsAre(-3, 4));
  auto u8 = TensorFromProto(RawProto<uint8_t>(onnx::TensorProto::UINT8, {2}, {250, 4}));
  ASSERT_TRUE(u8.ok());
  EXPECT_THAT(Values<uint8_t>(*u8), ElementsAre(250, 4));
  auto i16 = TensorFromProto(RawProto<int16_t>(onnx::TensorProto::INT16, {1}, {-300}));
  ASSERT_TRUE(i16.ok());
  EXPECT_THAT(Values<int16_t>(*i16), ElementsAre(-300));
  auto u16 = TensorFromProto(RawProto<uint16_t>(onnx::TensorProto::UINT16, {1}, {60000}));
  ASSERT_TRUE(u16.ok());
  EXPECT_THAT(Values<uint16_t>(*u16), ElementsAre(60000));
  auto b = TensorFromProto(RawProto<uint8_t>(onnx::TensorProto::BOOL, {2}, {1, 0}));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dtype, DataType::kBool);
  EXPECT_THAT(Values<uint8_t>(*b), ElementsAre(1, 0));
}

TEST(TensorFromProto, UnsignedWideTypesFromUint64Data) {
  onnx::TensorProto u32;
  u32.set_data_type(onnx::TensorProto::UINT32);
  u32.add_dims(2);
  u32.add_uint64_data(4000000000u);
  u32.add_uint64_data(1);
  auto t = TensorFromProto(u32);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DataType::kUint32);
  EXPECT_THAT(Values<uint32_t>(*t), ElementsAre(4000000000u, 1u));

  onnx::TensorProto u64;
  u64.set_data_type(onnx::TensorProto::UINT64);
  u64.add_dims(1);
  u64.add_uint64_data(1ULL << 63);
  t = TensorFromProto(u64);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Values<uint64_t>(*t), ElementsAre(1ULL << 63));

  auto raw = TensorFromProto(RawProto<uint32_t>(onnx::TensorProto::UINT32, {1}, {123456789u}));
  ASSERT_TRUE(raw.ok());
  EXPECT_THAT(Values<uint32_t>(*raw), ElementsAre(123456789u));
}

TEST(TensorFromProto, HalfAndBFloat16Bits) {
  // fp16: 1.0 = 0x3C00, -2.0 = 0xC000, 65504 = 0x7BFF, smallest subnormal 2^-24 = 0x0001.
  onnx::TensorProto h;
  h.set_data_type(onnx::TensorProto::FLOAT16);
  h.add_dims(4);
  for (int32_t bits : {0x3C00, 0xC000, 0x7BFF, 0x0001}) h.add_int32_data(bits);
  auto t = TensorFromProto(h);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DataType::kFloat16);
  EXPECT_THAT(Values<uint16_t>(*t), ElementsAre(0x3C00, 0xC000, 0x7BFF, 0x0001));
  EXPECT_THAT(t->AsFloat(), ElementsAre(1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24)));

  // bf16: 1.0 = 0x3F80, -0.5 = 0xBF00.
  auto raw =
      TensorFromProto(RawProto<uint16_t>(onnx::TensorProto::BFLOAT16, {2}, {0x3F80, 0xBF00}));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->dtype, DataType::kBFloat16);
  EXPECT_THAT(raw->AsFloat(), ElementsAre(1.0f, -0.5f));
  onnx::TensorProto b;
  b.set_data_type(onnx::TensorProto::BFLOAT16);
  b.add_dims(1);
  b.add_int32_data(0x4040);  // 3.0
  t = TensorFromProto(b);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(t->AsFloat(), ElementsAre(3.0f));
}

TEST(TensorFromProto, ScalarAndEmpty) {
  auto scalar = TensorFromProto(RawProto<float>(onnx::TensorProto::FLOAT, {}, {42}));
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->dims.empty());
  EXPECT_EQ(scalar->num_elements(), 1);
  EXPECT_THAT(Values<float>(*scalar), ElementsAre(42));

  onnx::TensorProto empty;
  empty.set_data_type(onnx::TensorProto::FLOAT);
  empty.add_dims(0);
  empty.add_dims(3);
  auto e = TensorFromProto(empty);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->num_elements(), 0);
  EXPECT_TRUE(e->bytes.empty());
}

TEST(TensorFromProto, Errors) {
  auto bad_raw = RawProto<float>(onnx::TensorProto::FLOAT, {3}, {1, 2});
  bad_raw.set_name("w");
  auto t = TensorFromProto(bad_raw);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "tensor 'w': raw_data has 8 bytes, expected 12 for [3] FP32");

  onnx::TensorProto few;
  few.set_data_type(onnx::TensorProto::INT64);
  few.add_dims(2);
  few.add_int64_data(1);
  t = TensorFromProto(few);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("int64_data has 1 values, expected 2"));

  onnx::TensorProto huge;
  huge.set_data_type(onnx::TensorProto::FLOAT);
  for (int i = 0; i < 8; ++i) huge.add_dims(1 << 20);
  t = TensorFromProto(huge);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("too many elements"));

  onnx::TensorProto negative;
  negative.set_data_type(onnx::TensorProto::FLOAT);
  negative.add_dims(-1);
  t = TensorFromProto(negative);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("negative dimension"));

  onnx::TensorProto external;
  external.set_name("big");
  external.set_data_type(onnx::TensorProto::FLOAT);
  external.add_dims(4);
  external.set_data_location(onnx::TensorProto::EXTERNAL);
  auto* entry = external.add_external_data();
  entry->set_key("location");
  entry->set_value("weights.bin");
  t = TensorFromProto(external, "/models/m");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(),
              HasSubstr("tensor 'big': external data ('/models/m/weights.bin') is not supported"));

  onnx::TensorProto strings;
  strings.set_data_type(onnx::TensorProto::STRING);
  strings.add_dims(1);
  strings.add_string_data("a");
  t = TensorFromProto(strings);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("element type STRING is not supported"));
}

TEST(TensorFromProto, InitializerErrorNamesIt) {
  auto m = UnaryModel(13, "Relu");
  auto w = RawProto<float>(onnx::TensorProto::FLOAT, {2}, {1});
  w.set_name("weights");
  AddInitializer(m, w);
  auto g = ImportOnnxModel(m);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("tensor 'weights': raw_data has 4 bytes"));
}

// ---- files ---------------------------------------------------------------------------------

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("importer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path Write(const std::string& name, const std::string& bytes) {
    auto path = dir_ / name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(FileTest, RoundTrip) {
  auto m = UnaryModel(13, "Relu");
  auto path = Write("model.onnx", m.SerializeAsString());
  auto g = ImportOnnxFile(path);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->nodes.size(), 1u);

  auto t = RawProto<float>(onnx::TensorProto::FLOAT, {2}, {1, 2});
  auto tpath = Write("input_0.pb", t.SerializeAsString());
  auto tensor = ReadTensorProtoFile(tpath);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_THAT(Values<float>(*tensor), ElementsAre(1, 2));
}

TEST_F(FileTest, GarbageIsNotAnOnnxModel) {
  for (const std::string& bytes :
       {std::string(), std::string("hello world, not a protobuf\xff\xff\xff", 30),
        std::string("\x08\x07", 2) /* a ModelProto with ir_version only, no graph */}) {
    auto path = Write("bad.onnx", bytes);
    auto g = ImportOnnxFile(path);
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(g.status().message(), HasSubstr("not an ONNX model"));
    EXPECT_THAT(g.status().message(), HasSubstr("bad.onnx"));
  }
}

TEST_F(FileTest, TruncatedModelNeverCrashes) {
  auto m = MakeModel(13);
  AddInput(m, "X", {"1", "4"});
  AddOutput(m, "Y", {"1", "4"});
  auto w = RawProto<float>(onnx::TensorProto::FLOAT, {4, 4}, std::vector<float>(16, 1.0f));
  w.set_name("W");
  AddInitializer(m, w);
  AddNode(m, "MatMul", {"X", "W"}, {"Y"});
  const std::string bytes = m.SerializeAsString();
  int ok = 0;
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto g = ImportOnnxFile(Write("t.onnx", bytes.substr(0, len)));
    if (g.ok()) ++ok;
  }
  EXPECT_TRUE(ImportOnnxFile(Write("t.onnx", bytes)).ok());
  // Flipping bytes must not crash either.
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
    (void)ImportOnnxFile(Write("f.onnx", flipped));
  }
}

TEST_F(FileTest, MissingFile) {
  auto g = ImportOnnxFile(dir_ / "nope.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
  auto t = ReadTensorProtoFile(dir_ / "nope.pb");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  g = ImportOnnxFile(dir_);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FileTest, ErrorsNameTheFile) {
  auto m = UnaryModel(13, "Relu");
  m.mutable_graph()->mutable_node(0)->set_domain("ai.onnx.ml");
  auto path = Write("model.onnx", m.SerializeAsString());
  auto g = ImportOnnxFile(path);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("model file '" + path.string() +
                                              "': node 'n' (Relu): domain 'ai.onnx.ml'"));
}

// ---- the ONNX conformance data -------------------------------------------------------------

// Imports every model of the conformance data. Failures are allowed only for documented
// reasons: a feature the IR cannot express (UNIMPLEMENTED: another domain, subgraphs, sequence
// or string types, opset outside the range, ...). Any INVALID_ARGUMENT on these well-formed
// files is an importer bug.
TEST(ConformanceData, ImportsEveryModel) {
  const std::filesystem::path root = "/usr/share/libonnx-testdata/data";
  ASSERT_TRUE(std::filesystem::exists(root)) << root << " not installed (libonnx-testdata)";
  int total = 0, imported = 0;
  std::map<std::string, int> reasons;
  for (const char* suite : {"node", "pytorch-converted", "pytorch-operator", "simple"}) {
    int suite_total = 0, suite_imported = 0;
    std::vector<std::filesystem::path> dirs;
    for (const auto& entry : std::filesystem::directory_iterator(root / suite)) {
      dirs.push_back(entry.path());
    }
    std::sort(dirs.begin(), dirs.end());
    for (const auto& dir : dirs) {
      const auto path = dir / "model.onnx";
      if (!std::filesystem::exists(path)) continue;
      ++total;
      ++suite_total;
      auto g = ImportOnnxFile(path);
      if (g.ok()) {
        ++imported;
        ++suite_imported;
        EXPECT_FALSE(g->outputs.empty()) << path;
        for (const auto& node : g->nodes) {
          EXPECT_FALSE(node.name.empty()) << path;
          EXPECT_NE(node.op_type, "Constant") << path;
        }
        continue;
      }
      EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented)
          << dir.filename() << ": " << g.status();
      // Group by the reason, without the file and node names.
      std::string message(g.status().message());
      std::string reason = message;
      for (const char* key :
           {"domain '", "is a subgraph", "is not a tensor", "element type", "opset ",
            "training_mode=", "mode '", "training statistics", "has type", "must be a constant",
            "spatial", "no shape", "sparse", "string constants"}) {
        const size_t at = message.find(key);
        if (at != std::string::npos) {
          reason = message.substr(at, std::min<size_t>(60, message.size() - at));
          break;
        }
      }
      ++reasons[reason];
    }
    std::cout << "[ conformance ] " << suite << ": imported " << suite_imported << " of "
              << suite_total << "\n";
  }
  std::cout << "[ conformance ] total: imported " << imported << " of " << total << "\n";
  for (const auto& [reason, count] : reasons) {
    std::cout << "[ conformance ]   not imported (" << count << "): " << reason << "\n";
  }
  EXPECT_GT(imported, total * 8 / 10);
}

// Every reference tensor of the conformance data reads, or fails only for a documented reason
// (string tensors; sequence/optional outputs are other protos and fail to parse as tensors
// only rarely, so they are counted, not asserted).
TEST(ConformanceData, ReadsReferenceTensors) {
  const std::filesystem::path root = "/usr/share/libonnx-testdata/data/node";
  ASSERT_TRUE(std::filesystem::exists(root)) << root << " not installed (libonnx-testdata)";
  int total = 0, read = 0;
  for (const auto& test : std::filesystem::directory_iterator(root)) {
    for (const auto& set : std::filesystem::directory_iterator(test.path())) {
      if (!set.is_directory()) continue;
      for (const auto& file : std::filesystem::directory_iterator(set.path())) {
        if (file.path().extension() != ".pb") continue;
        ++total;
        auto t = ReadTensorProtoFile(file.path());
        if (t.ok()) {
          ++read;
          EXPECT_EQ(t->bytes.size(),
                    static_cast<size_t>(t->num_elements()) * engine::ElementSize(t->dtype))
              << file.path();
        }
      }
    }
  }
  std::cout << "[ conformance ] node reference tensors: read " << read << " of " << total << "\n";
  EXPECT_GT(read, total * 9 / 10);
}

TEST(ConformanceData, ConvModelMatchesItsKnownShape) {
  const std::filesystem::path path =
      "/usr/share/libonnx-testdata/data/node/test_basic_conv_with_padding/model.onnx";
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " not installed (libonnx-testdata)";
  auto g = ImportOnnxFile(path);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->inputs.size(), 2u);  // x and W are both runtime inputs in this test
  EXPECT_THAT(g->inputs[0].dims, ElementsAre(1, 1, 5, 5));
  EXPECT_THAT(g->inputs[1].dims, ElementsAre(1, 1, 3, 3));
  ASSERT_EQ(g->nodes.size(), 1u);
  EXPECT_EQ(g->nodes[0].op_type, "Conv");
  EXPECT_THAT(g->nodes[0].GetInts("pads"), ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(g->nodes[0].GetInts("kernel_shape"), ElementsAre(3, 3));
}

}  // namespace
}  // namespace convserve::onnx_import
