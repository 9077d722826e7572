#include "common/memory_btrfs.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace snapledger {
namespace {

namespace fs = std::filesystem;

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

absl::Status MemoryBtrfs::PromoteReceived(const std::string& source, const std::string& dest) {
  std::string received_uuid;
  {
    absl::MutexLock lock(&mu_);
    const std::string src = Normalize(source);
    RETURN_IF_ERROR(CheckIsSubvolumeLocked(src));
    received_uuid = subvolumes_[src].info.received_uuid;
  }
  if (received_uuid.empty())
    return absl::FailedPreconditionError(absl::StrCat(source, " is not a received subvolume"));
  RETURN_IF_ERROR(CreateSnapshot(source, dest, SnapshotKind::kReadOnly));
  absl::MutexLock lock(&mu_);
  subvolumes_[Normalize(dest)].info.received_uuid = received_uuid;
  return absl::OkStatus();
}

absl::Status MemoryBtrfs::Send(const std::string& snapshot,
                               const std::optional<std::string>& parent, ByteSink& sink) {
  return absl::UnimplementedError("MemoryBtrfs does not produce send streams");
}

absl::StatusOr<std::string> MemoryBtrfs::Receive(const std::string& dest_dir, ByteSource& source) {
  return absl::UnimplementedError("MemoryBtrfs does not receive send streams");
}

}  // namespace snapledger
