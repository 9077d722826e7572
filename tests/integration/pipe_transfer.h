// Streaming a snapshot from one btrfs to another through a pipe, for tests: `btrfs send` on one
// thread, Btrfs::Receive on the caller's, concurrently as in production (the receiving side has
// an fd, so the stream is spliced to `btrfs receive`).
#pragma once

#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/base/byte_stream.h"
#include "common/btrfs/btrfs.h"

namespace snapledger::testing {

// Sends `snapshot` (a delta against `parent` when given) and receives it into `dest_dir` with
// `options`; returns the received subvolume's path, or the sender's error, or the receiver's.
// A refused stream is read to its end so that the sender finishes.
inline absl::StatusOr<std::string> TransferThroughPipe(Btrfs& btrfs, const std::string& snapshot,
                                                       const std::optional<std::string>& parent,
                                                       const std::string& dest_dir,
                                                       const ReceiveOptions& options = {}) {
  auto pipe = MakePipe();
  if (!pipe.ok()) return pipe.status();
  FdSink sink(std::move(pipe->write), "transfer pipe");
  FdSource source(std::move(pipe->read), "transfer pipe");
  absl::Status sent;
  std::thread sender([&] {
    sent = btrfs.Send(snapshot, parent, sink);
    absl::Status closed = sink.Close();
    if (sent.ok()) sent = closed;
  });
  absl::StatusOr<std::string> received = btrfs.Receive(dest_dir, source, options);
  if (!received.ok()) {
    char buf[1 << 16];
    while (source.Read(buf, sizeof buf).value_or(0) > 0) {
    }
  }
  sender.join();
  if (!sent.ok()) return sent;
  return received;
}

}  // namespace snapledger::testing
