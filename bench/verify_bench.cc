// snapledger-bench-verify: full chain verification (VerifyLedgerDir) of a >= 1 GB ledger of
// realistic events against the real `sha256sum` binary hashing the same events.jsonl, in the
// same run, plus incremental verification of the last 1% (VerifyLedgerDirFrom a head at 99%)
// to show that it costs O(new events). See bench/README.md.
//
// The page cache cannot be dropped reliably here, so every tool first runs once untimed
// (which leaves the file cached) and only warm runs are timed; the figures compare CPU cost,
// not disk speed.
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/base/fmt_absl.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/event_log.h"
#include "common/ledger/head_file.h"
#include "common/testing/ovs_event_generator.h"

extern char** environ;

namespace snapledger::bench {
namespace {

std::string EventsPath(const std::string& dir) { return absl::StrCat(dir, "/", kEventsFile); }

// Writes a ledger of at least `target_bytes` through EventLog (so it is a real, valid chain):
// large AppendBatch calls, Durability::kInterval, the next batch generated on a second thread
// while the current one is appended.
absl::Status BuildLedger(const std::string& dir, uint64_t target_bytes, uint64_t seed) {
  EventLogOptions options;
  options.durability = Durability::kInterval;
  options.sync_interval = absl::Milliseconds(500);
  ASSIGN_OR_RETURN(EventLogPtr log, EventLog::Create(dir, /*epoch=*/1, options));
  return FillLedger(*log, target_bytes, seed, 10).status();
}

// Wall-clock and CPU (user + system, all threads) seconds of one timed run. Under other load
// on the machine the CPU figure is the steadier one.
struct Timing {
  double wall = 0;
  double cpu = 0;
};

// Runs `argv` (found on PATH, stdout to /dev/null) and returns its times; an error if it
// cannot start or exits non-zero.
absl::StatusOr<Timing> TimeCommand(std::vector<std::string> argv) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid;
  int64_t start = NowNanos();
  int err = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return ErrnoStatus(absl::StrCat("spawn ", argv[0]), err);
  int status = 0;
  struct rusage ru {};
  while (::wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) return ErrnoStatus(absl::StrCat("wait4 ", argv[0]), errno);
  }
  double seconds = (NowNanos() - start) / 1e9;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return absl::InternalError(absl::StrCat(argv[0], " failed (wait status ", status, ")"));
  auto sec = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return Timing{seconds, sec(ru.ru_utime) + sec(ru.ru_stime)};
}

// Full verification; an unverified chain is an error (the benchmark must measure success).
absl::StatusOr<Timing> TimeVerify(const std::string& dir, int threads, uint64_t expect_events) {
  double cpu_start = ProcessCpuSeconds();
  int64_t start = NowNanos();
  ASSIGN_OR_RETURN(VerifyReport report, VerifyLedgerDir(dir, {HeadCheck::kExact, threads}));
  Timing t{(NowNanos() - start) / 1e9, ProcessCpuSeconds() - cpu_start};
  if (!report.ok()) return absl::DataLossError(report.failure->ToString());
  if (report.events_verified != expect_events)
    return absl::InternalError(absl::StrCat("verified ", report.events_verified,
                                            " events, "
                                            "expected ",
                                            expect_events));
  return t;
}

// The head of the last line ending at or before `fraction` of the log.
absl::StatusOr<HeadRecord> HeadAt(const std::string& dir, double fraction, uint64_t epoch) {
  ASSIGN_OR_RETURN(MappedFile log, MappedFile::Open(EventsPath(dir)));
  std::string_view data = log.data();
  size_t cut = static_cast<size_t>(data.size() * fraction);
  const void* nl = memrchr(data.data(), '\n', cut);
  if (nl == nullptr) return absl::FailedPreconditionError("the ledger is too small");
  size_t end = static_cast<const char*>(nl) - data.data() + 1;
  const void* prev_nl = end >= 2 ? memrchr(data.data(), '\n', end - 1) : nullptr;
  size_t begin = prev_nl == nullptr ? 0 : static_cast<const char*>(prev_nl) - data.data() + 1;
  ASSIGN_OR_RETURN(EventView ev, ParseEventLine(data.substr(begin, end - 1 - begin)));
  HeadRecord h;
  h.head = ChainHead{ev.seq, std::string(ev.hash), ev.ts};
  h.epoch = epoch;
  h.log_bytes = end;
  return h;
}

