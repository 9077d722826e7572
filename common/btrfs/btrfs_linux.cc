// The real btrfs layer: libbtrfsutil for subvolumes, btrfs-progs for send and receive.
#include <btrfsutil.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/btrfs/btrfs.h"
#include "common/btrfs/send_stream.h"

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
      absl::StatusOr<SubvolumeInfo> info = GetSubvolumeInfo(path);
      if (absl::IsNotFound(info.status())) continue;  // deleted since it was listed
      if (!info.ok()) return info.status();
      out.push_back(*std::move(info));
    }
    return out;
  }

  absl::Status SetReadOnly(const std::string& path, bool read_only) override {
    RETURN_IF_ERROR(CheckIsSubvolume(path));
    return CallBtrfsUtil(read_only ? "set read-only" : "clear read-only", path, [&] {
      return btrfs_util_set_subvolume_read_only(path.c_str(), read_only);
    });
  }

  absl::Status RenameSubvolume(const std::string& from, const std::string& to) override {
    namespace fs = std::filesystem;
    if (fs::path(from).parent_path().lexically_normal() !=
        fs::path(to).parent_path().lexically_normal())
      return absl::InvalidArgumentError(
          absl::StrCat("rename subvolume ", from, " to ", to, ": not in the same directory"));
    RETURN_IF_ERROR(CheckIsSubvolume(from));
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0)
      return ErrnoStatus(absl::StrCat("rename subvolume ", from, " to ", to), errno);
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
      UniqueFd out = child->TakeStdout();
      // A larger pipe (best effort) lets `btrfs send` run ahead while the sink is busy (an ssh
      // channel encrypting and writing), in fewer, larger reads.
      (void)::fcntl(out.get(), F_SETPIPE_SZ, 1 << 20);
      FdSource stream(std::move(out), "btrfs send stdout");
      absl::StatusOr<uint64_t> copied = CopyStream(stream, sink);
      // On a sink error the sender is killed when `child` goes out of scope.
      if (!copied.ok()) {
        return Annotate(copied.status(), absl::StrCat("`", CommandLineForMessages(argv), "`"));
      }
    }
    ASSIGN_OR_RETURN(ExitStatus exit, child->Wait());
    return ExitToStatus(argv, exit, child->Stderr());
  }

  absl::StatusOr<std::string> Receive(const std::string& dest_dir, ByteSource& source,
                                      const ReceiveOptions& options) override {
    if (options.as_name) RETURN_IF_ERROR(ValidateSubvolumeName(*options.as_name));
    // The start is read and checked before anything runs: a malformed one creates nothing.
    ASSIGN_OR_RETURN(std::string start, ReadSendStreamStart(source));
    ASSIGN_OR_RETURN(SendStreamStart parsed, ParseSendStreamStart(start));
    std::string name = parsed.subvolume;
    if (options.as_name) {
      name = *options.as_name;
      ASSIGN_OR_RETURN(start, RenameSendStreamSubvolume(start, name));
    } else if (absl::Status st = ValidateSubvolumeName(name); !st.ok()) {
      return absl::DataLossError(
          absl::StrCat("the send stream's subvolume name is unusable: ", st.message()));
    }
    const std::string path = absl::StrCat(dest_dir, "/", name);
    if (struct stat st; ::lstat(path.c_str(), &st) == 0)
      return absl::AlreadyExistsError(absl::StrCat("receive into ", path, ": it exists"));
    absl::Status received = RunReceive(dest_dir, start, source, options.observer);
    if (received.ok()) received = CheckIsSubvolume(path);
    if (received.ok()) return path;
    // Whatever `btrfs receive` created under the name is partial: it was not there before.
    if (btrfs_util_is_subvolume(path.c_str()) == BTRFS_UTIL_OK) {
      if (absl::Status deleted = DeleteSubvolume(path); !deleted.ok())
        received = Annotate(received, absl::StrCat("(and deleting partial ", path,
                                                   " failed: ", deleted.message(), ")"));
    }
    return received;
  }

 private:
  // Runs `btrfs receive` fed with `start` and then the rest of `source`. When the receiver
  // fails, its error (quoting its stderr) is the cause; when the source or the stream does,
  // the receiver is killed first, so that a cut stream cannot look like a complete one.
  absl::Status RunReceive(const std::string& dest_dir, std::string_view start, ByteSource& source,
                          SendCommandObserver* observer) {
    std::vector<std::string> argv = BtrfsCommand({"receive", dest_dir});
    ProcessSpec spec;
    spec.argv = argv;
    spec.stdin_spec = StdioSpec::Pipe();
    ASSIGN_OR_RETURN(ChildPtr child, runner_->Start(spec));
    UniqueFd pipe = child->TakeStdin();
    SendStreamForwarder forwarder(source, pipe.get(), observer);
    absl::Status streamed = forwarder.Forward(start);
    if (!streamed.ok() && !forwarder.pipe_failed()) (void)child->Signal(SIGKILL);
    pipe.Reset();
    ASSIGN_OR_RETURN(ExitStatus exit, child->Wait());
    absl::Status receiver = ExitToStatus(argv, exit, child->Stderr());
    if (streamed.ok()) return receiver;
    if (forwarder.pipe_failed()) {
      if (!receiver.ok()) return receiver;
      return absl::InternalError(
          absl::StrCat("`", CommandLineForMessages(argv),
                       "` stopped reading before the stream ended: ", streamed.message()));
    }
    if (receiver.ok() || exit.signal == SIGKILL) return streamed;
    return Annotate(streamed, std::string(receiver.message()));
  }

  // InvalidArgument when `path` exists but is not a subvolume root.
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
