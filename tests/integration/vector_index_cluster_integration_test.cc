// The derived vector index on a real cluster (tests/integration/test_cluster.h): each node
// builds its own index from the events it holds; nothing of it is snapshotted or streamed.
// Real daemons, btrfs, sshd and namespaces; the embedded (FAISS) backend and the default
// feature-hashing embedder.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/testing/ovs_event_generator.h"
#include "tests/integration/cluster_client.h"
#include "tests/integration/test_cluster.h"

namespace snapledger::testing {
namespace {

namespace fs = std::filesystem;

std::chrono::system_clock::time_point Deadline(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

// The similarity answer of one node as (seq, score) pairs, or the gRPC error.
struct Answer {
  grpc::Status status;
  std::vector<std::pair<uint64_t, float>> hits;
  uint64_t indexed_through = 0;
  std::vector<uint64_t> Seqs() const {
    std::vector<uint64_t> seqs;
    for (const auto& [seq, score] : hits) seqs.push_back(seq);
    return seqs;
  }
};

class NodeClient {
 public:
  explicit NodeClient(const std::string& address) {
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    similarity_ = v1::Similarity::NewStub(channel);
    query_ = v1::Query::NewStub(channel);
    admin_ = v1::Admin::NewStub(channel);
  }
  Answer Similar(const v1::SimilarRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::SimilarResponse response;
    Answer a;
    a.status = similarity_->Similar(&context, request, &response);
    for (const auto& h : response.hits()) a.hits.emplace_back(h.event().seq(), h.score());
    a.indexed_through = response.indexed_through();
    return a;
  }
  grpc::Status Get(uint64_t seq, v1::Event* event) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::GetRequest request;
    request.set_seq(seq);
    return query_->Get(&context, request, event);
  }
  v1::VectorIndexStatus IndexStatus() {
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::VectorIndexStatus status;
    admin_->IndexStatus(&context, {}, &status);
    return status;
  }

 private:
  std::unique_ptr<v1::Similarity::Stub> similarity_;
  std::unique_ptr<v1::Query::Stub> query_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

v1::SimilarRequest TextRequest(const std::string& text, uint32_t k = 10) {
  v1::SimilarRequest r;
  r.set_text(text);
  r.set_k(k);
  return r;
}

// A few questions whose answers are compared across nodes and across rebuilds.
std::vector<v1::SimilarRequest> Questions() {
  std::vector<v1::SimilarRequest> qs;
  for (const char* text : {"port_vlan_changed br-int", "bridge_created br-ex network-01",
                           "port_link_changed down compute-04", "port_mtu_changed 9000"})
    qs.push_back(TextRequest(text));
  v1::SimilarRequest by_seq;
  by_seq.set_seq(1234);
  by_seq.set_k(10);
  qs.push_back(by_seq);
  v1::SimilarRequest filtered = TextRequest("port_created", 10);
  v1::FieldFilter* f = filtered.add_fields();
  f->set_field("bridge");
  f->set_value_json("\"br-int\"");
  qs.push_back(filtered);
  return qs;
}

class VectorIndexClusterTest : public ::testing::Test {
 protected:
  void StartCluster(int replicas,
                    std::function<void(const ClusterHost&, YAML::Node&)> edit = nullptr) {
    ClusterOptions options;
    options.replicas = replicas;
    options.image_mb = 512;
    options.edit_config = [edit](const ClusterHost& host, YAML::Node& config) {
      config["vector_index"]["follow_interval_ms"] = 200;
      if (edit) edit(host, config);
    };
    ASSIGN_TEST_CLUSTER_OR_SKIP(cluster_, options);
    for (const ClusterHost& host : cluster_->hosts()) {
      absl::Status started = cluster_->StartDaemon(host.name);
      ASSERT_TRUE(started.ok()) << started;
    }
    primary_ = std::make_unique<PrimaryClient>(cluster_->primary().grpc_address);
  }

  NodeClient Node(const std::string& host) { return NodeClient(cluster_->host(host).grpc_address); }

  // Appends `count` Open vSwitch port-agent events (deterministic); returns the last seq.
  uint64_t AppendOvsEvents(size_t count) {
    std::vector<std::string> bodies = generator_.Generate(count);
    absl::StatusOr<uint64_t> last = primary_->AppendBodies(bodies);
    EXPECT_TRUE(last.ok()) << last.status();
    return last.value_or(0);
  }

  // Waits until `host`'s vector index covers `seq` and is current.
  void ExpectIndexed(const std::string& host, uint64_t seq, absl::Duration timeout) {
    NodeClient node = Node(host);
    v1::VectorIndexStatus last;
    bool ok = WaitFor(
        [&] {
          last = node.IndexStatus();
          return last.indexed_through() >= seq && last.state() == "current";
        },
        timeout);
    EXPECT_TRUE(ok) << host << "'s vector index did not reach seq " << seq << ":\n"
                    << last.DebugString();
  }

  double Metric(const std::string& host, const std::string& name) {
    absl::StatusOr<std::string> scrape = ScrapeMetrics(cluster_->host(host).metrics_address);
    EXPECT_TRUE(scrape.ok()) << scrape.status();
    return MetricValue(scrape.value_or(""), name).value_or(-1);
  }

  // The operator's rebuild of `host`'s index through the Admin RPC, run from the primary's
  // host with the snapledger CLI.
  void RebuildThroughCli(const std::string& host) {
    absl::StatusOr<CommandOutput> rebuilt =
        cluster_->Exec("primary", {cluster_->BinaryPath("snapledger"), "rebuild-index", "--node",
                                   cluster_->host(host).grpc_address});
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_TRUE(rebuilt->exit.ok()) << rebuilt->exit.ToString() << ": " << rebuilt->stderr_text;
    EXPECT_TRUE(absl::StrContains(rebuilt->stdout_text, "rebuilt the vector index"))
        << rebuilt->stdout_text;
    // Not a terminal: progress comes as plain lines.
    EXPECT_TRUE(absl::StrContains(rebuilt->stderr_text, "rebuild-index: ")) << rebuilt->stderr_text;
  }

  std::vector<Answer> AnswersOf(const std::string& host) {
    NodeClient node = Node(host);
    std::vector<Answer> out;
    for (const v1::SimilarRequest& q : Questions()) {
      out.push_back(node.Similar(q));
      EXPECT_TRUE(out.back().status.ok())
          << host << ": " << q.ShortDebugString() << ": " << out.back().status.error_message();
      EXPECT_FALSE(out.back().hits.empty()) << host << ": " << q.ShortDebugString();
    }
    return out;
  }

  static void ExpectSameAnswers(const std::vector<Answer>& a, const std::vector<Answer>& b,
                                const std::string& what) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].Seqs(), b[i].Seqs()) << what << ", question " << i;
      for (size_t j = 0; j < std::min(a[i].hits.size(), b[i].hits.size()); ++j)
        EXPECT_NEAR(a[i].hits[j].second, b[i].hits[j].second, 1e-5) << what << ", question " << i;
    }
  }

  TestClusterPtr cluster_;
  std::unique_ptr<PrimaryClient> primary_;
  OvsEventGenerator generator_{2026};
};

