// Executes one planned transfer to one replica: runs `btrfs send [-p parent] block` for a
// SendStep (replication_plan.h) into a channel of a persistent SSH session that execs the
// replica's receive command, and returns what the replica verified. It neither plans nor keeps
// a view of the replica: the replica driver (replica_driver.h) plans, holds the blocks it
// planned, classifies the outcome and decides retries and backoff.
//
// One BlockShipper per replica; not thread-safe (its driver runs it on one thread), except
// TransferBytes(), ReceiveCommandsStarted() and Abort(). A transfer that stalls is aborted by
// the shipper's own watchdog (BlockShipperOptions).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/head_file.h"
#include "common/transport/ssh_transport.h"
#include "common/transport/zstd_stream.h"
#include "primary/replication_plan.h"

namespace snapledger {

struct ReplicaTarget {
  std::string id;
  SshEndpoint endpoint;
  // The command requested on the replica; its sshd normally replaces it with the forced
  // command and passes this in SSH_ORIGINAL_COMMAND.
  std::string receive_command = "snapledger-receive";
  // kZstd: the stream is zstd-compressed (with `zstd`) on the way and the receive command is
  // asked for `--compress zstd`.
  StreamCompression compression = StreamCompression::kNone;
  // The default is the fastest setting measured on two cores (bench/README.md).
  ZstdOptions zstd = {.level = 1, .workers = 2};
  // One receive command takes block after block (`--session`,
  // common/transport/receive_session.h); false: one command per block.
  bool receive_session = true;
};

// Where one transfer's time went, in seconds. The primary measures the first three; the
// replica reports the rest in its answer (0 when it did not).
struct TransferPhases {
  double open = 0;             // the channel opened and the receive command started (SSH exec)
  double stream = 0;           // `btrfs send` into the channel, until its last byte was accepted
  double verdict = 0;          // from the end of the stream to the replica's answer
  double replica_stream = 0;   // the replica's `btrfs receive`
  double replica_verify = 0;   // the replica's verification
  double replica_promote = 0;  // the replica finishing the write-back and naming the block
  double replica_process = 0;  // the receive command's run, from main() to its answer
};

struct ShipResult {
  BlockInfo block;
  std::optional<BlockInfo> parent;
  uint64_t stream_bytes = 0;     // uncompressed `btrfs send` bytes
  uint64_t events_verified = 0;  // as the replica reported
  absl::Duration elapsed;
  uint64_t wire_bytes = 0;  // bytes written into the channel (== stream_bytes uncompressed)
  TransferPhases phases;
};

struct BlockShipperOptions {
  // A transfer that moves no bytes into the channel for this long (from the channel's opening,
  // or the last write that moved some) is aborted: the session is broken with
  // SshSession::Abort, `btrfs send` killed and reaped, and Execute returns DeadlineExceeded.
  // Progress is seen per channel write (up to 1 MiB), so this must be well above the time one
  // MiB takes on the slowest link.
  absl::Duration watchdog = absl::Seconds(30);
  // After the last byte the replica verifies and promotes the block, moving nothing; if its
  // answer takes longer than this the transfer is aborted the same way.
  absl::Duration verdict_timeout = absl::Minutes(10);
};

class BlockShipper {
 public:
  // All borrowed; must outlive the shipper. Default options.
  BlockShipper(Btrfs& btrfs, SshTransport& transport, ReplicaTarget target, std::string root,
               Clock* clock = Clock::Real());
  // `clock` also times the watchdog (which polls it a few times a second).
  BlockShipper(Btrfs& btrfs, SshTransport& transport, ReplicaTarget target, std::string root,
               BlockShipperOptions options, Clock* clock = Clock::Real());

  // Ships `step` (one block, as a delta from its parent when set) with the primary's `epoch`,
  // and returns what the replica verified. The replica's answer is read as the receive
  // protocol's verdict (common/transport/receive_protocol.h). Errors:
  //   PermissionDenied or Unauthenticated: trust failures (host key, authentication);
  //   DataLoss: the replica's verdict says the block did not verify, or it answered without
  //     confirming it (a verdict for another block, or an answer that is no verdict);
  //   Aborted: the replica's receive command refused the block (the verdict's ReceiveRefusal
  //     is attached: RefusalOf(status), so kParentNotHeld says the replica lacks the step's
  //     parent), failed otherwise (a transfer failure), stopped reading, or exited with a code
  //     its verdict contradicts (no refusal attached then);
  //   Unavailable: network failures;
  //   DeadlineExceeded: the watchdog aborted a stalled transfer, or the verdict never came
  //     (the session is reconnected by the next Execute);
  //   Cancelled: once Abort() was called;
  //   Internal and others: failures on the primary's side (btrfs send, a missing head file,
  //     compression).
  absl::StatusOr<ShipResult> Execute(const SendStep& step, uint64_t epoch);

  // Bytes written into the channel so far in the current transfer (the last one's total
  // between transfers; 0 before the first). Thread-safe: for progress reports while Execute
  // runs on another thread.
  uint64_t TransferBytes() const { return transfer_bytes_.load(std::memory_order_relaxed); }

  // Keeps an idle session alive (SshSession::KeepAlive); a session found dead is dropped and
  // reconnected by the next transfer. Call it while in sync, on the shipper's thread.
  void KeepAlive();

  // Receive commands started on the replica so far (one per transfer without a receive
  // session; with one, one per session). Thread-safe.
  uint64_t ReceiveCommandsStarted() const {
    return commands_started_.load(std::memory_order_relaxed);
  }

  // Stops the shipper for good: a transfer in progress fails at once (its session is broken
  // with SshSession::Abort) and every later Execute returns Cancelled. Thread-safe: for a
  // daemon shutting down while Execute runs on the shipper's thread.
  void Abort();

  // The replica this shipper ships to.
  const std::string& replica_id() const { return target_.id; }

 private:
  struct Transfer;

  absl::Status EnsureSession();
  void DropSession();
  absl::StatusOr<ShipResult> Ship(const SendStep& step, uint64_t epoch);
  Transfer RunTransfer(const SendStep& step, const std::string& options);
  // One block on a receive session: opens the session's command when there is none (or it
  // ended), writes the request and the framed stream, and reads the verdict line.
  void RunSessionTransfer(const SendStep& step, const std::string& options, Transfer& t);
  absl::Status SendStream(const SendStep& step, ByteSink& channel, uint64_t* stream_bytes);
  // The receive command's transfer options for `step` (--block ... --head-hash ...).
  std::string TransferOptions(const SendStep& step, const HeadRecord& head, uint64_t epoch) const;

  Btrfs& btrfs_;
  SshTransport& transport_;
  ReplicaTarget target_;
  LedgerLayout layout_;
  BlockShipperOptions options_;
  Clock* clock_;
  // Guards the session pointer against Abort() from another thread; the session itself is
  // used only by the shipper's thread (Abort on it is thread-safe).
  absl::Mutex abort_mu_;
  SshSessionPtr session_;
  bool aborted_ = false;
  // The receive session's command, between transfers (shipper's thread only; reset before
  // session_, which owns its channel).
  RemoteCommandPtr receiver_;
  std::atomic<uint64_t> transfer_bytes_{0};
  std::atomic<uint64_t> commands_started_{0};
};

}  // namespace snapledger
