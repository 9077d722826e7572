#include "replica/stream_verifier.h"

#include <pthread.h>
#include <sched.h>

#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/head_file.h"

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

// Commands that give a file data (a later rename of that file onto events.jsonl would replace
// it with bytes never followed).
bool GivesData(uint16_t command) {
  switch (command) {
    case kSendCommandWrite:
    case kSendCommandClone:
    case kSendCommandTruncate:
    case 22:  // UPDATE_EXTENT
    case 23:  // FALLOCATE
    case 25:  // ENCODED_WRITE
      return true;
    default:
      return false;
  }
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
    why_not_ = absl::StrCat("command ", commands_, ": ", attributes.status().message());
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
    if ((a.type == kSendAttributePath || a.type == kSendAttributePathTo ||
         a.type == kSendAttributePathLink || a.type == kSendAttributeClonePath) &&
        a.value == kEventsFile)
      names_log = true;
  }
  if (IsMetadataOnly(command)) return {};
  if (command == kSendCommandWrite && path == kEventsFile) {
    if (!offset) {
      Stop("a write to events.jsonl without a file offset");
      return {};
    }
    const uint64_t from = *offset, to = *offset + data.size();
    if (to <= start_) return {};  // rewrites old bytes: compared with the parent on disk
    if (from <= start_ && end_ == start_) {
      data.remove_prefix(static_cast<size_t>(start_ - from));
    } else if (from != end_) {
      Stop(absl::StrFormat("a write to events.jsonl at bytes %d-%d, not an append at %d", from, to,
                           end_));
      return {};
    }
    end_ = to;
    return data;
  }
  if (command == kSendCommandRename && path_to == kEventsFile && path != kEventsFile) {
    // How a full send creates the file: made under a temporary name, renamed, then written.
    if (end_ == start_ && !written_.contains(path)) return {};
    Stop(absl::StrCat("events.jsonl replaced by ", std::string(path), ", which has data"));
    return {};
  }
  if (command == kSendCommandMkfile && path == kEventsFile && end_ == start_) return {};
  if (names_log) {
    Stop(absl::StrCat("command type ", command, " changes events.jsonl"));
    return {};
  }
  if (command == kSendCommandRename && written_.contains(path)) {
    written_.erase(written_.find(path));
    written_.emplace(path_to);
  } else if (GivesData(command)) {
    // Another file with data: it must not become events.jsonl later.
    written_.emplace(path);
  }
  if (written_.size() > kMaxWrittenFiles) Stop("too many files to follow");
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
  const void* last = memrchr(filling_.data(), '\n', filling_.size());
  if (last == nullptr) return;  // one long line so far: keep filling
  size_t complete = static_cast<const char*>(last) - filling_.data() + 1;
  std::string next = TakeSpare();
  next.assign(filling_, complete);
  filling_.resize(complete);
  Enqueue(std::exchange(filling_, std::move(next)));
}

std::string StreamChainVerifier::TakeSpare() {
  {
    std::lock_guard lock(mu_);
    if (!spare_.empty()) {
      std::string out = std::move(spare_.back());
      spare_.pop_back();
      return out;
    }
  }
  std::string out;
  out.reserve(limits_.chunk_bytes + kChunkSlack);
  return out;
}

void StreamChainVerifier::Enqueue(std::string chunk) {
  std::lock_guard lock(mu_);
  if (failed_) return;
  if (queue_.size() >= limits_.max_queued) {
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
  sched_param idle{};
  const bool lowered = ::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &idle) == 0;
  std::unique_lock lock(mu_);
  while (true) {
    changed_.wait(lock, [&] { return !queue_.empty() || closed_; });
    if (closed_ && lowered) {
      sched_param normal{};
      (void)::pthread_setschedparam(::pthread_self(), SCHED_OTHER, &normal);
    }
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
      Enqueue(std::move(filling_));
    }
    filling_.clear();
  }
  {
    std::lock_guard lock(mu_);
    closed_ = true;
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
