#include "bench/bench_util.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <linux/btrfs.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/base/clock.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"
#include "common/base/status_macros.h"
#include "common/ledger/block_maker.h"
#include "common/testing/ovs_event_generator.h"

namespace snapledger::bench {

namespace fs = std::filesystem;

absl::StatusOr<ScratchDir> ScratchDir::Claim(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) {
    if (!fs::is_directory(path, ec))
      return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
    if (!fs::is_empty(path, ec) || ec)
      return absl::FailedPreconditionError(absl::StrCat(
          path,
          " is not empty; the benchmark only runs in an empty or new directory because it "
          "deletes what it creates there"));
    return ScratchDir(path, /*created=*/false);
  }
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", path, ": ", ec.message()));
  return ScratchDir(path, /*created=*/true);
}

ScratchDir::ScratchDir(ScratchDir&& o) noexcept
    : path_(std::move(o.path_)), created_(o.created_), keep_(o.keep_) {
  o.moved_from_ = true;
}

ScratchDir::~ScratchDir() {
  if (moved_from_ || keep_) return;
  std::error_code ec;
  if (created_) {
    fs::remove_all(path_, ec);
    return;
  }
  for (const auto& entry : fs::directory_iterator(path_, ec)) fs::remove_all(entry.path(), ec);
}

int64_t NowNanos() { return Clock::Real()->MonotonicNanos(); }

double ProcessCpuSeconds() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string LoadAverage() {
  auto text = ReadFileToString("/proc/loadavg");
  if (!text.ok()) return "unknown";
  std::istringstream in(*text);
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return absl::StrCat(one, " ", five, " ", fifteen, " (1/5/15 min)");
}

absl::StatusOr<HeadRecord> FillLedger(EventLog& log, uint64_t target_bytes, uint64_t seed,
                                      int progress_steps,
                                      const std::function<absl::Status()>& abort) {
  OvsEventGenerator gen(seed);
  constexpr size_t kBatch = 20000;
  auto generate = [&gen] { return gen.Generate(kBatch); };
  int64_t start = NowNanos();
  auto next = std::async(std::launch::async, generate);
  uint64_t reported = 0;
  while (log.Head().log_bytes < target_bytes) {
    std::vector<std::string> batch = next.get();
    if (abort) RETURN_IF_ERROR(abort());
    next = std::async(std::launch::async, generate);
    RETURN_IF_ERROR(log.AppendBatch(batch).status());
    uint64_t bytes = log.Head().log_bytes;
    if (bytes - reported >= target_bytes / std::max(progress_steps, 1)) {
      reported = bytes;
      fmt::print("  built {:.0f} MB ({:.0f} MB/s)\n", bytes / 1e6,
                 bytes / 1e6 / ((NowNanos() - start) / 1e9));
      std::fflush(stdout);
    }
  }
  next.wait();
  RETURN_IF_ERROR(log.Sync());
  HeadRecord head = log.Head();
  fmt::print("  built {} events, {:.1f} MB in {:.1f} s\n", head.head.seq, head.log_bytes / 1e6,
             (NowNanos() - start) / 1e9);
  return head;
}

double MBps(uint64_t bytes, double seconds) { return seconds > 0 ? bytes / 1e6 / seconds : 0; }

int ExitCodeFor(const char* program, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: %s\n", program, status.ToString().c_str());
  if (absl::IsFailedPrecondition(status)) return 3;
  return absl::IsCancelled(status) ? 130 : 1;
}

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
  return set;
}

void BlockStopSignals() {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

SignalStop::SignalStop(std::string program, std::string action, OnRepeat on_repeat)
    : program_(std::move(program)),
      action_(std::move(action)),
      on_repeat_(on_repeat),
      thread_([this] { Loop(); }) {}

SignalStop::~SignalStop() {
  done_ = true;
  thread_.join();
}

absl::Status SignalStop::status() const {
  return stopped_ ? absl::CancelledError("stopped by a signal") : absl::OkStatus();
}

void SignalStop::Loop() {
  sigset_t set = StopSignals();
  while (!done_) {
    timespec wait{0, 100'000'000};
    int sig = ::sigtimedwait(&set, nullptr, &wait);
    if (sig <= 0 || (stopped_ && on_repeat_ == OnRepeat::kIgnore)) continue;
    std::fprintf(stderr, "\n%s: signal %d: %s\n", program_.c_str(), sig, action_.c_str());
    stopped_ = true;
    // After stopped(): whoever sees its transfer fail then also sees why.
    pid_t parent = end_children_of_;
    if (parent > 0)
      for (pid_t child : ChildrenOf(parent)) ::kill(child, escalate_ ? SIGKILL : SIGTERM);
    escalate_ = true;
  }
}

std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream in(task.path() / "children");
    pid_t child;
    while (in >> child) out.push_back(child);
  }
  return out;
}

