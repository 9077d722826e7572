#include "common/testing/memory_btrfs.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/base/posix_file.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

TEST(MemoryBtrfs, SnapshotCopiesTheTreeAndRecordsItsLineage) {
  testing::TempDir dir;
  MemoryBtrfs btrfs;
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("a")).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("a/f"), "x").ok());
  ASSERT_TRUE(btrfs.CreateSnapshot(dir.Sub("a"), dir.Sub("b"), SnapshotKind::kReadOnly).ok());
  EXPECT_EQ(*ReadFileToString(dir.Sub("b/f")), "x");
  auto a = btrfs.GetSubvolumeInfo(dir.Sub("a"));
  auto b = btrfs.GetSubvolumeInfo(dir.Sub("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->parent_uuid, a->uuid);
  EXPECT_NE(b->uuid, a->uuid);
  EXPECT_TRUE(b->read_only);
  EXPECT_FALSE(a->read_only);
  EXPECT_TRUE(absl::IsAlreadyExists(
      btrfs.CreateSnapshot(dir.Sub("a"), dir.Sub("b"), SnapshotKind::kReadOnly)));
}

TEST(MemoryBtrfs, PlainDirectoriesAreNotSubvolumes) {
  testing::TempDir dir;
  MemoryBtrfs btrfs;
  std::filesystem::create_directory(dir.Sub("plain"));
  EXPECT_TRUE(absl::IsInvalidArgument(btrfs.GetSubvolumeInfo(dir.Sub("plain")).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(btrfs.DeleteSubvolume(dir.Sub("plain"))));
  EXPECT_TRUE(absl::IsNotFound(btrfs.GetSubvolumeInfo(dir.Sub("missing")).status()));
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("plain")));
}

TEST(MemoryBtrfs, DeleteRemovesTheTreeAndTheRecord) {
  testing::TempDir dir;
  MemoryBtrfs btrfs;
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("a")).ok());
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("a-b")).ok());
  ASSERT_TRUE(btrfs.DeleteSubvolume(dir.Sub("a")).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("a")));
  EXPECT_EQ(btrfs.subvolume_count(), 1u);
  auto listed = btrfs.ListSubvolumes(dir.path());
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].path, dir.Sub("a-b"));
}

TEST(MemoryBtrfs, RenameKeepsTheSubvolumeWithinItsDirectory) {
  testing::TempDir dir;
  MemoryBtrfs btrfs;
  std::filesystem::create_directory(dir.Sub("d"));
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("a")).ok());
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("taken")).ok());
  auto before = btrfs.GetSubvolumeInfo(dir.Sub("a"));
  ASSERT_TRUE(before.ok());
  EXPECT_TRUE(absl::IsAlreadyExists(btrfs.RenameSubvolume(dir.Sub("a"), dir.Sub("taken"))));
  EXPECT_TRUE(absl::IsInvalidArgument(btrfs.RenameSubvolume(dir.Sub("a"), dir.Sub("d/a"))));
  ASSERT_TRUE(btrfs.RenameSubvolume(dir.Sub("a"), dir.Sub("b")).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("a")));
  auto after = btrfs.GetSubvolumeInfo(dir.Sub("b"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->uuid, before->uuid);
  EXPECT_EQ(btrfs.subvolume_count(), 2u);
}

TEST(MemoryBtrfs, ReceiveRecreatesTheSentTreeUnderTheGivenName) {
  testing::TempDir dir;
  MemoryBtrfs btrfs;
  std::filesystem::create_directory(dir.Sub("dest"));
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("a")).ok());
  std::filesystem::create_directory(dir.Sub("a/sub"));
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("a/sub/f"), "xyz").ok());
  ASSERT_TRUE(btrfs.CreateSnapshot(dir.Sub("a"), dir.Sub("s1"), SnapshotKind::kReadOnly).ok());
  StringSink stream;
  ASSERT_TRUE(btrfs.Send(dir.Sub("s1"), std::nullopt, stream).ok());

  StringSource source(stream.data());
  ReceiveOptions options;
  options.as_name = ".hidden";
  auto received = btrfs.Receive(dir.Sub("dest"), source, options);
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(*received, dir.Sub("dest/.hidden"));
  EXPECT_EQ(*ReadFileToString(dir.Sub("dest/.hidden/sub/f")), "xyz");
  auto info = btrfs.GetSubvolumeInfo(*received);
  auto sent = btrfs.GetSubvolumeInfo(dir.Sub("s1"));
  ASSERT_TRUE(info.ok() && sent.ok());
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(info->received_uuid, sent->uuid);

  StringSource again(stream.data());
  auto named = btrfs.Receive(dir.Sub("dest"), again);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(*named, dir.Sub("dest/s1"));
}

TEST(MemoryBtrfs, ADeltaNeedsItsParentAndABadStreamLeavesNothing) {
  testing::TempDir dir;
  MemoryBtrfs btrfs;
  std::filesystem::create_directory(dir.Sub("dest"));
  ASSERT_TRUE(btrfs.CreateSubvolume(dir.Sub("a")).ok());
  ASSERT_TRUE(btrfs.CreateSnapshot(dir.Sub("a"), dir.Sub("s1"), SnapshotKind::kReadOnly).ok());
  ASSERT_TRUE(btrfs.CreateSnapshot(dir.Sub("a"), dir.Sub("s2"), SnapshotKind::kReadOnly).ok());
  StringSink delta;
  ASSERT_TRUE(btrfs.Send(dir.Sub("s2"), dir.Sub("s1"), delta).ok());
  // The parent is found by uuid too (as btrfs receive does), so use a second double.
  MemoryBtrfs replica;
  StringSource source(delta.data());
  EXPECT_FALSE(replica.Receive(dir.Sub("dest"), source).ok());
  StringSource cut(delta.data().substr(0, delta.data().size() - 2));
  EXPECT_TRUE(absl::IsDataLoss(btrfs.Receive(dir.Sub("dest"), cut).status()));
  EXPECT_TRUE(std::filesystem::is_empty(dir.Sub("dest")));
}

}  // namespace
}  // namespace snapledger
