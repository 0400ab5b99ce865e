// The measured reports of a served model: the per-layer cost report (engine profiler on the
// model's own compiled plan) and the kernel-design comparison (alternatives of a convolution,
// built and timed on this machine).
//
// Reports never stall serving: a ReportRunner runs them one at a time on its own thread, and
// each job holds `threads` of the server's compute budget while it measures, taking its turn
// with the model workers like any batch. Jobs are bounded in iterations (kMaxReportIterations)
// and time (kMaxReportSeconds of timing per plan).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/profiler.h"
#include "server/repository/model.h"
#include "server/serving/scheduler.h"

namespace convserve::serving {

inline constexpr int kMaxReportIterations = 1000;
inline constexpr double kMaxReportSeconds = 10.0;

class ReportRunner {
 public:
  // `budget` may be null (no shared budget); it must outlive the runner.
  ReportRunner(ThreadBudget* budget, int threads, size_t max_pending = 4);
  // Cancels the running job's measurement (CancelAll) and waits for it; runs nothing more.
  ~ReportRunner();

  // A job measures with `threads` threads and passes `cancel` on to the measurement
  // (ProfileOptions::cancel), which then ends with CANCELLED once the runner cancels it.
  using JobFn = std::function<void(int threads, const std::atomic<bool>* cancel)>;
  // Queues `job`. RESOURCE_EXHAUSTED when `max_pending` jobs already wait, UNAVAILABLE once
  // StopAccepting was called. `cancelled` runs instead of `job` if it is cancelled before it
  // starts.
  absl::Status Post(JobFn job, std::function<void()> cancelled);

  // A graceful stop: StopAccepting refuses new jobs while those posted still run; WaitIdle
  // returns true once none is queued or running, false at `deadline`; CancelAll then cancels the
  // running one's measurement and calls `cancelled` of those still queued.
  void StopAccepting();
  bool WaitIdle(std::chrono::steady_clock::time_point deadline);
  void CancelAll();

 private:
  struct Job {
    JobFn run;
    std::function<void()> cancelled;
  };
  void Loop();

  ThreadBudget* const budget_;
  const int threads_;
  const size_t max_pending_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> jobs_;
  bool accepting_ = true;
  bool running_ = false;  // a job is running
  bool stopping_ = false;
  std::atomic<bool> cancel_{false};
  std::thread thread_;
};

// Checks a report's batch size (1..max_batch_size, or 1 for a model without a batch dimension)
// and iterations (1..kMaxReportIterations); INVALID_ARGUMENT naming the model otherwise.
absl::Status ValidateReportRequest(const repository::ModelVersion& model, int64_t batch_size,
                                   int iterations);

// Profiles the model's plan for `batch_size` on seeded random inputs in [0, 1). The measurements
// below end with CANCELLED once `*cancel` (if given) turns true.
absl::StatusOr<engine::PlanProfile> ProfileModel(const repository::ModelVersion& model,
                                                 int64_t batch_size, int iterations, int threads,
                                                 const std::atomic<bool>* cancel = nullptr);

struct LayerComparison {
  std::string layer_name;
  engine::Dims input_dims, output_dims;
  std::vector<engine::DesignResult> designs;
};

// Which convolutions of the model to compare: one by name, one by index among the model's
// convolution steps, or all of them.
struct LayerSelector {
  std::string name;
  int index = -1;
  bool all = false;
};

absl::StatusOr<std::vector<LayerComparison>> CompareModelLayers(
    const repository::ModelVersion& model, const LayerSelector& selector, int64_t batch_size,
    int iterations, int threads, const std::atomic<bool>* cancel = nullptr);

absl::StatusOr<LayerComparison> CompareFreeShape(const engine::ConvShape& shape, int iterations,
                                                 int threads,
                                                 const std::atomic<bool>* cancel = nullptr);

}  // namespace convserve::serving
