// snapledger-bench-lookup: what keeping a replica's derived lookup index
// (common/lookup/lookup_index.h) current costs, on a loop-mounted btrfs like a replica's ledger
// root, each figure next to its baseline measured in the same run on the same data (see
// bench/README.md):
//   1. a full rebuild of the index of --events realistic events (OvsEventGenerator bodies),
//      against ScanEvents of the same log (map + parse + chain links: the floor of any index);
//   2. the replica's steady state: --blocks blocks of --block-events events appended to that
//      log, each followed by LookupIndex::CatchUp as the replica daemon runs it after every
//      verified block: time per block against ScanEvents of the block's lines, and the bytes
//      the index writes (write(2) bytes from /proc/self/io) against the block's log bytes;
//   3. lookups afterwards: SeqOfHash of random events against Locate (by seq) of random events.
// Needs root, mkfs.btrfs and loop devices (LoopBtrfs); exits 3 saying what is missing.
// Bounded: the event, block and lookup counts; SIGINT/SIGTERM stop it between steps.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/ledger/event_format.h"
#include "common/ledger/head_file.h"
#include "common/ledger/log_reader.h"
#include "common/ledger/sha256.h"
#include "common/lookup/lookup_index.h"
#include "common/testing/ovs_event_generator.h"
#include "tests/integration/loop_btrfs.h"

namespace snapledger::bench {
namespace {

struct Options {
  uint64_t events = 1'000'000;
  uint64_t block_events = 800;
  int blocks = 300;
  int lookups = 20'000;
  uint64_t image_mb = 4096;
  uint64_t seed = 1;
};

// Bytes this process has passed to write-like system calls so far (wchar of /proc/self/io).
uint64_t WrittenBytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value)
    if (key == "wchar:") return value;
  return 0;
}

// Appends events to <dir>/events.jsonl and remembers every event's digest.
class LogWriter {
 public:
  static absl::StatusOr<LogWriter> Open(const std::string& dir, uint64_t seed) {
    LogWriter w(seed);
    ASSIGN_OR_RETURN(w.fd_,
                     OpenFile(absl::StrCat(dir, "/", kEventsFile), O_WRONLY | O_CREAT | O_APPEND));
    return w;
  }
  // Appends `count` events and makes them durable; returns their bytes.
  absl::StatusOr<uint64_t> Append(uint64_t count) {
    std::string lines;
    for (uint64_t i = 0; i < count; ++i) {
      ++seq_;
      ts_ += 100'000;  // 10,000 events/s
      head_ = AppendEventLine(seq_, ts_, head_, generator_->Next(), *hasher_, &lines);
      Digest d;
      FromHex(head_, &d);
      digests_.push_back(d);
    }
    RETURN_IF_ERROR(WriteAll(fd_.get(), lines, "events.jsonl"));
    if (::fdatasync(fd_.get()) != 0) return ErrnoStatus("fdatasync events.jsonl", errno);
    return lines.size();
  }
  uint64_t seq() const { return seq_; }
  const std::vector<Digest>& digests() const { return digests_; }

 private:
  explicit LogWriter(uint64_t seed) : generator_(std::make_unique<OvsEventGenerator>(seed)) {}
  std::unique_ptr<OvsEventGenerator> generator_;
  UniqueFd fd_;
  std::unique_ptr<Sha256> hasher_ = std::make_unique<Sha256>();
  std::string head_ = std::string(kGenesisHash);
  uint64_t seq_ = 0;
  int64_t ts_ = 1'700'000'000'000'000;
  std::vector<Digest> digests_;
};

// Seconds ScanEvents takes over the complete lines of `log` after byte `from` (event `after`).
absl::StatusOr<double> ScanSeconds(const LogFile& log, uint64_t from, const ChainHead& after) {
  int64_t t0 = NowNanos();
  ASSIGN_OR_RETURN(LogRegion region, log.Map(from));
  uint64_t n = 0;
  RETURN_IF_ERROR(ScanEvents(region.data(), after, from, [&](const EventView&, uint64_t) {
    ++n;
    return true;
  }));
  return (NowNanos() - t0) / 1e9;
}

std::string Stats(std::vector<double> v, const char* unit) {
  double p50 = Percentile(v, 50), p99 = Percentile(v, 99), max = Percentile(v, 100);
  return absl::StrFormat("p50 %.3f %s, p99 %.3f %s, max %.3f %s", p50, unit, p99, unit, max, unit);
}

absl::Status Run(const Options& opt, const SignalStop& stop) {
  ASSIGN_OR_RETURN(testing::LoopBtrfsPtr fs, testing::LoopBtrfs::Create(opt.image_mb << 20));
  std::string ledger = fs->Sub("ledger"), index_dir = fs->Sub("index/lookup");
  std::error_code ec;
  std::filesystem::create_directories(ledger, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", ledger, ": ", ec.message()));
  std::printf("btrfs at %s (%llu MiB image); load average %s\n", fs->mount_point().c_str(),
              static_cast<unsigned long long>(opt.image_mb), LoadAverage().c_str());

  // 1. The base log and a full rebuild.
  ASSIGN_OR_RETURN(LogWriter writer, LogWriter::Open(ledger, opt.seed));
  uint64_t base_bytes = 0;
  for (uint64_t left = opt.events; left > 0 && !stop.stopped();) {
    uint64_t n = std::min<uint64_t>(left, 100'000);
    ASSIGN_OR_RETURN(uint64_t bytes, writer.Append(n));
    base_bytes += bytes;
    left -= n;
  }
  RETURN_IF_ERROR(stop.status());
  ASSIGN_OR_RETURN(LogFile base_log, LogFile::Open(ledger));
  ASSIGN_OR_RETURN(double scan_all, ScanSeconds(base_log, 0, ChainHead{}));
  int64_t t0 = NowNanos();
  ASSIGN_OR_RETURN(LookupIndexPtr index, LookupIndex::Rebuild(index_dir, base_log));
  double rebuild = (NowNanos() - t0) / 1e9;
  std::printf(
      "rebuild of %llu events (%.1f MB of log): %.2f s (%.0f events/s); ScanEvents alone "
      "%.2f s; ratio %.2fx the scan\n",
      static_cast<unsigned long long>(opt.events), base_bytes / 1e6, rebuild, opt.events / rebuild,
      scan_all, rebuild / scan_all);

  // 2. Blocks, each followed by a catch-up, as on a replica.
  std::vector<double> catch_up_ms, scan_ms, written_per_event;
  uint64_t log_bytes = 0, index_bytes = 0;
  for (int b = 0; b < opt.blocks && !stop.stopped(); ++b) {
    ASSIGN_OR_RETURN(IndexCoverage cov, index->Coverage());
    ASSIGN_OR_RETURN(uint64_t bytes, writer.Append(opt.block_events));
    ASSIGN_OR_RETURN(LogFile log, LogFile::Open(ledger));
    ASSIGN_OR_RETURN(double scan, ScanSeconds(log, cov.end_offset,
                                              ChainHead{cov.indexed_through, cov.hash, cov.ts}));
    uint64_t w0 = WrittenBytes();
    int64_t c0 = NowNanos();
    ASSIGN_OR_RETURN(uint64_t added, index->CatchUp(log));
    double seconds = (NowNanos() - c0) / 1e9;
    uint64_t written = WrittenBytes() - w0;
    if (added != opt.block_events)
      return absl::InternalError(
          absl::StrCat("catch-up added ", added, " events, expected ", opt.block_events));
    catch_up_ms.push_back(seconds * 1e3);
    scan_ms.push_back(scan * 1e3);
    written_per_event.push_back(static_cast<double>(written) / added);
    log_bytes += bytes;
    index_bytes += written;
  }
  RETURN_IF_ERROR(stop.status());
  double catch_up_median = Median(catch_up_ms), scan_median = Median(scan_ms);
  std::printf("%d blocks of %llu events onto %llu:\n", opt.blocks,
              static_cast<unsigned long long>(opt.block_events),
              static_cast<unsigned long long>(opt.events));
  std::printf("  CatchUp per block: %s, mean %.3f ms\n", Stats(catch_up_ms, "ms").c_str(),
              std::accumulate(catch_up_ms.begin(), catch_up_ms.end(), 0.0) / catch_up_ms.size());
  std::printf("  ScanEvents of the same lines (baseline): %s\n", Stats(scan_ms, "ms").c_str());
  std::printf("  ratio: %.2fx the scan (medians)\n", catch_up_median / scan_median);
  std::printf(
      "  index bytes written: %.0f B/event (%s per block per event), log %.0f B/event; "
      "ratio %.2fx the log\n",
      static_cast<double>(index_bytes) / (opt.blocks * opt.block_events),
      Stats(written_per_event, "B").c_str(),
      static_cast<double>(log_bytes) / (opt.blocks * opt.block_events),
      static_cast<double>(index_bytes) / log_bytes);

  // 3. Lookups.
  std::mt19937_64 rng(opt.seed);
  const std::vector<Digest>& digests = writer.digests();
  std::vector<double> by_hash, by_seq;
  for (int i = 0; i < opt.lookups; ++i) {
    uint64_t seq = 1 + rng() % digests.size();
    std::string hex = ToHex(digests[seq - 1]);
    int64_t h0 = NowNanos();
    ASSIGN_OR_RETURN(std::optional<uint64_t> found, index->SeqOfHash(hex));
    int64_t h1 = NowNanos();
    ASSIGN_OR_RETURN(std::optional<EventLocation> loc, index->Locate(seq));
    int64_t h2 = NowNanos();
    if (found != seq || !loc.has_value())
      return absl::InternalError(absl::StrCat("lookup of seq ", seq, " failed"));
    by_hash.push_back((h1 - h0) / 1e3);
    by_seq.push_back((h2 - h1) / 1e3);
  }
  double hash_median = Median(by_hash), seq_median = Median(by_seq);
  std::printf("lookups of %d random events: SeqOfHash %s; Locate (baseline) %s; ratio %.2fx\n",
              opt.lookups, Stats(by_hash, "us").c_str(), Stats(by_seq, "us").c_str(),
              hash_median / seq_median);
  struct stat st;
  std::string data = index_dir + "/data.mdb";
  if (::stat(data.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", data), errno);
  std::printf("data.mdb: %.1f MB allocated (%.1f MB long, holes included)\n",
              static_cast<double>(st.st_blocks) * 512 / 1e6, static_cast<double>(st.st_size) / 1e6);
  return absl::OkStatus();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  using namespace snapledger::bench;
  BlockStopSignals();
  Options opt;
  CLI::App app("What keeping a replica's lookup index current costs per block, on btrfs");
  AddOption(app, "--events", opt.events, "events in the log before the blocks", 1, 100'000'000);
  AddOption(app, "--block-events", opt.block_events, "events per block", 1, 1'000'000);
  AddOption(app, "--blocks", opt.blocks, "blocks appended and caught up", 1, 100'000);
  AddOption(app, "--lookups", opt.lookups, "random lookups by hash and by seq", 1, 10'000'000);
  AddOption(app, "--image-mb", opt.image_mb, "size of the loop-mounted btrfs image", 512,
            1'000'000);
  AddOption(app, "--seed", opt.seed, "event generator seed");
  CLI11_PARSE(app, argc, argv);
  SignalStop stop("snapledger-bench-lookup", "stopping", SignalStop::OnRepeat::kIgnore);
  return ExitCodeFor("snapledger-bench-lookup", Run(opt, stop));
}
