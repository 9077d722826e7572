#include "cli/status_table.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_split.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr int64_t kNow = 1'800'000'000'000'000;  // microseconds since the epoch

v1::ClusterStatusResponse TwoReplicas() {
  v1::ClusterStatusResponse s;
  v1::Head* h = s.mutable_primary_head();
  h->set_seq(1234);
  h->set_hash(std::string(64, 'a'));
  h->set_epoch(2);
  h->set_ts_micros(kNow - 60'000'000);
  h->set_log_bytes(99'000);
  s.set_newest_block("block-000000001200-aaaaaaaaaaaa");

  v1::ReplicaStatus* a = s.add_replicas();
  a->set_replica_id("replica-a");
  a->set_state(v1::REPLICA_STATE_IN_SYNC);
  a->mutable_head()->set_seq(1234);
  a->set_last_success_unix_micros(kNow - 3'000'000);

  v1::ReplicaStatus* b = s.add_replicas();
  b->set_replica_id("b");
  b->set_state(v1::REPLICA_STATE_FAILING);
  b->mutable_head()->set_seq(1000);
  b->set_lag_events(234);
  b->set_lag_blocks(2);
  b->set_lag_bytes(12'345);
  b->set_lag_seconds(312.34);
  b->set_last_success_unix_micros(kNow - 305'000'000);
  b->set_last_error(
      "ssh: connect to 10.0.0.7:22: connection refused\nretrying with backoff in "
      "30 s, attempt 7 of many, and more words that do not fit");
  return s;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The line that starts with `prefix`, or "" with a test failure.
std::string LineStartingWith(const std::string& text, const std::string& prefix) {
  for (const auto& line : Lines(text))
    if (line.rfind(prefix, 0) == 0) return line;
  ADD_FAILURE() << "no line starts with '" << prefix << "' in:\n" << text;
  return "";
}

TEST(StatusTable, ShowsThePrimaryHeadAndNewestBlock) {
  std::string text = RenderClusterStatus(TwoReplicas(), kNow);
  EXPECT_THAT(LineStartingWith(text, "primary"),
              HasSubstr("seq 1234  hash aaaaaaaaaaaa  epoch 2  at 2027-01-15T07:59:00Z"));
  EXPECT_THAT(LineStartingWith(text, "primary"), Not(HasSubstr(std::string(13, 'a'))));
  EXPECT_THAT(LineStartingWith(text, "newest block"), HasSubstr("block-000000001200-aaaaaaaaaaaa"));
}

TEST(StatusTable, EachReplicaHasARowWithStateLagAndLastSuccess) {
  std::string text = RenderClusterStatus(TwoReplicas(), kNow);
  std::string a = LineStartingWith(text, "replica-a ");
  EXPECT_THAT(a, HasSubstr("in_sync"));
  EXPECT_THAT(a, HasSubstr("3s ago"));
  std::vector<std::string> a_cells = absl::StrSplit(a, ' ', absl::SkipEmpty());
  EXPECT_EQ(a_cells, (std::vector<std::string>{"replica-a", "in_sync", "1234", "0", "0", "0.0",
                                               "3s", "ago", "-"}));

  std::string b = LineStartingWith(text, "b ");
  std::vector<std::string> b_cells = absl::StrSplit(b, ' ', absl::SkipEmpty());
  ASSERT_GE(b_cells.size(), 8u) << b;
  EXPECT_EQ(
      std::vector<std::string>(b_cells.begin(), b_cells.begin() + 8),
      (std::vector<std::string>{"b", "failing", "1000", "234", "2", "312.3", "5m05s", "ago"}));
}

TEST(StatusTable, ColumnsAreAligned) {
  std::string text = RenderClusterStatus(TwoReplicas(), kNow);
  std::string header = LineStartingWith(text, "REPLICA");
  std::string a = LineStartingWith(text, "replica-a ");
  std::string b = LineStartingWith(text, "b ");
  // Left-aligned columns start where their header starts...
  for (const char* column : {"STATE", "LAST SUCCESS", "LAST ERROR"}) {
    size_t at = header.find(column);
    ASSERT_NE(at, std::string::npos) << column;
    EXPECT_NE(a[at], ' ') << column << "\n" << header << "\n" << a;
    EXPECT_EQ(a[at - 1], ' ') << column;
    EXPECT_NE(b[at], ' ') << column << "\n" << header << "\n" << b;
    EXPECT_EQ(b[at - 1], ' ') << column;
  }
  // ...and right-aligned (numeric) ones end where their header ends.
  for (const char* column : {"HEAD SEQ", "LAG EVENTS", "LAG BLOCKS", "LAG SECONDS"}) {
    size_t end = header.find(column) + std::string(column).size() - 1;
    EXPECT_NE(a[end], ' ') << column;
    EXPECT_EQ(a[end + 1], ' ') << column;
    EXPECT_NE(b[end], ' ') << column;
    EXPECT_EQ(b[end + 1], ' ') << column;
  }
  for (const auto& line : Lines(text)) EXPECT_NE(line.back(), ' ') << "trailing blank: " << line;
}

TEST(StatusTable, LongErrorsAreCutToOneLine) {
  std::string text = RenderClusterStatus(TwoReplicas(), kNow);
  std::string b = LineStartingWith(text, "b ");
  EXPECT_THAT(b, HasSubstr("ssh: connect to 10.0.0.7:22: connection refused retrying"));
  EXPECT_THAT(b, Not(HasSubstr("do not fit")));
  EXPECT_THAT(b, testing::EndsWith("..."));
  EXPECT_EQ(Lines(text).size(), 5u) << text;  // primary, newest block, header, two rows
}

TEST(StatusTable, NoReplicasSaysSo) {
  v1::ClusterStatusResponse s = TwoReplicas();
  s.clear_replicas();
  s.clear_newest_block();
  std::string text = RenderClusterStatus(s, kNow);
  EXPECT_THAT(text, HasSubstr("newest block  none\n"));
  EXPECT_THAT(text, HasSubstr("no replicas configured\n"));
  EXPECT_THAT(text, Not(HasSubstr("REPLICA")));
}

TEST(StatusTable, AgesReadAsDurations) {
  EXPECT_EQ(FormatAge(0, kNow), "never");
  EXPECT_EQ(FormatAge(kNow, kNow), "0s ago");
  EXPECT_EQ(FormatAge(kNow - 59'999'999, kNow), "59s ago");
  EXPECT_EQ(FormatAge(kNow - 60'000'000, kNow), "1m00s ago");
  EXPECT_EQ(FormatAge(kNow - 7'800'000'000, kNow), "2h10m ago");
  EXPECT_EQ(FormatAge(kNow - 273'600'000'000, kNow), "3d04h ago");
  EXPECT_EQ(FormatAge(kNow + 3'000'000, kNow), "in 3s");
}

TEST(StatusTable, OneLineNeverSplitsAUtf8Character) {
  EXPECT_EQ(OneLine("", 10), "-");
  EXPECT_EQ(OneLine("a\tb\nc", 10), "a b c");
  EXPECT_EQ(OneLine("0123456789", 10), "0123456789");
  EXPECT_EQ(OneLine("0123456789a", 10), "0123456...");
  // "ü" is two bytes; a cut after 6 bytes would split the one at bytes 5-6.
  EXPECT_EQ(OneLine("abcde\xc3\xbc"
                    "fghij",
                    9),
            "abcde...");
}

TEST(StatusTable, JsonCarriesEveryFieldWithStateNames) {
  auto doc = nlohmann::json::parse(ClusterStatusToJson(TwoReplicas(), kNow));
  EXPECT_EQ(doc["primary"]["head"]["seq"], 1234);
  EXPECT_EQ(doc["primary"]["head"]["hash"], std::string(64, 'a'));
  EXPECT_EQ(doc["primary"]["newest_block"], "block-000000001200-aaaaaaaaaaaa");
  ASSERT_EQ(doc["replicas"].size(), 2u);
  const auto& b = doc["replicas"][1];
  EXPECT_EQ(b["replica_id"], "b");
  EXPECT_EQ(b["state"], "failing");
  EXPECT_EQ(b["head"]["seq"], 1000);
  EXPECT_EQ(b["lag_events"], 234);
  EXPECT_EQ(b["lag_blocks"], 2);
  EXPECT_EQ(b["lag_bytes"], 12345);
  EXPECT_EQ(b["lag_seconds"], 312.34);
  EXPECT_EQ(b["last_success_age_seconds"], 305.0);
  EXPECT_THAT(b["last_error"].get<std::string>(), StartsWith("ssh: connect to"));
  EXPECT_THAT(b["last_error"].get<std::string>(), HasSubstr("do not fit"));  // not cut
}

TEST(StatusTable, JsonNeverSucceededIsNull) {
  v1::ClusterStatusResponse s = TwoReplicas();
  s.mutable_replicas(0)->set_last_success_unix_micros(0);
  s.mutable_replicas(0)->set_last_error("bad \xff byte");
  auto doc = nlohmann::json::parse(ClusterStatusToJson(s, kNow));
  EXPECT_TRUE(doc["replicas"][0]["last_success_age_seconds"].is_null());
  EXPECT_EQ(doc["replicas"][0]["state"], "in_sync");
}

TEST(StatusTable, StateNamesMatchTheMetricsLabels) {
  EXPECT_EQ(ReplicaStateName(v1::REPLICA_STATE_UNKNOWN), "unknown");
  EXPECT_EQ(ReplicaStateName(v1::REPLICA_STATE_IN_SYNC), "in_sync");
  EXPECT_EQ(ReplicaStateName(v1::REPLICA_STATE_CATCHING_UP), "catching_up");
  EXPECT_EQ(ReplicaStateName(v1::REPLICA_STATE_STALLED), "stalled");
  EXPECT_EQ(ReplicaStateName(v1::REPLICA_STATE_FAILING), "failing");
  EXPECT_EQ(ReplicaStateName(static_cast<v1::ReplicaState>(99)), "unknown");
}

}  // namespace
}  // namespace snapledger
