// The one conversion from convserve's absl::Status to a grpc::Status (codes are the same
// numbers; the message is kept).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace convserve::api {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace convserve::api
