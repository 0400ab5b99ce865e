// More in-process server tests: gRPC health checking, the Prometheus endpoint, a full queue, a
// deadline that passes while queued, and poll-mode model control. A real convserve server on
// 127.0.0.1 (free ports), real gRPC stubs.
//
// Queue states are made deterministic by holding the server's whole compute-thread budget
// (ServerCore::thread_budget()): a worker that took a batch then blocks before computing it, so
// what is queued stays queued until the test releases the budget.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "onnx/onnx_pb.h"
#include "proto/health.grpc.pb.h"
#include "proto/inference.grpc.pb.h"
#include "server/api/server.h"
#include "server/serving/server_core.h"
#include "tests/server/test_models.h"

namespace convserve::testing {
namespace {

using inference::GRPCInferenceService;
using ::testing::HasSubstr;
using ::testing::Not;
using Steady = std::chrono::steady_clock;

constexpr auto kWait = std::chrono::seconds(30);  // upper bound of every poll below

void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// config.pbtxt of a linear test model (one instance), plus `extra` lines.
std::string LinearModelConfig(const std::string& name, int max_batch_size,
                              const std::string& extra = "") {
  return absl::StrCat("name: \"", name, "\"\nmax_batch_size: ", max_batch_size, R"(
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
)",
                      extra);
}

std::string PatternBytes(int label) {
  const std::vector<float> pixels = PatternFloats(label);
  return std::string(reinterpret_cast<const char*>(pixels.data()), pixels.size() * sizeof(float));
}

// Polls `done` until it holds or kWait passed; returns its last value.
template <typename F>
bool PollUntil(F done) {
  const auto deadline = Steady::now() + kWait;
  while (!done()) {
    if (Steady::now() >= deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// The scheduler state letter (R, S, D, ...) of this process's thread named `name`, or 0.
char ThreadState(const std::string& name) {
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string thread_name;
    std::getline(comm, thread_name);
    if (thread_name != name) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t paren = line.rfind(')');  // the name may hold spaces; the state follows it
    return paren != std::string::npos && paren + 2 < line.size() ? line[paren + 2] : '\0';
  }
  return '\0';
}

// Holds all of the server's compute threads while alive (released at most once).
class BudgetHold {
 public:
  explicit BudgetHold(serving::ThreadBudget& budget) : budget_(budget) {
    budget_.Acquire(budget_.total());
  }
  ~BudgetHold() { Release(); }
  void Release() {
    if (held_) budget_.Release(budget_.total());
    held_ = false;
  }

 private:
  serving::ThreadBudget& budget_;
  bool held_ = true;
};

// grpc.health.v1.Health/Check of `service`: the status (1 SERVING, 2 NOT_SERVING), or -1 when the
// RPC failed (its status in *failed).
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "",
                 grpc::Status* failed = nullptr) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (failed != nullptr) *failed = status;
  return status.ok() ? static_cast<int>(response.status()) : -1;
}

// GET http://127.0.0.1:port/path with HTTP/1.0; returns the whole response (headers and body).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    size_t sent = 0;
    while (sent < request.size()) {
      const ssize_t n = send(fd, request.data() + sent, request.size() - sent, 0);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    char buffer[4096];
    while (true) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      response.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  return response;
}

// The value of the sample `series` (name{labels}, exactly as exposed) in Prometheus text.
std::optional<double> Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

class ServerExtraTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir("convserve-server-extra-test");
    BuildTestRepository(root_);
    // "queued": like tiny, one request per batch, at most one request waiting.
    WriteText(root_ / "queued" / "config.pbtxt", R"(name: "queued"
max_batch_size: 1
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching { default_queue_policy { max_queue_size: 1 } }
instance_group [ { count: 1 kind: KIND_CPU } ]
)");
    WriteLinearOnnx(root_ / "queued" / "1" / "model.onnx", 0.0f);
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(root_);
  }

  // A serving core on the test repository in explicit mode (nothing loaded), without gRPC.
  std::unique_ptr<serving::ServerCore> ExplicitCore() {
    serving::ServerCoreOptions options;
    options.model_repository = root_;
    options.control_mode = serving::ModelControlMode::kExplicit;
    auto created = serving::ServerCore::Create(options);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *std::move(created) : nullptr;
  }

  // Default options but no metrics port (the default, 8002, is one fixed port for all tests).
  static api::ServerOptions WithoutMetrics() {
    api::ServerOptions options;
    options.metrics_port = 0;
    return options;
  }

  void StartServer(api::ServerOptions options) {
    options.model_repository = root_.string();
    options.grpc_address = "127.0.0.1";
    options.grpc_port = 0;
    options.threads = 2;
    options.exit_timeout_secs = 20;
    auto server = api::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = GRPCInferenceService::NewStub(channel_);
  }

  // Adds model `name` (the linear test model with `bias`, `config` as its config.pbtxt), starts
  // the server (metrics off) and returns the model's scheduler.
  std::shared_ptr<serving::Scheduler> StartServerWithModel(const std::string& name,
                                                           const std::string& config, float bias) {
    WriteText(root_ / name / "config.pbtxt", config);
    WriteLinearOnnx(root_ / name / "1" / "model.onnx", bias);
    return StartServerFor(name);
  }

  // Starts the server (metrics off) and returns the scheduler of `model`.
  std::shared_ptr<serving::Scheduler> StartServerFor(const std::string& model) {
    api::ServerOptions options;
    options.metrics_port = 0;
    options.grpc_threads = grpc_threads_;
    StartServer(options);
    if (server_ == nullptr) return nullptr;
    return SchedulerOf(model);
  }

  static inference::ModelInferRequest Request(const std::string& model, int label) {
    return PatternRequest(model, {label});
  }

  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response,
                     std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    return stub_->ModelInfer(&context, request, response);
  }

  // Submits a request straight to the core (Submit queues it before this returns); the result
  // arrives through the future.
  // `label`: the pattern image sent; `hold`: when valid, the answer callback sets `entered` (if
  // given) and waits for `hold` (blocking whichever thread delivers the answer).
  std::future<absl::StatusOr<serving::InferResponse>> CoreInfer(
      const std::string& model, Steady::time_point deadline = Steady::time_point::max(),
      bool followed = false, int label = 2, std::shared_future<void> hold = {},
      std::shared_ptr<std::promise<void>> entered = nullptr) {
    auto request = std::make_unique<serving::InferRequest>();
    request->id = "core";
    request->deadline = deadline;
    request->followed = followed;
    request->owned_buffers.push_back(PatternBytes(label));
    serving::InputTensor input;
    input.name = "input";
    input.datatype = "FP32";
    input.shape = {1, 1, 28, 28};
    input.data = request->owned_buffers.back();
    request->inputs.push_back(std::move(input));
    auto promise = std::make_shared<std::promise<absl::StatusOr<serving::InferResponse>>>();
    auto future = promise->get_future();
    server_->core().Infer(model, "", std::move(request),
                          [promise, hold, entered](absl::StatusOr<serving::InferResponse> result) {
                            if (entered) entered->set_value();
                            if (hold.valid()) hold.wait();
                            promise->set_value(std::move(result));
                          });
    return future;
  }

  // Sends lone requests to `model` until five in a row ran inline (at most 200): its measured
  // batch-1 time is then a recent, unpreempted one. A busy machine that preempts an execution
  // for milliseconds keeps requests off the inline path until the estimate comes down again.
  void WarmUntilInline(const std::string& model, serving::Scheduler& scheduler) {
    int in_a_row = 0;
    for (int i = 0; i < 200 && in_a_row < 5; ++i) {
      const uint64_t before = scheduler.inline_count();
      EXPECT_TRUE(
          HoldsLogitsOf(CoreInfer(model, Steady::time_point::max(), false, i % 10).get(), i % 10));
      in_a_row = scheduler.inline_count() > before ? in_a_row + 1 : 0;
    }
    ASSERT_EQ(in_a_row, 5) << "model '" << model << "' never ran inline five times in a row";
  }

  // Whether `result` holds the linear test model's logits (bias 0) for PatternFloats(label).
  static ::testing::AssertionResult HoldsLogitsOf(
      const absl::StatusOr<serving::InferResponse>& result, int label) {
    if (!result.ok()) return ::testing::AssertionFailure() << result.status();
    if (result->outputs.size() != 1 || result->outputs[0].data.size() != 10 * sizeof(float)) {
      return ::testing::AssertionFailure() << "not one output of 10 floats";
    }
    const std::vector<float> pixels = PatternFloats(label);
    const auto expected = LinearLogits(pixels.data(), 0.0f);
    for (int k = 0; k < 10; ++k) {
      float value;
      std::memcpy(&value, result->outputs[0].data.data() + k * sizeof(float), sizeof(float));
      if (std::abs(value - expected[k]) > 1e-4f) {
        return ::testing::AssertionFailure()
               << "class " << k << ": " << value << " instead of " << expected[k];
      }
    }
    return ::testing::AssertionSuccess();
  }

  std::shared_ptr<serving::Scheduler> SchedulerOf(const std::string& model) {
    auto served = server_->core().Get(model, "");
    EXPECT_TRUE(served.ok()) << served.status();
    return served.ok() ? served->scheduler : nullptr;
  }

  inference::ModelStatistics Stats(const std::string& model) {
    return FetchModelStatistics(*stub_, model);
  }

  // Starts the server with model "linear" (the linear test model, max_batch_size 8, dynamic
  // batching with `batching` inside its braces) and opens a ModelStreamInfer stream on `context`
  // with a deadline `deadline` from now (once the server is up).
  std::unique_ptr<
      grpc::ClientReaderWriter<inference::ModelInferRequest, inference::ModelStreamInferResponse>>
  StartLinearAndOpenStream(grpc::ClientContext& context, const std::string& batching = "",
                           std::chrono::milliseconds deadline = kWait) {
    StartServerWithModel(
        "linear", LinearModelConfig("linear", 8, "dynamic_batching { " + batching + " }"), 0.0f);
    if (server_ == nullptr) return nullptr;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    return stub_->ModelStreamInfer(&context);
  }

  // `streams` clients at once, each on its own ModelStreamInfer stream to "linear" with one
  // request in flight at a time, `each` requests: every answer must be its own request's.
  void RunStreams(int streams, int each);

  int grpc_threads_ = 1;  // --grpc-threads of StartServerFor
  std::filesystem::path root_;
  std::unique_ptr<api::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GRPCInferenceService::Stub> stub_;
};

