#include <grpcpp/grpcpp.h>

#include "proto/convserve.grpc.pb.h"
#include "server/api/services.h"
#include "server/api/status.h"
#include "server/serving/server_core.h"

namespace convserve::api {
namespace {

void FillPercentiles(const serving::Percentiles& p, convserve::v1::LatencyPercentiles* out) {
  out->set_count(p.count);
  out->set_p50_us(p.p50_us);
  out->set_p90_us(p.p90_us);
  out->set_p99_us(p.p99_us);
  out->set_max_us(p.max_us);
}

void FillWindow(const serving::WindowSummary& w, convserve::v1::WindowStatistics* out) {
  out->set_request_count(w.request_count);
  FillPercentiles(w.queue, out->mutable_queue());
  FillPercentiles(w.compute, out->mutable_compute());
  FillPercentiles(w.total, out->mutable_total());
}

class ConvServeService final : public convserve::v1::ConvServe::CallbackService {
 public:
  explicit ConvServeService(serving::ServerCore* core) : core_(core) {}

  grpc::ServerUnaryReactor* GetModelStatistics(
      grpc::CallbackServerContext* context, const convserve::v1::ModelStatisticsRequest* request,
      convserve::v1::ModelStatisticsResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    std::vector<serving::ServedModel> models;
    for (auto& served : core_->Served()) {
      if (!request->name().empty() && served.model->name != request->name()) continue;
      if (!request->version().empty() && served.model->version_string() != request->version()) {
        continue;
      }
      models.push_back(served);
    }
    if (models.empty() && !request->name().empty()) {
      absl::Status status = core_->Get(request->name(), request->version()).status();
      if (status.ok()) status = absl::NotFoundError("no statistics");
      reactor->Finish(ToGrpcStatus(status));
      return reactor;
    }
    for (const auto& served : models) {
      const serving::StatisticsSnapshot s = served.scheduler->statistics().Snapshot();
      auto* stats = response->add_model_stats();
      stats->set_name(served.model->name);
      stats->set_version(served.model->version_string());
      FillWindow(s.last_minute, stats->mutable_last_minute());
      FillWindow(s.since_start, stats->mutable_since_start());
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  serving::ServerCore* core_;
};

}  // namespace

std::unique_ptr<grpc::Service> CreateConvServeService(serving::ServerCore* core) {
  return std::make_unique<ConvServeService>(core);
}

}  // namespace convserve::api
