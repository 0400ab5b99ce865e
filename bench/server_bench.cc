// convserve-server-bench: the server over loopback against the engine called in-process on the
// same model, batch and thread count (issue #4's benchmark).
//
//   build/bench/convserve-server-bench --server build/server/api/convserve-server
//       --repository models/repository --out bench/SERVER.md
//
// For each thread count it starts the real convserve-server as a child process on 127.0.0.1 and
// a free port (--threads = the engine's threads), waits until ServerReady/ModelReady answer, and
// then runs interleaved rounds; one round of one model is:
//   1. engine, in this process: Plan::Run at batch 1 back to back (per-request latency), then
//      every batch size 1, 2, 4, ... max_batch_size (images/s; the best is the reference);
//   2. server, concurrency 1 closed loop: ModelInfer with one FP32 image in raw_input_contents;
//   3. server, concurrency 8 closed loop (8 calls in flight on one completion queue), which
//      the server's dynamic batcher turns into batches;
//   4. server, concurrency 8 again, each request carrying kClientBatch images (client-side
//      batching: one FP32 [B, 1, 28, 28] tensor), to show what amortising per-request costs gains;
//   5. optionally 2-3 again with a PNG file as a BYTES input (decoded by the server);
//   6. 2-3 against convserve-null-server (bench/null_server.cc), a do-nothing server of the same
//      protocol started once for the run: the floor and the ceiling that gRPC itself sets here.
// Overhead = server latency - engine latency of the same round; throughput ratio = server
// images/s at concurrency 8 / the engine's best images/s of the same round. Rounds give a median
// and a best. CPU time of this process (getrusage), of the server (/proc/PID/task/*/stat, split
// into gRPC threads and the rest) and of the whole machine (/proc/stat) is measured per phase.
// Results: a markdown report (--out) and JSON beside it (--json).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pmmintrin.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "dnnl.hpp"
#include "proto/inference.grpc.pb.h"
#include "server/api/options.h"
#include "server/api/spin_next.h"
#include "server/engine/engine.h"
#include "server/repository/model.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using convserve::engine::DataType;
using convserve::engine::TensorView;

constexpr double kOverheadTargetUs = 150;
constexpr double kThroughputTarget = 0.85;
constexpr int kThroughputConcurrency = 8;
// Images per request in the client-side batching rows (one FP32 [B, C, H, W] tensor).
constexpr int kClientBatch = 8;
constexpr char kDriverCommand[] =
    "build/bench/convserve-server-bench --server build/server/api/convserve-server "
    "--repository models/repository --out bench/SERVER.md";

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "convserve-server-bench: " << message << std::endl;
  std::exit(1);
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

// Median and best of one quantity over the rounds.
struct Spread {
  double median = std::nan("");
  double best = std::nan("");
};

Spread SpreadOf(const std::vector<double>& values, bool lower_is_better) {
  Spread s;
  if (values.empty()) return s;
  s.median = Percentile(values, 0.5);
  s.best = lower_is_better ? *std::min_element(values.begin(), values.end())
                           : *std::max_element(values.begin(), values.end());
  return s;
}

std::string Fixed(double value, int digits) {
  if (std::isnan(value)) return "n/a";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(digits);
  out << value;
  return out.str();
}

std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  std::ostringstream out;
  out.precision(6);
  out << value;
  return out.str();
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// ---------------------------------------------------------------------------------------------
// CPU accounting.

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// utime + stime of a /proc stat line, in seconds; the command name is returned in `comm`.
double StatLineCpuSeconds(const std::string& line, std::string* comm) {
  const size_t open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return 0;
  if (comm) *comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  std::string field;
  while (rest >> field) fields.push_back(field);
  if (fields.size() < 13) return 0;
  // Fields after the command start at field 3 (state): utime is field 14, stime field 15.
  const double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU seconds of a process, split by thread name: "grpc" = threads named by gRPC, "other" =
// the server's own threads (main and OpenMP threads keep the process name; scheduler workers
// and responders are named "cs-w:<model>" and "cs-a:<model>").
struct ServerCpu {
  double grpc = 0, other = 0;
  double total() const { return grpc + other; }
};

ServerCpu ReadServerCpu(pid_t pid) {
  ServerCpu cpu;
  std::string process_name;
  {
    std::ifstream in(fs::path("/proc") / std::to_string(pid) / "stat");
    std::string line;
    std::getline(in, line);
    StatLineCpuSeconds(line, &process_name);
  }
  std::error_code ec;
  for (const auto& entry :
       fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task",
                              fs::directory_options::skip_permission_denied, ec)) {
    std::ifstream in(entry.path() / "stat");
    std::string line, comm;
    std::getline(in, line);
    const double seconds = StatLineCpuSeconds(line, &comm);
    // gRPC's threads: the server's completion-queue threads ("cs-grpc-N", server/api/async_rpc.h)
    // and those gRPC names itself (default-executor, timer_manager, grpcpp_sync_server, ...). A
    // lone request computed on the gRPC thread that received it counts as gRPC's here.
    const bool grpc =
        comm.rfind("cs-grpc-", 0) == 0 || (comm != process_name && comm.rfind("cs-", 0) != 0);
    (grpc ? cpu.grpc : cpu.other) += seconds;
  }
  return cpu;
}

// Busy CPU seconds of the whole machine (all cores) from /proc/stat.
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  std::vector<double> v;
  double x;
  for (int i = 0; i < 8 && in >> x; ++i) v.push_back(x);
  if (v.size() < 8) return 0;
  const double busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // minus idle, iowait
  return busy / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct CpuMark {
  Clock::time_point at;
  double client, machine;
  ServerCpu server;
};

CpuMark MarkCpu(pid_t server) {
  return {Clock::now(), ProcessCpuSeconds(), MachineBusySeconds(), ReadServerCpu(server)};
}

// ---------------------------------------------------------------------------------------------
// Machine description.

std::string CpuInfoField(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        return value;
      }
    }
  }
  return "";
}

std::string SimdFlags() {
  std::vector<std::string> found;
  std::istringstream flags(CpuInfoField("flags"));
  std::string flag;
  std::vector<std::string> all;
  while (flags >> flag) all.push_back(flag);
  for (const char* want : {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}) {
    if (std::find(all.begin(), all.end(), want) != all.end()) found.push_back(want);
  }
  return absl::StrJoin(found, " ");
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  char text[64];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return text;
}

// ---------------------------------------------------------------------------------------------
// The engine, in-process.

struct EngineRound {
  double p50_us = 0, p99_us = 0;
  uint64_t latency_runs = 0;
  std::vector<std::pair<int64_t, double>> images_per_s;  // by batch size
  double best_images_per_s = 0;
  int64_t best_batch = 0;
  double ImagesPerSAt(int64_t batch) const {
    for (const auto& [b, ips] : images_per_s) {
      if (b == batch) return ips;
    }
    return std::nan("");
  }
};

class EngineBench {
 public:
  static std::unique_ptr<EngineBench> Load(const fs::path& repository, const std::string& name,
                                           int pool_size) {
    const fs::path model_dir = repository / name;
    const std::vector<int64_t> versions = convserve::repository::ListVersions(model_dir);
    if (versions.empty())
      Die(absl::StrCat("model '", name, "': no version folder in ", model_dir.string()));
    const int64_t version = versions.back();
    auto config = convserve::repository::ReadModelConfig(
        model_dir, name, model_dir / std::to_string(version) / "model.onnx");
    if (!config.ok()) Die(config.status().ToString());
    auto loaded = convserve::repository::LoadModelVersion(model_dir, name, version, *config);
    if (!loaded.ok()) Die(loaded.status().ToString());
    auto bench = std::unique_ptr<EngineBench>(new EngineBench());
    bench->model_ = *std::move(loaded);
    if (bench->model_->engine_model->inputs().size() != 1 ||
        bench->model_->config.input(0).data_type() != inference::TYPE_FP32) {
      Die(absl::StrCat("model '", name, "': the bench drives models with one FP32 input"));
    }
    auto plan = bench->model_->engine_model->GetPlan(1, 1);
    if (!plan.ok()) Die(plan.status().ToString());
    bench->image_elements_ = convserve::engine::NumElements((*plan)->input_infos()[0].dims);
    bench->output_elements_ = convserve::engine::NumElements((*plan)->output_infos()[0].dims);
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.f, 1.f);
    bench->images_.resize(static_cast<size_t>(pool_size));
    for (auto& image : bench->images_) {
      image.resize(static_cast<size_t>(bench->image_elements_));
      for (float& v : image) v = normal(rng);
    }
    return bench;
  }

  const convserve::repository::ModelVersion& model() const { return *model_; }
  int64_t max_batch() const { return std::max<int64_t>(1, model_->config.max_batch_size()); }
  const std::vector<std::vector<float>>& images() const { return images_; }
  int64_t output_elements() const { return output_elements_; }

  // Batch-1 output for images()[index] (to check that the server computes the same).
  std::vector<float> Infer(size_t index, int threads) const {
    Batch batch = MakeBatch(1, threads, index);
    absl::Status status = batch.plan->Run(*batch.workspace, batch.inputs, batch.outputs,
                                          convserve::engine::RunOptions{threads});
    if (!status.ok()) Die(status.ToString());
    return batch.output;
  }

  EngineRound Measure(int threads, double latency_seconds, double seconds_per_batch) const {
    EngineRound round;
    {
      Batch batch = MakeBatch(1, threads, 0);
      std::vector<double> samples_us;
      RunFor(batch, threads, 0.05, nullptr);  // warm-up: caches, clock
      RunFor(batch, threads, latency_seconds, &samples_us);
      round.p50_us = Percentile(samples_us, 0.5);
      round.p99_us = Percentile(samples_us, 0.99);
      round.latency_runs = samples_us.size();
    }
    for (int64_t b = 1; b <= max_batch(); b *= 2) {
      Batch batch = MakeBatch(b, threads, 0);
      RunFor(batch, threads, 0.02, nullptr);
      const auto start = Clock::now();
      const uint64_t runs = RunFor(batch, threads, seconds_per_batch, nullptr);
      const double ips = static_cast<double>(runs * b) / SecondsSince(start);
      round.images_per_s.emplace_back(b, ips);
      if (ips > round.best_images_per_s) {
        round.best_images_per_s = ips;
        round.best_batch = b;
      }
    }
    return round;
  }

 private:
  struct Batch {
    std::shared_ptr<const convserve::engine::Plan> plan;
    std::unique_ptr<convserve::engine::Workspace> workspace;
    std::vector<float> input, output;
    std::vector<TensorView> inputs, outputs;
  };

  EngineBench() = default;

  Batch MakeBatch(int64_t size, int threads, size_t first_image) const {
    Batch batch;
    auto plan = model_->engine_model->GetPlan(size, threads);
    if (!plan.ok()) Die(plan.status().ToString());
    batch.plan = *plan;
    batch.workspace = batch.plan->CreateWorkspace();
    for (int64_t i = 0; i < size; ++i) {
      const auto& image = images_[(first_image + static_cast<size_t>(i)) % images_.size()];
      batch.input.insert(batch.input.end(), image.begin(), image.end());
    }
    batch.output.resize(static_cast<size_t>(output_elements_ * size));
    batch.inputs.push_back(
        {DataType::kFloat32, batch.plan->input_infos()[0].dims, batch.input.data()});
    batch.outputs.push_back(
        {DataType::kFloat32, batch.plan->output_infos()[0].dims, batch.output.data()});
    return batch;
  }

  // Runs back to back for `seconds` (at least 3 runs); per-run microseconds into `samples_us`.
  static uint64_t RunFor(Batch& batch, int threads, double seconds,
                         std::vector<double>* samples_us) {
    const convserve::engine::RunOptions options{threads};
    const auto start = Clock::now();
    uint64_t runs = 0;
    while (runs < 3 || SecondsSince(start) < seconds) {
      const auto t0 = Clock::now();
      absl::Status status = batch.plan->Run(*batch.workspace, batch.inputs, batch.outputs, options);
      if (!status.ok()) Die(status.ToString());
      if (samples_us) {
        samples_us->push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      ++runs;
    }
    return runs;
  }

  std::shared_ptr<const convserve::repository::ModelVersion> model_;
  int64_t image_elements_ = 0;
  int64_t output_elements_ = 0;
  std::vector<std::vector<float>> images_;
};

// ---------------------------------------------------------------------------------------------
// The server, as a child process.

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) Die("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    Die("cannot find a free loopback port");
  }
  const int port = ntohs(address.sin_port);
  close(fd);
  return port;
}

