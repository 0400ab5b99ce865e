#include <grpcpp/grpcpp.h>

#include <functional>

#include "proto/convserve.grpc.pb.h"
#include "server/api/async_rpc.h"
#include "server/api/services.h"
#include "server/api/status.h"
#include "server/engine/cost_model.h"
#include "server/serving/reports.h"
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

template <typename Dims, typename Field>
void CopyDims(const Dims& dims, Field* field) {
  for (int64_t d : dims) field->Add(d);
}

void FillLayerReport(const engine::PlanProfile& profile, convserve::v1::LayerReport* out) {
  out->set_peak_gflops(profile.peak_gflops);
  out->set_end_to_end_median_ms(profile.end_to_end_median_ms);
  out->set_sum_of_step_medians_ms(profile.sum_of_step_medians_ms);
  out->set_difference_percent(profile.difference_percent);
  out->set_iterations(profile.iterations);
  auto* totals = out->mutable_totals();
  totals->set_params(profile.totals.params);
  totals->set_dense_equivalent_params(profile.totals.dense_equivalent_params);
  totals->set_macs(profile.totals.macs);
  totals->set_flops(profile.totals.flops);
  totals->set_weight_bytes(profile.totals.weight_bytes);
  totals->set_activation_bytes(profile.totals.activation_bytes);
  int index = 0;
  for (const engine::StepProfile& step : profile.steps) {
    const engine::LayerCost& c = step.cost;
    auto* row = out->add_layers();
    row->set_index(index++);
    row->set_name(step.info.name);
    row->set_kind(step.info.kind);
    for (const auto& node : step.info.source_nodes) row->add_onnx_nodes(node);
    row->set_kernel(step.info.kernel);
    for (const auto& op : step.info.post_ops) row->add_post_ops(op);
    CopyDims(c.input_dims, row->mutable_input_shape());
    CopyDims(c.output_dims, row->mutable_output_shape());
    row->set_kernel_h(static_cast<int32_t>(c.kernel_h));
    row->set_kernel_w(static_cast<int32_t>(c.kernel_w));
    row->set_stride_h(static_cast<int32_t>(c.stride_h));
    row->set_stride_w(static_cast<int32_t>(c.stride_w));
    row->set_dilation_h(static_cast<int32_t>(c.dilation_h));
    row->set_dilation_w(static_cast<int32_t>(c.dilation_w));
    row->set_groups(static_cast<int32_t>(c.groups));
    row->set_conv_kind(engine::LayerKindName(c.kind));
    row->set_params(c.params);
    row->set_weight_params(c.weight_params);
    row->set_bias_params(c.bias_params);
    row->set_dense_equivalent_params(c.dense_equivalent_params);
    row->set_macs(c.macs);
    row->set_flops(c.flops);
    row->set_weight_bytes(c.weight_bytes);
    row->set_activation_bytes_read(c.activation_bytes_read);
    row->set_activation_bytes_written(c.activation_bytes_written);
    row->set_arithmetic_intensity(c.arithmetic_intensity);
    row->set_median_ms(step.median_ms);
    row->set_p90_ms(step.p90_ms);
    row->set_min_ms(step.min_ms);
    row->set_time_share(step.time_share);
    row->set_flops_share(step.flops_share);
    row->set_gflops(step.gflops);
    row->set_peak_percent(step.peak_percent);
    row->set_src_format(step.info.src_format);
    row->set_weights_format(step.info.weights_format);
    row->set_dst_format(step.info.dst_format);
  }
}

void FillComparison(const serving::LayerComparison& layer, convserve::v1::KernelComparison* out) {
  out->set_layer_name(layer.layer_name);
  CopyDims(layer.input_dims, out->mutable_input_shape());
  CopyDims(layer.output_dims, out->mutable_output_shape());
  for (const engine::DesignResult& d : layer.designs) {
    auto* row = out->add_designs();
    row->set_design(d.design);
    row->set_description(d.description);
    row->set_params(d.params);
    row->set_macs(d.macs);
    row->set_median_ms(d.median_ms);
    row->set_min_ms(d.min_ms);
    row->set_params_ratio(d.params_ratio);
    row->set_macs_ratio(d.macs_ratio);
    row->set_latency_ratio(d.latency_ratio);
    CopyDims(d.output_dims, row->mutable_output_shape());
    row->set_kernel(d.kernels);
  }
}

constexpr int kDefaultReportIterations = 50;

// A report's answer: a measurement cancelled by a graceful stop (at --exit-timeout-secs, or before
// it started) is UNAVAILABLE, as a request refused during the stop.
grpc::Status ReportStatus(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kCancelled) {
    return ToGrpcStatus(absl::UnavailableError(
        "server shutting down: the report was cancelled (it had not finished at the exit "
        "timeout)"));
  }
  return ToGrpcStatus(status);
}

class ConvServeService final : public convserve::v1::ConvServe::AsyncService {
 public:
  ConvServeService(serving::ServerCore* core, AsyncRpc& rpc)
      : core_(core), reports_(&core->reports()) {
    using S = convserve::v1::ConvServe::AsyncService;
    auto serve = [&](auto request, auto handler) {
      rpc.ServeUnary(this, request, std::bind_front(handler, this));
    };
    serve(&S::RequestGetLayerReport, &ConvServeService::GetLayerReport);
    serve(&S::RequestCompareKernels, &ConvServeService::CompareKernels);
    serve(&S::RequestGetModelStatistics, &ConvServeService::GetModelStatistics);
  }

