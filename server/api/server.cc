#include "server/api/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dnnl.hpp"
#include "server/api/async_rpc.h"
#include "server/api/health_service.h"
#include "server/api/services.h"
#include "server/common/files.h"
#include "server/repository/repository.h"
#include "server/serving/metrics.h"
#include "server/serving/server_core.h"
#include "spdlog/spdlog.h"

#ifndef CONVSERVE_SOURCE_MODEL_REPOSITORY
#define CONVSERVE_SOURCE_MODEL_REPOSITORY ""
#endif

namespace convserve::api {

std::string DefaultModelRepository() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const auto& relative : {"../models/repository", "../share/convserve/models/repository",
                                 "models/repository", "../../models/repository"}) {
      const std::filesystem::path candidate = exe.parent_path() / relative;
      if (std::filesystem::is_directory(candidate, ec)) {
        return std::filesystem::weakly_canonical(candidate, ec).string();
      }
    }
  }
  return CONVSERVE_SOURCE_MODEL_REPOSITORY;
}

namespace {

// A flag's PEM file, checked for the block it must hold ("CERTIFICATE", "PRIVATE KEY").
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    const std::string& block) {
  auto pem = ReadFileNamedBy(flag, path);
  if (!pem.ok()) return pem.status();
  if (pem->find("-----BEGIN ") == std::string::npos ||
      pem->find(block + "-----") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " file '", path, "' holds no PEM ", block, " block"));
  }
  return pem;
}

