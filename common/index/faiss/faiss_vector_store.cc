#include "common/index/faiss/faiss_vector_store.h"

#include <dirent.h>
#include <errno.h>
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <fcntl.h>
#include <immintrin.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/base/posix_file.h"
#include "common/base/fmt_absl.h"
#include "common/ledger/sha256.h"
#include "common/base/status_macros.h"

static_assert(std::endian::native == std::endian::little,
              "the vector index files are little-endian and written from memory");

namespace snapledger {

// Which vectors.index the store last opened or published, by device and inode.
class PublishedFileRecord {
 public:
  void Set(dev_t dev, ino_t ino) {
    absl::MutexLock lock(&mu_);
    file_ = {dev, ino};
  }
  std::optional<std::pair<dev_t, ino_t>> Get() const {
    absl::MutexLock lock(&mu_);
    return file_;
  }

 private:
  mutable absl::Mutex mu_;
  std::optional<std::pair<dev_t, ino_t>> file_ ABSL_GUARDED_BY(mu_);
};

namespace {

using idx_t = faiss::Index::idx_t;
using SeqList = absl::InlinedVector<uint64_t, 1>;  // one entry's seqs, ascending

constexpr char kBaseMagic[8] = {'S', 'L', 'V', 'E', 'C', 'I', 'D', 'X'};
constexpr char kJournalMagic[8] = {'S', 'L', 'V', 'E', 'C', 'J', 'N', 'L'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kBaseHeaderSize = 24;  // magic, version, reserved, total length
constexpr size_t kJournalHeaderSize = 56;
constexpr uint32_t kRecordMagic = 0x524a4c53;  // "SLJR"
constexpr uint32_t kRecordLengthMask = 0xa5a5a5a5;
constexpr size_t kRecordHeaderSize = 12;
constexpr size_t kRecordCheckSize = 8;
constexpr uint32_t kKindExact = 0;
constexpr uint32_t kKindIvf = 1;
constexpr size_t kMinCandidates = 32;
constexpr uint64_t kExactRangeMin = 4096;  // seq ranges this short are always scored exactly

// The parameters that shape an index; recorded in its base file.
struct Structure {
  uint64_t exact_below = 0;
  uint32_t nlist = 0;
  uint64_t train_size = 0;
  uint64_t kmeans_seed = 0;
  uint32_t kmeans_iterations = 0;
};

Structure StructureOf(const EmbeddedIndexOptions& o) {
  return {o.exact_below, static_cast<uint32_t>(o.nlist), o.train_size, o.kmeans_seed,
          static_cast<uint32_t>(o.kmeans_iterations)};
}

std::string JoinPath(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

// ---------------------------------------------------------------------------------------------
// Bytes.

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Bounds-checked reading of a byte span; every failure is DataLoss naming `what_`.
class ByteReader {
 public:
  ByteReader(std::string_view data, std::string what) : data_(data), what_(std::move(what)) {}

  template <typename T>
  absl::Status Get(T* v, absl::string_view field) {
    std::string_view bytes;
    RETURN_IF_ERROR(Bytes(sizeof(T), &bytes, field));
    std::memcpy(v, bytes.data(), sizeof(T));
    return absl::OkStatus();
  }
  absl::Status Bytes(size_t n, std::string_view* out, absl::string_view field) {
    if (n > data_.size() - pos_) {
      return absl::DataLossError(
          absl::StrCat(what_, ": ", field, " at offset ", pos_, " runs past the end"));
    }
    *out = data_.substr(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }

 private:
  std::string_view data_;
  std::string what_;
  size_t pos_ = 0;
};

std::string_view AsBytes(absl::Span<const float> v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
}

uint64_t HashVector(absl::Span<const float> v) { return std::hash<std::string_view>{}(AsBytes(v)); }

// The first 8 bytes of SHA-256 of `pieces`, one after the other.
uint64_t ShortDigest(std::initializer_list<std::string_view> pieces) {
  Sha256 sha;
  for (std::string_view piece : pieces) sha.Update(piece);
  const Digest d = sha.Finish();
  uint64_t v;
  std::memcpy(&v, d.data(), sizeof v);
  return v;
}

// The first 8 bytes of SHA-256(`bytes`).
uint64_t ShortDigest(std::string_view bytes) { return ShortDigest({bytes}); }

// A faiss::IOWriter that only counts bytes: the size of write_index's output, without it.
struct CountingWriter : faiss::IOWriter {
  size_t operator()(const void*, size_t size, size_t nitems) override {
    bytes += size * nitems;
    return nitems;
  }
  uint64_t bytes = 0;
};

// Writes to a file descriptor through a buffer, hashing everything written. Usable as FAISS's
// writer; an I/O error is kept in status() and makes FAISS's call fail.
class HashingFileWriter : public faiss::IOWriter {
 public:
  HashingFileWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {
    buffer_.reserve(kBufferSize);
  }
  size_t operator()(const void* ptr, size_t size, size_t nitems) override {
    Append(std::string_view(static_cast<const char*>(ptr), size * nitems));
    return status_.ok() ? nitems : 0;
  }
  void Append(std::string_view bytes) {
    hasher_.Update(bytes);
    while (!bytes.empty() && status_.ok()) {
      size_t n = std::min(bytes.size(), kBufferSize - buffer_.size());
      buffer_.append(bytes.data(), n);
      bytes.remove_prefix(n);
      if (buffer_.size() == kBufferSize) Flush();
    }
  }
  // Flushes, then writes the SHA-256 of everything so far (unhashed) and returns it.
  absl::StatusOr<Digest> FinishWithDigest() {
    Digest d = hasher_.Finish();
    buffer_.append(reinterpret_cast<const char*>(d.data()), d.size());
    Flush();
    if (!status_.ok()) return status_;
    return d;
  }
  const absl::Status& status() const { return status_; }

 private:
  static constexpr size_t kBufferSize = 1 << 20;
  void Flush() {
    if (status_.ok()) status_ = WriteAll(fd_, buffer_, path_);
    buffer_.clear();
  }
  int fd_;
  std::string path_;
  std::string buffer_;
  Sha256 hasher_;
  absl::Status status_;
};

// A faiss::IOReader over bytes already checked by their container.
struct SpanReader : faiss::IOReader {
  explicit SpanReader(std::string_view d) : data(d) {}
  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    if (size == 0) return nitems;
    size_t n = std::min(nitems, (data.size() - pos) / size);
    std::memcpy(ptr, data.data() + pos, n * size);
    pos += n * size;
    return n;
  }
  std::string_view data;
  size_t pos = 0;
};

absl::Status SyncFd(int fd, const std::string& path, bool data_only) {
  int rc = data_only ? ::fdatasync(fd) : ::fsync(fd);
  if (rc != 0) return ErrnoStatus(absl::StrCat(data_only ? "fdatasync " : "fsync ", path), errno);
  return absl::OkStatus();
}

absl::Status RemoveIfExists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return ErrnoStatus(absl::StrCat("unlink ", path), errno);
  return absl::OkStatus();
}

absl::StatusOr<struct stat> StatPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  return st;
}

// "<prefix><pid>-<n>", unique within this process.
std::string UniqueName(absl::string_view prefix) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(prefix, ::getpid(), "-", counter.fetch_add(1));
}

// ---------------------------------------------------------------------------------------------
// Assigning vectors to IVF lists. FAISS's own assignment (a BLAS product or a scalar loop in
// Debian's build) costs ~15 us per 128-dim vector against 256 centroids and dominates an
// index build; this kernel is ~10x faster. Both paths sum lane l (dims j with j % 8 == l) in
// increasing j and reduce the 8 lanes in one fixed order, without fused multiply-add, so they
// agree bit for bit; ties go to the lowest list.

float ReduceLanes(const float lanes[8]) {
  const float t0 = lanes[0] + lanes[4], t1 = lanes[1] + lanes[5];
  const float t2 = lanes[2] + lanes[6], t3 = lanes[3] + lanes[7];
  return (t0 + t2) + (t1 + t3);
}

// Adds dims [from, d) to `lanes` one by one.
void DotTail(const float* a, const float* b, size_t from, size_t d, float lanes[8]) {
  for (size_t j = from; j < d; ++j) lanes[j % 8] += a[j] * b[j];
}

float DotPortable(const float* a, const float* b, size_t d) {
  float lanes[8] = {};
  size_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += a[j + l] * b[j + l];
  }
  DotTail(a, b, j, d, lanes);
  return ReduceLanes(lanes);
}

void AssignPortable(const float* centroids, size_t nlist, size_t d, const float* x, size_t n,
                    idx_t* out, float* scores) {
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * d;
    float best = DotPortable(xv, centroids, d);
    idx_t best_list = 0;
    for (size_t c = 1; c < nlist; ++c) {
      float s = DotPortable(xv, centroids + c * d, d);
      if (s > best) best = s, best_list = static_cast<idx_t>(c);
    }
    out[v] = best_list;
    scores[v] = best;
  }
}

