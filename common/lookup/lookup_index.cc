#include "common/lookup/lookup_index.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status_macros.h"
#include "common/ledger/head_file.h"
#include "common/lookup/lmdb_txn.h"

namespace snapledger {
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// LMDB databases and encodings

namespace {

constexpr char kMetaDb[] = "meta";
constexpr char kSeqDb[] = "seq";
constexpr char kHashDb[] = "hash";
constexpr std::string_view kFormatKey = "format";
constexpr std::string_view kCoverageKey = "coverage";
constexpr std::string_view kRunsKey = "runs";
constexpr unsigned kMaxReaders = 512;

using lmdb::Cursor;
using lmdb::EnvHandle;
using lmdb::Txn;
using lmdb::Val;

using SeqKey = std::array<char, 8>;
SeqKey EncodeSeqKey(uint64_t seq) {
  SeqKey k;
  for (int i = 7; i >= 0; --i, seq >>= 8) k[i] = static_cast<char>(seq & 0xff);
  return k;
}
uint64_t DecodeSeqKey(const MDB_val& v) {
  uint64_t seq = 0;
  for (size_t i = 0; i < 8; ++i)
    seq = (seq << 8) | static_cast<uint8_t>(static_cast<char*>(v.mv_data)[i]);
  return seq;
}

constexpr size_t kLocationSize = 8 + 4 + 8;
std::array<char, kLocationSize> EncodeLocation(const EventLocation& l) {
  std::array<char, kLocationSize> v;
  memcpy(v.data(), &l.offset, 8);
  memcpy(v.data() + 8, &l.length, 4);
  memcpy(v.data() + 12, &l.ts, 8);
  return v;
}
std::optional<EventLocation> DecodeLocation(uint64_t seq, const MDB_val& v) {
  if (v.mv_size != kLocationSize) return std::nullopt;
  EventLocation l;
  l.seq = seq;
  memcpy(&l.offset, v.mv_data, 8);
  memcpy(&l.length, static_cast<char*>(v.mv_data) + 8, 4);
  memcpy(&l.ts, static_cast<char*>(v.mv_data) + 12, 8);
  return l;
}

constexpr size_t kCoverageSize = 8 * 4 + 32;
std::array<char, kCoverageSize> EncodeCoverage(const IndexCoverage& c) {
  std::array<char, kCoverageSize> v;
  memcpy(v.data(), &c.indexed_through, 8);
  memcpy(v.data() + 8, &c.ts, 8);
  memcpy(v.data() + 16, &c.line_offset, 8);
  memcpy(v.data() + 24, &c.end_offset, 8);
  Digest d{};
  FromHex(c.hash, &d);
  memcpy(v.data() + 32, d.data(), 32);
  return v;
}
std::optional<IndexCoverage> DecodeCoverage(const MDB_val& v) {
  if (v.mv_size != kCoverageSize) return std::nullopt;
  const char* p = static_cast<const char*>(v.mv_data);
  IndexCoverage c;
  memcpy(&c.indexed_through, p, 8);
  memcpy(&c.ts, p + 8, 8);
  memcpy(&c.line_offset, p + 16, 8);
  memcpy(&c.end_offset, p + 24, 8);
  Digest d;
  memcpy(d.data(), p + 32, 32);
  c.hash = ToHex(d);
  bool valid = c.indexed_through == 0
                   ? c.line_offset == 0 && c.end_offset == 0 && c.hash == kGenesisHash
                   : c.line_offset < c.end_offset;
  if (!valid) return std::nullopt;
  return c;
}

constexpr size_t kRunRecordSize = 3 * 8;
std::string EncodeRuns(const std::vector<HashRun>& runs) {
  std::string v(runs.size() * kRunRecordSize, '\0');
  for (size_t i = 0; i < runs.size(); ++i) {
    char* p = v.data() + i * kRunRecordSize;
    memcpy(p, &runs[i].id, 8);
    memcpy(p + 8, &runs[i].first_seq, 8);
    memcpy(p + 16, &runs[i].last_seq, 8);
  }
  return v;
}
std::optional<std::vector<HashRun>> DecodeRuns(const MDB_val& v) {
  if (v.mv_size % kRunRecordSize != 0) return std::nullopt;
  std::vector<HashRun> runs(v.mv_size / kRunRecordSize);
  for (size_t i = 0; i < runs.size(); ++i) {
    const char* p = static_cast<const char*>(v.mv_data) + i * kRunRecordSize;
    memcpy(&runs[i].id, p, 8);
    memcpy(&runs[i].first_seq, p + 8, 8);
    memcpy(&runs[i].last_seq, p + 16, 8);
  }
  return runs;
}

// Why `runs` cannot be the hash runs of events 1..indexed_through; nullopt if they can.
std::optional<std::string> RunsMismatch(const std::vector<HashRun>& runs,
                                        uint64_t indexed_through) {
  uint64_t next = 1;
  for (const HashRun& r : runs) {
    if (r.first_seq != next || r.last_seq < r.first_seq)
      return absl::StrCat("hash run ", r.id, " covers seq ", r.first_seq, "..", r.last_seq,
                          ", expected it to start at ", next);
    next = r.last_seq + 1;
  }
  if (next != indexed_through + 1)
    return absl::StrCat("the hash runs cover seq 1..", next - 1, ", coverage says 1..",
                        indexed_through);
  return std::nullopt;
}

// A "hash" key: the run id big-endian (runs sort by id), then the digest.
using HashKey = std::array<char, 8 + 32>;
HashKey EncodeHashKey(uint64_t run_id, const Digest& d) {
  HashKey k;
  SeqKey id = EncodeSeqKey(run_id);
  memcpy(k.data(), id.data(), 8);
  memcpy(k.data() + 8, d.data(), 32);
  return k;
}

// A digest and its event, as a catch-up collects them for a new run.
struct HashEntry {
  Digest digest;
  uint64_t seq;
};

// Why `log` does not hold the event `cov` names where it says; nullopt if it does.
absl::StatusOr<std::optional<std::string>> StaleReason(const IndexCoverage& cov,
                                                       const LogFile& log) {
  if (cov.indexed_through == 0) return std::optional<std::string>();
  if (cov.end_offset > log.size())
    return absl::StrCat("it covers seq ", cov.indexed_through, " through byte ", cov.end_offset,
                        " but ", kEventsFile, " has ", log.size(),
                        " bytes of complete lines: the log was replaced or rolled back");
  ASSIGN_OR_RETURN(std::optional<std::string> line, log.LineEndingAt(cov.end_offset));
  std::optional<EventView> ev;
  if (line.has_value() && cov.end_offset - 1 - line->size() == cov.line_offset) {
    if (auto parsed = ParseEventLine(*line); parsed.ok()) ev = *parsed;
  }
  if (!ev.has_value())
    return absl::StrCat("no event line of ", kEventsFile, " spans bytes [", cov.line_offset, ", ",
                        cov.end_offset, ") where it has seq ", cov.indexed_through);
  if (ev->seq != cov.indexed_through || ev->hash != cov.hash)
    return absl::StrCat("it has seq ", cov.indexed_through, " hash ", cov.hash.substr(0, 12),
                        " at byte ", cov.line_offset, ", the log has seq ", ev->seq, " hash ",
                        std::string(ev->hash.substr(0, 12)), ": a different or rewritten ledger");
  return std::optional<std::string>();
}

std::string NormalizeDir(const std::string& dir) {
  std::string d = fs::path(dir).lexically_normal().string();
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LookupIndex::Impl

class LookupIndex::Impl {
 public:
  Impl(std::string dir, const LookupIndexOptions& options)
      : dir_(std::move(dir)), options_(options) {}

  const std::string& dir() const { return dir_; }
  MDB_env* env() const { return env_.get(); }

  // Opens the environment (creating its files if absent) with `flags` beyond MDB_NOTLS.
  absl::Status OpenEnv(unsigned flags) {
    MDB_env* env = nullptr;
    if (int rc = mdb_env_create(&env); rc != 0) return lmdb::Error(dir_, "mdb_env_create", rc);
    env_.reset(env);
    if (int rc = mdb_env_set_maxdbs(env, 3); rc != 0) return lmdb::Error(dir_, "maxdbs", rc);
    if (int rc = mdb_env_set_maxreaders(env, kMaxReaders); rc != 0)
      return lmdb::Error(dir_, "maxreaders", rc);
    if (int rc = mdb_env_set_mapsize(env, options_.map_size); rc != 0)
      return lmdb::Error(dir_, "mapsize", rc);
    if (int rc = mdb_env_open(env, dir_.c_str(), MDB_NOTLS | MDB_NORDAHEAD | flags, 0644); rc != 0)
      return lmdb::Error(dir_, "mdb_env_open", rc);
    int dead = 0;
    mdb_reader_check(env, &dead);  // frees reader slots of crashed processes
    return RecordIdentity();
  }

  // Opens (creating when `create`) the three databases in `txn`.
  absl::Status OpenDatabases(const Txn& txn, bool create) {
    unsigned flags = create ? MDB_CREATE : 0;
    for (auto [name, dbi] : {std::pair{kMetaDb, &meta_}, {kSeqDb, &seq_}, {kHashDb, &hash_}}) {
      int rc = mdb_dbi_open(txn.get(), name, flags, dbi);
      if (rc == MDB_NOTFOUND)
        return absl::DataLossError(absl::StrCat("no \"", name, "\" database"));
      if (rc != 0) return lmdb::Error(dir_, absl::StrCat("open database ", name), rc);
    }
    return absl::OkStatus();
  }

  // Checks that the data file holds every page LMDB's meta page claims (a truncated file
  // would fault on access). Writers keep this true for a sound index (ReserveForCommit).
  absl::Status CheckDataFileSize() const {
    ASSIGN_OR_RETURN(FileCover c, DataFileCover());
    return CheckCovers(c);
  }

  // For a write transaction just begun (LMDB's writer lock held, so the latest commit is the
  // one it starts from): checks the file covers that commit's pages, then trims what earlier
  // ReserveForCommit calls left beyond them once that exceeds kTrimSlack. (Truncating on btrfs
  // waits for the tail's write-back, too slow to do before every catch-up.)
  absl::Status TrimDataFile() {
    ASSIGN_OR_RETURN(FileCover c, DataFileCover());
    RETURN_IF_ERROR(CheckCovers(c));
    if (c.file_size > c.needed + kTrimSlack &&
        ::ftruncate(DataFd(), static_cast<off_t>(c.needed)) != 0)
      return ErrnoStatus(absl::StrCat("trim ", dir_, "/data.mdb"), errno);
    return absl::OkStatus();
  }
  static constexpr uint64_t kTrimSlack = 64 << 20;

  // Before committing a write transaction that may have freed pages it allocated (LMDB never
  // writes those): extends data.mdb, as a hole, past every page the transaction can have
  // allocated: pages holding `bytes` of entries beyond the last committed page, and 256 more
  // for the meta, main and free-list pages it touched. Only ever grows the file; grows it
  // kExtendStep further than needed, so most commits find it long enough (a change of size
  // makes LMDB's fdatasync write the inode too).
  absl::Status ReserveForCommit(uint64_t bytes) {
    ASSIGN_OR_RETURN(FileCover c, DataFileCover());
    uint64_t want = c.needed + (bytes / c.page_size + 256) * c.page_size;
    if (c.file_size < want && ::ftruncate(DataFd(), static_cast<off_t>(want + kExtendStep)) != 0)
      return ErrnoStatus(absl::StrCat("extend ", dir_, "/data.mdb"), errno);
    return absl::OkStatus();
  }
  static constexpr uint64_t kExtendStep = 16 << 20;

  absl::Status CheckFormat(const Txn& txn) const {
    MDB_val key = Val(kFormatKey), val;
    int rc = mdb_get(txn.get(), meta_, &key, &val);
    if (rc == MDB_NOTFOUND) return absl::DataLossError("no format version record");
    if (rc != 0) return lmdb::Error(dir_, "read format", rc);
    uint32_t version = 0;
    if (val.mv_size == sizeof version) memcpy(&version, val.mv_data, sizeof version);
    if (version != kLookupIndexFormatVersion)
      return absl::DataLossError(
          absl::StrCat("format version ", version, ", expected ", kLookupIndexFormatVersion));
    return absl::OkStatus();
  }

  absl::StatusOr<IndexCoverage> ReadCoverage(const Txn& txn) const {
    MDB_val key = Val(kCoverageKey), val;
    int rc = mdb_get(txn.get(), meta_, &key, &val);
    if (rc != 0 && rc != MDB_NOTFOUND) return lmdb::Error(dir_, "read coverage", rc);
    std::optional<IndexCoverage> cov;
    if (rc == 0) cov = DecodeCoverage(val);
    if (!cov.has_value())
      return absl::InternalError(Damaged("coverage record missing or malformed"));
    return *cov;
  }

  // The entry counts must equal the coverage (detects lost or extra entries cheaply).
  absl::Status CheckCounts(const Txn& txn, const IndexCoverage& cov) const {
    for (auto [name, dbi] : {std::pair{kSeqDb, seq_}, {kHashDb, hash_}}) {
      MDB_stat st;
      if (int rc = mdb_stat(txn.get(), dbi, &st); rc != 0) return lmdb::Error(dir_, "mdb_stat", rc);
      if (st.ms_entries != cov.indexed_through)
        return absl::DataLossError(absl::StrCat("\"", name, "\" has ", st.ms_entries,
                                                " entries, coverage says ", cov.indexed_through));
    }
    ASSIGN_OR_RETURN(std::vector<HashRun> runs, ReadRuns(txn));
    if (std::optional<std::string> why = RunsMismatch(runs, cov.indexed_through))
      return absl::DataLossError(*why);
    return absl::OkStatus();
  }

  absl::Status InitMeta(const Txn& txn) {
    uint32_t version = kLookupIndexFormatVersion;
    MDB_val key = Val(kFormatKey), val = Val(&version, sizeof version);
    if (int rc = mdb_put(txn.get(), meta_, &key, &val, 0); rc != 0)
      return lmdb::Error(dir_, "write format", rc);
    RETURN_IF_ERROR(WriteRuns(txn, {}));
    return WriteCoverage(txn, IndexCoverage{});
  }

  absl::StatusOr<std::vector<HashRun>> ReadRuns(const Txn& txn) const {
    MDB_val key = Val(kRunsKey), val;
    int rc = mdb_get(txn.get(), meta_, &key, &val);
    if (rc != 0 && rc != MDB_NOTFOUND) return lmdb::Error(dir_, "read runs", rc);
    std::optional<std::vector<HashRun>> runs;
    if (rc == 0) runs = DecodeRuns(val);
    if (!runs.has_value())
      return absl::InternalError(Damaged("hash runs record missing or malformed"));
    return *std::move(runs);
  }

  absl::Status WriteRuns(const Txn& txn, const std::vector<HashRun>& runs) {
    std::string bytes = EncodeRuns(runs);
    MDB_val key = Val(kRunsKey), val = Val(bytes);
    int rc = mdb_put(txn.get(), meta_, &key, &val, 0);
    return rc == 0 ? absl::OkStatus() : lmdb::Error(dir_, "write runs", rc);
  }

  // Appends `batch` (the digests of the events after runs->back(), in seq order) as a new run,
  // then merges runs as PlanHashRunMerge says, and records the runs. Reorders `batch`; adds the
  // number of digests the merges rewrote to `*merged`.
  absl::Status AddHashRun(const Txn& txn, std::vector<HashEntry>& batch, std::vector<HashRun>* runs,
                          uint64_t* merged) {
    if (batch.empty()) return absl::OkStatus();
    std::sort(batch.begin(), batch.end(),
              [](const HashEntry& a, const HashEntry& b) { return a.digest < b.digest; });
    HashRun run{NextRunId(*runs), UINT64_MAX, 0};
    ASSIGN_OR_RETURN(Cursor out, OpenCursor(txn, hash_));
    for (size_t i = 0; i < batch.size(); ++i) {
      const HashEntry& e = batch[i];
      if (i > 0 && e.digest == batch[i - 1].digest)
        return absl::DataLossError(
            absl::StrCat("seq ", e.seq, " and seq ", batch[i - 1].seq, " have the same hash"));
      RETURN_IF_ERROR(AppendHash(out, run.id, e.digest, e.seq));
      run.first_seq = std::min(run.first_seq, e.seq);
      run.last_seq = std::max(run.last_seq, e.seq);
    }
    runs->push_back(run);
    while (std::optional<std::pair<size_t, size_t>> merge = PlanHashRunMerge(*runs)) {
      RETURN_IF_ERROR(MergeHashRuns(txn, merge->first, merge->second, runs));
      *merged += (*runs)[merge->first].size();
    }
    return WriteRuns(txn, *runs);
  }

  absl::Status WriteCoverage(const Txn& txn, const IndexCoverage& cov) {
    auto bytes = EncodeCoverage(cov);
    MDB_val key = Val(kCoverageKey), val = Val(bytes.data(), bytes.size());
    int rc = mdb_put(txn.get(), meta_, &key, &val, 0);
    return rc == 0 ? absl::OkStatus() : lmdb::Error(dir_, "write coverage", rc);
  }

  // Adds `loc` to "seq" (its digest goes to a run: AddHashRun).
  absl::Status PutLocation(const Txn& txn, const EventLocation& loc) {
    SeqKey k = EncodeSeqKey(loc.seq);
    auto v = EncodeLocation(loc);
    MDB_val key = Val(k.data(), k.size()), val = Val(v.data(), v.size());
    if (int rc = mdb_put(txn.get(), seq_, &key, &val, MDB_APPEND); rc != 0)
      return lmdb::Error(dir_, absl::StrCat("index seq ", loc.seq), rc);
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<EventLocation>> Locate(const Txn& txn, uint64_t seq) const {
    SeqKey k = EncodeSeqKey(seq);
    MDB_val key = Val(k.data(), k.size()), val;
    int rc = mdb_get(txn.get(), seq_, &key, &val);
    if (rc == MDB_NOTFOUND) return std::optional<EventLocation>();
    if (rc != 0) return lmdb::Error(dir_, absl::StrCat("read seq ", seq), rc);
    auto loc = DecodeLocation(seq, val);
    if (!loc.has_value())
      return absl::InternalError(Damaged(absl::StrCat("bad entry for seq ", seq)));
    return loc;
  }

  // Locate for a seq the coverage says is indexed: missing is damage.
  absl::StatusOr<EventLocation> MustLocate(const Txn& txn, uint64_t seq) const {
    ASSIGN_OR_RETURN(std::optional<EventLocation> loc, Locate(txn, seq));
    if (!loc.has_value())
      return absl::InternalError(Damaged(absl::StrCat("seq ", seq, " missing")));
    return *loc;
  }

  absl::StatusOr<std::optional<uint64_t>> SeqOfHash(const Txn& txn, const Digest& d) const {
    ASSIGN_OR_RETURN(std::vector<HashRun> runs, ReadRuns(txn));
    for (auto run = runs.rbegin(); run != runs.rend(); ++run) {
      HashKey k = EncodeHashKey(run->id, d);
      MDB_val key = Val(k.data(), k.size()), val;
      int rc = mdb_get(txn.get(), hash_, &key, &val);
      if (rc == MDB_NOTFOUND) continue;
      if (rc != 0) return lmdb::Error(dir_, "read hash", rc);
      uint64_t seq = 0;
      if (val.mv_size == sizeof seq) memcpy(&seq, val.mv_data, sizeof seq);
      if (seq < run->first_seq || seq > run->last_seq)
        return absl::InternalError(Damaged(absl::StrCat("hash run ", run->id, " holds seq ", seq)));
      return std::optional<uint64_t>(seq);
    }
    return std::optional<uint64_t>();
  }

  // The first seq in [1, n] whose ts >= `ts`, or n + 1.
  absl::StatusOr<uint64_t> LowerBoundByTs(const Txn& txn, uint64_t n, int64_t ts) const {
    uint64_t lo = 1, hi = n + 1;
    while (lo < hi) {
      uint64_t mid = lo + (hi - lo) / 2;
      ASSIGN_OR_RETURN(EventLocation loc, MustLocate(txn, mid));
      if (loc.ts < ts) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  // Appends to `out` up to `limit` events from `first` on with ts <= to_ts.
  absl::Status CollectFrom(const Txn& txn, uint64_t first, int64_t to_ts, size_t limit,
                           std::vector<EventLocation>* out) const {
    ASSIGN_OR_RETURN(Cursor cursor, OpenCursor(txn, seq_));
    MDB_cursor* c = cursor.get();
    SeqKey k = EncodeSeqKey(first);
    MDB_val key = Val(k.data(), k.size()), val;
    int rc = mdb_cursor_get(c, &key, &val, MDB_SET_KEY);
    for (; rc == 0 && out->size() < limit; rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
      std::optional<EventLocation> loc;
      if (key.mv_size == 8) loc = DecodeLocation(DecodeSeqKey(key), val);
      if (!loc.has_value()) return absl::InternalError(Damaged("bad seq entry"));
      if (loc->ts > to_ts) break;
      out->push_back(*loc);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return lmdb::Error(dir_, "mdb_cursor_get", rc);
    return absl::OkStatus();
  }

  bool StillUsable() const {
    struct stat st;
    std::string data = absl::StrCat(dir_, "/data.mdb");
    return ::stat(data.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_ &&
           CheckDataFileSize().ok();
  }

  std::string Damaged(absl::string_view what) const {
    return absl::StrCat("lookup index ", dir_, " is damaged: ", what);
  }

  const LookupIndexOptions& options() const { return options_; }
  absl::Mutex& write_mu() ABSL_LOCK_RETURNED(write_mu_) { return write_mu_; }

 private:
  struct FileCover {
    uint64_t file_size = 0;
    uint64_t needed = 0;  // bytes through the last page of the latest commit
    uint64_t page_size = 0;
  };
  absl::StatusOr<FileCover> DataFileCover() const {
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(env(), &info);
    mdb_env_stat(env(), &st);
    struct stat file;
    if (::fstat(DataFd(), &file) != 0) return ErrnoStatus("stat data.mdb", errno);
    return FileCover{static_cast<uint64_t>(file.st_size),
                     (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize, st.ms_psize};
  }
  // DataLoss unless the file reaches the last page `c` names.
  static absl::Status CheckCovers(const FileCover& c) {
    if (c.file_size >= c.needed) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat("data.mdb has ", c.file_size,
                                            " bytes but its pages reach byte ", c.needed,
                                            " (truncated)"));
  }

  static uint64_t NextRunId(const std::vector<HashRun>& runs) {
    uint64_t id = 0;
    for (const HashRun& r : runs) id = std::max(id, r.id);
    return id + 1;
  }

  absl::StatusOr<Cursor> OpenCursor(const Txn& txn, MDB_dbi dbi) const {
    return Cursor::Open(txn, dbi, dir_);
  }

  // Appends (run_id, digest) -> seq; the key must sort after every key of "hash".
  absl::Status AppendHash(const Cursor& out, uint64_t run_id, const Digest& d, uint64_t seq) {
    HashKey k = EncodeHashKey(run_id, d);
    MDB_val key = Val(k.data(), k.size()), val = Val(&seq, sizeof seq);
    if (int rc = mdb_cursor_put(out.get(), &key, &val, MDB_APPEND); rc != 0)
      return lmdb::Error(dir_, absl::StrCat("index hash of seq ", seq), rc);
    return absl::OkStatus();
  }

  // Replaces the runs [begin, end) of `*runs` by one new run holding their digests: a k-way
  // merge of their sorted keys appended under a new id, then their keys deleted.
  absl::Status MergeHashRuns(const Txn& txn, size_t begin, size_t end, std::vector<HashRun>* runs) {
    HashRun merged{NextRunId(*runs), (*runs)[begin].first_seq, (*runs)[end - 1].last_seq};
    {
      struct Source {
        Cursor cursor;
        uint64_t id;
        SeqKey prefix;  // `id` as its keys begin
        MDB_val key, val;
        bool live;
      };
      std::vector<Source> sources;
      sources.reserve(end - begin);
      // Positions `s` on its next entry (`op`), or marks it exhausted past its run.
      auto step = [&](Source& s, MDB_cursor_op op) -> absl::Status {
        int rc = mdb_cursor_get(s.cursor.get(), &s.key, &s.val, op);
        if (rc != 0 && rc != MDB_NOTFOUND) return lmdb::Error(dir_, "mdb_cursor_get", rc);
        s.live = rc == 0 && s.key.mv_size == sizeof(HashKey) &&
                 memcmp(s.key.mv_data, s.prefix.data(), 8) == 0;
        return absl::OkStatus();
      };
      for (size_t i = begin; i < end; ++i) {
        ASSIGN_OR_RETURN(Cursor c, OpenCursor(txn, hash_));
        sources.push_back(
            Source{std::move(c), (*runs)[i].id, EncodeSeqKey((*runs)[i].id), {}, {}, false});
        HashKey first = EncodeHashKey((*runs)[i].id, Digest{});
        sources.back().key = Val(first.data(), first.size());
        RETURN_IF_ERROR(step(sources.back(), MDB_SET_RANGE));
      }
      ASSIGN_OR_RETURN(Cursor out, OpenCursor(txn, hash_));
      uint64_t copied = 0;
      while (true) {
        Source* next = nullptr;
        for (Source& s : sources) {
          if (s.live &&
              (next == nullptr || memcmp(static_cast<char*>(s.key.mv_data) + 8,
                                         static_cast<char*>(next->key.mv_data) + 8, 32) < 0))
            next = &s;
        }
        if (next == nullptr) break;
        Digest d;
        memcpy(d.data(), static_cast<char*>(next->key.mv_data) + 8, 32);
        uint64_t seq = 0;
        if (next->val.mv_size != sizeof seq)
          return absl::InternalError(Damaged(absl::StrCat("bad entry in hash run ", next->id)));
        memcpy(&seq, next->val.mv_data, sizeof seq);
        RETURN_IF_ERROR(AppendHash(out, merged.id, d, seq));
        ++copied;
        RETURN_IF_ERROR(step(*next, MDB_NEXT));
      }
      if (copied != merged.size())
        return absl::InternalError(
            Damaged(absl::StrCat("hash runs ", (*runs)[begin].id, "..", (*runs)[end - 1].id,
                                 " hold ", copied, " entries for ", merged.size(), " events")));
    }
    for (size_t i = begin; i < end; ++i) RETURN_IF_ERROR(DeleteHashRun(txn, (*runs)[i].id));
    runs->erase(runs->begin() + begin, runs->begin() + end);
    runs->insert(runs->begin() + begin, merged);
    return absl::OkStatus();
  }

  // Deletes every key of run `id`.
  absl::Status DeleteHashRun(const Txn& txn, uint64_t id) {
    ASSIGN_OR_RETURN(Cursor c, OpenCursor(txn, hash_));
    SeqKey prefix = EncodeSeqKey(id);
    HashKey first = EncodeHashKey(id, Digest{});
    MDB_val key = Val(first.data(), first.size()), val;
    int rc = mdb_cursor_get(c.get(), &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size == sizeof(HashKey) &&
           memcmp(key.mv_data, prefix.data(), 8) == 0) {
      if (rc = mdb_cursor_del(c.get(), 0); rc != 0)
        return lmdb::Error(dir_, absl::StrCat("delete hash run ", id), rc);
      // After a delete the cursor stands on the entry that followed.
      rc = mdb_cursor_get(c.get(), &key, &val, MDB_GET_CURRENT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return lmdb::Error(dir_, "mdb_cursor_get", rc);
    return absl::OkStatus();
  }

  int DataFd() const {
    int fd = -1;
    mdb_env_get_fd(env(), &fd);
    return fd;
  }
  absl::Status RecordIdentity() {
    struct stat st;
    if (::fstat(DataFd(), &st) != 0) return ErrnoStatus("stat data.mdb", errno);
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    return absl::OkStatus();
  }

  const std::string dir_;
  const LookupIndexOptions options_;
  EnvHandle env_;
  MDB_dbi meta_ = 0, seq_ = 0, hash_ = 0;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  absl::Mutex write_mu_;  // serializes CatchUp within this process
};

// ---------------------------------------------------------------------------------------------
// Opening, creating, rebuilding

namespace {

// Opens and checks an existing environment; every failure here means "damaged".
absl::Status OpenExisting(LookupIndex::Impl& impl) {
  RETURN_IF_ERROR(impl.OpenEnv(0));
  RETURN_IF_ERROR(impl.CheckDataFileSize());
  ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl.env(), impl.dir(), /*write=*/false));
  RETURN_IF_ERROR(impl.OpenDatabases(txn, /*create=*/false));
  RETURN_IF_ERROR(impl.CheckFormat(txn));
  ASSIGN_OR_RETURN(IndexCoverage cov, impl.ReadCoverage(txn));
  RETURN_IF_ERROR(impl.CheckCounts(txn, cov));
  return txn.Commit();  // keeps the database handles for the environment's lifetime
}

absl::StatusOr<std::unique_ptr<LookupIndex::Impl>> CreateImpl(const std::string& index_dir,
                                                              const LookupIndexOptions& options,
                                                              unsigned env_flags) {
  std::error_code ec;
  if (fs::exists(index_dir, ec) && !fs::is_empty(index_dir, ec))
    return absl::AlreadyExistsError(absl::StrCat(index_dir, " exists and is not empty"));
  fs::create_directories(index_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", index_dir, ": ", ec.message()));
  auto impl = std::make_unique<LookupIndex::Impl>(index_dir, options);
  RETURN_IF_ERROR(impl->OpenEnv(env_flags));
  ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl->env(), impl->dir(), /*write=*/true));
  RETURN_IF_ERROR(impl->OpenDatabases(txn, /*create=*/true));
  RETURN_IF_ERROR(impl->InitMeta(txn));
  RETURN_IF_ERROR(txn.Commit());
  return impl;
}

// Removes "<index_dir>.rebuild-<pid>-<n>" directories left by processes that no longer run.
void RemoveDeadRebuilds(const fs::path& index_dir) {
  std::string prefix = index_dir.filename().string() + ".rebuild-";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(index_dir.parent_path(), ec)) {
    std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, prefix)) continue;
    absl::string_view rest = absl::string_view(name).substr(prefix.size());
    int pid = 0;
    if (!absl::SimpleAtoi(rest.substr(0, rest.find('-')), &pid) || pid == getpid()) continue;
    if (::kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(entry.path(), ec);
  }
}

std::string RebuildDirFor(const std::string& index_dir) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(index_dir, ".rebuild-", getpid(), "-", counter.fetch_add(1));
}

// Puts `fresh` at `index_dir` atomically; returns the path now holding the old index (to
// delete), or "" if there was none.
absl::StatusOr<std::string> SwapIn(const std::string& fresh, const std::string& index_dir) {
  if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, index_dir.c_str(), RENAME_EXCHANGE) == 0)
    return fresh;
  if (errno == ENOENT) {
    if (::rename(fresh.c_str(), index_dir.c_str()) != 0)
      return ErrnoStatus(absl::StrCat("rename ", fresh, " to ", index_dir), errno);
    return std::string();
  }
  if (errno != EINVAL && errno != ENOSYS)
    return ErrnoStatus(absl::StrCat("exchange ", fresh, " and ", index_dir), errno);
  // No RENAME_EXCHANGE on this filesystem: two renames; a crash between leaves no index,
  // which is rebuilt on next use.
  std::string old = fresh + ".old";
  if (::rename(index_dir.c_str(), old.c_str()) != 0)
    return ErrnoStatus(absl::StrCat("rename ", index_dir, " to ", old), errno);
  if (::rename(fresh.c_str(), index_dir.c_str()) != 0)
    return ErrnoStatus(absl::StrCat("rename ", fresh, " to ", index_dir), errno);
  return old;
}

}  // namespace

absl::Status LookupIndex::BuildCompactIndex(const std::string& scratch, const std::string& fresh,
                                            const LogFile& log, const LookupIndexOptions& options,
                                            const std::atomic<bool>* cancel) {
  // No fsync per commit while building: nothing depends on the scratch copy surviving a crash.
  ASSIGN_OR_RETURN(auto impl, CreateImpl(scratch, options, MDB_NOSYNC));
  LookupIndex index(std::move(impl));
  RETURN_IF_ERROR(index.CatchUp(log, cancel).status());
  // Each commit copies the pages it touches, so a build of many transactions leaves about
  // half of data.mdb free; a compacting copy writes only the live pages (measured: 211 -> 113
  // bytes per event at 1M events).
  std::error_code ec;
  fs::create_directories(fresh, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", fresh, ": ", ec.message()));
  // Written through the page cache (mdb_env_copy2 would use O_DIRECT), so the new index
  // starts warm.
  std::string data = fresh + "/data.mdb";
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(data, O_WRONLY | O_CREAT | O_EXCL));
  if (int rc = mdb_env_copyfd2(index.impl_->env(), fd.get(), MDB_CP_COMPACT); rc != 0)
    return lmdb::Error(fresh, "mdb_env_copyfd2", rc);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", data), errno);
  return SyncDir(fresh);
}

LookupIndex::LookupIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LookupIndex::~LookupIndex() = default;

absl::StatusOr<LookupIndexPtr> LookupIndex::Open(const std::string& index_dir,
                                                 const LookupIndexOptions& options) {
  std::string dir = NormalizeDir(index_dir);
  struct stat st;
  std::string data = absl::StrCat(dir, "/data.mdb");
  if (::stat(data.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no lookup index at ", dir));
    return ErrnoStatus(absl::StrCat("stat ", data), errno);
  }
  // LMDB would initialize an empty data file as a new environment, writing to it.
  if (st.st_size == 0)
    return absl::DataLossError(absl::StrCat("lookup index ", dir, " is damaged: empty data.mdb"));
  auto impl = std::make_unique<Impl>(dir, options);
  if (absl::Status st = OpenExisting(*impl); !st.ok()) {
    std::string prefix = absl::StrCat("lookup index ", dir);
    absl::string_view detail = st.message();
    if (absl::StartsWith(detail, prefix)) detail.remove_prefix(prefix.size() + 2);  // ": "
    return absl::DataLossError(absl::StrCat(prefix, " is damaged: ", detail));
  }
  return LookupIndexPtr(new LookupIndex(std::move(impl)));
}

absl::StatusOr<LookupIndexPtr> LookupIndex::Create(const std::string& index_dir,
                                                   const LookupIndexOptions& options) {
  ASSIGN_OR_RETURN(auto impl, CreateImpl(NormalizeDir(index_dir), options, MDB_NOMETASYNC));
  return LookupIndexPtr(new LookupIndex(std::move(impl)));
}

absl::StatusOr<LookupIndexPtr> LookupIndex::Rebuild(const std::string& index_dir,
                                                    const LogFile& log,
                                                    const LookupIndexOptions& options,
                                                    const std::atomic<bool>* cancel) {
  std::string dir = NormalizeDir(index_dir);
  std::error_code ec;
  fs::create_directories(fs::path(dir).parent_path(), ec);
  RemoveDeadRebuilds(dir);
  std::string fresh = RebuildDirFor(dir);
  std::string scratch = fresh + ".build";
  absl::Status built = BuildCompactIndex(scratch, fresh, log, options, cancel);
  fs::remove_all(scratch, ec);
  absl::StatusOr<std::string> old = built.ok() ? SwapIn(fresh, dir) : built;
  if (!old.ok()) {
    fs::remove_all(fresh, ec);
    return old.status();
  }
  RETURN_IF_ERROR(SyncDir(fs::path(dir).parent_path().string()));
  if (!old->empty()) fs::remove_all(*old, ec);
  return Open(dir, options);
}

// ---------------------------------------------------------------------------------------------
// Reading and catching up

const std::string& LookupIndex::dir() const { return impl_->dir(); }

bool LookupIndex::StillUsable() const { return impl_->StillUsable(); }

absl::StatusOr<IndexCoverage> LookupIndex::Coverage() const {
  ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl_->env(), impl_->dir(), /*write=*/false));
  return impl_->ReadCoverage(txn);
}

absl::StatusOr<IndexFreshness> LookupIndex::CompareWith(const LogFile& log) const {
  IndexFreshness f;
  ASSIGN_OR_RETURN(f.coverage, Coverage());
  ASSIGN_OR_RETURN(std::optional<std::string> reason, StaleReason(f.coverage, log));
  if (reason.has_value()) {
    f.state = IndexFreshness::State::kStale;
    f.stale_reason = *std::move(reason);
    return f;
  }
  f.lag_bytes = log.size() - f.coverage.end_offset;
  f.state = f.lag_bytes > 0 ? IndexFreshness::State::kLagging : IndexFreshness::State::kCurrent;
  return f;
}

absl::StatusOr<uint64_t> LookupIndex::CatchUp(const LogFile& log, const std::atomic<bool>* cancel) {
  absl::MutexLock lock(&impl_->write_mu());
  // A write transaction, with data.mdb trimmed to its last committed page.
  auto begin = [&]() -> absl::StatusOr<Txn> {
    ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl_->env(), impl_->dir(), /*write=*/true));
    RETURN_IF_ERROR(impl_->TrimDataFile());
    return txn;
  };
  ASSIGN_OR_RETURN(Txn txn, begin());
  ASSIGN_OR_RETURN(IndexCoverage cov, impl_->ReadCoverage(txn));
  ASSIGN_OR_RETURN(std::optional<std::string> reason, StaleReason(cov, log));
  if (reason.has_value())
    return absl::FailedPreconditionError(
        absl::StrCat("lookup index ", impl_->dir(), " is stale: ", *reason));
  ASSIGN_OR_RETURN(std::vector<HashRun> runs, impl_->ReadRuns(txn));
  if (std::optional<std::string> why = RunsMismatch(runs, cov.indexed_through))
    return absl::InternalError(impl_->Damaged(*why));
  ASSIGN_OR_RETURN(LogRegion tail, log.Map(cov.end_offset));
  const uint64_t per_txn = std::max<uint64_t>(1, impl_->options().events_per_txn);
  std::vector<HashEntry> batch;
  batch.reserve(std::min<uint64_t>(per_txn, tail.data().size() / 128 + 1));
  uint64_t added = 0;
  absl::Status write_status;
  // Commits the events indexed so far (their locations, their hash run, the coverage).
  auto commit = [&]() -> absl::Status {
    const uint64_t events = batch.size();
    uint64_t merged = 0;
    RETURN_IF_ERROR(impl_->AddHashRun(txn, batch, &runs, &merged));
    batch.clear();
    RETURN_IF_ERROR(impl_->WriteCoverage(txn, cov));
    // Every page this transaction can have allocated: its appends ("seq" ~36 bytes and "hash"
    // ~58 bytes an event, less than 128 with branch pages), the merged runs (~58 bytes a
    // digest) and the copies their deletion made (as many again).
    RETURN_IF_ERROR(impl_->ReserveForCommit(events * 128 + merged * 160));
    return txn.Commit();
  };
  ChainHead from{cov.indexed_through, cov.hash, cov.ts};
  absl::Status scan =
      ScanEvents(tail.data(), from, cov.end_offset, [&](const EventView& ev, uint64_t offset) {
        if (ev.line.size() > UINT32_MAX) {
          write_status = EventLineError(ev.seq, "line longer than 4 GiB");
          return false;
        }
        EventLocation loc{ev.seq, offset, static_cast<uint32_t>(ev.line.size()), ev.ts};
        write_status = impl_->PutLocation(txn, loc);
        if (!write_status.ok()) return false;
        HashEntry& entry = batch.emplace_back();
        entry.seq = ev.seq;
        FromHex(ev.hash, &entry.digest);  // ParseEventLine checked it is 64 lowercase hex
        cov.indexed_through = ev.seq;
        cov.hash.assign(ev.hash);
        cov.ts = ev.ts;
        cov.line_offset = offset;
        cov.end_offset = loc.end();
        if (++added % per_txn != 0) return true;
        // A full transaction: commit it and continue in a new one.
        write_status = commit();
        if (write_status.ok() && cancel != nullptr && cancel->load())
          write_status = absl::CancelledError("lookup index rebuild cancelled");
        if (!write_status.ok()) return false;
        auto next = begin();
        if (!next.ok()) write_status = next.status();
        if (next.ok()) txn = *std::move(next);
        return next.ok();
      });
  RETURN_IF_ERROR(write_status);
  // Events before a malformed line stay indexed.
  RETURN_IF_ERROR(commit());
  RETURN_IF_ERROR(scan);
  return added;
}

