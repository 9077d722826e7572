#include "common/lookup/event_query.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/fmt_absl.h"
#include "common/base/status_macros.h"
#include "common/ledger/head_file.h"
#include "common/ledger/log_reader.h"

namespace snapledger {

std::string_view IndexStateName(IndexState state) {
  switch (state) {
    case IndexState::kCurrent:
      return "current";
    case IndexState::kLagging:
      return "lagging";
    case IndexState::kStale:
      return "stale";
    case IndexState::kMissing:
      return "missing";
    case IndexState::kRebuilding:
      return "rebuilding";
  }
  return "unknown";
}

namespace {

// How many times a query takes a fresh view of the log because the index turned out to be ahead
// of its view (another thread or process caught it up meanwhile) before it answers by scan.
constexpr int kMaxViewRenewals = 100;

// The index path signals "the log view is older than the index; take a new view" with Aborted.
absl::Status ViewTooOld() {
  return absl::AbortedError("the lookup index is ahead of this view of events.jsonl");
}

// Statuses an index lookup may return as the answer; anything else means the index is damaged
// (or, for Aborted, that the view of the log must be renewed).
bool IsAnswer(const absl::Status& st) {
  return st.ok() || absl::IsNotFound(st) || absl::IsInvalidArgument(st);
}

absl::Status Damaged(absl::string_view what) {
  return absl::InternalError(absl::StrCat("index entry disagrees with the log: ", what));
}

// The line `loc` points at, checked to be a whole line of the log with that seq and ts.
absl::StatusOr<std::string> CheckedLine(const LogFile& log, const EventLocation& loc) {
  if (loc.end() > log.size()) return ViewTooOld();
  ASSIGN_OR_RETURN(std::optional<std::string> line, log.LineStartingAt(loc.offset, loc.length));
  if (!line.has_value() || line->size() != loc.length)
    return Damaged(absl::StrCat("no line of length ", loc.length, " at byte ", loc.offset));
  auto ev = ParseEventLine(*line);
  if (!ev.ok() || ev->seq != loc.seq || ev->ts != loc.ts)
    return Damaged(absl::StrCat("the line at byte ", loc.offset, " is not seq ", loc.seq));
  return *std::move(line);
}

// The ts of the event on a range's boundary line (from LineStartingAt or LineEndingAt).
absl::StatusOr<int64_t> BoundaryTs(const absl::StatusOr<std::optional<std::string>>& line,
                                   uint64_t at) {
  if (!line.ok()) return line.status();
  if (!line->has_value()) return Damaged(absl::StrCat("no line begins or ends at byte ", at));
  auto ev = ParseEventLine(**line);
  if (!ev.ok()) return Damaged(absl::StrCat("the line at byte ", at, " does not parse"));
  return ev->ts;
}

// --- Answers from the index ------------------------------------------------------------------

absl::StatusOr<std::string> GetFromIndex(const LookupIndex& index, const LogFile& log,
                                         uint64_t seq) {
  ASSIGN_OR_RETURN(std::optional<EventLocation> loc, index.Locate(seq));
  if (!loc.has_value()) {
    ASSIGN_OR_RETURN(IndexCoverage cov, index.Coverage());
    if (seq <= cov.indexed_through) return Damaged(absl::StrCat("seq ", seq, " is missing"));
    return absl::NotFoundError(absl::StrCat("no event with seq ", seq, " in ", log.path(),
                                            " (it ends at seq ", cov.indexed_through, ")"));
  }
  return CheckedLine(log, *loc);
}

absl::StatusOr<std::string> GetByHashFromIndex(const LookupIndex& index, const LogFile& log,
                                               std::string_view hash_hex) {
  ASSIGN_OR_RETURN(std::optional<uint64_t> seq, index.SeqOfHash(hash_hex));
  if (!seq.has_value())
    return absl::NotFoundError(
        absl::StrCat("no event with hash ", std::string(hash_hex), " in ", log.path()));
  ASSIGN_OR_RETURN(std::optional<EventLocation> loc, index.Locate(*seq));
  if (!loc.has_value()) return Damaged(absl::StrCat("hash names seq ", *seq, ", not indexed"));
  ASSIGN_OR_RETURN(std::string line, CheckedLine(log, *loc));
  if (ParseEventLine(line)->hash != hash_hex)  // CheckedLine parsed it
    return Damaged(absl::StrCat("seq ", *seq, " has another hash"));
  return line;
}

// Checks the events either side of a located range against the log: the one before must be
// earlier than from_ts, the one after (unless the limit cut the range) later than to_ts.
absl::Status CheckRangeEnds(const LogFile& log, const RangeLocation& r, uint64_t after_offset,
                            int64_t from_ts, int64_t to_ts, bool limited) {
  if (r.start_offset > log.size()) return ViewTooOld();
  if (r.start_offset > 0) {
    ASSIGN_OR_RETURN(int64_t before, BoundaryTs(log.LineEndingAt(r.start_offset), r.start_offset));
    if (before >= from_ts) return Damaged("an event before the range is within it");
  }
  if (!limited && after_offset < log.size()) {
    ASSIGN_OR_RETURN(int64_t after, BoundaryTs(log.LineStartingAt(after_offset), after_offset));
    if (after <= to_ts) return Damaged("an event after the range is within it");
  }
  return absl::OkStatus();
}

// Splits `bytes`, read from byte `base` of the log, into the lines `locs` point at, checking
// each is a whole line with the seq and ts its entry claims.
absl::StatusOr<std::vector<std::string>> SplitLines(std::string_view bytes, uint64_t base,
                                                    const std::vector<EventLocation>& locs) {
  std::vector<std::string> lines;
  lines.reserve(locs.size());
  for (const EventLocation& loc : locs) {
    std::string_view line = bytes.substr(loc.offset - base, loc.length);
    auto ev = ParseEventLine(line);
    if (bytes[loc.end() - 1 - base] != '\n' || line.find('\n') != std::string_view::npos ||
        !ev.ok() || ev->seq != loc.seq || ev->ts != loc.ts)
      return Damaged(absl::StrCat("the line at byte ", loc.offset, " is not seq ", loc.seq));
    lines.emplace_back(line);
  }
  return lines;
}

absl::StatusOr<std::vector<std::string>> RangeFromIndex(const LookupIndex& index,
                                                        const LogFile& log, int64_t from_ts,
                                                        int64_t to_ts, size_t limit) {
  ASSIGN_OR_RETURN(RangeLocation r, index.LocateRange(from_ts, to_ts, limit));
  uint64_t end = r.start_offset;
  for (const EventLocation& loc : r.events) {
    if (loc.offset != end) return Damaged("range entries are not contiguous");
    if (loc.ts < from_ts || loc.ts > to_ts) return Damaged("an event in the range is outside it");
    end = loc.end();
  }
  if (end > log.size()) return ViewTooOld();
  RETURN_IF_ERROR(CheckRangeEnds(log, r, end, from_ts, to_ts, r.events.size() == limit));
  // The events of a range are contiguous in the log: one read for all of them.
  ASSIGN_OR_RETURN(std::string bytes, log.Read(r.start_offset, end - r.start_offset));
  return SplitLines(bytes, r.start_offset, r.events);
}

// --- Answers by scanning ---------------------------------------------------------------------

absl::StatusOr<std::string> GetByScan(const LogFile& log, uint64_t seq) {
  std::optional<std::string> found;
  uint64_t last = 0;
  ASSIGN_OR_RETURN(LogRegion all, log.Map());
  RETURN_IF_ERROR(ScanEvents(all.data(), ChainHead{}, 0, [&](const EventView& ev, uint64_t) {
    last = ev.seq;
    if (ev.seq == seq) found.emplace(ev.line);
    return !found.has_value();
  }));
  if (!found.has_value())
    return absl::NotFoundError(absl::StrCat("no event with seq ", seq, " in ", log.path(),
                                            " (it ends at seq ", last, ")"));
  return *std::move(found);
}

absl::StatusOr<std::string> GetByHashByScan(const LogFile& log, std::string_view hash_hex) {
  std::optional<std::string> found;
  ASSIGN_OR_RETURN(LogRegion all, log.Map());
  RETURN_IF_ERROR(ScanEvents(all.data(), ChainHead{}, 0, [&](const EventView& ev, uint64_t) {
    if (ev.hash == hash_hex) found.emplace(ev.line);
    return !found.has_value();
  }));
  if (!found.has_value())
    return absl::NotFoundError(
        absl::StrCat("no event with hash ", std::string(hash_hex), " in ", log.path()));
  return *std::move(found);
}

absl::StatusOr<std::vector<std::string>> RangeByScan(const LogFile& log, int64_t from_ts,
                                                     int64_t to_ts, size_t limit) {
  std::vector<std::string> lines;
  if (limit == 0) return lines;
  ASSIGN_OR_RETURN(LogRegion all, log.Map());
  RETURN_IF_ERROR(ScanEvents(all.data(), ChainHead{}, 0, [&](const EventView& ev, uint64_t) {
    if (ev.ts > to_ts) return false;  // ts is non-decreasing (ScanEvents checks it)
    if (ev.ts >= from_ts) lines.emplace_back(ev.line);
    return lines.size() < limit;
  }));
  return lines;
}

// Complete lines of the log from byte `from` on.
absl::StatusOr<uint64_t> CountLinesFrom(const LogFile& log, uint64_t from) {
  ASSIGN_OR_RETURN(LogRegion rest, log.Map(from));
  return std::count(rest.data().begin(), rest.data().end(), '\n');
}

// Complete lines in the log; counts only past the head file's position when it is valid.
absl::StatusOr<uint64_t> CountEvents(const LogFile& log, const std::string& ledger_dir) {
  uint64_t base_seq = 0, base_offset = 0;
  auto head = ReadHeadFile(ledger_dir);
  if (head.ok() && head->has_value()) {
    const HeadRecord& h = **head;
    auto line = log.LineEndingAt(h.log_bytes);
    auto ev = line.ok() && line->has_value() ? ParseEventLine(**line)
                                             : absl::StatusOr<EventView>(absl::NotFoundError(""));
    if (ev.ok() && ev->seq == h.head.seq) {
      base_seq = h.head.seq;
      base_offset = h.log_bytes;
    }
  }
  ASSIGN_OR_RETURN(uint64_t rest, CountLinesFrom(log, base_offset));
  return base_seq + rest;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class EventQuery::Impl {
 public:
  Impl(std::string ledger_dir, std::string index_dir, EventQueryOptions options)
      : ledger_dir_(std::move(ledger_dir)),
        index_dir_(std::move(index_dir)),
        options_(std::move(options)) {}

  ~Impl() {
    cancel_.store(true);
    std::thread t;
    {
      absl::MutexLock lock(&mu_);
      t = std::move(rebuild_thread_);
    }
    if (t.joinable()) t.join();
  }

  template <typename T>
  absl::StatusOr<T> Answer(
      absl::FunctionRef<absl::StatusOr<T>(const LookupIndex&, const LogFile&)> from_index,
      absl::FunctionRef<absl::StatusOr<T>(const LogFile&)> by_scan);

  absl::StatusOr<IndexStatus> CheckIndex();
  absl::Status RebuildIndex();
  void WaitForRebuild() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &Impl::NotRebuilding));
  }
  void SetLedgerDir(std::string dir) {
    absl::MutexLock lock(&dir_mu_);
    ledger_dir_ = std::move(dir);
  }

 private:
  // What a query may use: an index caught up to the view (or null: scan), or a request to
  // take a new view of the log.
  struct IndexChoice {
    std::shared_ptr<LookupIndex> index;
    bool renew_view = false;
    bool rebuild_started = false;
  };

  absl::StatusOr<IndexChoice> ChooseIndex(const LogFile& log);
  // Whether an index that `log` calls stale because it ends beyond `log` was merely caught up
  // by someone with a newer view.
  absl::StatusOr<bool> IndexIsAheadOfView(const IndexCoverage& coverage, const LogFile& log);
  // The installed index (opened if needed), or why there is none (NotFound: missing;
  // DataLoss: damaged); neither while a rebuild runs.
  std::pair<std::shared_ptr<LookupIndex>, std::optional<absl::Status>> OpenedIndex();
  // Drops `index` and starts a rebuild (unless one runs, or the last failed on this same log);
  // returns whether it started one.
  bool GiveUpOn(const std::shared_ptr<LookupIndex>& index, absl::string_view state,
                absl::string_view reason, const LogFile& log);
  void StartRebuildLocked(std::string reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunRebuild();
  bool NotRebuilding() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !rebuilding_; }
  absl::StatusOr<IndexStatus> StatusOf(const LogFile& log);

  std::string LedgerDir() const {
    absl::MutexLock lock(&dir_mu_);
    return ledger_dir_;
  }

