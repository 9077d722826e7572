#include "primary/replication_plan.h"

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"

namespace snapledger {
namespace {

// Block at `seq` on a chain identified by `chain` (the hash digits differ between chains).
BlockInfo Block(uint64_t seq, char chain = 'a') {
  std::string hash = absl::StrFormat("%c%011x", chain, seq);
  return *BlockForHead(seq, hash);
}

std::vector<BlockInfo> Chain(std::initializer_list<uint64_t> seqs, char chain = 'a') {
  std::vector<BlockInfo> blocks;
  for (uint64_t s : seqs) blocks.push_back(Block(s, chain));
  return blocks;
}

ReplicaView Replica(std::string id, const std::vector<BlockInfo>& held) {
  ReplicaView r{std::move(id), {}};
  for (const auto& b : held) r.verified_blocks.push_back(b.name);
  return r;
}

TEST(PlanReplica, NewReplicaGetsAFullSendOfTheNewestBlock) {
  auto plan = PlanReplica(Chain({100, 200, 300}), Replica("r1", {}));
  auto* step = std::get_if<SendStep>(&plan);
  ASSERT_NE(step, nullptr);
  EXPECT_EQ(step->block, Block(300));
  EXPECT_FALSE(step->parent.has_value());
}

TEST(PlanReplica, LaggingReplicaGetsADeltaFromItsNewestCommonBlock) {
  auto plan = PlanReplica(Chain({100, 200, 300, 400}), Replica("r1", Chain({100, 200})));
  auto* step = std::get_if<SendStep>(&plan);
  ASSERT_NE(step, nullptr);
  EXPECT_EQ(step->block, Block(400));
  EXPECT_EQ(step->parent, Block(200));
}

TEST(PlanReplica, ReplicaAtTheNewestBlockIsInSync) {
  auto plan = PlanReplica(Chain({100, 200}), Replica("r1", Chain({100, 200})));
  EXPECT_TRUE(std::holds_alternative<InSync>(plan));
}

TEST(PlanReplica, PrunedParentFallsBackToAnOlderCommonBlockOrAFullSend) {
  // The primary pruned 200; the replica still has 100 and 200.
  auto older = PlanReplica(Chain({100, 300, 400}), Replica("r1", Chain({100, 200})));
  EXPECT_EQ(std::get<SendStep>(older).parent, Block(100));
  auto none = PlanReplica(Chain({300, 400}), Replica("r1", Chain({100, 200})));
  EXPECT_FALSE(std::get<SendStep>(none).parent.has_value());
}

TEST(PlanReplica, DivergedHistoryIsAConflict) {
  auto plan = PlanReplica(Chain({100, 200, 300}), Replica("r1", {Block(100), Block(200, 'b')}));
  auto* conflict = std::get_if<PlanConflict>(&plan);
  ASSERT_NE(conflict, nullptr);
  EXPECT_EQ(conflict->kind, PlanConflict::Kind::kDiverged);
  EXPECT_NE(conflict->detail.find(Block(200, 'b').name), std::string::npos);
}

TEST(PlanReplica, ReplicaAheadOfThePrimaryIsAConflict) {
  auto plan = PlanReplica(Chain({100, 200}), Replica("r1", Chain({100, 200, 300})));
  auto* conflict = std::get_if<PlanConflict>(&plan);
  ASSERT_NE(conflict, nullptr);
  EXPECT_EQ(conflict->kind, PlanConflict::Kind::kReplicaAhead);
}

TEST(PlanReplica, NothingToSendWithoutBlocks) {
  EXPECT_TRUE(std::holds_alternative<InSync>(PlanReplica({}, Replica("r1", {}))));
}

TEST(PlanPrimaryRetention, KeepsEveryReplicasParent) {
  auto blocks = Chain({1, 2, 3, 4, 5, 6});
  auto plan = PlanPrimaryRetention(
      blocks, {Replica("r1", Chain({1, 2})), Replica("r2", Chain({4}))}, {2, 100});
  EXPECT_EQ(plan.holds, (std::set<std::string>{Block(2).name, Block(4).name}));
  EXPECT_EQ(plan.delete_blocks, (std::vector<std::string>{Block(1).name, Block(3).name}));
  EXPECT_TRUE(plan.dropped_holds.empty());
}

TEST(PlanPrimaryRetention, DropsTheHoldOfAReplicaTooFarBehind) {
  std::vector<BlockInfo> blocks;
  for (uint64_t s = 1; s <= 10; ++s) blocks.push_back(Block(s));
  auto plan = PlanPrimaryRetention(
      blocks, {Replica("gone", Chain({2})), Replica("near", Chain({8}))}, {3, 5});
  EXPECT_EQ(plan.dropped_holds, std::vector<std::string>{"gone"});
  EXPECT_EQ(plan.holds, std::set<std::string>{Block(8).name});
  // Blocks 1..7 go; 8 is held; 8, 9, 10 are the newest three anyway.
  EXPECT_EQ(plan.delete_blocks.size(), 7u);
  // The dropped replica is then planned a full send.
  blocks.erase(blocks.begin(), blocks.begin() + 7);
  auto step = std::get<SendStep>(PlanReplica(blocks, Replica("gone", Chain({2}))));
  EXPECT_FALSE(step.parent.has_value());
}

TEST(PlanPrimaryRetention, NeverDeletesTheNewestBlock) {
  auto plan = PlanPrimaryRetention(Chain({1, 2}), {}, {1, 1});
  EXPECT_EQ(plan.delete_blocks, std::vector<std::string>{Block(1).name});
}

TEST(RetryDelay, DoublesFromTheInitialDelayUpToTheCap) {
  absl::Duration initial = absl::Milliseconds(100), max = absl::Seconds(1);
  EXPECT_EQ(RetryDelay(1, initial, max), absl::Milliseconds(100));
  EXPECT_EQ(RetryDelay(2, initial, max), absl::Milliseconds(200));
  EXPECT_EQ(RetryDelay(4, initial, max), absl::Milliseconds(800));
  EXPECT_EQ(RetryDelay(5, initial, max), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(1000, initial, max), absl::Seconds(1));
}

}  // namespace
}  // namespace snapledger
