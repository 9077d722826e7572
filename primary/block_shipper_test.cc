#include "primary/block_shipper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/ledger/block_maker.h"
#include "common/base/byte_stream.h"
#include "common/ledger/event_log.h"
#include "common/testing/memory_btrfs.h"
#include "common/ops/metrics.h"
#include "common/transport/receive_session.h"
#include "common/testing/temp_dir.h"

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
  bool refuses_sessions = false;        // a receive command from before sessions
  std::set<std::string> not_verifying;  // blocks refused with exit 3
  std::string verdict_names;            // when set, every verdict names this block instead
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

// One receive command on the fake replica: with `session`, it reads request lines and framed
// streams (common/transport/receive_session.h) and answers each block with a verdict line; otherwise it
// takes one block, whose options are in its command line, and answers when its stdin ends.
class FakeReceiveCommand : public RemoteCommand {
 public:
  FakeReceiveCommand(FakeReplica& replica, bool session, std::string options)
      : replica_(replica), session_(session), options_(std::move(options)) {
    ++replica_.live_commands;
    if (session_ && replica_.refuses_sessions)
      End(2, "snapledger-receive: refused command: The following argument was not expected: "
             "--session\n");
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
  absl::StatusOr<std::optional<std::string>> ReadLine(size_t) override {
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
    std::optional<std::string> verdict = Answer(**request);
    if (verdict && ++verdicts_ == replica_.session_ends_after) ended_ = true;
    return verdict;
  }
  bool Open() override { return !ended_ && !eof_; }
  absl::StatusOr<RemoteExit> Wait() override {
    eof_ = true;
    if (!session_ && !ended_) {
      RemoteExit exit;
      if (std::optional<std::string> verdict = Answer(options_)) {
        exit.exit_status = 0;
        exit.stdout_text = *verdict + "\n";
        return exit;
      }
    }
    if (!ended_) End(0, "");
    return exit_;
  }
  uint64_t bytes_written() const override { return written_; }

 private:
  // The verdict line for a block asked for with `request`, or nullopt when it is refused.
  std::optional<std::string> Answer(const std::string& request) {
    replica_.requests.push_back(request);
    const std::string block = OptionValue(request, "--block");
    if (replica_.not_verifying.contains(block)) {
      End(3, absl::StrCat("snapledger-receive: receive ", block, " refused: does not verify\n"));
      return std::nullopt;
    }
    const std::string named = replica_.verdict_names.empty() ? block : replica_.verdict_names;
    return absl::StrCat("{\"block\":\"", named, "\",\"events_verified\":1}");
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
  RemoteExit exit_;
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

TEST_F(BlockShipperSessionTest, AReplicaThatRefusesSessionsGetsOneCommandPerBlock) {
  replica_.refuses_sessions = true;
  BlockShipper shipper = Shipper();
  std::vector<BlockInfo> blocks = NewBlock();
  auto refused = shipper.ShipOnce(blocks, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ShipFailureReason(refused.status()), "refused");
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("one block per command from now on"));
  EXPECT_THAT(std::string(refused.status().message()), ::testing::Not(::testing::EndsWith("\n")));
  auto first = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ShipNewBlock(shipper);
  ASSERT_EQ(replica_.commands.size(), 3u);
  EXPECT_EQ(replica_.commands[0], "snapledger-receive --session");
  for (size_t i = 1; i < 3; ++i)
    EXPECT_THAT(replica_.commands[i], ::testing::StartsWith("snapledger-receive --block "));
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