  mutable absl::Mutex dir_mu_;  // never held while taking mu_
  std::string ledger_dir_ ABSL_GUARDED_BY(dir_mu_);
  const std::string index_dir_;
  const EventQueryOptions options_;
  std::atomic<bool> cancel_{false};

  absl::Mutex mu_;
  // Shared with in-flight queries, which may still use a replaced index until they finish.
  std::shared_ptr<LookupIndex> index_ ABSL_GUARDED_BY(mu_);
  bool rebuilding_ ABSL_GUARDED_BY(mu_) = false;
  std::string rebuild_reason_ ABSL_GUARDED_BY(mu_);
  absl::Status last_rebuild_ ABSL_GUARDED_BY(mu_);
  // The log's size when a rebuild failed: not retried automatically until it changes.
  std::optional<uint64_t> failed_at_log_size_ ABSL_GUARDED_BY(mu_);
  std::thread rebuild_thread_ ABSL_GUARDED_BY(mu_);
};

template <typename T>
absl::StatusOr<T> EventQuery::Impl::Answer(
    absl::FunctionRef<absl::StatusOr<T>(const LookupIndex&, const LogFile&)> from_index,
    absl::FunctionRef<absl::StatusOr<T>(const LogFile&)> by_scan) {
  int renewals = 0;
  bool waited = false;
  while (true) {
    const bool may_wait = !options_.rebuild_in_background && !waited;
    ASSIGN_OR_RETURN(LogFile log, LogFile::Open(LedgerDir()));
    ASSIGN_OR_RETURN(IndexChoice choice, ChooseIndex(log));
    bool rebuild_started = choice.rebuild_started;
    if (choice.index != nullptr) {
      absl::StatusOr<T> answer = from_index(*choice.index, log);
      if (IsAnswer(answer.status())) return answer;
      choice.renew_view = absl::IsAborted(answer.status());
      if (!choice.renew_view)
        rebuild_started = GiveUpOn(choice.index, "damaged", answer.status().message(), log);
    }
    if (choice.renew_view) {
      if (++renewals <= kMaxViewRenewals) continue;
      return by_scan(log);  // the log keeps outrunning this query; the index is fine
    }
    if (!rebuild_started || !may_wait) return by_scan(log);
    WaitForRebuild();  // one-shot mode: answer from the rebuilt index
    waited = true;
  }
}

