#include "common/base/byte_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

constexpr size_t kCopyChunk = 256 * 1024;

}  // namespace

// SIGPIPE for a write to a pipe is sent to the writing thread. Blocking it for the duration of
// the write and consuming it afterwards turns "reader gone" into EPIPE without changing the
// process-wide disposition (which belongs to main()).
ScopedSigpipeBlock::ScopedSigpipeBlock() {
  sigemptyset(&sigpipe_);
  sigaddset(&sigpipe_, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &sigpipe_, &old_mask_);
}

ScopedSigpipeBlock::~ScopedSigpipeBlock() {
  if (!was_pending_) {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) == 1) {
      struct timespec zero = {0, 0};
      while (sigtimedwait(&sigpipe_, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

absl::Status WriteAllNoSigpipe(int fd, std::string_view data, std::string_view what) {
  ScopedSigpipeBlock block;
  return WriteAll(fd, data, what);
}

FdSink::FdSink(UniqueFd fd, std::string description)
    : fd_(std::move(fd)), description_(std::move(description)) {}

absl::Status FdSink::Write(std::string_view data) {
  if (!fd_.valid()) return absl::FailedPreconditionError(description_ + ": write after close");
  return WriteAllNoSigpipe(fd_.get(), data, description_);
}

absl::Status FdSink::Close() {
  if (!fd_.valid()) return absl::OkStatus();
  int fd = fd_.Release();
  if (::close(fd) != 0 && errno != EINTR) return ErrnoStatus("close " + description_, errno);
  return absl::OkStatus();
}

FdSource::FdSource(UniqueFd fd, std::string description)
    : fd_(std::move(fd)), description_(std::move(description)) {}

absl::StatusOr<size_t> FdSource::Read(char* buf, size_t size) {
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, size);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return ErrnoStatus("read " + description_, errno);
  }
}

absl::Status StringSink::Write(std::string_view data) {
  if (closed_) return absl::FailedPreconditionError("string sink: write after close");
  data_.append(data);
  return absl::OkStatus();
}

absl::Status StringSink::Close() {
  closed_ = true;
  return absl::OkStatus();
}

absl::StatusOr<size_t> StringSource::Read(char* buf, size_t size) {
  size_t n = std::min(size, data_.size() - offset_);
  std::memcpy(buf, data_.data() + offset_, n);
  offset_ += n;
  return n;
}

absl::StatusOr<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

absl::StatusOr<uint64_t> CopyStream(ByteSource& source, ByteSink& sink) {
  std::vector<char> buf(kCopyChunk);
  uint64_t total = 0;
  for (;;) {
    absl::StatusOr<size_t> n = source.Read(buf.data(), buf.size());
    if (!n.ok())
      return absl::Status(n.status().code(), absl::StrCat("source: ", n.status().message()));
    if (*n == 0) return total;
    absl::Status st = sink.Write(std::string_view(buf.data(), *n));
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat("sink: ", st.message()));
    total += *n;
  }
}

}  // namespace snapledger
