// An in-memory double of Btrfs, FOR UNIT TESTS ONLY (integration tests and production use
// Btrfs::Linux()).
//
// Subvolumes are ordinary directories on whatever filesystem the test uses; their btrfs
// metadata (id, uuids, read-only flag, generation) lives in this object. A snapshot copies the
// directory tree with std::filesystem (so it is neither atomic nor cheap: keep test trees
// small). What it does not model:
//   - read-only is a flag only: writes into a "read-only" subvolume are not prevented;
//   - generation is a counter bumped by each operation of this object, not by file writes;
//   - a snapshot copies nested subvolumes' contents instead of leaving them out;
//   - Send writes, and Receive reads, a stream of this double's own (a text header, then each
//     directory and file of the subvolume in full; a delta carries everything too and only
//     names its parent, which Receive requires to be present as btrfs receive does). It is not
//     a btrfs send stream: stream parsing is tested on real btrfs. Receive honours
//     ReceiveOptions::as_name, refuses a malformed stream with DataLoss and leaves nothing
//     behind on error; it reads the whole stream into memory (keep test trees small).
// Paths are compared after making them absolute and lexically normal.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/btrfs/btrfs.h"

namespace snapledger {

class MemoryBtrfs : public Btrfs {
 public:
  // Operations that FailNext can make fail.
  enum class Op {
    kCheckIsBtrfs,
    kCreateSubvolume,
    kCreateSnapshot,
    kDeleteSubvolume,
    kRenameSubvolume,
    kReceive,
  };

  MemoryBtrfs() = default;

  absl::Status CheckIsBtrfs(const std::string& path) override;
  absl::Status CreateSubvolume(const std::string& path) override;
  absl::Status CreateSnapshot(const std::string& source, const std::string& dest,
                              SnapshotKind kind) override;
  absl::Status DeleteSubvolume(const std::string& path) override;
  absl::StatusOr<SubvolumeInfo> GetSubvolumeInfo(const std::string& path) override;
  absl::StatusOr<std::vector<SubvolumeInfo>> ListSubvolumes(const std::string& dir) override;
  absl::Status SetReadOnly(const std::string& path, bool read_only) override;
  absl::Status RenameSubvolume(const std::string& from, const std::string& to) override;
  absl::Status Send(const std::string& snapshot, const std::optional<std::string>& parent,
                    ByteSink& sink) override;
  using Btrfs::Receive;
  absl::StatusOr<std::string> Receive(const std::string& dest_dir, ByteSource& source,
                                      const ReceiveOptions& options) override;

  // Fault injection: the next call of `op` fails with `status` and changes nothing.
  void FailNext(Op op, absl::Status status);
  // How many subvolumes exist.
  size_t subvolume_count() const;

 private:
  struct Subvolume {
    SubvolumeInfo info;
  };
  absl::Status TakeInjectedFailure(Op op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Subvolume NewSubvolume(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckIsSubvolumeLocked(const std::string& path) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The uuid a stream names a subvolume by: its received_uuid if it has one, else its uuid.
  static std::string StreamUuid(const SubvolumeInfo& info);
  absl::StatusOr<std::string> ReceiveLocked(const std::string& dest_dir, std::string_view stream,
                                            const ReceiveOptions& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Subvolume> subvolumes_ ABSL_GUARDED_BY(mu_);  // by normalized path
  std::map<Op, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 256;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace snapledger
