#include "primary/block_shipper.h"

#include <algorithm>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status_macros.h"
#include "common/ledger/head_file.h"
#include "common/transport/receive_protocol.h"
#include "common/transport/receive_session.h"

namespace snapledger {
namespace {

// Counts what the channel accepted into the shipper's progress counter (read by the watchdog
// and by TransferBytes()), and remembers whether the channel refused a write.
class ProgressSink : public ByteSink {
 public:
  ProgressSink(ByteSink& channel, std::atomic<uint64_t>& progress)
      : channel_(channel), progress_(progress) {}
  absl::Status Write(std::string_view data) override {
    absl::Status st = channel_.Write(data);
    if (!st.ok()) {
      failed_ = true;
      return st;
    }
    progress_.fetch_add(data.size(), std::memory_order_relaxed);
    bytes_ += data.size();
    return absl::OkStatus();
  }
  absl::Status Close() override { return channel_.Close(); }
  bool failed() const { return failed_; }
  uint64_t bytes() const { return bytes_; }

 private:
  ByteSink& channel_;
  std::atomic<uint64_t>& progress_;
  uint64_t bytes_ = 0;
  bool failed_ = false;
};

// Counts the bytes written through it.
class CountingSink : public ByteSink {
 public:
  explicit CountingSink(ByteSink& out) : out_(out) {}
  absl::Status Write(std::string_view data) override {
    RETURN_IF_ERROR(out_.Write(data));
    bytes_ += data.size();
    return absl::OkStatus();
  }
  absl::Status Close() override { return out_.Close(); }
  uint64_t bytes() const { return bytes_; }

 private:
  ByteSink& out_;
  uint64_t bytes_ = 0;
};

// Seconds between successive laps of one transfer, on the shipper's clock.
class LapTimer {
 public:
  explicit LapTimer(Clock* clock) : clock_(clock), mark_(clock->MonotonicNanos()) {}
  double Lap() {
    const int64_t now = clock_->MonotonicNanos();
    const double seconds = static_cast<double>(now - mark_) / 1e9;
    mark_ = now;
    return seconds;
  }

 private:
  Clock* clock_;
  int64_t mark_;
};

std::string Seconds(absl::Duration d) { return absl::StrCat(absl::ToDoubleSeconds(d), " s"); }

// Watches one transfer from its own thread: while the stream flows, `progress` must move at
// least every `options.watchdog`; after StreamEnded(), the verdict must come within
// `options.verdict_timeout`. Otherwise it aborts `session` (which makes the blocked libssh call
// on the shipping thread fail) and records why. The thread is joined by Stop() or the
// destructor; `session` must outlive that.
class TransferWatchdog {
 public:
  TransferWatchdog(SshSession& session, const std::atomic<uint64_t>& progress,
                   const BlockShipperOptions& options, Clock* clock)
      : session_(session), progress_(progress), options_(options), clock_(clock), thread_([this] {
          Loop();
        }) {}
  ~TransferWatchdog() { (void)Stop(); }
  TransferWatchdog(const TransferWatchdog&) = delete;
  TransferWatchdog& operator=(const TransferWatchdog&) = delete;

  void StreamEnded() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    stream_ended_at_ = clock_->MonotonicNanos();
  }

  // Ends the watch. Returns why the transfer was aborted, if it was.
  std::optional<std::string> Stop() ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock l(&mu_);
      done_ = true;
    }
    if (thread_.joinable()) thread_.join();
    absl::MutexLock l(&mu_);
    return fired_;
  }

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_) {
    const absl::Duration poll =
        std::clamp(options_.watchdog / 10, absl::Milliseconds(10), absl::Milliseconds(500));
    absl::MutexLock l(&mu_);
    uint64_t last = progress_.load(std::memory_order_relaxed);
    int64_t last_move = clock_->MonotonicNanos();
    while (!done_) {
      clock_->AwaitWithTimeout(mu_, absl::Condition(&done_), poll);
      if (done_) return;
      const int64_t now = clock_->MonotonicNanos();
      const uint64_t moved = progress_.load(std::memory_order_relaxed);
      if (moved != last) {
        last = moved;
        last_move = now;
      }
      if (!stream_ended_at_ && absl::Nanoseconds(now - last_move) >= options_.watchdog) {
        fired_ = absl::StrCat("no bytes moved into the channel for ", Seconds(options_.watchdog),
                              " (", moved, " bytes written)");
      } else if (stream_ended_at_ &&
                 absl::Nanoseconds(now - *stream_ended_at_) >= options_.verdict_timeout) {
        fired_ = absl::StrCat("no verdict from the replica within ",
                              Seconds(options_.verdict_timeout), " of the end of the stream");
      }
      if (fired_) {
        session_.Abort();
        return;
      }
    }
  }

  SshSession& session_;
  const std::atomic<uint64_t>& progress_;
  const BlockShipperOptions options_;
  Clock* const clock_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<int64_t> stream_ended_at_ ABSL_GUARDED_BY(mu_);
  std::optional<std::string> fired_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once everything above is initialized
};

// The verdict a receive command wrote on stdout (receive_protocol.h): one line, nothing after
// it. InvalidArgument saying what is wrong otherwise.
absl::StatusOr<ReceiveVerdict> VerdictIn(std::string_view stdout_text) {
  if (stdout_text.empty()) return absl::InvalidArgumentError("it wrote no verdict");
  const size_t end = stdout_text.find('\n');
  if (end == std::string_view::npos)
    return absl::InvalidArgumentError("its verdict line was cut short (no end of line)");
  if (end + 1 != stdout_text.size())
    return absl::InvalidArgumentError(absl::StrCat("it wrote ", stdout_text.size() - end - 1,
                                                   " bytes more after its verdict line"));
  return ParseReceiveVerdict(stdout_text.substr(0, end));
}

// The failure of a transfer whose receive command did not confirm the block: `exit` ended it,
// and `verdict` is what it answered. Classified as Execute documents: DataLoss when the block
// did not verify, Aborted when the command refused it (with the verdict's ReceiveRefusal
// attached, WithRefusal) or failed otherwise (a verdict that contradicts the exit code, too).
// Without a verdict (a command killed, or one that fails before it can answer) the exit code
// alone decides.
absl::Status ReceiveFailure(const std::string& who, const RemoteExit& exit,
                            const absl::StatusOr<ReceiveVerdict>& verdict) {
  const std::string stderr_text =
      ForeignText(std::string(absl::StripTrailingAsciiWhitespace(exit.stderr_text)));
  if (!verdict.ok()) {
    std::string why = absl::StrCat(who, " (exit ", exit.exit_status, "): ", stderr_text);
    if (!exit.stdout_text.empty())
      absl::StrAppend(&why, "; its answer is no verdict: ", verdict.status().message());
    return exit.exit_status == static_cast<int>(ReceiveExit::kNotVerified)
               ? absl::DataLossError(why)
               : absl::AbortedError(why);
  }
  const ReceiveVerdict& v = *verdict;
  if (ReceiveExitFromStatus(exit.exit_status) != v.verdict)
    return absl::AbortedError(
        absl::StrCat(who, ": its verdict says \"", std::string(ReceiveExitName(v.verdict)),
                     "\" but it exited with ", exit.exit_status, ": ", v.error));
  std::string why =
      absl::StrCat(who, " (exit ", exit.exit_status, ", ", std::string(ReceiveExitName(v.verdict)));
  if (v.refusal) absl::StrAppend(&why, " ", std::string(ReceiveRefusalName(*v.refusal)));
  absl::StrAppend(&why, "): ", v.error);
  if (v.verdict == ReceiveExit::kNotVerified) return absl::DataLossError(why);
  // The driver acts on some refusals (a parent not held is forgotten before the next plan).
  if (v.refusal) return WithRefusal(absl::AbortedError(why), *v.refusal);
  return absl::AbortedError(why);
}

// The codes Execute's contract gives to failures of the replica, the network and trust
// (block_shipper.h); a failure on the primary's side must not carry one.
bool IsRemoteFailureCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnavailable:
      return true;
    default:
      return false;
  }
}

// A failure on the primary's own side (its head file, btrfs send, compression), with `prefix`
// before its message: its code is kept unless it is one of the codes above, which would blame
// the replica, the network or trust (a corrupt head file is DataLoss, an EACCES
// PermissionDenied, a `btrfs send` killed by a signal Aborted); those become Internal.
absl::Status AsLocalFailure(const absl::Status& status, std::string_view prefix) {
  absl::StatusCode code =
      IsRemoteFailureCode(status.code()) ? absl::StatusCode::kInternal : status.code();
  return absl::Status(code, absl::StrCat(std::string(prefix), status.message()));
}

}  // namespace

