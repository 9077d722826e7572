#include "primary/replication_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

std::optional<BlockInfo> NewestBlock(const std::vector<std::string>& names) {
  std::optional<BlockInfo> newest;
  for (const std::string& name : names) {
    absl::StatusOr<BlockInfo> b = ParseBlockName(name);
    if (b.ok() && (!newest || BlockSeqLess(*newest, *b))) newest = *b;
  }
  return newest;
}

// The reported blocks, plus those of `known` newer than the newest reported one: a report
// sent before a transfer finished does not know about the block it delivered.
std::vector<std::string> MergeReported(const std::vector<std::string>& reported,
                                       const std::vector<std::string>& known) {
  std::vector<std::string> merged = reported;
  std::optional<BlockInfo> newest_reported = NewestBlock(reported);
  for (const std::string& name : known) {
    absl::StatusOr<BlockInfo> b = ParseBlockName(name);
    if (b.ok() && (!newest_reported || BlockSeqLess(*newest_reported, *b)) &&
        std::find(merged.begin(), merged.end(), name) == merged.end())
      merged.push_back(name);
  }
  return merged;
}

}  // namespace

ReplicationState::ReplicationState(const std::vector<std::string>& replica_ids,
                                   TrackerOptions options)
    : tracker_(options) {
  for (const std::string& id : replica_ids) {
    replicas_[id].driver_view.id = id;
    tracker_.AddReplica(id);
  }
}

absl::Status ReplicationState::ApplyReport(const ReplicaReport& report, int64_t now_micros) {
  for (const std::string& name : report.verified_blocks)
    if (absl::StatusOr<BlockInfo> b = ParseBlockName(name); !b.ok())
      return absl::InvalidArgumentError(absl::StrCat(
          "replica ", report.replica_id, " reported a bad block name: ", b.status().message()));
  absl::MutexLock lock(&mu_);
  auto it = replicas_.find(report.replica_id);
  if (it == replicas_.end())
    return absl::NotFoundError(
        absl::StrCat("replica '", report.replica_id, "' is not in this primary's configuration"));
  Replica& r = it->second;
  std::optional<BlockInfo> newest = NewestBlock(report.verified_blocks);
  r.report = report;
  ++r.report_generation;
  // A heartbeat repeating the same newest block is not a new success, nor is a report of the
  // block the driver already recorded: either would move last success past a later failure.
  if (newest && (!r.recorded || BlockSeqLess(*r.recorded, *newest))) {
    tracker_.RecordVerified(report.replica_id, *newest, report.head, now_micros);
    r.recorded = newest;
  }
  return absl::OkStatus();
}

std::optional<ReplicaView> ReplicationState::TakeReportedView(const std::string& id,
                                                              const ReplicaView& driver_view,
                                                              uint64_t* seen_generation) {
  absl::MutexLock lock(&mu_);
  auto it = replicas_.find(id);
  if (it == replicas_.end() || !it->second.report ||
      it->second.report_generation == *seen_generation)
    return std::nullopt;
  *seen_generation = it->second.report_generation;
  return ReplicaView{
      id, MergeReported(it->second.report->verified_blocks, driver_view.verified_blocks)};
}

ReplicaView ReplicationState::RetentionView(const std::string& id, const Replica& r) {
  if (!r.report) return r.driver_view;
  return ReplicaView{id, MergeReported(r.report->verified_blocks, r.driver_view.verified_blocks)};
}

bool ReplicationState::HasReported(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = replicas_.find(id);
  return it != replicas_.end() && it->second.report.has_value();
}

void ReplicationState::BeginTransfer(const std::string& id, Transfer transfer) {
  absl::MutexLock lock(&mu_);
  replicas_[id].in_flight = std::move(transfer);
}

void ReplicationState::EndTransfer(const std::string& id) {
  absl::MutexLock lock(&mu_);
  replicas_[id].in_flight.reset();
}

void ReplicationState::RecordVerified(const std::string& id, const BlockInfo& block,
                                      const HeadRecord& head, int64_t now_micros) {
  absl::MutexLock lock(&mu_);
  tracker_.RecordVerified(id, block, head, now_micros);
  Replica& r = replicas_[id];
  if (!r.recorded || BlockSeqLess(*r.recorded, block)) r.recorded = block;
}

void ReplicationState::RecordFailure(const std::string& id, const std::string& error,
                                     int64_t now_micros) {
  absl::MutexLock lock(&mu_);
  tracker_.RecordFailure(id, error, now_micros);
}

void ReplicationState::SetDriverView(const std::string& id, const ReplicaView& view) {
  absl::MutexLock lock(&mu_);
  replicas_[id].driver_view = view;
}

ReplicationState::Retention ReplicationState::PlanRetention(
    const std::vector<BlockInfo>& primary_blocks, const RetentionLimits& limits) {
  absl::MutexLock lock(&mu_);
  std::vector<ReplicaView> views;
  for (const auto& [id, r] : replicas_) views.push_back(RetentionView(id, r));
  Retention out;
  out.plan = PlanPrimaryRetention(primary_blocks, views, limits);
  for (const std::string& id : out.plan.dropped_holds) {
    Replica& r = replicas_[id];
    std::optional<BlockInfo> parent = ReplicaParent(primary_blocks, RetentionView(id, r));
    if (parent && r.dropped_holds.insert(parent->name).second)
      out.newly_dropped_holds.push_back(id);
  }
  std::set<std::string> in_flight;
  for (const auto& [id, r] : replicas_) {
    if (!r.in_flight) continue;
    in_flight.insert(r.in_flight->block);
    if (r.in_flight->parent) in_flight.insert(*r.in_flight->parent);
  }
  if (!in_flight.empty()) {
    out.plan.holds.insert(in_flight.begin(), in_flight.end());
    std::erase_if(out.plan.delete_blocks,
                  [&](const std::string& name) { return in_flight.contains(name); });
  }
  return out;
}

std::vector<ReplicaLag> ReplicationState::Evaluate(const HeadRecord& primary_head,
                                                   const std::vector<BlockInfo>& primary_blocks,
                                                   int64_t now_micros) {
  absl::MutexLock lock(&mu_);
  return tracker_.Evaluate(primary_head, primary_blocks, now_micros);
}

}  // namespace snapledger
