#include "replica/replica_daemon.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/fmt_absl.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/ledger/block.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/head_file.h"
#include "common/lookup/event_query.h"
#include "common/node/node_services.h"
#include "common/ops/metrics.h"
#include "common/rpc/query_service.h"
#include "replica/receive_journal.h"
#include "replica/receive_lock.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

class ReplicaDaemon::Impl {
 public:
  Impl(ReplicaConfig config, Btrfs& btrfs, Clock* clock)
      : config_(std::move(config)),
        btrfs_(btrfs),
        clock_(clock),
        layout_(config_.ledger_root),
        journal_(config_.ledger_root) {}
  ~Impl() { Stop(); }

  absl::Status Init();
  void Stop() {
    std::call_once(stop_once_, [this] { StopOnce(); });
  }
  int grpc_port() const { return node_ ? node_->grpc_port() : 0; }
  int metrics_port() const { return node_ ? node_->metrics_port() : 0; }

 private:
  void StopOnce();
  void WatchLoop();
  // One pass: the journal, the newest block, pruning, the report to the primary.
  void Tick();
  void CountOutcomes();
  absl::Status FollowNewest(const std::vector<BlockInfo>& blocks);
  void Prune(std::vector<BlockInfo>* blocks);
  void Report(const std::vector<BlockInfo>& blocks);
  std::shared_ptr<EventQuery> CurrentQuery();

  const ReplicaConfig config_;
  Btrfs& btrfs_;
  Clock* const clock_;
  const LedgerLayout layout_;
  ReceiveJournalReader journal_;  // watch thread only

  // Registry, metrics endpoint, Query/Similarity/Admin, gRPC server; its index follower starts
  // when the first verified block is served (FollowNewest).
  NodeServicesPtr node_;
  std::unique_ptr<ReplicaMetrics> metrics_;
  std::unique_ptr<v1::Replication::Stub> primary_;
  std::thread watcher_;
  std::once_flag stop_once_;

  // Watch thread only.
  std::optional<BlockInfo> newest_;
  std::optional<HeadRecord> head_;
  std::string last_error_;
  int64_t last_report_nanos_ = 0;
  bool report_due_ = true;
  bool last_report_failed_ = false;

  absl::Mutex mu_;
  std::shared_ptr<EventQuery> query_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

absl::Status ReplicaDaemon::Impl::Init() {
  RETURN_IF_ERROR(ValidateReplicaConfig(config_));
  node_ = std::make_unique<NodeServices>(NodeConfig{
      .grpc_listen = config_.grpc_listen,
      .metrics_listen = config_.metrics_listen,
      .ledger_root = config_.ledger_root,
      .index_dir = config_.index_dir,
      .vector_index = config_.vector_index,
      .clock = clock_,
  });
  metrics_ = std::make_unique<ReplicaMetrics>(node_->registry());
  RETURN_IF_ERROR(node_->StartMetricsServer());
  std::error_code ec;
  std::filesystem::create_directories(layout_.blocks(), ec);
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", layout_.blocks(), ": ", ec.message()));
  // The vector index follows the newest verified block once there is one (FollowNewest), and
  // waits while a block is being received: the next block's verification comes first.
  auto receiving = [root = layout_.root(), last_error = std::string()]() mutable {
    absl::StatusOr<bool> busy = ReceiveInProgress(root);
    if (busy.ok()) return *busy;
    // Cannot tell: index on (once logged per distinct error), as without the lock.
    if (std::string error(busy.status().message()); error != last_error) {
      spdlog::warn("vector index: cannot tell whether a block is being received: {}", error);
      last_error = std::move(error);
    }
    return false;
  };
  RoleServing serving;
  serving.events = [this] { return CurrentQuery(); };
  serving.give_way = std::move(receiving);
  serving.vector_index_metrics = &metrics_->vector_index();
  RETURN_IF_ERROR(node_->StartServing(std::move(serving)));
  if (!config_.primary_grpc.empty())
    primary_ = v1::Replication::NewStub(
        grpc::CreateChannel(config_.primary_grpc, grpc::InsecureChannelCredentials()));
  Tick();  // serve the newest block at once, and say hello to the primary
  watcher_ = std::thread([this] { WatchLoop(); });
  spdlog::info("replica {} serving gRPC on port {}, metrics on port {}; newest block {}",
               config_.node_id, grpc_port(), metrics_port(),
               newest_ ? newest_->name : std::string("(none)"));
  return absl::OkStatus();
}

void ReplicaDaemon::Impl::StopOnce() {
  if (node_) node_->SetNotServing();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  if (node_) node_->Stop();  // the index follower stops, then the gRPC server drains
  spdlog::info("replica {} stopped", config_.node_id);
}

std::shared_ptr<EventQuery> ReplicaDaemon::Impl::CurrentQuery() {
  absl::MutexLock lock(&mu_);
  return query_;
}

void ReplicaDaemon::Impl::WatchLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), config_.poll_interval)) return;
    }
    Tick();
  }
}

