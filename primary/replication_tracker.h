// The replication tracker: what the primary knows of each replica and how far behind it is.
// Pure: the shippers and progress reports feed it facts, a clock reading goes in, statuses
// come out. Served over gRPC (Replication.ClusterStatus) and as Prometheus gauges.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/ledger/block.h"
#include "common/ledger/head_file.h"

namespace snapledger {

enum class ReplicaHealth { kUnknown, kInSync, kCatchingUp, kStalled, kFailing };
std::string_view ReplicaHealthName(ReplicaHealth h);

struct ReplicaLag {
  std::string replica_id;
  ReplicaHealth health = ReplicaHealth::kUnknown;
  std::optional<std::string> last_verified_block;
  HeadRecord head;                  // the replica's newest verified head (seq 0 if none)
  uint64_t lag_events = 0;          // primary head seq - replica head seq
  uint64_t lag_blocks = 0;          // primary blocks newer than the replica's newest
  uint64_t lag_bytes = 0;           // primary log bytes - replica log bytes
  double lag_seconds = 0;           // primary head ts - replica head ts (0 when caught up)
  int64_t last_success_micros = 0;  // wall clock of the last verified transfer; 0 if none
  std::string last_error;
};

struct TrackerOptions {
  // A replica that is behind and has not verified anything for this long is stalled.
  absl::Duration stall_after = absl::Seconds(30);
};

// Not thread-safe; the daemon guards it with a mutex.
class ReplicationTracker {
 public:
  explicit ReplicationTracker(TrackerOptions options = {}) : options_(options) {}

  void AddReplica(const std::string& id);
  // A transfer of `block` (whose head is `head`) was verified by the replica at `now_micros`.
  void RecordVerified(const std::string& id, const BlockInfo& block, const HeadRecord& head,
                      int64_t now_micros);
  // A transfer attempt failed.
  void RecordFailure(const std::string& id, const std::string& error, int64_t now_micros);

  // Every replica's lag against the primary's head and blocks (sorted by seq), at `now_micros`.
  std::vector<ReplicaLag> Evaluate(const HeadRecord& primary_head,
                                   const std::vector<BlockInfo>& primary_blocks,
                                   int64_t now_micros) const;

 private:
  struct Replica {
    std::optional<std::string> block;
    HeadRecord head;
    int64_t last_success_micros = 0;
    int64_t last_failure_micros = 0;
    std::string last_error;
  };
  TrackerOptions options_;
  std::map<std::string, Replica> replicas_;
};

}  // namespace snapledger
