#include "common/lookup/event_query.h"

#include <gtest/gtest.h>
#include <lmdb.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/ledger/event_log.h"
#include "common/ledger/log_reader.h"
#include "common/testing/temp_dir.h"
#include "common/testing/test_ledger.h"

namespace snapledger {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

using Ledger = testing::TestLedger;

// events.jsonl read and parsed independently of the code under test; index i is seq i + 1.
struct Reference {
  std::vector<std::string> lines;
  std::vector<int64_t> ts;
  std::vector<std::string> hashes;
  std::vector<uint64_t> offsets;

  explicit Reference(const std::string& ledger_dir) {
    auto text = ReadFileToString(ledger_dir + "/events.jsonl");
    EXPECT_TRUE(text.ok());
    for (size_t pos = 0, nl; (nl = text->find('\n', pos)) != std::string::npos; pos = nl + 1) {
      lines.push_back(text->substr(pos, nl - pos));
      auto ev = ParseEventLine(lines.back());
      EXPECT_TRUE(ev.ok());
      ts.push_back(ev->ts);
      hashes.emplace_back(ev->hash);
      offsets.push_back(pos);
    }
  }
  std::vector<std::string> Range(int64_t from, int64_t to, size_t limit) const {
    std::vector<std::string> out;
    for (size_t i = 0; i < lines.size() && out.size() < limit; ++i)
      if (ts[i] >= from && ts[i] <= to) out.push_back(lines[i]);
    return out;
  }
};

// Options of a one-shot CLI process: rebuild before answering.
EventQueryOptions OneShot() {
  EventQueryOptions options;
  options.rebuild_in_background = false;
  return options;
}

IndexState StateOf(EventQuery& query) {
  auto status = query.CheckIndex();
  EXPECT_TRUE(status.ok()) << status.status();
  return status.ok() ? status->state : IndexState::kMissing;
}

void ExpectAllGetsMatch(EventQuery& query, const Reference& ref) {
  for (size_t i = 0; i < ref.lines.size(); ++i) {
    auto by_seq = query.Get(i + 1);
    ASSERT_TRUE(by_seq.ok()) << by_seq.status();
    EXPECT_EQ(*by_seq, ref.lines[i]);
    auto by_hash = query.GetByHash(ref.hashes[i]);
    ASSERT_TRUE(by_hash.ok()) << by_hash.status();
    EXPECT_EQ(*by_hash, ref.lines[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// The same questions answered from the index and by scanning.

enum class AnswerPath { kIndex, kScan };

class EventQueryAnswers : public ::testing::TestWithParam<AnswerPath> {
 protected:
  void SetUp() override {
    ledger_ = std::make_unique<Ledger>(tmp_.Sub("live"));
    ledger_->Append(60, 1000, 4);  // ts 1000..1014, four events each
    ledger_->Append(10, 2000);     // then a gap, then ts 2000..2009
    ref_ = std::make_unique<Reference>(ledger_->dir());
    EventQueryOptions options;
    options.rebuild_in_background = false;
    std::string index_dir = tmp_.Sub("index");
    if (GetParam() == AnswerPath::kScan) {
      // An index directory beneath a regular file can never be built: every answer is a scan.
      std::ofstream(tmp_.Sub("not-a-dir")) << "x";
      index_dir = tmp_.Sub("not-a-dir/index");
    }
    query_ = std::make_unique<EventQuery>(ledger_->dir(), index_dir, options);
    if (GetParam() == AnswerPath::kIndex) {
      ASSERT_TRUE(query_->RebuildIndex().ok());
    }
  }
  void TearDown() override {
    IndexState expected =
        GetParam() == AnswerPath::kIndex ? IndexState::kCurrent : IndexState::kMissing;
    EXPECT_EQ(StateOf(*query_), expected);
  }

  TempDir tmp_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Reference> ref_;
  std::unique_ptr<EventQuery> query_;
};

TEST_P(EventQueryAnswers, GetBySeqAndHashReturnTheStoredLines) {
  ExpectAllGetsMatch(*query_, *ref_);
}

TEST_P(EventQueryAnswers, UnknownSeqAndHashAreNotFound) {
  EXPECT_TRUE(absl::IsNotFound(query_->Get(71).status()));
  EXPECT_TRUE(absl::IsNotFound(query_->GetByHash(std::string(64, 'a')).status()));
}

TEST_P(EventQueryAnswers, MalformedRequestsAreInvalid) {
  EXPECT_TRUE(absl::IsInvalidArgument(query_->Get(0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(query_->GetByHash("abc").status()));
  std::string upper = ref_->hashes[0];
  for (char& c : upper) c = static_cast<char>(toupper(c));
  EXPECT_TRUE(absl::IsInvalidArgument(query_->GetByHash(upper).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(query_->Range(10, 9, 5).status()));
}

TEST_P(EventQueryAnswers, RangesAgreeWithTheLog) {
  for (int64_t from : {0, 1000, 1001, 1013, 1014, 1015, 1999, 2000, 2005, 2009, 2010}) {
    for (int64_t to : {from, from + 1, from + 3, int64_t{1014}, int64_t{2009}, int64_t{9999}}) {
      if (to < from) continue;
      for (size_t limit : {size_t{0}, size_t{1}, size_t{3}, size_t{5}, size_t{100}}) {
        auto got = query_->Range(from, to, limit);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(*got, ref_->Range(from, to, limit)) << from << ".." << to << " limit " << limit;
      }
    }
  }
}

TEST_P(EventQueryAnswers, EventsSharingATimestampAreAllReturned) {
  auto got = query_->Range(1005, 1005, 100);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, (std::vector<std::string>(ref_->lines.begin() + 20, ref_->lines.begin() + 24)));
}

TEST_P(EventQueryAnswers, RangeInAGapBetweenEventsIsEmpty) {
  auto got = query_->Range(1015, 1999, 100);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->empty());
}

TEST_P(EventQueryAnswers, RangesBeforeTheFirstOrAfterTheLastEventAreEmpty) {
  EXPECT_TRUE(query_->Range(std::numeric_limits<int64_t>::min(), 999, 100)->empty());
  EXPECT_TRUE(query_->Range(2010, std::numeric_limits<int64_t>::max(), 100)->empty());
}

TEST_P(EventQueryAnswers, BoundsBeyondBothEndsReturnEverything) {
  auto got =
      query_->Range(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), 1000);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, ref_->lines);
}

TEST_P(EventQueryAnswers, LimitKeepsTheFirstEventsInSeqOrder) {
  auto got = query_->Range(1003, 2005, 6);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, (std::vector<std::string>(ref_->lines.begin() + 12, ref_->lines.begin() + 18)));
  EXPECT_TRUE(query_->Range(1003, 2005, 0)->empty());
}

INSTANTIATE_TEST_SUITE_P(FromIndexAndByScan, EventQueryAnswers,
                         ::testing::Values(AnswerPath::kIndex, AnswerPath::kScan),
                         [](const auto& info) {
                           return info.param == AnswerPath::kIndex ? "Index" : "Scan";
                         });

// ---------------------------------------------------------------------------------------------
// The index's life cycle.

TEST(EventQuery, EmptyLedgerHasNoEvents) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  EventQuery query(ledger.dir(), tmp.Sub("index"), OneShot());
  EXPECT_TRUE(absl::IsNotFound(query.Get(1).status()));
  EXPECT_TRUE(query.Range(0, 1 << 30, 10)->empty());
  auto status = query.CheckIndex();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->state, IndexState::kCurrent);
  EXPECT_EQ(status->indexed_through, 0u);
}

TEST(EventQuery, IndexFollowsTheLogAsItGrows) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(20);
  EventQuery query(ledger.dir(), tmp.Sub("index"));
  ASSERT_TRUE(query.RebuildIndex().ok());
  ledger.Append(5, 5000);
  auto lagging = query.CheckIndex();
  ASSERT_TRUE(lagging.ok());
  EXPECT_EQ(lagging->state, IndexState::kLagging);
  EXPECT_EQ(lagging->indexed_through, 20u);
  EXPECT_EQ(lagging->log_events, 25u);
  EXPECT_EQ(lagging->lag, 5u);
  Reference ref(ledger.dir());
  EXPECT_EQ(*query.Get(25), ref.lines[24]);
  auto current = query.CheckIndex();
  EXPECT_EQ(current->state, IndexState::kCurrent);
  EXPECT_EQ(current->indexed_through, 25u);
  EXPECT_EQ(current->lag, 0u);
}

