// The btrfs layer: the few subvolume operations snapledger needs, behind one interface.
//
// Business logic sees only `Btrfs`. Btrfs::Linux() is the real one (libbtrfsutil for
// subvolume operations, `btrfs send` / `btrfs receive` from btrfs-progs for streams);
// common/testing/memory_btrfs.h is an in-memory double for unit tests. Integration tests use the
// real one on loop-mounted filesystems.
//
// Paths are absolute or relative to the working directory. Errors name the operation and the
// path; errors of btrfs-progs commands quote their stderr. Codes: NotFound (path missing),
// AlreadyExists (destination exists), InvalidArgument (not a subvolume), FailedPrecondition
// (not on btrfs), PermissionDenied, Internal (a command failed), Aborted (a command was killed),
// DataLoss (a malformed send stream).
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
#include "common/base/byte_stream.h"
#include "common/base/process.h"

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

class SendCommandObserver;

struct ReceiveOptions {
  // The name the received subvolume gets instead of the sent one's: one path component.
  std::optional<std::string> as_name;
  // When set, shown every command of the stream before `btrfs receive` gets it (the payloads
  // are then read through this process, not spliced). Borrowed. Implementations that do not
  // take a btrfs send stream (MemoryBtrfs) never call it.
  SendCommandObserver* observer = nullptr;
};

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
  // path. Plain directories and files are left out, as are subvolumes deleted while listing
  // (a receiver's hidden subvolume may go at any time).
  virtual absl::StatusOr<std::vector<SubvolumeInfo>> ListSubvolumes(const std::string& dir) = 0;

  // Sets or clears the read-only flag of subvolume `path`. Note that clearing it on a received
  // subvolume may be refused or clear its received_uuid (kernel and btrfs-progs dependent).
  virtual absl::Status SetReadOnly(const std::string& path, bool read_only) = 0;

  // Renames subvolume `from` to `to`, a new name in the same directory (btrfs refuses to move
  // a read-only subvolume to another directory): atomic, the subvolume keeps its identity
  // (uuid, received_uuid, read-only flag). AlreadyExists when `to` exists (nothing is
  // replaced), InvalidArgument when `to` is in another directory or `from` is not a
  // subvolume. The rename is not durable until the caller syncs the directory (SyncDir).
  virtual absl::Status RenameSubvolume(const std::string& from, const std::string& to) = 0;

  // Writes the send stream of read-only subvolume `snapshot` to `sink`: a full stream, or with
  // `parent` (a read-only snapshot of the same lineage present on the receiving side) a delta
  // against it (`btrfs send -p`). Returns when the stream is complete; does not Close `sink`.
  // If the sink fails, the sender is killed and the sink's error returned.
  virtual absl::Status Send(const std::string& snapshot, const std::optional<std::string>& parent,
                            ByteSink& sink) = 0;

  // Reads one send stream from `source` until its end and applies it in directory `dest_dir`
  // (`btrfs receive`), which creates one new read-only subvolume there with received_uuid set:
  // named `options.as_name` when given, else as the sent subvolume was. Returns its path.
  //
  // The stream must carry exactly one subvolume (what `btrfs send` of one subvolume writes):
  // its first command SUBVOL or SNAPSHOT with one PATH attribute, no later SUBVOL or SNAPSHOT,
  // an END command and nothing after it. For as_name, the first command is rewritten (PATH,
  // length, crc) and the rest passed on unchanged. Errors:
  //   - InvalidArgument: as_name is not one path component (no '/', not "." or "..");
  //   - DataLoss, saying what is wrong: a malformed header or first command (bad magic,
  //     unsupported version, crc mismatch, another first command, no or two PATH attributes,
  //     truncated), a sent name that is not one path component, a second subvolume, a stream
  //     cut before END or continuing after it;
  //   - AlreadyExists: the subvolume's path exists (it is left alone);
  //   - `btrfs receive` failing (its stderr quoted), the source's own errors.
  // On any error no new subvolume is left behind (a partial one is deleted); a malformed start
  // is refused before `btrfs receive` runs. Run at most one Receive per destination path at a
  // time.
  //
  // The stream reaches `btrfs receive` through a pipe, command by command: when `source` has a
  // PassThroughFd, only the first command and the 10-byte command headers are read by this
  // process, the rest is spliced (splice(2)), so it is not copied through this process.
  virtual absl::StatusOr<std::string> Receive(const std::string& dest_dir, ByteSource& source,
                                              const ReceiveOptions& options) = 0;
  // Receive with default options: the new subvolume keeps the sent name.
  absl::StatusOr<std::string> Receive(const std::string& dest_dir, ByteSource& source) {
    return Receive(dest_dir, source, ReceiveOptions{});
  }
};

}  // namespace snapledger
