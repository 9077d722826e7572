// Small helpers shared by the benchmarks: a claimed scratch directory, timing, statistics,
// command-line options, stopping on a signal, /proc accounting, and the pieces the replication
// benchmarks (loopback and network namespaces) have in common.
#pragma once

#include <sys/types.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/byte_stream.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/event_log.h"

namespace snapledger::bench {

// The directory a benchmark works in. Claim() refuses a directory that exists and is not
// empty (a benchmark must never delete files it did not create); it creates the directory
// when it does not exist. On destruction everything inside it is removed, and the directory
// itself when Claim() created it, unless Keep() was called. Move-only.
class ScratchDir {
 public:
  static absl::StatusOr<ScratchDir> Claim(const std::string& path);
  ScratchDir(ScratchDir&& o) noexcept;
  ScratchDir& operator=(ScratchDir&&) = delete;
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }
  // Leaves the directory and its contents in place on destruction.
  void Keep() { keep_ = true; }

 private:
  ScratchDir(std::string path, bool created) : path_(std::move(path)), created_(created) {}
  std::string path_;
  bool created_ = false;
  bool keep_ = false;
  bool moved_from_ = false;
};

// Monotonic nanoseconds (Clock::Real()).
int64_t NowNanos();

// CPU seconds (user + system, all threads) this process has used so far.
double ProcessCpuSeconds();

// Nearest-rank percentile (p in [0, 100]) of `v`; 0 for an empty vector. Sorts `v`.
double Percentile(std::vector<double>& v, double p);
// Median of `v` (the mean of the middle two for an even count); 0 when empty.
double Median(std::vector<double> v);

// The 1, 5 and 15 minute load averages from /proc/loadavg, for the report: other work on the
// machine skews every figure.
std::string LoadAverage();

// Appends OvsEventGenerator events (seeded) to `log` in large batches until it holds at least
// `target_bytes`, generating the next batch on a second thread while the current one is
// appended; prints progress `progress_steps` times; Sync()s at the end. `abort` (optional) is
// asked before each batch and stops the fill with its status when not OK.
absl::StatusOr<HeadRecord> FillLedger(EventLog& log, uint64_t target_bytes, uint64_t seed,
                                      int progress_steps,
                                      const std::function<absl::Status()>& abort = nullptr);

// Megabytes (10^6 bytes) per second; 0 when `seconds` is not positive.
double MBps(uint64_t bytes, double seconds);

// ---------------------------------------------------------------------------------------------
// Command-line options.

// Adds option `name` bound to `value` (which must outlive `app`'s parsing) with its current
// value shown as the default in --help; returns it for further settings.
template <typename T>
CLI::Option* AddOption(CLI::App& app, const std::string& name, T& value,
                       const std::string& description) {
  return app.add_option(name, value, description)->capture_default_str();
}

// The same, checked to lie in [min, max]; --help shows the range with the bounds' type.
template <typename T, typename Bound>
CLI::Option* AddOption(CLI::App& app, const std::string& name, T& value,
                       const std::string& description, Bound min, Bound max) {
  return AddOption(app, name, value, description)->check(CLI::Range(min, max));
}

// The exit code of a cluster benchmark's main() for its final `status`; when it is not OK,
// first prints "<program>: <status>" to stderr. 0 OK, 3 FailedPrecondition (this machine cannot
// run the benchmark), 130 Cancelled (stopped by a signal), 1 anything else.
int ExitCodeFor(const char* program, const absl::Status& status);

// ---------------------------------------------------------------------------------------------
// Stopping on a signal.

// SIGINT, SIGTERM and SIGHUP: what stops a benchmark (and lets it clean up).
sigset_t StopSignals();

// Blocks StopSignals() in the calling thread. Call it first in main(), before any thread starts
// (gRPC's and libssh's included), so every thread inherits the mask and the signals stay pending
// for the one thread that takes them with sigtimedwait (SignalStop or a watchdog of its own).
// Child processes get an empty mask and default dispositions from ProcessRunner.
void BlockStopSignals();

