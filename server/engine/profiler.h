// Per-step profiling of a compiled plan and the kernel-design comparison: the measured half of
// convserve's cost report (the static half is cost_model.h).
//
// ProfilePlan runs a plan on real inputs: warm-up, then N timed iterations of the whole plan
// (end-to-end) interleaved with N step-by-step timed iterations (RunProfiled waits after each
// step), and joins the per-step median/p90/min with each step's static cost.
//
// CompareKernelDesigns builds, for one convolution shape, the classic alternatives with the same
// input and output shapes (stack of 3x3s, depthwise-separable, 1x1 bottleneck, k×1 then 1×k) as
// small engine models with seeded random weights, and times each on this machine.
//
// Thread safety: functions are reentrant; they use only the objects passed in.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/cost_model.h"
#include "server/engine/engine.h"

namespace convserve::engine {

struct ProfileOptions {
  int warmup_iterations = 5;
  int iterations = 50;
  int num_threads = 0;        // 0: leave the OpenMP setting as is
  double max_seconds = 20.0;  // stop timing early (with at least 3 iterations) past this
  // When set and true, measuring stops before the next run with CANCELLED (server shutdown).
  const std::atomic<bool>* cancel = nullptr;
};

struct StepProfile {
  StepInfo info;
  LayerCost cost;
  double median_ms = 0, p90_ms = 0, min_ms = 0;
  double time_share = 0;    // median / sum of step medians
  double flops_share = 0;   // flops / total flops
  double gflops = 0;        // flops / median
  double peak_percent = 0;  // gflops / peak_gflops * 100
};

struct PlanProfile {
  int64_t batch_size = 0;
  int iterations = 0;
  double peak_gflops = 0;  // measured by MeasurePeakGflops for the threads used
  double end_to_end_median_ms = 0;
  double end_to_end_min_ms = 0;
  double sum_of_step_medians_ms = 0;
  double difference_percent = 0;  // (sum - end_to_end) / end_to_end * 100
  ModelCost totals;
  std::vector<StepProfile> steps;
};

// fp32 FMA peak of this machine for `threads` threads, measured by a short calibration loop
// (AVX-512 or AVX2 FMA chains, whichever the CPU has); cached per thread count.
double MeasurePeakGflops(int threads);

// Inputs: one plain view per model input (plan->input_infos()). Filled by the caller with real
// data (zeros and never-written buffers distort timings).
absl::StatusOr<PlanProfile> ProfilePlan(const Plan& plan, std::span<const TensorView> inputs,
                                        const ProfileOptions& options);

// The convolution to compare alternatives for. Output size follows ONNX's formula with the
// given symmetric padding (`pad` < 0: "same" padding k/2).
struct ConvShape {
  int64_t batch = 1, height = 0, width = 0, in_channels = 0, out_channels = 0;
  int64_t kernel = 3, stride = 1, pad = -1, groups = 1;
};

struct DesignResult {
  std::string design;  // as_is, stack_3x3, depthwise_separable, bottleneck_1x1, factorized_kx1_1xk
  std::string description;  // e.g. "2 x conv3x3 64->64"
  int64_t params = 0, macs = 0;
  double median_ms = 0, min_ms = 0;
  double params_ratio = 0, macs_ratio = 0, latency_ratio = 0;  // relative to as_is
  Dims output_dims;
  std::string kernels;  // oneDNN implementations, joined with " + "
};

absl::StatusOr<std::vector<DesignResult>> CompareKernelDesigns(const ConvShape& shape,
                                                               const ProfileOptions& options);

// The ConvShape of a compiled Conv step (from its StepInfo), for comparisons on a model's layer.
absl::StatusOr<ConvShape> ConvShapeOfStep(const StepInfo& step);

}  // namespace convserve::engine
