#include "common/ledger/log_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/ledger/head_file.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

using testing::TempDir;

// `n` chained event lines, event i (from 1) at ts 1000 + i / 2, and each line's offset.
struct Lines {
  std::string text;
  std::vector<uint64_t> offsets;
  std::vector<std::string> hashes;
};
Lines MakeLines(int n) {
  Lines l;
  std::string prev(kGenesisHash);
  for (int i = 1; i <= n; ++i) {
    std::string hash;
    l.offsets.push_back(l.text.size());
    l.text += EncodeEventLine(i, 1000 + i / 2, prev, absl::StrCat("{\"n\":", i, "}"), &hash);
    l.hashes.push_back(hash);
    prev = hash;
  }
  return l;
}

LogFile OpenOrDie(const std::string& dir) {
  absl::StatusOr<LogFile> log = LogFile::Open(dir);
  EXPECT_TRUE(log.ok()) << log.status();
  return std::move(*log);
}

std::vector<uint64_t> ScannedSeqs(std::string_view data, const ChainHead& from, uint64_t base,
                                  absl::Status* status, std::vector<uint64_t>* offsets = nullptr) {
  std::vector<uint64_t> seqs;
  *status = ScanEvents(data, from, base, [&](const EventView& ev, uint64_t offset) {
    seqs.push_back(ev.seq);
    if (offsets != nullptr) offsets->push_back(offset);
    return true;
  });
  return seqs;
}

TEST(LogFile, AMissingLogIsNotFound) {
  TempDir tmp;
  EXPECT_TRUE(absl::IsNotFound(LogFile::Open(tmp.path()).status()));
}

TEST(LogFile, AnIncompleteLastLineIsNeverExposed) {
  TempDir tmp;
  Lines l = MakeLines(3);
  const std::string next = MakeLines(4).text.substr(l.text.size());
  ASSERT_TRUE(WriteFileAtomic(tmp.Sub(kEventsFile), l.text + next.substr(0, 30)).ok());
  LogFile log = OpenOrDie(tmp.path());
  EXPECT_EQ(log.size(), l.text.size());
  EXPECT_EQ(log.path(), tmp.Sub(kEventsFile));
  EXPECT_FALSE(log.LineStartingAt(l.text.size())->has_value());
  EXPECT_TRUE(absl::IsOutOfRange(log.Read(l.text.size(), 1).status()));
  absl::StatusOr<LogRegion> all = log.Map();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->data(), l.text);
}

TEST(LogFile, LinesAreFoundByWhereTheyStartAndEnd) {
  TempDir tmp;
  Lines l = MakeLines(5);
  ASSERT_TRUE(WriteFileAtomic(tmp.Sub(kEventsFile), l.text).ok());
  LogFile log = OpenOrDie(tmp.path());
  for (size_t i = 0; i < 5; ++i) {
    const uint64_t end = i + 1 < 5 ? l.offsets[i + 1] : l.text.size();
    const std::string line = l.text.substr(l.offsets[i], end - l.offsets[i] - 1);
    EXPECT_EQ(log.LineStartingAt(l.offsets[i])->value_or("none"), line);
    EXPECT_EQ(log.LineStartingAt(l.offsets[i], line.size())->value_or("none"), line);
    EXPECT_EQ(log.LineEndingAt(end)->value_or("none"), line);
  }
  EXPECT_FALSE(log.LineStartingAt(l.offsets[2] + 1)->has_value());
  EXPECT_FALSE(log.LineEndingAt(l.offsets[2] + 1)->has_value());
  EXPECT_EQ(*log.Read(l.offsets[1], 5), l.text.substr(l.offsets[1], 5));
}

TEST(LogFile, AMappedRegionStartsWhereAsked) {
  TempDir tmp;
  Lines l = MakeLines(6);
  ASSERT_TRUE(WriteFileAtomic(tmp.Sub(kEventsFile), l.text).ok());
  LogFile log = OpenOrDie(tmp.path());
  absl::StatusOr<LogRegion> tail = log.Map(l.offsets[3]);
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_EQ(tail->base(), l.offsets[3]);
  EXPECT_EQ(tail->data(), l.text.substr(l.offsets[3]));
  absl::StatusOr<LogRegion> empty = log.Map(log.size());
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->data().empty());
}

TEST(ScanEvents, EveryLineFromTheGivenHeadWithItsOffset) {
  Lines l = MakeLines(6);
  absl::Status st;
  std::vector<uint64_t> offsets;
  EXPECT_EQ(ScannedSeqs(l.text, ChainHead{}, 0, &st, &offsets),
            (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(offsets, l.offsets);
  const ChainHead after_two{2, l.hashes[1], 1001};
  EXPECT_EQ(ScannedSeqs(std::string_view(l.text).substr(l.offsets[2]), after_two, l.offsets[2], &st,
                        &offsets),
            (std::vector<uint64_t>{3, 4, 5, 6}));
  EXPECT_TRUE(st.ok()) << st;
}

TEST(ScanEvents, StopsWhenTheCallbackSaysSo) {
  Lines l = MakeLines(6);
  int calls = 0;
  absl::Status st =
      ScanEvents(l.text, ChainHead{}, 0, [&](const EventView&, uint64_t) { return ++calls < 2; });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(calls, 2);
}

TEST(ScanEvents, AMalformedLineIsDataLossNamingItAndEarlierLinesWereSeen) {
  Lines l = MakeLines(5);
  std::string bad = l.text;
  bad[l.offsets[3] + 1] = 'X';
  absl::Status st;
  EXPECT_EQ(ScannedSeqs(bad, ChainHead{}, 0, &st), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("events.jsonl line 4 (seq 4)"), absl::string_view::npos) << st;
}

TEST(ScanEvents, AHeadThatIsNotTheLinesParentIsDataLoss) {
  Lines l = MakeLines(3);
  absl::Status st;
  const ChainHead wrong{1, std::string(kGenesisHash), 1000};
  ScannedSeqs(std::string_view(l.text).substr(l.offsets[1]), wrong, l.offsets[1], &st);
  EXPECT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_NE(st.message().find("line 2 (seq 2)"), absl::string_view::npos) << st;
}

TEST(ScanEvents, OutOfOrderLineIsAnErrorNamingItsLine) {
  Lines l = MakeLines(4);
  // Swap lines 2 and 3.
  const std::string& t = l.text;
  const std::string swapped =
      t.substr(0, l.offsets[1]) + t.substr(l.offsets[2], l.offsets[3] - l.offsets[2]) +
      t.substr(l.offsets[1], l.offsets[2] - l.offsets[1]) + t.substr(l.offsets[3]);
  absl::Status st =
      ScanEvents(swapped, ChainHead{}, 0, [](const EventView&, uint64_t) { return true; });
  EXPECT_TRUE(absl::IsDataLoss(st));
  EXPECT_NE(st.message().find("line 2 (seq 2)"), absl::string_view::npos) << st;
}

TEST(EventLineError, NamesTheLineAndItsSeq) {
  absl::Status st = EventLineError(7, "bad");
  EXPECT_TRUE(absl::IsDataLoss(st));
  EXPECT_EQ(st.message(), "events.jsonl line 7 (seq 7): bad");
}

}  // namespace
}  // namespace snapledger
