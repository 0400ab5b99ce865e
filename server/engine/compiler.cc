#include "server/engine/compiler.h"

#include <omp.h>
#include <pmmintrin.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <set>
#include <sstream>
#include <string_view>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/status.h"
#include "server/engine/host_ops.h"

namespace convserve::engine {

using dnnl::memory;

absl::Status UseHostFallback() { return absl::UnimplementedError(kUseHostFallback); }
bool IsHostFallback(const absl::Status& status) {
  return absl::IsUnimplemented(status) && status.message() == absl::string_view(kUseHostFallback);
}

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

std::optional<memory::data_type> ToDnnl(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return memory::data_type::f32;
    case DataType::kBFloat16:
      return memory::data_type::bf16;
    case DataType::kFloat16:
      return memory::data_type::f16;
    case DataType::kInt32:
      return memory::data_type::s32;
    case DataType::kInt8:
      return memory::data_type::s8;
    case DataType::kUint8:
      return memory::data_type::u8;
    default:
      return std::nullopt;
  }
}

memory::desc PlainDesc(const Dims& dims, memory::data_type type) {
  memory::dims d = dims.empty() ? memory::dims{1} : memory::dims(dims.begin(), dims.end());
  memory::dims strides(d.size(), 1);
  for (int k = static_cast<int>(d.size()) - 2; k >= 0; --k) {
    strides[k] = strides[k + 1] * std::max<int64_t>(d[k + 1], 1);
  }
  return memory::desc(d, type, strides);
}

std::string FormatName(const memory::desc& desc) {
  const dnnl_memory_desc_t& md = desc.data;
  if (md.format_kind != dnnl_blocked)
    return md.format_kind == dnnl_format_kind_any ? "any" : "opaque";
  const auto& blk = md.format_desc.blocking;
  const int ndims = md.ndims;
  std::vector<int> order(ndims);
  for (int k = 0; k < ndims; ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return blk.strides[a] > blk.strides[b]; });
  std::vector<bool> blocked(ndims, false);
  for (int k = 0; k < blk.inner_nblks; ++k) blocked[blk.inner_idxs[k]] = true;
  std::string name;
  for (int k : order) name += static_cast<char>((blocked[k] ? 'A' : 'a') + k);
  for (int k = 0; k < blk.inner_nblks; ++k) {
    name += std::to_string(blk.inner_blks[k]) + static_cast<char>('a' + blk.inner_idxs[k]);
  }
  return name;
}

std::vector<PostOp> DecodePostOps(const Node& node) {
  std::vector<PostOp> ops;
  const std::string encoded = node.GetString(kPostOpsAttribute, "");
  if (encoded.empty()) return ops;
  for (absl::string_view item : absl::StrSplit(encoded, ';')) {
    std::vector<std::string> parts = absl::StrSplit(item, ':');
    PostOp op;
    op.kind = parts[0];
    if (parts.size() > 1) op.alpha = std::strtof(parts[1].c_str(), nullptr);
    if (parts.size() > 2) op.beta = std::strtof(parts[2].c_str(), nullptr);
    ops.push_back(op);
  }
  return ops;
}

std::string EncodePostOps(const std::vector<PostOp>& ops) {
  std::vector<std::string> items;
  for (const PostOp& op : ops) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s:%.9g:%.9g", op.kind.c_str(), op.alpha, op.beta);
    items.push_back(buf);
  }
  return absl::StrJoin(items, ";");
}

void AppendEltwisePostOp(const PostOp& op, dnnl::post_ops& chain) {
  using dnnl::algorithm;
  if (op.kind == "relu")
    chain.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  else if (op.kind == "leaky_relu")
    chain.append_eltwise(1.f, algorithm::eltwise_relu, op.alpha, 0.f);
  else if (op.kind == "clip")
    chain.append_eltwise(1.f, algorithm::eltwise_clip, op.alpha, op.beta);
  else if (op.kind == "elu")
    chain.append_eltwise(1.f, algorithm::eltwise_elu, op.alpha, 0.f);
  else if (op.kind == "tanh")
    chain.append_eltwise(1.f, algorithm::eltwise_tanh, 0.f, 0.f);
  else if (op.kind == "sigmoid")
    chain.append_eltwise(1.f, algorithm::eltwise_logistic, 0.f, 0.f);
  else if (op.kind == "hardswish")
    chain.append_eltwise(1.f, algorithm::eltwise_hardswish, 0.f, 0.f);
  else if (op.kind == "hardsigmoid") {
    chain.append_eltwise(1.f, algorithm::eltwise_linear, op.alpha, op.beta);
    chain.append_eltwise(1.f, algorithm::eltwise_clip, 0.f, 1.f);
  }
}

std::optional<PostOp> ActivationPostOp(const Node& node,
                                       const std::map<std::string, Tensor>& constants) {
  const std::string& t = node.op_type;
  if (t == "Relu") return PostOp{"relu"};
  if (t == "LeakyRelu") return PostOp{"leaky_relu", node.GetFloat("alpha", 0.01f)};
  if (t == "Elu") return PostOp{"elu", node.GetFloat("alpha", 1.f)};
  if (t == "Tanh") return PostOp{"tanh"};
  if (t == "Sigmoid") return PostOp{"sigmoid"};
  if (t == "HardSwish") return PostOp{"hardswish"};
  if (t == "HardSigmoid") {
    return PostOp{"hardsigmoid", node.GetFloat("alpha", 0.2f), node.GetFloat("beta", 0.5f)};
  }
  if (t == "Clip") {
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    for (size_t k = 1; k < node.inputs.size() && k < 3; ++k) {
      if (node.inputs[k].empty()) continue;
      auto it = constants.find(node.inputs[k]);
      if (it == constants.end() || it->second.num_elements() != 1) return std::nullopt;
      const float v = it->second.AsFloat()[0];
      (k == 1 ? lo : hi) = v;
    }
    return PostOp{"clip", lo, hi};
  }
  return std::nullopt;
}

