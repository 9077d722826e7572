#include "common/canonical_json.h"

#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

using Json = nlohmann::json;

// Thrown from the parser callback to stop parsing; converted to a Status below.
struct BodyRejected {
  std::string reason;
};

}  // namespace

absl::StatusOr<std::string> CanonicalizeBody(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat("event body is ", text.size(),
                                                   " bytes, more than the maximum of ",
                                                   max_bytes, " bytes"));
  // The parser validates UTF-8 inside strings; duplicate keys and depth need a callback
  // because nlohmann would silently keep the last duplicate.
  std::vector<std::set<std::string>> keys_per_level;
  Json::parser_callback_t check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= kMaxBodyDepth)
          throw BodyRejected{absl::StrCat("nesting deeper than ", kMaxBodyDepth, " levels")};
        if (event == Json::parse_event_t::object_start) keys_per_level.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        keys_per_level.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys_per_level.back().insert(parsed.get<std::string>()).second)
          throw BodyRejected{absl::StrCat("duplicate key \"", parsed.get<std::string>(), "\"")};
        break;
      default:
        break;
    }
    return true;
  };
  Json body;
  try {
    body = Json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const BodyRejected& r) {
    return absl::InvalidArgumentError(absl::StrCat("event body rejected: ", r.reason));
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("event body is not valid JSON (byte ", e.byte, "): ", e.what()));
  }
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
