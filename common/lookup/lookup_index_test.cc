#include "common/lookup/lookup_index.h"

#include <gtest/gtest.h>
#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

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

// events.jsonl read and parsed independently of the code under test.
struct RefEvent {
  uint64_t seq;
  int64_t ts;
  std::string hash;
  uint64_t offset;
  uint32_t length;
};
std::vector<RefEvent> Reference(const std::string& ledger_dir) {
  std::vector<RefEvent> out;
  auto text = ReadFileToString(ledger_dir + "/events.jsonl");
  EXPECT_TRUE(text.ok());
  size_t pos = 0;
  while (true) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) break;
    auto ev = ParseEventLine(std::string_view(*text).substr(pos, nl - pos));
    EXPECT_TRUE(ev.ok());
    out.push_back({ev->seq, ev->ts, std::string(ev->hash), pos, static_cast<uint32_t>(nl - pos)});
    pos = nl + 1;
  }
  return out;
}

LogFile OpenLog(const std::string& dir) {
  auto log = LogFile::Open(dir);
  EXPECT_TRUE(log.ok()) << log.status();
  return std::move(*log);
}

LookupIndexPtr RebuildOrDie(const std::string& index_dir, const std::string& ledger_dir,
                            const LookupIndexOptions& options = {}) {
  auto index = LookupIndex::Rebuild(index_dir, OpenLog(ledger_dir), options);
  EXPECT_TRUE(index.ok()) << index.status();
  return index.ok() ? std::move(*index) : nullptr;
}

void ExpectLocatesLikeReference(const LookupIndex& index, const std::vector<RefEvent>& ref) {
  for (const RefEvent& e : ref) {
    auto loc = index.Locate(e.seq);
    ASSERT_TRUE(loc.ok() && loc->has_value()) << e.seq;
    EXPECT_EQ(**loc, (EventLocation{e.seq, e.offset, e.length, e.ts}));
    auto seq = index.SeqOfHash(e.hash);
    ASSERT_TRUE(seq.ok() && seq->has_value()) << e.seq;
    EXPECT_EQ(**seq, e.seq);
  }
  auto beyond = index.Locate(ref.size() + 1);
  ASSERT_TRUE(beyond.ok());
  EXPECT_FALSE(beyond->has_value());
}

// Seqs of the events with from <= ts <= to, at most limit, from the reference.
std::vector<uint64_t> RefRange(const std::vector<RefEvent>& ref, int64_t from, int64_t to,
                               size_t limit) {
  std::vector<uint64_t> seqs;
  for (const RefEvent& e : ref)
    if (e.ts >= from && e.ts <= to && seqs.size() < limit) seqs.push_back(e.seq);
  return seqs;
}

std::vector<uint64_t> Seqs(const RangeLocation& r) {
  std::vector<uint64_t> seqs;
  for (const auto& l : r.events) seqs.push_back(l.seq);
  return seqs;
}

void OverwriteBytes(const std::string& path, off_t at, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(at);
  f.write(bytes.data(), bytes.size());
}

TEST(LookupIndex, LocatesEveryEventBySeqAndHash) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(500);
  auto index = RebuildOrDie(tmp.Sub("index/lookup"), ledger.dir());
  ASSERT_NE(index, nullptr);
  auto ref = Reference(ledger.dir());
  ASSERT_EQ(ref.size(), 500u);
  ExpectLocatesLikeReference(*index, ref);
  auto cov = index->Coverage();
  ASSERT_TRUE(cov.ok());
  EXPECT_EQ(cov->indexed_through, 500u);
  EXPECT_EQ(cov->hash, ref.back().hash);
  EXPECT_EQ(cov->end_offset, fs::file_size(ledger.events_path()));
}

TEST(LookupIndex, RangesAgreeWithTheLogIncludingEqualTimestamps) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(300, /*first_ts=*/1000, /*per_ts=*/7);  // runs of 7 events share a ts
  auto index = RebuildOrDie(tmp.Sub("index"), ledger.dir());
  ASSERT_NE(index, nullptr);
  auto ref = Reference(ledger.dir());
  for (int64_t from : {0, 999, 1000, 1001, 1010, 1042, 1043, 2000}) {
    for (int64_t to : {from, from + 1, from + 5, int64_t{1042}, int64_t{5000}}) {
      for (size_t limit : {size_t{0}, size_t{1}, size_t{6}, size_t{1000}}) {
        auto r = index->LocateRange(from, to, limit);
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_EQ(Seqs(*r), RefRange(ref, from, to, limit)) << from << " " << to << " " << limit;
      }
    }
  }
}

