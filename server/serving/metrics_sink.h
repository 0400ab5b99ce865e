// What the serving layer reports to a metrics exporter (Prometheus in metrics.h). Implementations
// must be thread-safe and must not block.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/repository/repository.h"

namespace convserve::serving {

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // A request finished (any outcome); durations in seconds (queue 0 if it never queued).
  virtual void RequestDone(const std::string& model, absl::StatusCode code, double queue_s,
                           double compute_s, double total_s) = 0;
  virtual void BatchExecuted(const std::string& model, int64_t batch_size) = 0;
  virtual void QueueDepthChanged(const std::string& model, const std::string& version,
                                 int64_t depth) = 0;
  // A scheduler of the model version started or stopped (after its last QueueDepthChanged): the
  // version's series go once no scheduler serves it (a reload of the same version overlaps).
  virtual void SchedulerStarted(const std::string& model, const std::string& version) = 0;
  virtual void SchedulerStopped(const std::string& model, const std::string& version) = 0;
  virtual void ModelLoadEvent(const repository::LoadEvent& event) = 0;
  // A request for a model or version that does not exist was answered `code` (NOT_FOUND). Not
  // per model: the names come from clients, and every new one would be a new series. (Requests
  // for a model of the repository that is not ready count in RequestDone.)
  virtual void UnservedRequest(absl::StatusCode code) = 0;
};

}  // namespace convserve::serving