absl::StatusOr<EventQuery::Impl::IndexChoice> EventQuery::Impl::ChooseIndex(const LogFile& log) {
  IndexChoice choice;
  auto [index, missing] = OpenedIndex();
  if (index == nullptr) {
    if (missing.has_value()) {
      absl::string_view state = absl::IsDataLoss(*missing) ? "damaged" : "missing";
      choice.rebuild_started = GiveUpOn(nullptr, state, missing->message(), log);
    }
    return choice;
  }
  absl::StatusOr<IndexFreshness> fresh = index->CompareWith(log);
  if (!fresh.ok()) {
    choice.rebuild_started = GiveUpOn(index, "damaged", fresh.status().message(), log);
    return choice;
  }
  if (fresh->state == IndexFreshness::State::kStale) {
    ASSIGN_OR_RETURN(choice.renew_view, IndexIsAheadOfView(fresh->coverage, log));
    if (!choice.renew_view)
      choice.rebuild_started = GiveUpOn(index, "stale", fresh->stale_reason, log);
    return choice;
  }
  if (fresh->state == IndexFreshness::State::kLagging) {
    absl::StatusOr<uint64_t> added = index->CatchUp(log);
    if (absl::IsDataLoss(added.status())) return added.status();  // the log is malformed
    if (absl::IsFailedPrecondition(added.status())) {
      // Someone with a newer view caught the index up past this one (or the log was replaced
      // just now): look again with a new view, which CompareWith decides conclusively.
      choice.renew_view = true;
      return choice;
    }
    if (!added.ok()) {
      choice.rebuild_started = GiveUpOn(index, "unusable", added.status().message(), log);
      return choice;
    }
  }
  choice.index = std::move(index);
  return choice;
}

