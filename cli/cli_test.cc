#include "cli/cli.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/posix_file.h"
#include "common/testing/manual_clock.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/temp_dir.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {
namespace {

// Runs the CLI against a temporary root with an in-memory btrfs.
class CliTest : public ::testing::Test {
 protected:
  struct Result {
    int code;
    std::string out, err;
  };

  Result Run(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = {"snapledger", "--root", root_.path()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<const char*> ptrs;
    for (auto& a : argv) ptrs.push_back(a.c_str());
    std::istringstream in(stdin_text);
    std::ostringstream out, err;
    CliEnv env{&btrfs_, &clock_, &in, &out, &err};
    int code = RunCli(static_cast<int>(ptrs.size()), ptrs.data(), env);
    return {code, out.str(), err.str()};
  }

  std::string Events(int from, int to) {
    std::string s;
    for (int i = from; i <= to; ++i)
      absl::StrAppend(&s, "{\"event\":\"port_created\",\"port\":\"tap", i, "\",\"vlan\":", i % 7,
                      "}\n");
    return s;
  }

  testing::TempDir root_;
  MemoryBtrfs btrfs_;
  ManualClock clock_;
};

TEST_F(CliTest, InitAppendGetVerify) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  auto appended = Run({"append"}, Events(1, 50));
  ASSERT_EQ(appended.code, kExitOk) << appended.err;
  EXPECT_NE(appended.out.find("appended 50 events (seq 1..50)"), std::string::npos);

  auto got = Run({"get", "7"});
  ASSERT_EQ(got.code, kExitOk) << got.err;
  EXPECT_NE(got.out.find("\"seq\":7,"), std::string::npos);
  EXPECT_NE(got.out.find("\"port\":\"tap7\""), std::string::npos);

  std::string hash = got.out.substr(got.out.find("\"hash\":\"") + 8, 64);
  auto by_hash = Run({"get", hash});
  ASSERT_EQ(by_hash.code, kExitOk) << by_hash.err;
  EXPECT_EQ(by_hash.out, got.out);

  auto verified = Run({"verify"});
  EXPECT_EQ(verified.code, kExitOk) << verified.err;
  EXPECT_NE(verified.out.find("50 events verified"), std::string::npos);
}

TEST_F(CliTest, InitTwiceIsAnError) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  auto again = Run({"init"});
  EXPECT_EQ(again.code, kExitError);
  EXPECT_NE(again.err.find("already holds a ledger"), std::string::npos);
}

TEST_F(CliTest, InvalidLineOnStdinAppendsNothingAndNamesTheLine) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  ASSERT_EQ(Run({"append"}, Events(1, 3)).code, kExitOk);
  std::string input = Events(4, 6) + "[1,2,3]\n" + Events(7, 8) + "{\"a\":\n";
  auto r = Run({"append"}, input);
  EXPECT_EQ(r.code, kExitRejected);
  EXPECT_NE(r.err.find("stdin line 4: event body must be a JSON object"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("stdin line 7:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nothing was appended"), std::string::npos);
  EXPECT_EQ(Run({"get", "4"}).code, kExitNotFound);
}

TEST_F(CliTest, MaxBodyBytesAppliesToTheWholeAppend) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  std::string big = "{\"blob\":\"" + std::string(1'200'000, 'x') + "\"}\n";
  EXPECT_EQ(Run({"append"}, Events(1, 3) + big).code, kExitRejected);
  EXPECT_EQ(Run({"get", "1"}).code, kExitNotFound);
  auto r = Run({"append", "--max-body-bytes", "2000000"}, Events(1, 3) + big);
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(Run({"get", "4"}).code, kExitOk);
}

TEST_F(CliTest, SingleJsonAppendPrintsItsSeqAndHash) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  auto r = Run({"append", "--json", R"({"event":"bridge_created","bridge":"br-ex"})"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out.rfind("{\"seq\":1,", 0), 0u) << r.out;
  EXPECT_EQ(Run({"append", "--json", "[]"}).code, kExitRejected);
}

