#include "replica/block_receiver.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/ledger/block.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/head_file.h"
#include "common/ledger/prefix_check.h"
#include "common/transport/receive_protocol.h"
#include "replica/receive_lock.h"
#include "replica/stream_verifier.h"

namespace snapledger {
namespace {

// Reads and discards the rest of `stream` (so the sender sees a clean end of stream).
absl::StatusOr<uint64_t> Drain(ByteSource& stream) {
  char buf[1 << 16];
  uint64_t total = 0;
  while (true) {
    ASSIGN_OR_RETURN(size_t n, stream.Read(buf, sizeof buf));
    if (n == 0) return total;
    total += n;
  }
}

// A stream that is malformed or cut (DataLoss from Btrfs::Receive) is a failed transfer, to be
// retried like any other, not a block that failed verification: only that is DataLoss here.
absl::Status TransferFailure(const absl::Status& st) {
  if (!absl::IsDataLoss(st)) return st;
  return absl::InternalError(absl::StrCat("receiving the stream: ", st.message()));
}

// How long a receive waits for the receive lock: the daemon's pruning pass, or the receive of a
// failed transfer still cleaning up, lets go within it; a transfer still running does not.
constexpr absl::Duration kReceiveLockPatience = absl::Seconds(5);

// The received log is written back each time it grew by this much, checked this often: what is
// left to write when the stream ends (and `btrfs receive`'s last commit waits for) is about one
// step plus what arrived within one period.
constexpr uint64_t kWritebackStep = 8 << 20;
constexpr absl::Duration kWritebackPeriod = absl::Milliseconds(20);
// And the filesystem is committed (syncfs) each time the file grew by this much. btrfs puts the
// extent and checksum records of data being written back into the running transaction, which
// it commits only every 30 s (mount option commit=) unless asked; `btrfs receive`'s own last
// commit then wrote them for the whole stream after its last byte (~0.5 s for a 1 GB full
// send on the test cluster; 0.08 s with these commits: bench/README.md).
constexpr uint64_t kCommitStep = 64 << 20;

// While it lives, a thread of its own starts the write-back of the file at `path` (being
// received) each time it grew by kWritebackStep, and commits `filesystem` (a directory on the
// same btrfs) each kCommitStep: the final commit and syncfs then have little left. Apart from
// the stream's pace (which must not wait for the disk), best effort. It looks every
// kWritebackPeriod of `clock`'s time.
class PeriodicWriteback {
 public:
  PeriodicWriteback(std::string path, std::string filesystem, uint64_t size, Clock& clock)
      : path_(std::move(path)),
        filesystem_(std::move(filesystem)),
        clock_(clock),
        written_back_(size),
        committed_(size),
        thread_([this] { Run(); }) {}
  ~PeriodicWriteback() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  PeriodicWriteback(const PeriodicWriteback&) = delete;
  PeriodicWriteback& operator=(const PeriodicWriteback&) = delete;

