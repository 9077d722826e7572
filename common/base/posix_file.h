// Small RAII wrappers and helpers over POSIX files.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace snapledger {

// An owned file descriptor; closed on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A Status for a failed system call: "<what>: <strerror(errno)>", code from errno.
absl::Status ErrnoStatus(std::string_view what, int err);

// Opens `path` with open(2) flags; errors name the path.
absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, int mode = 0644);

// Writes all of `data` at the current offset (retrying short writes and EINTR).
absl::Status WriteAll(int fd, std::string_view data, std::string_view what);

// fsync of the directory `dir` (makes renames and creations in it durable).
absl::Status SyncDir(const std::string& dir);

// syncfs(2) of the filesystem holding `path`: all of its dirty data and metadata written out
// and durable (on btrfs, a transaction commit after the data is flushed), whoever wrote it.
absl::Status SyncFilesystem(const std::string& path);

// Starts writing back the file's dirty pages without waiting for them (sync_file_range(2),
// SYNC_FILE_RANGE_WRITE), so that a later fsync or syncfs has less left to wait for. Makes
// nothing durable by itself. Only for a regular file: `path` is opened without following a
// symlink and without blocking (FailedPrecondition for anything else).
absl::Status StartWriteback(const std::string& path);

// Replaces `path` atomically and durably: writes `contents` to a temporary file beside it,
// fsyncs it, renames it over `path` and fsyncs the directory. Readers see the old or the new
// contents, never a mix.
absl::Status WriteFileAtomic(const std::string& path, std::string_view contents);

// Reads a whole file. NotFound if it does not exist.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// A read-only memory map of a whole file. Move-only; unmapped on destruction.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::string_view data() const { return {static_cast<const char*>(addr_), size_}; }

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace snapledger
