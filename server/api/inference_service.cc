#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/inference.grpc.pb.h"
#include "server/api/async_rpc.h"
#include "server/api/services.h"
#include "server/api/status.h"
#include "server/common/status.h"
#include "server/repository/model_config.h"
#include "server/serving/server_core.h"
#include "spdlog/spdlog.h"

namespace convserve::api {
namespace {

using serving::ServerCore;

constexpr const char* kServerName = "convserve";
constexpr const char* kServerVersion = "0.1.0";

template <typename T>
std::string_view BytesOf(const google::protobuf::RepeatedField<T>& field) {
  return std::string_view(reinterpret_cast<const char*>(field.data()), field.size() * sizeof(T));
}

// Whether the protocol has a typed contents field for `datatype` (FP16 and BF16 have none).
bool HasTypedContents(const std::string& datatype) {
  return datatype != "FP16" && datatype != "BF16";
}

// The typed contents of `datatype` as little-endian bytes; views into the message where the
// wire type matches the datatype, converted into `owned` otherwise.
absl::Status TypedContents(const inference::InferTensorContents& contents,
                           const std::string& datatype, const std::string& model,
                           serving::InputTensor& tensor, std::vector<std::string>& owned) {
  // Values of a wider field narrowed to T; one out of T's range is an error, not wrapped.
  auto narrow = [&](const auto& field, auto type_tag) -> absl::Status {
    using T = decltype(type_tag);
    std::string buffer(field.size() * sizeof(T), '\0');
    for (int i = 0; i < field.size(); ++i) {
      const auto wide = field.Get(i);
      if constexpr (!std::is_same_v<std::remove_cv_t<decltype(wide)>, bool>) {
        if (!std::in_range<T>(wide)) {
          return absl::InvalidArgumentError(
              absl::StrCat("input '", tensor.name, "' of model '", model, "': value ", wide,
                           " at index ", i, " is out of the range of ", datatype, " (",
                           static_cast<int64_t>(std::numeric_limits<T>::min()), "..",
                           static_cast<int64_t>(std::numeric_limits<T>::max()), ")"));
        }
      }
      const T value = static_cast<T>(wide);
      std::memcpy(buffer.data() + i * sizeof(T), &value, sizeof(T));
    }
    owned.push_back(std::move(buffer));
    tensor.data = owned.back();
    return absl::OkStatus();
  };
  if (datatype == "FP32") {
    tensor.data = BytesOf(contents.fp32_contents());
  } else if (datatype == "FP64") {
    tensor.data = BytesOf(contents.fp64_contents());
  } else if (datatype == "INT32") {
    tensor.data = BytesOf(contents.int_contents());
  } else if (datatype == "INT64") {
    tensor.data = BytesOf(contents.int64_contents());
  } else if (datatype == "UINT32") {
    tensor.data = BytesOf(contents.uint_contents());
  } else if (datatype == "UINT64") {
    tensor.data = BytesOf(contents.uint64_contents());
  } else if (datatype == "UINT8") {
    RETURN_IF_ERROR(narrow(contents.uint_contents(), uint8_t{}));
  } else if (datatype == "UINT16") {
    RETURN_IF_ERROR(narrow(contents.uint_contents(), uint16_t{}));
  } else if (datatype == "INT8") {
    RETURN_IF_ERROR(narrow(contents.int_contents(), int8_t{}));
  } else if (datatype == "INT16") {
    RETURN_IF_ERROR(narrow(contents.int_contents(), int16_t{}));
  } else if (datatype == "BOOL") {
    RETURN_IF_ERROR(narrow(contents.bool_contents(), uint8_t{}));
  } else if (datatype == "BYTES") {
    for (const std::string& element : contents.bytes_contents()) tensor.elements.push_back(element);
  } else if (!HasTypedContents(datatype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", tensor.name, "' of model '", model, "': datatype ", datatype,
        " has no typed contents field in the protocol: send it in raw_input_contents"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", tensor.name, "' of model '", model, "': datatype '", datatype,
        "' is not a datatype of the protocol (BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, "
        "INT32, INT64, FP16, FP32, FP64, BYTES)"));
  }
  return absl::OkStatus();
}

absl::Status ParseRawBytes(std::string_view raw, const std::string& model,
                           serving::InputTensor& tensor) {
  size_t offset = 0;
  while (offset < raw.size()) {
    if (raw.size() - offset < 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", tensor.name, "' of model '", model,
                       "': raw BYTES contents end inside an element's 4-byte length"));
    }
    uint32_t length;
    std::memcpy(&length, raw.data() + offset, 4);
    offset += 4;
    if (raw.size() - offset < length) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", tensor.name, "' of model '", model, "': raw BYTES element of ",
                       length, " bytes overruns the ", raw.size(), " bytes of raw contents"));
    }
    tensor.elements.push_back(raw.substr(offset, length));
    offset += length;
  }
  return absl::OkStatus();
}