namespace {

constexpr size_t kAlignment = 64;
size_t AlignUp(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

struct SlotDef {
  int buffer = -1;
  memory::desc desc;
};

struct BufferDef {
  size_t bytes = 0;
  int external_input = -1;   // model input index, or -1
  int external_output = -1;  // model output index, or -1
  int first_step = INT_MAX;
  int last_step = -1;
  size_t offset = 0;
};

using HostFn = std::function<absl::Status(std::span<void* const> pointers)>;

struct StepDef {
  std::optional<dnnl::primitive> primitive;
  std::vector<StepArg> args;
  memory::desc scratchpad;
  HostFn host;  // host steps: called with the pointers of host_slots
  std::vector<int> host_slots;
  std::vector<int> written_slots;  // for liveness of host steps (reads+writes = host_slots)
};

struct ValueState {
  DataType dtype = DataType::kUndefined;
  Dims dims;
  const Tensor* constant = nullptr;
  int slot = -1;
};

struct AlignedDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, AlignedDeleter>;
// What AllocateAligned(bytes) really allocates.
size_t AllocatedSize(size_t bytes) { return AlignUp(std::max<size_t>(bytes, 1)); }
AlignedBuffer AllocateAligned(size_t bytes) {
  void* p = std::aligned_alloc(kAlignment, AllocatedSize(bytes));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, AllocatedSize(bytes));
  return AlignedBuffer(static_cast<std::byte*>(p));
}

class PlanImpl;

class WorkspaceMemoryImpl final : public WorkspaceMemory {
 public:
  size_t byte_size() const override {
    return arena_bytes_.load(std::memory_order_relaxed) +
           scratchpad_bytes_.load(std::memory_order_relaxed);
  }
  // Grows the buffers to at least these sizes (their contents are not kept); `generation`
  // changes whenever a buffer moved.
  void Reserve(size_t arena_bytes, size_t scratchpad_bytes) {
    Grow(arena, arena_bytes_, arena_bytes);
    Grow(scratchpad, scratchpad_bytes_, scratchpad_bytes);
  }
  AlignedBuffer arena, scratchpad;
  uint64_t generation = 0;

 private:
  void Grow(AlignedBuffer& buffer, std::atomic<size_t>& size, size_t bytes) {
    if (AllocatedSize(bytes) <= size.load()) return;
    buffer = AllocateAligned(bytes);
    size = AllocatedSize(bytes);
    ++generation;
  }
  std::atomic<size_t> arena_bytes_{0}, scratchpad_bytes_{0};
};

class WorkspaceImpl final : public Workspace {
 public:
  // `shared`: null for a workspace with its own arena and scratchpad.
  WorkspaceImpl(const PlanImpl& plan, WorkspaceMemoryImpl* shared);
  size_t byte_size() const override;
  // Points the runtime slots and the scratchpads at `shared`'s buffers when they moved.
  void BindShared();
  const PlanImpl& plan;
  WorkspaceMemoryImpl* const shared;
  uint64_t bound_generation = 0;
  AlignedBuffer arena;  // own buffers (shared == nullptr)
  AlignedBuffer scratchpad;
  dnnl::stream stream;
  std::vector<memory> slot_memory;                        // one per slot
  std::vector<std::unordered_map<int, memory>> arg_maps;  // one per step
  std::vector<memory> scratchpad_memory;                  // one per step that has one
  std::vector<std::vector<void*>> host_pointers;          // one per step
  bool denormals_set = false;

 private:
  void Bind(std::byte* arena_base, std::byte* scratchpad_base);
};

class PlanImpl final : public Plan {
 public:
  int64_t batch_size() const override { return batch_size_; }
  int num_threads() const override { return num_threads_; }
  size_t arena_bytes() const override { return arena_bytes_; }
  size_t scratchpad_bytes() const override { return scratchpad_bytes_; }
  std::unique_ptr<Workspace> CreateWorkspace() const override {
    return std::make_unique<WorkspaceImpl>(*this, nullptr);
  }
  std::unique_ptr<Workspace> CreateWorkspace(WorkspaceMemory& shared) const override {
    return std::make_unique<WorkspaceImpl>(*this, &static_cast<WorkspaceMemoryImpl&>(shared));
  }
  absl::Status Run(Workspace& workspace, std::span<const TensorView> inputs,
                   std::span<const TensorView> outputs, const RunOptions& options) const override {
    return Execute(workspace, inputs, outputs, nullptr, options);
  }
  absl::Status RunProfiled(Workspace& workspace, std::span<const TensorView> inputs,
                           std::span<const TensorView> outputs, std::vector<int64_t>& step_ns,
                           const RunOptions& options) const override {
    step_ns.assign(steps_.size(), 0);
    return Execute(workspace, inputs, outputs, &step_ns, options);
  }
  const std::vector<StepInfo>& steps() const override { return infos_; }
  const std::vector<ValueInfo>& input_infos() const override { return input_infos_; }
  const std::vector<ValueInfo>& output_infos() const override { return output_infos_; }

