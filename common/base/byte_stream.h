// Byte streams: where a `btrfs send` stream goes and where a `btrfs receive` stream comes from.
// A sink or source may be a pipe, a file, a socket or (later) an ssh channel.
//
// Writing to a pipe whose reader is gone fails with an error status (EPIPE); it never raises
// SIGPIPE in the caller's process (the writers here block SIGPIPE around the write and consume
// it).
#pragma once

#include <signal.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/posix_file.h"

namespace snapledger {

// Blocks SIGPIPE for the calling thread while it lives, so that writing (or splicing) to a pipe
// whose reader has gone fails with EPIPE instead of killing the process; a SIGPIPE raised
// meanwhile is consumed. The process-wide disposition is left alone (it belongs to main()).
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock();
  ~ScopedSigpipeBlock();
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t sigpipe_;
  sigset_t old_mask_;
  bool was_pending_ = false;
};

// A destination of bytes. Not thread-safe: one writer at a time.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  // Writes all of `data` or fails. After an error the sink is unusable.
  virtual absl::Status Write(std::string_view data) = 0;
  // Ends the stream (the reader sees end of file). Idempotent. Producers such as Btrfs::Send
  // never call it: the owner of the sink decides when the stream ends.
  virtual absl::Status Close() = 0;
  // When >= 0, a producer that runs a child process may hand this fd to the child as its
  // stdout instead of copying bytes through Write (no copy through this process). Borrowed:
  // still owned by the sink.
  virtual int PassThroughFd() const { return -1; }
};

// A source of bytes. Not thread-safe: one reader at a time.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to `size` bytes into `buf`; returns 0 only at end of stream.
  virtual absl::StatusOr<size_t> Read(char* buf, size_t size) = 0;
  // Like ByteSink::PassThroughFd, for a child's stdin, or for splice(2). A source with one
  // does not buffer: after Read calls, the fd continues exactly where they stopped.
  virtual int PassThroughFd() const { return -1; }
};

// A sink writing to an owned file descriptor (a pipe, file or socket). Close() closes it.
class FdSink : public ByteSink {
 public:
  explicit FdSink(UniqueFd fd, std::string description = "fd sink");
  absl::Status Write(std::string_view data) override;
  absl::Status Close() override;
  int PassThroughFd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string description_;
};

// A source reading from an owned file descriptor.
class FdSource : public ByteSource {
 public:
  explicit FdSource(UniqueFd fd, std::string description = "fd source");
  absl::StatusOr<size_t> Read(char* buf, size_t size) override;
  int PassThroughFd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string description_;
};

// A sink appending to a string in memory (tests, small streams).
class StringSink : public ByteSink {
 public:
  absl::Status Write(std::string_view data) override;
  absl::Status Close() override;
  const std::string& data() const { return data_; }
  bool closed() const { return closed_; }

 private:
  std::string data_;
  bool closed_ = false;
};

// A source reading from a string in memory (tests, small streams).
class StringSource : public ByteSource {
 public:
  explicit StringSource(std::string data) : data_(std::move(data)) {}
  absl::StatusOr<size_t> Read(char* buf, size_t size) override;

 private:
  std::string data_;
  size_t offset_ = 0;
};

// A pipe's two ends, both O_CLOEXEC: `read` for a ByteSource, `write` for a ByteSink.
struct Pipe {
  UniqueFd read;
  UniqueFd write;
};
absl::StatusOr<Pipe> MakePipe();

// Writes all of `data` to `fd` with SIGPIPE blocked for the calling thread, so a reader that has
// gone yields an EPIPE error instead of killing the process.
absl::Status WriteAllNoSigpipe(int fd, std::string_view data, std::string_view what);

// Copies `source` to `sink` until end of stream (does not Close the sink). Returns the number
// of bytes copied; errors say which side failed.
absl::StatusOr<uint64_t> CopyStream(ByteSource& source, ByteSink& sink);

}  // namespace snapledger
