#include "common/btrfs/send_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/crc.hpp>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

// SUBVOL and SNAPSHOT carry a path and a few uuids and numbers; a first command claiming more
// than a v1 command may hold is not read into memory.
constexpr uint32_t kMaxFirstCommandPayload = 64 * 1024;
constexpr size_t kCopyChunk = 256 * 1024;
constexpr size_t kMaxSpliceChunk = 1 << 20;
constexpr int kPipeSize = 1 << 20;  // the default /proc/sys/fs/pipe-max-size
constexpr size_t kCrcOffset = 6;    // in the command header

uint16_t Le16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>(u[0] | u[1] << 8);
}

uint32_t Le32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | static_cast<uint32_t>(u[1]) << 8 |
         static_cast<uint32_t>(u[2]) << 16 | static_cast<uint32_t>(u[3]) << 24;
}

void AppendLe16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>(v >> 8));
}

void AppendLe32(std::string* out, uint32_t v) {
  for (int shift = 0; shift < 32; shift += 8)
    out->push_back(static_cast<char>((v >> shift) & 0xff));
}

void StoreLe32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// The crc of a whole command (header and payload) with its crc field taken as zero.
uint32_t CommandCrc(std::string_view command) {
  std::string copy(command);
  StoreLe32(copy.data() + kCrcOffset, 0);
  return SendStreamCrc32c(copy);
}

// One attribute of a command's payload: where its header starts and where its value is.
struct Attribute {
  uint16_t type = 0;
  size_t header_offset = 0;
  size_t value_offset = 0;
  size_t value_size = 0;
};

// `what` names the command in messages.
absl::StatusOr<std::vector<Attribute>> SplitAttributes(std::string_view payload, uint32_t version,
                                                       std::string_view what) {
  std::vector<Attribute> out;
  size_t pos = 0;
  while (pos < payload.size()) {
    Attribute a;
    a.header_offset = pos;
    if (payload.size() - pos < 2)
      return absl::DataLossError(
          absl::StrFormat("%s: attribute header at payload byte %d is cut off", what, pos));
    a.type = Le16(payload.data() + pos);
    pos += 2;
    if (version >= 2 && a.type == kSendAttributeData) {
      a.value_size = payload.size() - pos;  // no length: runs to the end of the command
    } else {
      if (payload.size() - pos < 2)
        return absl::DataLossError(absl::StrFormat("%s: attribute %d at payload byte %d is cut off",
                                                   what, a.type, a.header_offset));
      a.value_size = Le16(payload.data() + pos);
      pos += 2;
    }
    a.value_offset = pos;
    if (payload.size() - pos < a.value_size)
      return absl::DataLossError(
          absl::StrFormat("%s: attribute %d at payload byte %d claims %d bytes, %d remain", what,
                          a.type, a.header_offset, a.value_size, payload.size() - pos));
    pos += a.value_size;
    out.push_back(a);
  }
  return out;
}

struct ParsedStart {
  SendStreamStart start;
  std::vector<Attribute> attributes;
  size_t path_index = 0;  // into attributes
};

absl::StatusOr<ParsedStart> ParseStart(std::string_view stream) {
  ASSIGN_OR_RETURN(size_t size, SendStreamStartSize(stream));
  if (stream.size() < size)
    return absl::DataLossError(absl::StrFormat(
        "send stream truncated in its first command (%d of %d bytes)", stream.size(), size));
  ParsedStart p;
  p.start.version = Le32(stream.data() + kSendStreamMagic.size());
  p.start.size = size;
  std::string_view command = stream.substr(kSendStreamHeaderSize, size - kSendStreamHeaderSize);
  SendCommandHeader header = DecodeSendCommandHeader(command);
  p.start.command = header.command;
  if (uint32_t crc = CommandCrc(command); crc != header.crc)
    return absl::DataLossError(absl::StrFormat(
        "crc mismatch in the send stream's first command: it says 0x%08x, its bytes give 0x%08x",
        header.crc, crc));
  ASSIGN_OR_RETURN(p.attributes, SplitAttributes(command.substr(kSendCommandHeaderSize),
                                                 p.start.version, "send stream's first command"));
  std::optional<size_t> path;
  for (size_t i = 0; i < p.attributes.size(); ++i) {
    if (p.attributes[i].type != kSendAttributePath) continue;
    if (path)
      return absl::DataLossError(
          "the send stream's first command has more than one PATH attribute");
    path = i;
  }
  if (!path) return absl::DataLossError("the send stream's first command has no PATH attribute");
  p.path_index = *path;
  const Attribute& a = p.attributes[*path];
  p.start.subvolume =
      std::string(command.substr(kSendCommandHeaderSize + a.value_offset, a.value_size));
  return p;
}