  absl::Status Execute(Workspace& workspace, std::span<const TensorView> inputs,
                       std::span<const TensorView> outputs, std::vector<int64_t>* step_ns,
                       const RunOptions& options) const;

  std::string model_name_;
  int64_t batch_size_ = 1;
  int num_threads_ = 1;
  std::vector<StepDef> steps_;
  std::vector<StepInfo> infos_;
  std::vector<SlotDef> slots_;
  std::vector<BufferDef> buffers_;
  size_t arena_bytes_ = 0;
  size_t scratchpad_bytes_ = 0;
  std::vector<ValueInfo> input_infos_, output_infos_;
  std::vector<std::shared_ptr<Tensor>> owned_constants_;  // kept alive for host steps
  std::shared_ptr<const Graph> graph_;                    // initializers used by host steps
};

size_t WorkspaceImpl::byte_size() const {
  if (shared != nullptr) return 0;
  return AllocatedSize(plan.arena_bytes_) + AllocatedSize(plan.scratchpad_bytes_);
}

WorkspaceImpl::WorkspaceImpl(const PlanImpl& p, WorkspaceMemoryImpl* shared_memory)
    : plan(p), shared(shared_memory), stream(CpuEngine()) {
  slot_memory.reserve(p.slots_.size());
  for (const SlotDef& slot : p.slots_) slot_memory.emplace_back(slot.desc, CpuEngine(), nullptr);
  arg_maps.resize(p.steps_.size());
  host_pointers.resize(p.steps_.size());
  for (size_t s = 0; s < p.steps_.size(); ++s) {
    const StepDef& step = p.steps_[s];
    for (const StepArg& arg : step.args) {
      arg_maps[s].emplace(arg.dnnl_arg, arg.constant ? *arg.constant : slot_memory[arg.slot]);
    }
    if (step.primitive && step.scratchpad.get_size() > 0) {
      scratchpad_memory.emplace_back(step.scratchpad, CpuEngine(), nullptr);
      arg_maps[s].emplace(DNNL_ARG_SCRATCHPAD, scratchpad_memory.back());
    }
    host_pointers[s].resize(step.host_slots.size());
  }
  // A shared workspace binds on its first run (Execute), where running out of memory becomes a
  // status.
  if (shared == nullptr) {
    arena = AllocateAligned(p.arena_bytes_);
    scratchpad = AllocateAligned(p.scratchpad_bytes_);
    Bind(arena.get(), scratchpad.get());
  }
}

void WorkspaceImpl::BindShared() {
  shared->Reserve(plan.arena_bytes_, plan.scratchpad_bytes_);
  if (bound_generation == shared->generation) return;  // Reserve made generation >= 1
  Bind(shared->arena.get(), shared->scratchpad.get());
  bound_generation = shared->generation;
}

void WorkspaceImpl::Bind(std::byte* arena_base, std::byte* scratchpad_base) {
  for (size_t s = 0; s < plan.slots_.size(); ++s) {
    const BufferDef& buffer = plan.buffers_[plan.slots_[s].buffer];
    // The model's inputs and outputs are the caller's buffers, set by every run.
    if (buffer.external_input >= 0 || buffer.external_output >= 0) continue;
    slot_memory[s].set_data_handle(static_cast<void*>(arena_base + buffer.offset));
  }
  for (memory& m : scratchpad_memory) m.set_data_handle(scratchpad_base);
}

absl::Status PlanImpl::Execute(Workspace& workspace, std::span<const TensorView> inputs,
                               std::span<const TensorView> outputs, std::vector<int64_t>* step_ns,
                               const RunOptions& options) const {
  auto& ws = static_cast<WorkspaceImpl&>(workspace);
  if (&ws.plan != this) return absl::InvalidArgumentError("workspace belongs to another plan");
  if (inputs.size() != input_infos_.size() || outputs.size() != output_infos_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model_name_, "': expected ", input_infos_.size(), " inputs and ",
        output_infos_.size(), " outputs, got ", inputs.size(), " and ", outputs.size()));
  }
  auto check = [&](const TensorView& view, const ValueInfo& info, const char* what) {
    const bool missing_data = view.data == nullptr && NumElements(info.dims) > 0;
    if (view.dtype != info.dtype || view.dims != info.dims || missing_data) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", model_name_, "': ", what, " '", info.name, "' expected ",
          DataTypeName(info.dtype), DimsToString(info.dims), ", got ", DataTypeName(view.dtype),
          DimsToString(view.dims), missing_data ? " (no data)" : ""));
    }
    return absl::OkStatus();
  };
  for (size_t k = 0; k < inputs.size(); ++k)
    RETURN_IF_ERROR(check(inputs[k], input_infos_[k], "input"));
  for (size_t k = 0; k < outputs.size(); ++k)
    RETURN_IF_ERROR(check(outputs[k], output_infos_[k], "output"));

  const int threads = options.num_threads > 0 ? options.num_threads : num_threads_;
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  if (!ws.denormals_set) {
    // Denormals slow oneDNN kernels by 2-10x; flush them in this thread and its OpenMP team.
#pragma omp parallel
    {
      _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
      _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
    }
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
    ws.denormals_set = true;
  }

  for (size_t s = 0; s < slots_.size(); ++s) {
    const BufferDef& buffer = buffers_[slots_[s].buffer];
    if (buffer.external_input >= 0) {
      ws.slot_memory[s].set_data_handle(inputs[buffer.external_input].data);
    } else if (buffer.external_output >= 0) {
      ws.slot_memory[s].set_data_handle(outputs[buffer.external_output].data);
    }
  }

  size_t s = 0;
  try {
    // A larger plan may have grown the shared arena since this workspace last ran.
    if (ws.shared != nullptr) ws.BindShared();
    for (s = 0; s < steps_.size(); ++s) {
      const StepDef& step = steps_[s];
      const auto start = std::chrono::steady_clock::now();
      if (step.primitive) {
        step.primitive->execute(ws.stream, ws.arg_maps[s]);
      } else {
        auto& ptrs = ws.host_pointers[s];
        for (size_t k = 0; k < step.host_slots.size(); ++k) {
          ptrs[k] = step.host_slots[k] < 0 ? nullptr
                                           : ws.slot_memory[step.host_slots[k]].get_data_handle();
        }
        absl::Status status = step.host(ptrs);
        if (!status.ok()) {
          return Annotate(status,
                          absl::StrCat("model '", model_name_, "', step '", infos_[s].name, "'"));
        }
      }
      if (step_ns != nullptr) {
        ws.stream.wait();
        (*step_ns)[s] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
      }
    }
    ws.stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("model '", model_name_, "', step '",
                                            s < infos_.size() ? infos_[s].name : "?",
                                            "': oneDNN error: ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("model '", model_name_, "': out of memory for the workspace of batch size ",
                     batch_size_, " (", arena_bytes_ + scratchpad_bytes_, " bytes)"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

class Compiler final : public CompileContext {
 public:
  Compiler(const Graph& graph, const ModelOptions& options, int64_t batch_size, int num_threads,
           ConstantCache* constants)
      : graph_(graph),
        options_(options),
        constants_(constants),
        plan_(std::make_shared<PlanImpl>()) {
    plan_->model_name_ = options.model_name;
    plan_->batch_size_ = batch_size;
    plan_->num_threads_ = num_threads;
  }

  absl::StatusOr<std::shared_ptr<const Plan>> Compile();
  void KeepAlive(std::shared_ptr<const Graph> graph) { plan_->graph_ = std::move(graph); }

  // CompileContext
  const Node& node() const override { return *node_; }
  const std::string& model_name() const override { return options_.model_name; }
  Precision precision() const override { return options_.precision; }
  bool IsAbsent(size_t i) const override {
    return i >= node_->inputs.size() || node_->inputs[i].empty();
  }
  bool IsConstant(size_t i) const override { return !IsAbsent(i) && Input(i).constant != nullptr; }
  const Tensor& Constant(size_t i) const override { return *Input(i).constant; }
  DataType InputType(size_t i) const override { return Input(i).dtype; }
  const Dims& InputDims(size_t i) const override { return Input(i).dims; }
  const memory::desc& InputDesc(size_t i) const override { return slots_[Input(i).slot].desc; }
  const ValueInfo& OutputInfo(size_t j) const override { return output_infos_[j]; }
  bool OutputUsed(size_t j) const override {
    return j < node_->outputs.size() && !node_->outputs[j].empty() &&
           uses_.count(node_->outputs[j]) && uses_.at(node_->outputs[j]) > 0;
  }
  int UsesAfterThisNode(size_t i) const override {
    const std::string& name = node_->inputs[i];
    int here = static_cast<int>(std::count(node_->inputs.begin(), node_->inputs.end(), name));
    auto it = uses_.find(name);
    return (it == uses_.end() ? 0 : it->second) - here;
  }
  absl::StatusOr<int> InputSlot(size_t i, const memory::desc& desc) override;
  absl::StatusOr<int> InputSlotPlain(size_t i) override {
    const ValueState& v = Input(i);
    auto dt = ToDnnl(v.dtype);
    if (!dt) return InputSlotHost(i);
    return InputSlot(i, PlainDesc(v.dims, *dt));
  }
  absl::StatusOr<int> InputView(size_t i, const memory::desc& desc) override {
    ASSIGN_OR_RETURN(int plain, InputSlotPlain(i));
    return NewSlot(slots_[plain].buffer, desc);
  }
  int DefineOutput(size_t j, const memory::desc& desc) override;
  absl::Status AliasOutput(size_t j, size_t i, bool plain_reshape) override;
  int TryInPlaceOutput(size_t j, size_t i, const memory::desc& desc) override;
  absl::StatusOr<memory> ConstantMemory(const Tensor& tensor, const memory::desc& desc) override;
  void AddPrimitive(dnnl::primitive primitive, const dnnl::primitive_desc_base& pd,
                    std::vector<StepArg> args, StepInfo info) override;
  absl::Status AddReorder(int from_slot, int to_slot, const std::string& why) override;
  StepInfo BaseInfo() const override;

 private:
  const ValueState& Input(size_t i) const { return values_.at(node_->inputs[i]); }
  int NewBuffer(size_t bytes) {
    BufferDef b;
    b.bytes = bytes;
    plan_->buffers_.push_back(b);
    return static_cast<int>(plan_->buffers_.size()) - 1;
  }
  int NewSlot(int buffer, const memory::desc& desc) {
    slots_.push_back({buffer, desc});
    plan_->buffers_[buffer].bytes = std::max(plan_->buffers_[buffer].bytes, desc.get_size());
    return static_cast<int>(slots_.size()) - 1;
  }
  // Host-only types are stored as bytes (u8 [n]); host steps use only pointers.
  memory::desc StorageDesc(DataType type, const Dims& dims) const {
    auto dt = ToDnnl(type);
    if (dt) return PlainDesc(dims, *dt);
    return PlainDesc(
        {std::max<int64_t>(1, NumElements(dims) * static_cast<int64_t>(ElementSize(type)))},
        memory::data_type::u8);
  }
  bool IsPlain(const ValueState& v) const {
    const memory::desc& d = slots_[v.slot].desc;
    auto dt = ToDnnl(v.dtype);
    return !dt || d == PlainDesc(v.dims, *dt);
  }
  absl::StatusOr<int> InputSlotHost(size_t i) { return Input(i).slot; }
  absl::Status CompileNode(const Node& node);
  absl::Status CompileOnHost(const std::vector<host::InputState>& states);
  absl::Status FoldConstant(const std::vector<host::InputState>& states);
  absl::Status AddOutputCopies();
  void AssignArena();
  absl::Status Err(const absl::Status& s) const {
    return Annotate(s, absl::StrCat("model '", options_.model_name, "'"));
  }

  const Graph& graph_;
  const ModelOptions& options_;
  ConstantCache* const constants_;  // may be null
  std::shared_ptr<PlanImpl> plan_;
  std::vector<SlotDef>& slots_ = plan_->slots_;
  std::map<std::string, ValueState> values_;
  std::map<std::string, int> uses_;
  std::map<std::pair<std::string, std::string>, int> conversions_;  // (value, desc key) -> slot
  std::vector<std::shared_ptr<Tensor>> folded_;
  const Node* node_ = nullptr;
  std::vector<ValueInfo> output_infos_;
};

std::string DescKey(const memory::desc& d) {
  return std::string(reinterpret_cast<const char*>(&d.data), sizeof(d.data));
}

absl::StatusOr<int> Compiler::InputSlot(size_t i, const memory::desc& desc) {
  const ValueState& v = Input(i);
  if (v.constant != nullptr) {
    return absl::InternalError("InputSlot called for a constant input");
  }
  if (slots_[v.slot].desc == desc) return v.slot;
  auto key = std::make_pair(node_->inputs[i], DescKey(desc));
  auto it = conversions_.find(key);
  if (it != conversions_.end()) return it->second;
  const int slot = NewSlot(NewBuffer(desc.get_size()), desc);
  RETURN_IF_ERROR(AddReorder(v.slot, slot, node_->inputs[i]));
  conversions_[key] = slot;
  return slot;
}

int Compiler::DefineOutput(size_t j, const memory::desc& desc) {
  const ValueInfo& info = output_infos_[j];
  const int buffer = NewBuffer(desc.get_size());
  int slot = NewSlot(buffer, desc);
  ValueState v{info.dtype, info.dims, nullptr, slot};
  auto dt = ToDnnl(info.dtype);
  memory::dims desc_dims = desc.dims();
  if (dt && Dims(desc_dims.begin(), desc_dims.end()) != info.dims &&
      !(info.dims.empty() && desc_dims == memory::dims{1})) {
    v.slot = NewSlot(buffer, PlainDesc(info.dims, *dt));
  }
  values_[node_->outputs[j]] = v;
  return slot;
}

absl::Status Compiler::AliasOutput(size_t j, size_t i, bool plain_reshape) {
  const ValueState& in = Input(i);
  const ValueInfo& info = output_infos_[j];
  ValueState v{info.dtype, info.dims, nullptr, in.slot};
  if (plain_reshape) {
    ASSIGN_OR_RETURN(int plain, InputSlotPlain(i));
    v.slot = NewSlot(slots_[plain].buffer, StorageDesc(info.dtype, info.dims));
  }
  values_[node_->outputs[j]] = v;
  return absl::OkStatus();
}

int Compiler::TryInPlaceOutput(size_t j, size_t i, const memory::desc& desc) {
  const ValueState& in = Input(i);
  if (in.constant != nullptr || slots_[in.slot].desc != desc) return -1;
  const int buffer = slots_[in.slot].buffer;
  const BufferDef& b = plan_->buffers_[buffer];
  if (b.external_input >= 0 || b.external_output >= 0) return -1;
  // The op may still read another of its inputs from this buffer (e.g. a conv whose source is
  // also the residual it sums into): writing in place would clobber what it reads.
  for (size_t k = 0; k < node_->inputs.size(); ++k) {
    if (k == i || IsAbsent(k) || IsConstant(k)) continue;
    const ValueState& other = Input(k);
    if (slots_[other.slot].buffer == buffer) return -1;
    for (const auto& [key, slot] : conversions_) {
      if (key.first == node_->inputs[k] && slots_[slot].buffer == buffer) return -1;
    }
  }
  // Every value living in this buffer must be dead after this node.
  for (const auto& [name, state] : values_) {
    if (state.constant != nullptr || state.slot < 0 || slots_[state.slot].buffer != buffer)
      continue;
    auto it = uses_.find(name);
    int remaining = it == uses_.end() ? 0 : it->second;
    remaining -= static_cast<int>(std::count(node_->inputs.begin(), node_->inputs.end(), name));
    if (remaining > 0) return -1;
  }
  // A cached layout conversion of a live value may also live in this buffer.
  for (const auto& [key, slot] : conversions_) {
    if (slots_[slot].buffer != buffer) continue;
    auto it = uses_.find(key.first);
    int remaining = it == uses_.end() ? 0 : it->second;
    remaining -=
        static_cast<int>(std::count(node_->inputs.begin(), node_->inputs.end(), key.first));
    if (remaining > 0) return -1;
  }
  const ValueInfo& info = output_infos_[j];
  values_[node_->outputs[j]] = ValueState{info.dtype, info.dims, nullptr, in.slot};
  return in.slot;
}

absl::StatusOr<memory> Compiler::ConstantMemory(const Tensor& tensor, const memory::desc& desc) {
  auto dt = ToDnnl(tensor.dtype);
  if (!dt) return absl::UnimplementedError("constant of a type oneDNN cannot hold");
  const memory::dims dims = desc.dims();
  const Dims target(dims.begin(), dims.end());
  if (NumElements(target) != tensor.num_elements()) {
    return absl::InternalError(absl::StrCat("constant of dims ", DimsToString(tensor.dims),
                                            " cannot be viewed as ", DimsToString(target)));
  }
  try {
    // Same element count: the plain tensor is reinterpreted with the target's logical dims
    // (e.g. OIHW -> GOIHW, [C] -> [1,C,1,1]) and reordered into the target layout.
    memory src(PlainDesc(target, *dt), CpuEngine(), const_cast<std::byte*>(tensor.bytes.data()));
    memory dst(desc, CpuEngine());
    dnnl::stream stream(CpuEngine());
    dnnl::reorder(src, dst).execute(stream, src, dst);
    stream.wait();
    return constants_ ? constants_->Share(std::move(dst)) : dst;
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("reorder of a constant failed: ", e.what()));
  }
}

void Compiler::AddPrimitive(dnnl::primitive primitive, const dnnl::primitive_desc_base& pd,
                            std::vector<StepArg> args, StepInfo info) {
  StepDef step;
  step.primitive = std::move(primitive);
  step.args = std::move(args);
  step.scratchpad = pd.scratchpad_desc();
  plan_->scratchpad_bytes_ = std::max(plan_->scratchpad_bytes_, step.scratchpad.get_size());
  if (info.kernel.empty()) {
    const char* impl = pd.impl_info_str();
    info.kernel = impl ? impl : "";
  }
  plan_->steps_.push_back(std::move(step));
  plan_->infos_.push_back(std::move(info));
}

absl::Status Compiler::AddReorder(int from_slot, int to_slot, const std::string& why) {
  try {
    dnnl::reorder::primitive_desc pd(CpuEngine(), slots_[from_slot].desc, CpuEngine(),
                                     slots_[to_slot].desc);
    StepInfo info;
    // Layout conversions cover no ONNX node; the name says which value and which consumer.
    info.name = node_ ? absl::StrCat("reorder(", why, " for ", node_->name, ")")
                      : absl::StrCat("reorder(", why, ")");
    info.kind = "Reorder";
    memory::dims d = slots_[from_slot].desc.dims();
    info.input_dims = {Dims(d.begin(), d.end())};
    memory::dims od = slots_[to_slot].desc.dims();
    info.output_dims = Dims(od.begin(), od.end());
    info.src_format = FormatName(slots_[from_slot].desc);
    info.dst_format = FormatName(slots_[to_slot].desc);
    AddPrimitive(dnnl::reorder(pd), pd,
                 {{DNNL_ARG_FROM, from_slot, std::nullopt}, {DNNL_ARG_TO, to_slot, std::nullopt}},
                 std::move(info));
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("no reorder ", FormatName(slots_[from_slot].desc),
                                            " -> ", FormatName(slots_[to_slot].desc), ": ",
                                            e.what()));
  }
  return absl::OkStatus();
}

