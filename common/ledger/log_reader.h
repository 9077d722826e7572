// Reading a ledger's events.jsonl: a view of its complete lines (LogFile), mapped regions of
// it for scans (LogRegion), and the scan that parses each line and checks its links to the
// previous one (ScanEvents). Used by everything that reads the log without writing it: the
// lookup index, event queries, the similarity index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/base/posix_file.h"
#include "common/ledger/event_format.h"

namespace snapledger {

// A log region mapped read-only (mmap): bytes [base(), base() + data().size()) of events.jsonl,
// complete lines only. Move-only; unmapped on destruction.
class LogRegion {
 public:
  LogRegion() = default;
  ~LogRegion();
  LogRegion(LogRegion&& o) noexcept;
  LogRegion& operator=(LogRegion&& o) noexcept;
  LogRegion(const LogRegion&) = delete;
  LogRegion& operator=(const LogRegion&) = delete;

  std::string_view data() const { return data_; }
  uint64_t base() const { return base_; }

 private:
  friend class LogFile;
  void* addr_ = nullptr;
  size_t map_length_ = 0;
  std::string_view data_;
  uint64_t base_ = 0;
};

// A read-only view of <ledger_dir>/events.jsonl through its last complete line, as it was when
// opened: lines appended later are not seen and an incomplete last line (being written, or a
// torn tail) is never exposed, so it is safe to open while the log is appended. Every read
// goes to the file opened by Open, even if the path is replaced meanwhile.
//
// Single lines are read with pread; regions for scans are mapped (Map), which costs more to
// set up than a pread. A mapped region faults (SIGBUS) if the file is truncated below it while
// mapped; the log only ever loses an incomplete tail (which is never mapped), so keep regions
// short-lived.
// Move-only. Const methods may be called from any thread.
class LogFile {
 public:
  // NotFound if <ledger_dir>/events.jsonl does not exist.
  static absl::StatusOr<LogFile> Open(const std::string& ledger_dir);

  // Bytes of complete lines (each ending in '\n').
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // The line (without '\n') starting exactly at byte `offset`; nullopt unless `offset` is the
  // start of a complete line. `expected_length` (if known) lets one pread do.
  absl::StatusOr<std::optional<std::string>> LineStartingAt(uint64_t offset,
                                                            size_t expected_length = 0) const;
  // The line (without '\n') whose '\n' is byte `end` - 1; nullopt if no line ends there.
  absl::StatusOr<std::optional<std::string>> LineEndingAt(uint64_t end) const;
  // Bytes [offset, offset + length), which must lie within size() (else OutOfRange).
  absl::StatusOr<std::string> Read(uint64_t offset, size_t length) const;
  // Maps the complete lines from byte `from` (<= size()) to the end.
  absl::StatusOr<LogRegion> Map(uint64_t from = 0) const;

 private:
  // Reads up to `length` bytes at `offset` (fewer only at the end of the file).
  absl::StatusOr<std::string> ReadAt(uint64_t offset, size_t length) const;

  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

// Calls `fn(event, offset)` for each complete line of `data`, which starts at byte
// `base_offset` of events.jsonl just after the event `from` (seq 0 for the start of the log),
// until `fn` returns false. Each line must parse (ParseEventLine) and carry seq from.seq+1,
// from.seq+2, ... (seq is the line number), prev equal to the previous event's hash, and a ts
// not before the previous event's. Hashes are not recomputed (that is ChainVerifier's job).
// Errors: DataLoss "events.jsonl line N (seq N): <what>" (EventLineError) for the first line
// that fails; lines are never skipped. Pure; thread-safe.
absl::Status ScanEvents(std::string_view data, const ChainHead& from, uint64_t base_offset,
                        const std::function<bool(const EventView&, uint64_t offset)>& fn);

// DataLoss "events.jsonl line N (seq N): <what>": how a reader of the log reports line N.
absl::Status EventLineError(uint64_t line_no, absl::string_view what);

}  // namespace snapledger
