// Requests and responses as the serving layer sees them: plain structs, no protobuf, no gRPC.
// The api module converts the wire messages to and from these.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace convserve::serving {

using Clock = std::chrono::steady_clock;

// One input of a request. `data` (fixed-size datatypes: little-endian, row-major) and
// `elements` (BYTES) are views: whoever builds the request keeps the bytes alive until the
// request's callback has run.
struct InputTensor {
  std::string name;
  std::string datatype;  // KServe datatype string: "FP32", "UINT8", "BYTES", ...
  std::vector<int64_t> shape;
  std::string_view data;
  std::vector<std::string_view> elements;
  bool from_raw = false;  // came as raw_input_contents (for messages only)
};

struct RequestedOutput {
  std::string name;
  int64_t classification = 0;  // > 0: top-k classification as BYTES "score:index[:label]"
};

struct InferRequest {
  std::string id;
  std::vector<InputTensor> inputs;
  std::vector<RequestedOutput> outputs;  // empty: every output of the model
  Clock::time_point deadline = Clock::time_point::max();
  // More requests arrived together with this one (the api saw them ready at once): queue it so
  // that they can form a batch, rather than computing it alone on the submitting thread.
  bool followed = false;
  // It came pipelined on a ModelStreamInfer stream, behind an unanswered request of the same
  // stream: queue it for the worker as well, so that the receiving thread goes on reading the
  // stream's next requests while the worker computes. Unlike `followed` it does not by itself
  // make the batcher wait for company (a client's pipeline may be shallower than any batch
  // worth waiting for); requests already queued still do.
  bool pipelined = false;
  // Storage the views above may point into (typed contents converted to bytes).
  std::vector<std::string> owned_buffers;
};

struct OutputTensor {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
  std::string data;                   // fixed-size datatypes
  std::vector<std::string> elements;  // BYTES
};

struct InferResponse {
  std::string model_name;
  std::string model_version;
  std::string id;
  std::vector<OutputTensor> outputs;
};

// Called exactly once per request, from any thread (the caller's, for errors found before
// queueing, or a worker's). Must not block.
using InferCallback = std::function<void(absl::StatusOr<InferResponse>)>;

}  // namespace convserve::serving