StepInfo Compiler::BaseInfo() const {
  StepInfo info;
  info.name = node_->name;
  info.kind = node_->op_type;
  info.source_nodes = node_->source_nodes;
  for (size_t i = 0; i < node_->inputs.size(); ++i) {
    if (IsAbsent(i) || IsConstant(i)) continue;
    info.input_dims.push_back(Input(i).dims);
  }
  if (!output_infos_.empty()) info.output_dims = output_infos_[0].dims;
  for (const PostOp& op : DecodePostOps(*node_)) info.post_ops.push_back(op.kind);
  return info;
}

absl::Status Compiler::FoldConstant(const std::vector<host::InputState>& states) {
  std::vector<const Tensor*> inputs;
  for (const auto& s : states) inputs.push_back(s.constant);
  ASSIGN_OR_RETURN(std::vector<Tensor> results, host::EvaluateConstant(*node_, inputs));
  for (size_t j = 0; j < node_->outputs.size() && j < results.size(); ++j) {
    if (node_->outputs[j].empty()) continue;
    auto owned = std::make_shared<Tensor>(std::move(results[j]));
    values_[node_->outputs[j]] = ValueState{owned->dtype, owned->dims, owned.get(), -1};
    folded_.push_back(std::move(owned));
  }
  return absl::OkStatus();
}

