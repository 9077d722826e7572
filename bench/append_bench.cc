// snapledger-bench-append: durable append throughput and latency of EventLog (group commit,
// Durability::kPerBatch: every acknowledged event is durable) against a baseline measured in
// the same run on the same directory: a raw loop of write(2) + fdatasync(2) per ~200-byte
// record. See bench/README.md for how to read the output.
//
// Cases (each with a fresh file, a fixed event count and a time cap):
//   raw         one thread: write one record, fdatasync, repeat
//   blocking N  N threads, each calling EventLog::Append and waiting for it (one event
//               outstanding per appender, like a unary RPC client)
//   pipelined N N threads, each keeping a window of EventLog::AppendAsync futures
//               outstanding (like a gRPC streaming client)
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <future>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/base/fmt_absl.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/ledger/event_log.h"
#include "common/testing/ovs_event_generator.h"

namespace snapledger::bench {
namespace {

enum class Mode { kRaw, kBlocking, kPipelined };

struct CaseSpec {
  Mode mode;
  int appenders;
  std::string Name() const {
    switch (mode) {
      case Mode::kRaw:
        return "raw write+fdatasync, 1 thread";
      case Mode::kBlocking:
        return fmt::format("EventLog blocking  x{:<2}", appenders);
      case Mode::kPipelined:
        return fmt::format("EventLog pipelined x{:<2}", appenders);
    }
    return "";
  }
};

struct Settings {
  uint64_t events = 200000;
  double max_seconds = 5;
  int window = 64;
  std::vector<int> appenders = {1, 4, 16};
  std::vector<std::string> modes = {"blocking", "pipelined"};  // the raw baseline always runs
};

// The figures of one case.
struct Figures {
  double events_per_s = 0, mb_per_s = 0;  // MB/s of bytes written to the file
  double p50_us = 0, p99_us = 0, max_us = 0;
  double cpu_us_per_event = 0;  // process CPU time (all threads) per appended event
};

// One measured case.
struct CaseResult {
  Figures fig;
  uint64_t events = 0;
  double seconds = 0;
};

CaseResult Summarize(uint64_t events, uint64_t bytes, double seconds, double cpu_seconds,
                     std::vector<double>& latencies_us) {
  CaseResult r{{}, events, seconds};
  r.fig.cpu_us_per_event = events == 0 ? 0 : cpu_seconds / events * 1e6;
  r.fig.events_per_s = events / seconds;
  r.fig.mb_per_s = bytes / seconds / 1e6;
  r.fig.p50_us = Percentile(latencies_us, 50);
  r.fig.p99_us = Percentile(latencies_us, 99);
  r.fig.max_us = latencies_us.empty() ? 0 : latencies_us.back();  // sorted by Percentile
  return r;
}

absl::StatusOr<CaseResult> RunRaw(const std::string& path, const std::vector<std::string>& bodies,
                                  const Settings& s) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND));
  std::vector<double> lat;
  lat.reserve(bodies.size());
  std::string record;
  uint64_t bytes = 0;
  double cpu_start = ProcessCpuSeconds();
  int64_t start = NowNanos();
  int64_t deadline = start + static_cast<int64_t>(s.max_seconds * 1e9);
  for (const std::string& body : bodies) {
    record.assign(body).push_back('\n');
    int64_t t0 = NowNanos();
    if (t0 > deadline) break;
    RETURN_IF_ERROR(WriteAll(fd.get(), record, path));
    if (::fdatasync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fdatasync ", path), errno);
    lat.push_back((NowNanos() - t0) / 1e3);
    bytes += record.size();
  }
  double seconds = (NowNanos() - start) / 1e9;
  double cpu = ProcessCpuSeconds() - cpu_start;
  uint64_t n = lat.size();
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return Summarize(n, bytes, seconds, cpu, lat);
}

// The per-thread side of an EventLog case.
struct AppenderOutput {
  std::vector<double> latencies_us;
  absl::Status status;
};

// Appends bodies[t], bodies[t + n], ... one at a time, each waited for.
void BlockingAppender(EventLog& log, const std::vector<std::string>& bodies, size_t t, size_t n,
                      int64_t deadline, AppenderOutput* out) {
  for (size_t i = t; i < bodies.size(); i += n) {
    int64_t t0 = NowNanos();
    if (t0 > deadline) break;
    auto r = log.Append(bodies[i]);
    if (!r.ok()) {
      out->status = r.status();
      return;
    }
    out->latencies_us.push_back((NowNanos() - t0) / 1e3);
  }
}