// Every verified block moves the replica's index on, O(new events); the replica and the
// primary, each indexing on its own, give the same answers; a distinctive event appended last
// is found on the replica by its words as soon as its block is verified.
TEST_F(VectorIndexClusterTest, ReplicaIndexFollowsVerifiedBlocks) {
  StartCluster(1);
  uint64_t head = AppendOvsEvents(20000);
  ASSERT_GT(head, 0u);
  ExpectIndexed("r1", head, absl::Seconds(90));
  ExpectIndexed("primary", head, absl::Seconds(30));
  // The metrics are published when the follower's step ends, just after the status moves.
  EXPECT_TRUE(WaitFor(
      [&] {
        return Metric("r1", "snapledger_vector_index_indexed_seq") == static_cast<double>(head);
      },
      absl::Seconds(10)));
  EXPECT_EQ(Metric("r1", "snapledger_vector_index_lag_events"), 0);
  EXPECT_EQ(Metric("r1", "snapledger_vector_index_available"), 1);
  // The replica's index was built from nothing once, then followed block after block.
  EXPECT_EQ(Metric("r1", "snapledger_vector_index_rebuilds_total"), 1);
  ExpectSameAnswers(AnswersOf("primary"), AnswersOf("r1"), "primary vs r1");

  absl::StatusOr<uint64_t> marker = primary_->AppendBodies(
      {R"({"event":"tenant_quarantined","host":"compute-11","reason":"zebra-striped anomaly"})"});
  ASSERT_TRUE(marker.ok()) << marker.status();
  NodeClient r1 = Node("r1");
  Answer found;
  bool ok = WaitFor(
      [&] {
        found = r1.Similar(TextRequest("tenant_quarantined zebra-striped", 1));
        return found.status.ok() && !found.hits.empty() && found.hits[0].first == *marker;
      },
      absl::Seconds(30));
  EXPECT_TRUE(ok) << "r1 never found seq " << *marker
                  << "; last answer: " << (found.hits.empty() ? 0 : found.hits[0].first) << " "
                  << found.status.error_message();

  // Nothing of the index is in the blocks the replica received.
  for (const auto& e : fs::directory_iterator(cluster_->host("r1").ledger_root + "/blocks"))
    EXPECT_FALSE(fs::exists(e.path() / "index")) << e.path();
}

