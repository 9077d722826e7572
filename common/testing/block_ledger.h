// A primary's ledger for tests that need blocks: a ledger root (live subvolume and blocks/
// directory) on a given Btrfs, usually a MemoryBtrfs, with the real EventLog in live/ and the
// real BlockMaker cutting blocks of it. Event bodies are {"i":<n>}.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"

namespace snapledger::testing {

struct BlockLedgerOptions {
  EventLogOptions log;      // the EventLog's (created with epoch 1)
  BlockMakerOptions maker;  // the BlockMaker's
  // How the n in {"i":<n>} counts: false, every event of the ledger from 0; true, the events of
  // each Append (or Cut) call from 0 again.
  bool restart_numbering = false;
};

class BlockLedger;
using BlockLedgerPtr = std::unique_ptr<BlockLedger>;

// Not thread-safe (the log and the maker it hands out are). Test failures are reported through
// gtest expectations, as noted per method.
class BlockLedger {
 public:
  // Initializes `root` (an existing directory) as a ledger root on `btrfs`, creates the EventLog
  // in its live/ and a BlockMaker for it. `btrfs` is borrowed and must outlive the BlockLedger,
  // as must any clock in `options`. Errors are InitializeLedgerRoot's, EventLog::Create's and
  // BlockMaker::Create's.
  static absl::StatusOr<BlockLedgerPtr> Create(Btrfs& btrfs, std::string root,
                                               BlockLedgerOptions options = {});

  BlockLedger(const BlockLedger&) = delete;
  BlockLedger& operator=(const BlockLedger&) = delete;

  // Appends `events` events; a failed append fails the test (and ends the call).
  void Append(int events);
  // Appends `events` events (none when 0), then cuts a block, which must be made (the test
  // fails otherwise). Returns it, or an empty BlockInfo when none was made.
  BlockInfo Cut(int events);
  // The blocks under blocks/ (BlockMaker::ListBlocks); a failure fails the test and returns none.
  std::vector<BlockInfo> Blocks();
  // `block`'s send stream (Btrfs::Send), a delta from `parent` when given; a failure fails the
  // test.
  std::string Stream(const BlockInfo& block, const std::optional<BlockInfo>& parent = {});

  // Replaces the BlockMaker with one made with `options` (BlockMaker::Create's errors; on error
  // there is no maker until a later call succeeds).
  absl::Status RemakeMaker(BlockMakerOptions options);

  Btrfs& btrfs() { return btrfs_; }
  const std::string& root() const { return root_; }
  LedgerLayout layout() const { return LedgerLayout(root_); }
  EventLog& log() { return *log_; }
  BlockMaker& maker() { return *maker_; }

 private:
  BlockLedger(Btrfs& btrfs, std::string root, bool restart_numbering)
      : btrfs_(btrfs), root_(std::move(root)), restart_numbering_(restart_numbering) {}

  Btrfs& btrfs_;
  const std::string root_;
  const bool restart_numbering_;
  EventLogPtr log_;
  BlockMakerPtr maker_;  // after log_: destroyed before the log it borrows
  int64_t appended_ = 0;
};

}  // namespace snapledger::testing