TEST(LookupIndex, IncrementalCatchUpEqualsAFullRebuild) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  LookupIndexOptions small_txns;
  small_txns.events_per_txn = 3;  // exercise the commits inside one CatchUp
  auto incremental = LookupIndex::Create(tmp.Sub("incremental"), small_txns);
  ASSERT_TRUE(incremental.ok()) << incremental.status();
  for (int round : {0, 1, 10, 7, 50}) {
    ledger.Append(round, 1000 + round);
    auto added = (*incremental)->CatchUp(OpenLog(ledger.dir()));
    ASSERT_TRUE(added.ok()) << added.status();
    EXPECT_EQ(*added, static_cast<uint64_t>(round));
  }
  auto full = RebuildOrDie(tmp.Sub("full"), ledger.dir());
  ASSERT_NE(full, nullptr);
  EXPECT_EQ(*(*incremental)->Coverage(), *full->Coverage());
  auto ref = Reference(ledger.dir());
  ExpectLocatesLikeReference(**incremental, ref);
  ExpectLocatesLikeReference(*full, ref);
  auto a = (*incremental)->LocateRange(1001, 1010, 100);
  auto b = full->LocateRange(1001, 1010, 100);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->events, b->events);
}

TEST(LookupIndex, IncompleteLastLineIsNotIndexedUntilItsNewlineArrives) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(5);
  ledger.Close();
  auto ref = Reference(ledger.dir());
  std::string hash;
  std::string line = EncodeEventLine(6, 2000, ref.back().hash, "{\"n\":6}", &hash);
  {
    std::ofstream out(ledger.events_path(), std::ios::app | std::ios::binary);
    out << line.substr(0, 40);  // a writer mid-line
  }
  auto index = RebuildOrDie(tmp.Sub("index"), ledger.dir());
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->Coverage()->indexed_through, 5u);
  {
    std::ofstream out(ledger.events_path(), std::ios::app | std::ios::binary);
    out << line.substr(40);
  }
  auto added = index->CatchUp(OpenLog(ledger.dir()));
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(*added, 1u);
  EXPECT_EQ(**index->SeqOfHash(hash), 6u);
}

TEST(LookupIndex, AnotherLedgersIndexIsStale) {
  TempDir tmp;
  Ledger a(tmp.Sub("a")), b(tmp.Sub("b"));
  a.Append(20);
  b.Append(30, 5000);
  auto index = RebuildOrDie(tmp.Sub("index"), a.dir());
  ASSERT_NE(index, nullptr);
  LogFile log_b = OpenLog(b.dir());
  auto fresh = index->CompareWith(log_b);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->state, IndexFreshness::State::kStale);
  EXPECT_FALSE(fresh->stale_reason.empty());
  EXPECT_TRUE(absl::IsFailedPrecondition(index->CatchUp(log_b).status()));
}

TEST(LookupIndex, RolledBackLogMakesTheIndexStale) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(20);
  ledger.Close();
  auto index = RebuildOrDie(tmp.Sub("index"), ledger.dir());
  ASSERT_NE(index, nullptr);
  auto ref = Reference(ledger.dir());
  fs::resize_file(ledger.events_path(), ref[15].offset);
  auto fresh = index->CompareWith(OpenLog(ledger.dir()));
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->state, IndexFreshness::State::kStale);
}

TEST(LookupIndex, LagIsReportedInBytesUntilCaughtUp) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(10);
  auto index = RebuildOrDie(tmp.Sub("index"), ledger.dir());
  ASSERT_NE(index, nullptr);
  uint64_t before = fs::file_size(ledger.events_path());
  ledger.Append(4);
  LogFile log = OpenLog(ledger.dir());
  auto fresh = index->CompareWith(log);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->state, IndexFreshness::State::kLagging);
  EXPECT_EQ(fresh->lag_bytes, log.size() - before);
  ASSERT_TRUE(index->CatchUp(log).ok());
  EXPECT_EQ(index->CompareWith(log)->state, IndexFreshness::State::kCurrent);
}

