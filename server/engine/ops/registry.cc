// The one list of op types the engine accepts, and which have a oneDNN compiler. Adding an op:
// one file pair (or a function in the matching file), one line here, one test.
#include <map>
#include <set>

#include "server/engine/ops/ops.h"

namespace convserve::engine {

namespace {

const std::map<std::string, OpCompileFn>& Compilers() {
  static const auto* compilers = new std::map<std::string, OpCompileFn>{
      {"Conv", ops::CompileConv},
      {"MaxPool", ops::CompilePool},
      {"AveragePool", ops::CompilePool},
      {"GlobalAveragePool", ops::CompilePool},
      {"GlobalMaxPool", ops::CompilePool},
      {"Gemm", ops::CompileGemm},
      {"MatMul", ops::CompileMatMul},
      {"Relu", ops::CompileActivation},
      {"LeakyRelu", ops::CompileActivation},
      {"Clip", ops::CompileActivation},
      {"Sigmoid", ops::CompileActivation},
      {"HardSigmoid", ops::CompileActivation},
      {"HardSwish", ops::CompileActivation},
      {"Tanh", ops::CompileActivation},
      {"Elu", ops::CompileActivation},
      {"PRelu", ops::CompilePRelu},
      {"BatchNormalization", ops::CompileBatchNorm},
      {"Add", ops::CompileBinary},
      {"Sub", ops::CompileBinary},
      {"Mul", ops::CompileBinary},
      {"Div", ops::CompileBinary},
      {"Softmax", ops::CompileSoftmax},
      {"LogSoftmax", ops::CompileSoftmax},
      {"ReduceMean", ops::CompileReduce},
      {"ReduceMax", ops::CompileReduce},
      {"Reshape", ops::CompileReshape},
      {"Flatten", ops::CompileReshape},
      {"Squeeze", ops::CompileReshape},
      {"Unsqueeze", ops::CompileReshape},
      {"Identity", ops::CompileIdentity},
      {"Dropout", ops::CompileIdentity},
      {"Transpose", ops::CompileTranspose},
      {"Concat", ops::CompileConcat},
      {"Slice", ops::CompileSlice},
      {"Split", ops::CompileSplit},
      {"Cast", ops::CompileCast},
  };
  return *compilers;
}

// Ops evaluated on the host only: shape arithmetic that PyTorch exports around Reshape (folded
// at compile time) and padding.
const std::set<std::string>& HostOnlyOps() {
  static const auto* ops =
      new std::set<std::string>{"Shape",     "Size",     "Gather",    "ConstantOfShape",
                                "Range",     "Pad",      "Expand",    "Tile",
                                "Where",     "Equal",    "Less",      "Greater",
                                "Not",       "Pow",      "Min",       "Max",
                                "Sum",       "Mean",     "Neg",       "Abs",
                                "Sqrt",      "Exp",      "Log",       "Reciprocal",
                                "Floor",     "Ceil",     "Erf",       "Selu",
                                "Softplus",  "Softsign", "ReduceMin", "ReduceSum",
                                "ReduceProd"};
  return *ops;
}

}  // namespace

OpCompileFn FindOpCompiler(const std::string& op_type) {
  auto it = Compilers().find(op_type);
  return it == Compilers().end() ? nullptr : it->second;
}

bool IsSupportedOpType(const std::string& op_type) {
  return Compilers().count(op_type) > 0 || HostOnlyOps().count(op_type) > 0;
}

}  // namespace convserve::engine
