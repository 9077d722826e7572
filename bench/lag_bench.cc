// snapledger-lag-bench: steady-state replication lag and incremental efficiency on a real
// cluster (tests/integration/test_cluster.h: a primary and N replicas, each a network namespace
// with its own loop-mounted btrfs, OpenSSH sshd and the real daemons).
//
// Lag. One thread appends OvsEventGenerator bodies (~217 bytes) to the primary at --rate
// events/s: every --batch-ms a batch of rate*batch_ms/1000 events over its own AppendStream,
// so each batch is one acknowledgement whose time is that of every event in it (the batch is
// acknowledged once its last event is durable; a lone event could be acknowledged at most the
// batch's append latency earlier, which is printed). Batches are due on a fixed schedule; a
// late one is sent at once and the schedule is kept (no batch is skipped). A poller calls
// Replication.ClusterStatus every --poll-ms and records, per replica, the moment it saw the
// verified head advance (the response's arrival: an upper bound, late by up to one poll). For
// every event: lag = (when the slowest replica's verified head first reached its seq) - (its
// batch's acknowledgement). p50/p90/p99/max and p99 / --target-ms are printed.
//
// Efficiency. Around every measured window the appender pauses until each replica verified
// the primary's head (so no transfer straddles the edges), and the primary's metrics are
// scraped: per replica, snapledger_replication_sent_bytes_total (wire), _stream_bytes_total and
// _transfers_total; the bytes appended are the growth of the primary's Head.log_bytes. Printed:
// wire / appended, and the overhead bytes per block ((wire - appended) / transfers).
//
// Runs: one cluster; an untimed warm-up (--warmup-seconds, at the same rate: the first block
// is a full send), then --runs windows of --seconds each. Medians over runs are printed.
//
// Bounded and self-cleaning: durations, rates and runs are capped; every wait has a deadline;
// SIGINT/SIGTERM/SIGHUP stop the loops and the cluster is torn down by TestCluster's
// destructor (cluster.sh down) on every path.
#include <fmt/core.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/base/status_macros.h"
#include "common/ledger/block.h"
#include "common/testing/ovs_event_generator.h"
#include "snapledger/v1/snapledger.grpc.pb.h"
#include "tests/integration/cluster_client.h"
#include "tests/integration/test_cluster.h"

namespace snapledger::bench {
namespace {

using testing::ClusterHost;
using testing::TestCluster;
using testing::TestClusterPtr;

// ---------------------------------------------------------------------------------------------
// Stopping on a signal: a SignalStop (bench_util.h); the loops check it and unwind, so the
// cluster's destructor always runs.

// Sleeps until the monotonic time `nanos`, in slices, returning early when `stop` is set.
void SleepUntil(int64_t nanos, const SignalStop& stop) {
  while (!stop.stopped()) {
    int64_t left = nanos - NowNanos();
    if (left <= 0) return;
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(left, 50'000'000)));
  }
}

// ---------------------------------------------------------------------------------------------
// The poller: the primary's view of every replica's verified head.

struct HeadSample {
  int64_t nanos = 0;  // when the response carrying it arrived
  uint64_t seq = 0;
};

struct BlockSample {
  int64_t nanos = 0;  // when the poller first saw it as the newest block
  uint64_t seq = 0;   // its last event
};

// Calls ClusterStatus every `period` on its own thread until destroyed. Records a sample per
// replica whenever its verified head seq changed, and each new newest block. Thread-safe.
class StatusPoller {
 public:
  StatusPoller(const std::string& grpc_address, std::vector<std::string> replicas,
               absl::Duration period)
      : stub_(v1::Replication::NewStub(
            grpc::CreateChannel(grpc_address, grpc::InsecureChannelCredentials()))),
        replicas_(std::move(replicas)),
        period_nanos_(absl::ToInt64Nanoseconds(period)),
        heads_(replicas_.size()),
        thread_([this] { Loop(); }) {}
  ~StatusPoller() {
    done_ = true;
    thread_.join();
  }
  StatusPoller(const StatusPoller&) = delete;
  StatusPoller& operator=(const StatusPoller&) = delete;

  const std::vector<std::string>& replicas() const { return replicas_; }
  // Copies of the samples so far: per replica (in replicas() order), and the blocks.
  std::vector<std::vector<HeadSample>> Heads() const {
    std::lock_guard<std::mutex> l(mu_);
    return heads_;
  }
  std::vector<BlockSample> Blocks() const {
    std::lock_guard<std::mutex> l(mu_);
    return blocks_;
  }
  // The lowest verified head seq over the replicas (0 before every replica reported one).
  uint64_t SlowestSeq() const {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t slowest = UINT64_MAX;
    for (const auto& h : heads_) slowest = std::min(slowest, h.empty() ? 0 : h.back().seq);
    return slowest;
  }
  uint64_t polls() const { return polls_; }
  uint64_t errors() const { return errors_; }

 private:
  void Loop() {
    int64_t next = NowNanos();
    while (!done_) {
      PollOnce();
      next += period_nanos_;
      int64_t now = NowNanos();
      if (next < now) next = now;  // late: poll again at once, do not burst to catch up
      std::this_thread::sleep_for(std::chrono::nanoseconds(next - now));
    }
  }

  void PollOnce() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ClusterStatusResponse response;
    grpc::Status st = stub_->ClusterStatus(&context, {}, &response);
    int64_t now = NowNanos();
    ++polls_;
    if (!st.ok()) {
      ++errors_;
      return;
    }
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < replicas_.size(); ++i) {
      std::optional<v1::ReplicaStatus> r = testing::ReplicaIn(response, replicas_[i]);
      if (!r) continue;
      uint64_t seq = r->head().seq();
      if (heads_[i].empty() || heads_[i].back().seq != seq) heads_[i].push_back({now, seq});
    }
    if (!response.newest_block().empty()) {
      absl::StatusOr<BlockInfo> block = ParseBlockName(response.newest_block());
      if (block.ok() && (blocks_.empty() || blocks_.back().seq != block->seq))
        blocks_.push_back({now, block->seq});
    }
  }

  std::unique_ptr<v1::Replication::Stub> stub_;
  const std::vector<std::string> replicas_;
  const int64_t period_nanos_;
  mutable std::mutex mu_;
  std::vector<std::vector<HeadSample>> heads_;  // guarded by mu_
  std::vector<BlockSample> blocks_;             // guarded by mu_
  std::atomic<uint64_t> polls_{0}, errors_{0};
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts after everything above is constructed
};

// ---------------------------------------------------------------------------------------------
// The appender.

// One acknowledged batch: `count` events between first_seq and last_seq (exactly those seqs
// unless another appender's stream interleaved with this one).
struct Batch {
  uint64_t first_seq = 0, last_seq = 0, count = 0;
  int64_t submit_nanos = 0, ack_nanos = 0;
};

// Appends batches of OVS events to the primary, one AppendStream per batch. One thread.
class Appender {
 public:
  Appender(const std::string& grpc_address, uint64_t seed)
      : stub_(v1::Ledger::NewStub(
            grpc::CreateChannel(grpc_address, grpc::InsecureChannelCredentials()))),
        generator_(seed) {}

  // Appends `count` new events; returns the batch once the primary acknowledged all of them.
  absl::StatusOr<Batch> Append(size_t count) {
    std::vector<std::string> bodies = generator_.Generate(count);
    Batch b;
    b.submit_nanos = NowNanos();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::AppendBatchResponse response;
    auto writer = stub_->AppendStream(&context, &response);
    v1::AppendRequest request;
    for (std::string& body : bodies) {
      request.set_body_json(std::move(body));
      if (!writer->Write(request)) break;
    }
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    b.ack_nanos = NowNanos();
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("AppendStream: ", st.error_message()));
    // With several appenders, two streams' events may interleave: the range can be wider.
    if (response.count() != count || response.last_seq() - response.first_seq() + 1 < count)
      return absl::InternalError(absl::StrCat("AppendStream acknowledged ", response.count(),
                                              " of ", count, " events (seqs ", response.first_seq(),
                                              "..", response.last_seq(), ")"));
    b.first_seq = response.first_seq();
    b.last_seq = response.last_seq();
    b.count = count;
    return b;
  }

 private:
  std::unique_ptr<v1::Ledger::Stub> stub_;
  OvsEventGenerator generator_;
};

// ---------------------------------------------------------------------------------------------
// The benchmark.

struct Options {
  double seconds = 60;
  double warmup_seconds = 10;
  int rate = 10'000;
  int batch_ms = 10;
  int every_events = 2000;
  int interval_ms = 200;
  int on_demand_spacing_ms = 0;  // the daemon's default: off
  int poll_ms = 5;
  int appenders = 4;
  int replicas = 2;
  int runs = 1;
  double target_ms = 1000;
  double drain_seconds = 60;
  std::string compression = "none";
  std::string vector_index = "all";  // which nodes keep their derived vector index
  bool receive_session = true;       // replicas' receive_session (one command, many blocks)
  int image_mb = 0;                  // 0: sized for the events the run appends (ImageMb)
  uint64_t seed = 1;
};

