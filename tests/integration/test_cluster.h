// A snapledger test cluster on one machine: a primary and N replicas, each a network namespace
// on a private bridge with its own loop-mounted btrfs, its own OpenSSH sshd (whose
// authorized_keys restricts the primary's key to `snapledger-receive --root <its
// ledger root>`) and, once started, its own daemon. scripts/cluster.sh does all the work (it is
// the single implementation, usable by hand: docs/TEST_CLUSTER.md); this class runs it.
//
// The test process stays in the root namespace and reaches every host's address through the
// bridge, so gRPC and metrics ports are dialled directly. Clusters use a random tag in every
// name and their own subnet, so tests running in parallel do not collide.
//
// Lifetime: the destructor runs `cluster.sh down`, which stops the daemons and sshds the
// cluster started (by recorded pid), unmounts, detaches the loop devices and deletes the
// namespaces, the bridge and the cluster directory, also when the test failed (then the logs
// and configs are kept, and their directory is printed). Not thread-safe: one thread drives a
// cluster. Every script run is bounded by a timeout.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/process.h"
#include "common/base/status_macros.h"
#include "common/transport/ssh_transport.h"

namespace YAML {
class Node;
}

namespace snapledger::testing {

// One host of a cluster. Plain data, valid for the cluster's lifetime.
struct ClusterHost {
  std::string name;             // "primary", "r1", "r2", ...
  std::string netns;            // its network namespace, e.g. "sl1f2a-r1"
  std::string address;          // its IPv4 address on the bridge, e.g. "10.231.42.2"
  std::string ledger_root;      // <dir>/<name>/mnt/ledger on its own btrfs (made by the daemon)
  std::string mount_point;      // <dir>/<name>/mnt, the root of its btrfs
  std::string grpc_address;     // "address:7400"
  std::string metrics_address;  // "address:9400" (http://<this>/metrics)
  std::string config_path;      // primary.yaml or replica.yaml
  std::string log_path;         // the daemon's stdout and stderr
};

struct ClusterOptions {
  int replicas = 2;
  int image_mb = 256;
  // Colon-separated directories holding snapledger, snapledger-primary and snapledger-replica;
  // empty: this build's (SNAPLEDGER_CLUSTER_BIN_PATH).
  std::string bin_path;
  // Called once per host after `up` wrote its daemon config and before anything starts: edit
  // `config` (the parsed primary.yaml or replica.yaml) and it is written back.
  std::function<void(const ClusterHost& host, YAML::Node& config)> edit_config;
};

// How StopDaemon ended the daemon.
enum class StopOutcome {
  kNotRunning,  // no daemon was running
  kTerminated,  // it exited within the grace period after SIGTERM
  kKilled,      // it ignored SIGTERM for the grace period and was killed with SIGKILL
};

class TestCluster;
using TestClusterPtr = std::unique_ptr<TestCluster>;

class TestCluster {
 public:
  // Brings a cluster up in a new temporary directory. FailedPrecondition, naming what is
  // missing, when the machine cannot run one (not root, no network namespaces, no loop
  // devices, no mkfs.btrfs or sshd, snapledger-replica not built): tests skip on it
  // (ASSIGN_TEST_CLUSTER_OR_SKIP). Anything it created is removed when it fails.
  static absl::StatusOr<TestClusterPtr> Create(ClusterOptions options = {});
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  const std::string& dir() const { return dir_; }
  // Four hex digits naming this cluster's namespaces ("sl<tag>-..."), links and bridge
  // ("slbr<tag>").
  const std::string& tag() const { return tag_; }
  const std::string& bridge() const { return bridge_; }
  // The bridge's own address (the root namespace's side, where this process talks from).
  const std::string& gateway() const { return gateway_; }
  // All hosts, primary first, then r1, r2, ...
  const std::vector<ClusterHost>& hosts() const { return hosts_; }
  const ClusterHost& primary() const { return hosts_.front(); }
  // The replica hosts' names, "r1", "r2", ...
  std::vector<std::string> replica_names() const;
  // The host called `name`; aborts when there is none (a bug in the test).
  const ClusterHost& host(const std::string& name) const;

  // The primary's ssh client key and its known_hosts (every host's key for its address).
  const std::string& identity_file() const { return identity_file_; }
  const std::string& known_hosts_file() const { return known_hosts_file_; }
  // How the primary reaches `host`'s sshd as root with that key (dial it from inside the
  // primary's namespace, or from this process through the bridge).
  SshEndpoint SshEndpointOf(const std::string& host) const;
  // The full path of `program` in the cluster's binary path; empty when it is not there.
  std::string BinaryPath(const std::string& program) const;

