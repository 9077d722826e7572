#include "cli/status_table.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace snapledger {
namespace {

constexpr size_t kHashPrefix = 12;
constexpr size_t kMaxErrorChars = 60;

std::string FormatTs(int64_t micros) {
  if (micros == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(micros), absl::UTCTimeZone());
}

std::string HashPrefix(const std::string& hash) {
  return hash.empty() ? "-" : hash.substr(0, kHashPrefix);
}

// Columns padded to their widest cell, two spaces apart; numbers right-aligned. The last column
// is not padded, so lines carry no trailing blanks.
class AlignedTable {
 public:
  enum Align { kLeft, kRight };
  explicit AlignedTable(std::vector<std::pair<std::string, Align>> columns)
      : columns_(std::move(columns)) {
    std::vector<std::string> header;
    for (const auto& c : columns_) header.push_back(c.first);
    rows_.push_back(std::move(header));
  }
  void AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }

  std::string Render() const {
    std::vector<size_t> width(columns_.size(), 0);
    for (const auto& row : rows_)
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    std::string out;
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        if (i > 0) line += "  ";
        bool last = i + 1 == row.size();
        if (columns_[i].second == kRight)
          absl::StrAppend(&line, std::string(width[i] - row[i].size(), ' '), row[i]);
        else
          absl::StrAppend(&line, row[i], last ? "" : std::string(width[i] - row[i].size(), ' '));
      }
      absl::StrAppend(&out, line, "\n");
    }
    return out;
  }

 private:
  std::vector<std::pair<std::string, Align>> columns_;
  std::vector<std::vector<std::string>> rows_;
};

std::string HeadSummary(const v1::Head& head) {
  return absl::StrCat("seq ", head.seq(), "  hash ", HashPrefix(head.hash()), "  epoch ",
                      head.epoch(), "  at ", FormatTs(head.ts_micros()));
}

nlohmann::json HeadJson(const v1::Head& head) {
  return {{"seq", head.seq()},
          {"hash", head.hash()},
          {"epoch", head.epoch()},
          {"ts_micros", head.ts_micros()},
          {"log_bytes", head.log_bytes()}};
}

}  // namespace

std::string_view ReplicaStateName(v1::ReplicaState state) {
  switch (state) {
    case v1::REPLICA_STATE_IN_SYNC:
      return "in_sync";
    case v1::REPLICA_STATE_CATCHING_UP:
      return "catching_up";
    case v1::REPLICA_STATE_STALLED:
      return "stalled";
    case v1::REPLICA_STATE_FAILING:
      return "failing";
    default:
      return "unknown";
  }
}

std::string FormatAge(int64_t then_unix_micros, int64_t now_unix_micros) {
  if (then_unix_micros == 0) return "never";
  int64_t delta = now_unix_micros - then_unix_micros;
  bool future = delta < 0;
  int64_t s = (future ? -delta : delta) / 1'000'000;
  std::string span;
  if (s < 60) {
    span = absl::StrCat(s, "s");
  } else if (s < 3600) {
    span = absl::StrFormat("%dm%02ds", s / 60, s % 60);
  } else if (s < 86400) {
    span = absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  } else {
    span = absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
  }
  return future ? absl::StrCat("in ", span) : absl::StrCat(span, " ago");
}

std::string OneLine(std::string_view text, size_t max_chars) {
  if (text.empty()) return "-";
  std::string line(text);
  std::replace_if(
      line.begin(), line.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; }, ' ');
  if (line.size() <= max_chars) return line;
  size_t cut = max_chars > 3 ? max_chars - 3 : 0;
  // Back off over UTF-8 continuation bytes so that no character is split.
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(line.substr(0, cut), "...");
}

std::string RenderClusterStatus(const v1::ClusterStatusResponse& status, int64_t now_unix_micros) {
  std::string out =
      absl::StrCat("primary       ", HeadSummary(status.primary_head()), "\n", "newest block  ",
                   status.newest_block().empty() ? "none" : status.newest_block(), "\n\n");
  if (status.replicas().empty()) return absl::StrCat(out, "no replicas configured\n");
  using A = AlignedTable;
  AlignedTable table({{"REPLICA", A::kLeft},
                      {"STATE", A::kLeft},
                      {"HEAD SEQ", A::kRight},
                      {"LAG EVENTS", A::kRight},
                      {"LAG BLOCKS", A::kRight},
                      {"LAG SECONDS", A::kRight},
                      {"LAST SUCCESS", A::kLeft},
                      {"LAST ERROR", A::kLeft}});
  for (const v1::ReplicaStatus& r : status.replicas()) {
    table.AddRow({r.replica_id(), std::string(ReplicaStateName(r.state())),
                  absl::StrCat(r.head().seq()), absl::StrCat(r.lag_events()),
                  absl::StrCat(r.lag_blocks()), absl::StrFormat("%.1f", r.lag_seconds()),
                  FormatAge(r.last_success_unix_micros(), now_unix_micros),
                  OneLine(r.last_error(), kMaxErrorChars)});
  }
  return absl::StrCat(out, table.Render());
}

std::string ClusterStatusToJson(const v1::ClusterStatusResponse& status, int64_t now_unix_micros) {
  nlohmann::json replicas = nlohmann::json::array();
  for (const v1::ReplicaStatus& r : status.replicas()) {
    nlohmann::json age = nullptr;
    if (r.last_success_unix_micros() != 0)
      age = static_cast<double>(now_unix_micros - r.last_success_unix_micros()) / 1e6;
    replicas.push_back({{"replica_id", r.replica_id()},
                        {"state", std::string(ReplicaStateName(r.state()))},
                        {"last_verified_block", r.last_verified_block()},
                        {"head", HeadJson(r.head())},
                        {"lag_events", r.lag_events()},
                        {"lag_blocks", r.lag_blocks()},
                        {"lag_bytes", r.lag_bytes()},
                        {"lag_seconds", r.lag_seconds()},
                        {"last_success_unix_micros", r.last_success_unix_micros()},
                        {"last_success_age_seconds", age},
                        {"last_error", r.last_error()}});
  }
  nlohmann::json doc = {
      {"primary",
       {{"head", HeadJson(status.primary_head())}, {"newest_block", status.newest_block()}}},
      {"replicas", std::move(replicas)}};
  // Invalid UTF-8 in an error message must not throw; replace it.
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace snapledger