absl::StatusOr<bool> EventQuery::Impl::IndexIsAheadOfView(const IndexCoverage& coverage,
                                                          const LogFile& log) {
  if (coverage.end_offset <= log.size()) return false;
  // The log only grows, so a view opened after `coverage` was read is at least as long as the
  // log was when the index was caught up to it, unless the log shrank or was replaced.
  ASSIGN_OR_RETURN(LogFile now, LogFile::Open(LedgerDir()));
  return now.size() >= coverage.end_offset;
}

std::pair<std::shared_ptr<LookupIndex>, std::optional<absl::Status>>
EventQuery::Impl::OpenedIndex() {
  absl::MutexLock lock(&mu_);
  if (rebuilding_) return {nullptr, std::nullopt};
  if (index_ != nullptr && index_->StillUsable()) return {index_, std::nullopt};
  // Opened under mu_: LMDB forbids opening one environment twice in a process.
  index_.reset();
  absl::StatusOr<LookupIndexPtr> opened = LookupIndex::Open(index_dir_, options_.index);
  if (!opened.ok()) return {nullptr, opened.status()};
  index_ = std::move(*opened);
  return {index_, std::nullopt};
}

bool EventQuery::Impl::GiveUpOn(const std::shared_ptr<LookupIndex>& index, absl::string_view state,
                                absl::string_view reason, const LogFile& log) {
  absl::MutexLock lock(&mu_);
  if (index_ != index) return false;  // already replaced by a rebuild: use that next time
  index_.reset();
  if (rebuilding_ || failed_at_log_size_ == log.size()) return false;
  spdlog::warn("lookup index at {} is {} ({}): answering by scanning {}; rebuilding the index{}",
               index_dir_, state, reason, kEventsFile,
               options_.rebuild_in_background ? " in the background" : " before answering");
  StartRebuildLocked(absl::StrCat(state, ": ", reason));
  return true;
}

void EventQuery::Impl::StartRebuildLocked(std::string reason) {
  // A finished rebuild thread no longer touches mu_ once rebuilding_ is false: safe to join.
  if (rebuild_thread_.joinable()) rebuild_thread_.join();
  rebuilding_ = true;
  rebuild_reason_ = std::move(reason);
  rebuild_thread_ = std::thread([this] { RunRebuild(); });
}

void EventQuery::Impl::RunRebuild() {
  absl::StatusOr<LogFile> log = LogFile::Open(LedgerDir());
  absl::StatusOr<LookupIndexPtr> fresh =
      log.ok() ? LookupIndex::Rebuild(index_dir_, *log, options_.index, &cancel_) : log.status();
  absl::MutexLock lock(&mu_);
  if (fresh.ok()) {
    index_ = std::move(*fresh);
    failed_at_log_size_.reset();
    last_rebuild_ = absl::OkStatus();
    auto cov = index_->Coverage();
    spdlog::info("lookup index at {} rebuilt through seq {}", index_dir_,
                 cov.ok() ? cov->indexed_through : 0);
  } else {
    failed_at_log_size_ = log.ok() ? log->size() : 0;
    last_rebuild_ = fresh.status();
    if (!absl::IsCancelled(fresh.status()))
      spdlog::error("rebuilding the lookup index at {} failed: {}", index_dir_, fresh.status());
  }
  rebuilding_ = false;
}

absl::Status EventQuery::Impl::RebuildIndex() {
  {
    absl::MutexLock lock(&mu_);
    if (!rebuilding_) {
      spdlog::info("rebuilding the lookup index at {} on request", index_dir_);
      StartRebuildLocked("requested");
    }
  }
  WaitForRebuild();
  absl::MutexLock lock(&mu_);
  return last_rebuild_;
}

