#include "tests/integration/test_cluster.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/posix_file.h"

#ifndef SNAPLEDGER_SOURCE_DIR
#error "SNAPLEDGER_SOURCE_DIR must name the source tree (for scripts/cluster.sh)"
#endif
#ifndef SNAPLEDGER_CLUSTER_BIN_PATH
#error "SNAPLEDGER_CLUSTER_BIN_PATH must list the directories of this build's binaries"
#endif

namespace snapledger::testing {
namespace {

constexpr char kScript[] = SNAPLEDGER_SOURCE_DIR "/scripts/cluster.sh";
// Exit codes of cluster.sh (its header) and of timeout(1).
constexpr int kScriptUnavailable = 3;
constexpr int kTimedOut = 124;

std::string Seconds(absl::Duration d) {
  return absl::StrCat(static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(d))));
}

// "key=value key=value ..." (values have no spaces: cluster.sh only accepts plain paths).
std::map<std::string, std::string> ParseFields(const std::string& line) {
  std::map<std::string, std::string> fields;
  std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  for (const std::string& word : words) {
    std::pair<std::string, std::string> kv = absl::StrSplit(word, absl::MaxSplits('=', 1));
    fields[kv.first] = kv.second;
  }
  return fields;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// Runs `args` under timeout(1), so a hung step is killed rather than hanging the test.
absl::StatusOr<CommandOutput> RunBounded(const std::vector<std::string>& args,
                                         absl::Duration timeout) {
  std::vector<std::string> argv = {"timeout", "-k", "5", Seconds(timeout)};
  argv.insert(argv.end(), args.begin(), args.end());
  ASSIGN_OR_RETURN(CommandOutput out, RunCommand(*ProcessRunner::Real(), argv));
  if (out.exit.code == kTimedOut)
    return absl::DeadlineExceededError(absl::StrCat("`", CommandLineForMessages(args),
                                                    "` ran longer than ", Seconds(timeout),
                                                    " s: ", out.stderr_text));
  return out;
}

}  // namespace

absl::StatusOr<TestClusterPtr> TestCluster::Create(ClusterOptions options) {
  if (::geteuid() != 0)
    return absl::FailedPreconditionError(
        "a test cluster needs root (network namespaces, loop devices, mounts)");
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "snapledger-cluster-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus("mkdtemp", errno);
  TestClusterPtr cluster(new TestCluster(tmpl));
  cluster->bin_path_ = options.bin_path.empty() ? SNAPLEDGER_CLUSTER_BIN_PATH : options.bin_path;
  ASSIGN_OR_RETURN(
      std::string status,
      cluster->RunScript({"up", "--replicas", absl::StrCat(options.replicas), "--image-mb",
                          absl::StrCat(options.image_mb), "--bin-dir", cluster->bin_path_},
                         absl::Seconds(60 + 15 * options.replicas)));
  RETURN_IF_ERROR(cluster->ParseStatus(status));
  if (options.edit_config) RETURN_IF_ERROR(cluster->EditConfigs(options));
  return cluster;
}

TestCluster::~TestCluster() {
  if (down_) return;
  // Logs stay after a failed test (and always with SNAPLEDGER_KEEP_CLUSTER_LOGS=1, see Down).
  bool keep_logs = ::testing::Test::HasFailure();
  absl::Status st = Down(keep_logs);
  if (!st.ok())
    std::fprintf(stderr, "TestCluster: teardown of %s failed: %s\n", dir_.c_str(),
                 std::string(st.message()).c_str());
  else if (keep_logs)
    std::fprintf(stderr, "TestCluster: the test failed; daemon and sshd logs kept in %s\n",
                 dir_.c_str());
  // A cluster whose `up` stopped before it marked the directory leaves it empty.
  std::error_code ec;
  if (std::filesystem::is_empty(dir_, ec)) std::filesystem::remove(dir_, ec);
}

