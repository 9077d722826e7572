#include "common/index/similarity_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/index/faiss/faiss_vector_store.h"
#include "common/index/feature_hash_embedder.h"
#include "common/index/similarity_query.h"
#include "common/ledger/event_log.h"
#include "common/lookup/event_query.h"
#include "common/testing/manual_clock.h"
#include "common/testing/ovs_event_generator.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

// An in-memory VectorStore with exact search: the double for the updater's logic. The
// embedded and Qdrant stores have their own tests.
struct MemoryStoreState {
  struct Index {
    IndexIdentity identity;
    std::vector<uint64_t> seqs;
    std::vector<float> vectors;
  };
  std::shared_ptr<Index> published;
  int generation = 0;         // bumps on each Publish
  bool fail_persist = false;  // Persist fails (a full disk)
};

class MemoryIndex final : public VectorIndex {
 public:
  MemoryIndex(std::shared_ptr<MemoryStoreState::Index> data, MemoryStoreState* state)
      : data_(std::move(data)), state_(state) {}
  IndexIdentity Identity() const override { return data_->identity; }
  uint64_t LastSeq() const override { return data_->seqs.empty() ? 0 : data_->seqs.back(); }
  absl::Status Add(absl::Span<const IndexedEvent> events,
                   absl::Span<const float> vectors) override {
    for (size_t i = 0; i < events.size(); ++i)
      if (events[i].seq != LastSeq() + 1 + i)
        return absl::InvalidArgumentError("seqs are not consecutive");
    for (const IndexedEvent& e : events) data_->seqs.push_back(e.seq);
    data_->vectors.insert(data_->vectors.end(), vectors.begin(), vectors.end());
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<VectorHit>> Search(absl::Span<const float> query, size_t k,
                                                const SearchFilter& filter) const override {
    const size_t dim = query.size();
    std::vector<VectorHit> hits;
    for (size_t i = 0; i < data_->seqs.size(); ++i) {
      uint64_t seq = data_->seqs[i];
      if (seq < filter.min_seq || seq > filter.max_seq) continue;
      if (!filter.fields.empty()) {
        absl::StatusOr<bool> ok = filter.accept_fields(seq);
        if (!ok.ok()) return ok.status();
        if (!*ok) continue;
      }
      float dot = 0;
      for (size_t d = 0; d < dim; ++d) dot += query[d] * data_->vectors[i * dim + d];
      hits.push_back({seq, dot});
    }
    std::sort(hits.begin(), hits.end(), [](const VectorHit& a, const VectorHit& b) {
      return a.score != b.score ? a.score > b.score : a.seq < b.seq;
    });
    if (hits.size() > k) hits.resize(k);
    return hits;
  }
  absl::Status Persist() override {
    return state_->fail_persist ? absl::ResourceExhaustedError("disk full") : absl::OkStatus();
  }
  const std::shared_ptr<MemoryStoreState::Index>& data() const { return data_; }

 private:
  std::shared_ptr<MemoryStoreState::Index> data_;
  MemoryStoreState* state_;
};

class MemoryStore final : public VectorStore {
 public:
  explicit MemoryStore(MemoryStoreState* state) : state_(state) {}
  absl::StatusOr<VectorIndexPtr> OpenPublished(const IndexIdentity& want) override {
    if (!state_->published) return absl::NotFoundError("no index published");
    if (!(state_->published->identity == want))
      return absl::FailedPreconditionError("built by another embedder: rebuild needed");
    opened_ = state_->published;
    return std::make_unique<MemoryIndex>(state_->published, state_);
  }
  absl::StatusOr<VectorIndexPtr> CreateStaged(const IndexIdentity& identity) override {
    auto data = std::make_shared<MemoryStoreState::Index>();
    data->identity = identity;
    return std::make_unique<MemoryIndex>(data, state_);
  }
  absl::Status Publish(VectorIndex& staged) override {
    state_->published = static_cast<MemoryIndex&>(staged).data();
    opened_ = state_->published;
    ++state_->generation;
    return absl::OkStatus();
  }
  absl::Status Drop() override {
    state_->published.reset();
    return absl::OkStatus();
  }
  absl::Status CheckPublished() override {
    if (!state_->published) return absl::NotFoundError("the published index was removed");
    if (state_->published != opened_) return absl::FailedPreconditionError("replaced");
    return absl::OkStatus();
  }
  std::string Describe() const override { return "memory"; }

