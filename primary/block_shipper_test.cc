#include "primary/block_shipper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/byte_stream.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"
#include "common/ops/metrics.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/temp_dir.h"
#include "common/transport/receive_protocol.h"
#include "common/transport/receive_session.h"

namespace snapledger {
namespace {

TEST(ShipFailureReason, EachFailureClassHasItsLabel) {
  EXPECT_EQ(ShipFailureReason(absl::DeadlineExceededError("no bytes moved")), "watchdog");
  EXPECT_EQ(ShipFailureReason(absl::PermissionDeniedError("host key")), "trust");
  EXPECT_EQ(ShipFailureReason(absl::UnauthenticatedError("auth")), "trust");
  EXPECT_EQ(ShipFailureReason(absl::FailedPreconditionError("diverged")), "conflict");
  EXPECT_EQ(ShipFailureReason(absl::DataLossError("did not verify")), "verification");
  EXPECT_EQ(ShipFailureReason(absl::AbortedError("exit 1")), "refused");
  EXPECT_EQ(ShipFailureReason(absl::UnavailableError("connect")), "network");
  EXPECT_EQ(ShipFailureReason(absl::InternalError("btrfs send exited 1")), "local");
  EXPECT_EQ(ShipFailureReason(absl::NotFoundError("btrfs not installed")), "local");
  EXPECT_EQ(ShipFailureReason(absl::OkStatus()), "local");
}

TEST(ShipFailureReason, EveryLabelIsAMetricsReason) {
  for (int code = 0; code <= 16; ++code) {
    std::string_view reason =
        ShipFailureReason(absl::Status(static_cast<absl::StatusCode>(code), "x"));
    EXPECT_NE(
        std::find(kReplicationFailureReasons.begin(), kReplicationFailureReasons.end(), reason),
        kReplicationFailureReasons.end())
        << "code " << code << " -> " << reason;
  }
}

// --- In-memory doubles of the replica's side of SSH, for the shipper's receive sessions ---

// What the fake replica does, and what it saw.
struct FakeReplica {
  int session_ends_after = -1;          // verdicts a session gives before it ends (-1: never)
  std::set<std::string> not_verifying;  // blocks refused with exit 3
  std::set<std::string> lost;           // blocks it does not hold as a delta's parent
  std::string verdict_names;            // when set, every verdict names this block instead
  // When set, every block is answered with this stdout line (no '\n' added) and exit status.
  std::optional<std::string> raw_answer;
  int raw_exit = 0;
  std::vector<std::string> commands;    // every command line exec'ed
  std::vector<std::string> requests;    // every block asked for: a session's request lines,
                                        // or a one-block command's options
  int live_commands = 0;                // commands whose channel the primary still holds
};

// The value following `option` in a request line ("" when absent).
std::string OptionValue(const std::string& line, std::string_view option) {
  std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  for (size_t i = 0; i + 1 < words.size(); ++i)
    if (words[i] == option) return words[i + 1];
  return "";
}

RemoteExit Exited(int status) {
  RemoteExit exit;
  exit.exit_status = status;
  return exit;
}

// One receive command on the fake replica: with `session`, it reads request lines and framed
// streams (common/transport/receive_session.h) and answers each block with a verdict line
// (common/transport/receive_protocol.h); otherwise it takes one block, whose options are in its
// command line, and answers when its stdin ends. A failed block's verdict ends the command with
// the verdict's exit code, as the real command does.
class FakeReceiveCommand : public RemoteCommand {
 public:
  FakeReceiveCommand(FakeReplica& replica, bool session, std::string options)
      : replica_(replica), session_(session), options_(std::move(options)) {
    ++replica_.live_commands;
  }

  ~FakeReceiveCommand() override { --replica_.live_commands; }

