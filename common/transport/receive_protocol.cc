#include "common/transport/receive_protocol.h"

#include <array>
#include <cmath>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

constexpr std::array<std::pair<ReceiveExit, std::string_view>, 4> kVerdictNames = {{
    {ReceiveExit::kReceived, "received"},
    {ReceiveExit::kTransferFailed, "transfer_failed"},
    {ReceiveExit::kRefused, "refused"},
    {ReceiveExit::kNotVerified, "not_verified"},
}};

constexpr std::array<std::pair<ReceiveRefusal, std::string_view>, 6> kRefusalNames = {{
    {ReceiveRefusal::kBadRequest, "bad_request"},
    {ReceiveRefusal::kNotPermitted, "not_permitted"},
    {ReceiveRefusal::kForcedCommand, "forced_command"},
    {ReceiveRefusal::kParentNotHeld, "parent_not_held"},
    {ReceiveRefusal::kNewerBlockHeld, "newer_block_held"},
    {ReceiveRefusal::kReceiveInProgress, "receive_in_progress"},
}};

// The payload type URL WithRefusal attaches.
constexpr std::string_view kRefusalPayload = "type.snapledger/ReceiveRefusal";

// The longest block name a verdict echoes (a valid one is 31 bytes; a refused request may name
// anything).
constexpr size_t kMaxVerdictBlock = 1 << 10;

// `text` cut to at most `max` bytes, not inside a UTF-8 sequence, ending in "..." when cut.
std::string Cut(std::string_view text, size_t max) {
  if (text.size() <= max) return std::string(text);
  size_t n = max - 3;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return std::string(text.substr(0, n)) + "...";
}

