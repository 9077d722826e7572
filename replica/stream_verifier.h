// Verification of a block's hash chain while its send stream arrives, beside `btrfs receive`,
// so that a received block is not read back and hashed after the stream ended.
//
// The stream's WRITE commands to events.jsonl carry exactly the bytes that file gains. The
// follower accounts for every command that could change that file; the verifier hashes the new
// lines on its own thread as they come. What it proves is a trusted head further on: the
// receiver then checks on disk only that the received file's line at that offset recomputes to
// that head, verifies whatever follows it (normally nothing), checks the head file, and proves
// the bytes before the old head unchanged as before (prefix_check). A stream the follower
// cannot account for (a clone, truncate or rename of events.jsonl, a write that is not an
// append) is verified from disk as a whole, as if it had not been followed.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/btrfs/send_stream.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/head_file.h"

namespace snapledger {

// Which bytes a send stream appends to events.jsonl, one command at a time. Pure; not
// thread-safe.
class EventsWriteFollower {
 public:
  // `start`: the size of events.jsonl in the parent (0 for a full send). Bytes before it may
  // be rewritten by the stream (btrfs sends whole changed extents); they are not followed
  // here, the receiver compares them with the parent's on disk.
  explicit EventsWriteFollower(uint64_t start);

  // Returns the bytes this command appends after end() (a view into `payload`), usually
  // empty. After a command that changes events.jsonl otherwise, followed() is false for good
  // and nothing more is returned.
  std::string_view Follow(uint16_t command, std::string_view payload, uint32_t version);

  bool followed() const { return why_not_.empty(); }
  // Why not, naming the command; empty while followed.
  const std::string& why_not() const { return why_not_; }
  uint64_t start() const { return start_; }
  // The offset just past the bytes returned so far.
  uint64_t end() const { return end_; }

 private:
  void Stop(std::string why);

  const uint64_t start_;
  uint64_t end_;
  uint64_t commands_ = 0;
  std::set<std::string, std::less<>> written_;        // other files given data by the stream
  std::set<std::string, std::less<>> created_;        // temporary names it created
  std::set<std::string, std::less<>> created_files_;  // of those, the regular files
  std::string why_not_;
};

// The outcome of verifying a stream as it arrived.
struct StreamVerification {
  // False: the stream changed events.jsonl in a way the follower does not account for
  // (`why_not` says how); `report` must not be used and the block is verified from disk.
  bool followed = false;
  std::string why_not;
  // The chain from the start head over the complete lines that arrived: its head and
  // end_offset (absolute, in events.jsonl) are the new trusted point, or its failure is why
  // the block is refused. A last line without its '\n' is left to the check on disk.
  VerifyReport report;
};

// How much a StreamChainVerifier holds: runs of lines are queued in chunks of about
// `chunk_bytes`, at most `max_queued` of them.
struct StreamVerifierLimits {
  size_t chunk_bytes = 4 << 20;
  size_t max_queued = 8;
};

// A SendCommandObserver for a SendStreamForwarder: follows events.jsonl and verifies the chain
// on its own thread. OnCommand runs on the forwarding thread and only copies the appended
// bytes. The stream never waits for verification: the thread runs as SCHED_IDLE while the
// stream flows (only on CPU time nothing else wants), and once it is more than a few chunks
// behind, it stops taking data: the report then ends where it got to, and the receiver
// verifies the rest from disk after the stream, on all cores.
class StreamChainVerifier : public SendCommandObserver {
 public:
  // `from`: the trusted head and size of events.jsonl the stream continues (the newest
  // verified block's head record, or a default HeadRecord for a full send). `on_progress`,
  // when set, is called on the verifier's thread after each run of lines with the offset
  // verified up to.
  explicit StreamChainVerifier(const HeadRecord& from,
                               std::function<void(uint64_t)> on_progress = nullptr,
                               StreamVerifierLimits limits = {});
  ~StreamChainVerifier() override;  // stops the thread, discarding what is queued
  StreamChainVerifier(const StreamChainVerifier&) = delete;
  StreamChainVerifier& operator=(const StreamChainVerifier&) = delete;

  void OnCommand(uint16_t command, std::string_view payload, uint32_t version) override;

  // Verifies what is queued and returns the outcome. Call once, after the stream ended.
  StreamVerification Finish();

 private:
  void Run();
  // Queues a run of lines; while the stream flows (!stream_ended) never waits, and drops the
  // run (turning behind_) when the queue is full or its lock busy.
  void Enqueue(std::string chunk, bool stream_ended);
  // An empty buffer for a chunk: one the thread is done with, else a new one.
  std::string TakeSpare();

  const StreamVerifierLimits limits_;
  EventsWriteFollower follower_;
  std::function<void(uint64_t)> on_progress_;
  std::string filling_;  // appended bytes not yet queued (forwarding thread only)
  bool behind_ = false;  // verification fell behind: no more data is taken (same thread)

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::string> queue_;   // runs of complete lines, in order
  std::vector<std::string> spare_;  // emptied chunks, kept for reuse (their pages are mapped)
  bool closed_ = false;             // no more chunks will come
  bool failed_ = false;             // the chain broke: later chunks are dropped
  VerifyReport report_;             // guarded by mu_ once the thread runs
  std::thread thread_;              // last: starts once everything above is initialized
};

}  // namespace snapledger
