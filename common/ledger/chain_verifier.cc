#include "common/ledger/chain_verifier.h"

#include <string.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

// The first and last events of a run of lines verified on its own; stitched afterwards.
struct ChunkResult {
  uint64_t first_line = 0;
  uint64_t lines = 0;
  uint64_t first_seq = 0;
  int64_t first_ts = 0;
  std::string first_prev;
  ChainHead last;
  uint64_t end = 0;  // offset in the chunk's buffer just past the last verified line
  std::optional<VerifyFailure> failure;
};

VerifyFailure Fail(uint64_t line, uint64_t seq, std::string reason) {
  return VerifyFailure{line, seq, std::move(reason)};
}

// Verifies one run of lines; the link to the previous run is checked by the caller unless
// `from` is given, in which case the first line must follow it.
ChunkResult VerifyChunk(std::string_view data, uint64_t first_line, const ChainHead* from) {
  ChunkResult r;
  r.first_line = first_line;
  Sha256 hasher;
  char hex[64];
  bool have_prev = from != nullptr;
  ChainHead prev = have_prev ? *from : ChainHead{};
  uint64_t line_no = first_line;
  size_t pos = 0;
  while (pos < data.size()) {
    const char* nl = static_cast<const char*>(memchr(data.data() + pos, '\n', data.size() - pos));
    uint64_t expected = have_prev ? prev.seq + 1 : 0;
    if (nl == nullptr) {
      r.failure = Fail(line_no, expected, "incomplete last line (no newline)");
      return r;
    }
    std::string_view line(data.data() + pos, nl - (data.data() + pos));
    auto ev = ParseEventLine(line);
    if (!ev.ok()) {
      r.failure = Fail(line_no, expected, std::string(ev.status().message()));
      return r;
    }
    if (have_prev) {
      if (ev->seq != expected) {
        r.failure = Fail(line_no, expected,
                         absl::StrCat("expected seq ", expected, ", found seq ", ev->seq,
                                      " (a line is missing, duplicated or out of order)"));
        return r;
      }
      if (ev->prev != prev.hash) {
        r.failure =
            Fail(line_no, expected,
                 absl::StrCat("prev ", std::string(ev->prev), " does not equal the hash of seq ",
                              prev.seq, " (", prev.hash, ")"));
        return r;
      }
      if (ev->ts < prev.ts) {
        r.failure = Fail(
            line_no, expected,
            absl::StrCat("ts ", ev->ts, " is before the ts of seq ", prev.seq, " (", prev.ts, ")"));
        return r;
      }
    } else {
      r.first_seq = ev->seq;
      r.first_ts = ev->ts;
      r.first_prev = std::string(ev->prev);
    }
    ToHex(ComputeLineDigest(line, hasher), hex);
    if (std::string_view(hex, 64) != ev->hash) {
      r.failure =
          Fail(line_no, ev->seq,
               absl::StrCat("hash mismatch: stored ", std::string(ev->hash), ", computed ",
                            std::string(hex, 64), " (the line was changed after it was written)"));
      return r;
    }
    if (!have_prev && from == nullptr && r.lines == 0) have_prev = true;
    prev.seq = ev->seq;
    prev.hash.assign(ev->hash);
    prev.ts = ev->ts;
    ++r.lines;
    ++line_no;
    pos = nl - data.data() + 1;
    r.end = pos;
  }
  r.last = prev;
  return r;
}

// Splits `data` into up to `n` runs of whole lines.
std::vector<std::pair<size_t, size_t>> SplitAtLines(std::string_view data, int n) {
  std::vector<std::pair<size_t, size_t>> parts;
  size_t begin = 0;
  for (int i = 1; i <= n && begin < data.size(); ++i) {
    size_t end = data.size();
    if (i < n) {
      size_t guess = std::max(begin, data.size() * i / n);
      const void* nl = memchr(data.data() + guess, '\n', data.size() - guess);
      end = nl == nullptr ? data.size() : static_cast<const char*>(nl) - data.data() + 1;
    }
    if (end > begin) parts.emplace_back(begin, end);
    begin = end;
  }
  return parts;
}

}  // namespace

std::string VerifyFailure::ToString() const {
  if (line_number == 0) return reason;
  return absl::StrCat("events.jsonl line ", line_number, " (seq ", seq, "): ", reason);
}

