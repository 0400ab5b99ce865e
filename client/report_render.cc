#include "client/report_render.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/output.h"

namespace convserve::client {
namespace {

std::vector<int64_t> Dims(const google::protobuf::RepeatedField<int64_t>& dims) {
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::string Percent(double share) { return FormatDouble(share * 100.0, 1) + "%"; }

}  // namespace

void SortLayers(convserve::v1::LayerReport* report, const std::string& sort) {
  auto* layers = report->mutable_layers();
  auto by = [&](auto key) {
    std::stable_sort(layers->begin(), layers->end(),
                     [&](const auto& a, const auto& b) { return key(a) > key(b); });
  };
  if (sort == "time") by([](const convserve::v1::LayerRow& r) { return r.median_ms(); });
  if (sort == "flops") by([](const convserve::v1::LayerRow& r) { return r.flops(); });
  if (sort == "params") by([](const convserve::v1::LayerRow& r) { return r.params(); });
}

std::string KernelShape(const convserve::v1::LayerRow& row) {
  if (row.kernel_h() <= 0 && row.kernel_w() <= 0) return "";
  std::string out = absl::StrCat(row.kernel_h(), "x", row.kernel_w());
  if (row.stride_h() > 0) {
    absl::StrAppend(&out, " s", row.stride_h());
    if (row.stride_w() != row.stride_h()) absl::StrAppend(&out, "x", row.stride_w());
  }
  if (row.groups() > 1) absl::StrAppend(&out, " g", row.groups());
  if (row.dilation_h() > 1 || row.dilation_w() > 1) absl::StrAppend(&out, " d", row.dilation_h());
  return out;
}

std::string Bar(double share, int width, char fill) {
  if (!std::isfinite(share)) share = 0;
  const int n = std::clamp(static_cast<int>(std::lround(share * width)), 0, width);
  return std::string(n, fill) + std::string(width - n, ' ');
}

std::string RenderReportTable(const convserve::v1::LayerReport& report) {
  const auto& t = report.totals();
  std::string out =
      absl::StrCat("model ", report.model_name(), " version ", report.model_version(), ", batch ",
                   report.batch_size(), ", ", report.iterations(), " iterations, ",
                   report.precision().empty() ? "fp32" : report.precision(), ", peak ",
                   FormatDouble(report.peak_gflops(), 1), " GFLOP/s\n");
  absl::StrAppend(&out, "end-to-end median ", FormatDouble(report.end_to_end_median_ms(), 3),
                  " ms, sum of layer medians ", FormatDouble(report.sum_of_step_medians_ms(), 3),
                  " ms (", FormatDouble(report.difference_percent(), 1), "% difference)\n");
  absl::StrAppend(&out, "totals: params ", t.params(), " (dense equivalent ",
                  t.dense_equivalent_params(), "), MACs ", t.macs(), ", FLOPs ", t.flops(),
                  ", weights ", t.weight_bytes(), " B, activations ", t.activation_bytes(),
                  " B\n\n");
  constexpr int kBar = 20;
  Table table({"#", "name", "kind", "kernel", "params", "macs", "median_ms", "gflop/s", "%peak",
               "impl", "time% | flops%"});
  for (const auto& row : report.layers()) {
    table.AddRow(
        {Int(row.index()), Text(row.name()), Text(row.kind()), Text(KernelShape(row)),
         Uint(row.params()), Uint(row.macs()), Num(row.median_ms(), 4), Num(row.gflops(), 2),
         Num(row.peak_percent(), 1), Text(row.kernel()),
         Text(absl::StrCat(Bar(row.time_share(), kBar, '#'), " ", Percent(row.time_share()), " | ",
                           Bar(row.flops_share(), kBar, '='), " ", Percent(row.flops_share())))});
  }
  return out + table.RenderText();
}

std::string RenderReportCsv(const convserve::v1::LayerReport& report) {
  Table table({"index",
               "name",
               "kind",
               "kernel_shape",
               "conv_kind",
               "input_shape",
               "output_shape",
               "params",
               "dense_equivalent_params",
               "macs",
               "flops",
               "weight_bytes",
               "activation_bytes_read",
               "activation_bytes_written",
               "median_ms",
               "p90_ms",
               "min_ms",
               "time_share",
               "flops_share",
               "gflops",
               "peak_percent",
               "impl",
               "post_ops",
               "src_format",
               "weights_format",
               "dst_format"});
  for (const auto& row : report.layers()) {
    const std::vector<std::string> post_ops(row.post_ops().begin(), row.post_ops().end());
    table.AddRow({Int(row.index()),
                  Text(row.name()),
                  Text(row.kind()),
                  Text(KernelShape(row)),
                  Text(row.conv_kind()),
                  Text(FormatShape(Dims(row.input_shape()))),
                  Text(FormatShape(Dims(row.output_shape()))),
                  Uint(row.params()),
                  Uint(row.dense_equivalent_params()),
                  Uint(row.macs()),
                  Uint(row.flops()),
                  Uint(row.weight_bytes()),
                  Uint(row.activation_bytes_read()),
                  Uint(row.activation_bytes_written()),
                  Num(row.median_ms(), 6),
                  Num(row.p90_ms(), 6),
                  Num(row.min_ms(), 6),
                  Num(row.time_share(), 6),
                  Num(row.flops_share(), 6),
                  Num(row.gflops(), 3),
                  Num(row.peak_percent(), 3),
                  Text(row.kernel()),
                  Text(absl::StrJoin(post_ops, "+")),
                  Text(row.src_format()),
                  Text(row.weights_format()),
                  Text(row.dst_format())});
  }
  return table.RenderCsv();
}

std::string RenderReportJson(const convserve::v1::LayerReport& report) {
  return ProtoToJson(report);
}

std::string RenderReportChromeTrace(const convserve::v1::LayerReport& report) {
  std::vector<const convserve::v1::LayerRow*> rows;
  for (const auto& row : report.layers()) rows.push_back(&row);
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto* a, const auto* b) { return a->index() < b->index(); });
  std::string out = "{\"traceEvents\": [\n";
  absl::StrAppend(&out,
                  "  {\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": 1, "
                  "\"args\": {\"name\": ",
                  JsonString(absl::StrCat("convserve ", report.model_name(), " v",
                                          report.model_version(), " batch ", report.batch_size())),
                  "}}");
  double ts_us = 0;
  for (const auto* row : rows) {
    const double dur_us = std::max(0.0, row->median_ms() * 1000.0);
    absl::StrAppend(
        &out, ",\n  {\"name\": ", JsonString(row->name()), ", \"cat\": ", JsonString(row->kind()),
        ", \"ph\": \"X\", \"ts\": ", FormatDouble(ts_us, 3), ", \"dur\": ", FormatDouble(dur_us, 3),
        ", \"pid\": 1, \"tid\": 1, \"args\": {\"index\": ", row->index(),
        ", \"kernel\": ", JsonString(row->kernel()), ", \"shape\": ", JsonString(KernelShape(*row)),
        ", \"params\": ", row->params(), ", \"macs\": ", row->macs(), ", \"flops\": ", row->flops(),
        ", \"gflops\": ", FormatDouble(row->gflops(), 3),
        ", \"time_share\": ", FormatDouble(row->time_share(), 6),
        ", \"flops_share\": ", FormatDouble(row->flops_share(), 6), "}}");
    ts_us += dur_us;
  }
  absl::StrAppend(
      &out, "\n], \"displayTimeUnit\": \"ms\", \"otherData\": {\"model\": ",
      JsonString(report.model_name()), ", \"version\": ", JsonString(report.model_version()),
      ", \"end_to_end_median_ms\": ", FormatDouble(report.end_to_end_median_ms(), 6), "}}\n");
  return out;
}

