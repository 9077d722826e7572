#include "primary/replica_driver.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "common/ledger/head_file.h"
#include "common/transport/receive_protocol.h"

namespace snapledger {
namespace {

DriverPass PassOf(DriverPass::Outcome outcome) {
  DriverPass pass;
  pass.outcome = outcome;
  return pass;
}

}  // namespace

std::string_view ReplicationFailureLabel(ReplicationFailure failure) {
  switch (failure) {
    case ReplicationFailure::kNetwork:
      return "network";
    case ReplicationFailure::kTrust:
      return "trust";
    case ReplicationFailure::kRefused:
      return "refused";
    case ReplicationFailure::kVerification:
      return "verification";
    case ReplicationFailure::kConflict:
      return "conflict";
    case ReplicationFailure::kWatchdog:
      return "watchdog";
    case ReplicationFailure::kLocal:
      return "local";
  }
  return "local";
}

ReplicationFailure ClassifyExecuteFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return ReplicationFailure::kWatchdog;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return ReplicationFailure::kTrust;
    case absl::StatusCode::kFailedPrecondition:
      return ReplicationFailure::kConflict;
    case absl::StatusCode::kDataLoss:
      return ReplicationFailure::kVerification;
    case absl::StatusCode::kAborted:
      return ReplicationFailure::kRefused;
    case absl::StatusCode::kUnavailable:
      return ReplicationFailure::kNetwork;
    default:
      return ReplicationFailure::kLocal;
  }
}

absl::Duration RetryDelayAfter(ReplicationFailure failure, int failures, absl::Duration initial,
                               absl::Duration max) {
  if (failure == ReplicationFailure::kConflict) return max;
  return RetryDelay(failures, initial, max);
}

ReplicaDriver::ReplicaDriver(BlockShipper& shipper, ReplicationState& state,
                             PrimaryMetrics& metrics, absl::Mutex& retention_mu,
                             BlockSource primary_blocks, std::string ledger_root,
                             ReplicaDriverOptions options, Clock* clock)
    : shipper_(shipper),
      state_(state),
      metrics_(metrics),
      retention_mu_(retention_mu),
      primary_blocks_(std::move(primary_blocks)),
      layout_(std::move(ledger_root)),
      options_(options),
      clock_(clock),
      id_(shipper.replica_id()),
      started_nanos_(clock->MonotonicNanos()) {
  view_.id = id_;
}

DriverPass ReplicaDriver::RunOnce(uint64_t epoch) {
  if (std::optional<ReplicaView> reported = state_.TakeReportedView(id_, view_, &seen_report_))
    view_ = *std::move(reported);
  // A replica the primary has not heard from may already hold blocks: give its report a
  // moment before falling back to a full send.
  if (!shipped_ && !state_.HasReported(id_) &&
      absl::Nanoseconds(clock_->MonotonicNanos() - started_nanos_) < options_.initial_report_wait)
    return PassOf(DriverPass::Outcome::kAwaitingReport);

  ReplicaPlan plan = PlanAndHold();
  if (std::holds_alternative<InSync>(plan)) {
    failures_ = 0;
    shipper_.KeepAlive();  // keep the session warm for the next block
    return PassOf(DriverPass::Outcome::kInSync);
  }
  if (const auto* conflict = std::get_if<PlanConflict>(&plan))
    return Fail(ReplicationFailure::kConflict,
                absl::StrCat("replica ", id_, ": ", conflict->detail));

  const SendStep& step = std::get<SendStep>(plan);
  absl::StatusOr<ShipResult> shipped = shipper_.Execute(step, epoch);
  CountReceiveCommands();
  // The transfer's hold ends only once the shipped block is in the view retention holds for
  // this replica (RecordVerified): ended before, the block the replica now needs as its next
  // parent could be pruned in between.
  if (shipped.ok()) {
    RecordVerified(*shipped);
  } else if (RefusalOf(shipped.status()) == ReceiveRefusal::kParentNotHeld && step.parent) {
    // The replica lost the parent planned with: the next plan picks an older common block or
    // a full send.
    std::erase(view_.verified_blocks, step.parent->name);
  }
  state_.EndTransfer(id_);
  if (absl::IsCancelled(shipped.status())) return PassOf(DriverPass::Outcome::kStopped);
  if (!shipped.ok())
    return Fail(ClassifyExecuteFailure(shipped.status()), std::string(shipped.status().message()));
  failures_ = 0;
  shipped_ = true;
  DriverPass pass = PassOf(DriverPass::Outcome::kShipped);
  pass.shipped = *std::move(shipped);
  return pass;
}

