// snapledger-index-bench: the derived similarity index on a ledger of --events realistic
// events (OvsEventGenerator, the real log format), every figure next to its baseline measured
// in the same run on the same data (see bench/README.md):
//   1. plain read of events.jsonl (read(2), page cache warm): the baseline of 2 and 3;
//   2. read + parse + embed with FeatureHashEmbedder (dim 128), 1 and 2 threads;
//   3. full rebuild of the embedded index through SimilarityIndex::Rebuild (read, parse, embed,
//      add, publish), against the 33 MB/s target and the plain read; then what opening the
//      published index costs, the index alone (Add of the same vectors, Publish), and a
//      primary's steady state (blocks of 2,000 events: Add + Persist each);
//   4. recall@10 of --queries similarity queries (embeddings of held-out events and text
//      queries) against exact brute force over every seq, for several nprobe values;
//   5. query latency p50/p99, unfiltered and with seq-range filters;
//   6. hnswlib (M=16, ef_construction=100, identical vectors folded) built from the same
//      vectors on 2 threads: build time, recall and latency for several ef values.
// The ledger is written once under --dir and reused by later runs; the index directories are
// removed after each run. Bounded: --timeout-seconds, and SIGINT/SIGTERM stop it cleanly.
#include <faiss/Index.h>
#include <faiss/utils/Heap.h>
#include <faiss/utils/distances.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hnswlib/hnswlib.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/bench_util.h"
#include "common/base/fmt_absl.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/index/faiss/faiss_vector_store.h"
#include "common/index/feature_hash_embedder.h"
#include "common/index/similarity_index.h"
#include "common/ledger/event_format.h"
#include "common/ledger/event_log.h"
#include "common/ledger/head_file.h"
#include "common/testing/ovs_event_generator.h"

namespace snapledger::bench {
namespace {

constexpr double kTargetRebuildMBps = 33;
constexpr double kTargetRecall = 0.95;
constexpr double kTargetP99Ms = 20;
constexpr size_t kK = 10;
constexpr size_t kAddBatch = 8192;     // as SimilarityIndexOptions::batch_events
constexpr size_t kFollowBlock = 2000;  // events per block in the steady-state test
constexpr int kFollowBlocks = 10;
constexpr size_t kHnswCandidates = 32;  // entries asked of hnswlib per query (FAISS's minimum)
constexpr float kTieTolerance = 1e-6f;
const char kProgram[] = "snapledger-index-bench";

struct Options {
  uint64_t events = 1000000;
  std::string dir;
  int queries = 1000;
  int runs = 3;
  uint64_t seed = 1;
  std::vector<int> nprobes = {8, 16, 24, 32};
  EmbeddedIndexOptions index;  // structure; nprobe: --nprobe, index.nprobe for the rebuild
  bool hnsw = true;
  int hnsw_m = 16;
  int hnsw_ef_construction = 100;
  std::vector<int> hnsw_efs = {64, 128, 256};
  int timeout_seconds = 3600;
};

// Stops the benchmark at the deadline or on a stop signal.
class Guard {
 public:
  explicit Guard(int timeout_seconds)
      : stop_(kProgram, "stopping after the current step", SignalStop::OnRepeat::kIgnore),
        deadline_(NowNanos() + int64_t{timeout_seconds} * 1000000000) {}
  absl::Status Check() const {
    RETURN_IF_ERROR(stop_.status());
    if (NowNanos() > deadline_) return absl::DeadlineExceededError("--timeout-seconds reached");
    return absl::OkStatus();
  }

