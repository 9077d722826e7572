// Replication planning: pure functions from the primary's blocks and each replica's reported
// state to what to send (block, parent) and what the primary may prune. Nothing here touches
// btrfs, ssh or the clock; the replica driver (replica_driver.h) has the shipper execute the
// plan's steps and decides retries.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "absl/time/time.h"
#include "common/ledger/block.h"

namespace snapledger {

// What a replica reported: the blocks it holds verified, in any order (names are
// block-<seq>-<hash12>, so a name identifies a head).
struct ReplicaView {
  std::string id;
  std::vector<std::string> verified_blocks;
};

// The replica already holds the primary's newest block.
struct InSync {};

// Send `block`, as a delta from `parent` when set (a block both sides hold), else in full.
struct SendStep {
  BlockInfo block;
  std::optional<BlockInfo> parent;
};

// Why no step can be planned. The replica must be looked at (or re-bootstrapped) by an
// operator; the driver classifies a conflict as permanent (ReplicationFailure::kConflict).
struct PlanConflict {
  enum class Kind {
    // The replica holds a block at a seq the primary also has, under another name: the two
    // chains differ (a failed-over or foreign ledger).
    kDiverged,
    // The replica holds blocks newer than the primary's newest (a stale primary).
    kReplicaAhead,
  };
  Kind kind;
  std::string detail;
};

using ReplicaPlan = std::variant<InSync, SendStep, PlanConflict>;

// `primary_blocks` sorted by seq (as ListBlocks returns them). Sends the primary's newest block,
// with the newest block both sides hold as its parent; a full send when they share none (a new
// replica, or one whose hold was dropped). Nothing to send when the primary has no blocks.
ReplicaPlan PlanReplica(const std::vector<BlockInfo>& primary_blocks, const ReplicaView& replica);

// The block a replica's next delta would use as its parent: its newest verified block that the
// primary still has. nullopt when there is none.
std::optional<BlockInfo> ReplicaParent(const std::vector<BlockInfo>& primary_blocks,
                                       const ReplicaView& replica);

struct RetentionLimits {
  size_t keep_newest = 16;  // blocks kept regardless of replicas
  // A hold is dropped when the held block is more than this many blocks behind the newest:
  // a replica gone that long is re-bootstrapped with a full send rather than pinning an
  // unbounded number of blocks.
  size_t max_blocks_behind = 256;
};

struct PrimaryRetentionPlan {
  std::set<std::string> holds;             // block names kept for replicas
  std::vector<std::string> dropped_holds;  // ids of replicas whose hold was dropped
  std::vector<std::string> delete_blocks;  // oldest first
};

// What the primary may delete: never a block some replica still needs as its parent, unless
// that replica fell more than max_blocks_behind blocks behind (its hold is dropped and
// reported); never the newest block.
PrimaryRetentionPlan PlanPrimaryRetention(const std::vector<BlockInfo>& primary_blocks,
                                          const std::vector<ReplicaView>& replicas,
                                          const RetentionLimits& limits);

// How long a driver waits after its `failures`-th consecutive failure (1 for the first):
// initial, 2x, 4x ... capped at `max`.
absl::Duration RetryDelay(int failures, absl::Duration initial, absl::Duration max);

}  // namespace snapledger
