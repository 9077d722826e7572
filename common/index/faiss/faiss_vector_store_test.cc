#include "common/index/faiss/faiss_vector_store.h"

#include <faiss/utils/distances.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

constexpr int kDim = 128;
const IndexIdentity kIdentity{"test-embedder/v1", kDim};

// Small but structurally realistic: exact below 500 distinct vectors, then IVF with 16 lists.
EmbeddedIndexOptions SmallOptions() {
  EmbeddedIndexOptions o;
  o.exact_below = 500;
  o.nlist = 16;
  o.train_size = 1000;
  o.nprobe = 4;
  o.compact_min_bytes = 64 << 20;  // tests that want compaction lower it
  return o;
}

void Normalize(float* v) {
  double s = 0;
  for (int j = 0; j < kDim; ++j) s += double{v[j]} * v[j];
  const float inv = static_cast<float>(1 / std::sqrt(s));
  for (int j = 0; j < kDim; ++j) v[j] *= inv;
}

// `n` unit vectors around `clusters` random centres (embeddings cluster; uniform random
// vectors in 128 dimensions have no neighbours worth the name). Fixed seed.
std::vector<float> ClusteredVectors(size_t n, uint32_t seed, int clusters = 40,
                                    float spread = 0.06f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> centres(size_t(clusters) * kDim);
  for (float& f : centres) f = normal(rng);
  for (int c = 0; c < clusters; ++c) Normalize(&centres[size_t(c) * kDim]);
  std::vector<float> out(n * kDim);
  std::uniform_int_distribution<int> pick(0, clusters - 1);
  for (size_t i = 0; i < n; ++i) {
    const float* centre = &centres[size_t(pick(rng)) * kDim];
    for (int j = 0; j < kDim; ++j) out[i * kDim + j] = centre[j] + spread * normal(rng);
    Normalize(&out[i * kDim]);
  }
  return out;
}

std::vector<IndexedEvent> Events(uint64_t first_seq, size_t n) {
  std::vector<IndexedEvent> e(n);
  for (size_t i = 0; i < n; ++i) e[i].seq = first_seq + i;
  return e;
}

// Adds vectors[from, to) (events from+1 .. to) in one call.
absl::Status AddRange(VectorIndex& index, const std::vector<float>& vectors, size_t from,
                      size_t to) {
  std::vector<IndexedEvent> events = Events(from + 1, to - from);
  return index.Add(events, absl::MakeConstSpan(vectors).subspan(from * kDim, (to - from) * kDim));
}

// Exact top k over all seqs, by score descending then seq ascending (FAISS's inner product;
// the index sums in another order, so scores agree to ~1e-7).
std::vector<VectorHit> BruteForce(const std::vector<float>& vectors, const float* query, size_t k,
                                  const std::function<bool(uint64_t)>& pass = nullptr) {
  std::vector<VectorHit> all;
  for (size_t i = 0; i < vectors.size() / kDim; ++i) {
    if (pass && !pass(i + 1)) continue;
    all.push_back({i + 1, faiss::fvec_inner_product(query, &vectors[i * kDim], kDim)});
  }
  std::stable_sort(all.begin(), all.end(), [](const VectorHit& a, const VectorHit& b) {
    return a.score != b.score ? a.score > b.score : a.seq < b.seq;
  });
  if (all.size() > k) all.resize(k);
  return all;
}

std::vector<uint64_t> Seqs(const std::vector<VectorHit>& hits) {
  std::vector<uint64_t> s;
  for (const VectorHit& h : hits) s.push_back(h.seq);
  return s;
}

std::vector<VectorHit> MustSearch(const VectorIndex& index, const float* query, size_t k,
                                  const SearchFilter& filter = {}) {
  absl::StatusOr<std::vector<VectorHit>> hits =
      index.Search(absl::MakeConstSpan(query, kDim), k, filter);
  EXPECT_TRUE(hits.ok()) << hits.status();
  return hits.ok() ? *hits : std::vector<VectorHit>{};
}

// Recall@k of `index` against brute force over `queries`.
double Recall(const VectorIndex& index, const std::vector<float>& vectors,
              const std::vector<float>& queries, size_t k) {
  size_t found = 0, wanted = 0;
  for (size_t q = 0; q < queries.size() / kDim; ++q) {
    std::vector<uint64_t> exact = Seqs(BruteForce(vectors, &queries[q * kDim], k));
    std::vector<uint64_t> got = Seqs(MustSearch(index, &queries[q * kDim], k));
    for (uint64_t s : got) found += std::count(exact.begin(), exact.end(), s);
    wanted += exact.size();
  }
  return double(found) / wanted;
}