void ReplicaDaemon::Impl::Tick() {
  CountOutcomes();
  absl::StatusOr<std::vector<BlockInfo>> blocks = ListBlocks(btrfs_, layout_);
  if (!blocks.ok()) {
    spdlog::error("listing {}: {}", layout_.blocks(), blocks.status());
    return;
  }
  if (!blocks->empty() && (!newest_ || newest_->name != blocks->back().name)) {
    if (absl::Status s = FollowNewest(*blocks); s.ok()) {
      report_due_ = true;
    } else if (std::string error(s.message()); error != last_error_) {
      // Retried every poll: logged and reported once per distinct error, not 20 times a second.
      spdlog::error("following {}: {}", blocks->back().name, s);
      last_error_ = std::move(error);
      report_due_ = true;
    }
  }
  Prune(&*blocks);
  metrics_->blocks().Set(static_cast<double>(blocks->size()));
  if (std::shared_ptr<EventQuery> query = CurrentQuery()) {
    if (absl::StatusOr<IndexStatus> index = query->CheckIndex(); index.ok())
      metrics_->lookup_index_lag_events().Set(static_cast<double>(index->lag));
  }
  const absl::Duration since_report =
      absl::Nanoseconds(clock_->MonotonicNanos() - last_report_nanos_);
  // While the primary is unreachable, a due report is retried at most every 500 ms rather
  // than every poll: each attempt may block this thread for report_timeout, and new blocks
  // must still be noticed and served meanwhile.
  const absl::Duration retry = std::min(config_.report_interval, absl::Milliseconds(500));
  const bool due = report_due_ && (!last_report_failed_ || since_report >= retry);
  if (due || since_report >= (last_report_failed_ ? retry : config_.report_interval))
    Report(*blocks);
}

void ReplicaDaemon::Impl::CountOutcomes() {
  for (const ReceiveOutcome& o : journal_.ReadNew()) {
    if (o.ok) {
      if (o.already_held) continue;
      metrics_->blocks_received().Increment();
      metrics_->received_bytes().Increment(static_cast<double>(o.log_bytes));
      metrics_->events_verified().Increment(static_cast<double>(o.events_verified));
      metrics_->receive_duration().Observe(o.seconds);
      continue;
    }
    metrics_->CountReceiveFailure(o.reason);
    if (o.reason == "verification") metrics_->verification_failures().Increment();
    last_error_ = o.error;
    report_due_ = true;
    spdlog::warn("receive of {} failed ({}): {}", o.block, o.reason, o.error);
  }
}