absl::Status Compiler::CompileOnHost(const std::vector<host::InputState>& states) {
  if (!host::CanEvaluate(*node_, states)) {
    std::vector<std::string> types;
    for (const auto& s : states) types.emplace_back(DataTypeName(s.dtype));
    return absl::UnimplementedError(absl::StrCat("node '", node_->name, "' (", node_->op_type,
                                                 "): not supported for input types ",
                                                 absl::StrJoin(types, ",")));
  }
  StepDef step;
  std::vector<TensorView> in_views, out_views;
  std::vector<std::shared_ptr<Tensor>> consts;
  for (size_t i = 0; i < node_->inputs.size(); ++i) {
    TensorView view;
    view.dtype = states[i].dtype;
    view.dims = states[i].dims;
    if (IsAbsent(i)) {
      step.host_slots.push_back(-1);
    } else if (IsConstant(i)) {
      view.data = const_cast<std::byte*>(Input(i).constant->bytes.data());
      step.host_slots.push_back(-2);  // constant, pointer fixed below
    } else {
      ASSIGN_OR_RETURN(int slot, InputSlotPlain(i));
      step.host_slots.push_back(slot);
    }
    in_views.push_back(view);
  }
  for (size_t j = 0; j < node_->outputs.size(); ++j) {
    TensorView view;
    view.dtype = output_infos_[j].dtype;
    view.dims = output_infos_[j].dims;
    if (node_->outputs[j].empty()) {
      step.host_slots.push_back(-1);
    } else {
      step.host_slots.push_back(DefineOutput(j, StorageDesc(view.dtype, view.dims)));
    }
    out_views.push_back(view);
  }
  // Constants keep their fixed pointer: mark them -1 in slots and remember the pointer.
  std::vector<void*> fixed(step.host_slots.size(), nullptr);
  for (size_t k = 0; k < in_views.size(); ++k) {
    if (step.host_slots[k] == -2) {
      fixed[k] = in_views[k].data;
      step.host_slots[k] = -1;
    }
  }
  Node node_copy = *node_;
  step.host = [node_copy, in_views, out_views, fixed](std::span<void* const> ptrs) mutable {
    for (size_t k = 0; k < in_views.size(); ++k) in_views[k].data = fixed[k] ? fixed[k] : ptrs[k];
    for (size_t k = 0; k < out_views.size(); ++k) out_views[k].data = ptrs[in_views.size() + k];
    return host::Evaluate(node_copy, in_views, out_views);
  };
  StepInfo info = BaseInfo();
  info.kernel = "reference";
  plan_->steps_.push_back(std::move(step));
  plan_->infos_.push_back(std::move(info));
  return absl::OkStatus();
}

absl::Status Compiler::CompileNode(const Node& node) {
  node_ = &node;
  std::vector<host::InputState> states;
  bool all_constant = true;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    host::InputState s;
    if (!node.inputs[i].empty()) {
      auto it = values_.find(node.inputs[i]);
      if (it == values_.end()) {
        return absl::InvalidArgumentError(absl::StrCat("node '", node.name, "' (", node.op_type,
                                                       "): input '", node.inputs[i],
                                                       "' is not produced by any node"));
      }
      s.dtype = it->second.dtype;
      s.dims = it->second.dims;
      s.constant = it->second.constant;
      if (!s.constant) all_constant = false;
    }
    states.push_back(s);
  }
  // Shape inference sees the plain ONNX node (fused extras stripped).
  Node plain = node;
  plain.attributes.erase(kPostOpsAttribute);
  std::vector<host::InputState> plain_states = states;
  const int sum_input = static_cast<int>(node.GetInt("convserve.sum_input", -1));
  if (sum_input >= 0) {
    plain.inputs.resize(sum_input);
    plain_states.resize(sum_input);
    plain.attributes.erase("convserve.sum_input");
  }
  ASSIGN_OR_RETURN(output_infos_, host::InferOutputs(plain, plain_states));

  if (all_constant && host::CanEvaluate(node, states) && sum_input < 0) {
    return FoldConstant(states);
  }
  if (OpCompileFn fn = FindOpCompiler(node.op_type)) {
    absl::Status status;
    try {
      status = fn(*this);
    } catch (const dnnl::error& e) {
      // No oneDNN implementation for this configuration: evaluate on the host instead.
      status = UseHostFallback();
    }
    if (!IsHostFallback(status)) return status;
  }
  if (sum_input >= 0 || !DecodePostOps(node).empty()) {
    return absl::InternalError(absl::StrCat("node '", node.name, "' (", node.op_type,
                                            "): fused post-ops need the oneDNN path"));
  }
  return CompileOnHost(states);
}

