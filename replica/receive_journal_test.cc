#include "replica/receive_journal.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

ReceiveOutcome Outcome(const std::string& block, bool ok) {
  ReceiveOutcome o;
  o.block = block;
  o.ok = ok;
  o.reason = ok ? "" : "verification";
  o.error = ok ? "" : "seq 7: hash mismatch";
  o.log_bytes = 1234;
  o.events_verified = 10;
  o.seconds = 0.5;
  return o;
}

TEST(ReceiveJournal, ReaderSeesOnlyOutcomesAppendedAfterItStarted) {
  testing::TempDir dir;
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("old", true)).ok());
  ReceiveJournalReader reader(dir.path());
  EXPECT_TRUE(reader.ReadNew().empty());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("a", true)).ok());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("b", false)).ok());
  std::vector<ReceiveOutcome> got = reader.ReadNew();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].block, "a");
  EXPECT_TRUE(got[0].ok);
  EXPECT_EQ(got[0].log_bytes, 1234u);
  EXPECT_EQ(got[1].reason, "verification");
  EXPECT_EQ(got[1].error, "seq 7: hash mismatch");
  EXPECT_TRUE(reader.ReadNew().empty());
}

TEST(ReceiveJournal, ACorruptLineIsReportedNotSkipped) {
  testing::TempDir dir;
  ReceiveJournalReader reader(dir.path());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("a", true)).ok());
  std::ofstream(ReceiveJournalPath(dir.path()), std::ios::app) << "{not json\n";
  std::vector<ReceiveOutcome> got = reader.ReadNew();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_FALSE(got[1].ok);
  EXPECT_EQ(got[1].reason, "local");
  EXPECT_NE(got[1].error.find("line 2"), std::string::npos) << got[1].error;
}

TEST(ReceiveJournal, AHalfWrittenLineWaitsForItsNewline) {
  testing::TempDir dir;
  ReceiveJournalReader reader(dir.path());
  std::ofstream(ReceiveJournalPath(dir.path()), std::ios::app) << "{\"ok\":true,\"block\":\"x\"";
  EXPECT_TRUE(reader.ReadNew().empty());
  std::ofstream(ReceiveJournalPath(dir.path()), std::ios::app) << "}\n";
  std::vector<ReceiveOutcome> got = reader.ReadNew();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].block, "x");
}

TEST(ReceiveJournal, RotationIsFollowed) {
  testing::TempDir dir;
  ReceiveJournalReader reader(dir.path());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("a", true)).ok());
  EXPECT_EQ(reader.ReadNew().size(), 1u);
  std::rename(ReceiveJournalPath(dir.path()).c_str(),
              (ReceiveJournalPath(dir.path()) + ".1").c_str());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("b", true)).ok());
  std::vector<ReceiveOutcome> got = reader.ReadNew();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].block, "b");
}

TEST(ReceiveJournal, OutcomesAppendedJustBeforeRotationAreNotLost) {
  testing::TempDir dir;
  ReceiveJournalReader reader(dir.path());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("a", true)).ok());
  EXPECT_EQ(reader.ReadNew().size(), 1u);
  // "b" lands in the old file after the last read; then the file rotates and "c" follows.
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("b", false)).ok());
  std::rename(ReceiveJournalPath(dir.path()).c_str(),
              (ReceiveJournalPath(dir.path()) + ".1").c_str());
  ASSERT_TRUE(AppendReceiveOutcome(dir.path(), Outcome("c", true)).ok());
  std::vector<ReceiveOutcome> got = reader.ReadNew();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].block, "b");
  EXPECT_EQ(got[1].block, "c");
  EXPECT_TRUE(reader.ReadNew().empty());
}

}  // namespace
}  // namespace snapledger
