#include "replica/receive_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"

namespace snapledger {
namespace {

constexpr uint64_t kRotateBytes = 4 << 20;

nlohmann::json ToJson(const ReceiveOutcome& o) {
  nlohmann::json j = {{"ts", o.ts_micros},
                      {"block", o.block},
                      {"ok", o.ok},
                      {"already_held", o.already_held},
                      {"reason", o.reason},
                      {"error", o.error},
                      {"log_bytes", o.log_bytes},
                      {"events_verified", o.events_verified},
                      {"seconds", o.seconds}};
  if (o.parent) j["parent"] = *o.parent;
  return j;
}

std::optional<ReceiveOutcome> FromJson(const std::string& line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  try {
    ReceiveOutcome o;
    o.ts_micros = j.value("ts", int64_t{0});
    o.block = j.value("block", "");
    if (j.contains("parent")) o.parent = j.at("parent").get<std::string>();
    o.ok = j.at("ok").get<bool>();
    o.already_held = j.value("already_held", false);
    o.reason = j.value("reason", "");
    o.error = j.value("error", "");
    o.log_bytes = j.value("log_bytes", uint64_t{0});
    o.events_verified = j.value("events_verified", uint64_t{0});
    o.seconds = j.value("seconds", 0.0);
    return o;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::string ReceiveJournalPath(const std::string& root) {
  return absl::StrCat(root, "/receive-journal.jsonl");
}

absl::Status AppendReceiveOutcome(const std::string& root, const ReceiveOutcome& outcome) {
  const std::string path = ReceiveJournalPath(root);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) >= kRotateBytes)
    std::rename(path.c_str(), absl::StrCat(path, ".1").c_str());
  std::string line = ToJson(outcome).dump() + "\n";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", path));
  ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size()))
    return absl::InternalError(absl::StrCat("cannot append to ", path));
  return absl::OkStatus();
}

ReceiveJournalReader::ReceiveJournalReader(std::string root) : path_(ReceiveJournalPath(root)) {
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0) {
    inode_ = st.st_ino;
    offset_ = static_cast<uint64_t>(st.st_size);
    line_ = 0;  // line numbers count from where this reader started
  }
}

std::vector<ReceiveOutcome> ReceiveJournalReader::ReadNew() {
  std::vector<ReceiveOutcome> out;
  // The file is opened first and then fstat'ed, so its inode and size describe the file read
  // even if it is rotated meanwhile.
  absl::StatusOr<UniqueFd> fd = OpenFile(path_, O_RDONLY | O_CLOEXEC);
  if (!fd.ok()) return out;
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return out;
  if (st.st_ino != inode_ || static_cast<uint64_t>(st.st_size) < offset_) {
    // Rotated: finish the previous file first (now journal.1), so outcomes appended to it
    // since the last call are not lost.
    if (inode_ != 0) {
      if (absl::StatusOr<UniqueFd> old = OpenFile(absl::StrCat(path_, ".1"), O_RDONLY | O_CLOEXEC);
          old.ok()) {
        struct stat old_st;
        if (::fstat(old->get(), &old_st) == 0 && old_st.st_ino == inode_)
          ReadLines(old->get(), static_cast<uint64_t>(old_st.st_size), &out);
      }
    }
    inode_ = st.st_ino;
    offset_ = 0;
    line_ = 0;
  }
  ReadLines(fd->get(), static_cast<uint64_t>(st.st_size), &out);
  return out;
}

void ReceiveJournalReader::ReadLines(int fd, uint64_t size, std::vector<ReceiveOutcome>* out) {
  if (size <= offset_) return;
  std::string data(size - offset_, '\0');
  ssize_t n = ::pread(fd, data.data(), data.size(), static_cast<off_t>(offset_));
  if (n <= 0) return;
  data.resize(static_cast<size_t>(n));
  size_t pos = 0;
  // Only complete lines: one without its newline yet is being written; read it next time.
  for (size_t nl; (nl = data.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    std::string line = data.substr(pos, nl - pos);
    offset_ += line.size() + 1;
    ++line_;
    if (std::optional<ReceiveOutcome> o = FromJson(line)) {
      out->push_back(*std::move(o));
    } else {
      ReceiveOutcome bad;
      bad.reason = "local";
      bad.error = absl::StrCat(path_, " line ", line_,
                               " (counted from where the daemon started) "
                               "is not a receive outcome");
      out->push_back(std::move(bad));
    }
  }
}

}  // namespace snapledger
