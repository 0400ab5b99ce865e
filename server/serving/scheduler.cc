#include "server/serving/scheduler.h"

#include <pmmintrin.h>
#include <pthread.h>
#include <xmmintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status.h"
#include "server/repository/model_config.h"
#include "server/serving/image.h"
#include "server/serving/log_limiter.h"
#include "spdlog/spdlog.h"

namespace convserve::serving {
namespace {

uint64_t Ns(Clock::duration d) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// A lone client stops paying max_queue_delay after this many waits in a row that collected
// nothing (see NextBatch), and from then on its requests may run inline (see Submit).
constexpr int kFruitlessWaitsToSkip = 2;

// Names the calling thread "<prefix><model>" ("cs-w:" workers, "cs-a:" responders) (cut to Linux's
// 15 characters), so that top, perf and the benchmark's CPU accounting can tell the threads of each
// model apart.
void NameThread(const std::string& prefix, const std::string& model) {
  pthread_setname_np(pthread_self(), (prefix + model).substr(0, 15).c_str());
}

// Denormals slow convolutions by 2-10x and change nothing that matters in the results.
void FlushDenormals() {
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
}

int64_t Product(const std::vector<int64_t>& dims, size_t from = 0) {
  int64_t n = 1;
  for (size_t i = from; i < dims.size(); ++i) n *= dims[i];
  return n;
}

}  // namespace

void ThreadBudget::Acquire(int n) {
  n = std::min(n, total_);
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return available_ >= n; });
  available_ -= n;
}

bool ThreadBudget::TryAcquire(int n) {
  n = std::min(n, total_);
  std::lock_guard<std::mutex> lock(mutex_);
  if (available_ < n) return false;
  available_ -= n;
  return true;
}

void ThreadBudget::Release(int n) {
  n = std::min(n, total_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    available_ += n;
  }
  cv_.notify_all();
}

struct Scheduler::Worker {
  std::thread thread;
  // The workspaces of all batch sizes share one arena and scratchpad: a worker runs one batch
  // at a time, and its activations then stay in cache from one batch size to the next.
  std::unique_ptr<engine::WorkspaceMemory> memory = engine::CreateWorkspaceMemory();
  std::map<int64_t, std::unique_ptr<engine::Workspace>> workspaces;  // by batch size
  std::vector<std::vector<std::byte>> input_buffers, output_buffers;
};

Scheduler::Scheduler(std::shared_ptr<const repository::ModelVersion> model,
                     SchedulerOptions options)
    : model_(std::move(model)),
      options_(options),
      dynamic_batching_(model_->config.has_dynamic_batching()),
      max_batch_size_(model_->config.max_batch_size()),
      max_queue_size_(
          model_->config.dynamic_batching().default_queue_policy().max_queue_size() > 0
              ? model_->config.dynamic_batching().default_queue_policy().max_queue_size()
              : options.default_max_queue_size),
      infer_ns_by_batch_(static_cast<size_t>(std::max<int64_t>(1, max_batch_size_)) + 1) {
  if (options_.metrics) options_.metrics->SchedulerStarted(model_->name, model_->version_string());
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    std::shared_ptr<const repository::ModelVersion> model, SchedulerOptions options) {
  if (model == nullptr || model->engine_model == nullptr) {
    return absl::InternalError("scheduler needs a loaded model");
  }
  std::unique_ptr<Scheduler> scheduler(new Scheduler(std::move(model), options));
  int instances = 0;
  for (const auto& group : scheduler->model_->config.instance_group()) {
    instances += std::max(1, group.count());
  }
  instances = std::max(1, instances);
  scheduler->threads_per_worker_ = std::max(1, options.total_threads / instances);
  scheduler->inline_worker_ = std::make_unique<Worker>();
  scheduler->responder_ = std::thread([s = scheduler.get()] {
    NameThread("cs-a:", s->model_->name);
    s->ResponderLoop();
  });
  for (int i = 0; i < instances; ++i) {
    auto worker = std::make_unique<Worker>();
    Worker* raw = worker.get();
    scheduler->workers_.push_back(std::move(worker));
    raw->thread = std::thread([s = scheduler.get(), raw] {
      NameThread("cs-w:", s->model_->name);
      s->WorkerLoop(*raw);
    });
  }
  return scheduler;
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& worker : workers_) worker->thread.join();
  // The workers are done: whatever they handed over is all there will be.
  {
    std::lock_guard<std::mutex> lock(answers_mutex_);
    responder_stopping_ = true;
  }
  answers_cv_.notify_all();
  responder_.join();
  if (options_.metrics) options_.metrics->SchedulerStopped(model_->name, model_->version_string());
}

void Scheduler::ResponderLoop() {
  std::vector<Answer> answers;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(answers_mutex_);
      answers_cv_.wait(lock, [&] { return !answers_.empty() || responder_stopping_; });
      if (answers_.empty()) return;
      answers.swap(answers_);
    }
    for (Answer& answer : answers) answer.callback(std::move(answer.response));
    answers.clear();
  }
}

