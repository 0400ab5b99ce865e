#include "client/rpc.h"

#include <grpc/support/log.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "proto/convserve.grpc.pb.h"
#include "proto/inference.grpc.pb.h"
#include "server/common/files.h"

namespace convserve::client {
namespace {

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string Trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const size_t end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

// gRPC's own log lines (handshake failures, ...) are not for the CLI's user; GRPC_VERBOSITY
// brings them back.
void DropGrpcLog(gpr_log_func_args*) {}

// A status that says no server answered at `where`.
absl::Status Unreachable(const std::string& where, absl::StatusCode code,
                         const std::string& detail = "") {
  absl::Status status(
      code, absl::StrCat("cannot reach convserve at ", where, " (", CodeName(code), ")", detail));
  status.SetPayload(kUnreachablePayload, absl::Cord(where));
  return status;
}

// gRPC's transport errors, as opposed to an UNAVAILABLE sent by a server that is up (a model
// loading, a server draining).
bool LooksLikeTransportFailure(const std::string& message) {
  for (const char* marker :
       {"failed to connect", "Connection refused", "DNS resolution failed", "handshake",
        "connections to all backends failing", "Socket closed", "Network is unreachable",
        "No address", "Connection reset", "empty address list", "Broken pipe"}) {
    if (message.find(marker) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> SplitTargets(const std::string& url) {
  std::vector<std::string> targets;
  const std::string trimmed = Trim(url);
  if (StartsWith(trimmed, "ipv4:") || StartsWith(trimmed, "ipv6:")) {
    targets.push_back(trimmed);
    return targets;
  }
  std::stringstream stream(trimmed);
  std::string item;
  while (std::getline(stream, item, ',')) {
    item = Trim(item);
    if (!item.empty()) targets.push_back(item);
  }
  return targets;
}

std::string FormatError(const absl::Status& status) {
  if (status.GetPayload(kUnreachablePayload).has_value()) {
    return absl::StrCat("error: ", status.message());
  }
  return absl::StrCat("error: ", CodeName(status.code()), ": ", status.message());
}

struct Target {
  std::string name;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<inference::GRPCInferenceService::Stub> inference;
  std::unique_ptr<convserve::v1::ConvServe::Stub> convserve;
  std::unique_ptr<grpc::GenericStub> generic;
};

class Client::Impl {
 public:
  std::vector<std::string> names;
  std::vector<std::unique_ptr<Target>> targets;
  double timeout_s = 30;
  bool balanced = false;  // a target with the round_robin policy
  bool tls = false;       // TLS credentials in use
  std::atomic<size_t> next{0};

  size_t Next() { return next.fetch_add(1, std::memory_order_relaxed) % targets.size(); }

  void SetDeadline(grpc::ClientContext* context) const {
    if (timeout_s > 0) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
    }
  }

  absl::Status Convert(const Target& target, const grpc::Status& status,
                       const char* method = "the call") const {
    const auto code = static_cast<absl::StatusCode>(status.error_code());
    if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded) {
      const bool connected = target.channel->GetState(false) == GRPC_CHANNEL_READY;
      if (!connected || (code == absl::StatusCode::kUnavailable &&
                         LooksLikeTransportFailure(status.error_message()))) {
        const bool handshake = status.error_message().find("andshake") != std::string::npos ||
                               status.error_message().find("SSL") != std::string::npos;
        // A server that refuses the client's certificate just closes the connection, which
        // looks like any other failure to connect.
        return Unreachable(target.name, code,
                           handshake ? ": TLS handshake failed"
                           : tls     ? "; with TLS: does the server speak TLS, and accept --ca, "
                                       "--cert and --key?"
                                     : "");
      }
    }
    if (status.error_message().empty()) {
      return absl::Status(
          code, code == absl::StatusCode::kUnimplemented
                    ? absl::StrCat(method, " is not implemented by the server at ", target.name)
                    : absl::StrCat(method, " failed at ", target.name));
    }
    return absl::Status(code, status.error_message());
  }

  // Calls `fn(target, context, response)` on the next target; on UNAVAILABLE or CANCELLED and
  // `retry`, on the following ones, each target once.
  template <typename Response, typename Fn>
  absl::StatusOr<Response> Call(const char* method, Fn fn, bool retry) {
    // A URI target may stand for several servers (round_robin picks the next one): one retry.
    const size_t attempts = !retry ? 1 : (targets.size() == 1 && balanced ? 2 : targets.size());
    std::vector<std::string> unreachable;
    absl::Status last;
    for (size_t attempt = 0; attempt < attempts; ++attempt) {
      Target& target = *targets[Next()];
      grpc::ClientContext context;
      SetDeadline(&context);
      Response response;
      const grpc::Status status = fn(target, &context, &response);
      if (status.ok()) return response;
      last = Convert(target, status, method);
      // The CLI never cancels its own calls: CANCELLED means a server going away cancelled the
      // call (gRPC does so for calls racing its shutdown), so it is retried like UNAVAILABLE.
      // Inference is a pure function of its inputs, so a repeat is safe.
      if (last.code() != absl::StatusCode::kUnavailable &&
          last.code() != absl::StatusCode::kCancelled) {
        return last;
      }
      if (last.GetPayload(kUnreachablePayload).has_value()) unreachable.push_back(target.name);
    }
    if (targets.size() > 1 && unreachable.size() == attempts) {
      return Unreachable(absl::StrJoin(unreachable, ","), last.code());
    }
    return last;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const ConnectionOptions& options) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DropGrpcLog);
  auto impl = std::make_unique<Impl>();
  impl->names = SplitTargets(options.url);
  if (impl->names.empty()) return absl::InvalidArgumentError("--url names no server");
  impl->timeout_s = options.timeout_s;

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  const bool tls = options.tls || !options.ca_file.empty() || !options.cert_file.empty() ||
                   !options.key_file.empty();
  impl->tls = tls;
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_file.empty()) {
      auto ca = ReadFileNamedBy("--ca", options.ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (options.cert_file.empty() != options.key_file.empty()) {
      return absl::InvalidArgumentError("--cert and --key go together");
    }
    if (!options.cert_file.empty()) {
      auto cert = ReadFileNamedBy("--cert", options.cert_file);
      if (!cert.ok()) return cert.status();
      auto key = ReadFileNamedBy("--key", options.key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }

  for (const std::string& name : impl->names) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    // A URI target may resolve to several addresses: spread calls over all of them.
    if (StartsWith(name, "dns:") || StartsWith(name, "ipv4:") || StartsWith(name, "ipv6:")) {
      args.SetServiceConfigJSON(R"({"loadBalancingConfig":[{"round_robin":{}}]})");
      impl->balanced = true;
    }
    auto target = std::make_unique<Target>();
    target->name = name;
    target->channel = grpc::CreateCustomChannel(name, credentials, args);
    target->inference = inference::GRPCInferenceService::NewStub(target->channel);
    target->convserve = convserve::v1::ConvServe::NewStub(target->channel);
    target->generic = std::make_unique<grpc::GenericStub>(target->channel);
    impl->targets.push_back(std::move(target));
  }
  std::random_device seed;
  impl->next = seed() % impl->targets.size();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const std::vector<std::string>& Client::targets() const { return impl_->names; }

#define CONVSERVE_UNARY(Response, Method, request, retry)   \
  impl_->Call<Response>(                                    \
      #Method,                                              \
      [&](Target& t, grpc::ClientContext* c, Response* r) { \
        return t.inference->Method(c, request, r);          \
      },                                                    \
      retry)

absl::StatusOr<inference::ServerLiveResponse> Client::ServerLive() {
  inference::ServerLiveRequest request;
  return CONVSERVE_UNARY(inference::ServerLiveResponse, ServerLive, request, true);
}

absl::StatusOr<inference::ServerReadyResponse> Client::ServerReady() {
  inference::ServerReadyRequest request;
  return CONVSERVE_UNARY(inference::ServerReadyResponse, ServerReady, request, true);
}

absl::StatusOr<inference::ServerMetadataResponse> Client::ServerMetadata() {
  inference::ServerMetadataRequest request;
  return CONVSERVE_UNARY(inference::ServerMetadataResponse, ServerMetadata, request, true);
}

absl::StatusOr<inference::ModelReadyResponse> Client::ModelReady(const std::string& name,
                                                                 const std::string& version) {
  inference::ModelReadyRequest request;
  request.set_name(name);
  request.set_version(version);
  return CONVSERVE_UNARY(inference::ModelReadyResponse, ModelReady, request, true);
}

absl::StatusOr<inference::ModelMetadataResponse> Client::ModelMetadata(const std::string& name,
                                                                       const std::string& version) {
  inference::ModelMetadataRequest request;
  request.set_name(name);
  request.set_version(version);
  return CONVSERVE_UNARY(inference::ModelMetadataResponse, ModelMetadata, request, true);
}

absl::StatusOr<inference::ModelConfigResponse> Client::ModelConfig(const std::string& name,
                                                                   const std::string& version) {
  inference::ModelConfigRequest request;
  request.set_name(name);
  request.set_version(version);
  return CONVSERVE_UNARY(inference::ModelConfigResponse, ModelConfig, request, true);
}

absl::StatusOr<inference::ModelStatisticsResponse> Client::ModelStatistics(
    const std::string& name, const std::string& version) {
  inference::ModelStatisticsRequest request;
  request.set_name(name);
  request.set_version(version);
  return CONVSERVE_UNARY(inference::ModelStatisticsResponse, ModelStatistics, request, true);
}

absl::StatusOr<inference::RepositoryIndexResponse> Client::RepositoryIndex(bool ready_only) {
  inference::RepositoryIndexRequest request;
  request.set_ready(ready_only);
  return CONVSERVE_UNARY(inference::RepositoryIndexResponse, RepositoryIndex, request, true);
}

absl::Status Client::LoadModel(const std::string& name) {
  inference::RepositoryModelLoadRequest request;
  request.set_model_name(name);
  return CONVSERVE_UNARY(inference::RepositoryModelLoadResponse, RepositoryModelLoad, request,
                         false)
      .status();
}

absl::Status Client::UnloadModel(const std::string& name) {
  inference::RepositoryModelUnloadRequest request;
  request.set_model_name(name);
  return CONVSERVE_UNARY(inference::RepositoryModelUnloadResponse, RepositoryModelUnload, request,
                         false)
      .status();
}

absl::StatusOr<inference::ModelInferResponse> Client::Infer(
    const inference::ModelInferRequest& request) {
  return CONVSERVE_UNARY(inference::ModelInferResponse, ModelInfer, request, true);
}

#undef CONVSERVE_UNARY

absl::Status Client::InferOnce(const inference::ModelInferRequest& request,
                               inference::ModelInferResponse* response, size_t* target_index) {
  const size_t index = impl_->Next();
  if (target_index != nullptr) *target_index = index;
  Target& target = *impl_->targets[index];
  grpc::ClientContext context;
  impl_->SetDeadline(&context);
  const grpc::Status status = target.inference->ModelInfer(&context, request, response);
  if (status.ok()) return absl::OkStatus();
  return impl_->Convert(target, status);
}

namespace {

class GrpcInferStream final : public Client::InferStream {
 public:
  GrpcInferStream(Client::Impl* impl, Target* target, double seconds)
      : impl_(impl), target_(target) {
    if (impl_->timeout_s > 0) {
      context_.set_deadline(
          std::chrono::system_clock::now() +
          std::chrono::microseconds(static_cast<int64_t>((seconds + impl_->timeout_s) * 1e6)));
    }
    stream_ = target_->inference->ModelStreamInfer(&context_);
  }
  ~GrpcInferStream() override {
    if (!closed_) {
      context_.TryCancel();
      stream_->Finish().IgnoreError();
    }
  }

  absl::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response) override {
    if (absl::Status sent = Send(request); !sent.ok()) return sent;
    return Receive(response);
  }

  absl::Status Send(const inference::ModelInferRequest& request) override {
    if (!ended_.ok()) return ended_;
    if (!stream_->Write(request)) return End();
    return absl::OkStatus();
  }

  absl::Status Receive(inference::ModelInferResponse* response) override {
    if (!ended_.ok()) return ended_;
    inference::ModelStreamInferResponse answer;
    if (!stream_->Read(&answer)) return End();
    *response = std::move(*answer.mutable_infer_response());
    if (answer.error_message().empty()) return absl::OkStatus();
    const auto& parameters = response->parameters();
    const auto code = parameters.find("grpc_status_code");
    return absl::Status(code != parameters.end() && code->second.int64_param() > 0 &&
                                code->second.int64_param() <= 16
                            ? static_cast<absl::StatusCode>(code->second.int64_param())
                            : absl::StatusCode::kUnknown,
                        answer.error_message());
  }

  bool ended() const override { return closed_; }

  absl::Status Close() override {
    if (closed_) return ended_;
    stream_->WritesDone();
    inference::ModelStreamInferResponse extra;
    while (stream_->Read(&extra)) {
    }
    closed_ = true;
    const grpc::Status status = stream_->Finish();
    if (ended_.ok() && !status.ok()) ended_ = impl_->Convert(*target_, status, "ModelStreamInfer");
    return ended_;
  }

 private:
  absl::Status End() {
    closed_ = true;
    const grpc::Status status = stream_->Finish();
    ended_ = status.ok() ? absl::UnavailableError(absl::StrCat("the stream to ", target_->name,
                                                               " ended before an answer came"))
                         : impl_->Convert(*target_, status, "ModelStreamInfer");
    return ended_;
  }

  Client::Impl* impl_;
  Target* target_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<inference::ModelInferRequest, inference::ModelStreamInferResponse>>
      stream_;
  absl::Status ended_;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<Client::InferStream> Client::OpenInferStream(double seconds) {
  return std::make_unique<GrpcInferStream>(impl_.get(), impl_->targets[impl_->Next()].get(),
                                           seconds);
}

absl::StatusOr<inference::ModelStatisticsResponse> Client::ModelStatisticsOf(
    size_t index, const std::string& name) {
  Target& target = *impl_->targets.at(index);
  inference::ModelStatisticsRequest request;
  request.set_name(name);
  inference::ModelStatisticsResponse response;
  grpc::ClientContext context;
  impl_->SetDeadline(&context);
  const grpc::Status status = target.inference->ModelStatistics(&context, request, &response);
  if (!status.ok()) return impl_->Convert(target, status);
  return response;
}

absl::StatusOr<convserve::v1::ModelStatisticsResponse> Client::GetModelStatistics(
    const std::string& name, const std::string& version) {
  convserve::v1::ModelStatisticsRequest request;
  request.set_name(name);
  request.set_version(version);
  return impl_->Call<convserve::v1::ModelStatisticsResponse>(
      "GetModelStatistics",
      [&](Target& t, grpc::ClientContext* c, convserve::v1::ModelStatisticsResponse* r) {
        return t.convserve->GetModelStatistics(c, request, r);
      },
      true);
}

absl::StatusOr<convserve::v1::LayerReport> Client::GetLayerReport(
    const convserve::v1::LayerReportRequest& request) {
  return impl_->Call<convserve::v1::LayerReport>(
      "GetLayerReport",
      [&](Target& t, grpc::ClientContext* c, convserve::v1::LayerReport* r) {
        return t.convserve->GetLayerReport(c, request, r);
      },
      true);
}

absl::StatusOr<convserve::v1::CompareKernelsResponse> Client::CompareKernels(
    const convserve::v1::CompareKernelsRequest& request) {
  return impl_->Call<convserve::v1::CompareKernelsResponse>(
      "CompareKernels",
      [&](Target& t, grpc::ClientContext* c, convserve::v1::CompareKernelsResponse* r) {
        return t.convserve->CompareKernels(c, request, r);
      },
      true);
}

absl::StatusOr<int> Client::HealthCheck(const std::string& service) {
  // grpc.health.v1 has no generated stub here; its two messages are one field each, so the
  // request is encoded and the response decoded by hand and sent through the generic stub.
  if (service.size() > 127) return absl::InvalidArgumentError("health service name too long");
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back(0x0A);  // field 1, length-delimited
    request_bytes.push_back(static_cast<char>(service.size()));
    request_bytes += service;
  }
  struct Bytes {
    std::string data;
  };
  auto response = impl_->Call<Bytes>(
      "grpc.health.v1.Health/Check",
      [&](Target& t, grpc::ClientContext* c, Bytes* r) {
        grpc::Slice slice(request_bytes);
        grpc::ByteBuffer request(&slice, 1);
        grpc::CompletionQueue queue;
        auto call = t.generic->PrepareUnaryCall(c, "/grpc.health.v1.Health/Check", request, &queue);
        call->StartCall();
        grpc::ByteBuffer reply;
        grpc::Status status;
        call->Finish(&reply, &status, reinterpret_cast<void*>(1));
        void* tag = nullptr;
        bool ok = false;
        queue.Next(&tag, &ok);
        queue.Shutdown();
        while (queue.Next(&tag, &ok)) {
        }
        if (status.ok()) {
          std::vector<grpc::Slice> slices;
          if (reply.Dump(&slices).ok()) {
            for (const auto& s : slices) {
              r->data.append(reinterpret_cast<const char*>(s.begin()), s.size());
            }
          }
        }
        return status;
      },
      true);
  if (!response.ok()) return response.status();
  // HealthCheckResponse { ServingStatus status = 1; } : tag 0x08 then a varint; absent = 0.
  const std::string& data = response->data;
  if (data.size() >= 2 && data[0] == 0x08) return static_cast<int>(data[1]);
  return 0;
}

}  // namespace convserve::client