// Counters read around a window.
struct Snapshot {
  uint64_t log_bytes = 0;  // the primary's Head.log_bytes
  uint64_t head_seq = 0;
  double blocks_cut = 0;                                  // snapledger_blocks_cut_total
  std::vector<double> wire, stream, transfers, received;  // per replica
  std::vector<double> commands;    // per replica: snapledger_replication_receive_commands_total
  std::vector<double> gave_way;    // per replica: snapledger_vector_index_gave_way_seconds_total
  std::vector<double> index_lag;   // per replica: snapledger_vector_index_lag_events
  std::vector<double> daemon_cpu;  // primary, then each replica
};

struct RunResult {
  double p50 = 0, p90 = 0, p99 = 0, max = 0, min = 0;
  uint64_t events = 0, unreplicated = 0, overlapping = 0;
  std::vector<double> replica_p50, replica_p99;  // each replica's own lag, ms
  double rate = 0;
  double batch_p50 = 0, batch_p99 = 0;  // append latency of one batch, ms
  double late_batches = 0;              // share of batches sent after their due time + 1 period
  double block_interval_p50 = 0, block_interval_p90 = 0, block_interval_max = 0;  // ms
  double events_per_block = 0, blocks_cut = 0, seconds = 0;
  std::vector<double> wire_ratio, overhead_per_block, transfers, wire_per_block;
  std::vector<double> commands;  // per replica: receive commands started in the window
  double appended_bytes = 0;
  std::vector<double> wire_bytes;
  std::vector<double> gave_way;    // per replica: seconds its vector index waited for receives
  std::vector<double> index_lag;   // per replica: events its vector index trailed by at the end
  std::vector<double> daemon_cpu;  // CPU seconds per daemon in the window
};

class LagBench {
 public:
  LagBench(const Options& o, const SignalStop& stop) : o_(o), stop_(stop) {}
  absl::Status Run();

 private:
  absl::Status StartCluster();
  std::string OnDemandText() const;  // the block policy's on-demand part, for the report
  absl::StatusOr<std::vector<Batch>> AppendFor(double seconds, bool record);
  absl::Status Drain(uint64_t seq);
  absl::StatusOr<Snapshot> Take();
  RunResult Compute(const std::vector<Batch>& batches, const Snapshot& before,
                    const Snapshot& after, int64_t window_start, int64_t window_end);
  void PrintRun(int run, const RunResult& r);
  void PrintSummary(const std::vector<RunResult>& runs);

  const Options& o_;
  const SignalStop& stop_;
  TestClusterPtr cluster_;  // destroyed last of what it serves: pollers and clients go first
  std::vector<std::unique_ptr<Appender>> appenders_;
  std::unique_ptr<StatusPoller> poller_;
  uint64_t last_seq_ = 0;
};

// Each host's image (sparse: only what is written takes room on the host) for the events this
// run appends: ~0.4 KB of log per event, and the embedded vector index's ~0.5 KB per event up
// to three times over while it compacts (its base, a journal as large, the new base), plus
// room for the lookup index, metadata and blocks pruned but not yet cleaned. A 4 GB image ran
// out of space at ~2.7 M events, as a vector index compaction began (a 6-window run).
int ImageMb(const Options& o) {
  if (o.image_mb > 0) return o.image_mb;
  const double events = o.rate * (o.warmup_seconds + o.seconds * o.runs);
  return std::max(4096, static_cast<int>(1024 + events * 2048 / (1 << 20)));
}

absl::Status LagBench::StartCluster() {
  testing::ClusterOptions options;
  options.replicas = o_.replicas;
  options.image_mb = ImageMb(o_);
  options.edit_config = [this](const ClusterHost& host, YAML::Node& config) {
    const bool keep_index =
        o_.vector_index == "all" || (o_.vector_index == "replicas" && host.name != "primary");
    if (!keep_index) config["vector_index"]["enabled"] = false;
    if (host.name != "primary") return;
    config["blocks"]["every_events"] = o_.every_events;
    config["blocks"]["interval_ms"] = o_.interval_ms;
    config["blocks"]["on_demand_spacing_ms"] = o_.on_demand_spacing_ms;
    for (YAML::Node replica : config["replicas"]) {
      replica["compression"] = o_.compression;
      replica["receive_session"] = o_.receive_session;
    }
  };
  ASSIGN_OR_RETURN(cluster_, TestCluster::Create(options));
  for (const ClusterHost& host : cluster_->hosts()) {
    RETURN_IF_ERROR(cluster_->StartDaemon(host.name));
  }
  fmt::print("cluster {} (tag {}): primary {} and {} replica(s) up\n", cluster_->dir(),
             cluster_->tag(), cluster_->primary().address, o_.replicas);
  for (int i = 0; i < o_.appenders; ++i)
    appenders_.push_back(std::make_unique<Appender>(cluster_->primary().grpc_address, o_.seed + i));
  poller_ = std::make_unique<StatusPoller>(
      cluster_->primary().grpc_address, cluster_->replica_names(), absl::Milliseconds(o_.poll_ms));
  return absl::OkStatus();
}

