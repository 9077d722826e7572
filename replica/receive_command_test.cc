#include "replica/receive_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/byte_stream.h"
#include "common/base/clock.h"
#include "common/ledger/block.h"
#include "common/ledger/head_file.h"
#include "common/testing/block_ledger.h"
#include "common/testing/manual_clock.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/temp_dir.h"
#include "common/transport/receive_protocol.h"
#include "common/transport/receive_session.h"
#include "replica/receive_journal.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

constexpr char kOptions[] =
    " --block block-000000000009-0123456789ab --parent block-000000000004-aaaaaaaaaaaa"
    " --epoch 3 --head-seq 9 --head-hash "
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef --compress zstd";

TEST(ParseOriginalCommand, TakesTheTransferArgumentsAfterTheProgram) {
  for (const char* program : {"snapledger-receive", "/usr/bin/snapledger-receive"}) {
    TransferArgs t;
    std::string error;
    ASSERT_TRUE(ParseOriginalCommand(std::string(program) + kOptions, t, &error))
        << program << ": " << error;
    EXPECT_EQ(t.block, "block-000000000009-0123456789ab");
    EXPECT_EQ(t.parent, "block-000000000004-aaaaaaaaaaaa");
    EXPECT_EQ(t.epoch, 3u);
    EXPECT_EQ(t.head_seq, 9u);
    EXPECT_EQ(t.head_hash, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    EXPECT_EQ(t.compress, "zstd");
  }
}

TEST(ParseOriginalCommand, RefusesAnyOtherProgram) {
  for (const char* command :
       {"", "sh -c id", "btrfs receive /", "snapledger-replica serve", "snapledger-replica",
        "evil-snapledger-receive --block x", "snapledger-receive-evil --epoch 1",
        "snapledger-replica receive --session", "receive --session"}) {
    TransferArgs t;
    std::string error;
    EXPECT_FALSE(ParseOriginalCommand(command, t, &error)) << command;
    EXPECT_THAT(error, HasSubstr("may only run `snapledger-receive`")) << command;
  }
}

TEST(ParseOriginalCommand, RefusesOptionsItDoesNotKnow) {
  // The root comes from the forced command only; anything else is refused, not ignored.
  for (const char* command :
       {"snapledger-receive --root /tmp --block block-000000000009-0123456789ab",
        "snapledger-receive --block block-000000000009-0123456789ab ; id",
        "snapledger-receive extra-argument"}) {
    TransferArgs t;
    std::string error;
    EXPECT_FALSE(ParseOriginalCommand(command, t, &error)) << command;
    EXPECT_FALSE(error.empty()) << command;
  }
}

TEST(ParseOriginalCommand, TakesASessionWithoutTransferArguments) {
  TransferArgs t;
  std::string error;
  ASSERT_TRUE(ParseOriginalCommand("/usr/bin/snapledger-receive --session", t, &error)) << error;
  EXPECT_TRUE(t.session);
  EXPECT_TRUE(t.block.empty());

  // A session's blocks are named on stdin, one request each; not on the command line.
  TransferArgs both;
  EXPECT_FALSE(
      ParseOriginalCommand(std::string("snapledger-receive --session") + kOptions, both, &error));
  EXPECT_THAT(error, HasSubstr("not on the command line"));
}

TEST(ParseRequestLine, TakesTheTransferOptionsAlone) {
  TransferArgs t;
  std::string error;
  ASSERT_TRUE(ParseRequestLine(kOptions, t, &error)) << error;
  EXPECT_EQ(t.block, "block-000000000009-0123456789ab");
  EXPECT_EQ(t.parent, "block-000000000004-aaaaaaaaaaaa");
  EXPECT_EQ(t.epoch, 3u);
  EXPECT_EQ(t.head_seq, 9u);
  EXPECT_EQ(t.compress, "zstd");
  EXPECT_FALSE(t.session);
}

TEST(ParseRequestLine, RefusesAProgramASessionOrUnknownOptions) {
  for (const char* line : {"snapledger-receive --block block-000000000009-0123456789ab",
                           "--session", "--block block-000000000009-0123456789ab --session",
                           "--root /tmp --block block-000000000009-0123456789ab",
                           "--block block-000000000009-0123456789ab ; id"}) {
    TransferArgs t;
    std::string error;
    EXPECT_FALSE(ParseRequestLine(line, t, &error)) << line;
    EXPECT_FALSE(error.empty()) << line;
  }
}

// --- The command through its injected environment: an in-memory btrfs, in-memory stdin,
// stdout and stderr, a manual clock ---

// A primary ledger and an empty replica root, each on its own in-memory btrfs (a delta finds
// its parent on the replica by received_uuid), and the receive command run on the replica.
class ReceiveCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ledger = testing::BlockLedger::Create(primary_btrfs_, primary_.path());
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    primary_ledger_ = std::move(*ledger);
  }

  BlockInfo Cut(int events) { return primary_ledger_->Cut(events); }

  // `block`'s stream, a delta from `parent` when given.
  std::string Stream(const BlockInfo& block, const std::optional<BlockInfo>& parent = {}) {
    return primary_ledger_->Stream(block, parent);
  }

  // The transfer options a shipper sends for `block` (from `parent`).
  std::string Options(const BlockInfo& block, const std::optional<BlockInfo>& parent = {}) {
    auto head = ReadHeadFile(LedgerLayout(primary_.path()).block(block));
    EXPECT_TRUE(head.ok() && head->has_value());
    std::string r = absl::StrCat("--block ", block.name, " --epoch 1 --head-seq ",
                                 (*head)->head.seq, " --head-hash ", (*head)->head.hash);
    if (parent) absl::StrAppend(&r, " --parent ", parent->name);
    return r;
  }

  // One block of a session's input: its request line and its framed stream.
  std::string SessionBlock(const std::string& request, const std::string& stream) {
    StringSink out;
    EXPECT_TRUE(out.Write(request + "\n").ok());
    FrameSink frames(out);
    EXPECT_TRUE(frames.Write(stream).ok());
    EXPECT_TRUE(frames.Close().ok());
    return out.data();
  }

  // Runs `snapledger-receive --root <replica> <args>` with `input` on stdin; returns its exit
  // code (its stdout and stderr in out_ and err_).
  int Run(std::vector<std::string> args, std::string input,
          std::optional<std::string> original_command = std::nullopt) {
    std::vector<std::string> words = {"snapledger-receive", "--root", replica_.path()};
    words.insert(words.end(), args.begin(), args.end());
    std::vector<const char*> argv;
    for (const std::string& w : words) argv.push_back(w.c_str());
    StringSource in(std::move(input));
    out_.str("");
    err_.str("");
    ReceiveEnv env{&replica_btrfs_,  &clock_, &in, &out_, &err_, std::move(original_command),
                   program_replaced_};
    return RunReceiveCommand(static_cast<int>(argv.size()), argv.data(), env);
  }

  // The verdict lines on stdout, parsed (each must parse).
  std::vector<ReceiveVerdict> Verdicts() {
    std::vector<ReceiveVerdict> verdicts;
    const std::string text = out_.str();
    EXPECT_TRUE(text.empty() || text.back() == '\n') << text;
    for (const std::string& line :
         std::vector<std::string>(absl::StrSplit(text, '\n', absl::SkipEmpty()))) {
      absl::StatusOr<ReceiveVerdict> v = ParseReceiveVerdict(line);
      EXPECT_TRUE(v.ok()) << v.status() << ": " << line;
      if (v.ok()) verdicts.push_back(*v);
    }
    return verdicts;
  }

  // The one verdict on stdout, a failure `exit` (with `refusal` when refused).
  void ExpectFailure(ReceiveExit exit, std::optional<ReceiveRefusal> refusal = std::nullopt) {
    std::vector<ReceiveVerdict> v = Verdicts();
    ASSERT_EQ(v.size(), 1u) << out_.str();
    EXPECT_EQ(v[0].verdict, exit) << out_.str();
    EXPECT_EQ(v[0].refusal, refusal) << out_.str();
    EXPECT_FALSE(v[0].error.empty());
    EXPECT_THAT(err_.str(), HasSubstr(v[0].error)) << "stderr says it for people too";
  }

  std::vector<std::string> ReplicaBlocks() {
    std::vector<std::string> names;
    auto blocks = ListBlocks(replica_btrfs_, LedgerLayout(replica_.path()));
    if (!blocks.ok()) return names;
    for (const BlockInfo& b : *blocks) names.push_back(b.name);
    return names;
  }

  static std::vector<std::string> Words(const std::string& options) {
    return absl::StrSplit(options, ' ', absl::SkipEmpty());
  }

  testing::TempDir primary_, replica_;
  MemoryBtrfs primary_btrfs_, replica_btrfs_;
  ManualClock clock_;
  std::ostringstream out_, err_;
  std::function<std::optional<std::string>()> program_replaced_;
  testing::BlockLedgerPtr primary_ledger_;
};

