// The real btrfs layer: libbtrfsutil for subvolumes, btrfs-progs for send and receive.
#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/statfs.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/btrfs.h"
#include "common/status_macros.h"

namespace snapledger {
namespace {

constexpr uint32_t kBtrfsSuperMagic = 0x9123683E;  // BTRFS_SUPER_MAGIC, linux/magic.h

// Runs a libbtrfsutil call with errno cleared first, so the errno it leaves is its own.
template <typename Fn>
absl::Status CallBtrfsUtil(std::string_view what, const std::string& path, Fn&& fn) {
  errno = 0;
  enum btrfs_util_error err = fn();
  if (err == BTRFS_UTIL_OK) return absl::OkStatus();
  int sys_errno = errno;
  std::string msg = absl::StrCat(std::string(what), " ", path, ": ", btrfs_util_strerror(err));
  if (sys_errno != 0) absl::StrAppend(&msg, ": ", strerror(sys_errno));
  switch (err) {
    case BTRFS_UTIL_ERROR_NOT_BTRFS:
      return absl::FailedPreconditionError(msg);
    case BTRFS_UTIL_ERROR_NOT_SUBVOLUME:
      return absl::InvalidArgumentError(msg);
    default:
      break;
  }
  if (sys_errno != 0) return absl::Status(ErrnoStatus("", sys_errno).code(), msg);
  return absl::InternalError(msg);
}

std::string FormatUuid(const uint8_t (&uuid)[16]) {
  if (std::all_of(std::begin(uuid), std::end(uuid), [](uint8_t b) { return b == 0; })) return "";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    absl::StrAppendFormat(&out, "%02x", uuid[i]);
  }
  return out;
}

std::vector<std::string> BtrfsCommand(std::initializer_list<std::string> args) {
  std::vector<std::string> argv = {"btrfs", "-q"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

absl::Status Annotate(const absl::Status& st, std::string_view context) {
  return absl::Status(st.code(), absl::StrCat(std::string(context), ": ", st.message()));
}

class LinuxBtrfs : public Btrfs {
 public:
  explicit LinuxBtrfs(ProcessRunner* runner) : runner_(runner) {}

  absl::Status CheckIsBtrfs(const std::string& path) override {
    struct statfs fs;
    if (::statfs(path.c_str(), &fs) != 0) return ErrnoStatus(absl::StrCat("statfs ", path), errno);
    if (static_cast<uint32_t>(fs.f_type) == kBtrfsSuperMagic) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is not on a btrfs filesystem (type 0x%x): snapledger keeps its ledger in a btrfs "
        "subvolume; mount one (see README)",
        path, static_cast<uint32_t>(fs.f_type)));
  }

  absl::Status CreateSubvolume(const std::string& path) override {
    return CallBtrfsUtil("create subvolume", path, [&] {
      return btrfs_util_create_subvolume(path.c_str(), 0, nullptr, nullptr);
    });
  }

  absl::Status CreateSnapshot(const std::string& source, const std::string& dest,
                              SnapshotKind kind) override {
    int flags = kind == SnapshotKind::kReadOnly ? BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY : 0;
    return CallBtrfsUtil(absl::StrCat("snapshot ", source, " to"), dest, [&] {
      return btrfs_util_create_snapshot(source.c_str(), dest.c_str(), flags, nullptr, nullptr);
    });
  }

  absl::Status DeleteSubvolume(const std::string& path) override {
    RETURN_IF_ERROR(CheckIsSubvolume(path));
    return CallBtrfsUtil("delete subvolume", path,
                         [&] { return btrfs_util_delete_subvolume(path.c_str(), 0); });
  }

  absl::StatusOr<SubvolumeInfo> GetSubvolumeInfo(const std::string& path) override {
    RETURN_IF_ERROR(CheckIsSubvolume(path));
    struct btrfs_util_subvolume_info raw;
    RETURN_IF_ERROR(CallBtrfsUtil(
        "subvolume info", path, [&] { return btrfs_util_subvolume_info(path.c_str(), 0, &raw); }));
    bool read_only = false;
    RETURN_IF_ERROR(CallBtrfsUtil("get read-only flag", path, [&] {
      return btrfs_util_get_subvolume_read_only(path.c_str(), &read_only);
    }));
    SubvolumeInfo info;
    info.path = path;
    info.id = raw.id;
    info.uuid = FormatUuid(raw.uuid);
    info.parent_uuid = FormatUuid(raw.parent_uuid);
    info.received_uuid = FormatUuid(raw.received_uuid);
    info.read_only = read_only;
    info.generation = raw.generation;
    info.otransid = raw.otransid;
    return info;
  }

  absl::StatusOr<std::vector<SubvolumeInfo>> ListSubvolumes(const std::string& dir) override {
    ASSIGN_OR_RETURN(std::vector<std::string> paths, SubvolumePathsIn(dir));
    std::vector<SubvolumeInfo> out;
    out.reserve(paths.size());
    for (const std::string& path : paths) {
      ASSIGN_OR_RETURN(SubvolumeInfo info, GetSubvolumeInfo(path));
      out.push_back(std::move(info));
    }
    return out;
  }

  absl::Status SetReadOnly(const std::string& path, bool read_only) override {
    RETURN_IF_ERROR(CheckIsSubvolume(path));
    return CallBtrfsUtil(read_only ? "set read-only" : "clear read-only", path, [&] {
      return btrfs_util_set_subvolume_read_only(path.c_str(), read_only);
    });
  }

  absl::Status PromoteReceived(const std::string& source, const std::string& dest) override {
    RETURN_IF_ERROR(CheckIsSubvolume(source));
    struct btrfs_util_subvolume_info raw;
    RETURN_IF_ERROR(CallBtrfsUtil("subvolume info", source, [&] {
      return btrfs_util_subvolume_info(source.c_str(), 0, &raw);
    }));
    if (FormatUuid(raw.received_uuid).empty())
      return absl::FailedPreconditionError(
          absl::StrCat(source, " is not a received subvolume (no received_uuid)"));
    RETURN_IF_ERROR(CreateSnapshot(source, dest, SnapshotKind::kWritable));
    absl::Status st = SetReceived(dest, raw);
    if (st.ok()) st = SetReadOnly(dest, true);
    if (!st.ok()) {
      (void)CallBtrfsUtil("delete subvolume", dest,
                          [&] { return btrfs_util_delete_subvolume(dest.c_str(), 0); });
      return st;
    }
    return absl::OkStatus();
  }

  absl::Status Send(const std::string& snapshot, const std::optional<std::string>& parent,
                    ByteSink& sink) override {
    std::vector<std::string> argv = BtrfsCommand({"send"});
    if (parent.has_value()) {
      argv.push_back("-p");
      argv.push_back(*parent);
    }
    argv.push_back(snapshot);
    ProcessSpec spec;
    spec.argv = argv;
    const int direct = sink.PassThroughFd();
    spec.stdout_spec = direct >= 0 ? StdioSpec::Fd(direct) : StdioSpec::Pipe();
    ASSIGN_OR_RETURN(ChildPtr child, runner_->Start(spec));
    if (direct < 0) {
      FdSource stream(child->TakeStdout(), "btrfs send stdout");
      absl::StatusOr<uint64_t> copied = CopyStream(stream, sink);
      // On a sink error the sender is killed when `child` goes out of scope.
      if (!copied.ok()) {
        return Annotate(copied.status(), absl::StrCat("`", CommandLineForMessages(argv), "`"));
      }
    }
    ASSIGN_OR_RETURN(ExitStatus exit, child->Wait());
    return ExitToStatus(argv, exit, child->Stderr());
  }

  absl::StatusOr<std::string> Receive(const std::string& dest_dir, ByteSource& source) override {
    ASSIGN_OR_RETURN(std::vector<std::string> before, SubvolumePathsIn(dest_dir));
    absl::Status received = RunReceive(dest_dir, source);
    ASSIGN_OR_RETURN(std::vector<std::string> after, SubvolumePathsIn(dest_dir));
    std::vector<std::string> created;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                        std::back_inserter(created));
    if (received.ok() && created.size() == 1) return created.front();
    if (received.ok()) {
      received = absl::InternalError(absl::StrCat("btrfs receive into ", dest_dir, " created ",
                                                  created.size(), " subvolumes, expected 1"));
    }
    for (const std::string& partial : created) {
      absl::Status deleted = DeleteSubvolume(partial);
      if (!deleted.ok()) {
        received = Annotate(received, absl::StrCat("(and deleting partial ", partial,
                                                   " failed: ", deleted.message(), ")"));
      }
    }
    return received;
  }

