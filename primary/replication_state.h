// What the primary knows about its replicas, shared by the shippers (one thread per replica),
// the block loop (retention) and the gRPC Replication service: each replica's reported view,
// the tracker, and the transfers in flight. Holds no I/O: facts go in, plans and statuses
// come out.
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

// A transfer being shipped: retention must keep both blocks until it ends.
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

  // The view a shipper should plan with, merging what it knows (`shipper_view`, including
  // blocks it shipped since the last report) with the newest report: the reported blocks,
  // plus the shipper's blocks newer than the newest reported one (a report sent before a
  // transfer finished does not know about it). nullopt when no report arrived since
  // `*seen_generation`, which is then left unchanged; otherwise it is updated.
  std::optional<ReplicaView> TakeReportedView(const std::string& id, const ReplicaView& shipper_view,
                                              uint64_t* seen_generation);
  // True once the replica reported at least once (since the primary started).
  bool HasReported(const std::string& id);

  // A shipper starts or ends a transfer.
  void BeginTransfer(const std::string& id, Transfer transfer);
  void EndTransfer(const std::string& id);

  // A transfer of `block` (head `head`) was verified by the replica.
  void RecordVerified(const std::string& id, const BlockInfo& block, const HeadRecord& head,
                      int64_t now_micros);
  void RecordFailure(const std::string& id, const std::string& error, int64_t now_micros);
  // The shipper's own view after a transfer (what retention holds for it).
  void SetShipperView(const std::string& id, const ReplicaView& view);

  // Retention for the primary's blocks: PlanPrimaryRetention over every replica's view, with
  // the blocks of transfers in flight added to the holds. Holds dropped for the first time
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
    ReplicaView view;  // newest known (report merged with shipments)
    std::optional<ReplicaReport> report;
    uint64_t report_generation = 0;
    // The newest block given to the tracker as verified (by a report or a shipment).
    std::optional<BlockInfo> recorded;
    std::optional<Transfer> in_flight;
    std::set<std::string> dropped_holds;  // blocks whose hold was already counted as dropped
  };

  absl::Mutex mu_;
  std::map<std::string, Replica> replicas_ ABSL_GUARDED_BY(mu_);
  ReplicationTracker tracker_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