std::string ReadAll(const std::string& path) {
  absl::StatusOr<std::string> s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The entry count recorded in a base file (format in vector_files.h).
uint64_t EntriesInBase(const std::string& path) {
  std::string b = ReadAll(path);
  size_t pos = 24;
  uint32_t id_len;
  std::memcpy(&id_len, b.data() + pos, 4);
  pos += 4 + id_len + 4 + 8 + 4 + 8 + 8 + 4 + 8;  // id, dim, parameters, last seq
  uint64_t entries;
  std::memcpy(&entries, b.data() + pos, 8);
  return entries;
}

class FaissVectorStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            absl::StrCat("faiss_store_test-", ::getpid(), "-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::string Dir(const std::string& name = "vectors") const { return (root_ / name).string(); }
  std::unique_ptr<FaissVectorStore> Store(EmbeddedIndexOptions o = SmallOptions(),
                                          const std::string& name = "vectors") {
    auto s = FaissVectorStore::Open(Dir(name), o);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  // A published index holding vectors (in batches of `batch`), persisted.
  VectorIndexPtr Build(FaissVectorStore& store, const std::vector<float>& vectors, size_t batch) {
    absl::StatusOr<VectorIndexPtr> staged = store.CreateStaged(kIdentity);
    EXPECT_TRUE(staged.ok()) << staged.status();
    const size_t n = vectors.size() / kDim;
    for (size_t from = 0; from < n; from += batch) {
      EXPECT_TRUE(AddRange(**staged, vectors, from, std::min(n, from + batch)).ok());
    }
    EXPECT_TRUE(store.Publish(**staged).ok());
    return std::move(*staged);
  }
  VectorIndexPtr Reopen(FaissVectorStore& store) {
    absl::StatusOr<VectorIndexPtr> index = store.OpenPublished(kIdentity);
    EXPECT_TRUE(index.ok()) << index.status();
    return index.ok() ? std::move(*index) : nullptr;
  }

  std::filesystem::path root_;
};

TEST_F(FaissVectorStoreTest, ExactResultsBelowTheThresholdEqualBruteForce) {
  auto store = Store();
  std::vector<float> vectors = ClusteredVectors(450, 1);  // stays below exact_below
  VectorIndexPtr index = Build(*store, vectors, 100);
  std::vector<float> queries = ClusteredVectors(50, 2);
  for (size_t q = 0; q < 50; ++q) {
    for (size_t k : {1, 10, 100}) {
      std::vector<VectorHit> got = MustSearch(*index, &queries[q * kDim], k);
      std::vector<VectorHit> want = BruteForce(vectors, &queries[q * kDim], k);
      ASSERT_EQ(Seqs(got), Seqs(want)) << "query " << q << " k " << k;
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i].score, want[i].score, 1e-5);
    }
  }
  EXPECT_EQ(EntriesInBase(Dir() + "/" + kVectorsBaseFile), 450u);
}

TEST_F(FaissVectorStoreTest, RecallAfterTrainingIsAtLeast95Percent) {
  auto store = Store();
  // Queries from the same distribution as the points: the last 100 drawn.
  std::vector<float> vectors = ClusteredVectors(5100, 3, /*clusters=*/100);
  std::vector<float> queries(vectors.end() - 100 * kDim, vectors.end());
  vectors.resize(5000 * kDim);
  VectorIndexPtr index = Build(*store, vectors, 1000);
  const double recall = Recall(*index, vectors, queries, 10);
  EXPECT_GE(recall, 0.95);
  std::cout << "recall@10 " << recall << " (nlist 16, nprobe 4)\n";
}

TEST_F(FaissVectorStoreTest, IdenticalVectorsFoldIntoOneEntryAndReturnEverySeq) {
  auto store = Store();
  std::vector<float> distinct = ClusteredVectors(10, 5);
  std::vector<float> vectors;
  for (int i = 0; i < 300; ++i) {  // seq i+1 has distinct vector i % 10
    vectors.insert(vectors.end(), distinct.begin() + (i % 10) * kDim,
                   distinct.begin() + (i % 10 + 1) * kDim);
  }
  VectorIndexPtr index = Build(*store, vectors, 64);
  EXPECT_EQ(EntriesInBase(Dir() + "/" + kVectorsBaseFile), 10u);
  // The query is distinct vector 3: its 30 seqs first, in seq order, with equal scores.
  std::vector<VectorHit> hits = MustSearch(*index, &distinct[3 * kDim], 35);
  ASSERT_EQ(hits.size(), 35u);
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(hits[i].seq, uint64_t(4 + 10 * i));
    EXPECT_EQ(hits[i].score, hits[0].score);
  }
  EXPECT_LT(hits[30].score, hits[0].score);
  EXPECT_EQ(Seqs(hits), Seqs(BruteForce(vectors, &distinct[3 * kDim], 35)));
  // All 300 come back when asked for.
  EXPECT_EQ(MustSearch(*index, &distinct[0], 1000).size(), 300u);
}

TEST_F(FaissVectorStoreTest, FoldingSurvivesTheSwitchToIvfAndReopening) {
  auto store = Store();
  std::vector<float> distinct = ClusteredVectors(800, 6);
  std::vector<float> vectors = distinct;
  vectors.insert(vectors.end(), distinct.begin(), distinct.end());  // every vector twice
  {
    VectorIndexPtr index = Build(*store, vectors, 333);
    EXPECT_EQ(EntriesInBase(Dir() + "/" + kVectorsBaseFile), 800u);
  }
  VectorIndexPtr index = Reopen(*store);
  ASSERT_NE(index, nullptr);
  std::vector<VectorHit> hits = MustSearch(*index, &distinct[17 * kDim], 2);
  EXPECT_EQ(Seqs(hits), (std::vector<uint64_t>{18, 818}));
}

TEST_F(FaissVectorStoreTest, SeqRangeFilterReturnsKWhenKExist) {
  for (size_t n : {400, 5000}) {  // exact and IVF
    SCOPED_TRACE(n);
    auto store = Store(SmallOptions(), absl::StrCat("v", n));
    std::vector<float> vectors = ClusteredVectors(n, 7);
    VectorIndexPtr index = Build(*store, vectors, 1000);
    std::vector<float> queries = ClusteredVectors(20, 8);
    SearchFilter filter;
    filter.min_seq = n / 2;
    filter.max_seq = n / 2 + 39;  // 40 events
    auto in_range = [&](uint64_t s) { return s >= filter.min_seq && s <= filter.max_seq; };
    for (size_t q = 0; q < 20; ++q) {
      std::vector<VectorHit> hits = MustSearch(*index, &queries[q * kDim], 10, filter);
      ASSERT_EQ(hits.size(), 10u);
      for (const VectorHit& h : hits) EXPECT_TRUE(in_range(h.seq)) << h.seq;
      // A short range is scored exactly, on the IVF index too.
      EXPECT_EQ(Seqs(hits), Seqs(BruteForce(vectors, &queries[q * kDim], 10, in_range)));
      // Asking for more than exist returns all that exist.
      EXPECT_EQ(MustSearch(*index, &queries[q * kDim], 100, filter).size(), 40u);
      // With a field filter too: 20 of the 40 pass.
      SearchFilter even = filter;
      even.fields.push_back({"parity", "even"});
      even.accept_fields = [](uint64_t seq) -> absl::StatusOr<bool> { return seq % 2 == 0; };
      std::vector<VectorHit> got = MustSearch(*index, &queries[q * kDim], 10, even);
      EXPECT_EQ(Seqs(got), Seqs(BruteForce(vectors, &queries[q * kDim], 10,
                                           [&](uint64_t s) { return in_range(s) && s % 2 == 0; })));
    }
  }
}

TEST_F(FaissVectorStoreTest, WideSeqRangeOnIvfReturnsKFromTheRange) {
  EmbeddedIndexOptions o = SmallOptions();
  o.exact_below = 1000;  // trained on 1,000; a 5,000-event range is scanned, not scored
  auto store = Store(o);
  std::vector<float> vectors = ClusteredVectors(20020, 34, /*clusters=*/100);
  std::vector<float> queries(vectors.end() - 20 * kDim, vectors.end());
  vectors.resize(20000 * kDim);
  VectorIndexPtr index = Build(*store, vectors, 5000);
  SearchFilter filter;
  filter.min_seq = 12001;
  filter.max_seq = 17000;
  auto in_range = [&](uint64_t s) { return s >= filter.min_seq && s <= filter.max_seq; };
  size_t found = 0;
  for (size_t q = 0; q < 20; ++q) {
    std::vector<VectorHit> hits = MustSearch(*index, &queries[q * kDim], 10, filter);
    ASSERT_EQ(hits.size(), 10u);
    for (const VectorHit& h : hits) EXPECT_TRUE(in_range(h.seq)) << h.seq;
    std::vector<uint64_t> exact = Seqs(BruteForce(vectors, &queries[q * kDim], 10, in_range));
    for (uint64_t s : Seqs(hits)) found += std::count(exact.begin(), exact.end(), s);
  }
  EXPECT_GE(found / 200.0, 0.9) << "recall@10 within the range";
}

