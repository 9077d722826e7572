// Btrfs::Linux() receiving streams under a name of the caller's, on real btrfs: two
// loop-mounted filesystems (a sender and a receiver, so that a delta can only find its parent
// by received_uuid), btrfs-progs, no doubles. Needs root; skips without (LoopBtrfs).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/byte_stream.h"
#include "common/base/posix_file.h"
#include "common/btrfs/btrfs.h"
#include "common/btrfs/send_stream.h"
#include "tests/integration/loop_btrfs.h"
#include "tests/integration/pipe_transfer.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class LinuxBtrfsReceive : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSIGN_LOOP_BTRFS_OR_SKIP(sender_fs_);
    ASSIGN_LOOP_BTRFS_OR_SKIP(receiver_fs_);
    ASSERT_TRUE(btrfs_->CreateSubvolume(sender_fs_->Sub("live")).ok());
    std::filesystem::create_directory(Dest());
  }

  std::string Dest() const { return receiver_fs_->Sub("blocks"); }

  // Appends `text` to live/log and snapshots live read-only as `name`; returns its path.
  std::string Snapshot(const std::string& name, const std::string& text) {
    std::string log = sender_fs_->Sub("live/log");
    std::string old = ReadFileToString(log).value_or("");
    EXPECT_TRUE(WriteFileAtomic(log, old + text).ok());
    std::string path = sender_fs_->Sub(name);
    EXPECT_TRUE(
        btrfs_->CreateSnapshot(sender_fs_->Sub("live"), path, SnapshotKind::kReadOnly).ok());
    return path;
  }

  std::string SendToString(const std::string& snapshot,
                           const std::optional<std::string>& parent = {}) {
    StringSink sink;
    EXPECT_TRUE(btrfs_->Send(snapshot, parent, sink).ok());
    return sink.data();
  }

  // Streams `snapshot` into Dest() as `as_name`, sender and receiver concurrently.
  absl::StatusOr<std::string> Transfer(const std::string& snapshot,
                                       const std::optional<std::string>& parent,
                                       const std::string& as_name) {
    ReceiveOptions options;
    options.as_name = as_name;
    return testing::TransferThroughPipe(*btrfs_, snapshot, parent, Dest(), options);
  }

  std::vector<std::string> DestEntries() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(Dest()))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  testing::LoopBtrfsPtr sender_fs_, receiver_fs_;
  BtrfsPtr btrfs_ = Btrfs::Linux();
};

TEST_F(LinuxBtrfsReceive, FullThenDeltaArriveUnderTheGivenNamesAndKeepTheirIdentityWhenRenamed) {
  std::string one = Snapshot("block-1", "first\n");
  std::string two = Snapshot("block-2", "second\n");

  auto received = Transfer(one, std::nullopt, ".incoming-block-1");
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(*received, Dest() + "/.incoming-block-1");
  ASSERT_TRUE(btrfs_->RenameSubvolume(*received, Dest() + "/block-1").ok());
  auto sent_one = btrfs_->GetSubvolumeInfo(one);
  auto got_one = btrfs_->GetSubvolumeInfo(Dest() + "/block-1");
  ASSERT_TRUE(sent_one.ok() && got_one.ok());
  EXPECT_TRUE(got_one->read_only);
  EXPECT_EQ(got_one->received_uuid, sent_one->uuid);

  // The delta's parent is found on the receiver by received_uuid, under its new name.
  auto delta = Transfer(two, one, ".incoming-block-2");
  ASSERT_TRUE(delta.ok()) << delta.status();
  ASSERT_TRUE(btrfs_->RenameSubvolume(*delta, Dest() + "/block-2").ok());
  auto sent_two = btrfs_->GetSubvolumeInfo(two);
  auto got_two = btrfs_->GetSubvolumeInfo(Dest() + "/block-2");
  ASSERT_TRUE(sent_two.ok() && got_two.ok());
  EXPECT_TRUE(got_two->read_only);
  EXPECT_EQ(got_two->received_uuid, sent_two->uuid);
  EXPECT_EQ(got_two->parent_uuid, got_one->uuid);
  EXPECT_EQ(*ReadFileToString(Dest() + "/block-2/log"), "first\nsecond\n");
  EXPECT_THAT(DestEntries(), ElementsAre("block-1", "block-2"));
}

