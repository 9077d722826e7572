// Renders the primary's ClusterStatus answer for `snapledger status --primary`: a table an
// operator reads at a glance, or JSON for machines. Pure functions: no I/O, time passed in.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "snapledger/v1/snapledger.pb.h"

namespace snapledger {

// The state as the metrics label it ("in_sync", "catching_up", ...; "unknown" for values this
// build does not know).
std::string_view ReplicaStateName(v1::ReplicaState state);

// How long ago `then_unix_micros` was at `now_unix_micros`: "3s ago", "4m05s ago",
// "2h10m ago", "3d04h ago"; "never" for 0. A time in the future (clock skew between the
// primary and this host) reads "in 3s".
std::string FormatAge(int64_t then_unix_micros, int64_t now_unix_micros);

// At most `max_chars` bytes of `text` on one line: newlines and tabs become spaces, and a
// longer text is cut (never inside a UTF-8 character) and ends in "...". "-" for empty text.
std::string OneLine(std::string_view text, size_t max_chars);

// The primary's head, then one aligned row per replica (id, state, head seq, lag in events,
// blocks and seconds, last success as an age at `now_unix_micros`, last error cut to fit).
// Ends with a newline.
std::string RenderClusterStatus(const v1::ClusterStatusResponse& status, int64_t now_unix_micros);

// The same as one JSON object (and a newline): {"primary": {...}, "replicas": [{...}]}, every
// field of the response, states as ReplicaStateName, plus each replica's
// "last_success_age_seconds" at `now_unix_micros` (null if it never succeeded).
std::string ClusterStatusToJson(const v1::ClusterStatusResponse& status, int64_t now_unix_micros);

}  // namespace snapledger
