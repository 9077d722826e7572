#include "replica/stream_verifier.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/ledger/head_file.h"

namespace snapledger {
namespace {

// Room kept beyond a chunk, so that filling one rarely reallocates it.
constexpr size_t kChunkSlack = 256 << 10;
// Beyond this many other written files the stream is not followed (a ledger has two).
constexpr size_t kMaxWrittenFiles = 4096;

uint64_t Le64(std::string_view v) {
  uint64_t out = 0;
  for (int i = 7; i >= 0; --i) out = out << 8 | static_cast<unsigned char>(v[i]);
  return out;
}

bool IsMetadataOnly(uint16_t command) {
  switch (command) {
    case kSendCommandChown:
    case kSendCommandChmod:
    case kSendCommandUtimes:
    case kSendCommandSetXattr:
    case kSendCommandRemoveXattr:
    case kSendCommandFileattr:
      return true;
    default:
      return false;
  }
}

// Commands that give a file data other than by WRITE (none may touch events.jsonl).
bool GivesOtherData(uint16_t command) {
  switch (command) {
    case kSendCommandClone:
    case kSendCommandTruncate:
    case kSendCommandUpdateExtent:
    case kSendCommandFallocate:
    case kSendCommandEncodedWrite:
      return true;
    default:
      return false;
  }
}

// The names a ledger's subvolume has: its root, the log, the head file and its directory.
bool IsLedgerPath(std::string_view path) {
  return path.empty() || path == kEventsFile || path == kHeadFile || path == "metadata";
}

// A temporary name `btrfs send` gives a new inode in the subvolume's root: o<ino>-<gen>-<n>.
bool IsOrphanName(std::string_view path) {
  if (path.size() < 6 || path[0] != 'o') return false;
  int dashes = 0;
  bool digit_before = false;
  for (char c : path.substr(1)) {
    if (c == '-') {
      if (!digit_before) return false;
      ++dashes;
      digit_before = false;
    } else if (c >= '0' && c <= '9') {
      digit_before = true;
    } else {
      return false;
    }
  }
  return dashes == 2 && digit_before;
}

}  // namespace

EventsWriteFollower::EventsWriteFollower(uint64_t start) : start_(start), end_(start) {}

void EventsWriteFollower::Stop(std::string why) {
  if (why_not_.empty()) why_not_ = absl::StrCat("command ", commands_, ": ", why);
}

std::string_view EventsWriteFollower::Follow(uint16_t command, std::string_view payload,
                                             uint32_t version) {
  ++commands_;
  if (!followed() || command == kSendCommandEnd) return {};
  absl::StatusOr<std::vector<SendAttribute>> attributes = ParseSendAttributes(payload, version);
  if (!attributes.ok()) {
    Stop(std::string(attributes.status().message()));
    return {};
  }
  std::string_view path, path_to, data;
  std::optional<uint64_t> offset;
  bool names_log = false;
  for (const SendAttribute& a : *attributes) {
    switch (a.type) {
      case kSendAttributePath:
        path = a.value;
        break;
      case kSendAttributePathTo:
        path_to = a.value;
        break;
      case kSendAttributeFileOffset:
        if (a.value.size() == 8) offset = Le64(a.value);
        break;
      case kSendAttributeData:
        data = a.value;
        break;
      default:
        break;
    }
    if (a.type != kSendAttributePath && a.type != kSendAttributePathTo &&
        a.type != kSendAttributePathLink && a.type != kSendAttributeClonePath)
      continue;
    // Deny by default: only the ledger's own names, spelled exactly, and temporary names
    // this stream creates. Any other name could reach the log another way (a symlink, a
    // second hard link, "./events.jsonl").
    const bool creates = (command == kSendCommandMkfile || command == kSendCommandMkdir) &&
                         a.type == kSendAttributePath;
    if (!IsLedgerPath(a.value) &&
        !(IsOrphanName(a.value) && (creates || created_.contains(a.value)))) {
      Stop(absl::StrCat("command type ", command, " names \"",
                        absl::CHexEscape(absl::string_view(a.value.data(), a.value.size())),
                        "\", not a name of the ledger's"));
      return {};
    }
    names_log |= a.value == kEventsFile;
  }
  if (IsMetadataOnly(command)) return {};
  switch (command) {
    case kSendCommandWrite: {
      if (path != kEventsFile) {
        written_.emplace(path);
        break;
      }
      if (!offset) {
        Stop("a write to events.jsonl without a file offset");
        return {};
      }
      const uint64_t from = *offset, to = *offset + data.size();
      if (to < from) {
        Stop("a write to events.jsonl past the largest offset");
        return {};
      }
      if (to <= start_) return {};  // rewrites old bytes: compared with the parent on disk
      if (from <= start_ && end_ == start_) {
        data.remove_prefix(static_cast<size_t>(start_ - from));
      } else if (from != end_) {
        Stop(absl::StrFormat("a write to events.jsonl at bytes %d-%d, not an append at %d", from,
                             to, end_));
        return {};
      }
      end_ = to;
      return data;
    }
    case kSendCommandMkfile:
    case kSendCommandMkdir:
      if (names_log && (command != kSendCommandMkfile || end_ != start_)) break;
      if (IsOrphanName(path)) {
        created_.emplace(path);
        if (command == kSendCommandMkfile) created_files_.emplace(path);
      }
      return {};
    case kSendCommandRename:
      if (path == kEventsFile) break;
      if (path_to == kEventsFile) {
        // How a full send creates the file: a new, empty file under a temporary name.
        if (end_ == start_ && created_files_.contains(path) && !written_.contains(path)) return {};
        Stop(absl::StrCat("events.jsonl replaced by ", std::string(path)));
        return {};
      }
      if (written_.contains(path)) written_.emplace(path_to);
      return {};
    case kSendCommandUnlink:
    case kSendCommandRmdir:
      if (names_log) break;
      return {};
    default:
      if (GivesOtherData(command) && !names_log) {
        written_.emplace(path);
        return {};
      }
      Stop(absl::StrCat("command type ", command,
                        names_log ? " changes events.jsonl" : " is not followed"));
      return {};
  }
  if (names_log) {
    Stop(absl::StrCat("command type ", command, " changes events.jsonl"));
    return {};
  }
  if (written_.size() + created_.size() > kMaxWrittenFiles) Stop("too many files to follow");
  return {};
}

StreamChainVerifier::StreamChainVerifier(const HeadRecord& from,
                                         std::function<void(uint64_t)> on_progress,
                                         StreamVerifierLimits limits)
    : limits_(limits),
      follower_(from.log_bytes),
      on_progress_(std::move(on_progress)),
      thread_([this] { Run(); }) {
  filling_ = TakeSpare();
  std::lock_guard lock(mu_);
  report_.head = from.head;
  report_.end_offset = from.log_bytes;
}

StreamChainVerifier::~StreamChainVerifier() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    failed_ = true;  // nothing more to verify
    queue_.clear();
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StreamChainVerifier::OnCommand(uint16_t command, std::string_view payload, uint32_t version) {
  std::string_view appended = follower_.Follow(command, payload, version);
  if (appended.empty() || behind_) return;
  filling_.append(appended);
  if (filling_.size() < limits_.chunk_bytes) return;
  // Past a chunk already, the bytes before these had no newline.
  const size_t before = filling_.size() - appended.size();
  const size_t from = before >= limits_.chunk_bytes ? before : 0;
  const void* last = memrchr(filling_.data() + from, '\n', filling_.size() - from);
  if (last == nullptr) {
    // One long line so far: keep filling, but not without bound (such a line is left to the
    // check on disk).
    if (filling_.size() > 4 * limits_.chunk_bytes) {
      behind_ = true;
      filling_.clear();
    }
    return;
  }
  size_t complete = static_cast<const char*>(last) - filling_.data() + 1;
  std::string next = TakeSpare();
  next.assign(filling_, complete);
  filling_.resize(complete);
  Enqueue(std::exchange(filling_, std::move(next)), false);
}

std::string StreamChainVerifier::TakeSpare() {
  {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (lock.owns_lock() && !spare_.empty()) {
      std::string out = std::move(spare_.back());
      spare_.pop_back();
      return out;
    }
  }
  std::string out;
  out.reserve(limits_.chunk_bytes + kChunkSlack);
  return out;
}

void StreamChainVerifier::Enqueue(std::string chunk, bool stream_ended) {
  // Never wait for the thread, not even for its lock (it may be preempted holding it: it runs
  // only on idle CPU time).
  std::unique_lock lock(mu_, std::defer_lock);
  if (stream_ended) {
    lock.lock();
  } else {
    (void)lock.try_lock();
  }
  if (!lock.owns_lock() || failed_ || queue_.size() >= limits_.max_queued) {
    // Behind: the stream must not wait for verification. What was not verified here is
    // verified from disk after the stream, from where this got to.
    behind_ = true;
    filling_.clear();
    return;
  }
  queue_.push_back(std::move(chunk));
  changed_.notify_all();
}

void StreamChainVerifier::Run() {
  // While the stream flows, verify only with CPU time nothing else wants: on a busy replica
  // the stream goes first, and the rest is verified after it at full speed.
  // Finish raises it back to SCHED_OTHER once the stream ended (under mu_: not before this).
  // Only as root, who may always raise it again (RLIMIT_NICE does not apply).
  std::unique_lock lock(mu_);
  if (!closed_ && ::geteuid() == 0) {
    sched_param idle{};
    (void)::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &idle);
  }
  while (true) {
    changed_.wait(lock, [&] { return !queue_.empty() || closed_; });
    if (queue_.empty()) return;
    std::string chunk = std::move(queue_.front());
    queue_.pop_front();
    const ChainHead from = report_.head;
    const uint64_t base = report_.end_offset;
    changed_.notify_all();
    lock.unlock();
    VerifyReport run = VerifyLines(chunk, from, from.seq + 1, 1);
    if (on_progress_ && run.ok()) on_progress_(base + run.end_offset);
    lock.lock();
    chunk.clear();
    if (spare_.size() < limits_.max_queued) spare_.push_back(std::move(chunk));
    report_.head = run.head;
    report_.events_verified += run.events_verified;
    report_.bytes_verified += run.end_offset;
    report_.end_offset = base + run.end_offset;
    if (!run.ok()) {
      report_.failure = run.failure;
      failed_ = true;
      queue_.clear();
      changed_.notify_all();
    }
  }
}

StreamVerification StreamChainVerifier::Finish() {
  if (!filling_.empty() && !behind_) {
    const void* last = memrchr(filling_.data(), '\n', filling_.size());
    if (last != nullptr) {
      filling_.resize(static_cast<const char*>(last) - filling_.data() + 1);
      Enqueue(std::move(filling_), true);
    }
    filling_.clear();
  }
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    // The stream has ended: what is left is verified at normal priority, including a run of
    // lines the thread is in the middle of.
    sched_param normal{};
    (void)::pthread_setschedparam(thread_.native_handle(), SCHED_OTHER, &normal);
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  StreamVerification out;
  out.followed = follower_.followed();
  out.why_not = follower_.why_not();
  out.report = report_;
  return out;
}

}  // namespace snapledger