// Wire request → serving request. Views point into `wire`, which outlives the request.
absl::Status ConvertRequest(const inference::ModelInferRequest& wire,
                            serving::InferRequest& request) {
  request.id = wire.id();
  const bool raw = wire.raw_input_contents_size() > 0;
  if (raw && wire.raw_input_contents_size() != wire.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", wire.model_name(), "': ", wire.raw_input_contents_size(),
        " raw_input_contents for ", wire.inputs_size(), " inputs: there must be one per input"));
  }
  for (int i = 0; i < wire.inputs_size(); ++i) {
    const auto& input = wire.inputs(i);
    serving::InputTensor tensor;
    tensor.name = input.name();
    tensor.datatype = input.datatype();
    tensor.shape.assign(input.shape().begin(), input.shape().end());
    if (raw) {
      if (input.has_contents() && input.contents().ByteSizeLong() > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", input.name(), "' of model '", wire.model_name(),
                         "' has both contents and raw_input_contents: use one"));
      }
      tensor.from_raw = true;
      const std::string& bytes = wire.raw_input_contents(i);
      if (tensor.datatype == "BYTES") {
        RETURN_IF_ERROR(ParseRawBytes(bytes, wire.model_name(), tensor));
      } else {
        tensor.data = bytes;
      }
    } else {
      RETURN_IF_ERROR(TypedContents(input.contents(), tensor.datatype, wire.model_name(), tensor,
                                    request.owned_buffers));
    }
    request.inputs.push_back(std::move(tensor));
  }
  for (const auto& output : wire.outputs()) {
    serving::RequestedOutput requested;
    requested.name = output.name();
    auto it = output.parameters().find("classification");
    if (it != output.parameters().end()) {
      const auto& p = it->second;
      if (p.parameter_choice_case() == inference::InferParameter::kInt64Param) {
        requested.classification = p.int64_param();
      } else if (p.parameter_choice_case() == inference::InferParameter::kUint64Param) {
        requested.classification = static_cast<int64_t>(p.uint64_param());
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("output '", output.name(), "' of model '", wire.model_name(),
                         "': parameter 'classification' must be an int64"));
      }
      if (requested.classification <= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", output.name(), "' of model '", wire.model_name(),
            "': parameter 'classification' must be > 0, got ", requested.classification));
      }
    }
    request.outputs.push_back(std::move(requested));
  }
  return absl::OkStatus();
}

// The answer takes the form of the request: raw_output_contents (one per output, in order) or
// typed contents. Where an output has no typed field, the whole answer is raw: raw and typed are
// never mixed, since raw_output_contents[i] belongs to outputs[i].
void FillResponse(serving::InferResponse& response, bool raw, inference::ModelInferResponse* wire) {
  wire->set_model_name(response.model_name);
  wire->set_model_version(response.model_version);
  wire->set_id(response.id);
  raw = raw || std::any_of(response.outputs.begin(), response.outputs.end(),
                           [](const auto& out) { return !HasTypedContents(out.datatype); });
  for (auto& out : response.outputs) {
    auto* tensor = wire->add_outputs();
    tensor->set_name(out.name);
    tensor->set_datatype(out.datatype);
    for (int64_t d : out.shape) tensor->add_shape(d);
    if (raw) {
      std::string* bytes = wire->add_raw_output_contents();
      if (out.datatype == "BYTES") {
        for (const auto& element : out.elements) {
          const uint32_t length = static_cast<uint32_t>(element.size());
          bytes->append(reinterpret_cast<const char*>(&length), 4);
          bytes->append(element);
        }
      } else {
        *bytes = std::move(out.data);
      }
      continue;
    }
    auto* contents = tensor->mutable_contents();
    // Little-endian values of type T, widened to the field's type where it is wider.
    auto copy = [&](auto* field, auto type_tag) {
      using T = decltype(type_tag);
      const size_t n = out.data.size() / sizeof(T);
      std::vector<T> values(n);
      std::memcpy(values.data(), out.data.data(), n * sizeof(T));
      field->Reserve(static_cast<int>(n));
      for (const T& value : values) field->Add(value);
    };
    const std::string& type = out.datatype;
    if (type == "BYTES") {
      for (auto& element : out.elements) contents->add_bytes_contents(std::move(element));
    } else if (type == "FP32") {
      contents->mutable_fp32_contents()->Resize(static_cast<int>(out.data.size() / 4), 0.0f);
      std::memcpy(contents->mutable_fp32_contents()->mutable_data(), out.data.data(),
                  out.data.size());
    } else if (type == "FP64") {
      copy(contents->mutable_fp64_contents(), double{});
    } else if (type == "INT64") {
      copy(contents->mutable_int64_contents(), int64_t{});
    } else if (type == "INT32") {
      copy(contents->mutable_int_contents(), int32_t{});
    } else if (type == "INT16") {
      copy(contents->mutable_int_contents(), int16_t{});
    } else if (type == "INT8") {
      copy(contents->mutable_int_contents(), int8_t{});
    } else if (type == "UINT64") {
      copy(contents->mutable_uint64_contents(), uint64_t{});
    } else if (type == "UINT32") {
      copy(contents->mutable_uint_contents(), uint32_t{});
    } else if (type == "UINT16") {
      copy(contents->mutable_uint_contents(), uint16_t{});
    } else if (type == "UINT8") {
      copy(contents->mutable_uint_contents(), uint8_t{});
    } else if (type == "BOOL") {
      copy(contents->mutable_bool_contents(), uint8_t{});
    }
  }
}

std::chrono::steady_clock::time_point SteadyDeadline(const grpc::ServerContext* context) {
  const auto deadline = context->deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline >= now + std::chrono::hours(24 * 365))
    return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(deadline - now);
}

void FillTensorMetadata(
    const auto& tensors, bool batched,
    google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* out) {
  for (const auto& tensor : tensors) {
    auto* meta = out->Add();
    meta->set_name(tensor.name());
    meta->set_datatype(std::string(repository::DataTypeToKServe(tensor.data_type())));
    if (batched) meta->add_shape(-1);
    for (int64_t d : tensor.dims()) meta->add_shape(d);
  }
}

// RESOURCE_EXHAUSTED for a request over `limit` bytes, naming the model and its largest input.
absl::Status CheckRequestSize(const inference::ModelInferRequest& request, int64_t limit) {
  const int64_t size = static_cast<int64_t>(request.ByteSizeLong());
  if (size <= limit) return absl::OkStatus();
  std::string largest;
  int64_t largest_bytes = -1;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const int64_t bytes = static_cast<int64_t>(i < request.raw_input_contents_size()
                                                   ? request.raw_input_contents(i).size()
                                                   : request.inputs(i).contents().ByteSizeLong());
    if (bytes > largest_bytes) {
      largest = request.inputs(i).name();
      largest_bytes = bytes;
    }
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "request to model '", request.model_name(), "' is ", size,
      " bytes, over the server's limit of ", limit, " bytes (--max-request-bytes)",
      largest_bytes >= 0
          ? absl::StrCat("; its largest input, '", largest, "', holds ", largest_bytes, " bytes")
          : std::string()));
}

void FillDuration(const serving::Duration& d, inference::StatisticDuration* out) {
  out->set_count(d.count);
  out->set_ns(d.ns);
}

// The way of a ModelInfer request into the serving core, for a ModelInfer call and for each
// request of a ModelStreamInfer stream: one over `max_request_bytes` or one that does not convert
// is refused through the core (counted in the model's statistics), any other is submitted with
// `deadline`. `done` gets the answer, maybe before this returns; it may own `wire`, so nothing of
// `wire` is read once `done` was handed over. `pipelined`: it came on a stream behind an
// unanswered request of the same stream (serving::InferRequest::pipelined).
void SubmitInfer(ServerCore* core, int64_t max_request_bytes,
                 const inference::ModelInferRequest& wire,
                 std::chrono::steady_clock::time_point deadline, bool pipelined,
                 serving::InferCallback done) {
  const std::string model = wire.model_name(), version = wire.model_version(), id = wire.id();
  absl::Status refused = CheckRequestSize(wire, max_request_bytes);
  auto converted = std::make_unique<serving::InferRequest>();
  if (refused.ok()) refused = ConvertRequest(wire, *converted);
  if (!refused.ok()) {
    core->Reject(model, version, refused, id, std::move(done));
    return;
  }
  converted->deadline = deadline;
  converted->followed = AsyncRpc::CallsReadyBehind() > 0;
  converted->pipelined = pipelined;
  core->Infer(model, version, std::move(converted), std::move(done));
}

// The parameter of a ModelStreamInfer error answer that carries the request's gRPC status code
// (the protocol's answer has only a message).
constexpr const char* kStreamErrorCodeParameter = "grpc_status_code";

// One ModelStreamInfer call: reads requests one after another, hands each to the serving core as
// ModelInfer does, and writes each answer when it is ready (in the order they finish; clients
// match them by id). An error of one request is its answer's error_message (with its id and
// model, and its status code in the parameter kStreamErrorCodeParameter), and the stream goes on.
// The call ends once the client closed its side (then OK) or the server shuts down (UNAVAILABLE)
// and every request read is answered. Its events: the call arrived, a read, a write and the
// finish completed; it deletes itself after the last of them. State is guarded by mutex_.
class InferStream {
 public:
  using Service = inference::GRPCInferenceService::AsyncService;

  // The calls of one server: waiting for and serving them, and ending them at shutdown.
  class Method final : public AsyncRpc::Method {
   public:
    Method(Service* service, ServerCore* core, AsyncRpc* rpc, int64_t max_request_bytes)
        : service_(service),
          core_(core),
          rpc_(rpc),
          max_request_bytes_(max_request_bytes),
          undelivered_(rpc->UndeliveredCounter("inference.GRPCInferenceService/ModelStreamInfer")) {
    }
    ~Method() override = default;

    void Post() override { (new InferStream(this))->Start(); }

    // Every open stream and those still to come stop reading; each ends with UNAVAILABLE once
    // the requests it read are answered.
    void EndAll() {
      std::lock_guard<std::mutex> lock(mutex_);
      ending_ = true;
      // A stream leaves open_ (and is deleted) only under this mutex: see Close.
      for (InferStream* stream : open_) {
        std::lock_guard<std::mutex> stream_lock(stream->mutex_);
        stream->ending_ = true;
        stream->MaybeFinish();
      }
    }

   private:
    friend class InferStream;
    Service* service_;
    ServerCore* core_;
    AsyncRpc* rpc_;
    const int64_t max_request_bytes_;
    std::atomic<int64_t>* undelivered_;
    std::mutex mutex_;  // before a stream's mutex_ when both are held
    std::set<InferStream*> open_;
    bool ending_ = false;
  };

  explicit InferStream(Method* method) : method_(method), stream_(&context_) {
    method_->rpc_->CallBegan();
  }

  void Start() {
    grpc::ServerCompletionQueue* queue = method_->rpc_->queue();
    method_->service_->RequestModelStreamInfer(&context_, &stream_, queue, queue, &started_);
  }

 private:
  struct Event final : Tag {
    Event(InferStream* stream, void (InferStream::*on)(bool), const void* starts = nullptr)
        : stream(stream), on(on), starts(starts) {}
    void Proceed(bool ok) override { (stream->*on)(ok); }
    // Each request read counts as a call of this method arriving (AsyncRpc::CallsReadyBehind):
    // requests read together from several streams form one batch.
    const void* StartsCallOf() const override { return starts; }
    InferStream* stream;
    void (InferStream::*on)(bool);
    const void* starts;
  };

