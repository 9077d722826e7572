// The replica's receive command on real btrfs: a primary ledger on one loop-mounted
// filesystem, a replica on another, `btrfs send [-p]` streamed into the real
// `snapledger-receive` binary. Blocks are promoted only when they verify; anything
// else leaves the replica on its last verified block with nothing half-received.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/byte_stream.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"
#include "common/base/status_macros.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"
#include "common/ledger/head_file.h"
#include "common/testing/temp_dir.h"
#include "common/transport/receive_protocol.h"
#include "common/transport/receive_session.h"
#include "common/transport/zstd_stream.h"
#include "tests/integration/loop_btrfs.h"
#include "tests/integration/primary_ledger.h"

#ifndef SNAPLEDGER_RECEIVE_BIN
#error "SNAPLEDGER_RECEIVE_BIN must name the snapledger-receive binary"
#endif

namespace snapledger {
namespace {

using ::testing::HasSubstr;

struct Outcome {
  ExitStatus exit;
  std::string out, err;
};

// `snapledger-receive --session`, driven the way the primary's shipper drives it: per block,
// a request line and the framed stream on stdin, then the verdict line read from stdout.
class ReceiveSession {
 public:
  explicit ReceiveSession(const std::string& root,
                          const std::string& program = SNAPLEDGER_RECEIVE_BIN) {
    ProcessSpec spec;
    spec.argv = {program, "--root", root, "--session"};
    spec.stdin_spec = StdioSpec::Pipe();
    spec.stdout_spec = StdioSpec::Pipe();
    auto child = ProcessRunner::Real()->Start(spec);
    EXPECT_TRUE(child.ok()) << child.status();
    child_ = std::move(*child);
    stdin_ = std::make_unique<FdSink>(child_->TakeStdin(), "session stdin");
    stdout_ = std::make_unique<FdSource>(child_->TakeStdout(), "session stdout");
  }

  // Writes `request` and the framed `btrfs send` stream of `block` (from `parent`), through
  // zstd when `zstd`. False when the command stopped reading.
  bool Send(Btrfs& btrfs, const std::string& request, const std::string& block,
            const std::optional<std::string>& parent, bool zstd = false) {
    if (!stdin_->Write(request + "\n").ok()) return false;
    FrameSink frames(*stdin_);
    if (zstd) {
      auto compress = ZstdCompressSink::Create(frames, ZstdOptions{});
      if (!compress.ok() || !btrfs.Send(block, parent, **compress).ok()) return false;
      if (!(*compress)->Finish().ok()) return false;
    } else if (!btrfs.Send(block, parent, frames).ok()) {
      return false;
    }
    return frames.Close().ok();
  }

  // Writes `request`, then one frame header announcing the whole stream of `block` (from
  // `parent`) but only its first `keep` bytes: the input then ends inside that frame.
  void SendCut(Btrfs& btrfs, const std::string& request, const std::string& block,
               const std::optional<std::string>& parent, size_t keep) {
    StringSink whole;
    ASSERT_TRUE(btrfs.Send(block, parent, whole).ok());
    ASSERT_GT(whole.data().size(), keep);
    const uint32_t n = static_cast<uint32_t>(whole.data().size());
    const char header[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                            static_cast<char>(n >> 8), static_cast<char>(n)};
    ASSERT_TRUE(stdin_->Write(request + "\n").ok());
    ASSERT_TRUE(stdin_->Write(std::string_view(header, 4)).ok());
    ASSERT_TRUE(stdin_->Write(std::string_view(whole.data()).substr(0, keep)).ok());
  }

  // The next verdict line; nullopt once stdout ended (the command exited), or when nothing
  // came for `patience` (a test failure).
  std::optional<std::string> Verdict(int patience_ms = 60'000) {
    while (true) {
      if (size_t nl = unread_.find('\n'); nl != std::string::npos) {
        std::string line = unread_.substr(0, nl);
        unread_.erase(0, nl + 1);
        return line;
      }
      pollfd p{stdout_->PassThroughFd(), POLLIN, 0};
      if (::poll(&p, 1, patience_ms) != 1) {
        ADD_FAILURE() << "the receive session wrote nothing for " << patience_ms << " ms";
        return std::nullopt;
      }
      char buf[4096];
      auto n = stdout_->Read(buf, sizeof buf);
      if (!n.ok() || *n == 0) return std::nullopt;
      unread_.append(buf, *n);
    }
  }

