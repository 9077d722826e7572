#include "common/ledger/prefix_check.h"

#include <gtest/gtest.h>

#include "common/base/posix_file.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

class PrefixCheckTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_.Sub(name);
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }
  testing::TempDir dir_;
};

TEST_F(PrefixCheckTest, AppendedFileKeepsItsPrefix) {
  std::string old_text(300000, 'a');
  auto r =
      ComparePrefix(Write("a", old_text), Write("b", old_text + "new events"), old_text.size());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->equal);
  EXPECT_EQ(r->bytes_compared + r->bytes_shared, old_text.size());
}

TEST_F(PrefixCheckTest, ChangedByteIsFoundAtItsOffset) {
  std::string old_text(300000, 'a');
  std::string changed = old_text;
  changed[123456] = 'b';
  auto r = ComparePrefix(Write("a", old_text), Write("b", changed + "tail"), old_text.size());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->equal);
  EXPECT_EQ(r->first_difference, 123456u);
}

TEST_F(PrefixCheckTest, ADifferencePastTheFirstMebibyteIsFoundAtItsOffset) {
  std::string old_text(3'000'000, 'a');
  std::string changed = old_text;
  changed[2'500'001] = 'b';
  auto r = ComparePrefix(Write("a", old_text), Write("b", changed), old_text.size());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->equal);
  EXPECT_EQ(r->first_difference, 2'500'001u);
}

TEST_F(PrefixCheckTest, ShorterCandidateDiffersAtItsEnd) {
  auto r = ComparePrefix(Write("a", "abcdef"), Write("b", "abc"), 6);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->equal);
  EXPECT_EQ(r->first_difference, 3u);
}

}  // namespace
}  // namespace snapledger