TEST_F(ReceiveCommandTest, ASessionAnswersEachOfTwoBlocks) {
  BlockInfo first = Cut(3);
  BlockInfo second = Cut(2);
  const std::string input = SessionBlock(Options(first), Stream(first)) +
                            SessionBlock(Options(second, first), Stream(second, first));
  EXPECT_EQ(Run({"--session"}, input), 0) << err_.str();
  std::vector<ReceiveVerdict> v = Verdicts();
  ASSERT_EQ(v.size(), 2u) << out_.str();
  EXPECT_TRUE(v[0].received());
  EXPECT_EQ(v[0].block, first.name);
  EXPECT_EQ(v[0].events_verified, 3u);
  EXPECT_TRUE(v[1].received());
  EXPECT_EQ(v[1].block, second.name);
  EXPECT_EQ(v[1].seq, 5u);
  EXPECT_EQ(v[1].events_verified, 2u);
  EXPECT_FALSE(v[1].already_held);
  EXPECT_THAT(ReplicaBlocks(), ::testing::ElementsAre(first.name, second.name));
}

TEST_F(ReceiveCommandTest, EveryBlockOfASessionIsJournaled) {
  BlockInfo first = Cut(1);
  ReceiveJournalReader journal(replica_.path());
  const std::string input = SessionBlock(Options(first), Stream(first)) +
                            SessionBlock("--block ../x --epoch 1", Stream(first));
  EXPECT_EQ(Run({"--session"}, input), 2);
  std::vector<ReceiveOutcome> outcomes = journal.ReadNew();
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_TRUE(outcomes[0].ok);
  EXPECT_EQ(outcomes[0].block, first.name);
  EXPECT_FALSE(outcomes[1].ok);
  EXPECT_EQ(outcomes[1].block, "../x");
  EXPECT_EQ(outcomes[1].reason, "refused");
}

