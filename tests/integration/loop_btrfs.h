// A throwaway btrfs filesystem for integration tests: an image file in a new temporary
// directory, formatted with mkfs.btrfs and loop-mounted.
//
// The destructor unmounts it, detaches its loop device and deletes the temporary directory,
// also when the test failed. Against a test process that dies without running destructors, the
// first LoopBtrfs of a process moves the process into a private mount namespace (when it can):
// its mounts then vanish with the process and the auto-clearing loop device detaches itself.
//
// Needs root, mkfs.btrfs, btrfs and mount/umount/losetup. Create() returns FailedPrecondition
// naming what is missing, which tests turn into a skip with LOOP_BTRFS_OR_SKIP.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/status_macros.h"

namespace snapledger::testing {

class LoopBtrfs;
using LoopBtrfsPtr = std::unique_ptr<LoopBtrfs>;

class LoopBtrfs {
 public:
  static constexpr uint64_t kDefaultSize = 256ull << 20;

  // FailedPrecondition when the machine cannot do it (not root, tools missing, mount refused);
  // other errors are real failures.
  static absl::StatusOr<LoopBtrfsPtr> Create(uint64_t size_bytes = kDefaultSize);

  ~LoopBtrfs();
  LoopBtrfs(const LoopBtrfs&) = delete;
  LoopBtrfs& operator=(const LoopBtrfs&) = delete;

  // The mount point: the root of the new filesystem.
  const std::string& mount_point() const { return mount_point_; }
  // mount_point() + "/" + name.
  std::string Sub(const std::string& name) const { return mount_point_ + "/" + name; }

 private:
  LoopBtrfs(std::string temp_dir, std::string image, std::string mount_point)
      : temp_dir_(std::move(temp_dir)),
        image_(std::move(image)),
        mount_point_(std::move(mount_point)) {}

  std::string temp_dir_;
  std::string image_;
  std::string mount_point_;
  bool mounted_ = false;
};

}  // namespace snapledger::testing

// In a test body or SetUp: `ASSIGN_LOOP_BTRFS_OR_SKIP(lhs);` assigns a new LoopBtrfsPtr to
// `lhs` (a variable, a member or a declaration such as `auto fs`), skipping the test with the
// reason when the machine cannot provide one and failing it on other errors.
#define ASSIGN_LOOP_BTRFS_OR_SKIP(lhs)                                                         \
  auto SNAPLEDGER_CONCAT(_loop_btrfs_, __LINE__) = ::snapledger::testing::LoopBtrfs::Create(); \
  if (absl::IsFailedPrecondition(SNAPLEDGER_CONCAT(_loop_btrfs_, __LINE__).status())) {        \
    GTEST_SKIP() << SNAPLEDGER_CONCAT(_loop_btrfs_, __LINE__).status().message();              \
  }                                                                                            \
  ASSERT_TRUE(SNAPLEDGER_CONCAT(_loop_btrfs_, __LINE__).ok())                                  \
      << SNAPLEDGER_CONCAT(_loop_btrfs_, __LINE__).status();                                   \
  lhs = std::move(*SNAPLEDGER_CONCAT(_loop_btrfs_, __LINE__))