  absl::Status Write(std::string_view data) override {
    if (ended_ || eof_) return absl::UnavailableError("fake channel: the command has ended");
    input_.append(data);
    written_ += data.size();
    return absl::OkStatus();
  }
  absl::Status Close() override {
    eof_ = true;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> ReadLine(size_t max) override {
    if (!session_ || ended_) return std::nullopt;
    // Everything of the block has been written by now: the shipper reads the verdict after
    // the stream's end marker.
    StringSource in(input_.substr(consumed_));
    SessionReader reader(in, "fake stdin");
    absl::StatusOr<std::optional<std::string>> request = reader.ReadRequest();
    if (!request.ok() || !request->has_value()) return End(1, "no request\n");
    char buf[4096];
    while (true) {
      absl::StatusOr<size_t> n = reader.Stream().Read(buf, sizeof buf);
      if (!n.ok()) return End(1, absl::StrCat(n.status().message(), "\n"));
      if (*n == 0) break;
    }
    if (!reader.StreamEnded()) return End(1, "stream not ended\n");
    consumed_ = input_.size();  // one block at a time: all that was written was this block
    std::string verdict = Answer(**request);
    const size_t line_end = verdict.find('\n');
    if (line_end == std::string::npos) {  // a line cut short: stdout ends inside it
      End(exit_.exit_status, exit_.stderr_text);
      exit_.stdout_text = verdict;
      return std::nullopt;
    }
    std::string line = verdict.substr(0, line_end);
    if (line.size() > max) return absl::DataLossError("fake stdout: the line is too long");
    if (++verdicts_ == replica_.session_ends_after) ended_ = true;
    return line;
  }
  bool Open() override { return !ended_ && !eof_; }
  absl::StatusOr<RemoteExit> Wait() override {
    eof_ = true;
    if (!session_ && !ended_) {
      RemoteExit exit;
      exit.stdout_text = Answer(options_);
      exit.exit_status = exit_.exit_status;
      exit.stderr_text = exit_.stderr_text;
      ended_ = true;
      return exit;
    }
    ended_ = true;
    return exit_;
  }
  uint64_t bytes_written() const override { return written_; }

 private:
  // What the command writes on stdout for the block asked for with `request`; a failure also
  // ends the command (exit_).
  std::string Answer(const std::string& request) {
    replica_.requests.push_back(request);
    const std::string block = OptionValue(request, "--block");
    const std::string parent = OptionValue(request, "--parent");
    if (replica_.raw_answer) {
      if (replica_.raw_exit != 0) End(replica_.raw_exit, "snapledger-receive: raw answer\n");
      return *replica_.raw_answer;
    }
    if (replica_.not_verifying.contains(block)) {
      const std::string why = absl::StrCat("block ", block, " does not verify");
      End(3, absl::StrCat("snapledger-receive: receive ", block, " refused: ", why, "\n"));
      return WriteReceiveVerdict(FailedVerdict(ReceiveExit::kNotVerified, block, why)) + "\n";
    }
    if (!parent.empty() && replica_.lost.contains(parent)) {
      const std::string why = absl::StrCat("parent ", parent, " is not held here");
      End(2, absl::StrCat("snapledger-receive: receive ", block, " refused: ", why, "\n"));
      return WriteReceiveVerdict(
                 FailedVerdict(ReceiveExit::kRefused, block, why, ReceiveRefusal::kParentNotHeld)) +
             "\n";
    }
    ReceiveVerdict v;
    v.block = replica_.verdict_names.empty() ? block : replica_.verdict_names;
    v.events_verified = 1;
    v.seconds.verify = 0.5;
    return WriteReceiveVerdict(v) + "\n";
  }
  std::nullopt_t End(int status, std::string stderr_text) {
    ended_ = true;
    exit_.exit_status = status;
    exit_.stderr_text = std::move(stderr_text);
    return std::nullopt;
  }

  FakeReplica& replica_;
  const bool session_;
  const std::string options_;
  std::string input_;
  size_t consumed_ = 0;
  uint64_t written_ = 0;
  int verdicts_ = 0;
  bool ended_ = false, eof_ = false;
  RemoteExit exit_ = Exited(0);
};

class FakeSession : public SshSession {
 public:
  explicit FakeSession(FakeReplica& replica) : replica_(replica) {}
  absl::StatusOr<RemoteCommandPtr> Exec(const std::string& command) override {
    replica_.commands.push_back(command);
    const std::string_view program = "snapledger-receive";
    if (!command.starts_with(program))
      return absl::InternalError(absl::StrCat("unexpected command ", command));
    std::string rest = command.substr(program.size());
    const bool session = absl::StripAsciiWhitespace(rest) == "--session";
    return std::make_unique<FakeReceiveCommand>(replica_, session, rest);
  }
  bool Connected() const override { return true; }

 private:
  FakeReplica& replica_;
};

class FakeTransport : public SshTransport {
 public:
  explicit FakeTransport(FakeReplica& replica) : replica_(replica) {}
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint&) override {
    ++connects;
    return std::make_unique<FakeSession>(replica_);
  }
  int connects = 0;

 private:
  FakeReplica& replica_;
};

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

  // Ships the newest block, which must succeed.
  void ShipNewBlock(BlockShipper& shipper) {
    std::vector<BlockInfo> blocks = NewBlock();
    auto r = shipper.ShipOnce(blocks, 1);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->has_value());
    EXPECT_EQ((*r)->block, blocks.back());
  }

