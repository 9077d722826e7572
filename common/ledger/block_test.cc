#include "common/ledger/block.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kHash[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

BlockInfo Block(uint64_t seq) {
  auto b = BlockForHead(seq, kHash);
  EXPECT_TRUE(b.ok()) << b.status();
  return *b;
}

TEST(BlockName, IsSeqZeroPaddedAndHashPrefix) {
  auto b = BlockForHead(1234, kHash);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->name, "block-000000001234-9f86d081884c");
  EXPECT_EQ(b->seq, 1234u);
  EXPECT_EQ(b->hash12, "9f86d081884c");
}

TEST(BlockName, RoundTripsThroughParse) {
  for (uint64_t seq : {uint64_t{1}, uint64_t{42}, kMaxBlockSeq}) {
    BlockInfo b = Block(seq);
    auto parsed = ParseBlockName(b.name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, b);
  }
}

TEST(BlockName, IncomingBlockIsTheHiddenNameOfABlock) {
  std::optional<BlockInfo> b = IncomingBlock(".incoming-block-000000000042-0123456789ab");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->name, "block-000000000042-0123456789ab");
  EXPECT_EQ(b->seq, 42u);
  EXPECT_FALSE(IncomingBlock("block-000000000042-0123456789ab").has_value());
  EXPECT_FALSE(IncomingBlock(".incoming-").has_value());
  EXPECT_FALSE(IncomingBlock(".incoming-block-000000000042-0123456789ab/..").has_value());
  EXPECT_FALSE(IncomingBlock(".promoting-block-000000000042-0123456789ab").has_value());
}

TEST(BlockName, RejectsPathSeparators) {
  EXPECT_FALSE(ParseBlockName("block-000000000001/9f86d081884").ok());
  EXPECT_FALSE(ParseBlockName("blocks/block-000000000001-9f86d081884c").ok());
  EXPECT_FALSE(ParseBlockName("block-000000000001-9f86d081884c/").ok());
  EXPECT_FALSE(ParseBlockName("/block-00000000001-9f86d081884c").ok());
}

TEST(BlockName, RejectsDotDot) {
  EXPECT_FALSE(ParseBlockName("..").ok());
  EXPECT_FALSE(ParseBlockName("block-000000000001-9f86d08188..").ok());
  EXPECT_FALSE(ParseBlockName("../block-00000001-9f86d081884c").ok());
}

TEST(BlockName, RejectsUppercaseHex) {
  EXPECT_FALSE(ParseBlockName("block-000000000001-9F86D081884C").ok());
}

TEST(BlockName, RejectsWrongLengths) {
  EXPECT_FALSE(ParseBlockName("").ok());
  EXPECT_FALSE(ParseBlockName("block-00000000001-9f86d081884c").ok());
  EXPECT_FALSE(ParseBlockName("block-000000000001-9f86d081884").ok());
  EXPECT_FALSE(ParseBlockName("block-000000000001-9f86d081884c0").ok());
}

TEST(BlockName, RejectsOtherSeparatorsAndSigns) {
  EXPECT_FALSE(ParseBlockName("block-000000000001_9f86d081884c").ok());
  EXPECT_FALSE(ParseBlockName("block-+00000000001-9f86d081884c").ok());
  EXPECT_FALSE(ParseBlockName("block- 00000000001-9f86d081884c").ok());
  EXPECT_FALSE(ParseBlockName("Block-000000000001-9f86d081884c").ok());
  EXPECT_FALSE(ParseBlockName(std::string("block-000000000001-9f86d081884\0", 31)).ok());
}

TEST(BlockName, RejectsSeqZero) {
  EXPECT_FALSE(ParseBlockName("block-000000000000-9f86d081884c").ok());
  EXPECT_TRUE(absl::IsInvalidArgument(BlockForHead(0, kHash).status()));
}

TEST(BlockName, RejectsSeqBeyondTwelveDigits) {
  EXPECT_TRUE(absl::IsOutOfRange(BlockForHead(kMaxBlockSeq + 1, kHash).status()));
}

TEST(BlockName, RejectsMalformedHash) {
  EXPECT_FALSE(BlockForHead(1, "9f86d081884").ok());       // too short
  EXPECT_FALSE(BlockForHead(1, "9F86D081884C7D65").ok());  // uppercase
  EXPECT_FALSE(BlockForHead(1, "../../etc/passwd").ok());
}

TEST(BlockName, ErrorQuotesTheName) {
  auto b = ParseBlockName("snapshot-1");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()), ::testing::HasSubstr("\"snapshot-1\""));
}