  ~InferStream() { method_->rpc_->CallEnded(); }

  void OnStarted(bool ok) {
    if (!ok) {  // the server stopped before a call came
      delete this;
      return;
    }
    method_->Post();
    std::lock_guard<std::mutex> method_lock(method_->mutex_);
    std::lock_guard<std::mutex> lock(mutex_);
    method_->open_.insert(this);
    deadline_ = SteadyDeadline(&context_);
    ending_ = method_->ending_;
    if (ending_) {
      MaybeFinish();
    } else {
      MaybeRead();
    }
  }

  // Waits for the next request, unless the stream stops reading or holds kMaxUnanswered requests
  // without a delivered answer (then the client's writes wait in HTTP/2's flow control until an
  // answer is written). mutex_ held.
  void MaybeRead() {
    if (reading_ || read_done_ || ending_ || broken_ || finishing_) return;
    const int64_t unanswered =
        outstanding_ + static_cast<int64_t>(answers_.size()) + (writing_ ? 1 : 0);
    if (unanswered >= kMaxUnanswered) return;
    reading_ = true;
    incoming_ = std::make_unique<inference::ModelInferRequest>();
    stream_.Read(incoming_.get(), &read_);
  }

  void OnRead(bool ok) {
    std::unique_ptr<inference::ModelInferRequest> request;
    bool pipelined = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      reading_ = false;
      if (!ok) {  // the client closed its side, or the call ended
        read_done_ = true;
        incoming_.reset();
        MaybeFinish();
        if (finished_done_) {  // a read left waiting by the finish: the last event
          lock.unlock();
          Close();
        }
        return;
      }
      if (finishing_) {  // came before the finish it raced with: the stream cannot answer it
        method_->undelivered_->fetch_add(1, std::memory_order_relaxed);
        spdlog::warn(
            "ModelStreamInfer: a request to model '{}' (id '{}') arrived as its stream ended; "
            "it was not computed and gets no answer",
            incoming_->model_name(), incoming_->id());
        incoming_.reset();
        if (finished_done_) {
          lock.unlock();
          Close();
        }
        return;
      }
      request = std::move(incoming_);
      // The client sent this request before it had the answer to an earlier one (or, when only
      // the earlier answer's write is still pending, very likely so): it pipelines requests on
      // this stream, and more are likely behind. Each read takes one message, so they never
      // arrive together as calls of several streams do; queued instead of computed here, they
      // batch on a worker while this thread reads the next ones. A one-at-a-time client taken
      // for a pipelining one costs a hand-off to the worker, no batching wait.
      pipelined = outstanding_ > 0 || writing_ || !answers_.empty();
      ++outstanding_;
      // Read the next request now: it may already be here, and then it joins this one's batch.
      MaybeRead();
    }
    Handle(std::move(request), pipelined);
  }

  // As ModelInfer; the answer comes back through Answer, maybe before this returns.
  void Handle(std::unique_ptr<inference::ModelInferRequest> request, bool pipelined) {
    const inference::ModelInferRequest& wire = *request;
    // The callback owns the request (the converted request holds views into it) until the answer.
    auto done = [this, owner = std::shared_ptr<inference::ModelInferRequest>(std::move(request))](
                    absl::StatusOr<serving::InferResponse> result) {
      inference::ModelStreamInferResponse answer;
      inference::ModelInferResponse* response = answer.mutable_infer_response();
      if (result.ok()) {
        FillResponse(*result, owner->raw_input_contents_size() > 0, response);
      } else {
        answer.set_error_message(std::string(result.status().message()));
        response->set_model_name(owner->model_name());
        response->set_id(owner->id());
        (*response->mutable_parameters())[kStreamErrorCodeParameter].set_int64_param(
            static_cast<int64_t>(result.status().code()));
      }
      Answer(std::move(answer));
    };
    SubmitInfer(method_->core_, method_->max_request_bytes_, wire, deadline_, pipelined,
                std::move(done));
  }

  // From any thread: queues the answer of one request read.
  void Answer(inference::ModelStreamInferResponse answer) {
    std::lock_guard<std::mutex> lock(mutex_);
    --outstanding_;
    // The call ended, or its deadline passed (the client gave up): no write can deliver it.
    if (broken_ || std::chrono::steady_clock::now() >= deadline_) {
      method_->undelivered_->fetch_add(1, std::memory_order_relaxed);
      MaybeFinish();
      MaybeRead();
      return;
    }
    answers_.push_back(std::move(answer));
    if (!writing_) WriteNext();
  }

  void WriteNext() {  // mutex_ held, answers_ not empty
    writing_ = true;
    sending_ = std::move(answers_.front());
    answers_.pop_front();
    stream_.Write(sending_, &written_);
  }

  void OnWritten(bool ok) {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_ = false;
    if (!ok) {  // the call ended: this answer and those queued are not delivered
      broken_ = true;
      method_->undelivered_->fetch_add(1 + static_cast<int64_t>(answers_.size()),
                                       std::memory_order_relaxed);
      answers_.clear();
    } else if (!answers_.empty()) {
      WriteNext();
    }
    MaybeFinish();
    MaybeRead();
  }

  // Ends the call once nothing is left to answer (mutex_ held).
  void MaybeFinish() {
    if (finishing_ || !(read_done_ || ending_ || broken_)) return;
    if (outstanding_ > 0 || writing_ || !answers_.empty()) return;
    finishing_ = true;
    // A read still waiting for a request completes (not ok) when the call ends.
    const grpc::Status status =
        read_done_ ? grpc::Status::OK
        : ending_  ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  "the server is shutting down: this stream ends after answering "
                                   "every request it read; requests sent after those were not read")
                   : grpc::Status(grpc::StatusCode::CANCELLED, "the stream's call ended");
    stream_.Finish(status, &finished_);
  }

  void OnFinished(bool) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_done_ = true;
      if (reading_) return;  // its read completes next, and closes
    }
    Close();
  }

  // The last event: leaves the open streams and deletes this.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(method_->mutex_);
      method_->open_.erase(this);
    }
    delete this;
  }

  Method* method_;
  grpc::ServerContext context_;
  grpc::ServerAsyncReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>
      stream_;
  Event started_{this, &InferStream::OnStarted};
  Event read_{this, &InferStream::OnRead, &kStreamArrives};
  Event written_{this, &InferStream::OnWritten};
  Event finished_{this, &InferStream::OnFinished};
  static constexpr char kStreamArrives = 0;
  // Requests a stream may hold unanswered (computing, or answered but not yet written).
  static constexpr int64_t kMaxUnanswered = 64;

  std::mutex mutex_;
  std::unique_ptr<inference::ModelInferRequest> incoming_;   // the read in progress fills it
  std::deque<inference::ModelStreamInferResponse> answers_;  // ready, not yet written
  inference::ModelStreamInferResponse sending_;              // the write in progress
  std::chrono::steady_clock::time_point deadline_;           // of the call
  int64_t outstanding_ = 0;                                  // requests read and not yet answered
  bool reading_ = false, writing_ = false;
  bool read_done_ = false;  // the client closed its side (or the call ended)
  bool ending_ = false;     // the server shuts down
  bool broken_ = false;     // a write failed: the call ended
  bool finishing_ = false, finished_done_ = false;
};