TEST_F(LinuxBtrfsReceive, AStreamWithoutAnFdIsCopiedAndWithoutANameKeepsTheSentOne) {
  std::string one = Snapshot("block-1", "first\n");
  StringSource source(SendToString(one));
  auto received = btrfs_->Receive(Dest(), source);
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(*received, Dest() + "/block-1");
  auto info = btrfs_->GetSubvolumeInfo(*received);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->read_only);
  EXPECT_FALSE(info->received_uuid.empty());
}

TEST_F(LinuxBtrfsReceive, ACorruptFirstCommandIsRefusedBeforeAnythingIsCreated) {
  std::string stream = SendToString(Snapshot("block-1", "first\n"));
  stream[kSendStreamHeaderSize + kSendCommandHeaderSize + 6] ^= 0x20;  // in the PATH value
  StringSource source(stream);
  ReceiveOptions options;
  options.as_name = ".incoming-block-1";
  auto received = btrfs_->Receive(Dest(), source, options);
  EXPECT_TRUE(absl::IsDataLoss(received.status())) << received.status();
  EXPECT_THAT(std::string(received.status().message()), HasSubstr("crc mismatch"));
  EXPECT_THAT(DestEntries(), IsEmpty());
}

TEST_F(LinuxBtrfsReceive, TwoSubvolumesInOneStreamAreRefusedAndNothingIsLeft) {
  std::string one = Snapshot("block-1", "first\n");
  std::string two = Snapshot("block-2", "second\n");
  StringSource source(SendToString(one) + SendToString(two));
  ReceiveOptions options;
  options.as_name = ".incoming-block-1";
  auto received = btrfs_->Receive(Dest(), source, options);
  EXPECT_TRUE(absl::IsDataLoss(received.status())) << received.status();
  EXPECT_THAT(std::string(received.status().message()), HasSubstr("after its END command"));
  EXPECT_THAT(DestEntries(), IsEmpty());
}

TEST_F(LinuxBtrfsReceive, ATruncatedStreamLeavesNothingAndAnExistingNameIsLeftAlone) {
  std::string stream = SendToString(Snapshot("block-1", std::string(100000, 'x') + "\n"));
  StringSource cut(stream.substr(0, stream.size() / 2));
  ReceiveOptions options;
  options.as_name = ".incoming-block-1";
  auto received = btrfs_->Receive(Dest(), cut, options);
  EXPECT_TRUE(absl::IsDataLoss(received.status())) << received.status();
  EXPECT_THAT(DestEntries(), IsEmpty());

  ASSERT_TRUE(btrfs_->CreateSubvolume(Dest() + "/.incoming-block-1").ok());
  StringSource whole(stream);
  received = btrfs_->Receive(Dest(), whole, options);
  EXPECT_TRUE(absl::IsAlreadyExists(received.status())) << received.status();
  auto kept = btrfs_->GetSubvolumeInfo(Dest() + "/.incoming-block-1");
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->received_uuid.empty());
}

TEST_F(LinuxBtrfsReceive, ADeltaWithoutItsParentFailsQuotingBtrfsReceive) {
  std::string one = Snapshot("block-1", "first\n");
  std::string two = Snapshot("block-2", "second\n");
  auto received = Transfer(two, one, ".incoming-block-2");
  ASSERT_FALSE(received.ok());
  EXPECT_THAT(std::string(received.status().message()), HasSubstr("btrfs -q receive"));
  EXPECT_THAT(std::string(received.status().message()), HasSubstr("ERROR"));
  EXPECT_THAT(DestEntries(), IsEmpty());
}

TEST_F(LinuxBtrfsReceive, RenameStaysInItsDirectoryAndReplacesNothing) {
  std::string one = Snapshot("block-1", "first\n");
  std::filesystem::create_directory(sender_fs_->Sub("other"));
  std::filesystem::create_directory(sender_fs_->Sub("taken"));
  EXPECT_TRUE(absl::IsInvalidArgument(btrfs_->RenameSubvolume(one, sender_fs_->Sub("other/b"))));
  EXPECT_TRUE(absl::IsAlreadyExists(btrfs_->RenameSubvolume(one, sender_fs_->Sub("taken"))));
  EXPECT_TRUE(std::filesystem::is_empty(sender_fs_->Sub("taken")));
  ASSERT_TRUE(btrfs_->RenameSubvolume(one, sender_fs_->Sub("block-1b")).ok());
  auto info = btrfs_->GetSubvolumeInfo(sender_fs_->Sub("block-1b"));
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->read_only);
}

}  // namespace
}  // namespace snapledger