// Insecure without --tls-cert/--tls-key; TLS with them; mutual TLS with --tls-client-ca too.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerOptions& options) {
  const bool cert = !options.tls_cert_file.empty();
  const bool key = !options.tls_key_file.empty();
  if (!cert && !key) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (cert != key) return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  auto chain = ReadPem("--tls-cert", options.tls_cert_file, "CERTIFICATE");
  if (!chain.ok()) return chain.status();
  auto private_key = ReadPem("--tls-key", options.tls_key_file, "PRIVATE KEY");
  if (!private_key.ok()) return private_key.status();
  const bool mutual = !options.tls_client_ca_file.empty();
  grpc::SslServerCredentialsOptions ssl(
      mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (mutual) {
    auto client_ca = ReadPem("--tls-client-ca", options.tls_client_ca_file, "CERTIFICATE");
    if (!client_ca.ok()) return client_ca.status();
    ssl.pem_root_certs = *client_ca;
  }
  ssl.pem_key_cert_pairs.push_back({*private_key, *chain});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

std::string TransportSecurity(const ServerOptions& options) {
  if (options.tls_cert_file.empty()) return "plaintext";
  return options.tls_client_ca_file.empty() ? "TLS" : "mutual TLS";
}

// Members are destroyed bottom-up: the queue's threads stop before the services and the gRPC
// server they use go.
struct Server::Impl {
  ServerOptions options;
  std::unique_ptr<serving::PrometheusMetrics> metrics;
  std::unique_ptr<serving::ServerCore> core;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<grpc::Service> inference_service;
  StreamEnder* inference_streams = nullptr;  // of inference_service
  std::unique_ptr<grpc::Service> convserve_service;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<AsyncRpc> rpc;
  int grpc_port = 0;
  std::mutex shutdown_mutex;
  bool shut_down = false;
  bool drained = true;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  serving::ServerCoreOptions core_options;
  core_options.model_repository =
      options.model_repository.empty() ? DefaultModelRepository() : options.model_repository;
  impl->options.model_repository = core_options.model_repository.string();
  core_options.threads = options.threads > 0
                             ? options.threads
                             : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  impl->options.threads = core_options.threads;
  if (options.model_control_mode == "none") {
    core_options.control_mode = serving::ModelControlMode::kNone;
  } else if (options.model_control_mode == "poll") {
    core_options.control_mode = serving::ModelControlMode::kPoll;
  } else if (options.model_control_mode == "explicit") {
    core_options.control_mode = serving::ModelControlMode::kExplicit;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--model-control-mode must be none, poll or ",
                                                   "explicit, got '", options.model_control_mode,
                                                   "'"));
  }
  auto credentials = MakeServerCredentials(options);
  if (!credentials.ok()) return credentials.status();
  core_options.startup_models = options.load_models;
  core_options.repository_poll_secs = options.repository_poll_secs;
  core_options.max_image_pixels = options.max_image_pixels;

  if (options.metrics_port != 0) {
    auto metrics = serving::PrometheusMetrics::Start(absl::StrCat(
        options.grpc_address, ":", options.metrics_port < 0 ? 0 : options.metrics_port));
    if (!metrics.ok()) return metrics.status();
    impl->metrics = *std::move(metrics);
    core_options.metrics = impl->metrics.get();
  }

  auto core = serving::ServerCore::Create(core_options);
  if (!core.ok()) return core.status();
  impl->core = *std::move(core);

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.grpc_address, ":", options.grpc_port), *credentials,
                           &impl->grpc_port);
  // Twice the limit: ModelInfer requests over it are then read and refused by the service, with
  // a message that names the model and its largest input, and counted (gRPC's own refusal comes
  // before any handler and is neither); beyond twice, gRPC still refuses them unread.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(options.max_request_bytes * 2, std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(-1);
  // gRPC sets SO_REUSEPORT by default: a second server on a port in use would start and take a
  // share of its connections instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // gRPC threads spin for the next call only while no compute thread is busy and no worker
  // prepares or answers a batch: the spin would
  // take a core from the computation (with --threads 1 at concurrency 8, fashion-k3's
  // throughput fell from 93% to 72% of the engine's when they spun regardless).
  std::shared_ptr<serving::ThreadBudget> budget = impl->core->shared_thread_budget();
  impl->rpc = std::make_unique<AsyncRpc>(options.grpc_threads,
                                         std::chrono::microseconds(options.grpc_spin_us),
                                         [budget] { return budget->idle(); });
  impl->rpc->SetEventBatchHooks(&serving::Scheduler::BeginDeferringWakes,
                                &serving::Scheduler::EndDeferringWakes);
  if (impl->metrics != nullptr) {
    impl->metrics->AddScrapedCounter(
        "convserve_grpc_waits_total",
        "How gRPC threads' waits for their next event ended: spin_hit (found while spinning, "
        "--grpc-spin-us) or sleep (waited in gRPC's poller instead: spin off, compute busy, or "
        "the spin ran out)",
        "outcome", [waits = impl->rpc->waits()] {
          return serving::PrometheusMetrics::ScrapedSeries{
              {"spin_hit", static_cast<double>(waits->spin_hits.load())},
              {"sleep", static_cast<double>(waits->sleeps.load())}};
        });
  }
  impl->inference_service = CreateInferenceService(
      impl->core.get(), *impl->rpc, options.max_request_bytes, &impl->inference_streams);
  impl->convserve_service = CreateConvServeService(impl->core.get(), *impl->rpc);
  impl->health = std::make_unique<HealthService>(
      *impl->rpc, std::vector<std::string>{"inference.GRPCInferenceService",
                                           "convserve.v1.ConvServe", "grpc.health.v1.Health",
                                           "grpc.reflection.v1alpha.ServerReflection"});
  if (impl->metrics != nullptr) {
    // After the services: every unary method has its counter by now (the map is not changed
    // again, so a scrape may read it while calls are served).
    impl->metrics->AddScrapedCounter(
        "convserve_grpc_undelivered_answers_total",
        "Answers gRPC could not deliver because the call had ended first (the client's deadline "
        "passed, it cancelled, the connection went, or the server stopped with the request still "
        "running at --exit-timeout-secs), by method",
        "method", [undelivered = impl->rpc->undelivered()] {
          serving::PrometheusMetrics::ScrapedSeries series;
          for (const auto& [method, count] : undelivered->Read())
            series.emplace_back(method, count);
          return series;
        });
  }
  builder.RegisterService(impl->inference_service.get());
  builder.RegisterService(impl->convserve_service.get());
  builder.RegisterService(impl->health.get());
  impl->rpc->AddTo(builder);
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for gRPC on ", options.grpc_address, ":", options.grpc_port,
        options.tls_cert_file.empty()
            ? " (address in use or not local?)"
            : " (address in use or not local, or gRPC rejected the TLS certificate, key or "
              "client CA: see its log line above)"));
  }
  impl->rpc->Start();
  impl->health->SetServing(true);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

int Server::grpc_port() const { return impl_->grpc_port; }
Server::GrpcWaits Server::grpc_waits() const {
  const auto waits = impl_->rpc->waits();
  return {waits->spin_hits.load(), waits->sleeps.load()};
}

std::map<std::string, int64_t> Server::undelivered_answers() const {
  return impl_->rpc->undelivered()->Read();
}

int Server::metrics_port() const { return impl_->metrics ? impl_->metrics->port() : 0; }
serving::ServerCore& Server::core() { return *impl_->core; }

