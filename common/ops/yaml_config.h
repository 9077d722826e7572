// Reading the daemons' YAML configuration files (yaml-cpp) with errors an operator can act
// on: every error names the file, the key path ("replicas[1].port") and what was wrong, and a
// key the reader does not know is an error, so a typo never silently falls back to a default.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace snapledger {

// Parses a YAML file; InvalidArgument with the line and column of a syntax error, NotFound if
// the file does not exist. The top level must be a mapping.
absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path);

// One mapping of a configuration. Each getter leaves `*out` unchanged when the key is absent
// (so callers set defaults first) and records the key as known. Not thread-safe.
class YamlSection {
 public:
  // The top-level mapping of the file `where`; errors read "primary.yaml:
  // shipping.watchdog_seconds:
  // ...", and where() of a nested section is e.g. "primary.yaml: replicas[1]".
  YamlSection(YAML::Node node, std::string where);

  absl::Status Get(const std::string& key, std::string* out);
  absl::Status Get(const std::string& key, bool* out);
  absl::Status Get(const std::string& key, uint64_t* out);
  absl::Status Get(const std::string& key, int* out);  // 0..INT32_MAX
  // Any int, negative ones too.
  absl::Status GetSigned(const std::string& key, int* out);
  // Whether the key is present (whatever its value). Does not mark it known.
  bool Has(const std::string& key) const;
  // A duration given as a number of milliseconds (GetMillis) or seconds (GetSeconds).
  absl::Status GetMillis(const std::string& key, absl::Duration* out);
  absl::Status GetSeconds(const std::string& key, absl::Duration* out);
  // A nested mapping (an empty one when absent). InvalidArgument if it is not a mapping.
  absl::StatusOr<YamlSection> Section(const std::string& key);
  // A sequence of mappings (empty when absent).
  absl::StatusOr<std::vector<YamlSection>> SectionList(const std::string& key);

  // InvalidArgument naming the first key of this mapping no getter asked for.
  absl::Status CheckNoUnknownKeys() const;

  const std::string& where() const { return where_; }

 private:
  YamlSection(YAML::Node node, std::string where, bool nested);
  // How `key` of this mapping is named in errors.
  std::string KeyPath(const std::string& key) const;
  absl::Status Error(const std::string& key, const std::string& what) const;
  // The getters of integers: an absent key leaves *out alone; a value absl::SimpleAtoi cannot
  // read as a T is "<key path>: must be <expected>, not '<value>'".
  template <typename T>
  absl::Status GetInteger(const std::string& key, T* out, absl::string_view expected);
  YAML::Node node_;
  std::string where_;
  bool nested_ = false;  // where_ names a mapping inside the file, not the file itself
  std::set<std::string> known_;
};

}  // namespace snapledger