TEST_F(ServerExtraTest, HealthIsServingThenNotServingOnceShutdownBegins) {
  api::ServerOptions options;
  options.metrics_port = 0;
  StartServer(options);
  EXPECT_EQ(HealthStatus(channel_), 1);

  // An in-flight request (its worker waits for compute threads) keeps Shutdown draining.
  std::future<bool> shutdown;
  BudgetHold hold(server_->core().thread_budget());
  auto in_flight = CoreInfer("tiny");
  ASSERT_TRUE(PollUntil([&] { return SchedulerOf("tiny")->queue_depth() == 0; }));
  shutdown = std::async(std::launch::async, [this] { return server_->Shutdown(); });
  EXPECT_TRUE(PollUntil([&] { return HealthStatus(channel_) == 2; }));
  EXPECT_EQ(shutdown.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  hold.Release();
  EXPECT_TRUE(shutdown.get());
  auto result = in_flight.get();
  EXPECT_TRUE(result.ok()) << result.status();
}

TEST_F(ServerExtraTest, HealthKnowsEachServiceAndNoOther) {
  api::ServerOptions options;
  options.metrics_port = 0;
  StartServer(options);
  EXPECT_EQ(HealthStatus(channel_, "inference.GRPCInferenceService"), 1);
  EXPECT_EQ(HealthStatus(channel_, "convserve.v1.ConvServe"), 1);
  EXPECT_EQ(HealthStatus(channel_, "grpc.health.v1.Health"), 1);
  EXPECT_EQ(HealthStatus(channel_, "grpc.reflection.v1alpha.ServerReflection"), 1);
  grpc::Status failed;
  EXPECT_EQ(HealthStatus(channel_, "no.such.Service", &failed), -1);
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(failed.error_message(), HasSubstr("'no.such.Service'"));
  EXPECT_EQ(HealthStatus(channel_), 1);  // and it keeps answering
}

// Watch streams the status as it changes: SERVING, then NOT_SERVING when shutdown begins, and
// then the stream ends (UNAVAILABLE) so that shutdown does not wait for its clients. An unknown
// service is SERVICE_UNKNOWN, and its stream stays open until then too.
TEST_F(ServerExtraTest, HealthWatchStreamsTheStatusAndEndsAtShutdown) {
  api::ServerOptions options;
  options.metrics_port = 0;
  StartServer(options);
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  using Response = grpc::health::v1::HealthCheckResponse;
  grpc::ClientContext server_context, unknown_context;
  for (auto* context : {&server_context, &unknown_context}) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  }
  grpc::health::v1::HealthCheckRequest request;
  auto server_stream = stub->Watch(&server_context, request);
  request.set_service("no.such.Service");
  auto unknown_stream = stub->Watch(&unknown_context, request);
  Response response;
  ASSERT_TRUE(server_stream->Read(&response));
  EXPECT_EQ(response.status(), Response::SERVING);
  ASSERT_TRUE(unknown_stream->Read(&response));
  EXPECT_EQ(response.status(), Response::SERVICE_UNKNOWN);

  const Steady::time_point begun = Steady::now();
  auto shutdown = std::async(std::launch::async, [this] { return server_->Shutdown(); });
  ASSERT_TRUE(server_stream->Read(&response));
  EXPECT_EQ(response.status(), Response::NOT_SERVING);
  EXPECT_FALSE(server_stream->Read(&response));
  EXPECT_FALSE(unknown_stream->Read(&response));
  for (auto* stream : {&server_stream, &unknown_stream}) {
    const grpc::Status end = (*stream)->Finish();
    EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(end.error_message(), HasSubstr("shutting down"));
  }
  EXPECT_TRUE(shutdown.get());
  // gRPC's own shutdown would have cancelled open streams only after its 2 s grace period.
  EXPECT_LT(Steady::now() - begun, std::chrono::seconds(2));
}

// With two gRPC threads, events of one call may be handled on both at once. Concurrent requests
// each get their own answer, and Watch calls that clients cancel at once all end (a call object
// left behind would keep Shutdown waiting for it forever).
TEST_F(ServerExtraTest, TwoGrpcThreadsAnswerEveryCallAndShutDown) {
  api::ServerOptions options;
  options.metrics_port = 0;
  options.grpc_threads = 2;
  options.grpc_spin_us = 200'000;  // ignored with more than one thread: none spins
  StartServer(options);
  std::vector<std::future<std::pair<grpc::Status, inference::ModelInferResponse>>> answers;
  for (int i = 0; i < 16; ++i) {
    answers.push_back(std::async(std::launch::async, [this, i] {
      inference::ModelInferResponse response;
      grpc::Status status = Infer(Request("tiny", i % 10), &response);
      return std::make_pair(status, response);
    }));
  }
  for (int i = 0; i < 16; ++i) {
    auto [status, response] = answers[i].get();
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.raw_output_contents_size(), 1);
    ASSERT_EQ(response.raw_output_contents(0).size(), 10 * sizeof(float));
    const std::vector<float> pixels = PatternFloats(i % 10);
    const auto expected = LinearLogits(pixels.data(), 0.0f);
    for (int k = 0; k < 10; ++k) {
      float value;
      std::memcpy(&value, response.raw_output_contents(0).data() + k * sizeof(float),
                  sizeof(float));
      EXPECT_NEAR(value, expected[k], 1e-4) << "request " << i << " class " << k;
    }
  }
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckRequest request;
  for (int i = 0; i < 300; ++i) {
    grpc::ClientContext context;
    auto stream = stub->Watch(&context, request);
    context.TryCancel();
    grpc::health::v1::HealthCheckResponse response;
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(HealthStatus(channel_), 1);
  auto shutdown = std::async(std::launch::async, [this] { return server_->Shutdown(); });
  ASSERT_EQ(shutdown.wait_for(kWait), std::future_status::ready) << "shutdown hangs";
  EXPECT_TRUE(shutdown.get());
  EXPECT_EQ(server_->grpc_waits().spin_hits, 0);
}

// --grpc-spin-us: after an event the gRPC thread looks for the next one without sleeping, so calls
// that follow closely are found while it spins. It does not spin while the compute threads are
// busy (the spin would take their core), and it goes to sleep once the spin runs out. Counted by
// Server::grpc_waits and at /metrics.
TEST_F(ServerExtraTest, GrpcThreadSpinsForTheNextCallOnlyWhileComputeIsIdle) {
  api::ServerOptions options;
  options.metrics_port = -1;
  options.grpc_spin_us = 200'000;  // long enough that back-to-back calls always find it spinning
  StartServer(options);
  auto live = [&] {
    grpc::ClientContext context;
    inference::ServerLiveResponse response;
    return stub_->ServerLive(&context, {}, &response).ok() && response.live();
  };
  ASSERT_TRUE(live());
  const api::Server::GrpcWaits before = server_->grpc_waits();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(live());
  EXPECT_GE(server_->grpc_waits().spin_hits - before.spin_hits, 5);

  // Neither while compute threads are taken nor while a worker prepares or answers a batch.
  serving::ThreadBudget& budget = server_->core().thread_budget();
  for (const bool compute : {true, false}) {
    std::optional<BudgetHold> hold;
    if (compute) {
      hold.emplace(budget);
    } else {
      budget.BeginWork();
    }
    // This call may still be found by a spin that began before; none after it.
    ASSERT_TRUE(live());
    const api::Server::GrpcWaits held_before = server_->grpc_waits();
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(live());
    const api::Server::GrpcWaits held = server_->grpc_waits();
    if (!compute) budget.EndWork();
    EXPECT_EQ(held.spin_hits, held_before.spin_hits) << (compute ? "threads taken" : "at work");
    EXPECT_GE(held.sleeps - held_before.sleeps, 5);
  }

  // One call, then nothing: the thread spins, the spin runs out, and it sleeps once more.
  const int64_t sleeps = server_->grpc_waits().sleeps;
  ASSERT_TRUE(live());
  ASSERT_TRUE(PollUntil([&] { return server_->grpc_waits().sleeps > sleeps; }));

  const std::string http = HttpGet(server_->metrics_port(), "/metrics");
  const std::string text = http.substr(http.find("\r\n\r\n") + 4);
  const api::Server::GrpcWaits now = server_->grpc_waits();
  EXPECT_EQ(Sample(text, R"(convserve_grpc_waits_total{outcome="spin_hit"})"),
            static_cast<double>(now.spin_hits))
      << text;
  EXPECT_EQ(Sample(text, R"(convserve_grpc_waits_total{outcome="sleep"})"),
            static_cast<double>(now.sleeps));
  // Every unary method, and ModelStreamInfer, has its series of undelivered answers, named
  // service/method, 0 here (all were delivered): the 11 unary methods of GRPCInferenceService and
  // its ModelStreamInfer, the 3 of convserve.v1 (two statistics methods of alike-named types
  // apart) and health's Check.
  const std::map<std::string, int64_t> undelivered = server_->undelivered_answers();
  EXPECT_EQ(undelivered.size(), 16u);
  for (const std::string method :
       {"inference.GRPCInferenceService/ServerLive", "inference.GRPCInferenceService/ModelInfer",
        "inference.GRPCInferenceService/ModelStreamInfer",
        "inference.GRPCInferenceService/ModelStatistics",
        "inference.GRPCInferenceService/RepositoryModelUnload",
        "convserve.v1.ConvServe/GetModelStatistics", "convserve.v1.ConvServe/GetLayerReport",
        "convserve.v1.ConvServe/CompareKernels", "grpc.health.v1.Health/Check"}) {
    EXPECT_EQ(undelivered.count(method), 1u) << method;
    EXPECT_EQ(Sample(text, "convserve_grpc_undelivered_answers_total{method=\"" + method + "\"}"),
              0.0)
        << method;
  }
}