// Same slice of bodies, keeping up to `window` appends outstanding. Acknowledgements arrive
// in submission order (one writer, FIFO batches), so waiting on the oldest is exact enough.
void PipelinedAppender(EventLog& log, const std::vector<std::string>& bodies, size_t t, size_t n,
                       int64_t deadline, int window, AppenderOutput* out) {
  std::deque<std::pair<std::future<absl::StatusOr<AppendResult>>, int64_t>> inflight;
  auto retire_oldest = [&] {
    auto r = inflight.front().first.get();
    if (!r.ok() && out->status.ok()) out->status = r.status();
    out->latencies_us.push_back((NowNanos() - inflight.front().second) / 1e3);
    inflight.pop_front();
  };
  for (size_t i = t; i < bodies.size() && out->status.ok(); i += n) {
    if (static_cast<int>(inflight.size()) >= window) retire_oldest();
    int64_t t0 = NowNanos();
    if (t0 > deadline) break;
    inflight.emplace_back(log.AppendAsync(bodies[i]), t0);
  }
  while (!inflight.empty()) retire_oldest();
}

absl::StatusOr<CaseResult> RunEventLog(const std::string& dir, const CaseSpec& spec,
                                       const std::vector<std::string>& bodies, const Settings& s) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  EventLogOptions options;
  options.durability = Durability::kPerBatch;
  ASSIGN_OR_RETURN(EventLogPtr log, EventLog::Create(dir, /*epoch=*/1, options));

  size_t n = spec.appenders;
  std::vector<AppenderOutput> outputs(n);
  for (auto& o : outputs) o.latencies_us.reserve(bodies.size() / n + 1);
  std::latch go(1);
  int64_t start = 0, deadline = 0;
  std::vector<std::thread> threads;
  for (size_t t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      go.wait();
      if (spec.mode == Mode::kBlocking) {
        BlockingAppender(*log, bodies, t, n, deadline, &outputs[t]);
      } else {
        PipelinedAppender(*log, bodies, t, n, deadline, s.window, &outputs[t]);
      }
    });
  }
  double cpu_start = ProcessCpuSeconds();
  start = NowNanos();
  deadline = start + static_cast<int64_t>(s.max_seconds * 1e9);
  go.count_down();
  for (auto& th : threads) th.join();
  double seconds = (NowNanos() - start) / 1e9;
  double cpu = ProcessCpuSeconds() - cpu_start;

  std::vector<double> lat;
  for (auto& o : outputs) {
    RETURN_IF_ERROR(o.status);
    lat.insert(lat.end(), o.latencies_us.begin(), o.latencies_us.end());
  }
  HeadRecord head = log->Head();
  if (head.head.seq != lat.size())
    return absl::InternalError(absl::StrCat("the log holds ", head.head.seq, " events but ",
                                            lat.size(), " were acknowledged"));
  log.reset();
  std::filesystem::remove_all(dir, ec);
  return Summarize(lat.size(), head.log_bytes, seconds, cpu, lat);
}

std::string Row(const std::string& name, const Figures& f) {
  return fmt::format("  {:<32} {:>10.0f} {:>9.2f} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.1f}", name,
                     f.events_per_s, f.mb_per_s, f.p50_us, f.p99_us, f.max_us, f.cpu_us_per_event);
}

std::string Header() {
  return fmt::format("  {:<32} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}", "case", "events/s",
                     "file MB/s", "p50 us", "p99 us", "max us", "cpu us/ev");
}

// The median of each figure over the runs (each figure independently).
Figures MedianOf(const std::vector<CaseResult>& runs) {
  auto med = [&](double Figures::*field) {
    std::vector<double> v;
    for (const CaseResult& r : runs) v.push_back(r.fig.*field);
    return Median(v);
  };
  return Figures{med(&Figures::events_per_s), med(&Figures::mb_per_s),
                 med(&Figures::p50_us),       med(&Figures::p99_us),
                 med(&Figures::max_us),       med(&Figures::cpu_us_per_event)};
}

