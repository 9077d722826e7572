// Keeps docs/METRICS.md true: every metric it lists for a daemon is on that daemon's /metrics
// from the first scrape, with the documented type, and nothing undocumented is exported.
#include "common/ops/metrics.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/posix_file.h"
#include "common/testing/metrics_scrape.h"

#ifndef SNAPLEDGER_SOURCE_DIR
#error "SNAPLEDGER_SOURCE_DIR must be defined"
#endif

namespace snapledger {
namespace {

using ::testing::HasSubstr;

// name -> type ("counter", "gauge", "histogram") for one daemon's table in docs/METRICS.md.
using MetricTable = std::map<std::string, std::string>;

MetricTable DocumentedMetrics(const std::string& section_heading) {
  auto doc = ReadFileToString(std::string(SNAPLEDGER_SOURCE_DIR) + "/docs/METRICS.md");
  EXPECT_TRUE(doc.ok()) << doc.status();
  if (!doc.ok()) return {};
  size_t begin = doc->find("\n" + section_heading);
  EXPECT_NE(begin, std::string::npos) << section_heading;
  size_t end = doc->find("\n## ", begin + 1);
  std::string section = doc->substr(begin, end == std::string::npos ? end : end - begin);
  MetricTable table;
  for (absl::string_view line : absl::StrSplit(section, '\n')) {
    if (!absl::StartsWith(line, "| `")) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    // cells[0] is empty (before the first '|'); then name, type, ...
    EXPECT_GE(cells.size(), 6u) << line;
    if (cells.size() < 6) continue;
    std::string name(absl::StripAsciiWhitespace(cells[1]));
    name = name.substr(1, name.size() - 2);  // the backticks
    table[name] = std::string(absl::StripAsciiWhitespace(cells[2]));
  }
  EXPECT_FALSE(table.empty()) << section_heading;
  return table;
}

// name -> type of every "# TYPE" line of a scrape.
MetricTable ExportedMetrics(const std::string& scrape) {
  MetricTable exported;
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (!absl::ConsumePrefix(&line, "# TYPE ")) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() == 2) exported[parts[0]] = parts[1];
  }
  return exported;
}

bool CanConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Every documented metric is exported with its documented type, and every exported
// snapledger_* metric is documented.
void ExpectScrapeMatchesDoc(const std::string& scrape, const MetricTable& documented) {
  MetricTable exported = ExportedMetrics(scrape);
  for (const auto& [name, type] : documented) {
    auto it = exported.find(name);
    if (it == exported.end()) {
      ADD_FAILURE() << name << " is in docs/METRICS.md but not on /metrics";
      continue;
    }
    EXPECT_EQ(it->second, type) << name;
  }
  for (const auto& [name, type] : exported) {
    if (absl::StartsWith(name, "snapledger_")) {
      EXPECT_TRUE(documented.contains(name)) << name << " is exported but not in docs/METRICS.md";
    }
  }
}

class MetricsTest : public ::testing::Test {
 protected:
  int StartServer() {
    auto server = MetricsServer::Start("127.0.0.1:0", registry_);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return 0;
    server_ = *std::move(server);
    EXPECT_GT(server_->port(), 0);
    return server_->port();
  }

  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  MetricsServerPtr server_;
};

TEST_F(MetricsTest, PrimaryExportsEveryDocumentedMetricBeforeAnythingHappens) {
  PrimaryMetrics metrics(*registry_);
  metrics.ForReplica("replica-a");  // what the daemon does for each configured replica
  int port = StartServer();
  ASSERT_GT(port, 0);
  std::string scrape = testing::ScrapeMetrics(port);
  ExpectScrapeMatchesDoc(scrape, DocumentedMetrics("## Primary"));
  for (std::string_view reason : kReplicationFailureReasons)
    EXPECT_THAT(scrape,
                HasSubstr(absl::StrCat("snapledger_replication_failures_total{reason=\"",
                                       std::string(reason), "\",replica=\"replica-a\"} 0\n")));
  EXPECT_THAT(scrape,
              HasSubstr("snapledger_replica_state{replica=\"replica-a\",state=\"unknown\"} 1\n"));
  EXPECT_THAT(scrape,
              HasSubstr("snapledger_replica_state{replica=\"replica-a\",state=\"in_sync\"} 0\n"));
  EXPECT_THAT(scrape, HasSubstr(absl::StrCat("snapledger_build_info{version=\"",
                                             std::string(kSnapledgerVersion), "\"} 1\n")));
}

TEST_F(MetricsTest, ReplicaExportsEveryDocumentedMetricBeforeAnythingHappens) {
  ReplicaMetrics metrics(*registry_);
  int port = StartServer();
  ASSERT_GT(port, 0);
  std::string scrape = testing::ScrapeMetrics(port);
  ExpectScrapeMatchesDoc(scrape, DocumentedMetrics("## Replica"));
  for (std::string_view reason : kReceiveFailureReasons)
    EXPECT_THAT(scrape, HasSubstr(absl::StrCat("snapledger_receive_failures_total{reason=\"",
                                               std::string(reason), "\"} 0\n")));
  EXPECT_THAT(scrape, HasSubstr("snapledger_progress_reports_total{result=\"ok\"} 0\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_progress_reports_total{result=\"error\"} 0\n"));
}