// The length of the well-formed UTF-8 character at the start of `s` (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0.
size_t Utf8CharLength(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i) { return i < s.size() && (byte(i) & 0xC0) == 0x80; };
  const unsigned char b = byte(0);
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return cont(1) ? 2 : 0;
  if (b >= 0xE0 && b <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (b == 0xE0 && byte(1) < 0xA0) return 0;   // overlong
    if (b == 0xED && byte(1) >= 0xA0) return 0;  // a surrogate
    return 3;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (b == 0xF0 && byte(1) < 0x90) return 0;   // overlong
    if (b == 0xF4 && byte(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

double WrittenSeconds(double s) { return std::isfinite(s) && s > 0 ? s : 0; }

using Json = nlohmann::json;

// Reads the members of one JSON object, saying which one is missing or of the wrong type.
class Members {
 public:
  Members(const Json& object, std::string what) : object_(object), what_(std::move(what)) {}

  absl::StatusOr<const Json*> Find(std::string_view name) const {
    auto it = object_.find(name);
    if (it == object_.end())
      return absl::InvalidArgumentError(absl::StrCat(what_, " has no \"", std::string(name), "\""));
    return &*it;
  }
  absl::StatusOr<std::string> String(std::string_view name) const {
    ASSIGN_OR_RETURN(const Json* v, Find(name));
    if (!v->is_string()) return WrongType(name, *v, "a string");
    return v->get<std::string>();
  }
  absl::StatusOr<std::string> OptionalString(std::string_view name) const {
    if (!object_.contains(name)) return std::string();
    return String(name);
  }
  absl::StatusOr<uint64_t> Count(std::string_view name) const {
    ASSIGN_OR_RETURN(const Json* v, Find(name));
    if (!v->is_number_unsigned()) return WrongType(name, *v, "a non-negative integer");
    return v->get<uint64_t>();
  }
  absl::StatusOr<bool> Bool(std::string_view name) const {
    ASSIGN_OR_RETURN(const Json* v, Find(name));
    if (!v->is_boolean()) return WrongType(name, *v, "true or false");
    return v->get<bool>();
  }
  absl::StatusOr<double> Seconds(std::string_view name) const {
    ASSIGN_OR_RETURN(const Json* v, Find(name));
    if (!v->is_number()) return WrongType(name, *v, "a number of seconds");
    const double s = v->get<double>();
    if (!std::isfinite(s) || s < 0) return WrongType(name, *v, "a non-negative number of seconds");
    return s;
  }

 private:
  absl::Status WrongType(std::string_view name, const Json& value, std::string_view want) const {
    const std::string is = value.is_number() ? absl::StrCat("the number ", value.dump())
                                             : std::string(value.type_name());
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": \"", std::string(name), "\" is ", is, ", not ", std::string(want)));
  }

  const Json& object_;
  std::string what_;
};

absl::Status ParseReceived(const Members& m, ReceiveVerdict& v) {
  ASSIGN_OR_RETURN(v.block, m.String("block"));
  ASSIGN_OR_RETURN(v.seq, m.Count("seq"));
  ASSIGN_OR_RETURN(v.hash, m.String("hash"));
  ASSIGN_OR_RETURN(v.events_verified, m.Count("events_verified"));
  ASSIGN_OR_RETURN(v.prefix_bytes_shared, m.Count("prefix_bytes_shared"));
  ASSIGN_OR_RETURN(v.prefix_bytes_compared, m.Count("prefix_bytes_compared"));
  ASSIGN_OR_RETURN(v.bytes_verified_in_stream, m.Count("bytes_verified_in_stream"));
  ASSIGN_OR_RETURN(v.already_held, m.Bool("already_held"));
  const Json* seconds = nullptr;
  ASSIGN_OR_RETURN(seconds, m.Find("seconds"));
  if (!seconds->is_object())
    return absl::InvalidArgumentError(
        absl::StrCat("the verdict: \"seconds\" is ", seconds->type_name(), ", not an object"));
  Members s(*seconds, "the verdict's \"seconds\"");
  ASSIGN_OR_RETURN(v.seconds.stream, s.Seconds("stream"));
  ASSIGN_OR_RETURN(v.seconds.verify, s.Seconds("verify"));
  ASSIGN_OR_RETURN(v.seconds.promote, s.Seconds("promote"));
  ASSIGN_OR_RETURN(v.seconds.process, s.Seconds("process"));
  return absl::OkStatus();
}

absl::Status ParseFailure(const Json& object, const Members& m, ReceiveVerdict& v) {
  ASSIGN_OR_RETURN(v.block, m.OptionalString("block"));
  ASSIGN_OR_RETURN(v.error, m.String("error"));
  const bool has_refusal = object.contains("refusal");
  if (v.verdict != ReceiveExit::kRefused) {
    if (has_refusal)
      return absl::InvalidArgumentError(absl::StrCat("the verdict is \"",
                                                     std::string(ReceiveExitName(v.verdict)),
                                                     "\" but carries a refusal"));
    return absl::OkStatus();
  }
  std::string name;
  ASSIGN_OR_RETURN(name, m.String("refusal"));
  ASSIGN_OR_RETURN(v.refusal, ParseReceiveRefusal(name));
  return absl::OkStatus();
}

}  // namespace

std::string_view ReceiveExitName(ReceiveExit exit) {
  for (const auto& [value, name] : kVerdictNames)
    if (value == exit) return name;
  return "unknown";
}

std::optional<ReceiveExit> ReceiveExitFromStatus(int exit_status) {
  for (const auto& [value, name] : kVerdictNames)
    if (static_cast<int>(value) == exit_status) return value;
  return std::nullopt;
}

std::string_view ReceiveRefusalName(ReceiveRefusal refusal) {
  for (const auto& [value, name] : kRefusalNames)
    if (value == refusal) return name;
  return "unknown";
}

absl::StatusOr<ReceiveRefusal> ParseReceiveRefusal(std::string_view name) {
  for (const auto& [value, known] : kRefusalNames)
    if (known == name) return value;
  return absl::InvalidArgumentError(
      absl::StrCat("\"", Cut(name, 64), "\" is not a refusal this primary knows"));
}

absl::Status WithRefusal(absl::Status status, ReceiveRefusal refusal) {
  status.SetPayload(std::string(kRefusalPayload),
                    absl::Cord(std::string(ReceiveRefusalName(refusal))));
  return status;
}

