#include "common/ledger/canonical_json.h"

#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

using Json = nlohmann::json;

// Thrown from the parser callback to stop parsing; converted to a Status below.
struct BodyRejected {
  std::string reason;
};

}  // namespace

namespace {

// Parses `text`, enforcing the depth limit and rejecting duplicate keys (nlohmann would keep
// the last one silently). Counting keys per object and comparing with the parsed object's
// size finds a duplicate without a std::set of key strings per object (which was most of the
// cost of canonicalizing a typical event); the key's name is then found by a second, rare,
// set-based pass so the error can name it.
absl::StatusOr<Json> ParseBody(std::string_view text, bool name_duplicates) {
  std::vector<size_t> keys_per_level;
  std::vector<std::set<std::string>> names_per_level;
  Json::parser_callback_t check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= kMaxBodyDepth)
          throw BodyRejected{absl::StrCat("nesting deeper than ", kMaxBodyDepth, " levels")};
        if (event == Json::parse_event_t::object_start) {
          keys_per_level.push_back(0);
          if (name_duplicates) names_per_level.emplace_back();
        }
        break;
      case Json::parse_event_t::object_end:
        if (parsed.size() != keys_per_level.back()) throw BodyRejected{"duplicate key"};
        keys_per_level.pop_back();
        if (name_duplicates) names_per_level.pop_back();
        break;
      case Json::parse_event_t::key:
        ++keys_per_level.back();
        if (name_duplicates && !names_per_level.back().insert(parsed.get<std::string>()).second)
          throw BodyRejected{absl::StrCat("duplicate key \"", parsed.get<std::string>(), "\"")};
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const BodyRejected& r) {
    if (r.reason == "duplicate key" && !name_duplicates) return ParseBody(text, true);
    return absl::InvalidArgumentError(absl::StrCat("event body rejected: ", r.reason));
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("event body is not valid JSON (byte ", e.byte, "): ", e.what()));
  } catch (const Json::exception& e) {  // e.g. out_of_range for 1e999: must not abort
    return absl::InvalidArgumentError(absl::StrCat("event body rejected: ", e.what()));
  }
}

}  // namespace

// A fast path for bodies that are already canonical, which well-behaved clients (and every
// body re-sent from the ledger) are: one pass, no allocation. It accepts only a conservative
// subset whose canonical form is provably the input itself: objects with strictly increasing
// keys, arrays, printable-ASCII strings without escapes, integers of at most 18 digits
// without leading zeros, true/false/null, no whitespace, depth within kMaxBodyDepth. Anything
// else (floats, escapes, non-ASCII, unsorted keys...) returns false and takes the full
// parser, so the fast path can never change what is accepted or how it is written.
class CanonicalScanner {
 public:
  explicit CanonicalScanner(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}
  bool IsCanonicalObject() { return p_ < end_ && *p_ == '{' && Value(0) && p_ == end_; }

 private:
  bool Value(int depth) {
    if (p_ == end_) return false;
    switch (*p_) {
      case '{':
        return Object(depth + 1);
      case '[':
        return Array(depth + 1);
      case '"':
        return String(nullptr);
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        return Integer();
    }
  }
  bool Object(int depth) {
    if (depth > kMaxBodyDepth) return false;
    ++p_;
    if (p_ < end_ && *p_ == '}') return ++p_, true;
    std::string_view prev;
    for (bool first = true;; first = false) {
      std::string_view key;
      if (p_ == end_ || *p_ != '"' || !String(&key)) return false;
      if (!first && !(prev < key)) return false;  // unsorted or duplicate: full path
      prev = key;
      if (p_ == end_ || *p_++ != ':' || !Value(depth)) return false;
      if (p_ == end_) return false;
      if (*p_ == '}') return ++p_, true;
      if (*p_++ != ',') return false;
    }
  }
  bool Array(int depth) {
    if (depth > kMaxBodyDepth) return false;
    ++p_;
    if (p_ < end_ && *p_ == ']') return ++p_, true;
    while (true) {
      if (!Value(depth) || p_ == end_) return false;
      if (*p_ == ']') return ++p_, true;
      if (*p_++ != ',') return false;
    }
  }
  bool String(std::string_view* out) {
    const char* start = ++p_;
    while (p_ < end_) {
      unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        if (out != nullptr) *out = std::string_view(start, p_ - start);
        ++p_;
        return true;
      }
      if (c < 0x20 || c > 0x7e || c == '\\') return false;
      ++p_;
    }
    return false;
  }
  bool Literal(std::string_view lit) {
    if (static_cast<size_t>(end_ - p_) < lit.size() || std::string_view(p_, lit.size()) != lit)
      return false;
    p_ += lit.size();
    return true;
  }
  bool Integer() {
    if (p_ < end_ && *p_ == '-') ++p_;
    const char* digits = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    size_t n = p_ - digits;
    if (n == 0 || n > 18 || (n > 1 && *digits == '0')) return false;
    if (n == 1 && *digits == '0' && digits[-1] == '-') return false;  // "-0"
    return p_ == end_ || *p_ == ',' || *p_ == '}' || *p_ == ']';
  }

  const char* p_;
  const char* end_;
};

absl::StatusOr<std::string> CanonicalizeBody(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat(
        "event body is ", text.size(), " bytes, more than the maximum of ", max_bytes, " bytes"));
  if (CanonicalScanner(text).IsCanonicalObject()) return std::string(text);
  absl::StatusOr<Json> parsed = ParseBody(text, /*name_duplicates=*/false);
  if (!parsed.ok()) return parsed.status();
  Json& body = *parsed;
  if (!body.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat("event body must be a JSON object, got ", body.type_name()));
  try {
    return body.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::strict);
  } catch (const Json::type_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("event body rejected: ", e.what()));
  }
}

}  // namespace snapledger
