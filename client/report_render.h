// Renderers of convserve.v1 layer reports and kernel comparisons: text table with per-layer
// time/FLOPs bars, CSV, JSON, Chrome Trace Event Format, SVG bar chart.
#pragma once

#include <string>

#include "proto/convserve.pb.h"

namespace convserve::client {

// Reorders the rows: "time" (median_ms), "flops", "params" descending; "" keeps plan order.
void SortLayers(convserve::v1::LayerReport* report, const std::string& sort);

// Summary lines, then one row per layer with a bar of its time share next to its FLOPs share.
std::string RenderReportTable(const convserve::v1::LayerReport& report);
std::string RenderReportCsv(const convserve::v1::LayerReport& report);
std::string RenderReportJson(const convserve::v1::LayerReport& report);
// {"traceEvents":[...]}: one complete ("ph":"X") event per layer, laid end to end in plan order
// with its median time as duration (chrome://tracing, Perfetto).
std::string RenderReportChromeTrace(const convserve::v1::LayerReport& report);
// A standalone SVG document: per layer, a bar of time share and one of FLOPs share.
std::string RenderReportSvg(const convserve::v1::LayerReport& report);

// "3x3 s2 g32 d2" from the geometry fields; "" when the layer has no kernel.
std::string KernelShape(const convserve::v1::LayerRow& row);
// `width` characters: share * width '#' (or `fill`), padded with spaces.
std::string Bar(double share, int width, char fill = '#');

std::string RenderComparison(const convserve::v1::CompareKernelsResponse& response,
                             const std::string& format);

}  // namespace convserve::client
