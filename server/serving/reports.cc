#include "server/serving/reports.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "server/common/status.h"

namespace convserve::serving {

ReportRunner::ReportRunner(ThreadBudget* budget, int threads, size_t max_pending)
    : budget_(budget),
      threads_(std::max(1, budget ? std::min(threads, budget->total()) : threads)),
      max_pending_(max_pending),
      thread_([this] { Loop(); }) {}

ReportRunner::~ReportRunner() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    accepting_ = false;
  }
  CancelAll();
  cv_.notify_all();
  thread_.join();
}

absl::Status ReportRunner::Post(JobFn job, std::function<void()> cancelled) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!accepting_) return absl::UnavailableError("the server is shutting down");
    if (jobs_.size() >= max_pending_) {
      return absl::ResourceExhaustedError(absl::StrCat("too many reports in progress (",
                                                       max_pending_, " waiting); try again later"));
    }
    jobs_.push_back({std::move(job), std::move(cancelled)});
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void ReportRunner::StopAccepting() {
  std::lock_guard<std::mutex> lock(mutex_);
  accepting_ = false;
}

bool ReportRunner::WaitIdle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_cv_.wait_until(lock, deadline, [this] { return jobs_.empty() && !running_; });
}

void ReportRunner::CancelAll() {
  std::deque<Job> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_.store(true);
    left.swap(jobs_);
  }
  idle_cv_.notify_all();
  for (Job& job : left) job.cancelled();
}

void ReportRunner::Loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping
      job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
    }
    if (budget_) budget_->Acquire(threads_);
    job.run(threads_, &cancel_);
    if (budget_) budget_->Release(threads_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = false;
    }
    idle_cv_.notify_all();
  }
}

absl::Status ValidateReportRequest(const repository::ModelVersion& model, int64_t batch_size,
                                   int iterations) {
  const int64_t max_batch = std::max<int64_t>(1, model.config.max_batch_size());
  if (batch_size < 1 || batch_size > max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("batch size for a report of model '", model.name,
                                                   "' must be 1..", max_batch, ", got ",
                                                   batch_size));
  }
  if (iterations < 1 || iterations > kMaxReportIterations) {
    return absl::InvalidArgumentError(absl::StrCat("iterations for a report of model '", model.name,
                                                   "' must be 1..", kMaxReportIterations, ", got ",
                                                   iterations));
  }
  return absl::OkStatus();
}

namespace {

engine::ProfileOptions Options(int iterations, int threads, const std::atomic<bool>* cancel) {
  engine::ProfileOptions options;
  options.cancel = cancel;
  options.iterations = iterations;
  options.warmup_iterations = std::min(5, iterations);
  options.num_threads = threads;
  options.max_seconds = kMaxReportSeconds;
  return options;
}

}  // namespace

absl::StatusOr<engine::PlanProfile> ProfileModel(const repository::ModelVersion& model,
                                                 int64_t batch_size, int iterations, int threads,
                                                 const std::atomic<bool>* cancel) {
  RETURN_IF_ERROR(ValidateReportRequest(model, batch_size, iterations));
  ASSIGN_OR_RETURN(std::shared_ptr<const engine::Plan> plan,
                   model.engine_model->GetPlan(batch_size, threads));
  std::mt19937 rng(2024);
  std::uniform_real_distribution<float> dist(0.f, 1.f);
  std::vector<std::vector<std::byte>> storage;
  std::vector<engine::TensorView> inputs;
  for (const engine::ValueInfo& info : plan->input_infos()) {
    const int64_t n = engine::NumElements(info.dims);
    storage.emplace_back(n * engine::ElementSize(info.dtype));
    if (info.dtype == engine::DataType::kFloat32) {
      float* data = reinterpret_cast<float*>(storage.back().data());
      for (int64_t i = 0; i < n; ++i) data[i] = dist(rng);
    }
    inputs.push_back({info.dtype, info.dims, storage.back().data()});
  }
  return engine::ProfilePlan(*plan, inputs, Options(iterations, threads, cancel));
}

absl::StatusOr<std::vector<LayerComparison>> CompareModelLayers(
    const repository::ModelVersion& model, const LayerSelector& selector, int64_t batch_size,
    int iterations, int threads, const std::atomic<bool>* cancel) {
  RETURN_IF_ERROR(ValidateReportRequest(model, batch_size, iterations));
  ASSIGN_OR_RETURN(std::shared_ptr<const engine::Plan> plan,
                   model.engine_model->GetPlan(batch_size, threads));
  std::vector<const engine::StepInfo*> convs;
  for (const engine::StepInfo& step : plan->steps()) {
    if (step.kind == "Conv") convs.push_back(&step);
  }
  std::vector<const engine::StepInfo*> chosen;
  if (selector.all) {
    chosen = convs;
  } else if (!selector.name.empty()) {
    for (const engine::StepInfo* step : convs) {
      const auto& sources = step->source_nodes;
      if (step->name == selector.name ||
          std::find(sources.begin(), sources.end(), selector.name) != sources.end()) {
        chosen.push_back(step);
      }
    }
    if (chosen.empty()) {
      return absl::NotFoundError(
          absl::StrCat("model '", model.name, "' has no convolution named '", selector.name, "'"));
    }
  } else {
    if (selector.index < 0 || selector.index >= static_cast<int>(convs.size())) {
      return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "' has ", convs.size(),
                                                     " convolutions; index ", selector.index,
                                                     " is out of range"));
    }
    chosen.push_back(convs[selector.index]);
  }
  if (chosen.empty()) {
    return absl::NotFoundError(absl::StrCat("model '", model.name, "' has no convolution"));
  }
  std::vector<LayerComparison> out;
  for (const engine::StepInfo* step : chosen) {
    ASSIGN_OR_RETURN(engine::ConvShape shape, engine::ConvShapeOfStep(*step));
    ASSIGN_OR_RETURN(std::vector<engine::DesignResult> designs,
                     engine::CompareKernelDesigns(shape, Options(iterations, threads, cancel)));
    out.push_back({step->name, step->input_dims.empty() ? engine::Dims{} : step->input_dims[0],
                   step->output_dims, std::move(designs)});
  }
  return out;
}

absl::StatusOr<LayerComparison> CompareFreeShape(const engine::ConvShape& shape, int iterations,
                                                 int threads, const std::atomic<bool>* cancel) {
  if (iterations < 1 || iterations > kMaxReportIterations) {
    return absl::InvalidArgumentError(
        absl::StrCat("iterations must be 1..", kMaxReportIterations, ", got ", iterations));
  }
  if (shape.batch > 256 || shape.height * shape.width > 1024 * 1024 || shape.in_channels > 4096 ||
      shape.out_channels > 4096 || shape.kernel > 15) {
    return absl::InvalidArgumentError(
        "shape too large for a comparison (limits: batch 256, 1M pixels, 4096 channels, "
        "kernel 15)");
  }
  ASSIGN_OR_RETURN(std::vector<engine::DesignResult> designs,
                   engine::CompareKernelDesigns(shape, Options(iterations, threads, cancel)));
  LayerComparison out;
  out.layer_name = "free-standing";
  out.input_dims = {shape.batch, shape.in_channels, shape.height, shape.width};
  if (!designs.empty()) out.output_dims = designs.front().output_dims;
  out.designs = std::move(designs);
  return out;
}

}  // namespace convserve::serving
