// The derived lookup index of one ledger: where each event's line lies in events.jsonl, found
// by seq, by hash or by time without scanning the log. It lives in LMDB in a directory outside
// the ledger's subvolume (never snapshotted, never streamed) and is a cache: it can be deleted
// and rebuilt from the log at any time. Callers normally use EventQuery (event_query.h), which
// decides when this index may be trusted; this file is the storage layer beneath it.
//
// LMDB layout: one environment in `index_dir` with three named databases.
//   "meta"  "format"   -> u32 kLookupIndexFormatVersion
//           "coverage" -> IndexCoverage (what the index covers, see below)
//           "runs"     -> the hash runs, oldest first: {u64 id, u64 first_seq, u64 last_seq}...
//   "seq"   u64 seq, big-endian -> {u64 offset, u32 length, i64 ts}
//   "hash"  u64 run id, big-endian, + 32-byte SHA-256 digest -> u64 seq
// Values are in host byte order: an index never leaves the host that built it.
// Every write transaction updates "coverage" together with the entries it adds, so at any
// commit the index holds exactly events 1..indexed_through of one ledger.
//
// "hash" is log-structured: each catch-up transaction sorts its digests and appends them as a
// new run under a run id greater than every existing one (sequential pages, MDB_APPEND), and
// runs of similar size are merged into a new run in the same transaction (PlanHashRunMerge):
// each digest is rewritten about log4(run size it ends in) times, at most ~10. Runs of
// kSealedHashRunSize digests or more are sealed (never merged again), so no transaction
// rewrites more than ~2M digests (~120 MB of pages, well inside LMDB's dirty-page limit). The
// runs cover consecutive seq ranges 1..n; a lookup by hash asks each run, newest first: the
// sealed ones (one per 0.5-2M events indexed), at most one unsealed run left before each of
// them, and at most kMaxOpenHashRuns others.
//
// Deleting merged runs frees pages in the transaction that wrote them, which LMDB never writes,
// so a commit's last page can lie beyond the end of data.mdb. Before such a commit the writer
// extends the file (a hole) to cover every page the transaction can have allocated, and trims
// it back to the last committed page when its next write transaction begins: readers always
// find the file covering the meta's last page, and a shorter file is truncated.
//
// Time ranges are found by a binary search by ts over "seq" (ts is non-decreasing in seq):
// about log2(n) point reads in one read transaction, no extra key space and no extra writes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ledger/event_format.h"
#include "common/ledger/log_reader.h"

