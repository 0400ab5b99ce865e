#include "server/serving/statistics.h"

#include <algorithm>
#include <chrono>

namespace convserve::serving {
namespace {

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

Percentiles Summarize(std::vector<float> values, double exact_max) {
  Percentiles p;
  p.count = values.size();
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const size_t index = static_cast<size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
    return static_cast<double>(values[std::min(index, values.size() - 1)]);
  };
  p.p50_us = at(0.50);
  p.p90_us = at(0.90);
  p.p99_us = at(0.99);
  p.max_us = exact_max >= 0 ? exact_max : values.back();
  return p;
}

}  // namespace

void ModelStatistics::AddSample(const Sample& sample) {
  window_.push_back(sample);
  if (window_.size() > kWindowMax) {
    window_.pop_front();
    ++window_count_extra_;
  }
  ++seen_;
  if (reservoir_.size() < kReservoirSize) {
    reservoir_.push_back(sample);
  } else {
    const uint64_t slot = random_() % seen_;
    if (slot < kReservoirSize) reservoir_[slot] = sample;
  }
  max_queue_us_ = std::max(max_queue_us_, sample.queue_us);
  max_compute_us_ = std::max(max_compute_us_, sample.compute_us);
  max_total_us_ = std::max(max_total_us_, sample.total_us);
}

void ModelStatistics::RecordSuccess(const RequestTimings& t, int64_t batch_size) {
  std::lock_guard<std::mutex> lock(mutex_);
  totals_.last_inference_ms = NowMs();
  totals_.inference_count += static_cast<uint64_t>(batch_size);
  totals_.success.Add(t.total_ns);
  totals_.queue.Add(t.queue_ns);
  totals_.compute_input.Add(t.compute_input_ns);
  totals_.compute_infer.Add(t.compute_infer_ns);
  totals_.compute_output.Add(t.compute_output_ns);
  AddSample({Clock::now(), t.queue_ns / 1e3f,
             (t.compute_input_ns + t.compute_infer_ns + t.compute_output_ns) / 1e3f,
             t.total_ns / 1e3f});
}

void ModelStatistics::RecordFailure(uint64_t total_ns, uint64_t queue_ns) {
  std::lock_guard<std::mutex> lock(mutex_);
  totals_.fail.Add(total_ns);
  AddSample({Clock::now(), queue_ns / 1e3f, 0.0f, total_ns / 1e3f});
}

void ModelStatistics::RecordExecution(int64_t batch_size, uint64_t input_ns, uint64_t infer_ns,
                                      uint64_t output_ns) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++totals_.execution_count;
  BatchDurations& batch = totals_.batch_stats[static_cast<uint64_t>(batch_size)];
  batch.compute_input.Add(input_ns);
  batch.compute_infer.Add(infer_ns);
  batch.compute_output.Add(output_ns);
}

StatisticsSnapshot ModelStatistics::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  StatisticsSnapshot snapshot = totals_;
  const Clock::time_point since = Clock::now() - std::chrono::minutes(1);
  std::vector<float> queue, compute, total;
  for (auto it = window_.rbegin(); it != window_.rend() && it->at >= since; ++it) {
    queue.push_back(it->queue_us);
    compute.push_back(it->compute_us);
    total.push_back(it->total_us);
  }
  snapshot.last_minute.request_count = queue.size();
  snapshot.last_minute.queue = Summarize(queue, -1);
  snapshot.last_minute.compute = Summarize(compute, -1);
  snapshot.last_minute.total = Summarize(total, -1);
  queue.clear();
  compute.clear();
  total.clear();
  for (const Sample& s : reservoir_) {
    queue.push_back(s.queue_us);
    compute.push_back(s.compute_us);
    total.push_back(s.total_us);
  }
  snapshot.since_start.request_count = seen_;
  snapshot.since_start.queue = Summarize(queue, max_queue_us_);
  snapshot.since_start.compute = Summarize(compute, max_compute_us_);
  snapshot.since_start.total = Summarize(total, max_total_us_);
  snapshot.since_start.queue.count = snapshot.since_start.compute.count =
      snapshot.since_start.total.count = seen_;
  return snapshot;
}

}  // namespace convserve::serving