absl::StatusOr<IndexStatus> EventQuery::Impl::CheckIndex() {
  ASSIGN_OR_RETURN(LogFile log, LogFile::Open(LedgerDir()));
  ASSIGN_OR_RETURN(IndexStatus status, StatusOf(log));
  if (status.state != IndexState::kCurrent && status.state != IndexState::kLagging) {
    ASSIGN_OR_RETURN(status.log_events, CountEvents(log, LedgerDir()));
  }
  status.lag = status.log_events - status.indexed_through;
  absl::MutexLock lock(&mu_);
  if (!last_rebuild_.ok())
    absl::StrAppend(&status.detail, status.detail.empty() ? "" : "; ",
                    "last rebuild failed: ", last_rebuild_.message());
  return status;
}

absl::StatusOr<IndexStatus> EventQuery::Impl::StatusOf(const LogFile& log) {
  IndexStatus status;
  {
    absl::MutexLock lock(&mu_);
    if (rebuilding_) {
      status.state = IndexState::kRebuilding;
      status.detail = rebuild_reason_;
      return status;
    }
  }
  auto [index, missing] = OpenedIndex();
  if (index == nullptr) {
    if (missing.has_value()) status.detail = std::string(missing->message());
    return status;
  }
  absl::StatusOr<IndexFreshness> fresh = index->CompareWith(log);
  if (!fresh.ok()) {
    status.detail = std::string(fresh.status().message());
  } else if (fresh->state == IndexFreshness::State::kStale) {
    status.state = IndexState::kStale;
    status.detail = fresh->stale_reason;
  } else {
    ASSIGN_OR_RETURN(uint64_t newer, CountLinesFrom(log, fresh->coverage.end_offset));
    status.state = newer == 0 ? IndexState::kCurrent : IndexState::kLagging;
    status.indexed_through = fresh->coverage.indexed_through;
    status.log_events = status.indexed_through + newer;
  }
  return status;
}

// ---------------------------------------------------------------------------------------------

EventQuery::EventQuery(std::string ledger_dir, std::string index_dir, EventQueryOptions options)
    : impl_(std::make_unique<Impl>(std::move(ledger_dir), std::move(index_dir),
                                   std::move(options))) {}

EventQuery::~EventQuery() = default;

void EventQuery::SetLedgerDir(std::string ledger_dir) {
  impl_->SetLedgerDir(std::move(ledger_dir));
}

absl::StatusOr<std::string> EventQuery::Get(uint64_t seq) {
  if (seq == 0) return absl::InvalidArgumentError("seq numbers start at 1");
  return impl_->Answer<std::string>(
      [&](const LookupIndex& index, const LogFile& log) { return GetFromIndex(index, log, seq); },
      [&](const LogFile& log) { return GetByScan(log, seq); });
}

absl::StatusOr<std::string> EventQuery::GetByHash(std::string_view hash_hex) {
  if (!IsLowerHex64(hash_hex))
    return absl::InvalidArgumentError(absl::StrCat(
        "an event hash is 64 lowercase hex digits, not \"", std::string(hash_hex), "\""));
  return impl_->Answer<std::string>(
      [&](const LookupIndex& index, const LogFile& log) {
        return GetByHashFromIndex(index, log, hash_hex);
      },
      [&](const LogFile& log) { return GetByHashByScan(log, hash_hex); });
}

absl::StatusOr<std::vector<std::string>> EventQuery::Range(int64_t from_ts, int64_t to_ts,
                                                           size_t limit) {
  if (from_ts > to_ts)
    return absl::InvalidArgumentError(
        absl::StrCat("time range [", from_ts, ", ", to_ts, "] ends before it starts"));
  return impl_->Answer<std::vector<std::string>>(
      [&](const LookupIndex& index, const LogFile& log) {
        return RangeFromIndex(index, log, from_ts, to_ts, limit);
      },
      [&](const LogFile& log) { return RangeByScan(log, from_ts, to_ts, limit); });
}

absl::StatusOr<IndexStatus> EventQuery::CheckIndex() { return impl_->CheckIndex(); }
absl::Status EventQuery::RebuildIndex() { return impl_->RebuildIndex(); }
void EventQuery::WaitForRebuild() { impl_->WaitForRebuild(); }

}  // namespace snapledger