 private:
  // Runs `btrfs receive` fed from `source`. When both the source and the receiver fail, the
  // message carries both.
  absl::Status RunReceive(const std::string& dest_dir, ByteSource& source) {
    std::vector<std::string> argv = BtrfsCommand({"receive", dest_dir});
    ProcessSpec spec;
    spec.argv = argv;
    const int direct = source.PassThroughFd();
    spec.stdin_spec = direct >= 0 ? StdioSpec::Fd(direct) : StdioSpec::Pipe();
    ASSIGN_OR_RETURN(ChildPtr child, runner_->Start(spec));
    absl::Status streamed = absl::OkStatus();
    if (direct < 0) {
      FdSink stream(child->TakeStdin(), "btrfs receive stdin");
      absl::StatusOr<uint64_t> copied = CopyStream(source, stream);
      if (!copied.ok()) {
        streamed = copied.status();
        // A cut stream must not look like a complete one: kill rather than send end of file.
        (void)child->Signal(SIGKILL);
      }
      RETURN_IF_ERROR(stream.Close());
    }
    ASSIGN_OR_RETURN(ExitStatus exit, child->Wait());
    absl::Status receiver = ExitToStatus(argv, exit, child->Stderr());
    if (streamed.ok()) return receiver;
    if (receiver.ok() || exit.signal == SIGKILL) return streamed;
    return Annotate(streamed, std::string(receiver.message()));
  }

