// What the primary knows about its replicas, shared by the replica drivers (one thread per
// replica), the block loop (retention) and the gRPC Replication service: each replica's newest
// progress report, the view its driver published, the tracker, and the transfers in flight.
// Holds no I/O: facts go in, plans and statuses come out. The view a replica is planned with
// is its driver's (replica_driver.h); the state keeps what the driver published and the
// reports the driver has yet to take, so retention holds what either knows.
//
// Thread-safe: every method takes the internal mutex.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/ledger/block.h"
#include "common/ledger/head_file.h"
#include "primary/replication_plan.h"
#include "primary/replication_tracker.h"

namespace snapledger {

// A replica's progress report (Replication.ReportProgress), decoded.
struct ReplicaReport {
  std::string replica_id;
  std::vector<std::string> verified_blocks;
  HeadRecord head;  // its newest verified head; seq 0 when it holds nothing
  std::string last_error;
};

// A transfer a driver planned and is shipping: retention must keep both blocks until it ends.
struct Transfer {
  std::string block;
  std::optional<std::string> parent;
};

class ReplicationState {
 public:
  ReplicationState(const std::vector<std::string>& replica_ids, TrackerOptions options);

  // Applies a progress report. NotFound for a replica id the primary is not configured for;
  // InvalidArgument when a block name does not parse.
  absl::Status ApplyReport(const ReplicaReport& report, int64_t now_micros);

  // The view a driver should plan with, merging what it knows (`driver_view`, including
  // blocks it shipped since the last report) with the newest report: the reported blocks,
  // plus the driver's blocks newer than the newest reported one (a report sent before a
  // transfer finished does not know about it). nullopt when no report arrived since
  // `*seen_generation`, which is then left unchanged; otherwise it is updated.
  std::optional<ReplicaView> TakeReportedView(const std::string& id, const ReplicaView& driver_view,
                                              uint64_t* seen_generation);
  // True once the replica reported at least once (since the primary started).
  bool HasReported(const std::string& id);

  // A driver registers the transfer it planned (before shipping it), or ends it.
  void BeginTransfer(const std::string& id, Transfer transfer);
  void EndTransfer(const std::string& id);

  // A transfer of `block` (head `head`) was verified by the replica.
  void RecordVerified(const std::string& id, const BlockInfo& block, const HeadRecord& head,
                      int64_t now_micros);
  void RecordFailure(const std::string& id, const std::string& error, int64_t now_micros);
  // The driver's view of the replica, published after a transfer: retention holds for it.
  void SetDriverView(const std::string& id, const ReplicaView& view);

  // Retention for the primary's blocks: PlanPrimaryRetention over every replica's view (its
  // driver's, merged with a newer report as TakeReportedView merges), with the blocks of
  // transfers in flight added to the holds. Holds dropped for the first time
  // (replica, block) are listed in newly_dropped_holds.
  struct Retention {
    PrimaryRetentionPlan plan;
    std::vector<std::string> newly_dropped_holds;  // replica ids
  };
  Retention PlanRetention(const std::vector<BlockInfo>& primary_blocks,
                          const RetentionLimits& limits);

  std::vector<ReplicaLag> Evaluate(const HeadRecord& primary_head,
                                   const std::vector<BlockInfo>& primary_blocks,
                                   int64_t now_micros);

 private:
  struct Replica {
    ReplicaView driver_view;  // as its driver last published it
    std::optional<ReplicaReport> report;
    uint64_t report_generation = 0;
    // The newest block given to the tracker as verified (by a report or a shipment).
    std::optional<BlockInfo> recorded;
    std::optional<Transfer> in_flight;
    std::set<std::string> dropped_holds;  // blocks whose hold was already counted as dropped
  };

  // What retention holds for: the driver's view merged with the newest report.
  static ReplicaView RetentionView(const std::string& id, const Replica& r);

  absl::Mutex mu_;
  std::map<std::string, Replica> replicas_ ABSL_GUARDED_BY(mu_);
  ReplicationTracker tracker_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