TEST_F(FaissVectorStoreTest, FieldFilterReturnsKWhenKExist) {
  auto store = Store();
  std::vector<float> vectors = ClusteredVectors(5000, 9);
  VectorIndexPtr index = Build(*store, vectors, 1000);
  std::vector<float> queries = ClusteredVectors(10, 10);
  // 25 events pass, scattered over the whole log.
  auto pass = [](uint64_t s) { return s % 200 == 7; };
  int calls = 0;
  SearchFilter filter;
  filter.fields.push_back({"event", "port_created"});
  filter.accept_fields = [&](uint64_t seq) -> absl::StatusOr<bool> {
    ++calls;
    return pass(seq);
  };
  for (size_t q = 0; q < 10; ++q) {
    std::vector<VectorHit> hits = MustSearch(*index, &queries[q * kDim], 10, filter);
    ASSERT_EQ(hits.size(), 10u);
    for (const VectorHit& h : hits) EXPECT_TRUE(pass(h.seq)) << h.seq;
  }
  EXPECT_LE(calls, 10 * 5000) << "each seq is asked about at most once per search";
  // An error from accept_fields ends the search with it.
  filter.accept_fields = [](uint64_t) -> absl::StatusOr<bool> {
    return absl::DataLossError("line 7 is bad");
  };
  absl::StatusOr<std::vector<VectorHit>> failed =
      index->Search(absl::MakeConstSpan(queries.data(), kDim), 10, filter);
  EXPECT_TRUE(absl::IsDataLoss(failed.status())) << failed.status();
}

TEST_F(FaissVectorStoreTest, NonConsecutiveSeqsAreRejectedAndNothingIsAdded) {
  auto store = Store();
  absl::StatusOr<VectorIndexPtr> index = store->CreateStaged(kIdentity);
  ASSERT_TRUE(index.ok());
  std::vector<float> vectors = ClusteredVectors(10, 11);
  ASSERT_TRUE(AddRange(**index, vectors, 0, 3).ok());
  std::vector<IndexedEvent> gap = Events(4, 3);
  gap[2].seq = 8;
  absl::Status st = (*index)->Add(gap, absl::MakeConstSpan(vectors).subspan(3 * kDim, 3 * kDim));
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("seq 8, expected 6"));
  std::vector<IndexedEvent> restart = Events(1, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(
      (*index)->Add(restart, absl::MakeConstSpan(vectors).subspan(0, kDim))));
  std::vector<IndexedEvent> two = Events(4, 2);
  EXPECT_TRUE(absl::IsInvalidArgument(
      (*index)->Add(two, absl::MakeConstSpan(vectors).subspan(0, kDim))));  // one vector short
  std::vector<float> nan(kDim, 0.f);
  nan[5] = std::nanf("");
  std::vector<IndexedEvent> one = Events(4, 1);
  EXPECT_TRUE(absl::IsInvalidArgument((*index)->Add(one, nan)));
  EXPECT_EQ((*index)->LastSeq(), 3u);
  EXPECT_EQ(MustSearch(**index, vectors.data(), 10).size(), 3u);
  EXPECT_TRUE(AddRange(**index, vectors, 3, 10).ok());
  EXPECT_EQ((*index)->LastSeq(), 10u);
}

TEST_F(FaissVectorStoreTest, PersistThenReopenGivesTheSameAnswers) {
  for (size_t n : {300, 5000}) {
    SCOPED_TRACE(n);
    auto store = Store(SmallOptions(), absl::StrCat("v", n));
    std::vector<float> vectors = ClusteredVectors(n, 12);
    std::vector<float> queries = ClusteredVectors(30, 13);
    std::vector<std::vector<VectorHit>> before;
    {
      VectorIndexPtr index = Build(*store, vectors, 777);
      for (size_t q = 0; q < 30; ++q) before.push_back(MustSearch(*index, &queries[q * kDim], 10));
    }
    auto again = Store(SmallOptions(), absl::StrCat("v", n));
    VectorIndexPtr index = Reopen(*again);
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(index->LastSeq(), n);
    EXPECT_EQ(index->Identity(), kIdentity);
    for (size_t q = 0; q < 30; ++q) {
      std::vector<VectorHit> hits = MustSearch(*index, &queries[q * kDim], 10);
      EXPECT_EQ(Seqs(hits), Seqs(before[q]));
    }
  }
}

