#include "server/serving/server_core.h"

#include <algorithm>
#include <deque>

#include "absl/strings/str_cat.h"
#include "server/serving/log_limiter.h"
#include "spdlog/spdlog.h"

namespace convserve::serving {
namespace {

absl::Status ShuttingDown() { return absl::UnavailableError("the server is shutting down"); }

}  // namespace

// Destroys schedulers on its own thread: a scheduler's destructor joins its workers, which must
// never happen on one of those workers or on a gRPC thread.
class Reaper {
 public:
  Reaper() : thread_([this] { Loop(); }) {}
  ~Reaper() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Retire(Scheduler* scheduler) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(scheduler);
    }
    cv_.notify_all();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      Scheduler* scheduler = queue_.front();
      queue_.pop_front();
      lock.unlock();
      delete scheduler;
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Scheduler*> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

ServerCore::ServerCore(ServerCoreOptions options)
    : options_(std::move(options)),
      budget_(std::make_shared<ThreadBudget>(std::max(1, options_.threads))),
      reports_(std::make_unique<ReportRunner>(budget_.get(), options_.threads)) {}

absl::StatusOr<std::unique_ptr<ServerCore>> ServerCore::Create(ServerCoreOptions options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(options.model_repository, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model repository '", options.model_repository.string(), "' is not a folder"));
  }
  std::unique_ptr<ServerCore> core(new ServerCore(std::move(options)));
  core->reaper_ = std::make_shared<Reaper>();
  ServerCore* self = core.get();
  auto factory = [self](const std::shared_ptr<const repository::ModelVersion>& model)
      -> absl::StatusOr<std::shared_ptr<repository::Servable>> {
    SchedulerOptions scheduler_options;
    scheduler_options.total_threads = std::max(1, self->options_.threads);
    scheduler_options.max_image_pixels = self->options_.max_image_pixels;
    scheduler_options.budget = self->budget_.get();
    scheduler_options.metrics = self->options_.metrics;
    absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
        Scheduler::Create(model, scheduler_options);
    if (!scheduler.ok()) return scheduler.status();
    std::weak_ptr<Reaper> reaper = self->reaper_;
    // Owned as a Scheduler, so that it can hand out weak pointers to itself.
    return std::shared_ptr<Scheduler>(scheduler->release(),
                                      [reaper](repository::Servable* servable) {
                                        auto* s = static_cast<Scheduler*>(servable);
                                        if (auto r = reaper.lock()) {
                                          r->Retire(s);
                                        } else {
                                          delete s;
                                        }
                                      });
  };
  auto listener = [self](const repository::LoadEvent& event) {
    switch (event.kind) {
      case repository::LoadEvent::Kind::kLoaded:
        spdlog::info("loaded model '{}' version {} in {:.3f} s", event.model, event.version,
                     event.seconds);
        break;
      case repository::LoadEvent::Kind::kFailed:
        spdlog::error("failed to load model '{}'{}: {}", event.model,
                      event.version.empty() ? "" : " version " + event.version, event.reason);
        break;
      case repository::LoadEvent::Kind::kUnloaded:
        spdlog::info("unloaded model '{}'{}", event.model,
                     event.reason.empty() ? "" : " (" + event.reason + ")");
        break;
    }
    if (self->options_.metrics) self->options_.metrics->ModelLoadEvent(event);
  };
  core->repository_ =
      std::make_unique<repository::Repository>(core->options_.model_repository, factory, listener);
  const std::vector<std::string>& startup = core->options_.startup_models;
  const bool explicit_mode = core->options_.control_mode == ModelControlMode::kExplicit;
  if (!explicit_mode && !startup.empty()) {
    return absl::InvalidArgumentError("--load-model needs --model-control-mode=explicit");
  }
  if (!explicit_mode || std::find(startup.begin(), startup.end(), "*") != startup.end()) {
    core->repository_->LoadAll();
  } else {
    for (const std::string& name : startup) {
      if (absl::Status status = core->repository_->Load(name);
          absl::IsNotFound(status) || absl::IsInvalidArgument(status)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--load-model ", name, ": ", status.message()));
      }
    }
  }
  core->control_thread_ = std::thread([self] { self->ControlLoop(); });
  return core;
}

ServerCore::~ServerCore() {
  ReleaseRefusals();  // every request gets an answer
  reports_.reset();   // cancels a report still running, answers those queued
  {
    std::lock_guard<std::mutex> lock(control_mutex_);
    control_stop_ = true;
  }
  control_cv_.notify_all();
  if (control_thread_.joinable()) control_thread_.join();
  for (ControlJob& job : control_jobs_) job.done(ShuttingDown());  // queued behind the last one
  control_jobs_.clear();
  repository_.reset();  // drops the handles: schedulers go to the reaper
  reaper_.reset();      // finishes what is queued, joins
}

void ServerCore::ControlLoop() {
  std::unique_lock<std::mutex> lock(control_mutex_);
  auto next_poll = std::chrono::steady_clock::now() +
                   std::chrono::seconds(std::max(1, options_.repository_poll_secs));
  while (!control_stop_) {
    if (options_.control_mode == ModelControlMode::kPoll) {
      control_cv_.wait_until(lock, next_poll,
                             [&] { return control_stop_ || !control_jobs_.empty(); });
    } else {
      control_cv_.wait(lock, [&] { return control_stop_ || !control_jobs_.empty(); });
    }
    if (control_stop_) break;
    std::vector<ControlJob> jobs;
    jobs.swap(control_jobs_);
    lock.unlock();
    for (auto& job : jobs) job.done(job.run());
    if (options_.control_mode == ModelControlMode::kPoll &&
        std::chrono::steady_clock::now() >= next_poll) {
      repository_->Poll();
      next_poll = std::chrono::steady_clock::now() +
                  std::chrono::seconds(std::max(1, options_.repository_poll_secs));
    }
    lock.lock();
  }
}

void ServerCore::PostControl(std::function<absl::Status()> job,
                             std::function<void(absl::Status)> done) {
  {
    std::lock_guard<std::mutex> lock(control_mutex_);
    if (!control_stop_) {
      control_jobs_.push_back({std::move(job), std::move(done)});
      control_cv_.notify_all();
      return;
    }
  }
  done(ShuttingDown());
}

void ServerCore::Infer(const std::string& name, const std::string& version,
                       std::unique_ptr<InferRequest> request, InferCallback callback) {
  const Clock::time_point arrival = Clock::now();
  if (shutting_down_.load()) {
    if (refused_.fetch_add(1) == 0) {
      spdlog::info("refusing new requests with UNAVAILABLE (first: '{}' for model '{}')",
                   request->id, name);
    }
    if (options_.metrics) {
      options_.metrics->RequestDone(name, absl::StatusCode::kUnavailable, 0.0, 0.0,
                                    std::chrono::duration<double>(Clock::now() - arrival).count());
    }
    {
      std::lock_guard<std::mutex> lock(held_mutex_);
      if (holding_) {
        held_.push_back(std::move(callback));
        held_cv_.notify_all();
        return;
      }
    }
    callback(ShuttingDown());
    return;
  }
  absl::StatusOr<ServedModel> served = Get(name, version);
  if (!served.ok()) {
    CountNotServed(name, request->id, served.status());
    callback(served.status());
    return;
  }
  in_flight_.fetch_add(1);
  served->scheduler->Submit(
      std::move(request),
      [this, callback = std::move(callback)](absl::StatusOr<InferResponse> result) {
        callback(std::move(result));
        if (in_flight_.fetch_sub(1) == 1) {
          std::lock_guard<std::mutex> lock(in_flight_mutex_);
          in_flight_cv_.notify_all();
        }
      },
      arrival);
}

void ServerCore::CountNotServed(const std::string& name, const std::string& request_id,
                                const absl::Status& status) {
  WarnRequestFailure("request '{}' for model '{}' failed: {}", request_id, name,
                     std::string(status.message()));
  if (options_.metrics == nullptr) return;
  // NOT_FOUND: no such model (or version): the name is the client's, and counting per name
  // would let clients add series without bound. Otherwise the model is in the repository (not
  // loaded, or failed to load), and its requests count with its own.
  if (status.code() == absl::StatusCode::kNotFound) {
    options_.metrics->UnservedRequest(status.code());
  } else {
    options_.metrics->RequestDone(name, status.code(), 0.0, 0.0, 0.0);
  }
}

void ServerCore::Reject(const std::string& name, const std::string& version,
                        const absl::Status& status, const std::string& request_id,
                        InferCallback callback) {
  absl::StatusOr<ServedModel> served = Get(name, version);
  if (!served.ok()) {
    // The model is not served: that is the answer, whatever else is wrong with the request.
    CountNotServed(name, request_id, served.status());
    callback(served.status());
    return;
  }
  served->scheduler->Reject(status, request_id, std::move(callback), Clock::now());
}

absl::StatusOr<ServedModel> ServerCore::Get(const std::string& name,
                                            const std::string& version) const {
  absl::StatusOr<repository::ServedVersion> served = repository_->Get(name, version);
  if (!served.ok()) return served.status();
  return ServedModel{served->model, std::static_pointer_cast<Scheduler>(served->servable)};
}

std::vector<ServedModel> ServerCore::Served() const {
  std::vector<ServedModel> all;
  for (auto& served : repository_->Served()) {
    all.push_back({served.model, std::static_pointer_cast<Scheduler>(served.servable)});
  }
  return all;
}

std::vector<int64_t> ServerCore::ServedVersions(const std::string& name) const {
  return repository_->ServedVersions(name);
}

std::vector<repository::ModelIndexEntry> ServerCore::Index(bool ready_only) const {
  return repository_->Index(ready_only);
}

void ServerCore::LoadAsync(const std::string& name, std::function<void(absl::Status)> done) {
  if (options_.control_mode != ModelControlMode::kExplicit) {
    done(absl::FailedPreconditionError(
        "explicit model load and unload need --model-control-mode=explicit"));
    return;
  }
  PostControl([this, name] { return repository_->Load(name); }, std::move(done));
}

void ServerCore::UnloadAsync(const std::string& name, std::function<void(absl::Status)> done) {
  if (options_.control_mode != ModelControlMode::kExplicit) {
    done(absl::FailedPreconditionError(
        "explicit model load and unload need --model-control-mode=explicit"));
    return;
  }
  PostControl([this, name] { return repository_->Unload(name); }, std::move(done));
}

void ServerCore::PollNow() { repository_->Poll(); }

void ServerCore::BeginShutdown() {
  shutting_down_.store(true);
  reports_->StopAccepting();
  {
    std::lock_guard<std::mutex> lock(control_mutex_);
    control_stop_ = true;
  }
  control_cv_.notify_all();
}

void ServerCore::HoldRefusals() {
  std::lock_guard<std::mutex> lock(held_mutex_);
  holding_ = true;
}

size_t ServerCore::WaitForQuietRefusals(std::chrono::milliseconds quiet,
                                        std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(held_mutex_);
  while (std::chrono::steady_clock::now() < deadline) {
    const size_t before = held_.size();
    const auto until = std::min(deadline, std::chrono::steady_clock::now() + quiet);
    held_cv_.wait_until(lock, until, [&] { return held_.size() != before; });
    if (held_.size() == before && until < deadline) break;  // quiet for `quiet`
  }
  return held_.size();
}

void ServerCore::ReleaseRefusals() {
  std::vector<InferCallback> held;
  {
    std::lock_guard<std::mutex> lock(held_mutex_);
    holding_ = false;
    held.swap(held_);
  }
  for (auto& callback : held) callback(ShuttingDown());
}

size_t ServerCore::held_refusals() const {
  std::lock_guard<std::mutex> lock(held_mutex_);
  return held_.size();
}

bool ServerCore::WaitForInFlight(std::chrono::steady_clock::time_point deadline) {
  bool requests_done;
  {
    std::unique_lock<std::mutex> lock(in_flight_mutex_);
    requests_done =
        in_flight_cv_.wait_until(lock, deadline, [&] { return in_flight_.load() == 0; });
  }
  const bool reports_done = reports_->WaitIdle(deadline);
  if (!reports_done) {
    spdlog::warn("a report was still running or queued at the exit timeout: cancelled");
    reports_->CancelAll();
  }
  return requests_done && reports_done;
}

}  // namespace convserve::serving
