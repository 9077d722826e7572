#include "primary/replication_tracker.h"

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"

namespace snapledger {
namespace {

constexpr int64_t kSecond = 1'000'000;

BlockInfo Block(uint64_t seq) { return *BlockForHead(seq, absl::StrFormat("%012x", seq)); }

HeadRecord Head(uint64_t seq, int64_t ts_seconds, uint64_t bytes) {
  HeadRecord h;
  h.head = ChainHead{seq, absl::StrFormat("%064x", seq), ts_seconds * kSecond};
  h.log_bytes = bytes;
  return h;
}

class TrackerTest : public ::testing::Test {
 protected:
  void SetUp() override { tracker_.AddReplica("r1"); }
  ReplicaLag Only(const HeadRecord& primary, const std::vector<BlockInfo>& blocks, int64_t now) {
    auto all = tracker_.Evaluate(primary, blocks, now);
    EXPECT_EQ(all.size(), 1u);
    return all.at(0);
  }
  ReplicationTracker tracker_{TrackerOptions{absl::Seconds(30)}};
};

TEST_F(TrackerTest, NewReplicaIsUnknownAndLagsByEverything) {
  auto lag = Only(Head(500, 100, 50000), {Block(400), Block(500)}, 100 * kSecond);
  EXPECT_EQ(lag.health, ReplicaHealth::kUnknown);
  EXPECT_EQ(lag.lag_events, 500u);
  EXPECT_EQ(lag.lag_blocks, 2u);
  EXPECT_EQ(lag.lag_bytes, 50000u);
}

TEST_F(TrackerTest, ReplicaAtTheNewestBlockIsInSyncWithZeroBlockLag) {
  tracker_.RecordVerified("r1", Block(500), Head(500, 100, 50000), 101 * kSecond);
  auto lag = Only(Head(520, 102, 52000), {Block(400), Block(500)}, 102 * kSecond);
  EXPECT_EQ(lag.health, ReplicaHealth::kInSync);
  EXPECT_EQ(lag.lag_blocks, 0u);
  EXPECT_EQ(lag.lag_events, 20u);  // appended since the newest block
  EXPECT_EQ(lag.lag_bytes, 2000u);
  EXPECT_DOUBLE_EQ(lag.lag_seconds, 2.0);
}

TEST_F(TrackerTest, BehindButRecentlySuccessfulIsCatchingUpThenStalled) {
  tracker_.RecordVerified("r1", Block(400), Head(400, 90, 40000), 100 * kSecond);
  std::vector<BlockInfo> blocks = {Block(400), Block(500)};
  EXPECT_EQ(Only(Head(500, 110, 50000), blocks, 110 * kSecond).health, ReplicaHealth::kCatchingUp);
  EXPECT_EQ(Only(Head(500, 140, 50000), blocks, 140 * kSecond).health, ReplicaHealth::kStalled);
}

TEST_F(TrackerTest, FailureAfterTheLastSuccessIsFailingWithItsError) {
  tracker_.RecordVerified("r1", Block(400), Head(400, 90, 40000), 100 * kSecond);
  tracker_.RecordFailure("r1", "connect to root@10.0.0.2:22: Connection refused", 105 * kSecond);
  auto lag = Only(Head(500, 105, 50000), {Block(400), Block(500)}, 106 * kSecond);
  EXPECT_EQ(lag.health, ReplicaHealth::kFailing);
  EXPECT_EQ(lag.last_error, "connect to root@10.0.0.2:22: Connection refused");
  tracker_.RecordVerified("r1", Block(500), Head(500, 105, 50000), 107 * kSecond);
  lag = Only(Head(500, 105, 50000), {Block(400), Block(500)}, 107 * kSecond);
  EXPECT_EQ(lag.health, ReplicaHealth::kInSync);
  EXPECT_TRUE(lag.last_error.empty());
  EXPECT_EQ(lag.lag_events, 0u);
  EXPECT_EQ(lag.lag_seconds, 0.0);
}

TEST_F(TrackerTest, LateConfirmationOfAnOlderBlockChangesNothing) {
  tracker_.RecordVerified("r1", Block(500), Head(500, 100, 50000), 100 * kSecond);
  tracker_.RecordVerified("r1", Block(400), Head(400, 90, 40000), 101 * kSecond);
  EXPECT_EQ(
      Only(Head(500, 100, 50000), {Block(400), Block(500)}, 101 * kSecond).last_verified_block,
      Block(500).name);
}

}  // namespace
}  // namespace snapledger