bool Server::Shutdown() {
  std::lock_guard<std::mutex> lock(impl_->shutdown_mutex);
  if (impl_->shut_down) return impl_->drained;
  impl_->shut_down = true;
  impl_->health->SetServing(false);
  impl_->core->BeginShutdown();
  // ModelStreamInfer streams stop reading; each ends once the requests it read are answered.
  impl_->inference_streams->EndStreams();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(impl_->options.exit_timeout_secs);
  impl_->drained = impl_->core->WaitForInFlight(deadline);
  if (!impl_->drained) {
    spdlog::warn(
        "not everything in flight finished within --exit-timeout-secs {} ({} inference requests "
        "left; a report still running is cancelled); stopping anyway",
        impl_->options.exit_timeout_secs, impl_->core->in_flight());
  }
  // gRPC answers CANCELLED to calls that reach it after its shutdown began (grpc/grpc#41785).
  // So the server holds its UNAVAILABLE answers until no new request arrived for kQuiet (at most
  // kMaxHold): clients in a request loop are then waiting for an answer instead of sending.
  // It starts gRPC's shutdown (its GOAWAY tells clients to stop using the connection) and only
  // then sends the held answers, behind the GOAWAY on each connection.
  constexpr auto kQuiet = std::chrono::milliseconds(100);
  constexpr auto kMaxHold = std::chrono::seconds(2);
  constexpr auto kGoaway = std::chrono::milliseconds(50);
  impl_->health->Shutdown();  // ends Watch streams, which gRPC's shutdown would wait for
  impl_->core->HoldRefusals();
  const size_t held =
      impl_->core->WaitForQuietRefusals(kQuiet, std::chrono::steady_clock::now() + kMaxHold);
  std::thread stopper([this] {
    impl_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  });
  std::this_thread::sleep_for(kGoaway);
  impl_->core->ReleaseRefusals();
  stopper.join();
  impl_->grpc_server->Wait();
  spdlog::info("refused {} new requests with UNAVAILABLE during shutdown ({} held until GOAWAY)",
               impl_->core->refused(), held);
  // Reports still queued are answered UNAVAILABLE, then the core answers whatever it still holds;
  // only then may the completion queue stop.
  impl_->convserve_service.reset();
  impl_->core.reset();
  impl_->rpc->Stop();
  impl_->metrics.reset();
  spdlog::info("server stopped");
  return impl_->drained;
}

void LogStartupSummary(const ServerOptions& options, Server& server) {
  const char* isa = "unknown";
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      isa = "sse41";
      break;
    case dnnl::cpu_isa::avx:
      isa = "avx";
      break;
    case dnnl::cpu_isa::avx2:
      isa = "avx2";
      break;
    case dnnl::cpu_isa::avx512_core:
      isa = "avx512_core";
      break;
    case dnnl::cpu_isa::avx512_core_vnni:
      isa = "avx512_core_vnni";
      break;
    case dnnl::cpu_isa::avx512_core_bf16:
      isa = "avx512_core_bf16";
      break;
    case dnnl::cpu_isa::avx512_core_amx:
      isa = "avx512_core_amx";
      break;
    default:
      break;
  }
  auto& core = server.core();
  spdlog::info(
      "convserve 0.1.0: gRPC {}:{} ({}), gRPC threads {} (spin {} us), metrics {}, oneDNN {}.{}.{} "
      "ISA {}, "
      "compute threads {}, model control {}, repository {}",
      options.grpc_address, server.grpc_port(), TransportSecurity(options), options.grpc_threads,
      options.grpc_spin_us, server.metrics_port() ? std::to_string(server.metrics_port()) : "off",
      dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch, isa,
      core.options().threads, options.model_control_mode, core.options().model_repository.string());
  auto tensors = [](const auto& list, bool batched) {
    std::vector<std::string> parts;
    for (const auto& t : list) {
      std::vector<int64_t> dims;
      if (batched) dims.push_back(-1);
      dims.insert(dims.end(), t.dims().begin(), t.dims().end());
      parts.push_back(absl::StrCat(t.name(), " ", inference::DataType_Name(t.data_type()), " [",
                                   absl::StrJoin(dims, ","), "]"));
    }
    return absl::StrJoin(parts, ", ");
  };
  for (const auto& served : core.Served()) {
    const auto& config = served.model->config;
    const bool batched = config.max_batch_size() > 0;
    spdlog::info(
        "  model '{}' version {}: READY, inputs {}; outputs {}; max_batch_size {}, "
        "{} instance(s) x {} threads",
        served.model->name, served.model->version, tensors(config.input(), batched),
        tensors(config.output(), batched), config.max_batch_size(), served.scheduler->num_workers(),
        served.scheduler->threads_per_worker());
  }
  for (const auto& entry : core.Index(false)) {
    if (entry.state == "READY") continue;
    // Explicit mode leaves models unloaded on purpose; anything else is a failure.
    // The reason may begin with the model and version the line starts with: say them once.
    spdlog::log(entry.reason == "not loaded" ? spdlog::level::info : spdlog::level::warn,
                "  model '{}'{}: {}: {}", entry.name,
                entry.version.empty() ? "" : " version " + entry.version, entry.state,
                repository::WithoutModelPrefix(entry.reason, entry.name, entry.version));
  }
}

}  // namespace convserve::api
