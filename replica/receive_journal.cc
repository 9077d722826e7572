#include "replica/receive_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

constexpr uint64_t kRotateBytes = 4 << 20;

nlohmann::json ToJson(const ReceiveOutcome& o) {
  nlohmann::json j = {{"ts", o.ts_micros},          {"block", o.block},
                      {"ok", o.ok},                 {"already_held", o.already_held},
                      {"reason", o.reason},         {"error", o.error},
                      {"stream_bytes", o.stream_bytes}, {"events_verified", o.events_verified},
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
    o.stream_bytes = j.value("stream_bytes", uint64_t{0});
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

ReceiveJournalReader::ReceiveJournalReader(std::string root)
    : path_(ReceiveJournalPath(root)) {
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0) {
    inode_ = st.st_ino;
    offset_ = static_cast<uint64_t>(st.st_size);
    line_ = 0;  // line numbers count from where this reader started
  }
}

std::vector<ReceiveOutcome> ReceiveJournalReader::ReadNew() {
  std::vector<ReceiveOutcome> out;
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) return out;
  if (st.st_ino != inode_ || static_cast<uint64_t>(st.st_size) < offset_) {
    inode_ = st.st_ino;
    offset_ = 0;
    line_ = 0;
  }
  if (static_cast<uint64_t>(st.st_size) == offset_) return out;
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset_));
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline yet: a line being written; read it next time
    offset_ += line.size() + 1;
    ++line_;
    if (std::optional<ReceiveOutcome> o = FromJson(line)) {
      out.push_back(*std::move(o));
    } else {
      ReceiveOutcome bad;
      bad.reason = "local";
      bad.error = absl::StrCat(path_, " line ", line_, " (counted from where the daemon started) "
                               "is not a receive outcome");
      out.push_back(std::move(bad));
    }
  }
  return out;
}

}  // namespace snapledger
