#include "server/serving/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace convserve::serving {
namespace {

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3,   2.5e-3, 5e-3, 10e-3,
          25e-3, 50e-3,  100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0};
}

class ScrapedCounter final : public prometheus::Collectable {
 public:
  ScrapedCounter(std::string name, std::string help, std::string label,
                 std::function<PrometheusMetrics::ScrapedSeries()> read)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_(std::move(label)),
        read_(std::move(read)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family;
    family.name = name_;
    family.help = help_;
    family.type = prometheus::MetricType::Counter;
    for (const auto& [value, count] : read_()) {
      prometheus::ClientMetric metric;
      metric.label.push_back({label_, value});
      metric.counter.value = count;
      family.metric.push_back(std::move(metric));
    }
    return {std::move(family)};
  }

 private:
  const std::string name_, help_, label_;
  const std::function<PrometheusMetrics::ScrapedSeries()> read_;
};

}  // namespace

struct PrometheusMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Histogram>* queue = nullptr;
  prometheus::Family<prometheus::Histogram>* compute = nullptr;
  prometheus::Family<prometheus::Histogram>* total = nullptr;
  prometheus::Family<prometheus::Histogram>* batch = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_depth = nullptr;
  prometheus::Family<prometheus::Counter>* loads = nullptr;
  std::vector<std::shared_ptr<ScrapedCounter>> scraped;
};

PrometheusMetrics::PrometheusMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrometheusMetrics::~PrometheusMetrics() = default;

absl::StatusOr<std::unique_ptr<PrometheusMetrics>> PrometheusMetrics::Start(
    const std::string& bind_address) {
  auto impl = std::make_unique<Impl>();
  auto& registry = *impl->registry;
  impl->requests = &prometheus::BuildCounter()
                        .Name("convserve_requests_total")
                        .Help("Inference requests by model and outcome (gRPC status code)")
                        .Register(registry);
  impl->queue = &prometheus::BuildHistogram()
                     .Name("convserve_queue_seconds")
                     .Help("Time requests waited in the model's queue")
                     .Register(registry);
  impl->compute = &prometheus::BuildHistogram()
                       .Name("convserve_compute_seconds")
                       .Help("Compute time of the batch a request ran in")
                       .Register(registry);
  impl->total = &prometheus::BuildHistogram()
                     .Name("convserve_request_seconds")
                     .Help("Arrival to response, as the server saw it")
                     .Register(registry);
  impl->batch = &prometheus::BuildHistogram()
                     .Name("convserve_batch_size")
                     .Help("Batch size of model executions")
                     .Register(registry);
  impl->queue_depth = &prometheus::BuildGauge()
                           .Name("convserve_queue_depth")
                           .Help("Requests waiting in the model's queue")
                           .Register(registry);
  impl->loads = &prometheus::BuildCounter()
                     .Name("convserve_model_load_events_total")
                     .Help("Model load events by model and outcome (loaded, failed, unloaded)")
                     .Register(registry);
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(bind_address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", bind_address, ": ", e.what()));
  }
  impl->exposer->RegisterCollectable(impl->registry);
  return std::unique_ptr<PrometheusMetrics>(new PrometheusMetrics(std::move(impl)));
}

int PrometheusMetrics::port() const {
  const auto ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void PrometheusMetrics::RequestDone(const std::string& model, absl::StatusCode code, double queue_s,
                                    double compute_s, double total_s) {
  impl_->requests->Add({{"model", model}, {"outcome", absl::StatusCodeToString(code)}}).Increment();
  impl_->queue->Add({{"model", model}}, LatencyBuckets()).Observe(queue_s);
  if (code == absl::StatusCode::kOk) {
    impl_->compute->Add({{"model", model}}, LatencyBuckets()).Observe(compute_s);
  }
  impl_->total->Add({{"model", model}}, LatencyBuckets()).Observe(total_s);
}

void PrometheusMetrics::BatchExecuted(const std::string& model, int64_t batch_size) {
  impl_->batch
      ->Add({{"model", model}},
            prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256})
      .Observe(static_cast<double>(batch_size));
}

void PrometheusMetrics::QueueDepthChanged(const std::string& model, const std::string& version,
                                          int64_t depth) {
  impl_->queue_depth->Add({{"model", model}, {"version", version}}).Set(static_cast<double>(depth));
}

void PrometheusMetrics::AddScrapedCounter(const std::string& name, const std::string& help,
                                          const std::string& label,
                                          std::function<ScrapedSeries()> read) {
  auto counter = std::make_shared<ScrapedCounter>(name, help, label, std::move(read));
  impl_->exposer->RegisterCollectable(counter);
  impl_->scraped.push_back(std::move(counter));
}

void PrometheusMetrics::ModelLoadEvent(const repository::LoadEvent& event) {
  const char* outcome = event.kind == repository::LoadEvent::Kind::kLoaded   ? "loaded"
                        : event.kind == repository::LoadEvent::Kind::kFailed ? "failed"
                                                                             : "unloaded";
  impl_->loads->Add({{"model", event.model}, {"outcome", outcome}}).Increment();
}

}  // namespace convserve::serving