 private:
  MemoryStoreState* state_;
  std::shared_ptr<MemoryStoreState::Index> opened_;
};

class SimilarityIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path() + "/ledger";
    std::filesystem::create_directories(dir_);
    auto log = EventLog::Create(dir_, 1);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }

  void Append(int n) {
    auto r = log_->AppendBatch(gen_.Generate(n));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(log_->Sync().ok());
  }

  SimilarityIndexPtr MakeIndex(SimilarityIndexOptions options = {}, int dimension = 128) {
    options.batch_events = 97;  // many batches, and one that is not full
    options.clock = &clock_;
    return std::make_unique<SimilarityIndex>(
        dir_, std::make_unique<FeatureHashEmbedder>(FeatureHashOptions{dimension}),
        std::make_unique<MemoryStore>(&store_), options);
  }

  // The top `k` seqs for text queries over the whole log.
  std::vector<std::vector<uint64_t>> Answers(SimilarityIndex& index, size_t k = 5) {
    std::vector<std::vector<uint64_t>> out;
    for (const char* text : {"port_vlan_changed br-int", "compute-03 port_created",
                             "bridge_deleted br-ex", "port_mtu_changed 9000"}) {
      std::vector<float> q;
      EXPECT_TRUE(index.embedder().EmbedText(text, &q).ok());
      auto hits = index.Search(q, k, SearchFilter{});
      EXPECT_TRUE(hits.ok()) << hits.status();
      std::vector<uint64_t> seqs;
      if (hits.ok())
        for (const VectorHit& h : *hits) seqs.push_back(h.seq);
      out.push_back(seqs);
    }
    return out;
  }

  testing::TempDir tmp_;
  std::string dir_;
  EventLogPtr log_;
  OvsEventGenerator gen_{7};
  MemoryStoreState store_;
  ManualClock clock_;  // the indexes' (MakeIndex)
};

TEST_F(SimilarityIndexTest, FollowIndexesEveryEventAndFindsAnEventByItsOwnBody) {
  Append(500);
  SimilarityIndexPtr index = MakeIndex();
  ASSERT_TRUE(index->Follow().ok());
  SimilarityIndexStatus st = index->Status();
  EXPECT_EQ(st.state, VectorIndexState::kCurrent);
  EXPECT_TRUE(st.available);
  EXPECT_EQ(st.indexed_through, 500u);
  EXPECT_EQ(st.log_events, 500u);
  EXPECT_EQ(st.lag, 0u);
  EXPECT_EQ(st.rebuilds, 1u);  // nothing was published: the first Follow built it

  EventQuery events(dir_, tmp_.path() + "/lookup");
  SimilarQuestion q;
  q.like = SimilarQuestion::Like::kSeq;
  q.seq = 123;
  q.k = 3;
  auto answer = FindSimilar(events, *index, q);
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->events.size(), 3u);
  for (const SimilarEvent& e : answer->events)
    EXPECT_FALSE(absl::StrContains(e.line, "\"seq\":123,"));

  auto line = events.Get(123);
  ASSERT_TRUE(line.ok());
  auto ev = ParseEventLine(*line);
  ASSERT_TRUE(ev.ok());
  q.like = SimilarQuestion::Like::kBody;
  q.text = std::string(ev->body);
  answer = FindSimilar(events, *index, q);
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_FALSE(answer->events.empty());
  EXPECT_NEAR(answer->events[0].score, 1.0, 1e-5);
  EXPECT_EQ(ParseEventLine(answer->events[0].line)->body, ev->body);
}

TEST_F(SimilarityIndexTest, IncrementalFollowAnswersLikeAFullRebuild) {
  Append(300);
  SimilarityIndexPtr index = MakeIndex();
  ASSERT_TRUE(index->Follow().ok());
  Append(250);
  ASSERT_TRUE(index->Follow().ok());
  Append(1);
  ASSERT_TRUE(index->Follow().ok());
  EXPECT_EQ(index->Status().indexed_through, 551u);
  auto incremental = Answers(*index);

  std::vector<RebuildProgressInfo> progress;
  ASSERT_TRUE(index->Rebuild([&](const RebuildProgressInfo& p) { progress.push_back(p); }).ok());
  EXPECT_EQ(index->Status().indexed_through, 551u);
  EXPECT_EQ(Answers(*index), incremental);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().events_done, 551u);
  EXPECT_EQ(progress.back().events_total, 551u);
  EXPECT_EQ(progress.back().bytes_done, progress.back().bytes_total);
}

