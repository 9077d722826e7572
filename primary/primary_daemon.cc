#include "primary/primary_daemon.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/fmt_absl.h"
#include "common/base/status_macros.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"
#include "common/lookup/event_query.h"
#include "common/node/node_services.h"
#include "common/ops/metrics.h"
#include "common/rpc/ledger_service.h"
#include "primary/block_shipper.h"
#include "primary/replica_driver.h"
#include "primary/replication_service.h"
#include "primary/replication_state.h"

namespace snapledger {
namespace {

// How often an idle driver re-plans without being woken (a report may have changed its view).
constexpr absl::Duration kIdlePoll = absl::Milliseconds(200);
// How often a driver awaiting its replica's first report looks again.
constexpr absl::Duration kReportPoll = absl::Milliseconds(50);
constexpr absl::Duration kFreshBlockWait = absl::Milliseconds(500);

class MetricsAppendObserver final : public AppendObserver {
 public:
  explicit MetricsAppendObserver(PrimaryMetrics& metrics) : metrics_(metrics) {}
  void Appended(absl::Duration latency) override {
    metrics_.events_appended().Increment();
    metrics_.append_latency().Observe(absl::ToDoubleSeconds(latency));
  }
  void Rejected() override { metrics_.append_rejected().Increment(); }

 private:
  PrimaryMetrics& metrics_;
};

// The metric label of a health: its name with underscores ("in sync" -> "in_sync").
std::string MetricsStateName(ReplicaHealth health) {
  std::string name(ReplicaHealthName(health));
  std::replace(name.begin(), name.end(), ' ', '_');
  return name;
}

absl::StatusOr<EventLogPtr> OpenOrCreateLog(const std::string& live, uint64_t epoch) {
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::path(live) / "events.jsonl", ec))
    return EventLog::Open(live);
  spdlog::info("creating a new ledger in {} with epoch {}", live, epoch);
  return EventLog::Create(live, epoch);
}

}  // namespace

class PrimaryDaemon::Impl {
 public:
  Impl(PrimaryConfig config, Btrfs& btrfs, SshTransport& transport, Clock* clock)
      : config_(std::move(config)),
        btrfs_(btrfs),
        transport_(transport),
        clock_(clock),
        layout_(config_.ledger_root) {}
  ~Impl() { Stop(); }

  absl::Status Init();
  void Stop();

  int grpc_port() const { return node_ ? node_->grpc_port() : 0; }
  int metrics_port() const { return node_ ? node_->metrics_port() : 0; }

 private:
  struct ReplicaLink {
    ReplicaTarget target;
    std::unique_ptr<BlockShipper> shipper;
    std::unique_ptr<ReplicaDriver> driver;  // runs `shipper`
  };

  void StopOnce();
  void BlockLoop();
  void CutAndRetain();
  void PublishLag();
  // One replica's thread: runs its driver, and waits between passes.
  void DriverLoop(ReplicaDriver& driver);
  absl::Status RefreshBlocks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(retention_mu_);
  PrimaryPosition Position();
  // True while some replica has not reported since this start and initial_report_wait has not
  // passed.
  bool AwaitingFirstReports();
  // Waits up to `timeout`, or until a new block is cut when `seen_generation` is given.
  // False once the daemon is stopping.
  bool Wait(uint64_t* seen_generation, absl::Duration timeout);
  // A driver's replica is free for a block: wakes the block loop, which then cuts as soon as
  // the policy's on-demand spacing allows (BlockPolicy); nothing when that is off. The request
  // stands until a block is cut. Drivers call it at most once per transfer or idle poll, so the
  // loop cannot spin.
  void WantBlock();
  // After a transfer: unless a block was cut within the on-demand spacing or nothing waits,
  // asks for a block (WantBlock) and waits for it (up to kFreshBlockWait), so the replica's
  // next transfer carries what was appended until now rather than stopping at a block that
  // may be blocks.interval_ms old. False once the daemon is stopping.
  bool AwaitFreshBlock();
  // The block loop's wait: up to `timeout`, or until a block is wanted that was not when the
  // loop last looked. False once the daemon is stopping.
  bool WaitInBlockLoop(absl::Duration timeout);

  const PrimaryConfig config_;
  Btrfs& btrfs_;
  SshTransport& transport_;
  Clock* const clock_;
  const LedgerLayout layout_;
  const int64_t started_nanos_ = clock_->MonotonicNanos();

  NodeServicesPtr node_;  // registry, metrics endpoint, Query/Similarity/Admin, gRPC server
  std::unique_ptr<PrimaryMetrics> metrics_;
  EventLogPtr log_;
  BlockMakerPtr maker_;
  std::unique_ptr<ReplicationState> state_;
  std::unique_ptr<EventQuery> query_;
  std::unique_ptr<MetricsAppendObserver> observer_;
  std::unique_ptr<LedgerService> ledger_service_;
  std::unique_ptr<ReplicationService> replication_service_;
  std::vector<std::unique_ptr<ReplicaLink>> links_;
  std::vector<std::thread> threads_;

