// The receive lock: an exclusive flock(2) on <root>/.receive.lock, held by whoever changes which
// blocks a replica holds. A receive (snapledger-receive) holds it for its whole transfer; the
// replica daemon holds it while it prunes old blocks, so it never deletes the parent of a delta
// being received. The kernel releases it when the holder closes the file or dies: a crashed
// receive never leaves it held.
//
// Thread-compatible; one ReceiveLock is one holding.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/base/posix_file.h"

namespace snapledger {

// <root>/.receive.lock
std::string ReceiveLockPath(const std::string& root);

class ReceiveLock {
 public:
  // Takes the lock, waiting up to `patience` while someone else holds it: long enough for the
  // daemon's pruning pass (a few subvolume deletions) or a failed transfer's receive that is
  // still cleaning up, and then FailedPrecondition ("another receive is running on <root>").
  // Creates the lock file when missing; errors opening it name the path. The patience is
  // measured, and the pauses between tries waited, on `clock` (borrowed for the call).
  static absl::StatusOr<ReceiveLock> Acquire(const std::string& root, absl::Duration patience,
                                             Clock* clock = Clock::Real());
  // Takes the lock only if nobody holds it (nullopt otherwise).
  static absl::StatusOr<std::optional<ReceiveLock>> TryAcquire(const std::string& root);

  ReceiveLock(ReceiveLock&&) = default;
  ReceiveLock& operator=(ReceiveLock&&) = default;
  ReceiveLock(const ReceiveLock&) = delete;
  ReceiveLock& operator=(const ReceiveLock&) = delete;

 private:
  explicit ReceiveLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // holds the flock; closing it releases
};

// Whether a receive is in progress on `root` (or the daemon is pruning) at this instant; false
// when the lock file does not exist yet (no receive ever ran). Errors opening or locking it
// name the path. When the lock is free it is taken (shared) for an instant: a receive starting
// at that moment waits that instant (Acquire's patience), and a pruning pass starting then
// (TryAcquire) is skipped until the next.
absl::StatusOr<bool> ReceiveInProgress(const std::string& root);

}  // namespace snapledger
