#include "server/engine/profiler.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status.h"
#include "server/engine/spatial_math.h"

namespace convserve::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Independent FMA chains: enough to cover latency x ports on current x86 cores.
__attribute__((target("avx2,fma"))) float FmaChainsAvx2(int64_t iterations) {
  __m256 acc[10];
  for (int k = 0; k < 10; ++k) acc[k] = _mm256_set1_ps(0.001f * static_cast<float>(k));
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-6f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int k = 0; k < 10; ++k) acc[k] = _mm256_fmadd_ps(acc[k], mul, add);
  }
  __m256 sum = acc[0];
  for (int k = 1; k < 10; ++k) sum = _mm256_add_ps(sum, acc[k]);
  float out[8];
  _mm256_storeu_ps(out, sum);
  return out[0];
}

__attribute__((target("avx512f"))) float FmaChainsAvx512(int64_t iterations) {
  __m512 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm512_set1_ps(0.001f * static_cast<float>(k));
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-6f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(acc[k], mul, add);
  }
  __m512 sum = acc[0];
  for (int k = 1; k < 12; ++k) sum = _mm512_add_ps(sum, acc[k]);
  float out[16];
  _mm512_storeu_ps(out, sum);
  return out[0];
}

// Flops of one single-thread calibration run, and its time.
double CalibrateOnce(int64_t iterations, double* seconds) {
  volatile float sink = 0;
  const auto start = Clock::now();
  double flops = 0;
  if (__builtin_cpu_supports("avx512f")) {
    sink = FmaChainsAvx512(iterations);
    flops = static_cast<double>(iterations) * 12 * 16 * 2;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    sink = FmaChainsAvx2(iterations);
    flops = static_cast<double>(iterations) * 10 * 8 * 2;
  }
  (void)sink;
  *seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return flops;
}

std::vector<double> Sorted(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v;
}
double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t index =
      std::min(sorted.size() - 1, static_cast<size_t>(q * (sorted.size() - 1) + 0.5));
  return sorted[index];
}

}  // namespace

double MeasurePeakGflops(int threads) {
  static std::mutex mutex;
  static std::map<int, double> cache;
  threads = std::max(threads, 1);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  // Best of many short runs (about 5 ms each): on a shared machine some run unpreempted, and
  // the first ~100 ms after idle run at a lower clock.
  double best = 0;
  for (int attempt = 0; attempt < 40; ++attempt) {
    std::vector<double> gflops(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&gflops, t] {
        double seconds = 0;
        const double flops = CalibrateOnce(1'000'000, &seconds);
        gflops[t] = seconds > 0 ? flops / seconds / 1e9 : 0;
      });
    }
    for (auto& w : workers) w.join();
    double total = 0;
    for (double g : gflops) total += g;
    best = std::max(best, total);
  }
  cache[threads] = best;
  return best;
}

