// bench: a load generator in the manner of perf_analyzer. One thread per concurrent stream,
// each sending synchronous ModelInfer calls back to back (closed loop) or at its share of a
// fixed request rate (open loop), or with --streaming requests on a ModelStreamInfer stream
// (with --pipeline P, P of them in flight on each stream), for a fixed duration per concurrency
// level; the server-side breakdown comes from ModelStatistics deltas summed over all targets.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "client/image.h"
#include "client/output.h"
#include "server/common/status.h"

namespace convserve::client {
namespace {

using Clock = std::chrono::steady_clock;

struct ServerTotals {
  uint64_t success = 0;
  uint64_t executions = 0;
  uint64_t inferences = 0;
  uint64_t queue_ns = 0;
  uint64_t queue_count = 0;
  uint64_t compute_ns = 0;
  uint64_t compute_count = 0;
  bool available = false;
};

ServerTotals ReadServerTotals(Client& client, const std::string& model,
                              const std::string& version) {
  ServerTotals totals;
  for (size_t t = 0; t < client.targets().size(); ++t) {
    auto stats = client.ModelStatisticsOf(t, model);
    if (!stats.ok()) continue;
    for (const auto& s : stats->model_stats()) {
      if (s.name() != model || (!version.empty() && s.version() != version)) continue;
      const auto& is = s.inference_stats();
      totals.available = true;
      totals.success += is.success().count();
      totals.executions += s.execution_count();
      totals.inferences += s.inference_count();
      totals.queue_ns += is.queue().ns();
      totals.queue_count += is.queue().count();
      totals.compute_ns +=
          is.compute_input().ns() + is.compute_infer().ns() + is.compute_output().ns();
      totals.compute_count += is.compute_infer().count();
    }
  }
  return totals;
}

struct LevelResult {
  int concurrency = 0;
  double request_rate = 0;
  double seconds = 0;
  uint64_t requests = 0;  // successful
  double infer_per_s = 0;
  double p50_ms = 0, p90_ms = 0, p95_ms = 0, p99_ms = 0, avg_ms = 0;
  std::map<std::string, uint64_t> errors;  // by gRPC code name
  uint64_t error_count = 0;
  std::string first_error;
  bool server_stats = false;
  double server_queue_ms = 0, server_compute_ms = 0, server_avg_batch = 0;
};

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * sorted.size()));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