// The same through the embedded FAISS store, past the point where it trains its IVF lists:
// incremental following and a rebuild (which trains on the same first vectors) agree, and so
// does a node that reopens the persisted index.
TEST_F(SimilarityIndexTest, EmbeddedIndexAnswersAlikeIncrementallyRebuiltAndReopened) {
  EmbeddedIndexOptions embedded;
  embedded.exact_below = 300;
  embedded.nlist = 8;
  embedded.train_size = 300;
  embedded.nprobe = 4;
  auto make = [&] {
    auto store = FaissVectorStore::Open(tmp_.path() + "/vectors", embedded);
    EXPECT_TRUE(store.ok()) << store.status();
    SimilarityIndexOptions options;
    options.batch_events = 97;
    return std::make_unique<SimilarityIndex>(dir_, std::make_unique<FeatureHashEmbedder>(),
                                             std::move(*store), options);
  };
  SimilarityIndexPtr index = make();
  Append(150);
  ASSERT_TRUE(index->Follow().ok());
  for (int step : {400, 1, 333, 1200}) {
    Append(step);
    ASSERT_TRUE(index->Follow().ok());
  }
  ASSERT_EQ(index->Status().indexed_through, 2084u);
  auto incremental = Answers(*index, 10);
  index.reset();

  SimilarityIndexPtr reopened = make();
  ASSERT_TRUE(reopened->Follow().ok());
  EXPECT_EQ(reopened->Status().rebuilds, 0u);  // opened from disk, not rebuilt
  EXPECT_EQ(Answers(*reopened, 10), incremental);

  ASSERT_TRUE(reopened->Rebuild().ok());
  EXPECT_EQ(Answers(*reopened, 10), incremental);
}

TEST_F(SimilarityIndexTest, WithoutAnIndexSimilarityIsNotAvailableAndSaysWhy) {
  Append(50);
  SimilarityIndexOptions options;
  options.auto_rebuild = false;
  SimilarityIndexPtr index = MakeIndex(options);
  std::vector<float> q;
  ASSERT_TRUE(index->embedder().EmbedText("port_created", &q).ok());
  auto before = index->Search(q, 3, SearchFilter{});
  EXPECT_EQ(before.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(before.status().message(), "vector index not available: "))
      << before.status();

  ASSERT_TRUE(index->Follow().ok());
  EXPECT_EQ(index->Status().state, VectorIndexState::kMissing);
  auto still = index->Search(q, 3, SearchFilter{});
  EXPECT_EQ(still.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(still.status().message(), "no index published")) << still.status();

  ASSERT_TRUE(index->Rebuild().ok());
  EXPECT_TRUE(index->Search(q, 3, SearchFilter{}).ok());
}

