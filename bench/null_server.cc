// convserve-null-server: a do-nothing gRPC server speaking convserve's inference protocol, the
// peer that convserve-server-bench measures beside convserve-server. It answers ModelInfer with
// an output of the size the real model returns (zeros: nothing is decoded, validated, queued or
// computed), on ModelInfer calls and on ModelStreamInfer streams, and ServerReady/ModelReady with
// true. It uses gRPC's asynchronous API with one
// completion-queue thread, the least work a gRPC C++ server can do per call, so that its latency
// and CPU per call are the floor that any server of this protocol pays on the machine.
//
//   convserve-null-server --port 8101 --output-bytes fashion-k3=40,fashion-mlp=40
//
// --output-bytes gives each model's output bytes per image; a request of N images (the first
// dimension of its first input) gets N times that. A request with the parameter `busy_us` = U
// (int64) is answered after the thread has busy-waited U microseconds, as if it computed in
// place for that long without touching memory: the bench uses it to measure what a longer wait
// costs the client and the server on this machine, apart from any work. --spin-us S: the thread
// looks for the next call for S microseconds before it sleeps, as convserve-server's --grpc-spin-us
// (default 0). Stops on SIGTERM/SIGINT.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "proto/inference.grpc.pb.h"
#include "server/api/spin_next.h"

namespace {

using Service = inference::GRPCInferenceService::AsyncService;

// One outstanding call of one method: requested from gRPC, answered, then deleted. A new one
// is requested as soon as this one arrives, so that a call is always waiting for the next RPC.
class Handler {
 public:
  virtual ~Handler() = default;
  // `ok`: the completion-queue event succeeded (false when the server is shutting down).
  virtual void Proceed(bool ok) = 0;
};

template <typename Request, typename Response>
class UnaryHandler final : public Handler {
 public:
  using RequestFn = void (Service::*)(grpc::ServerContext*, Request*,
                                      grpc::ServerAsyncResponseWriter<Response>*,
                                      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  using AnswerFn = std::function<grpc::Status(const Request&, Response&)>;

  static void Start(Service* service, grpc::ServerCompletionQueue* queue, RequestFn request,
                    AnswerFn answer) {
    auto* handler = new UnaryHandler(service, queue, request, std::move(answer));
    (service->*request)(&handler->context_, &handler->request_, &handler->writer_, queue, queue,
                        handler);
  }

  void Proceed(bool ok) override {
    if (answered_ || !ok) {
      delete this;
      return;
    }
    Start(service_, queue_, request_fn_, answer_);
    const grpc::Status status = answer_(request_, response_);
    answered_ = true;
    writer_.Finish(response_, status, this);
  }

 private:
  UnaryHandler(Service* service, grpc::ServerCompletionQueue* queue, RequestFn request,
               AnswerFn answer)
      : service_(service), queue_(queue), request_fn_(request), answer_(std::move(answer)) {}

  Service* service_;
  grpc::ServerCompletionQueue* queue_;
  RequestFn request_fn_;
  AnswerFn answer_;
  grpc::ServerContext context_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> writer_{&context_};
  bool answered_ = false;
};

// One ModelStreamInfer call: reads a request, writes its answer (an error as error_message), and
// so on until the client closes its side; one operation at a time (one request in flight per
// stream, as the bench sends them).
class StreamHandler final : public Handler {
 public:
  using AnswerFn = std::function<grpc::Status(const inference::ModelInferRequest&,
                                              inference::ModelInferResponse&)>;

  static void Start(Service* service, grpc::ServerCompletionQueue* queue, AnswerFn answer) {
    auto* handler = new StreamHandler(service, queue, std::move(answer));
    service->RequestModelStreamInfer(&handler->context_, &handler->stream_, queue, queue, handler);
  }

  void Proceed(bool ok) override {
    switch (state_) {
      case State::kStarting:
        if (!ok) {
          delete this;
          return;
        }
        Start(service_, queue_, answer_);
        Read();
        return;
      case State::kReading:
        if (!ok) {  // the client closed its side
          state_ = State::kFinishing;
          stream_.Finish(grpc::Status::OK, this);
          return;
        }
        answer_message_.Clear();
        if (const grpc::Status status =
                answer_(request_, *answer_message_.mutable_infer_response());
            !status.ok()) {
          answer_message_.set_error_message(status.error_message());
        }
        state_ = State::kWriting;
        stream_.Write(answer_message_, this);
        return;
      case State::kWriting:
        if (!ok) {
          state_ = State::kFinishing;
          stream_.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"), this);
          return;
        }
        Read();
        return;
      case State::kFinishing:
        delete this;
        return;
    }
  }

 private:
  enum class State { kStarting, kReading, kWriting, kFinishing };
  StreamHandler(Service* service, grpc::ServerCompletionQueue* queue, AnswerFn answer)
      : service_(service), queue_(queue), answer_(std::move(answer)) {}
  void Read() {
    state_ = State::kReading;
    request_.Clear();
    stream_.Read(&request_, this);
  }

