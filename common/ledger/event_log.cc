#include "common/ledger/event_log.h"

#include <errno.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/fmt_absl.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/ledger/chain_verifier.h"

namespace snapledger {
namespace {

using OnePromise = std::promise<absl::StatusOr<AppendResult>>;
using ManyPromise = std::promise<absl::StatusOr<std::vector<AppendResult>>>;

// One caller's append: canonical bodies, written contiguously, acknowledged together.
struct Request {
  std::vector<std::string> bodies;
  std::variant<OnePromise, ManyPromise> promise;
};

void Complete(Request& r, absl::StatusOr<std::vector<AppendResult>> results) {
  if (auto* many = std::get_if<ManyPromise>(&r.promise)) {
    many->set_value(std::move(results));
  } else if (results.ok()) {
    std::get<OnePromise>(r.promise).set_value(std::move((*results)[0]));
  } else {
    std::get<OnePromise>(r.promise).set_value(results.status());
  }
}

std::string LogPath(const std::string& dir) { return absl::StrCat(dir, "/", kEventsFile); }

absl::Status LockLog(int fd, const std::string& dir) {
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return absl::OkStatus();
  if (errno == EWOULDBLOCK)
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", dir, " is in use by another snapledger process"));
  return ErrnoStatus(absl::StrCat("flock ", LogPath(dir)), errno);
}

}  // namespace

class EventLog::Impl {
 public:
  Impl(std::string dir, EventLogOptions options, UniqueFd fd, HeadRecord head,
       RecoveryReport recovery)
      : dir_(std::move(dir)),
        options_(options),
        fd_(std::move(fd)),
        epoch_(head.epoch),
        head_(head),
        file_head_seq_(head.head.seq),
        durable_bytes_(head.log_bytes),
        recovery_(recovery) {
    last_head_write_ns_ = options_.clock->MonotonicNanos();
    last_sync_ns_ = last_head_write_ns_.load();
    writer_ = std::thread([this] { Run(); });
  }

  ~Impl() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    writer_.join();
  }

  std::future<absl::StatusOr<AppendResult>> Submit(std::string canonical) {
    auto req = std::make_unique<Request>();
    req->bodies.push_back(std::move(canonical));
    req->promise.emplace<OnePromise>();
    auto fut = std::get<OnePromise>(req->promise).get_future();
    Enqueue(std::move(req));
    return fut;
  }

  std::future<absl::StatusOr<std::vector<AppendResult>>> SubmitBatch(
      std::vector<std::string> canonical) {
    auto req = std::make_unique<Request>();
    req->bodies = std::move(canonical);
    req->promise.emplace<ManyPromise>();
    auto fut = std::get<ManyPromise>(req->promise).get_future();
    Enqueue(std::move(req));
    return fut;
  }

  HeadRecord Head() const {
    std::lock_guard l(head_mu_);
    return head_;
  }

  absl::Status Sync() {
    std::lock_guard io(io_mu_);
    return SyncLocked(/*force_head=*/true);
  }

  class FrozenImpl : public Frozen {
   public:
    FrozenImpl(std::unique_lock<std::mutex> lock, HeadRecord head)
        : lock_(std::move(lock)), head_(std::move(head)) {}
    const HeadRecord& head() const override { return head_; }

   private:
    std::unique_lock<std::mutex> lock_;
    HeadRecord head_;
  };

  absl::StatusOr<std::unique_ptr<Frozen>> Freeze() {
    std::unique_lock io(io_mu_);
    RETURN_IF_ERROR(SyncLocked(/*force_head=*/true));
    return std::make_unique<FrozenImpl>(std::move(io), Head());
  }

  const std::string& dir() const { return dir_; }
  const RecoveryReport& recovery() const { return recovery_; }
  const EventLogOptions& options() const { return options_; }

 private:
  void Enqueue(std::unique_ptr<Request> req) {
    absl::MutexLock l(&mu_);
    queue_.push_back(std::move(req));
  }

  // The writer thread: takes everything pending, commits it as one batch, repeats.
  void Run() {
    std::vector<std::unique_ptr<Request>> batch;
    while (true) {
      {
        absl::MutexLock l(&mu_);
        auto has_work = [this]()
                            ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
        const int64_t wait = NanosUntilHousekeeping();
        options_.clock->AwaitWithTimeout(
            mu_, absl::Condition(&has_work),
            wait < 0 ? absl::InfiniteDuration() : absl::Nanoseconds(wait));
        TakeBatch(&batch);
        if (batch.empty() && stop_) break;
      }
      std::lock_guard io(io_mu_);
      if (!batch.empty()) CommitBatch(batch);
      batch.clear();
      Housekeeping();
    }
    std::lock_guard io(io_mu_);
    if (absl::Status st = SyncLocked(/*force_head=*/true); !st.ok())
      spdlog::error("closing ledger {}: {}", dir_, st.message());
  }

