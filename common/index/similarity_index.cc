#include "common/index/similarity_index.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/ledger/event_format.h"
#include "common/ledger/log_reader.h"
#include "common/lookup/lookup_index.h"
#include "spdlog/spdlog.h"

namespace snapledger {

std::string_view VectorIndexStateName(VectorIndexState state) {
  switch (state) {
    case VectorIndexState::kCurrent:
      return "current";
    case VectorIndexState::kLagging:
      return "lagging";
    case VectorIndexState::kMissing:
      return "missing";
    case VectorIndexState::kRebuilding:
      return "rebuilding";
    case VectorIndexState::kFailed:
      return "failed";
  }
  return "unknown";
}

// Where an index ends in the log: its last event (seq, hash, ts) and the byte after its line.
class SimilarityIndex::Cursor {
 public:
  ChainHead head;
  uint64_t end_offset = 0;
};

namespace {

uint64_t CountLines(std::string_view data) {
  return static_cast<uint64_t>(std::count(data.begin(), data.end(), '\n'));
}

// The cursor of an index that holds events 1..last_seq of `log`: found by one scan (once per
// open). NotFound-free: an index longer than the log is stale (FailedPrecondition).
absl::StatusOr<SimilarityIndex::Cursor> FindCursor(const LogFile& log, uint64_t last_seq) {
  SimilarityIndex::Cursor cursor;
  if (last_seq == 0) return cursor;
  ASSIGN_OR_RETURN(LogRegion all, log.Map());
  bool found = false;
  RETURN_IF_ERROR(ScanEvents(all.data(), ChainHead{}, 0, [&](const EventView& ev, uint64_t at) {
    if (ev.seq < last_seq) return true;
    cursor.head = ChainHead{ev.seq, std::string(ev.hash), ev.ts};
    cursor.end_offset = at + ev.line.size() + 1;
    found = true;
    return false;
  }));
  if (!found)
    return absl::FailedPreconditionError(absl::StrCat("the index covers seq 1..", last_seq, " but ",
                                                      log.path(), " has fewer events"));
  return cursor;
}

// Whether `cursor` still names the same event of `log` (a newer copy of the same ledger).
absl::Status CheckCursor(const LogFile& log, const SimilarityIndex::Cursor& cursor) {
  if (cursor.head.seq == 0) return absl::OkStatus();
  if (log.size() < cursor.end_offset)
    return absl::FailedPreconditionError(absl::StrCat(
        log.path(), " is shorter than the index (it ends at seq ", cursor.head.seq, ")"));
  ASSIGN_OR_RETURN(std::optional<std::string> line, log.LineEndingAt(cursor.end_offset));
  absl::StatusOr<EventView> ev =
      line.has_value() ? ParseEventLine(*line) : absl::NotFoundError("no line ends there");
  if (!ev.ok() || ev->seq != cursor.head.seq || ev->hash != cursor.head.hash)
    return absl::FailedPreconditionError(
        absl::StrCat(log.path(), " no longer holds the index's last event (seq ", cursor.head.seq,
                     ") where it was: another ledger, or the log was replaced"));
  return absl::OkStatus();
}

absl::Status NotAvailable(std::string_view why) {
  return absl::FailedPreconditionError(
      absl::StrCat("vector index not available: ", std::string(why)));
}

}  // namespace

SimilarityIndex::SimilarityIndex(std::string ledger_dir, EmbedderPtr embedder, VectorStorePtr store,
                                 SimilarityIndexOptions options)
    : embedder_(std::move(embedder)),
      store_(std::move(store)),
      options_(options),
      identity_{embedder_->Id(), embedder_->Dimension()},
      ledger_dir_(std::move(ledger_dir)) {
  status_.embedder = identity_.embedder_id;
  status_.backend = store_->Describe();
  status_.detail = "not opened yet";
}

SimilarityIndex::~SimilarityIndex() {
  Cancel();
  absl::MutexLock wait(&work_mu_);  // Follow/Rebuild on other threads end at their next batch
}

void SimilarityIndex::Cancel() { cancel_ = true; }

void SimilarityIndex::SetLedgerDir(std::string ledger_dir) {
  absl::MutexLock lock(&mu_);
  ledger_dir_ = std::move(ledger_dir);
}

std::string SimilarityIndex::LedgerDir() const {
  absl::MutexLock lock(&mu_);
  return ledger_dir_;
}

void SimilarityIndex::SetState(VectorIndexState state, std::string detail) {
  absl::MutexLock lock(&mu_);
  status_.state = state;
  status_.detail = std::move(detail);
}

void SimilarityIndex::Publish(std::shared_ptr<VectorIndex> index) {
  absl::MutexLock lock(&mu_);
  index_ = std::move(index);
  status_.available = index_ != nullptr;
  status_.indexed_through = index_ != nullptr ? index_->LastSeq() : 0;
}

SimilarityIndexStatus SimilarityIndex::Status() const {
  absl::MutexLock lock(&mu_);
  SimilarityIndexStatus status = status_;
  status.lag =
      status.log_events > status.indexed_through ? status.log_events - status.indexed_through : 0;
  return status;
}

absl::StatusOr<std::vector<VectorHit>> SimilarityIndex::Search(absl::Span<const float> query,
                                                               size_t k,
                                                               const SearchFilter& filter) const {
  std::shared_ptr<VectorIndex> index;
  std::string why;
  {
    absl::MutexLock lock(&mu_);
    index = index_;
    why = absl::StrCat(std::string(VectorIndexStateName(status_.state)),
                       status_.detail.empty() ? "" : ": ", status_.detail);
  }
  if (index == nullptr) return NotAvailable(why);
  if (query.size() != static_cast<size_t>(identity_.dimension))
    return absl::InvalidArgumentError(absl::StrCat("a query vector has ", identity_.dimension,
                                                   " dimensions, not ", query.size()));
  return index->Search(query, k, filter);
}

absl::Status SimilarityIndex::Follow() {
  absl::MutexLock work(&work_mu_);
  absl::Status st = FollowLocked();
  if (!st.ok() && !absl::IsCancelled(st)) {
    // A usable index that merely failed to take new events keeps answering.
    SetState(VectorIndexState::kFailed, std::string(st.message()));
  }
  return st;
}

absl::Status SimilarityIndex::OpenPublishedLocked() {
  absl::StatusOr<VectorIndexPtr> opened = store_->OpenPublished(identity_);
  if (!opened.ok()) return opened.status();
  ASSIGN_OR_RETURN(LogFile log, LogFile::Open(LedgerDir()));
  ASSIGN_OR_RETURN(Cursor cursor, FindCursor(log, (*opened)->LastSeq()));
  cursor_ = std::make_unique<Cursor>(std::move(cursor));
  spdlog::info("vector index {} opened through seq {}", store_->Describe(), (*opened)->LastSeq());
  Publish(std::shared_ptr<VectorIndex>(std::move(*opened)));
  return absl::OkStatus();
}

absl::Status SimilarityIndex::FollowLocked() {
  if (cancel_) return absl::CancelledError("the vector index is shutting down");
  std::string unusable;  // why the index must be rebuilt; empty while it is usable
  bool have_index;
  {
    absl::MutexLock lock(&mu_);
    have_index = index_ != nullptr;
  }
  if (have_index) {
    if (absl::Status published = store_->CheckPublished(); !published.ok()) {
      // Only a removed or replaced index is dropped; a backend that is briefly unreachable
      // (Qdrant down) keeps its index, and the step is retried.
      if (!absl::IsNotFound(published) && !absl::IsFailedPrecondition(published)) return published;
      unusable = std::string(published.message());
      spdlog::warn("vector index {}: {}; dropping it", store_->Describe(), unusable);
      Publish(nullptr);
      cursor_.reset();
    }
  } else {
    absl::Status opened = OpenPublishedLocked();
    if (!opened.ok()) {
      if (!absl::IsNotFound(opened) && !absl::IsDataLoss(opened) &&
          !absl::IsFailedPrecondition(opened))
        return opened;  // e.g. the log cannot be read, or Qdrant is down: try again later
      unusable = std::string(opened.message());
    }
  }
  if (unusable.empty()) {
    ASSIGN_OR_RETURN(LogFile log, LogFile::Open(LedgerDir()));
    absl::Status same = CheckCursor(log, *cursor_);
    if (same.ok()) {
      std::shared_ptr<VectorIndex> index;
      {
        absl::MutexLock lock(&mu_);
        index = index_;
      }
      RETURN_IF_ERROR(AddNewEvents(*index, *cursor_, {}));
      SetState(VectorIndexState::kCurrent, "");
      return absl::OkStatus();
    }
    unusable = std::string(same.message());
    Publish(nullptr);
    cursor_.reset();
  }
  if (!options_.auto_rebuild) {
    SetState(VectorIndexState::kMissing, unusable);
    return absl::OkStatus();
  }
  spdlog::warn("vector index {} is not usable ({}); rebuilding it from the log", store_->Describe(),
               unusable);
  SetState(VectorIndexState::kRebuilding, unusable);
  return RebuildLocked({});
}

absl::Status SimilarityIndex::Rebuild(const RebuildProgressFn& progress) {
  absl::MutexLock work(&work_mu_);
  SetState(VectorIndexState::kRebuilding, "rebuild requested");
  absl::Status st = RebuildLocked(progress);
  if (!st.ok() && !absl::IsCancelled(st)) {
    absl::MutexLock lock(&mu_);
    status_.state = index_ != nullptr ? VectorIndexState::kFailed : VectorIndexState::kMissing;
    status_.detail = absl::StrCat("rebuild failed: ", st.message());
  }
  return st;
}

absl::Status SimilarityIndex::RebuildLocked(const RebuildProgressFn& progress) {
  Clock& clock = *options_.clock;
  const absl::Time start = clock.Now();
  ASSIGN_OR_RETURN(VectorIndexPtr staged, store_->CreateStaged(identity_));
  Cursor cursor;
  RebuildProgressInfo info;
  {
    ASSIGN_OR_RETURN(LogFile log, LogFile::Open(LedgerDir()));
    info.bytes_total = log.size();
    ASSIGN_OR_RETURN(LogRegion all, log.Map());
    info.events_total = CountLines(all.data());
  }
  // Catch up until a pass finds nothing new, so the swap loses no event appended meanwhile.
  uint64_t before;
  do {
    before = staged->LastSeq();
    RETURN_IF_ERROR(AddNewEvents(*staged, cursor, [&](uint64_t seq, uint64_t offset) {
      info.events_done = seq;
      info.bytes_done = offset;
      info.events_total = std::max(info.events_total, seq);
      info.bytes_total = std::max(info.bytes_total, offset);
      info.elapsed = clock.Now() - start;
      if (progress) progress(info);
    }));
  } while (staged->LastSeq() != before);
  RETURN_IF_ERROR(store_->Publish(*staged));
  cursor_ = std::make_unique<Cursor>(std::move(cursor));
  const uint64_t through = staged->LastSeq();
  Publish(std::shared_ptr<VectorIndex>(std::move(staged)));
  {
    absl::MutexLock lock(&mu_);
    ++status_.rebuilds;
  }
  SetState(VectorIndexState::kCurrent, "");
  info.elapsed = clock.Now() - start;
  if (progress) progress(info);
  spdlog::info("vector index {} rebuilt through seq {} in {}", store_->Describe(), through,
               absl::FormatDuration(info.elapsed));
  return absl::OkStatus();
}

absl::Status SimilarityIndex::EmbedBatch(absl::Span<const std::string_view> bodies,
                                         std::vector<float>* out) {
  const int threads = std::max(1, std::min({options_.embed_threads, embedder_->MaxConcurrency(),
                                            static_cast<int>(bodies.size() / 512)}));
  return EmbedInParallel(*embedder_, bodies, threads, out);
}

// Scheduler priorities cannot order the index behind the node's urgent work: Linux shares the
// CPU between sessions (autogroups) and cgroups first, whatever a thread's nice value, and
// sshd starts each receive in a session of its own. Hence the explicit give_way.
void SimilarityIndex::GiveWay() {
  if (!options_.give_way()) return;
  Clock& clock = *options_.clock;
  const absl::Time start = clock.Now();
  while (!cancel_ && clock.Now() - start < options_.give_way_max_wait) {
    clock.SleepFor(options_.give_way_poll);
    if (!options_.give_way()) break;
  }
  absl::MutexLock lock(&mu_);
  status_.gave_way_seconds += absl::ToDoubleSeconds(clock.Now() - start);
}

absl::Status SimilarityIndex::AddNewEvents(
    VectorIndex& index, Cursor& cursor,
    const std::function<void(uint64_t seq, uint64_t offset)>& progress) {
  ASSIGN_OR_RETURN(LogFile log, LogFile::Open(LedgerDir()));
  if (log.size() == cursor.end_offset) {
    absl::MutexLock lock(&mu_);
    status_.log_events = cursor.head.seq;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(LogRegion region, log.Map(cursor.end_offset));
  const uint64_t backlog = CountLines(region.data());
  {
    absl::MutexLock lock(&mu_);
    status_.log_events = cursor.head.seq + backlog;
  }
  const bool may_give_way = options_.give_way && backlog <= options_.give_way_max_backlog;
  const size_t batch_events =
      may_give_way ? std::min(options_.batch_events, kGiveWayBatchEvents) : options_.batch_events;
  std::vector<IndexedEvent> batch;
  std::vector<std::string_view> bodies;
  std::vector<float> vectors;
  Cursor pending = cursor;  // where the log is read to; `cursor` moves after each Add
  absl::Status failed;
  auto flush = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    if (may_give_way) GiveWay();
    if (cancel_) return absl::CancelledError("the vector index is shutting down");
    RETURN_IF_ERROR(EmbedBatch(bodies, &vectors));
    RETURN_IF_ERROR(index.Add(batch, vectors));
    cursor = pending;
    {
      absl::MutexLock lock(&mu_);
      if (index_.get() == &index) status_.indexed_through = index.LastSeq();
    }
    batch.clear();
    bodies.clear();
    if (progress) progress(cursor.head.seq, cursor.end_offset);
    return absl::OkStatus();
  };
  absl::Status scanned = ScanEvents(
      region.data(), cursor.head, cursor.end_offset, [&](const EventView& ev, uint64_t at) {
        batch.push_back(IndexedEvent{ev.seq, ev.ts, ev.hash, ev.body});
        bodies.push_back(ev.body);
        pending.head.seq = ev.seq;
        pending.head.ts = ev.ts;
        pending.head.hash.assign(ev.hash);
        pending.end_offset = at + ev.line.size() + 1;
        if (batch.size() < batch_events) return true;
        failed = flush();
        return failed.ok();
      });
  // Events before a malformed line are still added; the error names the line.
  if (failed.ok()) failed = flush();
  RETURN_IF_ERROR(index.Persist());
  {
    absl::MutexLock lock(&mu_);
    if (index_.get() == &index) status_.indexed_through = index.LastSeq();
  }
  RETURN_IF_ERROR(failed);
  return scanned;
}

}  // namespace snapledger
