#include "primary/block_shipper.h"

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/head_file.h"
#include "common/status_macros.h"

namespace snapledger {

BlockShipper::BlockShipper(Btrfs& btrfs, SshTransport& transport, ReplicaTarget target,
                           std::string root, Clock* clock)
    : btrfs_(btrfs),
      transport_(transport),
      target_(std::move(target)),
      layout_(std::move(root)),
      clock_(clock) {
  view_.id = target_.id;
}

absl::StatusOr<std::optional<ShipResult>> BlockShipper::ShipOnce(
    const std::vector<BlockInfo>& primary_blocks, uint64_t epoch) {
  ReplicaPlan plan = PlanReplica(primary_blocks, view_);
  if (std::holds_alternative<InSync>(plan)) return std::nullopt;
  if (const auto* conflict = std::get_if<PlanConflict>(&plan))
    return absl::FailedPreconditionError(
        absl::StrCat("replica ", target_.id, ": ", conflict->detail));
  ASSIGN_OR_RETURN(ShipResult result, Ship(std::get<SendStep>(plan), epoch));
  return result;
}

absl::Status BlockShipper::EnsureSession() {
  if (session_ && session_->Connected()) return absl::OkStatus();
  session_.reset();
  ASSIGN_OR_RETURN(session_, transport_.Connect(target_.endpoint));
  return absl::OkStatus();
}

std::string BlockShipper::ReceiveCommand(const SendStep& step, const HeadRecord& head,
                                         uint64_t epoch) const {
  std::string cmd = absl::StrCat(target_.receive_command, " --block ", step.block.name);
  if (step.parent) absl::StrAppend(&cmd, " --parent ", step.parent->name);
  absl::StrAppend(&cmd, " --epoch ", epoch, " --head-seq ", head.head.seq, " --head-hash ",
                  head.head.hash);
  return cmd;
}

absl::StatusOr<ShipResult> BlockShipper::Ship(const SendStep& step, uint64_t epoch) {
  int64_t start = clock_->MonotonicNanos();
  ASSIGN_OR_RETURN(std::optional<HeadRecord> head, ReadHeadFile(layout_.block(step.block)));
  if (!head)
    return absl::DataLossError(absl::StrCat("block ", step.block.name, " has no head file"));
  RETURN_IF_ERROR(EnsureSession());
  auto remote = session_->Exec(ReceiveCommand(step, *head, epoch));
  if (!remote.ok()) {
    session_.reset();  // a session that cannot open channels is reconnected next time
    return remote.status();
  }
  std::optional<std::string> parent;
  if (step.parent) parent = layout_.block(*step.parent);
  absl::Status sent = btrfs_.Send(layout_.block(step.block), parent, **remote);
  absl::StatusOr<RemoteExit> exit = (*remote)->Wait();
  if (!exit.ok()) {
    remote->reset();   // the channel must go before the session that owns it
    session_.reset();  // reconnect next time
    return exit.status();
  }
  if (!exit->ok()) {
    std::string why = absl::StrCat("replica ", target_.id, " refused ", step.block.name,
                                   " (exit ", exit->exit_status, "): ", exit->stderr_text);
    if (absl::StrContains(exit->stderr_text, "is not held here") && step.parent) {
      // The replica lost the parent we planned with: forget it so the next plan picks an older
      // common block or a full send.
      std::erase(view_.verified_blocks, step.parent->name);
    }
    return exit->exit_status == 3 ? absl::DataLossError(why) : absl::AbortedError(why);
  }
  if (!sent.ok()) return sent;
  ShipResult result{step.block, step.parent, (*remote)->bytes_written(), 0,
                    absl::Nanoseconds(clock_->MonotonicNanos() - start)};
  nlohmann::json reply = nlohmann::json::parse(exit->stdout_text, nullptr, false);
  if (reply.is_discarded() || reply.value("block", "") != step.block.name)
    return absl::DataLossError(absl::StrCat("replica ", target_.id,
                                            " answered without confirming ", step.block.name,
                                            ": ", exit->stdout_text));
  result.events_verified = reply.value("events_verified", uint64_t{0});
  view_.verified_blocks.push_back(step.block.name);
  return result;
}

}  // namespace snapledger
