// EventQuery: lookups of one ledger's events by seq, by hash and by time, as the CLI and the
// daemons ask them. The answer is always what events.jsonl holds; the lookup index
// (lookup_index.h) only makes finding it cheap.
//
// Each query takes a fresh view of events.jsonl (its complete lines; see LogFile) and:
//   - if the index is current, answers from it;
//   - if it lags the log, catches it up first (O(new events)) and answers from it;
//   - if it is missing (no directory, damaged, other format version) or stale (its last event
//     is not in the log: the log was replaced or rolled back, or it is another ledger's index),
//     logs one warning saying so and why, starts a rebuild, and answers by scanning
//     events.jsonl. With rebuild_in_background (daemons) the rebuild runs in a thread and
//     queries keep answering by scan until it is swapped in; otherwise (one-shot CLI) the
//     query waits for the rebuild and answers from the new index.
// Every line located through the index is checked against the log (its seq, hash, boundaries
// and, for ranges, the events either side) before it is returned; a mismatch marks the index
// damaged (rebuilt as above) and the query is answered by scan. A rebuild that fails is logged
// as an error and not retried automatically until the log changes (or RebuildIndex is called).
//
// Errors: NotFound when no such event exists; InvalidArgument for a malformed request;
// DataLoss naming the line ("events.jsonl line N (seq N): ...") when a line of the log that
// the query reads (or that catching up reads) is malformed or out of order — lines are never
// skipped; NotFound also if events.jsonl itself does not exist.
//
// Thread-safe: any number of threads may query one EventQuery concurrently, and other
// processes may use the same index_dir (LMDB serializes writers; a rebuild by another process
// is noticed and reopened). Use one EventQuery per (ledger, index_dir) per process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lookup/lookup_index.h"

namespace snapledger {

enum class IndexState {
  kCurrent,     // covers every complete line of the log
  kLagging,     // valid, but the log has newer lines (the next query catches up)
  kStale,       // its last event is not in the log: will be rebuilt
  kMissing,     // no index, or damaged: will be rebuilt
  kRebuilding,  // a rebuild is running; queries answer by scan
};
// "current", "lagging", "stale", "missing", "rebuilding".
std::string_view IndexStateName(IndexState state);

// The index as `snapledger status` shows it.
struct IndexStatus {
  IndexState state = IndexState::kMissing;
  uint64_t indexed_through = 0;  // last seq answerable from the index (0 unless current/lagging)
  uint64_t log_events = 0;       // complete lines in events.jsonl
  uint64_t lag = 0;              // log_events - indexed_through
  std::string detail;            // why stale, missing or rebuilding; a failed rebuild's error
};

struct EventQueryOptions {
  // When the index must be rebuilt: true runs the rebuild in a background thread and answers
  // by scan meanwhile (daemons); false rebuilds before answering (one-shot CLI processes).
  bool rebuild_in_background = true;
  LookupIndexOptions index;
};

class EventQuery;
using EventQueryPtr = std::unique_ptr<EventQuery>;

class EventQuery {
 public:
  // `ledger_dir` holds events.jsonl; `index_dir` is the lookup index's directory (outside the
  // ledger's subvolume; created when first built). Nothing is read until the first call.
  EventQuery(std::string ledger_dir, std::string index_dir, EventQueryOptions options = {});
  // Cancels a background rebuild (leaving the old index or none; never a partial one) and
  // waits for its thread.
  ~EventQuery();
  EventQuery(const EventQuery&) = delete;
  EventQuery& operator=(const EventQuery&) = delete;

  // The line of event `seq` exactly as stored (without '\n'). InvalidArgument for seq 0.
  absl::StatusOr<std::string> Get(uint64_t seq);
  // The line of the event whose hash is `hash_hex` (64 lowercase hex digits, else
  // InvalidArgument).
  absl::StatusOr<std::string> GetByHash(std::string_view hash_hex);
  // The lines of the first `limit` events (in seq order) with from_ts <= ts <= to_ts; empty
  // when none match or limit is 0. InvalidArgument if from_ts > to_ts.
  absl::StatusOr<std::vector<std::string>> Range(int64_t from_ts, int64_t to_ts, size_t limit);

  // The index's state against the log now, without changing either (so a lagging index is
  // reported as lagging). Errors only if events.jsonl cannot be read.
  absl::StatusOr<IndexStatus> CheckIndex();

  // Rebuilds the index now and waits for it (for `snapledger index rebuild`); if a rebuild is
  // already running, waits for that one. Returns the rebuild's result.
  absl::Status RebuildIndex();
  // Returns once no rebuild is running (immediately if none is).
  void WaitForRebuild();

  // Answers from `ledger_dir` from now on: a newer copy of the same ledger (a replica moving
  // to its newest verified block), so the index stays valid and catches up O(new events).
  // Queries in progress finish on the old directory. A directory holding another ledger
  // makes the index stale, and it is rebuilt as described above.
  void SetLedgerDir(std::string ledger_dir);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger
