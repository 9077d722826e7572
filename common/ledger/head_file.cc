#include "common/ledger/head_file.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"

namespace snapledger {

std::string SerializeHead(const HeadRecord& h) {
  return absl::StrCat("{\"seq\":", h.head.seq, ",\"hash\":\"", h.head.hash,
                      "\",\"epoch\":", h.epoch, ",\"ts\":", h.head.ts,
                      ",\"log_bytes\":", h.log_bytes, "}\n");
}

absl::StatusOr<HeadRecord> ParseHead(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::DataLossError("head file is not a JSON object");
  HeadRecord h;
  auto field = [&](const char* name) -> const nlohmann::json* {
    auto it = j.find(name);
    return it == j.end() ? nullptr : &*it;
  };
  const auto* seq = field("seq");
  const auto* hash = field("hash");
  const auto* epoch = field("epoch");
  if (seq == nullptr || !seq->is_number_unsigned())
    return absl::DataLossError("head file: \"seq\" missing or not a non-negative integer");
  if (hash == nullptr || !hash->is_string() || !IsLowerHex64(hash->get<std::string>()))
    return absl::DataLossError("head file: \"hash\" missing or not 64 lowercase hex digits");
  if (epoch == nullptr || !epoch->is_number_unsigned())
    return absl::DataLossError("head file: \"epoch\" missing or not a non-negative integer");
  h.head.seq = seq->get<uint64_t>();
  h.head.hash = hash->get<std::string>();
  h.epoch = epoch->get<uint64_t>();
  if (const auto* ts = field("ts"); ts != nullptr && ts->is_number_integer())
    h.head.ts = ts->get<int64_t>();
  if (const auto* b = field("log_bytes"); b != nullptr && b->is_number_unsigned())
    h.log_bytes = b->get<uint64_t>();
  return h;
}

absl::StatusOr<std::optional<HeadRecord>> ReadHeadFile(const std::string& dir) {
  std::string path = absl::StrCat(dir, "/", kHeadFile);
  auto text = ReadFileToString(path);
  if (absl::IsNotFound(text.status())) return std::optional<HeadRecord>();
  if (!text.ok()) return text.status();
  auto h = ParseHead(*text);
  if (!h.ok()) return absl::DataLossError(absl::StrCat(path, ": ", h.status().message()));
  return std::optional<HeadRecord>(*h);
}

absl::Status WriteHeadFile(const std::string& dir, const HeadRecord& h) {
  return WriteFileAtomic(absl::StrCat(dir, "/", kHeadFile), SerializeHead(h));
}

}  // namespace snapledger
