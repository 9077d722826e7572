// The btrfs layer: the few subvolume operations snapledger needs, behind one interface.
//
// Business logic sees only `Btrfs`. Btrfs::Linux() is the real one (libbtrfsutil for
// subvolume operations, `btrfs send` / `btrfs receive` from btrfs-progs for streams);
// common/memory_btrfs.h is an in-memory double for unit tests. Integration tests use the real
// one on loop-mounted filesystems.
//
// Paths are absolute or relative to the working directory. Errors name the operation and the
// path; errors of btrfs-progs commands quote their stderr. Codes: NotFound (path missing),
// AlreadyExists (destination exists), InvalidArgument (not a subvolume), FailedPrecondition
// (not on btrfs), PermissionDenied, Internal (a command failed), Aborted (a command was killed).
//
// Implementations are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/byte_stream.h"
#include "common/process.h"

namespace snapledger {

// What btrfs knows about one subvolume. UUIDs are lowercase 8-4-4-4-12 hex, "" when unset.
struct SubvolumeInfo {
  std::string path;  // the path it was looked up or listed by
  uint64_t id = 0;   // subvolume (tree) id, unique within the filesystem
  std::string uuid;
  std::string parent_uuid;    // of the subvolume this is a snapshot of; "" if not a snapshot
  std::string received_uuid;  // of the sent subvolume this was received from; "" if not received
  bool read_only = false;
  uint64_t generation = 0;  // transaction id of the subvolume's root
  uint64_t otransid = 0;    // transaction id when it was created
};

enum class SnapshotKind { kReadOnly, kWritable };

class Btrfs;
using BtrfsPtr = std::unique_ptr<Btrfs>;

class Btrfs {
 public:
  virtual ~Btrfs() = default;

  // The real implementation. `runner` starts btrfs-progs for Send and Receive; not owned, must
  // outlive the returned object.
  static BtrfsPtr Linux(ProcessRunner* runner = ProcessRunner::Real());

  // OK when `path` is on a btrfs filesystem. FailedPrecondition otherwise, with a message
  // telling the user what to do; NotFound when `path` does not exist.
  virtual absl::Status CheckIsBtrfs(const std::string& path) = 0;

  // Creates an empty writable subvolume at `path`, whose parent directory must exist.
  virtual absl::Status CreateSubvolume(const std::string& path) = 0;

  // Snapshots subvolume `source` to the new path `dest` (atomic; nested subvolumes are not
  // included). A kReadOnly snapshot can be sent with Send.
  virtual absl::Status CreateSnapshot(const std::string& source, const std::string& dest,
                                      SnapshotKind kind) = 0;

  // Deletes the subvolume at `path` and everything in it, read-only or not. InvalidArgument
  // when `path` is a plain directory (nothing is deleted).
  virtual absl::Status DeleteSubvolume(const std::string& path) = 0;

  // Information about the subvolume whose root is `path` (InvalidArgument for a plain
  // directory, even one inside a subvolume).
  virtual absl::StatusOr<SubvolumeInfo> GetSubvolumeInfo(const std::string& path) = 0;

  // The subvolumes that are direct entries of directory `dir` (not nested deeper), sorted by
  // path. Plain directories and files are left out.
  virtual absl::StatusOr<std::vector<SubvolumeInfo>> ListSubvolumes(const std::string& dir) = 0;

  // Sets or clears the read-only flag of subvolume `path`. Note that clearing it on a received
  // subvolume may be refused or clear its received_uuid (kernel and btrfs-progs dependent).
  virtual absl::Status SetReadOnly(const std::string& path, bool read_only) = 0;

  // Makes `dest` a read-only copy of the received subvolume `source` that keeps its received
  // identity (received_uuid and the sender's transaction id), so later `btrfs receive -p`
  // deltas still find it as their parent. btrfs refuses to move a read-only subvolume to
  // another directory; this is how a verified block goes from incoming/ to blocks/: a writable
  // snapshot, the received identity set on it (BTRFS_IOC_SET_RECEIVED_SUBVOL, as btrfs receive
  // itself does), then read-only. `source` is left in place for the caller to delete. On
  // error `dest` does not exist.
  virtual absl::Status PromoteReceived(const std::string& source, const std::string& dest) = 0;

  // Writes the send stream of read-only subvolume `snapshot` to `sink`: a full stream, or with
  // `parent` (a read-only snapshot of the same lineage present on the receiving side) a delta
  // against it (`btrfs send -p`). Returns when the stream is complete; does not Close `sink`.
  // If the sink fails, the sender is killed and the sink's error returned.
  virtual absl::Status Send(const std::string& snapshot, const std::optional<std::string>& parent,
                            ByteSink& sink) = 0;

  // Reads one send stream from `source` until end of stream and applies it in directory
  // `dest_dir` (`btrfs receive`), which creates one new read-only subvolume there named after
  // the sent one, with received_uuid set. Returns that subvolume's path. On any error no new
  // subvolume is left behind in `dest_dir` (a partial one is deleted). Run at most one Receive
  // per `dest_dir` at a time: the new subvolume is found by comparing listings.
  virtual absl::StatusOr<std::string> Receive(const std::string& dest_dir, ByteSource& source) = 0;
};

}  // namespace snapledger
