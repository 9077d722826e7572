#include "common/ledger/block.h"

#include <algorithm>
#include <filesystem>
#include <tuple>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/btrfs/btrfs.h"

namespace snapledger {
namespace {

constexpr size_t kBlockNameLength = kBlockPrefix.size() + kBlockSeqDigits + 1 + kBlockHashDigits;

bool AllDigits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool AllLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

absl::Status NotABlockName(std::string_view name, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("not a block name (want block-<12 digits>-<12 lowercase hex>): \"",
                   absl::CHexEscape(std::string(name)), "\": ", std::string(why)));
}

uint64_t ParseDigits(std::string_view digits) {
  uint64_t v = 0;
  for (char c : digits) v = v * 10 + static_cast<uint64_t>(c - '0');
  return v;
}

}  // namespace

absl::StatusOr<BlockInfo> BlockForHead(uint64_t seq, std::string_view hash) {
  if (seq == 0) return absl::InvalidArgumentError("a block ends at seq >= 1, not 0");
  if (seq > kMaxBlockSeq) {
    return absl::OutOfRangeError(
        absl::StrCat("seq ", seq, " does not fit the 12 digits of a block name"));
  }
  if (hash.size() < kBlockHashDigits || !AllLowerHex(hash)) {
    return absl::InvalidArgumentError(absl::StrCat("block hash is not lowercase hex of at least ",
                                                   kBlockHashDigits, " digits: \"",
                                                   absl::CHexEscape(std::string(hash)), "\""));
  }
  BlockInfo b;
  b.seq = seq;
  b.hash12 = std::string(hash.substr(0, kBlockHashDigits));
  b.name = absl::StrFormat("%s%012u-%s", std::string(kBlockPrefix), seq, b.hash12);
  return b;
}

std::optional<BlockInfo> IncomingBlock(std::string_view entry) {
  if (!entry.starts_with(kIncomingBlockPrefix)) return std::nullopt;
  absl::StatusOr<BlockInfo> block = ParseBlockName(entry.substr(kIncomingBlockPrefix.size()));
  if (!block.ok()) return std::nullopt;
  return *std::move(block);
}

absl::StatusOr<BlockInfo> ParseBlockName(std::string_view name) {
  if (name.size() != kBlockNameLength) return NotABlockName(name, "wrong length");
  if (name.substr(0, kBlockPrefix.size()) != kBlockPrefix) {
    return NotABlockName(name, "missing prefix");
  }
  std::string_view seq = name.substr(kBlockPrefix.size(), kBlockSeqDigits);
  std::string_view dash = name.substr(kBlockPrefix.size() + kBlockSeqDigits, 1);
  std::string_view hash = name.substr(kBlockPrefix.size() + kBlockSeqDigits + 1);
  if (!AllDigits(seq)) return NotABlockName(name, "seq is not 12 digits");
  if (dash != "-") return NotABlockName(name, "no '-' after the seq");
  if (!AllLowerHex(hash)) return NotABlockName(name, "hash is not 12 lowercase hex digits");
  if (ParseDigits(seq) == 0) return NotABlockName(name, "seq 0");
  BlockInfo b;
  b.name = std::string(name);
  b.seq = ParseDigits(seq);
  b.hash12 = std::string(hash);
  return b;
}

bool BlockSeqLess(const BlockInfo& a, const BlockInfo& b) {
  return std::tie(a.seq, a.hash12) < std::tie(b.seq, b.hash12);
}

bool BlockPolicy::ShouldCut(uint64_t events_since_last_block, absl::Duration since_last_block,
                            bool replica_waiting) const {
  if (events_since_last_block == 0) return false;
  if (max_events > 0 && events_since_last_block >= max_events) return true;
  if (max_age > absl::ZeroDuration() && since_last_block >= max_age) return true;
  return replica_waiting && on_demand_spacing > absl::ZeroDuration() &&
         since_last_block >= on_demand_spacing;
}

std::vector<std::string> PlanRetention(const std::vector<BlockInfo>& blocks, size_t keep_newest,
                                       const std::set<std::string>& holds) {
  std::vector<BlockInfo> sorted = blocks;
  std::sort(sorted.begin(), sorted.end(), BlockSeqLess);
  const size_t keep = std::max<size_t>(keep_newest, 1);
  std::vector<std::string> doomed;
  for (size_t i = 0; i + keep < sorted.size(); ++i) {
    if (holds.count(sorted[i].name) == 0) doomed.push_back(sorted[i].name);
  }
  return doomed;
}

LedgerLayout::LedgerLayout(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string LedgerLayout::live() const { return root_ + "/live"; }
std::string LedgerLayout::blocks() const { return root_ + "/blocks"; }
std::string LedgerLayout::block(const BlockInfo& b) const { return blocks() + "/" + b.name; }

absl::StatusOr<std::vector<BlockInfo>> ListBlocks(Btrfs& btrfs, const LedgerLayout& layout,
                                                  std::vector<std::string>* unrecognized) {
  ASSIGN_OR_RETURN(std::vector<SubvolumeInfo> subvolumes, btrfs.ListSubvolumes(layout.blocks()));
  std::vector<BlockInfo> blocks;
  blocks.reserve(subvolumes.size());
  for (const SubvolumeInfo& sv : subvolumes) {
    std::string name = std::filesystem::path(sv.path).filename().string();
    absl::StatusOr<BlockInfo> block = ParseBlockName(name);
    if (block.ok()) {
      blocks.push_back(*std::move(block));
    } else if (unrecognized != nullptr) {
      unrecognized->push_back(std::move(name));
    }
  }
  std::sort(blocks.begin(), blocks.end(), BlockSeqLess);
  return blocks;
}

}  // namespace snapledger
