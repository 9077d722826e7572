// QdrantVectorStore against a real Qdrant: set QDRANT_URL (e.g. http://127.0.0.1:6333) to
// run; without it every test skips. Each run uses its own alias, "snapledger-live-<pid>-<us>",
// and removes its collections at the end, pass or fail.
//   QDRANT_URL=http://127.0.0.1:6333 ctest --test-dir <build> -R QdrantLive
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/clock.h"
#include "common/index/qdrant/qdrant_client.h"
#include "common/index/qdrant/qdrant_vector_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

constexpr int kDim = 32;
constexpr uint64_t kEvents = 1000;
const IndexIdentity kIdentity{"live-test/random-unit/dim=32", kDim};

// Event bodies: {"kind": one of four, "n": seq}; vectors: seeded random unit vectors.
struct LiveEvents {
  std::vector<std::string> bodies;
  std::vector<std::string> hashes;
  std::vector<IndexedEvent> events;
  std::vector<float> vectors;

  LiveEvents(uint64_t count, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    for (uint64_t seq = 1; seq <= count; ++seq) {
      bodies.push_back(absl::StrCat(R"({"kind":")", Kind(seq), R"(","n":)", seq, "}"));
      hashes.push_back(std::string(64, "0123456789abcdef"[seq % 16]));
      std::vector<float> v(kDim);
      float norm = 0;
      for (float& f : v) {
        f = normal(rng);
        norm += f * f;
      }
      for (float f : v) vectors.push_back(f / std::sqrt(norm));
    }
    for (uint64_t i = 0; i < count; ++i) {
      events.push_back(
          {i + 1, static_cast<int64_t>(1'700'000'000'000'000 + i), hashes[i], bodies[i]});
    }
  }
  static std::string Kind(uint64_t seq) { return absl::StrCat("k", seq % 4); }
  absl::Span<const float> Vector(uint64_t seq) const {
    return absl::MakeConstSpan(vectors).subspan((seq - 1) * kDim, kDim);
  }
  // Exact nearest seqs to `q` among those `keep` accepts, best first (ties by seq).
  std::vector<uint64_t> Nearest(absl::Span<const float> q, size_t k,
                                const std::function<bool(uint64_t)>& keep) const {
    std::vector<std::pair<float, uint64_t>> scored;
    for (uint64_t seq = 1; seq <= events.size(); ++seq) {
      if (!keep(seq)) continue;
      float dot = 0;
      for (int i = 0; i < kDim; ++i) dot += q[i] * Vector(seq)[i];
      scored.push_back({-dot, seq});
    }
    std::sort(scored.begin(), scored.end());
    std::vector<uint64_t> out;
    for (size_t i = 0; i < scored.size() && i < k; ++i) out.push_back(scored[i].second);
    return out;
  }
};

std::vector<uint64_t> Seqs(const std::vector<VectorHit>& hits) {
  std::vector<uint64_t> seqs;
  for (const VectorHit& h : hits) seqs.push_back(h.seq);
  return seqs;
}

class QdrantLiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* url = std::getenv("QDRANT_URL");
    if (url == nullptr || *url == '\0') {
      GTEST_SKIP() << "QDRANT_URL not set: no live Qdrant to test against";
    }
    alias_ = absl::StrCat("snapledger-live-", getpid(), "-", Clock::Real()->NowMicros());
    QdrantVectorStoreOptions options;
    options.client.url = url;
    if (const char* key = std::getenv("QDRANT_API_KEY")) options.client.api_key = key;
    options.alias = alias_;
    options.batch_size = 128;
    absl::StatusOr<std::unique_ptr<QdrantVectorStore>> store = QdrantVectorStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    absl::StatusOr<QdrantClientPtr> client = QdrantClient::Create(options.client);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void TearDown() override {
    if (store_ != nullptr) {
      EXPECT_TRUE(store_->Drop().ok()) << "cleaning up alias " << alias_;
    }
  }

  // This run's collections on the server.
  std::set<std::string> OurCollections() {
    absl::StatusOr<std::vector<std::string>> names = client_->ListCollections();
    EXPECT_TRUE(names.ok()) << names.status();
    std::set<std::string> ours;
    if (!names.ok()) return ours;
    for (const std::string& n : *names) {
      if (absl::StartsWith(n, alias_ + "-")) ours.insert(n);
    }
    return ours;
  }

  std::string alias_;
  VectorStorePtr store_;
  QdrantClientPtr client_;
};

TEST_F(QdrantLiveTest, StagePublishSearchRebuild) {
  const LiveEvents events(kEvents, 20240601);

  // Nothing published yet; a staged index is invisible.
  EXPECT_EQ(store_->OpenPublished(kIdentity).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<VectorIndexPtr> staged = store_->CreateStaged(kIdentity);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_EQ(store_->OpenPublished(kIdentity).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*staged)->Add(events.events, events.vectors).ok());
  EXPECT_EQ((*staged)->LastSeq(), kEvents);
  ASSERT_TRUE(store_->Publish(**staged).ok());
  const std::set<std::string> first = OurCollections();
  ASSERT_EQ(first.size(), 1u);

  absl::StatusOr<VectorIndexPtr> index = store_->OpenPublished(kIdentity);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->LastSeq(), kEvents);

  // The exact nearest comes first (below Qdrant's indexing threshold it searches exactly).
  for (uint64_t probe : {1u, 500u, 1000u}) {
    absl::StatusOr<std::vector<VectorHit>> hits =
        (*index)->Search(events.Vector(probe), 10, SearchFilter{});
    ASSERT_TRUE(hits.ok()) << hits.status();
    ASSERT_EQ(hits->size(), 10u);
    EXPECT_EQ((*hits)[0].seq, probe);
    EXPECT_NEAR((*hits)[0].score, 1.0f, 1e-4);
    EXPECT_EQ(Seqs(*hits), events.Nearest(events.Vector(probe), 10, [](uint64_t) { return true; }));
  }

  // A seq range and a body field, evaluated by Qdrant.
  SearchFilter range;
  range.min_seq = 200;
  range.max_seq = 299;
  absl::StatusOr<std::vector<VectorHit>> ranged = (*index)->Search(events.Vector(500), 10, range);
  ASSERT_TRUE(ranged.ok()) << ranged.status();
  EXPECT_EQ(Seqs(*ranged), events.Nearest(events.Vector(500), 10,
                                          [](uint64_t s) { return s >= 200 && s <= 299; }));
  SearchFilter kind;
  kind.fields = {{"kind", "k2"}};
  absl::StatusOr<std::vector<VectorHit>> kinded = (*index)->Search(events.Vector(500), 10, kind);
  ASSERT_TRUE(kinded.ok()) << kinded.status();
  EXPECT_EQ(Seqs(*kinded),
            events.Nearest(events.Vector(500), 10, [](uint64_t s) { return s % 4 == 2; }));
  SearchFilter both = range;
  both.fields = {{"kind", "k1"}, {"n", 201}};
  absl::StatusOr<std::vector<VectorHit>> one = (*index)->Search(events.Vector(500), 10, both);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(Seqs(*one), std::vector<uint64_t>{201});

  // Another identity is refused.
  absl::StatusOr<VectorIndexPtr> other = store_->OpenPublished({"other", kDim});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(other.status().message()), HasSubstr("rebuilt"));