// What one transfer did, for Ship to classify once the watchdog has stopped.
struct BlockShipper::Transfer {
  absl::Status opened;          // Exec's error
  RemoteCommandPtr remote;      // the transfer's own command (null with a receive session)
  bool session = false;         // ran on the receive session (BlockShipper::receiver_)
  absl::Status sent;            // btrfs send (and compression) into the channel
  bool channel_failed = false;  // the channel refused a write: the replica or the network
  absl::StatusOr<RemoteExit> exit = absl::UnknownError("the remote command was not waited for");
  uint64_t stream_bytes = 0;
  uint64_t wire_bytes = 0;
  std::optional<std::string> stalled;  // why the watchdog aborted the session
  TransferPhases phases;               // the primary's side
};

BlockShipper::BlockShipper(Btrfs& btrfs, SshTransport& transport, ReplicaTarget target,
                           std::string root, Clock* clock)
    : BlockShipper(btrfs, transport, std::move(target), std::move(root), BlockShipperOptions(),
                   clock) {}

BlockShipper::BlockShipper(Btrfs& btrfs, SshTransport& transport, ReplicaTarget target,
                           std::string root, BlockShipperOptions options, Clock* clock)
    : btrfs_(btrfs),
      transport_(transport),
      target_(std::move(target)),
      layout_(std::move(root)),
      options_(options),
      clock_(clock) {}

absl::StatusOr<ShipResult> BlockShipper::Execute(const SendStep& step, uint64_t epoch) {
  {
    absl::MutexLock lock(&abort_mu_);
    if (aborted_) return absl::CancelledError("the shipper was stopped");
  }
  absl::StatusOr<ShipResult> shipped = Ship(step, epoch);
  // Abort() breaks the session under a transfer in progress, which then fails like a network
  // failure would; it is the stop, not a failure of the replica or the network.
  absl::MutexLock lock(&abort_mu_);
  if (!shipped.ok() && aborted_)
    return absl::CancelledError(
        absl::StrCat("the shipper was stopped during the transfer: ", shipped.status().message()));
  return shipped;
}

absl::Status BlockShipper::EnsureSession() {
  if (session_ && session_->Connected()) return absl::OkStatus();
  DropSession();
  ASSIGN_OR_RETURN(SshSessionPtr session, transport_.Connect(target_.endpoint));
  absl::MutexLock lock(&abort_mu_);
  session_ = std::move(session);
  if (aborted_) {
    session_->Abort();
    return absl::CancelledError("the shipper was stopped");
  }
  return absl::OkStatus();
}

void BlockShipper::DropSession() {
  receiver_.reset();  // its channel belongs to the session
  absl::MutexLock lock(&abort_mu_);
  session_.reset();
}

void BlockShipper::KeepAlive() {
  if (!session_) return;
  if (absl::Status s = session_->KeepAlive(); !s.ok()) {
    DropSession();
    return;
  }
  if (receiver_ && !receiver_->Open()) receiver_.reset();  // the replica ended it
}

void BlockShipper::Abort() {
  absl::MutexLock lock(&abort_mu_);
  aborted_ = true;
  if (session_) session_->Abort();
}

std::string BlockShipper::TransferOptions(const SendStep& step, const HeadRecord& head,
                                          uint64_t epoch) const {
  std::string cmd = absl::StrCat("--block ", step.block.name);
  if (step.parent) absl::StrAppend(&cmd, " --parent ", step.parent->name);
  absl::StrAppend(&cmd, " --epoch ", epoch, " --head-seq ", head.head.seq, " --head-hash ",
                  head.head.hash);
  // `--compress none` is the receive command's default.
  if (target_.compression != StreamCompression::kNone)
    absl::StrAppend(&cmd, " --compress ", std::string(StreamCompressionName(target_.compression)));
  return cmd;
}

