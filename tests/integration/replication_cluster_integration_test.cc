// Replication end to end: a primary and two replicas, each a network namespace with its own
// loop-mounted btrfs, its own OpenSSH sshd and the real daemons (tests/integration/
// test_cluster.h). Nothing is a double: blocks are btrfs snapshots, streams are
// `btrfs send`, they travel over libssh channels to the replicas' sshd, whose forced command
// verifies and promotes them.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"
#include "common/ledger/block.h"
#include "common/ledger/sha256.h"
#include "replica/receive_journal.h"
#include "tests/integration/cluster_client.h"
#include "tests/integration/test_cluster.h"

namespace snapledger::testing {
namespace {

namespace fs = std::filesystem;

// Reads <root>/receive-journal.jsonl from its start.
std::vector<nlohmann::json> JournalLines(const std::string& root) {
  std::vector<nlohmann::json> out;
  std::ifstream in(ReceiveJournalPath(root));
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line, nullptr, false));
  return out;
}

class ReplicationClusterTest : public ::testing::Test {
 protected:
  // Brings a cluster up with `replicas` replicas and starts every daemon.
  void StartCluster(int replicas = 2,
                    std::function<void(const ClusterHost&, YAML::Node&)> edit = nullptr) {
    ClusterOptions options;
    options.replicas = replicas;
    options.image_mb = 512;
    options.edit_config = [edit](const ClusterHost& host, YAML::Node& config) {
      if (host.name == "primary") {
        config["shipping"]["watchdog_seconds"] = 3;
        config["shipping"]["verdict_timeout_seconds"] = 30;
        config["shipping"]["backoff_max_ms"] = 1000;
        config["ssh"]["connect_timeout_seconds"] = 3;
      }
      if (edit) edit(host, config);
    };
    ASSIGN_TEST_CLUSTER_OR_SKIP(cluster_, options);
    for (const ClusterHost& host : cluster_->hosts()) {
      absl::Status started = cluster_->StartDaemon(host.name);
      ASSERT_TRUE(started.ok()) << started;
    }
    primary_ = std::make_unique<PrimaryClient>(cluster_->primary().grpc_address);
  }

  v1::ClusterStatusResponse Status() {
    absl::StatusOr<v1::ClusterStatusResponse> s = primary_->Status();
    EXPECT_TRUE(s.ok()) << s.status();
    return s.value_or(v1::ClusterStatusResponse{});
  }

  // True once every named replica verified the primary's newest block and that block holds
  // the primary's head (nothing waits to be cut).
  bool InSync(const std::vector<std::string>& replicas) {
    absl::StatusOr<v1::ClusterStatusResponse> s = primary_->Status();
    if (!s.ok() || s->newest_block().empty()) return false;
    if (!absl::StrContains(s->newest_block(),
                           absl::StrFormat("block-%012d-", s->primary_head().seq())))
      return false;
    for (const std::string& id : replicas) {
      std::optional<v1::ReplicaStatus> r = ReplicaIn(*s, id);
      if (!r || r->last_verified_block() != s->newest_block() ||
          r->state() != v1::REPLICA_STATE_IN_SYNC)
        return false;
    }
    return true;
  }

  void ExpectInSync(const std::vector<std::string>& replicas, absl::Duration timeout) {
    bool ok = WaitFor([&] { return InSync(replicas); }, timeout);
    EXPECT_TRUE(ok) << "not in sync after " << timeout << ":\n" << Status().DebugString();
  }

  std::string BlockDir(const std::string& host, const std::string& block) {
    return absl::StrCat(cluster_->host(host).ledger_root, "/blocks/", block);
  }

