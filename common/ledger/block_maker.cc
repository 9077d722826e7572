#include "common/ledger/block_maker.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

namespace fs = std::filesystem;

absl::Status EnsureDirectory(const std::string& path) {
  std::error_code ec;
  fs::create_directory(path, ec);
  if (ec) return ErrnoStatus(absl::StrCat("mkdir ", path), ec.value());
  if (!fs::is_directory(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists but is not a directory"));
  }
  return absl::OkStatus();
}

bool SamePath(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

}  // namespace

absl::Status InitializeLedgerRoot(Btrfs& btrfs, const std::string& root) {
  RETURN_IF_ERROR(btrfs.CheckIsBtrfs(root));
  LedgerLayout layout(root);
  std::error_code ec;
  if (fs::exists(layout.live(), ec)) {
    absl::Status is_subvolume = btrfs.GetSubvolumeInfo(layout.live()).status();
    if (!is_subvolume.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(layout.live(), " exists but is not a subvolume: ", is_subvolume.message()));
    }
  } else {
    RETURN_IF_ERROR(btrfs.CreateSubvolume(layout.live()));
  }
  return EnsureDirectory(layout.blocks());
}

absl::Status CheckLogContinuesBlock(const HeadRecord& head,
                                    const std::optional<BlockInfo>& newest) {
  if (!newest.has_value()) return absl::OkStatus();
  if (head.head.seq < newest->seq) {
    return absl::FailedPreconditionError(
        absl::StrCat("the live log ends at seq ", head.head.seq, " but block ", newest->name,
                     " is ahead of it: the live ledger was rolled back or replaced"));
  }
  if (head.head.seq == newest->seq &&
      head.head.hash.compare(0, kBlockHashDigits, newest->hash12) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the live log's event ", head.head.seq, " has hash ", head.head.hash,
                     " but block ", newest->name, " ends at a different one: diverged ledger"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BlockMakerPtr> BlockMaker::Create(Btrfs& btrfs, const std::string& root,
                                                 EventLog& log, BlockMakerOptions options) {
  RETURN_IF_ERROR(btrfs.CheckIsBtrfs(root));
  LedgerLayout layout(root);
  if (!SamePath(log.dir(), layout.live())) {
    return absl::InvalidArgumentError(absl::StrCat("the event log is in ", log.dir(),
                                                   ", not in the live subvolume ", layout.live()));
  }
  BlockMakerPtr maker(new BlockMaker(btrfs, std::move(layout), log, options));
  ASSIGN_OR_RETURN(std::vector<BlockInfo> blocks, maker->ListBlocks());
  absl::MutexLock lock(&maker->mu_);
  if (!blocks.empty()) maker->newest_ = blocks.back();
  RETURN_IF_ERROR(CheckLogContinuesBlock(log.Head(), maker->newest_));
  return maker;
}

BlockMaker::BlockMaker(Btrfs& btrfs, LedgerLayout layout, EventLog& log, BlockMakerOptions options)
    : btrfs_(btrfs),
      layout_(std::move(layout)),
      log_(log),
      options_(options),
      last_cut_nanos_(options.clock->MonotonicNanos()) {}

absl::StatusOr<std::optional<BlockInfo>> BlockMaker::Cut(const std::set<std::string>& holds) {
  absl::MutexLock lock(&mu_);
  return CutLocked(holds);
}

absl::StatusOr<std::optional<BlockInfo>> BlockMaker::CutIfDue(const BlockPolicy& policy,
                                                              const std::set<std::string>& holds,
                                                              bool replica_waiting) {
  absl::MutexLock lock(&mu_);
  const uint64_t newest_seq = newest_.has_value() ? newest_->seq : 0;
  const uint64_t head_seq = log_.Head().head.seq;
  const uint64_t waiting = head_seq > newest_seq ? head_seq - newest_seq : 0;
  const absl::Duration elapsed =
      absl::Nanoseconds(options_.clock->MonotonicNanos() - last_cut_nanos_);
  if (!policy.ShouldCut(waiting, elapsed, replica_waiting)) return std::nullopt;
  return CutLocked(holds);
}

absl::Duration BlockMaker::SinceLastCut() {
  return absl::Nanoseconds(options_.clock->MonotonicNanos() - last_cut_nanos_);
}

absl::StatusOr<std::optional<BlockInfo>> BlockMaker::CutLocked(const std::set<std::string>& holds) {
  ASSIGN_OR_RETURN(std::vector<BlockInfo> blocks, ListBlocks());
  newest_ = blocks.empty() ? std::nullopt : std::optional<BlockInfo>(blocks.back());
  const HeadRecord head = log_.Head();
  RETURN_IF_ERROR(CheckLogContinuesBlock(head, newest_));
  std::optional<BlockInfo> made;
  if (head.head.seq > (newest_.has_value() ? newest_->seq : 0)) {
    ASSIGN_OR_RETURN(made, SnapshotFrozenLog());
    blocks.push_back(*made);
    newest_ = made;
    last_cut_nanos_ = options_.clock->MonotonicNanos();
  }
  RETURN_IF_ERROR(PruneBlocks(blocks, holds).status());
  return made;
}

absl::StatusOr<BlockInfo> BlockMaker::SnapshotFrozenLog() {
  ASSIGN_OR_RETURN(std::unique_ptr<EventLog::Frozen> frozen, log_.Freeze());
  const ChainHead& head = frozen->head().head;
  ASSIGN_OR_RETURN(BlockInfo block, BlockForHead(head.seq, head.hash));
  RETURN_IF_ERROR(
      btrfs_.CreateSnapshot(layout_.live(), layout_.block(block), SnapshotKind::kReadOnly));
  return block;
}

absl::StatusOr<std::vector<std::string>> BlockMaker::Prune(const std::set<std::string>& holds) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::vector<BlockInfo> blocks, ListBlocks());
  return PruneBlocks(blocks, holds);
}

absl::StatusOr<std::vector<std::string>> BlockMaker::PruneBlocks(
    const std::vector<BlockInfo>& blocks, const std::set<std::string>& holds) {
  std::vector<std::string> doomed = PlanRetention(blocks, options_.keep_newest, holds);
  for (const std::string& name : doomed) {
    ASSIGN_OR_RETURN(BlockInfo block, ParseBlockName(name));
    RETURN_IF_ERROR(btrfs_.DeleteSubvolume(layout_.block(block)));
  }
  return doomed;
}

absl::StatusOr<std::vector<BlockInfo>> BlockMaker::ListBlocks(
    std::vector<std::string>* unrecognized) const {
  return snapledger::ListBlocks(btrfs_, layout_, unrecognized);
}

}  // namespace snapledger
