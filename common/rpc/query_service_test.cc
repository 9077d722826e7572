#include "common/rpc/query_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/testing/temp_dir.h"
#include "common/testing/test_ledger.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace snapledger {
namespace {

// A real gRPC server on 127.0.0.1, port chosen by the kernel.
class QueryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ledger_ = std::make_unique<testing::TestLedger>(dir_.Sub("live"));
    ledger_->Append(100, 1000, 10);  // ts 1000..1009, ten events each
    query_ = std::make_unique<EventQuery>(ledger_->dir(), dir_.Sub("index"));
    service_ = std::make_unique<QueryService>(*query_);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    stub_ = v1::Query::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::TestLedger> ledger_;
  std::unique_ptr<EventQuery> query_;
  std::unique_ptr<QueryService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Query::Stub> stub_;
};

TEST_F(QueryServiceTest, GetsBySeqAndByHash) {
  grpc::ClientContext c1;
  v1::GetRequest by_seq;
  by_seq.set_seq(42);
  v1::Event event;
  ASSERT_TRUE(stub_->Get(&c1, by_seq, &event).ok());
  EXPECT_EQ(event.seq(), 42u);
  EXPECT_EQ(event.body_json(), "{\"n\":41}");

  grpc::ClientContext c2;
  v1::GetRequest by_hash;
  by_hash.set_hash(event.hash());
  v1::Event same;
  ASSERT_TRUE(stub_->Get(&c2, by_hash, &same).ok());
  EXPECT_EQ(same.line(), event.line());
}

TEST_F(QueryServiceTest, MissingEventIsNotFoundAndBadRequestsAreInvalid) {
  grpc::ClientContext c1;
  v1::GetRequest req;
  req.set_seq(1000);
  v1::Event event;
  EXPECT_EQ(stub_->Get(&c1, req, &event).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c2;
  v1::GetRequest empty;
  EXPECT_EQ(stub_->Get(&c2, empty, &event).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext c3;
  v1::GetRequest bad_hash;
  bad_hash.set_hash("not-a-hash");
  EXPECT_EQ(stub_->Get(&c3, bad_hash, &event).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(QueryServiceTest, StreamsATimeRange) {
  grpc::ClientContext ctx;
  v1::RangeRequest req;
  req.set_from_ts_micros(1003);
  req.set_to_ts_micros(1004);
  auto reader = stub_->Range(&ctx, req);
  std::vector<uint64_t> seqs;
  v1::Event event;
  while (reader->Read(&event)) seqs.push_back(event.seq());
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(seqs.size(), 20u);
  EXPECT_EQ(seqs.front(), 31u);
  EXPECT_EQ(seqs.back(), 50u);
}

TEST_F(QueryServiceTest, AnswersTheStandardHealthCheck) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace snapledger
