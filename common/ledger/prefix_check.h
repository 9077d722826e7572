// Proof that an append-only file kept its old bytes: compares the first `length` bytes of two
// files, reading only the ranges the two do not share physically on disk.
//
// Incremental verification trusts line `s` and checks everything after it; it cannot see a
// change to the bytes before line `s` (a delta that rewrote old events would verify). A block
// received as a delta from its parent shares the parent's unchanged extents (btrfs receive
// snapshots the parent and applies the changes), so with FIEMAP the check costs about the size
// of what changed, not of the file. Where extents are not shared or sharing cannot be proven (files
// on different filesystems, not btrfs, a full send, compressed extents), it reads and compares
// those bytes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace snapledger {

struct PrefixComparison {
  bool equal = false;
  uint64_t first_difference = 0;  // byte offset, when !equal
  uint64_t bytes_shared = 0;      // proven equal by shared extents, not read
  uint64_t bytes_compared = 0;    // read from both files and compared
};

// Compares bytes [0, length) of `reference` and `candidate`. A file shorter than `length` is
// a difference at its end. Errors only for I/O problems.
absl::StatusOr<PrefixComparison> ComparePrefix(const std::string& reference,
                                               const std::string& candidate, uint64_t length);

}  // namespace snapledger
