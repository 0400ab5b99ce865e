// The scheduler of one served model version: validates requests against the model's config,
// queues them (bounded), forms batches (dynamic batching: max_batch_size,
// max_queue_delay_microseconds, preferred_batch_size) and runs them on `instance_group` count
// workers, each with its own engine Workspace per plan. max_queue_delay is an upper bound: a
// batch waits for more requests only while requests overlap or recent waits collected some, so
// that a lone client (one request in flight) is not delayed by it. Requests whose deadline passes
// while queued fail with DEADLINE_EXCEEDED without being computed.
//
// Thread safety: Submit may be called from any thread and never blocks on computation. The
// destructor stops accepting work, lets the workers finish everything queued, and joins them:
// do not destroy a Scheduler from one of its own workers (ServerCore destroys them on a reaper
// thread).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/repository/model.h"
#include "server/repository/repository.h"
#include "server/serving/metrics_sink.h"
#include "server/serving/statistics.h"
#include "server/serving/types.h"

namespace convserve::serving {

// A shared budget of compute threads: a worker takes its OpenMP threads from it for the time of
// one execution, so that the busy threads of all models together stay within --threads.
class ThreadBudget {
 public:
  explicit ThreadBudget(int total) : available_(total), total_(total) {}
  int total() const { return total_; }
  void Acquire(int n);
  void Release(int n);

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int available_;
  const int total_;
};

struct SchedulerOptions {
  int total_threads = 1;                   // threads for all instances of this model together
  int64_t max_image_pixels = 16 << 20;     // decompression-bomb limit for BYTES image inputs
  uint32_t default_max_queue_size = 1024;  // when the config sets no max_queue_size
  ThreadBudget* budget = nullptr;          // optional, shared by all schedulers
  MetricsSink* metrics = nullptr;          // optional
};

class Scheduler : public repository::Servable {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      std::shared_ptr<const repository::ModelVersion> model, SchedulerOptions options);
  ~Scheduler() override;

  // Validates and queues a request. Errors (invalid input, queue full RESOURCE_EXHAUSTED,
  // shutting down UNAVAILABLE) are reported through `callback`, like results; `arrival` is when
  // the request reached the server.
  void Submit(std::unique_ptr<InferRequest> request, InferCallback callback,
              Clock::time_point arrival);

  // Fails a request that could not even be turned into an InferRequest (malformed wire
  // message), counting it in the statistics like any other failure.
  void Reject(const absl::Status& status, const std::string& request_id, InferCallback callback,
              Clock::time_point arrival);

  const repository::ModelVersion& model() const { return *model_; }
  const ModelStatistics& statistics() const { return statistics_; }
  int64_t queue_depth() const;
  int num_workers() const { return static_cast<int>(workers_.size()); }
  int threads_per_worker() const { return threads_per_worker_; }

 private:
  enum class InputKind { kAsIs, kUint8ToFloat, kImage };
  struct Pending {
    std::unique_ptr<InferRequest> request;
    InferCallback callback;
    Clock::time_point arrival;
    int64_t batch = 1;
    std::vector<int> request_input;       // config input i -> index in request->inputs
    std::vector<InputKind> kind;          // per config input
    std::vector<int> outputs;             // config output indices to return, in request order
    std::vector<int64_t> classification;  // per entry of `outputs`
  };
  struct Worker;

  Scheduler(std::shared_ptr<const repository::ModelVersion> model, SchedulerOptions options);
  absl::Status Validate(Pending& pending) const;
  void Fail(Pending& pending, const absl::Status& status, uint64_t queue_ns);
  void WorkerLoop(Worker& worker);
  // Takes the next batch from the queue (empty when stopping with nothing queued).
  std::vector<Pending> NextBatch(std::vector<std::pair<Pending, uint64_t>>& expired);
  void Execute(Worker& worker, std::vector<Pending> batch);
  absl::Status PrepareInputs(const Pending& pending, std::vector<std::vector<float>>& owned,
                             std::vector<const void*>& data) const;

  const std::shared_ptr<const repository::ModelVersion> model_;
  const SchedulerOptions options_;
  const bool dynamic_batching_;
  const int64_t max_batch_size_;  // 0: no batch dimension
  const size_t max_queue_size_;
  int threads_per_worker_ = 1;
  ModelStatistics statistics_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool forming_ = false;  // a worker is forming a batch
  // Whether waiting up to max_queue_delay for more requests is worth it (see NextBatch):
  // a request arrived while another was queued or being batched since the last batch formed,
  // and how many waits in a row collected nothing.
  bool overlap_ = false;
  int fruitless_waits_ = 0;
  bool stopping_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace convserve::serving