TEST_F(FaissVectorStoreTest, JournalAppendsAreReplayedOnReopen) {
  auto store = Store();
  std::vector<float> vectors = ClusteredVectors(3000, 14);
  const std::string base = Dir() + "/" + kVectorsBaseFile;
  const std::string journal = Dir() + "/" + kVectorsJournalFile;
  std::vector<float> first(vectors.begin(), vectors.begin() + 200 * kDim);
  {
    // A 200-event base, then journal records that cross the exact/IVF threshold.
    VectorIndexPtr index = Build(*store, first, 200);
    const std::string base_bytes = ReadAll(base);
    for (size_t from = 200; from < 3000; from += 350) {
      ASSERT_TRUE(AddRange(*index, vectors, from, std::min<size_t>(3000, from + 350)).ok());
      ASSERT_TRUE(index->Persist().ok());
    }
    EXPECT_EQ(ReadAll(base), base_bytes) << "Persist appends; it does not rewrite the base";
    EXPECT_TRUE(std::filesystem::exists(journal));
  }
  VectorIndexPtr index = Reopen(*store);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->LastSeq(), 3000u);
  // The same answers as an index built in one go.
  auto other = Store(SmallOptions(), "other");
  VectorIndexPtr whole = Build(*other, vectors, 3000);
  std::vector<float> queries = ClusteredVectors(30, 15);
  for (size_t q = 0; q < 30; ++q) {
    EXPECT_EQ(Seqs(MustSearch(*index, &queries[q * kDim], 10)),
              Seqs(MustSearch(*whole, &queries[q * kDim], 10)));
  }
  // And it keeps appending after the reopen.
  std::vector<float> more = ClusteredVectors(10, 16);
  std::vector<IndexedEvent> events = Events(3001, 10);
  ASSERT_TRUE(index->Add(events, more).ok());
  ASSERT_TRUE(index->Persist().ok());
  EXPECT_EQ(Reopen(*store)->LastSeq(), 3010u);
}

TEST_F(FaissVectorStoreTest, TornJournalTailIsIgnoredAndOverwritten) {
  auto store = Store();
  std::vector<float> vectors = ClusteredVectors(600, 17);
  const std::string journal = Dir() + "/" + kVectorsJournalFile;
  std::vector<float> first(vectors.begin(), vectors.begin() + 100 * kDim);
  {
    VectorIndexPtr index = Build(*store, first, 100);
    ASSERT_TRUE(AddRange(*index, vectors, 100, 300).ok());
    ASSERT_TRUE(index->Persist().ok());
    ASSERT_TRUE(AddRange(*index, vectors, 300, 400).ok());
    ASSERT_TRUE(index->Persist().ok());
  }
  const std::string full = ReadAll(journal);
  for (size_t cut : {size_t{1}, size_t{9}, size_t{5000}}) {
    SCOPED_TRACE(cut);
    WriteAll(journal, full.substr(0, full.size() - cut));
    VectorIndexPtr index = Reopen(*store);
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(index->LastSeq(), 300u) << "the torn record (301..400) is dropped";
  }
  // A tail of zero bytes (blocks allocated but never written) is torn too.
  std::string zeroed = full;
  std::fill(zeroed.end() - 100, zeroed.end(), '\0');
  const size_t second_record = full.size() - (12 + 16 + 100 * 4 + 100 * kDim * 4 + 8);
  std::fill(zeroed.begin() + second_record, zeroed.end(), '\0');
  WriteAll(journal, zeroed);
  {
    VectorIndexPtr index = Reopen(*store);
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(index->LastSeq(), 300u);
  }
  // The caller re-adds what was lost; the next append replaces the torn tail.
  WriteAll(journal, full.substr(0, full.size() - 9));
  {
    VectorIndexPtr index = Reopen(*store);
    ASSERT_TRUE(AddRange(*index, vectors, 300, 600).ok());
    ASSERT_TRUE(index->Persist().ok());
  }
  VectorIndexPtr index = Reopen(*store);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->LastSeq(), 600u);
  EXPECT_EQ(Seqs(MustSearch(*index, &vectors[550 * kDim], 1)), (std::vector<uint64_t>{551}));
}

