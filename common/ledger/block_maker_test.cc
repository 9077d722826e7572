#include "common/ledger/block_maker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/ledger/chain_verifier.h"
#include "common/testing/block_ledger.h"
#include "common/testing/manual_clock.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<uint64_t> Seqs(const std::vector<BlockInfo>& blocks) {
  std::vector<uint64_t> out;
  for (const BlockInfo& b : blocks) out.push_back(b.seq);
  return out;
}

// A ledger root on the in-memory btrfs with a real EventLog in live/, both it and the block
// maker on the manual clock.
class BlockMakerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::BlockLedgerOptions options;
    options.log.clock = &clock_;
    options.maker = {/*keep_newest=*/16, &clock_};
    options.restart_numbering = true;
    auto ledger = testing::BlockLedger::Create(btrfs_, dir_.path(), options);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = std::move(*ledger);
  }

  void MakeBlockMaker(size_t keep_newest) {
    absl::Status made = ledger_->RemakeMaker({keep_newest, &clock_});
    ASSERT_TRUE(made.ok()) << made;
  }

  void AppendEvents(int n) { ledger_->Append(n); }
  BlockInfo CutBlock() { return ledger_->Cut(0); }
  std::vector<BlockInfo> Blocks() { return ledger_->Blocks(); }
  EventLog& log() { return ledger_->log(); }
  BlockMaker& maker() { return ledger_->maker(); }

  testing::TempDir dir_;
  LedgerLayout layout_{dir_.path()};
  MemoryBtrfs btrfs_;
  ManualClock clock_;
  testing::BlockLedgerPtr ledger_;
};

TEST_F(BlockMakerTest, InitializeCreatesLiveSubvolumeAndBlocksDirectory) {
  auto live = btrfs_.GetSubvolumeInfo(layout_.live());
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_FALSE(live->read_only);
  EXPECT_TRUE(std::filesystem::is_directory(layout_.blocks()));
  EXPECT_TRUE(InitializeLedgerRoot(btrfs_, dir_.path()).ok()) << "not idempotent";
}

TEST_F(BlockMakerTest, NoEventsMakesNoBlock) {
  auto block = maker().Cut();
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_FALSE(block->has_value());
  EXPECT_THAT(Blocks(), IsEmpty());
}

TEST_F(BlockMakerTest, BlockIsAReadOnlySnapshotNamedAfterTheFrozenHead) {
  AppendEvents(5);
  BlockInfo block = CutBlock();
  const HeadRecord head = log().Head();
  EXPECT_EQ(block.seq, 5u);
  EXPECT_EQ(block.hash12, head.head.hash.substr(0, 12));
  auto info = btrfs_.GetSubvolumeInfo(layout_.block(block));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(info->parent_uuid, btrfs_.GetSubvolumeInfo(layout_.live())->uuid);
  EXPECT_THAT(Blocks(), ElementsAre(block));
}

TEST_F(BlockMakerTest, BlockVerifiesAndItsHeadFileNamesItsLastEvent) {
  AppendEvents(7);
  BlockInfo block = CutBlock();
  auto report = VerifyLedgerDir(layout_.block(block), {HeadCheck::kExact, 1});
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_TRUE(report->ok()) << report->failure->ToString();
  EXPECT_EQ(report->head.seq, 7u);
  auto head = ReadHeadFile(layout_.block(block));
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->head, log().Head().head);
}

TEST_F(BlockMakerTest, CutWithoutNewEventsIsANoOp) {
  AppendEvents(3);
  CutBlock();
  auto again = maker().Cut();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->has_value());
  EXPECT_EQ(Blocks().size(), 1u);
}

TEST_F(BlockMakerTest, LaterBlocksVerifyIncrementallyFromEarlierOnes) {
  AppendEvents(3);
  BlockInfo first = CutBlock();
  AppendEvents(4);
  BlockInfo second = CutBlock();
  EXPECT_EQ(second.seq, 7u);
  auto trusted = ReadHeadFile(layout_.block(first));
  ASSERT_TRUE(trusted.ok() && trusted->has_value());
  auto report = VerifyLedgerDirFrom(layout_.block(second), **trusted);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_TRUE(report->ok()) << report->failure->ToString();
  EXPECT_EQ(report->events_verified, 4u);
}

TEST_F(BlockMakerTest, RetentionKeepsTheNewestK) {
  MakeBlockMaker(/*keep_newest=*/2);
  for (int i = 0; i < 4; ++i) {
    AppendEvents(1);
    CutBlock();
  }
  EXPECT_THAT(Seqs(Blocks()), ElementsAre(3, 4));
}

TEST_F(BlockMakerTest, RetentionKeepsHeldBlocks) {
  MakeBlockMaker(/*keep_newest=*/1);
  AppendEvents(1);
  BlockInfo held = CutBlock();
  for (int i = 0; i < 3; ++i) {
    AppendEvents(1);
    ASSERT_TRUE(maker().Cut({held.name}).ok());
  }
  EXPECT_THAT(Seqs(Blocks()), ElementsAre(1, 4));
  auto deleted = maker().Prune();
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_THAT(*deleted, ElementsAre(held.name));
  EXPECT_THAT(Seqs(Blocks()), ElementsAre(4));
}

