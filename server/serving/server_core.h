// The serving core: the repository with a scheduler attached to every loaded model version,
// model control (none / poll / explicit), shutdown, and everything the api's handlers delegate to.
//
// Thread safety: all methods may be called from any thread. Infer never blocks on computation;
// LoadAsync/UnloadAsync run on a control thread and report through their callback.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/repository/repository.h"
#include "server/serving/metrics_sink.h"
#include "server/serving/reports.h"
#include "server/serving/scheduler.h"
#include "server/serving/types.h"

namespace convserve::serving {

enum class ModelControlMode { kNone, kPoll, kExplicit };

struct ServerCoreOptions {
  std::filesystem::path model_repository;
  int threads = 1;  // compute threads for all models together
  ModelControlMode control_mode = ModelControlMode::kNone;
  // Explicit mode: the models loaded at start ("*": all); none and poll load all of them.
  std::vector<std::string> startup_models;
  int repository_poll_secs = 15;
  int64_t max_image_pixels = 16 << 20;
  MetricsSink* metrics = nullptr;  // optional; must outlive the core
};

// A served model version with its scheduler.
struct ServedModel {
  std::shared_ptr<const repository::ModelVersion> model;
  std::shared_ptr<Scheduler> scheduler;
};

class ServerCore {
 public:
  // Scans the repository and loads every model, or in explicit mode the startup models (load
  // failures are recorded and logged, not fatal; a startup model without a folder is an error).
  static absl::StatusOr<std::unique_ptr<ServerCore>> Create(ServerCoreOptions options);
  ~ServerCore();

  const ServerCoreOptions& options() const { return options_; }
  // The compute-thread budget shared by all model workers (and by reports).
  ThreadBudget& thread_budget() { return *budget_; }
  // For those that may outlive the core (the gRPC threads ask it whether they may spin).
  std::shared_ptr<ThreadBudget> shared_thread_budget() { return budget_; }
  // Runs the measured reports (layer reports, kernel comparisons) one at a time; part of the
  // graceful stop like requests (BeginShutdown, WaitForInFlight).
  ReportRunner& reports() { return *reports_; }

  // Runs a request on model `name`, version `version` ("" = latest). The callback runs exactly
  // once. UNAVAILABLE once shutdown began; NOT_FOUND for unknown models or versions.
  void Infer(const std::string& name, const std::string& version,
             std::unique_ptr<InferRequest> request, InferCallback callback);

  // Fails a request that the api could not convert, counting it in the model's statistics
  // when the model exists. The callback runs before this returns.
  void Reject(const std::string& name, const std::string& version, const absl::Status& status,
              const std::string& request_id, InferCallback callback);

  absl::StatusOr<ServedModel> Get(const std::string& name, const std::string& version) const;
  std::vector<ServedModel> Served() const;
  std::vector<int64_t> ServedVersions(const std::string& name) const;
  std::vector<repository::ModelIndexEntry> Index(bool ready_only) const;

  // Explicit model control. FAILED_PRECONDITION unless the mode is explicit.
  void LoadAsync(const std::string& name, std::function<void(absl::Status)> done);
  void UnloadAsync(const std::string& name, std::function<void(absl::Status)> done);

  // Rescans the repository now (what poll mode does every repository_poll_secs).
  void PollNow();

  // Shutdown: new requests and reports fail with UNAVAILABLE, and so do model loads and unloads
  // not yet started (the one running finishes; polling stops). WaitForInFlight returns true when
  // every in-flight request and report finished before `deadline`; reports still running or
  // queued then are cancelled (their callers are answered UNAVAILABLE).
  void BeginShutdown();
  bool shutting_down() const { return shutting_down_.load(); }
  bool WaitForInFlight(std::chrono::steady_clock::time_point deadline);
  int64_t in_flight() const { return in_flight_.load(); }
  // New requests refused with UNAVAILABLE since shutdown began (each counted in the metrics).
  int64_t refused() const { return refused_.load(); }

  // The last phase of a graceful stop. gRPC answers CANCELLED, not UNAVAILABLE, to calls that
  // reach it after its own shutdown began (grpc/grpc#41785), and a client in a request loop
  // always has one in the air. HoldRefusals() keeps the UNAVAILABLE answers of new requests
  // instead of sending them, so that such clients are waiting for an answer when gRPC shuts
  // down; ReleaseRefusals() sends them (after gRPC's GOAWAY) and answers later ones at once.
  void HoldRefusals();
  // Waits while held refusals keep arriving: returns once none arrived for `quiet`, or at
  // `deadline`. Returns how many are held.
  size_t WaitForQuietRefusals(std::chrono::milliseconds quiet,
                              std::chrono::steady_clock::time_point deadline);
  void ReleaseRefusals();
  size_t held_refusals() const;

 private:
  // Logs and counts a request for a model or version that is not served (`status`: why).
  void CountNotServed(const std::string& name, const std::string& request_id,
                      const absl::Status& status);
  explicit ServerCore(ServerCoreOptions options);
  void ControlLoop();
  // Runs `job` on the control thread; `done` gets its status. Once shutdown began, jobs still
  // queued and new ones are not run: `done` gets UNAVAILABLE (every caller gets an answer).
  void PostControl(std::function<absl::Status()> job, std::function<void(absl::Status)> done);

  const ServerCoreOptions options_;
  std::shared_ptr<ThreadBudget> budget_;
  std::unique_ptr<ReportRunner> reports_;  // before budget_ in destruction
  std::shared_ptr<class Reaper> reaper_;
  std::unique_ptr<repository::Repository> repository_;

  std::atomic<bool> shutting_down_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> refused_{0};
  mutable std::mutex held_mutex_;
  bool holding_ = false;
  std::vector<InferCallback> held_;
  std::condition_variable held_cv_;
  std::mutex in_flight_mutex_;
  std::condition_variable in_flight_cv_;

  std::mutex control_mutex_;
  std::condition_variable control_cv_;
  struct ControlJob {
    std::function<absl::Status()> run;
    std::function<void(absl::Status)> done;
  };
  std::vector<ControlJob> control_jobs_;
  bool control_stop_ = false;
  std::thread control_thread_;
};

}  // namespace convserve::serving
