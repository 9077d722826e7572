// The daemons in one process over real gRPC on 127.0.0.1 (ports chosen by the kernel), with
// the in-memory btrfs double and an SSH transport that cannot connect. Shipping itself is
// tested against real btrfs and sshd in tests/integration/.
#include "primary/primary_daemon.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/ledger/block.h"
#include "common/ledger/event_log.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/temp_dir.h"
#include "common/testing/test_ledger.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "replica/replica_daemon.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {
namespace {

// Every connection fails the way an unreachable host does.
class UnreachableTransport final : public SshTransport {
 public:
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint& endpoint) override {
    return absl::UnavailableError(absl::StrCat("test: ", endpoint.host, " is unreachable"));
  }
};

// A replica whose sshd accepts the connection but never answers a channel request: Exec
// blocks until the session is aborted (as libssh's does on a dead link).
class SilentTransport final : public SshTransport {
 public:
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint&) override {
    return SshSessionPtr(new Session(*this));
  }
  // True once some Exec is waiting.
  bool exec_blocked() {
    absl::MutexLock lock(&mu_);
    return blocked_ > 0;
  }

 private:
  class Session final : public SshSession {
   public:
    explicit Session(SilentTransport& t) : t_(t) {}
    absl::StatusOr<RemoteCommandPtr> Exec(const std::string&) override {
      absl::MutexLock lock(&t_.mu_);
      ++t_.blocked_;
      t_.mu_.Await(absl::Condition(&aborted_));
      --t_.blocked_;
      return absl::UnavailableError("test: the session was aborted");
    }
    bool Connected() const override { return true; }
    void Abort() override {
      absl::MutexLock lock(&t_.mu_);
      aborted_ = true;
    }

   private:
    SilentTransport& t_;
    bool aborted_ = false;  // guarded by t_.mu_
  };

  absl::Mutex mu_;
  int blocked_ ABSL_GUARDED_BY(mu_) = 0;
};

// Polls `done` every 10 ms for up to 30 s (generous: ctest -j2 on a loaded 2-core machine).
bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 3000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

class PrimaryDaemonTest : public ::testing::Test {
 protected:
  PrimaryConfig Config() {
    PrimaryConfig config;
    config.ledger_root = dir_.Sub("primary");
    std::filesystem::create_directories(config.ledger_root);
    config.grpc_listen = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.blocks.max_events = 10;
    config.blocks.max_age = absl::Milliseconds(20);
    config.ssh.identity_file = "/nonexistent/id";
    config.ssh.known_hosts_file = "/nonexistent/known_hosts";
    config.shipping.backoff_initial = absl::Milliseconds(10);
    config.shipping.backoff_max = absl::Milliseconds(50);
    config.shipping.initial_report_wait = absl::ZeroDuration();
    ReplicaTarget r1;
    r1.id = "r1";
    r1.endpoint.host = "192.0.2.1";
    config.replicas.push_back(r1);
    return config;
  }

  void Connect(int port) {
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    ledger_ = v1::Ledger::NewStub(channel_);
    replication_ = v1::Replication::NewStub(channel_);
  }

  v1::ClusterStatusResponse Status() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ClusterStatusResponse response;
    EXPECT_TRUE(replication_->ClusterStatus(&context, {}, &response).ok());
    return response;
  }

  void AppendN(int n) {
    grpc::ClientContext context;
    v1::AppendBatchResponse response;
    auto writer = ledger_->AppendStream(&context, &response);
    v1::AppendRequest request;
    for (int i = 0; i < n; ++i) {
      request.set_body_json(absl::StrCat("{\"i\":", i, "}"));
      ASSERT_TRUE(writer->Write(request));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(response.count(), static_cast<uint64_t>(n));
  }

  testing::TempDir dir_;
  MemoryBtrfs btrfs_;
  UnreachableTransport transport_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ledger::Stub> ledger_;
  std::unique_ptr<v1::Replication::Stub> replication_;
};