  testing::TempDir dir_;
  MemoryBtrfs btrfs_;
  FakeReplica replica_;
  FakeTransport transport_{replica_};
  EventLogPtr log_;
  BlockMakerPtr maker_;
  int next_ = 0;
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
  auto refused = shipper.ShipOnce(blocks, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ShipFailureReason(refused.status()), "verification") << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("does not verify"));
  replica_.not_verifying.clear();
  auto again = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 2u) << "a new session after the failed one";
  EXPECT_EQ(transport_.connects, 1) << "the SSH session itself is kept";
}

TEST_F(BlockShipperSessionTest, AVerdictForAnotherBlockIsDataLossAndEndsTheSession) {
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  replica_.verdict_names = "block-000000000099-0123456789ab";
  auto r = shipper.ShipOnce(blocks, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("without confirming"));
  EXPECT_TRUE(shipper.view().verified_blocks.empty());
  replica_.verdict_names.clear();
  ASSERT_TRUE(shipper.ShipOnce(blocks, 1).ok());
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
      auto r = shipper.ShipOnce(blocks, 1);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
      EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("without confirming"));
      EXPECT_TRUE(shipper.view().verified_blocks.empty());
      replica_.raw_answer.reset();
      auto again = shipper.ShipOnce(blocks, 1);
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
    auto r = shipper.ShipOnce(blocks, 1);
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
    auto r = shipper.ShipOnce(blocks, 1);
    ASSERT_FALSE(r.ok());
    // On a session the line is refused as it is read (the command misbehaves: "refused");
    // from a one-block command's output, as no verdict.
    EXPECT_EQ(r.status().code(), session ? absl::StatusCode::kAborted : absl::StatusCode::kDataLoss)
        << r.status();
    EXPECT_TRUE(shipper.view().verified_blocks.empty());
    replica_.raw_answer.reset();
  }
}

TEST_F(BlockShipperSessionTest, OutputAfterTheVerdictLineIsAFailedTransfer) {
  BlockShipper shipper = Shipper(/*receive_session=*/false);
  std::vector<BlockInfo> blocks = NewBlock();
  ReceiveVerdict v;
  v.block = blocks.back().name;
  replica_.raw_answer = WriteReceiveVerdict(v) + "\nmore\n";
  auto r = shipper.ShipOnce(blocks, 1);
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
      auto r = shipper.ShipOnce(blocks, 1);
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
  auto r = shipper.ShipOnce(blocks, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ShipFailureReason(r.status()), "refused") << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("is no verdict"));
}

TEST_F(BlockShipperSessionTest, AVerdictThatContradictsTheExitCodeIsRefused) {
  BlockShipper shipper = Shipper(/*receive_session=*/false);
  std::vector<BlockInfo> blocks = NewBlock();
  ReceiveVerdict v;
  v.block = blocks.back().name;
  replica_.raw_answer = WriteReceiveVerdict(v) + "\n";  // received, but exit 3
  replica_.raw_exit = 3;
  auto r = shipper.ShipOnce(blocks, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("but it exited with 3"));
  EXPECT_TRUE(shipper.view().verified_blocks.empty());
}

TEST_F(BlockShipperSessionTest, AParentNotHeldIsForgottenAndTheNextPlanSendsInFull) {
  for (bool session : {true, false}) {
    SCOPED_TRACE(session ? "session" : "one command");
    BlockShipper shipper = Shipper(session);
    std::vector<BlockInfo> blocks = NewBlock();
    shipper.SetView(ReplicaView{"r1", {blocks.back().name}});
    replica_.lost.insert(blocks.back().name);
    blocks = NewBlock();
    auto refused = shipper.ShipOnce(blocks, 1);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(ShipFailureReason(refused.status()), "refused") << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                ::testing::HasSubstr("refused parent_not_held"));
    EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("is not held here"));
    EXPECT_TRUE(shipper.view().verified_blocks.empty()) << "the lost parent is forgotten";
    auto full = shipper.ShipOnce(blocks, 1);
    ASSERT_TRUE(full.ok()) << full.status();
    ASSERT_TRUE(full->has_value());
    EXPECT_FALSE((*full)->parent.has_value());
    EXPECT_EQ(OptionValue(replica_.requests.back(), "--parent"), "");
    replica_.lost.clear();
  }
}

TEST_F(BlockShipperSessionTest, TheVerdictsFiguresReachTheResult) {
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  auto r = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->events_verified, 1u);
  EXPECT_EQ((*r)->phases.replica_verify, 0.5);
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
