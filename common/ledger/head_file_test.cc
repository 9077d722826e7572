#include "common/ledger/head_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/base/posix_file.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

TEST(HeadFile, RoundTripsEveryField) {
  HeadRecord h;
  h.head = ChainHead{42, std::string(64, 'c'), 1764000000000000};
  h.epoch = 3;
  h.log_bytes = 12345;
  EXPECT_EQ(SerializeHead(h), "{\"seq\":42,\"hash\":\"" + std::string(64, 'c') +
                                  "\",\"epoch\":3,\"ts\":1764000000000000,\"log_bytes\":12345}\n");
  auto parsed = ParseHead(SerializeHead(h));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, h);
}

TEST(HeadFile, MalformedHeadsSayWhichFieldIsWrong) {
  EXPECT_NE(ParseHead("nope").status().message().find("not a JSON object"),
            absl::string_view::npos);
  EXPECT_NE(ParseHead(R"({"hash":"x","epoch":1})").status().message().find("\"seq\""),
            absl::string_view::npos);
  EXPECT_NE(ParseHead(R"({"seq":1,"hash":"ABC","epoch":1})").status().message().find("\"hash\""),
            absl::string_view::npos);
  EXPECT_NE(ParseHead(R"({"seq":-1,"hash":"x","epoch":1})").status().message().find("\"seq\""),
            absl::string_view::npos);
}

TEST(HeadFile, MissingFileIsNotAnError) {
  testing::TempDir dir;
  auto h = ReadHeadFile(dir.path());
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->has_value());
}

TEST(HeadFile, WriteReplacesAtomicallyAndLeavesNoTemporaryFile) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.Sub("metadata"));
  HeadRecord a, b;
  b.head.seq = 9;
  b.head.hash = std::string(64, 'd');
  ASSERT_TRUE(WriteHeadFile(dir.path(), a).ok());
  ASSERT_TRUE(WriteHeadFile(dir.path(), b).ok());
  EXPECT_EQ(**ReadHeadFile(dir.path()), b);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.Sub("metadata"))) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(HeadFile, CorruptFileIsDataLossNamingThePath) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.Sub("metadata"));
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("metadata/current_hash"), "{\"seq\":").ok());
  auto h = ReadHeadFile(dir.path());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(h.status().message().find("metadata/current_hash"), absl::string_view::npos);
}

}  // namespace
}  // namespace snapledger