TEST_F(FaissVectorStoreTest, DamagedFilesAreDataLossNeverACrash) {
  auto store = Store();
  std::vector<float> vectors = ClusteredVectors(700, 18);  // IVF
  const std::string base = Dir() + "/" + kVectorsBaseFile;
  const std::string journal = Dir() + "/" + kVectorsJournalFile;
  { Build(*store, vectors, 700); }
  const std::string good = ReadAll(base);
  auto expect_data_loss = [&](const std::string& bytes, const std::string& what) {
    WriteAll(base, bytes);
    absl::StatusOr<VectorIndexPtr> opened = store->OpenPublished(kIdentity);
    EXPECT_TRUE(absl::IsDataLoss(opened.status())) << what << ": " << opened.status();
    EXPECT_THAT(opened.status().message(), HasSubstr(base)) << what;
  };
  expect_data_loss("", "empty");
  expect_data_loss(std::string(good.size(), '\0'), "zeros");
  expect_data_loss(good.substr(0, good.size() / 2), "truncated");
  expect_data_loss(good.substr(0, 30), "truncated header");
  expect_data_loss(good + "x", "extended");
  // A flipped byte anywhere (every 1009th byte, and each of the first 64 and last 64).
  for (size_t at = 0; at < good.size(); at += (at < 64 || at + 64 >= good.size()) ? 1 : 1009) {
    std::string bad = good;
    bad[at] ^= 0x10;
    expect_data_loss(bad, absl::StrCat("flipped byte at ", at));
  }
  WriteAll(base, good);
  ASSERT_NE(Reopen(*store), nullptr);

  // A damaged journal record that is not a torn tail.
  {
    VectorIndexPtr index = Reopen(*store);
    std::vector<float> more = ClusteredVectors(200, 19);
    for (int i = 0; i < 2; ++i) {
      std::vector<IndexedEvent> events = Events(701 + 100 * i, 100);
      ASSERT_TRUE(
          index->Add(events, absl::MakeConstSpan(more).subspan(i * 100 * kDim, 100 * kDim)).ok());
      ASSERT_TRUE(index->Persist().ok());
    }
  }
  const std::string good_journal = ReadAll(journal);
  for (size_t at : {size_t{3}, size_t{60}, size_t{64}, size_t{70}, size_t{500}, size_t{3000},
                    good_journal.size() - 20, good_journal.size() - 1}) {
    std::string bad = good_journal;
    bad[at] ^= 0x01;
    WriteAll(journal, bad);
    absl::StatusOr<VectorIndexPtr> opened = store->OpenPublished(kIdentity);
    EXPECT_TRUE(absl::IsDataLoss(opened.status()))
        << "journal byte " << at << ": " << opened.status();
    EXPECT_THAT(opened.status().message(), HasSubstr(journal));
  }
  WriteAll(journal, good_journal);
  EXPECT_EQ(Reopen(*store)->LastSeq(), 900u);
}

TEST_F(FaissVectorStoreTest, MissingIndexIsNotFound) {
  auto store = Store();
  absl::StatusOr<VectorIndexPtr> opened = store->OpenPublished(kIdentity);
  EXPECT_TRUE(absl::IsNotFound(opened.status())) << opened.status();
}

TEST_F(FaissVectorStoreTest, IdentityMismatchIsFailedPreconditionNamingBoth) {
  auto store = Store();
  { Build(*store, ClusteredVectors(50, 20), 50); }
  for (const IndexIdentity& other :
       {IndexIdentity{"other-embedder/v2", kDim}, IndexIdentity{kIdentity.embedder_id, 64}}) {
    absl::StatusOr<VectorIndexPtr> opened = store->OpenPublished(other);
    EXPECT_TRUE(absl::IsFailedPrecondition(opened.status())) << opened.status();
    EXPECT_THAT(opened.status().message(), HasSubstr(DescribeIdentity(kIdentity)));
    EXPECT_THAT(opened.status().message(), HasSubstr(DescribeIdentity(other)));
    EXPECT_THAT(opened.status().message(), HasSubstr("rebuilt"));
  }
}

