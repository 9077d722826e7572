#include "replica/block_receiver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/testing/block_ledger.h"
#include "common/testing/manual_clock.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/temp_dir.h"
#include "replica/receive_lock.h"

namespace snapledger {
namespace {

ReceiveRequest Request(std::string block, std::optional<std::string> parent = std::nullopt) {
  ReceiveRequest r;
  r.block = std::move(block);
  r.parent = std::move(parent);
  r.epoch = 1;
  return r;
}

TEST(ValidateReceiveRequest, AcceptsExactBlockNames) {
  EXPECT_TRUE(ValidateReceiveRequest(
                  Request("block-000000000200-0123456789ab", "block-000000000100-ba9876543210"))
                  .ok());
}

TEST(ValidateReceiveRequest, RejectsPathTricksInBlockAndParent) {
  for (std::string bad :
       {"../blocks/block-000000000200-0123456789ab", "block-000000000200-0123456789ab/..",
        "/etc/passwd", "..", "block-000000000200-0123456789ab/../../x", "block-0000000002000123"}) {
    auto st = ValidateReceiveRequest(Request(bad));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("--block"), absl::string_view::npos) << bad;
    st = ValidateReceiveRequest(Request("block-000000000200-0123456789ab", bad));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ValidateReceiveRequest, ParentMustBeOlder) {
  EXPECT_FALSE(ValidateReceiveRequest(
                   Request("block-000000000100-0123456789ab", "block-000000000200-ba9876543210"))
                   .ok());
}

TEST(ValidateReceiveRequest, AnnouncedHeadMustBeTheBlocksHead) {
  auto r = Request("block-000000000200-0123456789ab");
  r.announced = ChainHead{200, "0123456789ab" + std::string(52, '0'), 0};
  EXPECT_TRUE(ValidateReceiveRequest(r).ok());
  r.announced->seq = 199;
  EXPECT_FALSE(ValidateReceiveRequest(r).ok());
  r.announced = ChainHead{200, std::string(64, 'f'), 0};
  EXPECT_FALSE(ValidateReceiveRequest(r).ok());
}

TEST(ValidateReceiveRequest, EpochIsRequired) {
  auto r = Request("block-000000000200-0123456789ab");
  r.epoch = 0;
  EXPECT_FALSE(ValidateReceiveRequest(r).ok());
}

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A primary ledger and an empty replica root, each on its own in-memory btrfs (so that a delta
// finds its parent on the replica by received_uuid, not as the very subvolume it was sent from).
class BlockReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ledger =
        testing::BlockLedger::Create(primary_btrfs_, primary_.path(), {.restart_numbering = true});
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    primary_ledger_ = std::move(*ledger);
  }

  BlockInfo Cut(int events) { return primary_ledger_->Cut(events); }

  // `block`'s stream, a delta from `parent` when given.
  std::string Stream(const BlockInfo& block, const std::optional<BlockInfo>& parent = {}) {
    return primary_ledger_->Stream(block, parent);
  }

  absl::StatusOr<ReceiveResult> Receive(const BlockInfo& block,
                                        const std::optional<BlockInfo>& parent = {}) {
    return ReceiveStream(block, parent, Stream(block, parent));
  }

  absl::StatusOr<ReceiveResult> ReceiveStream(const BlockInfo& block,
                                              const std::optional<BlockInfo>& parent,
                                              std::string stream, uint64_t epoch = 1) {
    ReceiveRequest r = Request(block.name);
    if (parent) r.parent = parent->name;
    r.epoch = epoch;
    StringSource source(std::move(stream));
    return BlockReceiver(replica_btrfs_, replica_.path(), &clock_).Receive(r, source);
  }

  // The names in the replica's blocks/ directory, hidden ones included.
  std::vector<std::string> ReplicaEntries() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(LedgerLayout(replica_.path()).blocks(), ec))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  testing::TempDir primary_, replica_;
  MemoryBtrfs primary_btrfs_, replica_btrfs_;
  ManualClock clock_;  // the receivers'
  testing::BlockLedgerPtr primary_ledger_;
};

TEST_F(BlockReceiverTest, AVerifiedBlockTakesItsNameInBlocksAndNothingElseIsLeft) {
  BlockInfo first = Cut(3);
  auto full = Receive(first);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->events_verified, 3u);
  EXPECT_FALSE(full->already_held);
  EXPECT_THAT(ReplicaEntries(), ElementsAre(first.name));

  BlockInfo second = Cut(2);
  auto delta = Receive(second, first);
  ASSERT_TRUE(delta.ok()) << delta.status();
  EXPECT_EQ(delta->head.head.seq, 5u);
  // The first block adds its whole log; a delta what its events added.
  EXPECT_EQ(full->log_bytes_added, full->head.log_bytes);
  EXPECT_EQ(delta->log_bytes_added, delta->head.log_bytes - full->head.log_bytes);
  EXPECT_GT(delta->log_bytes_added, 0u);
  EXPECT_GE(delta->timings.stream, 0);
  EXPECT_GE(delta->timings.promote, 0);
  EXPECT_THAT(ReplicaEntries(), ElementsAre(first.name, second.name));
  auto info = replica_btrfs_.GetSubvolumeInfo(LedgerLayout(replica_.path()).block(second));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->read_only);
  EXPECT_FALSE(info->received_uuid.empty());
}

