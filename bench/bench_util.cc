#include "bench/bench_util.h"

#include <fmt/core.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/ovs_event_generator.h"
#include "common/status_macros.h"

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

}  // namespace snapledger::bench