  // Closes stdin and waits for the command.
  Outcome Finish() {
    (void)stdin_->Close();
    auto exit = child_->Wait();
    EXPECT_TRUE(exit.ok()) << exit.status();
    return {*exit, unread_, child_->Stderr()};
  }

 private:
  ChildPtr child_;
  std::unique_ptr<FdSink> stdin_;
  std::unique_ptr<FdSource> stdout_;
  std::string unread_;
};

class ReplicaReceiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSIGN_LOOP_BTRFS_OR_SKIP(primary_fs_);
    ASSIGN_LOOP_BTRFS_OR_SKIP(replica_fs_);
    btrfs_ = Btrfs::Linux();
    auto primary = testing::CreatePrimaryLedger(*btrfs_, primary_fs_->mount_point());
    ASSERT_TRUE(primary.ok()) << primary.status();
    log_ = std::move(primary->log);
    maker_ = std::move(primary->maker);
  }

  void Append(int n) {
    std::vector<std::string> bodies;
    for (int i = 0; i < n; ++i) {
      const auto k = next_++;
      bodies.push_back(absl::StrCat("{\"event\":\"port_created\",\"n\":", k, ",\"port\":\"tap",
                                    k + 1, "\",\"vlan\":", (k + 1) % 4000, "}"));
    }
    ASSERT_TRUE(log_->AppendBatch(bodies).ok());
  }

  BlockInfo Cut() {
    auto b = maker_->Cut();
    EXPECT_TRUE(b.ok() && b->has_value()) << b.status();
    return **b;
  }

  std::string PrimaryBlock(const BlockInfo& b) {
    return LedgerLayout(primary_fs_->mount_point()).block(b);
  }
  std::string ReplicaRoot() { return replica_fs_->mount_point(); }

  // The request line a shipper writes for `block` (a delta from `parent` when given).
  std::string Request(const BlockInfo& block, const std::optional<BlockInfo>& parent) {
    HeadRecord head = **ReadHeadFile(PrimaryBlock(block));
    std::string r = absl::StrCat("--block ", block.name, " --epoch 1 --head-seq ", head.head.seq,
                                 " --head-hash ", head.head.hash);
    if (parent) absl::StrAppend(&r, " --parent ", parent->name);
    return r;
  }
  std::optional<std::string> PrimaryPath(const std::optional<BlockInfo>& b) {
    if (!b) return std::nullopt;
    return PrimaryBlock(*b);
  }

  // Streams `block` (as a delta from `parent` when given) into the real receive command.
  Outcome Ship(const BlockInfo& block, const std::optional<BlockInfo>& parent,
               std::vector<std::string> extra_args = {},
               std::optional<std::vector<std::string>> env = std::nullopt,
               bool transfer_args = true) {
    HeadRecord head = **ReadHeadFile(PrimaryBlock(block));
    ProcessSpec spec;
    spec.argv = {SNAPLEDGER_RECEIVE_BIN, "--root", ReplicaRoot()};
    if (transfer_args) {
      std::vector<std::string> t = {"--block",     block.name,    "--epoch",
                                    "1",           "--head-seq",  std::to_string(head.head.seq),
                                    "--head-hash", head.head.hash};
      if (parent) t.insert(t.end(), {"--parent", parent->name});
      spec.argv.insert(spec.argv.end(), t.begin(), t.end());
    }
    spec.argv.insert(spec.argv.end(), extra_args.begin(), extra_args.end());
    spec.stdin_spec = StdioSpec::Pipe();
    spec.stdout_spec = StdioSpec::Pipe();
    spec.env = env;
    auto child = ProcessRunner::Real()->Start(spec);
    EXPECT_TRUE(child.ok()) << child.status();
    FdSink sink((*child)->TakeStdin(), "receive stdin");
    FdSource out((*child)->TakeStdout(), "receive stdout");
    std::string stdout_text;
    std::thread reader([&] {
      char buf[4096];
      while (true) {
        auto n = out.Read(buf, sizeof buf);
        if (!n.ok() || *n == 0) break;
        stdout_text.append(buf, *n);
      }
    });
    std::optional<std::string> parent_path;
    if (parent) parent_path = PrimaryBlock(*parent);
    (void)btrfs_->Send(PrimaryBlock(block), parent_path, sink);  // may fail if refused early
    (void)sink.Close();
    auto exit = (*child)->Wait();
    reader.join();
    return {*exit, stdout_text, (*child)->Stderr()};
  }