class ServerProcess {
 public:
  ServerProcess(const std::string& binary, const std::vector<std::string>& args,
                const fs::path& log_path)
      : log_path_(log_path) {
    std::vector<std::string> argv_storage = {binary};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    pid_ = fork();
    if (pid_ < 0) Die("fork failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive the bench
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log >= 0) {
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        close(log);
      }
      std::vector<char*> argv;
      for (auto& a : argv_storage) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~ServerProcess() { Stop(); }

  pid_t pid() const { return pid_; }

  // False (and the exit status in `why`) when the process has exited.
  bool Running(std::string* why) {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      *why = WIFEXITED(status) ? absl::StrCat("exited with ", WEXITSTATUS(status))
                               : absl::StrCat("killed by signal ", WTERMSIG(status));
      pid_ = -1;
      return false;
    }
    return true;
  }

  std::string LogTail() const {
    std::ifstream in(log_path_);
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    const size_t from = lines.size() > 20 ? lines.size() - 20 : 0;
    return absl::StrJoin(lines.begin() + static_cast<long>(from), lines.end(), "\n");
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  fs::path log_path_;
};

using Stub = inference::GRPCInferenceService::Stub;

// A unary call whose request names a model, with a 10 s deadline.
template <typename Request, typename Response>
grpc::Status CallForModel(Stub& stub,
                          grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                       Response*),
                          const std::string& model, Response* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  Request request;
  request.set_name(model);
  return (stub.*method)(&context, request, response);
}

// Waits (blocking RPCs with wait_for_ready, no sleeps) until ServerReady and ModelReady of every
// model answer true; dies with the server's log when it exits or does not get ready in time.
void WaitUntilReady(ServerProcess& server, Stub& stub, const std::vector<std::string>& models) {
  const auto give_up = Clock::now() + std::chrono::seconds(120);
  const auto fail = [&](const std::string& why) {
    Die(absl::StrCat("server not ready: ", why, "\n--- server log ---\n", server.LogTail()));
  };
  bool ready = false;
  while (!ready) {
    std::string why;
    if (!server.Running(&why)) fail(why);
    if (Clock::now() > give_up) fail("no answer in 120 s");
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    inference::ServerReadyResponse response;
    const grpc::Status status =
        stub.ServerReady(&context, inference::ServerReadyRequest(), &response);
    ready = status.ok() && response.ready();
    if (status.ok() && !response.ready()) fail("ServerReady answered false");
  }
  for (const auto& model : models) {
    inference::ModelReadyResponse response;
    const grpc::Status status = CallForModel(stub, &Stub::ModelReady, model, &response);
    if (!status.ok() || !response.ready()) {
      fail(absl::StrCat("model '", model, "' is not ready (", status.error_message(), ")"));
    }
  }
}

struct ServerStats {
  uint64_t executions = 0, inferences = 0, queue_ns = 0, queue_count = 0;
  uint64_t batch_infer_ns = 0, batch_images = 0;  // from batch_stats: per execution
};

ServerStats ReadServerStats(Stub& stub, const std::string& model) {
  inference::ModelStatisticsResponse response;
  const grpc::Status status = CallForModel(stub, &Stub::ModelStatistics, model, &response);
  if (!status.ok()) Die("ModelStatistics failed: " + status.error_message());
  ServerStats stats;
  for (const auto& s : response.model_stats()) {
    stats.executions += s.execution_count();
    stats.inferences += s.inference_count();
    for (const auto& b : s.batch_stats()) {
      stats.batch_infer_ns += b.compute_infer().ns();
      stats.batch_images += b.batch_size() * b.compute_infer().count();
    }
    stats.queue_ns += s.inference_stats().queue().ns();
    stats.queue_count += s.inference_stats().queue().count();
  }
  return stats;
}

// One closed-loop phase against the server.
struct Phase {
  int concurrency = 0;
  int images_per_request = 1;
  double seconds = 0;
  uint64_t requests = 0;
  double p50_us = 0, p99_us = 0, images_per_s = 0;
  double client_cores = 0, server_cores = 0, server_grpc_cores = 0, machine_cores = 0;
  double client_cpu_us_per_request = 0, server_cpu_us_per_request = 0;
  double avg_batch = 0, infer_us_per_image = 0, queue_us = 0;
};

template <typename Response>
struct Call {
  grpc::ClientContext context;
  Response response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader;
  Clock::time_point sent;
};

template <typename Request, typename Response>
using AsyncMethod = std::function<std::unique_ptr<grpc::ClientAsyncResponseReader<Response>>(
    grpc::ClientContext*, const Request&, grpc::CompletionQueue*)>;

// How the client thread waits for its answers: asleep in the completion queue (what most clients
// do; on this machine the wake-up when the answer arrives costs tens of microseconds), or polling
// it without sleeping (a core spent so that the client's wake-up is not in the latency).
enum class ClientWait { kSleep, kPoll };

// `concurrency` calls in flight on one completion queue, each replaced as soon as it completes,
// until `seconds` have passed; then drains. Dies on a failed call or an answer `valid` rejects.
// Returns per-request latencies in microseconds.
template <typename Request, typename Response>
std::vector<double> DriveClosedLoop(const AsyncMethod<Request, Response>& method,
                                    const std::vector<Request>& requests, int concurrency,
                                    double seconds,
                                    const std::function<bool(const Response&)>& valid,
                                    ClientWait wait = ClientWait::kSleep) {
  grpc::CompletionQueue queue;
  std::vector<double> latencies_us;
  size_t next = 0;
  int in_flight = 0;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  const auto start_call = [&] {
    auto* call = new Call<Response>();
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    call->sent = Clock::now();
    call->reader = method(&call->context, requests[next++ % requests.size()], &queue);
    call->reader->Finish(&call->response, &call->status, call);
    ++in_flight;
  };
  for (int c = 0; c < concurrency; ++c) start_call();
  void* tag = nullptr;
  bool ok = false;
  // Polling: the same loop as a server thread's spin for its next call (spin_next.h), bounded
  // by the call's deadline.
  const auto poll_for = wait == ClientWait::kPoll
                            ? std::chrono::microseconds(std::chrono::seconds(30))
                            : std::chrono::microseconds(0);
  while (in_flight > 0 && convserve::api::NextEvent(
                              &queue, poll_for, [] { return true; }, nullptr, &tag, &ok)) {
    std::unique_ptr<Call<Response>> call(static_cast<Call<Response>*>(tag));
    const auto now = Clock::now();
    --in_flight;
    if (!ok || !call->status.ok()) {
      Die(absl::StrCat("call failed: ", call->status.error_code(), " ",
                       call->status.error_message()));
    }
    if (!valid(call->response)) Die("unexpected answer: " + call->response.ShortDebugString());
    latencies_us.push_back(std::chrono::duration<double, std::micro>(now - call->sent).count());
    if (now < end) start_call();
  }
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return latencies_us;
}

// `streams` ModelStreamInfer streams (Triton's streaming API) on one completion queue, each
// with `depth` requests in flight: a new one is written as soon as an answer is read (one write
// at a time per stream, the others wait their turn in this client), until `seconds` have passed;
// then each stream closes its side and finishes. With depth > 1 each request carries its own id
// and an answer is matched to its request by id (a stream answers in the order requests finish).
// Dies on a failed stream, an error answer, an unknown id, or an answer `valid` rejects. Returns
// per-request latencies in microseconds, from when the request was due to be written.
std::vector<double> DriveStreams(
    Stub& stub, const std::vector<inference::ModelInferRequest>& requests, int streams_count,
    int depth, double seconds,
    const std::function<bool(const inference::ModelInferResponse&)>& valid, ClientWait wait) {
  struct Stream;
  // One tag per operation kind, so that a write and a read may be outstanding together.
  struct Op {
    Stream* stream;
    enum Kind { kStarted, kWritten, kRead, kWritesDone, kFinished } kind;
  };
  struct Stream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientAsyncReaderWriter<inference::ModelInferRequest,
                                                  inference::ModelStreamInferResponse>>
        rw;
    inference::ModelStreamInferResponse answer;
    grpc::Status status;
    std::map<std::string, Clock::time_point> in_flight;  // by id ("" with depth 1): when due
    std::deque<const inference::ModelInferRequest*> to_write;
    std::deque<inference::ModelInferRequest> copies;  // with depth > 1: the requests with ids
    uint64_t sequence = 0;
    bool writing = false, reading = false, closing = false;
    Op started{this, Op::kStarted}, written{this, Op::kWritten}, read{this, Op::kRead},
        writes_done{this, Op::kWritesDone}, finished{this, Op::kFinished};
  };
  grpc::CompletionQueue queue;
  std::vector<std::unique_ptr<Stream>> streams;
  std::vector<double> latencies_us;
  size_t next = 0;
  int open = 0;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  const auto write_next = [&](Stream& stream) {
    if (stream.writing || stream.to_write.empty()) return;
    stream.writing = true;
    stream.rw->Write(*stream.to_write.front(), &stream.written);
    stream.to_write.pop_front();
  };
  const auto read_next = [&](Stream& stream) {
    if (stream.reading || stream.in_flight.empty()) return;
    stream.reading = true;
    stream.rw->Read(&stream.answer, &stream.read);
  };
  const auto send = [&](Stream& stream) {
    const inference::ModelInferRequest& request = requests[next++ % requests.size()];
    if (depth == 1) {
      stream.in_flight[""] = Clock::now();
      stream.to_write.push_back(&request);
    } else {
      stream.copies.push_back(request);
      stream.copies.back().set_id(std::to_string(stream.sequence++));
      stream.in_flight[stream.copies.back().id()] = Clock::now();
      stream.to_write.push_back(&stream.copies.back());
    }
    write_next(stream);
  };
  for (int c = 0; c < streams_count; ++c) {
    auto stream = std::make_unique<Stream>();
    stream->context.set_deadline(std::chrono::system_clock::now() +
                                 std::chrono::seconds(60 + static_cast<int64_t>(seconds)));
    stream->rw = stub.AsyncModelStreamInfer(&stream->context, &queue, &stream->started);
    streams.push_back(std::move(stream));
    ++open;
  }
  const auto poll_for = wait == ClientWait::kPoll
                            ? std::chrono::microseconds(std::chrono::seconds(30))
                            : std::chrono::microseconds(0);
  void* tag = nullptr;
  bool ok = false;
  while (open > 0 && convserve::api::NextEvent(
                         &queue, poll_for, [] { return true; }, nullptr, &tag, &ok)) {
    const Op& op = *static_cast<Op*>(tag);
    Stream& stream = *op.stream;
    if (!ok && op.kind != Op::kFinished) Die("a ModelStreamInfer stream failed");
    switch (op.kind) {
      case Op::kStarted:
        for (int d = 0; d < depth; ++d) send(stream);
        read_next(stream);
        break;
      case Op::kWritten:
        stream.writing = false;
        if (depth > 1) stream.copies.pop_front();  // written in order
        write_next(stream);
        if (!stream.writing && stream.closing) stream.rw->WritesDone(&stream.writes_done);
        break;
      case Op::kRead: {
        stream.reading = false;
        const auto now = Clock::now();
        if (!stream.answer.error_message().empty()) {
          Die("error answer on a stream: " + stream.answer.error_message());
        }
        const inference::ModelInferResponse& response = stream.answer.infer_response();
        if (!valid(response)) Die("unexpected answer: " + stream.answer.ShortDebugString());
        const auto request = stream.in_flight.find(depth == 1 ? std::string() : response.id());
        if (request == stream.in_flight.end()) Die("an answer to no request: id " + response.id());
        latencies_us.push_back(
            std::chrono::duration<double, std::micro>(now - request->second).count());
        stream.in_flight.erase(request);
        if (now < end) send(stream);
        read_next(stream);
        if (stream.in_flight.empty()) {  // the time is up and every answer came
          stream.closing = true;
          if (!stream.writing) stream.rw->WritesDone(&stream.writes_done);
        }
        break;
      }
      case Op::kWritesDone:
        stream.rw->Finish(&stream.status, &stream.finished);
        break;
      case Op::kFinished:
        if (!ok || !stream.status.ok()) {
          Die(absl::StrCat("stream ended with ", stream.status.error_code(), " ",
                           stream.status.error_message()));
        }
        --open;
        break;
    }
  }
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return latencies_us;
}

// How requests reach the server: one ModelInfer call each; on ModelStreamInfer streams, one per
// request in flight; or all of them pipelined on one stream.
enum class Transport { kUnary, kStream, kPipelinedStream };