absl::StatusOr<std::optional<EventLocation>> LookupIndex::Locate(uint64_t seq) const {
  ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl_->env(), impl_->dir(), /*write=*/false));
  return impl_->Locate(txn, seq);
}

absl::StatusOr<std::optional<uint64_t>> LookupIndex::SeqOfHash(std::string_view hash_hex) const {
  Digest d;
  if (!FromHex(hash_hex, &d))
    return absl::InvalidArgumentError("an event hash is 64 lowercase hex digits");
  ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl_->env(), impl_->dir(), /*write=*/false));
  return impl_->SeqOfHash(txn, d);
}

absl::StatusOr<RangeLocation> LookupIndex::LocateRange(int64_t from_ts, int64_t to_ts,
                                                       size_t limit) const {
  ASSIGN_OR_RETURN(Txn txn, Txn::Begin(impl_->env(), impl_->dir(), /*write=*/false));
  ASSIGN_OR_RETURN(IndexCoverage cov, impl_->ReadCoverage(txn));
  ASSIGN_OR_RETURN(uint64_t first, impl_->LowerBoundByTs(txn, cov.indexed_through, from_ts));
  RangeLocation range;
  range.start_offset = cov.end_offset;
  if (first > cov.indexed_through) return range;
  ASSIGN_OR_RETURN(EventLocation first_loc, impl_->MustLocate(txn, first));
  range.start_offset = first_loc.offset;
  if (to_ts >= from_ts)
    RETURN_IF_ERROR(impl_->CollectFrom(txn, first, to_ts, limit, &range.events));
  return range;
}

