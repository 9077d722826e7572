// snapledger-bench-replication: bootstrap throughput of replication. A ledger of >= 1 GB of
// realistic events is built on a loop-mounted btrfs (the primary), one block is cut, and that
// block is replicated in full to a second loop-mounted btrfs (the replica) over SSH on
// 127.0.0.1, alternately by
//
//   snapledger  BlockShipper::Execute over one persistent libssh session to a test sshd whose
//               authorized_keys forces the real `snapledger-receive --root <replica>`:
//               timed from Execute's start to its return, i.e. to the block received, fully
//               verified by the replica (VerifyLedgerDir, 2 threads) and promoted. The moment
//               the last byte of the stream was handed to the channel is also recorded (the
//               "stream phase": transfer without the replica's verification).
//   snapledger + zstd  the same with ReplicaTarget::compression = kZstd (--zstd-level,
//               --zstd-workers): the stream is compressed into the channel and decompressed by
//               the replica before btrfs receive. MB/s are still of the uncompressed stream.
//   OpenSSH     `btrfs send <block> | ssh -c <cipher> root@127.0.0.1 'btrfs receive <dir>'` over a
//               persistent ControlMaster connection to the same sshd (a second client key
//               without a forced command; same host key checking, same cipher, same
//               environment of the remote command). Then, timed separately, what the
//               replica does besides receiving: VerifyLedgerDir (2 threads) of what arrived,
//               and syncfs (promotion syncs the filesystem before the verified block takes its
//               name, so that its data is durable; btrfs receive never syncs).
//               Transfer + verify + flush is the like-for-like baseline of snapledger's total.
//
// Both connections are established before anything is timed (and warmed by one untimed
// transfer each). Before every transfer the replica is emptied (received subvolumes deleted on
// both sides, `btrfs subvolume sync`, syncfs), untimed. The order of the three rotates from
// run to run; ratios are paired within a run, then the median over runs. See bench/README.md.
//
// Bounded and self-cleaning: a watchdog ends a transfer that runs past --max-transfer-seconds
// or the whole benchmark past --timeout-seconds, and handles SIGINT/SIGTERM/SIGHUP, by
// stopping the SSH connection handlers of the sshd this program started (by pid), which makes
// the blocked transfer fail; RAII then closes the ControlMaster (`ssh -O exit`), stops the sshd,
// unmounts both filesystems, detaches their loop devices and deletes their directories.
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/btrfs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "bench/bench_util.h"
#include "common/base/byte_stream.h"
#include "common/base/fmt_absl.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"
#include "common/base/status_macros.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/event_log.h"
#include "common/ledger/head_file.h"
#include "common/testing/ovs_event_generator.h"
#include "common/transport/ssh_transport.h"
#include "primary/block_shipper.h"
#include "tests/integration/loop_btrfs.h"
#include "tests/integration/test_sshd.h"

#ifndef SNAPLEDGER_RECEIVE_BIN
#error "SNAPLEDGER_RECEIVE_BIN must name the snapledger-receive binary"
#endif

namespace snapledger::bench {
namespace {

namespace fs = std::filesystem;

constexpr char kReplicaId[] = "bench-replica";
constexpr char kBaselineDir[] = "openssh-baseline";

// ---------------------------------------------------------------------------------------------
// Watchdog: signals and deadlines.

// The stop signals must be blocked in every thread before it starts (main() calls
// BlockStopSignals() first):
// this thread takes them with sigtimedwait. Child processes get an empty mask and default
// dispositions from ProcessRunner.
class Watchdog {
 public:
  explicit Watchdog(double total_seconds)
      : total_deadline_(NowNanos() + static_cast<int64_t>(total_seconds * 1e9)),
        thread_([this] { Loop(); }) {}
  ~Watchdog() {
    stop_ = true;
    thread_.join();
  }

  void SetSshdPid(pid_t pid) { sshd_pid_ = pid; }
  // A deadline for the step about to start (a transfer); 0 clears it.
  void SetStepDeadline(double seconds) {
    step_deadline_ = seconds <= 0 ? 0 : NowNanos() + static_cast<int64_t>(seconds * 1e9);
  }
  bool aborted() const { return aborted_; }
  // OK, or why the benchmark was stopped.
  absl::Status status() const {
    if (!aborted_) return absl::OkStatus();
    std::lock_guard<std::mutex> l(mu_);
    return by_signal_ ? absl::CancelledError(reason_) : absl::DeadlineExceededError(reason_);
  }

 private:
  void Loop() {
    sigset_t set = StopSignals();
    while (!stop_) {
      timespec wait{0, 200'000'000};
      int sig = ::sigtimedwait(&set, nullptr, &wait);
      int64_t now = NowNanos();
      std::string why;
      if (sig > 0) {
        why = absl::StrCat("stopped by signal ", sig, " (", strsignal(sig), ")");
      } else if (now > total_deadline_) {
        why = "--timeout-seconds reached";
      } else if (step_deadline_ != 0 && now > step_deadline_) {
        why = "a transfer ran past --max-transfer-seconds";
      }
      if (why.empty()) continue;
      if (!aborted_) {
        {
          std::lock_guard<std::mutex> l(mu_);
          reason_ = why;
          by_signal_ = sig > 0;
        }
        aborted_ = true;
        first_kill_ = now;
        std::fprintf(stderr,
                     "\nsnapledger-bench-replication: %s: stopping the SSH connections and "
                     "cleaning up\n",
                     why.c_str());
        KillConnections(SIGTERM);
      } else if (!escalated_ && (sig > 0 || now - first_kill_ > 5'000'000'000)) {
        escalated_ = true;
        KillConnections(SIGKILL);
      }
    }
  }

  // Ends every connection of the sshd we started (its per-connection children, by pid): a
  // transfer blocked on the network then fails and the benchmark unwinds.
  void KillConnections(int sig) {
    pid_t sshd = sshd_pid_;
    if (sshd <= 0) return;
    for (pid_t child : ChildrenOf(sshd)) ::kill(child, sig);
  }

  const int64_t total_deadline_;
  std::atomic<int64_t> step_deadline_{0};
  std::atomic<pid_t> sshd_pid_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> aborted_{false};
  bool escalated_ = false;
  int64_t first_kill_ = 0;
  mutable std::mutex mu_;
  std::string reason_;
  bool by_signal_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// CPU accounting.

// CPU seconds of `pid` and all its descendants, live or reaped. Over an interval in which no
// process of the tree exits unreaped, differences are exact.
double TreeCpuSeconds(pid_t pid) {
  double total = PidCpuSeconds(pid, /*with_reaped_children=*/true);
  for (pid_t child : ChildrenOf(pid)) total += TreeCpuSeconds(child);
  return total;
}

// CPU seconds of this process (all threads) plus its reaped children.
double SelfAndReapedChildrenCpu() {
  auto sec = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  struct rusage self {};
  struct rusage children {};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  return sec(self.ru_utime) + sec(self.ru_stime) + sec(children.ru_utime) + sec(children.ru_stime);
}

// ---------------------------------------------------------------------------------------------
// A Btrfs that records when Send finished and how long the sink's Write calls took.

class TimingSink : public ByteSink {
 public:
  explicit TimingSink(ByteSink& inner) : inner_(inner) {}
  absl::Status Write(std::string_view data) override {
    int64_t t0 = NowNanos();
    absl::Status st = inner_.Write(data);
    write_nanos_ += NowNanos() - t0;
    return st;
  }
  absl::Status Close() override { return inner_.Close(); }
  int64_t write_nanos() const { return write_nanos_; }

 private:
  ByteSink& inner_;
  int64_t write_nanos_ = 0;
};

class TimingBtrfs : public Btrfs {
 public:
  explicit TimingBtrfs(Btrfs& inner) : inner_(inner) {}

  absl::Status CheckIsBtrfs(const std::string& p) override { return inner_.CheckIsBtrfs(p); }
  absl::Status CreateSubvolume(const std::string& p) override { return inner_.CreateSubvolume(p); }
  absl::Status CreateSnapshot(const std::string& s, const std::string& d, SnapshotKind k) override {
    return inner_.CreateSnapshot(s, d, k);
  }
  absl::Status DeleteSubvolume(const std::string& p) override { return inner_.DeleteSubvolume(p); }
  absl::StatusOr<SubvolumeInfo> GetSubvolumeInfo(const std::string& p) override {
    return inner_.GetSubvolumeInfo(p);
  }
  absl::StatusOr<std::vector<SubvolumeInfo>> ListSubvolumes(const std::string& d) override {
    return inner_.ListSubvolumes(d);
  }
  absl::Status SetReadOnly(const std::string& p, bool ro) override {
    return inner_.SetReadOnly(p, ro);
  }
  absl::Status RenameSubvolume(const std::string& f, const std::string& t) override {
    return inner_.RenameSubvolume(f, t);
  }
  absl::Status Send(const std::string& snapshot, const std::optional<std::string>& parent,
                    ByteSink& sink) override {
    TimingSink timed(sink);
    absl::Status st = inner_.Send(snapshot, parent, timed);
    send_end_nanos_ = NowNanos();
    write_nanos_ = timed.write_nanos();
    return st;
  }
  using Btrfs::Receive;
  absl::StatusOr<std::string> Receive(const std::string& d, ByteSource& s,
                                      const ReceiveOptions& o) override {
    return inner_.Receive(d, s, o);
  }

  int64_t send_end_nanos() const { return send_end_nanos_; }
  int64_t write_nanos() const { return write_nanos_; }

 private:
  Btrfs& inner_;
  int64_t send_end_nanos_ = 0;
  int64_t write_nanos_ = 0;
};

// Keeps a libssh session alive until the last command (channel) opened on it is destroyed.
// BlockShipper::Ship resets its session when Wait() fails while the RemoteCommand holding a
// channel of that session is still alive; the command's destructor then closes a channel of a
// freed session (use after free: a crash on any network failure, including the watchdog
// stopping a transfer). Wrapping the transport here keeps the benchmark's failure path clean
// without changing the code under test; the timed path only gains a virtual call per write.
class KeepAliveCommand : public RemoteCommand {
 public:
  KeepAliveCommand(std::shared_ptr<SshSession> session, RemoteCommandPtr command)
      : session_(std::move(session)), command_(std::move(command)) {}
  absl::Status Write(std::string_view data) override { return command_->Write(data); }
  absl::Status Close() override { return command_->Close(); }
  int PassThroughFd() const override { return command_->PassThroughFd(); }
  absl::StatusOr<std::optional<std::string>> ReadLine(size_t max) override {
    return command_->ReadLine(max);
  }
  bool Open() override { return command_->Open(); }
  absl::StatusOr<RemoteExit> Wait() override { return command_->Wait(); }
  uint64_t bytes_written() const override { return command_->bytes_written(); }

 private:
  std::shared_ptr<SshSession> session_;  // destroyed after command_
  RemoteCommandPtr command_;
};

class KeepAliveSession : public SshSession {
 public:
  explicit KeepAliveSession(SshSessionPtr session) : session_(std::move(session)) {}
  absl::StatusOr<RemoteCommandPtr> Exec(const std::string& command) override {
    ASSIGN_OR_RETURN(RemoteCommandPtr c, session_->Exec(command));
    return RemoteCommandPtr(new KeepAliveCommand(session_, std::move(c)));
  }
  bool Connected() const override { return session_->Connected(); }
  void Abort() override { session_->Abort(); }

 private:
  std::shared_ptr<SshSession> session_;
};

class KeepAliveTransport : public SshTransport {
 public:
  explicit KeepAliveTransport(SshTransport& inner) : inner_(inner) {}
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint& endpoint) override {
    ASSIGN_OR_RETURN(SshSessionPtr s, inner_.Connect(endpoint));
    return SshSessionPtr(new KeepAliveSession(std::move(s)));
  }

 private:
  SshTransport& inner_;
};

// ---------------------------------------------------------------------------------------------
// OpenSSH: a ControlMaster connection and clients multiplexed over it.

struct OpenSshConfig {
  int port = 0;
  std::string key;          // private key without a forced command
  std::string known_hosts;  // the test sshd's host key
  std::string control_path;
  std::string cipher;

