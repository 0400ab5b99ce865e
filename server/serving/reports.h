// The measured reports of a served model: the per-layer cost report (engine profiler on the
// model's own compiled plan) and the kernel-design comparison (alternatives of a convolution,
// built and timed on this machine).
//
// Reports never stall serving: a ReportRunner runs them one at a time on its own thread, and
// each job holds `threads` of the server's compute budget while it measures, taking its turn
// with the model workers like any batch. Jobs are bounded in iterations (kMaxReportIterations)
// and time (kMaxReportSeconds of timing per plan).
#pragma once

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
  ~ReportRunner();  // runs nothing more; pending jobs get `cancelled` called

  // Queues `job` (run with the number of threads it may use). RESOURCE_EXHAUSTED when
  // `max_pending` jobs already wait. `cancelled` runs instead of `job` if the runner stops first.
  absl::Status Post(std::function<void(int threads)> job, std::function<void()> cancelled);

 private:
  struct Job {
    std::function<void(int)> run;
    std::function<void()> cancelled;
  };
  void Loop();

  ThreadBudget* const budget_;
  const int threads_;
  const size_t max_pending_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

// Checks a report's batch size (1..max_batch_size, or 1 for a model without a batch dimension)
// and iterations (1..kMaxReportIterations); INVALID_ARGUMENT naming the model otherwise.
absl::Status ValidateReportRequest(const repository::ModelVersion& model, int64_t batch_size,
                                   int iterations);

// Profiles the model's plan for `batch_size` on seeded random inputs in [0, 1).
absl::StatusOr<engine::PlanProfile> ProfileModel(const repository::ModelVersion& model,
                                                 int64_t batch_size, int iterations, int threads);

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
    int iterations, int threads);

absl::StatusOr<LayerComparison> CompareFreeShape(const engine::ConvShape& shape, int iterations,
                                                 int threads);

}  // namespace convserve::serving
