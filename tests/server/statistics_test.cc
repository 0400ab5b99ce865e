// ModelStatistics' windows (server/serving/statistics.h) on a driven clock, against hand-counted
// requests and hand-computed percentiles.
#include "server/serving/statistics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace convserve::serving {
namespace {

constexpr float kNone = std::numeric_limits<float>::quiet_NaN();

TEST(ModelStatisticsTest, LastMinuteCountsEveryRequestAtAnyRate) {
  ModelStatistics stats;
  const Clock::time_point t0 = Clock::now();
  // 10000 requests in each of 30 seconds: more than the window samples per second.
  for (int s = 0; s < 30; ++s) {
    for (int i = 0; i < 10000; ++i) {
      const float us = static_cast<float>(i % 100 + 1);  // 1..100, uniform
      stats.AddSampleAt(t0 + std::chrono::seconds(s), us, us, us);
    }
  }
  const StatisticsSnapshot now = stats.SnapshotAt(t0 + std::chrono::seconds(29));
  EXPECT_EQ(now.last_minute.request_count, 300000u);
  EXPECT_EQ(now.since_start.request_count, 300000u);
  // Uniform over 1..100: p50 near 50, p99 near 99 (from a sample of each second).
  EXPECT_NEAR(now.last_minute.total.p50_us, 50, 3);
  EXPECT_NEAR(now.last_minute.total.p99_us, 99, 2);
  EXPECT_EQ(now.since_start.total.max_us, 100);
  // A minute after the 11th second, the first eleven seconds have left the window.
  const StatisticsSnapshot later = stats.SnapshotAt(t0 + std::chrono::seconds(70));
  EXPECT_EQ(later.last_minute.request_count, 190000u);
  EXPECT_EQ(stats.SnapshotAt(t0 + std::chrono::seconds(200)).last_minute.request_count, 0u);
}

TEST(ModelStatisticsTest, FailuresCountInTotalOnlyAndInQueueOnlyIfQueued) {
  ModelStatistics stats;
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 10; ++i) stats.AddSampleAt(t0, 100, 1000, 1200);  // computed
  for (int i = 0; i < 30; ++i) stats.AddSampleAt(t0, kNone, kNone, 3);  // rejected at once
  for (int i = 0; i < 5; ++i) stats.AddSampleAt(t0, 500, kNone, 510);   // expired in the queue
  const StatisticsSnapshot s = stats.SnapshotAt(t0);
  EXPECT_EQ(s.last_minute.request_count, 45u);
  EXPECT_EQ(s.last_minute.compute.count, 10u);
  EXPECT_EQ(s.last_minute.compute.p50_us, 1000);  // not 0: the failures were not computed
  EXPECT_EQ(s.last_minute.queue.count, 15u);
  EXPECT_EQ(s.last_minute.queue.p50_us, 100);  // 10 of 100 us, 5 of 500 us
  EXPECT_EQ(s.last_minute.queue.p90_us, 500);
  EXPECT_EQ(s.last_minute.total.count, 45u);
  EXPECT_EQ(s.last_minute.total.p50_us, 3);
  EXPECT_EQ(s.since_start.compute.count, 10u);
  EXPECT_EQ(s.since_start.compute.p50_us, 1000);
  EXPECT_EQ(s.since_start.compute.max_us, 1000);
  EXPECT_EQ(s.since_start.queue.max_us, 500);
}

}  // namespace
}  // namespace convserve::serving