  // A rebuild: the old index serves until the switch, then its collection is gone.
  absl::StatusOr<VectorIndexPtr> rebuilt = store_->CreateStaged(kIdentity);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  const LiveEvents few(10, 7);
  ASSERT_TRUE((*rebuilt)->Add(few.events, few.vectors).ok());
  absl::StatusOr<VectorIndexPtr> still = store_->OpenPublished(kIdentity);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ((*still)->LastSeq(), kEvents);
  ASSERT_TRUE(store_->Publish(**rebuilt).ok());
  const std::set<std::string> second = OurCollections();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_NE(*second.begin(), *first.begin());
  absl::StatusOr<VectorIndexPtr> reopened = store_->OpenPublished(kIdentity);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->LastSeq(), 10u);

  ASSERT_TRUE(store_->Drop().ok());
  EXPECT_TRUE(OurCollections().empty());
  EXPECT_EQ(store_->OpenPublished(kIdentity).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(QdrantLiveTest, QdrantRejectsAWrongDimensionWithItsOwnMessage) {
  absl::StatusOr<VectorIndexPtr> staged = store_->CreateStaged(kIdentity);
  ASSERT_TRUE(staged.ok()) << staged.status();
  const std::string collection = *OurCollections().begin();
  const std::vector<float> short_vector(kDim / 2, 0.1f);
  const QdrantPoint points[] = {{1, short_vector, nlohmann::json()}};
  absl::Status st = client_->UpsertPoints(collection, points);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr(absl::StrCat("qdrant PUT /collections/", collection, "/points: 400")));
  EXPECT_EQ(client_->GetCollection(alias_ + "-0").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace snapledger
