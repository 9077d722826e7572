// FaissVectorIndex: one embedded vector index (VectorIndex, vector_index.h), in memory and in
// the files of its store's directory (vector_files.h). Made and handed out only by
// FaissVectorStore (faiss_vector_store.h), whose header states what callers may rely on; this
// header is the store's view of it.
//
// In memory
//   - Identical vectors are folded: one FAISS entry per distinct vector (byte equality of the
//     floats), each entry owning the ascending list of seqs that have it. Entry ids are
//     assigned in order of first appearance, so entry order is seq order of first occurrence.
//   - Exact search (faiss::IndexFlatIP) while there are fewer than exact_below distinct
//     vectors. When an Add brings the count to exact_below, a faiss::IndexIVFFlat (inner
//     product, nlist lists) is trained with k-means (fixed seed, spherical centroids) on the
//     first min(train_size, exact_below) entries and every entry is moved into it in entry
//     order; later entries are appended. Vectors are assigned to lists by NearestCentroids
//     (inner_product.h), which sums in one fixed order on every CPU path, so an index depends
//     only on the vectors and their order: the same events added in one Add or in many Adds
//     of any sizes (incremental indexing or a full rebuild) give the same index, byte for byte
//     once persisted, and the same answers. (FAISS itself is not promised bit-identical
//     across FAISS builds or CPU models.)
//   - Search scores the entries of the nprobe lists nearest the query (all entries while
//     exact), expands the best of them into seqs (more and more of them, then more lists, up
//     to the whole index) until the k best hits passing the filter are known, and orders hits
//     by score descending, then seq ascending. Entries none of whose seqs lie in the filter's
//     seq range are skipped while scanning; a seq range shorter than about a quarter of what
//     the probed lists hold is instead scored event by event, exactly. Field matches go
//     through filter.accept_fields, asked best candidate first and at most once per seq per
//     call. A filter that few events pass can cost a full scan.
//   - FAISS stores the lists, trains the k-means quantizer and serializes the index; inner
//     products are computed by inner_product.h.
//   - Memory: about 4 x dimension bytes per distinct vector (FAISS's copy) plus ~40 bytes per
//     event (seq lists, hash map, seq -> entry). Loading gives every list 1/8 headroom, so the
//     first Add after opening does not copy the lists while searches wait.
//
// Files: a staged index (made by FaissVectorStore::CreateStaged) lives only in memory until
// PublishFrom writes it whole; Persist on it does nothing. A published index (PublishFrom, or
// LoadBase and ReplayJournal from OpenPublished) appends one journal record per Persist, or
// writes a new base instead (Compact: temporary file, fsync, rename, fsync the directory,
// remove the journal) once the journal would pass max(compact_fraction x base size,
// compact_min_bytes).
//
// Errors and thread safety: as FaissVectorStore's header states for its indexes. LoadBase,
// ReplayJournal and PublishFrom are the store's; each takes the index's locks itself.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/base/posix_file.h"
#include "common/index/faiss/faiss_vector_store.h"
#include "common/index/faiss/vector_files.h"
#include "common/index/vector_index.h"

namespace faiss {
struct Index;
struct IndexIVFFlat;
}  // namespace faiss

namespace snapledger {

// Which vectors.index the store last opened or published, by device and inode. Shared by a
// store and the indexes it hands out (a compaction replaces vectors.index). Thread-safe.
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

// Where an index's files are.
struct FilePaths {
  std::string dir;
  std::string base;     // vectors.index
  std::string journal;  // vectors.journal
};

class FaissVectorIndex final : public VectorIndex {
 public:
  // An empty, staged index. `structure` shapes it (its own when loaded from a base); `nprobe`,
  // compact_fraction and compact_min_bytes come from the store's `options`.
  FaissVectorIndex(FilePaths paths, IndexIdentity identity, IndexStructure structure, int nprobe,
                   const EmbeddedIndexOptions& options,
                   std::shared_ptr<PublishedFileRecord> published);
  ~FaissVectorIndex() override;

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

  // Loading (OpenPublished), on a new index: the base's body (CheckedBaseFile::body of the
  // file `st` describes, `base_bytes` long, with `digest`), then the journal's bytes. `what`
  // names the file in errors (DataLoss). Makes the index published.
  absl::Status LoadBase(std::string_view body, const std::string& what, const Digest& digest,
                        uint64_t base_bytes, const struct stat& st);
  absl::Status ReplayJournal(std::string_view data, const std::string& what);
  // Publish: writes the whole index to `staged_path` and renames it over the published base;
  // removes the previous base's journal. The index is published from then on.
  absl::Status PublishFrom(const std::string& staged_path);
  bool staged() const {
    absl::MutexLock lock(&write_mu_);
    return staged_;
  }
  const std::string& dir() const { return paths_.dir; }

 private:
  struct Batch;
  class SeqRange;
  struct Candidates;

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
  // Writes the whole index to `path` (created, fsynced).
  absl::StatusOr<WrittenBase> WriteBase(const std::string& path) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Replaces the published base by the current state (temp file + rename) and drops the
  // journal.
  absl::Status Compact() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Appends `pieces` (one record) to the journal and syncs it; then clears the pending
  // entries and vectors (so pieces pointing into them are invalid afterwards).
  absl::Status AppendJournal(absl::Span<const std::string_view> pieces)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status CreateJournal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void ClearPending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status AdoptBase(const std::string& path, const WrittenBase& written)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const FilePaths paths_;
  const IndexIdentity identity_;
  const size_t dim_;
  const IndexStructure structure_;
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

}  // namespace snapledger