TEST_F(MetricsTest, PrimaryCountersAndGaugesMoveOnTheScrape) {
  PrimaryMetrics metrics(*registry_);
  int port = StartServer();
  ASSERT_GT(port, 0);
  metrics.events_appended().Increment(3);
  metrics.append_latency().Observe(0.0002);
  metrics.head_seq().Set(42);
  PrimaryMetrics::Replica& r = metrics.ForReplica("r1");
  r.wire_bytes_sent.Increment(1000);
  r.lag_events.Set(7);
  metrics.CountFailure("r1", "network");
  metrics.CountFailure("r1", "network");
  metrics.SetReplicaState("r1", "catching_up");
  std::string scrape = testing::ScrapeMetrics(port);
  EXPECT_THAT(scrape, HasSubstr("snapledger_events_appended_total 3\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_append_latency_seconds_count 1\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_append_latency_seconds_bucket{le=\"0.00025\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_append_latency_seconds_bucket{le=\"0.0001\"} 0\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_head_seq 42\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_replication_sent_bytes_total{replica=\"r1\"} 1000\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_replica_lag_events{replica=\"r1\"} 7\n"));
  EXPECT_THAT(
      scrape,
      HasSubstr("snapledger_replication_failures_total{reason=\"network\",replica=\"r1\"} 2\n"));
  EXPECT_THAT(
      scrape,
      HasSubstr("snapledger_replication_failures_total{reason=\"trust\",replica=\"r1\"} 0\n"));
  EXPECT_THAT(scrape,
              HasSubstr("snapledger_replica_state{replica=\"r1\",state=\"catching_up\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_replica_state{replica=\"r1\",state=\"unknown\"} 0\n"));
}

TEST_F(MetricsTest, ReplicaCountersMoveOnTheScrape) {
  ReplicaMetrics metrics(*registry_);
  int port = StartServer();
  ASSERT_GT(port, 0);
  metrics.blocks_received().Increment();
  metrics.received_bytes().Increment(4096);
  metrics.CountReceiveFailure("stream");
  metrics.progress_reports("ok").Increment(2);
  metrics.head_timestamp().Set(1700000000.5);
  std::string scrape = testing::ScrapeMetrics(port);
  EXPECT_THAT(scrape, HasSubstr("snapledger_received_blocks_total 1\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_received_log_bytes_total 4096\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_receive_failures_total{reason=\"stream\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_receive_failures_total{reason=\"local\"} 0\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_progress_reports_total{result=\"ok\"} 2\n"));
  EXPECT_THAT(scrape, HasSubstr("snapledger_head_timestamp_seconds 1700000000.5\n"));
}

TEST(PrimaryMetrics, ExactlyOneStateIsSet) {
  prometheus::Registry registry;
  PrimaryMetrics metrics(registry);
  metrics.SetReplicaState("r1", "failing");
  metrics.SetReplicaState("r1", "in_sync");
  metrics.SetReplicaState("r2", "stalled");
  std::map<std::string, double> r1, r2;
  for (const auto& family : registry.Collect()) {
    if (family.name != "snapledger_replica_state") continue;
    for (const auto& m : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : m.label) labels[l.name] = l.value;
      (labels["replica"] == "r1" ? r1 : r2)[labels["state"]] = m.gauge.value;
    }
  }
  EXPECT_EQ(r1.size(), kReplicaStateLabels.size());
  for (const auto& [state, value] : r1) EXPECT_EQ(value, state == "in_sync" ? 1 : 0) << state;
  for (const auto& [state, value] : r2) EXPECT_EQ(value, state == "stalled" ? 1 : 0) << state;
}

TEST(PrimaryMetrics, ForReplicaReturnsTheSameSeriesEachTime) {
  prometheus::Registry registry;
  PrimaryMetrics metrics(registry);
  PrimaryMetrics::Replica& a = metrics.ForReplica("r1");
  a.transfers.Increment();
  EXPECT_EQ(&metrics.ForReplica("r1"), &a);
  EXPECT_EQ(metrics.ForReplica("r1").transfers.Value(), 1);
  EXPECT_NE(&metrics.ForReplica("r2").transfers, &a.transfers);
}

TEST(Metrics, BothDaemonsCanShareOneRegistry) {
  prometheus::Registry registry;
  PrimaryMetrics primary(registry);
  ReplicaMetrics replica(registry);
  primary.head_seq().Set(5);
  EXPECT_EQ(replica.head_seq().Value(), 5);  // the same series: one node, one head
}

TEST(MetricsServer, StopsServingWhenDestroyed) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  int port = (*server)->port();
  EXPECT_TRUE(CanConnect(port));
  server->reset();
  EXPECT_FALSE(CanConnect(port));
}

TEST(MetricsServer, BadAddressIsInvalidArgument) {
  auto registry = std::make_shared<prometheus::Registry>();
  for (const char* bad : {"9100", ":9100", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:http",
                          "example.com:9100", "[::1:9100", "[not-v6]:9100"}) {
    auto server = MetricsServer::Start(bad, registry);
    EXPECT_TRUE(absl::IsInvalidArgument(server.status())) << bad << ": " << server.status();
  }
}

TEST(MetricsServer, PortInUseIsUnavailable) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsServer::Start(absl::StrCat("127.0.0.1:", (*first)->port()), registry);
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(absl::StrCat((*first)->port())));
}

TEST(Metrics, VersionLabelMatchesTheProjectVersion) {
  auto cmake = ReadFileToString(std::string(SNAPLEDGER_SOURCE_DIR) + "/CMakeLists.txt");
  ASSERT_TRUE(cmake.ok()) << cmake.status();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(*cmake, m, std::regex(R"(project\(snapledger VERSION ([0-9.]+))")));
  EXPECT_EQ(m[1].str(), kSnapledgerVersion);
}

}  // namespace
}  // namespace snapledger