TEST_F(ReceiveCommandTest, ABlockAlreadyHeldIsAcknowledgedAndTheSessionGoesOn) {
  BlockInfo first = Cut(2);
  BlockInfo second = Cut(2);
  const std::string input = SessionBlock(Options(first), Stream(first)) +
                            SessionBlock(Options(first), Stream(first)) +
                            SessionBlock(Options(second, first), Stream(second, first));
  EXPECT_EQ(Run({"--session"}, input), 0) << err_.str();
  std::vector<ReceiveVerdict> v = Verdicts();
  ASSERT_EQ(v.size(), 3u) << out_.str();
  EXPECT_TRUE(v[1].already_held);
  EXPECT_EQ(v[2].block, second.name);
}

TEST_F(ReceiveCommandTest, ARequestLineCutByTheEndOfInputIsAFailedTransfer) {
  BlockInfo first = Cut(1);
  EXPECT_EQ(Run({"--session"}, Options(first)), 1);
  ExpectFailure(ReceiveExit::kTransferFailed);
  EXPECT_THAT(err_.str(), HasSubstr("inside a request line"));
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, AnOverlongRequestLineIsRefused) {
  EXPECT_EQ(Run({"--session"}, std::string(kMaxRequestLine + 1, 'x') + "\n"), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kBadRequest);
  EXPECT_THAT(err_.str(), HasSubstr("is longer than"));
}