uint64_t Scheduler::memory_bytes() const {
  const engine::Model& engine_model = *model_->engine_model;
  // Workspaces take their arenas and scratchpads from their worker's WorkspaceMemory.
  uint64_t workspaces = 0;
  for (const auto& worker : workers_) workspaces += worker->memory->byte_size();
  workspaces += inline_worker_->memory->byte_size();
  return engine_model.InitializerBytes() + engine_model.ConstantBytes() + workspaces;
}

int64_t Scheduler::queue_depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(queue_.size());
}

absl::Status Scheduler::Validate(Pending& pending) const {
  const inference::ModelConfig& config = model_->config;
  const std::string& model = model_->name;
  const InferRequest& request = *pending.request;
  const bool batched = max_batch_size_ > 0;

  // Every input of the request must be an input of the model, once.
  for (size_t r = 0; r < request.inputs.size(); ++r) {
    const std::string& name = request.inputs[r].name;
    const bool known = std::any_of(config.input().begin(), config.input().end(),
                                   [&](const auto& input) { return input.name() == name; });
    if (!known) {
      std::vector<std::string> names;
      for (const auto& input : config.input()) names.push_back("'" + input.name() + "'");
      return absl::InvalidArgumentError(absl::StrCat("unexpected input '", name, "' for model '",
                                                     model, "': the model's inputs are ",
                                                     absl::StrJoin(names, ", ")));
    }
    for (size_t q = 0; q < r; ++q) {
      if (request.inputs[q].name == name) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "' of model '", model, "' is given more than once"));
      }
    }
  }

  int64_t batch = -1;
  pending.request_input.assign(config.input_size(), -1);
  pending.kind.assign(config.input_size(), InputKind::kAsIs);
  for (int i = 0; i < config.input_size(); ++i) {
    const inference::ModelInput& input = config.input(i);
    auto it = std::find_if(request.inputs.begin(), request.inputs.end(),
                           [&](const InputTensor& t) { return t.name == input.name(); });
    if (it == request.inputs.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing input '", input.name(), "' for model '", model, "'"));
    }
    pending.request_input[i] = static_cast<int>(it - request.inputs.begin());
    const InputTensor& tensor = *it;
    const std::string expected_type(repository::DataTypeToKServe(input.data_type()));
    std::vector<int64_t> expected_shape;
    if (batched) expected_shape.push_back(-1);
    expected_shape.insert(expected_shape.end(), input.dims().begin(), input.dims().end());
    int64_t this_batch = 1;
    const auto check_batch = [&](int64_t n) {
      if (batched && n > max_batch_size_) {
        return absl::InvalidArgumentError(absl::StrCat("batch size ", n, " of input '",
                                                       input.name(), "' exceeds max_batch_size ",
                                                       max_batch_size_, " of model '", model, "'"));
      }
      return absl::OkStatus();
    };

    const bool image_input =
        config.has_preprocessing() && (config.preprocessing().input() == input.name());
    if (tensor.datatype == "BYTES" && image_input && expected_type != "BYTES") {
      // Encoded images: shape [N] (or [N, 1]), one JPEG/PNG file per element.
      const auto& shape = tensor.shape;
      const bool shape_ok =
          (shape.size() == 1 || (shape.size() == 2 && shape[1] == 1)) && shape[0] >= 1;
      if (!shape_ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected shape for image input '", input.name(), "' of model '", model,
                         "': expected [N] encoded images, got ", ShapeString(shape)));
      }
      if (static_cast<int64_t>(tensor.elements.size()) != shape[0]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", input.name(), "' of model '", model, "': shape ", ShapeString(shape),
            " needs ", shape[0], " BYTES elements, got ", tensor.elements.size()));
      }
      if (!batched && shape[0] != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model '", model, "' has no batch dimension: send one image, got ", shape[0]));
      }
      this_batch = shape[0];
      RETURN_IF_ERROR(check_batch(this_batch));
      pending.kind[i] = InputKind::kImage;
    } else {
      const bool uint8_for_float = tensor.datatype == "UINT8" && expected_type == "FP32";
      if (tensor.datatype != expected_type && !uint8_for_float) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unexpected datatype for input '", input.name(), "' of model '", model, "': expected ",
            expected_type, image_input ? " (or UINT8, or BYTES encoded images)" : "", ", got ",
            tensor.datatype.empty() ? "(none)" : tensor.datatype));
      }
      if (uint8_for_float) pending.kind[i] = InputKind::kUint8ToFloat;
      bool shape_ok = tensor.shape.size() == expected_shape.size();
      for (size_t d = 0; shape_ok && d < expected_shape.size(); ++d) {
        if (tensor.shape[d] < 0 ||
            (expected_shape[d] != -1 && tensor.shape[d] != expected_shape[d])) {
          shape_ok = false;
        }
      }
      if (batched && shape_ok && tensor.shape[0] < 1) shape_ok = false;
      if (!shape_ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unexpected shape for input '", input.name(), "' of model '", model, "': expected ",
            ShapeString(expected_shape), ", got ", ShapeString(tensor.shape)));
      }
      if (batched) this_batch = tensor.shape[0];
      // Before the contents: a batch over the maximum is the error to report, not its size.
      RETURN_IF_ERROR(check_batch(this_batch));
      const int64_t element_size =
          repository::DataTypeByteSize(repository::DataTypeFromKServe(tensor.datatype));
      const int64_t expected_bytes = Product(tensor.shape) * element_size;
      if (static_cast<int64_t>(tensor.data.size()) != expected_bytes) {
        if (tensor.from_raw) {
          return absl::InvalidArgumentError(absl::StrCat(
              "input '", input.name(), "' of model '", model, "': raw contents of shape ",
              ShapeString(tensor.shape), " and datatype ", tensor.datatype, " must have ",
              expected_bytes, " bytes, got ", tensor.data.size()));
        }
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", input.name(), "' of model '", model, "': shape ", ShapeString(tensor.shape),
            " needs ", Product(tensor.shape), " ", tensor.datatype, " values in contents, got ",
            static_cast<int64_t>(tensor.data.size()) / element_size));
      }
    }
    if (batch >= 0 && this_batch != batch) {
      return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "' of model '", model,
                                                     "' has batch size ", this_batch,
                                                     " but the other inputs have ", batch));
    }
    batch = this_batch;
  }
  pending.batch = std::max<int64_t>(batch, 1);

  // Requested outputs.
  pending.outputs.clear();
  pending.classification.clear();
  if (request.outputs.empty()) {
    for (int o = 0; o < config.output_size(); ++o) {
      pending.outputs.push_back(o);
      pending.classification.push_back(0);
    }
  }
  for (const RequestedOutput& requested : request.outputs) {
    int index = -1;
    for (int o = 0; o < config.output_size(); ++o) {
      if (config.output(o).name() == requested.name) index = o;
    }
    if (index < 0) {
      std::vector<std::string> names;
      for (const auto& output : config.output()) names.push_back("'" + output.name() + "'");
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected output '", requested.name, "' requested from model '", model,
                       "': the model's outputs are ", absl::StrJoin(names, ", ")));
    }
    if (requested.classification < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", requested.name, "' of model '", model,
          "': classification must be a positive count, got ", requested.classification));
    }
    if (requested.classification > 0 && config.output(index).data_type() != inference::TYPE_FP32) {
      return absl::InvalidArgumentError(absl::StrCat("output '", requested.name, "' of model '",
                                                     model,
                                                     "' is not FP32 and cannot be classified"));
    }
    if (std::find(pending.outputs.begin(), pending.outputs.end(), index) != pending.outputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("output '", requested.name, "' of model '",
                                                     model, "' is requested more than once"));
    }
    pending.outputs.push_back(index);
    pending.classification.push_back(requested.classification);
  }
  return absl::OkStatus();
}

