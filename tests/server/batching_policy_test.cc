// The batching policy's cost test (serving::LargerBatchPays) on hand-made cost tables.
#include <gtest/gtest.h>

#include <map>

#include "server/serving/scheduler.h"

namespace convserve::serving {
namespace {

// infer_ns(b) from a table; sizes not in it are not measured (0).
auto Table(std::map<int64_t, int64_t> ns_by_batch) {
  return [table = std::move(ns_by_batch)](int64_t batch) {
    auto it = table.find(batch);
    return it == table.end() ? int64_t{0} : it->second;
  };
}

constexpr double kGain = 0.15;

TEST(LargerBatchPays, UnmeasuredBatchAtHandWaits) {
  EXPECT_TRUE(LargerBatchPays(1, 8, kGain, Table({})));
  EXPECT_TRUE(LargerBatchPays(3, 8, kGain, Table({{1, 100}, {8, 200}})));
}

TEST(LargerBatchPays, NothingLargerMeasuredWaits) {
  // Waiting is how the larger sizes get measured.
  EXPECT_TRUE(LargerBatchPays(2, 8, kGain, Table({{1, 100}, {2, 200}})));
}

TEST(LargerBatchPays, FlatCostPerImageDoesNotWait) {
  // 200 us per image at every size (a compute-bound convnet): batching saves nothing.
  const auto flat = Table({{1, 200'000}, {2, 400'000}, {4, 800'000}, {8, 1'600'000}});
  EXPECT_FALSE(LargerBatchPays(1, 8, kGain, flat));
  EXPECT_FALSE(LargerBatchPays(4, 8, kGain, flat));
  // 10% cheaper at 8 (180 us per image against 200): below the 15% gain.
  EXPECT_FALSE(LargerBatchPays(1, 8, kGain, Table({{1, 200'000}, {8, 1'440'000}})));
}

TEST(LargerBatchPays, CheaperLargerBatchWaits) {
  // 10 us per image alone, 3 us per image at 8 (a small dense model).
  EXPECT_TRUE(LargerBatchPays(1, 8, kGain, Table({{1, 10'000}, {8, 24'000}})));
  // Exactly the gain: 200 / 1.15 = 173.9 us per image at 4 pays, 175 us does not.
  EXPECT_TRUE(LargerBatchPays(1, 8, kGain, Table({{1, 200'000}, {4, 695'652}})));
  EXPECT_FALSE(LargerBatchPays(1, 8, kGain, Table({{1, 200'000}, {4, 700'000}})));
}

TEST(LargerBatchPays, OnlySizesUpToTheLimitCount) {
  // Cheaper at 16, but the batch may not grow past 8.
  const auto table = Table({{1, 100'000}, {4, 400'000}, {16, 160'000}});
  EXPECT_FALSE(LargerBatchPays(1, 8, kGain, table));
  EXPECT_TRUE(LargerBatchPays(1, 16, kGain, table));
  // Sizes at or below the batch at hand do not count either.
  EXPECT_FALSE(LargerBatchPays(4, 8, kGain, Table({{1, 10'000}, {4, 400'000}, {8, 800'000}})));
}

}  // namespace
}  // namespace convserve::serving
