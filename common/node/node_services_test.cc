#include "common/node/node_services.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/ledger/event_log.h"
#include "common/ops/metrics.h"
#include "common/rpc/ledger_service.h"
#include "common/testing/metrics_scrape.h"
#include "common/testing/temp_dir.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

// A node on 127.0.0.1 (ports chosen by the kernel) serving one ledger, the way the primary
// wires it: its metrics registered in the node's registry, its Ledger service beside the
// node's Query, Similarity and Admin.
class NodeServicesTest : public ::testing::Test {
 protected:
  NodeConfig Config(bool vector_index) const {
    NodeConfig config;
    config.grpc_listen = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.ledger_root = dir_.path();
    config.vector_index.enabled = vector_index;
    return config;
  }

  // Starts the node the way a daemon does; false (with a test failure) when a step fails.
  bool Start(NodeConfig config) {
    std::filesystem::create_directories(live_);
    auto log = EventLog::Create(live_, 1);
    EXPECT_TRUE(log.ok()) << log.status();
    if (!log.ok()) return false;
    log_ = std::move(*log);
    node_ = std::make_unique<NodeServices>(std::move(config));
    metrics_ = std::make_unique<PrimaryMetrics>(node_->registry());
    if (absl::Status s = node_->StartMetricsServer(); !s.ok()) {
      ADD_FAILURE() << s;
      return false;
    }
    query_ = std::make_unique<EventQuery>(live_, node_->LookupIndexDir());
    ledger_service_ = std::make_unique<LedgerService>(*log_);
    RoleServing serving;
    serving.services = {ledger_service_.get()};
    serving.events = [q = std::shared_ptr<EventQuery>(query_.get(), [](EventQuery*) {})] {
      return q;
    };
    serving.indexed_ledger_dir = live_;
    serving.vector_index_metrics = &metrics_->vector_index();
    if (absl::Status s = node_->StartServing(std::move(serving)); !s.ok()) {
      ADD_FAILURE() << s;
      return false;
    }
    node_->StartIndexFollower();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", node_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    return true;
  }

  void TearDown() override {
    if (node_) node_->Stop();
  }

  uint64_t Append(const std::string& body) {
    grpc::ClientContext context;
    v1::AppendRequest request;
    request.set_body_json(body);
    v1::AppendResponse response;
    grpc::Status status = v1::Ledger::NewStub(channel_)->Append(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.seq();
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health() {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status =
        grpc::health::v1::Health::NewStub(channel_)->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  testing::TempDir dir_;
  const std::string live_ = dir_.Sub("live");
  EventLogPtr log_;
  NodeServicesPtr node_;
  std::unique_ptr<PrimaryMetrics> metrics_;
  std::unique_ptr<EventQuery> query_;
  std::unique_ptr<LedgerService> ledger_service_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(NodeServicesTest, ServesQueryAndHealthBesideTheRolesServices) {
  ASSERT_TRUE(Start(Config(false)));
  EXPECT_NE(node_->grpc_port(), 0);
  EXPECT_EQ(Health(), grpc::health::v1::HealthCheckResponse::SERVING);

  uint64_t seq = Append(R"({"host":"a","msg":"link up"})");
  ASSERT_EQ(seq, 1u);
  grpc::ClientContext context;
  v1::GetRequest request;
  request.set_seq(seq);
  v1::Event event;
  grpc::Status status = v1::Query::NewStub(channel_)->Get(&context, request, &event);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(event.seq(), 1u);
  EXPECT_THAT(event.body_json(), HasSubstr("link up"));
}

TEST_F(NodeServicesTest, TheMetricsEndpointServesTheRolesSeriesAndTheVectorIndexs) {
  ASSERT_TRUE(Start(Config(true)));
  ASSERT_NE(node_->metrics_port(), 0);
  metrics_->events_appended().Increment(3);
  std::string scrape = testing::ScrapeMetrics(node_->metrics_port());
  EXPECT_THAT(scrape, HasSubstr("\nsnapledger_events_appended_total 3"));
  EXPECT_THAT(scrape, HasSubstr("\nsnapledger_vector_index_available "));
}

TEST_F(NodeServicesTest, NoMetricsListenAddressMeansNoEndpoint) {
  NodeConfig config = Config(false);
  config.metrics_listen.clear();
  ASSERT_TRUE(Start(config));
  EXPECT_EQ(node_->metrics_port(), 0);
}

TEST_F(NodeServicesTest, AnIndexRebuiltThroughAdminAnswersSimilarQueries) {
  ASSERT_TRUE(Start(Config(true)));
  Append(R"({"host":"a","msg":"link up on port 1"})");
  Append(R"({"host":"b","msg":"link up on port 2"})");
  Append(R"({"host":"c","msg":"fan failure"})");

  grpc::ClientContext rebuild_context;
  auto reader =
      v1::Admin::NewStub(channel_)->RebuildIndex(&rebuild_context, v1::RebuildIndexRequest());
  v1::RebuildProgress progress;
  while (reader->Read(&progress)) {
  }
  grpc::Status rebuilt = reader->Finish();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.error_message();

  grpc::ClientContext context;
  v1::SimilarRequest request;
  request.set_seq(1);
  request.set_k(1);
  v1::SimilarResponse response;
  grpc::Status status = v1::Similarity::NewStub(channel_)->Similar(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(response.indexed_through(), 3u);
  ASSERT_EQ(response.hits_size(), 1);
  EXPECT_EQ(response.hits(0).event().seq(), 2u);
}

TEST_F(NodeServicesTest, WithoutAVectorIndexSimilarIsAFailedPrecondition) {
  ASSERT_TRUE(Start(Config(false)));
  Append(R"({"msg":"x"})");
  grpc::ClientContext context;
  v1::SimilarRequest request;
  request.set_text("x");
  v1::SimilarResponse response;
  grpc::Status status = v1::Similarity::NewStub(channel_)->Similar(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(NodeServicesTest, StopTurnsHealthOffThenClosesTheServer) {
  ASSERT_TRUE(Start(Config(true)));
  node_->SetNotServing();
  EXPECT_EQ(Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  node_->Stop();
  EXPECT_EQ(node_->grpc_port(), 0);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_FALSE(
      grpc::health::v1::Health::NewStub(channel_)->Check(&context, request, &response).ok());
  node_->Stop();                // idempotent
  node_->StartIndexFollower();  // nothing after Stop
  EXPECT_EQ(node_->StartServing(RoleServing{}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(NodeServicesTest, ServingStartsOnce) {
  ASSERT_TRUE(Start(Config(false)));
  EXPECT_EQ(node_->StartServing(RoleServing{}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Health(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(NodeServicesTest, AGrpcAddressThatCannotBeBoundIsUnavailable) {
  NodeConfig config = Config(false);
  config.grpc_listen = "192.0.2.1:0";  // TEST-NET-1: never an address of this host
  NodeServices node(config);
  EXPECT_EQ(node.StartServing(RoleServing{}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(node.grpc_port(), 0);
}

}  // namespace
}  // namespace snapledger
