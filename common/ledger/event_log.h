// The append-only, hash-chained event log of one ledger directory (the live subvolume):
// <dir>/events.jsonl and <dir>/metadata/current_hash.
//
// Appends are group-committed: any number of threads call Append/AppendAsync; one writer
// thread assigns seq, ts and prev, writes every pending event with one write(2) and makes
// them durable with one fdatasync. In Durability::kPerBatch an append is acknowledged only
// after its event is durable. In Durability::kInterval it is acknowledged after the write and
// made durable within `sync_interval`: a crash may lose the events acknowledged in the last
// `sync_interval` (the documented bound on loss), never corrupt the chain.
//
// The head file follows the log: it is rewritten atomically at most every `head_interval`,
// on Sync(), on Freeze() and on close. Open() reconciles it with the log.
//
// Thread-safe. One EventLog per directory per host (an flock enforces it).
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/ledger/canonical_json.h"
#include "common/ledger/head_file.h"

namespace snapledger {

enum class Durability { kPerBatch, kInterval };

struct EventLogOptions {
  size_t max_body_bytes = kDefaultMaxBodyBytes;
  Durability durability = Durability::kPerBatch;
  absl::Duration sync_interval = absl::Milliseconds(10);  // kInterval only
  absl::Duration head_interval = absl::Milliseconds(200);
  size_t max_batch_events = 1 << 16;
  // Stamps events and times (and waits out) the deferred syncs and head file writes. Not owned;
  // must outlive the log.
  Clock* clock = Clock::Real();
  // Open() only: a missing head file is an error (the epoch lives there) unless this is set,
  // in which case the head file is rebuilt from the fully verified log with this epoch.
  std::optional<uint64_t> epoch_if_head_missing;
};

struct AppendResult {
  uint64_t seq = 0;
  int64_t ts = 0;
  std::string hash;
};

// What Open() found and repaired.
struct RecoveryReport {
  uint64_t torn_tail_bytes = 0;       // bytes of an incomplete last line that were truncated
  uint64_t torn_tails_truncated = 0;  // 0 or 1
  uint64_t events_verified = 0;       // lines verified on open (after the trusted head)
  bool head_file_missing = false;
  bool head_file_rewritten = false;  // the head file lagged the log and was brought forward
};

class EventLog;
using EventLogPtr = std::unique_ptr<EventLog>;

class EventLog {
 public:
  // Creates an empty ledger in the existing directory `dir` (events.jsonl, metadata/).
  // AlreadyExists if `dir` already holds a ledger.
  static absl::StatusOr<EventLogPtr> Create(const std::string& dir, uint64_t epoch,
                                            const EventLogOptions& options = {});
  // Opens an existing ledger, running recovery (see RecoveryReport). A line that does not
  // verify anywhere but a torn tail is a DataLoss error naming its line number.
  static absl::StatusOr<EventLogPtr> Open(const std::string& dir,
                                          const EventLogOptions& options = {});

  // Drains pending appends, syncs, writes the head file and stops the writer.
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Appends one event whose body is the JSON object `body_json`; returns once it is
  // acknowledged (see Durability). InvalidArgument (nothing appended) for a bad body.
  absl::StatusOr<AppendResult> Append(std::string_view body_json);
  // Appends all of `bodies` contiguously or none: if any is invalid the error names its index
  // and nothing is appended.
  absl::StatusOr<std::vector<AppendResult>> AppendBatch(const std::vector<std::string>& bodies);
  // Like Append but returns at once; the future completes when the event is acknowledged.
  std::future<absl::StatusOr<AppendResult>> AppendAsync(std::string_view body_json);

  // The newest acknowledged event and the log's size through it.
  HeadRecord Head() const;
  const std::string& dir() const;
  const RecoveryReport& recovery() const;

  // Makes everything acknowledged durable and writes the head file now.
  absl::Status Sync();

  // While a Frozen lives, no event is written; the log is durable and the head file names
  // the last event (the state a block snapshot must capture). Destroy it on the thread that
  // called Freeze(), and before the EventLog.
  class Frozen {
   public:
    virtual ~Frozen() = default;
    virtual const HeadRecord& head() const = 0;
  };
  absl::StatusOr<std::unique_ptr<Frozen>> Freeze();

  class Impl;

 private:
  explicit EventLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger
