#include "common/ledger/event_format.h"

#include <charconv>

namespace snapledger {
namespace {

constexpr std::string_view kSeqKey = "{\"seq\":";
constexpr std::string_view kTsKey = ",\"ts\":";
constexpr std::string_view kPrevKey = ",\"prev\":\"";
constexpr std::string_view kBodyKey = "\",\"body\":";
constexpr std::string_view kHashKey = ",\"hash\":\"";

// Consumes `literal` from the front of `*s`.
bool Eat(std::string_view* s, std::string_view literal) {
  if (s->substr(0, literal.size()) != literal) return false;
  s->remove_prefix(literal.size());
  return true;
}

// Consumes a canonical decimal integer (no leading zeros, optional '-' when signed).
template <typename T>
bool EatInteger(std::string_view* s, T* out) {
  const char* begin = s->data();
  const char* end = begin + s->size();
  bool negative = !s->empty() && (*s)[0] == '-';
  const char* digits = begin + (negative ? 1 : 0);
  if (digits == end || *digits < '0' || *digits > '9') return false;
  auto [ptr, ec] = std::from_chars(begin, end, *out);
  if (ec != std::errc() || ptr == begin) return false;
  if (*digits == '0' && ptr - digits > 1) return false;  // leading zero
  if (negative && *out == 0) return false;               // "-0"
  s->remove_prefix(ptr - begin);
  return true;
}

}  // namespace

absl::StatusOr<EventView> ParseEventLine(std::string_view line) {
  EventView ev;
  ev.line = line;
  std::string_view s = line;
  if (!Eat(&s, kSeqKey) || !EatInteger(&s, &ev.seq))
    return absl::DataLossError("malformed envelope: expected {\"seq\":<integer> at the start");
  if (!Eat(&s, kTsKey) || !EatInteger(&s, &ev.ts))
    return absl::DataLossError("malformed envelope: expected ,\"ts\":<integer> after seq");
  if (!Eat(&s, kPrevKey) || s.size() < 64 || !IsLowerHex64(s.substr(0, 64)))
    return absl::DataLossError("malformed envelope: expected ,\"prev\":\"<64 hex>\" after ts");
  ev.prev = s.substr(0, 64);
  s.remove_prefix(64);
  if (!Eat(&s, kBodyKey))
    return absl::DataLossError("malformed envelope: expected ,\"body\": after prev");
  if (s.size() < kHashTailLength + 2)
    return absl::DataLossError("malformed envelope: line too short for a body and hash");
  std::string_view tail = s.substr(s.size() - kHashTailLength);
  std::string_view hash = tail.substr(kHashKey.size(), 64);
  if (tail.substr(0, kHashKey.size()) != kHashKey || !IsLowerHex64(hash) ||
      tail.substr(kHashKey.size() + 64) != "\"}")
    return absl::DataLossError(
        "malformed envelope: expected the line to end with ,\"hash\":\"<64 hex>\"}");
  ev.hash = hash;
  ev.body = s.substr(0, s.size() - kHashTailLength);
  if (ev.body.front() != '{' || ev.body.back() != '}')
    return absl::DataLossError("malformed envelope: body is not a JSON object");
  return ev;
}

Digest ComputeLineDigest(std::string_view line, Sha256& hasher) {
  hasher.Reset();
  hasher.Update(line.substr(0, line.size() - kHashTailLength));
  hasher.Update("}");
  return hasher.Finish();
}

std::string AppendEventLine(uint64_t seq, int64_t ts, std::string_view prev,
                            std::string_view canonical_body, Sha256& hasher, std::string* out) {
  size_t start = out->size();
  char num[24];
  out->append(kSeqKey);
  out->append(num, std::to_chars(num, num + sizeof num, seq).ptr);
  out->append(kTsKey);
  out->append(num, std::to_chars(num, num + sizeof num, ts).ptr);
  out->append(kPrevKey);
  out->append(prev);
  out->append(kBodyKey);
  out->append(canonical_body);
  hasher.Reset();
  hasher.Update(std::string_view(*out).substr(start));
  hasher.Update("}");
  std::string hash_hex = ToHex(hasher.Finish());
  out->append(kHashKey);
  out->append(hash_hex);
  out->append("\"}\n");
  return hash_hex;
}

std::string EncodeEventLine(uint64_t seq, int64_t ts, std::string_view prev,
                            std::string_view canonical_body, std::string* hash_hex) {
  Sha256 hasher;
  std::string line;
  *hash_hex = AppendEventLine(seq, ts, prev, canonical_body, hasher, &line);
  return line;
}

}  // namespace snapledger
