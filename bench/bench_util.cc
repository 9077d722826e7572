#include "bench/bench_util.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/file_util.h"

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

}  // namespace snapledger::bench