VerifyReport VerifyLines(std::string_view data, const ChainHead& from, uint64_t first_line,
                         int threads) {
  constexpr size_t kMinBytesPerThread = 4 << 20;
  int n = std::max(1, std::min<int>(threads, static_cast<int>(data.size() / kMinBytesPerThread)));
  auto parts = SplitAtLines(data, n);
  std::vector<ChunkResult> results(parts.size());
  std::vector<std::thread> workers;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto work = [&, i] {
      std::string_view part = data.substr(parts[i].first, parts[i].second - parts[i].first);
      results[i] = VerifyChunk(part, 0, i == 0 ? &from : nullptr);
    };
    if (i + 1 == parts.size()) {
      work();
    } else {
      workers.emplace_back(work);
    }
  }
  for (auto& w : workers) w.join();

  VerifyReport report;
  report.head = from;
  uint64_t line = first_line;
  for (size_t i = 0; i < parts.size(); ++i) {
    ChunkResult& r = results[i];
    uint64_t base = parts[i].first;
    if (i > 0 && r.lines > 0) {
      // Stitch: the run's first line must follow the previous run's last line.
      uint64_t expected = report.head.seq + 1;
      std::optional<VerifyFailure> link;
      if (r.first_seq != expected)
        link = Fail(line, expected,
                    absl::StrCat("expected seq ", expected, ", found seq ", r.first_seq,
                                 " (a line is missing, duplicated or out of order)"));
      else if (r.first_prev != report.head.hash)
        link = Fail(line, expected,
                    absl::StrCat("prev ", r.first_prev, " does not equal the hash of seq ",
                                 report.head.seq, " (", report.head.hash, ")"));
      else if (r.first_ts < report.head.ts)
        link = Fail(line, expected,
                    absl::StrCat("ts ", r.first_ts, " is before the ts of seq ", report.head.seq,
                                 " (", report.head.ts, ")"));
      if (link) {
        report.failure = link;
        return report;
      }
    }
    if (r.failure) {
      r.failure->line_number = line + r.lines;
      if (r.failure->seq == 0) r.failure->seq = report.head.seq + r.lines + 1;
      report.failure = r.failure;
      report.events_verified += r.lines;
      report.end_offset = base + r.end;
      report.bytes_verified = report.end_offset;
      return report;
    }
    if (r.lines > 0) report.head = r.last;
    report.events_verified += r.lines;
    report.end_offset = base + r.end;
    line += r.lines;
  }
  report.bytes_verified = report.end_offset;
  return report;
}

absl::StatusOr<uint64_t> CheckTrustedLine(std::string_view data, uint64_t end,
                                          const ChainHead& trusted) {
  if (trusted.seq == 0) {
    if (end != 0) return absl::FailedPreconditionError("the genesis head must be at byte 0");
    return 0;
  }
  if (end == 0 || end > data.size() || data[end - 1] != '\n')
    return absl::DataLossError(absl::StrCat("trusted head seq ", trusted.seq,
                                            " should end at byte ", end,
                                            " of events.jsonl, but no line ends there"));
  size_t start = 0;
  if (end >= 2) {
    const void* nl = memrchr(data.data(), '\n', end - 1);
    start = nl == nullptr ? 0 : static_cast<const char*>(nl) - data.data() + 1;
  }
  std::string_view line = data.substr(start, end - 1 - start);
  auto ev = ParseEventLine(line);
  if (!ev.ok())
    return absl::DataLossError(
        absl::StrCat("line of trusted head seq ", trusted.seq, ": ", ev.status().message()));
  Sha256 hasher;
  if (ev->seq != trusted.seq || ev->hash != trusted.hash ||
      ToHex(ComputeLineDigest(line, hasher)) != trusted.hash)
    return absl::DataLossError(absl::StrCat(
        "the line ending at byte ", end, " is seq ", ev->seq, " with hash ", std::string(ev->hash),
        ", but the trusted head is seq ", trusted.seq, " with hash ", trusted.hash));
  return start;
}

uint64_t ForEachLine(std::string_view data, uint64_t first_line, uint64_t base_offset,
                     const std::function<bool(uint64_t, uint64_t, std::string_view)>& fn) {
  size_t pos = 0;
  uint64_t line_no = first_line;
  while (pos < data.size()) {
    const char* nl = static_cast<const char*>(memchr(data.data() + pos, '\n', data.size() - pos));
    if (nl == nullptr) break;
    size_t end = nl - data.data();
    bool more = fn(line_no++, base_offset + pos, data.substr(pos, end - pos));
    pos = end + 1;
    if (!more) break;
  }
  return base_offset + pos;
}