ReplicaPlan ReplicaDriver::PlanAndHold() {
  absl::MutexLock retention(&retention_mu_);
  ReplicaPlan plan = PlanReplica(primary_blocks_(), view_);
  if (const auto* step = std::get_if<SendStep>(&plan)) {
    Transfer transfer{step->block.name, std::nullopt};
    if (step->parent) transfer.parent = step->parent->name;
    state_.BeginTransfer(id_, std::move(transfer));
  }
  return plan;
}

void ReplicaDriver::CountReceiveCommands() {
  const uint64_t started = shipper_.ReceiveCommandsStarted();
  if (started <= commands_counted_) return;
  metrics_.ForReplica(id_).receive_commands.Increment(
      static_cast<double>(started - commands_counted_));
  commands_counted_ = started;
}

void ReplicaDriver::RecordVerified(const ShipResult& result) {
  view_.verified_blocks.push_back(result.block.name);
  PrimaryMetrics::Replica& m = metrics_.ForReplica(id_);
  m.wire_bytes_sent.Increment(static_cast<double>(result.wire_bytes));
  m.stream_bytes_sent.Increment(static_cast<double>(result.stream_bytes));
  m.transfers.Increment();
  m.transfer_duration.Observe(absl::ToDoubleSeconds(result.elapsed));
  absl::StatusOr<std::optional<HeadRecord>> head = ReadHeadFile(layout_.block(result.block));
  if (head.ok() && *head) {
    state_.RecordVerified(id_, result.block, **head, clock_->NowMicros());
  } else {
    // The block was pruned meanwhile; the replica's next report carries its head.
    spdlog::warn("replica {}: cannot read the head of {} just shipped: {}", id_, result.block.name,
                 head.ok() ? "no head file" : head.status().ToString());
  }
  state_.SetDriverView(id_, view_);
  const TransferPhases& p = result.phases;
  spdlog::info(
      "replica {}: {} verified ({}{} bytes, {} events, {}; open {:.3f} s, stream {:.3f} s, "
      "verdict {:.3f} s; replica: receive {:.3f} s, verify {:.3f} s, promote {:.3f} s, "
      "command {:.3f} s)",
      id_, result.block.name,
      result.parent ? absl::StrCat("delta from ", result.parent->name, ", ") : "full, ",
      result.wire_bytes, result.events_verified, absl::FormatDuration(result.elapsed), p.open,
      p.stream, p.verdict, p.replica_stream, p.replica_verify, p.replica_promote,
      p.replica_process);
}

DriverPass ReplicaDriver::Fail(ReplicationFailure failure, std::string error) {
  ++failures_;
  const std::string_view label = ReplicationFailureLabel(failure);
  metrics_.CountFailure(id_, label);
  state_.RecordFailure(id_, error, clock_->NowMicros());
  const absl::Duration delay =
      RetryDelayAfter(failure, failures_, options_.backoff_initial, options_.backoff_max);
  spdlog::warn("replica {}: transfer failed ({}; attempt {}, retrying in {}): {}", id_, label,
               failures_, absl::FormatDuration(delay), error);
  DriverPass pass = PassOf(DriverPass::Outcome::kFailed);
  pass.failure = failure;
  pass.error = std::move(error);
  pass.retry_after = delay;
  return pass;
}

}  // namespace snapledger