TEST_F(BlockMakerTest, FailedSnapshotMakesNoBlockAndReleasesTheLog) {
  AppendEvents(2);
  btrfs_.FailNext(MemoryBtrfs::Op::kCreateSnapshot, absl::ResourceExhaustedError("no space"));
  auto block = maker().Cut();
  EXPECT_TRUE(absl::IsResourceExhausted(block.status())) << block.status();
  EXPECT_THAT(Blocks(), IsEmpty());
  ASSERT_TRUE(log().Append("{\"after\":true}").ok()) << "the log stayed frozen";
  EXPECT_EQ(CutBlock().seq, 3u);
}

TEST_F(BlockMakerTest, FailedRetentionKeepsTheNewBlockAndIsRetried) {
  MakeBlockMaker(/*keep_newest=*/1);
  AppendEvents(1);
  CutBlock();
  AppendEvents(1);
  btrfs_.FailNext(MemoryBtrfs::Op::kDeleteSubvolume, absl::InternalError("busy"));
  EXPECT_FALSE(maker().Cut().ok());
  EXPECT_THAT(Seqs(Blocks()), ElementsAre(1, 2));
  auto again = maker().Cut();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->has_value());
  EXPECT_THAT(Seqs(Blocks()), ElementsAre(2));
}

TEST_F(BlockMakerTest, ListBlocksFlagsSubvolumesThatAreNotBlocks) {
  AppendEvents(1);
  BlockInfo block = CutBlock();
  ASSERT_TRUE(btrfs_.CreateSubvolume(layout_.blocks() + "/scratch").ok());
  ASSERT_TRUE(btrfs_.CreateSubvolume(layout_.blocks() + "/block-1-abc").ok());
  std::vector<std::string> unrecognized;
  auto blocks = maker().ListBlocks(&unrecognized);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_THAT(*blocks, ElementsAre(block));
  EXPECT_THAT(unrecognized, ElementsAre("block-1-abc", "scratch"));
}

TEST_F(BlockMakerTest, CreateRefusesALogBehindTheNewestBlock) {
  ASSERT_TRUE(btrfs_.CreateSubvolume(layout_.blocks() + "/block-000000000009-0123456789ab").ok());
  auto maker = BlockMaker::Create(btrfs_, dir_.path(), log(), {});
  EXPECT_TRUE(absl::IsFailedPrecondition(maker.status())) << maker.status();
}

TEST_F(BlockMakerTest, CreateRefusesALogOutsideLive) {
  testing::TempDir other;
  auto log = EventLog::Create(other.path(), 1);
  ASSERT_TRUE(log.ok()) << log.status();
  auto maker = BlockMaker::Create(btrfs_, dir_.path(), **log, {});
  EXPECT_TRUE(absl::IsInvalidArgument(maker.status())) << maker.status();
}

TEST_F(BlockMakerTest, CreateRefusesARootThatIsNotBtrfs) {
  btrfs_.FailNext(MemoryBtrfs::Op::kCheckIsBtrfs, absl::FailedPreconditionError("not btrfs"));
  auto maker = BlockMaker::Create(btrfs_, dir_.path(), log(), {});
  EXPECT_TRUE(absl::IsFailedPrecondition(maker.status())) << maker.status();
}

TEST_F(BlockMakerTest, CutIfDueWaitsForEnoughEvents) {
  BlockPolicy policy{3, absl::InfiniteDuration()};
  AppendEvents(2);
  auto none = maker().CutIfDue(policy);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  AppendEvents(1);
  auto block = maker().CutIfDue(policy);
  ASSERT_TRUE(block.ok() && block->has_value()) << block.status();
  EXPECT_EQ((*block)->seq, 3u);
}

TEST_F(BlockMakerTest, CutIfDueCutsAfterTheIntervalButNeverEmpty) {
  BlockPolicy policy{1000, absl::Milliseconds(100)};
  clock_.Advance(1'000'000);
  auto empty = maker().CutIfDue(policy);
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->has_value());
  AppendEvents(1);
  auto block = maker().CutIfDue(policy);
  ASSERT_TRUE(block.ok() && block->has_value()) << block.status();
  AppendEvents(1);
  clock_.Advance(99'000);
  auto early = maker().CutIfDue(policy);
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(early->has_value());
  clock_.Advance(1'000);
  auto due = maker().CutIfDue(policy);
  ASSERT_TRUE(due.ok() && due->has_value());
  EXPECT_EQ((*due)->seq, 2u);
}

TEST_F(BlockMakerTest, CutIfDueCutsForAWaitingReplicaOnceTheSpacingPassed) {
  BlockPolicy policy{1000, absl::Seconds(10), absl::Milliseconds(50)};
  AppendEvents(1);
  clock_.Advance(49'000);
  EXPECT_EQ(maker().SinceLastCut(), absl::Milliseconds(49));
  auto early = maker().CutIfDue(policy, {}, /*replica_waiting=*/true);
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(early->has_value());
  clock_.Advance(1'000);
  auto nobody_waiting = maker().CutIfDue(policy);
  ASSERT_TRUE(nobody_waiting.ok());
  EXPECT_FALSE(nobody_waiting->has_value());
  auto due = maker().CutIfDue(policy, {}, /*replica_waiting=*/true);
  ASSERT_TRUE(due.ok() && due->has_value()) << due.status();
  EXPECT_EQ((*due)->seq, 1u);
  EXPECT_EQ(maker().SinceLastCut(), absl::ZeroDuration());
}

}  // namespace
}  // namespace snapledger