void Scheduler::Fail(Pending& pending, const absl::Status& status, uint64_t queue_ns) {
  const uint64_t total_ns = Ns(Clock::now() - pending.arrival);
  statistics_.RecordFailure(total_ns, queue_ns);
  WarnRequestFailure("model '{}' version {} request '{}' failed: {} ({})", model_->name,
                     model_->version, pending.request ? pending.request->id : "",
                     absl::StatusCodeToString(status.code()), std::string(status.message()));
  if (options_.metrics) {
    options_.metrics->RequestDone(model_->name, status.code(), queue_ns / 1e9, 0.0, total_ns / 1e9);
  }
  InferCallback callback = std::move(pending.callback);
  pending.request.reset();
  callback(status);
}

void Scheduler::Reject(const absl::Status& status, const std::string& request_id,
                       InferCallback callback, Clock::time_point arrival) {
  Pending pending;
  pending.request = std::make_unique<InferRequest>();
  pending.request->id = request_id;
  pending.callback = std::move(callback);
  pending.arrival = arrival;
  Fail(pending, status, 0);
}

namespace {

// Whether the request's encoded images (BYTES elements) are small enough to decode inline.
bool ImagesFitInline(const InferRequest& request) {
  int64_t pixels = 0;
  for (const InputTensor& input : request.inputs) {
    for (std::string_view element : input.elements) {
      const int64_t n = EncodedImagePixels(element);
      if (n < 0) return false;
      pixels += n;
      if (pixels > Scheduler::kInlineMaxImagePixels) return false;
    }
  }
  return true;
}

// The schedulers whose wake-ups this thread deferred (BeginDeferringWakes).
struct DeferredWakes {
  int depth = 0;
  std::vector<std::weak_ptr<Scheduler>> schedulers;
};
thread_local DeferredWakes deferred_wakes;

}  // namespace

void Scheduler::BeginDeferringWakes() { ++deferred_wakes.depth; }

void Scheduler::EndDeferringWakes() {
  if (deferred_wakes.depth == 0 || --deferred_wakes.depth > 0) return;
  std::vector<std::weak_ptr<Scheduler>> schedulers;
  schedulers.swap(deferred_wakes.schedulers);
  for (const auto& weak : schedulers) {
    if (std::shared_ptr<Scheduler> scheduler = weak.lock()) scheduler->WakeIfQueued();
  }
}

void Scheduler::WakeIfQueued() {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    wake = !queue_.empty() || stopping_;
  }
  if (wake) cv_.notify_all();
}