TEST(EventQuery, DeletedIndexIsAnsweredByScanThenRebuilt) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(40);
  EventQuery query(ledger.dir(), tmp.Sub("index/lookup"));
  ASSERT_TRUE(query.RebuildIndex().ok());
  fs::remove_all(tmp.Sub("index"));
  EXPECT_EQ(StateOf(query), IndexState::kMissing);
  Reference ref(ledger.dir());
  ExpectAllGetsMatch(query, ref);
  query.WaitForRebuild();
  auto status = query.CheckIndex();
  EXPECT_EQ(status->state, IndexState::kCurrent);
  EXPECT_EQ(status->indexed_through, 40u);
  ExpectAllGetsMatch(query, ref);
}

TEST(EventQuery, AnotherLedgersIndexIsStaleAndRebuilt) {
  TempDir tmp;
  Ledger a(tmp.Sub("a")), b(tmp.Sub("b"));
  a.Append(30);
  b.Append(12, 7000);
  {
    EventQuery query_a(a.dir(), tmp.Sub("index"));
    ASSERT_TRUE(query_a.RebuildIndex().ok());
  }
  EventQuery query_b(b.dir(), tmp.Sub("index"));
  auto status = query_b.CheckIndex();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->state, IndexState::kStale);
  EXPECT_EQ(status->log_events, 12u);
  Reference ref(b.dir());
  EXPECT_EQ(*query_b.Get(3), ref.lines[2]);
  EXPECT_TRUE(absl::IsNotFound(query_b.Get(20).status()));
  query_b.WaitForRebuild();
  status = query_b.CheckIndex();
  EXPECT_EQ(status->state, IndexState::kCurrent);
  EXPECT_EQ(status->indexed_through, 12u);
  ExpectAllGetsMatch(query_b, ref);
}