  std::set<std::string> BlocksOf(const std::string& host) {
    std::set<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(cluster_->host(host).ledger_root + "/blocks", ec)) {
      std::string name = e.path().filename().string();
      if (!name.starts_with(".")) names.insert(std::move(name));  // not a transfer in progress
    }
    return names;
  }

  // The blocks being received on `host`: `btrfs receive` creates each as blocks/.incoming-<name>
  // until it is verified and renamed.
  std::vector<std::string> IncomingOf(const std::string& host) {
    std::vector<std::string> names;
    std::error_code ec;
    const std::string root = cluster_->host(host).ledger_root;
    for (const auto& e : fs::directory_iterator(root + "/blocks", ec)) {
      std::string name = e.path().filename().string();
      if (name.starts_with(kIncomingBlockPrefix))
        names.push_back(name.substr(kIncomingBlockPrefix.size()));
    }
    return names;
  }

  double PrimaryMetric(const std::string& name, const std::map<std::string, std::string>& labels) {
    absl::StatusOr<std::string> scrape = ScrapeMetrics(cluster_->primary().metrics_address);
    EXPECT_TRUE(scrape.ok()) << scrape.status();
    return MetricValue(scrape.value_or(""), name, labels).value_or(-1);
  }

  double ReplicaMetric(const std::string& host, const std::string& name,
                       const std::map<std::string, std::string>& labels = {}) {
    absl::StatusOr<std::string> scrape = ScrapeMetrics(cluster_->host(host).metrics_address);
    EXPECT_TRUE(scrape.ok()) << scrape.status();
    return MetricValue(scrape.value_or(""), name, labels).value_or(-1);
  }

  // The primary's stream bytes sent to `replica`, once it has counted every transfer the
  // replica journaled as received (the primary may hear of a block from the replica's report
  // before its shipper counts the transfer).
  double SettledStreamBytes(const std::string& replica) {
    const std::map<std::string, std::string> labels = {{"replica", replica}};
    double bytes = -1;
    bool settled = WaitFor(
        [&] {
          double received = 0;
          for (const auto& o : JournalLines(cluster_->host(replica).ledger_root))
            received += o.value("ok", false) ? 1 : 0;
          double shipped = PrimaryMetric("snapledger_replication_transfers_total", labels);
          bytes = PrimaryMetric("snapledger_replication_stream_bytes_total", labels);
          return shipped == received;
        },
        absl::Seconds(10));
    EXPECT_TRUE(settled) << "the primary's transfer count for " << replica
                         << " never matched the replica's journal";
    return bytes;
  }

  TestClusterPtr cluster_;
  std::unique_ptr<PrimaryClient> primary_;
};

std::string FileSha256(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFileToString(path);
  EXPECT_TRUE(content.ok()) << content.status();
  return ToHex(Sha256::Of(content.value_or("")));
}

// Runs a command in this (the root) namespace.
CommandOutput RunHere(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandOutput> out = RunCommand(*ProcessRunner::Real(), argv);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.value_or(CommandOutput{});
}

