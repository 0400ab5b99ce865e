#include "server/serving/statistics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

namespace convserve::serving {
namespace {

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// Percentiles of weighted values (a value standing for `weight` requests); NaN values are
// absent. `count`: the requests the values stand for.
Percentiles Summarize(std::vector<std::pair<float, double>> values, uint64_t count,
                      double exact_max) {
  std::erase_if(values, [](const auto& v) { return std::isnan(v.first); });
  Percentiles p;
  p.count = count;
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  double total = 0;
  for (const auto& v : values) total += v.second;
  auto at = [&](double q) {
    // The smallest value whose cumulative weight reaches q of the total.
    double seen = 0;
    for (const auto& [value, weight] : values) {
      seen += weight;
      if (seen >= q * total) return static_cast<double>(value);
    }
    return static_cast<double>(values.back().first);
  };
  p.p50_us = at(0.50);
  p.p90_us = at(0.90);
  p.p99_us = at(0.99);
  p.max_us = exact_max >= 0 ? exact_max : values.back().first;
  return p;
}

int64_t SecondOf(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

constexpr float kNone = std::numeric_limits<float>::quiet_NaN();

}  // namespace

void ModelStatistics::AddSample(Clock::time_point now, const Sample& sample) {
  const int64_t second = SecondOf(now);
  if (window_.empty() || window_.back().second < second) window_.push_back({second, 0, {}});
  while (window_.front().second <= second - kWindowSeconds) window_.pop_front();
  Second& bucket = window_.back();
  ++bucket.count;
  if (bucket.samples.size() < kSamplesPerSecond) {
    bucket.samples.push_back(sample);
  } else {
    const uint64_t slot = random_() % bucket.count;
    if (slot < kSamplesPerSecond) bucket.samples[slot] = sample;
  }
  ++seen_;
  if (!std::isnan(sample.queue_us)) ++seen_queued_;
  if (!std::isnan(sample.compute_us)) ++seen_computed_;
  if (reservoir_.size() < kReservoirSize) {
    reservoir_.push_back(sample);
  } else {
    const uint64_t slot = random_() % seen_;
    if (slot < kReservoirSize) reservoir_[slot] = sample;
  }
  // std::max(NaN, m) is m: an absent value keeps the running maximum.
  max_queue_us_ = std::max(sample.queue_us, max_queue_us_);
  max_compute_us_ = std::max(sample.compute_us, max_compute_us_);
  max_total_us_ = std::max(sample.total_us, max_total_us_);
}

void ModelStatistics::AddSampleAt(Clock::time_point now, float queue_us, float compute_us,
                                  float total_us) {
  std::lock_guard<std::mutex> lock(mutex_);
  AddSample(now, {queue_us, compute_us, total_us});
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
  AddSample(Clock::now(), {t.queue_ns / 1e3f,
                           (t.compute_input_ns + t.compute_infer_ns + t.compute_output_ns) / 1e3f,
                           t.total_ns / 1e3f});
}

void ModelStatistics::RecordFailure(uint64_t total_ns, uint64_t queue_ns) {
  std::lock_guard<std::mutex> lock(mutex_);
  totals_.fail.Add(total_ns);
  AddSample(Clock::now(), {queue_ns > 0 ? queue_ns / 1e3f : kNone, kNone, total_ns / 1e3f});
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

StatisticsSnapshot ModelStatistics::Snapshot() const { return SnapshotAt(Clock::now()); }

StatisticsSnapshot ModelStatistics::SnapshotAt(Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mutex_);
  StatisticsSnapshot snapshot = totals_;
  const int64_t second = SecondOf(now);
  std::vector<std::pair<float, double>> queue, compute, total;
  uint64_t requests = 0;
  double queued = 0, computed = 0;
  for (const Second& bucket : window_) {
    if (bucket.second <= second - kWindowSeconds || bucket.second > second) continue;
    requests += bucket.count;
    const double weight =
        static_cast<double>(bucket.count) / static_cast<double>(bucket.samples.size());
    for (const Sample& s : bucket.samples) {
      queue.emplace_back(s.queue_us, weight);
      compute.emplace_back(s.compute_us, weight);
      total.emplace_back(s.total_us, weight);
      if (!std::isnan(s.queue_us)) queued += weight;
      if (!std::isnan(s.compute_us)) computed += weight;
    }
  }
  // Exact while every request of a second is sampled, else estimated from its sample.
  snapshot.last_minute.request_count = requests;
  snapshot.last_minute.queue =
      Summarize(std::move(queue), static_cast<uint64_t>(std::llround(queued)), -1);
  snapshot.last_minute.compute =
      Summarize(std::move(compute), static_cast<uint64_t>(std::llround(computed)), -1);
  snapshot.last_minute.total = Summarize(std::move(total), requests, -1);
  std::vector<std::pair<float, double>> queue_all, compute_all, total_all;
  for (const Sample& s : reservoir_) {
    queue_all.emplace_back(s.queue_us, 1.0);
    compute_all.emplace_back(s.compute_us, 1.0);
    total_all.emplace_back(s.total_us, 1.0);
  }
  snapshot.since_start.request_count = seen_;
  snapshot.since_start.queue = Summarize(std::move(queue_all), seen_queued_, max_queue_us_);
  snapshot.since_start.compute = Summarize(std::move(compute_all), seen_computed_, max_compute_us_);
  snapshot.since_start.total = Summarize(std::move(total_all), seen_, max_total_us_);
  // No value at all (nothing queued or computed yet): all zero, as the proto says.
  if (seen_queued_ == 0) snapshot.since_start.queue = Percentiles{};
  if (seen_computed_ == 0) snapshot.since_start.compute = Percentiles{};
  return snapshot;
}

}  // namespace convserve::serving
