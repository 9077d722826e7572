// The receive session: one receive command on a replica takes block after block over one SSH
// channel, instead of sshd starting a new command (a fork of sshd, the login shell, the
// receive command and its set-up) for every block (docs/REPLICATION.md says what that saves).
//
// The primary execs `snapledger-receive --session`; then, per block, on the channel's stdin:
//
//   <request line>\n          the transfer options, as `snapledger-receive` takes them
//                             (--block ... --epoch ... [--parent ...] [--compress zstd]);
//                             at most kMaxRequestLine bytes
//   frames                    the block's stream (zstd-compressed when the request says so):
//                             u32 big-endian length L (1 <= L <= kMaxFrame), then L bytes
//   u32 0                     the end of this block's stream
//
// and the command answers on stdout with one verdict line per block (receive_protocol.h), as a
// one-block command does. A block that fails ends the session: after its failure verdict the
// command exits with the verdict's exit code, and the primary opens a new session for its next
// attempt. End of input between blocks ends the session cleanly (exit 0).
//
// This file holds the framing, shared by both sides. Pure apart from the byte streams they
// are given; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/byte_stream.h"

namespace snapledger {

inline constexpr size_t kMaxRequestLine = 4096;
inline constexpr uint32_t kMaxFrame = 16u << 20;

// Frames what is written to it into `out`: every Write becomes one frame (split at kMaxFrame),
// an empty Write nothing. A frame of up to 256 KiB reaches `out` as one Write of header and
// payload; a larger one as two. Close() writes the end marker, never closes `out` (the channel
// stays open for the next block). After an error the sink is unusable.
class FrameSink : public ByteSink {
 public:
  explicit FrameSink(ByteSink& out) : out_(out) {}
  absl::Status Write(std::string_view data) override;
  absl::Status Close() override;

 private:
  static constexpr size_t kJoinedFrame = 256 << 10;
  ByteSink& out_;
  std::string joined_;  // header and payload of a small frame
  bool closed_ = false;
};

// Reads a session's input: request lines and framed streams, from one underlying source
// (the command's stdin), buffering only what it has to.
class SessionReader {
 public:
  // `what` names the input in errors ("stdin").
  SessionReader(ByteSource& in, std::string what);

  // The next request line without its '\n'; nullopt at end of input before its first byte
  // (the session ended). InvalidArgument for a line longer than kMaxRequestLine; DataLoss for
  // one cut off by the end of input (the sender went away); errors of the source as they are.
  absl::StatusOr<std::optional<std::string>> ReadRequest();

  // The stream after the request just read: a ByteSource that ends (Read returns 0) at its end
  // marker. Its errors name the offset in the session's input: DataLoss for a frame longer
  // than kMaxFrame or input that ends inside a frame or before the end marker. Valid until
  // the next ReadRequest; at most one at a time.
  ByteSource& Stream();
  // Whether the current stream was read up to its end marker.
  bool StreamEnded() const { return stream_.ended(); }
  // The error the current stream's Read returned, if any (OK otherwise): tells a transfer cut
  // or garbled on the way from a block that did not verify.
  const absl::Status& StreamError() const { return stream_.error(); }

 private:
  class FramedStream : public ByteSource {
   public:
    explicit FramedStream(SessionReader& r) : r_(r) {}
    absl::StatusOr<size_t> Read(char* buf, size_t size) override;
    bool ended() const { return ended_; }
    const absl::Status& error() const { return error_; }
    // Starts the stream that follows a request line.
    void Begin() {
      ended_ = false;
      remaining_ = 0;
      error_ = absl::OkStatus();
    }

   private:
    absl::StatusOr<size_t> ReadFrames(char* buf, size_t size);
    SessionReader& r_;
    bool ended_ = true;       // the end marker was read (true before the first stream)
    uint32_t remaining_ = 0;  // bytes left in the current frame
    absl::Status error_;      // the first error Read returned for this stream
  };

  // Reads exactly `n` bytes (through the buffer); DataLoss naming `what` if input ends first.
  absl::Status ReadExact(char* out, size_t n, std::string_view what);
  // Fills the buffer with at least one more byte; false at end of input.
  absl::StatusOr<bool> Fill();

  ByteSource& in_;
  const std::string what_;
  std::string buf_;
  size_t begin_ = 0, end_ = 0;  // unread bytes are buf_[begin_, end_)
  uint64_t offset_ = 0;         // bytes of the input consumed so far
  FramedStream stream_{*this};
};

}  // namespace snapledger