void Scheduler::Submit(std::unique_ptr<InferRequest> request, InferCallback callback,
                       Clock::time_point arrival) {
  Pending pending;
  pending.request = std::move(request);
  pending.callback = std::move(callback);
  pending.arrival = arrival;
  if (absl::Status status = Validate(pending); !status.ok()) {
    Fail(pending, status, 0);
    return;
  }
  absl::Status rejected;
  int64_t depth = 0;
  bool run_inline = false;
  std::vector<Pending> group;
  pending.images_fit_inline = ImagesFitInline(*pending.request);
  const bool followed = pending.request->followed;
  const bool pipelined = pending.request->pipelined;
  const bool may_run_inline = !followed && !pipelined && pending.images_fit_inline;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      rejected = absl::UnavailableError(
          absl::StrCat("model '", model_->name, "' version ", model_->version, " is unloading"));
    } else if (queue_.size() >= max_queue_size_) {
      rejected = absl::ResourceExhaustedError(absl::StrCat(
          "queue of model '", model_->name, "' is full (", max_queue_size_, " requests waiting)"));
    } else if (may_run_inline && pending.request->deadline > Clock::now() && ClaimInline()) {
      run_inline = true;
    } else if (may_run_inline && ClaimGroup(pending, group)) {
      run_inline = true;
      depth = static_cast<int64_t>(queue_.size());
    } else {
      // Another request is waiting, being batched or running inline, or follows right behind:
      // requests overlap, so waiting for more of them can fill a batch (see NextBatch).
      if (!queue_.empty() || forming_ || inline_busy_ || pending.request->followed) {
        overlap_ = true;
      }
      queue_.push_back(std::move(pending));
      depth = static_cast<int64_t>(queue_.size());
    }
  }
  if (!rejected.ok()) {
    Fail(pending, rejected, 0);
    return;
  }
  if (run_inline) {
    if (group.empty()) {
      group.push_back(std::move(pending));
    } else if (options_.metrics) {  // the group left the queue
      options_.metrics->QueueDepthChanged(model_->name, model_->version_string(), depth);
    }
    RunInline(std::move(group));
    return;
  }
  if (options_.metrics) {
    options_.metrics->QueueDepthChanged(model_->name, model_->version_string(), depth);
  }
  if ((followed || pipelined) && deferred_wakes.depth > 0) {
    std::weak_ptr<Scheduler> self = weak_from_this();
    if (!self.expired()) {
      auto& list = deferred_wakes.schedulers;
      const bool listed = std::any_of(list.begin(), list.end(), [&](const auto& w) {
        return !w.owner_before(self) && !self.owner_before(w);
      });
      if (!listed) list.push_back(std::move(self));
      return;
    }
  }
  cv_.notify_all();
}

int64_t BatchWaitBudgetNs(int64_t total, int64_t limit, double gain,
                          const std::function<int64_t(int64_t)>& infer_ns) {
  const auto per_image = [&](int64_t batch) {
    const int64_t ns = infer_ns(batch);
    return ns > 0 ? static_cast<double>(ns) / static_cast<double>(batch) : -1.0;
  };
  const double now = per_image(total);
  if (now < 0) return kWaitUnmeasured;
  double best = -1;
  for (int64_t b = total + 1; b <= limit; ++b) {
    const double larger = per_image(b);
    if (larger >= 0 && (best < 0 || larger < best)) best = larger;
  }
  if (best < 0) return kWaitUnmeasured;
  if (best * (1.0 + gain) > now) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(total) * (now - best)));
}

int64_t Scheduler::WaitBudgetNs(int64_t total, int64_t limit) const {
  const int64_t last = static_cast<int64_t>(infer_ns_by_batch_.size()) - 1;
  if (total < 1 || total > last) return 0;
  return BatchWaitBudgetNs(total, std::min(limit, last), kBatchingGain, [&](int64_t batch) {
    return infer_ns_by_batch_[static_cast<size_t>(batch)].load(std::memory_order_relaxed);
  });
}

void Scheduler::RecordInferTime(int64_t batch, uint64_t infer_ns) {
  if (batch < 1 || static_cast<size_t>(batch) >= infer_ns_by_batch_.size()) return;
  std::atomic<int64_t>& slot = infer_ns_by_batch_[static_cast<size_t>(batch)];
  const int64_t old = slot.load(std::memory_order_relaxed);
  const int64_t now = static_cast<int64_t>(infer_ns);
  // The first execution of a batch size pays one-time costs (page faults, oneDNN's lazy
  // set-up) and is not recorded: -1 marks it. Then smoothed over about four executions;
  // workers racing here lose an update, nothing more.
  slot.store(old == 0 ? -1 : old < 0 ? now : (3 * old + now) / 4, std::memory_order_relaxed);
}

bool Scheduler::ClaimInline() {
  if (inline_busy_ || !queue_.empty() || forming_ || executing_ >= num_workers()) return false;
  // The batcher expects company (requests overlapped lately): let it collect them.
  const bool batcher_may_wait =
      dynamic_batching_ && max_batch_size_ > 1 &&
      model_->config.dynamic_batching().max_queue_delay_microseconds() > 0;
  const bool batcher_waits = batcher_may_wait &&
                             (overlap_ || fruitless_waits_ < kFruitlessWaitsToSkip) &&
                             WaitBudgetNs(1, max_batch_size_) != 0;
  if (batcher_waits) return false;
  const int64_t single_ns = infer_ns_by_batch_[1].load(std::memory_order_relaxed);
  if (single_ns <= 0 || single_ns > kInlineMaxInferUs * 1000) return false;
  return TakeInlineSlot();
}