TEST_F(ServerExtraTest, RefusalsHeldAtShutdownAreAnsweredUnavailableWhenReleased) {
  api::ServerOptions options;
  options.metrics_port = 0;
  StartServer(options);
  serving::ServerCore& core = server_->core();
  core.BeginShutdown();
  auto refused_at_once = CoreInfer("tiny");
  ASSERT_EQ(refused_at_once.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(refused_at_once.get().status().code(), absl::StatusCode::kUnavailable);

  core.HoldRefusals();
  auto held = CoreInfer("tiny");
  EXPECT_EQ(held.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  EXPECT_EQ(core.held_refusals(), 1u);
  core.ReleaseRefusals();
  ASSERT_EQ(held.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  auto result = held.get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("shutting down"));
  EXPECT_EQ(core.held_refusals(), 0u);
  EXPECT_EQ(core.refused(), 2);
}

// Clients in a closed request loop (each on its own connection) while the server stops: every
// call is answered OK or UNAVAILABLE. gRPC itself would answer CANCELLED to a call racing its
// shutdown (grpc/grpc#41785); the server holds its refusals across that moment.
TEST_F(ServerExtraTest, ShutdownUnderClosedLoopLoadAnswersOnlyOkOrUnavailable) {
  api::ServerOptions options;
  options.metrics_port = 0;
  StartServer(options);
  constexpr int kClients = 4;
  std::atomic<bool> server_gone{false};
  std::atomic<int> ok{0};
  std::mutex codes_mutex;
  std::map<grpc::StatusCode, int> codes;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("convserve.test.client", c);  // a connection of its own
      auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                               grpc::InsecureChannelCredentials(), args);
      auto stub = GRPCInferenceService::NewStub(channel);
      const inference::ModelInferRequest request = Request("tiny", c);
      int after_stop = 0;
      while (after_stop < 3) {
        if (server_gone.load()) ++after_stop;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        inference::ModelInferResponse response;
        const grpc::Status status = stub->ModelInfer(&context, request, &response);
        if (status.ok()) {
          ok.fetch_add(1);
        } else {
          std::lock_guard<std::mutex> lock(codes_mutex);
          ++codes[status.error_code()];
        }
      }
    });
  }
  ASSERT_TRUE(PollUntil([&] { return ok.load() >= 20; }));
  EXPECT_TRUE(server_->Shutdown());
  server_gone = true;
  for (auto& client : clients) client.join();
  for (const auto& [code, count] : codes) {
    EXPECT_EQ(code, grpc::StatusCode::UNAVAILABLE) << count << " calls answered with code " << code;
  }
  EXPECT_GE(codes[grpc::StatusCode::UNAVAILABLE], kClients * 3);
}

