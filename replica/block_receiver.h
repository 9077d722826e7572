// The replica side of one block transfer: what `snapledger-replica receive` does when the
// primary's shipper runs it (as the forced command of the primary's key) with the send stream
// on stdin.
//
// A block is promoted into <root>/blocks only after it was received read-only with a
// received_uuid, its chain verified incrementally from the replica's last verified block (or
// fully for the first block), its head file names exactly the block's head, and that head
// equals the one the primary announced. On any failure the partial subvolume in
// <root>/incoming is deleted and the replica stays on its last verified block.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/block.h"
#include "common/btrfs.h"
#include "common/byte_stream.h"
#include "common/event_format.h"
#include "common/head_file.h"

namespace snapledger {

// The receive command's arguments, as given by the primary.
struct ReceiveRequest {
  std::string block;                  // block-<seq>-<hash12>
  std::optional<std::string> parent;  // the delta's parent, a block this replica holds
  uint64_t epoch = 0;                 // the primary's epoch; the block's head file must match
  std::optional<ChainHead> announced;  // the head the primary announced (seq and full hash)
};

// Checks names and fields without touching the filesystem: block and parent must be exact
// block names (no path separators, no ".."), the parent older than the block, the announced
// head (when given) the block's head. InvalidArgument says which argument is wrong.
absl::Status ValidateReceiveRequest(const ReceiveRequest& request);

// Where one transfer's time went on the replica, in seconds.
struct ReceiveTimings {
  double stream = 0;   // `btrfs receive` applying the stream (ends with the stream)
  double verify = 0;   // the prefix proof, the chain and the head checks
  double promote = 0;  // the verified block moved into blocks/ and made durable
};

struct ReceiveResult {
  BlockInfo block;
  HeadRecord head;             // the promoted block's head
  uint64_t events_verified = 0;
  uint64_t prefix_bytes_shared = 0;    // old bytes proven unchanged by shared extents
  uint64_t prefix_bytes_compared = 0;  // old bytes read and compared with the parent
  bool already_held = false;   // the block was already verified here; the stream was drained
  ReceiveTimings timings;
};

class BlockReceiver {
 public:
  // `btrfs` is borrowed and must outlive the receiver. `root` is the replica's ledger root.
  BlockReceiver(Btrfs& btrfs, std::string root);

  // Receives one block from `stream`. Holds an exclusive lock on <root>/.receive.lock for the
  // whole transfer, so a retried transfer cannot interleave with one still running (the second
  // fails with FailedPrecondition). Errors say what failed (btrfs receive's stderr,
  // verification's first bad seq and why).
  absl::StatusOr<ReceiveResult> Receive(const ReceiveRequest& request, ByteSource& stream);

 private:
  absl::StatusOr<ReceiveResult> ReceiveLocked(const ReceiveRequest& request, const BlockInfo& block,
                                              ByteSource& stream);
  absl::StatusOr<ReceiveResult> CheckReceived(const ReceiveRequest& request, const BlockInfo& block,
                                              const std::string& path);

  std::string PromotingPath(const BlockInfo& block) const;

  Btrfs& btrfs_;
  LedgerLayout layout_;
};

}  // namespace snapledger
