#include "common/ops/yaml_config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/match.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

class YamlConfigTest : public ::testing::Test {
 protected:
  YamlSection Load(const std::string& text) {
    path_ = dir_.Sub("c.yaml");
    std::ofstream(path_) << text;
    absl::StatusOr<YAML::Node> root = LoadYamlFile(path_);
    EXPECT_TRUE(root.ok()) << root.status();
    return YamlSection(root.value_or(YAML::Node(YAML::NodeType::Map)), path_);
  }
  testing::TempDir dir_;
  std::string path_;
};

TEST_F(YamlConfigTest, ErrorsNameTheFileThenTheKeyPath) {
  YamlSection top = Load("shipping: {watchdog_seconds: soon}\n");
  absl::StatusOr<YamlSection> shipping = top.Section("shipping");
  ASSERT_TRUE(shipping.ok());
  absl::Duration d;
  absl::Status s = shipping->GetSeconds("watchdog_seconds", &d);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_TRUE(absl::StartsWith(s.message(), path_ + ": shipping.watchdog_seconds: must be")) << s;
}

TEST_F(YamlConfigTest, AbsentIntegersLeaveTheDefaultAlone) {
  YamlSection top = Load("other: 1\n");
  int a = -5, b = -5;
  EXPECT_TRUE(top.Get("a", &a).ok());
  EXPECT_TRUE(top.GetSigned("b", &b).ok());
  EXPECT_EQ(a, -5);
  EXPECT_EQ(b, -5);
}

TEST_F(YamlConfigTest, HasSaysWhetherAKeyIsPresentWithoutMarkingItKnown) {
  YamlSection top = Load("present: 0\nempty:\n");
  EXPECT_TRUE(top.Has("present"));
  EXPECT_TRUE(top.Has("empty"));
  EXPECT_FALSE(top.Has("absent"));
  absl::Status s = top.CheckNoUnknownKeys();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_TRUE(absl::StrContains(s.message(), "unknown setting")) << s;
}

TEST_F(YamlConfigTest, SignedIntegersTakeNegativesAndRefuseTheRest) {
  YamlSection top = Load("neg: -7\npos: 19\nword: fast\nhuge: 3000000000\nlist: [1]\n");
  int v = 0;
  ASSERT_TRUE(top.GetSigned("neg", &v).ok());
  EXPECT_EQ(v, -7);
  ASSERT_TRUE(top.GetSigned("pos", &v).ok());
  EXPECT_EQ(v, 19);
  for (const char* key : {"word", "huge", "list"}) {
    absl::Status s = top.GetSigned(key, &v);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << key;
    EXPECT_TRUE(absl::StrContains(s.message(), std::string(key) + ": must be an integer from"))
        << s;
  }
  EXPECT_EQ(v, 19);  // unchanged by the refusals
  // The unsigned getter still refuses a negative number.
  EXPECT_TRUE(absl::IsInvalidArgument(top.Get("neg", &v)));
}

TEST_F(YamlConfigTest, NotANumberAndInfinityAreNoDurations) {
  YamlSection top = Load("a: nan\nb: inf\nc: 1.5\n");
  absl::Duration d = absl::Seconds(7);
  EXPECT_TRUE(absl::IsInvalidArgument(top.GetSeconds("a", &d)));
  EXPECT_TRUE(absl::IsInvalidArgument(top.GetSeconds("b", &d)));
  EXPECT_EQ(d, absl::Seconds(7));
  ASSERT_TRUE(top.GetSeconds("c", &d).ok());
  EXPECT_EQ(d, absl::Milliseconds(1500));
}

TEST_F(YamlConfigTest, MillisecondsTooLargeForADurationAreRefused) {
  YamlSection top = Load("a: 18446744073709551615\n");
  absl::Duration d = absl::Seconds(1);
  absl::Status s = top.GetMillis("a", &d);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_EQ(d, absl::Seconds(1));
}

TEST_F(YamlConfigTest, ARepeatedKeyIsAnError) {
  YamlSection top = Load("epoch: 1\nepoch: 2\n");
  uint64_t epoch = 0;
  ASSERT_TRUE(top.Get("epoch", &epoch).ok());
  absl::Status s = top.CheckNoUnknownKeys();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("epoch: appears twice"), std::string::npos) << s;
}

TEST_F(YamlConfigTest, ListEntriesAreNamedByIndex) {
  YamlSection top = Load("replicas:\n  - {id: a}\n  - {id: b, prot: 22}\n");
  absl::StatusOr<std::vector<YamlSection>> list = top.SectionList("replicas");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  std::string id;
  ASSERT_TRUE((*list)[1].Get("id", &id).ok());
  absl::Status s = (*list)[1].CheckNoUnknownKeys();
  EXPECT_NE(s.message().find(path_ + ": replicas[1].prot: unknown setting"), std::string::npos)
      << s;
}

}  // namespace
}  // namespace snapledger
