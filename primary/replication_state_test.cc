#include "primary/replication_state.h"

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"

namespace snapledger {
namespace {

BlockInfo Block(uint64_t seq) { return *BlockForHead(seq, absl::StrFormat("a%011x", seq)); }

std::vector<BlockInfo> Chain(std::initializer_list<uint64_t> seqs) {
  std::vector<BlockInfo> blocks;
  for (uint64_t s : seqs) blocks.push_back(Block(s));
  return blocks;
}

HeadRecord HeadAt(uint64_t seq, int64_t ts = 0) {
  HeadRecord h;
  h.head.seq = seq;
  h.head.hash = absl::StrFormat("a%011x%052d", seq, 0);
  h.head.ts = ts;
  h.log_bytes = seq * 100;
  return h;
}

ReplicaReport Report(const std::string& id, std::initializer_list<uint64_t> seqs) {
  ReplicaReport r{id, {}, {}, ""};
  for (uint64_t s : seqs) r.verified_blocks.push_back(Block(s).name);
  if (seqs.size()) r.head = HeadAt(*std::max_element(seqs.begin(), seqs.end()));
  return r;
}

TEST(ReplicationState, ReportFromAnUnknownReplicaIsRejected) {
  ReplicationState state({"r1"}, {});
  EXPECT_TRUE(absl::IsNotFound(state.ApplyReport(Report("intruder", {100}), 0)));
  EXPECT_FALSE(state.HasReported("r1"));
}

TEST(ReplicationState, ReportWithABadBlockNameIsRejected) {
  ReplicationState state({"r1"}, {});
  ReplicaReport r = Report("r1", {100});
  r.verified_blocks.push_back("../../etc");
  EXPECT_TRUE(absl::IsInvalidArgument(state.ApplyReport(r, 0)));
}

TEST(ReplicationState, ReportedViewIsTakenOnceAndKeepsNewerShippedBlocks) {
  ReplicationState state({"r1"}, {});
  uint64_t seen = 0;
  ReplicaView driver{"r1", {Block(100).name, Block(200).name, Block(300).name}};
  EXPECT_FALSE(state.TakeReportedView("r1", driver, &seen).has_value());
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100, 200}), 0).ok());
  std::optional<ReplicaView> view = state.TakeReportedView("r1", driver, &seen);
  ASSERT_TRUE(view.has_value());
  // 300 was shipped after the report was sent: kept. Nothing older than the report is added.
  EXPECT_EQ(view->verified_blocks,
            (std::vector<std::string>{Block(100).name, Block(200).name, Block(300).name}));
  EXPECT_FALSE(state.TakeReportedView("r1", driver, &seen).has_value());
}

TEST(ReplicationState, RetentionHoldsTransfersInFlight) {
  ReplicationState state({"r1"}, {});
  RetentionLimits limits{.keep_newest = 1, .max_blocks_behind = 100};
  state.BeginTransfer("r1", {Block(400).name, Block(100).name});
  auto retention = state.PlanRetention(Chain({100, 200, 300, 400}), limits);
  EXPECT_TRUE(retention.plan.holds.contains(Block(100).name));
  EXPECT_EQ(retention.plan.delete_blocks,
            (std::vector<std::string>{Block(200).name, Block(300).name}));
  state.EndTransfer("r1");
  retention = state.PlanRetention(Chain({100, 200, 300, 400}), limits);
  EXPECT_EQ(retention.plan.delete_blocks.size(), 3u);
}

TEST(ReplicationState, ADroppedHoldIsCountedOnce) {
  ReplicationState state({"r1"}, {});
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100}), 0).ok());
  uint64_t seen = 0;
  state.TakeReportedView("r1", {}, &seen);
  RetentionLimits limits{.keep_newest = 1, .max_blocks_behind = 2};
  auto blocks = Chain({100, 200, 300, 400, 500});
  EXPECT_EQ(state.PlanRetention(blocks, limits).newly_dropped_holds,
            std::vector<std::string>{"r1"});
  EXPECT_TRUE(state.PlanRetention(blocks, limits).newly_dropped_holds.empty());
}

TEST(ReplicationState, HeartbeatDoesNotMoveLastSuccess) {
  ReplicationState state({"r1"}, {});
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100}), 1'000'000).ok());
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100}), 9'000'000).ok());
  auto lags = state.Evaluate(HeadAt(100), Chain({100}), 9'000'000);
  ASSERT_EQ(lags.size(), 1u);
  EXPECT_EQ(lags[0].last_success_micros, 1'000'000);
  EXPECT_EQ(lags[0].health, ReplicaHealth::kInSync);
}

TEST(ReplicationState, AReportSentBeforeAShipmentDoesNotDropItsHold) {
  ReplicationState state({"r1"}, {});
  RetentionLimits limits{.keep_newest = 1, .max_blocks_behind = 100};
  // The driver shipped 300; a report the replica sent before that arrives afterwards.
  state.SetDriverView("r1", {"r1", {Block(100).name, Block(200).name, Block(300).name}});
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100, 200}), 0).ok());
  auto retention = state.PlanRetention(Chain({100, 200, 300, 400, 500}), limits);
  EXPECT_TRUE(retention.plan.holds.contains(Block(300).name));
  EXPECT_EQ(std::count(retention.plan.delete_blocks.begin(), retention.plan.delete_blocks.end(),
                       Block(300).name),
            0);
}

TEST(ReplicationState, AReportIsHeldBeforeItsDriverTakesIt) {
  ReplicationState state({"r1"}, {});
  RetentionLimits limits{.keep_newest = 1, .max_blocks_behind = 100};
  state.SetDriverView("r1", {"r1", {Block(100).name}});
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100, 200}), 0).ok());
  auto retention = state.PlanRetention(Chain({100, 200, 300, 400}), limits);
  EXPECT_TRUE(retention.plan.holds.contains(Block(200).name));
  EXPECT_FALSE(retention.plan.holds.contains(Block(100).name));
}

TEST(ReplicationState, AReportOfAnAlreadyRecordedBlockDoesNotHideALaterFailure) {
  ReplicationState state({"r1"}, {});
  state.RecordVerified("r1", Block(100), HeadAt(100), 1'000'000);
  state.RecordFailure("r1", "replica r1 refused block 200: does not verify", 2'000'000);
  // The replica's report of 100 (which the driver already recorded) arrives late.
  ASSERT_TRUE(state.ApplyReport(Report("r1", {100}), 3'000'000).ok());
  auto lags = state.Evaluate(HeadAt(200), Chain({100, 200}), 3'000'000);
  ASSERT_EQ(lags.size(), 1u);
  EXPECT_EQ(lags[0].last_success_micros, 1'000'000);
  EXPECT_EQ(lags[0].health, ReplicaHealth::kFailing);
  EXPECT_NE(lags[0].last_error.find("does not verify"), std::string::npos);
}

}  // namespace
}  // namespace snapledger