// Lane sums of vectors x[0..V) (rows of d floats) with centroids c0 .. c0+C-1, finished and
// compared in centroid order. A V x C tile of accumulators reuses each load V or C times and
// hides the add latency.
template <size_t V, size_t C>
__attribute__((target("avx2"))) inline void TileAvx2(const float* x, const float* centroids,
                                                     size_t c0, size_t d, float* best,
                                                     idx_t* best_list) {
  const size_t d8 = d / 8 * 8;
  __m256 acc[V][C];
#pragma GCC unroll 16
  for (size_t v = 0; v < V; ++v) {
#pragma GCC unroll 16
    for (size_t i = 0; i < C; ++i) acc[v][i] = _mm256_setzero_ps();
  }
  for (size_t j = 0; j < d8; j += 8) {
    __m256 xj[V];
#pragma GCC unroll 16
    for (size_t v = 0; v < V; ++v) xj[v] = _mm256_loadu_ps(x + v * d + j);
#pragma GCC unroll 16
    for (size_t i = 0; i < C; ++i) {
      const __m256 cj = _mm256_loadu_ps(centroids + (c0 + i) * d + j);
#pragma GCC unroll 16
      for (size_t v = 0; v < V; ++v) acc[v][i] = _mm256_add_ps(acc[v][i], _mm256_mul_ps(xj[v], cj));
    }
  }
  for (size_t v = 0; v < V; ++v) {
    for (size_t i = 0; i < C; ++i) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[v][i]);
      DotTail(x + v * d, centroids + (c0 + i) * d, d8, d, lanes);
      const float s = ReduceLanes(lanes);
      if (s > best[v] || c0 + i == 0) best[v] = s, best_list[v] = static_cast<idx_t>(c0 + i);
    }
  }
}

// Vectors x[0..V) against every centroid.
template <size_t V>
__attribute__((target("avx2"))) void AssignRowsAvx2(const float* centroids, size_t nlist, size_t d,
                                                    const float* x, idx_t* out, float* scores) {
  constexpr size_t kC = 3;  // V x kC accumulators + V + 1 operands fit 16 registers for V <= 3
  float best[V] = {};
  size_t c = 0;
  for (; c + kC <= nlist; c += kC) TileAvx2<V, kC>(x, centroids, c, d, best, out);
  for (; c < nlist; ++c) TileAvx2<V, 1>(x, centroids, c, d, best, out);
  std::copy_n(best, V, scores);
}

__attribute__((target("avx2"))) void AssignAvx2(const float* centroids, size_t nlist, size_t d,
                                                const float* x, size_t n, idx_t* out,
                                                float* scores) {
  constexpr size_t kV = 3;
  size_t v = 0;
  for (; v + kV <= n; v += kV)
    AssignRowsAvx2<kV>(centroids, nlist, d, x + v * d, out + v, scores + v);
  for (; v < n; ++v) AssignRowsAvx2<1>(centroids, nlist, d, x + v * d, out + v, scores + v);
}

// For each of the n rows of x: the centroid with the largest inner product (the lowest on
// ties) and, when `scores` is not null, that product. Large batches are split over threads;
// each row's result does not depend on the split.
void AssignRows(const float* centroids, size_t nlist, size_t d, const float* x, size_t n,
                idx_t* out, float* scores) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  std::vector<float> scratch;
  if (scores == nullptr) {
    scratch.resize(n);
    scores = scratch.data();
  }
  auto run = [&](size_t from, size_t to) {
    if (avx2) {
      AssignAvx2(centroids, nlist, d, x + from * d, to - from, out + from, scores + from);
    } else {
      AssignPortable(centroids, nlist, d, x + from * d, to - from, out + from, scores + from);
    }
  };
  constexpr size_t kRowsPerThread = 2048;
  const size_t threads =
      std::clamp<size_t>(n / kRowsPerThread, 1, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> helpers;
  const size_t per = (n + threads - 1) / threads;
  for (size_t t = 1; t < threads; ++t) {
    helpers.emplace_back(run, std::min(n, t * per), std::min(n, (t + 1) * per));
  }
  run(0, std::min(n, per));
  for (std::thread& h : helpers) h.join();
}

void AssignToLists(const faiss::IndexIVFFlat& ivf, const float* x, size_t n, idx_t* out) {
  const auto* quantizer = static_cast<const faiss::IndexFlat*>(ivf.quantizer);
  AssignRows(quantizer->get_xb(), ivf.nlist, ivf.d, x, n, out, nullptr);
}

// The index k-means assigns points with (faiss::Clustering searches it with k = 1): the same
// kernel instead of FAISS's BLAS path, which in Debian's build (reference BLAS) made training
// on 50,000 points take ~9 s instead of ~2 s.
struct KernelAssignIndex : faiss::IndexFlatIP {
  explicit KernelAssignIndex(idx_t d) : faiss::IndexFlatIP(d) {}
  void search(idx_t n, const float* x, idx_t k, float* distances, idx_t* labels,
              const faiss::SearchParameters* params = nullptr) const override {
    if (k != 1 || params != nullptr || ntotal == 0) {
      faiss::IndexFlatIP::search(n, x, k, distances, labels, params);
      return;
    }
    AssignRows(get_xb(), static_cast<size_t>(ntotal), static_cast<size_t>(d), x,
               static_cast<size_t>(n), labels, distances);
  }
};

// out[i] = inner product of q with row i of `rows` (n rows of d floats), summed like the
// assignment kernel. Searching uses this rather than FAISS's scan, whose inner product in
// Debian's build is a scalar loop (~170 ns per 128-dim vector, ~6x slower).
void DotsPortable(const float* q, const float* rows, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = DotPortable(q, rows + i * d, d);
}

__attribute__((target("avx2"))) inline float FinishDot(__m256 acc, const float* q, const float* row,
                                                       size_t d8, size_t d) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  DotTail(q, row, d8, d, lanes);
  return ReduceLanes(lanes);
}

__attribute__((target("avx2"))) void DotsAvx2(const float* q, const float* rows, size_t n, size_t d,
                                              float* out) {
  constexpr size_t kRows = 4;  // independent accumulators
  const size_t d8 = d / 8 * 8;
  size_t i = 0;
  for (; i + kRows <= n; i += kRows) {
    __m256 acc[kRows];
#pragma GCC unroll 4
    for (size_t r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
    for (size_t j = 0; j < d8; j += 8) {
      const __m256 qj = _mm256_loadu_ps(q + j);
#pragma GCC unroll 4
      for (size_t r = 0; r < kRows; ++r) {
        acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(qj, _mm256_loadu_ps(rows + (i + r) * d + j)));
      }
    }
    for (size_t r = 0; r < kRows; ++r) out[i + r] = FinishDot(acc[r], q, rows + (i + r) * d, d8, d);
  }
  for (; i < n; ++i) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t j = 0; j < d8; j += 8) {
      acc = _mm256_add_ps(acc,
                          _mm256_mul_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(rows + i * d + j)));
    }
    out[i] = FinishDot(acc, q, rows + i * d, d8, d);
  }
}

void Dots(const float* q, const float* rows, size_t n, size_t d, float* out) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    DotsAvx2(q, rows, n, d, out);
  } else {
    DotsPortable(q, rows, n, d, out);
  }
}

// Whether an entry has a seq in [min_seq, max_seq].
class SeqRange {
 public:
  SeqRange(const std::vector<SeqList>& seqs, uint64_t min_seq, uint64_t max_seq)
      : seqs_(seqs), min_seq_(min_seq), max_seq_(max_seq) {}
  bool Contains(size_t entry) const {
    const SeqList& s = seqs_[entry];
    if (s.back() < min_seq_ || s.front() > max_seq_) return false;
    auto it = std::lower_bound(s.begin(), s.end(), min_seq_);
    return it != s.end() && *it <= max_seq_;
  }

 private:
  const std::vector<SeqList>& seqs_;
  const uint64_t min_seq_, max_seq_;
};

bool AllFinite(absl::Span<const float> v) {
  // Branch-free (vectorizes): an exponent of all ones is an infinity or a NaN.
  uint32_t special = 0;
  for (float f : v) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    special |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return special == 0;
}

bool HitOrder(const VectorHit& a, const VectorHit& b) {
  return a.score != b.score ? a.score > b.score : a.seq < b.seq;
}

// One scored entry; ordered best first, ties by entry (so by first seq).
struct Scored {
  float score;
  uint32_t entry;
  bool operator<(const Scored& o) const {
    return score != o.score ? score > o.score : entry < o.entry;
  }
};

// Every entry a scan scored, brought into order lazily: [0, ordered) is sorted and no later
// element precedes any of it.
struct Candidates {
  std::vector<Scored> all;
  size_t ordered = 0;
  void OrderPrefix(size_t n) {
    n = std::min(n, all.size());
    if (n <= ordered) return;
    std::nth_element(all.begin() + ordered, all.begin() + n - 1, all.end());
    std::sort(all.begin() + ordered, all.begin() + n);
    ordered = n;
  }
};

// ---------------------------------------------------------------------------------------------
// The index.

// Events to apply: the entry of each event (existing or new) and the new entries' vectors.
struct Batch {
  uint64_t first_seq = 0;
  std::vector<uint32_t> entry_of;  // per event
  std::vector<float> fresh;        // new entries' vectors, entry order
  std::vector<uint64_t> fresh_hashes;
  size_t fresh_count(size_t dim) const { return fresh.size() / dim; }
};