 private:
  SignalStop stop_;
  int64_t deadline_;
};

double Seconds(int64_t since) { return (NowNanos() - since) / 1e9; }

// ---------------------------------------------------------------------------------------------
// The ledger and the held-out events.

// Writes `events` generated events into `ledger_dir` through EventLog (a real chain), or reuses
// the ledger a previous run left there (it must hold exactly `events` events).
absl::Status PrepareLedger(const Options& o, const std::string& ledger_dir, bool* reused) {
  const std::string log_path = absl::StrCat(ledger_dir, "/", kEventsFile);
  std::error_code ec;
  if (std::filesystem::exists(log_path, ec)) {
    ASSIGN_OR_RETURN(std::optional<HeadRecord> head, ReadHeadFile(ledger_dir));
    if (!head || head->head.seq != o.events) {
      return absl::FailedPreconditionError(absl::StrCat(ledger_dir, " holds a ledger of ",
                                                        head ? head->head.seq : 0, " events, not ",
                                                        o.events, "; use another --dir"));
    }
    *reused = true;
    return absl::OkStatus();
  }
  *reused = false;
  // Written beside its final name and renamed when complete, so an interrupted write is never
  // taken for a ledger (and is removed by the next run).
  const std::string partial = ledger_dir + ".partial";
  std::filesystem::remove_all(partial, ec);
  std::filesystem::create_directories(partial, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", partial, ": ", ec.message()));
  {
    EventLogOptions options;
    options.durability = Durability::kInterval;
    options.sync_interval = absl::Milliseconds(500);
    ASSIGN_OR_RETURN(EventLogPtr log, EventLog::Create(partial, /*epoch=*/1, options));
    OvsEventGenerator gen(o.seed);
    const int64_t start = NowNanos();
    for (uint64_t done = 0; done < o.events;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(20000, o.events - done));
      RETURN_IF_ERROR(log->AppendBatch(gen.Generate(n)).status());
      done += n;
    }
    RETURN_IF_ERROR(log->Sync());
    fmt::print("  wrote {} events in {:.1f} s\n", o.events, Seconds(start));
  }
  std::filesystem::rename(partial, ledger_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", partial, ": ", ec.message()));
  return absl::OkStatus();
}

// The `count` events the generator makes after the ledger's: never in the index.
std::vector<std::string> HeldOutEvents(const Options& o, size_t count) {
  OvsEventGenerator gen(o.seed);
  for (uint64_t done = 0; done < o.events;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(100000, o.events - done));
    gen.Generate(n);
    done += n;
  }
  return gen.Generate(count);
}

// Free-text queries as an operator would type them, from held-out events' fields.
std::vector<std::string> TextQueries(const std::vector<std::string>& bodies, size_t count) {
  std::vector<std::string> out;
  for (size_t i = 0; out.size() < count && i < bodies.size(); ++i) {
    nlohmann::json b = nlohmann::json::parse(bodies[i]);
    auto field = [&](const char* k) {
      return b.contains(k) ? (b[k].is_string() ? b[k].get<std::string>() : b[k].dump()) : "";
    };
    switch (i % 4) {
      case 0:
        out.push_back(absl::StrCat(field("event"), " ", field("host")));
        break;
      case 1:
        out.push_back(absl::StrCat(field("event"), " bridge=", field("bridge")));
        break;
      case 2:
        out.push_back(absl::StrCat(field("port"), " ", field("event")));
        break;
      default:
        out.push_back(absl::StrCat("host=", field("host"), " ", field("event")));
        break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading and embedding.

constexpr size_t kReadChunk = 16 << 20;

// Reads the whole file with read(2); returns the seconds.
absl::StatusOr<double> PlainRead(const std::string& path, uint64_t* bytes) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  std::vector<char> buf(kReadChunk);
  const int64_t start = NowNanos();
  *bytes = 0;
  while (true) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("read ", path), errno);
    if (n == 0) break;
    *bytes += static_cast<uint64_t>(n);
  }
  return Seconds(start);
}

// Reads events.jsonl in chunks, parses every line's envelope and embeds the bodies in batches
// of kAddBatch; appends the vectors to *keep when it is not null. Returns the seconds.
absl::StatusOr<double> ReadParseEmbed(const std::string& path, Embedder& embedder, int threads,
                                      uint64_t expect_events, std::vector<float>* keep) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  const int64_t start = NowNanos();
  std::string buf, carry;
  std::vector<std::string_view> bodies;
  std::vector<float> vectors;
  uint64_t line_no = 0;
  buf.resize(kReadChunk);
  while (true) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("read ", path), errno);
    if (n == 0) break;
    std::string chunk = std::move(carry);
    chunk.append(buf.data(), static_cast<size_t>(n));
    size_t end = chunk.rfind('\n');
    if (end == std::string::npos) {
      carry = std::move(chunk);
      continue;
    }
    std::string_view lines(chunk.data(), end + 1);
    bodies.clear();
    for (size_t pos = 0; pos < lines.size();) {
      size_t nl = lines.find('\n', pos);
      ++line_no;
      absl::StatusOr<EventView> ev = ParseEventLine(lines.substr(pos, nl - pos));
      if (!ev.ok()) {
        return absl::DataLossError(
            absl::StrCat(path, " line ", line_no, ": ", ev.status().message()));
      }
      bodies.push_back(ev->body);
      pos = nl + 1;
    }
    for (size_t from = 0; from < bodies.size(); from += kAddBatch) {
      const size_t m = std::min(kAddBatch, bodies.size() - from);
      RETURN_IF_ERROR(EmbedInParallel(embedder, absl::MakeConstSpan(bodies).subspan(from, m),
                                      threads, &vectors));
      if (keep != nullptr) keep->insert(keep->end(), vectors.begin(), vectors.end());
    }
    carry.assign(chunk, end + 1);
  }
  if (!carry.empty()) return absl::DataLossError(absl::StrCat(path, " ends inside a line"));
  if (line_no != expect_events)
    return absl::InternalError(
        absl::StrCat(path, " has ", line_no, " events, expected ", expect_events));
  return Seconds(start);
}

