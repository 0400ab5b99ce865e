// convserve: the command-line client. Flags → options structs → the commands in
// client/commands.h. Exit status: 0 success, 1 server error (or not ready), 2 usage error.
#include <iostream>

#include "CLI/CLI.hpp"
#include "client/commands.h"
#include "client/rpc.h"

namespace {

using convserve::client::kExitUsage;

CLI::App* Command(CLI::App& app, const std::string& name, const std::string& description,
                  const std::string& examples) {
  CLI::App* command = app.add_subcommand(name, description);
  command->footer("Example:\n" + examples +
                  "\nCommon options (--url, --timeout, --tls, --ca, --cert, --key) may also be "
                  "given after the command; see convserve --help.");
  return command;
}

CLI::Option* FormatOption(CLI::App* command, std::string* format,
                          std::vector<std::string> choices = {"table", "json", "csv"}) {
  return command->add_option("--format", *format, "Output format")
      ->check(CLI::IsMember(choices))
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  namespace cc = convserve::client;
  cc::ConnectionOptions connection;
  double timeout_s = -1;

  CLI::App app{
      "convserve: command-line client of the convserve inference server "
      "(KServe v2 / Triton gRPC + convserve.v1)"};
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--url", connection.url,
                 "Server address host:port; several comma-separated = round-robin across them; "
                 "also dns:///name:port or ipv4:a:p,b:q (round_robin policy)")
      ->envname("CONVSERVE_URL")
      ->capture_default_str();
  app.add_option("--timeout", timeout_s,
                 "Per-call deadline in seconds (default 30; 300 for report and compare)");
  app.add_flag("--tls", connection.tls, "Use TLS (implied by --ca/--cert/--key)")
      ->envname("CONVSERVE_TLS");
  app.add_option("--ca", connection.ca_file,
                 "PEM root certificates that signed the server's (default: the system's)")
      ->envname("CONVSERVE_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--cert", connection.cert_file, "PEM client certificate (mutual TLS)")
      ->envname("CONVSERVE_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--key", connection.key_file, "PEM client private key (mutual TLS)")
      ->envname("CONVSERVE_KEY")
      ->check(CLI::ExistingFile);
  app.footer(
      "Examples:\n"
      "  convserve health\n"
      "  convserve --url server-a:8001,server-b:8001 classify fashion-k3 images/ --top-k 3\n"
      "  convserve report fashion-k3 --sort time\n"
      "  convserve bench fashion-k3 --concurrency 1:8:2 --duration 10\n"
      "Exit status: 0 success, 1 server error or not ready, 2 usage error.");

  cc::HealthOptions health;
  CLI::App* health_cmd = Command(app, "health",
                                 "Liveness and readiness of the server(s) and of each model; "
                                 "exit 0 only when ready",
                                 "  convserve health --url localhost:8001 && echo ready");
  health_cmd->add_option("--model", health.model, "Require this model to be ready too");
  FormatOption(health_cmd, &health.format);

  std::string format = "table";
  CLI::App* models_cmd = Command(app, "models", "Repository index: name, version, state, reason",
                                 "  convserve models --format json");
  FormatOption(models_cmd, &format);

  std::string model;
  CLI::App* metadata_cmd =
      Command(app, "metadata", "Model metadata: inputs, outputs, shapes, datatypes, labels",
              "  convserve metadata fashion-k3");
  metadata_cmd->add_option("model", model, "Model name")->required();
  FormatOption(metadata_cmd, &format);

  CLI::App* config_cmd = Command(
      app, "config", "Model configuration: tensors, batching, instances, preprocessing, labels",
      "  convserve config fashion-k3 --format json");
  config_cmd->add_option("model", model, "Model name")->required();
  FormatOption(config_cmd, &format);

  CLI::App* stats_cmd =
      Command(app, "stats", "Statistics: counts, mean queue/compute time, latency percentiles",
              "  convserve stats fashion-k3");
  stats_cmd->add_option("model", model, "Model name (default: all models)");
  FormatOption(stats_cmd, &format);

