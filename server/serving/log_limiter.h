// Bounds how often a kind of per-request log line is written: a client sending bad requests in a
// loop would otherwise fill the log (and its disk) with one warning per request. A token bucket:
// up to `burst` lines at once, then `per_second` on average; each line that is written says how
// many were left out before it. The statistics and metrics still count every request.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <utility>

#include "spdlog/spdlog.h"

namespace convserve::serving {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  LogLimiter(double per_second, double burst)
      : per_second_(per_second), burst_(burst), tokens_(burst) {}

  // Whether a line may be written at `now`. When it may, `*suppressed` is how many were refused
  // since the last line written (and the count starts again).
  bool Allow(Clock::time_point now, int64_t* suppressed) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (started_) {
      const double seconds = std::chrono::duration<double>(now - last_).count();
      if (seconds > 0) tokens_ = std::min(burst_, tokens_ + seconds * per_second_);
    }
    started_ = true;
    last_ = std::max(last_, now);
    if (tokens_ < 1.0 - 1e-9) {  // (sums of refills may fall short of 1 by rounding)
      ++suppressed_;
      return false;
    }
    tokens_ -= 1.0;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  const double per_second_, burst_;
  std::mutex mutex_;
  double tokens_;
  bool started_ = false;
  Clock::time_point last_{};
  int64_t suppressed_ = 0;
};

// The limiter of the warnings about failed inference requests, shared by all models: 20 at
// once, 10 per second on average.
inline LogLimiter& RequestFailureLogLimiter() {
  static LogLimiter limiter(10.0, 20.0);
  return limiter;
}

// Logs a failed request's warning within RequestFailureLogLimiter, preceded by how many such
// warnings were left out since the last one written.
template <class... Args>
void WarnRequestFailure(spdlog::format_string_t<Args...> format, Args&&... args) {
  int64_t suppressed = 0;
  if (!RequestFailureLogLimiter().Allow(LogLimiter::Clock::now(), &suppressed)) return;
  if (suppressed > 0) {
    spdlog::warn(
        "{} more failed-request warnings were left out (at most 10 per second are logged; the "
        "statistics and metrics count every request)",
        suppressed);
  }
  spdlog::warn(format, std::forward<Args>(args)...);
}

}  // namespace convserve::serving