TEST(EventQuery, RolledBackLogMakesTheIndexStaleAndRebuilt) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(30);
  ledger.Close();
  EventQuery query(ledger.dir(), tmp.Sub("index"), OneShot());
  ASSERT_TRUE(query.RebuildIndex().ok());
  Reference before(ledger.dir());
  fs::resize_file(ledger.events_path(), before.offsets[10]);  // keep 10 events
  EXPECT_EQ(StateOf(query), IndexState::kStale);
  EXPECT_TRUE(absl::IsNotFound(query.Get(11).status()));
  auto status = query.CheckIndex();
  EXPECT_EQ(status->state, IndexState::kCurrent);
  EXPECT_EQ(status->indexed_through, 10u);
}

TEST(EventQuery, SynchronousModeAnswersFromTheRebuiltIndex) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(15);
  EventQuery query(ledger.dir(), tmp.Sub("index"), OneShot());
  EXPECT_EQ(StateOf(query), IndexState::kMissing);
  Reference ref(ledger.dir());
  EXPECT_EQ(*query.Get(15), ref.lines[14]);
  EXPECT_EQ(StateOf(query), IndexState::kCurrent);  // no WaitForRebuild needed
}

// An index of `n` events built and closed, for damage tests.
std::string BuildClosedIndex(const TempDir& tmp, const Ledger& ledger) {
  EventQuery query(ledger.dir(), tmp.Sub("index"));
  EXPECT_TRUE(query.RebuildIndex().ok());
  return tmp.Sub("index");
}

TEST(EventQuery, TruncatedIndexFileIsNotTrustedAndRebuilt) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(3000);
  Reference ref(ledger.dir());
  EventQuery query(ledger.dir(), tmp.Sub("index"));
  ASSERT_TRUE(query.RebuildIndex().ok());
  std::string data = tmp.Sub("index/data.mdb");
  fs::resize_file(data, fs::file_size(data) / 2);  // while this process has it open
  EXPECT_EQ(StateOf(query), IndexState::kMissing);
  EXPECT_EQ(*query.Get(2999), ref.lines[2998]);
  EXPECT_EQ(*query.GetByHash(ref.hashes[5]), ref.lines[5]);
  query.WaitForRebuild();
  EXPECT_EQ(StateOf(query), IndexState::kCurrent);
  EXPECT_EQ(*query.Get(2999), ref.lines[2998]);
}