// ---------------------------------------------------------------------------------------------
// Exact answers and measuring a searcher.

constexpr int kDim = 128;

// A seq-range filter the benchmark measures, and the exact 10th score of every query within it.
struct FilterCase {
  std::string name;
  SearchFilter filter;
  std::vector<float> tenth;  // per query
};

// The exact k-th best inner product of each query over vectors of seqs [from, to]: brute force
// over every seq (not over folded entries) with FAISS's exact search (BLAS), the queries split
// over two threads.
std::vector<float> ExactKth(const std::vector<float>& queries, const std::vector<float>& vectors,
                            uint64_t from, uint64_t to) {
  const size_t nq = queries.size() / kDim;
  std::vector<float> dist(nq * kK);
  std::vector<faiss::Index::idx_t> ids(nq * kK);
  auto part = [&](size_t q0, size_t q1) {
    faiss::float_minheap_array_t heap{q1 - q0, kK, ids.data() + q0 * kK, dist.data() + q0 * kK};
    faiss::knn_inner_product(queries.data() + q0 * kDim, vectors.data() + (from - 1) * kDim, kDim,
                             q1 - q0, to - from + 1, &heap);
  };
  std::thread half(part, nq / 2, nq);
  part(0, nq / 2);
  half.join();
  std::vector<float> kth(nq);
  for (size_t q = 0; q < nq; ++q) kth[q] = dist[q * kK + kK - 1];  // sorted best first
  return kth;
}

using SearchFn = std::function<absl::StatusOr<std::vector<VectorHit>>(const float* query,
                                                                      const SearchFilter& filter)>;

struct Quality {
  double recall = 0;
  double p50_ms = 0;
  double p99_ms = 0;
};

// Recall@10 with ties: a hit counts when its exact score is at least the exact 10th score
// minus kTieTolerance (hashed events have many exact ties; which of the tied seqs an index
// returns is arbitrary, and the exact scorer and the index round differently).
absl::StatusOr<Quality> Measure(const SearchFn& search, const std::vector<float>& queries,
                                const std::vector<float>& vectors, const FilterCase& c,
                                const Guard& guard) {
  const size_t nq = queries.size() / kDim;
  std::vector<double> ms;
  size_t good = 0;
  for (size_t q = 0; q < nq; ++q) {
    if (q % 100 == 0) RETURN_IF_ERROR(guard.Check());
    const float* query = &queries[q * kDim];
    const int64_t start = NowNanos();
    ASSIGN_OR_RETURN(std::vector<VectorHit> hits, search(query, c.filter));
    ms.push_back((NowNanos() - start) / 1e6);
    for (const VectorHit& h : hits) {
      if (h.seq < c.filter.min_seq || h.seq > c.filter.max_seq || h.seq > vectors.size() / kDim)
        continue;
      float exact = faiss::fvec_inner_product(query, &vectors[(h.seq - 1) * kDim], kDim);
      if (exact >= c.tenth[q] - kTieTolerance) ++good;
    }
  }
  Quality out;
  out.recall = static_cast<double>(good) / (nq * kK);
  out.p50_ms = Percentile(ms, 50);
  out.p99_ms = Percentile(ms, 99);
  return out;
}

// ---------------------------------------------------------------------------------------------
// hnswlib with identical vectors folded, the measured alternative.

class FoldedHnsw {
 public:
  // Folds `vectors` (seq i+1 at row i) and inserts one point per distinct vector on `threads`.
  FoldedHnsw(const std::vector<float>& vectors, int m, int ef_construction, int threads)
      : space_(kDim) {
    const size_t n = vectors.size() / kDim;
    std::unordered_map<std::string_view, uint32_t> entry_of;
    entry_of.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      std::string_view bytes(reinterpret_cast<const char*>(&vectors[i * kDim]),
                             kDim * sizeof(float));
      auto [it, fresh] = entry_of.try_emplace(bytes, static_cast<uint32_t>(rows_.size()));
      if (fresh) {
        rows_.push_back(i);
        seqs_.emplace_back();
      }
      seqs_[it->second].push_back(i + 1);
    }
    hnsw_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(&space_, rows_.size(), m,
                                                              ef_construction, /*seed=*/100);
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (size_t e; (e = next.fetch_add(1)) < rows_.size();)
          hnsw_->addPoint(&vectors[rows_[e] * kDim], e);
      });
    }
    for (std::thread& w : workers) w.join();
  }
  size_t entries() const { return rows_.size(); }
  void SetEf(int ef) { hnsw_->setEf(ef); }

  // Unfiltered only: hnswlib 0.6.2 has no filtered search.
  std::vector<VectorHit> Search(const float* query, size_t k) const {
    auto found = hnsw_->searchKnn(query, kHnswCandidates);
    std::vector<VectorHit> hits;
    while (!found.empty()) {
      const float score = 1 - found.top().first;  // InnerProductSpace: distance = 1 - ip
      for (uint64_t seq : seqs_[found.top().second]) hits.push_back({seq, score});
      found.pop();
    }
    std::stable_sort(hits.begin(), hits.end(), [](const VectorHit& a, const VectorHit& b) {
      return a.score != b.score ? a.score > b.score : a.seq < b.seq;
    });
    if (hits.size() > k) hits.resize(k);
    return hits;
  }

 private:
  hnswlib::InnerProductSpace space_;
  std::vector<size_t> rows_;                 // entry -> first row with its vector
  std::vector<std::vector<uint64_t>> seqs_;  // entry -> seqs
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw_;
};

