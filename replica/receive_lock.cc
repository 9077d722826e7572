#include "replica/receive_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

absl::StatusOr<UniqueFd> OpenLockFile(const std::string& root) {
  return OpenFile(ReceiveLockPath(root), O_RDWR | O_CREAT, 0600);
}

// Takes the lock on `fd` (`how`: LOCK_EX or LOCK_SH) without waiting. True when taken; false
// when someone else holds it in a conflicting way.
absl::StatusOr<bool> TryLock(const UniqueFd& fd, int how, const std::string& root) {
  while (::flock(fd.get(), how | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    return ErrnoStatus(absl::StrCat("flock ", ReceiveLockPath(root)), errno);
  }
  return true;
}

}  // namespace

std::string ReceiveLockPath(const std::string& root) {
  return absl::StrCat(root, "/.receive.lock");
}

absl::StatusOr<ReceiveLock> ReceiveLock::Acquire(const std::string& root, absl::Duration patience,
                                                 Clock* clock) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenLockFile(root));
  const absl::Time give_up = clock->Now() + patience;
  absl::Duration pause = absl::Milliseconds(1);
  while (true) {
    ASSIGN_OR_RETURN(bool taken, TryLock(fd, LOCK_EX, root));
    if (taken) return ReceiveLock(std::move(fd));
    const absl::Time now = clock->Now();
    if (now >= give_up)
      return absl::FailedPreconditionError(
          absl::StrCat("another receive is running on ", root, " (", ReceiveLockPath(root),
                       " still held after ", absl::FormatDuration(patience), ")"));
    clock->SleepFor(std::min(pause, give_up - now));
    pause = std::min(pause * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<std::optional<ReceiveLock>> ReceiveLock::TryAcquire(const std::string& root) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenLockFile(root));
  ASSIGN_OR_RETURN(bool taken, TryLock(fd, LOCK_EX, root));
  if (!taken) return std::nullopt;
  return ReceiveLock(std::move(fd));
}

absl::StatusOr<bool> ReceiveInProgress(const std::string& root) {
  absl::StatusOr<UniqueFd> fd = OpenFile(ReceiveLockPath(root), O_RDONLY);
  if (absl::IsNotFound(fd.status())) return false;
  if (!fd.ok()) return fd.status();
  ASSIGN_OR_RETURN(bool free, TryLock(*fd, LOCK_SH, root));  // released as fd closes
  return !free;
}

}  // namespace snapledger