std::string RenderReportSvg(const convserve::v1::LayerReport& report) {
  constexpr int kLabelWidth = 260, kBarWidth = 480, kRowHeight = 30, kTop = 60, kLeft = 10;
  const int rows = report.layers_size();
  const int width = kLeft + kLabelWidth + kBarWidth + 90;
  const int height = kTop + rows * kRowHeight + 20;
  double max_share = 0;
  for (const auto& row : report.layers()) {
    max_share = std::max({max_share, row.time_share(), row.flops_share()});
  }
  if (!(max_share > 0)) max_share = 1;
  std::string out = absl::StrCat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
      "width=\"",
      width, "\" height=\"", height, "\" viewBox=\"0 0 ", width, " ", height,
      "\" font-family=\"sans-serif\" font-size=\"12\">\n");
  absl::StrAppend(&out, "  <title>", XmlEscape(report.model_name()),
                  " per-layer time and FLOPs share</title>\n");
  absl::StrAppend(&out, "  <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
  absl::StrAppend(&out, "  <text x=\"", kLeft, "\" y=\"20\" font-size=\"14\" font-weight=\"bold\">",
                  XmlEscape(absl::StrCat(report.model_name(), " v", report.model_version(),
                                         ", batch ", report.batch_size(),
                                         ": share of time vs "
                                         "share of FLOPs per layer")),
                  "</text>\n");
  absl::StrAppend(&out, "  <rect x=\"", kLeft,
                  "\" y=\"32\" width=\"12\" height=\"10\" fill=\"#4e79a7\"/>", "<text x=\"",
                  kLeft + 16, "\" y=\"41\">time</text>\n");
  absl::StrAppend(&out, "  <rect x=\"", kLeft + 70,
                  "\" y=\"32\" width=\"12\" height=\"10\" fill=\"#f28e2b\"/>", "<text x=\"",
                  kLeft + 86, "\" y=\"41\">FLOPs</text>\n");
  int y = kTop;
  for (const auto& row : report.layers()) {
    const double time_w = kBarWidth * std::max(0.0, row.time_share()) / max_share;
    const double flops_w = kBarWidth * std::max(0.0, row.flops_share()) / max_share;
    const int x = kLeft + kLabelWidth;
    absl::StrAppend(&out, "  <g>\n    <title>",
                    XmlEscape(absl::StrCat(row.name(), " (", row.kind(),
                                           "): ", FormatDouble(row.median_ms(), 4), " ms, ",
                                           row.flops(), " FLOPs, ", row.kernel())),
                    "</title>\n");
    absl::StrAppend(&out, "    <text x=\"", kLeft, "\" y=\"", y + 17, "\">",
                    XmlEscape(absl::StrCat(row.index(), " ", row.name(), " ", row.kind())),
                    "</text>\n");
    absl::StrAppend(&out, "    <rect x=\"", x, "\" y=\"", y + 3, "\" width=\"",
                    FormatDouble(time_w, 1), "\" height=\"11\" fill=\"#4e79a7\"/>\n");
    absl::StrAppend(&out, "    <rect x=\"", x, "\" y=\"", y + 15, "\" width=\"",
                    FormatDouble(flops_w, 1), "\" height=\"11\" fill=\"#f28e2b\"/>\n");
    absl::StrAppend(&out, "    <text x=\"", FormatDouble(x + time_w + 4, 1), "\" y=\"", y + 13,
                    "\" font-size=\"10\">", Percent(row.time_share()), "</text>\n");
    absl::StrAppend(&out, "    <text x=\"", FormatDouble(x + flops_w + 4, 1), "\" y=\"", y + 25,
                    "\" font-size=\"10\">", Percent(row.flops_share()), "</text>\n  </g>\n");
    y += kRowHeight;
  }
  out += "</svg>\n";
  return out;
}