// ---------------------------------------------------------------------------------------------
// One run.

struct RunFigures {
  double read_s = 0, embed1_s = 0, embed2_s = 0, rebuild_s = 0, open_s = 0;
  double add_s = 0, publish_s = 0, follow_p50_ms = 0, follow_p99_ms = 0, reopen_s = 0;
  uint64_t base_bytes = 0, journal_bytes = 0;
  std::vector<std::vector<Quality>> faiss;  // [nprobe][filter case]
  double hnsw_build_s = 0;
  size_t hnsw_entries = 0;
  std::vector<Quality> hnsw;  // [ef]
};

IndexIdentity Identity(Embedder& e) { return {e.Id(), e.Dimension()}; }

absl::StatusOr<std::unique_ptr<FaissVectorStore>> StoreAt(const Options& o, const std::string& dir,
                                                          int nprobe) {
  EmbeddedIndexOptions io = o.index;
  io.nprobe = nprobe;
  return FaissVectorStore::Open(dir, io);
}

uint64_t FileSize(const std::string& path) {
  std::error_code ec;
  uint64_t n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

// Adds held-out events after the ledger's last seq in blocks of kFollowBlock, with Persist
// after each, as a primary's index updater does; the per-block times.
absl::Status MeasureFollow(VectorIndex& index, const std::vector<float>& follow_vectors,
                           uint64_t first_seq, RunFigures* f) {
  std::vector<double> ms;
  for (int b = 0; b < kFollowBlocks; ++b) {
    std::vector<IndexedEvent> events(kFollowBlock);
    for (size_t i = 0; i < kFollowBlock; ++i) events[i].seq = first_seq + b * kFollowBlock + i;
    const int64_t start = NowNanos();
    RETURN_IF_ERROR(index.Add(
        events,
        absl::MakeConstSpan(follow_vectors).subspan(b * kFollowBlock * kDim, kFollowBlock * kDim)));
    RETURN_IF_ERROR(index.Persist());
    ms.push_back((NowNanos() - start) / 1e6);
  }
  f->follow_p50_ms = Percentile(ms, 50);
  f->follow_p99_ms = Percentile(ms, 99);
  return absl::OkStatus();
}

absl::StatusOr<RunFigures> RunOnce(const Options& o, const std::string& root,
                                   const std::string& ledger_dir, int run,
                                   const std::vector<float>& vectors,
                                   const std::vector<float>& queries,
                                   const std::vector<float>& follow_vectors,
                                   const std::vector<FilterCase>& cases, const Guard& guard) {
  RunFigures f;
  const std::string log_path = absl::StrCat(ledger_dir, "/", kEventsFile);
  uint64_t bytes = 0;
  FeatureHashEmbedder embedder(FeatureHashOptions{.dimension = kDim});

  // 1-2: plain read, then read + parse + embed.
  ASSIGN_OR_RETURN(f.read_s, PlainRead(log_path, &bytes));
  RETURN_IF_ERROR(guard.Check());
  ASSIGN_OR_RETURN(f.embed1_s, ReadParseEmbed(log_path, embedder, 1, o.events, nullptr));
  RETURN_IF_ERROR(guard.Check());
  ASSIGN_OR_RETURN(f.embed2_s, ReadParseEmbed(log_path, embedder, 2, o.events, nullptr));
  RETURN_IF_ERROR(guard.Check());

  // 3: full rebuild through SimilarityIndex (the production path), published.
  const std::string index_dir = absl::StrCat(root, "/index-run", run);
  {
    ASSIGN_OR_RETURN(std::unique_ptr<FaissVectorStore> store,
                     StoreAt(o, index_dir, o.index.nprobe));
    SimilarityIndex similarity(
        ledger_dir, std::make_unique<FeatureHashEmbedder>(FeatureHashOptions{.dimension = kDim}),
        std::move(store));
    const int64_t start = NowNanos();
    RETURN_IF_ERROR(similarity.Rebuild());
    f.rebuild_s = Seconds(start);
  }
  f.base_bytes = FileSize(absl::StrCat(index_dir, "/", kVectorsBaseFile));
  RETURN_IF_ERROR(guard.Check());

  // 4-5: recall and latency of the published index, per nprobe (each opened anew).
  for (size_t p = 0; p < o.nprobes.size(); ++p) {
    ASSIGN_OR_RETURN(std::unique_ptr<FaissVectorStore> store, StoreAt(o, index_dir, o.nprobes[p]));
    const int64_t start = NowNanos();
    ASSIGN_OR_RETURN(VectorIndexPtr index, store->OpenPublished(Identity(embedder)));
    if (p == 0) f.open_s = Seconds(start);
    SearchFn search = [&](const float* q, const SearchFilter& filter) {
      return index->Search(absl::MakeConstSpan(q, kDim), kK, filter);
    };
    f.faiss.emplace_back();
    for (const FilterCase& c : cases) {
      ASSIGN_OR_RETURN(Quality quality, Measure(search, queries, vectors, c, guard));
      f.faiss.back().push_back(quality);
    }
  }
  {
    // A primary's steady state on the published index: blocks of events, Persist each; then
    // what reopening costs with the journal those blocks left.
    ASSIGN_OR_RETURN(std::unique_ptr<FaissVectorStore> store,
                     StoreAt(o, index_dir, o.index.nprobe));
    ASSIGN_OR_RETURN(VectorIndexPtr index, store->OpenPublished(Identity(embedder)));
    RETURN_IF_ERROR(MeasureFollow(*index, follow_vectors, o.events + 1, &f));
    f.journal_bytes = FileSize(absl::StrCat(index_dir, "/", kVectorsJournalFile));
    const int64_t reopen = NowNanos();
    ASSIGN_OR_RETURN(VectorIndexPtr again, store->OpenPublished(Identity(embedder)));
    f.reopen_s = Seconds(reopen);
    if (again->LastSeq() != o.events + kFollowBlock * kFollowBlocks)
      return absl::InternalError("the reopened index lost journal records");
  }
  std::filesystem::remove_all(index_dir);
  RETURN_IF_ERROR(guard.Check());

  // The index alone: the same vectors added in SimilarityIndex's batches, then published.
  const std::string alone_dir = absl::StrCat(root, "/index-alone-run", run);
  {
    ASSIGN_OR_RETURN(std::unique_ptr<FaissVectorStore> store,
                     StoreAt(o, alone_dir, o.index.nprobe));
    ASSIGN_OR_RETURN(VectorIndexPtr staged, store->CreateStaged(Identity(embedder)));
    int64_t start = NowNanos();
    for (uint64_t from = 0; from < o.events; from += kAddBatch) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kAddBatch, o.events - from));
      std::vector<IndexedEvent> events(n);
      for (size_t i = 0; i < n; ++i) events[i].seq = from + i + 1;
      RETURN_IF_ERROR(
          staged->Add(events, absl::MakeConstSpan(vectors).subspan(from * kDim, n * kDim)));
    }
    f.add_s = Seconds(start);
    start = NowNanos();
    RETURN_IF_ERROR(store->Publish(*staged));
    f.publish_s = Seconds(start);
  }
  std::filesystem::remove_all(alone_dir);
  RETURN_IF_ERROR(guard.Check());

  // 6: hnswlib on the same vectors.
  if (o.hnsw) {
    const int64_t start = NowNanos();
    FoldedHnsw hnsw(vectors, o.hnsw_m, o.hnsw_ef_construction, 2);
    f.hnsw_build_s = Seconds(start);
    f.hnsw_entries = hnsw.entries();
    RETURN_IF_ERROR(guard.Check());
    for (int ef : o.hnsw_efs) {
      hnsw.SetEf(ef);
      SearchFn search = [&](const float* q, const SearchFilter&) {
        return absl::StatusOr<std::vector<VectorHit>>(hnsw.Search(q, kK));
      };
      ASSIGN_OR_RETURN(Quality quality, Measure(search, queries, vectors, cases[0], guard));
      f.hnsw.push_back(quality);
    }
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Reporting.

template <typename Fn>
double MedianOf(const std::vector<RunFigures>& runs, Fn fn) {
  std::vector<double> v;
  for (const RunFigures& r : runs) v.push_back(fn(r));
  return Median(v);
}

void PrintRun(const Options& o, const RunFigures& f, uint64_t bytes,
              const std::vector<FilterCase>& cases) {
  fmt::print(
      "  read {:.3f} s | embed 1t {:.2f} s, 2t {:.2f} s | rebuild {:.2f} s | open {:.2f} s"
      " | add {:.2f} s + publish {:.2f} s\n",
      f.read_s, f.embed1_s, f.embed2_s, f.rebuild_s, f.open_s, f.add_s, f.publish_s);
  for (size_t p = 0; p < o.nprobes.size(); ++p) {
    fmt::print("  nprobe {:>3}:", o.nprobes[p]);
    for (size_t c = 0; c < cases.size(); ++c) {
      const Quality& q = f.faiss[p][c];
      fmt::print("  {} recall {:.3f} p50 {:.2f} p99 {:.2f} ms;", cases[c].name, q.recall, q.p50_ms,
                 q.p99_ms);
    }
    fmt::print("\n");
  }
  if (o.hnsw) {
    fmt::print("  hnswlib: {} points built in {:.1f} s;", f.hnsw_entries, f.hnsw_build_s);
    for (size_t e = 0; e < o.hnsw_efs.size(); ++e) {
      fmt::print("  ef {} recall {:.3f} p50 {:.2f} p99 {:.2f} ms;", o.hnsw_efs[e], f.hnsw[e].recall,
                 f.hnsw[e].p50_ms, f.hnsw[e].p99_ms);
    }
    fmt::print("\n");
  }
  std::fflush(stdout);
}

void PrintSummary(const Options& o, const std::vector<RunFigures>& runs, uint64_t bytes,
                  const std::vector<FilterCase>& cases) {
  const double mb = bytes / 1e6;
  const double n = static_cast<double>(o.events);
  auto med = [&](auto fn) { return MedianOf(runs, fn); };
  const double read = med([](const RunFigures& r) { return r.read_s; });
  // Ratios are per run (the same run's plain read), then the median.
  auto vs_read = [&](auto fn) {
    return med([&](const RunFigures& r) { return r.read_s / fn(r); });
  };
  fmt::print("\nmedians of {} run(s); {} events, {:.1f} MB events.jsonl; load {}\n", runs.size(),
             o.events, mb, LoadAverage());
  fmt::print("  {:<46} {:>9} {:>9} {:>12} {:>12}\n", "step", "seconds", "MB/s", "events/s",
             "vs read");
  auto row = [&](const std::string& name, double s, double ratio) {
    fmt::print("  {:<46} {:>9.3f} {:>9.1f} {:>12.0f} {:>11.3f}x\n", name, s, mb / s, n / s, ratio);
  };
  row("1. plain read (baseline)", read, 1.0);
  row("2. read + parse + embed, 1 thread", med([](const RunFigures& r) { return r.embed1_s; }),
      vs_read([](const RunFigures& r) { return r.embed1_s; }));
  row("2. read + parse + embed, 2 threads", med([](const RunFigures& r) { return r.embed2_s; }),
      vs_read([](const RunFigures& r) { return r.embed2_s; }));
  const double rebuild = med([](const RunFigures& r) { return r.rebuild_s; });
  row("3. full rebuild (SimilarityIndex::Rebuild)", rebuild,
      vs_read([](const RunFigures& r) { return r.rebuild_s; }));
  fmt::print("  3. full rebuild vs the {} MB/s target: {:.2f}x\n", kTargetRebuildMBps,
             mb / rebuild / kTargetRebuildMBps);
  fmt::print(
      "     index alone (Add of the same vectors, batches of {}): {:.2f} s; Publish "
      "(write + fsync {:.0f} MB): {:.2f} s; open published: {:.2f} s\n",
      kAddBatch, med([](const RunFigures& r) { return r.add_s; }), runs[0].base_bytes / 1e6,
      med([](const RunFigures& r) { return r.publish_s; }),
      med([](const RunFigures& r) { return r.open_s; }));
  fmt::print(
      "     steady state, blocks of {} events: Add + Persist p50 {:.1f} ms, p99 {:.1f} ms; "
      "journal {:.1f} MB after {} blocks; reopen (base + journal replay) {:.2f} s\n",
      kFollowBlock, med([](const RunFigures& r) { return r.follow_p50_ms; }),
      med([](const RunFigures& r) { return r.follow_p99_ms; }), runs[0].journal_bytes / 1e6,
      kFollowBlocks, med([](const RunFigures& r) { return r.reopen_s; }));
  fmt::print(
      "\n  4-5. FAISS (embedded index), {} queries, recall@10 (target >= {}) and latency "
      "(target p99 <= {} ms); * the default nprobe\n",
      o.queries, kTargetRecall, kTargetP99Ms);
  for (size_t p = 0; p < o.nprobes.size(); ++p) {
    for (size_t c = 0; c < cases.size(); ++c) {
      auto q = [&](auto field) {
        return med([&](const RunFigures& r) { return r.faiss[p][c].*field; });
      };
      const double recall = q(&Quality::recall), p99 = q(&Quality::p99_ms);
      fmt::print(
          "  nprobe {:>3}{} {:<22} recall {:.3f} ({:.2f}x target)  p50 {:6.2f} ms  p99 "
          "{:6.2f} ms ({:.2f}x target)\n",
          o.nprobes[p], o.nprobes[p] == o.index.nprobe ? "*" : " ", cases[c].name, recall,
          recall / kTargetRecall, q(&Quality::p50_ms), p99, p99 / kTargetP99Ms);
    }
  }
  if (!o.hnsw) return;
  const double hb = med([](const RunFigures& r) { return r.hnsw_build_s; });
  const double add = med([](const RunFigures& r) { return r.add_s; });
  fmt::print(
      "\n  6. hnswlib (M={}, ef_construction={}, folded: {} points, 2 threads), "
      "unfiltered\n",
      o.hnsw_m, o.hnsw_ef_construction, runs[0].hnsw_entries);
  fmt::print(
      "     build {:.1f} s = {:.0f} events/s (FAISS index alone: {:.1f} s, {:.1f}x "
      "faster); with embedding (2 threads) {:.1f} MB/s vs FAISS's full rebuild {:.1f} "
      "MB/s\n",
      hb, n / hb, add, hb / add, mb / (hb + med([](const RunFigures& r) { return r.embed2_s; })),
      mb / rebuild);
  for (size_t e = 0; e < o.hnsw_efs.size(); ++e) {
    auto q = [&](auto field) { return med([&](const RunFigures& r) { return r.hnsw[e].*field; }); };
    fmt::print("  ef {:>4} recall {:.3f}  p50 {:6.2f} ms  p99 {:6.2f} ms\n", o.hnsw_efs[e],
               q(&Quality::recall), q(&Quality::p50_ms), q(&Quality::p99_ms));
  }
}

// VmHWM from /proc/self/status ("1234567 kB"), for the report.
std::string PeakRss() {
  absl::StatusOr<std::string> status = ReadFileToString("/proc/self/status");
  if (!status.ok()) return "unknown";
  size_t at = status->find("VmHWM:");
  if (at == std::string::npos) return "unknown";
  size_t end = status->find('\n', at);
  std::string v = status->substr(at + 6, end - at - 6);
  v.erase(0, v.find_first_not_of(" \t"));
  return v;
}

absl::Status Run(const Options& o) {
  Guard guard(o.timeout_seconds);
  spdlog::set_level(spdlog::level::warn);

  // The ledger lives in <dir>/ledger and is kept for the next run; the directory must be new
  // or hold only what an earlier run left.
  std::error_code ec;
  const std::string ledger_dir = absl::StrCat(o.dir, "/ledger");
  if (!std::filesystem::exists(ledger_dir, ec)) {
    std::filesystem::create_directories(o.dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("create ", o.dir, ": ", ec.message()));
    for (const auto& entry : std::filesystem::directory_iterator(o.dir)) {
      return absl::FailedPreconditionError(
          absl::StrCat(o.dir, " is not empty (", entry.path().string(), "); use a new --dir"));
    }
  }
  for (const auto& entry : std::filesystem::directory_iterator(o.dir)) {
    if (entry.path().filename().string().starts_with("index-"))
      std::filesystem::remove_all(entry.path());  // an interrupted run's index directories
    // (and ledger.partial, an interrupted ledger write, is replaced by PrepareLedger)
  }
  bool reused = false;
  fmt::print("ledger {} ({} events):\n", ledger_dir, o.events);
  RETURN_IF_ERROR(PrepareLedger(o, ledger_dir, &reused));
  const std::string log_path = absl::StrCat(ledger_dir, "/", kEventsFile);
  const uint64_t bytes = FileSize(log_path);
  fmt::print("  {} {:.1f} MB; load average {}; {} CPUs\n", reused ? "reused," : "written,",
             bytes / 1e6, LoadAverage(), std::thread::hardware_concurrency());

  // Queries: held-out events and text queries; then held-out events for the steady state.
  FeatureHashEmbedder embedder(FeatureHashOptions{.dimension = kDim});
  const size_t text_n = static_cast<size_t>(o.queries) / 10;
  const size_t event_n = static_cast<size_t>(o.queries) - text_n;
  std::vector<std::string> held = HeldOutEvents(o, event_n + kFollowBlock * kFollowBlocks);
  std::vector<std::string_view> query_bodies(held.begin(), held.begin() + event_n);
  std::vector<std::string_view> follow_bodies(held.begin() + event_n, held.end());
  std::vector<float> queries, follow_vectors, v;
  RETURN_IF_ERROR(embedder.EmbedEvents(query_bodies, &queries));
  RETURN_IF_ERROR(embedder.EmbedEvents(follow_bodies, &follow_vectors));
  std::vector<std::string> texts = TextQueries(held, text_n);
  for (const std::string& t : texts) {
    RETURN_IF_ERROR(embedder.EmbedText(t, &v));
    queries.insert(queries.end(), v.begin(), v.end());
  }
  fmt::print("queries: {} held-out events, {} text queries (e.g. \"{}\", \"{}\")\n", event_n,
             texts.size(), texts.empty() ? "" : texts[0], texts.size() > 1 ? texts[1] : "");

  std::vector<FilterCase> cases(3);
  cases[0].name = "unfiltered";
  cases[1].name = "seqs: last 10%";
  cases[1].filter.min_seq = o.events - o.events / 10 + 1;
  cases[2].name = "seqs: last 1,000";
  cases[2].filter.min_seq = o.events > 1000 ? o.events - 999 : 1;
  cases[1].filter.max_seq = cases[2].filter.max_seq = o.events;

  uint64_t warm = 0;
  RETURN_IF_ERROR(PlainRead(log_path, &warm).status());  // page cache
  // Every seq's vector (untimed), and the exact answers over them, once.
  std::vector<float> vectors;
  vectors.reserve(o.events * kDim);
  RETURN_IF_ERROR(ReadParseEmbed(log_path, embedder, 2, o.events, &vectors).status());
  const int64_t exact_start = NowNanos();
  for (FilterCase& c : cases) {
    c.tenth = ExactKth(queries, vectors, std::max<uint64_t>(1, c.filter.min_seq),
                       std::min(c.filter.max_seq, o.events));
  }
  fmt::print("exact answers by brute force over all {} seqs: {:.1f} s\n", o.events,
             Seconds(exact_start));
  std::vector<RunFigures> runs;
  for (int run = 1; run <= o.runs; ++run) {
    fmt::print("run {}/{}:\n", run, o.runs);
    std::fflush(stdout);
    ASSIGN_OR_RETURN(RunFigures f, RunOnce(o, o.dir, ledger_dir, run, vectors, queries,
                                           follow_vectors, cases, guard));
    PrintRun(o, f, bytes, cases);
    runs.push_back(std::move(f));
  }
  PrintSummary(o, runs, bytes, cases);
  fmt::print("\npeak RSS {}\n", PeakRss());
  return absl::OkStatus();
}

}  // namespace
}  // namespace snapledger::bench