  // Starts the host's daemon (snapledger-primary --config ... or snapledger-replica serve
  // --config ...) inside its namespace, output to its log_path. With a non-zero `wait`, returns
  // once its gRPC port accepts connections; an error quoting the log's tail if it exits first
  // or does not listen in time. FailedPrecondition when the binary is not built.
  absl::Status StartDaemon(const std::string& host, absl::Duration wait = absl::Seconds(20));
  // Starts `argv` as the host's daemon instead of the real one (a stand-in, or a daemon with
  // extra flags); StopDaemon/KillDaemon treat it the same way.
  absl::Status StartDaemonCommand(const std::string& host, const std::vector<std::string>& argv);
  // SIGTERM, up to `grace` for it to exit, then SIGKILL.
  absl::StatusOr<StopOutcome> StopDaemon(const std::string& host,
                                         absl::Duration grace = absl::Seconds(10));
  // SIGKILL at once (a crash). OK when none was running.
  absl::Status KillDaemon(const std::string& host);
  // The running daemon's pid, or nullopt.
  absl::StatusOr<std::optional<pid_t>> DaemonPid(const std::string& host);

  // Cuts the host off the bridge: its packets are dropped silently (connections stall, as on
  // a pulled cable) until LinkUp. Its own interface and address stay configured.
  absl::Status LinkDown(const std::string& host);
  absl::Status LinkUp(const std::string& host);

  // Runs `argv` inside the host's network namespace (sharing this process's filesystem view)
  // to completion, stdin from /dev/null, collecting its output. A failing exit is in
  // CommandOutput::exit; DeadlineExceeded when it ran longer than `timeout` (it is killed).
  absl::StatusOr<CommandOutput> Exec(const std::string& host, const std::vector<std::string>& argv,
                                     absl::Duration timeout = absl::Seconds(60));
  // Like Exec, but a failing exit is an error quoting stderr. Returns stdout.
  absl::StatusOr<std::string> ExecOk(const std::string& host, const std::vector<std::string>& argv,
                                     absl::Duration timeout = absl::Seconds(60));

  // `cluster.sh status`: one line for the cluster and one per host.
  absl::StatusOr<std::string> Status();

  // Tears the cluster down now (the destructor does it otherwise). With `keep_logs` the logs
  // and configs stay in dir(); SNAPLEDGER_KEEP_CLUSTER_LOGS=1 in the environment keeps them
  // always. Idempotent.
  absl::Status Down(bool keep_logs = false);

 private:
  explicit TestCluster(std::string dir) : dir_(std::move(dir)) {}
  std::vector<std::string> ScriptArgv(const std::vector<std::string>& args) const;
  absl::StatusOr<std::string> RunScript(const std::vector<std::string>& args,
                                        absl::Duration timeout);
  absl::Status ParseStatus(const std::string& status_text);
  absl::Status EditConfigs(const ClusterOptions& options);

  std::string dir_;
  std::string bin_path_;
  std::string tag_, bridge_, gateway_;
  std::string identity_file_, known_hosts_file_;
  std::vector<ClusterHost> hosts_;
  bool down_ = false;
};

}  // namespace snapledger::testing

// Assigns a new TestClusterPtr to `lhs` (a variable, member or declaration such as `auto c`),
// skipping the test with the reason when the machine cannot run a cluster and failing it on
// other errors.
#define ASSIGN_TEST_CLUSTER_OR_SKIP(lhs, options)                                    \
  auto SNAPLEDGER_CONCAT(_cluster_, __LINE__) =                                      \
      ::snapledger::testing::TestCluster::Create(options);                           \
  if (absl::IsFailedPrecondition(SNAPLEDGER_CONCAT(_cluster_, __LINE__).status())) { \
    GTEST_SKIP() << SNAPLEDGER_CONCAT(_cluster_, __LINE__).status().message();       \
  }                                                                                  \
  ASSERT_TRUE(SNAPLEDGER_CONCAT(_cluster_, __LINE__).ok())                           \
      << SNAPLEDGER_CONCAT(_cluster_, __LINE__).status();                            \
  lhs = std::move(*SNAPLEDGER_CONCAT(_cluster_, __LINE__))