std::vector<std::string> TestCluster::ScriptArgv(const std::vector<std::string>& args) const {
  // cluster.sh wants the subcommand (and its host) before the options, and `--` last.
  std::vector<std::string> argv = {"bash", kScript};
  bool has_host = !args.empty() && args[0] != "up" && args[0] != "down" && args[0] != "status";
  size_t head = std::min<size_t>(has_host ? 2 : 1, args.size());
  argv.insert(argv.end(), args.begin(), args.begin() + head);
  argv.insert(argv.end(), {"--dir", dir_});
  argv.insert(argv.end(), args.begin() + head, args.end());
  return argv;
}

absl::StatusOr<std::string> TestCluster::RunScript(const std::vector<std::string>& args,
                                                   absl::Duration timeout) {
  std::vector<std::string> argv = ScriptArgv(args);
  ASSIGN_OR_RETURN(CommandOutput out, RunBounded(argv, timeout));
  if (out.exit.code == kScriptUnavailable)
    return absl::FailedPreconditionError(absl::StripTrailingAsciiWhitespace(out.stderr_text));
  RETURN_IF_ERROR(ExitToStatus(argv, out.exit, out.stderr_text));
  return out.stdout_text;
}

absl::Status TestCluster::ParseStatus(const std::string& status_text) {
  hosts_.clear();
  for (const std::string& line : Lines(status_text)) {
    auto f = ParseFields(line);
    if (absl::StartsWith(line, "cluster ")) {
      tag_ = f["tag"];
      bridge_ = f["bridge"];
      gateway_ = f["gateway"];
      identity_file_ = f["identity"];
      known_hosts_file_ = f["known_hosts"];
    } else if (absl::StartsWith(line, "host ")) {
      ClusterHost h;
      h.name = f["name"];
      h.netns = f["netns"];
      h.address = f["address"];
      h.ledger_root = f["ledger_root"];
      h.mount_point = absl::StrCat(dir_, "/", h.name, "/mnt");
      h.grpc_address = f["grpc"];
      h.metrics_address = f["metrics"];
      h.config_path = f["config"];
      h.log_path = f["log"];
      hosts_.push_back(std::move(h));
    }
  }
  if (tag_.empty() || hosts_.empty() || hosts_.front().name != "primary")
    return absl::InternalError(absl::StrCat("cannot read cluster.sh status:\n", status_text));
  return absl::OkStatus();
}

absl::Status TestCluster::EditConfigs(const ClusterOptions& options) {
  for (const ClusterHost& h : hosts_) {
    YAML::Node config;
    try {
      config = YAML::LoadFile(h.config_path);
    } catch (const YAML::Exception& e) {
      return absl::InternalError(absl::StrCat("parse ", h.config_path, ": ", e.what()));
    }
    options.edit_config(h, config);
    YAML::Emitter out;
    out << config;
    RETURN_IF_ERROR(WriteFileAtomic(h.config_path, std::string(out.c_str()) + "\n"));
  }
  return absl::OkStatus();
}

std::vector<std::string> TestCluster::replica_names() const {
  std::vector<std::string> names;
  for (size_t i = 1; i < hosts_.size(); ++i) names.push_back(hosts_[i].name);
  return names;
}

const ClusterHost& TestCluster::host(const std::string& name) const {
  for (const ClusterHost& h : hosts_)
    if (h.name == name) return h;
  std::fprintf(stderr, "TestCluster: no host named '%s'\n", name.c_str());
  std::abort();
}

SshEndpoint TestCluster::SshEndpointOf(const std::string& name) const {
  SshEndpoint e;
  e.host = host(name).address;
  e.port = 22;
  e.user = "root";
  e.identity_file = identity_file_;
  e.known_hosts_file = known_hosts_file_;
  return e;
}

