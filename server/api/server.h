// The convserve server: the serving core, the gRPC services (inference.GRPCInferenceService,
// convserve.v1.ConvServe, grpc.health.v1, reflection) and the Prometheus endpoint.
//
// Lifecycle: Start → (serve) → Shutdown. Shutdown sets health to NOT_SERVING, fails new
// inference requests with UNAVAILABLE, waits for in-flight requests (up to exit_timeout_secs),
// then stops gRPC. Thread-safe; Shutdown may be called from any thread, more than once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/api/options.h"

namespace convserve::serving {
class ServerCore;
}

namespace convserve::api {

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();  // Shutdown()

  int grpc_port() const;
  int metrics_port() const;  // 0 when metrics are off
  serving::ServerCore& core();

  // How the gRPC threads' waits for their next event ended (--grpc-spin-us): found while
  // spinning, or asleep. Also at /metrics as convserve_grpc_waits_total.
  struct GrpcWaits {
    int64_t spin_hits = 0;
    int64_t sleeps = 0;
  };
  GrpcWaits grpc_waits() const;

  // Answers gRPC could not deliver because the call had ended (the client's deadline passed, it
  // cancelled, the connection went, or the server stopped first), by method
  // ("inference.GRPCInferenceService/ModelInfer"). Also at /metrics as
  // convserve_grpc_undelivered_answers_total.
  std::map<std::string, int64_t> undelivered_answers() const;

  // Returns true when every in-flight request finished within the exit timeout.
  bool Shutdown();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One line per model version (inputs/outputs) or failure, plus version, CPU ISA and threads.
void LogStartupSummary(const ServerOptions& options, Server& server);

}  // namespace convserve::api
