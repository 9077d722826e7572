// Drives replication to one replica. Each pass (RunOnce) plans the next transfer once, with
// PlanReplica against the replica's view; holds what it planned (the transfer is registered
// with ReplicationState under the retention lock before anything is sent, so retention keeps
// its block and parent until it ends); hands the step to the BlockShipper to execute; and
// classifies the outcome once into a ReplicationFailure, which names the metric label and
// decides the backoff. It records the outcome in PrimaryMetrics, ReplicationState (tracker,
// last error) and the log.
//
// The driver is the one owner of the replica's view (the blocks it holds verified). The view
// is fed by the replica's progress reports, taken from ReplicationState, and by transfers: a
// verified block is added, a parent the replica refuses as not held (the typed refusal
// ReceiveRefusal::kParentNotHeld, common/transport/receive_protocol.h) is forgotten. After a
// verified transfer the driver publishes the view to ReplicationState, and only then ends the
// transfer's hold: retention then holds the shipped block as the replica's next parent.
//
// Waiting is the caller's: a pass returns what it did and, after a failure, how long to wait.
// One driver per replica, run by one thread (the daemon's loop for that replica); Abort() may
// be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/ledger/block.h"
#include "common/ops/metrics.h"
#include "primary/block_shipper.h"
#include "primary/replication_plan.h"
#include "primary/replication_state.h"

namespace snapledger {

// Why a pass failed. Decided once, by the driver, from a typed PlanConflict or from the
// shipper's status (ClassifyExecuteFailure).
enum class ReplicationFailure {
  kNetwork,       // connect, channel or transfer failed on the network
  kTrust,         // host key or authentication refused
  kRefused,       // the replica's receive command refused the block (a ReceiveRefusal), failed
                  // otherwise, stopped reading, or exited with a code its verdict contradicts
  kVerification,  // the replica's verdict says the block did not verify, or it did not confirm
                  // the block (a verdict for another block, or an answer that is no verdict)
  kConflict,      // the plan found diverged or ahead history: needs an operator
  kWatchdog,      // the transfer stalled, or the verdict never came
  kLocal,         // the primary's own side: btrfs send, a missing head file, compression
};

// Every class, in the order of kReplicationFailureReasons.
inline constexpr std::array<ReplicationFailure, 7> kReplicationFailures = {
    ReplicationFailure::kNetwork,      ReplicationFailure::kTrust,    ReplicationFailure::kRefused,
    ReplicationFailure::kVerification, ReplicationFailure::kConflict, ReplicationFailure::kWatchdog,
    ReplicationFailure::kLocal};

// The `reason` label of snapledger_replication_failures_total for `failure`: one of
// kReplicationFailureReasons ("network", "trust", "refused", "verification", "conflict",
// "watchdog", "local"). Pure; the strings are static.
std::string_view ReplicationFailureLabel(ReplicationFailure failure);

// The class of a failed BlockShipper::Execute, from its status code: DeadlineExceeded is
// kWatchdog; PermissionDenied and Unauthenticated kTrust; FailedPrecondition kConflict;
// DataLoss kVerification; Aborted kRefused; Unavailable kNetwork; anything else (and OK, which
// is no failure) kLocal. Pure.
ReplicationFailure ClassifyExecuteFailure(const absl::Status& status);

// How long the driver waits after its `failures`-th consecutive failure (1 for the first),
// that one of class `failure`: a conflict is permanent until an operator acts and waits `max`;
// every other class is retried after RetryDelay(failures, initial, max).
absl::Duration RetryDelayAfter(ReplicationFailure failure, int failures, absl::Duration initial,
                               absl::Duration max);

struct ReplicaDriverOptions {
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(30);
  // A replica that has not reported since the driver was made gets this long to report what
  // it holds before the driver plans without it (a full send).
  absl::Duration initial_report_wait = absl::Seconds(3);
};

// What one pass did.
struct DriverPass {
  enum class Outcome {
    kAwaitingReport,  // the replica's first report is awaited: nothing was planned
    kInSync,          // the replica holds the primary's newest block (or it has none)
    kShipped,         // `shipped` was verified by the replica
    kFailed,          // `failure`, `error`; pass again after `retry_after`
    kStopped,         // the shipper was aborted: no more passes
  };
  Outcome outcome = Outcome::kInSync;
  std::optional<ShipResult> shipped;
  std::optional<ReplicationFailure> failure;
  std::string error;  // as recorded for status (last error)
  absl::Duration retry_after = absl::ZeroDuration();
};

class ReplicaDriver {
 public:
  // The primary's blocks, sorted by seq. Called with `retention_mu` held.
  using BlockSource = std::function<std::vector<BlockInfo>()>;

  // `shipper` ships to the replica this driver drives (its replica_id()), which `state` must
  // know. `retention_mu` is the lock retention holds while it plans and prunes: the driver
  // holds it while it reads the blocks, plans and registers its transfer, so a planned block
  // is never pruned before it is held. Shipped blocks' head files are read under
  // `ledger_root`. Everything borrowed must outlive the driver.
  ReplicaDriver(BlockShipper& shipper, ReplicationState& state, PrimaryMetrics& metrics,
                absl::Mutex& retention_mu, BlockSource primary_blocks, std::string ledger_root,
                ReplicaDriverOptions options, Clock* clock = Clock::Real());
  ReplicaDriver(const ReplicaDriver&) = delete;
  ReplicaDriver& operator=(const ReplicaDriver&) = delete;

  // One pass: takes a new progress report into the view, plans, and (unless in sync, in
  // conflict or awaiting the first report) holds, ships with `epoch`, records and classifies.
  // In sync, it keeps the shipper's idle session alive. Must not be called with
  // `retention_mu` held.
  DriverPass RunOnce(uint64_t epoch);

  // Stops for good (BlockShipper::Abort): a pass in progress ends at once, later ones return
  // kStopped or find nothing to do. Thread-safe.
  void Abort() { shipper_.Abort(); }

  // What the driver knows the replica holds verified. Driver's thread only.
  const ReplicaView& view() const { return view_; }

 private:
  // Plans with the blocks read under the retention lock and, for a step, registers its hold.
  ReplicaPlan PlanAndHold();
  void CountReceiveCommands();
  void RecordVerified(const ShipResult& result);
  DriverPass Fail(ReplicationFailure failure, std::string error);

  BlockShipper& shipper_;
  ReplicationState& state_;
  PrimaryMetrics& metrics_;
  absl::Mutex& retention_mu_;
  const BlockSource primary_blocks_;
  const LedgerLayout layout_;
  const ReplicaDriverOptions options_;
  Clock* const clock_;
  const std::string id_;
  const int64_t started_nanos_;

  ReplicaView view_;
  uint64_t seen_report_ = 0;       // ReplicationState's report generation already taken
  uint64_t commands_counted_ = 0;  // shipper_.ReceiveCommandsStarted() already in the metric
  int failures_ = 0;               // consecutive failed passes
  bool shipped_ = false;           // a transfer was verified since the driver was made
};

}  // namespace snapledger