TEST(EventQuery, GarbledIndexFileIsNotTrustedAndRebuilt) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(500);
  Reference ref(ledger.dir());
  std::string index_dir = BuildClosedIndex(tmp, ledger);
  {
    std::fstream f(index_dir + "/data.mdb", std::ios::in | std::ios::out | std::ios::binary);
    std::string garbage(8192, '\x5a');
    f.write(garbage.data(), garbage.size());  // both meta pages
  }
  EventQuery query(ledger.dir(), index_dir);
  EXPECT_EQ(StateOf(query), IndexState::kMissing);
  EXPECT_EQ(*query.Range(1100, 1102, 10), ref.Range(1100, 1102, 10));
  query.WaitForRebuild();
  EXPECT_EQ(StateOf(query), IndexState::kCurrent);
  EXPECT_EQ(*query.Range(1100, 1102, 10), ref.Range(1100, 1102, 10));
}

// Rewrites entries of a closed index behind its back, as undetected page damage would.
class IndexTamperer {
 public:
  explicit IndexTamperer(const std::string& dir) {
    mdb_env_create(&env_);
    mdb_env_set_maxdbs(env_, 3);
    EXPECT_EQ(mdb_env_open(env_, dir.c_str(), 0, 0644), 0);
    EXPECT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn_), 0);
  }
  ~IndexTamperer() {
    EXPECT_EQ(mdb_txn_commit(txn_), 0);
    mdb_env_close(env_);
  }
  // Makes seq `seq`'s entry a copy of `other`'s (or changes its ts by `ts_delta`).
  void CopySeqEntry(uint64_t seq, uint64_t other, int64_t ts_delta = 0) {
    MDB_dbi dbi = Dbi("seq");
    MDB_val val = Get(dbi, SeqKey(other));
    std::string bytes(static_cast<char*>(val.mv_data), val.mv_size);
    int64_t ts;
    memcpy(&ts, bytes.data() + 12, 8);
    ts += ts_delta;
    memcpy(bytes.data() + 12, &ts, 8);
    std::string key = SeqKey(seq);
    MDB_val k{key.size(), key.data()}, v{bytes.size(), bytes.data()};
    EXPECT_EQ(mdb_put(txn_, dbi, &k, &v, 0), 0);
  }
  void PointHashAt(const std::string& hash_hex, uint64_t seq) {
    Digest d;
    FromHex(hash_hex, &d);
    MDB_val k{d.size(), d.data()}, v{sizeof seq, &seq};
    EXPECT_EQ(mdb_put(txn_, Dbi("hash"), &k, &v, 0), 0);
  }

 private:
  static std::string SeqKey(uint64_t seq) {
    std::string k(8, '\0');
    for (int i = 7; i >= 0; --i, seq >>= 8) k[i] = static_cast<char>(seq & 0xff);
    return k;
  }
  MDB_dbi Dbi(const char* name) {
    MDB_dbi dbi = 0;
    EXPECT_EQ(mdb_dbi_open(txn_, name, 0, &dbi), 0);
    return dbi;
  }
  MDB_val Get(MDB_dbi dbi, std::string key) {
    MDB_val k{key.size(), key.data()}, v{};
    EXPECT_EQ(mdb_get(txn_, dbi, &k, &v), 0);
    return v;
  }
  MDB_env* env_ = nullptr;
  MDB_txn* txn_ = nullptr;
};

TEST(EventQuery, IndexEntriesThatDisagreeWithTheLogAreNotTrusted) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(200, 1000, 2);
  Reference ref(ledger.dir());
  std::string index_dir = BuildClosedIndex(tmp, ledger);
  {
    IndexTamperer tamper(index_dir);
    tamper.CopySeqEntry(50, 51);                 // seq 50 points at seq 51's line
    tamper.PointHashAt(ref.hashes[80], 81 + 1);  // the hash of seq 81 names seq 82
  }
  EventQuery query(ledger.dir(), index_dir, OneShot());
  EXPECT_EQ(*query.Get(50), ref.lines[49]);
  EXPECT_EQ(*query.GetByHash(ref.hashes[80]), ref.lines[80]);
  EXPECT_EQ(StateOf(query), IndexState::kCurrent);  // rebuilt
  ExpectAllGetsMatch(query, ref);
}

