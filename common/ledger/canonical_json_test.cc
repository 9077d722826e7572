#include "common/ledger/canonical_json.h"

#include <gtest/gtest.h>

namespace snapledger {
namespace {

TEST(CanonicalBody, SortsKeysAndDropsWhitespace) {
  auto c = CanonicalizeBody(R"( { "b" : 1, "a" : { "d": [1, 2], "c": "x" } } )");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, R"({"a":{"c":"x","d":[1,2]},"b":1})");
}

TEST(CanonicalBody, KeepsNonAsciiAsUtf8AndEscapesControls) {
  auto c = CanonicalizeBody("{\"name\":\"br\xc3\xbc\\u00fc\",\"t\":\"a\\tb\\u0001\"}");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, "{\"name\":\"br\xc3\xbc\xc3\xbc\",\"t\":\"a\\tb\\u0001\"}");
}

TEST(CanonicalBody, IsIdempotent) {
  auto once = CanonicalizeBody(R"({"z":1.5e3,"y":-0.25,"x":[true,null,"s"]})");
  ASSERT_TRUE(once.ok());
  auto twice = CanonicalizeBody(*once);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*once, *twice);
}

TEST(CanonicalBody, RejectsNonObjects) {
  for (const char* bad : {"[1,2]", "\"s\"", "3", "null", "true"}) {
    auto c = CanonicalizeBody(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("must be a JSON object"), absl::string_view::npos);
  }
}

TEST(CanonicalBody, RejectsInvalidJsonWithPosition) {
  auto c = CanonicalizeBody(R"({"a":1,})");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("byte"), absl::string_view::npos);
}

TEST(CanonicalBody, RejectsInvalidUtf8) {
  EXPECT_FALSE(CanonicalizeBody("{\"a\":\"\xff\xfe\"}").ok());
  EXPECT_FALSE(CanonicalizeBody("{\"a\":\"\xc3\"}").ok());
}

TEST(CanonicalBody, RejectsDuplicateKeys) {
  auto c = CanonicalizeBody(R"({"a":1,"b":{"x":1,"x":2}})");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("duplicate key \"x\""), absl::string_view::npos);
}

TEST(CanonicalBody, RejectsBodiesOverTheLimit) {
  std::string big = "{\"a\":\"" + std::string(100, 'x') + "\"}";
  EXPECT_TRUE(CanonicalizeBody(big, 200).ok());
  auto c = CanonicalizeBody(big, 50);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("maximum of 50 bytes"), absl::string_view::npos);
}

TEST(CanonicalBody, RejectsExcessiveNesting) {
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "{\"a\":";
  deep += "1";
  for (int i = 0; i < 100; ++i) deep += "}";
  EXPECT_FALSE(CanonicalizeBody(deep).ok());
}

}  // namespace
}  // namespace snapledger

namespace snapledger {
namespace {

TEST(CanonicalBody, NumberOutOfRangeIsRejectedNotACrash) {
  auto c = CanonicalizeBody(R"({"a":1e999})");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CanonicalBody, AlreadyCanonicalBodiesComeBackUnchanged) {
  for (const char* body :
       {R"({})", R"({"a":[1,-2,true,null,{"b":"x y"}],"c":"d"})", R"({"":0,"a":{"b":{"c":[]}}})"}) {
    auto c = CanonicalizeBody(body);
    ASSERT_TRUE(c.ok()) << body;
    EXPECT_EQ(*c, body);
  }
}

TEST(CanonicalBody, FastPathDefersEverythingElseToTheFullParser) {
  EXPECT_EQ(*CanonicalizeBody(R"({"b":1,"a":2})"), R"({"a":2,"b":1})");
  EXPECT_EQ(*CanonicalizeBody(R"({"a":-0})"), R"({"a":0})");
  EXPECT_EQ(*CanonicalizeBody(R"({"a":"\u0041"})"), R"({"a":"A"})");
  EXPECT_EQ(*CanonicalizeBody(R"({"a":1.50})"), R"({"a":1.5})");
  EXPECT_FALSE(CanonicalizeBody(R"({"a":1,"a":1})").ok());
  EXPECT_FALSE(CanonicalizeBody(R"({"a":01})").ok());
}

}  // namespace
}  // namespace snapledger
