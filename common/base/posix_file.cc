#include "common/base/posix_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"

namespace snapledger {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

absl::Status ErrnoStatus(std::string_view what, int err) {
  std::string msg = absl::StrCat(std::string(what), ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, int mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", path), errno);
  return UniqueFd(fd);
}

absl::Status WriteAll(int fd, std::string_view data, std::string_view what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("write ", std::string(what)), errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& dir) {
  auto fd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return fd.status();
  if (::fsync(fd->get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", dir), errno);
  return absl::OkStatus();
}

absl::Status SyncFilesystem(const std::string& path) {
  auto fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  if (::syncfs(fd->get()) != 0) return ErrnoStatus(absl::StrCat("syncfs ", path), errno);
  return absl::OkStatus();
}

absl::Status StartWriteback(const std::string& path) {
  // Never blocks in open (a FIFO) and never follows a symlink: only a regular file is touched.
  auto fd = OpenFile(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  if (::sync_file_range(fd->get(), 0, 0, SYNC_FILE_RANGE_WRITE) != 0)
    return ErrnoStatus(absl::StrCat("start writeback of ", path), errno);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view contents) {
  std::filesystem::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  std::string tmp = absl::StrCat(dir, "/.", target.filename().string(), ".tmp");
  {
    auto fd = OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!fd.ok()) return fd.status();
    if (auto st = WriteAll(fd->get(), contents, tmp); !st.ok()) return st;
    if (::fsync(fd->get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", tmp), errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return ErrnoStatus(absl::StrCat("rename ", tmp, " to ", path), errno);
  return SyncDir(dir);
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  auto fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("read ", path), errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::StatusOr<MappedFile> MappedFile::Open(const std::string& path) {
  auto fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  MappedFile m;
  m.size_ = static_cast<size_t>(st.st_size);
  if (m.size_ == 0) return m;
  m.addr_ = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd->get(), 0);
  if (m.addr_ == MAP_FAILED) {
    m.addr_ = nullptr;
    return ErrnoStatus(absl::StrCat("mmap ", path), errno);
  }
  ::madvise(m.addr_, m.size_, MADV_SEQUENTIAL);
  return m;
}

MappedFile::~MappedFile() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (addr_ != nullptr) ::munmap(addr_, size_);
    addr_ = std::exchange(o.addr_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

}  // namespace snapledger
