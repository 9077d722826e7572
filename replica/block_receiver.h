// The replica side of one block transfer: what `snapledger-receive` does when the
// primary's shipper runs it (as the forced command of the primary's key) with the send stream
// on stdin.
//
// `btrfs receive` creates the block's subvolume directly in <root>/blocks, under the hidden name
// .incoming-<block> (never a block name, so listings and pruning ignore it). It takes its block
// name (a rename in place, atomic) only after it was received read-only with a received_uuid,
// its chain verified incrementally from the replica's last verified block (or fully for the
// first block: as the stream arrives where it can, see stream_verifier.h, the rest from disk),
// its head file names exactly the block's head, and that head equals the one the primary
// announced. On any failure the hidden subvolume is deleted and the replica stays on
// its last verified block; those left by transfers that died are deleted by the next transfer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/byte_stream.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block.h"
#include "common/ledger/event_format.h"
#include "common/ledger/head_file.h"
#include "replica/stream_verifier.h"

namespace snapledger {

// The receive command's arguments, as given by the primary.
struct ReceiveRequest {
  std::string block;                   // block-<seq>-<hash12>
  std::optional<std::string> parent;   // the delta's parent, a block this replica holds
  uint64_t epoch = 0;                  // the primary's epoch; the block's head file must match
  std::optional<ChainHead> announced;  // the head the primary announced (seq and full hash)
};

// Checks names and fields without touching the filesystem: block and parent must be exact
// block names (no path separators, no ".."), the parent older than the block, the announced
// head (when given) the block's head. InvalidArgument says which argument is wrong.
absl::Status ValidateReceiveRequest(const ReceiveRequest& request);

// Where one transfer's time went on the replica, in seconds.
struct ReceiveTimings {
  double stream = 0;   // `btrfs receive` applying the stream (ends with the stream), and
                       // the chain verified meanwhile
  double verify = 0;   // the prefix proof, the chain the stream verification left, and the
                       // head checks (while the data is written back: see promote)
  double promote = 0;  // the rest of the write-back (syncfs, started with the verification),
                       // then the verified block renamed to its name in blocks/
};

struct ReceiveResult {
  BlockInfo block;
  HeadRecord head;  // the promoted block's head
  uint64_t events_verified = 0;
  uint64_t prefix_bytes_shared = 0;    // old bytes proven unchanged by shared extents
  uint64_t prefix_bytes_compared = 0;  // old bytes read and compared with the parent
  bool already_held = false;  // the block was already verified here; the stream was drained
  ReceiveTimings timings;
  // How much events.jsonl grew over the newest block held before (all of it for the first
  // block; 0 when already held).
  uint64_t log_bytes_added = 0;
  // Of those, the bytes whose chain was verified as the stream arrived (the rest was read
  // back from disk and verified after it).
  uint64_t bytes_verified_in_stream = 0;
};

class BlockReceiver {
 public:
  // `btrfs` and `clock` are borrowed and must outlive the receiver. `root` is the replica's
  // ledger root. The clock times the transfer (ReceiveTimings), the wait for the receive lock
  // and the periodic write-back.
  BlockReceiver(Btrfs& btrfs, std::string root, Clock* clock = Clock::Real());

  // Receives one block from `stream`. Holds the receive lock (receive_lock.h) for the whole
  // transfer, so a retried transfer cannot interleave with one still running: the second waits
  // a few seconds for it (long enough for the daemon's pruning pass), then fails with
  // FailedPrecondition. Errors say what failed (btrfs receive's stderr,
  // verification's first bad seq and why). DataLoss means the block did not verify; a stream
  // that is malformed or cut short is a failed transfer (Internal), as is `btrfs receive`
  // failing. A refusal before anything is received is FailedPrecondition carrying its
  // ReceiveRefusal (RefusalOf, common/transport/receive_protocol.h): the parent is not held
  // here, a newer block is, or the receive lock stayed held.
  absl::StatusOr<ReceiveResult> Receive(const ReceiveRequest& request, ByteSource& stream);

 private:
  absl::StatusOr<ReceiveResult> ReceiveLocked(const ReceiveRequest& request, const BlockInfo& block,
                                              ByteSource& stream);
  // Verifies the block received at `path`, which continues `from`, the head of
  // `trusted_block` (the newest verified block, under the receive lock, so still current; null
  // for the first block): what `streamed` verified as it arrived, then on disk the rest.
  absl::StatusOr<ReceiveResult> CheckReceived(const ReceiveRequest& request, const BlockInfo& block,
                                              const std::string& path, const HeadRecord& from,
                                              const StreamVerification& streamed,
                                              const BlockInfo* trusted_block);

  // Deletes what transfers that died half-way left behind, of any block: the hidden
  // subvolumes in blocks/ (named in `unrecognized`, the non-block names ListBlocks found
  // there). Only a receiver holding the lock creates them, so none belongs to a transfer still
  // running.
  absl::Status DeleteLeftovers(const std::vector<std::string>& unrecognized);
  std::string HiddenPath(std::string_view prefix, const BlockInfo& block) const;

  Btrfs& btrfs_;
  LedgerLayout layout_;
  Clock* const clock_;
};

}  // namespace snapledger