TEST_F(PrimaryDaemonTest, AppendsCutBlocksAndAnUnreachableReplicaShowsAsFailing) {
  auto daemon = PrimaryDaemon::Start(Config(), btrfs_, transport_);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Connect((*daemon)->grpc_port());

  grpc::ClientContext health_context;
  grpc::health::v1::HealthCheckRequest health_request;
  grpc::health::v1::HealthCheckResponse health;
  ASSERT_TRUE(grpc::health::v1::Health::NewStub(channel_)
                  ->Check(&health_context, health_request, &health)
                  .ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  AppendN(25);
  ASSERT_TRUE(Eventually([&] {
    return ParseBlockName(Status().newest_block()).value_or(BlockInfo{}).seq == 25;
  })) << Status().DebugString();
  v1::ClusterStatusResponse status;
  ASSERT_TRUE(Eventually([&] {
    status = Status();
    return status.replicas_size() == 1 && status.replicas(0).state() == v1::REPLICA_STATE_FAILING;
  })) << status.DebugString();
  EXPECT_EQ(status.primary_head().seq(), 25u);
  EXPECT_EQ(status.replicas(0).replica_id(), "r1");
  EXPECT_NE(status.replicas(0).last_error().find("unreachable"), std::string::npos);
  EXPECT_EQ(status.replicas(0).lag_events(), 25u);
}

TEST_F(PrimaryDaemonTest, AReplicaWithNothingToReceiveGetsABlockOnDemand) {
  // Neither size nor age would cut a block during this test: only a waiting replica can. With
  // no block yet, r1's shipper has nothing to send, so it is waiting from the start.
  PrimaryConfig config = Config();
  config.blocks.max_events = 1'000'000;
  config.blocks.max_age = absl::Hours(1);
  config.blocks.on_demand_spacing = absl::Milliseconds(10);
  auto primary = PrimaryDaemon::Start(config, btrfs_, transport_);
  ASSERT_TRUE(primary.ok()) << primary.status();
  Connect((*primary)->grpc_port());
  AppendN(1);  // one event: a cut cannot land between two group commits
  v1::ClusterStatusResponse status;
  ASSERT_TRUE(Eventually([&] {
    status = Status();
    return !status.newest_block().empty();
  })) << status.DebugString();
  EXPECT_EQ(ParseBlockName(status.newest_block())->seq, 1u);
}

TEST_F(PrimaryDaemonTest, StopAbortsATransferInFlightWithoutWaitingForTheWatchdog) {
  SilentTransport silent;
  PrimaryConfig config = Config();
  config.shipping.watchdog = absl::Seconds(600);
  auto daemon = PrimaryDaemon::Start(config, btrfs_, silent);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Connect((*daemon)->grpc_port());
  AppendN(5);
  ASSERT_TRUE(Eventually([&] { return silent.exec_blocked(); }));
  // From another thread, as a signal-handling thread would.
  absl::Time start = absl::Now();
  std::thread([&] { (*daemon)->Stop(); }).join();
  // Well under the watchdog: the transfer was aborted, not timed out.
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_FALSE(silent.exec_blocked());
  (*daemon)->Stop();  // idempotent
}

TEST_F(PrimaryDaemonTest, ReportsFromUnknownReplicasAreRefused) {
  auto daemon = PrimaryDaemon::Start(Config(), btrfs_, transport_);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Connect((*daemon)->grpc_port());
  grpc::ClientContext context;
  v1::ReplicaProgress progress;
  progress.set_replica_id("intruder");
  v1::ProgressAck ack;
  EXPECT_EQ(replication_->ReportProgress(&context, progress, &ack).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(PrimaryDaemonTest, RestartKeepsTheLedgerAndItsBlocks) {
  {
    auto daemon = PrimaryDaemon::Start(Config(), btrfs_, transport_);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    Connect((*daemon)->grpc_port());
    AppendN(7);
    ASSERT_TRUE(Eventually([&] { return !Status().newest_block().empty(); }));
  }
  auto daemon = PrimaryDaemon::Start(Config(), btrfs_, transport_);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Connect((*daemon)->grpc_port());
  AppendN(3);
  v1::ClusterStatusResponse status = Status();
  EXPECT_EQ(status.primary_head().seq(), 10u);
}

// A replica daemon serving blocks that appear under its root, reporting them to the primary.
TEST_F(PrimaryDaemonTest, ReplicaReportsItsNewestBlockAndServesQueriesFromIt) {
  auto primary = PrimaryDaemon::Start(Config(), btrfs_, transport_);
  ASSERT_TRUE(primary.ok()) << primary.status();
  Connect((*primary)->grpc_port());
  AppendN(30);
  ASSERT_TRUE(Eventually([&] { return Status().primary_head().seq() == 30; }));

  // The replica's block: a read-only snapshot of a 20-event ledger.
  const std::string root = dir_.Sub("replica");
  std::filesystem::create_directories(root + "/blocks");
  ASSERT_TRUE(btrfs_.CreateSubvolume(root + "/source").ok());
  testing::TestLedger source(root + "/source");
  source.Append(20);
  source.Close();
  absl::StatusOr<std::optional<HeadRecord>> head = ReadHeadFile(root + "/source");
  ASSERT_TRUE(head.ok() && *head);
  BlockInfo block = *BlockForHead((*head)->head.seq, (*head)->head.hash);
  ASSERT_TRUE(
      btrfs_
          .CreateSnapshot(root + "/source", root + "/blocks/" + block.name, SnapshotKind::kReadOnly)
          .ok());

  ReplicaConfig rc;
  rc.node_id = "r1";
  rc.ledger_root = root;
  rc.grpc_listen = "127.0.0.1:0";
  rc.metrics_listen = "";
  rc.primary_grpc = absl::StrCat("127.0.0.1:", (*primary)->grpc_port());
  rc.poll_interval = absl::Milliseconds(10);
  auto replica = ReplicaDaemon::Start(rc, btrfs_);
  ASSERT_TRUE(replica.ok()) << replica.status();

  v1::ClusterStatusResponse status;
  ASSERT_TRUE(Eventually([&] {
    status = Status();
    return status.replicas_size() == 1 && status.replicas(0).last_verified_block() == block.name;
  })) << status.DebugString();
  EXPECT_EQ(status.replicas(0).head().seq(), 20u);
  EXPECT_EQ(status.replicas(0).lag_events(), 10u);

  auto query = v1::Query::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*replica)->grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::GetRequest request;
  request.set_seq(20);
  v1::Event event;
  ASSERT_TRUE(query->Get(&context, request, &event).ok());
  EXPECT_EQ(event.hash(), (*head)->head.hash);
  grpc::ClientContext beyond_context;
  request.set_seq(21);
  EXPECT_EQ(query->Get(&beyond_context, request, &event).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace snapledger
