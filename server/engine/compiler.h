// Graph -> Plan compilation: the context every op compiler works against.
//
// The compiler walks the (pass-optimised) graph in order with concrete shapes for one batch
// size. Each value is either a compile-time constant (initializer or folded) or a runtime value
// living in a buffer with a oneDNN memory descriptor (its current layout). Op compilers create
// oneDNN primitive descriptors with format_tag::any, ask the context for their inputs in the
// layout the primitive chose (the context inserts a reorder only when it differs), define
// outputs in the layout the primitive produces, and add steps. Buffers are placed in one arena
// by liveness after the last step.
//
// Internal to the engine: op files include it, nothing outside server/engine does.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "server/engine/engine.h"
#include "server/engine/graph.h"

namespace convserve::engine {

// Returned (as the status message) by an op compiler that declines a configuration it has no
// oneDNN path for; the compiler then evaluates the node on the host (host_ops.h).
inline constexpr const char* kUseHostFallback = "use-host-fallback";
absl::Status UseHostFallback();
bool IsHostFallback(const absl::Status& status);

// dnnl helpers shared by op files.
const dnnl::engine& CpuEngine();
std::optional<dnnl::memory::data_type> ToDnnl(DataType type);  // nullopt: host-only type
dnnl::memory::desc PlainDesc(const Dims& dims, dnnl::memory::data_type type);
std::string FormatName(const dnnl::memory::desc& desc);  // "nChw16c", "abcd", "ba", ...
// Post-ops fused into a node by the passes, encoded in attribute "convserve.post_ops".
struct PostOp {
  std::string kind;  // relu, leaky_relu, clip, elu, tanh, sigmoid, hardswish, hardsigmoid, sum
  float alpha = 0.f, beta = 0.f;
};
inline constexpr const char* kPostOpsAttribute = "convserve.post_ops";
std::vector<PostOp> DecodePostOps(const Node& node);
std::string EncodePostOps(const std::vector<PostOp>& ops);
// Appends `ops` (except "sum", which the caller places) to a oneDNN post-op chain.
void AppendEltwisePostOp(const PostOp& op, dnnl::post_ops& chain);
// The activation ops that can become an eltwise post-op, with their parameters; nullopt if not.
std::optional<PostOp> ActivationPostOp(const Node& node,
                                       const std::map<std::string, Tensor>& constants);

// An argument of a step: a slot (runtime buffer viewed with a descriptor) or a constant.
struct StepArg {
  int dnnl_arg = 0;
  int slot = -1;                         // runtime slot, or -1
  std::optional<dnnl::memory> constant;  // plan-owned constant memory (weights, bias)
};

class CompileContext {
 public:
  virtual ~CompileContext() = default;

  virtual const Node& node() const = 0;
  virtual const std::string& model_name() const = 0;
  virtual Precision precision() const = 0;

  // Inputs of the current node (index into node().inputs).
  virtual bool IsAbsent(size_t i) const = 0;
  virtual bool IsConstant(size_t i) const = 0;
  virtual const Tensor& Constant(size_t i) const = 0;  // requires IsConstant(i)
  virtual DataType InputType(size_t i) const = 0;
  virtual const Dims& InputDims(size_t i) const = 0;
  virtual const dnnl::memory::desc& InputDesc(size_t i) const = 0;  // current layout (runtime)
  // Output dims/types as shape inference computed them.
  virtual const ValueInfo& OutputInfo(size_t j) const = 0;
  virtual bool OutputUsed(size_t j) const = 0;
  // Remaining uses of runtime input i after this node (0: this node is the last reader).
  virtual int UsesAfterThisNode(size_t i) const = 0;

  // A slot holding input i in layout `desc` (a reorder step is inserted when the current
  // layout differs; conversions are cached per value and layout).
  virtual absl::StatusOr<int> InputSlot(size_t i, const dnnl::memory::desc& desc) = 0;
  virtual absl::StatusOr<int> InputSlotPlain(size_t i) = 0;
  // A view of input i (made plain first) through another descriptor over the same buffer:
  // a reshape, a transposed-strides view or a sub-memory. The caller keeps it in bounds.
  virtual absl::StatusOr<int> InputView(size_t i, const dnnl::memory::desc& desc) = 0;
  // Output j in a new buffer with layout `desc`; `desc` dims may differ from the logical dims
  // only when desc is plain (then the value is recorded with plain logical dims).
  virtual int DefineOutput(size_t j, const dnnl::memory::desc& desc) = 0;
  // Output j shares input i's buffer (no copy): same layout, or plain reinterpretation with
  // the output's logical dims when `plain_reshape` (input must be plain).
  virtual absl::Status AliasOutput(size_t j, size_t i, bool plain_reshape) = 0;
  // Output j written in place into input i's buffer (input must be dead after this node, and
  // not a model input). Returns the slot, or -1 if not possible.
  virtual int TryInPlaceOutput(size_t j, size_t i, const dnnl::memory::desc& desc) = 0;

  // Constant i (or any tensor) reordered once into `desc`.
  virtual absl::StatusOr<dnnl::memory> ConstantMemory(const Tensor& tensor,
                                                      const dnnl::memory::desc& desc) = 0;

  // Adds a primitive step. `pd` supplies the scratchpad descriptor.
  virtual void AddPrimitive(dnnl::primitive primitive, const dnnl::primitive_desc_base& pd,
                            std::vector<StepArg> args, StepInfo info) = 0;
  // Adds a reorder from slot to slot (e.g. a copy before an in-place sum).
  virtual absl::Status AddReorder(int from_slot, int to_slot, const std::string& why) = 0;
  // The default StepInfo for the current node (name, kind, sources, dims).
  virtual StepInfo BaseInfo() const = 0;
};

// An op compiler; returns UseHostFallback() to decline.
using OpCompileFn = absl::Status (*)(CompileContext& ctx);
// The registry: one entry per op type with a oneDNN path (ops/registry.cc).
OpCompileFn FindOpCompiler(const std::string& op_type);

// Reordered constants (weights, biases) shared by the plans of one model. Each plan is compiled
// for one batch size, and oneDNN picks the same weights layout for most of them; without sharing,
// every plan kept its own copy, and a dynamic batcher that runs batches of 1..8 read eight copies
// of each weight, so that they no longer stayed in cache (measured: fashion-sep's 3136x128 dense
// layer took 139 us at batch 2 in the server against 27 us with one plan in a loop, and 30 us in
// the server with the copies shared). Thread-safe.
class ConstantCache {
 public:
  // `candidate`: a constant just reordered for a new plan. Returns the memory of an earlier plan
  // that holds the same bytes in the same layout (compared in full, not only by hash), else
  // remembers `candidate` and returns it.
  dnnl::memory Share(dnnl::memory candidate);
  // Distinct constant memories held, and their bytes (for tests and logs).
  size_t size() const;
  size_t bytes() const;

 private:
  mutable std::mutex mutex_;
  std::unordered_multimap<uint64_t, dnnl::memory> entries_;  // by a hash of the bytes
};

// The plan keeps `graph` alive (host steps and constants point into it). `constants`: where
// plans of the same model share their reordered constants (may be null: nothing shared).
absl::StatusOr<std::shared_ptr<const Plan>> CompilePlan(std::shared_ptr<const Graph> graph,
                                                        const ModelOptions& options,
                                                        int64_t batch_size, int num_threads,
                                                        ConstantCache* constants = nullptr);

}  // namespace convserve::engine