 private:
  void GetLayerReport(grpc::ServerContext*, const convserve::v1::LayerReportRequest* request,
                      convserve::v1::LayerReport* response, Reply reply) {
    auto served = core_->Get(request->model_name(), request->model_version());
    if (!served.ok()) {
      reply.Finish(ToGrpcStatus(served.status()));
      return;
    }
    auto model = served->model;
    const std::string served_precision =
        model->config.precision().empty() ? "fp32" : model->config.precision();
    if (!request->precision().empty() && request->precision() != served_precision) {
      reply.Finish(ToGrpcStatus(absl::InvalidArgumentError("model '" + model->name +
                                                           "' is served in " + served_precision +
                                                           ", not " + request->precision())));
      return;
    }
    const int64_t batch = request->batch_size() > 0 ? request->batch_size() : 1;
    const int iterations =
        request->iterations() != 0 ? request->iterations() : kDefaultReportIterations;
    absl::Status valid = serving::ValidateReportRequest(*model, batch, iterations);
    if (!valid.ok()) {
      reply.Finish(ToGrpcStatus(valid));
      return;
    }
    response->set_model_name(model->name);
    response->set_model_version(model->version_string());
    response->set_batch_size(static_cast<int32_t>(batch));
    response->set_precision(served_precision);
    absl::Status posted = reports_->Post(
        [model, batch, iterations, response, reply](int threads, const std::atomic<bool>* cancel) {
          auto profile = serving::ProfileModel(*model, batch, iterations, threads, cancel);
          if (profile.ok()) FillLayerReport(*profile, response);
          reply.Finish(ReportStatus(profile.status()));
        },
        [reply] { reply.Finish(ReportStatus(absl::CancelledError(""))); });
    if (!posted.ok()) reply.Finish(ToGrpcStatus(posted));
  }

  void CompareKernels(grpc::ServerContext*, const convserve::v1::CompareKernelsRequest* request,
                      convserve::v1::CompareKernelsResponse* response, Reply reply) {
    const int iterations =
        request->iterations() != 0 ? request->iterations() : kDefaultReportIterations;
    const int64_t batch = request->batch_size() > 0 ? request->batch_size() : 1;
    serving::ReportRunner::JobFn job;
    if (request->has_shape()) {
      const auto& s = request->shape();
      engine::ConvShape shape;
      shape.batch = batch;
      shape.height = s.height();
      shape.width = s.width();
      shape.in_channels = s.in_channels();
      shape.out_channels = s.out_channels();
      shape.kernel = s.kernel() > 0 ? s.kernel() : 3;
      shape.stride = s.stride() > 0 ? s.stride() : 1;
      job = [shape, iterations, response, reply](int threads, const std::atomic<bool>* cancel) {
        auto layer = serving::CompareFreeShape(shape, iterations, threads, cancel);
        if (layer.ok()) FillComparison(*layer, response->add_comparisons());
        reply.Finish(ReportStatus(layer.status()));
      };
    } else {
      auto served = core_->Get(request->model_name(), request->model_version());
      if (!served.ok()) {
        reply.Finish(ToGrpcStatus(served.status()));
        return;
      }
      serving::LayerSelector selector;
      if (request->has_layer_name()) {
        selector.name = request->layer_name();
      } else if (request->has_layer_index()) {
        selector.index = request->layer_index();
      } else {
        selector.all = true;  // no selector: every convolution
      }
      absl::Status valid = serving::ValidateReportRequest(*served->model, batch, iterations);
      if (!valid.ok()) {
        reply.Finish(ToGrpcStatus(valid));
        return;
      }
      auto model = served->model;
      job = [model, selector, batch, iterations, response, reply](int threads,
                                                                  const std::atomic<bool>* cancel) {
        auto layers =
            serving::CompareModelLayers(*model, selector, batch, iterations, threads, cancel);
        if (layers.ok()) {
          for (const auto& layer : *layers) FillComparison(layer, response->add_comparisons());
        }
        reply.Finish(ReportStatus(layers.status()));
      };
    }
    absl::Status posted = reports_->Post(
        std::move(job), [reply] { reply.Finish(ReportStatus(absl::CancelledError(""))); });
    if (!posted.ok()) reply.Finish(ToGrpcStatus(posted));
  }

  void GetModelStatistics(grpc::ServerContext*,
                          const convserve::v1::ModelStatisticsRequest* request,
                          convserve::v1::ModelStatisticsResponse* response, Reply reply) {
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
      reply.Finish(ToGrpcStatus(status));
      return;
    }
    for (const auto& served : models) {
      const serving::StatisticsSnapshot s = served.scheduler->statistics().Snapshot();
      auto* stats = response->add_model_stats();
      stats->set_name(served.model->name);
      stats->set_version(served.model->version_string());
      FillWindow(s.last_minute, stats->mutable_last_minute());
      FillWindow(s.since_start, stats->mutable_since_start());
    }
    reply.Finish(grpc::Status::OK);
  }

  serving::ServerCore* core_;
  serving::ReportRunner* reports_;  // the core's
};

}  // namespace

std::unique_ptr<grpc::Service> CreateConvServeService(serving::ServerCore* core, AsyncRpc& rpc) {
  return std::make_unique<ConvServeService>(core, rpc);
}

}  // namespace convserve::api