  void TakeBatch(std::vector<std::unique_ptr<Request>>* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t events = 0;
    while (!queue_.empty() &&
           (events == 0 || events + queue_.front()->bodies.size() <= options_.max_batch_events)) {
      events += queue_.front()->bodies.size();
      batch->push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }

  // Builds the lines, writes them with one write(2), makes them durable, acknowledges.
  void CommitBatch(std::vector<std::unique_ptr<Request>>& batch) {
    if (!poisoned_.ok()) {
      for (auto& r : batch) Complete(*r, poisoned_);
      return;
    }
    HeadRecord head = Head();
    std::vector<std::vector<AppendResult>> results(batch.size());
    buffer_.clear();
    for (size_t i = 0; i < batch.size(); ++i) {
      results[i].reserve(batch[i]->bodies.size());
      for (const std::string& body : batch[i]->bodies) {
        int64_t ts = std::max(options_.clock->NowMicros(), head.head.ts);
        uint64_t seq = head.head.seq + 1;
        std::string hash = AppendEventLine(seq, ts, head.head.hash, body, hasher_, &buffer_);
        results[i].push_back(AppendResult{seq, ts, hash});
        head.head = ChainHead{seq, std::move(hash), ts};
      }
    }
    head.log_bytes += buffer_.size();
    absl::Status st = WriteBatch(head.log_bytes - buffer_.size());
    if (st.ok()) {
      std::lock_guard l(head_mu_);
      head_ = head;
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (st.ok()) {
        Complete(*batch[i], std::move(results[i]));
      } else {
        Complete(*batch[i], st);
      }
    }
  }

  // Writes buffer_ at the end of the log (which is `old_size` bytes long). On a write error
  // the log is cut back to `old_size` so no partial line stays; if that fails, or fdatasync
  // fails (the kernel may have dropped the dirty pages), the log is poisoned: every later
  // append fails until the ledger is reopened and recovered.
  absl::Status WriteBatch(uint64_t old_size) {
    absl::Status st = WriteAll(fd_.get(), buffer_, LogPath(dir_));
    if (!st.ok()) {
      if (::ftruncate(fd_.get(), static_cast<off_t>(old_size)) != 0) Poison(st);
      return st;
    }
    if (options_.durability == Durability::kPerBatch || SyncDue()) {
      if (::fdatasync(fd_.get()) != 0) {
        Poison(ErrnoStatus(absl::StrCat("fdatasync ", LogPath(dir_)), errno));
        return poisoned_;
      }
      durable_bytes_ = old_size + buffer_.size();
      last_sync_ns_ = options_.clock->MonotonicNanos();
    }
    return absl::OkStatus();
  }

  void Poison(absl::Status cause) {
    poisoned_ = absl::UnavailableError(absl::StrCat(
        "ledger ", dir_, " stopped accepting appends after an I/O error (", cause.message(),
        "); the failed batch may or may not be on disk (check by "
        "hash after reopening, before retrying); reopen the ledger to recover"));
    spdlog::error("{}", poisoned_.message());
  }

  bool SyncDue() const {
    return options_.clock->MonotonicNanos() - last_sync_ns_ >=
           absl::ToInt64Nanoseconds(options_.sync_interval);
  }

  // Nanoseconds until the next deferred sync or head file write, or -1 when none is pending.
  int64_t NanosUntilHousekeeping() {
    std::lock_guard l(head_mu_);
    int64_t now = options_.clock->MonotonicNanos();
    int64_t wait = -1;
    auto consider = [&](int64_t due) {
      int64_t w = std::max<int64_t>(0, due - now);
      wait = wait < 0 ? w : std::min(wait, w);
    };
    if (head_.log_bytes != durable_bytes_)
      consider(last_sync_ns_ + absl::ToInt64Nanoseconds(options_.sync_interval));
    if (head_.head.seq != file_head_seq_)
      consider(last_head_write_ns_ + absl::ToInt64Nanoseconds(options_.head_interval));
    return wait;
  }

  void Housekeeping() {
    if (!poisoned_.ok()) return;
    int64_t now = options_.clock->MonotonicNanos();
    bool head_due = now - last_head_write_ns_ >= absl::ToInt64Nanoseconds(options_.head_interval);
    bool sync_due = SyncDue();
    HeadRecord head = Head();
    if ((head.log_bytes != durable_bytes_ && sync_due) ||
        (head.head.seq != file_head_seq_ && head_due)) {
      if (absl::Status st = SyncLocked(head_due); !st.ok())
        spdlog::error("ledger {}: {}", dir_, st.message());
    }
  }

  // Requires io_mu_. Makes the log durable through the acknowledged head and, when
  // `force_head` or the head file is behind, rewrites the head file.
  absl::Status SyncLocked(bool force_head) {
    if (!poisoned_.ok()) return poisoned_;
    HeadRecord head = Head();
    if (head.log_bytes != durable_bytes_) {
      if (::fdatasync(fd_.get()) != 0) {
        Poison(ErrnoStatus(absl::StrCat("fdatasync ", LogPath(dir_)), errno));
        return poisoned_;
      }
      durable_bytes_ = head.log_bytes;
      last_sync_ns_ = options_.clock->MonotonicNanos();
    }
    if (force_head) {
      if (head.head.seq != file_head_seq_) {
        RETURN_IF_ERROR(WriteHeadFile(dir_, head));
        file_head_seq_ = head.head.seq;
      }
      // Only a written (or already current) head file restarts the head interval.
      last_head_write_ns_ = options_.clock->MonotonicNanos();
    }
    return absl::OkStatus();
  }

  const std::string dir_;
  const EventLogOptions options_;
  UniqueFd fd_;
  const uint64_t epoch_;

  absl::Mutex mu_;
  std::deque<std::unique_ptr<Request>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  mutable std::mutex head_mu_;
  HeadRecord head_;  // the acknowledged head; guarded by head_mu_, written by the writer

  // Held by the writer while it commits, and by Freeze()/Sync(). Everything below is
  // guarded by io_mu_.
  std::mutex io_mu_;
  // Also read without io_mu_ by the writer's wait computation, hence atomic.
  std::atomic<uint64_t> file_head_seq_;
  std::atomic<uint64_t> durable_bytes_;
  std::atomic<int64_t> last_head_write_ns_ = 0;
  std::atomic<int64_t> last_sync_ns_ = 0;
  absl::Status poisoned_;
  std::string buffer_;
  Sha256 hasher_;

  RecoveryReport recovery_;
  std::thread writer_;
};

namespace {

// Opening an existing log: cut a torn tail, then verify from the head file's trusted head
// (or from genesis without one) to the end, and say what the head now is.
struct Recovered {
  HeadRecord head;
  RecoveryReport report;
};

absl::StatusOr<Recovered> Recover(const std::string& dir, int fd,
                                  std::optional<uint64_t> epoch_if_head_missing) {
  Recovered out;
  // A head file that exists but cannot be read or parsed is an error: it is written
  // atomically, so damage means something outside snapledger changed it.
  ASSIGN_OR_RETURN(std::optional<HeadRecord> head_file, ReadHeadFile(dir));
  if (!head_file && !epoch_if_head_missing)
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", dir, ": ", kHeadFile,
                     " is missing, so the ledger's epoch is unknown; "
                     "restore it (e.g. from the newest block's ",
                     kHeadFile,
                     ") or reopen with an explicit "
                     "epoch to rebuild it from the log"));
  ASSIGN_OR_RETURN(MappedFile log, MappedFile::Open(LogPath(dir)));
  std::string_view data = log.data();
  size_t complete = data.size();
  if (!data.empty() && data.back() != '\n') {
    const void* nl = memrchr(data.data(), '\n', data.size());
    complete = nl == nullptr ? 0 : static_cast<const char*>(nl) - data.data() + 1;
  }
  HeadRecord trusted;
  if (head_file) {
    trusted = *head_file;
    // Checked before anything is truncated, so a damaged log is left as it was found.
    if (trusted.log_bytes > complete)
      return absl::DataLossError(
          absl::StrCat("ledger ", dir, ": ", kHeadFile, " names seq ", trusted.head.seq,
                       " ending at byte ", trusted.log_bytes, ", but ", kEventsFile, " has only ",
                       complete, " bytes of complete lines: acknowledged events are missing"));
    auto start = CheckTrustedLine(data, trusted.log_bytes, trusted.head);
    if (!start.ok())
      return absl::DataLossError(absl::StrCat(
          "ledger ", dir, ": ", kHeadFile, " disagrees with the log: ", start.status().message()));
  } else {
    out.report.head_file_missing = true;
    trusted.epoch = *epoch_if_head_missing;
    spdlog::warn(
        "ledger {}: {} is missing; rebuilding it from the log (epoch {}) after full "
        "verification",
        dir, kHeadFile, trusted.epoch);
  }
  if (complete < data.size()) {
    out.report.torn_tail_bytes = data.size() - complete;
    out.report.torn_tails_truncated = 1;
    spdlog::warn(
        "ledger {}: truncating a torn last line of {} bytes at byte {} (a crash "
        "interrupted a write; that event was never acknowledged)",
        dir, out.report.torn_tail_bytes, complete);
    if (::ftruncate(fd, static_cast<off_t>(complete)) != 0 || ::fdatasync(fd) != 0)
      return ErrnoStatus(absl::StrCat("truncate torn tail of ", LogPath(dir)), errno);
    data = data.substr(0, complete);
  }
  VerifyReport v = VerifyLines(data.substr(trusted.log_bytes), trusted.head, trusted.head.seq + 1);
  if (!v.ok())
    return absl::DataLossError(absl::StrCat("ledger ", dir, ": ", v.failure->ToString()));
  out.report.events_verified = v.events_verified;
  out.head = trusted;
  out.head.head = v.head;
  out.head.log_bytes = complete;
  if (out.head != trusted || out.report.head_file_missing) {
    RETURN_IF_ERROR(WriteHeadFile(dir, out.head));
    out.report.head_file_rewritten = true;
  }
  return out;
}

}  // namespace