TEST_F(ReceiveCommandTest, ARequestWithUnknownOptionsIsRefused) {
  BlockInfo first = Cut(1);
  EXPECT_EQ(Run({"--session"}, SessionBlock("--root /tmp " + Options(first), Stream(first))), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kBadRequest);
  EXPECT_THAT(err_.str(), HasSubstr("refused request"));
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, ABlockNameWithPathTricksIsRefused) {
  BlockInfo first = Cut(1);
  EXPECT_EQ(Run({"--session"}, SessionBlock("--block ../../etc --epoch 1", Stream(first))), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kBadRequest);
  EXPECT_EQ(Verdicts()[0].block, "../../etc");
}

TEST_F(ReceiveCommandTest, ADeltaWhoseParentIsNotHeldIsRefusedAsParentNotHeld) {
  BlockInfo first = Cut(2);
  BlockInfo second = Cut(2);
  EXPECT_EQ(Run({"--session"}, SessionBlock(Options(second, first), Stream(second, first))), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kParentNotHeld);
  EXPECT_EQ(Verdicts()[0].block, second.name);
  EXPECT_THAT(Verdicts()[0].error, HasSubstr("is not held here"));
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, AnOlderBlockThanOneHeldIsRefusedAsNewerBlockHeld) {
  BlockInfo first = Cut(2);
  BlockInfo second = Cut(2);
  ASSERT_EQ(Run({"--session"}, SessionBlock(Options(second), Stream(second))), 0) << err_.str();
  EXPECT_EQ(Run({"--session"}, SessionBlock(Options(first), Stream(first))), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kNewerBlockHeld);
}

TEST_F(ReceiveCommandTest, AFrameLongerThanAllowedIsAFailedTransfer) {
  BlockInfo first = Cut(1);
  const uint32_t n = kMaxFrame + 1;
  const char header[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                          static_cast<char>(n >> 8), static_cast<char>(n)};
  EXPECT_EQ(Run({"--session"}, Options(first) + "\n" + std::string(header, 4) + "xyz"), 1);
  ExpectFailure(ReceiveExit::kTransferFailed);
  EXPECT_THAT(err_.str(), HasSubstr("more than the"));
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, InputEndingInsideAFrameIsAFailedTransfer) {
  BlockInfo first = Cut(1);
  std::string block = SessionBlock(Options(first), Stream(first));
  EXPECT_EQ(Run({"--session"}, block.substr(0, block.size() - 10)), 1);
  ExpectFailure(ReceiveExit::kTransferFailed);
  EXPECT_THAT(err_.str(), HasSubstr("inside a frame"));
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, ABlockWhoseHeadIsNotTheAnnouncedOneDidNotVerify) {
  BlockInfo first = Cut(2);
  auto head = ReadHeadFile(LedgerLayout(primary_.path()).block(first));
  ASSERT_TRUE(head.ok() && head->has_value());
  const std::string other = (*head)->head.hash.substr(0, 12) + std::string(52, '0');
  const std::string options = absl::StrCat("--block ", first.name, " --epoch 1 --head-seq ",
                                           (*head)->head.seq, " --head-hash ", other);
  EXPECT_EQ(Run({"--session"}, SessionBlock(options, Stream(first))), 3);
  ExpectFailure(ReceiveExit::kNotVerified);
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, ASessionEndsAfterTheVerdictOnceItsProgramWasReplaced) {
  BlockInfo first = Cut(1);
  BlockInfo second = Cut(1);
  program_replaced_ = [] { return std::optional<std::string>("/usr/bin/snapledger-receive"); };
  const std::string input = SessionBlock(Options(first), Stream(first)) +
                            SessionBlock(Options(second, first), Stream(second, first));
  EXPECT_EQ(Run({"--session"}, input), 0) << err_.str();
  std::vector<ReceiveVerdict> v = Verdicts();
  ASSERT_EQ(v.size(), 1u) << "the block in progress is answered, the next is not read";
  EXPECT_EQ(v[0].block, first.name);
  EXPECT_THAT(err_.str(), HasSubstr("/usr/bin/snapledger-receive was replaced"));
  EXPECT_THAT(ReplicaBlocks(), ::testing::ElementsAre(first.name));
}

