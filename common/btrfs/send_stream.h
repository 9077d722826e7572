// The framing of a `btrfs send` stream, as far as receiving one block needs it: renaming the
// subvolume the stream creates, and feeding the stream to `btrfs receive` one command at a
// time so that it can create nothing else.
//
// A stream is a header, "btrfs-stream\0" and a le32 version (1 to 3), then commands: le32
// length of the payload, le16 command, le32 crc32c of header and payload (computed with the crc
// field zero), then the payload, attributes each le16 type, le16 length and value (from version
// 2 a DATA attribute has no length and runs to the end of its command). `btrfs send` of one
// subvolume starts with the command that creates it, SUBVOL (a full send) or SNAPSHOT (a
// delta), whose PATH attribute is the name `btrfs receive` gives it, and ends with END.
// (Layout from btrfs-progs' send.h and send-stream.c.)
//
// The parsing functions are pure and thread-safe. A SendStreamForwarder serves one transfer
// and is not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/byte_stream.h"

namespace snapledger {

inline constexpr std::string_view kSendStreamMagic{"btrfs-stream\0", 13};
inline constexpr size_t kSendStreamHeaderSize = 17;   // magic + le32 version
inline constexpr size_t kSendCommandHeaderSize = 10;  // le32 length, le16 command, le32 crc
inline constexpr uint32_t kMaxSendStreamVersion = 3;

inline constexpr uint16_t kSendCommandSubvol = 1;
inline constexpr uint16_t kSendCommandSnapshot = 2;
inline constexpr uint16_t kSendCommandMkfile = 3;
inline constexpr uint16_t kSendCommandMkdir = 4;
inline constexpr uint16_t kSendCommandRename = 9;
inline constexpr uint16_t kSendCommandUnlink = 11;
inline constexpr uint16_t kSendCommandRmdir = 12;
inline constexpr uint16_t kSendCommandSetXattr = 13;
inline constexpr uint16_t kSendCommandRemoveXattr = 14;
inline constexpr uint16_t kSendCommandWrite = 15;
inline constexpr uint16_t kSendCommandClone = 16;
inline constexpr uint16_t kSendCommandTruncate = 17;
inline constexpr uint16_t kSendCommandChmod = 18;
inline constexpr uint16_t kSendCommandChown = 19;
inline constexpr uint16_t kSendCommandUtimes = 20;
inline constexpr uint16_t kSendCommandEnd = 21;
inline constexpr uint16_t kSendCommandUpdateExtent = 22;
inline constexpr uint16_t kSendCommandFallocate = 23;     // version 2
inline constexpr uint16_t kSendCommandFileattr = 24;      // version 2
inline constexpr uint16_t kSendCommandEncodedWrite = 25;  // version 2

inline constexpr uint16_t kSendAttributePath = 15;
inline constexpr uint16_t kSendAttributePathTo = 16;
inline constexpr uint16_t kSendAttributePathLink = 17;
inline constexpr uint16_t kSendAttributeFileOffset = 18;
inline constexpr uint16_t kSendAttributeData = 19;
inline constexpr uint16_t kSendAttributeClonePath = 22;

// The largest command payload accepted when commands are read whole (SendCommandObserver): a
// version 1 command holds at most 64 KiB, a version 2 encoded write about 144 KiB.
inline constexpr uint32_t kMaxObservedCommandPayload = 1 << 20;

// The longest name a subvolume can have (a directory entry: NAME_MAX).
inline constexpr size_t kMaxSubvolumeNameLength = 255;

// crc32c (Castagnoli, reflected) as btrfs computes it over send stream commands: seed 0 and no
// final inversion, unlike the common crc32c (seed and final xor 0xffffffff).
uint32_t SendStreamCrc32c(std::string_view data);

struct SendCommandHeader {
  uint32_t length = 0;  // of the payload, the header excluded
  uint16_t command = 0;
  uint32_t crc = 0;
};

// Decodes the first kSendCommandHeaderSize bytes of `bytes`, which must have at least that many.
SendCommandHeader DecodeSendCommandHeader(std::string_view bytes);

// The stream header and the command that creates the subvolume.
struct SendStreamStart {
  uint32_t version = 0;
  uint16_t command = 0;   // kSendCommandSubvol or kSendCommandSnapshot
  std::string subvolume;  // its PATH attribute, as sent
  size_t size = 0;        // bytes of header and first command
};

// How many bytes the header and first command take, from the first kSendStreamHeaderSize +
// kSendCommandHeaderSize bytes of a stream (later bytes are ignored). DataLoss for a bad magic,
// an unsupported version or fewer bytes.
absl::StatusOr<size_t> SendStreamStartSize(std::string_view prefix);

// Parses the header and first command at the front of `stream` (later bytes are ignored).
// DataLoss, saying what is wrong, for: a bad magic, an unsupported version, fewer bytes than
// the header and first command, a crc mismatch, a first command other than SUBVOL or SNAPSHOT,
// attributes that overrun the command, no PATH attribute or more than one.
absl::StatusOr<SendStreamStart> ParseSendStreamStart(std::string_view stream);

// The header and first command of `stream` with the subvolume renamed to `name`: the PATH
// attribute replaced in place, the other attributes kept as they were, the command's length
// and crc recomputed. It replaces the first ParseSendStreamStart(stream)->size bytes. DataLoss
// as ParseSendStreamStart; InvalidArgument when `name` is not a valid subvolume name.
absl::StatusOr<std::string> RenameSendStreamSubvolume(std::string_view stream,
                                                      std::string_view name);

// One attribute of a command: its type and its value (a view into the payload).
struct SendAttribute {
  uint16_t type = 0;
  std::string_view value;
};

// Splits a command's payload into its attributes (for `version`: from 2, DATA runs to the end
// of the command). DataLoss, saying at which payload byte, when an attribute overruns it.
absl::StatusOr<std::vector<SendAttribute>> ParseSendAttributes(std::string_view payload,
                                                               uint32_t version);

// Sees each command of a stream that a SendStreamForwarder passes on, before `btrfs receive`
// gets it. For following what a stream does, e.g. verifying data as it arrives.
class SendCommandObserver {
 public:
  virtual ~SendCommandObserver() = default;
  // Called once per command after the start, in stream order, END included. `payload` (the
  // command without its 10-byte header) is valid only during the call. The crc is not checked
  // yet: `btrfs receive` does that, and a stream it refuses fails the transfer.
  virtual void OnCommand(uint16_t command, std::string_view payload, uint32_t version) = 0;
};

// OK when `name` can name a new subvolume inside a directory: one path component (no '/'),
// not "." or "..", no NUL, 1 to kMaxSubvolumeNameLength bytes. InvalidArgument otherwise,
// quoting it.
absl::Status ValidateSubvolumeName(std::string_view name);

// Reads exactly the header and first command of a stream from `source` (nothing after them:
// the rest can still be read, or spliced from the source's PassThroughFd). DataLoss as
// ParseSendStreamStart (an empty source is "empty send stream"); the source's own errors as
// they came. Returns the bytes read.
absl::StatusOr<std::string> ReadSendStreamStart(ByteSource& source);

// Feeds one send stream to `btrfs receive` through a pipe: first its start (read with
// ReadSendStreamStart and perhaps renamed), then the rest of `source`, one command at a time.
// Commands are passed on unchanged and unchecked (`btrfs receive` checks their crc), but the
// framing is enforced, so that nothing but the one subvolume of the start can be created:
// DataLoss for a later SUBVOL or SNAPSHOT command (a second subvolume), a stream that ends
// before its END command (truncated) and bytes after END (a second stream).
//
// Without an observer, the bytes do not pass through this process when `source` has a
// PassThroughFd: only the 10-byte command headers are read, the payloads move with splice(2).
// Otherwise (or if the fd cannot be spliced) they are copied through a buffer. With an
// observer, commands are read whole (DataLoss for one claiming more than
// kMaxObservedCommandPayload bytes), shown to it, and written on in batches. SIGPIPE is blocked
// while forwarding.
class SendStreamForwarder {
 public:
  // `source`, the pipe's write end `pipe_fd` and `observer` (may be null) are borrowed and
  // must outlive this. `source` must be positioned right after the stream start.
  SendStreamForwarder(ByteSource& source, int pipe_fd, SendCommandObserver* observer = nullptr);
  SendStreamForwarder(const SendStreamForwarder&) = delete;
  SendStreamForwarder& operator=(const SendStreamForwarder&) = delete;

