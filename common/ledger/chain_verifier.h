// Verification of the hash chain in events.jsonl: full (from genesis) and incremental (from
// a trusted head, reading only what came after it).
//
// A chain problem (bad hash, gap, reordering, malformed line, head file disagreeing with the
// log) is reported in VerifyReport::failure with its line number and seq; only I/O problems
// (cannot open or map the file) are returned as an error Status.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/ledger/event_format.h"
#include "common/ledger/head_file.h"

namespace snapledger {

struct VerifyFailure {
  uint64_t line_number = 0;  // 1-based line of events.jsonl; 0 when about the head file
  uint64_t seq = 0;          // the seq expected at that line
  std::string reason;
  std::string ToString() const;
};

struct VerifyReport {
  ChainHead head;  // the last event verified (the start head when none were)
  uint64_t events_verified = 0;
  uint64_t bytes_verified = 0;
  uint64_t end_offset = 0;  // byte offset just past the last verified line
  std::optional<VerifyFailure> failure;
  bool ok() const { return !failure.has_value(); }
};

// Verifies `data`, a run of complete lines (each ending in '\n') whose first line is line
// `first_line` of the file and must hold seq from.seq+1 with prev == from.hash. Uses up to
// `threads` threads (lines are hashed independently and then stitched). Pure; thread-safe.
VerifyReport VerifyLines(std::string_view data, const ChainHead& from, uint64_t first_line,
                         int threads = 2);

// Checks that the line ending exactly at byte `end` of `data` is event `trusted.seq` with
// hash `trusted.hash` and that its bytes recompute to that hash. Returns the line's start
// offset, or a failure.
absl::StatusOr<uint64_t> CheckTrustedLine(std::string_view data, uint64_t end,
                                          const ChainHead& trusted);

enum class HeadCheck {
  kExact,   // metadata/current_hash must name the last event (blocks, received copies)
  kMayLag,  // it may name an earlier event, which must match (the live subvolume)
  kIgnore,  // do not read it
};

struct VerifyOptions {
  HeadCheck head_check = HeadCheck::kExact;
  int threads = 2;
};

// Full verification of <dir>/events.jsonl from genesis, then the head file per `options`.
absl::StatusOr<VerifyReport> VerifyLedgerDir(const std::string& dir,
                                             const VerifyOptions& options = {});

// Incremental verification of <dir>/events.jsonl from `trusted` (for example the head file of
// an earlier block of the same ledger): line trusted.head.seq must end at trusted.log_bytes and
// recompute to trusted.head.hash; only the bytes after it are read. Then the head file per
// `options`. By collision resistance of SHA-256 nothing before the trusted line can differ.
absl::StatusOr<VerifyReport> VerifyLedgerDirFrom(const std::string& dir, const HeadRecord& trusted,
                                                 const VerifyOptions& options = {});

// Calls `fn(line_number, offset, line)` for each complete line of `data` (line without '\n'),
// numbering from `first_line` and offsets from `base_offset`, until `fn` returns false.
// Returns the offset just past the last complete line visited.
uint64_t ForEachLine(std::string_view data, uint64_t first_line, uint64_t base_offset,
                     const std::function<bool(uint64_t, uint64_t, std::string_view)>& fn);

}  // namespace snapledger
