// SimilarityIndex: a node's derived vector index of one ledger, kept current with its log.
//
// It ties an Embedder to a VectorStore (embedded FAISS files or Qdrant) and follows
// <ledger_dir>/events.jsonl: each Follow() embeds the events after the index's last seq and
// adds them, so keeping up costs O(new events). The index is never trusted blindly:
//   - none published, damaged (DataLoss), or built with another embedder (FailedPrecondition):
//     it is rebuilt from the log (when options.auto_rebuild), and says why meanwhile;
//   - the log no longer holds the index's last event where it was (another ledger, or the
//     log was replaced): stale, rebuilt the same way;
//   - the published index disappears under a running node (its directory deleted, its
//     Qdrant alias removed): noticed on the next Follow, dropped, rebuilt.
// A rebuild (Rebuild(), or the automatic one) fills a staged index beside the published one,
// catches it up to the log's end, and publishes it in one atomic step; until then the old
// index (if any) keeps answering. While no usable index exists, Search answers
// FailedPrecondition "vector index not available: <why>", and nothing else on the node is
// affected: lookups by seq, hash and time go through EventQuery, not through this class.
//
// Bad input is never skipped: a malformed line of the log ends the step with DataLoss naming
// its line number; what was indexed before it stays.
//
// Thread safety: all methods may be called from any thread. Follow() and Rebuild() are
// serialized (a second waits for the first); Search() and Status() never wait for them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/base/clock.h"
#include "common/index/embedder.h"
#include "common/index/vector_index.h"

namespace snapledger {

enum class VectorIndexState {
  kCurrent,     // covers every event of the log as of the last Follow
  kLagging,     // usable, with newer events not yet added
  kMissing,     // no usable index (and no rebuild running); see detail
  kRebuilding,  // a rebuild is running; the old index (if any) still answers
  kFailed,      // the last Follow or rebuild failed; see detail
};
// "current", "lagging", "missing", "rebuilding", "failed".
std::string_view VectorIndexStateName(VectorIndexState state);

struct SimilarityIndexStatus {
  VectorIndexState state = VectorIndexState::kMissing;
  bool available = false;        // Search can answer
  uint64_t indexed_through = 0;  // last seq in the index that answers searches
  uint64_t log_events = 0;       // events in the log as of the last Follow or rebuild step
  uint64_t lag = 0;              // log_events - indexed_through (0 if unknown)
  uint64_t rebuilds = 0;         // rebuilds completed since start
  double gave_way_seconds = 0;   // time batches waited for more urgent work (give_way), since start
  std::string embedder;          // Embedder::Id()
  std::string backend;           // VectorStore::Describe()
  std::string detail;            // why not current
};

struct RebuildProgressInfo {
  uint64_t events_done = 0;
  uint64_t events_total = 0;  // events in the log when the rebuild started
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  absl::Duration elapsed;
};
// Called from the rebuilding thread after each batch and once at the end.
using RebuildProgressFn = std::function<void(const RebuildProgressInfo&)>;

struct SimilarityIndexOptions {
  size_t batch_events = 8192;  // events embedded and added per step
  // Rebuild automatically (inside Follow) when there is no usable index. Off: Follow reports
  // the index missing and only Rebuild() builds one.
  bool auto_rebuild = true;
  // Threads that embed a batch when the embedder allows it (Embedder::MaxConcurrency).
  int embed_threads = 2;
  // Asked before each batch is embedded (Follow and Rebuild): true while more urgent work runs
  // on the node (a replica: a block being received and verified). The batch then waits,
  // asking again every give_way_poll, until it is told false, has waited give_way_max_wait,
  // or Cancel(). A step that starts more than give_way_max_backlog events behind the log
  // never waits, so an index that fell behind (or a rebuild) catches up at full speed
  // instead of trailing further. With give_way set, batches are at most kGiveWayBatchEvents.
  // Called on the working thread, one call at a time; must be cheap. Null: never waits.
  std::function<bool()> give_way;
  absl::Duration give_way_poll = absl::Milliseconds(5);
  absl::Duration give_way_max_wait = absl::Seconds(1);
  uint64_t give_way_max_backlog = 50'000;
  // Measures rebuilds and give-way waits, and waits them out. Not owned; must outlive the index.
  Clock* clock = Clock::Real();
};

// The largest batch while give_way is set: how much work the index does between two looks.
inline constexpr size_t kGiveWayBatchEvents = 1024;

class SimilarityIndex;
using SimilarityIndexPtr = std::unique_ptr<SimilarityIndex>;

class SimilarityIndex {
 public:
  // Nothing is read until the first call. `ledger_dir` holds events.jsonl.
  SimilarityIndex(std::string ledger_dir, EmbedderPtr embedder, VectorStorePtr store,
                  SimilarityIndexOptions options = {});
  // Cancels work in progress (a rebuild's staged index is abandoned, never published) and
  // waits for it.
  ~SimilarityIndex();
  SimilarityIndex(const SimilarityIndex&) = delete;
  SimilarityIndex& operator=(const SimilarityIndex&) = delete;

  // Follows a newer copy of the same ledger from now on (a replica's newest verified block).
  void SetLedgerDir(std::string ledger_dir);

  // Brings the index up to the log's end now: opens the published index if none is open,
  // rebuilds if there is none usable (options.auto_rebuild), then adds the events after its
  // last seq and persists them. Returns the step's error (also kept in Status().detail).
  absl::Status Follow();

  // Rebuilds from the log beside the current index and swaps it in atomically; `progress` (may
  // be empty) is told how far it got. Cancelled if the index is destroyed or Cancel() is called.
  absl::Status Rebuild(const RebuildProgressFn& progress = {});

  // Stops a Follow or Rebuild in progress (it returns Cancelled) and every later one.
  void Cancel();

  // Up to k events most similar to `query` (Dimension() floats) that pass `filter`.
  // FailedPrecondition "vector index not available: <why>" while no usable index exists.
  absl::StatusOr<std::vector<VectorHit>> Search(absl::Span<const float> query, size_t k,
                                                const SearchFilter& filter) const;

  SimilarityIndexStatus Status() const;
  // The embedder (thread-safety as the embedder's own).
  Embedder& embedder() { return *embedder_; }

  class Cursor;

 private:
  absl::Status FollowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_);
  absl::Status RebuildLocked(const RebuildProgressFn& progress)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_);
  absl::Status OpenPublishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_);
  // Adds the log's events after `cursor` to `index`, batch by batch; `progress` after each.
  absl::Status AddNewEvents(VectorIndex& index, Cursor& cursor,
                            const std::function<void(uint64_t seq, uint64_t offset)>& progress);
  absl::Status EmbedBatch(absl::Span<const std::string_view> bodies, std::vector<float>* out);
  // Waits while options_.give_way says so (see there); adds the wait to Status().
  void GiveWay();
  std::string LedgerDir() const;
  void SetState(VectorIndexState state, std::string detail);
  void Publish(std::shared_ptr<VectorIndex> index);

  const EmbedderPtr embedder_;
  const VectorStorePtr store_;
  const SimilarityIndexOptions options_;
  const IndexIdentity identity_;
  std::atomic<bool> cancel_{false};

  absl::Mutex work_mu_;                                       // held by Follow and Rebuild
  std::unique_ptr<Cursor> cursor_ ABSL_GUARDED_BY(work_mu_);  // where the published index ends

  mutable absl::Mutex mu_;
  std::string ledger_dir_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<VectorIndex> index_ ABSL_GUARDED_BY(mu_);  // the one Search uses
  SimilarityIndexStatus status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
