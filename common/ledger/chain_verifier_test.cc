#include "common/ledger/chain_verifier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/ledger/event_log.h"
#include "common/testing/manual_clock.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

using testing::TempDir;

// A ledger of `n` events in `dir`, closed (head file current).
void WriteLedger(const std::string& dir, int n, int body_bytes = 40) {
  ManualClock clock;
  EventLogOptions options;
  options.clock = &clock;
  auto log = EventLog::Create(dir, 1, options);
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<std::string> bodies;
  for (int i = 1; i <= n; ++i) {
    bodies.push_back(
        absl::StrCat("{\"i\":", i, ",\"pad\":\"", std::string(body_bytes, 'p'), "\"}"));
    if (i % 3 == 0) clock.Advance(1);
  }
  ASSERT_TRUE((*log)->AppendBatch(bodies).ok());
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc);
  for (const auto& l : lines) out << l << "\n";
}

class ChainVerifierTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteLedger(dir_.path(), 300); }
  std::string log_path() const { return dir_.Sub("events.jsonl"); }
  VerifyReport Verify(int threads = 2) {
    auto r = VerifyLedgerDir(dir_.path(), {HeadCheck::kIgnore, threads});
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  }
  TempDir dir_;
};

TEST_F(ChainVerifierTest, IntactLedgerVerifies) {
  auto r = VerifyLedgerDir(dir_.path(), {HeadCheck::kExact, 2});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok()) << r->failure->ToString();
  EXPECT_EQ(r->events_verified, 300u);
  EXPECT_EQ(r->head.seq, 300u);
}

TEST_F(ChainVerifierTest, ChangingAnyByteOfAnyLineNamesThatSeq) {
  std::string original = *ReadFileToString(log_path());
  auto lines = ReadLines(log_path());
  for (int seq : {1, 2, 150, 299, 300}) {
    const std::string& line = lines[seq - 1];
    for (size_t pos : {size_t{2}, size_t{10}, line.size() / 2, line.size() - 5}) {
      std::string tampered = original;
      size_t offset = 0;
      for (int i = 0; i < seq - 1; ++i) offset += lines[i].size() + 1;
      tampered[offset + pos] ^= 0x01;
      ASSERT_TRUE(WriteFileAtomic(log_path(), tampered).ok());
      VerifyReport r = Verify();
      ASSERT_FALSE(r.ok()) << "seq " << seq << " pos " << pos;
      // Changing a line breaks that line; flipping a bit in its stored hash can be noticed
      // first by the next line's prev check, which still names a seq no later than seq+1.
      EXPECT_GE(r.failure->seq, static_cast<uint64_t>(seq)) << r.failure->ToString();
      EXPECT_LE(r.failure->seq, static_cast<uint64_t>(seq + 1)) << r.failure->ToString();
    }
  }
}

TEST_F(ChainVerifierTest, ChangedBodyByteIsAHashMismatchAtThatSeq) {
  auto lines = ReadLines(log_path());
  size_t pos = lines[199].find("\"pad\":\"p") + 8;
  lines[199][pos] = 'q';
  WriteLines(log_path(), lines);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->seq, 200u);
  EXPECT_EQ(r.failure->line_number, 200u);
  EXPECT_NE(r.failure->reason.find("hash mismatch"), std::string::npos);
}

TEST_F(ChainVerifierTest, DroppedLineNamesTheMissingSeq) {
  auto lines = ReadLines(log_path());
  lines.erase(lines.begin() + 99);  // seq 100
  WriteLines(log_path(), lines);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->seq, 100u);
  EXPECT_NE(r.failure->reason.find("found seq 101"), std::string::npos);
}

TEST_F(ChainVerifierTest, ReorderedLinesNameTheFirstOutOfPlaceSeq) {
  auto lines = ReadLines(log_path());
  std::swap(lines[49], lines[50]);  // seq 50 and 51
  WriteLines(log_path(), lines);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->seq, 50u);
  EXPECT_EQ(r.failure->line_number, 50u);
}