absl::StatusOr<PlanProfile> ProfilePlan(const Plan& plan, std::span<const TensorView> inputs,
                                        const ProfileOptions& options) {
  if (options.iterations < 1 || options.warmup_iterations < 0) {
    return absl::InvalidArgumentError("iterations must be >= 1");
  }
  auto workspace = plan.CreateWorkspace();
  std::vector<std::vector<std::byte>> output_storage;
  std::vector<TensorView> outputs;
  for (const ValueInfo& info : plan.output_infos()) {
    output_storage.emplace_back(NumElements(info.dims) * ElementSize(info.dtype));
    outputs.push_back({info.dtype, info.dims, output_storage.back().data()});
  }
  RunOptions run_options;
  run_options.num_threads = options.num_threads;
  const auto cancelled = [&] {
    return options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed);
  };
  const absl::Status cancel_status = absl::CancelledError("measurement cancelled");
  for (int k = 0; k < options.warmup_iterations; ++k) {
    if (cancelled()) return cancel_status;
    RETURN_IF_ERROR(plan.Run(*workspace, inputs, outputs, run_options));
  }
  const size_t n_steps = plan.steps().size();
  std::vector<double> end_to_end;
  std::vector<std::vector<double>> per_step(n_steps);
  std::vector<int64_t> step_ns;
  const auto deadline_start = Clock::now();
  int done = 0;
  for (; done < options.iterations; ++done) {
    if (cancelled()) return cancel_status;
    if (done >= 3 && std::chrono::duration<double>(Clock::now() - deadline_start).count() >
                         options.max_seconds) {
      break;
    }
    const auto start = Clock::now();
    RETURN_IF_ERROR(plan.Run(*workspace, inputs, outputs, run_options));
    end_to_end.push_back(Ms(Clock::now() - start));
    RETURN_IF_ERROR(plan.RunProfiled(*workspace, inputs, outputs, step_ns, run_options));
    for (size_t s = 0; s < n_steps; ++s) per_step[s].push_back(step_ns[s] / 1e6);
  }
  PlanProfile profile;
  profile.batch_size = plan.batch_size();
  profile.iterations = done;
  profile.peak_gflops = MeasurePeakGflops(
      options.num_threads > 0 ? options.num_threads
                              : static_cast<int>(std::thread::hardware_concurrency()));
  const std::vector<double> sorted_end_to_end = Sorted(end_to_end);
  profile.end_to_end_median_ms = Quantile(sorted_end_to_end, 0.5);
  profile.end_to_end_min_ms = sorted_end_to_end.empty() ? 0 : sorted_end_to_end.front();
  std::vector<LayerCost> costs;
  for (size_t s = 0; s < n_steps; ++s) {
    StepProfile sp;
    sp.info = plan.steps()[s];
    sp.cost = EstimateStepCost(sp.info);
    const std::vector<double> sorted = Sorted(per_step[s]);
    sp.median_ms = Quantile(sorted, 0.5);
    sp.p90_ms = Quantile(sorted, 0.9);
    sp.min_ms = sorted.empty() ? 0 : sorted.front();
    profile.sum_of_step_medians_ms += sp.median_ms;
    costs.push_back(sp.cost);
    profile.steps.push_back(std::move(sp));
  }
  profile.totals = SumCosts(costs);
  for (StepProfile& sp : profile.steps) {
    sp.time_share =
        profile.sum_of_step_medians_ms > 0 ? sp.median_ms / profile.sum_of_step_medians_ms : 0;
    sp.flops_share =
        profile.totals.flops > 0 ? static_cast<double>(sp.cost.flops) / profile.totals.flops : 0;
    sp.gflops = sp.median_ms > 0 ? sp.cost.flops / (sp.median_ms * 1e6) : 0;
    sp.peak_percent = profile.peak_gflops > 0 ? sp.gflops / profile.peak_gflops * 100 : 0;
  }
  if (profile.end_to_end_median_ms > 0) {
    profile.difference_percent = (profile.sum_of_step_medians_ms - profile.end_to_end_median_ms) /
                                 profile.end_to_end_median_ms * 100;
  }
  return profile;
}

namespace {

struct ConvSpec {
  int64_t c_in, c_out, kh, kw, stride_h, stride_w, groups;
  int64_t pad_t, pad_l, pad_b, pad_r;
};

// Padding (begin, end) so that a kernel k with stride s maps `in` to `out` (odd extra at the end,
// as SAME_UPPER).
std::pair<int64_t, int64_t> PadFor(int64_t in, int64_t out, int64_t k, int64_t s) {
  const WindowPads pads = SplitPadding(std::max<int64_t>(0, WindowPaddingForOutput(in, out, k, s)),
                                       AutoPad::kSameUpper);
  return {pads.begin, pads.end};
}

// A model of a chain of convolutions with seeded random weights (no activations: the
// comparison is about the convolutions).
absl::StatusOr<std::unique_ptr<Model>> BuildChain(const ConvShape& shape,
                                                  const std::vector<ConvSpec>& convs,
                                                  const std::string& name) {
  Graph graph;
  graph.name = name;
  graph.inputs.push_back(
      {"x", DataType::kFloat32, {shape.batch, shape.in_channels, shape.height, shape.width}});
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-0.1f, 0.1f);
  std::string prev = "x";
  for (size_t k = 0; k < convs.size(); ++k) {
    const ConvSpec& c = convs[k];
    Node node;
    node.name = absl::StrCat(name, "_conv", k);
    node.op_type = "Conv";
    const std::string w = node.name + ".weight", b = node.name + ".bias";
    Tensor weight(DataType::kFloat32, {c.c_out, c.c_in / c.groups, c.kh, c.kw});
    for (int64_t i = 0; i < weight.num_elements(); ++i) weight.data<float>()[i] = dist(rng);
    Tensor bias(DataType::kFloat32, {c.c_out});
    for (int64_t i = 0; i < bias.num_elements(); ++i) bias.data<float>()[i] = dist(rng);
    graph.initializers[w] = std::move(weight);
    graph.initializers[b] = std::move(bias);
    node.inputs = {prev, w, b};
    const std::string out = k + 1 == convs.size() ? "y" : absl::StrCat(node.name, "_out");
    node.outputs = {out};
    node.attributes["kernel_shape"] = std::vector<int64_t>{c.kh, c.kw};
    node.attributes["strides"] = std::vector<int64_t>{c.stride_h, c.stride_w};
    node.attributes["pads"] = std::vector<int64_t>{c.pad_t, c.pad_l, c.pad_b, c.pad_r};
    node.attributes["group"] = c.groups;
    node.source_nodes = {node.name};
    graph.nodes.push_back(std::move(node));
    prev = out;
  }
  graph.outputs.push_back({"y", DataType::kFloat32, {}});
  ModelOptions options;
  options.model_name = name;
  return Model::Create(std::move(graph), options);
}

}  // namespace