std::vector<double> DriveInfer(Stub& stub,
                               const std::vector<inference::ModelInferRequest>& requests,
                               int concurrency, double seconds, size_t expected_output_bytes,
                               ClientWait wait, Transport transport) {
  const std::function<bool(const inference::ModelInferResponse&)> valid =
      [&](const inference::ModelInferResponse& response) {
        return response.raw_output_contents_size() == 1 &&
               response.raw_output_contents(0).size() == expected_output_bytes;
      };
  if (transport == Transport::kStream) {
    return DriveStreams(stub, requests, concurrency, 1, seconds, valid, wait);
  }
  if (transport == Transport::kPipelinedStream) {
    return DriveStreams(stub, requests, 1, concurrency, seconds, valid, wait);
  }
  return DriveClosedLoop<inference::ModelInferRequest, inference::ModelInferResponse>(
      [&](grpc::ClientContext* context, const inference::ModelInferRequest& request,
          grpc::CompletionQueue* queue) { return stub.AsyncModelInfer(context, request, queue); },
      requests, concurrency, seconds, valid, wait);
}

// The floor of any RPC on this machine: ServerLive (empty request, one bool back) at
// concurrency 1.
struct Floor {
  double p50_us = 0, p99_us = 0;
  double client_cpu_us = 0, server_cpu_us = 0;  // per call
};

Floor MeasureRpcFloor(Stub& stub, pid_t server_pid, double seconds) {
  const std::vector<inference::ServerLiveRequest> requests(1);
  const AsyncMethod<inference::ServerLiveRequest, inference::ServerLiveResponse> live =
      [&](grpc::ClientContext* context, const inference::ServerLiveRequest& request,
          grpc::CompletionQueue* queue) { return stub.AsyncServerLive(context, request, queue); };
  const std::function<bool(const inference::ServerLiveResponse&)> valid =
      [](const inference::ServerLiveResponse& r) { return r.live(); };
  DriveClosedLoop(live, requests, 1, 0.1, valid);
  const CpuMark before = MarkCpu(server_pid);
  const std::vector<double> latencies = DriveClosedLoop(live, requests, 1, seconds, valid);
  const CpuMark after = MarkCpu(server_pid);
  const double calls = static_cast<double>(latencies.size());
  return {Percentile(latencies, 0.5), Percentile(latencies, 0.99),
          (after.client - before.client) * 1e6 / calls,
          (after.server.total() - before.server.total()) * 1e6 / calls};
}

// Which server a phase measures: convserve-server (ModelStatistics read before and after) or
// the do-nothing server (which has none).
enum class Peer { kConvserve, kNull };

// `expected_output_bytes` is per request (images_per_request times one image's output).
Phase RunPhase(Stub& stub, pid_t server_pid, const std::string& model,
               const std::vector<inference::ModelInferRequest>& requests, int images_per_request,
               int concurrency, double seconds, size_t expected_output_bytes,
               Peer peer = Peer::kConvserve, ClientWait wait = ClientWait::kSleep,
               Transport transport = Transport::kUnary) {
  const bool server_statistics = peer == Peer::kConvserve;
  DriveInfer(stub, requests, concurrency, 0.15, expected_output_bytes, wait, transport);  // warm-up
  const ServerStats before = server_statistics ? ReadServerStats(stub, model) : ServerStats{};
  const CpuMark mark = MarkCpu(server_pid);
  const std::vector<double> latencies =
      DriveInfer(stub, requests, concurrency, seconds, expected_output_bytes, wait, transport);
  const CpuMark after = MarkCpu(server_pid);
  const ServerStats stats = server_statistics ? ReadServerStats(stub, model) : ServerStats{};

  Phase phase;
  phase.concurrency = concurrency;
  phase.images_per_request = images_per_request;
  phase.seconds = std::chrono::duration<double>(after.at - mark.at).count();
  phase.requests = latencies.size();
  phase.p50_us = Percentile(latencies, 0.5);
  phase.p99_us = Percentile(latencies, 0.99);
  phase.images_per_s = static_cast<double>(phase.requests) * images_per_request / phase.seconds;
  const double client = after.client - mark.client;
  const double server = after.server.total() - mark.server.total();
  phase.client_cores = client / phase.seconds;
  phase.server_cores = server / phase.seconds;
  phase.server_grpc_cores = (after.server.grpc - mark.server.grpc) / phase.seconds;
  phase.machine_cores = (after.machine - mark.machine) / phase.seconds;
  phase.client_cpu_us_per_request = client * 1e6 / static_cast<double>(phase.requests);
  phase.server_cpu_us_per_request = server * 1e6 / static_cast<double>(phase.requests);
  const uint64_t executions = stats.executions - before.executions;
  const uint64_t inferences = stats.inferences - before.inferences;
  phase.avg_batch = executions ? static_cast<double>(inferences) / executions : 0;
  const uint64_t images = stats.batch_images - before.batch_images;
  phase.infer_us_per_image =
      images ? (stats.batch_infer_ns - before.batch_infer_ns) / 1e3 / images : 0;
  const uint64_t queued = stats.queue_count - before.queue_count;
  phase.queue_us = queued ? (stats.queue_ns - before.queue_ns) / 1e3 / queued : 0;
  return phase;
}

// A request for `images` images of `model`: input 0 as `datatype` with `raw` as its raw
// contents, shape [images, dims...] (BYTES: [images]).
inference::ModelInferRequest ImagesRequest(const convserve::repository::ModelVersion& model,
                                           const std::string& datatype, std::string raw,
                                           int64_t images) {
  inference::ModelInferRequest request;
  request.set_model_name(model.name);
  auto* input = request.add_inputs();
  input->set_name(model.config.input(0).name());
  input->set_datatype(datatype);
  input->add_shape(images);
  if (datatype != "BYTES") {
    for (int64_t d : model.config.input(0).dims()) input->add_shape(d);
  }
  request.add_raw_input_contents(std::move(raw));
  return request;
}

// `images` FP32 images, concatenated in `data`, as one [images, dims...] tensor.
inference::ModelInferRequest Fp32Request(const convserve::repository::ModelVersion& model,
                                         const std::vector<float>& data, int64_t images) {
  return ImagesRequest(
      model, "FP32",
      std::string(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float)), images);
}

// A PNG file as a BYTES element: 4-byte little-endian length, then the bytes.
inference::ModelInferRequest PngRequest(const convserve::repository::ModelVersion& model,
                                        const std::string& png) {
  const uint32_t length = static_cast<uint32_t>(png.size());
  return ImagesRequest(model, "BYTES", std::string(reinterpret_cast<const char*>(&length), 4) + png,
                       1);
}

// ---------------------------------------------------------------------------------------------
// Orchestration and results.

struct Options {
  std::string server;
  std::string repository = "models/repository";
  std::string models = "fashion-k3,fashion-sep,fashion-mlp";
  std::string threads = "1";
  int rounds = 5;
  double seconds = 1.0;
  std::string png = "tests/data/images/t10k-00000_label-9_ankle-boot.png";
  std::string png_models = "fashion-k3";
  std::string null_server;  // default: convserve-null-server beside this binary
  // Both servers' --grpc-spin-us / --spin-us: the server's default.
  int spin_us = convserve::api::ServerOptions{}.grpc_spin_us;
  std::string out = "bench/SERVER.md";
  std::string json;
};

// One (model, threads) configuration over all rounds.
struct Row {
  std::string model;
  int threads = 0;
  int64_t max_batch = 0;
  int64_t max_queue_delay_us = 0;  // the model config's dynamic_batching
  double check_max_abs_diff = 0;
  std::vector<EngineRound> engine;
  std::vector<Phase> c1, c8, png_c1, png_c8;
  std::vector<Phase> batch_c8;  // kClientBatch images per request, concurrency 8
  std::vector<Floor> floor;     // ServerLive at concurrency 1, measured just before c1
  // The same FP32 requests against convserve-null-server (answers without doing anything).
  std::vector<Phase> null_c1, null_c8;
  std::vector<Phase> null_batch_c8;  // kClientBatch images per request, as batch_c8
  // convserve-null-server at concurrency 1 busy-waiting the engine's batch-1 p50 of the same
  // round before each answer (its `busy_us` parameter): a server that computes as fast as the
  // engine in place and does nothing else.
  std::vector<Phase> null_busy_c1;
  // Concurrency 1 with a client that polls for its answer (ClientWait::kPoll): convserve-server,
  // the do-nothing server, and the do-nothing server busy-waiting as above. Not measured when the
  // server's threads take every core (the polling client would take one from them).
  std::vector<Phase> poll_c1, null_poll_c1, null_busy_poll_c1;
  // FP32 on ModelStreamInfer streams (one per request in flight), concurrency 1 and 8.
  std::vector<Phase> stream_c1, stream_c8;
  // The same FP32 requests, kThroughputConcurrency of them in flight pipelined on one stream
  // (answers matched by id).
  std::vector<Phase> pipelined_c8;
  // The same against the do-nothing server, and at concurrency 1 against it busy-waiting the
  // engine's p50 per request (as null_busy_c1, on streams).
  std::vector<Phase> null_stream_c1, null_stream_c8, null_busy_stream_c1;
};

std::vector<double> Collect(size_t n, const std::function<double(size_t)>& at) {
  std::vector<double> values;
  for (size_t i = 0; i < n; ++i) values.push_back(at(i));
  return values;
}

std::string Cell(const Spread& s, int digits) {
  return absl::StrCat(Fixed(s.median, digits), " (", Fixed(s.best, digits), ")");
}

struct Summary {  // what the tables show for one row and one input kind
  Spread engine_p50, engine_p99, server_p50, server_p99, overhead_p50, overhead_p99;
  Spread floor_p50, floor_p99, floor_client_cpu, floor_server_cpu;
  // convserve-null-server with the same FP32 requests: c1 p50, c8 images/s and its ratio to the
  // engine's best, server CPU per request at c8.
  Spread null_p50, null_ips, null_ratio, null_server_us;
  // Concurrency 1, FP32, per round then the median: the do-nothing server busy-waiting the
  // engine's p50 (its p50, and that minus the engine's p50: the overhead by the target's measure
  // of a server whose only cost is computing as fast as the engine); convserve's own cost =
  // its overhead - that overhead. The same with a polling client (poll_*), with the do-nothing
  // server's plain p50 too.
  Spread null_busy_p50, null_busy_overhead, own_cost;
  Spread poll_overhead, null_poll_p50, null_busy_poll_overhead, poll_own_cost;
  Spread c1_infer_us, c1_client_us, c1_server_us, c1_queue_us;
  Spread engine_best, engine_at_max_c, server_ips, ratio, ceiling;
  Spread avg_batch, infer_us, queue_us, client_cores, server_cores, server_grpc_cores, other_cores,
      client_us, server_us;
  int64_t best_batch = 0;
  int images_per_request = 1;  // of the c8 phases
};

