#include "common/transport/receive_session.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

constexpr size_t kBufferSize = 64 << 10;

void PutU32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

uint32_t GetU32(const char* p) {
  auto b = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

}  // namespace

absl::Status FrameSink::Write(std::string_view data) {
  if (closed_) return absl::FailedPreconditionError("frame sink: write after the end marker");
  while (!data.empty()) {
    const size_t n = std::min<size_t>(data.size(), kMaxFrame);
    if (n <= kJoinedFrame) {
      // Header and payload in one write: one SSH packet (and TCP segment) instead of two for
      // the small writes a delta of a few KiB is made of.
      joined_.resize(4 + n);
      PutU32(joined_.data(), static_cast<uint32_t>(n));
      std::memcpy(joined_.data() + 4, data.data(), n);
      RETURN_IF_ERROR(out_.Write(joined_));
    } else {
      char header[4];
      PutU32(header, static_cast<uint32_t>(n));
      RETURN_IF_ERROR(out_.Write(std::string_view(header, sizeof header)));
      RETURN_IF_ERROR(out_.Write(data.substr(0, n)));
    }
    data.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::Status FrameSink::Close() {
  if (closed_) return absl::OkStatus();
  closed_ = true;
  static constexpr char kEnd[4] = {0, 0, 0, 0};
  return out_.Write(std::string_view(kEnd, sizeof kEnd));
}

SessionReader::SessionReader(ByteSource& in, std::string what)
    : in_(in), what_(std::move(what)), buf_(kBufferSize, '\0') {}

absl::StatusOr<bool> SessionReader::Fill() {
  if (begin_ == end_) begin_ = end_ = 0;
  if (end_ == buf_.size()) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  ASSIGN_OR_RETURN(size_t n, in_.Read(buf_.data() + end_, buf_.size() - end_));
  end_ += n;
  return n > 0;
}

absl::Status SessionReader::ReadExact(char* out, size_t n, std::string_view what) {
  while (n > 0) {
    if (begin_ == end_) {
      ASSIGN_OR_RETURN(bool more, Fill());
      if (!more)
        return absl::DataLossError(
            absl::StrCat(what_, ": input ends at byte ", offset_, " inside ", std::string(what)));
    }
    const size_t take = std::min(n, end_ - begin_);
    std::memcpy(out, buf_.data() + begin_, take);
    begin_ += take;
    offset_ += take;
    out += take;
    n -= take;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> SessionReader::ReadRequest() {
  if (!stream_.ended())
    return absl::FailedPreconditionError(
        absl::StrCat(what_, ": the previous block's stream was not read to its end"));
  std::string line;
  while (true) {
    if (begin_ == end_) {
      ASSIGN_OR_RETURN(bool more, Fill());
      if (!more) {
        if (line.empty()) return std::nullopt;
        return absl::DataLossError(
            absl::StrCat(what_, ": input ends at byte ", offset_, " inside a request line"));
      }
    }
    const char* start = buf_.data() + begin_;
    const void* nl = std::memchr(start, '\n', end_ - begin_);
    const size_t take = nl ? static_cast<const char*>(nl) - start : end_ - begin_;
    if (line.size() + take > kMaxRequestLine)
      return absl::InvalidArgumentError(absl::StrCat(what_, ": the request line at byte ",
                                                     offset_ - line.size(), " is longer than ",
                                                     kMaxRequestLine, " bytes"));
    line.append(start, take);
    begin_ += take;
    offset_ += take;
    if (nl) {
      ++begin_;
      ++offset_;
      stream_.Begin();
      return line;
    }
  }
}

ByteSource& SessionReader::Stream() { return stream_; }

absl::StatusOr<size_t> SessionReader::FramedStream::Read(char* buf, size_t size) {
  if (!error_.ok()) return error_;
  absl::StatusOr<size_t> n = ReadFrames(buf, size);
  if (!n.ok()) error_ = n.status();
  return n;
}

absl::StatusOr<size_t> SessionReader::FramedStream::ReadFrames(char* buf, size_t size) {
  if (ended_ || size == 0) return 0;
  if (remaining_ == 0) {
    char header[4];
    const uint64_t at = r_.offset_;
    RETURN_IF_ERROR(r_.ReadExact(header, sizeof header, "a frame header"));
    const uint32_t length = GetU32(header);
    if (length == 0) {
      ended_ = true;
      return 0;
    }
    if (length > kMaxFrame)
      return absl::DataLossError(absl::StrCat(r_.what_, ": the frame at byte ", at, " is ", length,
                                              " bytes long, more than the ", kMaxFrame,
                                              " a frame may be"));
    remaining_ = length;
  }
  const size_t want = std::min<size_t>(size, remaining_);
  size_t n;
  if (r_.begin_ < r_.end_) {  // buffered bytes first
    n = std::min(want, r_.end_ - r_.begin_);
    std::memcpy(buf, r_.buf_.data() + r_.begin_, n);
    r_.begin_ += n;
  } else {  // straight into the caller's buffer: no copy through ours
    ASSIGN_OR_RETURN(n, r_.in_.Read(buf, want));
    if (n == 0)
      return absl::DataLossError(absl::StrCat(r_.what_, ": input ends at byte ", r_.offset_,
                                              " inside a frame (", remaining_, " bytes missing)"));
  }
  r_.offset_ += n;
  remaining_ -= static_cast<uint32_t>(n);
  return n;
}

}  // namespace snapledger
