#include "common/ledger/prefix_check.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

struct Extent {
  uint64_t logical, physical, length;
  uint32_t flags;
};

// Extents whose physical address says nothing reliable about their bytes. For a compressed
// (ENCODED) extent btrfs reports the start of the whole extent, not where the file's bytes
// begin inside it, so two files can point at different parts of one compressed extent and look
// alike: those ranges are always read.
constexpr uint32_t kUnsafeFlags = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                  FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL |
                                  FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_UNWRITTEN |
                                  FIEMAP_EXTENT_ENCODED;

// The btrfs filesystem UUID of `fd`'s filesystem; false when it is not btrfs. Physical
// addresses mean the same thing only within one filesystem.
bool BtrfsFsid(int fd, std::array<uint8_t, BTRFS_FSID_SIZE>* fsid) {
  struct btrfs_ioctl_fs_info_args info;
  memset(&info, 0, sizeof info);
  if (::ioctl(fd, BTRFS_IOC_FS_INFO, &info) != 0) return false;
  memcpy(fsid->data(), info.fsid, fsid->size());
  return true;
}

// The file's extents covering [0, length); empty when FIEMAP is not supported.
std::vector<Extent> Extents(int fd, uint64_t length) {
  constexpr size_t kBatch = 256;
  std::vector<char> buf(sizeof(fiemap) + kBatch * sizeof(fiemap_extent));
  std::vector<Extent> out;
  uint64_t start = 0;
  while (start < length) {
    auto* fm = reinterpret_cast<fiemap*>(buf.data());
    *fm = fiemap{};
    // FIEMAP_FLAG_SYNC: until dirty pages are written back the extent map still points at
    // the old (shared) extent while the page cache holds new bytes.
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_start = start;
    fm->fm_length = length - start;
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0 || fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      out.push_back({e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags});
      start = e.fe_logical + e.fe_length;
      last |= (e.fe_flags & FIEMAP_EXTENT_LAST) != 0;
    }
    if (last) break;
  }
  return out;
}

// Ranges of [0, length) whose bytes are provably the same: both files map them to the same
// physical bytes. Sorted, non-overlapping.
std::vector<std::pair<uint64_t, uint64_t>> SharedRanges(const std::vector<Extent>& a,
                                                        const std::vector<Extent>& b,
                                                        uint64_t length) {
  std::vector<std::pair<uint64_t, uint64_t>> shared;
  size_t j = 0;
  for (const Extent& x : a) {
    if (x.flags & kUnsafeFlags) continue;
    while (j < b.size() && b[j].logical + b[j].length <= x.logical) ++j;
    for (size_t k = j; k < b.size() && b[k].logical < x.logical + x.length; ++k) {
      const Extent& y = b[k];
      if (y.flags & kUnsafeFlags) continue;
      if (x.physical - x.logical != y.physical - y.logical) continue;
      uint64_t lo = std::max(x.logical, y.logical);
      uint64_t hi = std::min({x.logical + x.length, y.logical + y.length, length});
      if (lo < hi) shared.emplace_back(lo, hi);
    }
  }
  std::sort(shared.begin(), shared.end());
  return shared;
}

// The parts of [0, length) that no range of `shared` (ordered by start) covers, in order.
std::vector<std::pair<uint64_t, uint64_t>> UnsharedRanges(
    const std::vector<std::pair<uint64_t, uint64_t>>& shared, uint64_t length) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t pos = 0;
  for (const auto& [lo, hi] : shared) {
    if (hi <= pos) continue;
    if (lo > pos) out.emplace_back(pos, lo);
    pos = hi;
  }
  if (pos < length) out.emplace_back(pos, length);
  return out;
}

// Read buffers for CompareRange: allocated once per comparison, as large as the bytes to compare
// need (at most 1 MiB each), and never zero-filled (every byte used was just read).
class CompareBuffers {
 public:
  explicit CompareBuffers(uint64_t bytes_to_compare)
      : size_(static_cast<size_t>(std::clamp<uint64_t>(bytes_to_compare, 1, 1 << 20))),
        x_(new char[size_]),
        y_(new char[size_]) {}
  size_t size() const { return size_; }
  char* x() { return x_.get(); }
  char* y() { return y_.get(); }

 private:
  size_t size_;
  std::unique_ptr<char[]> x_, y_;
};

absl::Status CompareRange(int a, int b, uint64_t lo, uint64_t hi, CompareBuffers& buffers,
                          PrefixComparison* result) {
  char* x = buffers.x();
  char* y = buffers.y();
  while (lo < hi) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buffers.size(), hi - lo));
    ssize_t ra = ::pread(a, x, n, static_cast<off_t>(lo));
    ssize_t rb = ::pread(b, y, n, static_cast<off_t>(lo));
    if (ra < 0 || rb < 0) return ErrnoStatus("pread while comparing prefixes", errno);
    size_t m = static_cast<size_t>(std::min(ra, rb));
    if (memcmp(x, y, m) != 0) {
      size_t i = static_cast<size_t>(std::mismatch(x, x + m, y).first - x);
      result->equal = false;
      result->first_difference = lo + i;
      return absl::OkStatus();
    }
    if (m < n) {  // one file ended early
      result->equal = false;
      result->first_difference = lo + m;
      return absl::OkStatus();
    }
    result->bytes_compared += n;
    lo += n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PrefixComparison> ComparePrefix(const std::string& reference,
                                               const std::string& candidate, uint64_t length) {
  ASSIGN_OR_RETURN(UniqueFd a, OpenFile(reference, O_RDONLY));
  ASSIGN_OR_RETURN(UniqueFd b, OpenFile(candidate, O_RDONLY));
  PrefixComparison result;
  result.equal = true;
  std::array<uint8_t, BTRFS_FSID_SIZE> fsid_a, fsid_b;
  std::vector<std::pair<uint64_t, uint64_t>> shared;
  if (BtrfsFsid(a.get(), &fsid_a) && BtrfsFsid(b.get(), &fsid_b) && fsid_a == fsid_b)
    shared = SharedRanges(Extents(a.get(), length), Extents(b.get(), length), length);
  // The bytes no shared extent covers are read from both files and compared. Before each such
  // range, every byte not compared lies in a shared extent.
  const std::vector<std::pair<uint64_t, uint64_t>> unshared = UnsharedRanges(shared, length);
  uint64_t unshared_bytes = 0;
  for (const auto& [lo, hi] : unshared) unshared_bytes += hi - lo;
  CompareBuffers buffers(unshared_bytes);
  for (const auto& [lo, hi] : unshared) {
    result.bytes_shared = lo - result.bytes_compared;
    RETURN_IF_ERROR(CompareRange(a.get(), b.get(), lo, hi, buffers, &result));
    if (!result.equal) return result;
  }
  result.bytes_shared = length - result.bytes_compared;
  return result;
}

}  // namespace snapledger