EventLog::EventLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventLog::~EventLog() = default;

absl::StatusOr<EventLogPtr> EventLog::Create(const std::string& dir, uint64_t epoch,
                                             const EventLogOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat("ledger directory ", dir, " does not exist"));
  if (std::filesystem::exists(LogPath(dir), ec))
    return absl::AlreadyExistsError(absl::StrCat(dir, " already holds a ledger"));
  std::filesystem::create_directories(absl::StrCat(dir, "/metadata"), ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, "/metadata: ", ec.message()));
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(LogPath(dir), O_WRONLY | O_CREAT | O_EXCL | O_APPEND));
  RETURN_IF_ERROR(LockLog(fd.get(), dir));
  if (::fsync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", LogPath(dir)), errno);
  HeadRecord head;
  head.epoch = epoch;
  RETURN_IF_ERROR(WriteHeadFile(dir, head));
  RETURN_IF_ERROR(SyncDir(dir));
  return EventLogPtr(
      new EventLog(std::make_unique<Impl>(dir, options, std::move(fd), head, RecoveryReport{})));
}

absl::StatusOr<EventLogPtr> EventLog::Open(const std::string& dir, const EventLogOptions& options) {
  auto fd = OpenFile(LogPath(dir), O_RDWR | O_APPEND);
  if (absl::IsNotFound(fd.status()))
    return absl::NotFoundError(absl::StrCat("no ledger in ", dir, " (", kEventsFile,
                                            " is missing); create one with `snapledger init`"));
  if (!fd.ok()) return fd.status();
  RETURN_IF_ERROR(LockLog(fd->get(), dir));
  ASSIGN_OR_RETURN(Recovered r, Recover(dir, fd->get(), options.epoch_if_head_missing));
  return EventLogPtr(
      new EventLog(std::make_unique<Impl>(dir, options, std::move(*fd), r.head, r.report)));
}