// What the file state of an index is: staged (memory only until Publish) or published.
struct FilePaths {
  std::string dir;
  std::string base;     // vectors.index
  std::string journal;  // vectors.journal
};

class FaissVectorIndex final : public VectorIndex {
 public:
  FaissVectorIndex(FilePaths paths, IndexIdentity identity, Structure structure, int nprobe,
                   const EmbeddedIndexOptions& options,
                   std::shared_ptr<PublishedFileRecord> published)
      : paths_(std::move(paths)),
        identity_(std::move(identity)),
        dim_(static_cast<size_t>(identity_.dimension)),
        structure_(structure),
        nprobe_(nprobe),
        compact_fraction_(options.compact_fraction),
        compact_min_bytes_(options.compact_min_bytes),
        published_(std::move(published)),
        index_(std::make_unique<faiss::IndexFlatIP>(identity_.dimension)) {}

  IndexIdentity Identity() const override { return identity_; }
  uint64_t LastSeq() const override {
    absl::ReaderMutexLock lock(&mu_);
    return last_seq_;
  }
  size_t EntryCount() const {
    absl::ReaderMutexLock lock(&mu_);
    return seqs_.size();
  }
  absl::Status Add(absl::Span<const IndexedEvent> events, absl::Span<const float> vectors) override;
  absl::StatusOr<std::vector<VectorHit>> Search(absl::Span<const float> query, size_t k,
                                                const SearchFilter& filter) const override;
  absl::Status Persist() override;

  // Loading (OpenPublished): the base's contents, then the journal's records.
  absl::Status LoadBase(std::string_view body, const std::string& what, const Digest& digest,
                        uint64_t base_bytes, const struct stat& st);
  absl::Status ReplayJournal(std::string_view data, const std::string& what);
  // Publish: writes the base to `staged_path`, renames it over the published base.
  absl::Status PublishFrom(const std::string& staged_path);
  bool staged() const {
    absl::MutexLock lock(&write_mu_);
    return staged_;
  }
  const std::string& dir() const { return paths_.dir; }