Summary Summarize(const Row& row, const std::vector<Phase>& c1, const std::vector<Phase>& c8) {
  Summary s;
  const size_t n = std::min({row.engine.size(), c1.size(), c8.size()});
  const auto& e = row.engine;
  s.engine_p50 = SpreadOf(Collect(n, [&](size_t i) { return e[i].p50_us; }), true);
  s.engine_p99 = SpreadOf(Collect(n, [&](size_t i) { return e[i].p99_us; }), true);
  s.server_p50 = SpreadOf(Collect(n, [&](size_t i) { return c1[i].p50_us; }), true);
  s.server_p99 = SpreadOf(Collect(n, [&](size_t i) { return c1[i].p99_us; }), true);
  s.overhead_p50 = SpreadOf(Collect(n, [&](size_t i) { return c1[i].p50_us - e[i].p50_us; }), true);
  s.overhead_p99 = SpreadOf(Collect(n, [&](size_t i) { return c1[i].p99_us - e[i].p99_us; }), true);
  s.floor_p50 = SpreadOf(Collect(n, [&](size_t i) { return row.floor[i].p50_us; }), true);
  s.floor_p99 = SpreadOf(Collect(n, [&](size_t i) { return row.floor[i].p99_us; }), true);
  s.floor_client_cpu =
      SpreadOf(Collect(n, [&](size_t i) { return row.floor[i].client_cpu_us; }), true);
  s.floor_server_cpu =
      SpreadOf(Collect(n, [&](size_t i) { return row.floor[i].server_cpu_us; }), true);
  // The do-nothing server's phase with as many images per request as `c8`'s.
  const std::vector<Phase>& null_c8 =
      n > 0 && c8[0].images_per_request > 1 ? row.null_batch_c8 : row.null_c8;
  if (row.null_c1.size() >= n && null_c8.size() >= n) {
    s.null_p50 = SpreadOf(Collect(n, [&](size_t i) { return row.null_c1[i].p50_us; }), true);
    s.null_ips = SpreadOf(Collect(n, [&](size_t i) { return null_c8[i].images_per_s; }), false);
    s.null_ratio = SpreadOf(
        Collect(n, [&](size_t i) { return null_c8[i].images_per_s / e[i].best_images_per_s; }),
        false);
    s.null_server_us =
        SpreadOf(Collect(n, [&](size_t i) { return null_c8[i].server_cpu_us_per_request; }), true);
  }
  // Per round: p50 of `a` minus (p50 of `b`, or the engine's p50 where `b` is null).
  const auto difference = [&](const std::vector<Phase>& a, const std::vector<Phase>* b) {
    return SpreadOf(
        Collect(n, [&](size_t i) { return a[i].p50_us - (b ? (*b)[i].p50_us : e[i].p50_us); }),
        true);
  };
  const auto p50s = [&](const std::vector<Phase>& phases) {
    return SpreadOf(Collect(n, [&](size_t i) { return phases[i].p50_us; }), true);
  };
  if (row.null_busy_c1.size() >= n) {
    s.null_busy_p50 = p50s(row.null_busy_c1);
    s.null_busy_overhead = difference(row.null_busy_c1, nullptr);
    s.own_cost = difference(c1, &row.null_busy_c1);
  }
  if (n > 0 && row.poll_c1.size() >= n && row.null_poll_c1.size() >= n &&
      row.null_busy_poll_c1.size() >= n) {
    s.poll_overhead = difference(row.poll_c1, nullptr);
    s.null_poll_p50 = p50s(row.null_poll_c1);
    s.null_busy_poll_overhead = difference(row.null_busy_poll_c1, nullptr);
    s.poll_own_cost = difference(row.poll_c1, &row.null_busy_poll_c1);
  }
  s.c1_infer_us = SpreadOf(Collect(n, [&](size_t i) { return c1[i].infer_us_per_image; }), true);
  s.c1_client_us =
      SpreadOf(Collect(n, [&](size_t i) { return c1[i].client_cpu_us_per_request; }), true);
  s.c1_queue_us = SpreadOf(Collect(n, [&](size_t i) { return c1[i].queue_us; }), true);
  s.c1_server_us =
      SpreadOf(Collect(n, [&](size_t i) { return c1[i].server_cpu_us_per_request; }), true);
  s.engine_best = SpreadOf(Collect(n, [&](size_t i) { return e[i].best_images_per_s; }), false);
  s.engine_at_max_c = SpreadOf(
      Collect(n, [&](size_t i) { return e[i].ImagesPerSAt(kThroughputConcurrency); }), false);
  if (n > 0) s.images_per_request = c8[0].images_per_request;
  // The ceiling with one image per request: the engine at batch kThroughputConcurrency. With
  // more images per request the server may form larger batches, so no ceiling is claimed.
  if (s.images_per_request == 1) {
    s.ceiling = SpreadOf(Collect(n,
                                 [&](size_t i) {
                                   return e[i].ImagesPerSAt(kThroughputConcurrency) /
                                          e[i].best_images_per_s;
                                 }),
                         false);
  }
  s.server_ips = SpreadOf(Collect(n, [&](size_t i) { return c8[i].images_per_s; }), false);
  s.ratio = SpreadOf(
      Collect(n, [&](size_t i) { return c8[i].images_per_s / e[i].best_images_per_s; }), false);
  const auto c8_spread = [&](double Phase::*field, bool lower) {
    return SpreadOf(Collect(n, [&](size_t i) { return c8[i].*field; }), lower);
  };
  s.avg_batch = c8_spread(&Phase::avg_batch, false);
  s.infer_us = c8_spread(&Phase::infer_us_per_image, true);
  s.queue_us = c8_spread(&Phase::queue_us, true);
  s.client_cores = c8_spread(&Phase::client_cores, true);
  s.server_cores = c8_spread(&Phase::server_cores, true);
  s.server_grpc_cores = c8_spread(&Phase::server_grpc_cores, true);
  s.client_us = c8_spread(&Phase::client_cpu_us_per_request, true);
  s.server_us = c8_spread(&Phase::server_cpu_us_per_request, true);
  s.other_cores = SpreadOf(
      Collect(n,
              [&](size_t i) {
                return std::max(0.0, c8[i].machine_cores - c8[i].client_cores - c8[i].server_cores);
              }),
      true);
  std::map<int64_t, int> votes;
  for (size_t i = 0; i < n; ++i) ++votes[e[i].best_batch];
  int most = 0;
  for (const auto& [b, count] : votes) {
    if (count > most) {
      most = count;
      s.best_batch = b;
    }
  }
  return s;
}

// Client plus server CPU microseconds per image at concurrency kThroughputConcurrency (medians).
double CpuUsPerImage(const Summary& s) {
  return (s.client_us.median + s.server_us.median) / s.images_per_request;
}

std::string TargetWord(bool met) { return met ? "met" : "**missed**"; }

// {"key": value, ...} from already formatted values.
std::string JsonObject(std::initializer_list<std::pair<std::string, std::string>> fields) {
  std::string out = "{";
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&out, out.size() > 1 ? ", " : "", JsonString(key), ": ", value);
  }
  return out + "}";
}

std::string PhaseJson(const Phase& p) {
  return JsonObject({{"concurrency", std::to_string(p.concurrency)},
                     {"images_per_request", std::to_string(p.images_per_request)},
                     {"seconds", JsonNumber(p.seconds)},
                     {"requests", std::to_string(p.requests)},
                     {"p50_us", JsonNumber(p.p50_us)},
                     {"p99_us", JsonNumber(p.p99_us)},
                     {"images_per_s", JsonNumber(p.images_per_s)},
                     {"avg_batch", JsonNumber(p.avg_batch)},
                     {"server_infer_us_per_image", JsonNumber(p.infer_us_per_image)},
                     {"server_queue_us", JsonNumber(p.queue_us)},
                     {"client_cpu_cores", JsonNumber(p.client_cores)},
                     {"server_cpu_cores", JsonNumber(p.server_cores)},
                     {"server_grpc_thread_cpu_cores", JsonNumber(p.server_grpc_cores)},
                     {"machine_busy_cores", JsonNumber(p.machine_cores)},
                     {"client_cpu_us_per_request", JsonNumber(p.client_cpu_us_per_request)},
                     {"server_cpu_us_per_request", JsonNumber(p.server_cpu_us_per_request)}});
}

std::string SpreadJson(const Spread& s) {
  return JsonObject({{"median", JsonNumber(s.median)}, {"best", JsonNumber(s.best)}});
}

std::string SummaryJson(const Summary& s) {
  const std::string c = std::to_string(kThroughputConcurrency);
  return JsonObject(
      {{"engine_p50_us", SpreadJson(s.engine_p50)},
       {"engine_p99_us", SpreadJson(s.engine_p99)},
       {"server_p50_us", SpreadJson(s.server_p50)},
       {"server_p99_us", SpreadJson(s.server_p99)},
       {"overhead_p50_us", SpreadJson(s.overhead_p50)},
       {"overhead_p99_us", SpreadJson(s.overhead_p99)},
       {"rpc_floor_server_live_p50_us", SpreadJson(s.floor_p50)},
       {"rpc_floor_server_live_p99_us", SpreadJson(s.floor_p99)},
       {"null_server_p50_us", SpreadJson(s.null_p50)},
       {"null_server_images_per_s_c" + std::to_string(kThroughputConcurrency),
        SpreadJson(s.null_ips)},
       {"null_server_cpu_us_per_request_c" + std::to_string(kThroughputConcurrency),
        SpreadJson(s.null_server_us)},
       {"null_server_busy_engine_p50_p50_us", SpreadJson(s.null_busy_p50)},
       {"null_server_busy_engine_p50_overhead_p50_us", SpreadJson(s.null_busy_overhead)},
       {"own_cost_p50_us", SpreadJson(s.own_cost)},
       {"polling_client_overhead_p50_us", SpreadJson(s.poll_overhead)},
       {"polling_client_null_server_p50_us", SpreadJson(s.null_poll_p50)},
       {"polling_client_null_server_busy_engine_p50_overhead_p50_us",
        SpreadJson(s.null_busy_poll_overhead)},
       {"polling_client_own_cost_p50_us", SpreadJson(s.poll_own_cost)},
       {"server_compute_infer_us_c1", SpreadJson(s.c1_infer_us)},
       {"engine_best_images_per_s", SpreadJson(s.engine_best)},
       {"engine_best_batch", std::to_string(s.best_batch)},
       {"engine_images_per_s_at_batch_" + c, SpreadJson(s.engine_at_max_c)},
       {"server_images_per_s_c" + c, SpreadJson(s.server_ips)},
       {"server_avg_batch_c" + c, SpreadJson(s.avg_batch)},
       {"images_per_request_c" + c, std::to_string(s.images_per_request)},
       {"client_cpu_us_per_request_c" + c, SpreadJson(s.client_us)},
       {"server_cpu_us_per_request_c" + c, SpreadJson(s.server_us)},
       {"throughput_ratio", SpreadJson(s.ratio)},
       {"overhead_p50_target_met", s.overhead_p50.median <= kOverheadTargetUs ? "true" : "false"},
       {"throughput_target_met", s.ratio.median >= kThroughputTarget ? "true" : "false"}});
}

struct Context {
  Options options;
  std::string command_line, date, cpu, simd, kernel, onednn;
  int cores = 0;
  double wall_seconds = 0;
};

// The do-nothing server on ModelStreamInfer streams: its concurrency-1 p50 and concurrency-8
// images/s (with their ratio to the engine's best, per round), medians; "-" when not measured.
struct NullStream {
  Spread c1_p50, ips, ratio;
  // The busy-waiting do-nothing server's overhead on streams, and convserve's stream overhead
  // above it (per round, then the median): convserve's own cost on streams.
  Spread busy_overhead, own_cost;
};
NullStream SummarizeNullStream(const Row& row) {
  NullStream n;
  const size_t rounds =
      std::min({row.engine.size(), row.null_stream_c1.size(), row.null_stream_c8.size()});
  if (rounds == 0) return n;
  n.c1_p50 =
      SpreadOf(Collect(rounds, [&](size_t i) { return row.null_stream_c1[i].p50_us; }), true);
  n.ips = SpreadOf(Collect(rounds, [&](size_t i) { return row.null_stream_c8[i].images_per_s; }),
                   false);
  n.ratio = SpreadOf(Collect(rounds,
                             [&](size_t i) {
                               return row.null_stream_c8[i].images_per_s /
                                      row.engine[i].best_images_per_s;
                             }),
                     false);
  const size_t busy_rounds =
      std::min({row.engine.size(), row.null_busy_stream_c1.size(), row.stream_c1.size()});
  if (busy_rounds > 0) {
    n.busy_overhead = SpreadOf(
        Collect(busy_rounds,
                [&](size_t i) { return row.null_busy_stream_c1[i].p50_us - row.engine[i].p50_us; }),
        true);
    n.own_cost = SpreadOf(
        Collect(
            busy_rounds,
            [&](size_t i) { return row.stream_c1[i].p50_us - row.null_busy_stream_c1[i].p50_us; }),
        true);
  }
  return n;
}
std::string NullStreamCell(const Row& row) {
  const NullStream n = SummarizeNullStream(row);
  if (std::isnan(n.ips.median)) return "- | - | -";
  return absl::StrCat(Fixed(n.c1_p50.median, 0), " / ", Fixed(n.ips.median, 0), " (",
                      Fixed(n.ratio.median * 100, 0), "%) | ", Cell(n.busy_overhead, 0), " | ",
                      Cell(n.own_cost, 0));
}