absl::StatusOr<AppendResult> EventLog::Append(std::string_view body_json) {
  return AppendAsync(body_json).get();
}

std::future<absl::StatusOr<AppendResult>> EventLog::AppendAsync(std::string_view body_json) {
  auto canonical = CanonicalizeBody(body_json, impl_->options().max_body_bytes);
  if (!canonical.ok()) {
    std::promise<absl::StatusOr<AppendResult>> rejected;
    rejected.set_value(canonical.status());
    return rejected.get_future();
  }
  return impl_->Submit(*std::move(canonical));
}

absl::StatusOr<std::vector<AppendResult>> EventLog::AppendBatch(
    const std::vector<std::string>& bodies) {
  std::vector<std::string> canonical;
  canonical.reserve(bodies.size());
  for (size_t i = 0; i < bodies.size(); ++i) {
    auto c = CanonicalizeBody(bodies[i], impl_->options().max_body_bytes);
    if (!c.ok())
      return absl::InvalidArgumentError(absl::StrCat("event ", i + 1, " of ", bodies.size(), ": ",
                                                     c.status().message(),
                                                     " (nothing was appended)"));
    canonical.push_back(*std::move(c));
  }
  if (canonical.empty()) return std::vector<AppendResult>();
  return impl_->SubmitBatch(std::move(canonical)).get();
}

HeadRecord EventLog::Head() const { return impl_->Head(); }
const std::string& EventLog::dir() const { return impl_->dir(); }
const RecoveryReport& EventLog::recovery() const { return impl_->recovery(); }
absl::Status EventLog::Sync() { return impl_->Sync(); }
absl::StatusOr<std::unique_ptr<EventLog::Frozen>> EventLog::Freeze() { return impl_->Freeze(); }

}  // namespace snapledger