TEST_F(FaissVectorStoreTest, StagedIndexIsInvisibleUntilPublished) {
  auto store = Store();
  std::vector<float> old_vectors = ClusteredVectors(100, 21);
  std::vector<float> new_vectors = ClusteredVectors(900, 22);
  VectorIndexPtr old_index = Build(*store, old_vectors, 100);
  absl::StatusOr<VectorIndexPtr> staged = store->CreateStaged(kIdentity);
  ASSERT_TRUE(staged.ok());
  ASSERT_TRUE(AddRange(**staged, new_vectors, 0, 900).ok());
  ASSERT_TRUE((*staged)->Persist().ok());
  EXPECT_EQ(Reopen(*store)->LastSeq(), 100u) << "the staged index is not published yet";
  EXPECT_TRUE(store->CheckPublished().ok());
  ASSERT_TRUE(store->Publish(**staged).ok());
  EXPECT_EQ(Reopen(*store)->LastSeq(), 900u);
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/" + kVectorsJournalFile));
  for (const auto& entry : std::filesystem::directory_iterator(Dir())) {
    EXPECT_THAT(entry.path().filename().string(),
                ::testing::AnyOf(std::string(kVectorsBaseFile), std::string(kVectorsJournalFile)));
  }
  // The old handle notices it was replaced instead of writing over the new index.
  std::vector<IndexedEvent> events = Events(101, 1);
  ASSERT_TRUE(old_index->Add(events, absl::MakeConstSpan(old_vectors).subspan(0, kDim)).ok());
  absl::Status st = old_index->Persist();
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  // The published one (the former staged handle) keeps working and persisting.
  std::vector<IndexedEvent> next = Events(901, 1);
  ASSERT_TRUE((*staged)->Add(next, absl::MakeConstSpan(old_vectors).subspan(0, kDim)).ok());
  ASSERT_TRUE((*staged)->Persist().ok());
  EXPECT_TRUE(store->CheckPublished().ok());
  EXPECT_EQ(Reopen(*store)->LastSeq(), 901u);
  // Publishing something that is not this store's staged index is refused.
  EXPECT_TRUE(absl::IsInvalidArgument(store->Publish(**staged)));
}

TEST_F(FaissVectorStoreTest, PublishIsAtomicAndLeftoversAreRemoved) {
  auto store = Store();
  VectorIndexPtr first = Build(*store, ClusteredVectors(50, 23), 50);
  // Leftovers of an interrupted rebuild and compaction.
  WriteAll(Dir() + "/vectors.staged-999-1", "half a staged index");
  WriteAll(Dir() + "/vectors.tmp-999-2", "half a compaction");
  EXPECT_EQ(Reopen(*store)->LastSeq(), 50u) << "leftovers do not disturb the published index";
  absl::StatusOr<VectorIndexPtr> staged = store->CreateStaged(kIdentity);
  ASSERT_TRUE(staged.ok());
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/vectors.staged-999-1"));
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/vectors.tmp-999-2"));
  // Another store (process) publishing over ours is noticed.
  auto other = Store();
  Build(*other, ClusteredVectors(70, 24), 70);
  absl::Status st = store->CheckPublished();
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_EQ(Reopen(*store)->LastSeq(), 70u);
  EXPECT_TRUE(store->CheckPublished().ok());
}

TEST_F(FaissVectorStoreTest, DropRemovesEverything) {
  auto store = Store();
  VectorIndexPtr index = Build(*store, ClusteredVectors(60, 25), 60);
  std::vector<IndexedEvent> events = Events(61, 1);
  std::vector<float> v = ClusteredVectors(1, 26);
  ASSERT_TRUE(index->Add(events, v).ok());
  ASSERT_TRUE(index->Persist().ok());
  WriteAll(Dir() + "/vectors.staged-999-1", "x");
  ASSERT_TRUE(store->Drop().ok());
  EXPECT_TRUE(std::filesystem::is_empty(Dir()));
  EXPECT_TRUE(absl::IsNotFound(store->OpenPublished(kIdentity).status()));
  EXPECT_TRUE(absl::IsNotFound(store->CheckPublished()));
  EXPECT_TRUE(absl::IsNotFound(index->Persist()));
  EXPECT_TRUE(store->Drop().ok()) << "dropping nothing is fine";
}

TEST_F(FaissVectorStoreTest, DeterministicAcrossBatchSizes) {
  std::vector<float> vectors = ClusteredVectors(5000, 27);
  // Repeat some vectors so folding is exercised on both sides of the threshold.
  for (size_t i = 0; i < 5000; i += 7) {
    std::copy_n(vectors.begin() + (i / 3) * kDim, kDim, vectors.begin() + i * kDim);
  }
  auto one = Store(SmallOptions(), "one");
  VectorIndexPtr a = Build(*one, vectors, 5000);
  auto many = Store(SmallOptions(), "many");
  absl::StatusOr<VectorIndexPtr> staged = many->CreateStaged(kIdentity);
  ASSERT_TRUE(staged.ok());
  std::mt19937 rng(28);
  for (size_t from = 0; from < 5000;) {
    size_t to = std::min<size_t>(5000, from + 1 + rng() % 400);
    ASSERT_TRUE(AddRange(**staged, vectors, from, to).ok());
    from = to;
  }
  ASSERT_TRUE(many->Publish(**staged).ok());
  EXPECT_TRUE(ReadAll(Dir("one") + "/" + kVectorsBaseFile) ==
              ReadAll(Dir("many") + "/" + kVectorsBaseFile))
      << "the two indexes differ byte for byte";
  std::vector<float> queries = ClusteredVectors(100, 29);
  SearchFilter recent;
  recent.min_seq = 4000;
  for (size_t q = 0; q < 100; ++q) {
    std::vector<VectorHit> x = MustSearch(*a, &queries[q * kDim], 10);
    std::vector<VectorHit> y = MustSearch(**staged, &queries[q * kDim], 10);
    ASSERT_EQ(Seqs(x), Seqs(y)) << q;
    for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i].score, y[i].score);
    EXPECT_EQ(Seqs(MustSearch(*a, &queries[q * kDim], 10, recent)),
              Seqs(MustSearch(**staged, &queries[q * kDim], 10, recent)));
  }
}