namespace {

// The head file as read before the log was mapped (so that, on a live ledger, it can only name
// an event at or before the mapped log's end), or the error reading it.
using HeadRead = absl::StatusOr<std::optional<HeadRecord>>;

HeadRead ReadHeadFirst(const std::string& dir, HeadCheck check) {
  if (check == HeadCheck::kIgnore) return std::optional<HeadRecord>();
  return ReadHeadFile(dir);
}

// The part of the log to verify: all of it, except that a live ledger (kMayLag) may have a
// writer in the middle of a write(2), whose incomplete last line is not yet part of the log.
std::string_view LogView(const MappedFile& log, HeadCheck check) {
  std::string_view data = log.data();
  if (check != HeadCheck::kMayLag || data.empty() || data.back() == '\n') return data;
  const void* nl = memrchr(data.data(), '\n', data.size());
  return nl == nullptr ? std::string_view()
                       : data.substr(0, static_cast<const char*>(nl) - data.data() + 1);
}

void CheckHeadFile(const std::string& dir, std::string_view log, const HeadRead& head,
                   HeadCheck check, VerifyReport* report) {
  if (check == HeadCheck::kIgnore || !report->ok()) return;
  if (!head.ok()) {
    report->failure = Fail(0, 0, std::string(head.status().message()));
    return;
  }
  if (!head->has_value()) {
    report->failure = Fail(0, 0, absl::StrCat(dir, "/", kHeadFile, " is missing"));
    return;
  }
  const HeadRecord& h = **head;
  if (check == HeadCheck::kExact) {
    if (h.head.seq != report->head.seq || h.head.hash != report->head.hash ||
        h.head.ts != report->head.ts || h.log_bytes != report->end_offset ||
        h.log_bytes != log.size())
      report->failure =
          Fail(0, 0,
               absl::StrCat(kHeadFile, " names seq ", h.head.seq, " hash ", h.head.hash, " ts ",
                            h.head.ts, " at byte ", h.log_bytes, ", but the log ends at seq ",
                            report->head.seq, " hash ", report->head.hash, " ts ", report->head.ts,
                            " at byte ", log.size()));
    return;
  }
  if (h.head.seq > report->head.seq) {
    report->failure = Fail(
        0, 0,
        absl::StrCat(kHeadFile, " names seq ", h.head.seq, ", beyond the end of the log at seq ",
                     report->head.seq, ": events are missing"));
    return;
  }
  auto st = CheckTrustedLine(log, h.log_bytes, h.head);
  if (!st.ok()) report->failure = Fail(0, 0, absl::StrCat(kHeadFile, ": ", st.status().message()));
}

}  // namespace

absl::StatusOr<VerifyReport> VerifyLedgerDir(const std::string& dir, const VerifyOptions& options) {
  HeadRead head = ReadHeadFirst(dir, options.head_check);
  ASSIGN_OR_RETURN(MappedFile log, MappedFile::Open(absl::StrCat(dir, "/", kEventsFile)));
  std::string_view data = LogView(log, options.head_check);
  VerifyReport report = VerifyLines(data, ChainHead{}, 1, options.threads);
  CheckHeadFile(dir, data, head, options.head_check, &report);
  return report;
}

absl::StatusOr<VerifyReport> VerifyLedgerDirFrom(const std::string& dir, const HeadRecord& trusted,
                                                 const VerifyOptions& options) {
  HeadRead head = ReadHeadFirst(dir, options.head_check);
  ASSIGN_OR_RETURN(MappedFile log, MappedFile::Open(absl::StrCat(dir, "/", kEventsFile)));
  std::string_view data = LogView(log, options.head_check);
  VerifyReport report;
  report.head = trusted.head;
  auto start = CheckTrustedLine(data, trusted.log_bytes, trusted.head);
  if (!start.ok()) {
    report.failure =
        Fail(trusted.head.seq, trusted.head.seq, std::string(start.status().message()));
    return report;
  }
  std::string_view rest = data.substr(trusted.log_bytes);
  report = VerifyLines(rest, trusted.head, trusted.head.seq + 1, options.threads);
  report.end_offset += trusted.log_bytes;
  report.bytes_verified = report.end_offset - trusted.log_bytes;
  CheckHeadFile(dir, data, head, options.head_check, &report);
  return report;
}

}  // namespace snapledger
