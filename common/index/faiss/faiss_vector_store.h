// FaissVectorStore: the embedded backend of the derived similarity index (VectorStore,
// vector_index.h), and the default. The index lives in one directory (e.g.
// <index_root>/vectors/) as files FAISS never reads unchecked (their format: vector_files.h;
// how an index is held in memory and searched: faiss_vector_index.h).
//
// What callers see
//   - Hits are ordered by score (inner product) descending, then seq ascending. Below
//     exact_below distinct vectors search is exact; above, approximate (IVF, nprobe lists,
//     widened until the k best hits passing the filter are known). Identical vectors are
//     stored once and every seq that has them is returned.
//   - An index depends only on the vectors and their order: the same events added in one Add
//     or in many Adds of any sizes (incremental indexing or a full rebuild) give the same
//     index, byte for byte once persisted, and the same answers, on any CPU.
//   - A filter's field matches go through filter.accept_fields, asked best candidate first and
//     at most once per seq per call. A filter that few events pass can cost a full scan.
//   - Memory: about 4 x dimension bytes per distinct vector plus ~40 bytes per event.
//     OpenPublished reads and checks the whole base.
//
// Files, in the store's directory:
//   vectors.index    the published base: everything up to its last seq.
//   vectors.journal  what was added since that base, appended by Persist() (one record per
//     call, then fdatasync). A journal naming another base is stale (left by a compaction or
//     Publish that crashed before removing it) and ignored. A last record cut short (a crash
//     during the append) is ignored: the index is derived, LastSeq() says how far it got, and
//     the caller re-adds the rest from the log; the next Persist overwrites it.
//   Persist() appends a record; when the journal would grow past compact_fraction of the base
//   (or compact_min_bytes, whichever is larger), it instead writes a new base
//   (vectors.tmp-<pid>-<n>, fsync, rename over vectors.index, fsync the directory) and
//   removes the journal. Reopening replays the journal through the same code as Add.
//   vectors.staged-<pid>-<n>  a staged index being published: Publish writes the staged
//     index's base there, fsyncs it and renames it over vectors.index, then removes
//     vectors.journal. Until Publish a staged index lives only in memory (Persist on it does
//     nothing: an interrupted rebuild starts over), so OpenPublished never sees it.
//   CreateStaged() and Drop() remove leftovers (vectors.staged-*, vectors.tmp-*) of an
//   interrupted publish or compaction.
//
// The structural parameters (exact_below, nlist, train_size, kmeans_seed, kmeans_iterations)
// are recorded in the base and an opened index keeps using its own; the store's options apply
// to indexes it creates. nprobe is a search-time setting and always the store's.
//
// Errors: OpenPublished: NotFound when vectors.index does not exist; DataLoss naming the file
// and what is wrong (too short, bad magic, unknown version, length mismatch, checksum
// mismatch, FAISS refusing its bytes, inconsistent contents); FailedPrecondition when it was
// built with another identity (both named; a rebuild is needed). Add: InvalidArgument for seqs
// that do not continue LastSeq() one by one, a wrong number of floats, or a non-finite float;
// nothing is added then. Persist on a published index: NotFound if vectors.index was deleted
// meanwhile, FailedPrecondition if another index was published over it; I/O errors as
// posix_file.h reports them.
//
// Thread safety: every method may be called from any thread. An index's Search, LastSeq and
// Identity run concurrently with one another and with Add and Persist; they wait only while
// Add applies a batch to memory (an append to FAISS's lists; the switch to IVF is trained and
// filled beside the serving index and swapped in). Add and Persist on one index are
// serialized (a second call waits). The store's methods are serialized with each other;
// CreateStaged, Publish and Drop remove or replace files, so they must not overlap an Add or
// Persist on one of the store's indexes (SimilarityIndex never does that). An index may
// outlive its store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/index/vector_index.h"

namespace snapledger {

// How the store shapes and searches the indexes it creates. The defaults were chosen with
// bench/index_bench.cc (bench/README.md).
struct EmbeddedIndexOptions {
  // Below this many distinct vectors: exact search (IndexFlatIP). At least nlist.
  size_t exact_below = 20000;
  int nlist = 256;            // IVF lists
  size_t train_size = 20000;  // k-means sample: the first min(train_size, exact_below) entries
  int nprobe = 16;            // lists scanned per query (a search widens it when they run dry)
  uint64_t kmeans_seed = 1234;
  int kmeans_iterations = 25;
  // Persist writes a new base instead of appending once the journal would exceed
  // max(compact_fraction x base size, compact_min_bytes). Each vector is written once to the
  // journal and then again with every base it is part of: about 1 + (1 + f) / f times in all
  // for fraction f (3x at 1.0). Reopening replays at most f x base of journal.
  double compact_fraction = 1.0;
  uint64_t compact_min_bytes = 4u << 20;
};

// The file names, for tests and tools.
inline constexpr char kVectorsBaseFile[] = "vectors.index";
inline constexpr char kVectorsJournalFile[] = "vectors.journal";

class PublishedFileRecord;  // which vectors.index this store last opened or published

class FaissVectorStore final : public VectorStore {
 public:
  // A store rooted at `dir` (created with its parents if missing; nothing else is read or
  // written until a method asks). InvalidArgument for inconsistent options (nlist < 1,
  // exact_below < nlist, train_size < nlist, nprobe < 1, kmeans_iterations < 1,
  // compact_fraction <= 0).
  static absl::StatusOr<std::unique_ptr<FaissVectorStore>> Open(std::string dir,
                                                                EmbeddedIndexOptions options = {});
  ~FaissVectorStore() override;
  FaissVectorStore(const FaissVectorStore&) = delete;
  FaissVectorStore& operator=(const FaissVectorStore&) = delete;

  absl::StatusOr<VectorIndexPtr> OpenPublished(const IndexIdentity& want) override;
  absl::StatusOr<VectorIndexPtr> CreateStaged(const IndexIdentity& identity) override;
  // InvalidArgument if `staged` is not a staged index of this store.
  absl::Status Publish(VectorIndex& staged) override;
  absl::Status Drop() override;
  // Compares vectors.index's inode with the one this store (or the index it opened, after a
  // compaction) last wrote or opened. OK when it has opened or published nothing yet.
  absl::Status CheckPublished() override;
  std::string Describe() const override { return dir_; }

  const std::string& dir() const { return dir_; }

 private:
  FaissVectorStore(std::string dir, EmbeddedIndexOptions options);
  absl::Status RemoveLeftovers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const EmbeddedIndexOptions options_;
  absl::Mutex mu_;
  // Shared with the indexes this store hands out: a published index's compaction replaces
  // vectors.index and must tell the store, and either may outlive the other.
  const std::shared_ptr<PublishedFileRecord> published_;
};

}  // namespace snapledger
