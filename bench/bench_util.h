// Small helpers shared by the benchmarks: a claimed scratch directory, timing, statistics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <functional>

#include "absl/status/statusor.h"
#include "common/event_log.h"

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

}  // namespace snapledger::bench