TEST_F(ServerExtraTest, SecondServerOnAPortInUseFailsToStart) {
  ASSERT_NO_FATAL_FAILURE(StartServer(WithoutMetrics()));
  api::ServerOptions options;
  options.model_repository = root_.string();
  options.grpc_address = "127.0.0.1";
  options.grpc_port = server_->grpc_port();
  options.metrics_port = 0;
  auto second = api::Server::Start(options);
  ASSERT_FALSE(second.ok()) << "a second server started on port " << server_->grpc_port();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      second.status().message(),
      HasSubstr(absl::StrCat("cannot listen for gRPC on 127.0.0.1:", server_->grpc_port())));
  // The first server still answers.
  inference::ModelInferResponse response;
  grpc::Status status = Infer(Request("tiny", 1), &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ServerExtraTest, TypedContentsOfDatatypesWithoutAFieldNameTheModelAndTheFix) {
  ASSERT_NO_FATAL_FAILURE(StartServer(WithoutMetrics()));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"FP16",
       "input 'input' of model 'tiny': datatype FP16 has no typed contents field in the "
       "protocol: send it in raw_input_contents"},
      {"fp32",
       "input 'input' of model 'tiny': datatype 'fp32' is not a datatype of the protocol "
       "(BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, "
       "FP64, BYTES)"}};
  for (const auto& [datatype, message] : cases) {
    inference::ModelInferRequest request = PatternRequest("tiny", {1}, /*raw=*/false);
    request.mutable_inputs(0)->set_datatype(datatype);
    inference::ModelInferResponse response;
    grpc::Status status = Infer(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << datatype;
    EXPECT_EQ(status.error_message(), message);
  }
  {
    // A typed UINT8 value out of range is refused, not wrapped (300 would become 44).
    inference::ModelInferRequest request = Uint8Request("tiny", std::vector<uint8_t>(28 * 28, 1));
    std::string raw = request.raw_input_contents(0);
    request.clear_raw_input_contents();
    for (unsigned char byte : raw)
      request.mutable_inputs(0)->mutable_contents()->add_uint_contents(byte);
    request.mutable_inputs(0)->mutable_contents()->set_uint_contents(5, 300);
    inference::ModelInferResponse response;
    grpc::Status status = Infer(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(),
              "input 'input' of model 'tiny': value 300 at index 5 is out of the range of UINT8 "
              "(0..255)");
  }
  {
    inference::ModelInferRequest request = Request("tiny", 1);
    request.add_outputs()->set_name("logits");
    request.add_outputs()->set_name("logits");
    inference::ModelInferResponse response;
    grpc::Status status = Infer(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(),
              "output 'logits' of model 'tiny' is requested more than once");
  }
  inference::ModelInferResponse response;
  grpc::Status status = Infer(Request("tiny", 1), &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ServerExtraTest, PrometheusEndpointCountsRequestsBatchesQueueAndLoads) {
  api::ServerOptions options;
  options.metrics_port = -1;
  StartServer(options);
  const int port = server_->metrics_port();
  ASSERT_GT(port, 0);

  for (int i = 0; i < 3; ++i) {
    inference::ModelInferResponse response;
    grpc::Status status = Infer(Request("tiny", i), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  for (int i = 0; i < 2; ++i) {
    inference::ModelInferRequest bad = Request("tiny", 1);
    bad.mutable_inputs(0)->set_shape(3, 27);
    inference::ModelInferResponse response;
    EXPECT_EQ(Infer(bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  for (const char* unserved : {"no-such-model", "no-such-model-either"}) {
    inference::ModelInferResponse response;
    EXPECT_EQ(Infer(Request(unserved, 1), &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    // A malformed request (one raw_input_contents too many) to a model that does not exist:
    // NOT_FOUND comes first.
    inference::ModelInferRequest malformed = Request("no-such-model", 1);
    malformed.add_raw_input_contents("extra");
    inference::ModelInferResponse response;
    grpc::Status status = Infer(malformed, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("no-such-model"));
  }
  {
    inference::ModelInferResponse response;
    grpc::Status status = Infer(Request("badfile", 1), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }

  const std::string http = HttpGet(port, "/metrics");
  ASSERT_THAT(http, HasSubstr(" 200 ")) << http;
  const std::string text = http.substr(http.find("\r\n\r\n") + 4);
  auto expect = [&](const std::string& series, double value) {
    std::optional<double> got = Sample(text, series);
    ASSERT_TRUE(got.has_value()) << series << " missing in\n" << text;
    EXPECT_EQ(*got, value) << series;
  };
  expect(R"(convserve_requests_total{model="tiny",outcome="OK"})", 3);
  expect(R"(convserve_requests_total{model="tiny",outcome="INVALID_ARGUMENT"})", 2);
  EXPECT_FALSE(
      Sample(text, R"(convserve_requests_total{model="derived",outcome="OK"})").has_value());
  // Latency histograms: every request in queue and total, successes only in compute.
  for (const char* name : {"convserve_request_seconds", "convserve_queue_seconds"}) {
    expect(absl::StrCat(name, R"(_count{model="tiny"})"), 5);
    expect(absl::StrCat(name, R"(_bucket{model="tiny",le="+Inf"})"), 5);
  }
  expect(R"(convserve_compute_seconds_count{model="tiny"})", 3);
  expect(R"(convserve_compute_seconds_bucket{model="tiny",le="+Inf"})", 3);
  EXPECT_THAT(text, HasSubstr(R"(convserve_request_seconds_bucket{model="tiny",le="0.001"})"));
  // Sequential requests: three executions of batch size 1.
  expect(R"(convserve_batch_size_count{model="tiny"})", 3);
  expect(R"(convserve_batch_size_sum{model="tiny"})", 3);
  expect(R"(convserve_batch_size_bucket{model="tiny",le="1"})", 3);
  expect(R"(convserve_queue_depth{model="tiny",version="1"})", 0);
  // Requests for models that do not exist: counted once, not per (client-chosen) name; for a
  // model of the repository that failed to load, with the model.
  expect(R"(convserve_unserved_requests_total{outcome="NOT_FOUND"})", 3);
  EXPECT_THAT(text, Not(HasSubstr("no-such-model")));
  expect(R"(convserve_requests_total{model="badfile",outcome="UNAVAILABLE"})", 1);
  expect(R"(convserve_model_load_events_total{model="tiny",outcome="loaded"})", 1);
  expect(R"(convserve_model_load_events_total{model="derived",outcome="loaded"})", 1);
  expect(R"(convserve_model_load_events_total{model="badfile",outcome="failed"})", 1);
  EXPECT_THAT(text, HasSubstr("# TYPE convserve_request_seconds histogram"));
  EXPECT_THAT(text, HasSubstr("# TYPE convserve_requests_total counter"));
}

// A model version no longer served leaves no queue-depth series behind.
// ONNX's Dropout conformance model (outputs y FP32 and z BOOL, the mask) served from a folder
// without config: a typed request gets every output in typed contents, a raw one every output in
// raw_output_contents, in order; the values are ONNX's expected outputs.
TEST_F(ServerExtraTest, AnswersTakeTheRequestsFormForEveryOutputDatatype) {
  const std::filesystem::path data =
      "/usr/share/libonnx-testdata/data/node/test_dropout_default_mask";
  ASSERT_TRUE(std::filesystem::exists(data / "model.onnx")) << "libonnx-testdata not installed";
  std::filesystem::create_directories(root_ / "dmask" / "1");
  std::filesystem::copy_file(data / "model.onnx", root_ / "dmask" / "1" / "model.onnx");
  ASSERT_NO_FATAL_FAILURE(StartServer(WithoutMetrics()));
  auto read_tensor = [&](const char* file) {
    onnx::TensorProto tensor;
    std::ifstream in(data / "test_data_set_0" / file, std::ios::binary);
    EXPECT_TRUE(tensor.ParseFromIstream(&in)) << file;
    return tensor;
  };
  const onnx::TensorProto x = read_tensor("input_0.pb"), y = read_tensor("output_0.pb"),
                          z = read_tensor("output_1.pb");
  ASSERT_EQ(x.data_type(), onnx::TensorProto::FLOAT);
  ASSERT_EQ(z.data_type(), onnx::TensorProto::BOOL);
  const auto floats = [](const onnx::TensorProto& t) {
    std::vector<float> v(t.float_data().begin(), t.float_data().end());
    if (v.empty()) {
      v.resize(t.raw_data().size() / 4);
      std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
    }
    return v;
  };
  std::vector<bool> mask(z.int32_data().begin(), z.int32_data().end());
  if (mask.empty()) mask.assign(z.raw_data().begin(), z.raw_data().end());
  const std::vector<float> x_values = floats(x), y_values = floats(y);
  ASSERT_EQ(mask.size(), y_values.size());

  for (const bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "raw request" : "typed request");
    inference::ModelInferRequest request;
    request.set_model_name("dmask");
    auto* input = request.add_inputs();
    input->set_name(x.name().empty() ? "x" : x.name());
    input->set_datatype("FP32");
    for (int64_t d : x.dims()) input->add_shape(d);
    if (raw) {
      request.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x_values.data()),
                                                 x_values.size() * sizeof(float)));
    } else {
      for (float v : x_values) input->mutable_contents()->add_fp32_contents(v);
    }
    inference::ModelInferResponse response;
    grpc::Status status = Infer(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.outputs_size(), 2);
    EXPECT_EQ(response.outputs(0).datatype(), "FP32");
    EXPECT_EQ(response.outputs(1).datatype(), "BOOL");
    std::vector<float> got_y;
    std::vector<bool> got_z;
    if (raw) {
      ASSERT_EQ(response.raw_output_contents_size(), 2);
      const std::string& y_bytes = response.raw_output_contents(0);
      got_y.resize(y_bytes.size() / 4);
      std::memcpy(got_y.data(), y_bytes.data(), y_bytes.size());
      got_z.assign(response.raw_output_contents(1).begin(), response.raw_output_contents(1).end());
    } else {
      EXPECT_EQ(response.raw_output_contents_size(), 0);
      got_y.assign(response.outputs(0).contents().fp32_contents().begin(),
                   response.outputs(0).contents().fp32_contents().end());
      got_z.assign(response.outputs(1).contents().bool_contents().begin(),
                   response.outputs(1).contents().bool_contents().end());
    }
    EXPECT_EQ(got_y, y_values);
    EXPECT_EQ(got_z, mask);
  }
}

// Without dynamic_batching (Triton's semantics) requests never share an execution, even when they
// arrive together.
TEST_F(ServerExtraTest, WithoutDynamicBatchingEveryExecutionIsOneRequest) {
  WriteText(root_ / "unbatched" / "config.pbtxt", R"(max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
)");
  WriteLinearOnnx(root_ / "unbatched" / "1" / "model.onnx", 0.0f);
  ASSERT_NO_FATAL_FAILURE(StartServer(WithoutMetrics()));
  constexpr int kClients = 8, kRequests = 60;
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      auto stub = GRPCInferenceService::NewStub(channel_);
      for (int i = 0; i < kRequests; ++i) {
        grpc::ClientContext context;
        inference::ModelInferResponse response;
        if (!stub->ModelInfer(&context, Request("unbatched", 1), &response).ok()) ++failures;
      }
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(failures.load(), 0);
  const inference::ModelStatistics stats = Stats("unbatched");
  EXPECT_EQ(stats.inference_count(), static_cast<uint64_t>(kClients * kRequests));
  EXPECT_EQ(stats.execution_count(), stats.inference_count());
  for (const auto& batch : stats.batch_stats()) {
    EXPECT_EQ(batch.batch_size(), 1u) << batch.compute_infer().count() << " executions";
  }
}

// ModelConfig shows the queue bound that applies: the config's max_queue_size, else the
// server's default of 1024 requests (documented in the README), where Triton's would be
// unbounded. A model without dynamic_batching gets no dynamic_batching section.
TEST_F(ServerExtraTest, ModelConfigShowsTheQueueBoundThatApplies) {
  const std::string io = R"(max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
)";
  WriteText(root_ / "defaultq" / "config.pbtxt",
            io + "dynamic_batching { max_queue_delay_microseconds: 100 }\n");
  WriteLinearOnnx(root_ / "defaultq" / "1" / "model.onnx", 0.0f);
  WriteText(root_ / "unbatched" / "config.pbtxt", io);
  WriteLinearOnnx(root_ / "unbatched" / "1" / "model.onnx", 0.0f);
  ASSERT_NO_FATAL_FAILURE(StartServer(WithoutMetrics()));
  const auto config_of = [&](const std::string& name) {
    grpc::ClientContext context;
    inference::ModelConfigRequest request;
    request.set_name(name);
    inference::ModelConfigResponse response;
    const grpc::Status status = stub_->ModelConfig(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.config();
  };
  const inference::ModelConfig defaultq = config_of("defaultq");
  EXPECT_EQ(defaultq.dynamic_batching().default_queue_policy().max_queue_size(), 1024u);
  EXPECT_EQ(defaultq.dynamic_batching().max_queue_delay_microseconds(), 100u);
  EXPECT_EQ(config_of("queued").dynamic_batching().default_queue_policy().max_queue_size(), 1u);
  EXPECT_FALSE(config_of("unbatched").has_dynamic_batching());
}

TEST_F(ServerExtraTest, UnloadedVersionsQueueDepthSeriesGoes) {
  api::ServerOptions options;
  options.metrics_port = -1;
  options.model_control_mode = "explicit";
  options.load_models = {"tiny"};
  StartServer(options);
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(Request("tiny", 1), &response).ok());
  const auto metrics = [&] { return HttpGet(server_->metrics_port(), "/metrics"); };
  const std::string series = R"(convserve_queue_depth{model="tiny",version="1"})";
  EXPECT_THAT(metrics(), HasSubstr(series));

  grpc::ClientContext context;
  inference::RepositoryModelUnloadRequest unload;
  unload.set_model_name("tiny");
  inference::RepositoryModelUnloadResponse unloaded;
  grpc::Status status = stub_->RepositoryModelUnload(&context, unload, &unloaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // The scheduler is destroyed on the reaper thread after the unload answered.
  EXPECT_TRUE(PollUntil([&] { return metrics().find(series) == std::string::npos; }));
  // The counters of what happened stay.
  EXPECT_THAT(metrics(), HasSubstr(R"(convserve_requests_total{model="tiny",outcome="OK"} 1)"));
}

TEST_F(ServerExtraTest, FullQueueFailsWithResourceExhausted) {
  auto scheduler = StartServerFor("queued");
  ASSERT_NE(scheduler, nullptr);
  constexpr int kRejected = 32;

  std::future<absl::StatusOr<serving::InferResponse>> running;
  std::future<grpc::Status> queued;
  std::vector<std::future<grpc::Status>> rejected;
  BudgetHold hold(server_->core().thread_budget());
  // One request taken by the (blocked) worker, one waiting in the queue of size 1 ...
  running = CoreInfer("queued");
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 0; }));
  queued = std::async(std::launch::async, [this] {
    inference::ModelInferResponse response;
    return Infer(Request("queued", 4), &response);
  });
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 1; }));
  // ... so that every further request finds the queue full.
  for (int i = 0; i < kRejected; ++i) {
    rejected.push_back(std::async(std::launch::async, [this, i] {
      inference::ModelInferResponse response;
      return Infer(Request("queued", i % 10), &response);
    }));
  }
  for (auto& f : rejected) {
    grpc::Status status = f.get();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("queue of model 'queued' is full"));
  }
  EXPECT_EQ(scheduler->queue_depth(), 1);
  hold.Release();
  auto first = running.get();
  EXPECT_TRUE(first.ok()) << first.status();
  grpc::Status second = queued.get();
  EXPECT_TRUE(second.ok()) << second.error_message();

  const inference::ModelStatistics stats = Stats("queued");
  EXPECT_EQ(stats.inference_stats().fail().count(), static_cast<uint64_t>(kRejected));
  EXPECT_EQ(stats.inference_stats().success().count(), 2u);
  EXPECT_EQ(stats.inference_count(), 2u);
  EXPECT_EQ(stats.execution_count(), 2u);
}

// max_queue_delay is an upper bound: a lone client (one request at a time) waits the delay
// only until two waits in a row collected nothing, then its requests run at once, on the gRPC
// thread that received them (no hand-off to a worker), with the answers the worker gives. The
// oracles: the server's own queue time (ModelStatistics), 400 ms per wait against none; the
// scheduler's count of inline executions; the linear model's logits.
TEST_F(ServerExtraTest, LoneClientStopsPayingTheBatchingDelayAndRunsInline) {
  auto scheduler = StartServerWithModel("slowbatch", R"(name: "slowbatch"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: 400000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
)",
                                        0.5f);
  ASSERT_NE(scheduler, nullptr);
  std::vector<uint64_t> queue_ns;      // queue time of each request, from the cumulative statistics
  std::vector<uint64_t> inline_after;  // the scheduler's inline count after each request
  uint64_t before = 0;
  for (int i = 0; i < 5; ++i) {
    inference::ModelInferResponse response;
    const grpc::Status status = Infer(Request("slowbatch", i), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.raw_output_contents_size(), 1);
    const std::string& raw = response.raw_output_contents(0);
    ASSERT_EQ(raw.size(), 10 * sizeof(float));
    const std::vector<float> pixels = PatternFloats(i);
    const auto expected = LinearLogits(pixels.data(), 0.5f);
    for (int k = 0; k < 10; ++k) {
      float value;
      std::memcpy(&value, raw.data() + k * sizeof(float), sizeof(float));
      EXPECT_NEAR(value, expected[k], 1e-4) << "request " << i << " class " << k;
    }
    const uint64_t total = Stats("slowbatch").inference_stats().queue().ns();
    queue_ns.push_back(total - before);
    before = total;
    inline_after.push_back(scheduler->inline_count());
  }
  constexpr uint64_t kDelayNs = 400'000'000;
  EXPECT_GE(queue_ns[0], kDelayNs * 9 / 10);  // the first wait is taken
  EXPECT_GE(queue_ns[1], kDelayNs * 9 / 10);  // and a second one
  for (int i = 2; i < 5; ++i) EXPECT_LT(queue_ns[i], kDelayNs / 2) << "request " << i;
  // The two waits ran on the worker; the rest inline, unless the measured batch-1 time (smoothed
  // over about four executions) went over kInlineMaxInferUs: a busy machine that preempts one
  // execution for milliseconds keeps a few requests off the inline path. Then more requests
  // bring the estimate back down and run inline again.
  EXPECT_EQ(inline_after[1], 0u);  // hence [0] too
  uint64_t inlined = inline_after[4];
  for (int i = 5; i < 40 && inlined == 0; ++i) {
    inference::ModelInferResponse response;
    ASSERT_TRUE(Infer(Request("slowbatch", i % 10), &response).ok());
    inlined = scheduler->inline_count();
  }
  EXPECT_GT(inlined, 0u);
}