// The framing errors of a forwarded stream, the same in both ways of forwarding. `index` is
// the number of the command concerned (the start is command 1).
absl::Status SecondSubvolumeError(uint64_t index, uint16_t command) {
  return absl::DataLossError(absl::StrFormat(
      "send stream carries a second subvolume (command %d is %s); one stream must carry one", index,
      command == kSendCommandSubvol ? "SUBVOL" : "SNAPSHOT"));
}

absl::Status NoEndError(uint64_t last_index) {
  return absl::DataLossError(absl::StrFormat(
      "send stream ended after command %d without an END command (truncated)", last_index));
}

absl::Status HeaderCutError(uint64_t index) {
  return absl::DataLossError(
      absl::StrFormat("send stream truncated in the header of command %d", index));
}

absl::Status AfterEndError(uint64_t end_index) {
  return absl::DataLossError(absl::StrFormat(
      "send stream continues after its END command (command %d): a second stream", end_index));
}

}  // namespace

uint32_t SendStreamCrc32c(std::string_view data) {
  boost::crc_optimal<32, 0x1EDC6F41, 0, 0, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

absl::StatusOr<std::vector<SendAttribute>> ParseSendAttributes(std::string_view payload,
                                                               uint32_t version) {
  ASSIGN_OR_RETURN(std::vector<Attribute> split, SplitAttributes(payload, version, "command"));
  std::vector<SendAttribute> out;
  out.reserve(split.size());
  for (const Attribute& a : split)
    out.push_back({a.type, payload.substr(a.value_offset, a.value_size)});
  return out;
}

SendCommandHeader DecodeSendCommandHeader(std::string_view bytes) {
  return {Le32(bytes.data()), Le16(bytes.data() + 4), Le32(bytes.data() + kCrcOffset)};
}

absl::StatusOr<size_t> SendStreamStartSize(std::string_view prefix) {
  if (prefix.empty()) return absl::DataLossError("empty send stream");
  if (prefix.size() < kSendStreamHeaderSize)
    return absl::DataLossError(
        absl::StrFormat("send stream truncated in its header (%d of %d bytes)", prefix.size(),
                        kSendStreamHeaderSize));
  if (prefix.substr(0, kSendStreamMagic.size()) != kSendStreamMagic)
    return absl::DataLossError("not a btrfs send stream: its header lacks the magic btrfs-stream");
  uint32_t version = Le32(prefix.data() + kSendStreamMagic.size());
  if (version == 0 || version > kMaxSendStreamVersion)
    return absl::DataLossError(absl::StrFormat("send stream version %d is not supported (1 to %d)",
                                               version, kMaxSendStreamVersion));
  if (prefix.size() < kSendStreamHeaderSize + kSendCommandHeaderSize)
    return absl::DataLossError("send stream truncated in its first command's header");
  SendCommandHeader header = DecodeSendCommandHeader(prefix.substr(kSendStreamHeaderSize));
  if (header.command != kSendCommandSubvol && header.command != kSendCommandSnapshot)
    return absl::DataLossError(
        absl::StrFormat("the send stream's first command is %d, not SUBVOL (%d) or SNAPSHOT (%d)",
                        header.command, kSendCommandSubvol, kSendCommandSnapshot));
  if (header.length > kMaxFirstCommandPayload)
    return absl::DataLossError(
        absl::StrFormat("the send stream's first command claims %d bytes (at most %d expected)",
                        header.length, kMaxFirstCommandPayload));
  return kSendStreamHeaderSize + kSendCommandHeaderSize + header.length;
}

absl::StatusOr<SendStreamStart> ParseSendStreamStart(std::string_view stream) {
  ASSIGN_OR_RETURN(ParsedStart p, ParseStart(stream));
  return p.start;
}

absl::StatusOr<std::string> RenameSendStreamSubvolume(std::string_view stream,
                                                      std::string_view name) {
  RETURN_IF_ERROR(ValidateSubvolumeName(name));
  ASSIGN_OR_RETURN(ParsedStart p, ParseStart(stream));
  std::string_view payload =
      stream.substr(kSendStreamHeaderSize + kSendCommandHeaderSize,
                    p.start.size - kSendStreamHeaderSize - kSendCommandHeaderSize);
  const Attribute& path = p.attributes[p.path_index];
  std::string new_payload(payload.substr(0, path.header_offset));
  AppendLe16(&new_payload, kSendAttributePath);
  AppendLe16(&new_payload, static_cast<uint16_t>(name.size()));
  new_payload.append(name);
  new_payload.append(payload.substr(path.value_offset + path.value_size));

  std::string out(stream.substr(0, kSendStreamHeaderSize));
  AppendLe32(&out, static_cast<uint32_t>(new_payload.size()));
  AppendLe16(&out, p.start.command);
  AppendLe32(&out, 0);
  out.append(new_payload);
  StoreLe32(out.data() + kSendStreamHeaderSize + kCrcOffset,
            SendStreamCrc32c(std::string_view(out).substr(kSendStreamHeaderSize)));
  return out;
}

absl::Status ValidateSubvolumeName(std::string_view name) {
  const char* problem = nullptr;
  if (name.empty()) {
    problem = "it is empty";
  } else if (name == "." || name == "..") {
    problem = "it is a relative directory";
  } else if (name.find('/') != std::string_view::npos) {
    problem = "it contains '/'";
  } else if (name.find('\0') != std::string_view::npos) {
    problem = "it contains a NUL byte";
  } else if (name.size() > kMaxSubvolumeNameLength) {
    problem = "it is longer than 255 bytes";
  }
  if (problem == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("\"", absl::CHexEscape(absl::string_view(name.data(), name.size())),
                   "\" cannot name a subvolume: ", problem));
}

absl::StatusOr<std::string> ReadSendStreamStart(ByteSource& source) {
  // Exact reads only, never past the first command: the rest may be spliced from the fd.
  std::string bytes;
  auto read_to = [&](size_t size) -> absl::Status {
    size_t have = bytes.size();
    bytes.resize(size);
    while (have < size) {
      ASSIGN_OR_RETURN(size_t n, source.Read(bytes.data() + have, size - have));
      if (n == 0) break;
      have += n;
    }
    bytes.resize(have);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(read_to(kSendStreamHeaderSize + kSendCommandHeaderSize));
  ASSIGN_OR_RETURN(size_t size, SendStreamStartSize(bytes));
  RETURN_IF_ERROR(read_to(size));
  RETURN_IF_ERROR(ParseSendStreamStart(bytes).status());
  return bytes;
}

SendStreamForwarder::SendStreamForwarder(ByteSource& source, int pipe_fd,
                                         SendCommandObserver* observer)
    : source_(source),
      pipe_fd_(pipe_fd),
      observer_(observer),
      splice_fd_(observer == nullptr ? source.PassThroughFd() : -1) {}

absl::Status SendStreamForwarder::Forward(std::string_view start) {
  ScopedSigpipeBlock no_sigpipe;
  // Larger pipes (best effort): fewer, larger reads and writes on either side.
  (void)::fcntl(pipe_fd_, F_SETPIPE_SZ, kPipeSize);
  if (int fd = source_.PassThroughFd(); fd >= 0) (void)::fcntl(fd, F_SETPIPE_SZ, kPipeSize);
  RETURN_IF_ERROR(WriteToPipe(start));
  if (observer_ != nullptr) {
    ASSIGN_OR_RETURN(size_t start_size, SendStreamStartSize(start));
    if (start.size() != start_size)
      return absl::InvalidArgumentError("Forward: `start` is not exactly a stream start");
    return ForwardObserved(Le32(start.data() + kSendStreamMagic.size()));
  }
  for (uint64_t index = 2;; ++index) {
    char header[kSendCommandHeaderSize];
    ASSIGN_OR_RETURN(size_t n, ReadUpTo(header, sizeof header));
    if (n == 0) return NoEndError(index - 1);
    if (n < sizeof header) return HeaderCutError(index);
    SendCommandHeader h = DecodeSendCommandHeader(std::string_view(header, sizeof header));
    if (h.command == kSendCommandSubvol || h.command == kSendCommandSnapshot)
      return SecondSubvolumeError(index, h.command);
    RETURN_IF_ERROR(WriteToPipe(std::string_view(header, sizeof header)));
    absl::Status moved = Move(h.length);
    if (absl::IsOutOfRange(moved))
      return absl::DataLossError(
          absl::StrFormat("send stream truncated in command %d (%s)", index, moved.message()));
    RETURN_IF_ERROR(moved);
    if (h.command != kSendCommandEnd) continue;
    char extra;
    ASSIGN_OR_RETURN(size_t more, ReadUpTo(&extra, 1));
    if (more != 0) return AfterEndError(index);
    return absl::OkStatus();
  }
}

// Commands are read whole into buffer_, shown to the observer, and the complete ones in the
// buffer written to the pipe together.
absl::Status SendStreamForwarder::ForwardObserved(uint32_t version) {
  constexpr size_t kReadChunk = 1 << 20;
  constexpr size_t kCapacity = 4 * kReadChunk + kSendCommandHeaderSize + kMaxObservedCommandPayload;
  constexpr size_t kCompactAt = 256 << 10;
  std::unique_ptr<char[]> buf(new char[kCapacity]);  // [pos, end) is read, not yet forwarded
  size_t pos = 0, end = 0;
  for (uint64_t index = 2;;) {
    const size_t batch_start = pos;
    bool ended = false;
    size_t need = kSendCommandHeaderSize;  // bytes the next command needs in the buffer
    while (end - pos >= kSendCommandHeaderSize) {
      SendCommandHeader h =
          DecodeSendCommandHeader(std::string_view(buf.get() + pos, kSendCommandHeaderSize));
      if (h.command == kSendCommandSubvol || h.command == kSendCommandSnapshot)
        return SecondSubvolumeError(index, h.command);
      if (h.length > kMaxObservedCommandPayload)
        return absl::DataLossError(
            absl::StrFormat("send stream command %d claims %d bytes (at most %d expected)", index,
                            h.length, kMaxObservedCommandPayload));
      need = kSendCommandHeaderSize + h.length;
      if (end - pos < need) break;
      observer_->OnCommand(
          h.command, std::string_view(buf.get() + pos + kSendCommandHeaderSize, h.length), version);
      pos += need;
      need = kSendCommandHeaderSize;
      ++index;
      if (h.command == kSendCommandEnd) {
        ended = true;
        break;
      }
    }
    RETURN_IF_ERROR(WriteToPipe(std::string_view(buf.get() + batch_start, pos - batch_start)));
    if (ended) {
      bool more = pos < end;
      if (!more) {
        char extra;
        ASSIGN_OR_RETURN(size_t n, ReadUpTo(&extra, 1));
        more = n > 0;
      }
      if (!more) return absl::OkStatus();
      return AfterEndError(index - 1);
    }
    // Read more behind the incomplete command. Move it to the front when the room behind it
    // could not hold a whole command, and also once kCompactAt bytes before it are done
    // with: reads then land in the buffer's first ~1.3 MiB (kCompactAt, one read, one
    // command), not in fresh pages all through it (each first touch is a page fault, costly
    // on some hypervisors). The move copies one incomplete command (usually under 64 KiB) per
    // kCompactAt forwarded.
    if (kCapacity - end < kSendCommandHeaderSize + kMaxObservedCommandPayload ||
        pos >= kCompactAt) {
      std::memmove(buf.get(), buf.get() + pos, end - pos);
      end -= pos;
      pos = 0;
    }
    const size_t have = end - pos;
    absl::StatusOr<size_t> n = source_.Read(buf.get() + end, std::min(kCapacity - end, kReadChunk));
    if (!n.ok()) return SourceError(n.status());
    end += *n;
    if (*n > 0) continue;
    if (have == 0) return NoEndError(index - 1);
    if (have < kSendCommandHeaderSize) return HeaderCutError(index);
    return absl::DataLossError(
        absl::StrFormat("send stream truncated in command %d (%d of %d bytes)", index, have, need));
  }
}

absl::Status SendStreamForwarder::SourceError(const absl::Status& st) const {
  return absl::Status(st.code(), absl::StrCat("reading the send stream: ", st.message()));
}

absl::Status SendStreamForwarder::FillBuffer() {
  if (buffer_pos_ == buffer_.size()) {
    buffer_.clear();
    buffer_pos_ = 0;
  }
  size_t have = buffer_.size();
  buffer_.resize(have + kCopyChunk);
  absl::StatusOr<size_t> n = source_.Read(buffer_.data() + have, kCopyChunk);
  buffer_.resize(have + (n.ok() ? *n : 0));
  if (!n.ok()) return SourceError(n.status());
  return absl::OkStatus();
}

absl::StatusOr<size_t> SendStreamForwarder::ReadUpTo(char* buf, size_t size) {
  size_t got = 0;
  while (got < size) {
    if (buffer_pos_ < buffer_.size()) {
      size_t n = std::min(size - got, buffer_.size() - buffer_pos_);
      std::copy_n(buffer_.data() + buffer_pos_, n, buf + got);
      buffer_pos_ += n;
      got += n;
      continue;
    }
    if (spliced()) {
      // Exactly what is asked for: the payload that follows is spliced from the fd.
      absl::StatusOr<size_t> n = source_.Read(buf + got, size - got);
      if (!n.ok()) return SourceError(n.status());
      if (*n == 0) break;
      got += *n;
      continue;
    }
    size_t before = buffer_.size() - buffer_pos_;
    RETURN_IF_ERROR(FillBuffer());
    if (buffer_.size() - buffer_pos_ == before) break;  // end of stream
  }
  return got;
}

// Moves `size` bytes from the source to the pipe. OutOfRange (turned into DataLoss by the
// caller, who knows the command) when the source ends first.
absl::Status SendStreamForwarder::Move(uint64_t size) {
  uint64_t left = size;
  while (left > 0) {
    if (buffer_pos_ < buffer_.size()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, buffer_.size() - buffer_pos_));
      RETURN_IF_ERROR(WriteToPipe(std::string_view(buffer_.data() + buffer_pos_, n)));
      buffer_pos_ += n;
      left -= n;
      continue;
    }
    if (spliced()) {
      ASSIGN_OR_RETURN(uint64_t n, Splice(left));
      if (n == 0 && spliced())
        return absl::OutOfRangeError(absl::StrFormat("%d of %d payload bytes", size - left, size));
      forwarded_ += n;
      left -= n;
      continue;
    }
    RETURN_IF_ERROR(FillBuffer());
    if (buffer_pos_ == buffer_.size())
      return absl::OutOfRangeError(absl::StrFormat("%d of %d payload bytes", size - left, size));
  }
  return absl::OkStatus();
}

// Splices up to `size` bytes; 0 at the end of the source. When the source's fd cannot be
// spliced at all, falls back to copying (spliced() turns false) and returns 0.
absl::StatusOr<uint64_t> SendStreamForwarder::Splice(uint64_t size) {
  const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, kMaxSpliceChunk));
  for (;;) {
    ssize_t n =
        ::splice(splice_fd_, nullptr, pipe_fd_, nullptr, chunk, SPLICE_F_MOVE | SPLICE_F_MORE);
    if (n >= 0) return static_cast<uint64_t>(n);
    if (errno == EINTR) continue;
    if (errno == EPIPE) {
      pipe_failed_ = true;
      return ErrnoStatus("splice into the receiver's pipe", errno);
    }
    if (errno == EINVAL || errno == ENOSYS) {  // nothing was moved: copying is still correct
      splice_fd_ = -1;
      return 0;
    }
    return SourceError(ErrnoStatus("splice", errno));
  }
}

absl::Status SendStreamForwarder::WriteToPipe(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(pipe_fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      pipe_failed_ = true;
      return ErrnoStatus("write to the receiver's pipe", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
    forwarded_ += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace snapledger