  // Held while retention is planned and applied, and while a driver plans and registers its
  // transfer, so a block being shipped is never pruned between the two.
  absl::Mutex retention_mu_;

  absl::Mutex mu_;
  std::vector<BlockInfo> blocks_ ABSL_GUARDED_BY(mu_);
  uint64_t block_generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool block_wanted_ ABSL_GUARDED_BY(mu_) = false;       // see WantBlock
  bool block_wanted_seen_ ABSL_GUARDED_BY(mu_) = false;  // by the block loop, when it looked
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::once_flag stop_once_;
};

absl::Status PrimaryDaemon::Impl::Init() {
  RETURN_IF_ERROR(ValidatePrimaryConfig(config_));
  node_ = std::make_unique<NodeServices>(NodeConfig{
      .grpc_listen = config_.grpc_listen,
      .metrics_listen = config_.metrics_listen,
      .ledger_root = config_.ledger_root,
      .index_dir = config_.index_dir,
      .vector_index = config_.vector_index,
      .clock = clock_,
  });
  metrics_ = std::make_unique<PrimaryMetrics>(node_->registry());
  RETURN_IF_ERROR(node_->StartMetricsServer());

  RETURN_IF_ERROR(InitializeLedgerRoot(btrfs_, config_.ledger_root));
  ASSIGN_OR_RETURN(log_, OpenOrCreateLog(layout_.live(), config_.epoch));
  BlockMakerOptions maker_options;
  maker_options.keep_newest = std::max<size_t>(1, config_.retention.keep_newest);
  maker_options.clock = clock_;
  ASSIGN_OR_RETURN(maker_, BlockMaker::Create(btrfs_, config_.ledger_root, *log_, maker_options));
  {
    absl::MutexLock lock(&retention_mu_);
    RETURN_IF_ERROR(RefreshBlocks());
  }

  std::vector<std::string> ids;
  for (const ReplicaTarget& r : config_.replicas) {
    ids.push_back(r.id);
    metrics_->ForReplica(r.id);  // every series exists before anything happens
    metrics_->SetReplicaState(r.id, "unknown");
  }
  state_ = std::make_unique<ReplicationState>(ids, TrackerOptions{config_.stall_after});

  query_ = std::make_unique<EventQuery>(layout_.live(), node_->LookupIndexDir());
  observer_ = std::make_unique<MetricsAppendObserver>(*metrics_);
  ledger_service_ = std::make_unique<LedgerService>(*log_, 256, observer_.get(), clock_);
  replication_service_ = std::make_unique<ReplicationService>(
      *state_, [this] { return Position(); }, clock_);
  RoleServing serving;
  serving.services = {ledger_service_.get(), replication_service_.get()};
  serving.events = [q = std::shared_ptr<EventQuery>(query_.get(), [](EventQuery*) {})] {
    return q;
  };
  serving.indexed_ledger_dir = layout_.live();
  serving.vector_index_metrics = &metrics_->vector_index();
  RETURN_IF_ERROR(node_->StartServing(std::move(serving)));
  node_->StartIndexFollower();

  for (const ReplicaTarget& target : config_.replicas) {
    auto link = std::make_unique<ReplicaLink>();
    link->target = target;
    SshEndpoint endpoint = config_.ssh;
    endpoint.host = target.endpoint.host;
    endpoint.port = target.endpoint.port;
    endpoint.user = target.endpoint.user;
    endpoint.dead_peer_timeout = config_.shipping.watchdog;
    link->target.endpoint = endpoint;
    BlockShipperOptions options;
    options.watchdog = config_.shipping.watchdog;
    options.verdict_timeout = config_.shipping.verdict_timeout;
    link->shipper = std::make_unique<BlockShipper>(btrfs_, transport_, link->target,
                                                   config_.ledger_root, options, clock_);
    ReplicaDriverOptions driver_options;
    driver_options.backoff_initial = config_.shipping.backoff_initial;
    driver_options.backoff_max = config_.shipping.backoff_max;
    driver_options.initial_report_wait = config_.shipping.initial_report_wait;
    link->driver = std::make_unique<ReplicaDriver>(
        *link->shipper, *state_, *metrics_, retention_mu_,
        [this] {
          absl::MutexLock lock(&mu_);
          return blocks_;
        },
        config_.ledger_root, driver_options, clock_);
    links_.push_back(std::move(link));
  }
  threads_.emplace_back([this] { BlockLoop(); });
  for (auto& link : links_)
    threads_.emplace_back([this, d = link->driver.get()] { DriverLoop(*d); });
  spdlog::info("primary {} serving gRPC on port {}, metrics on port {}, {} replica(s); head seq {}",
               config_.node_id, grpc_port(), metrics_port(), links_.size(), log_->Head().head.seq);
  return absl::OkStatus();
}