TEST_F(FaissVectorStoreTest, CompactionRewritesTheBaseAndDropsTheJournal) {
  EmbeddedIndexOptions o = SmallOptions();
  o.compact_min_bytes = 200 << 10;  // 200 KiB: a few records of 100 new 512-byte vectors
  o.compact_fraction = 0.1;
  auto store = Store(o);
  std::vector<float> vectors = ClusteredVectors(2000, 30);
  const std::string base = Dir() + "/" + kVectorsBaseFile;
  const std::string journal = Dir() + "/" + kVectorsJournalFile;
  std::vector<float> first(vectors.begin(), vectors.begin() + 100 * kDim);
  VectorIndexPtr index = Build(*store, first, 100);
  struct stat before;
  ASSERT_EQ(::stat(base.c_str(), &before), 0);
  bool compacted = false;
  for (size_t from = 100; from < 2000; from += 100) {
    ASSERT_TRUE(AddRange(*index, vectors, from, from + 100).ok());
    ASSERT_TRUE(index->Persist().ok());
    struct stat now;
    ASSERT_EQ(::stat(base.c_str(), &now), 0);
    if (now.st_ino != before.st_ino) {
      compacted = true;
      EXPECT_FALSE(std::filesystem::exists(journal)) << "the journal is dropped at compaction";
      before = now;
    }
    ASSERT_TRUE(store->CheckPublished().ok()) << "a compaction is not a foreign publish";
  }
  EXPECT_TRUE(compacted);
  VectorIndexPtr reopened = Reopen(*store);
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->LastSeq(), 2000u);
  std::vector<float> queries = ClusteredVectors(20, 31);
  for (size_t q = 0; q < 20; ++q) {
    EXPECT_EQ(Seqs(MustSearch(*reopened, &queries[q * kDim], 10)),
              Seqs(MustSearch(*index, &queries[q * kDim], 10)));
  }
}

TEST_F(FaissVectorStoreTest, SearchesRunWhileAddsCrossTheThreshold) {
  auto store = Store();
  std::vector<float> vectors = ClusteredVectors(3000, 32);
  absl::StatusOr<VectorIndexPtr> staged = store->CreateStaged(kIdentity);
  ASSERT_TRUE(staged.ok());
  VectorIndex& index = **staged;
  std::atomic<bool> done{false};
  std::atomic<int> searches{0};
  std::thread reader([&] {
    std::vector<float> queries = ClusteredVectors(50, 33);
    for (int q = 0; !done; q = (q + 1) % 50) {
      absl::StatusOr<std::vector<VectorHit>> hits =
          index.Search(absl::MakeConstSpan(&queries[q * kDim], kDim), 10, {});
      ASSERT_TRUE(hits.ok()) << hits.status();
      const uint64_t last = index.LastSeq();
      for (const VectorHit& h : *hits) ASSERT_TRUE(h.seq >= 1 && h.seq <= last) << h.seq;
      ++searches;
    }
  });
  for (size_t from = 0; from < 3000; from += 50)
    ASSERT_TRUE(AddRange(index, vectors, from, from + 50).ok());
  done = true;
  reader.join();
  EXPECT_GT(searches.load(), 0);
  EXPECT_EQ(index.LastSeq(), 3000u);
}

TEST_F(FaissVectorStoreTest, BadOptionsAreRejected) {
  EmbeddedIndexOptions o = SmallOptions();
  o.exact_below = 10;  // fewer than nlist
  EXPECT_TRUE(absl::IsInvalidArgument(FaissVectorStore::Open(Dir(), o).status()));
  o = SmallOptions();
  o.nprobe = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(FaissVectorStore::Open(Dir(), o).status()));
}

}  // namespace
}  // namespace snapledger
