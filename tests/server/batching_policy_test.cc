// The batching policy's cost test (serving::BatchWaitBudgetNs) on hand-made cost tables, with
// hand-computed budgets.
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

TEST(BatchWaitBudget, UnmeasuredBatchAtHandWaitsTheFullDelay) {
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, Table({})), kWaitUnmeasured);
  EXPECT_EQ(BatchWaitBudgetNs(3, 8, kGain, Table({{1, 100}, {8, 200}})), kWaitUnmeasured);
  // -1 marks a size run once and not measured (its first execution).
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, Table({{1, -1}, {8, 200}})), kWaitUnmeasured);
}

TEST(BatchWaitBudget, NothingLargerMeasuredWaitsTheFullDelay) {
  // Waiting is how the larger sizes get measured.
  EXPECT_EQ(BatchWaitBudgetNs(2, 8, kGain, Table({{1, 100}, {2, 200}})), kWaitUnmeasured);
}

TEST(BatchWaitBudget, FlatCostPerImageDoesNotWait) {
  // 200 us per image at every size (a compute-bound convnet): batching saves nothing.
  const auto flat = Table({{1, 200'000}, {2, 400'000}, {4, 800'000}, {8, 1'600'000}});
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, flat), 0);
  EXPECT_EQ(BatchWaitBudgetNs(4, 8, kGain, flat), 0);
  // 10% cheaper at 8 (180 us per image against 200): below the 15% gain.
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, Table({{1, 200'000}, {8, 1'440'000}})), 0);
}

TEST(BatchWaitBudget, CheaperLargerBatchWaitsForTheComputeItSaves) {
  // 10 us per image alone, 3 us per image at 8 (a small dense model): one image saves 7 us.
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, Table({{1, 10'000}, {8, 24'000}})), 7'000);
  // Two images at 6 us each, 3 us at 8: 2 x 3 us.
  EXPECT_EQ(BatchWaitBudgetNs(2, 8, kGain, Table({{2, 12'000}, {8, 24'000}})), 6'000);
  // The cheapest larger size counts: 4 us at 4, 3 us at 8, 5 us at 16.
  EXPECT_EQ(
      BatchWaitBudgetNs(1, 16, kGain, Table({{1, 10'000}, {4, 16'000}, {8, 24'000}, {16, 80'000}})),
      7'000);
  // At the gain: 200 / 1.15 = 173.9 us per image at 4 waits (26.1 us), 175 us does not.
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, Table({{1, 200'000}, {4, 695'652}})), 26'087);
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, Table({{1, 200'000}, {4, 700'000}})), 0);
}

TEST(BatchWaitBudget, OnlySizesUpToTheLimitCount) {
  // Cheaper at 16 (10 us per image), but the batch may not grow past 8.
  const auto table = Table({{1, 100'000}, {4, 400'000}, {16, 160'000}});
  EXPECT_EQ(BatchWaitBudgetNs(1, 8, kGain, table), 0);
  EXPECT_EQ(BatchWaitBudgetNs(1, 16, kGain, table), 90'000);
  // Sizes at or below the batch at hand do not count either.
  EXPECT_EQ(BatchWaitBudgetNs(4, 8, kGain, Table({{1, 10'000}, {4, 400'000}, {8, 800'000}})), 0);
}

}  // namespace
}  // namespace convserve::serving
