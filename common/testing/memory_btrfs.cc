#include "common/testing/memory_btrfs.h"

#include <fcntl.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/btrfs/send_stream.h"

namespace snapledger {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kStreamMagic = "snapledger-memory-btrfs-stream 1\n";

std::string Normalize(const std::string& path) {
  std::string out = fs::absolute(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string ParentOf(const std::string& normalized) {
  return fs::path(normalized).parent_path().string();
}

absl::Status CheckCanCreate(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) return absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
  if (!fs::is_directory(ParentOf(path), ec)) {
    return absl::NotFoundError(absl::StrCat("parent directory of ", path, " does not exist"));
  }
  return absl::OkStatus();
}

}  // namespace

void MemoryBtrfs::FailNext(Op op, absl::Status status) {
  absl::MutexLock lock(&mu_);
  failures_[op] = std::move(status);
}

size_t MemoryBtrfs::subvolume_count() const {
  absl::MutexLock lock(&mu_);
  return subvolumes_.size();
}

absl::Status MemoryBtrfs::TakeInjectedFailure(Op op) {
  auto it = failures_.find(op);
  if (it == failures_.end()) return absl::OkStatus();
  absl::Status st = std::move(it->second);
  failures_.erase(it);
  return st;
}

MemoryBtrfs::Subvolume MemoryBtrfs::NewSubvolume(const std::string& path) {
  Subvolume sv;
  sv.info.path = path;
  sv.info.id = next_id_++;
  sv.info.uuid = absl::StrFormat("00000000-0000-4000-8000-%012x", sv.info.id);
  sv.info.generation = ++generation_;
  sv.info.otransid = sv.info.generation;
  return sv;
}

absl::Status MemoryBtrfs::CheckIsSubvolumeLocked(const std::string& path) const {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  if (subvolumes_.count(path) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a subvolume"));
  }
  return absl::OkStatus();
}

absl::Status MemoryBtrfs::CheckIsBtrfs(const std::string& path) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedFailure(Op::kCheckIsBtrfs));
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  return absl::OkStatus();
}

absl::Status MemoryBtrfs::CreateSubvolume(const std::string& path) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedFailure(Op::kCreateSubvolume));
  const std::string p = Normalize(path);
  RETURN_IF_ERROR(CheckCanCreate(p));
  std::error_code ec;
  if (!fs::create_directory(p, ec)) return ErrnoStatus(absl::StrCat("mkdir ", p), ec.value());
  subvolumes_[p] = NewSubvolume(p);
  return absl::OkStatus();
}

absl::Status MemoryBtrfs::CreateSnapshot(const std::string& source, const std::string& dest,
                                         SnapshotKind kind) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedFailure(Op::kCreateSnapshot));
  const std::string src = Normalize(source);
  const std::string dst = Normalize(dest);
  RETURN_IF_ERROR(CheckIsSubvolumeLocked(src));
  RETURN_IF_ERROR(CheckCanCreate(dst));
  std::error_code ec;
  fs::copy(src, dst, fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
  if (ec) {
    fs::remove_all(dst, ec);
    return absl::InternalError(absl::StrCat("copy ", src, " to ", dst, ": ", ec.message()));
  }
  Subvolume sv = NewSubvolume(dst);
  sv.info.parent_uuid = subvolumes_[src].info.uuid;
  sv.info.read_only = kind == SnapshotKind::kReadOnly;
  subvolumes_[dst] = std::move(sv);
  return absl::OkStatus();
}

absl::Status MemoryBtrfs::DeleteSubvolume(const std::string& path) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedFailure(Op::kDeleteSubvolume));
  const std::string p = Normalize(path);
  RETURN_IF_ERROR(CheckIsSubvolumeLocked(p));
  const std::string prefix = p + "/";
  if (auto it = subvolumes_.lower_bound(prefix);
      it != subvolumes_.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("delete subvolume ", p, ": it contains subvolume ", it->first));
  }
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", p, ": ", ec.message()));
  subvolumes_.erase(p);
  return absl::OkStatus();
}

absl::StatusOr<SubvolumeInfo> MemoryBtrfs::GetSubvolumeInfo(const std::string& path) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  RETURN_IF_ERROR(CheckIsSubvolumeLocked(p));
  SubvolumeInfo info = subvolumes_[p].info;
  info.path = path;
  return info;
}

absl::StatusOr<std::vector<SubvolumeInfo>> MemoryBtrfs::ListSubvolumes(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  const std::string d = Normalize(dir);
  std::error_code ec;
  if (!fs::is_directory(d, ec))
    return absl::NotFoundError(absl::StrCat("list ", dir, ": no such directory"));
  std::vector<SubvolumeInfo> out;
  for (const auto& [path, sv] : subvolumes_) {
    if (ParentOf(path) != d || !fs::exists(path, ec)) continue;
    SubvolumeInfo info = sv.info;
    info.path = (fs::path(dir) / fs::path(path).filename()).string();
    out.push_back(std::move(info));
  }
  return out;
}