std::string TestCluster::BinaryPath(const std::string& program) const {
  std::vector<std::string> dirs = absl::StrSplit(bin_path_, ':', absl::SkipEmpty());
  for (const std::string& d : dirs) {
    std::string path = absl::StrCat(d, "/", program);
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

absl::Status TestCluster::StartDaemon(const std::string& host_name, absl::Duration wait) {
  host(host_name);
  return RunScript({"start", std::string(host_name), "--wait", Seconds(wait)},
                   wait + absl::Seconds(30))
      .status();
}

absl::Status TestCluster::StartDaemonCommand(const std::string& host_name,
                                             const std::vector<std::string>& argv) {
  host(host_name);
  std::vector<std::string> args = {"start", std::string(host_name), "--"};
  args.insert(args.end(), argv.begin(), argv.end());
  return RunScript(args, absl::Seconds(30)).status();
}

absl::StatusOr<StopOutcome> TestCluster::StopDaemon(const std::string& host_name,
                                                    absl::Duration grace) {
  host(host_name);
  ASSIGN_OR_RETURN(std::string out,
                   RunScript({"stop", std::string(host_name), "--timeout", Seconds(grace)},
                             grace + absl::Seconds(30)));
  std::string result = ParseFields(std::string(absl::StripTrailingAsciiWhitespace(out)))["result"];
  if (result == "term") return StopOutcome::kTerminated;
  if (result == "kill") return StopOutcome::kKilled;
  if (result == "not-running") return StopOutcome::kNotRunning;
  return absl::InternalError(absl::StrCat("unexpected output of cluster.sh stop: ", out));
}

absl::Status TestCluster::KillDaemon(const std::string& host_name) {
  host(host_name);
  return RunScript({"kill", std::string(host_name)}, absl::Seconds(30)).status();
}

absl::StatusOr<std::optional<pid_t>> TestCluster::DaemonPid(const std::string& host_name) {
  host(host_name);
  ASSIGN_OR_RETURN(std::string status, Status());
  for (const std::string& line : Lines(status)) {
    if (!absl::StartsWith(line, "host ")) continue;
    auto f = ParseFields(line);
    if (f["name"] != host_name) continue;
    if (f["daemon"] != "running") return std::nullopt;
    pid_t pid = 0;
    if (!absl::SimpleAtoi(f["pid"], &pid))
      return absl::InternalError(absl::StrCat("bad status line: ", line));
    return pid;
  }
  return absl::InternalError(absl::StrCat("no status line for ", host_name));
}

absl::Status TestCluster::LinkDown(const std::string& host_name) {
  host(host_name);
  return RunScript({"link-down", std::string(host_name)}, absl::Seconds(30)).status();
}

absl::Status TestCluster::LinkUp(const std::string& host_name) {
  host(host_name);
  return RunScript({"link-up", std::string(host_name)}, absl::Seconds(30)).status();
}

absl::StatusOr<CommandOutput> TestCluster::Exec(const std::string& host_name,
                                                const std::vector<std::string>& argv,
                                                absl::Duration timeout) {
  host(host_name);
  std::vector<std::string> args = {"exec", std::string(host_name), "--"};
  args.insert(args.end(), argv.begin(), argv.end());
  return RunBounded(ScriptArgv(args), timeout);
}

absl::StatusOr<std::string> TestCluster::ExecOk(const std::string& host_name,
                                                const std::vector<std::string>& argv,
                                                absl::Duration timeout) {
  ASSIGN_OR_RETURN(CommandOutput out, Exec(host_name, argv, timeout));
  RETURN_IF_ERROR(ExitToStatus(argv, out.exit, out.stderr_text));
  return out.stdout_text;
}

absl::StatusOr<std::string> TestCluster::Status() {
  return RunScript({"status"}, absl::Seconds(30));
}

absl::Status TestCluster::Down(bool keep_logs) {
  if (down_) return absl::OkStatus();
  // For benchmarks and debugging: keep every cluster's logs and configs.
  const char* keep_env = std::getenv("SNAPLEDGER_KEEP_CLUSTER_LOGS");
  if (keep_env != nullptr && std::string(keep_env) == "1") keep_logs = true;
  std::vector<std::string> args = {"down"};
  if (keep_logs) args.push_back("--keep-logs");
  absl::Status st = RunScript(args, absl::Seconds(120)).status();
  if (st.ok()) down_ = true;
  return st;
}

}  // namespace snapledger::testing
