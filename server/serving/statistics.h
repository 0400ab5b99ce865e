// Statistics of one served model version: Triton's cumulative counters (inference.ModelStatistics)
// and latency percentiles over the last minute and since start (convserve.v1).
//
// Thread-safe: workers record, RPC handlers take snapshots.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "server/serving/types.h"

namespace convserve::serving {

struct Duration {
  uint64_t count = 0;
  uint64_t ns = 0;
  void Add(uint64_t n) {
    ++count;
    ns += n;
  }
};

struct BatchDurations {
  Duration compute_input, compute_infer, compute_output;
};

struct Percentiles {
  uint64_t count = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0;
};

struct WindowSummary {
  uint64_t request_count = 0;
  Percentiles queue, compute, total;
};

struct StatisticsSnapshot {
  uint64_t last_inference_ms = 0;  // since the epoch
  uint64_t inference_count = 0;    // batch elements that succeeded
  uint64_t execution_count = 0;    // model executions
  Duration success, fail, queue, compute_input, compute_infer, compute_output;
  std::map<uint64_t, BatchDurations> batch_stats;  // by batch size
  WindowSummary last_minute, since_start;
};

// Per-request timings (ns); compute_* are those of the batch the request ran in.
struct RequestTimings {
  uint64_t queue_ns = 0, compute_input_ns = 0, compute_infer_ns = 0, compute_output_ns = 0;
  uint64_t total_ns = 0;
};

class ModelStatistics {
 public:
  // A request that succeeded, with `batch_size` elements.
  void RecordSuccess(const RequestTimings& timings, int64_t batch_size);
  // A request that failed (validation, deadline, execution); `queue_ns` if it was queued (0: it
  // never was). A failure adds to the total latency's percentiles, to the queue's only if it was
  // queued, never to the compute's (it was not computed).
  void RecordFailure(uint64_t total_ns, uint64_t queue_ns);
  // One model execution.
  void RecordExecution(int64_t batch_size, uint64_t input_ns, uint64_t infer_ns,
                       uint64_t output_ns);

  StatisticsSnapshot Snapshot() const;
  // The same at `now` (tests drive the window with it).
  StatisticsSnapshot SnapshotAt(Clock::time_point now) const;
  // RecordSuccess/RecordFailure's percentile samples at `now` (NaN: none), without the
  // counters (tests).
  void AddSampleAt(Clock::time_point now, float queue_us, float compute_us, float total_us);

 private:
  // One request's latencies; NaN where it has none (not queued, not computed).
  struct Sample {
    float queue_us, compute_us, total_us;
  };
  // The last minute is kept per second: every request counted, and a uniform sample of at most
  // kSamplesPerSecond of each second's requests (Algorithm R), each standing for count / samples
  // requests in the percentiles. Memory stays bounded at any rate.
  struct Second {
    int64_t second = 0;  // since the clock's epoch
    uint64_t count = 0;
    std::vector<Sample> samples;
  };
  void AddSample(Clock::time_point now, const Sample& sample);  // mutex_ held

  static constexpr size_t kSamplesPerSecond = 2048;
  static constexpr int64_t kWindowSeconds = 60;
  static constexpr size_t kReservoirSize = 8192;  // since-start reservoir (Algorithm R)

  mutable std::mutex mutex_;
  StatisticsSnapshot totals_;
  std::deque<Second> window_;
  std::vector<Sample> reservoir_;
  uint64_t seen_ = 0, seen_queued_ = 0, seen_computed_ = 0;
  float max_queue_us_ = 0, max_compute_us_ = 0, max_total_us_ = 0;
  std::mt19937_64 random_{12345};
};

}  // namespace convserve::serving
