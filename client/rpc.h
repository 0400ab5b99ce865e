// The CLI's connection to one or more convserve servers: channels, deadlines, TLS, round-robin
// across targets, retries, and the conversion of gRPC failures into absl::Status.
//
// No gRPC header is included here (the implementation hides the stubs), so commands and renderers
// see only protobuf messages and absl::Status, whose codes are gRPC's codes.
//
// Retry policy (see client/README.md): reads and Infer that fail with UNAVAILABLE are retried on
// the next target, each target at most once per call. Load/Unload are never retried; other codes
// are never retried. Calls rotate across targets (round-robin), starting at a random target.
//
// Thread-safety: all methods may be called concurrently (bench does).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/convserve.pb.h"
#include "proto/inference.pb.h"

namespace convserve::client {

struct ConnectionOptions {
  // Comma-separated list as given to --url. Each item is host:port, or a gRPC target URI
  // (dns:///name:port, ipv4:a:p,b:q is not split: see SplitTargets).
  std::string url = "localhost:8001";
  // Per-call deadline in seconds; <= 0: none.
  double timeout_s = 30;
  bool tls = false;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// Splits --url into targets: at commas, except that a target starting with "ipv4:" or "ipv6:"
// keeps its comma-separated addresses (one channel with the round_robin policy).
std::vector<std::string> SplitTargets(const std::string& url);

// Status payload key set on a status that means "no server answered" (connection refused,
// unresolvable name, TLS handshake failure): FormatError prints the one clear line for it.
inline constexpr char kUnreachablePayload[] = "convserve.client/unreachable";

// "error: NOT_FOUND: unknown model 'x'" or "error: cannot reach convserve at host:port
// (UNAVAILABLE)".
std::string FormatError(const absl::Status& status);

class Client {
 public:
  // Fails (INVALID_ARGUMENT) on an empty target list or unreadable TLS files; connects lazily.
  static absl::StatusOr<std::unique_ptr<Client>> Create(const ConnectionOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::vector<std::string>& targets() const;

  // inference.GRPCInferenceService
  absl::StatusOr<inference::ServerLiveResponse> ServerLive();
  absl::StatusOr<inference::ServerReadyResponse> ServerReady();
  absl::StatusOr<inference::ServerMetadataResponse> ServerMetadata();
  absl::StatusOr<inference::ModelReadyResponse> ModelReady(const std::string& name,
                                                           const std::string& version = "");
  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(const std::string& name,
                                                                 const std::string& version = "");
  absl::StatusOr<inference::ModelConfigResponse> ModelConfig(const std::string& name,
                                                             const std::string& version = "");
  absl::StatusOr<inference::ModelStatisticsResponse> ModelStatistics(
      const std::string& name, const std::string& version = "");
  absl::StatusOr<inference::RepositoryIndexResponse> RepositoryIndex(bool ready_only = false);
  absl::Status LoadModel(const std::string& name);
  absl::Status UnloadModel(const std::string& name);
  // Retried on UNAVAILABLE on the next target.
  absl::StatusOr<inference::ModelInferResponse> Infer(const inference::ModelInferRequest& request);
  // One attempt on the next target in rotation; for load generation. `target_index`, if given,
  // receives the index of the target used.
  absl::Status InferOnce(const inference::ModelInferRequest& request,
                         inference::ModelInferResponse* response, size_t* target_index = nullptr);

  // One ModelStreamInfer stream (Triton's streaming inference) on the next target in rotation,
  // ending at the latest `seconds` plus --timeout from now (no deadline when --timeout is <= 0).
  // Not thread-safe: one user at a time.
  class InferStream {
   public:
    virtual ~InferStream() = default;
    // Sends one request and reads one answer: the answer of the oldest request without one when
    // requests are answered in order, as with one in flight. A request's error comes back as its
    // status (code from the answer's grpc_status_code parameter); a failure of the stream itself
    // ends it, and every later call returns the same error.
    virtual absl::Status Infer(const inference::ModelInferRequest& request,
                               inference::ModelInferResponse* response) = 0;
    // Pipelining (several requests in flight on the stream): Send writes one request without
    // waiting; Receive reads the next answer, of whichever request finished first. On a
    // request's error, `response` holds only its id and model name and the status is the error;
    // on a failure of the stream itself, ended() turns true.
    virtual absl::Status Send(const inference::ModelInferRequest& request) = 0;
    virtual absl::Status Receive(inference::ModelInferResponse* response) = 0;
    // Closes the sending side and returns the stream's final status.
    virtual absl::Status Close() = 0;
    // Whether the stream itself ended (failed, or closed).
    virtual bool ended() const = 0;
  };
  std::unique_ptr<InferStream> OpenInferStream(double seconds);

  // ModelStatistics of one target (bench sums them over all targets).
  absl::StatusOr<inference::ModelStatisticsResponse> ModelStatisticsOf(size_t target,
                                                                       const std::string& name);

  // convserve.v1.ConvServe
  absl::StatusOr<convserve::v1::ModelStatisticsResponse> GetModelStatistics(
      const std::string& name, const std::string& version = "");
  absl::StatusOr<convserve::v1::LayerReport> GetLayerReport(
      const convserve::v1::LayerReportRequest& request);
  absl::StatusOr<convserve::v1::CompareKernelsResponse> CompareKernels(
      const convserve::v1::CompareKernelsRequest& request);

  // grpc.health.v1.Health/Check for `service` ("" = the whole server): 1 = SERVING,
  // 2 = NOT_SERVING, 0 = UNKNOWN, 3 = SERVICE_UNKNOWN.
  absl::StatusOr<int> HealthCheck(const std::string& service = "");

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace convserve::client
