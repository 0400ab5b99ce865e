// Prometheus metrics served at http://<address>/metrics (prometheus-cpp): requests by model and
// outcome, latency histograms (queue, compute, total), batch sizes, queue depth, model load
// events and failures.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/serving/metrics_sink.h"

namespace convserve::serving {

class PrometheusMetrics : public MetricsSink {
 public:
  // Starts the HTTP exposer on `bind_address` ("0.0.0.0:8002"; port 0 picks a free port).
  static absl::StatusOr<std::unique_ptr<PrometheusMetrics>> Start(const std::string& bind_address);
  ~PrometheusMetrics() override;

  int port() const;

  void RequestDone(const std::string& model, absl::StatusCode code, double queue_s,
                   double compute_s, double total_s) override;
  void BatchExecuted(const std::string& model, int64_t batch_size) override;
  void QueueDepthChanged(const std::string& model, const std::string& version,
                         int64_t depth) override;
  void ModelLoadEvent(const repository::LoadEvent& event) override;
  void SchedulerStarted(const std::string& model, const std::string& version) override;
  void SchedulerStopped(const std::string& model, const std::string& version) override;
  void UnservedRequest(absl::StatusCode code) override;

  // A counter family whose values are kept elsewhere and read at each scrape: `read` returns one
  // (value of `label`, count) pair per series. `read` must stay valid while this object lives.
  using ScrapedSeries = std::vector<std::pair<std::string, double>>;
  void AddScrapedCounter(const std::string& name, const std::string& help, const std::string& label,
                         std::function<ScrapedSeries()> read);

 private:
  struct Impl;
  explicit PrometheusMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace convserve::serving