  std::vector<std::string> ReplicaBlocks() {
    auto blocks = ListBlocks(*btrfs_, LedgerLayout(ReplicaRoot()));
    std::vector<std::string> names;
    if (absl::IsNotFound(blocks.status())) return names;  // nothing was ever received
    EXPECT_TRUE(blocks.ok()) << blocks.status();
    for (const auto& b : *blocks) names.push_back(b.name);
    return names;
  }

  // No transfer left anything behind: no blocks/.incoming-<name> (where `btrfs receive` puts
  // a block until it verifies).
  bool IncomingIsEmpty() {
    std::error_code ec;
    LedgerLayout layout(ReplicaRoot());
    for (const auto& e : std::filesystem::directory_iterator(layout.blocks(), ec))
      if (e.path().filename().string().starts_with(".incoming-")) return false;
    return true;
  }

  // Changes one digit of event `seq`'s body in the primary's live log, behind the ledger's back.
  void TamperLive(uint64_t seq) {
    std::string path = LedgerLayout(primary_fs_->mount_point()).live() + "/" + kEventsFile;
    std::string text = *ReadFileToString(path);
    size_t line = 0;
    for (uint64_t i = 1; i < seq; ++i) line = text.find('\n', line) + 1;
    size_t digit = text.find("\"n\":", line) + 4;
    char changed = text[digit] == '1' ? '2' : '1';
    auto fd = OpenFile(path, O_WRONLY);
    ASSERT_TRUE(fd.ok());
    ASSERT_EQ(::pwrite(fd->get(), &changed, 1, static_cast<off_t>(digit)), 1);
  }

  testing::LoopBtrfsPtr primary_fs_, replica_fs_;
  BtrfsPtr btrfs_;
  EventLogPtr log_;
  BlockMakerPtr maker_;
  int next_ = 1;
};

TEST_F(ReplicaReceiveTest, FullSendThenDeltaArePromotedAfterVerification) {
  Append(500);
  BlockInfo first = Cut();
  Append(300);
  Cut();
  Append(200);
  BlockInfo third = Cut();

  Outcome full = Ship(first, std::nullopt);
  ASSERT_TRUE(full.exit.ok()) << full.exit.ToString() << ": " << full.err;
  EXPECT_THAT(full.out, HasSubstr("\"events_verified\":500"));
  // The chain was verified as the stream arrived, all of it: a real `btrfs send` stream is
  // followed (nothing was read back from disk but the last line).
  const auto first_bytes = std::filesystem::file_size(PrimaryBlock(first) + "/" + kEventsFile);
  EXPECT_THAT(full.out, HasSubstr(absl::StrCat("\"bytes_verified_in_stream\":", first_bytes, ",")));

  Outcome delta = Ship(third, first);
  ASSERT_TRUE(delta.exit.ok()) << delta.exit.ToString() << ": " << delta.err;
  EXPECT_THAT(delta.out, HasSubstr("\"events_verified\":500"));  // 501..1000 only
  const auto third_bytes = std::filesystem::file_size(PrimaryBlock(third) + "/" + kEventsFile);
  EXPECT_THAT(delta.out, HasSubstr(absl::StrCat(
                             "\"bytes_verified_in_stream\":", third_bytes - first_bytes, ",")));
  // The 500 old events were proven unchanged by shared extents, not by reading them all.
  EXPECT_THAT(delta.out, ::testing::ContainsRegex("\"prefix_bytes_compared\":[0-9]{1,5},"));
  EXPECT_EQ(ReplicaBlocks(), (std::vector<std::string>{first.name, third.name}));
  EXPECT_TRUE(IncomingIsEmpty());

  std::string received = LedgerLayout(ReplicaRoot()).block(third);
  auto info = btrfs_->GetSubvolumeInfo(received);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->read_only);
  EXPECT_FALSE(info->received_uuid.empty());
  EXPECT_EQ(*ReadFileToString(received + "/" + kEventsFile),
            *ReadFileToString(PrimaryBlock(third) + "/" + kEventsFile));

  // Receiving a block already held drains the stream and succeeds.
  Outcome again = Ship(third, first);
  EXPECT_TRUE(again.exit.ok()) << again.err;
  EXPECT_THAT(again.out, HasSubstr("\"already_held\":true"));
}