bool Scheduler::TakeInlineSlot() {
  if (options_.budget != nullptr && !options_.budget->TryAcquire(threads_per_worker_)) {
    return false;
  }
  inline_busy_ = true;
  ++executing_;
  return true;
}

bool Scheduler::ClaimGroup(Pending& last, std::vector<Pending>& group) {
  // Without dynamic batching, requests never share an execution.
  if (!dynamic_batching_) return false;
  if (queue_.empty() || inline_busy_ || forming_ || executing_ >= num_workers()) return false;
  const Clock::time_point now = Clock::now();
  if (last.request->deadline <= now) return false;
  // The batch's measured execution time, or batch 1's times the batch while unmeasured.
  const auto estimate_ns = [&](int64_t batch) -> int64_t {
    if (batch < 1 || static_cast<size_t>(batch) >= infer_ns_by_batch_.size()) return -1;
    const int64_t measured = infer_ns_by_batch_[static_cast<size_t>(batch)].load();
    if (measured > 0) return measured;
    const int64_t single = infer_ns_by_batch_[1].load();
    return single > 0 ? single * batch : -1;
  };
  std::vector<size_t> taken;
  int64_t images = last.batch;
  for (size_t i = 0; i < queue_.size(); ++i) {
    const Pending& p = queue_[i];
    if (p.request->deadline <= now || !p.images_fit_inline) continue;
    if (images + p.batch > std::max<int64_t>(max_batch_size_, 1)) break;
    const int64_t ns = estimate_ns(images + p.batch);
    if (ns < 0 || ns > kGroupMaxInferUs * 1000) break;
    images += p.batch;
    taken.push_back(i);
  }
  if (taken.empty() || !TakeInlineSlot()) return false;
  for (size_t i : taken) group.push_back(std::move(queue_[i]));
  for (auto it = taken.rbegin(); it != taken.rend(); ++it) {
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(*it));
  }
  group.push_back(std::move(last));
  return true;
}

void Scheduler::RunInline(std::vector<Pending> batch) {
  inline_count_.fetch_add(1, std::memory_order_relaxed);
  // The submitting thread's floating-point mode is its own: restore it afterwards.
  const unsigned int mxcsr = _mm_getcsr();
  FlushDenormals();
  std::vector<Answer> answers = Execute(*inline_worker_, std::move(batch), /*threads_held=*/true);
  _mm_setcsr(mxcsr);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    inline_busy_ = false;
    --executing_;
    wake = !queue_.empty() || stopping_;
  }
  // Requests that arrived meanwhile are queued for the workers, and a stopping scheduler waits
  // for this execution. Otherwise there is nothing to wake a worker for: a wake-up costs both
  // threads tens of microseconds on a virtual machine, a large share of a small model's request.
  if (wake) cv_.notify_all();
  for (Answer& answer : answers) answer.callback(std::move(answer.response));
}

std::vector<Scheduler::Pending> Scheduler::NextBatch(
    std::vector<std::pair<Pending, uint64_t>>& expired, bool backlog) {
  std::vector<Pending> batch;
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] {
    return (!forming_ && !queue_.empty() && executing_ < num_workers()) ||
           (stopping_ && queue_.empty() && !inline_busy_);
  });
  if (queue_.empty()) return batch;
  forming_ = true;
  const auto take_expired = [&] {
    const Clock::time_point now = Clock::now();
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->request->deadline <= now) {
        expired.emplace_back(std::move(*it), Ns(now - it->arrival));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  };
  take_expired();
  if (!queue_.empty()) {
    int64_t total = 0;
    const auto& batching = model_->config.dynamic_batching();
    const int64_t limit = max_batch_size_ > 0 ? max_batch_size_ : 1;
    // Stop waiting once the batch reaches a preferred batch size (Triton: "if a batch of one of
    // these sizes can be formed it will be executed immediately"), or max_batch_size. Larger
    // batches still form from what is queued (take() takes up to max_batch_size), but no
    // request waits for them: with the requests in flight bounded (8 clients, or 8 pipelined on
    // a stream), a wait for the largest preferred size never fills and costs its whole delay.
    int64_t target = limit;
    if (batching.preferred_batch_size_size() > 0) {
      target = std::min<int64_t>(limit, *std::min_element(batching.preferred_batch_size().begin(),
                                                          batching.preferred_batch_size().end()));
    }
    const auto take = [&] {
      while (!queue_.empty() && (batch.empty() || total + queue_.front().batch <= limit)) {
        total += queue_.front().batch;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
        if (!dynamic_batching_) break;
      }
    };
    take();
    // max_queue_delay is an upper bound. Waiting pays only when other requests come while this
    // one waits; a lone client (one request in flight) only gets slower by the whole delay. So
    // wait while requests overlap (one arrived while another was queued or being batched) or
    // while recent waits collected something, and run at once after kFruitlessWaitsToSkip
    // waits in a row that collected nothing, until requests overlap again. And wait only where
    // a larger batch is measurably cheaper per image, and no longer than the compute that saves
    // (WaitBudgetNs): for a model whose cost
    // grows with the batch, waiting just leaves the worker idle. And never when requests queued
    // up while this worker computed its last batch (`backlog`): under load, batches form while
    // the worker is busy, and waiting would idle it for requests that come back only when
    // answered.
    const int64_t budget_ns = WaitBudgetNs(total, std::min(target, limit));
    const bool worth_waiting =
        !backlog && (overlap_ || fruitless_waits_ < kFruitlessWaitsToSkip) && budget_ns != 0;
    overlap_ = false;
    if (dynamic_batching_ && max_batch_size_ > 0 && total < target && worth_waiting) {
      const int64_t before_wait = total;
      Clock::time_point until = batch.front().arrival +
                                std::chrono::microseconds(batching.max_queue_delay_microseconds());
      if (budget_ns > 0)
        until = std::min(until, Clock::now() + std::chrono::nanoseconds(budget_ns));
      while (total < target && !stopping_ && Clock::now() < until) {
        cv_.wait_until(lock, until, [&] { return !queue_.empty() || stopping_; });
        take_expired();
        take();
        // The next request does not fit: run what we have.
        if (!queue_.empty() && total + queue_.front().batch > limit) break;
      }
      fruitless_waits_ = total > before_wait ? 0 : fruitless_waits_ + 1;
    }
  }
  forming_ = false;
  if (!batch.empty()) ++executing_;
  const int64_t depth = static_cast<int64_t>(queue_.size());
  lock.unlock();
  cv_.notify_all();
  if (options_.metrics) {
    options_.metrics->QueueDepthChanged(model_->name, model_->version_string(), depth);
  }
  return batch;
}