void PrimaryDaemon::Impl::Stop() {
  std::call_once(stop_once_, [this] { StopOnce(); });
}

void PrimaryDaemon::Impl::StopOnce() {
  if (node_) node_->SetNotServing();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  // Transfers in flight fail at once, and no new one starts while the server drains (up to
  // 2 s): shutdown never waits for a transfer or its watchdog.
  for (auto& link : links_) link->shipper->Abort();
  // The index follower stops, then the gRPC server drains calls in progress: acknowledged
  // appends stay acknowledged.
  if (node_) node_->Stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  if (log_) {
    if (absl::Status s = log_->Sync(); !s.ok()) spdlog::error("final sync failed: {}", s);
  }
  spdlog::info("primary {} stopped", config_.node_id);
}

bool PrimaryDaemon::Impl::Wait(uint64_t* seen_generation, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto woken = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopping_ || (seen_generation && *seen_generation != block_generation_);
  };
  mu_.AwaitWithTimeout(absl::Condition(&woken), timeout);
  if (seen_generation) *seen_generation = block_generation_;
  return !stopping_;
}

void PrimaryDaemon::Impl::WantBlock() {
  // Off: the policy would ignore the request, and waking the loop would only repeat its work.
  if (config_.blocks.on_demand_spacing <= absl::ZeroDuration()) return;
  absl::MutexLock lock(&mu_);
  block_wanted_ = true;
  block_wanted_seen_ = false;  // wakes the loop even when a request was already pending
}

bool PrimaryDaemon::Impl::WaitInBlockLoop(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto woken = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopping_ || (block_wanted_ && !block_wanted_seen_);
  };
  mu_.AwaitWithTimeout(absl::Condition(&woken), timeout);
  return !stopping_;
}

absl::Status PrimaryDaemon::Impl::RefreshBlocks() {
  ASSIGN_OR_RETURN(std::vector<BlockInfo> blocks, maker_->ListBlocks());
  metrics_->blocks().Set(static_cast<double>(blocks.size()));
  absl::MutexLock lock(&mu_);
  blocks_ = std::move(blocks);
  return absl::OkStatus();
}

PrimaryPosition PrimaryDaemon::Impl::Position() {
  PrimaryPosition position;
  position.head = log_->Head();
  absl::MutexLock lock(&mu_);
  position.blocks = blocks_;
  return position;
}

bool PrimaryDaemon::Impl::AwaitingFirstReports() {
  if (absl::Nanoseconds(clock_->MonotonicNanos() - started_nanos_) >=
      config_.shipping.initial_report_wait)
    return false;
  for (const ReplicaTarget& r : config_.replicas)
    if (!state_->HasReported(r.id)) return true;
  return false;
}

void PrimaryDaemon::Impl::BlockLoop() {
  absl::Duration tick =
      config_.blocks.max_age == absl::ZeroDuration()
          ? absl::Milliseconds(50)
          : std::clamp(config_.blocks.max_age / 4, absl::Milliseconds(5), absl::Milliseconds(100));
  const absl::Duration spacing = config_.blocks.on_demand_spacing;
  absl::Duration wait = tick;
  do {
    CutAndRetain();
    PublishLag();
    wait = tick;
    bool wanted;
    {
      absl::MutexLock lock(&mu_);
      wanted = block_wanted_;
    }
    // A waiting replica's block is due once the spacing has passed: wake then, not a tick later.
    if (wanted && spacing > absl::ZeroDuration()) {
      absl::Duration left = spacing - maker_->SinceLastCut();
      if (left > absl::ZeroDuration()) wait = std::min(wait, left);
    }
  } while (WaitInBlockLoop(wait));
}