  // ssh with `extra` options, then the destination and `command` (if any). No user config
  // (-F /dev/null), only this key, strict host key checking against known_hosts.
  std::vector<std::string> Argv(std::vector<std::string> extra,
                                const std::string& command = "") const {
    std::vector<std::string> argv = {"ssh",
                                     "-F",
                                     "/dev/null",
                                     "-p",
                                     absl::StrCat(port),
                                     "-l",
                                     "root",
                                     "-i",
                                     key,
                                     "-o",
                                     "IdentitiesOnly=yes",
                                     "-o",
                                     "BatchMode=yes",
                                     "-o",
                                     absl::StrCat("UserKnownHostsFile=", known_hosts),
                                     "-o",
                                     "GlobalKnownHostsFile=/dev/null",
                                     "-o",
                                     "StrictHostKeyChecking=yes",
                                     "-o",
                                     absl::StrCat("ControlPath=", control_path),
                                     "-o",
                                     "Compression=no",
                                     "-c",
                                     cipher};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("127.0.0.1");
    if (!command.empty()) argv.push_back(command);
    return argv;
  }
};

bool IsZombieOrGone(pid_t pid) {
  std::string stat = ProcStatFields(pid);
  return stat.empty() || stat[0] == 'Z';
}

// A persistent OpenSSH connection: `ssh -M -N` run as our child. The destructor closes it with
// `ssh -O exit`, waits for it (5 s at most, then SIGTERM by pid) and reaps it.
class ControlMaster {
 public:
  static absl::StatusOr<std::unique_ptr<ControlMaster>> Start(const OpenSshConfig& config) {
    ProcessSpec spec;
    spec.argv = config.Argv({"-M", "-N", "-o", "ControlPersist=no"});
    ASSIGN_OR_RETURN(ChildPtr child, ProcessRunner::Real()->Start(spec));
    std::unique_ptr<ControlMaster> master(new ControlMaster(config, std::move(child)));
    for (int i = 0; i < 100; ++i) {
      if (master->Check().ok()) return master;
      if (IsZombieOrGone(master->child_->pid())) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSIGN_OR_RETURN(ExitStatus exit, master->child_->Wait());
    return absl::UnavailableError(absl::StrCat("the ssh ControlMaster did not come up (",
                                               exit.ToString(), "): ", master->child_->Stderr()));
  }

  ~ControlMaster() {
    (void)RunCommand(*ProcessRunner::Real(), config_.Argv({"-O", "exit"}));
    for (int i = 0; i < 50 && !IsZombieOrGone(child_->pid()); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!IsZombieOrGone(child_->pid())) (void)child_->Signal(SIGTERM);
    (void)child_->Wait();
  }

  // OK while the master accepts clients.
  absl::Status Check() const {
    return RunCommandOk(*ProcessRunner::Real(), config_.Argv({"-O", "check"})).status();
  }
  pid_t pid() const { return child_->pid(); }

 private:
  ControlMaster(OpenSshConfig config, ChildPtr child)
      : config_(std::move(config)), child_(std::move(child)) {}
  OpenSshConfig config_;
  ChildPtr child_;
};

// ---------------------------------------------------------------------------------------------
// The benchmark.

struct Options {
  uint64_t size_mb = 1024;
  int runs = 3;
  std::string cipher = "aes128-gcm@openssh.com";
  std::string receive_bin = SNAPLEDGER_RECEIVE_BIN;
  int zstd_level = 1;
  int zstd_workers = 2;
  double max_transfer_seconds = 300;
  double timeout_seconds = 3600;
  uint64_t seed = 1;
};

// One timed transfer.
struct Transfer {
  double seconds = 0;         // wall: snapledger to Execute's return; OpenSSH the pipeline
  double stream_seconds = 0;  // snapledger: to the last byte handed to the channel
  double write_seconds = 0;   // snapledger: time inside the channel's Write calls
  double verify_seconds = 0;  // OpenSSH: the separate VerifyLedgerDir afterwards
  double verify_cpu = 0;      // its CPU seconds (both threads)
  double flush_seconds = 0;   // OpenSSH: then syncfs of the replica (what promotion costs)
  double sender_cpu = 0;      // sending processes (btrfs send, ssh or snapledger), CPU s
  double receiver_cpu = 0;    // the sshd's tree (session, receive command, btrfs receive)
  uint64_t stream_bytes = 0;
  uint64_t wire_bytes = 0;  // snapledger: bytes into the channel (compressed with zstd)
};

class Bench {
 public:
  Bench(const Options& o, Watchdog& watchdog) : o_(o), watchdog_(watchdog) {}
  // Members go in reverse order: the libssh session, the ControlMaster, the sshd, then the
  // filesystems.
  ~Bench() { watchdog_.SetSshdPid(0); }
  absl::Status Run();