TEST_F(BlockReceiverTest, LeftoversOfDeadTransfersAreDeletedFirst) {
  BlockInfo block = Cut(2);
  LedgerLayout replica(replica_.path());
  std::filesystem::create_directories(replica.blocks());
  const std::vector<std::string> stale = {
      absl::StrCat(replica.blocks(), "/.incoming-", block.name),
      absl::StrCat(replica.blocks(), "/.incoming-block-000000000001-0123456789ab")};
  for (const std::string& path : stale) ASSERT_TRUE(replica_btrfs_.CreateSubvolume(path).ok());
  auto received = Receive(block);
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_THAT(ReplicaEntries(), ElementsAre(block.name));
}

TEST_F(BlockReceiverTest, ABlockThatDoesNotVerifyIsDeletedNotNamed) {
  BlockInfo block = Cut(2);
  auto received = ReceiveStream(block, std::nullopt, Stream(block), /*epoch=*/2);
  EXPECT_TRUE(absl::IsDataLoss(received.status())) << received.status();
  EXPECT_THAT(std::string(received.status().message()), ::testing::HasSubstr("epoch"));
  EXPECT_THAT(ReplicaEntries(), IsEmpty());
  EXPECT_EQ(replica_btrfs_.subvolume_count(), 0u);
}

TEST_F(BlockReceiverTest, TimingsAreMeasuredOnTheReceiversClock) {
  auto received = Receive(Cut(3));
  ASSERT_TRUE(received.ok()) << received.status();
  // The manual clock did not move.
  EXPECT_EQ(received->timings.stream, 0.0);
  EXPECT_EQ(received->timings.verify, 0.0);
  EXPECT_EQ(received->timings.promote, 0.0);
}

TEST_F(BlockReceiverTest, ATransferStillRunningIsWaitedForAFewSecondsThenRefused) {
  BlockInfo block = Cut(2);
  absl::StatusOr<ReceiveLock> running = ReceiveLock::Acquire(replica_.path(), absl::ZeroDuration());
  ASSERT_TRUE(running.ok()) << running.status();
  clock_.SetAutoAdvance(true);  // the pauses between tries pass at once
  const absl::Time start = clock_.Now();
  auto received = Receive(block);
  EXPECT_TRUE(absl::IsFailedPrecondition(received.status())) << received.status();
  EXPECT_THAT(std::string(received.status().message()),
              ::testing::HasSubstr("another receive is running on " + replica_.path()));
  EXPECT_EQ(clock_.Now() - start, absl::Seconds(5));
  EXPECT_EQ(replica_btrfs_.subvolume_count(), 0u);
}

TEST_F(BlockReceiverTest, AMalformedStreamIsAFailedTransferAndLeavesNothingBehind) {
  BlockInfo block = Cut(2);
  std::string stream = Stream(block);
  auto received = ReceiveStream(block, std::nullopt, stream.substr(0, stream.size() - 3));
  // A failed transfer (retried), not a block that failed verification (DataLoss).
  EXPECT_TRUE(absl::IsInternal(received.status())) << received.status();
  EXPECT_THAT(std::string(received.status().message()),
              ::testing::HasSubstr("receiving the stream: "));
  EXPECT_THAT(ReplicaEntries(), IsEmpty());
  EXPECT_EQ(replica_btrfs_.subvolume_count(), 0u);
}

TEST_F(BlockReceiverTest, AFailedRenameLeavesNothingBehind) {
  BlockInfo block = Cut(2);
  replica_btrfs_.FailNext(MemoryBtrfs::Op::kRenameSubvolume, absl::InternalError("injected"));
  auto received = Receive(block);
  EXPECT_TRUE(absl::IsInternal(received.status())) << received.status();
  EXPECT_THAT(ReplicaEntries(), IsEmpty());
  EXPECT_EQ(replica_btrfs_.subvolume_count(), 0u);

  auto again = Receive(block);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(ReplicaEntries(), ElementsAre(block.name));
}

TEST_F(BlockReceiverTest, ABlockAlreadyHeldIsAcknowledgedAndItsStreamDrained) {
  BlockInfo block = Cut(2);
  ASSERT_TRUE(Receive(block).ok());
  auto again = Receive(block);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_held);
  EXPECT_EQ(again->log_bytes_added, 0u);
  EXPECT_THAT(ReplicaEntries(), ElementsAre(block.name));
}

}  // namespace
}  // namespace snapledger
