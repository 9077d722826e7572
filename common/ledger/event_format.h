// The ledger's line format: one event per line of events.jsonl (docs/FORMAT.md is the
// normative description; this file implements it).
//
//   {"seq":<u64>,"ts":<i64>,"prev":"<64 hex>","body":<canonical JSON object>,"hash":"<64 hex>"}\n
//
// The envelope order is fixed and `hash` is last, so the hashed bytes are the stored bytes:
//   hash = SHA-256( line without its trailing `,"hash":"<64 hex>"}` + "}" )
// i.e. the SHA-256 of the record exactly as stored minus its hash member. Verification never
// re-serializes an event. `prev` of seq 1 is kGenesisHash.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/ledger/sha256.h"

namespace snapledger {

// prev of the first event: 64 zeros.
inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// Length of the fixed `,"hash":"<64 hex>"}` tail of every line (without the newline).
inline constexpr size_t kHashTailLength = 75;

// A position in the chain: the event with this seq has this hash. seq 0 is the empty ledger,
// whose hash is kGenesisHash.
struct ChainHead {
  uint64_t seq = 0;
  std::string hash = std::string(kGenesisHash);
  int64_t ts = 0;  // ts of that event; 0 for the empty ledger.
  friend bool operator==(const ChainHead&, const ChainHead&) = default;
};

// A parsed line. The string_views point into the caller's buffer.
struct EventView {
  uint64_t seq = 0;
  int64_t ts = 0;
  std::string_view prev;
  std::string_view body;  // canonical JSON object text
  std::string_view hash;  // as stored
  std::string_view line;  // without the trailing newline
};

// Parses the envelope of `line` (no trailing newline) without touching the body's JSON. Errors
// say what is malformed; the caller adds the line number.
absl::StatusOr<EventView> ParseEventLine(std::string_view line);

// SHA-256 over the hashed bytes of `line` (see above), using `hasher` (reset first).
Digest ComputeLineDigest(std::string_view line, Sha256& hasher);

// Builds the stored line (with trailing newline) for an event whose body is already
// canonical, and returns its hash in `hash_hex` (64 chars).
std::string EncodeEventLine(uint64_t seq, int64_t ts, std::string_view prev,
                            std::string_view canonical_body, std::string* hash_hex);

// Appends the encoded line to `out` (faster for batches); returns the hash hex.
std::string AppendEventLine(uint64_t seq, int64_t ts, std::string_view prev,
                            std::string_view canonical_body, Sha256& hasher, std::string* out);

}  // namespace snapledger
