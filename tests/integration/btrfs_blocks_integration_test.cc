// Blocks on real btrfs: a real EventLog in a live subvolume on a loop-mounted filesystem,
// read-only snapshots, `btrfs send -p` deltas received into a second filesystem and verified
// incrementally, tampering caught, retention. No doubles: libbtrfsutil and btrfs-progs.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/byte_stream.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/event_log.h"
#include "common/ledger/head_file.h"
#include "tests/integration/loop_btrfs.h"
#include "tests/integration/pipe_transfer.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::LoopBtrfsPtr;

std::vector<uint64_t> Seqs(const std::vector<BlockInfo>& blocks) {
  std::vector<uint64_t> out;
  for (const BlockInfo& b : blocks) out.push_back(b.seq);
  return out;
}

HeadRecord HeadOf(const std::string& dir) {
  auto head = ReadHeadFile(dir);
  EXPECT_TRUE(head.ok() && head->has_value()) << dir << ": " << head.status();
  return head.ok() && head->has_value() ? **head : HeadRecord{};
}

// Streams `block` (a delta against `parent` when given) from one filesystem into `dest_dir` on
// another through a pipe, sender and receiver running concurrently as in production.
absl::StatusOr<std::string> Transfer(Btrfs& btrfs, const std::string& block,
                                     const std::optional<std::string>& parent,
                                     const std::string& dest_dir) {
  return testing::TransferThroughPipe(btrfs, block, parent, dest_dir);
}

// Changes one digit of the body of event `seq` in <dir>/events.jsonl, keeping the line
// well-formed so that only its hash can give it away.
void TamperWithEvent(const std::string& dir, uint64_t seq) {
  const std::string path = dir + "/" + kEventsFile;
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<absl::string_view> lines = absl::StrSplit(*text, '\n');
  ASSERT_GE(lines.size(), seq);
  size_t line_start = lines[seq - 1].data() - text->data();
  size_t body = text->find("\"body\":{\"n\":", line_start);
  ASSERT_NE(body, std::string::npos);
  size_t digit = body + std::string_view("\"body\":{\"n\":").size();
  char changed = (*text)[digit] == '1' ? '2' : '1';
  auto fd = OpenFile(path, O_WRONLY);
  ASSERT_TRUE(fd.ok()) << fd.status();
  ASSERT_EQ(::pwrite(fd->get(), &changed, 1, static_cast<off_t>(digit)), 1);
}

class BtrfsBlocks : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSIGN_LOOP_BTRFS_OR_SKIP(primary_fs_);
    layout_.emplace(primary_fs_->mount_point());
    ASSERT_TRUE(InitializeLedgerRoot(*btrfs_, layout_->root()).ok());
    auto log = EventLog::Create(layout_->live(), 1);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
    MakeBlockMaker(16);
  }

  void MakeBlockMaker(size_t keep_newest) {
    maker_.reset();
    auto maker = BlockMaker::Create(*btrfs_, layout_->root(), *log_, {keep_newest});
    ASSERT_TRUE(maker.ok()) << maker.status();
    maker_ = std::move(*maker);
  }

  void AppendEvents(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(log_->Append(absl::StrCat("{\"n\":", next_n_++, ",\"port\":\"tap0\"}")).ok());
    }
  }

  BlockInfo CutBlock() {
    auto block = maker_->Cut();
    EXPECT_TRUE(block.ok() && block->has_value()) << block.status();
    return block.ok() && block->has_value() ? **block : BlockInfo{};
  }

  // A second filesystem standing in for a replica, with its incoming/ directory.
  void MakeReplica() {
    ASSIGN_LOOP_BTRFS_OR_SKIP(replica_fs_);
    std::filesystem::create_directory(Incoming());
  }
  std::string Incoming() const { return replica_fs_->Sub("incoming"); }

  // Blocks 1 (seq 5) and 2 (seq 12) received into the replica: full, then the -p delta.
  void ReceiveTwoBlocks() {
    AppendEvents(5);
    block1_ = CutBlock();
    AppendEvents(7);
    block2_ = CutBlock();
    auto r1 = Transfer(*btrfs_, layout_->block(block1_), std::nullopt, Incoming());
    ASSERT_TRUE(r1.ok()) << r1.status();
    auto r2 = Transfer(*btrfs_, layout_->block(block2_), layout_->block(block1_), Incoming());
    ASSERT_TRUE(r2.ok()) << r2.status();
    received1_ = *r1;
    received2_ = *r2;
  }

  BtrfsPtr btrfs_ = Btrfs::Linux();
  // Declared before what lives on them, so they are unmounted last.
  LoopBtrfsPtr primary_fs_;
  LoopBtrfsPtr replica_fs_;
  std::optional<LedgerLayout> layout_;
  EventLogPtr log_;
  BlockMakerPtr maker_;
  int next_n_ = 1;
  BlockInfo block1_, block2_;
  std::string received1_, received2_;
};