 private:
  absl::Status ValidateBatch(absl::Span<const IndexedEvent> events,
                             absl::Span<const float> vectors) const;
  // Folds `vectors` into entries; registers new ones in the hash map (undone by Forget).
  Batch Resolve(uint64_t first_seq, absl::Span<const float> vectors)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status Apply(const Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void Forget(const Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<std::unique_ptr<faiss::IndexIVFFlat>> BuildIvf(const float* old, size_t old_n,
                                                                const Batch& batch) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The entry holding exactly `v`, if any (`pending` holds entries not yet in FAISS).
  std::optional<uint32_t> FindEntry(uint64_t hash, absl::Span<const float> v,
                                    const Batch* pending) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void Remember(uint64_t hash, uint32_t entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Entry `e`'s vector, in FAISS or (e >= committed entries) in `pending`.
  absl::Span<const float> EntryVector(uint32_t e, const Batch* pending, std::vector<float>* scratch)
      const ABSL_NO_THREAD_SAFETY_ANALYSIS;
  absl::Status RebuildHashes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void AddPending(const Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  // Searching.
  // Scores every event in the filter's seq range directly: exact, and cheaper than an IVF
  // search when the range holds fewer events than the probed lists would.
  absl::StatusOr<std::vector<VectorHit>> SearchRangeExactly(absl::Span<const float> query, size_t k,
                                                            const SearchFilter& filter) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Scores the entries of the `nprobe` lists nearest `query` (every entry of an exact index)
  // that `range` (if any) contains.
  void Scan(absl::Span<const float> query, int nprobe, const SeqRange* range, Candidates* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Expands the first `n` candidates into hits (best first, at most k per entry); true once a
  // candidate scores below the k-th hit, i.e. no further candidate can change the answer.
  absl::StatusOr<bool> Collect(const Candidates& c, size_t n, size_t k, const SearchFilter& filter,
                               std::unordered_map<uint64_t, bool>* accepted,
                               std::vector<VectorHit>* hits) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Persistence.
  absl::Status CheckStillPublished() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Writes the whole index to `path` (created, fsynced); returns its digest and size.
  absl::StatusOr<std::pair<Digest, uint64_t>> WriteBase(const std::string& path) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  std::string EncodeBaseMeta() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Replaces the published base by the current state (temp file + rename) and drops the
  // journal.
  absl::Status Compact() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Appends `pieces` (one record) to the journal and syncs it; then clears the pending
  // entries and vectors (so pieces pointing into them are invalid afterwards).
  absl::Status AppendJournal(absl::Span<const std::string_view> pieces)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status CreateJournal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // The journal record of what was added since the last Persist, as pieces to write in order:
  // its header, then the pending entries and fresh vectors in place (not copied: at tens of
  // thousands of events per step they are megabytes), then its check digest. `entries` and
  // `fresh` point into pending_entries_/pending_fresh_: valid until the next Add or
  // ClearPending (which a successful AppendJournal does), under write_mu_.
  struct PendingRecord {
    std::string header;
    std::string_view entries, fresh;
    std::string check;
    std::array<std::string_view, 4> pieces() const { return {header, entries, fresh, check}; }
  };
  // The pending record's payload length: its fixed fields, the entry ids, the fresh vectors.
  uint32_t PendingPayloadBytes() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    return static_cast<uint32_t>(16 + pending_entries_.size() * 4 +
                                 pending_fresh_.size() * sizeof(float));
  }
  PendingRecord EncodePendingRecord() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void ClearPending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status AdoptBase(const std::string& path, const Digest& digest, uint64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const FilePaths paths_;
  const IndexIdentity identity_;
  const size_t dim_;
  const Structure structure_;
  const int nprobe_;
  const double compact_fraction_;
  const uint64_t compact_min_bytes_;
  const std::shared_ptr<PublishedFileRecord> published_;

  // Serializes Add and Persist; guards what only they touch.
  mutable absl::Mutex write_mu_;
  std::unordered_map<uint64_t, uint32_t> by_hash_ ABSL_GUARDED_BY(write_mu_);
  // Further entries whose vectors share a hash with by_hash_'s (different bytes); rare.
  std::unordered_map<uint64_t, std::vector<uint32_t>> more_by_hash_ ABSL_GUARDED_BY(write_mu_);
  bool staged_ ABSL_GUARDED_BY(write_mu_) = true;
  Digest base_digest_ ABSL_GUARDED_BY(write_mu_) = {};
  uint64_t base_bytes_ ABSL_GUARDED_BY(write_mu_) = 0;
  std::pair<dev_t, ino_t> base_file_ ABSL_GUARDED_BY(write_mu_) = {};
  UniqueFd journal_fd_ ABSL_GUARDED_BY(write_mu_);
  bool journal_exists_ ABSL_GUARDED_BY(write_mu_) = false;    // for this base
  uint64_t journal_bytes_ ABSL_GUARDED_BY(write_mu_) = 0;     // its valid length
  bool journal_truncate_ ABSL_GUARDED_BY(write_mu_) = false;  // bytes past it to cut
  // Added since the last Persist (published indexes only).
  uint64_t pending_first_seq_ ABSL_GUARDED_BY(write_mu_) = 0;
  std::vector<uint32_t> pending_entries_ ABSL_GUARDED_BY(write_mu_);
  std::vector<float> pending_fresh_ ABSL_GUARDED_BY(write_mu_);

  // What searches read; written by Add (holding write_mu_ too) in short critical sections.
  mutable absl::Mutex mu_;
  std::unique_ptr<faiss::Index> index_ ABSL_GUARDED_BY(mu_);  // IndexFlatIP or IndexIVFFlat
  faiss::IndexIVFFlat* ivf_ ABSL_GUARDED_BY(mu_) = nullptr;   // index_ when trained
  std::vector<SeqList> seqs_ ABSL_GUARDED_BY(mu_);            // per entry
  std::vector<uint32_t> entry_of_seq_ ABSL_GUARDED_BY(mu_);   // [seq - 1]
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::Status FaissVectorIndex::ValidateBatch(absl::Span<const IndexedEvent> events,
                                             absl::Span<const float> vectors) const {
  if (vectors.size() != events.size() * dim_) {
    return absl::InvalidArgumentError(absl::StrCat("Add: ", events.size(), " events need ",
                                                   events.size() * dim_, " floats, got ",
                                                   vectors.size()));
  }
  const uint64_t last = LastSeq();
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].seq != last + 1 + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("Add: event ", i, " has seq ", events[i].seq, ", expected ", last + 1 + i,
                       " (seqs must continue LastSeq() ", last, " one by one)"));
    }
  }
  if (!AllFinite(vectors)) {
    for (size_t i = 0; i < events.size(); ++i) {
      if (!AllFinite(vectors.subspan(i * dim_, dim_)))
        return absl::InvalidArgumentError(
            absl::StrCat("Add: the vector of seq ", events[i].seq, " is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::Span<const float> FaissVectorIndex::EntryVector(uint32_t e, const Batch* pending,
                                                      std::vector<float>* scratch) const {
  // Called with write_mu_ held (only writers change index_) and, where index_ is read, mu_
  // shared or write_mu_ alone: both exclude a change to index_.
  const size_t committed = seqs_.size();
  if (e >= committed)
    return absl::MakeConstSpan(pending->fresh).subspan((e - committed) * dim_, dim_);
  if (ivf_ == nullptr) {
    const auto* flat = static_cast<const faiss::IndexFlat*>(index_.get());
    return absl::MakeConstSpan(flat->get_xb() + size_t{e} * dim_, dim_);
  }
  scratch->resize(dim_);
  ivf_->reconstruct(e, scratch->data());
  return *scratch;
}

std::optional<uint32_t> FaissVectorIndex::FindEntry(uint64_t hash, absl::Span<const float> v,
                                                    const Batch* pending) const {
  std::vector<float> scratch;
  auto same = [&](uint32_t e) { return AsBytes(EntryVector(e, pending, &scratch)) == AsBytes(v); };
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  if (same(it->second)) return it->second;
  auto more = more_by_hash_.find(hash);
  if (more == more_by_hash_.end()) return std::nullopt;
  for (uint32_t e : more->second) {
    if (same(e)) return e;
  }
  return std::nullopt;
}

void FaissVectorIndex::Remember(uint64_t hash, uint32_t entry) {
  auto [it, inserted] = by_hash_.try_emplace(hash, entry);
  if (!inserted) more_by_hash_[hash].push_back(entry);
}

void FaissVectorIndex::Forget(const Batch& batch) {
  // Undo Remember for the batch's new entries, newest first.
  for (size_t j = batch.fresh_hashes.size(); j-- > 0;) {
    const uint64_t h = batch.fresh_hashes[j];
    auto more = more_by_hash_.find(h);
    if (more != more_by_hash_.end()) {
      more->second.pop_back();
      if (more->second.empty()) more_by_hash_.erase(more);
    } else {
      by_hash_.erase(h);
    }
  }
}

Batch FaissVectorIndex::Resolve(uint64_t first_seq, absl::Span<const float> vectors) {
  absl::ReaderMutexLock lock(&mu_);
  Batch b;
  b.first_seq = first_seq;
  const size_t n = vectors.size() / dim_;
  b.entry_of.reserve(n);
  const uint32_t committed = static_cast<uint32_t>(seqs_.size());
  for (size_t i = 0; i < n; ++i) {
    absl::Span<const float> v = vectors.subspan(i * dim_, dim_);
    const uint64_t h = HashVector(v);
    std::optional<uint32_t> e = FindEntry(h, v, &b);
    if (!e) {
      e = committed + static_cast<uint32_t>(b.fresh_hashes.size());
      b.fresh.insert(b.fresh.end(), v.begin(), v.end());
      b.fresh_hashes.push_back(h);
      Remember(h, *e);
    }
    b.entry_of.push_back(*e);
  }
  return b;
}

absl::StatusOr<std::unique_ptr<faiss::IndexIVFFlat>> FaissVectorIndex::BuildIvf(
    const float* old, size_t old_n, const Batch& batch) const {
  const size_t fresh_n = batch.fresh_count(dim_);
  // The sample is the first entries, whatever the batch boundaries were.
  const size_t sample_n = std::min<uint64_t>(structure_.train_size, structure_.exact_below);
  std::vector<float> sample(sample_n * dim_);
  const size_t from_old = std::min(sample_n, old_n);
  std::copy_n(old, from_old * dim_, sample.begin());
  std::copy_n(batch.fresh.begin(), (sample_n - from_old) * dim_, sample.begin() + from_old * dim_);
  try {
    auto ivf = std::make_unique<faiss::IndexIVFFlat>(new faiss::IndexFlatIP(dim_), dim_,
                                                     structure_.nlist, faiss::METRIC_INNER_PRODUCT);
    ivf->own_fields = true;
    ivf->cp.seed = static_cast<int>(structure_.kmeans_seed & 0x7fffffff);
    ivf->cp.niter = static_cast<int>(structure_.kmeans_iterations);
    ivf->cp.spherical = true;             // unit centroids for an inner-product index
    ivf->cp.min_points_per_centroid = 1;  // the sample size is the caller's decision
    ivf->cp.verbose = false;
    KernelAssignIndex assigner(static_cast<idx_t>(dim_));
    ivf->clustering_index = &assigner;
    ivf->train(static_cast<idx_t>(sample_n), sample.data());
    ivf->clustering_index = nullptr;
    ivf->set_direct_map_type(faiss::DirectMap::Array);
    std::vector<idx_t> lists(std::max(old_n, fresh_n));
    AssignToLists(*ivf, old, old_n, lists.data());
    ivf->add_core(static_cast<idx_t>(old_n), old, nullptr, lists.data());
    AssignToLists(*ivf, batch.fresh.data(), fresh_n, lists.data());
    ivf->add_core(static_cast<idx_t>(fresh_n), batch.fresh.data(), nullptr, lists.data());
    spdlog::info("vector index: {} distinct vectors, switched to IVF ({} lists, trained on {})",
                 old_n + fresh_n, structure_.nlist, sample_n);
    return ivf;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training the IVF index failed: ", e.what()));
  }
}

absl::Status FaissVectorIndex::Apply(const Batch& batch) {
  const size_t fresh_n = batch.fresh_count(dim_);
  std::unique_ptr<faiss::IndexIVFFlat> converted;
  std::vector<idx_t> lists;
  {
    // Heavy work beside the serving index: searches go on meanwhile.
    absl::ReaderMutexLock lock(&mu_);
    const size_t old_n = seqs_.size();
    if (ivf_ == nullptr && old_n + fresh_n >= structure_.exact_below) {
      const auto* flat = static_cast<const faiss::IndexFlat*>(index_.get());
      ASSIGN_OR_RETURN(converted, BuildIvf(flat->get_xb(), old_n, batch));
    } else if (ivf_ != nullptr && fresh_n > 0) {
      lists.resize(fresh_n);
      AssignToLists(*ivf_, batch.fresh.data(), fresh_n, lists.data());
    }
  }
  absl::WriterMutexLock lock(&mu_);
  try {
    if (converted != nullptr) {
      ivf_ = converted.get();
      index_ = std::move(converted);
    } else if (ivf_ != nullptr) {
      if (fresh_n > 0)
        ivf_->add_core(static_cast<idx_t>(fresh_n), batch.fresh.data(), nullptr, lists.data());
    } else {
      index_->add(static_cast<idx_t>(fresh_n), batch.fresh.data());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("adding to the FAISS index failed: ", e.what()));
  }
  for (size_t i = 0; i < batch.entry_of.size(); ++i) {
    const uint32_t e = batch.entry_of[i];
    if (e == seqs_.size()) seqs_.emplace_back();
    seqs_[e].push_back(batch.first_seq + i);
  }
  entry_of_seq_.insert(entry_of_seq_.end(), batch.entry_of.begin(), batch.entry_of.end());
  last_seq_ += batch.entry_of.size();
  return absl::OkStatus();
}

void FaissVectorIndex::AddPending(const Batch& batch) {
  if (staged_) return;  // written whole by Publish
  if (pending_entries_.empty()) pending_first_seq_ = batch.first_seq;
  pending_entries_.insert(pending_entries_.end(), batch.entry_of.begin(), batch.entry_of.end());
  pending_fresh_.insert(pending_fresh_.end(), batch.fresh.begin(), batch.fresh.end());
}

absl::Status FaissVectorIndex::Add(absl::Span<const IndexedEvent> events,
                                   absl::Span<const float> vectors) {
  absl::MutexLock write(&write_mu_);
  RETURN_IF_ERROR(ValidateBatch(events, vectors));
  if (events.empty()) return absl::OkStatus();
  Batch batch = Resolve(events.front().seq, vectors);
  if (absl::Status st = Apply(batch); !st.ok()) {
    Forget(batch);
    return st;
  }
  AddPending(batch);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Search.

absl::StatusOr<std::vector<VectorHit>> FaissVectorIndex::SearchRangeExactly(
    absl::Span<const float> query, size_t k, const SearchFilter& filter) const {
  std::vector<VectorHit> scored;
  if (filter.min_seq > last_seq_) return scored;
  const uint64_t from = std::max<uint64_t>(1, filter.min_seq);
  const uint64_t to = std::min(filter.max_seq, last_seq_);
  std::unordered_map<uint32_t, float> score_of;  // entry -> score, each computed once
  std::vector<float> v(dim_);
  scored.reserve(to - from + 1);
  for (uint64_t seq = from; seq <= to; ++seq) {
    const uint32_t e = entry_of_seq_[seq - 1];
    auto [it, fresh] = score_of.try_emplace(e, 0.f);
    if (fresh) {
      ivf_->reconstruct(e, v.data());
      Dots(query.data(), v.data(), 1, dim_, &it->second);
    }
    scored.push_back(VectorHit{seq, it->second});
  }
  if (filter.fields.empty()) {
    const size_t n = std::min(k, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + n, scored.end(), HitOrder);
    scored.resize(n);
    return scored;
  }
  // Best first, asking about fields only until k pass.
  std::sort(scored.begin(), scored.end(), HitOrder);
  std::vector<VectorHit> hits;
  for (const VectorHit& h : scored) {
    if (hits.size() == k) break;
    absl::StatusOr<bool> ok = filter.accept_fields(h.seq);
    if (!ok.ok()) return ok.status();
    if (*ok) hits.push_back(h);
  }
  return hits;
}

void FaissVectorIndex::Scan(absl::Span<const float> query, int nprobe, const SeqRange* range,
                            Candidates* out) const {
  out->all.clear();
  out->ordered = 0;
  std::vector<float> scores;
  auto take = [&](const float* rows, const idx_t* ids, size_t n) {
    scores.resize(n);
    Dots(query.data(), rows, n, dim_, scores.data());
    for (size_t i = 0; i < n; ++i) {
      const size_t entry = ids != nullptr ? static_cast<size_t>(ids[i]) : i;
      if (range == nullptr || range->Contains(entry))
        out->all.push_back({scores[i], static_cast<uint32_t>(entry)});
    }
  };
  if (ivf_ == nullptr) {
    take(static_cast<const faiss::IndexFlat*>(index_.get())->get_xb(), nullptr, seqs_.size());
    return;
  }
  const faiss::InvertedLists& lists = *ivf_->invlists;
  const size_t nlist = ivf_->nlist;
  std::vector<float> coarse(nlist);
  Dots(query.data(), static_cast<const faiss::IndexFlat*>(ivf_->quantizer)->get_xb(), nlist, dim_,
       coarse.data());
  std::vector<uint32_t> order(nlist);
  for (uint32_t l = 0; l < nlist; ++l) order[l] = l;
  const size_t probe = std::min<size_t>(nlist, static_cast<size_t>(nprobe));
  std::partial_sort(order.begin(), order.begin() + probe, order.end(), [&](uint32_t a, uint32_t b) {
    return coarse[a] != coarse[b] ? coarse[a] > coarse[b] : a < b;
  });
  for (size_t p = 0; p < probe; ++p) {
    const size_t l = order[p];
    const size_t n = lists.list_size(l);
    if (n == 0) continue;
    faiss::InvertedLists::ScopedCodes codes(&lists, l);
    faiss::InvertedLists::ScopedIds ids(&lists, l);
    take(reinterpret_cast<const float*>(codes.get()), ids.get(), n);
  }
}

absl::StatusOr<bool> FaissVectorIndex::Collect(const Candidates& c, size_t n, size_t k,
                                               const SearchFilter& filter,
                                               std::unordered_map<uint64_t, bool>* accepted,
                                               std::vector<VectorHit>* hits) const {
  hits->clear();
  // Candidates come best first, so hits are appended in non-increasing score order.
  for (size_t i = 0; i < n; ++i) {
    const float score = c.all[i].score;
    if (hits->size() >= k && score < (*hits)[k - 1].score) return true;
    const SeqList& seqs = seqs_[c.all[i].entry];
    size_t taken = 0;  // later seqs of this entry tie with these and lose on seq order
    for (auto it = std::lower_bound(seqs.begin(), seqs.end(), filter.min_seq);
         it != seqs.end() && *it <= filter.max_seq && taken < k; ++it) {
      if (!filter.fields.empty()) {
        auto [cached, fresh] = accepted->try_emplace(*it, false);
        if (fresh) {
          absl::StatusOr<bool> ok = filter.accept_fields(*it);
          if (!ok.ok()) return ok.status();
          cached->second = *ok;
        }
        if (!cached->second) continue;
      }
      hits->push_back(VectorHit{*it, score});
      ++taken;
    }
  }
  return false;
}

absl::StatusOr<std::vector<VectorHit>> FaissVectorIndex::Search(absl::Span<const float> query,
                                                                size_t k,
                                                                const SearchFilter& filter) const {
  if (query.size() != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("Search: the query has ", query.size(), " floats, the index ", dim_));
  }
  if (!AllFinite(query)) return absl::InvalidArgumentError("Search: the query is not finite");
  if (!filter.fields.empty() && !filter.accept_fields) {
    return absl::InvalidArgumentError("Search: the filter has fields but no accept_fields");
  }
  std::vector<VectorHit> hits;
  if (k == 0 || filter.min_seq > filter.max_seq) return hits;
  absl::ReaderMutexLock lock(&mu_);
  const size_t entries = seqs_.size();
  if (entries == 0) return hits;
  const bool ranged = filter.min_seq > 1 || filter.max_seq != std::numeric_limits<uint64_t>::max();
  const int nlist = ivf_ != nullptr ? static_cast<int>(ivf_->nlist) : 1;
  int nprobe = std::min(nprobe_, nlist);
  if (ranged && ivf_ != nullptr) {
    const uint64_t in_range =
        std::min(filter.max_seq, last_seq_) - std::min(filter.min_seq, last_seq_ + 1) + 1;
    // Scoring a range's events one by one costs a few times a list entry's scan.
    if (in_range <= std::max<uint64_t>(kExactRangeMin, entries * nprobe / nlist / 4))
      return SearchRangeExactly(query, k, filter);
  }
  SeqRange in_range(seqs_, filter.min_seq, filter.max_seq);
  std::unordered_map<uint64_t, bool> accepted;
  Candidates c;
  while (true) {
    Scan(query, nprobe, ranged ? &in_range : nullptr, &c);
    // Expand more and more of the scanned entries until the answer is decided...
    bool decided = false;
    for (size_t want = std::max(k, kMinCandidates);; want *= 2) {
      c.OrderPrefix(want);
      ASSIGN_OR_RETURN(decided,
                       Collect(c, std::min(want, c.all.size()), k, filter, &accepted, &hits));
      if (decided || want >= c.all.size()) break;
    }
    // ...then probe more lists, up to all of them.
    if (decided || nprobe >= nlist) break;
    nprobe = std::min(nlist, nprobe * 2);
  }
  std::stable_sort(hits.begin(), hits.end(), HitOrder);
  if (hits.size() > k) hits.resize(k);
  return hits;
}

// ---------------------------------------------------------------------------------------------
// Persistence.

std::string FaissVectorIndex::EncodeBaseMeta() const {
  std::string m;
  m.append(kBaseMagic, sizeof kBaseMagic);
  Put<uint32_t>(&m, kFormatVersion);
  Put<uint32_t>(&m, 0);
  Put<uint64_t>(&m, 0);  // total length, filled in by WriteBase
  Put<uint32_t>(&m, static_cast<uint32_t>(identity_.embedder_id.size()));
  m.append(identity_.embedder_id);
  Put<uint32_t>(&m, static_cast<uint32_t>(identity_.dimension));
  Put<uint64_t>(&m, structure_.exact_below);
  Put<uint32_t>(&m, structure_.nlist);
  Put<uint64_t>(&m, structure_.train_size);
  Put<uint64_t>(&m, structure_.kmeans_seed);
  Put<uint32_t>(&m, structure_.kmeans_iterations);
  Put<uint64_t>(&m, last_seq_);
  Put<uint64_t>(&m, seqs_.size());
  Put<uint32_t>(&m, ivf_ != nullptr ? kKindIvf : kKindExact);
  m.reserve(m.size() + seqs_.size() * 4 + last_seq_ * 8);
  for (const SeqList& s : seqs_) {
    Put<uint32_t>(&m, static_cast<uint32_t>(s.size()));
    m.append(reinterpret_cast<const char*>(s.data()), s.size() * sizeof(uint64_t));
  }
  return m;
}

absl::StatusOr<std::pair<Digest, uint64_t>> FaissVectorIndex::WriteBase(
    const std::string& path) const {
  // Serializing reads the index: searches continue (shared), Add waits (write_mu_ is held).
  absl::ReaderMutexLock lock(&mu_);
  std::string meta = EncodeBaseMeta();
  CountingWriter counter;
  try {
    faiss::write_index(index_.get(), &counter);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serializing the FAISS index failed: ", e.what()));
  }
  const uint64_t total = meta.size() + sizeof(uint64_t) + counter.bytes + sizeof(Digest);
  std::memcpy(meta.data() + 16, &total, sizeof total);
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  HashingFileWriter out(fd.get(), path);
  out.Append(meta);
  std::string len;
  Put<uint64_t>(&len, counter.bytes);
  out.Append(len);
  try {
    faiss::write_index(index_.get(), &out);
  } catch (const std::exception& e) {
    RETURN_IF_ERROR(out.status());
    return absl::InternalError(absl::StrCat("serializing the FAISS index failed: ", e.what()));
  }
  ASSIGN_OR_RETURN(Digest digest, out.FinishWithDigest());
  RETURN_IF_ERROR(SyncFd(fd.get(), path, /*data_only=*/false));
  return std::make_pair(digest, total);
}

absl::Status FaissVectorIndex::CheckStillPublished() const {
  absl::StatusOr<struct stat> st = StatPath(paths_.base);
  if (absl::IsNotFound(st.status())) {
    return absl::NotFoundError(
        absl::StrCat("the published vector index ", paths_.base, " was removed"));
  }
  if (!st.ok()) return st.status();
  if (std::make_pair(st->st_dev, st->st_ino) != base_file_) {
    return absl::FailedPreconditionError(absl::StrCat("another vector index was published at ",
                                                      paths_.base, " since this one was opened"));
  }
  return absl::OkStatus();
}

absl::Status FaissVectorIndex::AdoptBase(const std::string& path, const Digest& digest,
                                         uint64_t bytes) {
  ASSIGN_OR_RETURN(struct stat st, StatPath(path));
  base_digest_ = digest;
  base_bytes_ = bytes;
  base_file_ = {st.st_dev, st.st_ino};
  journal_fd_.Reset();
  journal_exists_ = false;
  journal_bytes_ = 0;
  journal_truncate_ = false;
  published_->Set(st.st_dev, st.st_ino);
  return absl::OkStatus();
}

absl::Status FaissVectorIndex::Compact() {
  const absl::Time start = absl::Now();
  const std::string tmp = JoinPath(paths_.dir, UniqueName("vectors.tmp-"));
  absl::StatusOr<std::pair<Digest, uint64_t>> written = WriteBase(tmp);
  if (!written.ok() || ::rename(tmp.c_str(), paths_.base.c_str()) != 0) {
    absl::Status st = written.ok()
                          ? ErrnoStatus(absl::StrCat("rename ", tmp, " to ", paths_.base), errno)
                          : written.status();
    (void)RemoveIfExists(tmp);
    return st;
  }
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  // The old journal extends the old base: stale from here on, whether or not this succeeds.
  RETURN_IF_ERROR(AdoptBase(paths_.base, written->first, written->second));
  RETURN_IF_ERROR(RemoveIfExists(paths_.journal));
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  ClearPending();
  spdlog::info("vector index {}: compacted into a new base of {} MB in {}", paths_.dir,
               written->second >> 20, absl::FormatDuration(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status FaissVectorIndex::CreateJournal() {
  std::string header(kJournalMagic, sizeof kJournalMagic);
  Put<uint32_t>(&header, kFormatVersion);
  Put<uint32_t>(&header, 0);
  header.append(reinterpret_cast<const char*>(base_digest_.data()), base_digest_.size());
  Put<uint64_t>(&header, ShortDigest(header));
  RETURN_IF_ERROR(WriteFileAtomic(paths_.journal, header));
  journal_exists_ = true;
  journal_bytes_ = header.size();
  journal_truncate_ = false;
  journal_fd_.Reset();
  return absl::OkStatus();
}

FaissVectorIndex::PendingRecord FaissVectorIndex::EncodePendingRecord() const {
  const uint32_t events = static_cast<uint32_t>(pending_entries_.size());
  const uint32_t fresh = static_cast<uint32_t>(pending_fresh_.size() / dim_);
  const uint32_t payload = PendingPayloadBytes();
  PendingRecord r;
  Put<uint32_t>(&r.header, kRecordMagic);
  Put<uint32_t>(&r.header, payload);
  Put<uint32_t>(&r.header, payload ^ kRecordLengthMask);
  Put<uint64_t>(&r.header, pending_first_seq_);
  Put<uint32_t>(&r.header, events);
  Put<uint32_t>(&r.header, fresh);
  r.entries = std::string_view(reinterpret_cast<const char*>(pending_entries_.data()),
                               size_t{events} * 4);
  r.fresh = AsBytes(pending_fresh_);
  Put<uint64_t>(&r.check, ShortDigest({r.header, r.entries, r.fresh}));
  return r;
}

absl::Status FaissVectorIndex::AppendJournal(absl::Span<const std::string_view> pieces) {
  if (!journal_exists_) RETURN_IF_ERROR(CreateJournal());
  if (!journal_fd_.valid()) {
    ASSIGN_OR_RETURN(journal_fd_, OpenFile(paths_.journal, O_WRONLY));
  }
  const int fd = journal_fd_.get();
  if (journal_truncate_) {
    if (::ftruncate(fd, static_cast<off_t>(journal_bytes_)) != 0)
      return ErrnoStatus(absl::StrCat("truncate ", paths_.journal), errno);
    journal_truncate_ = false;
  }
  // A failed append leaves bytes past journal_bytes_: cut them before the next one.
  journal_truncate_ = true;
  size_t done = 0;
  for (std::string_view piece : pieces) {
    while (!piece.empty()) {
      const off_t at = static_cast<off_t>(journal_bytes_ + done);
      ssize_t n = ::pwrite(fd, piece.data(), piece.size(), at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(absl::StrCat("write ", paths_.journal), errno);
      piece.remove_prefix(static_cast<size_t>(n));
      done += static_cast<size_t>(n);
    }
  }
  RETURN_IF_ERROR(SyncFd(fd, paths_.journal, /*data_only=*/true));
  journal_truncate_ = false;
  journal_bytes_ += done;
  ClearPending();
  return absl::OkStatus();
}

void FaissVectorIndex::ClearPending() {
  pending_entries_.clear();
  pending_fresh_.clear();
}

absl::Status FaissVectorIndex::Persist() {
  absl::MutexLock write(&write_mu_);
  if (staged_) return absl::OkStatus();  // written whole by Publish
  RETURN_IF_ERROR(CheckStillPublished());
  if (pending_entries_.empty()) return absl::OkStatus();
  const uint64_t limit = std::max<uint64_t>(compact_min_bytes_,
                                            static_cast<uint64_t>(compact_fraction_ * base_bytes_));
  const uint64_t journal_after = (journal_exists_ ? journal_bytes_ : kJournalHeaderSize) +
                                 kRecordHeaderSize + PendingPayloadBytes() + kRecordCheckSize;
  if (journal_after > limit) return Compact();
  const PendingRecord record = EncodePendingRecord();  // only now: its digest reads every byte
  return AppendJournal(record.pieces());
}

absl::Status FaissVectorIndex::PublishFrom(const std::string& staged_path) {
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<std::pair<Digest, uint64_t>> written = WriteBase(staged_path);
  if (!written.ok() || ::rename(staged_path.c_str(), paths_.base.c_str()) != 0) {
    absl::Status st =
        written.ok() ? ErrnoStatus(absl::StrCat("rename ", staged_path, " to ", paths_.base), errno)
                     : written.status();
    (void)RemoveIfExists(staged_path);
    return st;
  }
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  staged_ = false;
  RETURN_IF_ERROR(AdoptBase(paths_.base, written->first, written->second));
  // The previous index's journal extends the previous base: remove it.
  RETURN_IF_ERROR(RemoveIfExists(paths_.journal));
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  ClearPending();
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Loading.

// The parsed, checked container of a base file.
struct BaseFile {
  IndexIdentity identity;
  Structure structure;
  std::string_view body;  // from the identity to the digest
  Digest digest;
};

absl::StatusOr<BaseFile> CheckBaseFile(std::string_view data, const std::string& path) {
  auto damaged = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("vector index ", path, " is damaged: ", what));
  };
  if (data.empty()) return damaged("the file is empty");
  if (data.size() < kBaseHeaderSize + sizeof(Digest)) {
    return damaged(absl::StrCat("the file is too short (", data.size(), " bytes)"));
  }
  if (std::memcmp(data.data(), kBaseMagic, sizeof kBaseMagic) != 0)
    return damaged("bad magic (not a snapledger vector index file)");
  uint32_t version;
  uint64_t total;
  std::memcpy(&version, data.data() + 8, sizeof version);
  std::memcpy(&total, data.data() + 16, sizeof total);
  if (version != kFormatVersion)
    return damaged(absl::StrCat("unsupported format version ", version));
  if (total != data.size()) {
    return damaged(absl::StrCat("the header says ", total, " bytes, the file has ", data.size(),
                                data.size() < total ? " (truncated)" : ""));
  }
  BaseFile f;
  std::memcpy(f.digest.data(), data.data() + data.size() - sizeof(Digest), sizeof(Digest));
  if (Sha256::Of(data.substr(0, data.size() - sizeof(Digest))) != f.digest)
    return damaged("checksum mismatch (the contents changed after they were written)");
  ByteReader r(data.substr(kBaseHeaderSize, data.size() - kBaseHeaderSize - sizeof(Digest)),
               absl::StrCat("vector index ", path));
  uint32_t id_len, dimension;
  std::string_view id;
  RETURN_IF_ERROR(r.Get(&id_len, "embedder id length"));
  RETURN_IF_ERROR(r.Bytes(id_len, &id, "embedder id"));
  RETURN_IF_ERROR(r.Get(&dimension, "dimension"));
  f.identity = {std::string(id), static_cast<int>(dimension)};
  RETURN_IF_ERROR(r.Get(&f.structure.exact_below, "exact_below"));
  RETURN_IF_ERROR(r.Get(&f.structure.nlist, "nlist"));
  RETURN_IF_ERROR(r.Get(&f.structure.train_size, "train_size"));
  RETURN_IF_ERROR(r.Get(&f.structure.kmeans_seed, "kmeans_seed"));
  RETURN_IF_ERROR(r.Get(&f.structure.kmeans_iterations, "kmeans_iterations"));
  f.body = data.substr(kBaseHeaderSize + r.pos(),
                       data.size() - kBaseHeaderSize - r.pos() - sizeof(Digest));
  return f;
}

absl::Status FaissVectorIndex::LoadBase(std::string_view body, const std::string& what,
                                        const Digest& digest, uint64_t base_bytes,
                                        const struct stat& st) {
  absl::MutexLock write(&write_mu_);
  absl::WriterMutexLock lock(&mu_);
  auto bad = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(what, " is damaged: ", msg));
  };
  ByteReader r(body, what);
  uint64_t last_seq, entries;
  uint32_t kind = ~0u;
  RETURN_IF_ERROR(r.Get(&last_seq, "last seq"));
  RETURN_IF_ERROR(r.Get(&entries, "entry count"));
  RETURN_IF_ERROR(r.Get(&kind, "index kind"));
  if (entries > last_seq || last_seq > body.size() / sizeof(uint64_t))
    return bad(absl::StrCat(entries, " entries for ", last_seq, " seqs"));
  std::vector<bool> seen(last_seq + 1, false);
  seqs_.resize(entries);
  entry_of_seq_.assign(last_seq, 0);
  for (uint64_t e = 0; e < entries; ++e) {
    uint32_t n;
    std::string_view bytes;
    RETURN_IF_ERROR(r.Get(&n, "seq count"));
    RETURN_IF_ERROR(r.Bytes(size_t{n} * sizeof(uint64_t), &bytes, "seq list"));
    if (n == 0) return bad(absl::StrCat("entry ", e, " has no seqs"));
    SeqList& s = seqs_[e];
    s.resize(n);
    std::memcpy(s.data(), bytes.data(), bytes.size());
    for (uint32_t i = 0; i < n; ++i) {
      if (s[i] == 0 || s[i] > last_seq || seen[s[i]] || (i > 0 && s[i] <= s[i - 1]))
        return bad(absl::StrCat("entry ", e, " lists seq ", s[i], " out of order or twice"));
      seen[s[i]] = true;
      entry_of_seq_[s[i] - 1] = static_cast<uint32_t>(e);
    }
    if (e > 0 && s.front() <= seqs_[e - 1].front())
      return bad(absl::StrCat("entry ", e, " is out of first-seq order"));
  }
  if (std::count(seen.begin() + 1, seen.end(), true) != static_cast<ptrdiff_t>(last_seq))
    return bad(absl::StrCat("the seq lists do not cover 1..", last_seq));
  uint64_t faiss_len;
  std::string_view faiss_bytes;
  RETURN_IF_ERROR(r.Get(&faiss_len, "FAISS index length"));
  RETURN_IF_ERROR(r.Bytes(faiss_len, &faiss_bytes, "FAISS index"));
  if (r.remaining() != 0) return bad(absl::StrCat(r.remaining(), " unexpected trailing bytes"));
  std::unique_ptr<faiss::Index> index;
  try {
    SpanReader reader(faiss_bytes);
    index.reset(faiss::read_index(&reader));
  } catch (const std::exception& e) {
    return bad(absl::StrCat("FAISS cannot read its index: ", e.what()));
  }
  if (index->d != static_cast<idx_t>(dim_) || index->metric_type != faiss::METRIC_INNER_PRODUCT ||
      index->ntotal != static_cast<idx_t>(entries))
    return bad("the FAISS index does not match its dimension, metric or entry count");
  auto* ivf = dynamic_cast<faiss::IndexIVFFlat*>(index.get());
  if (kind == kKindIvf) {
    auto* quantizer = ivf == nullptr ? nullptr : dynamic_cast<faiss::IndexFlat*>(ivf->quantizer);
    if (quantizer == nullptr || ivf->nlist != structure_.nlist ||
        quantizer->ntotal != static_cast<idx_t>(ivf->nlist) ||
        ivf->direct_map.type != faiss::DirectMap::Array || entries < structure_.exact_below)
      return bad("the FAISS index is not the IVF index its header describes");
  } else if (kind != kKindExact || dynamic_cast<faiss::IndexFlatIP*>(index.get()) == nullptr ||
             entries >= structure_.exact_below) {
    return bad("the FAISS index is not the exact index its header describes");
  }
  // Room to grow: FAISS reads every list at its exact size, so the first Add after opening
  // would otherwise copy every list it touches (~the whole index) while searches wait.
  if (auto* lists =
          dynamic_cast<faiss::ArrayInvertedLists*>(ivf != nullptr ? ivf->invlists : nullptr)) {
    for (size_t l = 0; l < lists->nlist; ++l) {
      const size_t room = lists->ids[l].size() + lists->ids[l].size() / 8 + 64;
      lists->ids[l].reserve(room);
      lists->codes[l].reserve(room * lists->code_size);
    }
    ivf->direct_map.array.reserve(entries + entries / 8);
  }
  seqs_.reserve(entries + entries / 8);
  entry_of_seq_.reserve(last_seq + last_seq / 8);
  index_ = std::move(index);
  ivf_ = kind == kKindIvf ? ivf : nullptr;
  last_seq_ = last_seq;
  base_digest_ = digest;
  base_bytes_ = base_bytes;
  base_file_ = {st.st_dev, st.st_ino};
  staged_ = false;
  return RebuildHashes();
}

absl::Status FaissVectorIndex::RebuildHashes() {
  // Where every entry's vector lies inside FAISS (no copies), hashed on all threads, then
  // registered in entry order.
  const size_t n = seqs_.size();
  std::vector<const float*> rows(n, nullptr);
  if (ivf_ == nullptr) {
    const float* xb = static_cast<const faiss::IndexFlat*>(index_.get())->get_xb();
    for (size_t e = 0; e < n; ++e) rows[e] = xb + e * dim_;
  } else {
    const faiss::InvertedLists& lists = *ivf_->invlists;
    for (size_t l = 0; l < ivf_->nlist; ++l) {
      const float* codes = reinterpret_cast<const float*>(lists.get_codes(l));
      const idx_t* ids = lists.get_ids(l);
      for (size_t j = 0; j < lists.list_size(l); ++j) {
        if (ids[j] < 0 || static_cast<size_t>(ids[j]) >= n || rows[ids[j]] != nullptr)
          return absl::DataLossError(absl::StrCat("vector index ", paths_.base,
                                                  " is damaged: list ", l, " holds entry ", ids[j],
                                                  " out of range or twice"));
        rows[ids[j]] = codes + j * dim_;
      }
    }
  }
  std::vector<uint64_t> hashes(n);
  const size_t threads =
      std::clamp<size_t>(n / 65536, 1, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> helpers;
  auto hash_range = [&](size_t from, size_t to) {
    for (size_t e = from; e < to; ++e) hashes[e] = HashVector(absl::MakeConstSpan(rows[e], dim_));
  };
  for (size_t t = 1; t < threads; ++t)
    helpers.emplace_back(hash_range, n * t / threads, n * (t + 1) / threads);
  hash_range(0, n / threads);
  for (std::thread& h : helpers) h.join();
  by_hash_.reserve(n + n / 8);
  for (uint32_t e = 0; e < n; ++e) {
    if (by_hash_.count(hashes[e]) != 0) {  // a shared hash: compare bytes (rare)
      if (std::optional<uint32_t> twin =
              FindEntry(hashes[e], absl::MakeConstSpan(rows[e], dim_), nullptr)) {
        return absl::DataLossError(absl::StrCat("vector index ", paths_.base,
                                                " is damaged: entries ", *twin, " and ", e,
                                                " hold the same vector"));
      }
    }
    Remember(hashes[e], e);
  }
  return absl::OkStatus();
}

absl::Status FaissVectorIndex::ReplayJournal(std::string_view data, const std::string& what) {
  absl::MutexLock write(&write_mu_);
  auto bad = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(what, " is damaged: ", msg));
  };
  if (data.size() < kJournalHeaderSize) {
    // The header is written whole (temporary file + rename); a short one is damage.
    return bad(absl::StrCat("the file is too short (", data.size(), " bytes)"));
  }
  uint64_t check;
  std::memcpy(&check, data.data() + kJournalHeaderSize - 8, sizeof check);
  if (std::memcmp(data.data(), kJournalMagic, sizeof kJournalMagic) != 0 ||
      ShortDigest(data.substr(0, kJournalHeaderSize - 8)) != check)
    return bad("bad header (magic or checksum)");
  uint32_t version;
  std::memcpy(&version, data.data() + 8, sizeof version);
  if (version != kFormatVersion) return bad(absl::StrCat("unsupported version ", version));
  if (std::memcmp(data.data() + 16, base_digest_.data(), base_digest_.size()) != 0) {
    spdlog::info("{} extends another base (left by an interrupted compaction); ignored", what);
    return absl::OkStatus();
  }
  size_t pos = kJournalHeaderSize;
  while (pos < data.size()) {
    std::string_view rest = data.substr(pos);
    auto torn = [&](std::string_view why) {
      spdlog::warn("{}: the last record (at offset {}) {}; ignored, its events will be re-added",
                   what, pos, why);
      journal_exists_ = true;
      journal_bytes_ = pos;
      journal_truncate_ = true;
      return absl::OkStatus();
    };
    if (rest.find_first_not_of('\0') == std::string_view::npos)
      return torn("was never written (zero bytes)");
    if (rest.size() < kRecordHeaderSize) return torn("is cut short");
    uint32_t magic, len, len_check;
    std::memcpy(&magic, rest.data(), 4);
    std::memcpy(&len, rest.data() + 4, 4);
    std::memcpy(&len_check, rest.data() + 8, 4);
    if (magic != kRecordMagic || (len ^ kRecordLengthMask) != len_check)
      return bad(absl::StrCat("bad record header at offset ", pos));
    if (rest.size() < kRecordHeaderSize + size_t{len} + kRecordCheckSize)
      return torn("is cut short");
    std::memcpy(&check, rest.data() + kRecordHeaderSize + len, sizeof check);
    if (ShortDigest(rest.substr(0, kRecordHeaderSize + len)) != check)
      return bad(absl::StrCat("checksum mismatch in the record at offset ", pos));
    ByteReader r(rest.substr(kRecordHeaderSize, len), absl::StrCat(what, " record at ", pos));
    Batch b;
    uint32_t events, fresh;
    RETURN_IF_ERROR(r.Get(&b.first_seq, "first seq"));
    RETURN_IF_ERROR(r.Get(&events, "event count"));
    RETURN_IF_ERROR(r.Get(&fresh, "new entry count"));
    std::string_view ids, vectors;
    RETURN_IF_ERROR(r.Bytes(size_t{events} * 4, &ids, "entry ids"));
    RETURN_IF_ERROR(r.Bytes(size_t{fresh} * dim_ * sizeof(float), &vectors, "vectors"));
    if (r.remaining() != 0 || b.first_seq != LastSeq() + 1)
      return bad(absl::StrCat("the record at offset ", pos, " does not continue seq ", LastSeq()));
    b.entry_of.resize(events);
    std::memcpy(b.entry_of.data(), ids.data(), ids.size());
    b.fresh.resize(size_t{fresh} * dim_);
    std::memcpy(b.fresh.data(), vectors.data(), vectors.size());
    // Entry ids must be existing ones, or the next new one in order.
    uint32_t next = static_cast<uint32_t>(EntryCount());
    const uint64_t limit = uint64_t{next} + fresh;
    for (uint32_t e : b.entry_of) {
      if (e > next || e >= limit)
        return bad(absl::StrCat("the record at offset ", pos, " names entry ", e, " out of order"));
      if (e == next) ++next;
    }
    if (next != limit) return bad(absl::StrCat("the record at offset ", pos, " misses entries"));
    {
      absl::ReaderMutexLock lock(&mu_);
      for (size_t j = 0; j < fresh; ++j) {
        absl::Span<const float> v = absl::MakeConstSpan(b.fresh).subspan(j * dim_, dim_);
        const uint64_t h = HashVector(v);
        if (FindEntry(h, v, &b)) {
          Forget(b);
          return bad(absl::StrCat("the record at offset ", pos, " repeats a known vector"));
        }
        b.fresh_hashes.push_back(h);
        Remember(h, limit - fresh + j);
      }
    }
    if (absl::Status st = Apply(b); !st.ok()) {
      Forget(b);
      return st;
    }
    pos += kRecordHeaderSize + len + kRecordCheckSize;
  }
  journal_exists_ = true;
  journal_bytes_ = pos;
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The store.

FaissVectorStore::FaissVectorStore(std::string dir, EmbeddedIndexOptions options)
    : dir_(std::move(dir)),
      options_(options),
      published_(std::make_shared<PublishedFileRecord>()) {}

FaissVectorStore::~FaissVectorStore() = default;

absl::StatusOr<std::unique_ptr<FaissVectorStore>> FaissVectorStore::Open(
    std::string dir, EmbeddedIndexOptions options) {
  const EmbeddedIndexOptions& o = options;
  if (o.nlist < 1 || o.exact_below < static_cast<size_t>(o.nlist) ||
      o.train_size < static_cast<size_t>(o.nlist) || o.nprobe < 1 || o.kmeans_iterations < 1 ||
      !(o.compact_fraction > 0) || o.exact_below > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedded vector index options: need nlist >= 1, exact_below and train_size >= nlist, "
        "nprobe >= 1, kmeans_iterations >= 1, compact_fraction > 0; got nlist ",
        o.nlist, ", exact_below ", o.exact_below, ", train_size ", o.train_size, ", nprobe ",
        o.nprobe, ", kmeans_iterations ", o.kmeans_iterations, ", compact_fraction ",
        o.compact_fraction));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create directory ", dir, ": ", ec.message()));
  return std::unique_ptr<FaissVectorStore>(new FaissVectorStore(std::move(dir), options));
}

absl::StatusOr<VectorIndexPtr> FaissVectorStore::OpenPublished(const IndexIdentity& want) {
  absl::MutexLock lock(&mu_);
  const std::string base = JoinPath(dir_, kVectorsBaseFile);
  absl::StatusOr<struct stat> st = StatPath(base);
  if (absl::IsNotFound(st.status()))
    return absl::NotFoundError(absl::StrCat("no published vector index at ", base));
  if (!st.ok()) return st.status();
  ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(base));
  ASSIGN_OR_RETURN(BaseFile parsed, CheckBaseFile(file.data(), base));
  if (!(parsed.identity == want)) {
    return absl::FailedPreconditionError(
        absl::StrCat("vector index ", base, " was built with ", DescribeIdentity(parsed.identity),
                     ", not ", DescribeIdentity(want), "; it must be rebuilt"));
  }
  const Structure& s = parsed.structure;
  if (s.nlist < 1 || s.exact_below < s.nlist || s.train_size < s.nlist || s.kmeans_iterations < 1 ||
      parsed.identity.dimension < 1) {
    return absl::DataLossError(
        absl::StrCat("vector index ", base, " is damaged: inconsistent index parameters"));
  }
  FilePaths paths{dir_, base, JoinPath(dir_, kVectorsJournalFile)};
  auto index = std::make_unique<FaissVectorIndex>(paths, parsed.identity, parsed.structure,
                                                  options_.nprobe, options_, published_);
  RETURN_IF_ERROR(index->LoadBase(parsed.body, absl::StrCat("vector index ", base), parsed.digest,
                                  file.data().size(), *st));
  absl::StatusOr<MappedFile> journal = MappedFile::Open(paths.journal);
  if (journal.ok()) {
    RETURN_IF_ERROR(index->ReplayJournal(journal->data(),
                                         absl::StrCat("vector index journal ", paths.journal)));
  } else if (!absl::IsNotFound(journal.status())) {
    return journal.status();
  }
  published_->Set(st->st_dev, st->st_ino);
  return VectorIndexPtr(std::move(index));
}

absl::Status FaissVectorStore::RemoveLeftovers() {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus(absl::StrCat("opendir ", dir_), errno);
  std::vector<std::string> doomed;
  while (struct dirent* ent = ::readdir(d)) {
    std::string_view name = ent->d_name;
    if (name.starts_with("vectors.staged-") || name.starts_with("vectors.tmp-"))
      doomed.push_back(JoinPath(dir_, ent->d_name));
  }
  ::closedir(d);
  for (const std::string& path : doomed) {
    spdlog::info("vector index: removing {} (left by an interrupted rebuild or compaction)", path);
    RETURN_IF_ERROR(RemoveIfExists(path));
  }
  return absl::OkStatus();
}

absl::StatusOr<VectorIndexPtr> FaissVectorStore::CreateStaged(const IndexIdentity& identity) {
  absl::MutexLock lock(&mu_);
  if (identity.dimension < 1 || identity.embedder_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateStaged: bad identity ", DescribeIdentity(identity)));
  }
  // The directory may have been deleted behind the node's back (that is why it rebuilds).
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
  RETURN_IF_ERROR(RemoveLeftovers());
  FilePaths paths{dir_, JoinPath(dir_, kVectorsBaseFile), JoinPath(dir_, kVectorsJournalFile)};
  return VectorIndexPtr(std::make_unique<FaissVectorIndex>(paths, identity, StructureOf(options_),
                                                           options_.nprobe, options_, published_));
}

absl::Status FaissVectorStore::Publish(VectorIndex& staged) {
  absl::MutexLock lock(&mu_);
  auto* index = dynamic_cast<FaissVectorIndex*>(&staged);
  if (index == nullptr || index->dir() != dir_ || !index->staged()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Publish: not a staged index of the vector store at ", dir_));
  }
  return index->PublishFrom(JoinPath(dir_, UniqueName("vectors.staged-")));
}

absl::Status FaissVectorStore::Drop() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(RemoveIfExists(JoinPath(dir_, kVectorsBaseFile)));
  RETURN_IF_ERROR(RemoveIfExists(JoinPath(dir_, kVectorsJournalFile)));
  RETURN_IF_ERROR(RemoveLeftovers());
  return SyncDir(dir_);
}

absl::Status FaissVectorStore::CheckPublished() {
  std::optional<std::pair<dev_t, ino_t>> known = published_->Get();
  if (!known) return absl::OkStatus();
  const std::string base = JoinPath(dir_, kVectorsBaseFile);
  absl::StatusOr<struct stat> st = StatPath(base);
  if (absl::IsNotFound(st.status()))
    return absl::NotFoundError(absl::StrCat("the published vector index ", base, " was removed"));
  if (!st.ok()) return st.status();
  if (std::make_pair(st->st_dev, st->st_ino) != *known) {
    return absl::FailedPreconditionError(
        absl::StrCat("another vector index was published at ", base));
  }
  return absl::OkStatus();
}

}  // namespace snapledger