// Appends at o_.rate for `seconds` on the fixed schedule, from o_.appenders threads each
// taking the next due batch (so a slow acknowledgement does not hold the schedule back);
// returns the batches when `record`.
absl::StatusOr<std::vector<Batch>> LagBench::AppendFor(double seconds, bool record) {
  const int64_t period = int64_t{o_.batch_ms} * 1'000'000;
  const int64_t batches = std::max<int64_t>(1, std::llround(seconds * 1000 / o_.batch_ms));
  // A hard bound on the wall time: the schedule plus 30 s for a slow primary.
  const int64_t start = NowNanos();
  const int64_t give_up = start + batches * period + 30'000'000'000;
  auto due = [this](int64_t k) {  // events due by the end of batch k (k = -1: none)
    return static_cast<uint64_t>(
        std::llround(static_cast<double>(o_.rate) * (k + 1) * o_.batch_ms / 1000.0));
  };
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::vector<Batch> out;
  absl::Status failure;
  out.reserve(record ? batches : 0);
  auto work = [&](Appender& appender) {
    for (int64_t k = next++; k < batches; k = next++) {
      if (stop_.stopped() || NowNanos() > give_up) return;
      SleepUntil(start + k * period, stop_);
      uint64_t count = due(k) - due(k - 1);
      if (count == 0) continue;
      absl::StatusOr<Batch> b = appender.Append(count);
      std::lock_guard<std::mutex> l(mu);
      if (!b.ok()) {
        if (failure.ok()) failure = b.status();
        next = batches;  // the others stop after their current batch
        return;
      }
      last_seq_ = std::max(last_seq_, b->last_seq);
      if (record) out.push_back(*b);
    }
  };
  {
    std::vector<std::thread> threads;
    for (auto& appender : appenders_) threads.emplace_back(work, std::ref(*appender));
    for (std::thread& t : threads) t.join();
  }
  RETURN_IF_ERROR(failure);
  RETURN_IF_ERROR(stop_.status());
  if (next.load() < batches || NowNanos() > give_up)
    return absl::DeadlineExceededError("the primary could not take the appends in time");
  std::sort(out.begin(), out.end(),
            [](const Batch& a, const Batch& b) { return a.first_seq < b.first_seq; });
  return out;
}