std::optional<std::pair<size_t, size_t>> PlanHashRunMerge(const std::vector<HashRun>& runs) {
  auto level = [](uint64_t size) {
    int l = 0;
    for (uint64_t bound = kHashRunFanIn; size >= bound; bound *= kHashRunFanIn) ++l;
    return l;
  };
  auto sealed = [&](size_t i) { return runs[i].size() >= kSealedHashRunSize; };
  // For each end, newest first, walk back to the nearest sealed run: the highest level seen
  // and how many runs have it.
  for (size_t end = runs.size(); end >= kHashRunFanIn; --end) {
    int top = -1;
    size_t at_top = 0;
    for (size_t j = end; j-- > 0 && !sealed(j);) {
      int l = level(runs[j].size());
      if (l > top) {
        top = l;
        at_top = 1;
      } else if (l == top) {
        ++at_top;
      }
      if (l == top && at_top >= kHashRunFanIn) return std::pair{j, end};
    }
  }
  size_t open = 0;
  for (size_t i = 0; i < runs.size(); ++i) open += !sealed(i);
  if (open <= kMaxOpenHashRuns) return std::nullopt;
  std::optional<size_t> best;
  for (size_t i = 0; i + 1 < runs.size(); ++i) {
    if (sealed(i) || sealed(i + 1)) continue;
    if (!best || runs[i].size() + runs[i + 1].size() < runs[*best].size() + runs[*best + 1].size())
      best = i;
  }
  if (!best) return std::nullopt;
  return std::pair{*best, *best + 2};
}

}  // namespace snapledger
