#include "tests/integration/loop_btrfs.h"

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/posix_file.h"
#include "common/base/process.h"

namespace snapledger::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRequiredTools[] = {"mkfs.btrfs", "btrfs", "mount", "umount", "losetup"};

bool InPath(const std::string& tool) {
  const char* path = getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin", ':')) {
    if (::access(absl::StrCat(dir, "/", tool).c_str(), X_OK) == 0) return true;
  }
  return false;
}

absl::Status CheckPrerequisites() {
  if (::geteuid() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("loop-mounted btrfs needs root (running as uid ", ::geteuid(), ")"));
  }
  for (const char* tool : kRequiredTools) {
    if (!InPath(tool)) {
      return absl::FailedPreconditionError(
          absl::StrCat(tool, " not found in PATH (install btrfs-progs and util-linux)"));
    }
  }
  return absl::OkStatus();
}

// So that a test process that crashes leaves no mount behind: mounts made in a private
// namespace disappear with it. Best effort, once per process, before any other thread runs.
void EnterPrivateMountNamespaceOnce() {
  static const bool entered = [] {
    if (::unshare(CLONE_NEWNS) != 0) return false;
    return ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
  }();
  (void)entered;
}

absl::Status Run(const std::vector<std::string>& argv) {
  return RunCommandOk(*ProcessRunner::Real(), argv).status();
}

absl::StatusOr<std::string> MakeTempDir() {
  std::string tmpl = (fs::temp_directory_path() / "snapledger-loop-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus("mkdtemp " + tmpl, errno);
  return tmpl;
}

absl::Status MakeSparseFile(const std::string& path, uint64_t size) {
  auto fd = OpenFile(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!fd.ok()) return fd.status();
  if (::ftruncate(fd->get(), static_cast<off_t>(size)) != 0) {
    return ErrnoStatus("ftruncate " + path, errno);
  }
  return absl::OkStatus();
}

// Loop devices still backed by `image` ("/dev/loop3: [2049]:123 (/tmp/x/btrfs.img)").
std::vector<std::string> LoopDevicesOf(const std::string& image) {
  auto out = RunCommandOk(*ProcessRunner::Real(), {"losetup", "-j", image});
  std::vector<std::string> devices;
  if (!out.ok()) return devices;
  for (absl::string_view line : absl::StrSplit(*out, '\n', absl::SkipEmpty())) {
    devices.emplace_back(line.substr(0, line.find(':')));
  }
  return devices;
}

}  // namespace

absl::StatusOr<LoopBtrfsPtr> LoopBtrfs::Create(uint64_t size_bytes) {
  if (absl::Status ready = CheckPrerequisites(); !ready.ok()) return ready;
  EnterPrivateMountNamespaceOnce();
  auto temp_dir = MakeTempDir();
  if (!temp_dir.ok()) return temp_dir.status();
  // From here on the destructor cleans up whatever was made.
  LoopBtrfsPtr fs(new LoopBtrfs(*temp_dir, *temp_dir + "/btrfs.img", *temp_dir + "/mnt"));
  if (absl::Status st = MakeSparseFile(fs->image_, size_bytes); !st.ok()) return st;
  if (absl::Status st = Run({"mkfs.btrfs", "-q", fs->image_}); !st.ok()) return st;
  std::error_code ec;
  fs::create_directory(fs->mount_point_, ec);
  if (ec) return ErrnoStatus("mkdir " + fs->mount_point_, ec.value());
  // `mount -o loop` attaches an auto-clearing loop device: it detaches once unmounted.
  if (absl::Status st = Run({"mount", "-o", "loop", fs->image_, fs->mount_point_}); !st.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot loop-mount a btrfs image (no loop devices or no btrfs in this kernel?): ",
        st.message()));
  }
  fs->mounted_ = true;
  return fs;
}

LoopBtrfs::~LoopBtrfs() {
  if (mounted_ && !Run({"umount", mount_point_}).ok()) {
    absl::Status lazy = Run({"umount", "-l", mount_point_});
    if (!lazy.ok())
      fprintf(stderr, "LoopBtrfs: cannot unmount %s: %s\n", mount_point_.c_str(),
              lazy.ToString().c_str());
  }
  for (const std::string& device : LoopDevicesOf(image_)) {
    (void)Run({"losetup", "-d", device});  // may already be auto-cleared
  }
  std::error_code ec;
  fs::remove_all(temp_dir_, ec);
  if (ec)
    fprintf(stderr, "LoopBtrfs: cannot remove %s: %s\n", temp_dir_.c_str(), ec.message().c_str());
}

}  // namespace snapledger::testing
