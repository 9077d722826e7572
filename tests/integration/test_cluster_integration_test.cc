// The test cluster itself, without the daemons: hosts in their own namespaces reach each other
// over the bridge; the primary's key ships a block into a replica through that replica's sshd
// and its forced `snapledger-receive`, and can do nothing else; daemons are started
// and stopped by recorded pid; a cut link stalls traffic; teardown leaves nothing behind.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/posix_file.h"
#include "common/ledger/head_file.h"
#include "tests/integration/test_cluster.h"

namespace snapledger::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

ClusterOptions Replicas(int n) {
  ClusterOptions options;
  options.replicas = n;
  return options;
}

// True when address:port accepts a TCP connection within `timeout_ms`, dialled from this
// process (the root namespace, through the bridge).
bool Accepts(const std::string& address, int port, int timeout_ms = 1000) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) return false;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  return ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

// True when `pid` has exited (a zombie left to an init that does not reap counts as exited).
bool ProcessGone(pid_t pid) {
  auto stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return true;
  size_t paren = stat->rfind(") ");
  return paren != std::string::npos && stat->compare(paren + 2, 1, "Z") == 0;
}

std::string Sh(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& a : argv) absl::StrAppend(&line, line.empty() ? "" : " ", "'", a, "'");
  return line;
}

// `ssh` from the primary to `host` with the primary's key (or `identity`), checking the host
// key strictly.
std::vector<std::string> SshArgv(const TestCluster& cluster, const std::string& host,
                                 const std::string& remote_command, std::string identity = "") {
  if (identity.empty()) identity = cluster.identity_file();
  return {"ssh",
          "-i",
          identity,
          "-o",
          "UserKnownHostsFile=" + cluster.known_hosts_file(),
          "-o",
          "StrictHostKeyChecking=yes",
          "-o",
          "BatchMode=yes",
          "-o",
          "ConnectTimeout=5",
          "-F",
          "/dev/null",
          "root@" + cluster.host(host).address,
          remote_command};
}

// Everything with the cluster's tag or under its directory, as found on the machine now.
std::vector<std::string> Leftovers(const std::string& tag, const std::string& dir) {
  std::vector<std::string> left;
  auto lines = [](const std::vector<std::string>& argv) {
    auto out = RunCommand(*ProcessRunner::Real(), argv);
    std::vector<std::string> result;
    if (out.ok()) result = absl::StrSplit(out->stdout_text, '\n', absl::SkipEmpty());
    return result;
  };
  for (const std::string& l : lines({"ip", "netns", "list"}))
    if (absl::StartsWith(l, "sl" + tag + "-")) left.push_back("netns " + l);
  for (const std::string& l : lines({"ip", "-o", "link", "show"}))
    if (absl::StrContains(l, "sl" + tag) || absl::StrContains(l, "slbr" + tag))
      left.push_back("link " + l);
  for (const std::string& l : lines({"losetup", "-l", "-n", "-O", "NAME,BACK-FILE"}))
    if (absl::StrContains(l, dir)) left.push_back("loop " + l);
  auto mounts = ReadFileToString("/proc/self/mountinfo");
  if (mounts.ok()) {
    std::vector<std::string> mount_lines = absl::StrSplit(*mounts, '\n');
    for (const std::string& l : mount_lines)
      if (absl::StrContains(l, dir)) left.push_back("mount " + l);
  }
  if (std::filesystem::exists(dir)) left.push_back("dir " + dir);
  return left;
}

// A primary ledger made with the `snapledger` CLI inside the primary's namespace, with one
// block cut from `events` events. Returns the block's name.
absl::StatusOr<std::string> MakePrimaryBlock(TestCluster& cluster, int events) {
  std::string cli = cluster.BinaryPath("snapledger");
  if (cli.empty()) return absl::FailedPreconditionError("snapledger is not built");
  const std::string& root = cluster.primary().ledger_root;
  RETURN_IF_ERROR(cluster.ExecOk("primary", {cli, "--root", root, "init"}).status());
  std::string bodies;
  for (int i = 1; i <= events; ++i)
    absl::StrAppend(&bodies, "{\"event\":\"port_moved\",\"port\":\"tap", i,
                    "\",\"to_vlan\":", i % 4000, "}\n");
  RETURN_IF_ERROR(WriteFileAtomic(cluster.dir() + "/events.in", bodies));
  RETURN_IF_ERROR(cluster
                      .ExecOk("primary", {"sh", "-c",
                                          Sh({cli, "--root", root, "append"}) + " < " +
                                              cluster.dir() + "/events.in"})
                      .status());
  ASSIGN_OR_RETURN(std::string cut, cluster.ExecOk("primary", {cli, "--root", root, "snapshot"}));
  absl::string_view name = cut;
  if (!absl::ConsumePrefix(&name, "cut block "))
    return absl::InternalError("unexpected snapshot output: " + cut);
  return std::string(absl::StripAsciiWhitespace(name));
}