// Under load the batcher does not wait: a request that queued up while the worker computed runs
// as soon as the worker is free, not max_queue_delay (5 s here) after it arrived.
TEST_F(ServerExtraTest, BacklogRunsWithoutWaitingForMore) {
  auto scheduler = StartServerWithModel("backlog", R"(name: "backlog"
max_batch_size: 2
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: 5000000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
)",
                                        0.0f);
  ASSERT_NE(scheduler, nullptr);
  BudgetHold hold(server_->core().thread_budget());
  // The worker waits for company for `first`, gets `second`, and blocks on the held threads.
  auto first = CoreInfer("backlog");
  auto second = CoreInfer("backlog");
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 0; }));
  auto third = CoreInfer("backlog");  // queued behind the blocked batch
  ASSERT_EQ(scheduler->queue_depth(), 1);
  const Steady::time_point released = Steady::now();
  hold.Release();
  for (auto* result : {&first, &second, &third}) {
    auto answer = result->get();
    EXPECT_TRUE(answer.ok()) << answer.status();
  }
  // Waiting for a partner for `third` would have taken until its arrival + 5 s.
  EXPECT_LT(Steady::now() - released, std::chrono::milliseconds(2500));
  const inference::ModelStatistics stats = Stats("backlog");
  EXPECT_EQ(stats.inference_count(), 3u);
  EXPECT_EQ(stats.execution_count(), 2u);
}

// A batch that reaches a preferred batch size runs at once, as Triton runs it, without waiting
// max_queue_delay (5 s here) for a larger preferred size or max_batch_size. The worker waits for
// company for `first` (the model is new: no batch size measured, so the whole delay may be
// spent), `second` joins it, and the batch of 2, the smallest preferred size, runs.
TEST_F(ServerExtraTest, BatchThatReachesAPreferredSizeRunsAtOnce) {
  auto scheduler = StartServerWithModel("preferred", R"(name: "preferred"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: 5000000 preferred_batch_size: [ 4, 2 ] }
instance_group [ { count: 1 kind: KIND_CPU } ]
)",
                                        0.0f);
  ASSERT_NE(scheduler, nullptr);
  const Steady::time_point sent = Steady::now();
  auto first = CoreInfer("preferred", Steady::time_point::max(), false, 3);
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 0; }));  // the worker has it
  auto second = CoreInfer("preferred", Steady::time_point::max(), false, 4);
  EXPECT_TRUE(HoldsLogitsOf(first.get(), 3));
  EXPECT_TRUE(HoldsLogitsOf(second.get(), 4));
  // Waiting for a batch of 4 or 8 would have taken until 5 s after `first`.
  EXPECT_LT(Steady::now() - sent, std::chrono::milliseconds(2500));
  const inference::ModelStatistics stats = Stats("preferred");
  EXPECT_EQ(stats.inference_count(), 2u);
  EXPECT_EQ(stats.execution_count(), 1u);
}

// A request that finds the compute threads taken is queued for the worker, not run inline, and
// still answered once they are free.
TEST_F(ServerExtraTest, LoneRequestWithoutFreeThreadsIsQueued) {
  auto scheduler = StartServerFor("queued");
  ASSERT_NE(scheduler, nullptr);
  // "queued"'s batcher never waits (max_batch_size 1): once an execution was measured (the
  // first, which pays one-time costs, is not), lone requests run inline.
  WarmUntilInline("queued", *scheduler);
  const uint64_t inline_before = scheduler->inline_count();
  BudgetHold hold(server_->core().thread_budget());
  auto held = CoreInfer("queued");
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 0; }));  // the worker took it
  EXPECT_EQ(held.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  hold.Release();
  auto result = held.get();
  EXPECT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(scheduler->inline_count(), inline_before);
}

// A request that arrived together with others (the api saw them ready at once) is queued so that
// they can form a batch, even where a lone request would run inline.
TEST_F(ServerExtraTest, RequestArrivingWithOthersIsQueuedNotRunInline) {
  auto scheduler = StartServerFor("queued");
  ASSERT_NE(scheduler, nullptr);
  WarmUntilInline("queued", *scheduler);
  const uint64_t inline_before = scheduler->inline_count();
  const uint64_t executions_before = Stats("queued").execution_count();
  auto followed = CoreInfer("queued", Steady::time_point::max(), /*followed=*/true);
  EXPECT_TRUE(HoldsLogitsOf(followed.get(), 2));
  EXPECT_EQ(scheduler->inline_count(), inline_before);
  EXPECT_EQ(Stats("queued").execution_count(), executions_before + 1);
  // And the next lone request runs inline again.
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(Request("queued", 3), &response).ok());
  EXPECT_EQ(scheduler->inline_count(), inline_before + 1);
}

// Requests that arrived together run as one batch on the thread of the last of them
// (ClaimGroup). Deterministic: the worker is held inside an answer callback, so it cannot take the
// queued requests; the group then runs on the test thread, as one execution of batch 3.
TEST_F(ServerExtraTest, RequestsThatArrivedTogetherRunAsOneBatchOnTheLastOnesThread) {
  // Dynamic batching without a queue delay: only requests that arrive together share a batch.
  auto scheduler =
      StartServerWithModel("group", LinearModelConfig("group", 8, "dynamic_batching { }\n"), 0.0f);
  ASSERT_NE(scheduler, nullptr);
  const auto batches_of_3 = [&] {
    uint64_t n = 0;
    const inference::ModelStatistics stats = Stats("group");
    for (const auto& b : stats.batch_stats()) {
      if (b.batch_size() == 3) n = b.compute_infer().count();
    }
    return n;
  };
  // The group runs inline only while its estimated compute (3 x batch 1) is under
  // kGroupMaxInferUs; an execution preempted on a loaded machine raises the estimate for a while
  // (ctest -j2 once made it a group of 2). Then the scenario is retried after more warm-up.
  std::string attempts;
  bool grouped = false;
  for (int attempt = 0; attempt < 20 && !grouped; ++attempt) {
    WarmUntilInline("group", *scheduler);  // measures batch 1 (the group's estimate is 3 of it)
    const uint64_t inline_before = scheduler->inline_count();
    const uint64_t executions_before = Stats("group").execution_count();
    const uint64_t batches_of_3_before = batches_of_3();

    std::promise<void> release;
    std::shared_future<void> held = release.get_future().share();
    // Lets the worker go on every path out of this attempt (else a failure would hang).
    struct Release {
      std::promise<void>* promise;
      bool done = false;
      void operator()() {
        if (!done) promise->set_value();
        done = true;
      }
      ~Release() { (*this)(); }
    } let_go{&release};
    // Queued (it follows others), taken by the worker, which then waits in its answer callback.
    auto entered = std::make_shared<std::promise<void>>();
    auto in_callback = entered->get_future();
    auto blocker =
        CoreInfer("group", Steady::time_point::max(), /*followed=*/true, 7, held, entered);
    // The worker answers after it gave the instance back: from here it holds nothing but itself.
    ASSERT_EQ(in_callback.wait_for(kWait), std::future_status::ready);
    auto first = CoreInfer("group", Steady::time_point::max(), /*followed=*/true, 4);
    auto second = CoreInfer("group", Steady::time_point::max(), /*followed=*/true, 5);
    ASSERT_EQ(scheduler->queue_depth(), 2);
    auto last = CoreInfer("group", Steady::time_point::max(), /*followed=*/false, 6);
    // All three ran before CoreInfer returned: on this thread, as one batch.
    const bool ran_at_once = last.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    const int64_t left_queued = scheduler->queue_depth();
    const uint64_t inline_runs = scheduler->inline_count() - inline_before;
    const uint64_t executions = Stats("group").execution_count() - executions_before;
    let_go();  // whatever is left queued now runs on the worker
    EXPECT_TRUE(HoldsLogitsOf(first.get(), 4));
    EXPECT_TRUE(HoldsLogitsOf(second.get(), 5));
    EXPECT_TRUE(HoldsLogitsOf(last.get(), 6));
    EXPECT_TRUE(HoldsLogitsOf(blocker.get(), 7));
    grouped = ran_at_once && left_queued == 0;
    if (!grouped) {
      attempts += absl::StrCat(" [attempt ", attempt, ": ran at once ", ran_at_once,
                               ", left queued ", left_queued, ", inline runs ", inline_runs, "]");
      continue;
    }
    EXPECT_EQ(inline_runs, 1u);
    EXPECT_EQ(executions, 2u);  // the blocker's batch of 1 and the group's of 3
    EXPECT_EQ(batches_of_3() - batches_of_3_before, 1u);
  }
  EXPECT_TRUE(grouped) << "never ran as one group:" << attempts;
}

