#include "primary/block_shipper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/ledger/head_file.h"
#include "common/testing/block_ledger.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/replica_ssh_double.h"
#include "common/testing/temp_dir.h"
#include "common/transport/receive_protocol.h"
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
    auto ledger = testing::BlockLedger::Create(btrfs_, dir_.path());
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = std::move(*ledger);
  }

  BlockShipper Shipper(bool receive_session = true) {
    ReplicaTarget target{"r1", SshEndpoint{}};
    target.receive_session = receive_session;
    return BlockShipper(btrfs_, transport_, target, dir_.path());
  }

  // Appends an event, cuts a block, and returns every block.
  std::vector<BlockInfo> NewBlock() {
    ledger_->Cut(1);
    return ledger_->Blocks();
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
  testing::BlockLedgerPtr ledger_;
  std::optional<BlockInfo> shipped_;  // the last block shipped
};

TEST_F(BlockShipperSessionTest, BlocksFollowOneAnotherOnOneReceiveCommand) {
  BlockShipper shipper = Shipper();
  for (int i = 0; i < 3; ++i) ShipNewBlock(shipper);
  EXPECT_THAT(replica_.commands, ::testing::ElementsAre("snapledger-receive --session"));
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 1u);
  ASSERT_EQ(replica_.requests.size(), 3u);
  // Each request names its block and, after the first, the previous block as its parent.
  std::vector<BlockInfo> blocks = *ledger_->maker().ListBlocks();
  EXPECT_EQ(OptionValue(replica_.requests[0], "--parent"), "");
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(OptionValue(replica_.requests[i], "--block"), blocks[i].name);
  EXPECT_EQ(OptionValue(replica_.requests[2], "--parent"), blocks[1].name);
  EXPECT_EQ(transport_.connects, 1);
}

TEST_F(BlockShipperSessionTest, ACorruptHeadFileOnThePrimaryIsALocalFailure) {
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  // The primary's own block is damaged: that is no verification failure of the replica.
  ASSERT_TRUE(WriteFileAtomic(absl::StrCat(ledger_->layout().block(blocks.back()), "/", kHeadFile),
                              "garbage")
                  .ok());
  auto r = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Label(r.status()), "local") << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("head file"));
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
  EXPECT_EQ(RefusalOf(refused.status()), std::nullopt);
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

// Verdict lines that are valid JSON, or not, but no verdict (common/transport/receive_protocol.h).
const char* const kMalformedVerdicts[] = {
    "42",
    "[1]",
    "{\"block\":5}",
    "\"x\"",
    "null",
    "{}",
    "{\"verdict\":\"received\",\"block\":\"block-0000",
    "{\"verdict\":\"received\",\"block\":7,\"seq\":1}",
    "{\"verdict\":\"received\",\"block\":\"b\",\"seq\":\"1\",\"hash\":\"h\"}",
    "{\"verdict\":\"refused\",\"refusal\":\"disk_full\",\"error\":\"e\"}",
    "{\"verdict\":\"promoted\"}",
    "not json at all",
};

TEST_F(BlockShipperSessionTest, EachMalformedVerdictIsAFailedTransferNotACrash) {
  for (bool session : {true, false}) {
    for (const char* answer : kMalformedVerdicts) {
      SCOPED_TRACE(absl::StrCat(session ? "session: " : "one command: ", answer));
      BlockShipper shipper = Shipper(session);
      std::vector<BlockInfo> blocks = NewBlock();
      replica_.raw_answer = absl::StrCat(answer, "\n");
      auto r = shipper.Execute(NextStep(blocks), 1);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
      EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("without confirming"));
      replica_.raw_answer.reset();
      auto again = shipper.Execute(NextStep(blocks), 1);
      EXPECT_TRUE(again.ok()) << again.status();
    }
  }
}

TEST_F(BlockShipperSessionTest, AVerdictCutShortIsAFailedTransfer) {
  for (bool session : {true, false}) {
    SCOPED_TRACE(session ? "session" : "one command");
    BlockShipper shipper = Shipper(session);
    std::vector<BlockInfo> blocks = NewBlock();
    replica_.raw_answer = "{\"verdict\":\"received\",\"block\":";  // no end of line
    auto r = shipper.Execute(NextStep(blocks), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("cut short"));
    replica_.raw_answer.reset();
  }
}