// 1. 200,000 events appended while blocks ship; both replicas end at the primary's head,
// verified, with byte-identical events.jsonl.
TEST_F(ReplicationClusterTest, TwoReplicasConvergeWhileEventsAreAppended) {
  StartCluster();
  uint64_t last = 0;
  for (int batch = 0; batch < 20; ++batch) {
    absl::StatusOr<uint64_t> seq = primary_->Append(10'000, absl::StrCat("b", batch));
    ASSERT_TRUE(seq.ok()) << seq.status();
    last = *seq;
  }
  EXPECT_EQ(last, 200'000u);
  ExpectInSync({"r1", "r2"}, absl::Seconds(120));
  v1::ClusterStatusResponse status = Status();
  const std::string newest = status.newest_block();
  std::string primary_sum = FileSha256(BlockDir("primary", newest) + "/events.jsonl");
  for (const std::string r : {"r1", "r2"}) {
    EXPECT_EQ(FileSha256(BlockDir(r, newest) + "/events.jsonl"), primary_sum) << r;
    EXPECT_EQ(ReplicaIn(status, r)->head().seq(), 200'000u);
    // An independent full verification of what the replica holds.
    absl::StatusOr<std::string> verify =
        cluster_->ExecOk(r, {cluster_->BinaryPath("snapledger"), "--root",
                             cluster_->host(r).ledger_root, "verify", "--block", newest});
    EXPECT_TRUE(verify.ok()) << verify.status();
    // Blocks were shipped as they were cut, so most transfers were deltas.
    std::vector<nlohmann::json> journal = JournalLines(cluster_->host(r).ledger_root);
    size_t deltas = 0;
    for (const auto& o : journal) deltas += o.contains("parent") && o.value("ok", false);
    EXPECT_GE(deltas, 1u) << r;
    EXPECT_TRUE(IncomingOf(r).empty()) << r;
    // All of it went through one receive session: a session ends only with a failed attempt
    // (or a reconnect, which is one), so the primary started at most one command more than it
    // counted failures.
    const std::map<std::string, std::string> labels = {{"replica", r}};
    double failures = 0;
    for (const char* reason :
         {"network", "trust", "refused", "verification", "conflict", "watchdog", "local"})
      failures += std::max(0.0, PrimaryMetric("snapledger_replication_failures_total",
                                              {{"replica", r}, {"reason", reason}}));
    const double transfers = PrimaryMetric("snapledger_replication_transfers_total", labels);
    const double commands = PrimaryMetric("snapledger_replication_receive_commands_total", labels);
    EXPECT_GE(transfers, 3) << r;
    EXPECT_GE(commands, 1) << r;
    EXPECT_LE(commands, 1 + failures)
        << r << ": " << commands << " receive commands for " << transfers << " transfers";
  }
}

// 2. A replica that is down while events keep coming catches up with incremental sends: the
// first transfer after it returns is a delta from a block it held before it left, and the
// bytes sent are about the bytes appended meanwhile — a third of what a full send would be.
TEST_F(ReplicationClusterTest, StoppedReplicaCatchesUpWithDeltas) {
  StartCluster();
  ASSERT_TRUE(primary_->Append(20'000).ok());
  ExpectInSync({"r1", "r2"}, absl::Seconds(60));
  const v1::ClusterStatusResponse status_before = Status();
  const std::string before = status_before.newest_block();
  const uint64_t log_bytes_before = status_before.primary_head().log_bytes();
  const std::string r2_root = cluster_->host("r2").ledger_root;
  // The primary may learn of the verified block (from r2's report) before the receive command
  // has journaled it.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& o : JournalLines(r2_root))
          if (o.value("ok", false) && o.value("block", "") == before) return true;
        return false;
      },
      absl::Seconds(10)))
      << "r2's journal never recorded " << before;
  const size_t journal_before = JournalLines(r2_root).size();
  const std::set<std::string> held_before = BlocksOf("r2");
  const double stream_before = SettledStreamBytes("r2");

  // The replica host goes away: its daemon stops (promptly, on SIGTERM) and its network is gone.
  absl::StatusOr<StopOutcome> stopped = cluster_->StopDaemon("r2");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, StopOutcome::kTerminated) << "the replica daemon ignored SIGTERM";
  ASSERT_TRUE(cluster_->LinkDown("r2").ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(primary_->Append(2'000, absl::StrCat("away", i)).ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  EXPECT_GT(ReplicaIn(Status(), "r2")->lag_events(), 0u);

  ASSERT_TRUE(cluster_->LinkUp("r2").ok());
  ASSERT_TRUE(cluster_->StartDaemon("r2").ok());
  ExpectInSync({"r1", "r2"}, absl::Seconds(90));

  // Every transfer since it came back was a delta; the first from a block it held before.
  std::vector<nlohmann::json> journal = JournalLines(r2_root);
  ASSERT_GT(journal.size(), journal_before);
  size_t deltas = 0;
  for (size_t i = journal_before; i < journal.size(); ++i) {
    if (!journal[i].value("ok", false) || journal[i].value("already_held", false)) continue;
    ASSERT_TRUE(journal[i].contains("parent")) << "a full send: " << journal[i].dump();
    if (deltas++ == 0) {
      EXPECT_TRUE(held_before.contains(journal[i].value("parent", "")))
          << "the first transfer back was not a delta from a block r2 held: " << journal[i].dump();
    }
  }
  EXPECT_GE(deltas, 1u);
  // `btrfs send` bytes as the primary counted them (the journal's log_bytes is the log's
  // growth, the same for a full send and a delta).
  const uint64_t log_bytes = Status().primary_head().log_bytes();
  const uint64_t appended_bytes = log_bytes - log_bytes_before;
  const double sent = SettledStreamBytes("r2") - stream_before;
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, 1.5 * static_cast<double>(appended_bytes))
      << "sent " << sent << " stream bytes for " << appended_bytes
      << " bytes appended (a full send is about " << log_bytes << ")";
  EXPECT_TRUE(BlocksOf("r2").contains(Status().newest_block()));
  EXPECT_NE(before, Status().newest_block());
}

// 3. The link cut mid-stream: the transfer in flight fails on both sides, the replica deletes
// what it had half received (before any retry could), the shipper retries, the replica
// converges.
TEST_F(ReplicationClusterTest, LinkCutMidStreamLeavesNothingHalfDoneAndConverges) {
  StartCluster(1, [](const ClusterHost& host, YAML::Node& config) {
    if (host.name != "primary") return;
    // Blocks of tens of thousands of events: cut every 5 s while the 80,000 arrive.
    config["blocks"]["every_events"] = 200'000;
    config["blocks"]["interval_ms"] = 5'000;
    config["blocks"]["on_demand_spacing_ms"] = 0;  // not small blocks because r1 is idle
    // The cut may land after the primary wrote its last byte (buffers between the two sides
    // hold megabytes): then the verdict timeout, not the stall watchdog, notices it.
    config["shipping"]["verdict_timeout_seconds"] = 10;
  });
  ASSERT_TRUE(primary_->Append(1'000).ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  // Slow the link to r1 to ~4 MB/s so a block of megabytes takes seconds to stream.
  const std::string veth = absl::StrCat("sl", cluster_->tag(), "v1");
  CommandOutput tc = RunHere({"tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", "32mbit",
                              "burst", "64kb", "latency", "2s"});
  if (!tc.exit.ok()) GTEST_SKIP() << "tc tbf is not available: " << tc.stderr_text;
  ASSERT_TRUE(primary_->Append(80'000, "big").ok());
  // Cut only while a block is being received with megabytes still to come (its log on the
  // primary is that much longer than what reached the replica's disk): more than the SSH
  // channel's window (2 MiB) and the buffers can hold, so the primary is still writing and the
  // cut lands mid-stream, not between two transfers or while the verdict is awaited.
  std::string cut_block;
  bool mid_stream = WaitFor(
      [&] {
        for (const std::string& name : IncomingOf("r1")) {
          std::error_code ec1, ec2;
          uintmax_t total = fs::file_size(BlockDir("primary", name) + "/events.jsonl", ec1);
          uintmax_t landed =
              fs::file_size(absl::StrCat(cluster_->host("r1").ledger_root, "/blocks/",
                                         std::string(kIncomingBlockPrefix), name, "/events.jsonl"),
                            ec2);
          if (ec2) landed = 0;  // not created yet
          if (!ec1 && total > landed + (6 << 20)) {
            cut_block = name;
            return true;
          }
        }
        return false;
      },
      absl::Seconds(60));
  ASSERT_TRUE(mid_stream) << "no transfer with megabytes to go was seen";
  const std::map<std::string, std::string> r1 = {{"replica", "r1"}};
  auto stalled_failures = [&] {
    return PrimaryMetric("snapledger_replication_failures_total",
                         {{"replica", "r1"}, {"reason", "watchdog"}}) +
           PrimaryMetric("snapledger_replication_failures_total",
                         {{"replica", "r1"}, {"reason", "network"}});
  };
  const double failures_before = stalled_failures();
  ASSERT_TRUE(cluster_->LinkDown("r1").ok());
  // The primary's watchdog aborts the transfer: the stall one (3 s) if it was still writing,
  // the verdict one (10 s) if everything had left it.
  EXPECT_TRUE(WaitFor(
      [&] {
        std::optional<v1::ReplicaStatus> r = ReplicaIn(Status(), "r1");
        return r && r->state() == v1::REPLICA_STATE_FAILING;
      },
      absl::Seconds(60)))
      << Status().DebugString();
  EXPECT_GT(stalled_failures(), failures_before);
  // The replica's sshd drops the dead client (ClientAliveInterval), the receive fails, and
  // the half-received subvolume is deleted — all while the link is still down, so no retry
  // cleaned it up.
  const std::string r1_root = cluster_->host("r1").ledger_root;
  EXPECT_TRUE(WaitFor(
      [&] {
        for (const auto& o : JournalLines(r1_root))
          if (!o.value("ok", true) && o.value("block", "") == cut_block) return true;
        return false;
      },
      absl::Seconds(60)))
      << "r1 never journaled the failed receive of " << cut_block;
  EXPECT_TRUE(WaitFor([&] { return IncomingOf("r1").empty(); }, absl::Seconds(10)))
      << "a half-received subvolume remains after the receive failed";
  EXPECT_FALSE(BlocksOf("r1").contains(cut_block)) << cut_block << " was promoted after the cut";

  RunHere({"tc", "qdisc", "del", "dev", veth, "root"});
  ASSERT_TRUE(cluster_->LinkUp("r1").ok());
  ExpectInSync({"r1"}, absl::Seconds(120));
  EXPECT_TRUE(IncomingOf("r1").empty()) << "a half-received subvolume remains";
}

// 4. A block whose events were changed on the primary's disk behind the ledger's back is
// refused: the replicas stay on their last good block and never hold the bad one; the
// failure shows in metrics and status.
TEST_F(ReplicationClusterTest, TamperedHistoryIsRefusedByEveryReplica) {
  StartCluster();
  ASSERT_TRUE(primary_->Append(5'000).ok());
  ExpectInSync({"r1", "r2"}, absl::Seconds(60));
  const std::string good = Status().newest_block();

  // Rewrite one byte of an old event in the live log, same length, as an intruder would.
  const std::string log = cluster_->primary().ledger_root + "/live/events.jsonl";
  {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekg(1000);
    std::string window(200, '\0');
    f.read(window.data(), 200);
    size_t digit = window.find("\"i\":");
    ASSERT_NE(digit, std::string::npos);
    f.seekp(1000 + static_cast<std::streamoff>(digit) + 4);
    char c = window[digit + 4] == '9' ? '8' : '9';
    f.write(&c, 1);
  }
  ASSERT_TRUE(primary_->Append(3'000, "after").ok());
  for (const std::string r : {"r1", "r2"}) {
    EXPECT_TRUE(WaitFor(
        [&] {
          std::optional<v1::ReplicaStatus> s = ReplicaIn(Status(), r);
          return s && s->state() == v1::REPLICA_STATE_FAILING;
        },
        absl::Seconds(60)))
        << Status().DebugString();
    EXPECT_EQ(ReplicaIn(Status(), r)->last_verified_block(), good);
    EXPECT_NE(ReplicaIn(Status(), r)->last_error().find("verif"), std::string::npos)
        << ReplicaIn(Status(), r)->last_error();
    EXPECT_GE(PrimaryMetric("snapledger_replication_failures_total",
                            {{"replica", r}, {"reason", "verification"}}),
              1);
    EXPECT_TRUE(
        WaitFor([&] { return ReplicaMetric(r, "snapledger_verification_failures_total") >= 1; },
                absl::Seconds(10)));
    std::set<std::string> held = BlocksOf(r);
    ASSERT_FALSE(held.empty()) << r;
    EXPECT_EQ(*held.rbegin(), good) << r << " holds a block after the last good one";
    EXPECT_TRUE(IncomingOf(r).empty());
    // Never held, not even for a while: the journal records every receive, and none after the
    // good block was promoted; each one after it was refused as not verifying.
    const uint64_t good_seq = ParseBlockName(good)->seq;
    size_t refused = 0;
    for (const auto& o : JournalLines(cluster_->host(r).ledger_root)) {
      absl::StatusOr<BlockInfo> b = ParseBlockName(o.value("block", ""));
      if (!b.ok() || b->seq <= good_seq) continue;
      EXPECT_FALSE(o.value("ok", false))
          << r << " promoted a block after " << good << ": " << o.dump();
      refused += o.value("reason", "") == "verification";
    }
    EXPECT_GE(refused, 1u) << r;
    EXPECT_EQ(ReplicaMetric(r, "snapledger_head_seq"), static_cast<double>(good_seq)) << r;
  }
}

// 5. Security: an unknown host key is refused; the primary's key runs nothing but the receive
// command; the receive command rejects path tricks.
TEST_F(ReplicationClusterTest, UnknownHostKeyIsRefusedAndTheKeyRunsNothingElse) {
  std::string known_hosts, without_r2;
  StartCluster(2, [&](const ClusterHost& host, YAML::Node& config) {
    if (host.name != "primary") return;
    known_hosts = config["ssh"]["known_hosts_file"].as<std::string>();
    without_r2 = known_hosts + ".without-r2";
    std::ofstream(without_r2) << "";  // filled below, once every address is known
    config["ssh"]["known_hosts_file"] = without_r2;
  });
  {
    std::ifstream in(known_hosts);
    std::string line, kept;
    const std::string r2_address = absl::StrCat(cluster_->host("r2").address, " ");
    while (std::getline(in, line))
      if (!absl::StrContains(line, r2_address) &&
          !absl::StrContains(line, absl::StrCat("[", cluster_->host("r2").address, "]")))
        kept += line + "\n";
    std::ofstream(without_r2, std::ios::trunc) << kept;
  }
  // Restart the primary so that nothing it did with the empty file matters.
  ASSERT_TRUE(cluster_->StopDaemon("primary").ok());
  ASSERT_TRUE(cluster_->StartDaemon("primary").ok());
  ASSERT_TRUE(primary_->Append(2'000).ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  EXPECT_TRUE(WaitFor(
      [&] {
        return PrimaryMetric("snapledger_replication_failures_total",
                             {{"replica", "r2"}, {"reason", "trust"}}) >= 1;
      },
      absl::Seconds(30)));
  std::optional<v1::ReplicaStatus> r2 = ReplicaIn(Status(), "r2");
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->state(), v1::REPLICA_STATE_FAILING);
  EXPECT_TRUE(absl::StrContains(r2->last_error(), "host key")) << r2->last_error();
  EXPECT_TRUE(BlocksOf("r2").empty());

  // The primary's key, used by hand from the primary's namespace, runs only the forced command.
  std::vector<std::string> ssh = {"ssh",
                                  "-i",
                                  cluster_->identity_file(),
                                  "-o",
                                  absl::StrCat("UserKnownHostsFile=", cluster_->known_hosts_file()),
                                  "-o",
                                  "StrictHostKeyChecking=yes",
                                  "-o",
                                  "BatchMode=yes",
                                  absl::StrCat("root@", cluster_->host("r1").address)};
  auto run = [&](const std::string& command) {
    std::vector<std::string> argv = ssh;
    argv.push_back(command);
    absl::StatusOr<CommandOutput> out = cluster_->Exec("primary", argv, absl::Seconds(30));
    EXPECT_TRUE(out.ok()) << out.status();
    return out.value_or(CommandOutput{});
  };
  CommandOutput cat = run("cat /etc/passwd");
  EXPECT_FALSE(cat.exit.ok());
  EXPECT_FALSE(absl::StrContains(cat.stdout_text, "root:x:0:0")) << "the key ran another command";
  for (const std::string bad : {"block-000000000001-aaaaaaaaaaaa/../../etc",
                                "../block-000000000001-aaaaaaaaaaaa", "..", "/etc/passwd"}) {
    CommandOutput out = run(absl::StrCat("snapledger-receive --block ", bad, " --epoch 1"));
    EXPECT_EQ(out.exit.code, 2) << bad << ": " << out.stderr_text;
    EXPECT_TRUE(absl::StrContains(out.stderr_text, "--block")) << out.stderr_text;
  }
  CommandOutput parent =
      run("snapledger-receive --block block-000000000009-aaaaaaaaaaaa --parent ../x --epoch 1");
  EXPECT_EQ(parent.exit.code, 2) << parent.stderr_text;
}

// 6. Every documented metric is served by each daemon, and the lag figures move: up while a
// replica is away, back to zero after.
TEST_F(ReplicationClusterTest, MetricsAreServedAndLagMovesWithTheReplica) {
  StartCluster(1);
  absl::StatusOr<std::string> primary_scrape = ScrapeMetrics(cluster_->primary().metrics_address);
  ASSERT_TRUE(primary_scrape.ok()) << primary_scrape.status();
  for (const std::string& name : DocumentedMetrics("## Primary"))
    EXPECT_TRUE(absl::StrContains(*primary_scrape, absl::StrCat("\n", name)))
        << "primary does not serve " << name;
  absl::StatusOr<std::string> replica_scrape = ScrapeMetrics(cluster_->host("r1").metrics_address);
  ASSERT_TRUE(replica_scrape.ok()) << replica_scrape.status();
  for (const std::string& name : DocumentedMetrics("## Replica"))
    EXPECT_TRUE(absl::StrContains(*replica_scrape, absl::StrCat("\n", name)))
        << "replica does not serve " << name;

  ASSERT_TRUE(primary_->Append(3'000).ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  const std::map<std::string, std::string> r1 = {{"replica", "r1"}};
  EXPECT_TRUE(WaitFor([&] { return PrimaryMetric("snapledger_replica_lag_blocks", r1) == 0; },
                      absl::Seconds(10)));
  EXPECT_GE(PrimaryMetric("snapledger_events_appended_total", {}), 3'000);
  EXPECT_GE(PrimaryMetric("snapledger_replication_transfers_total", r1), 1);
  EXPECT_GT(PrimaryMetric("snapledger_replica_last_success_timestamp_seconds", r1), 0);
  EXPECT_TRUE(WaitFor([&] { return ReplicaMetric("r1", "snapledger_head_seq") == 3'000; },
                      absl::Seconds(10)));
  EXPECT_GE(ReplicaMetric("r1", "snapledger_received_blocks_total"), 1);

  ASSERT_TRUE(cluster_->LinkDown("r1").ok());
  ASSERT_TRUE(primary_->Append(4'000, "away").ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        return PrimaryMetric("snapledger_replica_lag_blocks", r1) >= 1 &&
               PrimaryMetric("snapledger_replica_lag_events", r1) >= 4'000;
      },
      absl::Seconds(30)));
  EXPECT_GT(PrimaryMetric("snapledger_replica_lag_bytes", r1), 0);
  ASSERT_TRUE(cluster_->LinkUp("r1").ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  EXPECT_TRUE(WaitFor(
      [&] {
        return PrimaryMetric("snapledger_replica_lag_blocks", r1) == 0 &&
               PrimaryMetric("snapledger_replica_lag_events", r1) == 0 &&
               PrimaryMetric("snapledger_replica_lag_seconds", r1) == 0;
      },
      absl::Seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return ReplicaMetric("r1", "snapledger_head_seq") == 7'000; },
                      absl::Seconds(10)));
}

// Blocks on demand (blocks.on_demand_spacing_ms): neither size nor age ever makes a block
// here, so only a replica asking for one (idle, or its transfer just ended) can, both while
// appends go on and after they stop.
TEST_F(ReplicationClusterTest, BlocksOnDemandKeepAReplicaInSyncWithoutSizeOrAgeCuts) {
  StartCluster(1, [](const ClusterHost& host, YAML::Node& config) {
    if (host.name != "primary") return;
    config["blocks"]["every_events"] = 0;
    config["blocks"]["interval_ms"] = 3'600'000;
    config["blocks"]["on_demand_spacing_ms"] = 100;
  });
  for (int batch = 0; batch < 5; ++batch)
    ASSERT_TRUE(primary_->Append(2'000, absl::StrCat("d", batch)).ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  const double cut = PrimaryMetric("snapledger_blocks_cut_total", {});
  ASSERT_TRUE(primary_->Append(500, "more").ok());
  ExpectInSync({"r1"}, absl::Seconds(60));
  EXPECT_GT(PrimaryMetric("snapledger_blocks_cut_total", {}), cut);
}

}  // namespace
}  // namespace snapledger::testing