  // InvalidArgument when `path` exists but is not a subvolume root.
  // Sets `path`'s received identity to that recorded in `from` (what btrfs receive does when a
  // stream completes).
  static absl::Status SetReceived(const std::string& path,
                                  const struct btrfs_util_subvolume_info& from) {
    auto fd = OpenFile(path, O_RDONLY | O_DIRECTORY);
    if (!fd.ok()) return fd.status();
    struct btrfs_ioctl_received_subvol_args args;
    memset(&args, 0, sizeof args);
    memcpy(args.uuid, from.received_uuid, sizeof args.uuid);
    args.stransid = from.stransid;
    args.stime.sec = static_cast<uint64_t>(from.stime.tv_sec);
    args.stime.nsec = static_cast<uint32_t>(from.stime.tv_nsec);
    if (::ioctl(fd->get(), BTRFS_IOC_SET_RECEIVED_SUBVOL, &args) != 0)
      return ErrnoStatus(absl::StrCat("set received uuid on ", path), errno);
    return absl::OkStatus();
  }

  absl::Status CheckIsSubvolume(const std::string& path) {
    return CallBtrfsUtil("is subvolume", path,
                         [&] { return btrfs_util_is_subvolume(path.c_str()); });
  }

  // Direct entries of `dir` that are subvolume roots (not symlinks to them), sorted.
  absl::StatusOr<std::vector<std::string>> SubvolumePathsIn(const std::string& dir) {
    std::error_code ec;
    std::vector<std::string> out;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      if (it->is_symlink(type_ec) || !it->is_directory(type_ec)) continue;
      std::string path = it->path().string();
      if (btrfs_util_is_subvolume(path.c_str()) == BTRFS_UTIL_OK) out.push_back(path);
    }
    if (ec) return ErrnoStatus(absl::StrCat("list ", dir), ec.value());
    std::sort(out.begin(), out.end());
    return out;
  }

  ProcessRunner* const runner_;
};

}  // namespace

BtrfsPtr Btrfs::Linux(ProcessRunner* runner) { return std::make_unique<LinuxBtrfs>(runner); }

}  // namespace snapledger