// What the replica's StreamChainVerifier does with a stream as it arrives: VerifyLines on one
// thread over runs of whole lines of about 4 MB (its chunk size), each copied into a reused
// buffer just before (as the forwarding thread hands it over) and timed from there: no page
// faults and no file reads, unlike VerifyLedgerDir's mapping, so this is the CPU cost of the
// verification itself.
absl::StatusOr<Timing> TimeInMemoryChunks(std::string_view log, uint64_t expect_events) {
  constexpr size_t kChunkBytes = 4 << 20;  // StreamVerifierLimits::chunk_bytes
  Timing t;
  ChainHead head;
  uint64_t events = 0;
  std::string chunk;
  for (size_t pos = 0; pos < log.size();) {
    size_t end = std::min(log.size(), pos + kChunkBytes);
    const void* nl = memrchr(log.data() + pos, '\n', end - pos);
    if (nl == nullptr) return absl::DataLossError(absl::StrCat("no line ends after byte ", pos));
    end = static_cast<const char*>(nl) - log.data() + 1;
    chunk.assign(log.substr(pos, end - pos));
    double cpu_start = ProcessCpuSeconds();
    int64_t start = NowNanos();
    VerifyReport r = VerifyLines(chunk, head, events + 1, 1);
    t.wall += (NowNanos() - start) / 1e9;
    t.cpu += ProcessCpuSeconds() - cpu_start;
    if (!r.ok()) return absl::DataLossError(r.failure->ToString());
    head = r.head;
    events += r.events_verified;
    pos = end;
  }
  if (events != expect_events)
    return absl::InternalError(
        absl::StrCat("verified ", events, " events in memory, expected ", expect_events));
  return t;
}

struct Incremental {
  double seconds = 0;
  uint64_t events = 0, bytes = 0;
};

absl::StatusOr<Incremental> TimeIncremental(const std::string& dir, const HeadRecord& trusted,
                                            int threads) {
  int64_t start = NowNanos();
  ASSIGN_OR_RETURN(VerifyReport report,
                   VerifyLedgerDirFrom(dir, trusted, {HeadCheck::kExact, threads}));
  double seconds = (NowNanos() - start) / 1e9;
  if (!report.ok()) return absl::DataLossError(report.failure->ToString());
  return Incremental{seconds, report.events_verified, report.bytes_verified};
}

struct Options {
  std::string dir;
  uint64_t size_mb = 1024;
  int runs = 3;
  bool reuse = false;
  bool openssl = true;
  uint64_t seed = 1;
};