TEST_F(ChainVerifierTest, SingleAndMultiThreadedAgreeOnLargeLogs) {
  TempDir big;
  WriteLedger(big.path(), 60000, 150);  // > 8 MiB so two threads split it
  auto one = VerifyLedgerDir(big.path(), {HeadCheck::kExact, 1});
  auto two = VerifyLedgerDir(big.path(), {HeadCheck::kExact, 2});
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_TRUE(one->ok() && two->ok());
  EXPECT_EQ(one->head, two->head);
  EXPECT_EQ(one->events_verified, two->events_verified);

  // A failure in the second half and one exactly at the split point are found by both.
  auto lines = ReadLines(big.Sub("events.jsonl"));
  for (size_t victim : {size_t{45000}, size_t{30001}, size_t{29999}}) {
    auto copy = lines;
    copy.erase(copy.begin() + static_cast<long>(victim));
    WriteLines(big.Sub("events.jsonl"), copy);
    for (int threads : {1, 2}) {
      auto r = VerifyLedgerDir(big.path(), {HeadCheck::kIgnore, threads});
      ASSERT_TRUE(r.ok());
      ASSERT_FALSE(r->ok());
      EXPECT_EQ(r->failure->seq, victim + 1) << "threads " << threads;
      EXPECT_EQ(r->failure->line_number, victim + 1) << "threads " << threads;
    }
  }
}

TEST_F(ChainVerifierTest, IncrementalVerifyEqualsFullVerify) {
  auto full = VerifyLedgerDir(dir_.path());
  ASSERT_TRUE(full.ok() && full->ok());
  // Trust the head at seq 120 (as an earlier block's head file would).
  auto lines = ReadLines(log_path());
  HeadRecord trusted;
  for (int i = 0; i < 120; ++i) trusted.log_bytes += lines[i].size() + 1;
  auto ev = ParseEventLine(lines[119]);
  trusted.head = ChainHead{120, std::string(ev->hash), ev->ts};
  auto inc = VerifyLedgerDirFrom(dir_.path(), trusted);
  ASSERT_TRUE(inc.ok());
  EXPECT_TRUE(inc->ok()) << inc->failure->ToString();
  EXPECT_EQ(inc->head, full->head);
  EXPECT_EQ(inc->events_verified, 180u);
  EXPECT_EQ(inc->end_offset, full->end_offset);

  // Tampering after the trusted head is found by both, at the same seq.
  lines[250][lines[250].find("\"i\":") + 4] = '9';
  WriteLines(log_path(), lines);
  auto full_bad = VerifyLedgerDir(dir_.path(), {HeadCheck::kIgnore, 2});
  auto inc_bad = VerifyLedgerDirFrom(dir_.path(), trusted, {HeadCheck::kIgnore, 2});
  ASSERT_FALSE(full_bad->ok());
  ASSERT_FALSE(inc_bad->ok());
  EXPECT_EQ(full_bad->failure->seq, 251u);
  EXPECT_EQ(inc_bad->failure->seq, 251u);
}

TEST_F(ChainVerifierTest, IncrementalVerifyRejectsAWrongTrustedHead) {
  auto lines = ReadLines(log_path());
  HeadRecord trusted;
  for (int i = 0; i < 10; ++i) trusted.log_bytes += lines[i].size() + 1;
  trusted.head = ChainHead{10, std::string(64, 'a'), 0};
  auto r = VerifyLedgerDirFrom(dir_.path(), trusted);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->ok());
}

TEST(LiveVerification, PassesWhileAWriterAppendsAndSyncs) {
  TempDir dir;
  auto log = EventLog::Create(dir.path(), 1);
  ASSERT_TRUE(log.ok());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 100000 && !stop; ++i) {
      std::vector<std::string> bodies(50, absl::StrCat("{\"i\":", i, "}"));
      ASSERT_TRUE((*log)->AppendBatch(bodies).ok());
      if (i % 5 == 0) ASSERT_TRUE((*log)->Sync().ok());
    }
  });
  for (int i = 0; i < 30; ++i) {
    auto r = VerifyLedgerDir(dir.path(), {HeadCheck::kMayLag, 2});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->ok()) << r->failure->ToString();
  }
  stop = true;
  writer.join();
}

TEST_F(ChainVerifierTest, HeadFileMustNameTheLastEventOfABlock) {
  auto head = ReadHeadFile(dir_.path());
  ASSERT_TRUE(head.ok() && head->has_value());
  HeadRecord wrong = **head;
  wrong.head.seq = 299;
  ASSERT_TRUE(WriteHeadFile(dir_.path(), wrong).ok());
  auto r = VerifyLedgerDir(dir_.path(), {HeadCheck::kExact, 2});
  ASSERT_TRUE(r.ok());
  ASSERT_FALSE(r->ok());
  EXPECT_NE(r->failure->reason.find("names seq 299"), std::string::npos);
}

}  // namespace
}  // namespace snapledger