 private:
  absl::Status ClearReplica();
  absl::StatusOr<Transfer> RunSnapledger(BlockShipper& shipper);
  absl::StatusOr<Transfer> RunOpenSsh();
  absl::Status Report(const std::vector<Transfer>& ours, const std::vector<Transfer>& zstd,
                      const std::vector<Transfer>& theirs);

  const Options& o_;
  Watchdog& watchdog_;
  BtrfsPtr btrfs_ = Btrfs::Linux();
  testing::LoopBtrfsPtr primary_fs_, replica_fs_;
  testing::TestSshdPtr sshd_;
  pid_t sshd_pid_ = 0;
  std::unique_ptr<ControlMaster> master_;
  OpenSshConfig openssh_;
  std::unique_ptr<TimingBtrfs> timing_btrfs_;
  KeepAliveTransport keepalive_transport_{*SshTransport::Libssh()};
  std::unique_ptr<BlockShipper> shipper_;
  std::unique_ptr<BlockShipper> zstd_shipper_;  // the same, compressing with zstd
  std::vector<BlockInfo> blocks_;
  std::string block_path_;
  uint64_t events_ = 0;
  uint64_t stream_bytes_ = 0;
};

absl::Status Bench::ClearReplica() {
  LedgerLayout replica(replica_fs_->mount_point());
  return DeleteSubvolumesAndSettle(*btrfs_, {replica.blocks(), replica_fs_->Sub(kBaselineDir)},
                                   replica_fs_->mount_point());
}

absl::StatusOr<Transfer> Bench::RunSnapledger(BlockShipper& shipper) {
  RETURN_IF_ERROR(ClearReplica());
  RETURN_IF_ERROR(watchdog_.status());
  double sender0 = SelfAndReapedChildrenCpu();
  double receiver0 = TreeCpuSeconds(sshd_pid_);
  watchdog_.SetStepDeadline(o_.max_transfer_seconds);
  int64_t start = NowNanos();
  auto shipped = shipper.Execute(SendStep{blocks_.back(), std::nullopt}, /*epoch=*/1);
  int64_t end = NowNanos();
  watchdog_.SetStepDeadline(0);
  RETURN_IF_ERROR(watchdog_.status());
  if (!shipped.ok()) return shipped.status();
  const ShipResult& r = *shipped;
  if (r.parent || r.events_verified != events_ || r.stream_bytes != stream_bytes_)
    return absl::InternalError(
        absl::StrCat("unexpected transfer: parent ", r.parent ? r.parent->name : "none", ", ",
                     r.events_verified, " of ", events_, " events verified, ", r.stream_bytes,
                     " of ", stream_bytes_, " stream bytes"));
  ASSIGN_OR_RETURN(std::vector<BlockInfo> held,
                   ListBlocks(*btrfs_, LedgerLayout(replica_fs_->mount_point())));
  if (held.size() != 1 || held[0].name != blocks_.back().name)
    return absl::InternalError("the replica does not hold the promoted block");
  Transfer t;
  t.seconds = (end - start) / 1e9;
  t.stream_seconds = (timing_btrfs_->send_end_nanos() - start) / 1e9;
  t.write_seconds = timing_btrfs_->write_nanos() / 1e9;
  t.sender_cpu = SelfAndReapedChildrenCpu() - sender0;
  t.receiver_cpu = TreeCpuSeconds(sshd_pid_) - receiver0;
  t.stream_bytes = r.stream_bytes;
  t.wire_bytes = r.wire_bytes;
  return t;
}

absl::StatusOr<Transfer> Bench::RunOpenSsh() {
  RETURN_IF_ERROR(ClearReplica());
  RETURN_IF_ERROR(watchdog_.status());
  std::string dest = replica_fs_->Sub(kBaselineDir);
  std::error_code ec;
  fs::create_directories(dest, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dest, ": ", ec.message()));
  RETURN_IF_ERROR(master_->Check());  // a client must not fall back to a new connection