std::string ProcStatFields(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name, in parentheses, may itself contain ") ": the last one ends it.
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return "";
  return stat.substr(paren + 2);
}

double PidCpuSeconds(pid_t pid, bool with_reaped_children) {
  const size_t needed = with_reaped_children ? 15 : 13;
  std::istringstream fields(ProcStatFields(pid));
  std::vector<std::string> f;
  std::string x;
  while (fields >> x && f.size() < needed) f.push_back(x);
  if (f.size() < needed) return 0;
  // From the state on: state(3) ... utime(14) stime(15) cutime(16) cstime(17), 1-based in proc(5).
  double ticks = 0;
  for (size_t i = 11; i < needed; ++i) ticks += std::stod(f[i]);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

absl::StatusOr<OneBlockLedger> BuildOneBlockLedger(Btrfs& btrfs, const std::string& root,
                                                   uint64_t target_bytes, uint64_t seed,
                                                   const std::function<absl::Status()>& abort) {
  LedgerLayout layout(root);
  OneBlockLedger ledger;
  {
    EventLogOptions options;
    options.durability = Durability::kInterval;
    options.sync_interval = absl::Milliseconds(500);
    ASSIGN_OR_RETURN(EventLogPtr log, EventLog::Create(layout.live(), /*epoch=*/1, options));
    ASSIGN_OR_RETURN(HeadRecord head, FillLedger(*log, target_bytes, seed, 4, abort));
    ledger.events = head.head.seq;
    ASSIGN_OR_RETURN(BlockMakerPtr maker, BlockMaker::Create(btrfs, root, *log));
    ASSIGN_OR_RETURN(std::optional<BlockInfo> block, maker->Cut());
    if (!block) return absl::InternalError("no block was cut");
    ASSIGN_OR_RETURN(ledger.blocks, maker->ListBlocks());
  }
  ledger.block_path = layout.block(ledger.blocks.back());
  CountingSink counter;
  RETURN_IF_ERROR(btrfs.Send(ledger.block_path, std::nullopt, counter));
  ledger.stream_bytes = counter.bytes();
  fmt::print("block {}: {} events; full send stream {:.1f} MB\n", ledger.blocks.back().name,
             ledger.events, ledger.stream_bytes / 1e6);
  return ledger;
}

absl::Status DeleteSubvolumesAndSettle(Btrfs& btrfs, const std::vector<std::string>& dirs,
                                       const std::string& mount_point) {
  for (const std::string& dir : dirs) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) continue;
    ASSIGN_OR_RETURN(std::vector<SubvolumeInfo> subvolumes, btrfs.ListSubvolumes(dir));
    for (const SubvolumeInfo& s : subvolumes) RETURN_IF_ERROR(btrfs.DeleteSubvolume(s.path));
  }
  // BTRFS_IOC_SYNC (`btrfs filesystem sync`) commits and wakes the cleaner; after a plain
  // syncfs, `subvolume sync` would wait for the next periodic commit (30 s).
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(mount_point, O_RDONLY | O_DIRECTORY));
  auto commit = [&]() -> absl::Status {
    if (::ioctl(fd.get(), BTRFS_IOC_SYNC) != 0)
      return ErrnoStatus("BTRFS_IOC_SYNC " + mount_point, errno);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(commit());
  RETURN_IF_ERROR(
      RunCommandOk(*ProcessRunner::Real(), {"btrfs", "-q", "subvolume", "sync", mount_point})
          .status());
  RETURN_IF_ERROR(commit());
  return absl::OkStatus();
}

absl::Status AppendAuthorizedKey(const std::string& authorized_keys,
                                 const std::string& public_key_file) {
  ASSIGN_OR_RETURN(std::string pub, ReadFileToString(public_key_file));
  std::ofstream keys(authorized_keys, std::ios::app);
  keys << absl::StripTrailingAsciiWhitespace(pub) << "\n";
  if (!keys) return absl::InternalError("cannot add the baseline key to authorized_keys");
  return absl::OkStatus();
}

}  // namespace snapledger::bench