TEST_F(SimilarityIndexTest, AnIndexRemovedBehindTheNodeIsDroppedAndRebuilt) {
  Append(200);
  SimilarityIndexOptions options;
  options.auto_rebuild = false;
  SimilarityIndexPtr index = MakeIndex(options);
  ASSERT_TRUE(index->Rebuild().ok());
  auto answers = Answers(*index);

  store_.published.reset();  // the operator deleted the index directory
  ASSERT_TRUE(index->Follow().ok());
  EXPECT_FALSE(index->Status().available);
  std::vector<float> q;
  ASSERT_TRUE(index->embedder().EmbedText("port_created", &q).ok());
  EXPECT_EQ(index->Search(q, 3, SearchFilter{}).status().code(),
            absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(index->Rebuild().ok());
  EXPECT_EQ(Answers(*index), answers);
}

TEST_F(SimilarityIndexTest, AnIndexOfAnotherEmbedderIsRebuiltWithThisOne) {
  Append(100);
  ASSERT_TRUE(MakeIndex({}, 64)->Follow().ok());
  ASSERT_EQ(store_.published->identity.dimension, 64);
  SimilarityIndexPtr index = MakeIndex({}, 128);
  ASSERT_TRUE(index->Follow().ok());
  EXPECT_EQ(store_.published->identity.dimension, 128);
  EXPECT_EQ(store_.published->identity.embedder_id, "feature-hash-v1/dim=128");
  EXPECT_EQ(index->Status().indexed_through, 100u);
}

TEST_F(SimilarityIndexTest, AnIndexOfAnotherLedgerIsStaleAndRebuilt) {
  Append(100);
  ASSERT_TRUE(MakeIndex()->Follow().ok());
  // Another ledger of the same length: the index's last event is not in it.
  std::string other = tmp_.path() + "/other";
  std::filesystem::create_directories(other);
  {
    auto log = EventLog::Create(other, 2);
    ASSERT_TRUE(log.ok());
    OvsEventGenerator g(99);
    ASSERT_TRUE((*log)->AppendBatch(g.Generate(150)).ok());
    ASSERT_TRUE((*log)->Sync().ok());
  }
  SimilarityIndexPtr index = MakeIndex();
  ASSERT_TRUE(index->Follow().ok());
  const int generation = store_.generation;
  index->SetLedgerDir(other);
  ASSERT_TRUE(index->Follow().ok());
  EXPECT_EQ(store_.generation, generation + 1);
  EXPECT_EQ(index->Status().indexed_through, 150u);
}

TEST_F(SimilarityIndexTest, EachBatchWaitsWhileTheNodeHasMoreUrgentWorkAndLosesNothing) {
  Append(500);  // 6 batches of 97 events (MakeIndex), the last not full
  std::atomic<int> asked{0};
  SimilarityIndexOptions options;
  // "Busy" for the first two answers of every batch: each batch waits two polls.
  options.give_way = [&] { return asked.fetch_add(1) % 3 != 2; };
  options.give_way_poll = absl::Milliseconds(2);
  options.give_way_max_wait = absl::Seconds(30);
  clock_.SetAutoAdvance(true);  // each poll's wait passes at once
  SimilarityIndexPtr index = MakeIndex(options);
  ASSERT_TRUE(index->Follow().ok());
  SimilarityIndexStatus st = index->Status();
  EXPECT_EQ(st.indexed_through, 500u);
  EXPECT_EQ(st.lag, 0u);
  EXPECT_EQ(asked.load(), 6 * 3);
  EXPECT_NEAR(st.gave_way_seconds, 6 * 2 * 0.002, 1e-9);
}

// Options whose node is always busy with more urgent work (give_way never says false).
SimilarityIndexOptions AlwaysBusy(absl::Duration max_wait) {
  SimilarityIndexOptions options;
  options.give_way = [] { return true; };
  options.give_way_poll = absl::Milliseconds(1);
  options.give_way_max_wait = max_wait;
  return options;
}

TEST_F(SimilarityIndexTest, GivingWayIsBoundedSoTheIndexStillAdvances) {
  Append(300);  // 4 batches
  clock_.SetAutoAdvance(true);
  SimilarityIndexPtr index = MakeIndex(AlwaysBusy(absl::Milliseconds(15)));
  ASSERT_TRUE(index->Follow().ok());
  SimilarityIndexStatus st = index->Status();
  EXPECT_EQ(st.indexed_through, 300u);
  EXPECT_NEAR(st.gave_way_seconds, 4 * 0.015, 1e-9);
}

TEST_F(SimilarityIndexTest, AStepFarBehindTheLogCatchesUpWithoutGivingWay) {
  Append(300);
  std::atomic<int> asked{0};
  clock_.SetAutoAdvance(true);
  SimilarityIndexOptions options = AlwaysBusy(absl::Hours(1));
  options.give_way = [&] { return ++asked > 0; };
  options.give_way_max_backlog = 299;  // the first step (a rebuild of 300 events) is behind
  SimilarityIndexPtr index = MakeIndex(options);
  ASSERT_TRUE(index->Follow().ok());
  EXPECT_EQ(index->Status().indexed_through, 300u);
  EXPECT_EQ(asked.load(), 0);
  EXPECT_EQ(index->Status().gave_way_seconds, 0.0);

  Append(100);  // within the backlog: this step gives way again (up to its max wait)
  index = MakeIndex(AlwaysBusy(absl::Milliseconds(5)));
  ASSERT_TRUE(index->Follow().ok());
  EXPECT_EQ(index->Status().indexed_through, 400u);
  EXPECT_GT(index->Status().gave_way_seconds, 0.0);
}

TEST_F(SimilarityIndexTest, CancelEndsAWaitForMoreUrgentWork) {
  Append(100);
  SimilarityIndexPtr index = MakeIndex(AlwaysBusy(absl::Hours(1)));
  absl::Status st;
  std::thread follower([&] { st = index->Follow(); });
  clock_.BlockUntilWaiters(1);  // the first batch gives way
  index->Cancel();
  clock_.Advance(absl::Milliseconds(1));  // its next look, one give_way_poll on
  follower.join();
  EXPECT_TRUE(absl::IsCancelled(st)) << st;
  EXPECT_DOUBLE_EQ(index->Status().gave_way_seconds, 0.001);  // not the hour it was allowed
  EXPECT_EQ(index->Status().indexed_through, 0u);
}

TEST_F(SimilarityIndexTest, AMalformedLineIsReportedWithItsNumberAndNothingAfterItIsIndexed) {
  Append(120);
  SimilarityIndexPtr index = MakeIndex();
  ASSERT_TRUE(index->Follow().ok());
  log_.reset();
  {
    std::ofstream out(dir_ + "/events.jsonl", std::ios::app);
    out << "{\"seq\":121,\"this is\":\"not an event\"}\n";
  }
  absl::Status st = index->Follow();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "line 121")) << st;
  SimilarityIndexStatus status = index->Status();
  EXPECT_EQ(status.state, VectorIndexState::kFailed);
  EXPECT_TRUE(status.available);  // the index of events 1..120 still answers
  EXPECT_EQ(status.indexed_through, 120u);
}