  // Writes `start`, then forwards the rest of the stream. Returns when END was forwarded and
  // the source ended; does not close the pipe. Call once.
  absl::Status Forward(std::string_view start);

  // After Forward failed: true when writing to the pipe failed (its reader is gone: look at
  // the reader's error), false when the source or the stream was at fault.
  bool pipe_failed() const { return pipe_failed_; }
  // Bytes written to the pipe so far.
  uint64_t bytes_forwarded() const { return forwarded_; }
  // Whether payloads moved with splice(2) (false after a fall back to copying).
  bool spliced() const { return splice_fd_ >= 0; }

 private:
  absl::Status ForwardObserved(uint32_t version);
  absl::StatusOr<size_t> ReadUpTo(char* buf, size_t size);
  absl::Status Move(uint64_t size);
  absl::StatusOr<uint64_t> Splice(uint64_t size);
  absl::Status FillBuffer();
  absl::Status WriteToPipe(std::string_view data);
  absl::Status SourceError(const absl::Status& st) const;

  ByteSource& source_;
  const int pipe_fd_;
  SendCommandObserver* const observer_;
  int splice_fd_;       // the source's fd while splicing works, else -1
  std::string buffer_;  // read from the source, not yet forwarded (copy mode only)
  size_t buffer_pos_ = 0;
  uint64_t forwarded_ = 0;
  bool pipe_failed_ = false;
};

}  // namespace snapledger
