#include "server/serving/metrics.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

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

// Opens and closes a TCP connection to `bind_address` ("host:port" as the exposer was given it;
// a wildcard host means this machine), ignoring failures.
void Knock(const std::string& bind_address, int port) {
  std::string host = bind_address.substr(0, bind_address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd >= 0) {
    connect(fd, found->ai_addr, found->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(found);
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
  std::string bind_address;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Histogram>* queue = nullptr;
  prometheus::Family<prometheus::Histogram>* compute = nullptr;
  prometheus::Family<prometheus::Histogram>* total = nullptr;
  prometheus::Family<prometheus::Histogram>* batch = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_depth = nullptr;
  prometheus::Family<prometheus::Counter>* loads = nullptr;
  prometheus::Family<prometheus::Counter>* unserved = nullptr;
  std::vector<std::shared_ptr<ScrapedCounter>> scraped;

  // The series of one model, looked up once: prometheus-cpp's Family::Add builds a new metric
  // (a histogram with all its buckets) on every call before it finds the existing one, about
  // 1.2 us per request for the five series a request touches.
  struct ModelSeries {
    prometheus::Histogram* queue = nullptr;
    prometheus::Histogram* compute = nullptr;
    prometheus::Histogram* total = nullptr;
    prometheus::Histogram* batch = nullptr;
    std::map<absl::StatusCode, prometheus::Counter*> requests;  // by outcome
    struct Version {
      prometheus::Gauge* queue_depth = nullptr;
      int schedulers = 0;  // serving it now
    };
    std::map<std::string, Version> versions;
  };
  std::mutex series_mutex;
  std::map<std::string, ModelSeries, std::less<>> series;  // by model; never erased

  // Called with series_mutex held.
  ModelSeries& SeriesOf(const std::string& model) {
    auto it = series.find(model);
    if (it != series.end()) return it->second;
    ModelSeries& s = series[model];
    s.queue = &queue->Add({{"model", model}}, LatencyBuckets());
    s.compute = &compute->Add({{"model", model}}, LatencyBuckets());
    s.total = &total->Add({{"model", model}}, LatencyBuckets());
    s.batch = &batch->Add({{"model", model}}, prometheus::Histogram::BucketBoundaries{
                                                  1, 2, 4, 8, 16, 32, 64, 128, 256});
    return s;
  }
};

PrometheusMetrics::PrometheusMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PrometheusMetrics::~PrometheusMetrics() {
  if (impl_ == nullptr || impl_->exposer == nullptr) return;
  // The exposer's HTTP server (civetweb) sees that it must stop only when its listening thread's
  // poll() returns, which without connections it does every 2 s: the exit of a server waited
  // 0.9-1.9 s for it. A connection to the port wakes it, so knock until the stop is done.
  const int port = this->port();
  std::mutex mutex;
  std::condition_variable cv;
  bool stopped = false;
  std::thread stopper([&] {
    impl_->exposer.reset();
    std::lock_guard<std::mutex> lock(mutex);
    stopped = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mutex);
  while (!cv.wait_for(lock, std::chrono::milliseconds(10), [&] { return stopped; })) {
    lock.unlock();
    if (port > 0) Knock(impl_->bind_address, port);
    lock.lock();
  }
  lock.unlock();
  stopper.join();
}

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
  impl->unserved = &prometheus::BuildCounter()
                        .Name("convserve_unserved_requests_total")
                        .Help(
                            "Inference requests for a model or version that does not exist "
                            "(NOT_FOUND), by outcome; not per model, as the names come from "
                            "clients")
                        .Register(registry);
  impl->bind_address = bind_address;
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
  prometheus::Counter* requests;
  Impl::ModelSeries* series;
  {
    std::lock_guard<std::mutex> lock(impl_->series_mutex);
    series = &impl_->SeriesOf(model);
    prometheus::Counter*& counter = series->requests[code];
    if (counter == nullptr) {
      counter =
          &impl_->requests->Add({{"model", model}, {"outcome", absl::StatusCodeToString(code)}});
    }
    requests = counter;
  }
  // The series live as long as their families; their updates are thread-safe.
  requests->Increment();
  series->queue->Observe(queue_s);
  if (code == absl::StatusCode::kOk) series->compute->Observe(compute_s);
  series->total->Observe(total_s);
}

void PrometheusMetrics::BatchExecuted(const std::string& model, int64_t batch_size) {
  prometheus::Histogram* batch;
  {
    std::lock_guard<std::mutex> lock(impl_->series_mutex);
    batch = impl_->SeriesOf(model).batch;
  }
  batch->Observe(static_cast<double>(batch_size));
}

void PrometheusMetrics::QueueDepthChanged(const std::string& model, const std::string& version,
                                          int64_t depth) {
  // Set under the lock: SchedulerStopped may remove the gauge.
  std::lock_guard<std::mutex> lock(impl_->series_mutex);
  prometheus::Gauge*& gauge = impl_->SeriesOf(model).versions[version].queue_depth;
  if (gauge == nullptr) gauge = &impl_->queue_depth->Add({{"model", model}, {"version", version}});
  gauge->Set(static_cast<double>(depth));
}

void PrometheusMetrics::SchedulerStarted(const std::string& model, const std::string& version) {
  std::lock_guard<std::mutex> lock(impl_->series_mutex);
  ++impl_->SeriesOf(model).versions[version].schedulers;
}

void PrometheusMetrics::SchedulerStopped(const std::string& model, const std::string& version) {
  std::lock_guard<std::mutex> lock(impl_->series_mutex);
  auto& versions = impl_->SeriesOf(model).versions;
  auto it = versions.find(version);
  if (it == versions.end() || --it->second.schedulers > 0) return;
  // No longer served: its queue depth is no series of the present.
  if (it->second.queue_depth != nullptr) impl_->queue_depth->Remove(it->second.queue_depth);
  versions.erase(it);
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

void PrometheusMetrics::UnservedRequest(absl::StatusCode code) {
  impl_->unserved->Add({{"outcome", absl::StatusCodeToString(code)}}).Increment();
}

}  // namespace convserve::serving