TEST_F(ReplicaReceiveTest, DeltaThatRewritesAlreadyVerifiedEventsIsRefused) {
  Append(400);
  BlockInfo first = Cut();
  ASSERT_TRUE(Ship(first, std::nullopt).exit.ok());
  TamperLive(123);  // before the replica's trusted head: incremental verification alone misses it
  Append(100);
  BlockInfo second = Cut();
  {
    std::string a = *ReadFileToString(PrimaryBlock(first) + "/" + kEventsFile);
    std::string b = *ReadFileToString(PrimaryBlock(second) + "/" + kEventsFile);
    ASSERT_NE(a, b.substr(0, a.size())) << "the tampering did not reach the primary's block";
  }
  Outcome r = Ship(second, first);
  EXPECT_EQ(r.exit.code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("changes events this replica already verified"));
  EXPECT_EQ(ReplicaBlocks(), std::vector<std::string>{first.name});
  EXPECT_TRUE(IncomingIsEmpty());
}

TEST_F(ReplicaReceiveTest, TamperedNewEventIsRefusedNamingItsSeq) {
  Append(400);
  BlockInfo first = Cut();
  ASSERT_TRUE(Ship(first, std::nullopt).exit.ok());
  Append(100);
  TamperLive(450);
  BlockInfo second = Cut();
  Outcome r = Ship(second, first);
  EXPECT_EQ(r.exit.code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("line 450 (seq 450)"));
  EXPECT_EQ(ReplicaBlocks(), std::vector<std::string>{first.name});
  EXPECT_TRUE(IncomingIsEmpty());
}

TEST_F(ReplicaReceiveTest, WrongAnnouncedHeadIsRefused) {
  Append(50);
  BlockInfo first = Cut();
  HeadRecord head = **ReadHeadFile(PrimaryBlock(first));
  std::string other = head.head.hash.substr(0, 12) + std::string(52, '0');
  Outcome r = Ship(first, std::nullopt,
                   {"--block", first.name, "--epoch", "1", "--head-seq",
                    std::to_string(head.head.seq), "--head-hash", other},
                   std::nullopt, /*transfer_args=*/false);
  EXPECT_EQ(r.exit.code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the primary announced"));
  EXPECT_TRUE(ReplicaBlocks().empty());
  EXPECT_TRUE(IncomingIsEmpty());
}

TEST_F(ReplicaReceiveTest, BlockNamesWithPathTricksAreRejectedBeforeReceiving) {
  Append(10);
  BlockInfo first = Cut();
  for (std::string bad : {"../../etc", "block-000000000010-abcdefabcdef/../x", "/tmp/x"}) {
    Outcome r = Ship(first, std::nullopt, {"--block", bad, "--epoch", "1"}, std::nullopt,
                     /*transfer_args=*/false);
    EXPECT_EQ(r.exit.code, 2) << bad << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("--block"));
  }
  EXPECT_TRUE(ReplicaBlocks().empty());
}

TEST_F(ReplicaReceiveTest, ForcedCommandRunsOnlyReceiveWithTheClientsTransferArguments) {
  Append(10);
  BlockInfo first = Cut();
  HeadRecord head = **ReadHeadFile(PrimaryBlock(first));
  Outcome refused = Ship(first, std::nullopt, {},
                         std::vector<std::string>{"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                                  "SSH_ORIGINAL_COMMAND=rm -rf /"},
                         /*transfer_args=*/false);
  EXPECT_EQ(refused.exit.code, 2);
  EXPECT_THAT(refused.err, HasSubstr("may only run"));
  Outcome accepted =
      Ship(first, std::nullopt, {},
           std::vector<std::string>{"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                    absl::StrCat("SSH_ORIGINAL_COMMAND=snapledger-receive "
                                                 "--block ",
                                                 first.name, " --epoch 1 --head-seq ",
                                                 head.head.seq, " --head-hash ", head.head.hash)},
           /*transfer_args=*/false);
  EXPECT_TRUE(accepted.exit.ok()) << accepted.err;
  EXPECT_EQ(ReplicaBlocks(), std::vector<std::string>{first.name});
}

