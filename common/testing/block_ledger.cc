#include "common/testing/block_ledger.h"

#include <gtest/gtest.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/byte_stream.h"

namespace snapledger::testing {

absl::StatusOr<BlockLedgerPtr> BlockLedger::Create(Btrfs& btrfs, std::string root,
                                                   BlockLedgerOptions options) {
  BlockLedgerPtr ledger(new BlockLedger(btrfs, std::move(root), options.restart_numbering));
  absl::Status initialized = InitializeLedgerRoot(btrfs, ledger->root_);
  if (!initialized.ok()) return initialized;
  auto log = EventLog::Create(ledger->layout().live(), 1, options.log);
  if (!log.ok()) return log.status();
  ledger->log_ = std::move(*log);
  absl::Status made = ledger->RemakeMaker(options.maker);
  if (!made.ok()) return made;
  return ledger;
}

void BlockLedger::Append(int events) {
  for (int i = 0; i < events; ++i) {
    const int64_t n = restart_numbering_ ? i : appended_;
    auto appended = log_->Append(absl::StrCat("{\"i\":", n, "}"));
    ASSERT_TRUE(appended.ok()) << appended.status();
    ++appended_;
  }
}

BlockInfo BlockLedger::Cut(int events) {
  Append(events);
  auto block = maker_->Cut();
  EXPECT_TRUE(block.ok() && block->has_value()) << block.status();
  return block.ok() && block->has_value() ? **block : BlockInfo{};
}

std::vector<BlockInfo> BlockLedger::Blocks() {
  auto blocks = maker_->ListBlocks();
  EXPECT_TRUE(blocks.ok()) << blocks.status();
  return blocks.value_or(std::vector<BlockInfo>{});
}

absl::Status BlockLedger::RemakeMaker(BlockMakerOptions options) {
  maker_.reset();
  auto maker = BlockMaker::Create(btrfs_, root_, *log_, options);
  if (!maker.ok()) return maker.status();
  maker_ = std::move(*maker);
  return absl::OkStatus();
}

std::string BlockLedger::Stream(const BlockInfo& block, const std::optional<BlockInfo>& parent) {
  std::optional<std::string> parent_path;
  if (parent) parent_path = layout().block(*parent);
  StringSink sink;
  EXPECT_TRUE(btrfs_.Send(layout().block(block), parent_path, sink).ok());
  return sink.data();
}

}  // namespace snapledger::testing
