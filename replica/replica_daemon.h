// snapledger-replica serve: the replica's daemon. Blocks arrive through the forced command
// (`snapledger-receive`, a separate process per transfer); the daemon notices each
// newly verified block and:
//   - serves read-only queries (gRPC Query, health) from the newest verified block, keeping
//     its lookup index current (outside the ledger's snapshots);
//   - reports progress to the primary (Replication.ReportProgress) after every verified block
//     and as a heartbeat;
//   - prunes its own old blocks, keeping the newest (the primary's next parent) and
//     keep_newest in all, never while a receive runs;
//   - exports ReplicaMetrics (docs/METRICS.md), reading transfer outcomes from the receive
//     journal (replica/receive_journal.h).
//
// Thread-safe: Stop() may be called from any thread.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"
#include "replica/replica_config.h"

namespace snapledger {

class ReplicaDaemon;
using ReplicaDaemonPtr = std::unique_ptr<ReplicaDaemon>;

class ReplicaDaemon {
 public:
  // `btrfs` and `clock` must outlive the daemon. InvalidArgument for a bad config;
  // Unavailable when a listen address cannot be bound.
  static absl::StatusOr<ReplicaDaemonPtr> Start(const ReplicaConfig& config, Btrfs& btrfs,
                                                Clock* clock = Clock::Real());
  ~ReplicaDaemon();
  ReplicaDaemon(const ReplicaDaemon&) = delete;
  ReplicaDaemon& operator=(const ReplicaDaemon&) = delete;

  // Stops serving and watching. Idempotent.
  void Stop();
  int grpc_port() const;
  int metrics_port() const;

  class Impl;

 private:
  explicit ReplicaDaemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger
