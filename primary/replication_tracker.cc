#include "primary/replication_tracker.h"

#include <algorithm>

namespace snapledger {

std::string_view ReplicaHealthName(ReplicaHealth h) {
  switch (h) {
    case ReplicaHealth::kInSync:
      return "in sync";
    case ReplicaHealth::kCatchingUp:
      return "catching up";
    case ReplicaHealth::kStalled:
      return "stalled";
    case ReplicaHealth::kFailing:
      return "failing";
    case ReplicaHealth::kUnknown:
      break;
  }
  return "unknown";
}

void ReplicationTracker::AddReplica(const std::string& id) { replicas_.try_emplace(id); }

void ReplicationTracker::RecordVerified(const std::string& id, const BlockInfo& block,
                                        const HeadRecord& head, int64_t now_micros) {
  Replica& r = replicas_[id];
  if (r.block && ParseBlockName(*r.block).ok() && ParseBlockName(*r.block)->seq > block.seq)
    return;  // an older block confirmed late changes nothing
  r.block = block.name;
  r.head = head;
  r.last_success_micros = now_micros;
  r.last_error.clear();
}

void ReplicationTracker::RecordFailure(const std::string& id, const std::string& error,
                                       int64_t now_micros) {
  Replica& r = replicas_[id];
  r.last_failure_micros = now_micros;
  r.last_error = error;
}

std::vector<ReplicaLag> ReplicationTracker::Evaluate(const HeadRecord& primary_head,
                                                     const std::vector<BlockInfo>& primary_blocks,
                                                     int64_t now_micros) const {
  std::vector<ReplicaLag> out;
  for (const auto& [id, r] : replicas_) {
    ReplicaLag lag;
    lag.replica_id = id;
    lag.last_verified_block = r.block;
    lag.head = r.head;
    lag.last_success_micros = r.last_success_micros;
    lag.last_error = r.last_error;
    const uint64_t seq = r.block ? r.head.head.seq : 0;
    lag.lag_events = primary_head.head.seq > seq ? primary_head.head.seq - seq : 0;
    lag.lag_bytes = primary_head.log_bytes > r.head.log_bytes && r.block
                        ? primary_head.log_bytes - r.head.log_bytes
                        : (r.block ? 0 : primary_head.log_bytes);
    lag.lag_blocks =
        static_cast<uint64_t>(std::count_if(primary_blocks.begin(), primary_blocks.end(),
                                            [&](const BlockInfo& b) { return b.seq > seq; }));
    if (lag.lag_events > 0 && r.block)
      lag.lag_seconds =
          std::max<double>(0, static_cast<double>(primary_head.head.ts - r.head.head.ts) / 1e6);
    bool failing_now = r.last_failure_micros > r.last_success_micros;
    bool quiet_too_long = now_micros - std::max(r.last_success_micros, int64_t{0}) >
                          absl::ToInt64Microseconds(options_.stall_after);
    if (failing_now) {
      lag.health = ReplicaHealth::kFailing;
    } else if (!r.block) {
      lag.health = ReplicaHealth::kUnknown;
    } else if (lag.lag_blocks == 0) {
      lag.health = ReplicaHealth::kInSync;
    } else if (quiet_too_long) {
      lag.health = ReplicaHealth::kStalled;
    } else {
      lag.health = ReplicaHealth::kCatchingUp;
    }
    out.push_back(std::move(lag));
  }
  return out;
}

}  // namespace snapledger