absl::Status ReplicaDaemon::Impl::FollowNewest(const std::vector<BlockInfo>& blocks) {
  const BlockInfo& newest = blocks.back();
  const std::string dir = layout_.block(newest);
  ASSIGN_OR_RETURN(std::optional<HeadRecord> head, ReadHeadFile(dir));
  if (!head) return absl::DataLossError(absl::StrCat(dir, " has no head file"));
  std::shared_ptr<EventQuery> query = CurrentQuery();
  if (query) {
    query->SetLedgerDir(dir);
  } else {
    query = std::make_shared<EventQuery>(dir, node_->LookupIndexDir());
    absl::MutexLock lock(&mu_);
    query_ = query;
  }
  // Brings the lookup index up to the new head now, rather than on the first query.
  if (head->head.seq > 0) {
    if (absl::StatusOr<std::string> line = query->Get(head->head.seq); !line.ok())
      spdlog::warn("lookup index catch-up on {}: {}", newest.name, line.status());
  }
  node_->FollowLedgerDir(dir);
  node_->StartIndexFollower();  // once there is a block to follow
  node_->NotifyNewBlock();      // the vector index follows every verified block
  newest_ = newest;
  head_ = *head;
  last_error_.clear();
  metrics_->head_seq().Set(static_cast<double>(head->head.seq));
  metrics_->head_timestamp().Set(static_cast<double>(head->head.ts) / 1e6);
  spdlog::info("serving {} (head seq {})", newest.name, head->head.seq);
  return absl::OkStatus();
}

void ReplicaDaemon::Impl::Prune(std::vector<BlockInfo>* blocks) {
  if (blocks->size() <= config_.keep_newest) return;
  // Never while a transfer runs: its parent may be one of the blocks about to go.
  absl::StatusOr<std::optional<ReceiveLock>> lock = ReceiveLock::TryAcquire(layout_.root());
  if (!lock.ok() || !*lock) return;
  size_t excess = blocks->size() - config_.keep_newest;
  size_t pruned = 0;
  for (size_t i = 0; i < excess; ++i) {
    const BlockInfo& b = (*blocks)[i];
    if (absl::Status s = btrfs_.DeleteSubvolume(layout_.block(b)); !s.ok()) {
      spdlog::error("pruning {}: {}", b.name, s);
      break;
    }
    ++pruned;
  }
  if (pruned == 0) return;
  blocks->erase(blocks->begin(), blocks->begin() + static_cast<std::ptrdiff_t>(pruned));
  metrics_->blocks_pruned().Increment(static_cast<double>(pruned));
  report_due_ = true;
}

void ReplicaDaemon::Impl::Report(const std::vector<BlockInfo>& blocks) {
  last_report_nanos_ = clock_->MonotonicNanos();
  if (!primary_) {
    report_due_ = false;
    return;
  }
  v1::ReplicaProgress progress;
  progress.set_replica_id(config_.node_id);
  for (const BlockInfo& b : blocks) progress.add_verified_blocks(b.name);
  if (head_) ToProtoHead(*head_, progress.mutable_head());
  progress.set_last_error(last_error_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(config_.report_timeout));
  v1::ProgressAck ack;
  grpc::Status status = primary_->ReportProgress(&context, progress, &ack);
  metrics_->progress_reports(status.ok() ? "ok" : "error").Increment();
  if (!status.ok()) {
    if (!last_report_failed_)
      spdlog::warn("reporting progress to {} failed: {}", config_.primary_grpc,
                   status.error_message());
    last_report_failed_ = true;
    return;  // report_due_ stays set: retried next tick
  }
  if (last_report_failed_)
    spdlog::info("reporting progress to {} works again", config_.primary_grpc);
  last_report_failed_ = false;
  report_due_ = false;
}

ReplicaDaemon::ReplicaDaemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaDaemon::~ReplicaDaemon() = default;
void ReplicaDaemon::Stop() { impl_->Stop(); }
int ReplicaDaemon::grpc_port() const { return impl_->grpc_port(); }
int ReplicaDaemon::metrics_port() const { return impl_->metrics_port(); }

absl::StatusOr<ReplicaDaemonPtr> ReplicaDaemon::Start(const ReplicaConfig& config, Btrfs& btrfs,
                                                      Clock* clock) {
  auto impl = std::make_unique<Impl>(config, btrfs, clock);
  RETURN_IF_ERROR(impl->Init());
  return ReplicaDaemonPtr(new ReplicaDaemon(std::move(impl)));
}

}  // namespace snapledger