TEST_F(CliTest, BlocksAreCutByCountAndListed) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  auto r = Run({"append", "--block-every", "20"}, Events(1, 70));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("cut 3 blocks"), std::string::npos) << r.out;
  auto snap = Run({"snapshot"});
  ASSERT_EQ(snap.code, kExitOk) << snap.err;
  EXPECT_NE(snap.out.find("cut block block-000000000070-"), std::string::npos) << snap.out;
  EXPECT_NE(Run({"snapshot"}).out.find("nothing to cut"), std::string::npos);
  auto listed = Run({"blocks"});
  ASSERT_EQ(listed.code, kExitOk);
  EXPECT_NE(listed.out.find("4 blocks"), std::string::npos) << listed.out;
  std::vector<std::string> lines = absl::StrSplit(listed.out, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines[1].rfind("block-000000000020-", 0), 0u) << listed.out;
}

TEST_F(CliTest, BlocksNamesABlockBeingReceivedAndWarnsOfStrangers) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  ASSERT_EQ(Run({"append"}, Events(1, 20)).code, kExitOk);
  ASSERT_EQ(Run({"snapshot"}).code, kExitOk);
  const std::string receiving = "block-000000000099-abcdefabcdef";
  ASSERT_TRUE(btrfs_.CreateSubvolume(root_.Sub("blocks/.incoming-" + receiving)).ok());
  ASSERT_TRUE(btrfs_.CreateSubvolume(root_.Sub("blocks/.incoming-not-a-block")).ok());
  auto listed = Run({"blocks"});
  ASSERT_EQ(listed.code, kExitOk) << listed.err;
  EXPECT_NE(listed.out.find("1 blocks\nreceiving " + receiving + " into "), std::string::npos)
      << listed.out;
  EXPECT_EQ(listed.err.find(receiving), std::string::npos) << listed.err;
  EXPECT_NE(listed.err.find(".incoming-not-a-block is not a block name; left alone"),
            std::string::npos)
      << listed.err;
}

TEST_F(CliTest, VerifyFromABlockReadsOnlyWhatCameAfter) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  ASSERT_EQ(Run({"append"}, Events(1, 30)).code, kExitOk);
  auto snap = Run({"snapshot"});
  std::string block = snap.out.substr(snap.out.find("block-"), 31);
  ASSERT_EQ(Run({"append"}, Events(31, 45)).code, kExitOk);
  auto r = Run({"verify", "--from-block", block});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("incremental from " + block + ", 15 events verified"), std::string::npos)
      << r.out;
  auto b = Run({"verify", "--block", block});
  EXPECT_EQ(b.code, kExitOk) << b.err;
  EXPECT_EQ(Run({"verify", "--block", "block-000000000099-abcdefabcdef"}).code, kExitNotFound);
  EXPECT_EQ(Run({"verify", "--block", "../etc"}).code, kExitUsage);
}

TEST_F(CliTest, TamperedLogFailsVerificationWithExitCode3) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  ASSERT_EQ(Run({"append"}, Events(1, 10)).code, kExitOk);
  std::string path = root_.Sub("live/events.jsonl");
  std::string text = *ReadFileToString(path);
  text[text.find("tap5")] = 'T';
  ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  auto r = Run({"verify"});
  EXPECT_EQ(r.code, kExitVerifyFailed);
  EXPECT_NE(r.err.find("line 5 (seq 5)"), std::string::npos) << r.err;
}