absl::Status Compiler::AddOutputCopies() {
  node_ = nullptr;
  for (size_t k = 0; k < graph_.outputs.size(); ++k) {
    const std::string& name = graph_.outputs[k].name;
    auto it = values_.find(name);
    if (it == values_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph output '", name, "' is never produced"));
    }
    const ValueState& v = it->second;
    plan_->output_infos_.push_back({name, v.dtype, v.dims});
    const memory::desc desc = StorageDesc(v.dtype, v.dims);
    const int buffer = NewBuffer(desc.get_size());
    plan_->buffers_[buffer].external_output = static_cast<int>(k);
    const int out_slot = NewSlot(buffer, desc);
    StepInfo info;
    info.name = absl::StrCat("output(", name, ")");
    info.kind = "Output";
    info.output_dims = v.dims;
    if (v.constant != nullptr || !ToDnnl(v.dtype)) {
      StepDef step;
      const Tensor* constant = v.constant;
      const size_t bytes = NumElements(v.dims) * ElementSize(v.dtype);
      step.host_slots = {constant ? -1 : v.slot, out_slot};
      step.host = [constant, bytes](std::span<void* const> ptrs) {
        std::memcpy(ptrs[1], constant ? constant->bytes.data() : ptrs[0], bytes);
        return absl::OkStatus();
      };
      info.kernel = "copy";
      plan_->steps_.push_back(std::move(step));
      plan_->infos_.push_back(std::move(info));
    } else {
      RETURN_IF_ERROR(AddReorder(v.slot, out_slot, name));
      plan_->infos_.back().name = info.name;
      plan_->infos_.back().kind = "Output";
    }
  }
  return absl::OkStatus();
}