TEST(BlockPolicy, CutsOnceEnoughEventsAccumulated) {
  BlockPolicy p{100, absl::InfiniteDuration()};
  EXPECT_FALSE(p.ShouldCut(99, absl::Hours(1)));
  EXPECT_TRUE(p.ShouldCut(100, absl::ZeroDuration()));
  EXPECT_TRUE(p.ShouldCut(250, absl::ZeroDuration()));
}

TEST(BlockPolicy, CutsOnceTheIntervalPassedWithEventsWaiting) {
  BlockPolicy p{1'000'000, absl::Milliseconds(500)};
  EXPECT_FALSE(p.ShouldCut(1, absl::Milliseconds(499)));
  EXPECT_TRUE(p.ShouldCut(1, absl::Milliseconds(500)));
}

TEST(BlockPolicy, NeverCutsAnEmptyBlock) {
  BlockPolicy p{1, absl::Milliseconds(1)};
  EXPECT_FALSE(p.ShouldCut(0, absl::Hours(24)));
}

TEST(BlockPolicy, ZeroLimitsAreDisabled) {
  BlockPolicy events_only{10, absl::ZeroDuration()};
  EXPECT_FALSE(events_only.ShouldCut(9, absl::Hours(24)));
  BlockPolicy time_only{0, absl::Seconds(1)};
  EXPECT_FALSE(time_only.ShouldCut(1'000'000, absl::Milliseconds(10)));
  EXPECT_TRUE(time_only.ShouldCut(1, absl::Seconds(1)));
}

TEST(BlockPolicy, AWaitingReplicaGetsABlockOnceTheSpacingPassed) {
  BlockPolicy p{10'000, absl::Seconds(1), absl::Milliseconds(100)};
  EXPECT_FALSE(p.ShouldCut(5, absl::Milliseconds(99), /*replica_waiting=*/true));
  EXPECT_TRUE(p.ShouldCut(5, absl::Milliseconds(100), /*replica_waiting=*/true));
  EXPECT_FALSE(p.ShouldCut(5, absl::Milliseconds(100), /*replica_waiting=*/false));
  EXPECT_FALSE(p.ShouldCut(0, absl::Hours(1), /*replica_waiting=*/true));  // never empty
}

TEST(BlockPolicy, ZeroSpacingTurnsCuttingOnDemandOff) {
  BlockPolicy p{10'000, absl::Seconds(1), absl::ZeroDuration()};
  EXPECT_FALSE(p.ShouldCut(5, absl::Milliseconds(999), /*replica_waiting=*/true));
  EXPECT_TRUE(p.ShouldCut(5, absl::Seconds(1), /*replica_waiting=*/true));
}

TEST(PlanRetention, KeepsTheNewestK) {
  std::vector<BlockInfo> blocks = {Block(1), Block(2), Block(3), Block(4), Block(5)};
  EXPECT_THAT(PlanRetention(blocks, 2, {}),
              ElementsAre(Block(1).name, Block(2).name, Block(3).name));
}

TEST(PlanRetention, NeverDeletesTheNewestEvenWhenKIsZero) {
  std::vector<BlockInfo> blocks = {Block(1), Block(2)};
  EXPECT_THAT(PlanRetention(blocks, 0, {}), ElementsAre(Block(1).name));
}

TEST(PlanRetention, KeepsHeldBlocks) {
  std::vector<BlockInfo> blocks = {Block(1), Block(2), Block(3), Block(4)};
  EXPECT_THAT(PlanRetention(blocks, 1, {Block(2).name, "block-000000000099-000000000000"}),
              ElementsAre(Block(1).name, Block(3).name));
}

TEST(PlanRetention, OrdersBySeqNotByInputOrder) {
  std::vector<BlockInfo> blocks = {Block(30), Block(4), Block(200), Block(1)};
  EXPECT_THAT(PlanRetention(blocks, 2, {}), ElementsAre(Block(1).name, Block(4).name));
}

TEST(PlanRetention, DeletesNothingWhenFewerThanK) {
  EXPECT_THAT(PlanRetention({Block(1), Block(2)}, 5, {}), IsEmpty());
  EXPECT_THAT(PlanRetention({}, 5, {}), IsEmpty());
}

TEST(LedgerLayout, NamesTheDirectoriesOfARoot) {
  LedgerLayout layout("/srv/ledger/");
  EXPECT_EQ(layout.live(), "/srv/ledger/live");
  EXPECT_EQ(layout.blocks(), "/srv/ledger/blocks");
  EXPECT_EQ(layout.block(Block(7)), "/srv/ledger/blocks/block-000000000007-9f86d081884c");
}

}  // namespace
}  // namespace snapledger