void Scheduler::WorkerLoop(Worker& worker) {
  FlushDenormals();
  bool backlog = false;  // requests were queued when the last batch finished
  while (true) {
    std::vector<std::pair<Pending, uint64_t>> expired;
    std::vector<Pending> batch = NextBatch(expired, backlog);
    backlog = false;
    for (auto& [pending, queue_ns] : expired) {
      Fail(pending,
           absl::DeadlineExceededError(absl::StrCat("deadline of the request to model '",
                                                    model_->name, "' passed while it was queued (",
                                                    queue_ns / 1000, " us); it was not computed")),
           queue_ns);
    }
    if (batch.empty()) {
      if (!expired.empty()) continue;
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ && queue_.empty()) return;
      continue;
    }
    // From taking the batch to answering it (this iteration), the worker is at work.
    struct Working {
      ThreadBudget* budget;
      explicit Working(ThreadBudget* b) : budget(b) {
        if (budget) budget->BeginWork();
      }
      ~Working() {
        if (budget) budget->EndWork();
      }
    } working(options_.budget);
    std::vector<Answer> answers = Execute(worker, std::move(batch), /*threads_held=*/false);
    bool more_queued, stopping;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --executing_;
      more_queued = !queue_.empty();
      stopping = stopping_;
    }
    backlog = more_queued;
    // Another instance may be waiting for a free slot; with nothing queued it has no work.
    if (more_queued || stopping) cv_.notify_all();
    if (answers.empty()) continue;
    // With more queued, building and sending the answers would hold up the next batch: the
    // responder thread does it while this worker computes, unless it has not yet taken what it
    // was handed before (then it is the slower one, and this worker answers its own).
    bool handed_over = false;
    if (more_queued) {
      std::lock_guard<std::mutex> lock(answers_mutex_);
      if (answers_.empty()) {
        answers_ = std::move(answers);
        handed_over = true;
      }
    }
    if (handed_over) {
      answers_cv_.notify_one();
    } else {
      for (Answer& answer : answers) answer.callback(std::move(answer.response));
    }
  }
}