// Waits (bounded) until every replica's verified head is at least `seq`.
absl::Status LagBench::Drain(uint64_t seq) {
  const int64_t deadline = NowNanos() + static_cast<int64_t>(o_.drain_seconds * 1e9);
  while (poller_->SlowestSeq() < seq) {
    RETURN_IF_ERROR(stop_.status());
    if (NowNanos() > deadline) {
      // What the primary says of each replica, and the daemons' logs kept to read.
      std::string replicas;
      testing::PrimaryClient client(cluster_->primary().grpc_address);
      if (absl::StatusOr<v1::ClusterStatusResponse> status = client.Status(); status.ok()) {
        for (const v1::ReplicaStatus& r : status->replicas())
          absl::StrAppend(&replicas, "\n  ", r.replica_id(), ": ", v1::ReplicaState_Name(r.state()),
                          ", verified seq ", r.head().seq(),
                          ", last error: ", r.last_error().empty() ? "-" : r.last_error());
      }
      (void)cluster_->Down(/*keep_logs=*/true);
      return absl::DeadlineExceededError(absl::StrCat(
          "the replicas did not verify seq ", seq, " within ", o_.drain_seconds, " s (slowest at ",
          poller_->SlowestSeq(), "); logs kept in ", cluster_->dir(), replicas));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::OkStatus();
}

absl::StatusOr<Snapshot> LagBench::Take() {
  Snapshot s;
  ASSIGN_OR_RETURN(std::string scrape, testing::ScrapeMetrics(cluster_->primary().metrics_address));
  auto metric = [&](const std::string& text, const std::string& name,
                    const std::map<std::string, std::string>& labels) -> absl::StatusOr<double> {
    std::optional<double> v = testing::MetricValue(text, name, labels);
    if (!v) return absl::NotFoundError(absl::StrCat("metric ", name, " missing"));
    return *v;
  };
  ASSIGN_OR_RETURN(s.blocks_cut, metric(scrape, "snapledger_blocks_cut_total", {}));
  for (const std::string& r : cluster_->replica_names()) {
    std::map<std::string, std::string> l = {{"replica", r}};
    ASSIGN_OR_RETURN(double wire, metric(scrape, "snapledger_replication_sent_bytes_total", l));
    ASSIGN_OR_RETURN(double stream, metric(scrape, "snapledger_replication_stream_bytes_total", l));
    ASSIGN_OR_RETURN(double xfers, metric(scrape, "snapledger_replication_transfers_total", l));
    ASSIGN_OR_RETURN(double commands,
                     metric(scrape, "snapledger_replication_receive_commands_total", l));
    s.commands.push_back(commands);
    ASSIGN_OR_RETURN(std::string rs, testing::ScrapeMetrics(cluster_->host(r).metrics_address));
    ASSIGN_OR_RETURN(double received, metric(rs, "snapledger_received_log_bytes_total", {}));
    ASSIGN_OR_RETURN(double gave_way,
                     metric(rs, "snapledger_vector_index_gave_way_seconds_total", {}));
    s.gave_way.push_back(gave_way);
    ASSIGN_OR_RETURN(double index_lag, metric(rs, "snapledger_vector_index_lag_events", {}));
    s.index_lag.push_back(index_lag);
    s.wire.push_back(wire);
    s.stream.push_back(stream);
    s.transfers.push_back(xfers);
    s.received.push_back(received);
  }
  testing::PrimaryClient client(cluster_->primary().grpc_address);
  ASSIGN_OR_RETURN(v1::ClusterStatusResponse status, client.Status());
  s.log_bytes = status.primary_head().log_bytes();
  s.head_seq = status.primary_head().seq();
  for (const ClusterHost& host : cluster_->hosts()) {
    ASSIGN_OR_RETURN(std::optional<pid_t> pid, cluster_->DaemonPid(host.name));
    s.daemon_cpu.push_back(pid ? PidCpuSeconds(*pid, /*with_reaped_children=*/false) : 0);
  }
  return s;
}

// The first sample of `heads` (seq non-decreasing in time) whose seq >= `seq`, or nullptr.
const HeadSample* Reached(const std::vector<HeadSample>& heads, uint64_t seq) {
  auto it = std::lower_bound(heads.begin(), heads.end(), seq,
                             [](const HeadSample& h, uint64_t s) { return h.seq < s; });
  return it == heads.end() ? nullptr : &*it;
}

RunResult LagBench::Compute(const std::vector<Batch>& batches, const Snapshot& before,
                            const Snapshot& after, int64_t window_start, int64_t window_end) {
  RunResult r;
  std::vector<std::vector<HeadSample>> heads = poller_->Heads();
  std::vector<double> lag_ms, batch_ms;
  // Each seq's acknowledgement: its batch's. Where streams interleaved (ranges overlap) the
  // batch of a seq is ambiguous and the earliest candidate is taken, which can only overstate
  // the lag.
  const uint64_t lo = batches.empty() ? 1 : batches.front().first_seq;
  uint64_t hi = lo - 1;
  for (const Batch& b : batches) hi = std::max(hi, b.last_seq);
  std::vector<int64_t> ack(hi + 1 - lo, INT64_MAX);
  uint64_t prev_last = 0;
  for (const Batch& b : batches) {
    batch_ms.push_back((b.ack_nanos - b.submit_nanos) / 1e6);
    r.overlapping += b.first_seq <= prev_last || b.last_seq - b.first_seq + 1 != b.count;
    prev_last = std::max(prev_last, b.last_seq);
    for (uint64_t seq = b.first_seq; seq <= b.last_seq; ++seq)
      ack[seq - lo] = std::min(ack[seq - lo], b.ack_nanos);
  }
  std::vector<std::vector<double>> per_replica(heads.size());
  lag_ms.reserve(ack.size());
  for (uint64_t seq = lo; seq <= hi; ++seq) {
    if (ack[seq - lo] == INT64_MAX) continue;  // not one of ours (cannot happen: sole appender)
    int64_t slowest = 0;
    bool all = true;
    for (size_t i = 0; i < heads.size(); ++i) {
      const HeadSample* s = Reached(heads[i], seq);
      if (!s) {
        all = false;
        break;
      }
      per_replica[i].push_back((s->nanos - ack[seq - lo]) / 1e6);
      slowest = std::max(slowest, s->nanos);
    }
    if (!all) {
      ++r.unreplicated;
      continue;
    }
    lag_ms.push_back((slowest - ack[seq - lo]) / 1e6);
  }
  for (auto& v : per_replica) {
    r.replica_p50.push_back(Percentile(v, 50));
    r.replica_p99.push_back(Percentile(v, 99));
  }
  uint64_t total = 0;
  for (const Batch& b : batches) total += b.count;
  r.events = total;
  int64_t first_submit = INT64_MAX, last_ack = 0;
  for (const Batch& b : batches) {
    first_submit = std::min(first_submit, b.submit_nanos);
    last_ack = std::max(last_ack, b.ack_nanos);
  }
  r.seconds = batches.empty() ? 0 : (last_ack - first_submit) / 1e9;
  r.rate = r.seconds > 0 ? r.events / r.seconds : 0;
  r.p50 = Percentile(lag_ms, 50);
  r.p90 = Percentile(lag_ms, 90);
  r.p99 = Percentile(lag_ms, 99);
  r.max = lag_ms.empty() ? 0 : lag_ms.back();
  r.min = lag_ms.empty() ? 0 : lag_ms.front();
  r.batch_p50 = Percentile(batch_ms, 50);
  r.batch_p99 = Percentile(batch_ms, 99);
  // Late: sent more than one period after it was due (batches are due every period from the
  // first submission; sorted by seq they are nearly in schedule order).
  int64_t period = int64_t{o_.batch_ms} * 1'000'000;
  std::vector<int64_t> submits;
  for (const Batch& b : batches) submits.push_back(b.submit_nanos);
  std::sort(submits.begin(), submits.end());
  size_t late = 0;
  for (size_t k = 0; k < submits.size(); ++k)
    late += submits[k] > submits[0] + static_cast<int64_t>(k + 1) * period;
  r.late_batches = batches.empty() ? 0 : static_cast<double>(late) / batches.size();

  // Blocks the poller saw appear during the window.
  std::vector<double> intervals;
  std::vector<BlockSample> blocks = poller_->Blocks();
  const BlockSample* prev = nullptr;
  uint64_t first_seq = 0, last_seq = 0;
  size_t seen = 0;
  for (const BlockSample& b : blocks) {
    if (b.nanos < window_start || b.nanos > window_end) {
      if (b.nanos < window_start) prev = &b;
      continue;
    }
    if (prev != nullptr && prev->nanos >= window_start)
      intervals.push_back((b.nanos - prev->nanos) / 1e6);
    if (seen++ == 0) first_seq = prev ? prev->seq : b.seq;
    last_seq = b.seq;
    prev = &b;
  }
  r.block_interval_p50 = Percentile(intervals, 50);
  r.block_interval_p90 = Percentile(intervals, 90);
  r.block_interval_max = intervals.empty() ? 0 : intervals.back();
  r.blocks_cut = after.blocks_cut - before.blocks_cut;
  r.events_per_block = seen > 0 ? static_cast<double>(last_seq - first_seq) / seen : 0;

  r.appended_bytes = static_cast<double>(after.log_bytes - before.log_bytes);
  for (size_t i = 0; i < after.wire.size(); ++i) {
    double wire = after.wire[i] - before.wire[i];
    double xfers = after.transfers[i] - before.transfers[i];
    r.wire_bytes.push_back(wire);
    r.transfers.push_back(xfers);
    r.commands.push_back(after.commands[i] - before.commands[i]);
    r.wire_ratio.push_back(r.appended_bytes > 0 ? wire / r.appended_bytes : 0);
    r.overhead_per_block.push_back(xfers > 0 ? (wire - r.appended_bytes) / xfers : 0);
    r.wire_per_block.push_back(xfers > 0 ? wire / xfers : 0);
    r.gave_way.push_back(after.gave_way[i] - before.gave_way[i]);
    r.index_lag.push_back(after.index_lag[i]);
  }
  for (size_t i = 0; i < after.daemon_cpu.size(); ++i)
    r.daemon_cpu.push_back(after.daemon_cpu[i] - before.daemon_cpu[i]);
  return r;
}

void LagBench::PrintRun(int run, const RunResult& r) {
  fmt::print(
      "run {}: {} events in {:.1f} s = {:.0f} ev/s (batch append p50 {:.1f} ms, p99 {:.1f} ms; "
      "{:.1f}% of batches late)\n",
      run, r.events, r.seconds, r.rate, r.batch_p50, r.batch_p99, 100 * r.late_batches);
  fmt::print(
      "  lag (ack -> slowest replica verified): p50 {:.0f} ms  p90 {:.0f} ms  p99 {:.0f} ms  "
      "max {:.0f} ms  (min {:.0f} ms){}\n",
      r.p50, r.p90, r.p99, r.max, r.min,
      r.unreplicated ? fmt::format("  NOT REPLICATED: {} events", r.unreplicated) : "");
  if (r.overlapping)
    fmt::print(
        "  ({} batches interleaved with another appender's: their events were given the "
        "earliest candidate acknowledgement)\n",
        r.overlapping);
  fmt::print(
      "  blocks: {:.0f} cut; newest-block interval seen p50 {:.0f} ms  p90 {:.0f} ms  max {:.0f} "
      "ms; "
      "~{:.0f} events per block\n",
      r.blocks_cut, r.block_interval_p50, r.block_interval_p90, r.block_interval_max,
      r.events_per_block);
  const std::vector<std::string> names = cluster_->replica_names();
  for (size_t i = 0; i < names.size(); ++i)
    fmt::print(
        "  {}: lag p50 {:.0f} ms p99 {:.0f} ms; {:.0f} transfers ({:.0f} receive commands "
        "started), wire {:.2f} MB for {:.2f} MB appended = {:.4f}x; {:.0f} B "
        "wire/block, overhead {:.0f} B/block; its vector index gave way {:.1f} s and trailed by "
        "{:.0f} events at the end\n",
        names[i], r.replica_p50[i], r.replica_p99[i], r.transfers[i], r.commands[i],
        r.wire_bytes[i] / 1e6, r.appended_bytes / 1e6, r.wire_ratio[i], r.wire_per_block[i],
        r.overhead_per_block[i], r.gave_way[i], r.index_lag[i]);
  std::string cpu;
  for (size_t i = 0; i < r.daemon_cpu.size(); ++i)
    cpu += fmt::format("{}{} {:.1f}", i ? ", " : "", cluster_->hosts()[i].name,
                       r.seconds > 0 ? 100 * r.daemon_cpu[i] / r.seconds : 0);
  fmt::print("  daemon CPU, % of one core over the window: {}\n", cpu);
  std::fflush(stdout);
}

void LagBench::PrintSummary(const std::vector<RunResult>& runs) {
  auto med = [&](auto field) {
    std::vector<double> v;
    for (const RunResult& r : runs) v.push_back(field(r));
    return Median(v);
  };
  auto med_i = [&](auto field, size_t i) {
    std::vector<double> v;
    for (const RunResult& r : runs) v.push_back(field(r)[i]);
    return Median(v);
  };
  double p99 = med([](const RunResult& r) { return r.p99; });
  fmt::print(
      "\nmedians of {} run(s) of {:.0f} s at {} ev/s target, blocks every {} events / {} ms "
      "({}), compression {}, receive sessions {}, vector index on {}, poll {} ms\n",
      runs.size(), o_.seconds, o_.rate, o_.every_events, o_.interval_ms, OnDemandText(),
      o_.compression, o_.receive_session ? "on" : "off", o_.vector_index, o_.poll_ms);
  fmt::print("  achieved append rate       {:>10.0f} ev/s  ({:.3f}x the target rate)\n",
             med([](const RunResult& r) { return r.rate; }),
             med([](const RunResult& r) { return r.rate; }) / o_.rate);
  fmt::print("  lag p50 / p90 / p99 / max  {:.0f} / {:.0f} / {:.0f} / {:.0f} ms\n",
             med([](const RunResult& r) { return r.p50; }),
             med([](const RunResult& r) { return r.p90; }), p99,
             med([](const RunResult& r) { return r.max; }));
  fmt::print("  p99 lag / {:.0f} ms target   {:>10.3f}x  ({})\n", o_.target_ms, p99 / o_.target_ms,
             p99 <= o_.target_ms ? "met" : "NOT met");
  fmt::print("  block interval seen p50    {:>10.0f} ms (p90 {:.0f} ms)\n",
             med([](const RunResult& r) { return r.block_interval_p50; }),
             med([](const RunResult& r) { return r.block_interval_p90; }));
  const std::vector<std::string> names = cluster_->replica_names();
  for (size_t i = 0; i < names.size(); ++i)
    fmt::print(
        "  {} wire / appended          {:>10.4f}x  overhead {:.0f} B/block over {:.0f} "
        "blocks\n",
        names[i], med_i([](const RunResult& r) { return r.wire_ratio; }, i),
        med_i([](const RunResult& r) { return r.overhead_per_block; }, i),
        med_i([](const RunResult& r) { return r.transfers; }, i));
  fmt::print("load average at the end: {}\n", LoadAverage());
}

std::string LagBench::OnDemandText() const {
  return o_.on_demand_spacing_ms > 0
             ? absl::StrCat("on demand after ", o_.on_demand_spacing_ms, " ms")
             : std::string("none on demand");
}

absl::Status LagBench::Run() {
  fmt::print(
      "snapledger-lag-bench  {} replicas  {} ev/s for {:.0f} s x {} run(s) (warm-up {:.0f} s)  "
      "batch every {} ms  blocks every {} events / {} ms ({})  compression {}  receive sessions {} "
      " "
      "vector index on {}  poll {} ms\n",
      o_.replicas, o_.rate, o_.seconds, o_.runs, o_.warmup_seconds, o_.batch_ms, o_.every_events,
      o_.interval_ms, OnDemandText(), o_.compression, o_.receive_session ? "on" : "off",
      o_.vector_index, o_.poll_ms);
  fmt::print("load average at the start: {}\n", LoadAverage());
  fmt::print("btrfs image per host: {} MB (sparse)\n", ImageMb(o_));
  std::fflush(stdout);
  RETURN_IF_ERROR(StartCluster());

  fmt::print("warm-up: {:.0f} s of appends (untimed; the first transfer is a full send)\n",
             o_.warmup_seconds);
  std::fflush(stdout);
  RETURN_IF_ERROR(AppendFor(o_.warmup_seconds, /*record=*/false).status());
  RETURN_IF_ERROR(Drain(last_seq_));

  std::vector<RunResult> results;
  for (int run = 1; run <= o_.runs; ++run) {
    ASSIGN_OR_RETURN(Snapshot before, Take());
    int64_t window_start = NowNanos();
    ASSIGN_OR_RETURN(std::vector<Batch> batches, AppendFor(o_.seconds, /*record=*/true));
    RETURN_IF_ERROR(Drain(last_seq_));
    int64_t window_end = NowNanos();
    // The poller saw the final head; one more poll period lets the newest block register.
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * o_.poll_ms + 20));
    ASSIGN_OR_RETURN(Snapshot after, Take());
    results.push_back(Compute(batches, before, after, window_start, window_end));
    PrintRun(run, results.back());
  }
  fmt::print("poller: {} ClusterStatus calls, {} failed\n", poller_->polls(), poller_->errors());
  PrintSummary(results);
  poller_.reset();
  appenders_.clear();
  return cluster_->Down();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  CLI::App app{
      "Steady-state replication lag (append ack -> slowest replica verified) and wire bytes per "
      "block, on a TestCluster (primary + replicas in network namespaces)"};
  using snapledger::bench::AddOption;
  snapledger::bench::Options o;
  AddOption(app, "--seconds", o.seconds, "length of each measured window", 1.0, 600.0);
  AddOption(app, "--warmup-seconds", o.warmup_seconds, "untimed appends before the first window",
            1.0, 120.0);
  AddOption(app, "--rate", o.rate, "events per second to append", 1, 100'000);
  AddOption(app, "--batch-ms", o.batch_ms, "one AppendStream batch every this many ms", 1, 1000);
  AddOption(app, "--every-events", o.every_events, "primary blocks.every_events", 0, 10'000'000);
  AddOption(app, "--interval-ms", o.interval_ms, "primary blocks.interval_ms", 0, 600'000);
  AddOption(app, "--on-demand-spacing-ms", o.on_demand_spacing_ms,
            "primary blocks.on_demand_spacing_ms (0: no blocks on demand)", 0, 600'000);
  AddOption(app, "--poll-ms", o.poll_ms, "ClusterStatus poll period", 1, 1000);
  AddOption(app, "--appenders", o.appenders,
            "threads taking the due batches (each its own channel and AppendStream)", 1, 16);
  AddOption(app, "--replicas", o.replicas, "replicas in the cluster", 1, 4);
  AddOption(app, "--runs", o.runs, "measured windows on the same cluster; medians are printed", 1,
            10);
  AddOption(app, "--target-ms", o.target_ms, "the lag target p99 is compared with");
  AddOption(app, "--drain-seconds", o.drain_seconds,
            "after a window, how long the replicas may take to verify the last event", 1.0, 600.0);
  AddOption(app, "--compression", o.compression, "replicas' compression: none or zstd")
      ->check(CLI::IsMember({"none", "zstd"}));
  AddOption(app, "--vector-index", o.vector_index,
            "which nodes keep their derived vector index (vector_index.enabled): all, replicas "
            "or none")
      ->check(CLI::IsMember({"all", "replicas", "none"}));
  std::string receive_session = "on";
  AddOption(app, "--receive-session", receive_session,
            "replicas' receive_session: on (one receive command takes block after block) or off "
            "(one command per block)")
      ->check(CLI::IsMember({"on", "off"}));
  AddOption(app, "--image-mb", o.image_mb,
            "each host's (sparse) btrfs image; 0: 1 GB + 2 KB per event the run appends, at "
            "least 4 GB",
            0, 65536);
  AddOption(app, "--seed", o.seed, "event generator seed");
  CLI11_PARSE(app, argc, argv);
  o.receive_session = receive_session == "on";
  if (o.every_events == 0 && o.interval_ms == 0) {
    std::fprintf(stderr, "snapledger-lag-bench: --every-events and --interval-ms are both 0\n");
    return 2;
  }

  // Before any thread starts (gRPC's included): SignalStop takes these with sigtimedwait.
  snapledger::bench::BlockStopSignals();
  absl::Status st;
  {
    using snapledger::bench::SignalStop;
    SignalStop stop("snapledger-lag-bench", "stopping and tearing down",
                    SignalStop::OnRepeat::kIgnore);
    snapledger::bench::LagBench bench(o, stop);
    st = bench.Run();
  }  // ~LagBench: poller and clients stopped, then the cluster torn down
  return snapledger::bench::ExitCodeFor("snapledger-lag-bench", st);
}