absl::Status Run(const std::string& dir, const Settings& s, int runs, uint64_t seed) {
  ASSIGN_OR_RETURN(ScratchDir scratch, ScratchDir::Claim(dir));
  std::vector<std::string> bodies = OvsEventGenerator(seed).Generate(s.events);
  uint64_t body_bytes = 0;
  for (const auto& b : bodies) body_bytes += b.size();

  std::vector<CaseSpec> cases = {{Mode::kRaw, 1}};
  for (const std::string& m : s.modes)
    for (int n : s.appenders)
      cases.push_back({m == "blocking" ? Mode::kBlocking : Mode::kPipelined, n});

  fmt::print(
      "snapledger-bench-append  dir={}  runs={}  events/case={}  cap {:.1f} s/case  "
      "pipeline window {}/appender\n",
      dir, runs, s.events, s.max_seconds, s.window);
  fmt::print(
      "event bodies: OVS port-agent events, mean {:.0f} bytes (the raw baseline writes "
      "the body + newline; EventLog lines add the seq/ts/prev/hash envelope)\n",
      static_cast<double>(body_bytes) / bodies.size());
  fmt::print("durability: every acknowledged event is on disk (fdatasync) in every case\n");
  fmt::print("load average at the start: {}\n", LoadAverage());

  std::vector<std::vector<CaseResult>> results(cases.size());
  for (int run = 1; run <= runs; ++run) {
    fmt::print("\nrun {}/{}\n{}\n", run, runs, Header());
    for (size_t c = 0; c < cases.size(); ++c) {
      absl::StatusOr<CaseResult> r =
          cases[c].mode == Mode::kRaw
              ? RunRaw(scratch.Sub("raw.log"), bodies, s)
              : RunEventLog(scratch.Sub(fmt::format("ledger-{}", c)), cases[c], bodies, s);
      if (!r.ok()) return r.status();
      fmt::print("{}  ({} events in {:.2f} s)\n", Row(cases[c].Name(), r->fig), r->events,
                 r->seconds);
      std::fflush(stdout);
      results[c].push_back(*r);
    }
  }

  std::vector<Figures> med;
  for (auto& r : results) med.push_back(MedianOf(r));
  fmt::print("\nmedians of {} run(s)\n{}\n", runs, Header());
  for (size_t c = 0; c < cases.size(); ++c) fmt::print("{}\n", Row(cases[c].Name(), med[c]));

  // Ratios are taken within each run (the case against the baseline measured minutes apart
  // on the same directory), then the median over runs: the disk's speed drifts between runs
  // more than within one.
  auto paired = [&](size_t c, auto ratio) {
    std::vector<double> v;
    for (int r = 0; r < runs; ++r) v.push_back(ratio(results[c][r].fig, results[0][r].fig));
    return Median(v);
  };
  fmt::print("\nratios (within each run, median over runs)\n");
  fmt::print("  durable events/s, EventLog vs raw write+fdatasync per event:\n");
  for (size_t c = 1; c < cases.size(); ++c)
    fmt::print("    {:<28} {:>8.1f}x\n", cases[c].Name(),
               paired(c, [](const Figures& f, const Figures& raw) {
                 return f.events_per_s / raw.events_per_s;
               }));
  // The blocking case with the fewest appenders (x1 by default), else the first case.
  size_t one = 0;
  for (size_t c = 1; c < cases.size(); ++c)
    if (cases[c].mode == Mode::kBlocking && (one == 0 || cases[c].appenders < cases[one].appenders))
      one = c;
  if (one == 0) one = 1;
  auto lat = [&](double Figures::*mine, double Figures::*base) {
    return paired(one, [&](const Figures& f, const Figures& raw) { return f.*mine / raw.*base; });
  };
  fmt::print("  latency, {} vs one raw write+fdatasync:\n", cases[one].Name());
  fmt::print("    p99 = {:.2f}x raw p50, {:.2f}x raw p99;  p50 = {:.2f}x raw p50\n",
             lat(&Figures::p99_us, &Figures::p50_us), lat(&Figures::p99_us, &Figures::p99_us),
             lat(&Figures::p50_us, &Figures::p50_us));
  fmt::print("load average at the end: {}\n", LoadAverage());
  return absl::OkStatus();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  CLI::App app{"Durable append throughput: EventLog group commit vs raw write+fdatasync"};
  std::string dir;
  int runs = 3;
  uint64_t seed = 1;
  snapledger::bench::Settings s;
  app.add_option("--dir", dir, "scratch directory: must be empty or absent; cleaned afterwards")
      ->required();
  app.add_option("--events", s.events, "events per case (each case also stops at --max-seconds)")
      ->capture_default_str();
  app.add_option("--max-seconds", s.max_seconds, "time cap per case")->capture_default_str();
  app.add_option("--runs", runs, "repeat every case this many times; medians are reported")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--window", s.window, "outstanding AppendAsync futures per pipelined appender")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--appenders", s.appenders, "appender thread counts")->capture_default_str();
  app.add_option("--modes", s.modes, "EventLog appender modes to measure")
      ->capture_default_str()
      ->check(CLI::IsMember({"blocking", "pipelined"}));
  app.add_option("--seed", seed, "event generator seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  absl::Status st = snapledger::bench::Run(dir, s, runs, seed);
  if (!st.ok()) {
    fmt::print(stderr, "snapledger-bench-append: {}\n", st);
    return 1;
  }
  return 0;
}
