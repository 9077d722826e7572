#include "common/index/faiss/vector_files.h"

#include <errno.h>
#include <faiss/Index.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

static_assert(std::endian::native == std::endian::little,
              "the vector index files are little-endian and written from memory");

namespace snapledger {
namespace {

constexpr char kBaseMagic[8] = {'S', 'L', 'V', 'E', 'C', 'I', 'D', 'X'};
constexpr char kJournalMagic[8] = {'S', 'L', 'V', 'E', 'C', 'J', 'N', 'L'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kBaseHeaderSize = 24;         // magic, version, reserved, total length
constexpr uint32_t kRecordMagic = 0x524a4c53;  // "SLJR"
constexpr uint32_t kRecordLengthMask = 0xa5a5a5a5;
constexpr size_t kRecordHeaderSize = 12;
constexpr size_t kRecordCheckSize = 8;
constexpr size_t kRecordFixedPayload = 16;  // first seq, events, new entries

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

// A base file up to the FAISS index: its header (total length 0, filled in by the writer),
// identity, structure, last seq, entry count, kind and seq lists.
std::string EncodeBaseFront(const BaseHeader& h, absl::Span<const SeqList> seqs) {
  std::string m;
  m.append(kBaseMagic, sizeof kBaseMagic);
  Put<uint32_t>(&m, kFormatVersion);
  Put<uint32_t>(&m, 0);
  Put<uint64_t>(&m, 0);  // total length
  Put<uint32_t>(&m, static_cast<uint32_t>(h.identity.embedder_id.size()));
  m.append(h.identity.embedder_id);
  Put<uint32_t>(&m, static_cast<uint32_t>(h.identity.dimension));
  Put<uint64_t>(&m, h.structure.exact_below);
  Put<uint32_t>(&m, h.structure.nlist);
  Put<uint64_t>(&m, h.structure.train_size);
  Put<uint64_t>(&m, h.structure.kmeans_seed);
  Put<uint32_t>(&m, h.structure.kmeans_iterations);
  Put<uint64_t>(&m, h.last_seq);
  Put<uint64_t>(&m, seqs.size());
  Put<uint32_t>(&m, h.kind);
  m.reserve(m.size() + seqs.size() * 4 + h.last_seq * 8);
  for (const SeqList& s : seqs) {
    Put<uint32_t>(&m, static_cast<uint32_t>(s.size()));
    m.append(reinterpret_cast<const char*>(s.data()), s.size() * sizeof(uint64_t));
  }
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// vectors.index

absl::StatusOr<WrittenBase> WriteBaseFile(const std::string& path, const BaseHeader& header,
                                          absl::Span<const SeqList> seqs,
                                          const faiss::Index& index) {
  std::string front = EncodeBaseFront(header, seqs);
  CountingWriter counter;
  try {
    faiss::write_index(&index, &counter);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serializing the FAISS index failed: ", e.what()));
  }
  const uint64_t total = front.size() + sizeof(uint64_t) + counter.bytes + sizeof(Digest);
  std::memcpy(front.data() + 16, &total, sizeof total);
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  HashingFileWriter out(fd.get(), path);
  out.Append(front);
  std::string len;
  Put<uint64_t>(&len, counter.bytes);
  out.Append(len);
  try {
    faiss::write_index(&index, &out);
  } catch (const std::exception& e) {
    RETURN_IF_ERROR(out.status());
    return absl::InternalError(absl::StrCat("serializing the FAISS index failed: ", e.what()));
  }
  ASSIGN_OR_RETURN(Digest digest, out.FinishWithDigest());
  RETURN_IF_ERROR(SyncFd(fd.get(), path, /*data_only=*/false));
  return WrittenBase{digest, total};
}

absl::StatusOr<CheckedBaseFile> CheckBaseFile(std::string_view data, const std::string& path) {
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
  CheckedBaseFile f;
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

absl::StatusOr<BaseContents> ParseBaseBody(std::string_view body, const std::string& what) {
  auto bad = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(what, " is damaged: ", msg));
  };
  ByteReader r(body, what);
  BaseContents c;
  uint64_t entries;
  RETURN_IF_ERROR(r.Get(&c.last_seq, "last seq"));
  RETURN_IF_ERROR(r.Get(&entries, "entry count"));
  RETURN_IF_ERROR(r.Get(&c.kind, "index kind"));
  const uint64_t last_seq = c.last_seq;
  if (entries > last_seq || last_seq > body.size() / sizeof(uint64_t))
    return bad(absl::StrCat(entries, " entries for ", last_seq, " seqs"));
  std::vector<bool> seen(last_seq + 1, false);
  c.seqs.resize(entries);
  c.entry_of_seq.assign(last_seq, 0);
  for (uint64_t e = 0; e < entries; ++e) {
    uint32_t n;
    std::string_view bytes;
    RETURN_IF_ERROR(r.Get(&n, "seq count"));
    RETURN_IF_ERROR(r.Bytes(size_t{n} * sizeof(uint64_t), &bytes, "seq list"));
    if (n == 0) return bad(absl::StrCat("entry ", e, " has no seqs"));
    SeqList& s = c.seqs[e];
    s.resize(n);
    std::memcpy(s.data(), bytes.data(), bytes.size());
    for (uint32_t i = 0; i < n; ++i) {
      if (s[i] == 0 || s[i] > last_seq || seen[s[i]] || (i > 0 && s[i] <= s[i - 1]))
        return bad(absl::StrCat("entry ", e, " lists seq ", s[i], " out of order or twice"));
      seen[s[i]] = true;
      c.entry_of_seq[s[i] - 1] = static_cast<uint32_t>(e);
    }
    if (e > 0 && s.front() <= c.seqs[e - 1].front())
      return bad(absl::StrCat("entry ", e, " is out of first-seq order"));
  }
  if (std::count(seen.begin() + 1, seen.end(), true) != static_cast<ptrdiff_t>(last_seq))
    return bad(absl::StrCat("the seq lists do not cover 1..", last_seq));
  uint64_t faiss_len;
  RETURN_IF_ERROR(r.Get(&faiss_len, "FAISS index length"));
  RETURN_IF_ERROR(r.Bytes(faiss_len, &c.faiss_index, "FAISS index"));
  if (r.remaining() != 0) return bad(absl::StrCat(r.remaining(), " unexpected trailing bytes"));
  return c;
}

absl::StatusOr<std::unique_ptr<faiss::Index>> ReadFaissIndex(std::string_view bytes,
                                                             const std::string& what) {
  try {
    SpanReader reader(bytes);
    return std::unique_ptr<faiss::Index>(faiss::read_index(&reader));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat(what, " is damaged: FAISS cannot read its index: ", e.what()));
  }
}

// ---------------------------------------------------------------------------------------------
// vectors.journal

std::string EncodeJournalHeader(const Digest& base) {
  std::string header(kJournalMagic, sizeof kJournalMagic);
  Put<uint32_t>(&header, kFormatVersion);
  Put<uint32_t>(&header, 0);
  header.append(reinterpret_cast<const char*>(base.data()), base.size());
  Put<uint64_t>(&header, ShortDigest(header));
  return header;
}

absl::StatusOr<Digest> CheckJournalHeader(std::string_view data, const std::string& what) {
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
  Digest base;
  std::memcpy(base.data(), data.data() + 16, base.size());
  return base;
}

uint64_t JournalRecordBytes(size_t events, size_t fresh_floats) {
  return kRecordHeaderSize + kRecordFixedPayload + uint64_t{events} * 4 +
         uint64_t{fresh_floats} * sizeof(float) + kRecordCheckSize;
}

JournalRecordPieces EncodeJournalRecord(uint64_t first_seq, absl::Span<const uint32_t> entry_of,
                                        absl::Span<const float> fresh, size_t dim) {
  const uint32_t events = static_cast<uint32_t>(entry_of.size());
  const uint32_t fresh_n = static_cast<uint32_t>(fresh.size() / dim);
  const uint32_t payload = static_cast<uint32_t>(kRecordFixedPayload + entry_of.size() * 4 +
                                                 fresh.size() * sizeof(float));
  JournalRecordPieces r;
  Put<uint32_t>(&r.header, kRecordMagic);
  Put<uint32_t>(&r.header, payload);
  Put<uint32_t>(&r.header, payload ^ kRecordLengthMask);
  Put<uint64_t>(&r.header, first_seq);
  Put<uint32_t>(&r.header, events);
  Put<uint32_t>(&r.header, fresh_n);
  r.entries = std::string_view(reinterpret_cast<const char*>(entry_of.data()), size_t{events} * 4);
  r.fresh =
      std::string_view(reinterpret_cast<const char*>(fresh.data()), fresh.size() * sizeof(float));
  Put<uint64_t>(&r.check, ShortDigest({r.header, r.entries, r.fresh}));
  return r;
}

absl::StatusOr<JournalRecordRead> ReadJournalRecord(std::string_view data, size_t pos, size_t dim,
                                                    uint64_t last_seq, const std::string& what) {
  auto bad = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(what, " is damaged: ", msg));
  };
  auto torn = [](std::string why) {
    JournalRecordRead read;
    read.torn = std::move(why);
    return read;
  };
  std::string_view rest = data.substr(pos);
  if (rest.find_first_not_of('\0') == std::string_view::npos)
    return torn("was never written (zero bytes)");
  if (rest.size() < kRecordHeaderSize) return torn("is cut short");
  uint32_t magic, len, len_check;
  std::memcpy(&magic, rest.data(), 4);
  std::memcpy(&len, rest.data() + 4, 4);
  std::memcpy(&len_check, rest.data() + 8, 4);
  if (magic != kRecordMagic || (len ^ kRecordLengthMask) != len_check)
    return bad(absl::StrCat("bad record header at offset ", pos));
  if (rest.size() < kRecordHeaderSize + size_t{len} + kRecordCheckSize) return torn("is cut short");
  uint64_t check;
  std::memcpy(&check, rest.data() + kRecordHeaderSize + len, sizeof check);
  if (ShortDigest(rest.substr(0, kRecordHeaderSize + len)) != check)
    return bad(absl::StrCat("checksum mismatch in the record at offset ", pos));
  ByteReader r(rest.substr(kRecordHeaderSize, len), absl::StrCat(what, " record at ", pos));
  JournalRecord record;
  uint32_t events, fresh;
  RETURN_IF_ERROR(r.Get(&record.first_seq, "first seq"));
  RETURN_IF_ERROR(r.Get(&events, "event count"));
  RETURN_IF_ERROR(r.Get(&fresh, "new entry count"));
  std::string_view ids, vectors;
  RETURN_IF_ERROR(r.Bytes(size_t{events} * 4, &ids, "entry ids"));
  RETURN_IF_ERROR(r.Bytes(size_t{fresh} * dim * sizeof(float), &vectors, "vectors"));
  if (r.remaining() != 0 || record.first_seq != last_seq + 1)
    return bad(absl::StrCat("the record at offset ", pos, " does not continue seq ", last_seq));
  record.entry_of.resize(events);
  std::memcpy(record.entry_of.data(), ids.data(), ids.size());
  record.fresh.resize(size_t{fresh} * dim);
  std::memcpy(record.fresh.data(), vectors.data(), vectors.size());
  JournalRecordRead read;
  read.record = std::move(record);
  read.bytes = kRecordHeaderSize + len + kRecordCheckSize;
  return read;
}

// ---------------------------------------------------------------------------------------------
// File operations.

std::string JoinPath(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

std::string UniqueName(absl::string_view prefix) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(prefix, ::getpid(), "-", counter.fetch_add(1));
}

absl::StatusOr<struct stat> StatPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  return st;
}

absl::Status RemoveIfExists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return ErrnoStatus(absl::StrCat("unlink ", path), errno);
  return absl::OkStatus();
}

absl::Status SyncFd(int fd, const std::string& path, bool data_only) {
  int rc = data_only ? ::fdatasync(fd) : ::fsync(fd);
  if (rc != 0) return ErrnoStatus(absl::StrCat(data_only ? "fdatasync " : "fsync ", path), errno);
  return absl::OkStatus();
}

}  // namespace snapledger
