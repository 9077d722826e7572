#include "common/memory_btrfs.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/file_util.h"
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

TEST(MemoryBtrfs, SendAndReceiveAreUnimplemented) {
  MemoryBtrfs btrfs;
  StringSink sink;
  StringSource source("");
  EXPECT_TRUE(absl::IsUnimplemented(btrfs.Send("/x", std::nullopt, sink)));
  EXPECT_TRUE(absl::IsUnimplemented(btrfs.Receive("/x", source).status()));
}

}  // namespace
}  // namespace snapledger