namespace snapledger {

inline constexpr uint32_t kLookupIndexFormatVersion = 2;

// One run of the "hash" database: the digests of events first_seq..last_seq, sorted, under
// keys prefixed by `id`.
struct HashRun {
  uint64_t id = 0;
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  uint64_t size() const { return last_seq - first_seq + 1; }
  friend bool operator==(const HashRun&, const HashRun&) = default;
};

// Runs merge kHashRunFanIn at a time. A run of kSealedHashRunSize digests or more is sealed:
// never merged again.
inline constexpr size_t kHashRunFanIn = 4;
inline constexpr uint64_t kSealedHashRunSize = uint64_t{1} << 19;
inline constexpr size_t kMaxOpenHashRuns = 32;

// The runs [begin, end) of `runs` (oldest first) to merge next, or nullopt when none need it.
// A run's level is floor(log4(size)). Merges consecutive unsealed runs ending as new as
// possible, back to the first run at which kHashRunFanIn of them share the highest level among
// them (smaller runs between are taken along); never across a sealed run. Past
// kMaxOpenHashRuns unsealed runs, the adjacent unsealed pair with the fewest digests (an
// unsealed run whose neighbours are sealed has none and stays). Applied
// until it returns nullopt after each new run, each digest is rewritten about
// log4(size of the run it ends in) times, whatever the sizes of the new runs. Pure.
std::optional<std::pair<size_t, size_t>> PlanHashRunMerge(const std::vector<HashRun>& runs);

struct LookupIndexOptions {
  // Address space reserved for the LMDB map: the largest the index may grow (~120 bytes per
  // event). The file itself grows only as needed.
  size_t map_size = size_t{1} << 38;
  // Events per write transaction in CatchUp: large for speed, bounded so a transaction's dirty
  // pages stay within LMDB's limits.
  uint64_t events_per_txn = 1 << 18;
};

// What an index covers: events 1..indexed_through, the last of which has `hash` and occupies
// bytes [line_offset, end_offset) of events.jsonl ('\n' included). indexed_through 0 is the
// empty index (end_offset 0, hash kGenesisHash).
struct IndexCoverage {
  uint64_t indexed_through = 0;
  std::string hash = std::string(kGenesisHash);
  int64_t ts = 0;
  uint64_t line_offset = 0;
  uint64_t end_offset = 0;
  friend bool operator==(const IndexCoverage&, const IndexCoverage&) = default;
};

// Where event `seq`'s line is: bytes [offset, offset + length) of events.jsonl, '\n' excluded.
struct EventLocation {
  uint64_t seq = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  int64_t ts = 0;
  uint64_t end() const { return offset + length + 1; }
  friend bool operator==(const EventLocation&, const EventLocation&) = default;
};

// The answer to a time-range lookup: `events` are consecutive seqs with from_ts <= ts <= to_ts;
// `start_offset` is where the first indexed event with ts >= from_ts begins (the coverage's
// end_offset if there is none), so a caller can check the boundary against the log.
struct RangeLocation {
  std::vector<EventLocation> events;
  uint64_t start_offset = 0;
};

// How an index relates to a log (see LookupIndex::CompareWith).
struct IndexFreshness {
  enum class State { kCurrent, kLagging, kStale };
  State state = State::kCurrent;
  IndexCoverage coverage;
  uint64_t lag_bytes = 0;    // complete-line bytes of the log after coverage.end_offset
  std::string stale_reason;  // set when kStale
};

class LookupIndex;
using LookupIndexPtr = std::unique_ptr<LookupIndex>;

// One open LMDB environment holding a lookup index.
//
// Thread safety: all methods may be called concurrently from any threads (read transactions
// are not tied to threads; CatchUp calls are serialized, and LMDB serializes writers of
// different processes). Open the same index_dir at most once per process at a time (an LMDB
// rule): share one LookupIndex.
//
// Errors: NotFound from Open when there is no index; DataLoss from Open when it is damaged or
// of another format version (never trust it: rebuild). After Open, errors of the index itself
// (LMDB failures, damage LMDB reports) are Internal, or ResourceExhausted when the map is full.
// Arbitrary bit flips inside LMDB pages are not detectable by LMDB 0.9 (no page checksums);
// EventQuery therefore checks every located line against the log before answering.
class LookupIndex {
 public:
  // Opens an existing index. NotFound if `index_dir` or its data.mdb does not exist. DataLoss
  // if LMDB cannot open it, the data file is shorter than its last page, the meta records are
  // missing or malformed, the format version differs, the entry counts disagree with the
  // coverage, or the hash runs do not cover seq 1..indexed_through in order. Never writes.
  static absl::StatusOr<LookupIndexPtr> Open(const std::string& index_dir,
                                             const LookupIndexOptions& options = {});
  // Creates an empty index in `index_dir`, which must not exist or be empty (AlreadyExists
  // if it holds anything).
  static absl::StatusOr<LookupIndexPtr> Create(const std::string& index_dir,
                                               const LookupIndexOptions& options = {});
  // Builds a fresh index of `log` in a temporary directory beside `index_dir`, makes it
  // durable, and swaps it in with one rename (renameat2 RENAME_EXCHANGE; a plain rename when
  // `index_dir` does not exist), then deletes the old index. A crash leaves the old or the new
  // index at `index_dir` (on a filesystem without RENAME_EXCHANGE, possibly none: then it is
  // missing and is rebuilt). Leftover temporary directories of dead processes are removed.
  // Returns the new index, open. Cancelled (and nothing swapped) if `*cancel` becomes true.
  // Errors from the log are DataLoss naming the line (see ScanEvents).
  static absl::StatusOr<LookupIndexPtr> Rebuild(const std::string& index_dir, const LogFile& log,
                                                const LookupIndexOptions& options = {},
                                                const std::atomic<bool>* cancel = nullptr);

  ~LookupIndex();
  LookupIndex(const LookupIndex&) = delete;
  LookupIndex& operator=(const LookupIndex&) = delete;

  const std::string& dir() const;

  // False once `dir()` no longer holds this environment (another process swapped in a
  // rebuilt index, or it was deleted) or its data file was cut short: reopen (Open then
  // reports the damage). Cheap (stat + fstat); call it before each use in long-lived processes.
  bool StillUsable() const;

  absl::StatusOr<IndexCoverage> Coverage() const;

  // Compares the index with `log` without writing: kStale if the log has no line where the
  // coverage says event indexed_through ends, or that line is another seq or hash (the log was
  // replaced, rolled back, or belongs to another ledger); kLagging if the log has complete
  // lines after it; kCurrent otherwise. By the hash chain, a matching last event means every
  // earlier indexed event matches too.
  absl::StatusOr<IndexFreshness> CompareWith(const LogFile& log) const;

  // Indexes the complete lines of `log` after the coverage, O(new events), committing every
  // options.events_per_txn events; returns how many it added. FailedPrecondition if the index
  // is stale for `log` (see CompareWith); DataLoss naming the line if a log line is malformed
  // or out of order (events before it stay indexed).
  absl::StatusOr<uint64_t> CatchUp(const LogFile& log, const std::atomic<bool>* cancel = nullptr);

  // Where event `seq` is; nullopt if it is not indexed.
  absl::StatusOr<std::optional<EventLocation>> Locate(uint64_t seq) const;
  // The seq of the event whose hash is the 64-hex `hash_hex`; nullopt if not indexed.
  // InvalidArgument if `hash_hex` is not 64 lowercase hex digits.
  absl::StatusOr<std::optional<uint64_t>> SeqOfHash(std::string_view hash_hex) const;
  // Up to `limit` indexed events with from_ts <= ts <= to_ts, in seq order.
  absl::StatusOr<RangeLocation> LocateRange(int64_t from_ts, int64_t to_ts, size_t limit) const;

  class Impl;

 private:
  explicit LookupIndex(std::unique_ptr<Impl> impl);
  // Indexes `log` in `scratch` and writes a compacted copy of it to `fresh`, durably.
  static absl::Status BuildCompactIndex(const std::string& scratch, const std::string& fresh,
                                        const LogFile& log, const LookupIndexOptions& options,
                                        const std::atomic<bool>* cancel);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger
