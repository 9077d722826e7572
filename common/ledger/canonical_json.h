// Validation and canonical serialization of event bodies.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace snapledger {

inline constexpr size_t kDefaultMaxBodyBytes = 1 << 20;  // 1 MiB
inline constexpr int kMaxBodyDepth = 64;

// Checks that `text` is one JSON object (UTF-8, at most `max_bytes` bytes of input, nesting
// at most kMaxBodyDepth, no duplicate keys) and returns its canonical form: keys sorted by
// their UTF-8 bytes, no insignificant whitespace, strings with only the escapes JSON requires
// (non-ASCII kept as UTF-8), numbers in shortest round-trip form. See docs/FORMAT.md.
// Errors are InvalidArgument and say what is wrong and where (byte offset).
// Thread-safe.
absl::StatusOr<std::string> CanonicalizeBody(std::string_view text,
                                             size_t max_bytes = kDefaultMaxBodyBytes);

}  // namespace snapledger
