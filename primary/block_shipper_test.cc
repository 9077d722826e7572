#include "primary/block_shipper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/replica_ssh_double.h"
#include "common/testing/temp_dir.h"
#include "primary/replica_driver.h"

namespace snapledger {
namespace {

using testing::FakeReplica;
using testing::FakeTransport;
using testing::OptionValue;

// The metric label its driver gives a failed Execute.
std::string_view Label(const absl::Status& status) {
  return ReplicationFailureLabel(ClassifyExecuteFailure(status));
}

// A primary ledger on the in-memory btrfs, and a shipper to the fake replica.
class BlockShipperSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InitializeLedgerRoot(btrfs_, dir_.path()).ok());
    auto log = EventLog::Create(LedgerLayout(dir_.path()).live(), 1, {});
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
    auto maker = BlockMaker::Create(btrfs_, dir_.path(), *log_, {16, Clock::Real()});
    ASSERT_TRUE(maker.ok()) << maker.status();
    maker_ = std::move(*maker);
  }

  BlockShipper Shipper(bool receive_session = true) {
    ReplicaTarget target{"r1", SshEndpoint{}};
    target.receive_session = receive_session;
    return BlockShipper(btrfs_, transport_, target, dir_.path());
  }

  // Appends an event, cuts a block, and returns every block.
  std::vector<BlockInfo> NewBlock() {
    EXPECT_TRUE(log_->Append(absl::StrCat("{\"i\":", next_++, "}")).ok());
    EXPECT_TRUE(maker_->Cut().ok());
    auto blocks = maker_->ListBlocks();
    EXPECT_TRUE(blocks.ok()) << blocks.status();
    return blocks.value_or(std::vector<BlockInfo>{});
  }

  // The step a driver plans for the newest block: a delta from the last block shipped (a full
  // send for the first).
  SendStep NextStep(const std::vector<BlockInfo>& blocks) {
    return SendStep{blocks.back(), shipped_};
  }

  // Ships the newest block, which must succeed.
  void ShipNewBlock(BlockShipper& shipper) {
    std::vector<BlockInfo> blocks = NewBlock();
    auto r = shipper.Execute(NextStep(blocks), 1);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->block, blocks.back());
    shipped_ = blocks.back();
  }

  testing::TempDir dir_;
  MemoryBtrfs btrfs_;
  FakeReplica replica_;
  FakeTransport transport_{replica_};
  EventLogPtr log_;
  BlockMakerPtr maker_;
  int next_ = 0;
  std::optional<BlockInfo> shipped_;  // the last block shipped
};

TEST_F(BlockShipperSessionTest, BlocksFollowOneAnotherOnOneReceiveCommand) {
  BlockShipper shipper = Shipper();
  for (int i = 0; i < 3; ++i) ShipNewBlock(shipper);
  EXPECT_THAT(replica_.commands, ::testing::ElementsAre("snapledger-receive --session"));
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 1u);
  ASSERT_EQ(replica_.requests.size(), 3u);
  // Each request names its block and, after the first, the previous block as its parent.
  std::vector<BlockInfo> blocks = *maker_->ListBlocks();
  EXPECT_EQ(OptionValue(replica_.requests[0], "--parent"), "");
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(OptionValue(replica_.requests[i], "--block"), blocks[i].name);
  EXPECT_EQ(OptionValue(replica_.requests[2], "--parent"), blocks[1].name);
  EXPECT_EQ(transport_.connects, 1);
}

TEST_F(BlockShipperSessionTest, ACommandThatEndedBetweenBlocksIsReplacedBeforeTheNext) {
  replica_.session_ends_after = 1;
  BlockShipper shipper = Shipper();
  ShipNewBlock(shipper);
  ShipNewBlock(shipper);  // no failed attempt: the ended command is seen before writing
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 2u);
  EXPECT_EQ(transport_.connects, 1);
}

