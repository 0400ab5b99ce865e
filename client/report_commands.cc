// report and compare: convserve.v1 GetLayerReport / CompareKernels.
#include <cstdio>

#include "client/commands.h"
#include "client/report_render.h"

namespace convserve::client {

int RunReport(Client& client, const ReportOptions& options, std::ostream& out) {
  convserve::v1::LayerReportRequest request;
  request.set_model_name(options.model);
  request.set_model_version(options.version);
  request.set_batch_size(options.batch);
  request.set_iterations(options.iterations);
  request.set_precision(options.precision);
  auto report = client.GetLayerReport(request);
  if (!report.ok()) return Fail(report.status());
  SortLayers(&*report, options.sort);
  if (options.format == "json") {
    out << RenderReportJson(*report);
  } else if (options.format == "csv") {
    out << RenderReportCsv(*report);
  } else if (options.format == "chrome-trace") {
    out << RenderReportChromeTrace(*report);
  } else if (options.format == "svg") {
    out << RenderReportSvg(*report);
  } else {
    out << RenderReportTable(*report);
  }
  return kExitOk;
}

int RunCompare(Client& client, const CompareOptions& options, std::ostream& out) {
  convserve::v1::CompareKernelsRequest request;
  request.set_batch_size(options.batch);
  request.set_iterations(options.iterations);
  const int selectors =
      (!options.layer.empty()) + (options.index >= 0) + options.all + (!options.shape.empty());
  if (selectors > 1) return UsageError("use one of --layer, --index, --all, --shape");
  if (!options.shape.empty()) {
    int height = 0, width = 0;
    char x = 0;
    if (std::sscanf(options.shape.c_str(), "%d%c%d", &height, &x, &width) != 3 ||
        (x != 'x' && x != 'X') || height <= 0 || width <= 0) {
      return UsageError("--shape wants HxW, e.g. 56x56");
    }
    if (options.in_channels <= 0 || options.out_channels <= 0 || options.kernel <= 0) {
      return UsageError("--shape needs --in, --out and --kernel (positive)");
    }
    auto* shape = request.mutable_shape();
    shape->set_height(height);
    shape->set_width(width);
    shape->set_in_channels(options.in_channels);
    shape->set_out_channels(options.out_channels);
    shape->set_kernel(options.kernel);
    shape->set_stride(options.stride);
    request.set_model_name(options.model);
  } else {
    if (options.model.empty()) return UsageError("give a MODEL or --shape HxW --in --out --kernel");
    request.set_model_name(options.model);
    request.set_model_version(options.version);
    if (!options.layer.empty()) {
      request.set_layer_name(options.layer);
    } else if (options.index >= 0) {
      request.set_layer_index(options.index);
    } else {
      request.set_all_layers(true);
    }
  }
  auto response = client.CompareKernels(request);
  if (!response.ok()) return Fail(response.status());
  out << RenderComparison(*response, options.format);
  return kExitOk;
}

}  // namespace convserve::client
