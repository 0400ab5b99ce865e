// LogLimiter (server/serving/log_limiter.h) on a hand-driven clock, against hand-counted
// allowances of its token bucket.
#include "server/serving/log_limiter.h"

#include <gtest/gtest.h>

namespace convserve::serving {
namespace {

using std::chrono::milliseconds;

TEST(LogLimiterTest, BurstThenRateAndTheCountOfSuppressedLines) {
  LogLimiter limiter(/*per_second=*/2.0, /*burst=*/3.0);
  const LogLimiter::Clock::time_point t0{};
  int64_t suppressed = -1;
  // The burst: three lines at once, none suppressed before them.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Allow(t0, &suppressed)) << i;
    EXPECT_EQ(suppressed, 0);
  }
  // Then refused until a token refills (2 per second: one every 500 ms).
  EXPECT_FALSE(limiter.Allow(t0, &suppressed));
  EXPECT_FALSE(limiter.Allow(t0 + milliseconds(100), &suppressed));
  EXPECT_FALSE(limiter.Allow(t0 + milliseconds(499), &suppressed));
  ASSERT_TRUE(limiter.Allow(t0 + milliseconds(500), &suppressed));
  EXPECT_EQ(suppressed, 3);  // the three refused above
  EXPECT_FALSE(limiter.Allow(t0 + milliseconds(600), &suppressed));
  // A long quiet time refills up to the burst, not beyond.
  const auto later = t0 + milliseconds(60'000);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Allow(later, &suppressed)) << i;
    EXPECT_EQ(suppressed, i == 0 ? 1 : 0);
  }
  EXPECT_FALSE(limiter.Allow(later, &suppressed));
}

}  // namespace
}  // namespace convserve::serving