TEST(EventQuery, IndexTimestampsThatDisagreeWithTheLogAreNotTrustedForRanges) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(200, 1000, 2);
  Reference ref(ledger.dir());
  std::string index_dir = BuildClosedIndex(tmp, ledger);
  {
    IndexTamperer tamper(index_dir);
    for (uint64_t seq = 60; seq <= 140; ++seq) tamper.CopySeqEntry(seq, seq, /*ts_delta=*/1000);
  }
  EventQuery query(ledger.dir(), index_dir, OneShot());
  EXPECT_EQ(*query.Range(1040, 1045, 100), ref.Range(1040, 1045, 100));
  EXPECT_EQ(StateOf(query), IndexState::kCurrent);  // rebuilt
  EXPECT_EQ(*query.Range(1040, 1045, 100), ref.Range(1040, 1045, 100));
}

TEST(EventQuery, MalformedLogLineIsAnErrorNamingItsLineNumber) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(10);
  ledger.Close();
  Reference ref(ledger.dir());
  {
    std::fstream f(ledger.events_path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(ref.offsets[4] + 2);  // line 5: {"Xeq":...
    f.write("X", 1);
  }
  EventQuery query(ledger.dir(), tmp.Sub("index"), OneShot());
  for (absl::Status st : {query.Get(8).status(), query.GetByHash(std::string(64, 'b')).status(),
                          query.Range(0, 1 << 30, 100).status()}) {
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_NE(st.message().find("events.jsonl line 5 (seq 5)"), absl::string_view::npos) << st;
  }
  EXPECT_EQ(*query.Get(3), ref.lines[2]);  // lines before it are answered
  auto status = query.CheckIndex();        // the rebuild failed on the same line
  EXPECT_EQ(status->state, IndexState::kMissing);
  EXPECT_NE(status->detail.find("line 5"), std::string::npos) << status->detail;
}

TEST(EventQuery, IndexRebuiltByAnotherProcessIsReopened) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(10);
  EventQuery query(ledger.dir(), tmp.Sub("index"));
  ASSERT_TRUE(query.RebuildIndex().ok());
  ledger.Append(10, 3000);
  {
    auto log = LogFile::Open(ledger.dir());
    ASSERT_TRUE(log.ok());
    // As another process would; the handle is closed before `query` reopens the index.
    ASSERT_TRUE(LookupIndex::Rebuild(tmp.Sub("index"), *log).ok());
  }
  auto status = query.CheckIndex();
  EXPECT_EQ(status->state, IndexState::kCurrent);
  EXPECT_EQ(status->indexed_through, 20u);
}

TEST(EventQuery, ConcurrentQueriesWhileAppendingSeeEveryAcknowledgedEvent) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(50);
  EventQuery query(ledger.dir(), tmp.Sub("index"));
  ASSERT_TRUE(query.RebuildIndex().ok());
  std::atomic<uint64_t> acknowledged{50};
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  auto reader = [&](int seed) {
    std::mt19937_64 rng(seed);
    while (!done.load()) {
      uint64_t seq = 1 + rng() % acknowledged.load();
      auto line = query.Get(seq);
      auto ev = line.ok() ? ParseEventLine(*line) : absl::StatusOr<EventView>(line.status());
      if (!ev.ok() || ev->seq != seq) failures.fetch_add(1);
      auto range = query.Range(1000, 1010, 5);
      if (!range.ok() || range->size() != 5) failures.fetch_add(1);
    }
  };
  std::thread r1(reader, 1), r2(reader, 2);
  for (int i = 0; i < 300; ++i) {
    ledger.Append(1, 2000 + i);
    acknowledged.fetch_add(1);
  }
  done.store(true);
  r1.join();
  r2.join();
  EXPECT_EQ(failures.load(), 0);
  IndexState state = StateOf(query);
  EXPECT_TRUE(state == IndexState::kCurrent || state == IndexState::kLagging);
  EXPECT_EQ(*query.Get(350), Reference(ledger.dir()).lines[349]);
}

TEST(EventQuery, DestroyingItDuringABackgroundRebuildLeavesAUsableOrNoIndex) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(2000);
  {
    EventQueryOptions options;
    options.index.events_per_txn = 64;
    EventQuery query(ledger.dir(), tmp.Sub("index"), options);
    ASSERT_TRUE(query.Get(1).ok());  // starts the rebuild
  }
  auto index = LookupIndex::Open(tmp.Sub("index"));
  EXPECT_TRUE(index.ok() || absl::IsNotFound(index.status())) << index.status();
  size_t entries = std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator());
  EXPECT_EQ(entries, index.ok() ? 2u : 1u);  // live/ and maybe index/, no temporaries
}