absl::Status MemoryBtrfs::SetReadOnly(const std::string& path, bool read_only) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  RETURN_IF_ERROR(CheckIsSubvolumeLocked(p));
  subvolumes_[p].info.read_only = read_only;
  subvolumes_[p].info.generation = ++generation_;
  return absl::OkStatus();
}

absl::Status MemoryBtrfs::RenameSubvolume(const std::string& from, const std::string& to) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(TakeInjectedFailure(Op::kRenameSubvolume));
  const std::string f = Normalize(from);
  const std::string t = Normalize(to);
  if (ParentOf(f) != ParentOf(t))
    return absl::InvalidArgumentError(
        absl::StrCat("rename subvolume ", from, " to ", to, ": not in the same directory"));
  RETURN_IF_ERROR(CheckIsSubvolumeLocked(f));
  std::error_code ec;
  if (fs::exists(t, ec) || fs::is_symlink(t, ec))
    return absl::AlreadyExistsError(
        absl::StrCat("rename subvolume ", from, " to ", to, ": exists"));
  fs::rename(f, t, ec);
  if (ec) return ErrnoStatus(absl::StrCat("rename subvolume ", from, " to ", to), ec.value());
  // Re-key the subvolume and any nested in it.
  std::vector<std::string> moved;
  for (const auto& [path, sv] : subvolumes_) {
    if (path == f || path.compare(0, f.size() + 1, f + "/") == 0) moved.push_back(path);
  }
  for (const std::string& old_path : moved) {
    auto node = subvolumes_.extract(old_path);
    node.key() = t + old_path.substr(f.size());
    node.mapped().info.path = node.key();
    subvolumes_.insert(std::move(node));
  }
  return absl::OkStatus();
}

std::string MemoryBtrfs::StreamUuid(const SubvolumeInfo& info) {
  return info.received_uuid.empty() ? info.uuid : info.received_uuid;
}

absl::Status MemoryBtrfs::Send(const std::string& snapshot,
                               const std::optional<std::string>& parent, ByteSink& sink) {
  std::string stream(kStreamMagic);
  {
    absl::MutexLock lock(&mu_);
    const std::string src = Normalize(snapshot);
    RETURN_IF_ERROR(CheckIsSubvolumeLocked(src));
    const SubvolumeInfo& info = subvolumes_[src].info;
    if (!info.read_only)
      return absl::InvalidArgumentError(absl::StrCat("send ", snapshot, ": not read-only"));
    absl::StrAppend(&stream, "subvolume ", fs::path(src).filename().string(), "\n", "uuid ",
                    StreamUuid(info), "\n");
    if (parent) {
      const std::string p = Normalize(*parent);
      RETURN_IF_ERROR(CheckIsSubvolumeLocked(p));
      absl::StrAppend(&stream, "parent ", StreamUuid(subvolumes_[p].info), "\n");
    }
    std::error_code ec;
    std::vector<fs::path> entries;
    for (fs::recursive_directory_iterator it(src, ec), end; !ec && it != end; it.increment(ec))
      entries.push_back(it->path());
    if (ec) return ErrnoStatus(absl::StrCat("send: list ", src), ec.value());
    std::sort(entries.begin(), entries.end());  // a directory before what it holds
    for (const fs::path& entry : entries) {
      const std::string rel = entry.lexically_relative(src).string();
      if (fs::is_symlink(entry, ec) ||
          !(fs::is_directory(entry, ec) || fs::is_regular_file(entry, ec)))
        return absl::UnimplementedError(
            absl::StrCat("MemoryBtrfs sends only files and directories, not ", entry.string()));
      if (fs::is_directory(entry, ec)) {
        absl::StrAppend(&stream, "dir ", rel, "\n");
        continue;
      }
      ASSIGN_OR_RETURN(std::string contents, ReadFileToString(entry.string()));
      absl::StrAppend(&stream, "file ", contents.size(), " ", rel, "\n", contents);
    }
    stream += "end\n";
  }
  return sink.Write(stream);
}

absl::StatusOr<std::string> MemoryBtrfs::Receive(const std::string& dest_dir, ByteSource& source,
                                                 const ReceiveOptions& options) {
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(TakeInjectedFailure(Op::kReceive));
  }
  if (options.as_name) RETURN_IF_ERROR(ValidateSubvolumeName(*options.as_name));
  StringSink stream;
  RETURN_IF_ERROR(CopyStream(source, stream).status());
  absl::MutexLock lock(&mu_);
  return ReceiveLocked(dest_dir, stream.data(), options);
}

