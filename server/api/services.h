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

// inference.GRPCInferenceService (KServe v2 + Triton extensions), its methods served on `rpc`
// (register the returned service with the builder). `core` must outlive the service. ModelInfer
// requests over `max_request_bytes` are refused with RESOURCE_EXHAUSTED.
std::unique_ptr<grpc::Service> CreateInferenceService(serving::ServerCore* core, AsyncRpc& rpc,
                                                      int64_t max_request_bytes);

// convserve.v1.ConvServe: GetModelStatistics, GetLayerReport, CompareKernels (reports run one
// at a time on their own thread, within the compute-thread budget).
std::unique_ptr<grpc::Service> CreateConvServeService(serving::ServerCore* core, AsyncRpc& rpc);

}  // namespace convserve::api