TEST(LookupIndex, MalformedLogLineIsAnErrorNamingItsLineAndEarlierEventsStayIndexed) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(10);
  ledger.Close();
  auto ref = Reference(ledger.dir());
  OverwriteBytes(ledger.events_path(), ref[6].offset + 1, "X");  // line 7: {Xseq...
  auto index = LookupIndex::Create(tmp.Sub("index"));
  ASSERT_TRUE(index.ok());
  auto added = (*index)->CatchUp(OpenLog(ledger.dir()));
  EXPECT_TRUE(absl::IsDataLoss(added.status())) << added.status();
  EXPECT_NE(added.status().message().find("line 7 (seq 7)"), absl::string_view::npos)
      << added.status();
  EXPECT_EQ((*index)->Coverage()->indexed_through, 6u);
}

TEST(LookupIndex, MissingIndexIsNotFound) {
  TempDir tmp;
  EXPECT_TRUE(absl::IsNotFound(LookupIndex::Open(tmp.Sub("nothing")).status()));
  fs::create_directories(tmp.Sub("empty"));
  EXPECT_TRUE(absl::IsNotFound(LookupIndex::Open(tmp.Sub("empty")).status()));
}

// An index of a few thousand events, closed, for damage tests.
std::string ClosedIndex(const TempDir& tmp) {
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(3000);
  RebuildOrDie(tmp.Sub("index"), ledger.dir());
  return tmp.Sub("index");
}

TEST(LookupIndex, TruncatedDataFileIsDamaged) {
  TempDir tmp;
  std::string dir = ClosedIndex(tmp);
  std::string data = dir + "/data.mdb";
  fs::resize_file(data, fs::file_size(data) / 2);
  EXPECT_TRUE(absl::IsDataLoss(LookupIndex::Open(dir).status()));
  fs::resize_file(data, 0);
  EXPECT_TRUE(absl::IsDataLoss(LookupIndex::Open(dir).status()));
  EXPECT_EQ(fs::file_size(data), 0u);  // Open never writes
}

TEST(LookupIndex, GarbledMetaPagesAreDamaged) {
  TempDir tmp;
  std::string dir = ClosedIndex(tmp);
  OverwriteBytes(dir + "/data.mdb", 0, std::string(8192, '\x5a'));
  EXPECT_TRUE(absl::IsDataLoss(LookupIndex::Open(dir).status()));
}

