// Blocks: read-only snapshots of the live ledger, named after the head they end at.
//
//   block-<seq, 12 decimal digits, zero-padded>-<first 12 hex digits of that event's hash>
//   e.g. block-000000001234-9f86d081884c
//
// Because the seq is zero-padded, names sort like seqs; code still orders by the parsed seq.
// Nothing but this exact form is a block name (no path separators, no "..", no uppercase), so a
// name from a directory listing or a peer can be joined to a path safely once it parses.
//
// Also here, as pure functions: when to cut a block (BlockPolicy) and which blocks to delete
// (PlanRetention), and the paths of a ledger root (LedgerLayout). Everything is thread-safe.
// One function reads the filesystem: ListBlocks, through the Btrfs interface it is given.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace snapledger {

class Btrfs;

inline constexpr std::string_view kBlockPrefix = "block-";
inline constexpr size_t kBlockSeqDigits = 12;
inline constexpr size_t kBlockHashDigits = 12;
inline constexpr uint64_t kMaxBlockSeq = 999'999'999'999;  // the largest 12-digit seq

struct BlockInfo {
  std::string name;    // block-<seq>-<hash12>
  uint64_t seq = 0;    // the last event in the block; >= 1
  std::string hash12;  // first 12 lowercase hex digits of that event's hash
  friend bool operator==(const BlockInfo&, const BlockInfo&) = default;
};

// The block ending at event `seq` whose hash is `hash` (lowercase hex, at least 12 digits; a
// full 64-digit hash is the usual argument). InvalidArgument for seq 0 or a malformed hash,
// OutOfRange for seq > kMaxBlockSeq.
absl::StatusOr<BlockInfo> BlockForHead(uint64_t seq, std::string_view hash);

// Parses a block name. InvalidArgument, quoting the name, for anything that is not exactly
// the form above.
absl::StatusOr<BlockInfo> ParseBlockName(std::string_view name);

// Where a replica's `btrfs receive` puts a block until it is verified: blocks/.incoming-<name>,
// never a block name itself; the block takes its own name once verified, and a receive that
// was interrupted leaves it for the next receive to remove.
inline constexpr std::string_view kIncomingBlockPrefix = ".incoming-";
// The block that the blocks/ entry `entry` is being received as, when `entry` is
// kIncomingBlockPrefix followed by a block name; nullopt otherwise.
std::optional<BlockInfo> IncomingBlock(std::string_view entry);

// Orders by seq, then hash12 (two blocks with one seq mean diverged histories).
bool BlockSeqLess(const BlockInfo& a, const BlockInfo& b);

// When to cut the next block: once `max_events` events have accumulated since the last block,
// or once `max_age` has passed since the last block and at least one event is waiting. Never
// an empty block. A zero limit is disabled.
//
// On demand (off unless `on_demand_spacing` is set): when a replica is waiting for a block (its
// shipper is idle, or has just finished a transfer, while events wait), a block is cut as soon
// as `on_demand_spacing` has passed since the last one, so those events do not sit out the
// rest of `max_age` while the link is free. The spacing bounds how many blocks replicas can
// ask for: at most one per spacing, which retention limits counted in blocks must allow for.
struct BlockPolicy {
  uint64_t max_events = 10'000;
  absl::Duration max_age = absl::Seconds(1);
  absl::Duration on_demand_spacing = absl::ZeroDuration();

  bool ShouldCut(uint64_t events_since_last_block, absl::Duration since_last_block,
                 bool replica_waiting = false) const;
};

// Which blocks to delete so that the newest `keep_newest` remain (at least one: the newest
// block is never deleted), together with every block named in `holds` (for example a block a
// replica still needs as the parent of its next delta). `blocks` may be in any order; the
// result is oldest first.
std::vector<std::string> PlanRetention(const std::vector<BlockInfo>& blocks, size_t keep_newest,
                                       const std::set<std::string>& holds);

// The paths of a ledger root (DESIGN.md section 2).
class LedgerLayout {
 public:
  explicit LedgerLayout(std::string root);

  const std::string& root() const { return root_; }
  std::string live() const;                     // <root>/live: writable subvolume (primary)
  std::string blocks() const;                   // <root>/blocks: one read-only snapshot each
  std::string block(const BlockInfo& b) const;  // <root>/blocks/<name>

 private:
  std::string root_;
};

// The blocks under layout.blocks(), ordered by parsed seq, without needing the ledger's writer
// (read-only callers such as `snapledger blocks`, and the receive command, which links nothing
// of the writer's). Subvolumes there whose names are not block names are left out and, when
// `unrecognized` is given, their names are put there.
absl::StatusOr<std::vector<BlockInfo>> ListBlocks(Btrfs& btrfs, const LedgerLayout& layout,
                                                  std::vector<std::string>* unrecognized = nullptr);

}  // namespace snapledger