void WriteJson(const Context& ctx, const std::vector<Row>& rows, const std::string& path) {
  std::ofstream out(path);
  out << "{\n  \"date\": " << JsonString(ctx.date)
      << ",\n  \"machine\": {\"cpu\": " << JsonString(ctx.cpu) << ", \"cores\": " << ctx.cores
      << ", \"simd_flags\": " << JsonString(ctx.simd) << ", \"kernel\": " << JsonString(ctx.kernel)
      << ", \"onednn\": " << JsonString(ctx.onednn) << "},\n"
      << "  \"command\": " << JsonString(ctx.command_line)
      << ",\n  \"config\": {\"rounds\": " << ctx.options.rounds
      << ", \"seconds_per_phase\": " << ctx.options.seconds
      << ", \"threads\": " << JsonString(ctx.options.threads)
      << ", \"models\": " << JsonString(ctx.options.models)
      << ", \"png\": " << JsonString(ctx.options.png)
      << ", \"throughput_concurrency\": " << kThroughputConcurrency
      << ", \"client_batch_images_per_request\": " << kClientBatch
      << ", \"targets\": {\"overhead_p50_us_max\": " << kOverheadTargetUs
      << ", \"throughput_ratio_min\": " << kThroughputTarget << "}},\n"
      << "  \"wall_seconds\": " << JsonNumber(ctx.wall_seconds) << ",\n  \"rows\": [";
  for (size_t r = 0; r < rows.size(); ++r) {
    const Row& row = rows[r];
    out << (r ? ",\n" : "\n") << "    {\"model\": " << JsonString(row.model)
        << ", \"threads\": " << row.threads << ", \"max_batch_size\": " << row.max_batch
        << ", \"server_vs_engine_max_abs_diff\": " << JsonNumber(row.check_max_abs_diff)
        << ",\n     \"fp32\": " << SummaryJson(Summarize(row, row.c1, row.c8));
    if (!row.png_c1.empty()) {
      out << ",\n     \"png\": " << SummaryJson(Summarize(row, row.png_c1, row.png_c8));
    }
    if (!row.batch_c8.empty()) {
      out << ",\n     \"fp32_" << kClientBatch
          << "_images_per_request\": " << SummaryJson(Summarize(row, row.c1, row.batch_c8));
    }
    if (!row.stream_c1.empty() && !row.stream_c8.empty()) {
      out << ",\n     \"fp32_model_stream_infer\": "
          << SummaryJson(Summarize(row, row.stream_c1, row.stream_c8));
      const NullStream n = SummarizeNullStream(row);
      out << ",\n     \"fp32_model_stream_infer_null_server\": "
          << JsonObject({{"c1_p50_us", SpreadJson(n.c1_p50)},
                         {"images_per_s_c8", SpreadJson(n.ips)},
                         {"ratio_to_engine_best", SpreadJson(n.ratio)},
                         {"busy_engine_p50_overhead_p50_us", SpreadJson(n.busy_overhead)},
                         {"own_cost_p50_us", SpreadJson(n.own_cost)}});
    }
    out << ",\n     \"rounds\": [";
    for (size_t i = 0; i < row.engine.size(); ++i) {
      const EngineRound& e = row.engine[i];
      out << (i ? ",\n" : "\n") << "       {\"engine\": {\"p50_us\": " << JsonNumber(e.p50_us)
          << ", \"p99_us\": " << JsonNumber(e.p99_us) << ", \"latency_runs\": " << e.latency_runs
          << ", \"rpc_floor_p50_us\": " << JsonNumber(row.floor[i].p50_us)
          << ", \"rpc_floor_p99_us\": " << JsonNumber(row.floor[i].p99_us)
          << ", \"rpc_floor_client_cpu_us\": " << JsonNumber(row.floor[i].client_cpu_us)
          << ", \"rpc_floor_server_cpu_us\": " << JsonNumber(row.floor[i].server_cpu_us)
          << ", \"images_per_s\": {";
      for (size_t k = 0; k < e.images_per_s.size(); ++k) {
        out << (k ? ", " : "") << "\"" << e.images_per_s[k].first
            << "\": " << JsonNumber(e.images_per_s[k].second);
      }
      out << "}}";
      // This round's phase of `phases` as field `name`, if the round has one.
      const auto field = [&](const std::string& name, const std::vector<Phase>& phases) {
        if (i < phases.size()) out << ",\n        \"" << name << "\": " << PhaseJson(phases[i]);
      };
      const std::string batched = absl::StrCat(kClientBatch, "_images_per_request");
      field("server_c1", row.c1);
      field("server_c8", row.c8);
      field("null_server_c1", row.null_c1);
      field("null_server_c8", row.null_c8);
      field("null_server_c8_" + batched, row.null_batch_c8);
      field("null_server_busy_engine_p50_c1", row.null_busy_c1);
      field("polling_client_server_c1", row.poll_c1);
      field("polling_client_null_server_c1", row.null_poll_c1);
      field("polling_client_null_server_busy_engine_p50_c1", row.null_busy_poll_c1);
      field("stream_server_c1", row.stream_c1);
      field("stream_server_c8", row.stream_c8);
      field("pipelined_stream_server_c8", row.pipelined_c8);
      field("stream_null_server_c1", row.null_stream_c1);
      field("stream_null_server_c8", row.null_stream_c8);
      field("stream_null_server_busy_engine_p50_c1", row.null_busy_stream_c1);
      field("server_c8_" + batched, row.batch_c8);
      field("server_png_c1", row.png_c1);
      field("server_png_c8", row.png_c8);
      out << "}";
    }
    out << "]}";
  }
  out << "\n  ]\n}\n";
}