TEST_F(BlockShipperSessionTest, KeepAliveLetsGoOfACommandTheReplicaEnded) {
  replica_.session_ends_after = 1;
  BlockShipper shipper = Shipper();
  ShipNewBlock(shipper);
  EXPECT_EQ(replica_.live_commands, 1);
  shipper.KeepAlive();
  EXPECT_EQ(replica_.live_commands, 0) << "the ended command's channel is closed";

  replica_.session_ends_after = -1;
  ShipNewBlock(shipper);
  shipper.KeepAlive();
  EXPECT_EQ(replica_.live_commands, 1) << "a command still open is kept";
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 2u);
}

TEST_F(BlockShipperSessionTest, ABlockThatDoesNotVerifyEndsTheSession) {
  BlockShipper shipper = Shipper();
  ShipNewBlock(shipper);
  std::vector<BlockInfo> blocks = NewBlock();
  replica_.not_verifying.insert(blocks.back().name);
  auto refused = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(Label(refused.status()), "verification") << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("does not verify"));
  EXPECT_FALSE(ParentNotHeld(refused.status()));
  replica_.not_verifying.clear();
  auto again = shipper.Execute(NextStep(blocks), 1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 2u) << "a new session after the failed one";
  EXPECT_EQ(transport_.connects, 1) << "the SSH session itself is kept";
}

TEST_F(BlockShipperSessionTest, AVerdictForAnotherBlockIsDataLossAndEndsTheSession) {
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  replica_.verdict_names = "block-000000000099-0123456789ab";
  auto r = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("without confirming"));
  replica_.verdict_names.clear();
  ASSERT_TRUE(shipper.Execute(NextStep(blocks), 1).ok());
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 2u);
}

TEST_F(BlockShipperSessionTest, AReplicaThatRefusesSessionsGetsOneCommandPerBlock) {
  replica_.refuses_sessions = true;
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  auto refused = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(Label(refused.status()), "refused");
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("one block per command from now on"));
  EXPECT_THAT(std::string(refused.status().message()), ::testing::Not(::testing::EndsWith("\n")));
  auto first = shipper.Execute(NextStep(blocks), 1);
  ASSERT_TRUE(first.ok()) << first.status();
  shipped_ = blocks.back();
  ShipNewBlock(shipper);
  ASSERT_EQ(replica_.commands.size(), 3u);
  EXPECT_EQ(replica_.commands[0], "snapledger-receive --session");
  for (size_t i = 1; i < 3; ++i)
    EXPECT_THAT(replica_.commands[i], ::testing::StartsWith("snapledger-receive --block "));
}

TEST_F(BlockShipperSessionTest, ARefusedParentIsMarkedNotHeld) {
  BlockShipper shipper = Shipper();
  ShipNewBlock(shipper);
  std::vector<BlockInfo> blocks = NewBlock();
  replica_.not_held.insert(blocks.front().name);
  auto refused = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(Label(refused.status()), "refused") << refused.status();
  EXPECT_TRUE(ParentNotHeld(refused.status())) << refused.status();
  auto full = shipper.Execute(SendStep{blocks.back(), std::nullopt}, 1);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_FALSE(full->parent.has_value());
}

TEST_F(BlockShipperSessionTest, AnAbortedShipperExecutesNothing) {
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  shipper.Abort();
  auto r = shipper.Execute(NextStep(blocks), 1);
  EXPECT_TRUE(absl::IsCancelled(r.status())) << r.status();
  EXPECT_TRUE(replica_.commands.empty());
}

TEST_F(BlockShipperSessionTest, WithoutSessionsEveryBlockHasItsOwnCommand) {
  BlockShipper shipper = Shipper(/*receive_session=*/false);
  for (int i = 0; i < 3; ++i) ShipNewBlock(shipper);
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 3u);
  for (const std::string& c : replica_.commands)
    EXPECT_THAT(c, ::testing::StartsWith("snapledger-receive --block "));
}

}  // namespace
}  // namespace snapledger