absl::StatusOr<std::vector<inference::ModelInferRequest>> BuildRequests(
    Client& client, const BenchOptions& options) {
  auto config_response = client.ModelConfig(options.model, options.version);
  if (!config_response.ok()) return config_response.status();
  const inference::ModelConfig& config = config_response->config();
  if (config.input_size() == 0 || config.output_size() == 0) {
    return absl::FailedPreconditionError("model has no inputs or outputs");
  }
  if (config.max_batch_size() == 0 && options.batch != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", options.model, "' has no batch dimension: use --batch 1"));
  }
  std::string input_name = config.input(0).name();
  if (config.has_preprocessing() && !config.preprocessing().input().empty()) {
    input_name = config.preprocessing().input();
  }
  std::vector<inference::ModelInferRequest> requests;
  auto base = [&]() {
    inference::ModelInferRequest request;
    request.set_model_name(options.model);
    request.set_model_version(options.version);
    request.add_inputs()->set_name(input_name);
    auto* output = request.add_outputs();
    output->set_name(config.output(0).name());
    return request;
  };
  if (!options.images_dir.empty()) {
    std::vector<std::string> files;
    RETURN_IF_ERROR(CollectImageFiles({options.images_dir}, &files));
    if (files.empty()) return absl::InvalidArgumentError("no images found in --images");
    std::vector<std::string> contents;
    for (const auto& file : files) {
      auto bytes = ReadBinaryFile(file);
      if (!bytes.ok()) return bytes.status();
      contents.push_back(std::move(*bytes));
    }
    const size_t pool = std::max<size_t>(1, std::min<size_t>(files.size(), 16));
    for (size_t r = 0; r < pool; ++r) {
      inference::ModelInferRequest request = base();
      auto* input = request.mutable_inputs(0);
      input->set_datatype("BYTES");
      input->add_shape(options.batch);
      std::vector<std::string> batch;
      for (int b = 0; b < options.batch; ++b) {
        batch.push_back(contents[(r * options.batch + b) % contents.size()]);
      }
      request.add_raw_input_contents(EncodeBytesElements(batch));
      (*request.mutable_outputs(0)->mutable_parameters())["classification"].set_int64_param(1);
      requests.push_back(std::move(request));
    }
    return requests;
  }
  const inference::ModelInput* input_config = &config.input(0);
  for (const auto& in : config.input()) {
    if (in.name() == input_name) input_config = &in;
  }
  if (input_config->data_type() != inference::TYPE_FP32) {
    return absl::FailedPreconditionError(absl::StrCat(
        "input '", input_name, "' is ", inference::DataType_Name(input_config->data_type()),
        ": random data is generated only for FP32; use --images DIR"));
  }
  std::vector<int64_t> shape;
  if (config.max_batch_size() > 0) shape.push_back(options.batch);
  int64_t elements = config.max_batch_size() > 0 ? options.batch : 1;
  for (int64_t d : input_config->dims()) {
    const int64_t dim = d < 0 ? 1 : d;
    shape.push_back(dim);
    elements *= dim;
  }
  std::mt19937 random(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int r = 0; r < 4; ++r) {
    inference::ModelInferRequest request = base();
    auto* input = request.mutable_inputs(0);
    input->set_datatype("FP32");
    for (int64_t d : shape) input->add_shape(d);
    std::vector<float> data(static_cast<size_t>(elements));
    for (float& v : data) v = normal(random);
    request.add_raw_input_contents(reinterpret_cast<const char*>(data.data()),
                                   data.size() * sizeof(float));
    requests.push_back(std::move(request));
  }
  return requests;
}