TEST(LookupIndex, OtherFormatVersionIsDamaged) {
  TempDir tmp;
  std::string dir = ClosedIndex(tmp);
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 3);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  MDB_dbi meta;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  uint32_t version = kLookupIndexFormatVersion + 1;
  MDB_val key{6, const_cast<char*>("format")}, val{sizeof version, &version};
  ASSERT_EQ(mdb_put(txn, meta, &key, &val, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  auto opened = LookupIndex::Open(dir);
  EXPECT_TRUE(absl::IsDataLoss(opened.status()));
  EXPECT_NE(opened.status().message().find("format version"), absl::string_view::npos);
}

// Reads or replaces the "runs" record of the closed index in `dir` (test-only access to LMDB).
std::vector<HashRun> ReadRunsRecord(const std::string& dir,
                                    const std::optional<std::vector<HashRun>>& replace = {}) {
  MDB_env* env = nullptr;
  EXPECT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 3);
  mdb_env_set_mapsize(env, size_t{1} << 30);
  EXPECT_EQ(mdb_env_open(env, dir.c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  MDB_dbi meta;
  EXPECT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  EXPECT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  MDB_val key{4, const_cast<char*>("runs")}, val;
  std::vector<HashRun> runs;
  if (mdb_get(txn, meta, &key, &val) == 0) {
    runs.resize(val.mv_size / 24);
    for (size_t i = 0; i < runs.size(); ++i) {
      memcpy(&runs[i].id, static_cast<char*>(val.mv_data) + i * 24, 8);
      memcpy(&runs[i].first_seq, static_cast<char*>(val.mv_data) + i * 24 + 8, 8);
      memcpy(&runs[i].last_seq, static_cast<char*>(val.mv_data) + i * 24 + 16, 8);
    }
  }
  if (replace.has_value()) {
    std::string bytes(replace->size() * 24, '\0');
    for (size_t i = 0; i < replace->size(); ++i) {
      memcpy(bytes.data() + i * 24, &(*replace)[i].id, 8);
      memcpy(bytes.data() + i * 24 + 8, &(*replace)[i].first_seq, 8);
      memcpy(bytes.data() + i * 24 + 16, &(*replace)[i].last_seq, 8);
    }
    MDB_val v{bytes.size(), bytes.data()};
    EXPECT_EQ(mdb_put(txn, meta, &key, &v, 0), 0);
  }
  EXPECT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  return runs;
}

TEST(LookupIndex, ManySmallCatchUpsMergeHashRunsAndFindEveryEvent) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  std::string dir = tmp.Sub("index");
  LookupIndexOptions small_txns;
  small_txns.events_per_txn = 13;  // runs and merges also across the commits inside a CatchUp
  auto index = LookupIndex::Create(dir, small_txns);
  ASSERT_TRUE(index.ok()) << index.status();
  std::mt19937_64 rng(7);
  int catch_ups = 0;
  for (int round = 0; round < 600; ++round) {
    int n = static_cast<int>(rng() % 40);  // blocks of 0..39 events, like a busy replica's
    ledger.Append(n, 1000 + round);
    auto added = (*index)->CatchUp(OpenLog(ledger.dir()));
    ASSERT_TRUE(added.ok()) << added.status();
    ASSERT_EQ(*added, static_cast<uint64_t>(n));
    // Merges free pages in the transaction that wrote them; the file must still cover every
    // page the commit claims, or the index would look truncated.
    ASSERT_TRUE((*index)->StillUsable()) << "after catch-up " << round;
    catch_ups += n > 0;
  }
  auto ref = Reference(ledger.dir());
  ExpectLocatesLikeReference(**index, ref);
  index->reset();
  // Open checks the entry counts and that the runs cover 1..n without gaps.
  auto reopened = LookupIndex::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  reopened->reset();
  std::vector<HashRun> runs = ReadRunsRecord(dir);
  EXPECT_GE(runs.size(), 1u);
  EXPECT_LE(runs.size(), kMaxOpenHashRuns);  // none is sealed at this size
  EXPECT_LT(runs.size(), static_cast<size_t>(catch_ups) / 10) << "runs were not merged";
  uint64_t next = 1;
  for (const HashRun& r : runs) {
    EXPECT_EQ(r.first_seq, next);
    next = r.last_seq + 1;
  }
  EXPECT_EQ(next, ref.size() + 1);
}

TEST(LookupIndex, HashRunsThatDoNotCoverTheEventsAreDamaged) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(50);
  auto index = RebuildOrDie(tmp.Sub("index"), ledger.dir());
  ASSERT_NE(index, nullptr);
  index.reset();
  std::vector<HashRun> runs = ReadRunsRecord(tmp.Sub("index"));
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].first_seq, 1u);
  EXPECT_EQ(runs[0].last_seq, 50u);
  runs[0].first_seq = 2;  // seq 1's digest would be in no run
  ReadRunsRecord(tmp.Sub("index"), runs);
  auto opened = LookupIndex::Open(tmp.Sub("index"));
  EXPECT_TRUE(absl::IsDataLoss(opened.status())) << opened.status();
  EXPECT_NE(opened.status().message().find("hash run"), absl::string_view::npos) << opened.status();
}

std::vector<HashRun> RunsOfSizes(const std::vector<uint64_t>& sizes) {
  std::vector<HashRun> runs;
  uint64_t next = 1;
  for (uint64_t size : sizes) {
    runs.push_back(HashRun{runs.size() + 1, next, next + size - 1});
    next += size;
  }
  return runs;
}

using Merge = std::optional<std::pair<size_t, size_t>>;

TEST(PlanHashRunMerge, MergesFanInRunsOfTheSameLevelNewestFirst) {
  EXPECT_EQ(PlanHashRunMerge({}), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({800})), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({800, 800, 800})), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({800, 800, 800, 800})), Merge(std::pair{0, 4}));
  // Single-event catch-ups merge as soon as four of them are there.
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({4, 1, 1, 1})), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({4, 1, 1, 1, 1})), Merge(std::pair{1, 5}));
  // A larger old run stays while the small ones behind it merge among themselves.
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({100'000, 3'200, 800, 800})), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({100'000, 3'200, 600, 800, 500, 700})),
            Merge(std::pair{2, 6}));
  // Levels 5 and 1 interleaved: four runs of the top level take the smaller ones between.
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({2'000, 10, 2'000, 10, 2'000, 10, 2'000, 10})),
            Merge(std::pair{0, 8}));
  // Small runs behind a larger newer one (a replica that caught up a backlog) merge too.
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({100'000, 10, 10, 10, 10, 5'000})),
            Merge(std::pair{1, 5}));
  // Level boundaries: 1,023 is level 4, 1,024 level 5.
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({1'024, 1'023, 1'023, 1'023})), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({1'024, 1'024, 1'024, 1'024})), Merge(std::pair{0, 4}));
}

