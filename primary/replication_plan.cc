#include "primary/replication_plan.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

// The replica's blocks that parse, sorted by seq. Names that do not parse are ignored: a
// replica reports only names it validated on receipt.
std::vector<BlockInfo> ParsedBlocks(const ReplicaView& replica) {
  std::vector<BlockInfo> blocks;
  for (const std::string& name : replica.verified_blocks) {
    auto b = ParseBlockName(name);
    if (b.ok()) blocks.push_back(*b);
  }
  std::sort(blocks.begin(), blocks.end(), BlockSeqLess);
  return blocks;
}

std::optional<PlanConflict> FindConflict(const std::vector<BlockInfo>& primary_blocks,
                                         const std::vector<BlockInfo>& replica_blocks) {
  std::map<uint64_t, const BlockInfo*> by_seq;
  for (const BlockInfo& b : primary_blocks) by_seq[b.seq] = &b;
  for (const BlockInfo& r : replica_blocks) {
    auto it = by_seq.find(r.seq);
    if (it != by_seq.end() && it->second->name != r.name)
      return PlanConflict{PlanConflict::Kind::kDiverged,
                          absl::StrCat("replica holds ", r.name, " but the primary's block at seq ",
                                       r.seq, " is ", it->second->name)};
  }
  if (!replica_blocks.empty() && !primary_blocks.empty() &&
      replica_blocks.back().seq > primary_blocks.back().seq)
    return PlanConflict{
        PlanConflict::Kind::kReplicaAhead,
        absl::StrCat("replica holds ", replica_blocks.back().name,
                     ", newer than the primary's newest block ", primary_blocks.back().name)};
  return std::nullopt;
}

}  // namespace

std::optional<BlockInfo> ReplicaParent(const std::vector<BlockInfo>& primary_blocks,
                                       const ReplicaView& replica) {
  std::set<std::string> primary_names;
  for (const BlockInfo& b : primary_blocks) primary_names.insert(b.name);
  std::vector<BlockInfo> held = ParsedBlocks(replica);
  for (auto it = held.rbegin(); it != held.rend(); ++it)
    if (primary_names.count(it->name)) return *it;
  return std::nullopt;
}

ReplicaPlan PlanReplica(const std::vector<BlockInfo>& primary_blocks, const ReplicaView& replica) {
  if (primary_blocks.empty()) return InSync{};
  std::vector<BlockInfo> held = ParsedBlocks(replica);
  if (auto conflict = FindConflict(primary_blocks, held)) return *conflict;
  const BlockInfo& newest = primary_blocks.back();
  if (!held.empty() && held.back().name == newest.name) return InSync{};
  return SendStep{newest, ReplicaParent(primary_blocks, replica)};
}

PrimaryRetentionPlan PlanPrimaryRetention(const std::vector<BlockInfo>& primary_blocks,
                                          const std::vector<ReplicaView>& replicas,
                                          const RetentionLimits& limits) {
  PrimaryRetentionPlan plan;
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < primary_blocks.size(); ++i) position[primary_blocks[i].name] = i;
  for (const ReplicaView& replica : replicas) {
    std::optional<BlockInfo> parent = ReplicaParent(primary_blocks, replica);
    if (!parent) continue;
    size_t behind = primary_blocks.size() - 1 - position[parent->name];
    if (behind > limits.max_blocks_behind) {
      plan.dropped_holds.push_back(replica.id);
    } else {
      plan.holds.insert(parent->name);
    }
  }
  plan.delete_blocks = PlanRetention(primary_blocks, limits.keep_newest, plan.holds);
  return plan;
}

absl::Duration RetryDelay(int failures, absl::Duration initial, absl::Duration max) {
  absl::Duration delay = initial;
  for (int i = 1; i < failures && delay < max; ++i) delay *= 2;
  return std::min(delay, max);
}

}  // namespace snapledger