// UINT8 input normalised with the config's scale, mean and std, where the config leaves the
// channel dim variable (-1): the per-sample dims come from the request's shape. Oracle: the linear
// model's logits for (x * scale - mean) / std computed here.
TEST_F(ServerExtraTest, Uint8InputIsNormalizedWithMeanAndStdAlsoWithAVariableChannelDim) {
  StartServerWithModel("u8var", R"(name: "u8var"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ -1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
preprocessing { color_format: GRAY width: 28 height: 28 scale: 0.5 mean: [ 3.0 ] std: [ 4.0 ] }
)",
                       0.0f);
  ASSERT_NE(server_, nullptr);
  std::vector<uint8_t> bytes(28 * 28);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 % 251);
  const inference::ModelInferRequest request = Uint8Request("u8var", bytes);
  inference::ModelInferResponse response;
  const grpc::Status status = Infer(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<float> pixels(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    pixels[i] = (static_cast<float>(bytes[i]) * 0.5f - 3.0f) / 4.0f;
  }
  const auto expected = LinearLogits(pixels.data(), 0.0f);
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  ASSERT_EQ(response.raw_output_contents(0).size(), 10 * sizeof(float));
  for (int k = 0; k < 10; ++k) {
    float value;
    std::memcpy(&value, response.raw_output_contents(0).data() + k * sizeof(float), sizeof(float));
    EXPECT_NEAR(value, expected[k], 1e-3f * std::max(1.0f, std::abs(expected[k]))) << k;
  }
}

// While the gRPC thread acts on events it took at once, a request that arrived with others is
// queued without waking the worker (the last of them may take them all); the end of those events
// wakes it, and the request is answered. Deterministic: nothing else wakes the idle worker.
TEST_F(ServerExtraTest, WakeForRequestsThatArrivedTogetherWaitsForTheEndOfTheirEvents) {
  auto scheduler = StartServerFor("tiny");
  ASSERT_NE(scheduler, nullptr);
  // The worker must be asleep, waiting for requests: one still on its way there would find the
  // request queued without being woken.
  ASSERT_TRUE(PollUntil([] {
    static Steady::time_point asleep_since = Steady::time_point::max();
    const bool asleep = ThreadState("cs-w:tiny") == 'S';
    if (!asleep) asleep_since = Steady::time_point::max();
    if (asleep && asleep_since == Steady::time_point::max()) asleep_since = Steady::now();
    return asleep && Steady::now() - asleep_since > std::chrono::milliseconds(20);
  })) << "the worker never slept";
  serving::Scheduler::BeginDeferringWakes();
  auto followed = CoreInfer("tiny", Steady::time_point::max(), /*followed=*/true, 3);
  const bool answered_early =
      followed.wait_for(std::chrono::milliseconds(100)) == std::future_status::ready;
  const int64_t queued = scheduler->queue_depth();
  serving::Scheduler::EndDeferringWakes();
  EXPECT_FALSE(answered_early) << "the worker was woken before the events' end";
  EXPECT_EQ(queued, 1);
  ASSERT_EQ(followed.wait_for(kWait), std::future_status::ready) << "never woken";
  EXPECT_TRUE(HoldsLogitsOf(followed.get(), 3));
}

// An image that would take long to decode is not decoded on the thread that received it: past
// kInlineMaxImagePixels (by its header) the request goes to the worker, and is still answered.
TEST_F(ServerExtraTest, LargeImageIsDecodedOnAWorkerNotInline) {
  auto scheduler = StartServerWithModel(
      "images",
      LinearModelConfig("images", 1,
                        "preprocessing { color_format: GRAY width: 28 height: 28 "
                        "scale: 0.003921569 }\n"),
      0.0f);
  ASSERT_NE(scheduler, nullptr);
  auto infer_png = [&](int label, int side) {
    inference::ModelInferRequest request;
    request.set_model_name("images");
    auto* input = request.add_inputs();
    input->set_name("input");
    input->set_datatype("BYTES");
    input->add_shape(1);
    input->mutable_contents()->add_bytes_contents(EncodePng(PatternImage(label, side), side, side));
    inference::ModelInferResponse response;
    const grpc::Status status = Infer(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.outputs_size(), 1);
    const auto& logits = response.outputs(0).contents().fp32_contents();
    ASSERT_EQ(logits.size(), 10);
    if (side != 28) return;  // resized: no exact oracle
    const std::vector<float> pixels = PatternFloats(label);
    const auto expected = LinearLogits(pixels.data(), 0.0f);
    for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits[k], expected[k], 1e-4) << "class " << k;
  };
  // A lone request runs inline once a batch-1 execution was measured under kInlineMaxInferUs
  // (the third one on a quiet machine). On a loaded one the measurement can exceed it for a
  // while, so each step sends requests until one runs inline, up to kTries.
  constexpr int kTries = 30;
  int sent = 0;
  const auto infer_until_inline = [&](int side) {
    const uint64_t before = scheduler->inline_count();
    for (int i = 0; i < kTries && scheduler->inline_count() == before; ++i) {
      infer_png(sent++ % 10, side);
    }
    return scheduler->inline_count() > before;
  };
  ASSERT_TRUE(infer_until_inline(28));
  // Over the pixel limit: never inline, whatever the timing (which can only keep requests off
  // the receiving thread, never put them on it).
  const uint64_t inline_before = scheduler->inline_count();
  const int side = 257;  // 257 * 257 > kInlineMaxImagePixels = 256 * 256
  static_assert(257 * 257 > serving::Scheduler::kInlineMaxImagePixels);
  for (int i = 0; i < 3; ++i) infer_png(sent++ % 10, side);
  EXPECT_EQ(scheduler->inline_count(), inline_before);
  EXPECT_TRUE(infer_until_inline(256));  // exactly at the limit: inline
  EXPECT_EQ(Stats("images").execution_count(), static_cast<uint64_t>(sent));
}

TEST_F(ServerExtraTest, DeadlinePassedWhileQueuedIsNotComputed) {
  auto scheduler = StartServerFor("queued");
  ASSERT_NE(scheduler, nullptr);

  std::future<absl::StatusOr<serving::InferResponse>> running;
  std::future<grpc::Status> late;
  BudgetHold hold(server_->core().thread_budget());
  running = CoreInfer("queued");
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 0; }));
  // A gRPC request with a 1 s deadline waits behind the blocked worker: the client gives up.
  late = std::async(std::launch::async, [this] {
    inference::ModelInferResponse response;
    return Infer(Request("queued", 5), &response, std::chrono::milliseconds(1000));
  });
  ASSERT_TRUE(PollUntil([&] { return scheduler->queue_depth() == 1; }));
  // The server's deadline is its receipt time + 1 s, and it received the request by now. Plus
  // gRPC's slack: the timeout a client sends is measured from a clock reading gRPC caches, which
  // made the server's deadline up to 10 ms later than that (seen with an earlier server in the
  // same process).
  const Steady::time_point server_deadline_bound =
      Steady::now() + std::chrono::seconds(1) + std::chrono::milliseconds(200);
  EXPECT_EQ(late.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // A loaded machine may deliver the request late, so the client's deadline can pass before the
  // server's: wait for the clock to pass the server's too.
  while (Steady::now() <= server_deadline_bound) std::this_thread::yield();
  hold.Release();
  auto first = running.get();
  EXPECT_TRUE(first.ok()) << first.status();
  // The server drops the expired request without computing it.
  EXPECT_TRUE(PollUntil([&] { return Stats("queued").inference_stats().fail().count() == 1; }));
  // Its answer (DEADLINE_EXCEEDED) found the call ended: gRPC could not deliver it, and the
  // server counts that. The first request was answered straight through the core, not gRPC.
  EXPECT_TRUE(PollUntil([&] {
    return server_->undelivered_answers()["inference.GRPCInferenceService/ModelInfer"] == 1;
  }));
  const std::map<std::string, int64_t> undelivered = server_->undelivered_answers();
  ASSERT_EQ(undelivered.count("inference.GRPCInferenceService/ServerLive"), 1u);
  EXPECT_EQ(undelivered.at("inference.GRPCInferenceService/ServerLive"), 0);

  // The server-side status and message, seen through the core: a deadline already passed.
  auto expired = CoreInfer("queued", Steady::now() - std::chrono::milliseconds(1));
  ASSERT_EQ(expired.wait_for(kWait), std::future_status::ready);
  absl::StatusOr<serving::InferResponse> result = expired.get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("deadline of the request to model 'queued' passed while it was queued"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("it was not computed"));

  const inference::ModelStatistics stats = Stats("queued");
  EXPECT_EQ(stats.inference_stats().fail().count(), 2u);
  EXPECT_EQ(stats.inference_stats().success().count(), 1u);
  EXPECT_EQ(stats.inference_count(), 1u);
  EXPECT_EQ(stats.execution_count(), 1u);
  uint64_t executed = 0;
  for (const auto& b : stats.batch_stats()) executed += b.compute_infer().count();
  EXPECT_EQ(executed, 1u);
}

// Once shutdown began, explicit load/unload requests queued behind a running one, and new ones,
// are answered UNAVAILABLE, not run and not dropped (a dropped answer would keep the server's
// shutdown waiting for its gRPC call forever); the running one finishes.
TEST_F(ServerExtraTest, ControlRequestsAfterShutdownBeganAreAnsweredUnavailable) {
  std::unique_ptr<serving::ServerCore> core = ExplicitCore();
  ASSERT_NE(core, nullptr);

  // The first load's answer holds the control thread until the test releases it.
  std::promise<void> entered, release;
  std::promise<absl::Status> first;
  core->LoadAsync("tiny", [&](absl::Status status) {
    entered.set_value();
    release.get_future().wait();
    first.set_value(status);
  });
  entered.get_future().wait();
  std::vector<std::promise<absl::Status>> answers(3);
  core->LoadAsync("queued", [&](absl::Status s) { answers[0].set_value(s); });
  core->UnloadAsync("tiny", [&](absl::Status s) { answers[1].set_value(s); });
  core->BeginShutdown();
  core->LoadAsync("derived", [&](absl::Status s) { answers[2].set_value(s); });  // after
  release.set_value();
  EXPECT_TRUE(first.get_future().get().ok());
  core.reset();
  for (auto& answer : answers) {
    auto future = answer.get_future();
    ASSERT_EQ(future.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    const absl::Status status = future.get();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("shutting down"));
  }
}