absl::Status Scheduler::PrepareInputs(const Pending& pending,
                                      std::vector<std::vector<float>>& owned,
                                      std::vector<const void*>& data) const {
  const inference::ModelConfig& config = model_->config;
  owned.assign(config.input_size(), {});
  data.assign(config.input_size(), nullptr);
  for (int i = 0; i < config.input_size(); ++i) {
    const inference::ModelInput& input = config.input(i);
    const InputTensor& tensor = pending.request->inputs[pending.request_input[i]];
    switch (pending.kind[i]) {
      case InputKind::kAsIs:
        data[i] = tensor.data.data();
        break;
      case InputKind::kUint8ToFloat: {
        const auto* bytes = reinterpret_cast<const uint8_t*>(tensor.data.data());
        std::vector<float>& out = owned[i];
        out.resize(tensor.data.size());
        const bool normalize =
            config.has_preprocessing() && config.preprocessing().input() == input.name();
        // Channel of element e for NCHW / NHWC, from the request's per-sample dims (its shape
        // without the batch): the config's may be variable (-1).
        const std::vector<int64_t> dims(
            tensor.shape.begin() + (max_batch_size_ > 0 && !tensor.shape.empty() ? 1 : 0),
            tensor.shape.end());
        const int64_t sample = Product(dims);
        const size_t n = dims.size();
        const bool nhwc = input.format() == inference::ModelInput::FORMAT_NHWC;
        const int64_t channels = n >= 3 ? (nhwc ? dims[n - 1] : dims[n - 3]) : 1;
        const int64_t plane = n >= 3 ? dims[n - 2] * dims[n - 1] : sample;
        Uint8ToFloat(bytes, out.size(), sample, plane, channels, nhwc,
                     normalize ? &config.preprocessing() : nullptr, out.data());
        data[i] = out.data();
        break;
      }
      case InputKind::kImage: {
        const auto& pre = config.preprocessing();
        const int channels = repository::ColorFormatChannels(pre.color_format());
        const size_t per_image = static_cast<size_t>(channels) * pre.width() * pre.height();
        std::vector<float>& out = owned[i];
        out.resize(per_image * tensor.elements.size());
        for (size_t e = 0; e < tensor.elements.size(); ++e) {
          absl::StatusOr<Image> image =
              DecodeImage(tensor.elements[e], channels, options_.max_image_pixels);
          if (!image.ok()) {
            return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "' of model '",
                                                           model_->name, "': element ", e, ": ",
                                                           image.status().message()));
          }
          PreprocessImage(*image, pre, input.format() == inference::ModelInput::FORMAT_NHWC,
                          out.data() + e * per_image);
        }
        data[i] = out.data();
        break;
      }
    }
  }
  return absl::OkStatus();
}