TEST_F(ReceiveCommandTest, OneBlockOnTheCommandLineIsAnsweredWithItsVerdict) {
  BlockInfo first = Cut(4);
  EXPECT_EQ(Run(Words(Options(first)), Stream(first)), 0) << err_.str();
  std::vector<ReceiveVerdict> v = Verdicts();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_TRUE(v[0].received());
  EXPECT_EQ(v[0].events_verified, 4u);
  EXPECT_THAT(ReplicaBlocks(), ::testing::ElementsAre(first.name));
}

TEST_F(ReceiveCommandTest, AnUnknownCompressionIsRefused) {
  BlockInfo first = Cut(1);
  std::vector<std::string> args = Words(Options(first));
  args.insert(args.end(), {"--compress", "lz4"});
  EXPECT_EQ(Run(args, Stream(first)), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kBadRequest);
}

TEST_F(ReceiveCommandTest, AnUnknownOptionIsRefusedWithAVerdict) {
  EXPECT_EQ(Run({"--frobnicate"}, ""), 2);
  std::vector<ReceiveVerdict> v = Verdicts();
  ASSERT_EQ(v.size(), 1u) << out_.str();
  EXPECT_EQ(v[0].refusal, ReceiveRefusal::kBadRequest);
}

TEST_F(ReceiveCommandTest, TheForcedCommandTakesTheTransferArgumentsOfTheOriginalOne) {
  BlockInfo first = Cut(2);
  EXPECT_EQ(Run({}, Stream(first), "snapledger-receive " + Options(first)), 0) << err_.str();
  EXPECT_THAT(ReplicaBlocks(), ::testing::ElementsAre(first.name));
}

TEST_F(ReceiveCommandTest, AnotherProgramInTheOriginalCommandIsNotPermitted) {
  EXPECT_EQ(Run({}, "", "rm -rf /"), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kNotPermitted);
  EXPECT_THAT(err_.str(), HasSubstr("may only run"));
}

TEST_F(ReceiveCommandTest, BadOptionsInTheOriginalCommandAreABadRequest) {
  EXPECT_EQ(Run({}, "", "snapledger-receive --root /tmp"), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kBadRequest);
}

TEST_F(ReceiveCommandTest, AForcedCommandWithTransferArgumentsIsRefused) {
  BlockInfo first = Cut(1);
  EXPECT_EQ(Run(Words(Options(first)), Stream(first), "snapledger-receive --session"), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kForcedCommand);
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReceiveCommandTest, SessionWithTransferArgumentsIsABadRequest) {
  BlockInfo first = Cut(1);
  std::vector<std::string> args = Words(Options(first));
  args.push_back("--session");
  EXPECT_EQ(Run(args, ""), 2);
  ExpectFailure(ReceiveExit::kRefused, ReceiveRefusal::kBadRequest);
  EXPECT_THAT(err_.str(), HasSubstr("not on the command line"));
}

TEST_F(ReceiveCommandTest, EndOfInputBeforeAnyRequestEndsASessionCleanly) {
  EXPECT_EQ(Run({"--session"}, ""), 0);
  EXPECT_EQ(out_.str(), "");
}

}  // namespace
}  // namespace snapledger