TEST(TestCluster, PrimaryShipsABlockThroughEachReplicasSshd) {
  std::string tag, dir;
  {
    ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(2));
    tag = cluster->tag();
    dir = cluster->dir();
    ASSERT_EQ(cluster->hosts().size(), 3u);
    EXPECT_EQ(cluster->primary().netns, "sl" + tag + "-primary");
    EXPECT_THAT(cluster->replica_names(), ::testing::ElementsAre("r1", "r2"));

    auto block = MakePrimaryBlock(*cluster, 1000);
    ASSERT_TRUE(block.ok()) << block.status();
    std::string block_dir = cluster->primary().ledger_root + "/blocks/" + *block;
    auto head = ReadHeadFile(block_dir);
    ASSERT_TRUE(head.ok() && head->has_value()) << head.status();
    ASSERT_EQ((*head)->head.seq, 1000u);

    for (const std::string& r : cluster->replica_names()) {
      std::string receive =
          absl::StrCat("snapledger-receive --block ", *block, " --epoch 1 --head-seq ",
                       (*head)->head.seq, " --head-hash ", (*head)->head.hash);
      auto shipped = cluster->Exec("primary", {"sh", "-c",
                                               absl::StrCat("btrfs send -q ", block_dir, " | ",
                                                            Sh(SshArgv(*cluster, r, receive)))});
      ASSERT_TRUE(shipped.ok()) << shipped.status();
      ASSERT_TRUE(shipped->exit.ok()) << shipped->exit.ToString() << ": " << shipped->stderr_text;
      EXPECT_THAT(shipped->stdout_text, HasSubstr("\"events_verified\":1000"));

      // The replica holds the verified block, byte for byte the primary's log.
      std::string held = cluster->host(r).ledger_root + "/blocks/" + *block;
      auto replica_head = ReadHeadFile(held);
      ASSERT_TRUE(replica_head.ok() && replica_head->has_value()) << replica_head.status();
      EXPECT_EQ(**replica_head, **head);
      EXPECT_EQ(*ReadFileToString(held + "/" + kEventsFile),
                *ReadFileToString(block_dir + "/" + kEventsFile));
    }
    // Each replica's filesystem is its own: r2 did not see r1's copy arrive.
    EXPECT_NE(cluster->host("r1").mount_point, cluster->host("r2").mount_point);
  }
  EXPECT_THAT(Leftovers(tag, dir), ::testing::IsEmpty());
}

TEST(TestCluster, PrimaryKeyCanRunNothingButReceive) {
  ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(1));
  auto out = cluster->Exec("primary", SshArgv(*cluster, "r1", "cat /etc/passwd"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->exit.code, 2) << out->stderr_text;  // refused by the forced command
  EXPECT_THAT(out->stdout_text, Not(HasSubstr("root:")));
  EXPECT_THAT(out->stderr_text, HasSubstr("may only run `snapledger-receive`"));

  // The root comes from authorized_keys, never from the primary.
  out = cluster->Exec("primary", SshArgv(*cluster, "r1",
                                         "snapledger-receive --root /tmp --block "
                                         "block-000000000001-0123456789ab --epoch 1"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->exit.code, 2) << out->stderr_text;

  // A key the replica does not know is not let in at all.
  std::string stranger = cluster->dir() + "/stranger";
  ASSERT_TRUE(RunCommandOk(*ProcessRunner::Real(),
                           {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger})
                  .ok());
  out = cluster->Exec("primary", SshArgv(*cluster, "r1", "snapledger-receive", stranger));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->exit.code, 255);
  EXPECT_THAT(out->stderr_text, HasSubstr("Permission denied"));
}

