#include "common/index/faiss/faiss_vector_index.h"

#include <errno.h>
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/fmt_absl.h"
#include "common/base/status_macros.h"
#include "common/index/faiss/inner_product.h"

namespace snapledger {
namespace {

using idx_t = faiss::Index::idx_t;
static_assert(std::is_same_v<idx_t, int64_t>, "NearestCentroids writes int64_t list numbers");

constexpr size_t kMinCandidates = 32;
constexpr uint64_t kExactRangeMin = 4096;  // seq ranges this short are always scored exactly

std::string_view AsBytes(absl::Span<const float> v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
}

uint64_t HashVector(absl::Span<const float> v) { return std::hash<std::string_view>{}(AsBytes(v)); }

void AssignToLists(const faiss::IndexIVFFlat& ivf, const float* x, size_t n, idx_t* out) {
  const auto* quantizer = static_cast<const faiss::IndexFlat*>(ivf.quantizer);
  NearestCentroids(quantizer->get_xb(), ivf.nlist, ivf.d, x, n, out, nullptr);
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
    NearestCentroids(get_xb(), static_cast<size_t>(ntotal), static_cast<size_t>(d), x,
                     static_cast<size_t>(n), labels, distances);
  }
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

}  // namespace

// Whether an entry has a seq in [min_seq, max_seq].
class FaissVectorIndex::SeqRange {
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

// Every entry a scan scored, brought into order lazily: [0, ordered) is sorted and no later
// element precedes any of it.
struct FaissVectorIndex::Candidates {
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
// Adding.

// Events to apply: the entry of each event (existing or new) and the new entries' vectors.
struct FaissVectorIndex::Batch {
  uint64_t first_seq = 0;
  std::vector<uint32_t> entry_of;  // per event
  std::vector<float> fresh;        // new entries' vectors, entry order
  std::vector<uint64_t> fresh_hashes;
  size_t fresh_count(size_t dim) const { return fresh.size() / dim; }
};

FaissVectorIndex::FaissVectorIndex(FilePaths paths, IndexIdentity identity,
                                   IndexStructure structure, int nprobe,
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

FaissVectorIndex::~FaissVectorIndex() = default;

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

FaissVectorIndex::Batch FaissVectorIndex::Resolve(uint64_t first_seq,
                                                  absl::Span<const float> vectors) {
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
      InnerProducts(query.data(), v.data(), 1, dim_, &it->second);
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
    InnerProducts(query.data(), rows, n, dim_, scores.data());
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
  InnerProducts(query.data(), static_cast<const faiss::IndexFlat*>(ivf_->quantizer)->get_xb(),
                nlist, dim_, coarse.data());
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

absl::StatusOr<WrittenBase> FaissVectorIndex::WriteBase(const std::string& path) const {
  // Serializing reads the index: searches continue (shared), Add waits (write_mu_ is held).
  absl::ReaderMutexLock lock(&mu_);
  const BaseHeader header{identity_, structure_, last_seq_,
                          ivf_ != nullptr ? kKindIvf : kKindExact};
  return WriteBaseFile(path, header, seqs_, *index_);
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

absl::Status FaissVectorIndex::AdoptBase(const std::string& path, const WrittenBase& written) {
  ASSIGN_OR_RETURN(struct stat st, StatPath(path));
  base_digest_ = written.digest;
  base_bytes_ = written.bytes;
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
  absl::StatusOr<WrittenBase> written = WriteBase(tmp);
  if (!written.ok() || ::rename(tmp.c_str(), paths_.base.c_str()) != 0) {
    absl::Status st = written.ok()
                          ? ErrnoStatus(absl::StrCat("rename ", tmp, " to ", paths_.base), errno)
                          : written.status();
    (void)RemoveIfExists(tmp);
    return st;
  }
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  // The old journal extends the old base: stale from here on, whether or not this succeeds.
  RETURN_IF_ERROR(AdoptBase(paths_.base, *written));
  RETURN_IF_ERROR(RemoveIfExists(paths_.journal));
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  ClearPending();
  spdlog::info("vector index {}: compacted into a new base of {} MB in {}", paths_.dir,
               written->bytes >> 20, absl::FormatDuration(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status FaissVectorIndex::CreateJournal() {
  const std::string header = EncodeJournalHeader(base_digest_);
  RETURN_IF_ERROR(WriteFileAtomic(paths_.journal, header));
  journal_exists_ = true;
  journal_bytes_ = header.size();
  journal_truncate_ = false;
  journal_fd_.Reset();
  return absl::OkStatus();
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
                                 JournalRecordBytes(pending_entries_.size(), pending_fresh_.size());
  if (journal_after > limit) return Compact();
  // Encoded only now: its digest reads every byte. Its pieces point into pending_entries_ and
  // pending_fresh_ (at tens of thousands of events per step they are megabytes).
  const JournalRecordPieces record =
      EncodeJournalRecord(pending_first_seq_, pending_entries_, pending_fresh_, dim_);
  return AppendJournal(record.pieces());
}

absl::Status FaissVectorIndex::PublishFrom(const std::string& staged_path) {
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<WrittenBase> written = WriteBase(staged_path);
  if (!written.ok() || ::rename(staged_path.c_str(), paths_.base.c_str()) != 0) {
    absl::Status st =
        written.ok() ? ErrnoStatus(absl::StrCat("rename ", staged_path, " to ", paths_.base), errno)
                     : written.status();
    (void)RemoveIfExists(staged_path);
    return st;
  }
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  staged_ = false;
  RETURN_IF_ERROR(AdoptBase(paths_.base, *written));
  // The previous index's journal extends the previous base: remove it.
  RETURN_IF_ERROR(RemoveIfExists(paths_.journal));
  RETURN_IF_ERROR(SyncDir(paths_.dir));
  ClearPending();
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Loading.

absl::Status FaissVectorIndex::LoadBase(std::string_view body, const std::string& what,
                                        const Digest& digest, uint64_t base_bytes,
                                        const struct stat& st) {
  absl::MutexLock write(&write_mu_);
  absl::WriterMutexLock lock(&mu_);
  auto bad = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(what, " is damaged: ", msg));
  };
  ASSIGN_OR_RETURN(BaseContents contents, ParseBaseBody(body, what));
  const uint64_t entries = contents.seqs.size();
  const uint64_t last_seq = contents.last_seq;
  const uint32_t kind = contents.kind;
  ASSIGN_OR_RETURN(std::unique_ptr<faiss::Index> index, ReadFaissIndex(contents.faiss_index, what));
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
  seqs_ = std::move(contents.seqs);
  entry_of_seq_ = std::move(contents.entry_of_seq);
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
  ASSIGN_OR_RETURN(Digest extends, CheckJournalHeader(data, what));
  if (extends != base_digest_) {
    spdlog::info("{} extends another base (left by an interrupted compaction); ignored", what);
    return absl::OkStatus();
  }
  size_t pos = kJournalHeaderSize;
  while (pos < data.size()) {
    ASSIGN_OR_RETURN(JournalRecordRead read, ReadJournalRecord(data, pos, dim_, LastSeq(), what));
    if (!read.record.has_value()) {
      // A crash during the append: the index is derived, LastSeq() says how far it got, and
      // the caller re-adds the rest from the log; the next Persist overwrites the record.
      spdlog::warn("{}: the last record (at offset {}) {}; ignored, its events will be re-added",
                   what, pos, read.torn);
      journal_exists_ = true;
      journal_bytes_ = pos;
      journal_truncate_ = true;
      return absl::OkStatus();
    }
    Batch b;
    b.first_seq = read.record->first_seq;
    b.entry_of = std::move(read.record->entry_of);
    b.fresh = std::move(read.record->fresh);
    const size_t fresh = b.fresh_count(dim_);
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
    pos += read.bytes;
  }
  journal_exists_ = true;
  journal_bytes_ = pos;
  return absl::OkStatus();
}

}  // namespace snapledger