void PrimaryDaemon::Impl::CutAndRetain() {
  absl::MutexLock retention(&retention_mu_);
  std::vector<BlockInfo> before = Position().blocks;
  ReplicationState::Retention plan = state_->PlanRetention(before, config_.retention);
  if (AwaitingFirstReports()) {
    // Retention knows nothing yet of what a replica that has not reported since this start
    // holds: prune nothing until it reports (or initial_report_wait passes), or a lagging
    // replica's parent could go.
    for (const BlockInfo& b : before) plan.plan.holds.insert(b.name);
  }
  for (const std::string& id : plan.newly_dropped_holds) {
    metrics_->ForReplica(id).holds_dropped.Increment();
    spdlog::warn(
        "replica {} is more than {} blocks behind: its hold is dropped, and it will be "
        "re-bootstrapped with a full send",
        id, config_.retention.max_blocks_behind);
  }
  bool replica_waiting;
  {
    absl::MutexLock lock(&mu_);
    replica_waiting = block_wanted_;
    block_wanted_seen_ = block_wanted_;
  }
  int64_t start = clock_->MonotonicNanos();
  absl::StatusOr<std::optional<BlockInfo>> cut =
      maker_->CutIfDue(config_.blocks, plan.plan.holds, replica_waiting);
  if (!cut.ok()) {
    spdlog::error("cutting a block failed: {}", cut.status());
  } else if (*cut) {
    metrics_->blocks_cut().Increment();
    metrics_->snapshot_duration().Observe(static_cast<double>(clock_->MonotonicNanos() - start) /
                                          1e9);
  }
  if (absl::Status s = RefreshBlocks(); !s.ok()) {
    spdlog::error("listing blocks failed: {}", s);
    return;
  }
  std::vector<BlockInfo> after = Position().blocks;
  size_t added = cut.ok() && *cut ? 1 : 0;
  if (before.size() + added > after.size())
    metrics_->blocks_pruned().Increment(static_cast<double>(before.size() + added - after.size()));
  if (added) {
    {
      absl::MutexLock lock(&mu_);
      ++block_generation_;
      block_wanted_ = block_wanted_seen_ = false;
    }
    node_->NotifyNewBlock();  // the vector index follows every block
  }
}

void PrimaryDaemon::Impl::PublishLag() {
  PrimaryPosition position = Position();
  metrics_->head_seq().Set(static_cast<double>(position.head.head.seq));
  for (const ReplicaLag& lag :
       state_->Evaluate(position.head, position.blocks, clock_->NowMicros())) {
    PrimaryMetrics::Replica& m = metrics_->ForReplica(lag.replica_id);
    m.lag_events.Set(static_cast<double>(lag.lag_events));
    m.lag_blocks.Set(static_cast<double>(lag.lag_blocks));
    m.lag_bytes.Set(static_cast<double>(lag.lag_bytes));
    m.lag_seconds.Set(lag.lag_seconds);
    m.head_seq.Set(static_cast<double>(lag.head.head.seq));
    if (lag.last_success_micros > 0)
      m.last_success.Set(static_cast<double>(lag.last_success_micros) / 1e6);
    metrics_->SetReplicaState(lag.replica_id, MetricsStateName(lag.health));
  }
}

void PrimaryDaemon::Impl::DriverLoop(ReplicaDriver& driver) {
  uint64_t seen_blocks = 0;
  while (true) {
    const DriverPass pass = driver.RunOnce(log_->Head().epoch);
    bool go_on = false;
    switch (pass.outcome) {
      case DriverPass::Outcome::kAwaitingReport:
        go_on = Wait(nullptr, kReportPoll);
        break;
      case DriverPass::Outcome::kInSync:
        WantBlock();  // events appended since the newest block may be cut now
        go_on = Wait(&seen_blocks, kIdlePoll);
        break;
      case DriverPass::Outcome::kShipped:
        go_on = AwaitFreshBlock();
        break;
      case DriverPass::Outcome::kFailed:
        go_on = Wait(nullptr, pass.retry_after);
        break;
      case DriverPass::Outcome::kStopped:
        break;
    }
    if (!go_on) return;
  }
}

bool PrimaryDaemon::Impl::AwaitFreshBlock() {
  const absl::Duration spacing = config_.blocks.on_demand_spacing;
  const uint64_t head_seq = log_->Head().head.seq;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    if (spacing <= absl::ZeroDuration()) return true;
    const uint64_t newest_seq = blocks_.empty() ? 0 : blocks_.back().seq;
    if (head_seq <= newest_seq) return true;  // nothing waiting
    generation = block_generation_;
  }
  if (maker_->SinceLastCut() < spacing) return true;  // the newest block is fresh enough
  WantBlock();
  return Wait(&generation, kFreshBlockWait);
}

PrimaryDaemon::PrimaryDaemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrimaryDaemon::~PrimaryDaemon() = default;
void PrimaryDaemon::Stop() { impl_->Stop(); }
int PrimaryDaemon::grpc_port() const { return impl_->grpc_port(); }
int PrimaryDaemon::metrics_port() const { return impl_->metrics_port(); }

absl::StatusOr<PrimaryDaemonPtr> PrimaryDaemon::Start(const PrimaryConfig& config, Btrfs& btrfs,
                                                      SshTransport& transport, Clock* clock) {
  auto impl = std::make_unique<Impl>(config, btrfs, transport, clock);
  RETURN_IF_ERROR(impl->Init());
  return PrimaryDaemonPtr(new PrimaryDaemon(std::move(impl)));
}

}  // namespace snapledger
