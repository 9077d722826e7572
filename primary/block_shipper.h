// Ships blocks to one replica: plans the next transfer (replication_plan.h), runs
// `btrfs send [-p parent] block` into a channel of a persistent SSH session that execs the
// replica's receive command, and records what the replica verified.
//
// One BlockShipper per replica; not thread-safe (the daemon runs each in its own thread).
// Retries, backoff and the watchdog are the caller's: ShipOnce does one step and classifies
// its failure (see ShipOnce).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/block.h"
#include "common/btrfs.h"
#include "common/clock.h"
#include "common/head_file.h"
#include "common/ssh_transport.h"
#include "primary/replication_plan.h"

namespace snapledger {

struct ReplicaTarget {
  std::string id;
  SshEndpoint endpoint;
  // The command requested on the replica; its sshd normally replaces it with the forced
  // command and passes this in SSH_ORIGINAL_COMMAND.
  std::string receive_command = "snapledger-replica receive";
};

struct ShipResult {
  BlockInfo block;
  std::optional<BlockInfo> parent;
  uint64_t stream_bytes = 0;     // bytes written into the channel
  uint64_t events_verified = 0;  // as the replica reported
  absl::Duration elapsed;
};

class BlockShipper {
 public:
  // All borrowed; must outlive the shipper.
  BlockShipper(Btrfs& btrfs, SshTransport& transport, ReplicaTarget target, std::string root,
               Clock* clock = Clock::Real());

  // Plans against `primary_blocks` (sorted by seq) and, unless the replica is in sync, ships
  // one block. Returns nullopt when in sync. Errors: FailedPrecondition for a planning conflict
  // (permanent: do not retry), PermissionDenied for trust failures (host key, auth; do not
  // retry blindly), DataLoss when the replica refused the block as not verifying, Unavailable
  // or Aborted for network and stream failures (retry with backoff).
  absl::StatusOr<std::optional<ShipResult>> ShipOnce(const std::vector<BlockInfo>& primary_blocks,
                                                     uint64_t epoch);

  // What this shipper knows the replica holds verified.
  const ReplicaView& view() const { return view_; }
  // Replaces it (for example from the replica's progress report).
  void SetView(ReplicaView view) { view_ = std::move(view); }

 private:
  absl::Status EnsureSession();
  absl::StatusOr<ShipResult> Ship(const SendStep& step, uint64_t epoch);
  std::string ReceiveCommand(const SendStep& step, const HeadRecord& head, uint64_t epoch) const;

  Btrfs& btrfs_;
  SshTransport& transport_;
  ReplicaTarget target_;
  LedgerLayout layout_;
  Clock* clock_;
  ReplicaView view_;
  SshSessionPtr session_;
};

}  // namespace snapledger