void Compiler::AssignArena() {
  auto& buffers = plan_->buffers_;
  auto touch = [&](int slot, int step) {
    if (slot < 0) return;
    BufferDef& b = buffers[slots_[slot].buffer];
    b.first_step = std::min(b.first_step, step);
    b.last_step = std::max(b.last_step, step);
  };
  for (size_t s = 0; s < plan_->steps_.size(); ++s) {
    for (const StepArg& a : plan_->steps_[s].args) touch(a.slot, static_cast<int>(s));
    for (int slot : plan_->steps_[s].host_slots) touch(slot, static_cast<int>(s));
  }
  std::vector<int> order;
  for (size_t b = 0; b < buffers.size(); ++b) {
    if (buffers[b].external_input < 0 && buffers[b].external_output < 0 &&
        buffers[b].last_step >= 0) {
      order.push_back(static_cast<int>(b));
    }
  }
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return buffers[a].bytes > buffers[b].bytes; });
  std::vector<int> placed;
  size_t total = 0;
  for (int b : order) {
    BufferDef& cur = buffers[b];
    std::vector<std::pair<size_t, size_t>> busy;
    for (int p : placed) {
      const BufferDef& o = buffers[p];
      if (o.last_step < cur.first_step || cur.last_step < o.first_step) continue;
      busy.emplace_back(o.offset, o.offset + AlignUp(o.bytes));
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [lo, hi] : busy) {
      if (offset + AlignUp(cur.bytes) <= lo) break;
      offset = std::max(offset, hi);
    }
    cur.offset = offset;
    total = std::max(total, offset + AlignUp(cur.bytes));
    placed.push_back(b);
  }
  plan_->arena_bytes_ = total;
}

absl::StatusOr<std::shared_ptr<const Plan>> Compiler::Compile() {
  const int64_t batch = plan_->batch_size_;
  for (const auto& [name, tensor] : graph_.initializers) {
    values_[name] = ValueState{tensor.dtype, tensor.dims, &tensor, -1};
  }
  for (size_t k = 0; k < graph_.inputs.size(); ++k) {
    ValueInfo info = graph_.inputs[k];
    for (size_t d = 0; d < info.dims.size(); ++d) {
      if (info.dims[d] >= 0) continue;
      if (d != 0) {
        return Err(absl::UnimplementedError(
            absl::StrCat("input '", info.name, "' has a dynamic dimension ", d,
                         " (only the batch dimension may be dynamic)")));
      }
      info.dims[d] = batch;
    }
    const memory::desc desc = StorageDesc(info.dtype, info.dims);
    const int buffer = NewBuffer(desc.get_size());
    plan_->buffers_[buffer].external_input = static_cast<int>(k);
    values_[info.name] = ValueState{info.dtype, info.dims, nullptr, NewSlot(buffer, desc)};
    plan_->input_infos_.push_back(info);
  }
  for (const Node& node : graph_.nodes) {
    for (const std::string& in : node.inputs) {
      if (!in.empty()) ++uses_[in];
    }
  }
  for (const ValueInfo& out : graph_.outputs) ++uses_[out.name];
  for (const Node& node : graph_.nodes) {
    absl::Status status = CompileNode(node);
    if (!status.ok()) {
      std::string msg(status.message());
      if (msg.find("node '") == std::string::npos) {
        status = Annotate(status, absl::StrCat("node '", node.name, "' (", node.op_type, ")"));
      }
      return Err(status);
    }
    for (const std::string& in : node.inputs) {
      if (!in.empty()) --uses_[in];
    }
  }
  RETURN_IF_ERROR(Err(AddOutputCopies()));
  AssignArena();
  plan_->owned_constants_ = std::move(folded_);
  return std::shared_ptr<const Plan>(plan_);
}

}  // namespace

std::unique_ptr<WorkspaceMemory> CreateWorkspaceMemory() {
  return std::make_unique<WorkspaceMemoryImpl>();
}

dnnl::memory ConstantCache::Share(dnnl::memory candidate) {
  const memory::desc desc = candidate.get_desc();
  const size_t size = desc.get_size();
  const std::string_view bytes(static_cast<const char*>(candidate.get_data_handle()), size);
  const uint64_t hash = std::hash<std::string_view>{}(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  auto [first, last] = entries_.equal_range(hash);
  for (auto it = first; it != last; ++it) {
    const memory& held = it->second;
    if (held.get_desc() == desc && std::memcmp(held.get_data_handle(), bytes.data(), size) == 0) {
      return held;
    }
  }
  entries_.emplace(hash, candidate);
  return candidate;
}

size_t ConstantCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

size_t ConstantCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t total = 0;
  for (const auto& [hash, held] : entries_) total += held.get_desc().get_size();
  return total;
}

absl::StatusOr<std::shared_ptr<const Plan>> CompilePlan(std::shared_ptr<const Graph> graph,
                                                        const ModelOptions& options,
                                                        int64_t batch_size, int num_threads,
                                                        ConstantCache* constants) {
  try {
    Compiler compiler(*graph, options, batch_size, num_threads, constants);
    compiler.KeepAlive(graph);
    return compiler.Compile();
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("model '", options.model_name, "': oneDNN error while compiling: ", e.what()));
  }
}

}  // namespace convserve::engine
