#include "common/ledger/log_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/head_file.h"

namespace snapledger {

LogRegion::~LogRegion() {
  if (addr_ != nullptr) ::munmap(addr_, map_length_);
}

LogRegion::LogRegion(LogRegion&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)),
      map_length_(std::exchange(o.map_length_, 0)),
      data_(std::exchange(o.data_, {})),
      base_(std::exchange(o.base_, 0)) {}

LogRegion& LogRegion::operator=(LogRegion&& o) noexcept {
  if (this != &o) {
    if (addr_ != nullptr) ::munmap(addr_, map_length_);
    addr_ = std::exchange(o.addr_, nullptr);
    map_length_ = std::exchange(o.map_length_, 0);
    data_ = std::exchange(o.data_, {});
    base_ = std::exchange(o.base_, 0);
  }
  return *this;
}

namespace {
// Single lines are read with pread, regions for scans are mapped: a fresh mapping costs far
// more per page touched (and again to unmap) than a pread of one line (bench/README.md).
constexpr size_t kFirstReadBytes = 1024;
}  // namespace

absl::StatusOr<LogFile> LogFile::Open(const std::string& ledger_dir) {
  LogFile log;
  log.path_ = absl::StrCat(ledger_dir, "/", kEventsFile);
  ASSIGN_OR_RETURN(log.fd_, OpenFile(log.path_, O_RDONLY));
  struct stat st;
  if (::fstat(log.fd_.get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", log.path_), errno);
  // Complete lines end at the last '\n': search backwards in growing chunks.
  uint64_t end = static_cast<uint64_t>(st.st_size);
  for (size_t chunk = kFirstReadBytes; end > 0; chunk *= 2) {
    uint64_t from = end > chunk ? end - chunk : 0;
    ASSIGN_OR_RETURN(std::string bytes, log.ReadAt(from, end - from));
    if (const void* nl = memrchr(bytes.data(), '\n', bytes.size()); nl != nullptr) {
      log.size_ = from + (static_cast<const char*>(nl) - bytes.data()) + 1;
      break;
    }
    end = from;
  }
  return log;
}

absl::StatusOr<std::string> LogFile::ReadAt(uint64_t offset, size_t length) const {
  std::string out(length, '\0');
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd_.get(), out.data() + done, length - done, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("read ", path_), errno);
    if (n == 0) break;  // truncated meanwhile
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

absl::StatusOr<std::string> LogFile::Read(uint64_t offset, size_t length) const {
  if (offset > size_ || length > size_ - offset)
    return absl::OutOfRangeError(absl::StrCat("bytes [", offset, ", ", offset + length, ") of ",
                                              path_, " are beyond its ", size_, " bytes"));
  ASSIGN_OR_RETURN(std::string bytes, ReadAt(offset, length));
  if (bytes.size() != length) return absl::DataLossError(absl::StrCat(path_, " shrank"));
  return bytes;
}

absl::StatusOr<std::optional<std::string>> LogFile::LineStartingAt(uint64_t offset,
                                                                   size_t expected_length) const {
  if (offset >= size_) return std::optional<std::string>();
  // Read from the byte before `offset` (which must be '\n') through the line's '\n'.
  uint64_t from = offset > 0 ? offset - 1 : 0;
  size_t want = expected_length > 0 ? expected_length + 2 : kFirstReadBytes;
  while (true) {
    size_t length = static_cast<size_t>(std::min<uint64_t>(want, size_ - from));
    ASSIGN_OR_RETURN(std::string bytes, ReadAt(from, length));
    if (bytes.size() != length) return absl::DataLossError(absl::StrCat(path_, " shrank"));
    size_t start = offset - from;
    if (start == 1 && bytes[0] != '\n') return std::optional<std::string>();
    size_t nl = bytes.find('\n', start);
    if (nl != std::string::npos) return std::optional<std::string>(bytes.substr(start, nl - start));
    if (from + length >= size_) return std::optional<std::string>();  // cannot happen: ends in \n
    want *= 2;
  }
}

absl::StatusOr<std::optional<std::string>> LogFile::LineEndingAt(uint64_t end) const {
  if (end == 0 || end > size_) return std::optional<std::string>();
  for (size_t chunk = kFirstReadBytes;; chunk *= 2) {
    uint64_t from = end > chunk ? end - chunk : 0;
    ASSIGN_OR_RETURN(std::string bytes, ReadAt(from, end - from));
    if (bytes.size() != end - from) return absl::DataLossError(absl::StrCat(path_, " shrank"));
    if (bytes.back() != '\n') return std::optional<std::string>();
    size_t prev = bytes.size() >= 2 ? bytes.rfind('\n', bytes.size() - 2) : std::string::npos;
    if (prev != std::string::npos || from == 0) {
      size_t start = prev == std::string::npos ? 0 : prev + 1;
      return std::optional<std::string>(bytes.substr(start, bytes.size() - 1 - start));
    }
  }
}

absl::StatusOr<LogRegion> LogFile::Map(uint64_t from) const {
  LogRegion region;
  region.base_ = std::min(from, size_);
  if (region.base_ == size_) return region;
  static const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t aligned = region.base_ / kPage * kPage;
  region.map_length_ = size_ - aligned;
  void* addr = ::mmap(nullptr, region.map_length_, PROT_READ, MAP_PRIVATE, fd_.get(), aligned);
  if (addr == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap ", path_), errno);
  ::madvise(addr, region.map_length_, MADV_SEQUENTIAL);
  region.addr_ = addr;
  region.data_ = std::string_view(static_cast<const char*>(addr) + (region.base_ - aligned),
                                  size_ - region.base_);
  return region;
}

absl::Status EventLineError(uint64_t line_no, absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat(kEventsFile, " line ", line_no, " (seq ", line_no, "): ", what));
}

namespace {

// Checks that `ev`, on line `line_no`, follows the event with `prev_hash` and `prev_ts`.
absl::Status CheckLink(const EventView& ev, uint64_t line_no, std::string_view prev_hash,
                       std::optional<int64_t> prev_ts) {
  if (ev.seq != line_no)
    return EventLineError(line_no, absl::StrCat("found seq ", ev.seq,
                                                " (a line is missing, "
                                                "duplicated or out of order)"));
  if (ev.prev != prev_hash)
    return EventLineError(
        line_no, absl::StrCat("prev ", std::string(ev.prev), " does not equal the hash of seq ",
                              line_no - 1, " (", std::string(prev_hash), ")"));
  if (prev_ts.has_value() && ev.ts < *prev_ts)
    return EventLineError(line_no, absl::StrCat("ts ", ev.ts, " is before the ts of seq ",
                                                line_no - 1, " (", *prev_ts, ")"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ScanEvents(std::string_view data, const ChainHead& from, uint64_t base_offset,
                        const std::function<bool(const EventView&, uint64_t offset)>& fn) {
  absl::Status status;
  std::string_view prev_hash = from.hash;
  std::optional<int64_t> prev_ts;
  if (from.seq > 0) prev_ts = from.ts;
  ForEachLine(data, from.seq + 1, base_offset,
              [&](uint64_t line_no, uint64_t offset, std::string_view line) {
                auto ev = ParseEventLine(line);
                if (!ev.ok()) {
                  status = EventLineError(line_no, ev.status().message());
                  return false;
                }
                status = CheckLink(*ev, line_no, prev_hash, prev_ts);
                if (!status.ok()) return false;
                prev_hash = ev->hash;
                prev_ts = ev->ts;
                return fn(*ev, offset);
              });
  return status;
}

}  // namespace snapledger
