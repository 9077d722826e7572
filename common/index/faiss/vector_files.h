// The files of the embedded vector index (faiss_vector_index.h) in its store's directory:
// their byte formats, encoded and checked here, and the few file operations the index and the
// store share. Nothing here holds state; every function is thread-safe.
//
// All integers are little-endian (written from memory; the build refuses big-endian hosts).
//
//   vectors.index    the published base: everything up to its last seq.
//     "SLVECIDX" | u32 version=1 | u32 0 | u64 total file length
//     | u32 n + embedder id | u32 dimension
//     | u64 exact_below | u32 nlist | u64 train_size | u64 kmeans_seed | u32 kmeans_iterations
//     | u64 last seq | u64 entries | u32 kind (0 exact, 1 IVF)
//     | per entry: u32 n + n x u64 seq | u64 m + m bytes of faiss::write_index output
//     | SHA-256 of every byte before it (32 bytes)
//     Magic, version, length and checksum are checked before any byte reaches FAISS.
//   vectors.journal  what was added since that base, one record per Persist:
//     header: "SLVECJNL" | u32 version=1 | u32 0 | SHA-256 of the base it extends (32 bytes)
//             | first 8 bytes of SHA-256 of the 48 bytes before
//     record: u32 0x524a4c53 | u32 payload length L | u32 L ^ 0xa5a5a5a5 | payload
//             | first 8 bytes of SHA-256 of the 12 + L bytes before
//     payload: u64 first seq | u32 events | u32 new entries | events x u32 entry id
//              | new entries x dimension x f32 (the new entries' vectors, in entry order)
//     A last record cut short (the file ends inside it, or only zero bytes follow its start:
//     a crash during the append) is torn, not damage: ReadJournalRecord says so and the
//     caller ignores it. Any other damage is DataLoss.
//   vectors.staged-<pid>-<n>, vectors.tmp-<pid>-<n>  a base being written (UniqueName).
//
// Errors: every check of bytes read from disk returns DataLoss naming the file (as the caller
// describes it in `what` or `path`) and what is wrong; never a crash, whatever the bytes.
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/index/vector_index.h"
#include "common/ledger/sha256.h"

namespace faiss {
struct Index;
}  // namespace faiss

namespace snapledger {

// One entry's seqs (the events that have its vector), ascending.
using SeqList = absl::InlinedVector<uint64_t, 1>;

// The parameters that shape an index; recorded in its base file.
struct IndexStructure {
  uint64_t exact_below = 0;
  uint32_t nlist = 0;
  uint64_t train_size = 0;
  uint64_t kmeans_seed = 0;
  uint32_t kmeans_iterations = 0;
};

// The base file's "kind" field.
inline constexpr uint32_t kKindExact = 0;  // faiss::IndexFlatIP
inline constexpr uint32_t kKindIvf = 1;    // faiss::IndexIVFFlat

// ---------------------------------------------------------------------------------------------
// vectors.index

// What a base file records besides its seq lists and its FAISS index.
struct BaseHeader {
  IndexIdentity identity;
  IndexStructure structure;
  uint64_t last_seq = 0;
  uint32_t kind = kKindExact;
};

struct WrittenBase {
  Digest digest;
  uint64_t bytes = 0;  // the file's length
};

// Writes a base file to `path` (created or truncated, then fsynced; the caller renames it into
// place): `header`, the entries' `seqs` and `index` as faiss::write_index serializes it.
// `index` is only read. Internal if FAISS cannot serialize it; I/O errors as posix_file.h
// reports them.
absl::StatusOr<WrittenBase> WriteBaseFile(const std::string& path, const BaseHeader& header,
                                          absl::Span<const SeqList> seqs,
                                          const faiss::Index& index);

// A base file whose container checked out: magic, version, length and checksum, identity and
// structure read. `body` (last seq to the FAISS index, inside the checked data) is for
// ParseBaseBody.
struct CheckedBaseFile {
  IndexIdentity identity;
  IndexStructure structure;
  std::string_view body;
  Digest digest;
};
// Checks the container of `data`, the bytes of the base file at `path`. The result points
// into `data`.
absl::StatusOr<CheckedBaseFile> CheckBaseFile(std::string_view data, const std::string& path);

// A base file's contents, every seq list checked: ascending, non-empty, each seq in
// 1..last_seq exactly once, entries in order of their first seq.
struct BaseContents {
  uint64_t last_seq = 0;
  uint32_t kind = ~0u;                 // as recorded; the caller checks it against the index
  std::vector<SeqList> seqs;           // per entry
  std::vector<uint32_t> entry_of_seq;  // [seq - 1]
  std::string_view faiss_index;        // faiss::write_index output, inside the body
};
// Parses CheckedBaseFile::body; `what` names the file in errors ("vector index <path>").
absl::StatusOr<BaseContents> ParseBaseBody(std::string_view body, const std::string& what);

// The FAISS index in `bytes` (BaseContents::faiss_index). DataLoss "<what> is damaged: FAISS
// cannot read its index: ..." if FAISS refuses them. The caller checks its type and sizes.
absl::StatusOr<std::unique_ptr<faiss::Index>> ReadFaissIndex(std::string_view bytes,
                                                             const std::string& what);

// ---------------------------------------------------------------------------------------------
// vectors.journal

inline constexpr size_t kJournalHeaderSize = 56;

// A journal's header for a journal extending the base with digest `base`.
std::string EncodeJournalHeader(const Digest& base);
// Checks the header at the start of `data` (a journal's bytes; `what` names it) and returns
// the digest of the base it extends.
absl::StatusOr<Digest> CheckJournalHeader(std::string_view data, const std::string& what);

// The bytes a record of `events` events and `fresh_floats` floats of new vectors takes.
uint64_t JournalRecordBytes(size_t events, size_t fresh_floats);

// A record, encoded as pieces to write in order: its header, the entry ids and the new
// vectors in place (not copied: they can be megabytes), then its check digest. `entries` and
// `fresh` point into the spans passed to EncodeJournalRecord: valid while they are.
struct JournalRecordPieces {
  std::string header;
  std::string_view entries, fresh;
  std::string check;
  std::array<std::string_view, 4> pieces() const { return {header, entries, fresh, check}; }
};
// `entry_of` holds one entry id per event (first_seq, first_seq + 1, ...); `fresh` the new
// entries' vectors, `dim` floats each.
JournalRecordPieces EncodeJournalRecord(uint64_t first_seq, absl::Span<const uint32_t> entry_of,
                                        absl::Span<const float> fresh, size_t dim);

// A record read back.
struct JournalRecord {
  uint64_t first_seq = 0;
  std::vector<uint32_t> entry_of;  // per event
  std::vector<float> fresh;        // new entries' vectors, entry order
};
// The record at byte `pos` (> kJournalHeaderSize, < data.size()) of a journal's bytes `data`,
// for an index of dimension `dim` whose last seq is `last_seq`: the record and its length
// in bytes; or, for a torn last record, no record and why it is torn. DataLoss naming `what`
// and the offset for a bad record header, a checksum mismatch, a malformed payload, or a
// record that does not start at last_seq + 1. Entry ids are not checked against the index.
struct JournalRecordRead {
  std::optional<JournalRecord> record;
  size_t bytes = 0;
  std::string torn;  // set when `record` is not
};
absl::StatusOr<JournalRecordRead> ReadJournalRecord(std::string_view data, size_t pos, size_t dim,
                                                    uint64_t last_seq, const std::string& what);

// ---------------------------------------------------------------------------------------------
// File operations shared by the index and the store.

// "<dir>/<name>".
std::string JoinPath(const std::string& dir, absl::string_view name);
// "<prefix><pid>-<n>", unique within this process.
std::string UniqueName(absl::string_view prefix);
// stat(2); NotFound when `path` does not exist.
absl::StatusOr<struct stat> StatPath(const std::string& path);
// unlink(2); OK when `path` does not exist.
absl::Status RemoveIfExists(const std::string& path);
// fdatasync(2) when `data_only`, else fsync(2); `path` names the file in errors.
absl::Status SyncFd(int fd, const std::string& path, bool data_only);

}  // namespace snapledger