// Reports are in flight like requests at a graceful stop: new ones are refused, those running
// finish (WaitForInFlight waits for them), and at the exit timeout the running one's measurement
// is cancelled and those queued are answered.
TEST_F(ServerExtraTest, ReportsInFlightFinishAtShutdownOrAreCancelledAtTheTimeout) {
  {
    std::unique_ptr<serving::ServerCore> core = ExplicitCore();
    ASSERT_NE(core, nullptr);
    std::promise<void> started, release;
    std::atomic<bool> finished{false}, saw_cancel{false};
    ASSERT_TRUE(core->reports()
                    .Post(
                        [&](int, const std::atomic<bool>* cancel) {
                          started.set_value();
                          release.get_future().wait();
                          saw_cancel = cancel->load();
                          finished = true;
                        },
                        [] { ADD_FAILURE() << "a running report was cancelled"; })
                    .ok());
    started.get_future().wait();
    core->BeginShutdown();
    const absl::Status refused = core->reports().Post(
        [](int, const std::atomic<bool>*) { ADD_FAILURE() << "a report ran after shutdown"; },
        [] {});
    EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
    std::thread releaser([&] { release.set_value(); });
    EXPECT_TRUE(core->WaitForInFlight(std::chrono::steady_clock::now() + std::chrono::seconds(60)));
    EXPECT_TRUE(finished.load()) << "WaitForInFlight returned while the report was running";
    EXPECT_FALSE(saw_cancel.load());
    releaser.join();
  }
  {
    std::unique_ptr<serving::ServerCore> core = ExplicitCore();
    ASSERT_NE(core, nullptr);
    std::promise<void> started;
    std::atomic<bool> saw_cancel{false}, queued_cancelled{false};
    ASSERT_TRUE(core->reports()
                    .Post(
                        [&](int, const std::atomic<bool>* cancel) {
                          started.set_value();
                          while (!cancel->load()) std::this_thread::yield();
                          saw_cancel = true;
                        },
                        [] { ADD_FAILURE() << "the running report was called as cancelled"; })
                    .ok());
    ASSERT_TRUE(core->reports()
                    .Post([](int, const std::atomic<bool>*) { ADD_FAILURE() << "queued one ran"; },
                          [&] { queued_cancelled = true; })
                    .ok());
    started.get_future().wait();
    core->BeginShutdown();
    EXPECT_FALSE(
        core->WaitForInFlight(std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
    EXPECT_TRUE(queued_cancelled.load());
    core.reset();  // joins the runner: the running report saw the cancel
    EXPECT_TRUE(saw_cancel.load());
  }
}

TEST_F(ServerExtraTest, PollModeServesANewVersionWithoutFailures) {
  api::ServerOptions options;
  options.metrics_port = 0;
  options.model_control_mode = "poll";
  options.repository_poll_secs = 1;
  StartServer(options);

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, v1{0}, v2{0};
  std::string first_failure;
  std::thread client([&] {
    while (!stop.load()) {
      inference::ModelInferResponse response;
      grpc::Status status = Infer(Request("tiny", 1), &response);
      if (!status.ok()) {
        if (failures++ == 0) first_failure = status.error_message();
        continue;
      }
      if (response.model_version() == "1") ++v1;
      if (response.model_version() == "2") ++v2;
    }
  });
  const bool saw_v1 = PollUntil([&] { return v1.load() > 0; });

  // Version 2 appears atomically (written elsewhere on the same file system, then renamed).
  const std::filesystem::path staging = MakeTempDir("convserve-server-extra-stage");
  WriteLinearOnnx(staging / "2" / "model.onnx", 100.0f);
  std::filesystem::rename(staging / "2", root_ / "tiny" / "2");
  std::filesystem::remove_all(staging);

  auto version2_ready = [&] {
    grpc::ClientContext c;
    inference::RepositoryIndexRequest q;
    q.set_ready(true);
    inference::RepositoryIndexResponse r;
    if (!stub_->RepositoryIndex(&c, q, &r).ok()) return false;
    for (const auto& m : r.models()) {
      if (m.name() == "tiny" && m.version() == "2" && m.state() == "READY") return true;
    }
    return false;
  };
  const bool ready = PollUntil(version2_ready);
  const bool served = PollUntil([&] { return v2.load() >= 5; });
  stop = true;
  client.join();
  EXPECT_TRUE(saw_v1);
  EXPECT_TRUE(ready);
  EXPECT_TRUE(served);
  EXPECT_EQ(failures.load(), 0) << first_failure;
  EXPECT_GT(v1.load(), 0);
  EXPECT_GE(v2.load(), 5);
}

// --- ModelStreamInfer (Triton's streaming API) ---

using InferStream =
    grpc::ClientReaderWriter<inference::ModelInferRequest, inference::ModelStreamInferResponse>;

// Whether `answer` is a success holding the linear test model's logits (bias 0) for
// PatternFloats(label), with id `id`.
::testing::AssertionResult StreamAnswerHolds(const inference::ModelStreamInferResponse& answer,
                                             const std::string& id, int label) {
  if (!answer.error_message().empty()) {
    return ::testing::AssertionFailure() << "error answer: " << answer.error_message();
  }
  const inference::ModelInferResponse& response = answer.infer_response();
  if (response.id() != id) {
    return ::testing::AssertionFailure() << "id '" << response.id() << "', not '" << id << "'";
  }
  if (response.raw_output_contents_size() != 1 ||
      response.raw_output_contents(0).size() != 10 * sizeof(float)) {
    return ::testing::AssertionFailure() << "not one raw output of 10 floats";
  }
  const std::vector<float> pixels = PatternFloats(label);
  const auto expected = LinearLogits(pixels.data(), 0.0f);
  for (int k = 0; k < 10; ++k) {
    float value;
    std::memcpy(&value, response.raw_output_contents(0).data() + k * sizeof(float), sizeof(float));
    if (std::abs(value - expected[k]) > 1e-4f) {
      return ::testing::AssertionFailure()
             << "id " << id << ", class " << k << ": " << value << " instead of " << expected[k];
    }
  }
  return ::testing::AssertionSuccess();
}

inference::ModelInferRequest StreamRequest(const std::string& model, int label,
                                           const std::string& id) {
  inference::ModelInferRequest request = PatternRequest(model, {label});
  request.set_id(id);
  return request;
}

void ServerExtraTest::RunStreams(int streams, int each) {
  const uint64_t before = Stats("linear").inference_count();
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int c = 0; c < streams; ++c) {
    clients.emplace_back([&, c] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + kWait);
      std::unique_ptr<InferStream> stream = stub_->ModelStreamInfer(&context);
      inference::ModelStreamInferResponse answer;
      for (int i = 0; i < each; ++i) {
        const int label = (c + i) % 10;
        const std::string id = absl::StrCat("s", c, "-", i);
        if (!stream->Write(StreamRequest("linear", label, id)) || !stream->Read(&answer)) break;
        EXPECT_TRUE(StreamAnswerHolds(answer, id, label));
        good.fetch_add(1);
      }
      stream->WritesDone();
      EXPECT_TRUE(stream->Finish().ok());
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(good.load(), streams * each);
  EXPECT_EQ(Stats("linear").inference_count() - before, static_cast<uint64_t>(streams * each));
}

// Twenty requests written at once on one stream: each gets one answer, with its id and the
// oracle's logits; the client closes its side and the stream ends OK. Counted like ModelInfer.
TEST_F(ServerExtraTest, ModelStreamInferAnswersEveryRequestWithItsIdThenEndsOk) {
  grpc::ClientContext context;
  std::unique_ptr<InferStream> stream = StartLinearAndOpenStream(context);
  ASSERT_NE(stream, nullptr);
  constexpr int kRequests = 20;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(stream->Write(StreamRequest("linear", i % 10, absl::StrCat("r", i))));
  }
  std::map<std::string, int> answered;
  inference::ModelStreamInferResponse answer;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(stream->Read(&answer)) << "stream ended after " << i << " answers";
    const std::string id = answer.infer_response().id();
    ASSERT_EQ(id.rfind('r', 0), 0u) << id;
    EXPECT_TRUE(StreamAnswerHolds(answer, id, std::stoi(id.substr(1)) % 10));
    ++answered[id];
  }
  EXPECT_EQ(answered.size(), static_cast<size_t>(kRequests));
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&answer)) << "an answer nobody asked for";
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  const inference::ModelStatistics stats = Stats("linear");
  EXPECT_EQ(stats.inference_count(), static_cast<uint64_t>(kRequests));
  EXPECT_EQ(stats.inference_stats().success().count(), static_cast<uint64_t>(kRequests));
  EXPECT_EQ(server_->undelivered_answers().at("inference.GRPCInferenceService/ModelStreamInfer"),
            0);
}

// A bad request on a stream gets an answer with error_message (naming the model and what is
// wrong), its id and model, and its gRPC code in the grpc_status_code parameter; the stream goes
// on, and a good request after it succeeds.
TEST_F(ServerExtraTest, ModelStreamInferErrorIsAnAnswerAndTheStreamGoesOn) {
  grpc::ClientContext context;
  std::unique_ptr<InferStream> stream = StartLinearAndOpenStream(context);
  ASSERT_NE(stream, nullptr);
  inference::ModelStreamInferResponse answer;
  const auto expect_error = [&](const inference::ModelInferRequest& request, int64_t code,
                                const std::vector<std::string>& words) {
    ASSERT_TRUE(stream->Write(request));
    ASSERT_TRUE(stream->Read(&answer));
    EXPECT_EQ(answer.infer_response().id(), request.id());
    EXPECT_EQ(answer.infer_response().model_name(), request.model_name());
    EXPECT_EQ(answer.infer_response().outputs_size(), 0);
    const auto& parameters = answer.infer_response().parameters();
    ASSERT_EQ(parameters.count("grpc_status_code"), 1u) << answer.ShortDebugString();
    EXPECT_EQ(parameters.at("grpc_status_code").int64_param(), code);
    for (const std::string& word : words) {
      EXPECT_THAT(answer.error_message(), HasSubstr(word));
    }
  };
  expect_error(StreamRequest("nosuch", 1, "unknown"), grpc::StatusCode::NOT_FOUND, {"'nosuch'"});
  inference::ModelInferRequest wrong_shape = StreamRequest("linear", 1, "shape");
  wrong_shape.mutable_inputs(0)->set_shape(2, 27);  // [1, 1, 27, 28]
  expect_error(wrong_shape, grpc::StatusCode::INVALID_ARGUMENT, {"'linear'", "'input'", "27"});
  ASSERT_TRUE(stream->Write(StreamRequest("linear", 7, "good")));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_TRUE(StreamAnswerHolds(answer, "good", 7));
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
  const inference::ModelStatistics stats = Stats("linear");
  EXPECT_EQ(stats.inference_stats().fail().count(), 1u);
  EXPECT_EQ(stats.inference_stats().success().count(), 1u);
}