TEST_F(BlockShipperSessionTest, AnOverlongVerdictIsAFailedTransfer) {
  for (bool session : {true, false}) {
    SCOPED_TRACE(session ? "session" : "one command");
    BlockShipper shipper = Shipper(session);
    std::vector<BlockInfo> blocks = NewBlock();
    replica_.raw_answer = std::string(kMaxVerdictLine + 10, ' ') + "{}\n";
    auto r = shipper.Execute(NextStep(blocks), 1);
    ASSERT_FALSE(r.ok());
    // On a session the line is refused as it is read (the command misbehaves: "refused");
    // from a one-block command's output, as no verdict.
    EXPECT_EQ(r.status().code(), session ? absl::StatusCode::kAborted : absl::StatusCode::kDataLoss)
        << r.status();
    replica_.raw_answer.reset();
  }
}

TEST_F(BlockShipperSessionTest, OutputAfterTheVerdictLineIsAFailedTransfer) {
  BlockShipper shipper = Shipper(/*receive_session=*/false);
  std::vector<BlockInfo> blocks = NewBlock();
  ReceiveVerdict v;
  v.block = blocks.back().name;
  replica_.raw_answer = WriteReceiveVerdict(v) + "\nmore\n";
  auto r = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("after its verdict line"));
}

TEST_F(BlockShipperSessionTest, AFailedCommandWithoutAVerdictIsClassifiedByItsExitCode) {
  for (bool session : {true, false}) {
    for (const auto& [exit, code] :
         std::vector<std::pair<int, absl::StatusCode>>{{1, absl::StatusCode::kAborted},
                                                       {2, absl::StatusCode::kAborted},
                                                       {3, absl::StatusCode::kDataLoss},
                                                       {255, absl::StatusCode::kAborted}}) {
      SCOPED_TRACE(absl::StrCat(session ? "session: exit " : "one command: exit ", exit));
      BlockShipper shipper = Shipper(session);
      std::vector<BlockInfo> blocks = NewBlock();
      replica_.raw_answer = "";
      replica_.raw_exit = exit;
      auto r = shipper.Execute(NextStep(blocks), 1);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), code) << r.status();
      EXPECT_THAT(std::string(r.status().message()),
                  ::testing::HasSubstr(absl::StrCat("(exit ", exit, "): ")));
      replica_.raw_answer.reset();
      replica_.raw_exit = 0;
    }
  }
}

TEST_F(BlockShipperSessionTest, AMalformedVerdictOfAFailedCommandSaysSo) {
  BlockShipper shipper = Shipper(/*receive_session=*/false);
  std::vector<BlockInfo> blocks = NewBlock();
  replica_.raw_answer = "[1]\n";
  replica_.raw_exit = 2;
  auto r = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Label(r.status()), "refused") << r.status();
  EXPECT_EQ(RefusalOf(r.status()), std::nullopt) << "no verdict, no typed refusal";
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("is no verdict"));
}

TEST_F(BlockShipperSessionTest, AVerdictThatContradictsTheExitCodeIsRefused) {
  BlockShipper shipper = Shipper(/*receive_session=*/false);
  std::vector<BlockInfo> blocks = NewBlock();
  ReceiveVerdict v;
  v.block = blocks.back().name;
  replica_.raw_answer = WriteReceiveVerdict(v) + "\n";  // received, but exit 3
  replica_.raw_exit = 3;
  auto r = shipper.Execute(NextStep(blocks), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("but it exited with 3"));
  EXPECT_EQ(RefusalOf(r.status()), std::nullopt);
}

TEST_F(BlockShipperSessionTest, TheVerdictsFiguresReachTheResult) {
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  auto r = shipper.Execute(NextStep(blocks), 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->events_verified, 1u);
  EXPECT_EQ(r->phases.replica_verify, 0.5);
}

TEST_F(BlockShipperSessionTest, AParentNotHeldIsRefusedWithItsTypedRefusal) {
  for (bool session : {true, false}) {
    SCOPED_TRACE(session ? "session" : "one command");
    BlockShipper shipper = Shipper(session);
    ShipNewBlock(shipper);
    std::vector<BlockInfo> blocks = NewBlock();
    replica_.not_held.insert(shipped_->name);
    auto refused = shipper.Execute(NextStep(blocks), 1);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(Label(refused.status()), "refused") << refused.status();
    EXPECT_EQ(RefusalOf(refused.status()), ReceiveRefusal::kParentNotHeld) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                ::testing::HasSubstr("refused parent_not_held"));
    EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("is not held here"));
    // The driver plans a full send next (replica_driver_test); the shipper executes it.
    auto full = shipper.Execute(SendStep{blocks.back(), std::nullopt}, 1);
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_FALSE(full->parent.has_value());
    EXPECT_EQ(OptionValue(replica_.requests.back(), "--parent"), "");
    replica_.not_held.clear();
    shipped_.reset();
  }
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