 private:
  void Run() {
    mu_.Lock();
    while (!clock_.AwaitWithTimeout(mu_, absl::Condition(&stop_), kWritebackPeriod)) {
      struct stat st;
      if (::lstat(path_.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      const uint64_t size = static_cast<uint64_t>(st.st_size);
      if (size < written_back_ + kWritebackStep) continue;
      written_back_ = size;
      mu_.Unlock();
      (void)StartWriteback(path_);  // may wait for the disk: not under the lock
      if (size >= committed_ + kCommitStep) {
        committed_ = size;
        // Writes back and commits the whole filesystem: the stream does not wait for it, though
        // `btrfs receive`'s own metadata updates may queue behind the commit's critical part.
        // The destructor joins a commit in flight, which the final syncfs would wait for anyway.
        (void)SyncFilesystem(filesystem_);
      }
      mu_.Lock();
    }
    mu_.Unlock();
  }

  const std::string path_;
  const std::string filesystem_;
  Clock& clock_;
  uint64_t written_back_;  // the size at the last write-back started (thread only)
  uint64_t committed_;     // the size at the last commit (thread only)
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once everything above is initialized
};

// Seconds since `*mark` (Clock::MonotonicNanos), which moves to now.
double Lap(Clock& clock, int64_t* mark) {
  const int64_t now = clock.MonotonicNanos();
  const double seconds = static_cast<double>(now - *mark) / 1e9;
  *mark = now;
  return seconds;
}

}  // namespace

absl::Status ValidateReceiveRequest(const ReceiveRequest& request) {
  auto block = ParseBlockName(request.block);
  if (!block.ok())
    return absl::InvalidArgumentError(absl::StrCat("--block: ", block.status().message()));
  if (request.parent) {
    auto parent = ParseBlockName(*request.parent);
    if (!parent.ok())
      return absl::InvalidArgumentError(absl::StrCat("--parent: ", parent.status().message()));
    if (parent->seq >= block->seq)
      return absl::InvalidArgumentError(
          absl::StrCat("--parent ", *request.parent, " is not older than --block ", request.block));
  }
  if (request.epoch == 0) return absl::InvalidArgumentError("--epoch must be at least 1");
  if (request.announced) {
    const ChainHead& h = *request.announced;
    if (!IsLowerHex64(h.hash))
      return absl::InvalidArgumentError("--head-hash must be 64 lowercase hex digits");
    if (h.seq != block->seq || h.hash.substr(0, kBlockHashDigits) != block->hash12)
      return absl::InvalidArgumentError(absl::StrCat("announced head seq ", h.seq, " hash ", h.hash,
                                                     " is not the head of ", request.block));
  }
  return absl::OkStatus();
}

BlockReceiver::BlockReceiver(Btrfs& btrfs, std::string root, Clock* clock)
    : btrfs_(btrfs), layout_(std::move(root)), clock_(clock) {}

std::string BlockReceiver::HiddenPath(std::string_view prefix, const BlockInfo& block) const {
  return absl::StrCat(layout_.blocks(), "/", std::string(prefix), block.name);
}

absl::StatusOr<ReceiveResult> BlockReceiver::Receive(const ReceiveRequest& request,
                                                     ByteSource& stream) {
  RETURN_IF_ERROR(ValidateReceiveRequest(request));
  ASSIGN_OR_RETURN(BlockInfo block, ParseBlockName(request.block));
  std::error_code ec;
  std::filesystem::create_directories(layout_.blocks(), ec);
  if (ec)
    return absl::InternalError(absl::StrCat("mkdir under ", layout_.root(), ": ", ec.message()));
  absl::StatusOr<ReceiveLock> lock =
      ReceiveLock::Acquire(layout_.root(), kReceiveLockPatience, clock_);
  if (absl::IsFailedPrecondition(lock.status()))  // another receive held it all along
    return WithRefusal(lock.status(), ReceiveRefusal::kReceiveInProgress);
  if (!lock.ok()) return lock.status();
  return ReceiveLocked(request, block, stream);
}

absl::StatusOr<ReceiveResult> BlockReceiver::ReceiveLocked(const ReceiveRequest& request,
                                                           const BlockInfo& block,
                                                           ByteSource& stream) {
  std::vector<std::string> unrecognized;
  ASSIGN_OR_RETURN(std::vector<BlockInfo> held, ListBlocks(btrfs_, layout_, &unrecognized));
  for (const BlockInfo& b : held) {
    if (b.name == block.name) {
      RETURN_IF_ERROR(Drain(stream).status());
      ASSIGN_OR_RETURN(std::optional<HeadRecord> head, ReadHeadFile(layout_.block(b)));
      return ReceiveResult{b, head.value_or(HeadRecord{}), 0, 0, 0, true, {}, 0};
    }
  }
  if (!held.empty() && held.back().seq >= block.seq)
    return WithRefusal(
        absl::FailedPreconditionError(absl::StrCat("this replica already holds ", held.back().name,
                                                   ", newer than ", block.name)),
        ReceiveRefusal::kNewerBlockHeld);
  if (request.parent) {
    bool have_parent = false;
    for (const BlockInfo& b : held) have_parent |= b.name == *request.parent;
    if (!have_parent)
      return WithRefusal(
          absl::FailedPreconditionError(absl::StrCat(
              "parent ", *request.parent, " is not held here; send ", block.name, " in full")),
          ReceiveRefusal::kParentNotHeld);
  }
  RETURN_IF_ERROR(DeleteLeftovers(unrecognized));
  // The trusted point the block continues: the newest verified block's head, or genesis.
  HeadRecord from;
  if (!held.empty()) {
    ASSIGN_OR_RETURN(std::optional<HeadRecord> trusted, ReadHeadFile(layout_.block(held.back())));
    if (!trusted)
      return absl::DataLossError(
          absl::StrCat("verified block ", held.back().name, " has no head file"));
    from = *trusted;
  }
  const std::string path = HiddenPath(kIncomingBlockPrefix, block);
  // The chain is verified as the stream arrives, on a thread of its own, and the received log
  // is written back as it grows, so that little of either is left when the stream ends.
  StreamChainVerifier in_stream(from);
  PeriodicWriteback write_back(absl::StrCat(path, "/", kEventsFile), layout_.blocks(),
                               from.log_bytes, *clock_);
  // Only the first command is rewritten, to give the subvolume its hidden name.
  int64_t mark = clock_->MonotonicNanos();
  ReceiveOptions options;
  options.as_name = std::string(kIncomingBlockPrefix) + block.name;
  options.observer = &in_stream;
  absl::StatusOr<std::string> received = btrfs_.Receive(layout_.blocks(), stream, options);
  StreamVerification streamed = in_stream.Finish();
  if (!received.ok()) return TransferFailure(received.status());
  if (*received != path) {  // defensive: Receive names it as asked
    (void)btrfs_.DeleteSubvolume(*received);
    return absl::InternalError(
        absl::StrCat("the block was received as ", *received, ", not ", path));
  }
  ReceiveTimings timings;
  timings.stream = Lap(*clock_, &mark);
  // `btrfs receive` never syncs: the block's data must be durable before it takes its name
  // (else a crash could leave a named block with a truncated log). Writing it back is disk
  // work and verifying it reads the page cache: the two run side by side, and only a block
  // that verified is renamed once both are done.
  std::future<absl::Status> durable =
      std::async(std::launch::async, [path] { return SyncFilesystem(path); });
  auto checked =
      CheckReceived(request, block, path, from, streamed, held.empty() ? nullptr : &held.back());
  timings.verify = Lap(*clock_, &mark);
  absl::Status synced = durable.get();
  if (!checked.ok()) {
    if (absl::Status st = btrfs_.DeleteSubvolume(path); !st.ok())
      return absl::InternalError(
          absl::StrCat(checked.status().message(),
                       "; and deleting the refused subvolume failed: ", st.message()));
    return checked.status();
  }
  // A read-only subvolume may be renamed within its directory: the verified block takes its
  // name in place, so a crash leaves either the hidden subvolume or the finished block.
  if (synced.ok()) synced = btrfs_.RenameSubvolume(path, layout_.block(block));
  if (absl::Status st = synced; !st.ok()) {
    (void)btrfs_.DeleteSubvolume(path);
    return st;
  }
  RETURN_IF_ERROR(SyncDir(layout_.blocks()));
  timings.promote = Lap(*clock_, &mark);
  checked->timings = timings;
  return checked;
}

absl::Status BlockReceiver::DeleteLeftovers(const std::vector<std::string>& unrecognized) {
  for (const std::string& name : unrecognized) {
    if (name.starts_with(kIncomingBlockPrefix))
      RETURN_IF_ERROR(btrfs_.DeleteSubvolume(absl::StrCat(layout_.blocks(), "/", name)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReceiveResult> BlockReceiver::CheckReceived(
    const ReceiveRequest& request, const BlockInfo& block, const std::string& path,
    const HeadRecord& from, const StreamVerification& streamed, const BlockInfo* trusted_block) {
  ASSIGN_OR_RETURN(SubvolumeInfo info, btrfs_.GetSubvolumeInfo(path));
  if (!info.read_only || info.received_uuid.empty())
    return absl::DataLossError(
        absl::StrCat("received ", block.name, " is not a read-only received subvolume"));
  if (streamed.followed && !streamed.report.ok())
    return absl::DataLossError(absl::StrCat(
        "block ", block.name, " does not verify: ", streamed.report.failure->ToString()));
  const std::string log = absl::StrCat(path, "/", kEventsFile);
  // The stream's writes were followed by name: the log must be a regular file of one name.
  struct stat st;
  if (::lstat(log.c_str(), &st) != 0)
    return absl::DataLossError(absl::StrCat("block ", block.name, " has no ", kEventsFile));
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
    return absl::DataLossError(absl::StrCat("block ", block.name, ": ", kEventsFile,
                                            " is not a regular file with one link"));
  uint64_t shared = 0, compared = 0;
  if (trusted_block != nullptr) {
    // The bytes before the trusted head must be the ones this replica already verified.
    ASSIGN_OR_RETURN(PrefixComparison prefix,
                     ComparePrefix(absl::StrCat(layout_.block(*trusted_block), "/", kEventsFile),
                                   log, from.log_bytes));
    if (!prefix.equal)
      return absl::DataLossError(absl::StrCat(
          "block ", block.name, " changes events this replica already verified (in ",
          trusted_block->name, "): ", kEventsFile, " differs at byte ", prefix.first_difference));
    shared = prefix.bytes_shared;
    compared = prefix.bytes_compared;
  }
  // From the trusted point on, or from where the verification in the stream got to: the line
  // there must be on disk as verified; what follows it (normally nothing) is verified here.
  HeadRecord point = from;
  uint64_t in_stream_events = 0;
  if (streamed.followed) {
    point.head = streamed.report.head;
    point.log_bytes = streamed.report.end_offset;
    in_stream_events = streamed.report.events_verified;
  }
  absl::StatusOr<VerifyReport> report =
      point.log_bytes == 0 ? VerifyLedgerDir(path, {HeadCheck::kExact, 2})
                           : VerifyLedgerDirFrom(path, point, {HeadCheck::kExact, 2});
  if (!report.ok()) return report.status();
  if (!report->ok())
    return absl::DataLossError(
        absl::StrCat("block ", block.name, " does not verify: ", report->failure->ToString()));
  ASSIGN_OR_RETURN(std::optional<HeadRecord> head, ReadHeadFile(path));
  if (!head) return absl::DataLossError(absl::StrCat("block ", block.name, " has no head file"));
  if (head->head.seq != block.seq || head->head.hash.substr(0, kBlockHashDigits) != block.hash12)
    return absl::DataLossError(absl::StrCat("block ", block.name, " ends at seq ", head->head.seq,
                                            " hash ", head->head.hash, ", not at its name's head"));
  if (request.announced && head->head.hash != request.announced->hash)
    return absl::DataLossError(absl::StrCat("block ", block.name, " ends at hash ", head->head.hash,
                                            " but the primary announced ",
                                            request.announced->hash));
  if (head->epoch != request.epoch)
    return absl::DataLossError(absl::StrCat("block ", block.name, " is from epoch ", head->epoch,
                                            " but the primary is at epoch ", request.epoch));
  const uint64_t added = head->log_bytes > from.log_bytes ? head->log_bytes - from.log_bytes : 0;
  ReceiveResult result{
      block, *head, in_stream_events + report->events_verified, shared, compared, false, {}, added};
  result.bytes_verified_in_stream = point.log_bytes - from.log_bytes;
  return result;
}

}  // namespace snapledger
