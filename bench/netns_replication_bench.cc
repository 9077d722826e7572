// snapledger-netns-replication-bench: bootstrap replication (a full block of a >= 1 GB ledger)
// across network namespaces, on a TestCluster (tests/integration/test_cluster.h) with one
// replica: the sending side runs in the primary's namespace and dials the replica's address
// over the cluster's bridge (veth -> bridge -> veth), the replica side is the replica's own
// sshd in its namespace, writing to its own loop-mounted btrfs. Cases, rotating within a run:
//
//   snapledger        BlockShipper::Execute over one persistent libssh session to the
//                     replica's sshd, whose authorized_keys forces the primary's key to the real
//                     `snapledger-receive --root <replica ledger root>`: timed to the
//                     block received, fully verified and promoted.
//   snapledger+zstd   the same with ReplicaTarget::compression = kZstd.
//   OpenSSH           `btrfs send | ssh -c <cipher> root@<replica> 'btrfs receive <dir>'` over an
//                     OpenSSH ControlMaster connection from the primary's namespace to the same
//                     sshd (a second key without a forced command), then, timed separately,
//                     VerifyLedgerDir (2 threads) of what arrived and syncfs: the like-for-like
//                     baseline of snapledger's total.
//   OpenSSH+zstd      `btrfs send | zstd -<level> -T<workers> | ssh ... 'zstd -d | btrfs
//                     receive'` over the same ControlMaster (what compression alone buys).
//
// Each set of cases runs once per --link-rate: "none" (the veth/bridge path as it is) or a
// tc rate such as "1gbit", applied as `tc qdisc replace dev sl<tag>v1 root tbf rate <r>
// burst 256kb latency 50ms` on the bridge port toward the replica (the direction the stream
// flows) and removed afterwards. Both connections are set up and warmed untimed; the replica
// is emptied untimed before every transfer. Ratios are paired within a run; medians printed.
//
// Bounded and self-cleaning: every transfer is bounded (the shipper's watchdog; the OpenSSH
// pipeline runs under timeout(1)); SIGINT/SIGTERM/SIGHUP end the replica sshd's connection
// handlers (processes this benchmark's cluster started), which fails the transfer in flight,
// and the cluster is torn down by TestCluster's destructor on every path.
#include <fcntl.h>
#include <fmt/core.h>
#include <linux/btrfs.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"
#include "common/base/byte_stream.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"
#include "common/base/status_macros.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/event_log.h"
#include "common/transport/ssh_transport.h"
#include "common/transport/zstd_stream.h"
#include "primary/block_shipper.h"
#include "tests/integration/test_cluster.h"