class InferenceService final : public inference::GRPCInferenceService::AsyncService,
                               public StreamEnder {
 public:
  void EndStreams() override { streams_->EndAll(); }

  InferenceService(ServerCore* core, AsyncRpc& rpc, int64_t max_request_bytes)
      : core_(core), max_request_bytes_(max_request_bytes) {
    auto streams = std::make_unique<InferStream::Method>(this, core, &rpc, max_request_bytes);
    streams_ = streams.get();
    rpc.AddMethod(std::move(streams));
    using S = inference::GRPCInferenceService::AsyncService;
    auto serve = [&](auto request, auto handler) {
      rpc.ServeUnary(this, request, std::bind_front(handler, this));
    };
    serve(&S::RequestServerLive, &InferenceService::ServerLive);
    serve(&S::RequestServerReady, &InferenceService::ServerReady);
    serve(&S::RequestModelReady, &InferenceService::ModelReady);
    serve(&S::RequestServerMetadata, &InferenceService::ServerMetadata);
    serve(&S::RequestModelMetadata, &InferenceService::ModelMetadata);
    serve(&S::RequestModelConfig, &InferenceService::ModelConfig);
    serve(&S::RequestModelInfer, &InferenceService::ModelInfer);
    serve(&S::RequestModelStatistics, &InferenceService::ModelStatistics);
    serve(&S::RequestRepositoryIndex, &InferenceService::RepositoryIndex);
    serve(&S::RequestRepositoryModelLoad, &InferenceService::RepositoryModelLoad);
    serve(&S::RequestRepositoryModelUnload, &InferenceService::RepositoryModelUnload);
  }

 private:
  void ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                  inference::ServerLiveResponse* response, Reply reply) {
    response->set_live(true);
    return Finish(reply, absl::OkStatus());
  }

  void ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                   inference::ServerReadyResponse* response, Reply reply) {
    response->set_ready(!core_->shutting_down());
    return Finish(reply, absl::OkStatus());
  }

  void ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest* request,
                  inference::ModelReadyResponse* response, Reply reply) {
    response->set_ready(!core_->shutting_down() &&
                        core_->Get(request->name(), request->version()).ok());
    return Finish(reply, absl::OkStatus());
  }

  void ServerMetadata(grpc::ServerContext*, const inference::ServerMetadataRequest*,
                      inference::ServerMetadataResponse* response, Reply reply) {
    response->set_name(kServerName);
    response->set_version(kServerVersion);
    for (const char* extension : {"classification", "model_repository", "model_configuration",
                                  "statistics", "binary_tensor_data"}) {
      response->add_extensions(extension);
    }
    return Finish(reply, absl::OkStatus());
  }

  void ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest* request,
                     inference::ModelMetadataResponse* response, Reply reply) {
    absl::StatusOr<serving::ServedModel> served = core_->Get(request->name(), request->version());
    if (!served.ok()) return Finish(reply, served.status());
    const inference::ModelConfig& config = served->model->config;
    response->set_name(served->model->name);
    for (int64_t v : core_->ServedVersions(request->name())) {
      response->add_versions(std::to_string(v));
    }
    response->set_platform(config.platform().empty() ? "onnxruntime_onnx" : config.platform());
    const bool batched = config.max_batch_size() > 0;
    FillTensorMetadata(config.input(), batched, response->mutable_inputs());
    FillTensorMetadata(config.output(), batched, response->mutable_outputs());
    return Finish(reply, absl::OkStatus());
  }

  void ModelConfig(grpc::ServerContext*, const inference::ModelConfigRequest* request,
                   inference::ModelConfigResponse* response, Reply reply) {
    absl::StatusOr<serving::ServedModel> served = core_->Get(request->name(), request->version());
    if (!served.ok()) return Finish(reply, served.status());
    inference::ModelConfig& config = *response->mutable_config();
    config = served->model->config;
    // The queue bound that applies when the config sets none (Triton's default is unbounded).
    if (config.has_dynamic_batching() &&
        config.dynamic_batching().default_queue_policy().max_queue_size() == 0) {
      config.mutable_dynamic_batching()->mutable_default_queue_policy()->set_max_queue_size(
          served->scheduler->max_queue_size());
    }
    return Finish(reply, absl::OkStatus());
  }

  void ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* request,
                  inference::ModelInferResponse* response, Reply reply) {
    const bool raw = request->raw_input_contents_size() > 0;
    auto done = [reply, response, raw](absl::StatusOr<serving::InferResponse> result) {
      if (result.ok()) FillResponse(*result, raw, response);
      reply.Finish(ToGrpcStatus(result.status()));
    };
    SubmitInfer(core_, max_request_bytes_, *request, SteadyDeadline(context), /*pipelined=*/false,
                std::move(done));
  }

  void ModelStatistics(grpc::ServerContext*, const inference::ModelStatisticsRequest* request,
                       inference::ModelStatisticsResponse* response, Reply reply) {
    std::vector<serving::ServedModel> models;
    if (request->name().empty()) {
      models = core_->Served();
    } else if (request->version().empty()) {
      for (auto& served : core_->Served()) {
        if (served.model->name == request->name()) models.push_back(served);
      }
      if (models.empty()) {
        return Finish(reply, core_->Get(request->name(), "").status());
      }
    } else {
      absl::StatusOr<serving::ServedModel> served = core_->Get(request->name(), request->version());
      if (!served.ok()) return Finish(reply, served.status());
      models.push_back(*served);
    }
    for (const auto& served : models) {
      const serving::StatisticsSnapshot s = served.scheduler->statistics().Snapshot();
      auto* stats = response->add_model_stats();
      stats->set_name(served.model->name);
      stats->set_version(served.model->version_string());
      stats->set_last_inference(s.last_inference_ms);
      stats->set_inference_count(s.inference_count);
      stats->set_execution_count(s.execution_count);
      auto* infer = stats->mutable_inference_stats();
      FillDuration(s.success, infer->mutable_success());
      FillDuration(s.fail, infer->mutable_fail());
      FillDuration(s.queue, infer->mutable_queue());
      FillDuration(s.compute_input, infer->mutable_compute_input());
      FillDuration(s.compute_infer, infer->mutable_compute_infer());
      FillDuration(s.compute_output, infer->mutable_compute_output());
      infer->mutable_cache_hit();
      infer->mutable_cache_miss();
      // Triton reports the memory a model holds per device; here one host entry.
      auto* memory = stats->add_memory_usage();
      memory->set_type("CPU");
      memory->set_id(0);
      memory->set_byte_size(served.scheduler->memory_bytes());
      for (const auto& [size, batch] : s.batch_stats) {
        auto* out = stats->add_batch_stats();
        out->set_batch_size(size);
        FillDuration(batch.compute_input, out->mutable_compute_input());
        FillDuration(batch.compute_infer, out->mutable_compute_infer());
        FillDuration(batch.compute_output, out->mutable_compute_output());
      }
    }
    return Finish(reply, absl::OkStatus());
  }

  void RepositoryIndex(grpc::ServerContext*, const inference::RepositoryIndexRequest* request,
                       inference::RepositoryIndexResponse* response, Reply reply) {
    for (const auto& entry : core_->Index(request->ready())) {
      auto* model = response->add_models();
      model->set_name(entry.name);
      model->set_version(entry.version);
      model->set_state(entry.state);
      model->set_reason(entry.reason);
    }
    return Finish(reply, absl::OkStatus());
  }

  void RepositoryModelLoad(grpc::ServerContext*,
                           const inference::RepositoryModelLoadRequest* request,
                           inference::RepositoryModelLoadResponse*, Reply reply) {
    if (!request->parameters().empty()) {
      return Finish(reply, absl::UnimplementedError(
                               "RepositoryModelLoad parameters (config or file overrides) are "
                               "not supported: put the files in the repository"));
    }
    core_->LoadAsync(request->model_name(),
                     [reply](absl::Status status) { reply.Finish(ToGrpcStatus(status)); });
  }

  void RepositoryModelUnload(grpc::ServerContext*,
                             const inference::RepositoryModelUnloadRequest* request,
                             inference::RepositoryModelUnloadResponse*, Reply reply) {
    core_->UnloadAsync(request->model_name(),
                       [reply](absl::Status status) { reply.Finish(ToGrpcStatus(status)); });
  }

  static void Finish(Reply reply, const absl::Status& status) {
    reply.Finish(ToGrpcStatus(status));
  }

  ServerCore* core_;
  const int64_t max_request_bytes_;
  InferStream::Method* streams_;  // owned by the AsyncRpc
};

}  // namespace

std::unique_ptr<grpc::Service> CreateInferenceService(serving::ServerCore* core, AsyncRpc& rpc,
                                                      int64_t max_request_bytes,
                                                      StreamEnder** streams) {
  auto service = std::make_unique<InferenceService>(core, rpc, max_request_bytes);
  if (streams != nullptr) *streams = service.get();
  return service;
}

}  // namespace convserve::api
