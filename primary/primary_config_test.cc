#include "primary/primary_config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

class PrimaryConfigTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::string path = dir_.Sub("primary.yaml");
    std::ofstream(path) << text;
    return path;
  }
  testing::TempDir dir_;
};

TEST_F(PrimaryConfigTest, ReadsEverySection) {
  auto config = LoadPrimaryConfig(Write(R"(
node_id: p1
ledger_root: /srv/ledger
epoch: 3
grpc_listen: 10.0.0.1:7400
metrics_listen: 10.0.0.1:9400
blocks: {every_events: 500, interval_ms: 250, on_demand_spacing_ms: 40}
retention: {keep_newest: 4, max_blocks_behind: 32}
ssh: {identity_file: /k, known_hosts_file: /kh, ciphers: aes128-gcm@openssh.com}
shipping: {watchdog_seconds: 7, verdict_timeout_seconds: 45, backoff_initial_ms: 50, backoff_max_ms: 900}
replicas:
  - {id: r1, host: 10.0.0.2}
  - {id: r2, host: 10.0.0.3, port: 2222, user: sl, receive_command: "x receive"}
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->node_id, "p1");
  EXPECT_EQ(config->epoch, 3u);
  EXPECT_EQ(config->blocks.max_events, 500u);
  EXPECT_EQ(config->blocks.max_age, absl::Milliseconds(250));
  EXPECT_EQ(config->blocks.on_demand_spacing, absl::Milliseconds(40));
  EXPECT_EQ(config->retention.keep_newest, 4u);
  EXPECT_EQ(config->retention.max_blocks_behind, 32u);
  EXPECT_EQ(config->ssh.known_hosts_file, "/kh");
  EXPECT_FALSE(config->ssh.trust_unknown_host_key);
  EXPECT_EQ(config->shipping.watchdog, absl::Seconds(7));
  EXPECT_EQ(config->shipping.verdict_timeout, absl::Seconds(45));
  ASSERT_EQ(config->replicas.size(), 2u);
  EXPECT_EQ(config->replicas[0].endpoint.port, 22);
  EXPECT_EQ(config->replicas[1].endpoint.port, 2222);
  EXPECT_EQ(config->replicas[1].endpoint.user, "sl");
  EXPECT_EQ(config->replicas[1].receive_command, "x receive");
  EXPECT_TRUE(ValidatePrimaryConfig(*config).ok());
}

TEST_F(PrimaryConfigTest, ZstdLevelAndWorkersArePerReplica) {
  auto config = LoadPrimaryConfig(Write(R"(
ledger_root: /x
ssh: {identity_file: /k, known_hosts_file: /kh}
replicas:
  - {id: r1, host: h1, compression: zstd}
  - {id: r2, host: h2, compression: zstd, zstd_level: -3, zstd_workers: 0}
  - {id: r3, host: h3, compression: zstd, zstd_level: 19}
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->replicas.size(), 3u);
  EXPECT_EQ(config->replicas[0].zstd.level, 1);  // the defaults
  EXPECT_EQ(config->replicas[0].zstd.workers, 2);
  EXPECT_EQ(config->replicas[1].zstd.level, -3);
  EXPECT_EQ(config->replicas[1].zstd.workers, 0);
  EXPECT_EQ(config->replicas[2].zstd.level, 19);
  EXPECT_EQ(config->replicas[2].zstd.workers, 2);
}

TEST_F(PrimaryConfigTest, BadZstdSettingsAreNamed) {
  struct Case {
    std::string replica;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"{id: r1, host: h, compression: zstd, zstd_level: 20}",
            "replicas[0].zstd_level: zstd level 20 is outside -7..19"},
           {"{id: r1, host: h, compression: zstd, zstd_level: -8}",
            "replicas[0].zstd_level: zstd level -8 is outside -7..19"},
           {"{id: r1, host: h, compression: zstd, zstd_workers: 17}",
            "replicas[0].zstd_workers: zstd workers 17 is outside 0..16"},
           {"{id: r1, host: h, compression: zstd, zstd_workers: -1}",
            "replicas[0].zstd_workers: must be a non-negative integer, not '-1'"},
           {"{id: r1, host: h, zstd_level: 3}",
            "replicas[0].zstd_level: set, but the replica's compression is none, not zstd"},
           {"{id: r1, host: h, compression: none, zstd_workers: 1}",
            "replicas[0].zstd_workers: set, but the replica's compression is none, not zstd"},
       }) {
    auto config = LoadPrimaryConfig(Write("ledger_root: /x\nreplicas:\n  - " + c.replica + "\n"));
    ASSERT_FALSE(config.ok()) << c.replica;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.replica;
    EXPECT_NE(config.status().message().find(c.message), std::string::npos)
        << c.replica << ": " << config.status();
  }
}

TEST_F(PrimaryConfigTest, UnknownKeyIsNamed) {
  auto config = LoadPrimaryConfig(Write("ledger_root: /x\nblocks: {every_event: 5}\n"));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("blocks.every_event: unknown setting"),
            std::string::npos)
      << config.status();
}

TEST_F(PrimaryConfigTest, BadValueNamesTheKeyAndIndex) {
  auto config =
      LoadPrimaryConfig(Write("ledger_root: /x\nreplicas:\n  - {id: r1, host: h, port: abc}\n"));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("replicas[0].port"), std::string::npos)
      << config.status();
}

TEST_F(PrimaryConfigTest, SyntaxErrorNamesTheLine) {
  auto config = LoadPrimaryConfig(Write("ledger_root: /x\nblocks: {every_events: 5\n"));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("line "), std::string::npos) << config.status();
}

TEST_F(PrimaryConfigTest, ReplicasNeedKnownHosts) {
  auto config = LoadPrimaryConfig(
      Write("ledger_root: /x\nssh: {identity_file: /k}\nreplicas:\n  - {id: r1, host: h}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  absl::Status s = ValidatePrimaryConfig(*config);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("known_hosts_file"), std::string::npos);
}

TEST_F(PrimaryConfigTest, DuplicateReplicaIdsAreRejected) {
  auto config = LoadPrimaryConfig(
      Write("ledger_root: /x\nssh: {identity_file: /k, known_hosts_file: /kh}\nreplicas:\n"
            "  - {id: r1, host: a}\n  - {id: r1, host: b}\n"));
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ValidatePrimaryConfig(*config)));
}

TEST_F(PrimaryConfigTest, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(LoadPrimaryConfig(dir_.Sub("nope.yaml")).status()));
}

}  // namespace
}  // namespace snapledger
