#include "common/rpc/ledger_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/ledger/chain_verifier.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

// A real gRPC server on 127.0.0.1 (kernel-chosen port) in front of a real EventLog.
class LedgerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto log = EventLog::Create(dir_.path(), 1);
    ASSERT_TRUE(log.ok());
    log_ = std::move(*log);
    service_ = std::make_unique<LedgerService>(*log_, 16);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Ledger::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                                    grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  grpc::Status Stream(const std::vector<std::string>& bodies, v1::AppendBatchResponse* resp) {
    grpc::ClientContext ctx;
    auto writer = stub_->AppendStream(&ctx, resp);
    v1::AppendRequest req;
    for (const auto& b : bodies) {
      req.set_body_json(b);
      if (!writer->Write(req)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  testing::TempDir dir_;
  EventLogPtr log_;
  std::unique_ptr<LedgerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Ledger::Stub> stub_;
};

TEST_F(LedgerServiceTest, AppendIsAcknowledgedWithSeqAndHash) {
  grpc::ClientContext ctx;
  v1::AppendRequest req;
  req.set_body_json(R"({"event":"bridge_created","bridge":"br-int"})");
  v1::AppendResponse resp;
  ASSERT_TRUE(stub_->Append(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.seq(), 1u);
  EXPECT_EQ(resp.hash(), log_->Head().head.hash);
}

TEST_F(LedgerServiceTest, RejectedBodyIsInvalidArgumentAndAppendsNothing) {
  grpc::ClientContext ctx;
  v1::AppendRequest req;
  req.set_body_json("[1,2]");
  v1::AppendResponse resp;
  EXPECT_EQ(stub_->Append(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(log_->Head().head.seq, 0u);
}

TEST_F(LedgerServiceTest, StreamAppendsEverythingInOrder) {
  std::vector<std::string> bodies;
  for (int i = 0; i < 1000; ++i) bodies.push_back(absl::StrCat("{\"i\":", i, "}"));
  v1::AppendBatchResponse resp;
  ASSERT_TRUE(Stream(bodies, &resp).ok());
  EXPECT_EQ(resp.count(), 1000u);
  EXPECT_EQ(resp.first_seq(), 1u);
  EXPECT_EQ(resp.last_seq(), 1000u);
  EXPECT_EQ(resp.last_hash(), log_->Head().head.hash);
}

TEST_F(LedgerServiceTest, StreamStopsAtARejectedBodyAndNamesIt) {
  std::vector<std::string> bodies;
  for (int i = 0; i < 100; ++i) bodies.push_back(absl::StrCat("{\"i\":", i, "}"));
  bodies[60] = "not json";
  v1::AppendBatchResponse resp;
  grpc::Status st = Stream(bodies, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("event 61 of the stream"), std::string::npos)
      << st.error_message();
  EXPECT_NE(st.error_message().find("60 events before it were appended"), std::string::npos);
  EXPECT_EQ(log_->Head().head.seq, 60u);  // nothing after the bad one
}

}  // namespace
}  // namespace snapledger