absl::Status Run(const Options& o) {
  // With --reuse an existing ledger is used as is and kept; otherwise the directory must be
  // empty or absent and everything is removed at the end (a new ledger is kept with --reuse).
  std::optional<ScratchDir> scratch;
  std::error_code ec;
  bool reused = o.reuse && std::filesystem::exists(EventsPath(o.dir), ec);
  if (!reused) {
    ASSIGN_OR_RETURN(ScratchDir s, ScratchDir::Claim(o.dir));
    scratch.emplace(std::move(s));
    if (o.reuse) scratch->Keep();
    fmt::print("building a ledger of >= {} MB in {}\n", o.size_mb, o.dir);
    RETURN_IF_ERROR(BuildLedger(o.dir, o.size_mb * 1000 * 1000, o.seed));
  }
  ASSIGN_OR_RETURN(std::optional<HeadRecord> head, ReadHeadFile(o.dir));
  if (!head) return absl::NotFoundError(absl::StrCat(o.dir, " has no head file"));
  uint64_t bytes = std::filesystem::file_size(EventsPath(o.dir), ec);
  if (ec) return absl::InternalError(absl::StrCat("stat ", EventsPath(o.dir), ": ", ec.message()));
  if (bytes < o.size_mb * 1000 * 1000)
    return absl::FailedPreconditionError(absl::StrCat(
        "the reused ledger has ", bytes, " bytes, less than --size-mb; use a new directory"));
  uint64_t events = head->head.seq;
  fmt::print("ledger {}: {} events, {:.1f} MB ({})\n", EventsPath(o.dir), events, bytes / 1e6,
             reused ? "reused" : "built now");
  fmt::print("load average: {}\n", LoadAverage());
  fmt::print(
      "page cache cannot be dropped reliably: each tool runs once untimed first, so "
      "every timed run reads a cached file (CPU cost, not disk speed)\n");

  ASSIGN_OR_RETURN(std::string in_memory, ReadFileToString(EventsPath(o.dir)));
  struct Tool {
    std::string name;
    std::function<absl::StatusOr<Timing>()> run;
    std::vector<double> seconds, cpu;
  };
  std::vector<Tool> tools = {
      {"sha256sum (coreutils)",
       [&] {
         return TimeCommand({"sha256sum", EventsPath(o.dir)});
       },
       {},
       {}},
      {"VerifyLedgerDir threads=1", [&] { return TimeVerify(o.dir, 1, events); }, {}, {}},
      {"VerifyLedgerDir threads=2", [&] { return TimeVerify(o.dir, 2, events); }, {}, {}},
      {"VerifyLines 4 MB in memory", [&] { return TimeInMemoryChunks(in_memory, events); }, {}, {}},
  };
  // A second reference: OpenSSL's SHA-256 (SHA-NI where the CPU has it; coreutils' sha256sum
  // does not use it), i.e. roughly the ceiling for anything that hashes every byte once.
  if (o.openssl) {
    tools.push_back({"openssl dgst -sha256 (ref.)",
                     [&] {
                       return TimeCommand({"openssl", "dgst", "-sha256", EventsPath(o.dir)});
                     },
                     {},
                     {}});
  }
  for (Tool& t : tools) RETURN_IF_ERROR(t.run().status());  // warm-up
  for (int run = 1; run <= o.runs; ++run) {
    fmt::print("run {}/{}:", run, o.runs);
    for (Tool& t : tools) {
      ASSIGN_OR_RETURN(Timing s, t.run());
      t.seconds.push_back(s.wall);
      t.cpu.push_back(s.cpu);
      fmt::print("  {} {:.3f} s", t.name, s.wall);
      std::fflush(stdout);
    }
    fmt::print("\n");
  }

  ASSIGN_OR_RETURN(HeadRecord at99, HeadAt(o.dir, 0.99, head->epoch));
  RETURN_IF_ERROR(TimeIncremental(o.dir, at99, 2).status());  // warm-up
  std::vector<double> inc_seconds;
  Incremental inc;
  for (int run = 0; run < o.runs; ++run) {
    ASSIGN_OR_RETURN(inc, TimeIncremental(o.dir, at99, 2));
    inc_seconds.push_back(inc.seconds);
  }

  double sha = Median(tools[0].seconds);
  fmt::print("\nmedians of {} warm run(s) over {:.1f} MB\n", o.runs, bytes / 1e6);
  // Speed ratios: > 1 means faster than the reference. "CPU MB/s" is bytes per CPU-second
  // (all threads): steadier than wall time when other work shares the machine.
  double ossl = o.openssl ? Median(tools.back().seconds) : 0;
  fmt::print("  {:<28} {:>9} {:>9} {:>13} {:>11} {:>9}\n", "tool", "wall s", "MB/s", "vs sha256sum",
             o.openssl ? "vs openssl" : "", "CPU MB/s");
  for (const Tool& t : tools) {
    double s = Median(t.seconds);
    fmt::print("  {:<28} {:>9.3f} {:>9.0f} {:>12.2f}x", t.name, s, bytes / 1e6 / s, sha / s);
    if (o.openssl) {
      fmt::print(" {:>10.2f}x", ossl / s);
    } else {
      fmt::print(" {:>11}", "");
    }
    fmt::print(" {:>9.0f}\n", bytes / 1e6 / Median(t.cpu));
  }
  double full2 = Median(tools[2].seconds);
  double inc_s = Median(inc_seconds);
  fmt::print("\nincremental: VerifyLedgerDirFrom the head at 99% (seq {}, byte {}), threads=2\n",
             at99.head.seq, at99.log_bytes);
  fmt::print("  verified {} events, {:.1f} MB in {:.1f} ms (median; {:.0f} MB/s)\n", inc.events,
             inc.bytes / 1e6, inc_s * 1e3, inc.bytes / 1e6 / inc_s);
  fmt::print("  = {:.4f} of the full verification's time for {:.4f} of its bytes\n", inc_s / full2,
             static_cast<double>(inc.bytes) / bytes);
  fmt::print("load average at the end: {}\n", LoadAverage());
  return absl::OkStatus();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  CLI::App app{"Chain verification speed vs sha256sum of the same events.jsonl"};
  snapledger::bench::Options o;
  app.add_option("--dir", o.dir,
                 "ledger directory: empty or absent (built, then removed), or with --reuse an "
                 "existing benchmark ledger")
      ->required();
  app.add_option("--size-mb", o.size_mb, "minimum ledger size to build, in MB (10^6 bytes)")
      ->capture_default_str();
  app.add_option("--runs", o.runs, "timed warm runs per tool; medians are reported")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--reuse", o.reuse,
               "reuse the ledger in --dir if there is one; keep the ledger afterwards");
  app.add_flag("!--no-openssl", o.openssl, "skip the `openssl dgst -sha256` reference row");
  app.add_option("--seed", o.seed, "event generator seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  absl::Status st = snapledger::bench::Run(o);
  if (!st.ok()) {
    fmt::print(stderr, "snapledger-bench-verify: {}\n", st);
    return 1;
  }
  return 0;
}