LevelResult RunLevel(Client& client, const BenchOptions& options,
                     const std::vector<inference::ModelInferRequest>& requests, int concurrency) {
  LevelResult result;
  result.concurrency = concurrency;
  result.request_rate = options.request_rate;
  const ServerTotals before = ReadServerTotals(client, options.model, options.version);

  struct Stream {
    std::vector<double> latencies_ms;
    std::map<std::string, uint64_t> errors;
    std::string first_error;
  };
  std::vector<Stream> streams(static_cast<size_t>(concurrency));
  std::atomic<uint64_t> done{0}, failed{0}, next_slot{0};
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::microseconds(static_cast<int64_t>(options.duration_s * 1e6));
  // One request's outcome: its latency, or its error by code.
  const auto record = [&](Stream& stream, const absl::Status& status, Clock::time_point sent,
                          Clock::time_point received) {
    if (status.ok()) {
      stream.latencies_ms.push_back(
          std::chrono::duration<double, std::milli>(received - sent).count());
      done.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    ++stream.errors[absl::StatusCodeToString(status.code())];
    if (stream.first_error.empty()) stream.first_error = FormatError(status);
    failed.fetch_add(1, std::memory_order_relaxed);
  };
  // A stream that fails to close is an error too (in the errors by code, not a request).
  const auto close = [&](Stream& stream, std::unique_ptr<Client::InferStream>& infer_stream) {
    if (infer_stream == nullptr) return;
    if (absl::Status closed = infer_stream->Close(); !closed.ok()) {
      ++stream.errors[absl::StatusCodeToString(closed.code())];
      if (stream.first_error.empty()) stream.first_error = FormatError(closed);
    }
  };
  // A server that is down fails at once: do not spin.
  const auto pause_if_down = [](const absl::Status& status) {
    if (status.code() == absl::StatusCode::kUnavailable) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  auto worker = [&](int id) {
    Stream& stream = streams[static_cast<size_t>(id)];
    size_t i = static_cast<size_t>(id);
    inference::ModelInferResponse response;
    std::unique_ptr<Client::InferStream> infer_stream;
    while (true) {
      if (options.request_rate > 0) {
        const uint64_t slot = next_slot.fetch_add(1);
        const auto at = start + std::chrono::microseconds(
                                    static_cast<int64_t>(slot * 1e6 / options.request_rate));
        if (at >= end) break;
        std::this_thread::sleep_until(at);
      } else if (Clock::now() >= end) {
        break;
      }
      const auto sent = Clock::now();
      response.Clear();
      absl::Status status;
      if (options.streaming) {
        if (infer_stream == nullptr) infer_stream = client.OpenInferStream(options.duration_s);
        status = infer_stream->Infer(requests[i++ % requests.size()], &response);
        if (infer_stream->ended()) infer_stream.reset();  // opened again for the next request
      } else {
        status = client.InferOnce(requests[i++ % requests.size()], &response);
      }
      record(stream, status, sent, Clock::now());
      pause_if_down(status);
    }
    close(stream, infer_stream);
  };
  // --pipeline P: P requests in flight on each stream (closed loop), answers matched by id.
  auto pipelined_worker = [&](int id) {
    Stream& stream = streams[static_cast<size_t>(id)];
    size_t i = static_cast<size_t>(id);
    uint64_t sequence = 0;
    std::map<std::string, Clock::time_point> in_flight;  // by id: when it was sent
    inference::ModelInferResponse response;
    std::unique_ptr<Client::InferStream> infer_stream;
    while (true) {
      if (infer_stream == nullptr) {
        if (Clock::now() >= end) break;
        infer_stream = client.OpenInferStream(options.duration_s);
      }
      absl::Status ended;
      while (in_flight.size() < static_cast<size_t>(options.pipeline) && Clock::now() < end) {
        inference::ModelInferRequest request = requests[i++ % requests.size()];
        request.set_id(absl::StrCat(id, "-", sequence++));
        in_flight.emplace(request.id(), Clock::now());  // a failed send fails it with the rest
        ended = infer_stream->Send(request);
        if (!ended.ok()) break;
      }
      if (ended.ok()) {
        if (in_flight.empty()) break;  // the duration is over and every answer came
        response.Clear();
        const absl::Status status = infer_stream->Receive(&response);
        const auto received = Clock::now();
        if (!infer_stream->ended()) {
          const auto it = in_flight.find(response.id());
          if (it != in_flight.end()) {
            record(stream, status, it->second, received);
            in_flight.erase(it);
            continue;
          }
          // The answers cannot be matched any more: the stream is given up (opened again).
          ended = absl::InternalError(absl::StrCat("the server answered id '", response.id(),
                                                   "', which no request in flight has"));
        } else {
          ended = status;
        }
      }
      // The stream ended or was given up: the requests in flight on it get no answer.
      for (const auto& [request_id, sent] : in_flight) record(stream, ended, sent, Clock::now());
      in_flight.clear();
      infer_stream.reset();
      pause_if_down(ended);
    }
    close(stream, infer_stream);
  };

  std::mutex mutex;
  std::condition_variable finished_cv;
  bool finished = false;
  std::thread progress;
  if (options.progress && isatty(STDERR_FILENO)) {
    progress = std::thread([&] {
      std::unique_lock<std::mutex> lock(mutex);
      while (
          !finished_cv.wait_for(lock, std::chrono::milliseconds(250), [&] { return finished; })) {
        const double t = std::chrono::duration<double>(Clock::now() - start).count();
        std::fprintf(
            stderr, "\r\033[Kconcurrency %d: %.1f/%.1f s, %llu requests, %.1f infer/s, %llu errors",
            concurrency, std::min(t, options.duration_s), options.duration_s,
            static_cast<unsigned long long>(done.load()),
            t > 0 ? done.load() * options.batch / t : 0.0,
            static_cast<unsigned long long>(failed.load()));
        std::fflush(stderr);
      }
      std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
    });
  }
  std::vector<std::thread> threads;
  const bool pipelining = options.streaming && options.pipeline > 1;
  for (int c = 0; c < concurrency; ++c) {
    if (pipelining) {
      threads.emplace_back(pipelined_worker, c);
    } else {
      threads.emplace_back(worker, c);
    }
  }
  for (auto& thread : threads) thread.join();
  const auto stop = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mutex);
    finished = true;
  }
  finished_cv.notify_all();
  if (progress.joinable()) progress.join();

  std::vector<double> latencies;
  for (const Stream& stream : streams) {
    latencies.insert(latencies.end(), stream.latencies_ms.begin(), stream.latencies_ms.end());
    for (const auto& [code, count] : stream.errors) {
      result.errors[code] += count;
      result.error_count += count;
    }
    if (result.first_error.empty()) result.first_error = stream.first_error;
  }
  std::sort(latencies.begin(), latencies.end());
  result.seconds = std::chrono::duration<double>(stop - start).count();
  result.requests = latencies.size();
  result.infer_per_s = result.seconds > 0 ? result.requests * options.batch / result.seconds : 0;
  result.p50_ms = Percentile(latencies, 0.50);
  result.p90_ms = Percentile(latencies, 0.90);
  result.p95_ms = Percentile(latencies, 0.95);
  result.p99_ms = Percentile(latencies, 0.99);
  double sum = 0;
  for (double l : latencies) sum += l;
  result.avg_ms = latencies.empty() ? 0 : sum / latencies.size();

  const ServerTotals after = ReadServerTotals(client, options.model, options.version);
  if (before.available && after.available) {
    result.server_stats = true;
    const uint64_t queue_count = after.queue_count - before.queue_count;
    const uint64_t compute_count = after.compute_count - before.compute_count;
    const uint64_t executions = after.executions - before.executions;
    result.server_queue_ms =
        queue_count ? (after.queue_ns - before.queue_ns) / 1e6 / queue_count : 0;
    result.server_compute_ms =
        compute_count ? (after.compute_ns - before.compute_ns) / 1e6 / compute_count : 0;
    result.server_avg_batch =
        executions ? static_cast<double>(after.inferences - before.inferences) / executions : 0;
  }
  return result;
}

