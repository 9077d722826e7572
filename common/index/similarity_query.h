// FindSimilar: the similarity query as the gRPC service and the CLI ask it. It embeds what the
// caller gives (free text, an event body, or the event with a given seq), resolves a time
// range to the seqs it covers and field filters to a predicate, both through EventQuery (the
// lookup index, or a scan), searches the SimilarityIndex, and returns the hits' stored lines.
//
// Errors: InvalidArgument for a malformed request (no text, a body that is not a JSON object,
// an inverted time range, k = 0 or above kMaxSimilarK, a field filter value that is not a JSON
// scalar); NotFound when `like_seq` names no event; FailedPrecondition "vector index not
// available: ..." while the index cannot answer; DataLoss from the log as EventQuery reports it.
// Thread-safe if `events` and `index` are (they are).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/index/similarity_index.h"
#include "common/lookup/event_query.h"

namespace snapledger {

inline constexpr size_t kMaxSimilarK = 1000;

struct SimilarQuestion {
  enum class Like { kText, kBody, kSeq };
  Like like = Like::kText;
  std::string text;  // kText: free text; kBody: an event body (JSON object)
  uint64_t seq = 0;  // kSeq: the event to find neighbours of (not itself part of the answer)
  size_t k = 10;
  std::optional<int64_t> from_ts;  // inclusive
  std::optional<int64_t> to_ts;    // inclusive
  std::vector<FieldMatch> fields;  // top-level body fields that must equal their values
};

struct SimilarEvent {
  float score = 0;
  std::string line;  // the event's stored line
};

struct SimilarAnswer {
  std::vector<SimilarEvent> events;  // best first
  uint64_t indexed_through = 0;      // the index's last seq when it answered
};

absl::StatusOr<SimilarAnswer> FindSimilar(EventQuery& events, SimilarityIndex& index,
                                          const SimilarQuestion& question);

// Parses "field=value" (value as JSON if it parses as a string, integer or boolean, else as a
// plain string: `host=compute-03` and `new_vlan=17` both work).
absl::StatusOr<FieldMatch> ParseFieldMatch(std::string_view spec);

}  // namespace snapledger