namespace snapledger::bench {
namespace {

namespace fs = std::filesystem;
using testing::TestCluster;
using testing::TestClusterPtr;

constexpr char kReplica[] = "r1";
constexpr char kBaselineDir[] = "openssh-baseline";

// While alive, the calling thread is in the network namespace /run/netns/<name>; the
// destructor puts it back where it was (aborting if it cannot: the rest of the program, the
// cluster's teardown included, must run in the root namespace). Sockets made inside stay in
// that namespace after it ends, and processes started inside inherit it. Not movable.
class NetnsScope {
 public:
  static absl::StatusOr<std::unique_ptr<NetnsScope>> Enter(const std::string& name) {
    ASSIGN_OR_RETURN(UniqueFd back, OpenFile("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    ASSIGN_OR_RETURN(UniqueFd target, OpenFile("/run/netns/" + name, O_RDONLY | O_CLOEXEC));
    if (::setns(target.get(), CLONE_NEWNET) != 0) return ErrnoStatus("setns " + name, errno);
    return std::unique_ptr<NetnsScope>(new NetnsScope(std::move(back)));
  }
  ~NetnsScope() {
    if (::setns(back_.get(), CLONE_NEWNET) != 0) {
      std::perror("setns back to the original network namespace");
      std::abort();
    }
  }
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  explicit NetnsScope(UniqueFd back) : back_(std::move(back)) {}
  UniqueFd back_;
};

// A tc tbf qdisc on `dev` while alive ("none": nothing).
class LinkRate {
 public:
  static absl::StatusOr<std::unique_ptr<LinkRate>> Apply(const std::string& dev,
                                                         const std::string& rate) {
    if (rate != "none")
      RETURN_IF_ERROR(
          RunCommandOk(*ProcessRunner::Real(), {"tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                                                "rate", rate, "burst", "256kb", "latency", "50ms"})
              .status());
    return std::unique_ptr<LinkRate>(new LinkRate(dev, rate != "none"));
  }
  ~LinkRate() {
    if (active_)
      (void)RunCommand(*ProcessRunner::Real(), {"tc", "qdisc", "del", "dev", dev_, "root"});
  }
  LinkRate(const LinkRate&) = delete;
  LinkRate& operator=(const LinkRate&) = delete;

 private:
  LinkRate(std::string dev, bool active) : dev_(std::move(dev)), active_(active) {}
  std::string dev_;
  bool active_;
};

struct Options {
  uint64_t size_mb = 1024;
  int runs = 3;
  std::string cipher = "aes128-gcm@openssh.com";
  int zstd_level = 1;
  int zstd_workers = 2;
  std::vector<std::string> link_rates = {"none", "1gbit"};
  int max_transfer_seconds = 300;
  uint64_t seed = 1;
};

enum Kind { kPlain, kZstd, kOpenSsh, kOpenSshZstd, kKinds };
constexpr const char* kKindNames[] = {"snapledger", "snapledger+zstd", "OpenSSH", "OpenSSH+zstd"};

struct Transfer {
  double seconds = 0;         // to the verified, promoted block / the pipeline's end
  double verify_seconds = 0;  // OpenSSH cases: VerifyLedgerDir afterwards
  double flush_seconds = 0;   // OpenSSH cases: then syncfs
  uint64_t wire_bytes = 0;    // snapledger: bytes into the channel
  double Total() const { return seconds + verify_seconds + flush_seconds; }
};

// While it lives, answers the sshd's keepalive probes on the sessions of the given shippers,
// which nothing else may use meanwhile (the ones the case being run does not use), as the
// primary daemon does between transfers: the cluster's sshd drops a session that stays silent
// ~6 s (ClientAliveInterval 2, CountMax 3), and a timed transfer would then include a new SSH
// handshake.
class IdleSessionKeeper {
 public:
  explicit IdleSessionKeeper(std::vector<BlockShipper*> idle)
      : idle_(std::move(idle)), thread_([this] { Run(); }) {}
  ~IdleSessionKeeper() {
    stop_.store(true);
    thread_.join();
  }
  IdleSessionKeeper(const IdleSessionKeeper&) = delete;
  IdleSessionKeeper& operator=(const IdleSessionKeeper&) = delete;

 private:
  void Run() {
    while (!stop_.load()) {
      for (BlockShipper* s : idle_) s->KeepAlive();
      for (int i = 0; i < 10 && !stop_.load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  const std::vector<BlockShipper*> idle_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts once the rest is initialized
};

class NetnsBench {
 public:
  NetnsBench(const Options& o, SignalStop& stop) : o_(o), stop_(stop) {}
  // Closes the ControlMaster (cluster.sh down would kill it anyway: it runs in the primary's
  // namespace); members then go in reverse order, the cluster last.
  ~NetnsBench() {
    stop_.EndChildrenOf(0);
    if (master_up_)
      (void)RunCommand(*ProcessRunner::Real(),
                       {"timeout", "10", "ssh", "-o", "ControlPath=" + control_path_, "-O", "exit",
                        cluster_->host(kReplica).address});
  }
  absl::Status Run();

 private:
  absl::Status Setup();
  absl::Status BuildLedger();
  absl::Status SetUpOpenSsh();
  absl::Status ClearReplica();
  absl::StatusOr<Transfer> RunOne(Kind kind);
  absl::StatusOr<Transfer> RunSnapledger(BlockShipper& shipper);
  absl::StatusOr<Transfer> RunOpenSsh(bool zstd);
  absl::StatusOr<std::vector<std::vector<Transfer>>> RunRate(const std::string& rate);
  void Report(const std::string& rate, const std::vector<std::vector<Transfer>>& t);
  std::string SshCommand(const std::string& remote) const;

  const Options& o_;
  SignalStop& stop_;
  TestClusterPtr cluster_;  // torn down last
  BtrfsPtr btrfs_ = Btrfs::Linux();
  std::string primary_root_, replica_root_, baseline_dir_, netns_, veth_;
  std::string baseline_key_, control_path_;
  std::unique_ptr<BlockShipper> shipper_, zstd_shipper_;
  std::vector<BlockInfo> blocks_;
  std::string block_path_;
  uint64_t events_ = 0;
  uint64_t stream_bytes_ = 0;
  bool master_up_ = false;
};

absl::Status NetnsBench::Setup() {
  testing::ClusterOptions options;
  options.replicas = 1;
  options.image_mb = static_cast<int>(2 * o_.size_mb + 1024);
  ASSIGN_OR_RETURN(cluster_, TestCluster::Create(options));
  primary_root_ = cluster_->primary().ledger_root;
  replica_root_ = cluster_->host(kReplica).ledger_root;
  baseline_dir_ = cluster_->host(kReplica).mount_point + "/" + kBaselineDir;
  netns_ = cluster_->primary().netns;
  veth_ = absl::StrCat("sl", cluster_->tag(), "v1");
  ASSIGN_OR_RETURN(std::string pid_text,
                   ReadFileToString(cluster_->dir() + "/" + kReplica + "/sshd.owned-pid"));
  // A signal ends the replica sshd's connection handlers: a transfer in flight then fails.
  stop_.EndChildrenOf(std::atoi(pid_text.c_str()));
  fmt::print("cluster {} (tag {}): primary netns {} -> replica {} at {} (bridge port {})\n",
             cluster_->dir(), cluster_->tag(), netns_, kReplica, cluster_->host(kReplica).address,
             veth_);
  return absl::OkStatus();
}

absl::Status NetnsBench::BuildLedger() {
  RETURN_IF_ERROR(InitializeLedgerRoot(*btrfs_, primary_root_));
  fmt::print("building a ledger of >= {} MB of OVS port-agent events in {}\n", o_.size_mb,
             primary_root_);
  std::fflush(stdout);
  ASSIGN_OR_RETURN(OneBlockLedger ledger,
                   BuildOneBlockLedger(*btrfs_, primary_root_, o_.size_mb * 1000 * 1000, o_.seed,
                                       [this] { return stop_.status(); }));
  blocks_ = std::move(ledger.blocks);
  block_path_ = std::move(ledger.block_path);
  events_ = ledger.events;
  stream_bytes_ = ledger.stream_bytes;
  return absl::OkStatus();
}

std::string NetnsBench::SshCommand(const std::string& remote) const {
  std::vector<std::string> argv = {"ssh",
                                   "-F",
                                   "/dev/null",
                                   "-T",
                                   "-l",
                                   "root",
                                   "-i",
                                   baseline_key_,
                                   "-o",
                                   "IdentitiesOnly=yes",
                                   "-o",
                                   "BatchMode=yes",
                                   "-o",
                                   "UserKnownHostsFile=" + cluster_->known_hosts_file(),
                                   "-o",
                                   "GlobalKnownHostsFile=/dev/null",
                                   "-o",
                                   "StrictHostKeyChecking=yes",
                                   "-o",
                                   "ControlPath=" + control_path_,
                                   "-o",
                                   "ControlMaster=no",
                                   "-o",
                                   "Compression=no",
                                   "-c",
                                   o_.cipher,
                                   cluster_->host(kReplica).address};
  std::string out;
  for (const std::string& a : argv) absl::StrAppend(&out, ShellQuote(a), " ");
  return absl::StrCat(out, ShellQuote(remote));
}

// A key without a forced command for the baseline, and a ControlMaster to the replica started
// from the primary's namespace. The master is stopped with `ssh -O exit` before teardown (and
// cluster.sh down kills whatever still runs in the cluster's namespaces).
absl::Status NetnsBench::SetUpOpenSsh() {
  baseline_key_ = cluster_->dir() + "/primary/baseline_key";
  control_path_ = cluster_->dir() + "/primary/control";
  RETURN_IF_ERROR(RunCommandOk(*ProcessRunner::Real(),
                               {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", baseline_key_})
                      .status());
  RETURN_IF_ERROR(AppendAuthorizedKey(cluster_->dir() + "/" + kReplica + "/authorized_keys",
                                      baseline_key_ + ".pub"));
  // -f: ssh forks into the background once authenticated, so this returns (bounded).
  std::string master = SshCommand("");
  master = master.substr(0, master.size() - 3);  // drop the empty remote command
  absl::StrAppend(&master, " -M -N -f -o ControlPersist=yes -o ControlMaster=yes");
  ASSIGN_OR_RETURN(std::unique_ptr<NetnsScope> ns, NetnsScope::Enter(netns_));
  RETURN_IF_ERROR(
      RunCommandOk(*ProcessRunner::Real(), {"timeout", "30", "bash", "-c", master}).status());
  master_up_ = true;
  return absl::OkStatus();
}

absl::Status NetnsBench::ClearReplica() {
  LedgerLayout replica(replica_root_);
  return DeleteSubvolumesAndSettle(*btrfs_, {replica.blocks(), baseline_dir_},
                                   cluster_->host(kReplica).mount_point);
}

absl::StatusOr<Transfer> NetnsBench::RunSnapledger(BlockShipper& shipper) {
  // The (re)connect, if any, happens inside Execute: from the primary's namespace.
  ASSIGN_OR_RETURN(std::unique_ptr<NetnsScope> ns, NetnsScope::Enter(netns_));
  int64_t start = NowNanos();
  auto shipped = shipper.Execute(SendStep{blocks_.back(), std::nullopt}, /*epoch=*/1);
  int64_t end = NowNanos();
  if (absl::IsUnavailable(shipped.status())) {
    // The session died although IdleSessionKeeper answered the sshd's probes (e.g. the
    // replica's sshd was restarted). The shipper reconnects on the next Execute; that attempt
    // is the timed one (it includes the ssh handshake).
    fmt::print(" [libssh session dropped while idle; reconnected]");
    start = NowNanos();
    shipped = shipper.Execute(SendStep{blocks_.back(), std::nullopt}, /*epoch=*/1);
    end = NowNanos();
  }
  ns.reset();
  if (!shipped.ok()) return shipped.status();
  const ShipResult& r = *shipped;
  if (r.parent || r.events_verified != events_ || r.stream_bytes != stream_bytes_)
    return absl::InternalError(absl::StrCat("unexpected transfer: ", r.events_verified, " of ",
                                            events_, " events verified, ", r.stream_bytes, " of ",
                                            stream_bytes_, " stream bytes"));
  Transfer t;
  t.seconds = (end - start) / 1e9;
  t.wire_bytes = r.wire_bytes;
  const TransferPhases& p = r.phases;
  fmt::print(
      " [exec {:.2f} s, stream {:.2f} s, verdict {:.2f} s; replica: receive {:.2f} s, "
      "verify {:.2f} s, promote {:.2f} s]",
      p.open, p.stream, p.verdict, p.replica_stream, p.replica_verify, p.replica_promote);
  return t;
}

absl::StatusOr<Transfer> NetnsBench::RunOpenSsh(bool zstd) {
  std::error_code ec;
  fs::create_directories(baseline_dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", baseline_dir_, ": ", ec.message()));
  // The zstd CLI spells negative levels --fast=N (libzstd's level 0 is its default, 3), and
  // its -T0 means one thread per core: libzstd's 0 workers is --single-thread.
  const int level = o_.zstd_level;
  std::string zstd_c = absl::StrCat(" | zstd -q -c ",
                                    level > 0    ? absl::StrCat("-", level)
                                    : level == 0 ? std::string("-3")
                                                 : absl::StrCat("--fast=", -level),
                                    o_.zstd_workers == 0 ? std::string(" --single-thread")
                                                         : absl::StrCat(" -T", o_.zstd_workers));
  std::string receive =
      absl::StrCat(zstd ? "zstd -q -d -c | " : "", "btrfs -q receive ", ShellQuote(baseline_dir_));
  std::string pipeline = absl::StrCat("btrfs -q send ", ShellQuote(block_path_), zstd ? zstd_c : "",
                                      " | ", SshCommand(receive));
  ASSIGN_OR_RETURN(std::unique_ptr<NetnsScope> ns, NetnsScope::Enter(netns_));
  int64_t start = NowNanos();
  absl::StatusOr<std::string> ran = RunCommandOk(
      *ProcessRunner::Real(), {"timeout", "-k", "5", absl::StrCat(o_.max_transfer_seconds), "bash",
                               "-o", "pipefail", "-c", pipeline});
  int64_t end = NowNanos();
  ns.reset();
  RETURN_IF_ERROR(ran.status());
  Transfer t;
  t.seconds = (end - start) / 1e9;
  std::string received = absl::StrCat(baseline_dir_, "/", blocks_.back().name);
  ASSIGN_OR_RETURN(SubvolumeInfo info, btrfs_->GetSubvolumeInfo(received));
  if (!info.read_only || info.received_uuid.empty())
    return absl::InternalError(received + " is not a read-only received subvolume");
  start = NowNanos();
  ASSIGN_OR_RETURN(VerifyReport report, VerifyLedgerDir(received, {HeadCheck::kExact, 2}));
  t.verify_seconds = (NowNanos() - start) / 1e9;
  if (!report.ok()) return absl::DataLossError(report.failure->ToString());
  if (report.events_verified != events_)
    return absl::InternalError(absl::StrCat("verified ", report.events_verified, " of ", events_));
  start = NowNanos();
  RETURN_IF_ERROR(SyncFilesystem(received));
  t.flush_seconds = (NowNanos() - start) / 1e9;
  return t;
}

absl::StatusOr<Transfer> NetnsBench::RunOne(Kind kind) {
  {
    // Emptying the replica may take longer than the sshd waits: every session is kept alive.
    IdleSessionKeeper all({shipper_.get(), zstd_shipper_.get()});
    RETURN_IF_ERROR(ClearReplica());
  }
  std::vector<BlockShipper*> idle;
  if (kind != kPlain) idle.push_back(shipper_.get());
  if (kind != kZstd) idle.push_back(zstd_shipper_.get());
  IdleSessionKeeper keeper(std::move(idle));
  RETURN_IF_ERROR(stop_.status());
  absl::StatusOr<Transfer> t = kind == kPlain  ? RunSnapledger(*shipper_)
                               : kind == kZstd ? RunSnapledger(*zstd_shipper_)
                                               : RunOpenSsh(kind == kOpenSshZstd);
  RETURN_IF_ERROR(stop_.status());
  return t;
}

absl::StatusOr<std::vector<std::vector<Transfer>>> NetnsBench::RunRate(const std::string& rate) {
  ASSIGN_OR_RETURN(std::unique_ptr<LinkRate> link, LinkRate::Apply(veth_, rate));
  fmt::print("\n--- link rate {} ({}) ---\n", rate,
             rate == "none" ? "veth + bridge, no shaping"
                            : absl::StrCat("tc tbf on ", veth_, ", burst 256kb, latency 50ms"));
  std::vector<std::vector<Transfer>> out(kKinds);
  for (int run = 1; run <= o_.runs; ++run) {
    fmt::print("run {}/{}:", run, o_.runs);
    for (int k = 0; k < kKinds; ++k) {
      Kind kind = static_cast<Kind>((run - 1 + k) % kKinds);  // rotate who goes first
      ASSIGN_OR_RETURN(Transfer t, RunOne(kind));
      fmt::print("  {} {:.2f} s{}", kKindNames[kind], t.Total(),
                 kind >= kOpenSsh ? fmt::format(" ({:.2f}+{:.2f}+{:.2f})", t.seconds,
                                                t.verify_seconds, t.flush_seconds)
                                  : "");
      std::fflush(stdout);
      out[kind].push_back(t);
    }
    fmt::print("\n");
  }
  Report(rate, out);
  return out;
}

void NetnsBench::Report(const std::string& rate, const std::vector<std::vector<Transfer>>& t) {
  auto med = [&](Kind k, auto f) {
    std::vector<double> v;
    for (const Transfer& x : t[k]) v.push_back(f(x));
    return Median(v);
  };
  auto paired = [&](Kind mine, Kind base, auto fmine, auto fbase) {
    std::vector<double> v;
    for (size_t i = 0; i < t[mine].size() && i < t[base].size(); ++i)
      v.push_back(fbase(t[base][i]) / fmine(t[mine][i]));
    return Median(v);
  };
  auto total = [](const Transfer& x) { return x.Total(); };
  auto transfer = [](const Transfer& x) { return x.seconds; };
  fmt::print("link {}: medians of {} run(s), {:.1f} MB stream, MB/s of the uncompressed stream\n",
             rate, o_.runs, stream_bytes_ / 1e6);
  auto row = [&](const std::string& name, double s) {
    fmt::print("  {:<62} {:>8.2f} s {:>7.0f} MB/s\n", name, s, MBps(stream_bytes_, s));
  };
  row("OpenSSH: btrfs send | ssh | btrfs receive", med(kOpenSsh, transfer));
  row("OpenSSH + VerifyLedgerDir + syncfs (like for like)", med(kOpenSsh, total));
  row("OpenSSH+zstd: send | zstd | ssh | zstd -d | receive", med(kOpenSshZstd, transfer));
  row("OpenSSH+zstd + VerifyLedgerDir + syncfs", med(kOpenSshZstd, total));
  row("snapledger: received, verified, promoted", med(kPlain, total));
  row("snapledger+zstd: received, verified, promoted", med(kZstd, total));
  uint64_t wire = t[kZstd].empty() ? 0 : t[kZstd].front().wire_bytes;
  fmt::print("  zstd-{} on the wire: {:.1f} MB ({:.2f}x smaller)\n", o_.zstd_level, wire / 1e6,
             wire ? static_cast<double>(stream_bytes_) / wire : 0.0);
  fmt::print("  ratios (> 1: snapledger faster; paired per run, median):\n");
  auto ratio = [&](const std::string& name, double v) {
    fmt::print("    {:<70} {:>6.2f}x\n", name, v);
  };
  ratio("snapledger total vs OpenSSH transfer alone", paired(kPlain, kOpenSsh, total, transfer));
  ratio("snapledger total vs OpenSSH + verify + syncfs", paired(kPlain, kOpenSsh, total, total));
  ratio("snapledger+zstd total vs OpenSSH transfer alone",
        paired(kZstd, kOpenSsh, total, transfer));
  ratio("snapledger+zstd total vs OpenSSH + verify + syncfs",
        paired(kZstd, kOpenSsh, total, total));
  ratio("snapledger+zstd total vs OpenSSH+zstd + verify + syncfs",
        paired(kZstd, kOpenSshZstd, total, total));
  std::fflush(stdout);
}

absl::Status NetnsBench::Run() {
  fmt::print(
      "snapledger-netns-replication-bench  ledger >= {} MB  runs={}  cipher {}  zstd level {} "
      "workers {}  link rates {}\n",
      o_.size_mb, o_.runs, o_.cipher, o_.zstd_level, o_.zstd_workers,
      absl::StrJoin(o_.link_rates, ","));
  fmt::print("load average at the start: {}\n", LoadAverage());
  std::fflush(stdout);
  RETURN_IF_ERROR(Setup());
  RETURN_IF_ERROR(BuildLedger());
  RETURN_IF_ERROR(SetUpOpenSsh());

  SshEndpoint endpoint = cluster_->SshEndpointOf(kReplica);
  endpoint.ciphers = o_.cipher;
  BlockShipperOptions ship_options;
  ship_options.verdict_timeout = absl::Seconds(o_.max_transfer_seconds);
  shipper_ = std::make_unique<BlockShipper>(*btrfs_, *SshTransport::Libssh(),
                                            ReplicaTarget{kReplica, endpoint}, primary_root_,
                                            ship_options);
  ReplicaTarget zstd_target{kReplica, endpoint};
  zstd_target.compression = StreamCompression::kZstd;
  zstd_target.zstd = ZstdOptions{o_.zstd_level, o_.zstd_workers};
  zstd_shipper_ = std::make_unique<BlockShipper>(*btrfs_, *SshTransport::Libssh(), zstd_target,
                                                 primary_root_, ship_options);

  fmt::print("warm-up (untimed; opens the connections):");
  for (int k = 0; k < kKinds; ++k) {
    ASSIGN_OR_RETURN(Transfer t, RunOne(static_cast<Kind>(k)));
    fmt::print("  {} {:.2f} s", kKindNames[k], t.Total());
    std::fflush(stdout);
  }
  fmt::print("\n");
  for (const std::string& rate : o_.link_rates) RETURN_IF_ERROR(RunRate(rate).status());
  RETURN_IF_ERROR(ClearReplica());
  fmt::print("load average at the end: {}\n", LoadAverage());
  return absl::OkStatus();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  CLI::App app{
      "Bootstrap replication across a TestCluster's network namespaces: BlockShipper (plain, "
      "zstd) vs btrfs send | ssh | btrfs receive over an OpenSSH ControlMaster (plain, zstd)"};
  using snapledger::bench::AddOption;
  snapledger::bench::Options o;
  AddOption(app, "--size-mb", o.size_mb, "minimum ledger size, MB (10^6 bytes)", 1, 8192);
  AddOption(app, "--runs", o.runs, "timed transfers of each case per link rate", 1, 20);
  AddOption(app, "--cipher", o.cipher, "cipher for both (libssh and OpenSSH)");
  AddOption(app, "--zstd-level", o.zstd_level, "zstd level (both zstd cases; negative: faster)",
            snapledger::kMinZstdLevel, snapledger::kMaxZstdLevel);
  AddOption(app, "--zstd-workers", o.zstd_workers, "zstd worker threads (both zstd cases)", 0, 8);
  AddOption(app, "--link-rate", o.link_rates,
            "tc tbf rate on the bridge port toward the replica, or none; repeatable");
  AddOption(app, "--max-transfer-seconds", o.max_transfer_seconds, "bound on one transfer", 10,
            3600);
  AddOption(app, "--seed", o.seed, "event generator seed");
  CLI11_PARSE(app, argc, argv);

  // Before any thread starts: SignalStop takes these with sigtimedwait.
  snapledger::bench::BlockStopSignals();
  absl::Status st;
  {
    using snapledger::bench::SignalStop;
    SignalStop stop("snapledger-netns-replication-bench", "stopping",
                    SignalStop::OnRepeat::kEscalate);
    snapledger::bench::NetnsBench bench(o, stop);
    st = bench.Run();
  }  // ~NetnsBench: shippers closed, then the cluster torn down (cluster.sh down)
  return snapledger::bench::ExitCodeFor("snapledger-netns-replication-bench", st);
}