TEST_F(CliTest, RangeSelectsByTimestamp) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  int64_t t0 = clock_.NowMicros();
  ASSERT_EQ(Run({"append"}, Events(1, 5)).code, kExitOk);
  clock_.Advance(1'000'000);
  ASSERT_EQ(Run({"append"}, Events(6, 9)).code, kExitOk);
  auto r = Run({"range", "--from", std::to_string(t0 + 500'000)});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].rfind("{\"seq\":6,", 0), 0u);
  auto limited = Run({"range", "--limit", "2"});
  EXPECT_NE(limited.err.find("--limit 2"), std::string::npos);
  EXPECT_EQ(Run({"range", "--from", "yesterday"}).code, kExitUsage);
}

TEST_F(CliTest, StatusShowsHeadBlocksAndIndex) {
  ASSERT_EQ(Run({"init", "--epoch", "4"}).code, kExitOk);
  ASSERT_EQ(Run({"append"}, Events(1, 12)).code, kExitOk);
  ASSERT_EQ(Run({"snapshot"}).code, kExitOk);
  ASSERT_EQ(Run({"get", "3"}).code, kExitOk);  // builds the lookup index
  auto r = Run({"status"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("epoch       4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("head        seq 12"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blocks      1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lookup idx  current, through seq 12"), std::string::npos) << r.out;
}

TEST_F(CliTest, UsageErrorsExitWith2) {
  EXPECT_EQ(Run({"frobnicate"}).code, kExitUsage);
  EXPECT_EQ(Run({"get"}).code, kExitUsage);
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  EXPECT_EQ(Run({"get", "not-a-key"}).code, kExitUsage);
}

// ---- status --primary, against a fake Replication service ----

// Answers ClusterStatus with a fixed response (or error).
class FakeReplication final : public v1::Replication::Service {
 public:
  grpc::Status ClusterStatus(grpc::ServerContext*, const v1::ClusterStatusRequest*,
                             v1::ClusterStatusResponse* response) override {
    *response = response_;
    return status_;
  }
  v1::ClusterStatusResponse response_;
  grpc::Status status_ = grpc::Status::OK;
};

// A TCP socket bound on 127.0.0.1 with a kernel-chosen port; with `listen` it accepts
// connections into the backlog but never answers, without it connections are refused. Held
// for the test, so the port cannot be taken by anyone else meanwhile.
class SilentPort {
 public:
  explicit SilentPort(bool listen) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        (listen && ::listen(fd_, 16) != 0))
      std::abort();
    port_ = ntohs(addr.sin_port);
  }
  ~SilentPort() { ::close(fd_); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_;
  int port_;
};

class ClusterStatusTest : public CliTest {
 protected:
  void SetUp() override {
    v1::ClusterStatusResponse& r = fake_.response_;
    r.mutable_primary_head()->set_seq(5000);
    r.mutable_primary_head()->set_hash(std::string(64, 'c'));
    r.set_newest_block("block-000000004990-cccccccccccc");
    v1::ReplicaStatus* a = r.add_replicas();
    a->set_replica_id("replica-a");
    a->set_state(v1::REPLICA_STATE_IN_SYNC);
    a->mutable_head()->set_seq(5000);
    a->set_last_success_unix_micros(clock_.NowMicros() - 3'000'000);
    v1::ReplicaStatus* b = r.add_replicas();
    b->set_replica_id("replica-b");
    b->set_state(v1::REPLICA_STATE_STALLED);
    b->mutable_head()->set_seq(4100);
    b->set_lag_events(900);
    b->set_lag_blocks(3);
    b->set_lag_seconds(42.5);
    b->set_last_error("ssh: connection refused");

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  FakeReplication fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

TEST_F(ClusterStatusTest, PrintsThePrimaryHeadAndARowPerReplica) {
  auto r = Run({"status", "--primary", address_});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("seq 5000  hash cccccccccccc"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("block-000000004990-cccccccccccc"), std::string::npos) << r.out;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  auto row = [&](const std::string& id) -> std::vector<std::string> {
    for (const auto& l : lines)
      if (l.rfind(id + " ", 0) == 0) return absl::StrSplit(l, ' ', absl::SkipEmpty());
    ADD_FAILURE() << "no row for " << id << " in:\n" << r.out;
    return {};
  };
  EXPECT_EQ(row("replica-a"), (std::vector<std::string>{"replica-a", "in_sync", "5000", "0", "0",
                                                        "0.0", "3s", "ago", "-"}));
  EXPECT_EQ(row("replica-b"),
            (std::vector<std::string>{"replica-b", "stalled", "4100", "900", "3", "42.5", "never",
                                      "ssh:", "connection", "refused"}));
}

TEST_F(ClusterStatusTest, JsonIsForMachines) {
  auto r = Run({"status", "--primary", address_, "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["primary"]["head"]["seq"], 5000);
  ASSERT_EQ(doc["replicas"].size(), 2u);
  EXPECT_EQ(doc["replicas"][1]["state"], "stalled");
  EXPECT_EQ(doc["replicas"][1]["lag_events"], 900);
  EXPECT_EQ(doc["replicas"][0]["last_success_age_seconds"], 3.0);
}

TEST_F(ClusterStatusTest, AnUnreachablePrimaryIsAnErrorNamingTheAddress) {
  SilentPort closed(/*listen=*/false);
  auto r = Run({"status", "--primary", closed.address()});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_NE(r.err.find("cannot reach the primary at " + closed.address()), std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(ClusterStatusTest, APrimaryThatNeverAnswersTimesOut) {
  SilentPort silent(/*listen=*/true);
  auto r = Run({"status", "--primary", silent.address(), "--timeout", "0.2"});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_NE(
      r.err.find("cannot reach the primary at " + silent.address() + ": no answer within 0.2 s"),
      std::string::npos)
      << r.err;
}

TEST_F(ClusterStatusTest, AnErrorFromThePrimaryIsReported) {
  fake_.status_ = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "not the primary");
  auto r = Run({"status", "--primary", address_});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_NE(r.err.find("answered ClusterStatus with FAILED_PRECONDITION: not the primary"),
            std::string::npos)
      << r.err;
}

TEST_F(ClusterStatusTest, BadOptionsAreUsageErrors) {
  EXPECT_EQ(Run({"status", "--json"}).code, kExitUsage);
  EXPECT_EQ(Run({"status", "--timeout", "3"}).code, kExitUsage);
  EXPECT_EQ(Run({"status", "--primary", address_, "--timeout", "0"}).code, kExitUsage);
  EXPECT_EQ(Run({"status", "--primary", "no-port"}).code, kExitUsage);
}

}  // namespace
}  // namespace snapledger

namespace snapledger {
namespace {

TEST_F(CliTest, SimilarBuildsTheVectorIndexOnFirstUseAndFindsTheClosestEvents) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  ASSERT_EQ(Run({"append"}, Events(1, 40)).code, kExitOk);
  auto marker = Run(
      {"append", "--json", R"({"event":"bridge_deleted","bridge":"br-ex","host":"network-02"})"});
  ASSERT_EQ(marker.code, kExitOk) << marker.err;

  auto similar = Run({"similar", "--text", "bridge_deleted br-ex network-02", "-k", "3"});
  ASSERT_EQ(similar.code, kExitOk) << similar.err;
  std::vector<std::string> lines = absl::StrSplit(similar.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << similar.out;
  EXPECT_NE(lines[0].find("\"seq\":41,"), std::string::npos) << lines[0];  // score TAB line
  EXPECT_NE(lines[0].find('\t'), std::string::npos);

  auto by_seq = Run({"similar", "--seq", "7", "-k", "2", "--field", "vlan=0"});
  ASSERT_EQ(by_seq.code, kExitOk) << by_seq.err;
  for (const std::string& line :
       std::vector<std::string>(absl::StrSplit(by_seq.out, '\n', absl::SkipEmpty()))) {
    EXPECT_NE(line.find("\"vlan\":0"), std::string::npos) << line;
    EXPECT_EQ(line.find("\"seq\":7,"), std::string::npos) << line;  // not itself
  }

  auto rebuilt = Run({"rebuild-index"});
  ASSERT_EQ(rebuilt.code, kExitOk) << rebuilt.err;
  EXPECT_NE(rebuilt.out.find("through seq 41"), std::string::npos) << rebuilt.out;
  EXPECT_NE(rebuilt.err.find("rebuild-index: 41/41 events (100%)"), std::string::npos)
      << rebuilt.err;
  EXPECT_EQ(Run({"similar", "--text", "bridge_deleted br-ex network-02", "-k", "3"}).out,
            similar.out);
}

TEST_F(CliTest, SimilarNeedsExactlyOneThingToBeSimilarTo) {
  ASSERT_EQ(Run({"init"}).code, kExitOk);
  auto none = Run({"similar"});
  EXPECT_EQ(none.code, kExitUsage);
  EXPECT_NE(none.err.find("exactly one of --text, --like-json or --seq"), std::string::npos)
      << none.err;
  EXPECT_EQ(Run({"similar", "--text", "a", "--seq", "3"}).code, kExitUsage);
}

}  // namespace
}  // namespace snapledger