// Measurement, not an assertion of speed: query latency from the index against answering the
// same queries by scan, on SNAPLEDGER_QUERY_BENCH_EVENTS synthetic events (default 100,000).
TEST(EventQuery, AnswersFromTheIndexWithoutReadingTheWholeLog) {
  const char* env = getenv("SNAPLEDGER_QUERY_BENCH_EVENTS");
  const uint64_t n = env != nullptr ? std::stoull(env) : 100'000;
  TempDir tmp;
  fs::create_directories(tmp.Sub("live"));
  std::string data, prev(kGenesisHash);
  std::vector<std::string> hashes;
  Sha256 hasher;
  for (uint64_t seq = 1; seq <= n; ++seq) {
    prev = AppendEventLine(
        seq, 1'000'000 + seq / 3, prev,
        absl::StrCat("{\"port\":\"tap", seq % 977, "\",\"vlan\":", seq % 4094, "}"), hasher, &data);
    hashes.push_back(prev);
  }
  ASSERT_TRUE(WriteFileAtomic(tmp.Sub("live/events.jsonl"), data).ok());
  std::ofstream(tmp.Sub("not-a-dir")) << "x";
  EventQuery indexed(tmp.Sub("live"), tmp.Sub("index"));
  EventQuery scanning(tmp.Sub("live"), tmp.Sub("not-a-dir/index"), OneShot());
  ASSERT_TRUE(indexed.RebuildIndex().ok());
  std::mt19937_64 rng(7);
  auto mean_micros = [&](EventQuery& q, int rounds) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < rounds; ++i) {
      uint64_t seq = 1 + rng() % n;
      EXPECT_TRUE(q.Get(seq).ok());
      EXPECT_TRUE(q.GetByHash(hashes[seq - 1]).ok());
      int64_t from = 1'000'000 + static_cast<int64_t>(seq / 3);
      EXPECT_TRUE(q.Range(from, from + 10, 100).ok());
    }
    auto d = std::chrono::steady_clock::now() - t0;
    return std::chrono::duration<double, std::micro>(d).count() / rounds;
  };
  double from_index = mean_micros(indexed, 5000);
  double by_scan = mean_micros(scanning, 20);
  std::cout << absl::StrCat(n, " events: Get + GetByHash + Range(~33) ", from_index,
                            " us from the index, ", by_scan, " us by scan (x",
                            static_cast<int>(by_scan / from_index), ")\n");
  EXPECT_EQ(StateOf(indexed), IndexState::kCurrent);
}

// A replica moves its queries to each newer verified block: a copy of the same ledger with more
// events. The index follows it O(new events) instead of being rebuilt.
TEST(EventQuerySetLedgerDir, NewerCopyOfTheLedgerIsCaughtUpNotRebuilt) {
  TempDir dir;
  Ledger ledger(dir.Sub("live"));
  ledger.Append(100);
  std::filesystem::copy(dir.Sub("live"), dir.Sub("block-100"),
                        std::filesystem::copy_options::recursive);
  ledger.Append(50, 5000);
  ledger.Close();
  std::filesystem::copy(dir.Sub("live"), dir.Sub("block-150"),
                        std::filesystem::copy_options::recursive);

  EventQuery query(dir.Sub("block-100"), dir.Sub("index"),
                   EventQueryOptions{.rebuild_in_background = false});
  ASSERT_TRUE(query.Get(100).ok());
  EXPECT_TRUE(absl::IsNotFound(query.Get(101).status()));
  absl::StatusOr<IndexStatus> before = query.CheckIndex();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->state, IndexState::kCurrent);

  query.SetLedgerDir(dir.Sub("block-150"));
  absl::StatusOr<IndexStatus> lagging = query.CheckIndex();
  ASSERT_TRUE(lagging.ok());
  EXPECT_EQ(lagging->state, IndexState::kLagging);
  EXPECT_EQ(lagging->indexed_through, 100u);
  absl::StatusOr<std::string> line = query.Get(150);
  ASSERT_TRUE(line.ok()) << line.status();
  absl::StatusOr<IndexStatus> after = query.CheckIndex();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, IndexState::kCurrent);
  EXPECT_EQ(after->indexed_through, 150u);
}

}  // namespace
}  // namespace snapledger
