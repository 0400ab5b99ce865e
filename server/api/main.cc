// convserve-server: flags (and CONVSERVE_* environment variables) → ServerOptions → Server.
// SIGTERM/SIGINT: health NOT_SERVING, new requests UNAVAILABLE, in-flight requests finish (up to
// --exit-timeout-secs), exit 0.
#include <csignal>
#include <cstdio>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "server/api/logging.h"
#include "server/api/server.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, so every absl::Mutex (gRPC's locks) keeps a lock-order
  // graph to detect deadlocks: about 3% of the server's CPU at concurrency 1 (perf). A debugging
  // aid, not something to pay for in production.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  convserve::api::ServerOptions options;
  CLI::App app{"convserve: CPU inference server for convnets (KServe v2 / Triton gRPC)"};
  app.add_option("--model-repository", options.model_repository,
                 "Folder of model folders (default: the bundled models/repository)")
      ->envname("CONVSERVE_MODEL_REPOSITORY");
  app.add_option("--grpc-address", options.grpc_address, "Address to listen on")
      ->envname("CONVSERVE_GRPC_ADDRESS")
      ->capture_default_str();
  app.add_option("--grpc-port", options.grpc_port, "gRPC port")
      ->envname("CONVSERVE_GRPC_PORT")
      ->capture_default_str();
  app.add_option("--metrics-port", options.metrics_port, "Prometheus /metrics port (0: off)")
      ->envname("CONVSERVE_METRICS_PORT")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "Compute threads for all models (0: all cores)")
      ->envname("CONVSERVE_THREADS")
      ->capture_default_str();
  app.add_option("--grpc-threads", options.grpc_threads,
                 "Threads that receive and answer gRPC calls (a lone request is computed on "
                 "the thread that received it)")
      ->envname("CONVSERVE_GRPC_THREADS")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--grpc-spin-us", options.grpc_spin_us,
                 "Microseconds the gRPC thread keeps looking for the next call before it sleeps "
                 "(0: sleep at once; with --grpc-threads above 1 none spins; see README)")
      ->envname("CONVSERVE_GRPC_SPIN_US")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  app.add_option("--model-control-mode", options.model_control_mode, "none | poll | explicit")
      ->envname("CONVSERVE_MODEL_CONTROL_MODE")
      ->check(CLI::IsMember({"none", "poll", "explicit"}))
      ->capture_default_str();
  app.add_option("--load-model", options.load_models,
                 "Explicit mode: a model to load at start (repeatable, or comma-separated; "
                 "'*': all). Without it, explicit mode starts with no model loaded")
      ->envname("CONVSERVE_LOAD_MODEL")
      ->delimiter(',');
  app.add_option("--repository-poll-secs", options.repository_poll_secs,
                 "Rescan interval in poll mode")
      ->envname("CONVSERVE_REPOSITORY_POLL_SECS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--log-level", options.log_level,
                 "trace | debug | info | warn | error | critical | off")
      ->envname("CONVSERVE_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", options.log_format,
                 "text | json (one line per event, the message escaped)")
      ->envname("CONVSERVE_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--max-request-bytes", options.max_request_bytes, "Largest gRPC request accepted")
      ->envname("CONVSERVE_MAX_REQUEST_BYTES")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--exit-timeout-secs", options.exit_timeout_secs,
                 "How long shutdown waits for in-flight requests")
      ->envname("CONVSERVE_EXIT_TIMEOUT_SECS")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-image-pixels", options.max_image_pixels,
                 "Largest decoded image (width x height) accepted")
      ->envname("CONVSERVE_MAX_IMAGE_PIXELS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--tls-cert", options.tls_cert_file,
                 "PEM server certificate chain: serve gRPC over TLS (with --tls-key)")
      ->envname("CONVSERVE_TLS_CERT");
  app.add_option("--tls-key", options.tls_key_file, "PEM private key of --tls-cert")
      ->envname("CONVSERVE_TLS_KEY");
  app.add_option("--tls-client-ca", options.tls_client_ca_file,
                 "PEM CA certificates: require client certificates signed by them (mutual TLS)")
      ->envname("CONVSERVE_TLS_CLIENT_CA");
  CLI11_PARSE(app, argc, argv);

  convserve::api::ConfigureLogging(options.log_level, options.log_format);

  // A shell's background job inherits SIGINT as ignored, and an ignored signal is discarded
  // even while blocked: install a handler so that sigwait sees it.
  struct sigaction action = {};
  action.sa_handler = [](int) {};
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  // Block the signals in every thread; the main thread waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = convserve::api::Server::Start(options);
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", std::string(server.status().message()));
    return 1;
  }
  convserve::api::LogStartupSummary(options, **server);

  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("received {}: draining (up to {} s)", signal == SIGTERM ? "SIGTERM" : "SIGINT",
               options.exit_timeout_secs);
  const bool drained = (*server)->Shutdown();
  server->reset();
  spdlog::info("exit ({})", drained ? "all requests finished" : "exit timeout reached");
  return 0;
}