  Service* service_;
  grpc::ServerCompletionQueue* queue_;
  AnswerFn answer_;
  grpc::ServerContext context_;
  grpc::ServerAsyncReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>
      stream_{&context_};
  inference::ModelInferRequest request_;
  inference::ModelStreamInferResponse answer_message_;
  State state_ = State::kStarting;
};

// The largest batch a request may ask for (its answer is allocated here).
constexpr int64_t kMaxImages = 4096;

void Usage(const std::string& why) {
  std::cerr
      << "convserve-null-server: " << why
      << "\nusage: convserve-null-server --port P --output-bytes MODEL=BYTES[,MODEL=BYTES...] "
         "[--spin-us S]"
      << std::endl;
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  // SIGTERM/SIGINT go to a watcher thread that shuts the server down (blocked here, before gRPC
  // starts threads that would inherit the mask); the queue thread (this one) then drains.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  int port = 0;
  int spin_us = 0;
  std::map<std::string, int64_t> output_bytes;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) Usage("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--port") {
      if (!absl::SimpleAtoi(value, &port) || port <= 0 || port > 65535) {
        Usage("bad --port " + value);
      }
    } else if (arg == "--spin-us") {
      if (!absl::SimpleAtoi(value, &spin_us) || spin_us < 0) Usage("bad --spin-us " + value);
    } else if (arg == "--output-bytes") {
      for (absl::string_view entry : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        const std::pair<std::string, std::string> kv = absl::StrSplit(entry, '=');
        int64_t bytes = 0;
        if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &bytes) || bytes <= 0) {
          Usage(absl::StrCat("bad --output-bytes entry '", entry, "'"));
        }
        output_bytes[kv.first] = bytes;
      }
    } else {
      Usage("unknown option " + arg);
    }
  }
  if (port == 0 || output_bytes.empty()) Usage("--port and --output-bytes are required");

  Service service;
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                           &bound_port);
  builder.SetMaxReceiveMessageSize(-1);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::ServerCompletionQueue> queue = builder.AddCompletionQueue();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) Usage(absl::StrCat("cannot listen on port ", port));

  using inference::ModelInferRequest;
  using inference::ModelInferResponse;
  const auto infer = [&](const ModelInferRequest& request, ModelInferResponse& response) {
    auto it = output_bytes.find(request.model_name());
    if (it == output_bytes.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "unknown model '" + request.model_name() + "'");
    }
    const int64_t per_image = it->second;
    const int64_t images = request.inputs_size() > 0 && request.inputs(0).shape_size() > 0
                               ? request.inputs(0).shape(0)
                               : 1;
    if (images < 1 || images > kMaxImages) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("batch of ", images, " images: expected 1..", kMaxImages));
    }
    if (auto busy = request.parameters().find("busy_us"); busy != request.parameters().end()) {
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::microseconds(busy->second.int64_param());
      while (std::chrono::steady_clock::now() < until) {
      }
    }
    response.set_model_name(request.model_name());
    response.set_model_version("1");
    response.set_id(request.id());
    auto* output = response.add_outputs();
    output->set_name("output");
    output->set_datatype("FP32");
    output->add_shape(images);
    output->add_shape(per_image / 4);
    response.add_raw_output_contents(std::string(static_cast<size_t>(images * per_image), '\0'));
    return grpc::Status::OK;
  };
  UnaryHandler<ModelInferRequest, ModelInferResponse>::Start(&service, queue.get(),
                                                             &Service::RequestModelInfer, infer);
  // Several streams may open at once: each waiting call takes one.
  for (int i = 0; i < 16; ++i) StreamHandler::Start(&service, queue.get(), infer);
  UnaryHandler<inference::ServerReadyRequest, inference::ServerReadyResponse>::Start(
      &service, queue.get(), &Service::RequestServerReady, [](const auto&, auto& response) {
        response.set_ready(true);
        return grpc::Status::OK;
      });
  UnaryHandler<inference::ModelReadyRequest, inference::ModelReadyResponse>::Start(
      &service, queue.get(), &Service::RequestModelReady, [&](const auto& request, auto& response) {
        response.set_ready(output_bytes.count(request.name()) > 0);
        return grpc::Status::OK;
      });

  std::thread watcher([&] {
    int received = 0;
    sigwait(&signals, &received);
    server->Shutdown(std::chrono::system_clock::now());
    queue->Shutdown();
  });
  std::cerr << "convserve-null-server listening on 127.0.0.1:" << bound_port << std::endl;
  void* tag = nullptr;
  bool ok = false;
  while (convserve::api::NextEvent(
      queue.get(), std::chrono::microseconds(spin_us), [] { return true; }, nullptr, &tag, &ok)) {
    static_cast<Handler*>(tag)->Proceed(ok);
  }
  watcher.join();
  return 0;
}