  CLI::App* load_cmd = Command(app, "load", "Load (or reload) a model from the repository",
                               "  convserve load fashion-k5");
  load_cmd->add_option("model", model, "Model name")->required();
  CLI::App* unload_cmd = Command(app, "unload", "Unload a model", "  convserve unload fashion-k5");
  unload_cmd->add_option("model", model, "Model name")->required();

  cc::ClassifyOptions classify;
  CLI::App* classify_cmd =
      Command(app, "classify",
              "Classify JPEG/PNG files (directories are walked, sorted): one line per image",
              "  convserve classify fashion-k3 tests/data/images --top-k 3 --batch 16\n"
              "  convserve classify fashion-k3 shoe.png --preprocess client");
  classify_cmd->add_option("model", classify.model, "Model name")->required();
  classify_cmd->add_option("paths", classify.paths, "Image files or directories")->required();
  classify_cmd->add_option("--model-version", classify.version, "Model version (default: latest)");
  classify_cmd->add_option("--batch", classify.batch, "Images per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  classify_cmd->add_option("--top-k", classify.top_k, "Classes per image")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  classify_cmd
      ->add_option("--preprocess", classify.preprocess,
                   "server: send encoded files as BYTES; client: decode and resize here, send "
                   "FP32, top-k from the logits")
      ->check(CLI::IsMember({"server", "client"}))
      ->capture_default_str();
  classify_cmd
      ->add_option("--labels", classify.labels_file,
                   "Labels file for --preprocess client (default: ask the server)")
      ->check(CLI::ExistingFile);
  FormatOption(classify_cmd, &classify.format);

  cc::ReportOptions report;
  CLI::App* report_cmd = Command(
      app, "report", "Per-layer cost report: shapes, params, MACs, measured time, GFLOP/s, kernel",
      "  convserve report fashion-k3 --sort time\n"
      "  convserve report fashion-k3 --format chrome-trace > trace.json\n"
      "  convserve report fashion-k3 --format svg > layers.svg");
  report_cmd->add_option("model", report.model, "Model name")->required();
  report_cmd->add_option("--model-version", report.version, "Model version (default: latest)");
  report_cmd->add_option("--batch", report.batch, "Batch size profiled")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  report_cmd->add_option("--iterations", report.iterations, "Timed runs (0: server default)")
      ->check(CLI::NonNegativeNumber);
  report_cmd->add_option("--precision", report.precision, "fp32 | bf16 | int8 (default: model's)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  report_cmd->add_option("--sort", report.sort, "Order rows by time, flops or params")
      ->check(CLI::IsMember({"time", "flops", "params"}));
  FormatOption(report_cmd, &report.format, {"table", "json", "csv", "chrome-trace", "svg"});

  cc::CompareOptions compare;
  CLI::App* compare_cmd = Command(
      app, "compare",
      "Compare kernel designs (stacked 3x3, depthwise-separable, 1x1 bottleneck, ...) for a "
      "convolution of a model or a free shape, measured on the server",
      "  convserve compare fashion-k5 --layer conv1\n"
      "  convserve compare --shape 56x56 --in 64 --out 64 --kernel 5");
  compare_cmd->add_option("model", compare.model, "Model name (not with --shape)");
  compare_cmd->add_option("--model-version", compare.version, "Model version (default: latest)");
  compare_cmd->add_option("--layer", compare.layer, "Layer name");
  compare_cmd->add_option("--index", compare.index, "Layer index")->check(CLI::NonNegativeNumber);
  compare_cmd->add_flag("--all", compare.all, "Every convolution of the model (default)");
  compare_cmd->add_option("--shape", compare.shape, "Free shape HxW of the input");
  compare_cmd->add_option("--in", compare.in_channels, "Input channels (with --shape)");
  compare_cmd->add_option("--out", compare.out_channels, "Output channels (with --shape)");
  compare_cmd->add_option("--kernel", compare.kernel, "Kernel size (with --shape)");
  compare_cmd->add_option("--stride", compare.stride, "Stride (with --shape)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  compare_cmd->add_option("--batch", compare.batch, "Batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  compare_cmd->add_option("--iterations", compare.iterations, "Timed runs (0: server default)")
      ->check(CLI::NonNegativeNumber);
  FormatOption(compare_cmd, &compare.format);

  cc::BenchOptions bench;
  CLI::App* bench_cmd = Command(
      app, "bench",
      "Load generator: throughput, latency percentiles, errors, server queue/compute breakdown",
      "  convserve bench fashion-k3 --concurrency 4 --duration 10\n"
      "  convserve bench fashion-k3 --concurrency 1:8:2 --images tests/data/images --batch 8\n"
      "  convserve bench fashion-k3 --request-rate 500 --concurrency 16 --format json");
  bench_cmd->add_option("model", bench.model, "Model name")->required();
  bench_cmd->add_option("--model-version", bench.version, "Model version (default: latest)");
  bench_cmd
      ->add_option("--concurrency", bench.concurrency,
                   "Concurrent streams: N or a range START:END[:STEP]")
      ->capture_default_str();
  bench_cmd->add_option("--duration", bench.duration_s, "Seconds per concurrency level")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_cmd
      ->add_option("--request-rate", bench.request_rate,
                   "Requests/s over all streams (open loop); 0 = closed loop")
      ->check(CLI::NonNegativeNumber);
  bench_cmd->add_option("--batch", bench.batch, "Batch size per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_cmd
      ->add_option("--images", bench.images_dir,
                   "Send these JPEG/PNG files as BYTES (default: random FP32 tensors)")
      ->check(CLI::ExistingDirectory);
  bench_cmd->add_flag("!--no-progress", bench.progress, "No live progress line on stderr");
  bench_cmd->add_flag("--streaming", bench.streaming,
                      "Send the requests on ModelStreamInfer streams (Triton's streaming API), one "
                      "stream per concurrent request, instead of one ModelInfer call each");
  bench_cmd
      ->add_option("--pipeline", bench.pipeline,
                   "With --streaming: requests in flight on each stream, written without waiting "
                   "for answers (answers matched by id); concurrency then counts streams")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  FormatOption(bench_cmd, &bench.format);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  const bool slow = report_cmd->parsed() || compare_cmd->parsed();
  connection.timeout_s = timeout_s >= 0 ? timeout_s : (slow ? 300 : 30);
  if (cc::SplitTargets(connection.url).empty()) return cc::UsageError("--url names no server");

  if (health_cmd->parsed()) return cc::RunHealth(connection, health, std::cout);

  auto client = cc::Client::Create(connection);
  if (!client.ok()) return cc::UsageError(std::string(client.status().message()));
  cc::Client& c = **client;
  if (models_cmd->parsed()) return cc::RunModels(c, format, std::cout);
  if (metadata_cmd->parsed()) return cc::RunMetadata(c, model, format, std::cout);
  if (config_cmd->parsed()) return cc::RunConfig(c, model, format, std::cout);
  if (stats_cmd->parsed()) return cc::RunStats(c, model, format, std::cout);
  if (load_cmd->parsed()) return cc::RunLoad(c, model, std::cout);
  if (unload_cmd->parsed()) return cc::RunUnload(c, model, std::cout);
  if (classify_cmd->parsed()) return cc::RunClassify(c, classify, std::cout);
  if (report_cmd->parsed()) return cc::RunReport(c, report, std::cout);
  if (compare_cmd->parsed()) return cc::RunCompare(c, compare, std::cout);
  if (bench_cmd->parsed()) return cc::RunBench(c, bench, std::cout);
  return cc::UsageError("no command");
}