// Takes StopSignals() on a thread of its own (polling every 100 ms) until destroyed, so the
// benchmark unwinds and cleans up instead of dying. Requires BlockStopSignals() first. On a
// signal: prints "\n<program>: signal <n>: <action>\n" to stderr, then stopped() becomes true,
// then the children of the pid given to EndChildrenOf() (if any) get SIGTERM, which fails a
// transfer blocked on their connections. A later signal is ignored under OnRepeat::kIgnore; under
// kEscalate it is announced again and those children get SIGKILL. Thread-safe; not copyable.
class SignalStop {
 public:
  enum class OnRepeat { kIgnore, kEscalate };

  SignalStop(std::string program, std::string action, OnRepeat on_repeat);
  ~SignalStop();
  SignalStop(const SignalStop&) = delete;
  SignalStop& operator=(const SignalStop&) = delete;

  bool stopped() const { return stopped_; }
  // Cancelled ("stopped by a signal") once stopped(), else OK.
  absl::Status status() const;
  // Whose children a signal ends (typically an sshd this benchmark started); 0: nobody's.
  void EndChildrenOf(pid_t pid) { end_children_of_ = pid; }

 private:
  void Loop();

  const std::string program_;
  const std::string action_;
  const OnRepeat on_repeat_;
  std::atomic<bool> done_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<pid_t> end_children_of_{0};
  bool escalate_ = false;  // the watcher thread's only
  std::thread thread_;     // last: starts after everything above is constructed
};

// ---------------------------------------------------------------------------------------------
// Processes, from /proc.

// The pids of the children of `pid` (of all its threads); empty when it is gone.
std::vector<pid_t> ChildrenOf(pid_t pid);

// The fields of /proc/<pid>/stat after the command name, its state first (field 3 of proc(5));
// empty when the process is gone or the file is unreadable.
std::string ProcStatFields(pid_t pid);

// User + system CPU seconds of `pid` (all its threads), plus its reaped children's (cutime,
// cstime) when `with_reaped_children`; 0 when /proc/<pid>/stat is unreadable.
double PidCpuSeconds(pid_t pid, bool with_reaped_children);

// ---------------------------------------------------------------------------------------------
// Shared by the replication benchmarks.

// `s` single-quoted for a POSIX shell (a ' inside becomes '\'').
std::string ShellQuote(const std::string& s);

// Counts the bytes of a stream and drops them. Not thread-safe.
class CountingSink : public ByteSink {
 public:
  absl::Status Write(std::string_view data) override {
    bytes_ += data.size();
    return absl::OkStatus();
  }
  absl::Status Close() override { return absl::OkStatus(); }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_ = 0;
};

// A ledger whose chain is one block, as BuildOneBlockLedger leaves it.
struct OneBlockLedger {
  std::vector<BlockInfo> blocks;  // BlockMaker::ListBlocks(): the one block
  std::string block_path;         // that block's read-only snapshot
  uint64_t events = 0;
  uint64_t stream_bytes = 0;  // the block's full (non-incremental) btrfs send stream
};

// Fills the live event log of the ledger root `root` (already set up by InitializeLedgerRoot)
// with FillLedger (interval durability, 500 ms; 4 progress lines) to at least `target_bytes`,
// cuts one block, then sends it once into a CountingSink for the stream's size, which also reads
// it into the page cache so every timed case sends from memory. Prints "block <name>: <n> events;
// full send stream <x> MB". `abort` as for FillLedger. Errors: the first failing step's.
absl::StatusOr<OneBlockLedger> BuildOneBlockLedger(Btrfs& btrfs, const std::string& root,
                                                   uint64_t target_bytes, uint64_t seed,
                                                   const std::function<absl::Status()>& abort);

// Deletes every subvolume directly inside each of `dirs` that exists (all on the btrfs mounted
// at `mount_point`), then commits, waits until the cleaner has freed their extents and commits
// again, so no background work of one transfer overlaps the next. Errors: the first failure.
absl::Status DeleteSubvolumesAndSettle(Btrfs& btrfs, const std::vector<std::string>& dirs,
                                       const std::string& mount_point);

// Appends the public key in the file `public_key_file` (its text without trailing white space,
// then a newline) to the sshd authorized_keys file `authorized_keys`, creating it if need be.
absl::Status AppendAuthorizedKey(const std::string& authorized_keys,
                                 const std::string& public_key_file);

}  // namespace snapledger::bench