std::optional<ReceiveRefusal> RefusalOf(const absl::Status& status) {
  auto payload = status.GetPayload(std::string(kRefusalPayload));
  if (!payload) return std::nullopt;
  absl::StatusOr<ReceiveRefusal> refusal = ParseReceiveRefusal(std::string(*payload));
  if (!refusal.ok()) return std::nullopt;
  return *refusal;
}

ReceiveVerdict FailedVerdict(ReceiveExit verdict, std::string block, std::string error,
                             std::optional<ReceiveRefusal> refusal) {
  ReceiveVerdict v;
  v.verdict = verdict;
  v.refusal = refusal;
  v.block = std::move(block);
  v.error = std::move(error);
  return v;
}

std::string WriteReceiveVerdict(const ReceiveVerdict& v) {
  // Members in the order the protocol lists them.
  nlohmann::ordered_json line;
  line["verdict"] = std::string(ReceiveExitName(v.verdict));
  if (v.received()) {
    line["block"] = Cut(v.block, kMaxVerdictBlock);
    line["seq"] = v.seq;
    line["hash"] = Cut(v.hash, kMaxVerdictBlock);
    line["events_verified"] = v.events_verified;
    line["prefix_bytes_shared"] = v.prefix_bytes_shared;
    line["prefix_bytes_compared"] = v.prefix_bytes_compared;
    line["bytes_verified_in_stream"] = v.bytes_verified_in_stream;
    line["already_held"] = v.already_held;
    line["seconds"] = {{"stream", WrittenSeconds(v.seconds.stream)},
                       {"verify", WrittenSeconds(v.seconds.verify)},
                       {"promote", WrittenSeconds(v.seconds.promote)},
                       {"process", WrittenSeconds(v.seconds.process)}};
  } else {
    if (v.verdict == ReceiveExit::kRefused)
      line["refusal"] =
          std::string(ReceiveRefusalName(v.refusal.value_or(ReceiveRefusal::kBadRequest)));
    if (!v.block.empty()) line["block"] = Cut(v.block, kMaxVerdictBlock);
    line["error"] = Cut(v.error, kMaxVerdictError);
  }
  return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string ForeignText(std::string_view text, size_t max) {
  std::string cut = Cut(text, max);
  std::string out;
  out.reserve(cut.size());
  for (size_t i = 0; i < cut.size();) {
    const size_t n = Utf8CharLength(std::string_view(cut).substr(i));
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(cut, i, n);
      i += n;
    }
  }
  return out;
}

absl::StatusOr<ReceiveVerdict> ParseReceiveVerdict(std::string_view line) {
  if (line.size() >= kMaxVerdictLine)
    return absl::InvalidArgumentError(absl::StrCat("the verdict line is ", line.size(),
                                                   " bytes long, more than the ",
                                                   kMaxVerdictLine - 1, " a verdict may be"));
  const Json json = Json::parse(line.begin(), line.end(), /*cb=*/nullptr,
                                /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(
        "the verdict line is not JSON (malformed or cut short): ", ForeignText(line, 200)));
  if (!json.is_object())
    return absl::InvalidArgumentError(absl::StrCat("the verdict line is ", json.type_name(),
                                                   ", not an object: ", ForeignText(line, 200)));
  Members m(json, "the verdict");
  absl::StatusOr<std::string> name = m.String("verdict");
  if (!name.ok()) return name.status();
  ReceiveVerdict v;
  bool known = false;
  for (const auto& [value, verdict_name] : kVerdictNames) {
    if (verdict_name == *name) {
      v.verdict = value;
      known = true;
    }
  }
  if (!known)
    return absl::InvalidArgumentError(
        absl::StrCat("\"", Cut(*name, 64), "\" is not a verdict this primary knows"));
  if (v.received() && json.contains("refusal"))
    return absl::InvalidArgumentError("a \"received\" verdict carries a refusal");
  absl::Status parsed = v.received() ? ParseReceived(m, v) : ParseFailure(json, m, v);
  if (!parsed.ok()) return parsed;
  return v;
}

}  // namespace snapledger