void WriteMarkdown(const Context& ctx, const std::vector<Row>& rows, const std::string& path) {
  std::ofstream out(path);
  const Options& o = ctx.options;
  std::vector<std::string> delays, c1_queues;
  for (const Row& row : rows) {
    const std::string delay = std::to_string(row.max_queue_delay_us);
    if (std::find(delays.begin(), delays.end(), delay) == delays.end()) delays.push_back(delay);
    c1_queues.push_back(absl::StrCat(
        row.model, " ", Fixed(Summarize(row, row.c1, row.c8).c1_queue_us.median, 0), " us"));
  }
  const std::string delay_us = absl::StrJoin(delays, "/");
  out << "# Server benchmark: convserve-server over loopback against the engine in-process\n\n"
      << "Generated by `" << kDriverCommand << "` (this run: `" << ctx.command_line << "`) on "
      << ctx.date << ", " << ctx.cpu << ", " << ctx.cores << " cores, SIMD flags: " << ctx.simd
      << ", oneDNN " << ctx.onednn << ", Linux " << ctx.kernel
      << ". Full run: " << Fixed(ctx.wall_seconds, 0)
      << " s. Raw numbers per round: `server_results.json`.\n\n"
      << "Method: one `convserve-server` child per thread count (`--grpc-address 127.0.0.1 "
         "--grpc-port <free port> --metrics-port 0 --threads T --log-level warn --grpc-spin-us "
      << o.spin_us
      << "`, the bundled "
         "configs: dynamic batching, max_queue_delay "
      << delay_us
      << " us, one instance), readiness by ServerReady/ModelReady RPCs. The server's scheduler "
         "treats max_queue_delay as an upper bound, not a fixed wait: a batch waits for more "
         "requests only while requests overlap or recent waits collected some, and a lone client "
         "stops waiting for a batch after two waits in a row that collected nothing (see "
         "server/serving/scheduler.h), so the concurrency-1 latencies below do not include the "
      << delay_us << " us batching delay (measured server queue time per request at concurrency 1, "
      << "median: " << absl::StrJoin(c1_queues, ", ") << "). " << o.rounds
      << " interleaved rounds; in each, for each model: the engine in this process "
      << "(same model files, loaded by the repository code the server uses, `Plan::Run` with T "
         "OpenMP threads: batch 1 back to back for "
      << Fixed(o.seconds, 1) << " s, then every batch size 1, 2, 4, ... max_batch_size for "
      << Fixed(o.seconds / 4, 2) << " s each), then the server: concurrency 1 closed loop for "
      << Fixed(o.seconds, 1) << " s (one FP32 28x28 image in `raw_input_contents`, logits back "
      << "raw), then concurrency " << kThroughputConcurrency << " closed loop for "
      << Fixed(o.seconds, 1) << " s (" << kThroughputConcurrency
      << " calls in flight on one gRPC completion queue, one client thread), then the FP32 "
         "requests again at concurrency 1 and "
      << kThroughputConcurrency
      << " on ModelStreamInfer streams (Triton's streaming API: one bidirectional stream per "
         "request in flight, each request written once the answer to the last one on its stream "
         "was read), then "
      << kThroughputConcurrency
      << " of them in flight pipelined on one stream (answers matched by id), then concurrency "
      << kThroughputConcurrency << " with " << kClientBatch << " images per request for "
      << Fixed(o.seconds, 1) << " s (client-side batching: one FP32 [" << kClientBatch
      << ", 1, 28, 28] tensor in `raw_input_contents`, every answer checked to hold "
      << kClientBatch
      << " images' logits); each server phase after 0.15 s of warm-up; then the same FP32 "
         "requests at concurrency 1 and "
      << kThroughputConcurrency
      << " against `convserve-null-server` (bench/null_server.cc), a do-nothing gRPC server of "
         "the same protocol: gRPC's asynchronous API with one completion-queue thread (spinning "
      << o.spin_us
      << " us for the next call like the server's), answering "
         "every ModelInfer at once with an output of the model's size and nothing decoded, "
         "validated, queued or computed. It is the least any server of this protocol pays per "
         "call on this machine, measured in the same rounds; then more concurrency-1 phases: "
         "the do-nothing server busy-waiting the engine's p50 per request, then, with a client "
         "that polls for its answers, convserve-server, the do-nothing server and the "
         "busy-waiting one (see \"convserve's own cost\" below). "
         "Overhead = server latency - "
         "engine batch-1 latency of the same "
         "round. Throughput ratio = server images/s at concurrency "
      << kThroughputConcurrency
      << " / the engine's best images/s over batch sizes in the same round. Cells: median over "
         "rounds (best round). Targets (issue #4): overhead p50 <= "
      << Fixed(kOverheadTargetUs, 0) << " us, ratio >= " << Fixed(kThroughputTarget * 100, 0)
      << "%.\n\n";

  out << "## Verdict\n\n";
  for (const Row& row : rows) {
    const Summary s = Summarize(row, row.c1, row.c8);
    out << "- " << row.model << " (" << row.threads << " thread(s)): overhead p50 "
        << Fixed(s.overhead_p50.median, 0) << " us (target " << Fixed(kOverheadTargetUs, 0)
        << " us: " << (s.overhead_p50.median <= kOverheadTargetUs ? "met" : "**missed**")
        << "), p99 " << Fixed(s.overhead_p99.median, 0) << " us; throughput "
        << Fixed(s.ratio.median * 100, 0) << "% of the engine's best (target "
        << Fixed(kThroughputTarget * 100, 0)
        << "%: " << (s.ratio.median >= kThroughputTarget ? "met" : "**missed**") << ").";
    if (!std::isnan(s.null_p50.median)) {
      out << " The do-nothing gRPC server answers the same request in "
          << Fixed(s.null_p50.median, 0) << " us at p50 ("
          << (s.null_p50.median > kOverheadTargetUs ? "above" : "within")
          << " the overhead target by itself), so convserve adds "
          << Fixed(s.server_p50.median - s.null_p50.median - s.engine_p50.median, 0)
          << " us beyond it and the engine (conversion, validation, scheduling, thread hand-offs, "
             "compute slower than the engine's warm loop). At concurrency "
          << kThroughputConcurrency << " the do-nothing server answers "
          << Fixed(s.null_ips.median, 0) << " one-image requests/s, "
          << Fixed(s.null_ratio.median * 100, 0) << "% of the engine's best images/s"
          << (s.null_ratio.median < kThroughputTarget
                  ? ": with one ModelInfer call per image no server of this protocol reaches "
                    "the throughput target on this machine."
                  : ": gRPC alone does not keep this model from the throughput target.");
    } else if (s.floor_p50.median > kOverheadTargetUs) {
      out << " The RPC floor alone (ServerLive p50 " << Fixed(s.floor_p50.median, 0)
          << " us, no model work) is above the overhead target on this machine.";
    }
    if (!std::isnan(s.null_busy_overhead.median)) {
      out << " Measured the same way, the do-nothing server busy-waiting the engine's p50 before "
             "each answer (its only cost: computing as fast as the engine) has an overhead of "
          << Fixed(s.null_busy_overhead.median, 0) << " us at p50 (target "
          << TargetWord(s.null_busy_overhead.median <= kOverheadTargetUs)
          << "); convserve's overhead is " << Fixed(s.own_cost.median, 0)
          << " us above it (median of the rounds' differences).";
    }
    if (!std::isnan(s.poll_own_cost.median)) {
      out << " With a client that polls for its answer instead of sleeping: convserve's overhead "
          << Fixed(s.poll_overhead.median, 0) << " us (target "
          << TargetWord(s.poll_overhead.median <= kOverheadTargetUs)
          << "), the busy-waiting do-nothing server's "
          << Fixed(s.null_busy_poll_overhead.median, 0) << " us, so "
          << Fixed(s.poll_own_cost.median, 0) << " us above it.";
    }
    if (!row.stream_c1.empty() && !row.stream_c8.empty()) {
      const Summary t = Summarize(row, row.stream_c1, row.stream_c8);
      out << " On ModelStreamInfer streams (the same requests, one stream per request in flight): "
             "overhead p50 "
          << Fixed(t.overhead_p50.median, 0) << " us (target "
          << TargetWord(t.overhead_p50.median <= kOverheadTargetUs) << "), throughput "
          << Fixed(t.ratio.median * 100, 0) << "% of the engine's best (target "
          << Fixed(kThroughputTarget * 100, 0)
          << "%: " << TargetWord(t.ratio.median >= kThroughputTarget) << "), batches of "
          << Fixed(t.avg_batch.median, 1) << ", client+server CPU " << Fixed(CpuUsPerImage(t), 0)
          << " us per image against " << Fixed(CpuUsPerImage(s), 0) << " us with ModelInfer calls.";
      const NullStream n = SummarizeNullStream(row);
      if (!std::isnan(n.own_cost.median)) {
        out << " The busy-waiting do-nothing server's overhead on streams is "
            << Fixed(n.busy_overhead.median, 0) << " us, convserve's "
            << Fixed(n.own_cost.median, 0) << " us above it.";
      }
      if (!std::isnan(n.ratio.median)) {
        out << " The do-nothing server on the same streams answers " << Fixed(n.ips.median, 0)
            << " one-image requests/s, " << Fixed(n.ratio.median * 100, 0)
            << "% of the engine's best"
            << (n.ratio.median < kThroughputTarget
                    ? ": with one image per request, streams or not, no server of this protocol "
                      "reaches the throughput target on this machine."
                    : ".");
      }
    }
    if (!row.stream_c1.empty() && !row.pipelined_c8.empty()) {
      const Summary p = Summarize(row, row.stream_c1, row.pipelined_c8);
      out << " With the " << kThroughputConcurrency
          << " requests pipelined on one stream: " << Fixed(p.server_ips.median, 0)
          << " img/s = " << Fixed(p.ratio.median * 100, 0) << "% of the engine's best (target "
          << Fixed(kThroughputTarget * 100, 0)
          << "%: " << TargetWord(p.ratio.median >= kThroughputTarget) << "), batches of "
          << Fixed(p.avg_batch.median, 1) << ".";
    }
    if (!row.batch_c8.empty()) {
      const Summary b = Summarize(row, row.c1, row.batch_c8);
      out << " With " << kClientBatch << " images per request (client-side batching) at "
          << "concurrency " << kThroughputConcurrency << ": " << Fixed(b.server_ips.median, 0)
          << " img/s = " << Fixed(b.ratio.median * 100, 0) << "% of the engine's best (target "
          << Fixed(kThroughputTarget * 100, 0)
          << "%: " << TargetWord(b.ratio.median >= kThroughputTarget) << "), batches of "
          << Fixed(b.avg_batch.median, 1) << ", client+server CPU " << Fixed(CpuUsPerImage(b), 0)
          << " us per image against " << Fixed(CpuUsPerImage(s), 0)
          << " us with one image per request.";
      if (!std::isnan(b.null_ips.median)) {
        out << " The do-nothing server answers the same " << kClientBatch << "-image requests at "
            << Fixed(b.null_ips.median, 0) << " img/s, " << Fixed(b.null_ratio.median * 100, 0)
            << "% of the engine's best"
            << (b.null_ratio.median < kThroughputTarget
                    ? ": with these requests no server of this protocol reaches the target on "
                      "this machine."
                    : ".");
      }
    }
    out << "\n";
  }
  out << "\nThe machine is shared: the \"other cores\" column below is CPU used by other "
         "processes during the concurrency-8 phases. `--threads 1,2` adds two-thread rows; on "
         "this 2-core machine with other load a two-thread OpenMP team is often preempted "
         "mid-barrier, which makes the engine's own p99 many times its p50, so one thread is "
         "the default.\n\n";

  out << "## Overhead per request, concurrency 1\n\n"
      << "| model | input | threads | engine p50 us | engine p99 us | server p50 us | server p99 "
         "us | overhead p50 us | overhead p99 us | p50 target | RPC floor p50 / p99 us | "
         "do-nothing server p50 us | server - do-nothing - engine p50 us |\n"
      << "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
  const auto latency_row = [&](const Row& row, const std::string& input, const Summary& s) {
    out << "| " << row.model << " | " << input << " | " << row.threads << " | "
        << Cell(s.engine_p50, 0) << " | " << Cell(s.engine_p99, 0) << " | " << Cell(s.server_p50, 0)
        << " | " << Cell(s.server_p99, 0) << " | " << Cell(s.overhead_p50, 0) << " | "
        << Cell(s.overhead_p99, 0) << " | "
        << (s.overhead_p50.median <= kOverheadTargetUs ? "met" : "**missed**") << " | "
        << Fixed(s.floor_p50.median, 0) << " / " << Fixed(s.floor_p99.median, 0) << " | ";
    if (input == "FP32") {
      out << Cell(s.null_p50, 0) << " | "
          << Fixed(s.server_p50.median - s.null_p50.median - s.engine_p50.median, 0) << " |\n";
    } else {
      out << "- | - |\n";
    }
  };
  for (const Row& row : rows) {
    latency_row(row, "FP32", Summarize(row, row.c1, row.c8));
    if (!row.png_c1.empty()) {
      latency_row(row, "PNG (BYTES, decoded by the server)",
                  Summarize(row, row.png_c1, row.png_c8));
    }
  }

  out << "\nRPC floor: `ServerLive` (empty request, one bool back) at concurrency 1 against the "
         "same server in the same round, i.e. what any unary gRPC call costs on this machine "
         "with no model work at all. Do-nothing server: the same FP32 request against "
         "`convserve-null-server` in the same round (medians of the differences' parts, so the "
         "last column is convserve's own cost: conversion, validation, scheduling, statistics, "
         "and compute slower than the engine's warm loop).\n";
  out << "\nWhere the concurrency-1 time goes (FP32, medians over rounds): the server's own "
         "compute time per request (ModelStatistics compute_infer), and CPU microseconds per "
         "request of the server process and of this client, next to the same for `ServerLive`. "
         "The server's CPU includes its gRPC thread spinning for the next call "
         "(`--grpc-spin-us`), which at concurrency 1 fills most of the time between an answer "
         "and the next request: it is CPU spent, not work done.\n\n"
      << "| model | threads | engine p50 us | server compute_infer us | ModelInfer: server CPU "
         "us/req | client CPU us/req | ServerLive: p50 us | server CPU us/call | client CPU "
         "us/call |\n"
      << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& row : rows) {
    const Summary s = Summarize(row, row.c1, row.c8);
    out << "| " << row.model << " | " << row.threads << " | " << Fixed(s.engine_p50.median, 0)
        << " | " << Fixed(s.c1_infer_us.median, 0) << " | " << Fixed(s.c1_server_us.median, 0)
        << " | " << Fixed(s.c1_client_us.median, 0) << " | " << Fixed(s.floor_p50.median, 0)
        << " | " << Fixed(s.floor_server_cpu.median, 0) << " | "
        << Fixed(s.floor_client_cpu.median, 0) << " |\n";
  }
  out << "\n## Concurrency 1: convserve's own cost\n\n"
      << "The overhead above includes what gRPC and this machine charge any server: while the "
         "server works, the client's thread sleeps and its idle core halts, and waking it costs "
         "tens of microseconds here. Measurements in the same rounds separate convserve's own "
         "cost from that (FP32, concurrency 1). The do-nothing server busy-waits, before each "
         "answer, the engine's batch-1 p50 of the same round (request parameter `busy_us`: no "
         "memory touched, nothing computed): its overhead by the target's measure is that of a "
         "server whose only cost is computing exactly as fast as the engine, and convserve's "
         "overhead minus it (per round, then the median) is convserve's own cost: conversion, "
         "validation, scheduling, statistics, compute slower than the engine's warm loop. Then "
         "the same with a client thread that polls its completion queue instead of sleeping "
         "(the server's own `--grpc-spin-us` loop, for the whole wait), so that the client's "
         "wake-up is out of the latency; a polling client spends a core while it waits, so these "
         "phases run only when the server's threads leave a core free. Most clients sleep: the "
         "verdict above keeps the sleeping client's numbers.\n\n"
      << "| model | engine p50 us | sleeping client: do-nothing server p50 us | busy-waiting "
         "do-nothing server overhead p50 us | convserve overhead p50 us | convserve own cost us "
         "| polling client: do-nothing server p50 us | busy-waiting do-nothing server overhead "
         "p50 us | convserve overhead p50 us | convserve own cost us | target with a polling "
         "client |\n"
      << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Row& row : rows) {
    const Summary s = Summarize(row, row.c1, row.c8);
    if (std::isnan(s.null_busy_p50.median)) continue;
    const bool polled = !std::isnan(s.poll_own_cost.median);
    out << "| " << row.model << " | " << Cell(s.engine_p50, 0) << " | " << Cell(s.null_p50, 0)
        << " | " << Cell(s.null_busy_overhead, 0) << " | " << Cell(s.overhead_p50, 0) << " | "
        << Cell(s.own_cost, 0) << " | "
        << (polled
                ? absl::StrCat(Cell(s.null_poll_p50, 0), " | ", Cell(s.null_busy_poll_overhead, 0),
                               " | ", Cell(s.poll_overhead, 0), " | ", Cell(s.poll_own_cost, 0),
                               " | ", TargetWord(s.poll_overhead.median <= kOverheadTargetUs))
                : "- | - | - | - | -")
        << " |\n";
  }

  out << "\n## Throughput, concurrency " << kThroughputConcurrency << " with dynamic batching\n\n"
      << "| model | input | threads | engine best img/s (batch) | engine img/s at batch "
      << kThroughputConcurrency << " | server img/s | ratio | target | batch formed | "
      << "ceiling at batch " << kThroughputConcurrency << " | do-nothing server img/s (% of "
      << "engine best) |\n"
      << "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
  const auto throughput_row = [&](const Row& row, const std::string& input, const Summary& s) {
    out << "| " << row.model << " | " << input << " | " << row.threads << " | "
        << Cell(s.engine_best, 0) << " (" << s.best_batch << ") | " << Cell(s.engine_at_max_c, 0)
        << " | " << Cell(s.server_ips, 0) << " | " << Fixed(s.ratio.median * 100, 0) << "% ("
        << Fixed(s.ratio.best * 100, 0) << "%) | "
        << (s.ratio.median >= kThroughputTarget ? "met" : "**missed**") << " | "
        << Cell(s.avg_batch, 2) << " | "
        << (std::isnan(s.ceiling.median) ? "-" : Fixed(s.ceiling.median * 100, 0) + "%") << " | "
        << (input != "PNG" && !std::isnan(s.null_ips.median)
                ? absl::StrCat(Fixed(s.null_ips.median, 0), " (",
                               Fixed(s.null_ratio.median * 100, 0), "%)")
                : "-")
        << " |\n";
  };
  const std::string batched_input = absl::StrCat("FP32, ", kClientBatch, " images/request");
  for (const Row& row : rows) {
    throughput_row(row, "FP32", Summarize(row, row.c1, row.c8));
    if (!row.png_c1.empty()) throughput_row(row, "PNG", Summarize(row, row.png_c1, row.png_c8));
  }
  for (const Row& row : rows) {
    if (!row.batch_c8.empty()) {
      throughput_row(row, batched_input, Summarize(row, row.c1, row.batch_c8));
    }
  }
  out << "\n\"batch formed\": mean batch the server executed (ModelStatistics: inference_count / "
         "execution_count). \"ceiling at batch "
      << kThroughputConcurrency << "\": the engine's own images/s at batch "
      << kThroughputConcurrency << " / its best, i.e. the ratio a server with zero overhead "
      << "would reach with " << kThroughputConcurrency << " requests of one image in flight. "
      << "The \"" << batched_input << "\" rows send " << kClientBatch
      << " images in each request (client-side batching, " << kThroughputConcurrency * kClientBatch
      << " images in flight), so the per-request costs are shared by " << kClientBatch
      << " images; the server may then form batches larger than " << kThroughputConcurrency
      << ", so no ceiling is given for them. \"do-nothing server\": the same requests "
         "at concurrency "
      << kThroughputConcurrency
      << " against `convserve-null-server`, which computes nothing: the most images/s this "
         "client and gRPC reach on this machine with those requests, so its percentage is the "
         "ceiling of the ratio for them.\n";

  out << "\n## Triton's streaming API: ModelStreamInfer\n\n"
      << "The same FP32 requests on ModelStreamInfer streams, in the same rounds: one "
         "bidirectional stream per request in flight (1, then "
      << kThroughputConcurrency
      << "), the next request written on a stream once its last answer was read. A stream "
         "carries each request as one message on a call that stays open, so the per-call costs "
         "of gRPC (a new HTTP/2 stream, headers, trailers, a call object on both sides) are paid "
         "once per stream instead of once per request. Overhead and ratio as above, against the "
         "engine of the same round; CPU per request as in the table below. The do-nothing server "
         "answers on streams as well, plainly and busy-waiting the engine's p50 per request: "
         "convserve's own cost on streams is its stream overhead minus the busy-waiting "
         "server's (per round, then the median), as in \"convserve's own cost\" above.\n\n"
      << "| model | threads | ModelInfer overhead p50 us | stream overhead p50 us | stream "
         "overhead "
         "p99 us | p50 target | ModelInfer c"
      << kThroughputConcurrency << " ratio | stream c" << kThroughputConcurrency
      << " img/s | stream ratio | ratio target | batch formed | client us/req ModelInfer / "
         "stream | server us/req ModelInfer / stream | do-nothing server on streams: c1 p50 us / "
         "c"
      << kThroughputConcurrency
      << " img/s (% of engine best) | busy-waiting do-nothing server on streams: overhead p50 us "
         "| convserve's own cost on streams us |\n"
      << "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& row : rows) {
    if (row.stream_c1.empty() || row.stream_c8.empty()) continue;
    const Summary u = Summarize(row, row.c1, row.c8);
    const Summary t = Summarize(row, row.stream_c1, row.stream_c8);
    out << "| " << row.model << " | " << row.threads << " | " << Cell(u.overhead_p50, 0) << " | "
        << Cell(t.overhead_p50, 0) << " | " << Cell(t.overhead_p99, 0) << " | "
        << TargetWord(t.overhead_p50.median <= kOverheadTargetUs) << " | "
        << Fixed(u.ratio.median * 100, 0) << "% | " << Cell(t.server_ips, 0) << " | "
        << Fixed(t.ratio.median * 100, 0) << "% (" << Fixed(t.ratio.best * 100, 0) << "%) | "
        << TargetWord(t.ratio.median >= kThroughputTarget) << " | " << Cell(t.avg_batch, 2) << " | "
        << Fixed(u.client_us.median, 0) << " / " << Fixed(t.client_us.median, 0) << " | "
        << Fixed(u.server_us.median, 0) << " / " << Fixed(t.server_us.median, 0) << " | "
        << NullStreamCell(row) << " |\n";
  }

  out << "\nRequests pipelined on one stream: the same FP32 requests, " << kThroughputConcurrency
      << " of them in flight on a single ModelStreamInfer stream (each written without waiting "
         "for the answers to the earlier ones, a new one as soon as an answer is read; answers "
         "matched by id), as a client that sends a sequence of images on one stream does. The "
         "server queues a request that arrives while an earlier one of its stream is unanswered "
         "for the batcher, so that they batch on the model's worker while the gRPC thread reads "
         "the next ones (a request alone on its stream is computed at once on the gRPC thread). "
         "Ratio against the engine's best of the same round, as above.\n\n"
      << "| model | threads | " << kThroughputConcurrency << " streams: img/s | ratio | 1 stream, "
      << kThroughputConcurrency
      << " pipelined: img/s | ratio | ratio target | batch formed | p50 us | client us/req | "
         "server us/req |\n"
      << "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n";
  for (const Row& row : rows) {
    if (row.stream_c8.empty() || row.pipelined_c8.empty()) continue;
    const Summary t = Summarize(row, row.stream_c1, row.stream_c8);
    const Summary p = Summarize(row, row.stream_c1, row.pipelined_c8);
    const Spread p50 = SpreadOf(
        Collect(row.pipelined_c8.size(), [&](size_t i) { return row.pipelined_c8[i].p50_us; }),
        true);
    out << "| " << row.model << " | " << row.threads << " | " << Cell(t.server_ips, 0) << " | "
        << Fixed(t.ratio.median * 100, 0) << "% | " << Cell(p.server_ips, 0) << " | "
        << Fixed(p.ratio.median * 100, 0) << "% (" << Fixed(p.ratio.best * 100, 0) << "%) | "
        << TargetWord(p.ratio.median >= kThroughputTarget) << " | " << Cell(p.avg_batch, 2) << " | "
        << Cell(p50, 0) << " | " << Fixed(p.client_us.median, 0) << " | "
        << Fixed(p.server_us.median, 0) << " |\n";
  }

  out << "\n## Where the CPU goes at concurrency " << kThroughputConcurrency << " (FP32)\n\n"
      << "CPU time over the measured phase, in cores (CPU seconds per second), and per request. "
         "Client = this process (getrusage: the load generator and its gRPC threads); server = "
         "the child (/proc/PID/task/*/stat), of which gRPC = its completion-queue threads "
         "(cs-grpc-N, which also compute lone requests inline) and the threads gRPC names itself; "
         "other = the "
         "rest of the machine (/proc/stat busy minus both), i.e. other users of this shared "
         "machine. The engine column is the server's own compute_infer time per image "
         "(ModelStatistics). client+server us/img = (client + server us/req) / images per "
         "request. Server CPU includes the gRPC thread's spin for the next call while no compute "
         "thread is busy.\n\n"
      << "| model | threads | images/req | client cores | client us/req | server cores | of "
         "which gRPC threads | server us/req | client+server us/img | other cores | server infer "
         "us/img | engine us/img at batch "
      << kThroughputConcurrency << " | queue us | do-nothing server us/req |\n"
      << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  const auto cpu_row = [&](const Row& row, const Summary& s) {
    out << "| " << row.model << " | " << row.threads << " | " << s.images_per_request << " | "
        << Fixed(s.client_cores.median, 2) << " | " << Fixed(s.client_us.median, 0) << " | "
        << Fixed(s.server_cores.median, 2) << " | " << Fixed(s.server_grpc_cores.median, 2) << " | "
        << Fixed(s.server_us.median, 0) << " | " << Fixed(CpuUsPerImage(s), 0) << " | "
        << Fixed(s.other_cores.median, 2) << " | " << Fixed(s.infer_us.median, 1) << " | "
        << Fixed(1e6 / s.engine_at_max_c.median, 1) << " | " << Fixed(s.queue_us.median, 0) << " | "
        << Fixed(s.null_server_us.median, 0) << " |\n";
  };
  for (const Row& row : rows) cpu_row(row, Summarize(row, row.c1, row.c8));
  for (const Row& row : rows) {
    if (!row.batch_c8.empty()) cpu_row(row, Summarize(row, row.c1, row.batch_c8));
  }

  out << "\n## What limits it (from the numbers above)\n\n";
  for (const Row& row : rows) {
    const Summary s = Summarize(row, row.c1, row.c8);
    const double engine_us_per_image = 1e6 / s.engine_best.median;
    const double cpu_per_image = CpuUsPerImage(s);
    out << "- " << row.model << ", " << row.threads << " thread(s): engine batch-1 p50 "
        << Fixed(s.engine_p50.median, 0) << " us, server p50 " << Fixed(s.server_p50.median, 0)
        << " us: overhead " << Fixed(s.overhead_p50.median, 0) << " us at p50. At concurrency "
        << kThroughputConcurrency << " the server formed batches of "
        << Fixed(s.avg_batch.median, 1) << " and spent " << Fixed(s.server_us.median, 0)
        << " us of CPU per request (compute included), the client " << Fixed(s.client_us.median, 0)
        << " us; together " << Fixed(cpu_per_image, 0)
        << " us of CPU per image against the engine's best " << Fixed(engine_us_per_image, 1)
        << " us per image (batch " << s.best_batch << ", wall time with " << row.threads
        << " thread(s)). The " << Fixed(s.client_cores.median + s.server_cores.median, 2)
        << " cores used by client and server together (of " << ctx.cores << ", others used "
        << Fixed(s.other_cores.median, 2) << ") put the bound at about "
        << Fixed(ctx.cores * 1e6 / cpu_per_image, 0) << " img/s if all " << ctx.cores
        << " cores went to this; measured " << Fixed(s.server_ips.median, 0)
        << " img/s = " << Fixed(s.ratio.median * 100, 0) << "% of the engine.";
    if (!row.batch_c8.empty()) {
      const Summary b = Summarize(row, row.c1, row.batch_c8);
      const double cpu_per_image_batched = CpuUsPerImage(b);
      out << " With " << kClientBatch << " images per request the server formed batches of "
          << Fixed(b.avg_batch.median, 1) << " and client plus server spent "
          << Fixed(cpu_per_image_batched, 0) << " us of CPU per image (server "
          << Fixed(b.server_us.median / kClientBatch, 0) << ", client "
          << Fixed(b.client_us.median / kClientBatch, 0) << "), against " << Fixed(cpu_per_image, 0)
          << " us with one image per request. Of these, the server's compute went from "
          << Fixed(s.infer_us.median, 1) << " to " << Fixed(b.infer_us.median, 1)
          << " us per image and everything else from "
          << Fixed(cpu_per_image - s.infer_us.median, 0) << " to "
          << Fixed(cpu_per_image_batched - b.infer_us.median, 0)
          << " us per image (per-request costs shared by " << kClientBatch << " images). Measured "
          << Fixed(b.server_ips.median, 0) << " img/s = " << Fixed(b.ratio.median * 100, 0)
          << "% of the engine";
      if (s.ratio.median < 1 && b.ratio.median > s.ratio.median) {
        out << ", which closes "
            << Fixed((b.ratio.median - s.ratio.median) / (1 - s.ratio.median) * 100, 0)
            << "% of the gap to the engine that one image per request leaves";
      } else if (b.ratio.median <= s.ratio.median) {
        out << ", no better than the " << Fixed(s.ratio.median * 100, 0)
            << "% of one image per request";
      }
      out << ".";
    }
    out << "\n";
  }
  out << "\nOn this 2-core machine the load generator runs on the same cores as the server, so "
         "every microsecond of client CPU per request is taken from the server; the client "
         "columns above say how much. A request of one 28x28 image is tiny (3136 bytes in, 40 "
         "out), so per-request costs (HTTP/2 framing, protobuf, thread hand-offs between gRPC's "
         "threads and the scheduler's worker) and not bandwidth decide both numbers; the "
      << kClientBatch << "-images-per-request rows show how much of that a client that batches "
      << "gets back.\n";
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> items;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    items.emplace_back(item);
  }
  return items;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"convserve-server-bench: server over loopback vs the engine in-process"};
  app.add_option("--server", options.server, "Path of the convserve-server binary")->required();
  app.add_option("--repository", options.repository, "Model repository")->capture_default_str();
  app.add_option("--models", options.models, "Comma-separated models")->capture_default_str();
  app.add_option("--threads", options.threads,
                 "Comma-separated thread counts (server --threads "
                 "= engine threads)")
      ->capture_default_str();
  app.add_option("--rounds", options.rounds, "Interleaved rounds")
      ->check(CLI::Range(1, 50))
      ->capture_default_str();
  app.add_option("--seconds", options.seconds, "Seconds per measured phase")
      ->check(CLI::Range(0.1, 30.0))
      ->capture_default_str();
  app.add_option("--png", options.png, "PNG sent as a BYTES input (empty: no PNG rows)")
      ->capture_default_str();
  app.add_option("--png-models", options.png_models, "Models that also get the PNG rows")
      ->capture_default_str();
  app.add_option("--null-server", options.null_server,
                 "Path of convserve-null-server (default: beside this binary)");
  app.add_option("--spin-us", options.spin_us,
                 "Microseconds the servers' gRPC threads look for the next call before they sleep "
                 "(convserve-server --grpc-spin-us, convserve-null-server --spin-us)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  app.add_option("--out", options.out, "Markdown report")->capture_default_str();
  app.add_option("--json", options.json,
                 "JSON results (default: server_results.json beside --out)");
  CLI11_PARSE(app, argc, argv);
  if (options.json.empty()) {
    options.json = (fs::path(options.out).parent_path() / "server_results.json").string();
  }
  for (const std::string& path : {options.out, options.json}) {
    std::error_code ec;
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (!std::ofstream(path, std::ios::app)) Die("cannot write " + path);
  }

  Context ctx;
  ctx.options = options;
  ctx.command_line = absl::StrJoin(argv, argv + argc, " ");
  ctx.date = UtcNow();
  ctx.cpu = CpuInfoField("model name");
  ctx.simd = SimdFlags();
  ctx.cores = static_cast<int>(std::thread::hardware_concurrency());
  utsname name{};
  uname(&name);
  ctx.kernel = name.release;
  const dnnl_version_t* version = dnnl_version();
  ctx.onednn = absl::StrCat(version->major, ".", version->minor, ".", version->patch);
  const auto started = Clock::now();

  // The engine measurements run on this thread: same denormal handling as a server worker.
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);

  const std::vector<std::string> models = SplitList(options.models);
  const std::vector<std::string> png_models = SplitList(options.png_models);
  std::vector<int> thread_counts;
  for (const auto& t : SplitList(options.threads)) thread_counts.push_back(std::stoi(t));
  const std::string png = options.png.empty() ? "" : ReadFileOrDie(options.png);

  std::map<std::string, std::unique_ptr<EngineBench>> engines;
  std::vector<std::string> null_output_bytes;  // "model=bytes per image" for the null server
  for (const auto& model : models) {
    engines[model] = EngineBench::Load(options.repository, model, 16);
    null_output_bytes.push_back(absl::StrCat(
        model, "=", static_cast<size_t>(engines[model]->output_elements()) * sizeof(float)));
  }

  // The do-nothing peer, one process for the whole run.
  if (options.null_server.empty()) {
    options.null_server = (fs::path(argv[0]).parent_path() / "convserve-null-server").string();
  }
  if (!fs::exists(options.null_server)) Die("no convserve-null-server at " + options.null_server);
  const int null_port = FreeLoopbackPort();
  ServerProcess null_server(
      options.null_server,
      {"--port", std::to_string(null_port), "--output-bytes", absl::StrJoin(null_output_bytes, ","),
       "--spin-us", std::to_string(options.spin_us)},
      fs::temp_directory_path() / absl::StrCat("convserve-null-server-", getpid(), ".log"));
  grpc::ChannelArguments null_channel_args;
  null_channel_args.SetMaxReceiveMessageSize(-1);
  auto null_stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", null_port),
                                grpc::InsecureChannelCredentials(), null_channel_args));
  WaitUntilReady(null_server, *null_stub, models);

  std::vector<Row> rows;
  for (int threads : thread_counts) {
    const int port = FreeLoopbackPort();
    const fs::path log =
        fs::temp_directory_path() / absl::StrCat("convserve-server-bench-", getpid(), ".log");
    std::cerr << "threads " << threads << ": starting " << options.server
              << " on 127.0.0.1:" << port << " (log " << log.string() << ")" << std::endl;
    ServerProcess server(
        options.server,
        {"--grpc-address", "127.0.0.1", "--grpc-port", std::to_string(port), "--metrics-port", "0",
         "--threads", std::to_string(threads), "--model-repository", options.repository,
         "--log-level", "warn", "--grpc-spin-us", std::to_string(options.spin_us)},
        log);
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(-1);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                             grpc::InsecureChannelCredentials(), channel_args);
    auto stub = inference::GRPCInferenceService::NewStub(channel);
    WaitUntilReady(server, *stub, models);

    const size_t first_row = rows.size();
    std::map<std::string, std::vector<inference::ModelInferRequest>> fp32_requests, png_requests,
        batched_requests;
    for (const auto& model : models) {
      const EngineBench& engine = *engines[model];
      Row row;
      row.model = model;
      row.threads = threads;
      row.max_batch = engine.max_batch();
      row.max_queue_delay_us =
          engine.model().config.dynamic_batching().max_queue_delay_microseconds();
      const auto& images = engine.images();
      for (size_t i = 0; i < images.size(); ++i) {
        fp32_requests[model].push_back(Fp32Request(engine.model(), images[i], 1));
        // Client-side batching: images i, i+1, ..., i+kClientBatch-1 (cyclically) in one tensor.
        if (row.max_batch >= kClientBatch) {
          std::vector<float> data;
          for (int k = 0; k < kClientBatch; ++k) {
            const auto& image = images[(i + static_cast<size_t>(k)) % images.size()];
            data.insert(data.end(), image.begin(), image.end());
          }
          batched_requests[model].push_back(Fp32Request(engine.model(), data, kClientBatch));
        }
      }
      if (!png.empty() &&
          std::find(png_models.begin(), png_models.end(), model) != png_models.end()) {
        png_requests[model].push_back(PngRequest(engine.model(), png));
      }
      // The server must compute what the engine computes on the same input: one image, and
      // (client-side batching) each image of a multi-image request at its place in the answer.
      const auto check = [&](const inference::ModelInferRequest& request, size_t first_image,
                             size_t count) {
        grpc::ClientContext context;
        inference::ModelInferResponse response;
        const grpc::Status status = stub->ModelInfer(&context, request, &response);
        if (!status.ok()) Die("ModelInfer failed: " + status.error_message());
        const size_t per_image = static_cast<size_t>(engine.output_elements());
        if (response.raw_output_contents_size() != 1 ||
            response.raw_output_contents(0).size() != count * per_image * sizeof(float)) {
          Die(absl::StrCat("model '", model, "': unexpected output size for ", count, " image(s)"));
        }
        const std::string& raw = response.raw_output_contents(0);
        for (size_t i = 0; i < count; ++i) {
          const std::vector<float> expected =
              engine.Infer((first_image + i) % images.size(), threads);
          for (size_t k = 0; k < per_image; ++k) {
            float value;
            std::memcpy(&value, raw.data() + (i * per_image + k) * sizeof(float), sizeof(float));
            row.check_max_abs_diff =
                std::max<double>(row.check_max_abs_diff, std::abs(value - expected[k]));
          }
        }
      };
      check(fp32_requests[model][0], 0, 1);
      if (!batched_requests[model].empty()) check(batched_requests[model][1], 1, kClientBatch);
      if (row.check_max_abs_diff > 1e-3) {
        Die(absl::StrCat("model '", model, "': server and engine differ by ",
                         row.check_max_abs_diff));
      }
      rows.push_back(std::move(row));
    }

    for (int round = 0; round < options.rounds; ++round) {
      for (size_t m = 0; m < models.size(); ++m) {
        Row& row = rows[first_row + m];
        const EngineBench& engine = *engines[row.model];
        const size_t output_bytes = static_cast<size_t>(engine.output_elements()) * sizeof(float);
        row.engine.push_back(engine.Measure(threads, options.seconds, options.seconds / 4));
        row.floor.push_back(MeasureRpcFloor(*stub, server.pid(), options.seconds / 2));
        row.c1.push_back(RunPhase(*stub, server.pid(), row.model, fp32_requests[row.model], 1, 1,
                                  options.seconds, output_bytes));
        row.c8.push_back(RunPhase(*stub, server.pid(), row.model, fp32_requests[row.model], 1,
                                  kThroughputConcurrency, options.seconds, output_bytes));
        row.stream_c1.push_back(RunPhase(*stub, server.pid(), row.model, fp32_requests[row.model],
                                         1, 1, options.seconds, output_bytes, Peer::kConvserve,
                                         ClientWait::kSleep, Transport::kStream));
        row.stream_c8.push_back(RunPhase(*stub, server.pid(), row.model, fp32_requests[row.model],
                                         1, kThroughputConcurrency, options.seconds, output_bytes,
                                         Peer::kConvserve, ClientWait::kSleep, Transport::kStream));
        row.pipelined_c8.push_back(RunPhase(*stub, server.pid(), row.model,
                                            fp32_requests[row.model], 1, kThroughputConcurrency,
                                            options.seconds, output_bytes, Peer::kConvserve,
                                            ClientWait::kSleep, Transport::kPipelinedStream));
        if (!batched_requests[row.model].empty()) {
          row.batch_c8.push_back(
              RunPhase(*stub, server.pid(), row.model, batched_requests[row.model], kClientBatch,
                       kThroughputConcurrency, options.seconds, output_bytes * kClientBatch));
        }
        if (png_requests.count(row.model)) {
          row.png_c1.push_back(RunPhase(*stub, server.pid(), row.model, png_requests[row.model], 1,
                                        1, options.seconds, output_bytes));
          row.png_c8.push_back(RunPhase(*stub, server.pid(), row.model, png_requests[row.model], 1,
                                        kThroughputConcurrency, options.seconds, output_bytes));
        }
        row.null_c1.push_back(RunPhase(*null_stub, null_server.pid(), row.model,
                                       fp32_requests[row.model], 1, 1, options.seconds,
                                       output_bytes, Peer::kNull));
        row.null_c8.push_back(RunPhase(*null_stub, null_server.pid(), row.model,
                                       fp32_requests[row.model], 1, kThroughputConcurrency,
                                       options.seconds, output_bytes, Peer::kNull));
        row.null_stream_c1.push_back(RunPhase(
            *null_stub, null_server.pid(), row.model, fp32_requests[row.model], 1, 1,
            options.seconds, output_bytes, Peer::kNull, ClientWait::kSleep, Transport::kStream));
        row.null_stream_c8.push_back(RunPhase(*null_stub, null_server.pid(), row.model,
                                              fp32_requests[row.model], 1, kThroughputConcurrency,
                                              options.seconds, output_bytes, Peer::kNull,
                                              ClientWait::kSleep, Transport::kStream));
        if (!batched_requests[row.model].empty()) {
          row.null_batch_c8.push_back(RunPhase(
              *null_stub, null_server.pid(), row.model, batched_requests[row.model], kClientBatch,
              kThroughputConcurrency, options.seconds, output_bytes * kClientBatch, Peer::kNull));
        }
        std::vector<inference::ModelInferRequest> busy_requests = fp32_requests[row.model];
        for (auto& request : busy_requests) {
          (*request.mutable_parameters())["busy_us"].set_int64_param(
              std::llround(row.engine.back().p50_us));
        }
        row.null_busy_c1.push_back(RunPhase(*null_stub, null_server.pid(), row.model, busy_requests,
                                            1, 1, options.seconds, output_bytes, Peer::kNull));
        row.null_busy_stream_c1.push_back(
            RunPhase(*null_stub, null_server.pid(), row.model, busy_requests, 1, 1, options.seconds,
                     output_bytes, Peer::kNull, ClientWait::kSleep, Transport::kStream));
        if (threads < ctx.cores) {
          row.poll_c1.push_back(RunPhase(*stub, server.pid(), row.model, fp32_requests[row.model],
                                         1, 1, options.seconds, output_bytes, Peer::kConvserve,
                                         ClientWait::kPoll));
          row.null_poll_c1.push_back(RunPhase(*null_stub, null_server.pid(), row.model,
                                              fp32_requests[row.model], 1, 1, options.seconds,
                                              output_bytes, Peer::kNull, ClientWait::kPoll));
          row.null_busy_poll_c1.push_back(RunPhase(*null_stub, null_server.pid(), row.model,
                                                   busy_requests, 1, 1, options.seconds,
                                                   output_bytes, Peer::kNull, ClientWait::kPoll));
        }
        const Summary s = Summarize(row, row.c1, row.c8);
        std::cerr << "round " << round + 1 << "/" << options.rounds << " " << row.model
                  << " T=" << threads << ": engine p50 " << Fixed(row.engine.back().p50_us, 0)
                  << " us, server p50 " << Fixed(row.c1.back().p50_us, 0) << " us, engine best "
                  << Fixed(row.engine.back().best_images_per_s, 0) << " img/s, server c8 "
                  << Fixed(row.c8.back().images_per_s, 0) << " img/s (batch "
                  << Fixed(row.c8.back().avg_batch, 1) << "), do-nothing server c1 p50 "
                  << Fixed(row.null_c1.back().p50_us, 0) << " us, c8 "
                  << Fixed(row.null_c8.back().images_per_s, 0) << " req/s, busy-waiting "
                  << Fixed(row.engine.back().p50_us, 0) << " us: c1 p50 "
                  << Fixed(row.null_busy_c1.back().p50_us, 0) << " us";
        if (!row.poll_c1.empty()) {
          std::cerr << "; polling client: server c1 p50 " << Fixed(row.poll_c1.back().p50_us, 0)
                    << " us, do-nothing " << Fixed(row.null_poll_c1.back().p50_us, 0)
                    << " us, busy-waiting " << Fixed(row.null_busy_poll_c1.back().p50_us, 0)
                    << " us";
        }
        std::cerr << "; streams: c1 p50 " << Fixed(row.stream_c1.back().p50_us, 0) << " us, c8 "
                  << Fixed(row.stream_c8.back().images_per_s, 0) << " img/s (batch "
                  << Fixed(row.stream_c8.back().avg_batch, 1) << ")";
        if (!row.batch_c8.empty()) {
          std::cerr << ", " << kClientBatch << " img/request "
                    << Fixed(row.batch_c8.back().images_per_s, 0) << " img/s (batch "
                    << Fixed(row.batch_c8.back().avg_batch, 1) << ")";
        }
        std::cerr << "; so far: overhead p50 " << Fixed(s.overhead_p50.median, 0) << " us, ratio "
                  << Fixed(s.ratio.median * 100, 0) << "%" << std::endl;
      }
    }
    server.Stop();
  }
  null_server.Stop();

  ctx.wall_seconds = SecondsSince(started);
  WriteMarkdown(ctx, rows, options.out);
  WriteJson(ctx, rows, options.json);
  std::cerr << "wrote " << options.out << " and " << options.json << std::endl;
  return 0;
}
