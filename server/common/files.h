// Reading a small file named by a flag (certificates, keys) with an error that names both.
#pragma once

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace convserve {

// The whole content of `path`; `what` names it in the error ("--tls-cert", ...).
inline absl::StatusOr<std::string> ReadFileNamedBy(const std::string& what,
                                                   const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " file '", path, "': ", std::strerror(errno)));
  }
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace convserve