// An operator deletes the index directory of running nodes: similarity answers "not
// available" (the replica, which does not rebuild by itself here, until `snapledger
// rebuild-index --node` is run; the primary only until its automatic rebuild finishes), lookups
// keep working throughout, and the rebuilt index gives the same answers as before.
TEST_F(VectorIndexClusterTest, DeletedIndexIsNotAvailableUntilRebuiltWithTheSameAnswers) {
  StartCluster(1, [](const ClusterHost& host, YAML::Node& config) {
    if (host.name == "r1") config["vector_index"]["auto_rebuild"] = false;
  });
  uint64_t head = AppendOvsEvents(20000);
  ASSERT_GT(head, 0u);
  ExpectIndexed("primary", head, absl::Seconds(60));
  // Without auto_rebuild, r1 builds no index of its own accord: the operator's first
  // rebuild does, and from then on it follows verified blocks.
  EXPECT_EQ(Node("r1").IndexStatus().state(), "missing");
  RebuildThroughCli("r1");
  ExpectIndexed("r1", head, absl::Seconds(90));
  std::vector<Answer> before_r1 = AnswersOf("r1");
  std::vector<Answer> before_primary = AnswersOf("primary");

  // The replica: removed, noticed, "not available", lookups unaffected.
  fs::remove_all(cluster_->host("r1").ledger_root + "/index/vectors");
  NodeClient r1 = Node("r1");
  Answer gone;
  bool unavailable = WaitFor(
      [&] {
        gone = r1.Similar(TextRequest("port_created"));
        return gone.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION;
      },
      absl::Seconds(10));
  ASSERT_TRUE(unavailable) << gone.status.error_message();
  EXPECT_TRUE(absl::StartsWith(gone.status.error_message(), "vector index not available: "))
      << gone.status.error_message();
  v1::Event event;
  grpc::Status got = r1.Get(1234, &event);
  EXPECT_TRUE(got.ok()) << got.error_message();
  EXPECT_EQ(event.seq(), 1234u);
  EXPECT_EQ(Metric("r1", "snapledger_vector_index_available"), 0);
  EXPECT_EQ(r1.IndexStatus().state(), "missing");

  RebuildThroughCli("r1");
  ExpectSameAnswers(before_r1, AnswersOf("r1"), "r1 before vs after rebuild");

  // The primary rebuilds by itself.
  const double rebuilds = Metric("primary", "snapledger_vector_index_rebuilds_total");
  fs::remove_all(cluster_->host("primary").ledger_root + "/index/vectors");
  bool back = WaitFor(
      [&] {
        return Metric("primary", "snapledger_vector_index_rebuilds_total") > rebuilds &&
               Metric("primary", "snapledger_vector_index_available") == 1;
      },
      absl::Seconds(60));
  ASSERT_TRUE(back) << Node("primary").IndexStatus().DebugString();
  ExpectSameAnswers(before_primary, AnswersOf("primary"), "primary before vs after rebuild");
}

// A damaged index file (truncated) is detected when a node starts, never trusted, and
// rebuilt; the node serves meanwhile.
TEST_F(VectorIndexClusterTest, TruncatedIndexFileIsDetectedAndRebuiltAtStart) {
  StartCluster(1);
  uint64_t head = AppendOvsEvents(5000);
  ASSERT_GT(head, 0u);
  ExpectIndexed("primary", head, absl::Seconds(60));
  std::vector<Answer> before = AnswersOf("primary");
  absl::StatusOr<StopOutcome> stopped = cluster_->StopDaemon("primary");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  size_t truncated = 0;
  for (const auto& e :
       fs::directory_iterator(cluster_->host("primary").ledger_root + "/index/vectors")) {
    if (!e.is_regular_file() || e.file_size() < 64) continue;
    fs::resize_file(e.path(), e.file_size() / 2);
    ++truncated;
  }
  ASSERT_GT(truncated, 0u) << "no index file to damage";
  ASSERT_TRUE(cluster_->StartDaemon("primary").ok());
  ExpectIndexed("primary", head, absl::Seconds(60));
  ExpectSameAnswers(before, AnswersOf("primary"), "before vs after the damaged file");
  EXPECT_GE(Metric("primary", "snapledger_vector_index_rebuilds_total"), 1);
}

}  // namespace
}  // namespace snapledger::testing
