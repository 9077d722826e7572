// metadata/current_hash: the ledger's head, written atomically after the log.
//
//   {"seq":N,"hash":"<64 hex>","epoch":E,"ts":T,"log_bytes":B}\n
//
// `log_bytes` is the length of events.jsonl through the end of line N, so a verifier can find
// line N without scanning. The head file may lag the log on the live subvolume (it is
// reconciled on open); in a block it equals the block's last event.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/ledger/event_format.h"

namespace snapledger {

inline constexpr char kEventsFile[] = "events.jsonl";
inline constexpr char kHeadFile[] = "metadata/current_hash";

struct HeadRecord {
  ChainHead head;
  uint64_t epoch = 1;
  uint64_t log_bytes = 0;
  friend bool operator==(const HeadRecord&, const HeadRecord&) = default;
};

std::string SerializeHead(const HeadRecord& h);
// Errors (DataLoss) say which field is missing or malformed.
absl::StatusOr<HeadRecord> ParseHead(std::string_view text);

// Reads <dir>/metadata/current_hash; nullopt when the file does not exist.
absl::StatusOr<std::optional<HeadRecord>> ReadHeadFile(const std::string& dir);
// Writes <dir>/metadata/current_hash atomically (temp, fsync, rename, fsync dir).
absl::Status WriteHeadFile(const std::string& dir, const HeadRecord& h);

}  // namespace snapledger
