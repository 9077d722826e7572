#include "common/ops/yaml_config.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace snapledger {

absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return absl::NotFoundError(absl::StrCat("config file ", path, " does not exist"));
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    // yaml-cpp's marks are 0-based.
    return absl::InvalidArgumentError(
        absl::StrCat(path, " line ", e.mark.line + 1, " column ", e.mark.column + 1, ": ", e.msg));
  }
  if (!root.IsMap())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the top level must be a mapping of settings"));
  return root;
}

YamlSection::YamlSection(YAML::Node node, std::string where)
    : YamlSection(std::move(node), std::move(where), /*nested=*/false) {}

YamlSection::YamlSection(YAML::Node node, std::string where, bool nested)
    : node_(std::move(node)), where_(std::move(where)), nested_(nested) {}

std::string YamlSection::KeyPath(const std::string& key) const {
  // "primary.yaml: shipping.watchdog_seconds", not "primary.yaml.shipping.watchdog_seconds".
  return absl::StrCat(where_, nested_ ? "." : ": ", key);
}

absl::Status YamlSection::Error(const std::string& key, const std::string& what) const {
  return absl::InvalidArgumentError(absl::StrCat(KeyPath(key), ": ", what));
}

absl::Status YamlSection::Get(const std::string& key, std::string* out) {
  known_.insert(key);
  YAML::Node v = node_[key];
  if (!v) return absl::OkStatus();
  if (!v.IsScalar()) return Error(key, "must be a string");
  *out = v.Scalar();
  return absl::OkStatus();
}

absl::Status YamlSection::Get(const std::string& key, bool* out) {
  known_.insert(key);
  YAML::Node v = node_[key];
  if (!v) return absl::OkStatus();
  bool value = false;
  if (!v.IsScalar() || !YAML::convert<bool>::decode(v, value))
    return Error(
        key, absl::StrCat("must be true or false, not '", v.IsScalar() ? v.Scalar() : "?", "'"));
  *out = value;
  return absl::OkStatus();
}

template <typename T>
absl::Status YamlSection::GetInteger(const std::string& key, T* out, absl::string_view expected) {
  known_.insert(key);
  YAML::Node v = node_[key];
  if (!v) return absl::OkStatus();
  T value = 0;
  if (!v.IsScalar() || !absl::SimpleAtoi(v.Scalar(), &value))
    return Error(
        key, absl::StrCat("must be ", expected, ", not '", v.IsScalar() ? v.Scalar() : "?", "'"));
  *out = value;
  return absl::OkStatus();
}

absl::Status YamlSection::Get(const std::string& key, uint64_t* out) {
  return GetInteger(key, out, "a non-negative integer");
}

absl::Status YamlSection::Get(const std::string& key, int* out) {
  known_.insert(key);
  if (!node_[key]) return absl::OkStatus();  // *out unchanged, even when negative
  uint64_t value = 0;
  if (absl::Status s = Get(key, &value); !s.ok()) return s;
  if (value > static_cast<uint64_t>(INT32_MAX)) return Error(key, "is too large");
  *out = static_cast<int>(value);
  return absl::OkStatus();
}

bool YamlSection::Has(const std::string& key) const {
  const YAML::Node& node = node_;  // the const operator[] never adds the key
  return static_cast<bool>(node[key]);
}

absl::Status YamlSection::GetSigned(const std::string& key, int* out) {
  return GetInteger(key, out, absl::StrCat("an integer from ", INT32_MIN, " to ", INT32_MAX));
}

absl::Status YamlSection::GetMillis(const std::string& key, absl::Duration* out) {
  uint64_t ms = static_cast<uint64_t>(absl::ToInt64Milliseconds(*out));
  if (absl::Status s = Get(key, &ms); !s.ok()) return s;
  // absl::Milliseconds takes an int64_t: a larger value would wrap to a negative duration.
  if (ms > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 1'000'000))
    return Error(key, absl::StrCat("is too large (", ms, " ms)"));
  *out = absl::Milliseconds(static_cast<int64_t>(ms));
  return absl::OkStatus();
}

absl::Status YamlSection::GetSeconds(const std::string& key, absl::Duration* out) {
  known_.insert(key);
  YAML::Node v = node_[key];
  if (!v) return absl::OkStatus();
  double seconds = 0;
  // SimpleAtod also takes "nan" and "inf", which are no timeouts.
  if (!v.IsScalar() || !absl::SimpleAtod(v.Scalar(), &seconds) || !std::isfinite(seconds) ||
      seconds < 0)
    return Error(key, absl::StrCat("must be a non-negative number of seconds, not '",
                                   v.IsScalar() ? v.Scalar() : "?", "'"));
  *out = absl::Seconds(seconds);
  return absl::OkStatus();
}

absl::StatusOr<YamlSection> YamlSection::Section(const std::string& key) {
  known_.insert(key);
  YAML::Node v = node_[key];
  if (!v || v.IsNull()) return YamlSection(YAML::Node(YAML::NodeType::Map), KeyPath(key), true);
  if (!v.IsMap()) return Error(key, "must be a mapping");
  return YamlSection(v, KeyPath(key), true);
}

absl::StatusOr<std::vector<YamlSection>> YamlSection::SectionList(const std::string& key) {
  known_.insert(key);
  YAML::Node v = node_[key];
  std::vector<YamlSection> out;
  if (!v || v.IsNull()) return out;
  if (!v.IsSequence()) return Error(key, "must be a list");
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].IsMap()) return Error(absl::StrCat(key, "[", i, "]"), "must be a mapping");
    out.push_back(YamlSection(v[i], KeyPath(absl::StrCat(key, "[", i, "]")), true));
  }
  return out;
}

absl::Status YamlSection::CheckNoUnknownKeys() const {
  std::set<std::string> seen;
  for (const auto& kv : node_) {
    std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
    if (!known_.contains(key)) return Error(key, "unknown setting (a typo?)");
    // yaml-cpp keeps both entries of a repeated key and the getters see only the first.
    if (!seen.insert(key).second) return Error(key, "appears twice");
  }
  return absl::OkStatus();
}

}  // namespace snapledger