// Runs `btrfs send` into `channel`, through zstd when compressing. Sets `*stream_bytes` to the
// uncompressed bytes sent when compressing (the caller counts them otherwise).
absl::Status BlockShipper::SendStream(const SendStep& step, ByteSink& channel,
                                      uint64_t* stream_bytes) {
  std::optional<std::string> parent;
  if (step.parent) parent = layout_.block(*step.parent);
  const std::string block = layout_.block(step.block);
  if (target_.compression == StreamCompression::kNone) return btrfs_.Send(block, parent, channel);
  ASSIGN_OR_RETURN(ZstdCompressSinkPtr zstd, ZstdCompressSink::Create(channel, target_.zstd));
  absl::Status sent = btrfs_.Send(block, parent, *zstd);
  // A failed send leaves the frame unfinished: the replica sees a truncated zstd stream, never
  // a shorter one that decompresses cleanly.
  if (sent.ok()) sent = zstd->Finish();
  *stream_bytes = zstd->bytes_in();
  return sent;
}

BlockShipper::Transfer BlockShipper::RunTransfer(const SendStep& step, const std::string& options) {
  Transfer t;
  transfer_bytes_.store(0, std::memory_order_relaxed);
  if (target_.receive_session) {
    RunSessionTransfer(step, options, t);
    return t;
  }
  // Watches from before the channel opens: an exec the server never answers stalls too.
  TransferWatchdog watchdog(*session_, transfer_bytes_, options_, clock_);
  LapTimer lap(clock_);
  absl::StatusOr<RemoteCommandPtr> remote =
      session_->Exec(absl::StrCat(target_.receive_command, " ", options));
  t.phases.open = lap.Lap();
  if (!remote.ok()) {
    t.opened = remote.status();
    t.stalled = watchdog.Stop();
    return t;
  }
  commands_started_.fetch_add(1, std::memory_order_relaxed);
  t.remote = std::move(*remote);
  ProgressSink channel(*t.remote, transfer_bytes_);
  t.sent = SendStream(step, channel, &t.stream_bytes);
  if (target_.compression == StreamCompression::kNone) t.stream_bytes = channel.bytes();
  t.channel_failed = channel.failed();
  watchdog.StreamEnded();
  t.phases.stream = lap.Lap();
  t.exit = t.remote->Wait();  // sends EOF first
  t.phases.verdict = lap.Lap();
  t.stalled = watchdog.Stop();
  t.wire_bytes = t.remote->bytes_written();
  return t;
}

void BlockShipper::RunSessionTransfer(const SendStep& step, const std::string& options,
                                      Transfer& t) {
  t.session = true;
  TransferWatchdog watchdog(*session_, transfer_bytes_, options_, clock_);
  LapTimer lap(clock_);
  if (receiver_ && !receiver_->Open()) receiver_.reset();  // it ended since the last block
  if (!receiver_) {
    absl::StatusOr<RemoteCommandPtr> remote =
        session_->Exec(absl::StrCat(target_.receive_command, " --session"));
    if (!remote.ok()) {
      t.phases.open = lap.Lap();
      t.opened = remote.status();
      t.stalled = watchdog.Stop();
      return;
    }
    commands_started_.fetch_add(1, std::memory_order_relaxed);
    receiver_ = std::move(*remote);
  }
  t.phases.open = lap.Lap();
  const uint64_t written_before = receiver_->bytes_written();
  ProgressSink channel(*receiver_, transfer_bytes_);
  t.sent = channel.Write(absl::StrCat(options, "\n"));
  FrameSink frames(channel);
  CountingSink stream(frames);
  if (t.sent.ok()) t.sent = SendStream(step, stream, &t.stream_bytes);
  if (target_.compression == StreamCompression::kNone) t.stream_bytes = stream.bytes();
  if (t.sent.ok()) t.sent = frames.Close();  // the end marker, not the channel's EOF
  t.channel_failed = channel.failed();
  watchdog.StreamEnded();
  t.phases.stream = lap.Lap();
  if (!t.sent.ok()) {
    // The primary's side failed mid-stream (or the channel did): the replica cannot tell
    // where the block ends, so the command is ended and its exit collected.
    t.exit = receiver_->Wait();
  } else {
    absl::StatusOr<std::optional<std::string>> verdict = receiver_->ReadLine(kMaxVerdictLine - 1);
    if (!verdict.ok()) {
      // A line past kMaxVerdictLine is the replica's command misbehaving, not a bad block.
      t.exit = absl::IsDataLoss(verdict.status()) ? absl::AbortedError(verdict.status().message())
                                                  : verdict.status();
    } else if (verdict->has_value()) {
      std::string line = absl::StrCat(**verdict, "\n");
      absl::StatusOr<ReceiveVerdict> answer = ParseReceiveVerdict(**verdict);
      if (answer.ok() && !answer->received()) {
        // A failed block ends the session: its exit code comes with the verdict.
        t.exit = receiver_->Wait();
        if (t.exit.ok()) t.exit->stdout_text = absl::StrCat(line, t.exit->stdout_text);
      } else {
        RemoteExit answered;
        answered.exit_status = 0;
        answered.stdout_text = std::move(line);
        t.exit = std::move(answered);
      }
    } else {
      t.exit = receiver_->Wait();  // the command ended instead of answering: how
    }
  }
  t.phases.verdict = lap.Lap();
  t.stalled = watchdog.Stop();
  t.wire_bytes = receiver_->bytes_written() - written_before;
}