absl::StatusOr<ConvShape> ConvShapeOfStep(const StepInfo& step) {
  if (step.kind != "Conv" || step.input_dims.empty() || step.input_dims[0].size() != 4 ||
      step.output_dims.size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("step '", step.name, "' is not a 2-D convolution (kind ", step.kind, ")"));
  }
  auto attr = [&](const char* key, size_t i, int64_t fallback) {
    auto it = step.shape_attributes.find(key);
    return it == step.shape_attributes.end() || it->second.size() <= i ? fallback : it->second[i];
  };
  ConvShape shape;
  shape.batch = step.input_dims[0][0];
  shape.in_channels = step.input_dims[0][1];
  shape.height = step.input_dims[0][2];
  shape.width = step.input_dims[0][3];
  shape.out_channels = step.output_dims[1];
  shape.kernel = attr("kernel_shape", 0, 1);
  shape.stride = attr("strides", 0, 1);
  shape.pad = attr("pads", 0, 0);
  shape.groups = attr("group", 0, 1);
  return shape;
}

absl::StatusOr<std::vector<DesignResult>> CompareKernelDesigns(const ConvShape& shape,
                                                               const ProfileOptions& options) {
  const int64_t k = shape.kernel, s = shape.stride;
  if (shape.batch < 1 || shape.height < 1 || shape.width < 1 || shape.in_channels < 1 ||
      shape.out_channels < 1 || k < 1 || s < 1 || shape.groups < 1 ||
      shape.in_channels % shape.groups != 0 || shape.out_channels % shape.groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid convolution shape: ", shape.height, "x",
                                                   shape.width, ", ", shape.in_channels, "->",
                                                   shape.out_channels, " channels, kernel ", k,
                                                   ", stride ", s, ", groups ", shape.groups));
  }
  const int64_t pad = shape.pad < 0 ? k / 2 : shape.pad;
  const std::optional<int64_t> h_out_or = WindowOutputSize(shape.height, k, s, pad, pad),
                               w_out_or = WindowOutputSize(shape.width, k, s, pad, pad);
  if (!h_out_or || !w_out_or) {
    return absl::InvalidArgumentError("kernel larger than the padded input");
  }
  const int64_t h_out = *h_out_or, w_out = *w_out_or;
  const int64_t c_in = shape.in_channels, c_out = shape.out_channels;
  auto spec = [&](int64_t ci, int64_t co, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                  int64_t groups, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w) {
    auto [pt, pb] = PadFor(in_h, out_h, kh, sh);
    auto [pl, pr] = PadFor(in_w, out_w, kw, sw);
    return ConvSpec{ci, co, kh, kw, sh, sw, groups, pt, pl, pb, pr};
  };
  struct Design {
    std::string name, description;
    std::vector<ConvSpec> convs;
  };
  std::vector<Design> designs;
  designs.push_back({"as_is",
                     absl::StrCat("conv", k, "x", k, " ", c_in, "->", c_out,
                                  shape.groups > 1 ? absl::StrCat(" g", shape.groups) : ""),
                     {ConvSpec{c_in, c_out, k, k, s, s, shape.groups, pad, pad, pad, pad}}});
  if (k > 3) {
    const int64_t n = (k - 1) / 2;  // n stacked 3x3 cover (2n+1)x(2n+1)
    Design d{"stack_3x3",
             absl::StrCat(n, " x conv3x3 ", c_in, "->", c_out,
                          (k % 2 == 0) ? " (receptive field k+1)" : ""),
             {}};
    d.convs.push_back(spec(c_in, c_out, 3, 3, s, s, 1, shape.height, shape.width, h_out, w_out));
    for (int64_t i = 1; i < n; ++i)
      d.convs.push_back(spec(c_out, c_out, 3, 3, 1, 1, 1, h_out, w_out, h_out, w_out));
    designs.push_back(std::move(d));
  }
  if (k > 1) {
    Design d{"depthwise_separable",
             absl::StrCat("dw", k, "x", k, " ", c_in, " + pw1x1 ", c_in, "->", c_out),
             {}};
    d.convs.push_back(ConvSpec{c_in, c_in, k, k, s, s, c_in, pad, pad, pad, pad});
    d.convs.push_back(ConvSpec{c_in, c_out, 1, 1, 1, 1, 1, 0, 0, 0, 0});
    designs.push_back(std::move(d));
  }
  {
    const int64_t mid = std::max<int64_t>(1, c_out / 4);
    Design d{"bottleneck_1x1",
             absl::StrCat("1x1 ", c_in, "->", mid, " + ", k, "x", k, " ", mid, "->", mid, " + 1x1 ",
                          mid, "->", c_out),
             {}};
    d.convs.push_back(ConvSpec{c_in, mid, 1, 1, 1, 1, 1, 0, 0, 0, 0});
    d.convs.push_back(ConvSpec{mid, mid, k, k, s, s, 1, pad, pad, pad, pad});
    d.convs.push_back(ConvSpec{mid, c_out, 1, 1, 1, 1, 1, 0, 0, 0, 0});
    designs.push_back(std::move(d));
  }
  if (k >= 3) {
    Design d{
        "factorized_kx1_1xk",
        absl::StrCat("conv", k, "x1 ", c_in, "->", c_out, " + conv1x", k, " ", c_out, "->", c_out),
        {}};
    d.convs.push_back(ConvSpec{c_in, c_out, k, 1, s, 1, 1, pad, 0, pad, 0});
    d.convs.push_back(ConvSpec{c_out, c_out, 1, k, 1, s, 1, 0, pad, 0, pad});
    designs.push_back(std::move(d));
  }

  std::mt19937 rng(99);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> input(shape.batch * c_in * shape.height * shape.width);
  for (float& v : input) v = dist(rng);
  const TensorView input_view{
      DataType::kFloat32, {shape.batch, c_in, shape.height, shape.width}, input.data()};

  std::vector<DesignResult> results;
  for (const Design& d : designs) {
    ASSIGN_OR_RETURN(std::unique_ptr<Model> model, BuildChain(shape, d.convs, d.name));
    ASSIGN_OR_RETURN(std::shared_ptr<const Plan> plan,
                     model->GetPlan(shape.batch, options.num_threads));
    ASSIGN_OR_RETURN(PlanProfile profile,
                     ProfilePlan(*plan, std::span<const TensorView>(&input_view, 1), options));
    DesignResult r;
    r.design = d.name;
    r.description = d.description;
    std::vector<std::string> kernels;
    for (const StepProfile& sp : profile.steps) {
      if (sp.info.kind != "Conv") continue;
      r.params += sp.cost.params;
      r.macs += sp.cost.macs;
      kernels.push_back(sp.info.kernel);
    }
    r.median_ms = profile.end_to_end_median_ms;
    r.min_ms = profile.end_to_end_min_ms;
    r.output_dims = plan->output_infos()[0].dims;
    r.kernels = absl::StrJoin(kernels, " + ");
    results.push_back(std::move(r));
  }
  const DesignResult& base = results.front();
  for (DesignResult& r : results) {
    r.params_ratio = base.params > 0 ? static_cast<double>(r.params) / base.params : 0;
    r.macs_ratio = base.macs > 0 ? static_cast<double>(r.macs) / base.macs : 0;
    r.latency_ratio = base.median_ms > 0 ? r.median_ms / base.median_ms : 0;
  }
  return results;
}

}  // namespace convserve::engine
