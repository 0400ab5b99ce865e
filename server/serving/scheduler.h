// The scheduler of one served model version: validates requests against the model's config,
// queues them (bounded), forms batches (dynamic batching: max_batch_size,
// max_queue_delay_microseconds, preferred_batch_size) and runs them on `instance_group` count
// workers, each with its own engine Workspace per plan. Requests whose deadline passes while
// queued fail with DEADLINE_EXCEEDED without being computed.
//
// max_queue_delay is an upper bound, not a fixed wait. A batch waits for more requests only
// - while requests overlap or recent waits collected some, so that a lone client (one request
//   in flight) is not delayed by it;
// - where the model's measured compute per image is at least kBatchingGain lower at some larger
//   batch size (or the larger sizes are not measured yet), and no longer than the compute that
//   saves (BatchWaitBudgetNs): where batching saves no compute, waiting only idles the worker;
// - and not when requests were queued as the worker finished its last batch: under load,
//   batches form while the worker computes, and waiting would idle it for requests that come
//   back only once answered;
// - and no longer than until the batch reaches max_batch_size or the smallest preferred batch
//   size (as Triton runs a batch of a preferred size at once).
//
// Two hand-offs are skipped where they only cost time:
// - A lone request (no other request arrived with it (InferRequest::followed), not pipelined
//   behind an unanswered one of its stream (InferRequest::pipelined), nothing queued or being
//   batched, an instance and the compute threads free, the batcher not expecting company, the
//   model's last batch-1 execution under kInlineMaxInferUs, and its encoded images if any under
//   kInlineMaxImagePixels) runs on the thread that submits it, usually the gRPC thread that
//   received it (server/api/async_rpc.h): waking a worker costs tens of microseconds on a virtual
//   machine, a large share of a small model's request. At most one such execution runs at a time,
//   counted as one of the instances, so the instance and thread limits hold as before.
// - Requests that arrived together (the api saw them ready at once) are queued, and the last of
//   them, finding the others queued and an instance and the threads free, takes them all as one
//   batch and runs it on its own thread too (ClaimGroup), when that batch's measured execution
//   is under kGroupMaxInferUs. The worker is notified of every queued request all the same, so
//   nothing waits on the group's last request; it usually wakes too late to find any. Measured
//   on bench/SERVER.md's machine with 8 clients (interleaved runs, medians of 2 rounds):
//   fashion-mlp 10.3-11.6k -> 27.4-29.8k images/s, fashion-sep 5.4-5.8k -> 8.2-9.4k.
// - A worker that has more requests queued when a batch finishes leaves the answers (building
//   and sending the responses) to the scheduler's responder thread and goes on computing; with
//   nothing queued, or while the responder has not taken the previous hand-over yet, it
//   answers them itself.
//
// Thread safety: Submit may be called from any thread and never blocks on computation. The
// destructor stops accepting work, lets the workers finish everything queued, and joins them:
// do not destroy a Scheduler from one of its own workers (ServerCore destroys them on a reaper
// thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
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
  // Takes `n` threads only if they are free now.
  bool TryAcquire(int n);
  void Release(int n);
  // Threads taken now (a relaxed read: a hint that may be stale as soon as it is read).
  int busy() const { return total_ - available_.load(std::memory_order_relaxed); }
  // Workers between taking a batch and answering it (preparing inputs, decoding images, building
  // answers) hold no threads of the budget outside the engine's run; they say so here.
  void BeginWork() { working_.fetch_add(1, std::memory_order_relaxed); }
  void EndWork() { working_.fetch_sub(1, std::memory_order_relaxed); }
  // No thread taken and no worker at work (a hint, as busy()).
  bool idle() const { return busy() == 0 && working_.load(std::memory_order_relaxed) == 0; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<int> working_{0};
  std::atomic<int> available_;  // changed under mutex_; read without it by busy()
  const int total_;
};

// The batching policy's cost test: with `total` images at hand, how long waiting for more may
// last. `infer_ns(b)` is the measured time of one execution of batch size b (<= 0: not
// measured). Let c(b) = infer_ns(b) / b and c* the lowest c(b) measured for b in (total, limit].
// Returns
// - kWaitUnmeasured where c(total) or every size in (total, limit] is not measured yet (wait up
//   to max_queue_delay: waiting is how larger batches get measured);
// - 0 (do not wait) where c* is not at least `gain` below c(total);
// - else total * (c(total) - c*), in ns: the compute the images at hand would save in the
//   cheaper batch. Waiting longer idles the worker for more than batching can give back.
inline constexpr int64_t kWaitUnmeasured = -1;
int64_t BatchWaitBudgetNs(int64_t total, int64_t limit, double gain,
                          const std::function<int64_t(int64_t)>& infer_ns);

struct SchedulerOptions {
  int total_threads = 1;                   // threads for all instances of this model together
  int64_t max_image_pixels = 16 << 20;     // decompression-bomb limit for BYTES image inputs
  uint32_t default_max_queue_size = 1024;  // when the config sets no max_queue_size
  ThreadBudget* budget = nullptr;          // optional, shared by all schedulers
  MetricsSink* metrics = nullptr;          // optional
};

