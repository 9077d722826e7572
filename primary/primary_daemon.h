// snapledger-primary: the ledger's writer and the source of replication.
//
//   gRPC (one port): Ledger (Append, AppendStream), Replication (ReportProgress,
//                    ClusterStatus), Query (Get, Range), grpc.health.v1.Health
//   HTTP /metrics:   PrimaryMetrics (docs/METRICS.md)
//   block loop:      cuts a block when the policy says so, applies retention (holds for
//                    every replica's parent and every transfer in flight), refreshes lag
//   one thread per replica runs its ReplicaDriver: plans (PlanReplica), holds the planned
//                    blocks, ships one block at a time over the replica's persistent SSH
//                    session (BlockShipper), retries failures with capped exponential backoff
//
// Ownership: the daemon owns everything it starts; the Btrfs and SshTransport are borrowed.
// Thread-safe: Stop() may be called from any thread (e.g. a signal-handling one).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"
#include "common/transport/ssh_transport.h"
#include "primary/primary_config.h"

namespace snapledger {

class PrimaryDaemon;
using PrimaryDaemonPtr = std::unique_ptr<PrimaryDaemon>;

class PrimaryDaemon {
 public:
  // Opens (or, when live/ holds no ledger yet, creates with config.epoch) the ledger under
  // config.ledger_root, then starts serving. `btrfs`, `transport` and `clock` must outlive the
  // daemon. Errors: InvalidArgument for a bad config; FailedPrecondition when the root is not
  // on btrfs or the blocks disagree with the log; DataLoss from log recovery; Unavailable when
  // a listen address cannot be bound.
  static absl::StatusOr<PrimaryDaemonPtr> Start(const PrimaryConfig& config, Btrfs& btrfs,
                                                SshTransport& transport,
                                                Clock* clock = Clock::Real());
  // Stops (see Stop).
  ~PrimaryDaemon();
  PrimaryDaemon(const PrimaryDaemon&) = delete;
  PrimaryDaemon& operator=(const PrimaryDaemon&) = delete;

  // Health turns NOT_SERVING, the gRPC server drains, the drivers finish or abort their
  // transfer, the block loop stops, and the log is synced. Idempotent.
  void Stop();

  int grpc_port() const;
  int metrics_port() const;  // 0 when metrics are off

  class Impl;

 private:
  explicit PrimaryDaemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger
