// grpc.health.v1.Health (Check and Watch) on the asynchronous API of async_rpc.h. gRPC's own
// default health service runs on the callback API, and its threads would take turns polling with
// ours (see async_rpc.h), so the server brings its own.
//
// It knows the whole server ("") and each service it serves by full name, all with one status:
// SERVING while the server serves, NOT_SERVING once shutdown began. Check on an unknown name is
// NOT_FOUND; Watch on an unknown name sends SERVICE_UNKNOWN and stays open, as the protocol says.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "proto/health.grpc.pb.h"
#include "server/api/async_rpc.h"

namespace convserve::api {

class HealthService final : public grpc::health::v1::Health::AsyncService {
 public:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Registers Check and Watch on `rpc`. Destroy after rpc.Stop().
  HealthService(AsyncRpc& rpc, std::vector<std::string> services);
  ~HealthService();

  // SERVING or NOT_SERVING, sent to every Watch stream.
  void SetServing(bool serving);
  // NOT_SERVING for good: every Watch stream gets it and then ends (UNAVAILABLE), so that
  // gRPC's shutdown does not wait for them.
  void Shutdown();

 private:
  class Watch;
  class WatchMethod;

  Status StatusOf(const std::string& service) const;  // mutex_ held
  void Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* request,
             grpc::health::v1::HealthCheckResponse* response, Reply reply);

  AsyncRpc& rpc_;
  const std::vector<std::string> services_;
  mutable std::mutex mutex_;
  Status status_;
  bool shut_down_ = false;
  std::set<Watch*> watches_;  // every Watch call object, waiting or open
};

}  // namespace convserve::api