// Streams at once, each with one request in flight at a time (RunStreams), on one gRPC thread and
// on two (then one stream's events may be handled on both at once): every answer is its own
// request's, and every stream ends OK.
TEST_F(ServerExtraTest, ConcurrentModelStreamInferStreamsEachGetTheirOwnAnswers) {
  for (const int threads : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(threads, " gRPC thread(s)"));
    grpc_threads_ = threads;
    grpc::ClientContext first_context;
    std::unique_ptr<InferStream> first =
        StartLinearAndOpenStream(first_context, "max_queue_delay_microseconds: 2000");
    ASSERT_NE(first, nullptr);
    first->WritesDone();
    ASSERT_TRUE(first->Finish().ok());
    RunStreams(6, 25);
    auto shutdown = std::async(std::launch::async, [this] { return server_->Shutdown(); });
    ASSERT_EQ(shutdown.wait_for(kWait), std::future_status::ready) << "shutdown hangs";
    EXPECT_TRUE(shutdown.get());
    server_.reset();
  }
}

// At shutdown a stream's request in flight is answered, then the stream ends with UNAVAILABLE
// (the client keeps it open), and the server stops without waiting for the client. A stream
// opened while the shutdown waits for that request ends at once with UNAVAILABLE.
TEST_F(ServerExtraTest, ModelStreamInferAtShutdownAnswersWhatItReadThenEndsUnavailable) {
  grpc::ClientContext context;
  std::unique_ptr<InferStream> stream = StartLinearAndOpenStream(context);
  ASSERT_NE(stream, nullptr);
  inference::ModelStreamInferResponse answer;
  ASSERT_TRUE(stream->Write(StreamRequest("linear", 3, "before")));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_TRUE(StreamAnswerHolds(answer, "before", 3));
  // The core counts a request in flight until its answer callback returned, which may be after
  // the client read the answer.
  ASSERT_TRUE(PollUntil([&] { return server_->core().in_flight() == 0; }));

  BudgetHold hold(server_->core().thread_budget());
  ASSERT_TRUE(stream->Write(StreamRequest("linear", 4, "in-flight")));
  ASSERT_TRUE(PollUntil([&] { return server_->core().in_flight() == 1; }));
  auto shutdown = std::async(std::launch::async, [this] { return server_->Shutdown(); });
  // Shutdown waits for the request in flight.
  ASSERT_TRUE(PollUntil([&] { return HealthStatus(channel_) != 1; }));
  {
    grpc::ClientContext late_context;
    late_context.set_deadline(std::chrono::system_clock::now() + kWait);
    std::unique_ptr<InferStream> late = stub_->ModelStreamInfer(&late_context);
    EXPECT_FALSE(late->Read(&answer));
    const grpc::Status late_status = late->Finish();
    EXPECT_EQ(late_status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << late_status.error_message();
    EXPECT_THAT(late_status.error_message(), HasSubstr("shutting down"));
  }
  EXPECT_EQ(shutdown.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  hold.Release();
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_TRUE(StreamAnswerHolds(answer, "in-flight", 4));
  EXPECT_FALSE(stream->Read(&answer));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
  ASSERT_EQ(shutdown.wait_for(kWait), std::future_status::ready) << "shutdown hangs";
  EXPECT_TRUE(shutdown.get());
}

// The answer to a request whose stream's deadline passed while it waited for the compute threads
// is not lost silently: the stream cannot deliver it, and it is counted as undelivered for
// ModelStreamInfer (the request itself counts once in the model's statistics). What is checked is
// the count, whichever way the server finds out (its own deadline check, or the failed write).
TEST_F(ServerExtraTest, ModelStreamInferAnswerAfterTheDeadlineIsCountedUndelivered) {
  const std::string method = "inference.GRPCInferenceService/ModelStreamInfer";
  grpc::ClientContext context;
  std::unique_ptr<InferStream> stream =
      StartLinearAndOpenStream(context, "", std::chrono::milliseconds(1000));
  ASSERT_NE(stream, nullptr);
  // The server's deadline is at most the client's plus gRPC's slack (see
  // DeadlinePassedWhileQueuedIsNotComputed).
  const Steady::time_point server_deadline_bound =
      Steady::now() + std::chrono::seconds(1) + std::chrono::milliseconds(200);
  ASSERT_EQ(server_->undelivered_answers().at(method), 0);
  {
    BudgetHold hold(server_->core().thread_budget());
    ASSERT_TRUE(stream->Write(StreamRequest("linear", 5, "late")));
    ASSERT_TRUE(PollUntil([&] { return server_->core().in_flight() == 1; }));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    while (Steady::now() <= server_deadline_bound) std::this_thread::yield();
  }
  ASSERT_TRUE(PollUntil([&] { return server_->undelivered_answers().at(method) == 1; }))
      << server_->undelivered_answers().at(method);
  const inference::ModelStatistics stats = Stats("linear");
  EXPECT_EQ(stats.inference_stats().success().count() + stats.inference_stats().fail().count(), 1u);
}

// Requests pipelined on one stream (written before the answer to an earlier one came) are queued
// for the batcher and computed by the model's worker, instead of one by one on the gRPC thread,
// which meanwhile reads the next ones; each still gets its own answer. Deterministic: the
// stream's first request goes to a model whose batcher waits up to 2 s for company (its first
// request, unmeasured), so it stays unanswered while the next ones are read; those go to
// "linear", warmed so that a lone request runs inline, yet none of them does.
TEST_F(ServerExtraTest, ModelStreamInferQueuesPipelinedRequestsForTheBatcher) {
  WriteText(root_ / "waiting" / "config.pbtxt",
            LinearModelConfig("waiting", 8,
                              "dynamic_batching { max_queue_delay_microseconds: 2000000 }\n"));
  WriteLinearOnnx(root_ / "waiting" / "1" / "model.onnx", 0.0f);
  grpc::ClientContext context;
  std::unique_ptr<InferStream> stream = StartLinearAndOpenStream(context);
  ASSERT_NE(stream, nullptr);
  std::shared_ptr<serving::Scheduler> linear = SchedulerOf("linear");
  ASSERT_NE(linear, nullptr);
  WarmUntilInline("linear", *linear);
  const uint64_t inline_before = linear->inline_count();
  const uint64_t inferences_before = Stats("linear").inference_count();

  ASSERT_TRUE(stream->Write(StreamRequest("waiting", 1, "first")));
  // The core counts it in flight from its submission to its answer.
  ASSERT_TRUE(PollUntil([&] { return server_->core().in_flight() == 1; }));
  constexpr int kPipelined = 6;
  for (int i = 0; i < kPipelined; ++i) {
    ASSERT_TRUE(stream->Write(StreamRequest("linear", i, absl::StrCat("p", i))));
  }
  std::set<std::string> answered;
  inference::ModelStreamInferResponse answer;
  for (int i = 0; i < kPipelined + 1; ++i) {
    ASSERT_TRUE(stream->Read(&answer)) << "stream ended after " << i << " answers";
    const std::string id = answer.infer_response().id();
    EXPECT_TRUE(StreamAnswerHolds(answer, id, id == "first" ? 1 : std::stoi(id.substr(1))));
    answered.insert(id);
  }
  EXPECT_EQ(answered.size(), static_cast<size_t>(kPipelined + 1));
  EXPECT_EQ(linear->inline_count(), inline_before);
  EXPECT_EQ(Stats("linear").inference_count() - inferences_before,
            static_cast<uint64_t>(kPipelined));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// A client that writes faster than the server answers: a stream holds at most 64 requests
// unanswered (then it stops reading, and the client's writes wait in HTTP/2 flow control), and
// every request is answered once the server computes again.
TEST_F(ServerExtraTest, ModelStreamInferHoldsAtMost64UnansweredRequests) {
  grpc::ClientContext context;
  std::unique_ptr<InferStream> stream = StartLinearAndOpenStream(context);
  ASSERT_NE(stream, nullptr);
  constexpr int kRequests = 150;
  std::future<bool> writer;
  {
    BudgetHold hold(server_->core().thread_budget());
    writer = std::async(std::launch::async, [&] {
      for (int i = 0; i < kRequests; ++i) {
        if (!stream->Write(StreamRequest("linear", i % 10, absl::StrCat("w", i)))) return false;
      }
      return stream->WritesDone();
    });
    ASSERT_TRUE(PollUntil([&] { return server_->core().in_flight() >= 64; }));
    // The stream stopped reading: nothing more reaches the core while the compute is held.
    // (No event tells that nothing more will be read: watch for 300 ms, yielding the core.)
    const Steady::time_point until = Steady::now() + std::chrono::milliseconds(300);
    int64_t most = 0;
    while (Steady::now() < until) {
      most = std::max(most, server_->core().in_flight());
      std::this_thread::yield();
    }
    EXPECT_EQ(most, 64);
  }
  std::set<std::string> answered;
  inference::ModelStreamInferResponse answer;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(stream->Read(&answer)) << "stream ended after " << i << " answers";
    const std::string id = answer.infer_response().id();
    EXPECT_TRUE(StreamAnswerHolds(answer, id, std::stoi(id.substr(1)) % 10));
    answered.insert(id);
  }
  EXPECT_TRUE(writer.get());
  EXPECT_EQ(answered.size(), static_cast<size_t>(kRequests));
  EXPECT_TRUE(stream->Finish().ok());
}
}  // namespace
}  // namespace convserve::testing