absl::StatusOr<ShipResult> BlockShipper::Ship(const SendStep& step, uint64_t epoch) {
  int64_t start = clock_->MonotonicNanos();
  absl::StatusOr<std::optional<HeadRecord>> read_head = ReadHeadFile(layout_.block(step.block));
  if (!read_head.ok()) return AsLocalFailure(read_head.status(), "reading the block's head file: ");
  std::optional<HeadRecord>& head = *read_head;
  if (!head)
    return absl::InternalError(absl::StrCat("block ", step.block.name, " has no head file"));
  RETURN_IF_ERROR(EnsureSession());
  Transfer t = RunTransfer(step, TransferOptions(step, *head, epoch));
  // The watchdog has stopped: nothing aborts the session from here on.
  auto drop_session = [&] {
    t.remote.reset();  // the channel must go before the session that owns it
    DropSession();     // reconnect next time (and start a new receive command)
  };
  // Whatever failed below, a receive session's command has ended or must end: the next
  // transfer starts a new one.
  auto end_receiver = [&] {
    if (t.session) receiver_.reset();
  };
  const std::string who = absl::StrCat("replica ", target_.id, ": ", step.block.name, ": ");
  if (t.stalled) {
    drop_session();
    return absl::DeadlineExceededError(absl::StrCat(who, *t.stalled, "; transfer aborted"));
  }
  if (!t.opened.ok()) {
    drop_session();  // a session that cannot open channels is reconnected next time
    return t.opened;
  }
  if (!t.exit.ok()) {
    drop_session();
    return t.exit.status();
  }
  if (!t.sent.ok() && !t.channel_failed) {
    end_receiver();
    // The primary's side failed (btrfs send, compression); the replica only saw a cut stream.
    // Its code must classify as local (a `btrfs send` killed by a signal is Aborted).
    return AsLocalFailure(t.sent, absl::StrCat(who, "sending failed: "));
  }
  const RemoteExit& exit = *t.exit;
  const absl::StatusOr<ReceiveVerdict> verdict = VerdictIn(exit.stdout_text);
  if (!exit.ok() || (verdict.ok() && !verdict->received())) {
    end_receiver();
    return ReceiveFailure(absl::StrCat("replica ", target_.id, " refused ", step.block.name), exit,
                          verdict);
  }
  if (!t.sent.ok()) {
    end_receiver();
    return t.sent;
  }
  if (!verdict.ok() || verdict->block != step.block.name) {
    end_receiver();
    return absl::DataLossError(
        absl::StrCat("replica ", target_.id, " answered without confirming ", step.block.name, ": ",
                     verdict.ok() ? absl::StrCat("its verdict names ", verdict->block)
                                  : std::string(verdict.status().message())));
  }
  ShipResult result{step.block,
                    step.parent,
                    t.stream_bytes,
                    verdict->events_verified,
                    absl::Nanoseconds(clock_->MonotonicNanos() - start),
                    t.wire_bytes,
                    t.phases};
  result.phases.replica_stream = verdict->seconds.stream;
  result.phases.replica_verify = verdict->seconds.verify;
  result.phases.replica_promote = verdict->seconds.promote;
  result.phases.replica_process = verdict->seconds.process;
  return result;
}

}  // namespace snapledger