  // btrfs send | ssh 'btrfs receive', without a local shell: two children joined by a pipe.
  ASSIGN_OR_RETURN(Pipe pipe, MakePipe());
  ProcessSpec ssh_spec;
  ssh_spec.argv = openssh_.Argv({"-T", "-o", "ControlMaster=no"},
                                absl::StrCat("btrfs -q receive ", ShellQuote(dest)));
  ssh_spec.stdin_spec = StdioSpec::Fd(pipe.read.get());
  ProcessSpec send_spec;
  send_spec.argv = {"btrfs", "-q", "send", block_path_};
  send_spec.stdout_spec = StdioSpec::Fd(pipe.write.get());

  double sender0 = SelfAndReapedChildrenCpu() + TreeCpuSeconds(master_->pid());
  double receiver0 = TreeCpuSeconds(sshd_pid_);
  watchdog_.SetStepDeadline(o_.max_transfer_seconds);
  int64_t start = NowNanos();
  ASSIGN_OR_RETURN(ChildPtr ssh, ProcessRunner::Real()->Start(ssh_spec));
  ASSIGN_OR_RETURN(ChildPtr send, ProcessRunner::Real()->Start(send_spec));
  pipe.read.Reset();
  pipe.write.Reset();
  ASSIGN_OR_RETURN(ExitStatus send_exit, send->Wait());
  ASSIGN_OR_RETURN(ExitStatus ssh_exit, ssh->Wait());
  int64_t end = NowNanos();
  watchdog_.SetStepDeadline(0);
  RETURN_IF_ERROR(watchdog_.status());
  RETURN_IF_ERROR(ExitToStatus(send_spec.argv, send_exit, send->Stderr()));
  RETURN_IF_ERROR(ExitToStatus(ssh_spec.argv, ssh_exit, ssh->Stderr()));
  Transfer t;
  t.seconds = (end - start) / 1e9;
  t.sender_cpu = SelfAndReapedChildrenCpu() + TreeCpuSeconds(master_->pid()) - sender0;
  t.receiver_cpu = TreeCpuSeconds(sshd_pid_) - receiver0;
  t.stream_bytes = stream_bytes_;
  t.wire_bytes = stream_bytes_;

