// A primary's ledger for integration tests: the ledger root prepared on a (loop-mounted)
// btrfs, an EventLog in its live subvolume (epoch 1) and a BlockMaker over it.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/base/status_macros.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"

namespace snapledger::testing {

// Members are destroyed maker first, then log, as the BlockMaker borrows the log.
struct PrimaryLedger {
  EventLogPtr log;
  BlockMakerPtr maker;
};

inline absl::StatusOr<PrimaryLedger> CreatePrimaryLedger(Btrfs& btrfs, const std::string& root) {
  RETURN_IF_ERROR(InitializeLedgerRoot(btrfs, root));
  PrimaryLedger primary;
  ASSIGN_OR_RETURN(primary.log, EventLog::Create(LedgerLayout(root).live(), 1));
  ASSIGN_OR_RETURN(primary.maker, BlockMaker::Create(btrfs, root, *primary.log));
  return primary;
}

}  // namespace snapledger::testing
