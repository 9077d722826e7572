#include "common/rpc/ledger_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/ledger/chain_verifier.h"
#include "common/testing/manual_clock.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

// The log's clock: stamping an event takes 7 ms of `time` (the service's clock), so each
// append's latency is known exactly.
class SlowStampClock final : public Clock {
 public:
  explicit SlowStampClock(ManualClock& time) : time_(time) {}
  int64_t NowMicros() override {
    time_.Advance(absl::Milliseconds(7));
    return time_.NowMicros();
  }
  int64_t MonotonicNanos() override { return time_.MonotonicNanos(); }
  void SleepFor(absl::Duration d) override { time_.SleepFor(d); }
  bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond,
                         absl::Time deadline) override {
    return time_.AwaitWithDeadline(mu, cond, deadline);
  }
  bool AwaitWithTimeout(absl::Mutex& mu, const absl::Condition& cond,
                        absl::Duration timeout) override {
    return time_.AwaitWithTimeout(mu, cond, timeout);
  }

 private:
  ManualClock& time_;
};

class RecordingObserver final : public AppendObserver {
 public:
  void Appended(absl::Duration latency) override {
    absl::MutexLock lock(&mu_);
    latencies_.push_back(latency);
  }
  void Rejected() override {
    absl::MutexLock lock(&mu_);
    ++rejected_;
  }
  std::vector<absl::Duration> latencies() {
    absl::MutexLock lock(&mu_);
    return latencies_;
  }
  int rejected() {
    absl::MutexLock lock(&mu_);
    return rejected_;
  }

 private:
  absl::Mutex mu_;
  std::vector<absl::Duration> latencies_ ABSL_GUARDED_BY(mu_);
  int rejected_ ABSL_GUARDED_BY(mu_) = 0;
};

// A real gRPC server on 127.0.0.1 (kernel-chosen port) in front of a real EventLog.
class LedgerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EventLogOptions options;
    options.clock = &log_clock_;
    auto log = EventLog::Create(dir_.path(), 1, options);
    ASSERT_TRUE(log.ok());
    log_ = std::move(*log);
    service_ = std::make_unique<LedgerService>(*log_, 16, &observer_, &clock_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Ledger::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
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
  ManualClock clock_;  // the service's
  SlowStampClock log_clock_{clock_};
  RecordingObserver observer_;
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

TEST_F(LedgerServiceTest, AppendLatencyIsMeasuredOnTheServicesClock) {
  v1::AppendRequest req;
  v1::AppendResponse resp;
  req.set_body_json(R"({"event":"bridge_created","bridge":"br-int"})");
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Append(&ctx, req, &resp).ok());
  }
  req.set_body_json("[1,2]");
  {
    grpc::ClientContext ctx;
    EXPECT_FALSE(stub_->Append(&ctx, req, &resp).ok());
  }
  EXPECT_EQ(observer_.latencies(), std::vector<absl::Duration>{absl::Milliseconds(7)});
  EXPECT_EQ(observer_.rejected(), 1);
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
  EXPECT_EQ(observer_.latencies().size(), 1000u);
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