std::string RenderComparison(const convserve::v1::CompareKernelsResponse& response,
                             const std::string& format) {
  if (format == "json") return ProtoToJson(response);
  Table flat({"layer", "design", "description", "params", "macs", "median_ms", "min_ms",
              "params_ratio", "macs_ratio", "latency_ratio", "output_shape", "impl"});
  std::string text;
  for (const auto& comparison : response.comparisons()) {
    Table table({"design", "description", "params", "macs", "median_ms", "params_x", "macs_x",
                 "latency_x", "impl"});
    for (const auto& d : comparison.designs()) {
      table.AddRow({Text(d.design()), Text(d.description()), Uint(d.params()), Uint(d.macs()),
                    Num(d.median_ms(), 4), Num(d.params_ratio(), 2), Num(d.macs_ratio(), 2),
                    Num(d.latency_ratio(), 2), Text(d.kernel())});
      flat.AddRow({Text(comparison.layer_name()), Text(d.design()), Text(d.description()),
                   Uint(d.params()), Uint(d.macs()), Num(d.median_ms(), 6), Num(d.min_ms(), 6),
                   Num(d.params_ratio(), 4), Num(d.macs_ratio(), 4), Num(d.latency_ratio(), 4),
                   Text(FormatShape(Dims(d.output_shape()))), Text(d.kernel())});
    }
    if (!text.empty()) text += "\n";
    absl::StrAppend(&text, "layer ",
                    comparison.layer_name().empty() ? "(free shape)" : comparison.layer_name(),
                    ": input ", FormatShape(Dims(comparison.input_shape())), " -> output ",
                    FormatShape(Dims(comparison.output_shape())), "\n", table.RenderText());
  }
  if (format == "csv") return flat.RenderCsv();
  return text;
}

}  // namespace convserve::client