TEST_F(ReplicaReceiveTest, SessionReceivesBlockAfterBlockAndAnswersEach) {
  Append(500);
  BlockInfo first = Cut();
  Append(300);
  BlockInfo second = Cut();
  Append(200);
  BlockInfo third = Cut();

  ReceiveSession session(ReplicaRoot());
  std::optional<BlockInfo> parent;
  for (const BlockInfo& b : {first, second, third}) {
    ASSERT_TRUE(session.Send(*btrfs_, Request(b, parent), PrimaryBlock(b), PrimaryPath(parent)))
        << b.name;
    std::optional<std::string> verdict = session.Verdict();
    ASSERT_TRUE(verdict.has_value()) << b.name << ": " << session.Finish().err;
    EXPECT_THAT(*verdict, HasSubstr(absl::StrCat("\"block\":\"", b.name, "\"")));
    parent = b;
  }
  Outcome end = session.Finish();
  EXPECT_TRUE(end.exit.ok()) << end.exit.ToString() << ": " << end.err;
  EXPECT_EQ(ReplicaBlocks(), (std::vector<std::string>{first.name, second.name, third.name}));
  EXPECT_TRUE(IncomingIsEmpty());
  std::string received = LedgerLayout(ReplicaRoot()).block(third);
  EXPECT_EQ(*ReadFileToString(received + "/" + kEventsFile),
            *ReadFileToString(PrimaryBlock(third) + "/" + kEventsFile));
}

TEST_F(ReplicaReceiveTest, SessionEndsAtABlockThatDoesNotVerify) {
  Append(400);
  BlockInfo first = Cut();
  Append(100);
  TamperLive(450);
  BlockInfo second = Cut();

  ReceiveSession session(ReplicaRoot());
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(first, std::nullopt), PrimaryBlock(first), std::nullopt));
  ASSERT_TRUE(session.Verdict().has_value());
  (void)session.Send(*btrfs_, Request(second, first), PrimaryBlock(second), PrimaryBlock(first));
  // No received verdict for a block that does not verify: its failure verdict, then the end.
  std::optional<std::string> verdict = session.Verdict();
  ASSERT_TRUE(verdict.has_value()) << session.Finish().err;
  absl::StatusOr<ReceiveVerdict> failed = ParseReceiveVerdict(*verdict);
  ASSERT_TRUE(failed.ok()) << failed.status() << ": " << *verdict;
  EXPECT_EQ(failed->verdict, ReceiveExit::kNotVerified) << *verdict;
  EXPECT_EQ(failed->block, second.name);
  EXPECT_EQ(session.Verdict(), std::nullopt) << "nothing after the failure verdict";
  Outcome end = session.Finish();
  EXPECT_EQ(end.exit.code, 3) << end.err;
  EXPECT_THAT(end.err, HasSubstr("line 450 (seq 450)"));
  EXPECT_EQ(ReplicaBlocks(), std::vector<std::string>{first.name});
  EXPECT_TRUE(IncomingIsEmpty());
}

TEST_F(ReplicaReceiveTest, SessionCutInsideAStreamLeavesNothingHalfReceived) {
  Append(400);
  BlockInfo first = Cut();
  Append(5000);
  BlockInfo second = Cut();

  ReceiveSession session(ReplicaRoot());
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(first, std::nullopt), PrimaryBlock(first), std::nullopt));
  ASSERT_TRUE(session.Verdict().has_value());
  // Part of the delta, then the input ends inside its frame.
  session.SendCut(*btrfs_, Request(second, first), PrimaryBlock(second), PrimaryBlock(first),
                  /*keep=*/200 << 10);
  Outcome end = session.Finish();
  EXPECT_EQ(end.exit.code, 1) << "a cut transfer, not a bad block: " << end.err;
  EXPECT_THAT(end.err, ::testing::ContainsRegex("input ends at byte [0-9]+ inside a frame \\("));
  EXPECT_EQ(ReplicaBlocks(), std::vector<std::string>{first.name});
  EXPECT_TRUE(IncomingIsEmpty());
}

TEST_F(ReplicaReceiveTest, SessionRefusesARequestWithPathTricksBeforeReceiving) {
  Append(10);
  BlockInfo first = Cut();
  const std::pair<std::string, std::string> cases[] = {
      {"--block ../../etc --epoch 1", "--block"},
      {"--block /tmp/x --epoch 1", "--block"},
      {"--root /tmp --block " + first.name + " --epoch 1", "refused request"},
  };
  for (const auto& [bad, why] : cases) {
    ReceiveSession session(ReplicaRoot());
    (void)session.Send(*btrfs_, bad, PrimaryBlock(first), std::nullopt);
    Outcome end = session.Finish();
    EXPECT_EQ(end.exit.code, 2) << bad << ": " << end.err;
    EXPECT_THAT(end.err, HasSubstr(why)) << bad;
  }
  EXPECT_TRUE(ReplicaBlocks().empty());
  EXPECT_TRUE(IncomingIsEmpty());
}

TEST_F(ReplicaReceiveTest, SessionGoesOnAfterABlockAlreadyHeld) {
  Append(300);
  BlockInfo first = Cut();
  Append(200);
  BlockInfo second = Cut();

  ReceiveSession session(ReplicaRoot());
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(first, std::nullopt), PrimaryBlock(first), std::nullopt));
  ASSERT_TRUE(session.Verdict().has_value());
  // The same block again (a primary that did not hear the verdict): drained, acknowledged.
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(first, std::nullopt), PrimaryBlock(first), std::nullopt));
  std::optional<std::string> again = session.Verdict();
  ASSERT_TRUE(again.has_value()) << session.Finish().err;
  EXPECT_THAT(*again, HasSubstr("\"already_held\":true"));
  // ... and the session lines up with the next request.
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(second, first), PrimaryBlock(second), PrimaryBlock(first)));
  std::optional<std::string> next = session.Verdict();
  ASSERT_TRUE(next.has_value()) << session.Finish().err;
  EXPECT_THAT(*next, HasSubstr("\"events_verified\":200"));
  Outcome end = session.Finish();
  EXPECT_TRUE(end.exit.ok()) << end.err;
  EXPECT_EQ(ReplicaBlocks(), (std::vector<std::string>{first.name, second.name}));
}

TEST_F(ReplicaReceiveTest, SessionTakesZstdCompressedBlocks) {
  Append(2000);
  BlockInfo first = Cut();
  Append(500);
  BlockInfo second = Cut();

  ReceiveSession session(ReplicaRoot());
  ASSERT_TRUE(session.Send(*btrfs_, Request(first, std::nullopt) + " --compress zstd",
                           PrimaryBlock(first), std::nullopt, /*zstd=*/true));
  std::optional<std::string> v1 = session.Verdict();
  ASSERT_TRUE(v1.has_value()) << session.Finish().err;
  EXPECT_THAT(*v1, HasSubstr("\"events_verified\":2000"));
  ASSERT_TRUE(session.Send(*btrfs_, Request(second, first) + " --compress zstd",
                           PrimaryBlock(second), PrimaryBlock(first), /*zstd=*/true));
  std::optional<std::string> v2 = session.Verdict();
  ASSERT_TRUE(v2.has_value()) << session.Finish().err;
  EXPECT_THAT(*v2, HasSubstr("\"events_verified\":500"));
  Outcome end = session.Finish();
  EXPECT_TRUE(end.exit.ok()) << end.err;
  EXPECT_EQ(*ReadFileToString(LedgerLayout(ReplicaRoot()).block(second) + "/" + kEventsFile),
            *ReadFileToString(PrimaryBlock(second) + "/" + kEventsFile));
}

TEST_F(ReplicaReceiveTest, SessionEndsAfterABlockOnceItsProgramWasReplaced) {
  Append(100);
  BlockInfo first = Cut();
  Append(100);
  BlockInfo second = Cut();
  testing::TempDir bin;
  const std::string program = bin.path() + "/snapledger-receive";
  auto install = [&] {  // as an upgrade does: a new file renamed over the old one
    std::filesystem::copy_file(SNAPLEDGER_RECEIVE_BIN, program + ".new");
    std::filesystem::permissions(program + ".new", std::filesystem::perms::owner_all);
    std::filesystem::rename(program + ".new", program);
  };
  install();

  ReceiveSession session(ReplicaRoot(), program);
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(first, std::nullopt), PrimaryBlock(first), std::nullopt));
  ASSERT_TRUE(session.Verdict().has_value());
  install();
  ASSERT_TRUE(
      session.Send(*btrfs_, Request(second, first), PrimaryBlock(second), PrimaryBlock(first)));
  std::optional<std::string> verdict = session.Verdict();
  ASSERT_TRUE(verdict.has_value()) << "the block in progress is still answered";
  EXPECT_THAT(*verdict, HasSubstr(second.name));
  // Then the command ends by itself, before any further input.
  EXPECT_EQ(session.Verdict(), std::nullopt);
  Outcome end = session.Finish();
  EXPECT_TRUE(end.exit.ok()) << end.err;
  EXPECT_THAT(end.err, HasSubstr("was replaced; ending the session"));
  EXPECT_EQ(ReplicaBlocks(), (std::vector<std::string>{first.name, second.name}));
}

}  // namespace
}  // namespace snapledger
