// The block maker: cuts blocks (read-only snapshots of the live subvolume) on the primary and
// prunes old ones.
//
//   <root>/live                    writable subvolume: events.jsonl, metadata/current_hash
//   <root>/blocks/<block name>     read-only snapshots of live, see common/ledger/block.h
//
// A block is cut with the log frozen (EventLog::Freeze), so it holds exactly the events up to
// its name's seq and its head file names that event: the state a replica verifies.
//
// Thread-safe: Cut, CutIfDue and Prune serialize on an internal mutex. One BlockMaker per
// root; it assumes nothing else creates or deletes blocks under <root>/blocks.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/event_log.h"

namespace snapledger {

// Prepares `root` (an existing directory on btrfs) for a ledger: creates the live subvolume and
// the blocks directory when missing; existing ones are kept, so it is idempotent. The caller
// then creates or opens the EventLog in LedgerLayout(root).live(). FailedPrecondition when root
// is not on btrfs or live exists but is not a subvolume.
absl::Status InitializeLedgerRoot(Btrfs& btrfs, const std::string& root);

struct BlockMakerOptions {
  size_t keep_newest = 16;       // retention: blocks kept besides held ones (at least 1)
  Clock* clock = Clock::Real();  // for CutIfDue; not owned, must outlive the BlockMaker
};

class BlockMaker;
using BlockMakerPtr = std::unique_ptr<BlockMaker>;

class BlockMaker {
 public:
  // `btrfs` and `log` are borrowed and must outlive the BlockMaker; `log` must be the ledger in
  // <root>/live (InvalidArgument otherwise). FailedPrecondition when root is not on btrfs or
  // the newest block is ahead of the log or disagrees with it (a diverged or rolled-back
  // ledger).
  static absl::StatusOr<BlockMakerPtr> Create(Btrfs& btrfs, const std::string& root, EventLog& log,
                                              BlockMakerOptions options = {});

  BlockMaker(const BlockMaker&) = delete;
  BlockMaker& operator=(const BlockMaker&) = delete;

  // Cuts a block of everything logged so far, then applies retention (PlanRetention with
  // options.keep_newest and `holds`). Returns the new block, or nullopt when no event was
  // logged since the newest block (then only retention runs). If the snapshot fails no block
  // is made. If retention fails after a block was made, the block exists (ListBlocks shows it)
  // and the error is returned; the next Cut retries retention.
  absl::StatusOr<std::optional<BlockInfo>> Cut(const std::set<std::string>& holds = {});

  // Cut() when `policy` says a block is due: by the events since the newest block, the time
  // (options.clock, monotonic) since the last block this object cut, or since it was created
  // (SinceLastCut), and whether a replica is waiting for a block (BlockPolicy::ShouldCut).
  // Otherwise nullopt, doing nothing.
  absl::StatusOr<std::optional<BlockInfo>> CutIfDue(const BlockPolicy& policy,
                                                    const std::set<std::string>& holds = {},
                                                    bool replica_waiting = false);

  // Time since the last block this object cut, or since it was created. Does not wait for a
  // cut in progress.
  absl::Duration SinceLastCut();

  // Deletes blocks per PlanRetention(keep_newest, holds); returns the deleted names.
  absl::StatusOr<std::vector<std::string>> Prune(const std::set<std::string>& holds = {});

  // The blocks under <root>/blocks, ordered by parsed seq. Subvolumes there whose names are not
  // block names are left out and, when `unrecognized` is given, their names are put there.
  absl::StatusOr<std::vector<BlockInfo>> ListBlocks(
      std::vector<std::string>* unrecognized = nullptr) const;

  const LedgerLayout& layout() const { return layout_; }

 private:
  BlockMaker(Btrfs& btrfs, LedgerLayout layout, EventLog& log, BlockMakerOptions options);

  absl::StatusOr<std::optional<BlockInfo>> CutLocked(const std::set<std::string>& holds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<BlockInfo> SnapshotFrozenLog() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::string>> PruneBlocks(const std::vector<BlockInfo>& blocks,
                                                       const std::set<std::string>& holds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Btrfs& btrfs_;
  const LedgerLayout layout_;
  EventLog& log_;
  const BlockMakerOptions options_;

  absl::Mutex mu_;
  std::optional<BlockInfo> newest_ ABSL_GUARDED_BY(mu_);
  // Written under mu_; read without it by SinceLastCut, which must not wait for a cut.
  std::atomic<int64_t> last_cut_nanos_;
};

// FailedPrecondition unless the log at `head` can continue from `newest` (the newest block):
// the log must not be behind it, and when it is at the block's seq their hashes must agree.
absl::Status CheckLogContinuesBlock(const HeadRecord& head, const std::optional<BlockInfo>& newest);

}  // namespace snapledger