  std::string received = absl::StrCat(dest, "/", blocks_.back().name);
  ASSIGN_OR_RETURN(SubvolumeInfo info, btrfs_->GetSubvolumeInfo(received));
  if (!info.read_only || info.received_uuid.empty())
    return absl::InternalError(received + " is not a read-only received subvolume");
  // What snapledger's replica does besides receiving: full verification (2 threads), then
  // promotion, whose snapshot first writes the received data out to disk (btrfs flushes a
  // subvolume's dirty data before snapshotting it). btrfs receive itself never syncs.
  double cpu0 = ProcessCpuSeconds();
  start = NowNanos();
  ASSIGN_OR_RETURN(VerifyReport report, VerifyLedgerDir(received, {HeadCheck::kExact, 2}));
  t.verify_seconds = (NowNanos() - start) / 1e9;
  t.verify_cpu = ProcessCpuSeconds() - cpu0;
  if (!report.ok()) return absl::DataLossError(report.failure->ToString());
  if (report.events_verified != events_)
    return absl::InternalError(
        absl::StrCat("verified ", report.events_verified, " of ", events_, " events"));
  start = NowNanos();
  RETURN_IF_ERROR(SyncFilesystem(received));
  t.flush_seconds = (NowNanos() - start) / 1e9;
  return t;
}

absl::Status Bench::Run() {
  uint64_t target = o_.size_mb * 1000 * 1000;
  // Sparse images: room for the ledger, its index and a received copy, with slack.
  uint64_t image = 2 * target + (1ull << 30);
  fmt::print(
      "snapledger-bench-replication  ledger >= {} MB  runs={}  cipher {}  zstd level {} workers {} "
      " "
      "loopback 127.0.0.1\n",
      o_.size_mb, o_.runs, o_.cipher, o_.zstd_level, o_.zstd_workers);
  fmt::print("load average at the start: {}\n", LoadAverage());

  ASSIGN_OR_RETURN(primary_fs_, testing::LoopBtrfs::Create(image));
  ASSIGN_OR_RETURN(replica_fs_, testing::LoopBtrfs::Create(image));
  fmt::print("primary btrfs (loop) at {}, replica btrfs (loop) at {}\n", primary_fs_->mount_point(),
             replica_fs_->mount_point());

  // The primary's ledger and its one block.
  const std::string root = primary_fs_->mount_point();
  RETURN_IF_ERROR(InitializeLedgerRoot(*btrfs_, root));
  fmt::print("building a ledger of >= {} MB of OVS port-agent events\n", o_.size_mb);
  std::fflush(stdout);
  ASSIGN_OR_RETURN(
      OneBlockLedger ledger,
      BuildOneBlockLedger(*btrfs_, root, target, o_.seed, [this] { return watchdog_.status(); }));
  blocks_ = std::move(ledger.blocks);
  block_path_ = std::move(ledger.block_path);
  events_ = ledger.events;
  stream_bytes_ = ledger.stream_bytes;

  // The sshd: the primary's key forced to the real receive command; a second key without a
  // forced command for the OpenSSH baseline.
  ASSIGN_OR_RETURN(sshd_, testing::TestSshd::Start(absl::StrCat(o_.receive_bin, " --root ",
                                                                replica_fs_->mount_point())));
  // sshd writes its pid file shortly after it starts listening.
  for (int i = 0; i < 500 && sshd_pid_ <= 0; ++i) {
    auto pid_text = ReadFileToString(sshd_->dir() + "/sshd.pid");
    if (pid_text.ok())
      sshd_pid_ = std::atoi(std::string(absl::StripAsciiWhitespace(*pid_text)).c_str());
    if (sshd_pid_ <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (sshd_pid_ <= 0) return absl::InternalError("the test sshd wrote no pid file");
  watchdog_.SetSshdPid(sshd_pid_);
  ASSIGN_OR_RETURN(openssh_.key, sshd_->NewKey("baseline_key"));
  RETURN_IF_ERROR(AppendAuthorizedKey(sshd_->dir() + "/authorized_keys", openssh_.key + ".pub"));
  SshEndpoint endpoint = sshd_->Endpoint();
  endpoint.ciphers = o_.cipher;
  openssh_.port = sshd_->port();
  openssh_.known_hosts = endpoint.known_hosts_file;
  openssh_.control_path = sshd_->dir() + "/control";
  openssh_.cipher = o_.cipher;
  ASSIGN_OR_RETURN(master_, ControlMaster::Start(openssh_));
  // For bench/run.sh's trap, should this process die without cleaning up.
  std::ofstream(sshd_->dir() + "/control_master.pid") << master_->pid() << "\n";
  timing_btrfs_ = std::make_unique<TimingBtrfs>(*btrfs_);
  shipper_ = std::make_unique<BlockShipper>(*timing_btrfs_, keepalive_transport_,
                                            ReplicaTarget{kReplicaId, endpoint}, root);
  ReplicaTarget zstd_target{kReplicaId, endpoint};
  zstd_target.compression = StreamCompression::kZstd;
  zstd_target.zstd = ZstdOptions{o_.zstd_level, o_.zstd_workers};
  zstd_shipper_ =
      std::make_unique<BlockShipper>(*timing_btrfs_, keepalive_transport_, zstd_target, root);
  fmt::print("test sshd on 127.0.0.1:{} (pid {}); OpenSSH ControlMaster pid {}\n", sshd_->port(),
             sshd_pid_, master_->pid());

  // Untimed warm-up: opens the libssh sessions (the ControlMaster is already up) and runs each
  // path once.
  fmt::print("warm-up (untimed; opens the libssh sessions):");
  std::fflush(stdout);
  ASSIGN_OR_RETURN(Transfer w1, RunSnapledger(*shipper_));
  ASSIGN_OR_RETURN(Transfer w2, RunSnapledger(*zstd_shipper_));
  ASSIGN_OR_RETURN(Transfer w3, RunOpenSsh());
  fmt::print(
      "  snapledger {:.2f} s, snapledger+zstd {:.2f} s ({:.1f} MB on the wire), OpenSSH "
      "{:.2f} s\n",
      w1.seconds, w2.seconds, w2.wire_bytes / 1e6, w3.seconds);

  std::vector<Transfer> ours, zstd, theirs;
  enum Kind { kPlain, kZstd, kOpenSsh };
  const char* kNames[] = {"snapledger", "snapledger+zstd", "OpenSSH"};
  for (int run = 1; run <= o_.runs; ++run) {
    // The order rotates, so each kind goes first, second and third equally often.
    const int first = (run - 1) % 3;
    fmt::print("run {}/{} ({} first):", run, o_.runs, kNames[first]);
    std::fflush(stdout);
    for (int k = 0; k < 3; ++k) {
      switch (static_cast<Kind>((first + k) % 3)) {
        case kPlain:
        case kZstd: {
          bool compressed = (first + k) % 3 == kZstd;
          ASSIGN_OR_RETURN(Transfer t, RunSnapledger(compressed ? *zstd_shipper_ : *shipper_));
          fmt::print("  {} {:.3f} s ({:.0f} MB/s; stream phase {:.3f} s, {:.0f} MB/s{})",
                     kNames[compressed ? kZstd : kPlain], t.seconds,
                     MBps(t.stream_bytes, t.seconds), t.stream_seconds,
                     MBps(t.stream_bytes, t.stream_seconds),
                     compressed ? fmt::format("; wire {:.1f} MB", t.wire_bytes / 1e6) : "");
          (compressed ? zstd : ours).push_back(t);
          break;
        }
        case kOpenSsh: {
          ASSIGN_OR_RETURN(Transfer t, RunOpenSsh());
          fmt::print("  OpenSSH {:.3f} s ({:.0f} MB/s) + verify {:.3f} s + flush {:.3f} s",
                     t.seconds, MBps(t.stream_bytes, t.seconds), t.verify_seconds, t.flush_seconds);
          theirs.push_back(t);
          break;
        }
      }
      std::fflush(stdout);
    }
    fmt::print("\n");
  }
  RETURN_IF_ERROR(ClearReplica());
  return Report(ours, zstd, theirs);
}

absl::Status Bench::Report(const std::vector<Transfer>& ours, const std::vector<Transfer>& zstd,
                           const std::vector<Transfer>& theirs) {
  auto med = [](const std::vector<Transfer>& v, auto field) {
    std::vector<double> x;
    for (const Transfer& t : v) x.push_back(field(t));
    return Median(x);
  };
  auto openssh = [](const Transfer& t) { return t.seconds; };
  auto openssh_verify = [](const Transfer& t) { return t.seconds + t.verify_seconds; };
  auto openssh_all = [](const Transfer& t) {
    return t.seconds + t.verify_seconds + t.flush_seconds;
  };
  auto total = [](const Transfer& t) { return t.seconds; };
  auto stream = [](const Transfer& t) { return t.stream_seconds; };
  uint64_t bytes = stream_bytes_;

  fmt::print("\nmedians of {} run(s); stream {:.1f} MB ({} events); MB = 10^6 bytes\n", o_.runs,
             bytes / 1e6, events_);
  fmt::print("  {:<58} {:>8} {:>8} {:>11} {:>11}\n", "case", "wall s", "MB/s", "sender CPU",
             "recv CPU");
  auto row = [&](const std::string& name, double s, std::optional<double> snd,
                 std::optional<double> rcv) {
    fmt::print("  {:<58} {:>8.3f} {:>8.0f} {:>11} {:>11}\n", name, s, MBps(bytes, s),
               snd ? fmt::format("{:.2f} s", *snd) : "", rcv ? fmt::format("{:.2f} s", *rcv) : "");
  };
  row("OpenSSH: btrfs send | ssh (ControlMaster) | btrfs receive", med(theirs, openssh),
      med(theirs, [](const Transfer& t) { return t.sender_cpu; }),
      med(theirs, [](const Transfer& t) { return t.receiver_cpu; }));
  row("OpenSSH, then VerifyLedgerDir (2 threads)", med(theirs, openssh_verify), std::nullopt,
      std::nullopt);
  row("OpenSSH, then VerifyLedgerDir, then syncfs (flush)", med(theirs, openssh_all), std::nullopt,
      std::nullopt);
  row("snapledger ShipOnce: stream phase (to last byte sent)", med(ours, stream), std::nullopt,
      std::nullopt);
  row("snapledger ShipOnce: total (received, verified, promoted)", med(ours, total),
      med(ours, [](const Transfer& t) { return t.sender_cpu; }),
      med(ours, [](const Transfer& t) { return t.receiver_cpu; }));
  row("snapledger + zstd: stream phase (to last byte sent)", med(zstd, stream), std::nullopt,
      std::nullopt);
  row("snapledger + zstd: total (received, verified, promoted)", med(zstd, total),
      med(zstd, [](const Transfer& t) { return t.sender_cpu; }),
      med(zstd, [](const Transfer& t) { return t.receiver_cpu; }));
  fmt::print(
      "  (CPU: sender = btrfs send + ssh client/ControlMaster or the shipping process; receiver "
      "= the sshd's session, the remote command and btrfs receive; kernel threads such as the "
      "loop devices' are not counted)\n");
  fmt::print(
      "  snapledger: {:.3f} s of the stream phase inside the channel's Write (libssh); {:.3f} s "
      "from the last byte sent to the verified, promoted block\n",
      med(ours, [](const Transfer& t) { return t.write_seconds; }),
      med(ours, [](const Transfer& t) { return t.seconds - t.stream_seconds; }));
  fmt::print(
      "  after OpenSSH: VerifyLedgerDir {:.3f} s ({:.2f} CPU s), syncfs {:.3f} s; the replica's "
      "extra CPU beyond OpenSSH's receive and that verification: {:.2f} s\n",
      med(theirs, [](const Transfer& t) { return t.verify_seconds; }),
      med(theirs, [](const Transfer& t) { return t.verify_cpu; }),
      med(theirs, [](const Transfer& t) { return t.flush_seconds; }),
      med(ours, [](const Transfer& t) { return t.receiver_cpu; }) -
          med(theirs, [](const Transfer& t) { return t.receiver_cpu + t.verify_cpu; }));

  // Speed ratios (> 1: snapledger faster), paired within each run, median over runs.
  auto paired = [&](auto mine, auto base) {
    std::vector<double> v;
    for (size_t i = 0; i < ours.size() && i < theirs.size(); ++i)
      v.push_back(base(theirs[i]) / mine(ours[i]));
    return Median(v);
  };
  uint64_t wire = zstd.empty() ? 0 : zstd.front().wire_bytes;
  fmt::print(
      "  zstd (level {}, {} workers): {:.1f} MB on the wire for {:.1f} MB of stream ({:.2f}x "
      "smaller); {:.3f} s of the stream phase inside the compressor and channel writes\n",
      o_.zstd_level, o_.zstd_workers, wire / 1e6, bytes / 1e6,
      wire > 0 ? static_cast<double>(bytes) / wire : 0.0,
      med(zstd, [](const Transfer& t) { return t.write_seconds; }));
  fmt::print("\nratios, snapledger MB/s / OpenSSH MB/s (paired within each run, median)\n");
  auto ratio = [](const std::string& name, double v) {
    fmt::print("  {:<74} {:>6.2f}x\n", name, v);
  };
  ratio("total (incl. the replica's full verification) vs OpenSSH transfer alone",
        paired(total, openssh));
  ratio("total vs OpenSSH transfer + VerifyLedgerDir", paired(total, openssh_verify));
  ratio("total vs OpenSSH transfer + VerifyLedgerDir + syncfs (like for like)",
        paired(total, openssh_all));
  ratio("stream phase (transfer only) vs OpenSSH transfer", paired(stream, openssh));
  auto paired_zstd = [&](auto mine, auto base) {
    std::vector<double> v;
    for (size_t i = 0; i < zstd.size() && i < theirs.size(); ++i)
      v.push_back(base(theirs[i]) / mine(zstd[i]));
    return Median(v);
  };
  ratio("zstd total vs OpenSSH transfer alone (uncompressed)", paired_zstd(total, openssh));
  ratio("zstd total vs OpenSSH transfer + VerifyLedgerDir + syncfs (like for like)",
        paired_zstd(total, openssh_all));
  ratio("zstd stream phase vs OpenSSH transfer (uncompressed)", paired_zstd(stream, openssh));
  fmt::print("load average at the end: {}\n", LoadAverage());
  return absl::OkStatus();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  CLI::App app{
      "Bootstrap replication throughput: BlockShipper over libssh vs btrfs send | ssh | "
      "btrfs receive over an OpenSSH ControlMaster, same data, same sshd, same cipher"};
  using snapledger::bench::AddOption;
  snapledger::bench::Options o;
  AddOption(app, "--size-mb", o.size_mb, "minimum ledger size to build, in MB (10^6 bytes)")
      ->check(CLI::PositiveNumber);
  AddOption(app, "--runs", o.runs, "timed transfers of each kind; medians are reported")
      ->check(CLI::PositiveNumber);
  AddOption(app, "--cipher", o.cipher, "cipher for both (libssh and OpenSSH)");
  AddOption(app, "--receive-bin", o.receive_bin, "the snapledger-receive binary");
  AddOption(app, "--zstd-level", o.zstd_level, "zstd level of the compressed snapledger case");
  AddOption(app, "--zstd-workers", o.zstd_workers,
            "zstd worker threads (ZSTD_c_nbWorkers; 0: compress on the shipping thread)")
      ->check(CLI::NonNegativeNumber);
  AddOption(app, "--max-transfer-seconds", o.max_transfer_seconds,
            "a transfer running longer is stopped and the benchmark fails");
  AddOption(app, "--timeout-seconds", o.timeout_seconds, "bound on the whole benchmark");
  AddOption(app, "--seed", o.seed, "event generator seed");
  CLI11_PARSE(app, argc, argv);

  // Before any thread starts: the watchdog takes these signals with sigtimedwait.
  snapledger::bench::BlockStopSignals();
  absl::Status st;
  {
    snapledger::bench::Watchdog watchdog(o.timeout_seconds);
    snapledger::bench::Bench bench(o, watchdog);
    st = bench.Run();
    if (st.ok()) st = watchdog.status();
  }  // ~Bench: ControlMaster closed, sshd stopped, filesystems unmounted, loop devices detached
  if (!st.ok()) {
    fmt::print(stderr, "snapledger-bench-replication: {}\n", st);
    return absl::IsCancelled(st) ? 130 : 1;
  }
  return 0;
}