int main(int argc, char** argv) {
  using snapledger::bench::AddOption;
  snapledger::bench::BlockStopSignals();
  CLI::App app{"The derived similarity index: rebuild speed, recall and latency (FAISS, hnswlib)"};
  snapledger::bench::Options o;
  o.dir = absl::StrCat(std::filesystem::temp_directory_path().string(), "/snapledger-index-bench");
  AddOption(app, "--events", o.events, "events in the ledger", 1000, 100000000);
  AddOption(app, "--dir", o.dir,
            "work directory: new or empty (the ledger is written to <dir>/ledger and kept for "
            "later runs with the same --events), or one an earlier run left");
  AddOption(app, "--queries", o.queries, "similarity queries (90% held-out events, 10% text)", 10,
            100000);
  AddOption(app, "--runs", o.runs, "runs; medians are reported", 1, 100);
  AddOption(app, "--seed", o.seed, "event generator seed");
  app.add_option("--nprobe", o.nprobes, "FAISS nprobe values to measure recall and latency at")
      ->capture_default_str();
  AddOption(app, "--nlist", o.index.nlist, "IVF lists", 1, 65536);
  AddOption(app, "--exact-below", o.index.exact_below, "exact search below this many vectors");
  AddOption(app, "--train-size", o.index.train_size, "k-means sample");
  AddOption(app, "--kmeans-iterations", o.index.kmeans_iterations, "k-means iterations", 1, 1000);
  app.add_flag("!--no-hnsw", o.hnsw, "skip the hnswlib comparison");
  AddOption(app, "--hnsw-m", o.hnsw_m, "hnswlib M", 2, 128);
  AddOption(app, "--hnsw-ef-construction", o.hnsw_ef_construction, "hnswlib ef_construction", 8,
            4096);
  app.add_option("--hnsw-ef", o.hnsw_efs, "hnswlib ef values to measure")->capture_default_str();
  AddOption(app, "--timeout-seconds", o.timeout_seconds, "stop (cleanly) after this long", 10,
            86400);
  CLI11_PARSE(app, argc, argv);
  return snapledger::bench::ExitCodeFor(snapledger::bench::kProgram, snapledger::bench::Run(o));
}