std::vector<Scheduler::Answer> Scheduler::Execute(Worker& worker, std::vector<Pending> batch,
                                                  bool threads_held) {
  // Releases the threads a caller took for us on every path out.
  struct HeldThreads {
    ThreadBudget* budget;
    int n;
    ~HeldThreads() {
      if (budget) budget->Release(n);
    }
  } held{threads_held ? options_.budget : nullptr, threads_per_worker_};
  const Clock::time_point start = Clock::now();
  const inference::ModelConfig& config = model_->config;
  const engine::Model& engine_model = *model_->engine_model;

  // Per-request inputs (decoding images may fail one request without failing the others).
  std::vector<std::vector<std::vector<float>>> owned(batch.size());
  std::vector<std::vector<const void*>> data(batch.size());
  std::vector<uint64_t> queue_ns(batch.size());
  std::vector<Pending> ready;
  std::vector<std::vector<std::vector<float>>> ready_owned;
  std::vector<std::vector<const void*>> ready_data;
  std::vector<uint64_t> ready_queue_ns;
  for (size_t r = 0; r < batch.size(); ++r) {
    queue_ns[r] = Ns(start - batch[r].arrival);
    absl::Status status = PrepareInputs(batch[r], owned[r], data[r]);
    if (!status.ok()) {
      Fail(batch[r], status, queue_ns[r]);
      continue;
    }
    ready.push_back(std::move(batch[r]));
    ready_owned.push_back(std::move(owned[r]));
    ready_data.push_back(std::move(data[r]));
    ready_queue_ns.push_back(queue_ns[r]);
  }
  if (ready.empty()) return {};
  int64_t total = 0;
  for (const Pending& p : ready) total += p.batch;

  const auto fail_all = [&](const absl::Status& status) {
    for (size_t r = 0; r < ready.size(); ++r) Fail(ready[r], status, ready_queue_ns[r]);
  };
  absl::StatusOr<std::shared_ptr<const engine::Plan>> plan =
      engine_model.GetPlan(total, threads_per_worker_);
  if (!plan.ok()) {
    fail_all(Annotate(plan.status(), absl::StrCat("model '", model_->name, "'")));
    return {};
  }
  std::unique_ptr<engine::Workspace>& workspace = worker.workspaces[total];
  if (workspace == nullptr) workspace = (*plan)->CreateWorkspace(*worker.memory);

  // Gather the batch into the worker's buffers, in the engine's input order.
  const auto& input_infos = (*plan)->input_infos();
  const auto& output_infos = (*plan)->output_infos();
  worker.input_buffers.resize(input_infos.size());
  worker.output_buffers.resize(output_infos.size());
  std::vector<engine::TensorView> inputs(input_infos.size()), outputs(output_infos.size());
  for (int i = 0; i < config.input_size(); ++i) {
    const int e = model_->engine_input_of_config[i];
    engine::TensorView& view = inputs[e];
    view.dtype = input_infos[e].dtype;
    view.dims = input_infos[e].dims;
    const size_t bytes = view.byte_size();
    const size_t per_element = bytes / static_cast<size_t>(std::max<int64_t>(total, 1));
    size_t needed = 0;
    for (const Pending& p : ready) needed += per_element * static_cast<size_t>(p.batch);
    if (needed != bytes || max_batch_size_ == 0) {
      if (max_batch_size_ > 0 || ready.size() != 1) {
        fail_all(absl::InternalError(absl::StrCat("model '", model_->name, "': input '",
                                                  config.input(i).name(), "' size mismatch")));
        return {};
      }
    }
    std::vector<std::byte>& buffer = worker.input_buffers[e];
    buffer.resize(bytes);
    size_t offset = 0;
    for (size_t r = 0; r < ready.size(); ++r) {
      const size_t n = std::min(per_element * static_cast<size_t>(ready[r].batch), bytes - offset);
      std::memcpy(buffer.data() + offset, ready_data[r][i], n);
      offset += n;
    }
    view.data = buffer.data();
  }
  for (size_t o = 0; o < output_infos.size(); ++o) {
    engine::TensorView& view = outputs[o];
    view.dtype = output_infos[o].dtype;
    view.dims = output_infos[o].dims;
    worker.output_buffers[o].resize(view.byte_size());
    view.data = worker.output_buffers[o].data();
  }
  const Clock::time_point infer_start = Clock::now();

  engine::RunOptions run_options;
  run_options.num_threads = threads_per_worker_;
  if (options_.budget && !threads_held) options_.budget->Acquire(threads_per_worker_);
  absl::Status run = (*plan)->Run(*workspace, inputs, outputs, run_options);
  if (options_.budget && !threads_held) options_.budget->Release(threads_per_worker_);
  const Clock::time_point infer_end = Clock::now();
  if (!run.ok()) {
    fail_all(run);
    return {};
  }

  // Split the outputs per request.
  std::vector<InferResponse> responses(ready.size());
  int64_t row = 0;
  for (size_t r = 0; r < ready.size(); ++r) {
    InferResponse& response = responses[r];
    response.model_name = model_->name;
    response.model_version = model_->version_string();
    response.id = ready[r].request->id;
    for (size_t k = 0; k < ready[r].outputs.size(); ++k) {
      const int o = ready[r].outputs[k];
      const int e = model_->engine_output_of_config[o];
      const engine::TensorView& view = outputs[e];
      const size_t bytes_per_row =
          view.byte_size() / static_cast<size_t>(std::max<int64_t>(total, 1));
      const std::byte* first =
          static_cast<const std::byte*>(view.data) + bytes_per_row * static_cast<size_t>(row);
      OutputTensor out;
      out.name = config.output(o).name();
      std::vector<int64_t> row_dims(view.dims.begin() + (max_batch_size_ > 0 ? 1 : 0),
                                    view.dims.end());
      const int64_t k_wanted = ready[r].classification[k];
      if (k_wanted > 0) {
        const int64_t classes = Product(row_dims);
        const int64_t top = std::min(k_wanted, classes);
        const std::vector<std::string>& labels = model_->labels[o];
        out.datatype = "BYTES";
        out.shape = {ready[r].batch, top};
        if (max_batch_size_ == 0) out.shape = {top};
        std::vector<int64_t> order(static_cast<size_t>(classes));
        for (int64_t b = 0; b < ready[r].batch; ++b) {
          const float* values = reinterpret_cast<const float*>(first) + b * classes;
          std::iota(order.begin(), order.end(), 0);
          std::partial_sort(order.begin(), order.begin() + top, order.end(),
                            [&](int64_t a, int64_t c) { return values[a] > values[c]; });
          for (int64_t t = 0; t < top; ++t) {
            const int64_t index = order[t];
            std::string element = absl::StrCat(std::to_string(values[index]), ":", index);
            if (index < static_cast<int64_t>(labels.size())) {
              absl::StrAppend(&element, ":", labels[index]);
            }
            out.elements.push_back(std::move(element));
          }
        }
      } else {
        out.datatype = engine::DataTypeName(view.dtype);
        out.shape = row_dims;
        if (max_batch_size_ > 0) out.shape.insert(out.shape.begin(), ready[r].batch);
        out.data.assign(reinterpret_cast<const char*>(first),
                        bytes_per_row * static_cast<size_t>(ready[r].batch));
      }
      response.outputs.push_back(std::move(out));
    }
    row += ready[r].batch;
  }
  const Clock::time_point end = Clock::now();
  const uint64_t input_ns = Ns(infer_start - start), infer_ns = Ns(infer_end - infer_start),
                 output_ns = Ns(end - infer_end);
  statistics_.RecordExecution(total, input_ns, infer_ns, output_ns);
  RecordInferTime(total, infer_ns);
  if (options_.metrics) options_.metrics->BatchExecuted(model_->name, total);
  std::vector<Answer> answers;
  answers.reserve(ready.size());
  for (size_t r = 0; r < ready.size(); ++r) {
    RequestTimings timings;
    timings.queue_ns = ready_queue_ns[r];
    timings.compute_input_ns = input_ns;
    timings.compute_infer_ns = infer_ns;
    timings.compute_output_ns = output_ns;
    timings.total_ns = Ns(Clock::now() - ready[r].arrival);
    statistics_.RecordSuccess(timings, ready[r].batch);
    if (options_.metrics) {
      options_.metrics->RequestDone(model_->name, absl::StatusCode::kOk, timings.queue_ns / 1e9,
                                    (input_ns + infer_ns + output_ns) / 1e9,
                                    timings.total_ns / 1e9);
    }
    answers.push_back(Answer{std::move(ready[r].callback), std::move(responses[r])});
    ready[r].request.reset();
  }
  return answers;
}

}  // namespace convserve::serving
