// Status helpers shared by every module: convserve uses absl::Status / absl::StatusOr<T>
// (whose codes are gRPC's codes) as its one error type. Exceptions never cross a module
// boundary; they are caught where they arise and turned into a Status.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define CONVSERVE_CONCAT_INNER_(a, b) a##b
#define CONVSERVE_CONCAT_(a, b) CONVSERVE_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                              \
  do {                                                     \
    ::absl::Status convserve_status_ = (expr);             \
    if (!convserve_status_.ok()) return convserve_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(CONVSERVE_CONCAT_(convserve_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

namespace convserve {

// Prefixes the message of a non-OK status with context ("model 'x': ..."), keeping the code.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace convserve
