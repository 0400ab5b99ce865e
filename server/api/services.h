// The gRPC services: thin handlers that convert messages and delegate to the serving core.
#pragma once

#include <cstdint>
#include <memory>

namespace grpc {
class Service;
}
namespace convserve::serving {
class ServerCore;
}

namespace convserve::api {

class AsyncRpc;

// Ends the open ModelStreamInfer streams at shutdown.
class StreamEnder {
 public:
  // Every open stream, and every one opened later, stops reading and ends with UNAVAILABLE once
  // the requests it read are answered.
  virtual void EndStreams() = 0;

 protected:
  ~StreamEnder() = default;
};

// inference.GRPCInferenceService (KServe v2 + Triton extensions), its methods served on `rpc`
// (register the returned service with the builder). `core` must outlive the service. ModelInfer
// requests (and ModelStreamInfer ones) over `max_request_bytes` are refused with
// RESOURCE_EXHAUSTED. `streams`, when given, receives the service's StreamEnder (it lives as long
// as the service).
std::unique_ptr<grpc::Service> CreateInferenceService(serving::ServerCore* core, AsyncRpc& rpc,
                                                      int64_t max_request_bytes,
                                                      StreamEnder** streams = nullptr);

// convserve.v1.ConvServe: GetModelStatistics, GetLayerReport, CompareKernels (reports run one
// at a time on their own thread, within the compute-thread budget).
std::unique_ptr<grpc::Service> CreateConvServeService(serving::ServerCore* core, AsyncRpc& rpc);

}  // namespace convserve::api