TEST(TestCluster, HostsReachEachOtherAndTheTestProcessOverTheBridge) {
  ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(2));
  for (const ClusterHost& h : cluster->hosts()) EXPECT_TRUE(Accepts(h.address, 22)) << h.name;
  // Inside a host's namespace its own address is local and the others are one hop away.
  auto ip = cluster->ExecOk("r2", {"ip", "-o", "-4", "addr", "show", "eth0"});
  ASSERT_TRUE(ip.ok()) << ip.status();
  EXPECT_THAT(*ip, HasSubstr(cluster->host("r2").address + "/24"));
  auto reach =
      cluster->Exec("r2", {"bash", "-c", "exec 3<>/dev/tcp/" + cluster->primary().address + "/22"},
                    absl::Seconds(5));
  ASSERT_TRUE(reach.ok()) << reach.status();
  EXPECT_TRUE(reach->exit.ok()) << reach->stderr_text;
}

TEST(TestCluster, LinkDownCutsAHostOffUntilLinkUp) {
  ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(1));
  const std::string& r1 = cluster->host("r1").address;
  ASSERT_TRUE(Accepts(r1, 22));
  ASSERT_TRUE(cluster->LinkDown("r1").ok());
  EXPECT_FALSE(Accepts(r1, 22, 500));
  auto from_primary = cluster->Exec("primary", SshArgv(*cluster, "r1", "x"), absl::Seconds(3));
  EXPECT_TRUE(absl::IsDeadlineExceeded(from_primary.status()) ||
              (from_primary.ok() && !from_primary->exit.ok()));
  auto status = cluster->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("host name=r1 "));
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(*status, '\n'))) {
    if (absl::StartsWith(line, "host ")) {
      EXPECT_THAT(line,
                  HasSubstr(absl::StartsWith(line, "host name=r1 ") ? " link=down " : " link=up "));
    }
  }
  ASSERT_TRUE(cluster->LinkUp("r1").ok());
  EXPECT_TRUE(Accepts(r1, 22, 5000));
}

TEST(TestCluster, StopTermsTheRecordedDaemonAndKillsOneThatIgnoresTerm) {
  ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(2));
  ASSERT_TRUE(cluster->StartDaemonCommand("r1", {"sleep", "1000"}).ok());
  auto pid = cluster->DaemonPid("r1");
  ASSERT_TRUE(pid.ok() && pid->has_value()) << pid.status();
  // It runs inside r1's namespace.
  auto ns = RunCommandOk(*ProcessRunner::Real(), {"ip", "netns", "identify", absl::StrCat(**pid)});
  ASSERT_TRUE(ns.ok()) << ns.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*ns), cluster->host("r1").netns);
  EXPECT_FALSE(cluster->StartDaemonCommand("r1", {"sleep", "1000"}).ok()) << "already running";

  auto stopped = cluster->StopDaemon("r1");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, StopOutcome::kTerminated);
  EXPECT_TRUE(ProcessGone(**pid));
  EXPECT_EQ(*cluster->DaemonPid("r1"), std::nullopt);

  ASSERT_TRUE(
      cluster->StartDaemonCommand("r2", {"sh", "-c", "trap '' TERM; exec sleep 1000"}).ok());
  stopped = cluster->StopDaemon("r2", absl::Seconds(1));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, StopOutcome::kKilled);

  ASSERT_TRUE(cluster->StartDaemonCommand("r2", {"sleep", "1000"}).ok());
  EXPECT_TRUE(cluster->KillDaemon("r2").ok());
  EXPECT_EQ(*cluster->DaemonPid("r2"), std::nullopt);
  EXPECT_EQ(*cluster->StopDaemon("r2"), StopOutcome::kNotRunning);

  // Its output went to the host's log.
  ASSERT_TRUE(
      cluster->StartDaemonCommand("r1", {"sh", "-c", "echo hello from r1; exec sleep 1000"}).ok());
  auto log_has_hello = [&] {
    auto log = ReadFileToString(cluster->host("r1").log_path);
    return log.ok() && absl::StrContains(*log, "hello from r1");
  };
  for (int i = 0; i < 250 && !log_has_hello(); ++i) ::usleep(20000);  // up to 5 s
  EXPECT_TRUE(log_has_hello());
  // Left running: teardown stops it.
}

TEST(TestCluster, ConfigHookEditsEachHostsConfig) {
  ClusterOptions options = Replicas(1);
  options.edit_config = [](const ClusterHost& host, YAML::Node& config) {
    if (host.name == "primary") config["blocks"]["every_events"] = 100;
    config["extra_for_test"] = host.name;
  };
  ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, options);
  YAML::Node primary = YAML::LoadFile(cluster->primary().config_path);
  EXPECT_EQ(primary["blocks"]["every_events"].as<int>(), 100);
  EXPECT_EQ(primary["blocks"]["interval_ms"].as<int>(), 200);
  EXPECT_EQ(primary["grpc_listen"].as<std::string>(), cluster->primary().grpc_address);
  EXPECT_EQ(primary["replicas"][0]["host"].as<std::string>(), cluster->host("r1").address);
  EXPECT_EQ(primary["ssh"]["identity_file"].as<std::string>(), cluster->identity_file());
  YAML::Node r1 = YAML::LoadFile(cluster->host("r1").config_path);
  EXPECT_EQ(r1["extra_for_test"].as<std::string>(), "r1");
  EXPECT_EQ(r1["primary_grpc"].as<std::string>(), cluster->primary().grpc_address);
  EXPECT_EQ(r1["ledger_root"].as<std::string>(), cluster->host("r1").ledger_root);
}

TEST(TestCluster, TeardownRemovesEverythingItCreatedEvenWithSessionsOpen) {
  std::string tag, dir;
  {
    ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(2));
    tag = cluster->tag();
    dir = cluster->dir();
    ASSERT_FALSE(Leftovers(tag, dir).empty());
    ASSERT_TRUE(cluster->StartDaemonCommand("primary", {"sleep", "1000"}).ok());
    // A process keeping r1's filesystem busy and an ssh session into r2, both still open when
    // the cluster is destroyed.
    ASSERT_TRUE(
        cluster
            ->StartDaemonCommand(
                "r1", {"sh", "-c", "cd " + cluster->host("r1").mount_point + " && exec sleep 1000"})
            .ok());
    ASSERT_TRUE(
        cluster
            ->StartDaemonCommand(
                "r2", {"sh", "-c",
                       "sleep 1000 | " + Sh(SshArgv(*cluster, "r2",
                                                    "snapledger-receive --block "
                                                    "block-000000000001-0123456789ab --epoch 1"))})
            .ok());
  }
  EXPECT_THAT(Leftovers(tag, dir), ::testing::IsEmpty());
}

// True when `binary` (may be empty) exists and knows `subcommand` (a daemon still being written
// may lack it).
bool HasSubcommand(const std::string& binary, const std::string& subcommand) {
  if (binary.empty()) return false;
  auto out = RunCommand(*ProcessRunner::Real(), {binary, "--help"});
  return out.ok() && absl::StrContains(out->stdout_text, "\n  " + subcommand + " ");
}

TEST(TestCluster, RealDaemonsStartAndStopWhenBuilt) {
  ASSIGN_TEST_CLUSTER_OR_SKIP(auto cluster, Replicas(1));
  std::string primary_bin = cluster->BinaryPath("snapledger-primary");
  if (primary_bin.empty()) GTEST_SKIP() << "snapledger-primary is not built yet";
  auto log = [&](const std::string& host) {
    return ReadFileToString(cluster->host(host).log_path).value_or("(no log)");
  };
  absl::Status started = cluster->StartDaemon("primary");
  ASSERT_TRUE(started.ok()) << started << "\n" << log("primary");
  EXPECT_TRUE(Accepts(cluster->primary().address, 7400));
  if (HasSubcommand(cluster->BinaryPath("snapledger-replica"), "serve")) {
    started = cluster->StartDaemon("r1");
    ASSERT_TRUE(started.ok()) << started << "\n" << log("r1");
    auto stopped = cluster->StopDaemon("r1");
    ASSERT_TRUE(stopped.ok()) << stopped.status();
    EXPECT_EQ(*stopped, StopOutcome::kTerminated) << log("r1");
  } else {
    std::cerr << "note: snapledger-replica has no `serve` yet; only the primary was started\n";
  }
  auto stopped = cluster->StopDaemon("primary");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, StopOutcome::kTerminated) << log("primary");
}

}  // namespace
}  // namespace snapledger::testing