TEST_F(SimilarityIndexTest, FiltersByTimeRangeAndFieldValues) {
  Append(400);
  SimilarityIndexPtr index = MakeIndex();
  ASSERT_TRUE(index->Follow().ok());
  EventQuery events(dir_, tmp_.path() + "/lookup");
  auto first = ParseEventLine(*events.Get(101));
  auto last = ParseEventLine(*events.Get(200));
  ASSERT_TRUE(first.ok() && last.ok());

  SimilarQuestion q;
  q.text = "port_created br-int";
  q.k = 20;
  q.from_ts = first->ts;
  q.to_ts = last->ts;
  auto field = ParseFieldMatch("bridge=br-int");
  ASSERT_TRUE(field.ok());
  q.fields.push_back(*field);
  auto answer = FindSimilar(events, *index, q);
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_FALSE(answer->events.empty());
  for (const SimilarEvent& e : answer->events) {
    auto ev = ParseEventLine(e.line);
    ASSERT_TRUE(ev.ok());
    EXPECT_GE(ev->ts, first->ts);
    EXPECT_LE(ev->ts, last->ts);
    EXPECT_TRUE(absl::StrContains(std::string(ev->body), "\"bridge\":\"br-int\"")) << e.line;
  }

  q.from_ts = last->ts + 1'000'000'000;  // after the last event
  q.to_ts = last->ts + 2'000'000'000;
  answer = FindSimilar(events, *index, q);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_TRUE(answer->events.empty());

  q.from_ts = 10;
  q.to_ts = 5;
  EXPECT_EQ(FindSimilar(events, *index, q).status().code(), absl::StatusCode::kInvalidArgument);
  q.from_ts.reset();
  q.to_ts.reset();
  q.k = 0;
  EXPECT_EQ(FindSimilar(events, *index, q).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseFieldMatch, ReadsJsonScalarsAndPlainStrings) {
  auto a = ParseFieldMatch("host=compute-03");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->field, "host");
  EXPECT_EQ(a->value, nlohmann::json("compute-03"));
  auto b = ParseFieldMatch("new_vlan=17");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->value, nlohmann::json(17));
  auto c = ParseFieldMatch("name=\"17\"");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->value, nlohmann::json("17"));
  EXPECT_FALSE(ParseFieldMatch("novalue").ok());
  EXPECT_FALSE(ParseFieldMatch("=x").ok());
}

}  // namespace
}  // namespace snapledger