TEST(PlanHashRunMerge, NeverMergesASealedRunNorAcrossOne) {
  const uint64_t sealed = kSealedHashRunSize;
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({sealed, sealed, sealed, sealed})), Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({sealed - 1, sealed - 1, sealed - 1, sealed - 1})),
            Merge(std::pair{0, 4}));
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({sealed, 100, 100, 100, 100})), Merge(std::pair{1, 5}));
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes({100, 100, 100, sealed, 100})), Merge());
}

TEST(PlanHashRunMerge, PastTheLimitMergesTheSmallestAdjacentPair) {
  // Levels 0..9 three times, then 0, 1, 2: newer runs larger, so no window has kHashRunFanIn
  // runs of its top level.
  std::vector<uint64_t> sizes;
  for (int round = 0; round < 4; ++round)
    for (int level = 0; level < (round < 3 ? 10 : 3); ++level)
      sizes.push_back(uint64_t{1} << (2 * level));
  ASSERT_EQ(sizes.size(), kMaxOpenHashRuns + 1);
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes(std::vector<uint64_t>(sizes.begin(), sizes.end() - 1))),
            Merge());
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes(sizes)), Merge(std::pair{0, 2}));
  // Unsealed runs with only sealed neighbours cannot merge: nothing to do.
  std::vector<uint64_t> isolated;
  for (size_t i = 0; i <= kMaxOpenHashRuns; ++i) {
    isolated.push_back(kSealedHashRunSize);
    isolated.push_back(7);
  }
  EXPECT_EQ(PlanHashRunMerge(RunsOfSizes(isolated)), Merge());
}

TEST(PlanHashRunMerge, RewritesEachDigestAFewTimesAndBoundsEachMerge) {
  std::mt19937_64 rng(11);
  for (int shape = 0; shape < 6; ++shape) {
    std::vector<HashRun> runs;
    uint64_t events = 0, written = 0, largest_merge = 0;
    for (int block = 0; block < 20'000; ++block) {
      uint64_t size = shape == 0   ? 800
                      : shape == 1 ? 1 + rng() % 3'000
                      : shape == 2 ? (block % 2 ? 30 : 2'500)
                      : shape == 3 ? 1
                      : shape == 4 ? 5
                                   : 20;
      runs.push_back(HashRun{runs.empty() ? 1 : runs.back().id + 1, events + 1, events + size});
      events += size;
      written += size;
      while (Merge m = PlanHashRunMerge(runs)) {
        ASSERT_GE(m->second - m->first, 2u);
        HashRun merged{runs.back().id + 1, runs[m->first].first_seq, runs[m->second - 1].last_seq};
        written += merged.size();
        largest_merge = std::max(largest_merge, merged.size());
        runs.erase(runs.begin() + m->first, runs.begin() + m->second);
        runs.insert(runs.begin() + m->first, merged);
      }
      size_t open = 0, sealed = 0;
      for (const HashRun& r : runs) (r.size() >= kSealedHashRunSize ? sealed : open)++;
      ASSERT_LE(open, kMaxOpenHashRuns + sealed) << "shape " << shape;
    }
    // Each digest is rewritten about log4 of the size of the run it ends in (at most ~10).
    EXPECT_LT(static_cast<double>(written) / events, 12.0) << "shape " << shape;
    // No transaction rewrites much more than kHashRunFanIn sealed runs' worth.
    EXPECT_LT(largest_merge, 5 * kSealedHashRunSize) << "shape " << shape;
  }
}

TEST(LookupIndex, RebuildSwapsInAFreshIndexAndLeavesNoTemporaryDirectory) {
  TempDir tmp;
  Ledger a(tmp.Sub("a")), b(tmp.Sub("b"));
  a.Append(10);
  b.Append(25, 9000);
  auto old_index = RebuildOrDie(tmp.Sub("index"), a.dir());
  ASSERT_NE(old_index, nullptr);
  EXPECT_TRUE(old_index->StillUsable());
  auto new_index = RebuildOrDie(tmp.Sub("index"), b.dir());
  ASSERT_NE(new_index, nullptr);
  EXPECT_EQ(new_index->Coverage()->indexed_through, 25u);
  // The old handle keeps answering from the old files and knows it was replaced.
  EXPECT_FALSE(old_index->StillUsable());
  EXPECT_EQ(old_index->Coverage()->indexed_through, 10u);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp.path())) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "index"}));
}