absl::StatusOr<std::string> MemoryBtrfs::ReceiveLocked(const std::string& dest_dir,
                                                       std::string_view stream,
                                                       const ReceiveOptions& options) {
  auto malformed = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("not a MemoryBtrfs send stream: ", what));
  };
  if (stream.substr(0, kStreamMagic.size()) != kStreamMagic) return malformed("no header");
  size_t pos = kStreamMagic.size();
  auto next_line = [&]() -> std::optional<std::string_view> {
    size_t eol = stream.find('\n', pos);
    if (eol == std::string_view::npos) return std::nullopt;
    std::string_view line = stream.substr(pos, eol - pos);
    pos = eol + 1;
    return line;
  };
  auto field = [&](std::string_view key) -> absl::StatusOr<std::string> {
    std::optional<std::string_view> line = next_line();
    if (!line || line->substr(0, key.size() + 1) != std::string(key) + " ")
      return malformed("no " + std::string(key));
    return std::string(line->substr(key.size() + 1));
  };
  ASSIGN_OR_RETURN(std::string sent_name, field("subvolume"));
  ASSIGN_OR_RETURN(std::string uuid, field("uuid"));
  std::optional<std::string> parent;
  if (stream.substr(pos, 7) == "parent ") {
    ASSIGN_OR_RETURN(parent, field("parent"));
  }

  struct Entry {
    bool dir = false;
    std::string rel;
    std::string_view contents;
  };
  std::vector<Entry> entries;
  for (;;) {
    std::optional<std::string_view> line = next_line();
    if (!line) return malformed("truncated (no end)");
    if (*line == "end") break;
    Entry e;
    if (line->substr(0, 4) == "dir ") {
      e.dir = true;
      e.rel = std::string(line->substr(4));
    } else if (line->substr(0, 5) == "file ") {
      std::string_view rest = line->substr(5);
      size_t space = rest.find(' ');
      uint64_t size = 0;
      if (space == std::string_view::npos ||
          !absl::SimpleAtoi(absl::string_view(rest.data(), space), &size))
        return malformed("bad file line \"" + std::string(*line) + "\"");
      if (stream.size() - pos < size) return malformed("truncated file contents");
      e.rel = std::string(rest.substr(space + 1));
      e.contents = stream.substr(pos, size);
      pos += size;
    } else {
      return malformed("unknown line \"" + std::string(*line) + "\"");
    }
    if (e.rel.empty() || e.rel[0] == '/' || e.rel.find("..") != std::string::npos)
      return malformed(absl::StrCat("bad path \"", e.rel, "\""));
    entries.push_back(std::move(e));
  }
  if (pos != stream.size()) return malformed("bytes after end");

  std::string name = options.as_name.value_or(sent_name);
  if (absl::Status st = ValidateSubvolumeName(name); !st.ok() && !options.as_name)
    return absl::DataLossError(
        absl::StrCat("the stream's subvolume name is unusable: ", st.message()));
  const std::string path = absl::StrCat(dest_dir, "/", name);
  const std::string p = Normalize(path);
  RETURN_IF_ERROR(CheckCanCreate(p));
  std::string parent_uuid;
  if (parent) {
    for (const auto& [other, sv] : subvolumes_) {
      if (sv.info.received_uuid == *parent || sv.info.uuid == *parent) parent_uuid = sv.info.uuid;
    }
    if (parent_uuid.empty())
      return absl::InternalError(
          absl::StrCat("receive into ", dest_dir, ": cannot find parent subvolume ", *parent));
  }
  std::error_code ec;
  fs::create_directory(p, ec);
  absl::Status written = ec ? ErrnoStatus(absl::StrCat("mkdir ", p), ec.value()) : absl::OkStatus();
  for (const Entry& e : entries) {
    if (!written.ok()) break;
    const std::string target = absl::StrCat(p, "/", e.rel);
    if (e.dir) {
      fs::create_directory(target, ec);
      if (ec) written = ErrnoStatus(absl::StrCat("mkdir ", target), ec.value());
      continue;
    }
    absl::StatusOr<UniqueFd> fd = OpenFile(target, O_WRONLY | O_CREAT | O_EXCL, 0644);
    written = fd.ok() ? WriteAll(fd->get(), e.contents, target) : fd.status();
  }
  if (!written.ok()) {
    fs::remove_all(p, ec);
    return written;
  }
  Subvolume sv = NewSubvolume(p);
  sv.info.read_only = true;
  sv.info.received_uuid = uuid;
  sv.info.parent_uuid = parent_uuid;
  subvolumes_[p] = std::move(sv);
  return path;
}

}  // namespace snapledger