TEST_F(BtrfsBlocks, BlocksAreReadOnlySnapshotsOfTheLiveSubvolume) {
  ASSERT_TRUE(btrfs_->CheckIsBtrfs(layout_->root()).ok());
  auto live = btrfs_->GetSubvolumeInfo(layout_->live());
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_FALSE(live->read_only);

  AppendEvents(10);
  BlockInfo block = CutBlock();
  EXPECT_EQ(block.seq, 10u);
  auto info = btrfs_->GetSubvolumeInfo(layout_->block(block));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(info->parent_uuid, live->uuid);
  EXPECT_FALSE(info->uuid.empty());

  // Read-only for real: the kernel refuses writes.
  auto fd = OpenFile(layout_->block(block) + "/" + kEventsFile, O_WRONLY | O_APPEND);
  EXPECT_FALSE(fd.ok());

  auto report = VerifyLedgerDir(layout_->block(block));
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_TRUE(report->ok()) << report->failure->ToString();
  EXPECT_EQ(report->head, log_->Head().head);

  auto listed = maker_->ListBlocks();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, ElementsAre(block));
}

TEST_F(BtrfsBlocks, DeltaReceivedOnAnotherFilesystemVerifiesIncrementally) {
  MakeReplica();
  if (IsSkipped()) return;
  ASSERT_NO_FATAL_FAILURE(ReceiveTwoBlocks());
  EXPECT_EQ(received1_, Incoming() + "/" + block1_.name);
  EXPECT_EQ(received2_, Incoming() + "/" + block2_.name);

  auto sent = btrfs_->GetSubvolumeInfo(layout_->block(block2_));
  auto got = btrfs_->GetSubvolumeInfo(received2_);
  ASSERT_TRUE(sent.ok() && got.ok()) << got.status();
  EXPECT_TRUE(got->read_only);
  EXPECT_EQ(got->received_uuid, sent->uuid);

  auto report = VerifyLedgerDirFrom(received2_, HeadOf(received1_));
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_TRUE(report->ok()) << report->failure->ToString();
  EXPECT_EQ(report->events_verified, 7u);
  EXPECT_EQ(report->head, log_->Head().head);
}

TEST_F(BtrfsBlocks, TamperedReceivedBlockFailsVerificationAtTheChangedEvent) {
  MakeReplica();
  if (IsSkipped()) return;
  ASSERT_NO_FATAL_FAILURE(ReceiveTwoBlocks());
  ASSERT_TRUE(RunCommandOk(*ProcessRunner::Real(),
                           {"btrfs", "property", "set", "-f", "-ts", received2_, "ro", "false"})
                  .ok());
  TamperWithEvent(received2_, 9);

  auto report = VerifyLedgerDirFrom(received2_, HeadOf(received1_));
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_FALSE(report->ok());
  EXPECT_EQ(report->failure->seq, 9u) << report->failure->ToString();
  EXPECT_EQ(report->failure->line_number, 9u);

  auto full = VerifyLedgerDir(received2_);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_FALSE(full->ok());
  EXPECT_EQ(full->failure->seq, 9u);
}

TEST_F(BtrfsBlocks, RetentionKeepsTheNewestK) {
  MakeBlockMaker(/*keep_newest=*/2);
  for (int i = 0; i < 4; ++i) {
    AppendEvents(3);
    CutBlock();
  }
  auto blocks = maker_->ListBlocks();
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_THAT(Seqs(*blocks), ElementsAre(9, 12));
  auto on_disk = btrfs_->ListSubvolumes(layout_->blocks());
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(on_disk->size(), 2u);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(layout_->blocks())) {
    ++entries;
  }
  EXPECT_EQ(entries, 2u);
}

TEST_F(BtrfsBlocks, DeltaWithoutItsParentOnTheReceiverFailsQuotingBtrfs) {
  MakeReplica();
  if (IsSkipped()) return;
  AppendEvents(2);
  BlockInfo first = CutBlock();
  AppendEvents(2);
  BlockInfo second = CutBlock();
  auto received = Transfer(*btrfs_, layout_->block(second), layout_->block(first), Incoming());
  ASSERT_FALSE(received.ok());
  EXPECT_THAT(std::string(received.status().message()), HasSubstr("btrfs -q receive"));
  EXPECT_THAT(std::string(received.status().message()), HasSubstr("ERROR"));
  auto left = btrfs_->ListSubvolumes(Incoming());
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << "partial subvolume left behind";
}

TEST_F(BtrfsBlocks, TruncatedStreamLeavesNothingBehind) {
  MakeReplica();
  if (IsSkipped()) return;
  AppendEvents(50);
  BlockInfo block = CutBlock();
  StringSink stream;  // copied through this process, not passed through
  ASSERT_TRUE(btrfs_->Send(layout_->block(block), std::nullopt, stream).ok());
  StringSource cut(stream.data().substr(0, stream.data().size() / 2));
  auto received = btrfs_->Receive(Incoming(), cut);
  ASSERT_FALSE(received.ok());
  auto left = btrfs_->ListSubvolumes(Incoming());
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << "partial subvolume left behind";

  StringSource whole(stream.data());
  auto again = btrfs_->Receive(Incoming(), whole);
  ASSERT_TRUE(again.ok()) << again.status();
  auto report = VerifyLedgerDir(*again);
  ASSERT_TRUE(report.ok() && report->ok());
  EXPECT_EQ(report->head.seq, 50u);
}

TEST(LinuxBtrfs, CheckIsBtrfsTellsTheUserWhatToDo) {
  absl::Status st = Btrfs::Linux()->CheckIsBtrfs("/proc");
  ASSERT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("/proc is not on a btrfs filesystem (type 0x9fa0): snapledger keeps its "
                        "ledger in a btrfs subvolume; mount one (see README)"));
  EXPECT_TRUE(absl::IsNotFound(Btrfs::Linux()->CheckIsBtrfs("/nonexistent/snapledger")));
}

}  // namespace
}  // namespace snapledger