class Scheduler : public repository::Servable, public std::enable_shared_from_this<Scheduler> {
 public:
  // Lone requests of models whose batch-1 execution takes longer run on a worker: blocking a
  // gRPC thread that long is not worth the few microseconds the hand-off costs.
  static constexpr int64_t kInlineMaxInferUs = 2000;
  // Nor do requests whose encoded images hold more pixels in all (or whose size the headers do
  // not tell): decoding them would block the receiving thread for longer than that.
  static constexpr int64_t kInlineMaxImagePixels = 256 * 256;
  // A group of requests that arrived together runs on the receiving thread only when its batch
  // takes less than this: while it computes there, nothing is received, whereas a worker computes
  // while the next requests arrive (fashion-k3, 333 us per image, lost about 5% of its throughput
  // at concurrency 8 with groups up to kInlineMaxInferUs).
  static constexpr int64_t kGroupMaxInferUs = 500;
  // max_queue_delay is waited only where a larger batch was measured at least this much cheaper
  // per image than the batch at hand (see NextBatch).
  static constexpr double kBatchingGain = 0.15;

  // Between these two calls on one thread (the gRPC thread around the events it took at once),
  // Submit does not wake the workers for requests that arrived with others (`followed`, or
  // `pipelined`: the end comes right after the read of the stream's next request): the
  // last of them may take them as a group (ClaimGroup), and a worker woken to find them gone
  // costs both threads a context switch (about 12% of the server's CPU for fashion-mlp at
  // concurrency 8). The end wakes every scheduler, owned by a shared_ptr, that still has
  // requests queued; one without an owner is woken at once. Calls may nest.
  static void BeginDeferringWakes();
  static void EndDeferringWakes();

  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      std::shared_ptr<const repository::ModelVersion> model, SchedulerOptions options);
  ~Scheduler() override;

  // Validates and queues a request, or runs it on this thread (see above), so that the callback
  // may have run when Submit returns. Errors (invalid input, queue full RESOURCE_EXHAUSTED,
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
  // Requests that may wait in the queue: the config's max_queue_size, else the default.
  size_t max_queue_size() const { return max_queue_size_; }
  int64_t queue_depth() const;
  int num_workers() const { return static_cast<int>(workers_.size()); }
  // Requests that ran on the submitting thread (see above).
  uint64_t inline_count() const { return inline_count_.load(); }
  int threads_per_worker() const { return threads_per_worker_; }
  // Host memory the model version holds: its weights in plain form (the imported graph) and as
  // the compiled plans hold them (reordered, each distinct layout once), plus the workspaces
  // (activation arenas, scratchpads) its workers created so far. Not counted: oneDNN's generated
  // kernels, request and response buffers. Reported as ModelStatistics.memory_usage.
  uint64_t memory_bytes() const;

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
    bool images_fit_inline = true;        // its encoded images may be decoded inline
  };
  struct Worker;
  // A finished request's answer, waiting to be handed to its callback.
  struct Answer {
    InferCallback callback;
    InferResponse response;
  };

  Scheduler(std::shared_ptr<const repository::ModelVersion> model, SchedulerOptions options);
  absl::Status Validate(Pending& pending) const;
  void Fail(Pending& pending, const absl::Status& status, uint64_t queue_ns);
  void WorkerLoop(Worker& worker);
  // Takes the next batch from the queue (empty when stopping with nothing queued). `backlog`:
  // requests were queued when this worker finished its last batch (then it does not wait).
  std::vector<Pending> NextBatch(std::vector<std::pair<Pending, uint64_t>>& expired, bool backlog);
  // Runs `batch` on `worker`'s buffers and returns the answers of the requests that succeeded,
  // for the caller to deliver (failed ones are answered here). `threads_held`: the caller
  // already took the compute threads from the budget.
  std::vector<Answer> Execute(Worker& worker, std::vector<Pending> batch, bool threads_held);
  // Whether a request submitted now may run on the submitting thread; takes the instance and
  // the threads when it may. Called with mutex_ held.
  bool ClaimInline();
  // Whether the requests queued now and `last` may run together as one batch on the submitting
  // thread; if so, moves them into `group` (oldest first, `last` at the end, within
  // max_batch_size and kGroupMaxInferUs, skipping requests whose deadline passed or whose
  // images are large) and takes the instance and the threads. Called with mutex_ held.
  bool ClaimGroup(Pending& last, std::vector<Pending>& group);
  // The inline execution's instance and compute threads, when free. Called with mutex_ held.
  bool TakeInlineSlot();
  // Wakes the workers if requests are queued (or the scheduler stops).
  void WakeIfQueued();
  // BatchWaitBudgetNs on this model's measured infer times, with kBatchingGain.
  int64_t WaitBudgetNs(int64_t total, int64_t limit) const;
  void RecordInferTime(int64_t batch, uint64_t infer_ns);
  void RunInline(std::vector<Pending> batch);
  void ResponderLoop();
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
  int executing_ = 0;         // executions in progress (workers and the inline one)
  bool inline_busy_ = false;  // a request is running on its submitting thread
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Worker> inline_worker_;  // buffers of the inline execution (no thread)
  // Smoothed infer time of one execution by batch size (0: never run, -1: run once, not
  // measured), for the batching and inline decisions.
  std::vector<std::atomic<int64_t>> infer_ns_by_batch_;
  std::atomic<uint64_t> inline_count_{0};

  // Answers handed over by workers that had more work queued.
  std::mutex answers_mutex_;
  std::condition_variable answers_cv_;
  std::vector<Answer> answers_;
  bool responder_stopping_ = false;
  std::thread responder_;
};

}  // namespace convserve::serving