std::string ErrorsText(const std::map<std::string, uint64_t>& errors) {
  std::vector<std::string> parts;
  for (const auto& [code, count] : errors) parts.push_back(absl::StrCat(code, "=", count));
  return parts.empty() ? "0" : absl::StrJoin(parts, ";");
}

}  // namespace

absl::Status ParseConcurrency(const std::string& spec, std::vector<int>* levels) {
  int start = 0, end = 0, step = 1;
  char tail = 0;
  const int n = std::sscanf(spec.c_str(), "%d:%d:%d%c", &start, &end, &step, &tail);
  const bool single = n == 1 && spec.find(':') == std::string::npos;
  if (single) end = start;
  if (!(single || n == 2 || n == 3) || start < 1 || end < start || step < 1 || end > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--concurrency wants N or START:END[:STEP] with 1 <= START <= END, got '", spec, "'"));
  }
  for (int c = start; c <= end; c += step) levels->push_back(c);
  return absl::OkStatus();
}

int RunBench(Client& client, const BenchOptions& options, std::ostream& out) {
  std::vector<int> levels;
  const absl::Status parsed = ParseConcurrency(options.concurrency, &levels);
  if (!parsed.ok()) return UsageError(std::string(parsed.message()));
  if (!(options.duration_s > 0) || options.duration_s > 3600) {
    return UsageError("--duration must be in (0, 3600] seconds");
  }
  if (options.batch < 1) return UsageError("--batch must be at least 1");
  if (options.request_rate < 0) return UsageError("--request-rate must be >= 0");
  if (options.pipeline < 1 || options.pipeline > 64) {
    return UsageError("--pipeline must be in [1, 64]");
  }
  if (options.pipeline > 1 && (!options.streaming || options.request_rate > 0)) {
    return UsageError(
        "--pipeline sends several requests on one stream in a closed loop: it needs --streaming "
        "and no --request-rate");
  }

  auto requests = BuildRequests(client, options);
  if (!requests.ok()) {
    if (requests.status().code() == absl::StatusCode::kInvalidArgument) {
      return UsageError(std::string(requests.status().message()));
    }
    return Fail(requests.status());
  }

  std::vector<LevelResult> results;
  for (int level : levels) {
    results.push_back(RunLevel(client, options, *requests, level));
    if (results.back().requests == 0 && results.back().error_count > 0) {
      std::cerr << results.back().first_error << std::endl;
      break;
    }
  }

  if (options.format == "json") {
    out << "[";
    for (size_t i = 0; i < results.size(); ++i) {
      const LevelResult& r = results[i];
      out << (i ? ",\n  {" : "\n  {") << "\"concurrency\": " << r.concurrency
          << ", \"request_rate\": " << FormatDouble(r.request_rate, 3)
          << ", \"batch\": " << options.batch
          << ", \"streaming\": " << (options.streaming ? "true" : "false")
          << ", \"pipeline\": " << options.pipeline
          << ", \"seconds\": " << FormatDouble(r.seconds, 3) << ", \"requests\": " << r.requests
          << ", \"infer_per_s\": " << FormatDouble(r.infer_per_s, 3)
          << ", \"latency_ms\": {\"avg\": " << FormatDouble(r.avg_ms, 4)
          << ", \"p50\": " << FormatDouble(r.p50_ms, 4)
          << ", \"p90\": " << FormatDouble(r.p90_ms, 4)
          << ", \"p95\": " << FormatDouble(r.p95_ms, 4)
          << ", \"p99\": " << FormatDouble(r.p99_ms, 4) << "}, \"errors\": {";
      size_t e = 0;
      for (const auto& [code, count] : r.errors) {
        out << (e++ ? ", " : "") << JsonString(code) << ": " << count;
      }
      out << "}, \"server\": ";
      if (r.server_stats) {
        out << "{\"queue_ms\": " << FormatDouble(r.server_queue_ms, 4)
            << ", \"compute_ms\": " << FormatDouble(r.server_compute_ms, 4)
            << ", \"avg_batch\": " << FormatDouble(r.server_avg_batch, 3) << "}";
      } else {
        out << "null";
      }
      out << "}";
    }
    out << (results.empty() ? "]\n" : "\n]\n");
  } else {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    Table table({"concurrency", "infer_per_s", "requests", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                 "avg_ms", "errors", "server_queue_ms", "server_compute_ms", "server_batch"});
    for (const LevelResult& r : results) {
      table.AddRow({Int(r.concurrency), Num(r.infer_per_s, 1), Uint(r.requests), Num(r.p50_ms, 3),
                    Num(r.p90_ms, 3), Num(r.p95_ms, 3), Num(r.p99_ms, 3), Num(r.avg_ms, 3),
                    Text(ErrorsText(r.errors)), Num(r.server_stats ? r.server_queue_ms : nan, 3),
                    Num(r.server_stats ? r.server_compute_ms : nan, 3),
                    Num(r.server_stats ? r.server_avg_batch : nan, 2)});
    }
    if (options.format == "table") {
      out << "model " << options.model << ", batch " << options.batch << ", "
          << FormatDouble(options.duration_s, 1) << " s per level, "
          << (options.request_rate > 0
                  ? absl::StrCat("open loop at ", FormatDouble(options.request_rate, 1), " req/s")
                  : std::string("closed loop"))
          << (options.streaming ? ", ModelStreamInfer streams" : "")
          << (options.pipeline > 1
                  ? absl::StrCat(", ", options.pipeline, " requests in flight per stream")
                  : std::string())
          << ", " << (options.images_dir.empty() ? "random FP32 input" : "images as BYTES")
          << ", targets " << absl::StrJoin(client.targets(), ",") << "\n";
    }
    out << table.Render(options.format);
  }
  for (const LevelResult& r : results) {
    if (r.requests == 0) return kExitServerError;
  }
  return kExitOk;
}

}  // namespace convserve::client