TEST(LookupIndex, LeftoverRebuildOfADeadProcessIsRemoved) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(3);
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  std::string leftover = absl::StrCat(tmp.Sub("index"), ".rebuild-", child, "-0");
  fs::create_directories(leftover);
  RebuildOrDie(tmp.Sub("index"), ledger.dir());
  EXPECT_FALSE(fs::exists(leftover));
}

TEST(LookupIndex, CancelledRebuildSwapsNothing) {
  TempDir tmp;
  Ledger ledger(tmp.Sub("live"));
  ledger.Append(10);
  LookupIndexOptions options;
  options.events_per_txn = 2;
  std::atomic<bool> cancel{true};
  auto r = LookupIndex::Rebuild(tmp.Sub("index"), OpenLog(ledger.dir()), options, &cancel);
  EXPECT_TRUE(absl::IsCancelled(r.status())) << r.status();
  EXPECT_FALSE(fs::exists(tmp.Sub("index")));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 1);
}

// Measurement, not an assertion of speed: builds an index of SNAPLEDGER_LOOKUP_BENCH_EVENTS
// (default 200,000) synthetic events, SNAPLEDGER_LOOKUP_BENCH_TXN events per write
// transaction, and prints build rate, size and lookup latencies. Figures for 1,000,000 events
// are in the header comment of lookup_index.h.
TEST(LookupIndex, IndexOfManyEventsAnswersLookupsInMicroseconds) {
  const char* env = getenv("SNAPLEDGER_LOOKUP_BENCH_EVENTS");
  const uint64_t n = env != nullptr ? std::stoull(env) : 200'000;
  TempDir tmp;
  fs::create_directories(tmp.Sub("live"));
  std::string data;
  std::vector<std::string> hashes;
  Sha256 hasher;
  std::string prev(kGenesisHash);
  for (uint64_t seq = 1; seq <= n; ++seq) {
    std::string body = absl::StrCat("{\"port\":\"tap", seq % 977, "\",\"vlan\":", seq % 4094,
                                    ",\"agent\":\"port-agent-", seq % 13, "\"}");
    prev = AppendEventLine(seq, 1'700'000'000'000'000 + seq / 3, prev, body, hasher, &data);
    hashes.push_back(prev);
  }
  ASSERT_TRUE(WriteFileAtomic(tmp.Sub("live/events.jsonl"), data).ok());
  using Clock = std::chrono::steady_clock;
  auto micros = [](Clock::duration d) {
    return std::chrono::duration<double, std::micro>(d).count();
  };
  auto t0 = Clock::now();
  LookupIndexOptions bench_options;
  if (const char* t = getenv("SNAPLEDGER_LOOKUP_BENCH_TXN"))
    bench_options.events_per_txn = std::stoull(t);
  auto index = RebuildOrDie(tmp.Sub("index"), tmp.Sub("live"), bench_options);
  double build_s = micros(Clock::now() - t0) / 1e6;
  ASSERT_NE(index, nullptr);
  std::mt19937_64 rng(42);
  constexpr int kLookups = 20000;
  t0 = Clock::now();
  for (int i = 0; i < kLookups; ++i) ASSERT_TRUE(index->Locate(1 + rng() % n)->has_value());
  double by_seq = micros(Clock::now() - t0) / kLookups;
  t0 = Clock::now();
  for (int i = 0; i < kLookups; ++i) ASSERT_TRUE(index->SeqOfHash(hashes[rng() % n])->has_value());
  double by_hash = micros(Clock::now() - t0) / kLookups;
  t0 = Clock::now();
  for (int i = 0; i < kLookups; ++i) {
    int64_t from = 1'700'000'000'000'000 + 1 + static_cast<int64_t>(rng() % (n / 3 - 20));
    ASSERT_EQ(index->LocateRange(from, from + 10, 100)->events.size(), std::min<uint64_t>(33, n));
  }
  double by_range = micros(Clock::now() - t0) / kLookups;
  uint64_t index_bytes = fs::file_size(tmp.Sub("index/data.mdb"));
  std::cout << absl::StrCat(n, " events, ", data.size() >> 20, " MiB log: index built in ", build_s,
                            " s (", static_cast<uint64_t>(n / build_s), " events/s), data.mdb ",
                            index_bytes >> 20, " MiB (", index_bytes / n, " B/event); Locate ",
                            by_seq, " us, SeqOfHash ", by_hash, " us, LocateRange(33 events) ",
                            by_range, " us\n");
}

}  // namespace
}  // namespace snapledger
