// The receive journal: one JSON line per transfer attempt, appended by
// `snapledger-receive` (a short-lived process sshd starts) and read by the replica
// daemon, which turns it into metrics. It lives at <root>/receive-journal.jsonl, beside the
// blocks and outside every snapshot; at 4 MiB it is renamed to receive-journal.jsonl.1 (one
// old generation is kept).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace snapledger {

struct ReceiveOutcome {
  int64_t ts_micros = 0;
  std::string block;
  std::optional<std::string> parent;
  bool ok = false;
  bool already_held = false;
  // Why it failed, for metrics: "verification" (the chain or head did not verify),
  // "stream" (btrfs receive or the stream failed), "refused" (bad arguments, a parent not
  // held, another transfer running), "local" (anything else). Empty when ok.
  std::string reason;
  std::string error;
  uint64_t log_bytes = 0;  // how much events.jsonl grew (the primary counts stream bytes)
  uint64_t events_verified = 0;
  double seconds = 0;
};

std::string ReceiveJournalPath(const std::string& root);

// Appends `outcome` as one line (O_APPEND, one write). Callers serialize (the receive lock).
absl::Status AppendReceiveOutcome(const std::string& root, const ReceiveOutcome& outcome);

// Reads outcomes appended since the last call. Starts at the journal's end when constructed
// (outcomes from before the daemon started are not replayed). Notices rotation (a new inode):
// reads what was appended to the old file (now receive-journal.jsonl.1) since the last call,
// then the new file from its start. A line that does not parse is reported as an
// outcome with reason "local" and the line's number in `error` (never skipped silently).
// Not thread-safe.
class ReceiveJournalReader {
 public:
  explicit ReceiveJournalReader(std::string root);
  std::vector<ReceiveOutcome> ReadNew();

 private:
  // Parses the complete lines of `fd` between offset_ and `size` into `out`, advancing offset_.
  void ReadLines(int fd, uint64_t size, std::vector<ReceiveOutcome>* out);

  std::string path_;
  uint64_t inode_ = 0;
  uint64_t offset_ = 0;
  uint64_t line_ = 0;
};

}  // namespace snapledger
