#include "common/transport/receive_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

ReceiveVerdict Received() {
  ReceiveVerdict v;
  v.block = "block-000000000009-0123456789ab";
  v.seq = 9;
  v.hash = std::string(64, 'a');
  v.events_verified = 5;
  v.prefix_bytes_shared = 4096;
  v.prefix_bytes_compared = 17;
  v.bytes_verified_in_stream = 1234;
  v.already_held = true;
  v.seconds = {0.25, 0.5, 1.5, 2.75};
  return v;
}

// The error ParseReceiveVerdict gives for `line`, which must not parse.
std::string Refused(std::string_view line) {
  absl::StatusOr<ReceiveVerdict> v = ParseReceiveVerdict(line);
  EXPECT_FALSE(v.ok()) << line;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << line;
  return std::string(v.status().message());
}

TEST(ReceiveVerdict, AReceivedVerdictRoundTrips) {
  const ReceiveVerdict v = Received();
  const std::string line = WriteReceiveVerdict(v);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  absl::StatusOr<ReceiveVerdict> back = ParseReceiveVerdict(line);
  ASSERT_TRUE(back.ok()) << back.status() << ": " << line;
  EXPECT_EQ(back->verdict, ReceiveExit::kReceived);
  EXPECT_EQ(back->refusal, std::nullopt);
  EXPECT_EQ(back->block, v.block);
  EXPECT_EQ(back->seq, 9u);
  EXPECT_EQ(back->hash, v.hash);
  EXPECT_EQ(back->events_verified, 5u);
  EXPECT_EQ(back->prefix_bytes_shared, 4096u);
  EXPECT_EQ(back->prefix_bytes_compared, 17u);
  EXPECT_EQ(back->bytes_verified_in_stream, 1234u);
  EXPECT_TRUE(back->already_held);
  EXPECT_EQ(back->seconds.stream, 0.25);
  EXPECT_EQ(back->seconds.verify, 0.5);
  EXPECT_EQ(back->seconds.promote, 1.5);
  EXPECT_EQ(back->seconds.process, 2.75);
}

TEST(ReceiveVerdict, TheReceivedLineListsItsMembersInProtocolOrder) {
  EXPECT_EQ(WriteReceiveVerdict(Received()),
            "{\"verdict\":\"received\",\"block\":\"block-000000000009-0123456789ab\",\"seq\":9,"
            "\"hash\":\"" +
                std::string(64, 'a') +
                "\",\"events_verified\":5,\"prefix_bytes_shared\":4096,"
                "\"prefix_bytes_compared\":17,\"bytes_verified_in_stream\":1234,"
                "\"already_held\":true,"
                "\"seconds\":{\"stream\":0.25,\"verify\":0.5,\"promote\":1.5,\"process\":2.75}}");
}

TEST(ReceiveVerdict, EveryRefusalRoundTrips) {
  for (ReceiveRefusal r : {ReceiveRefusal::kBadRequest, ReceiveRefusal::kNotPermitted,
                           ReceiveRefusal::kForcedCommand, ReceiveRefusal::kParentNotHeld,
                           ReceiveRefusal::kNewerBlockHeld, ReceiveRefusal::kReceiveInProgress}) {
    const std::string line = WriteReceiveVerdict(
        FailedVerdict(ReceiveExit::kRefused, "block-000000000009-0123456789ab", "why", r));
    absl::StatusOr<ReceiveVerdict> back = ParseReceiveVerdict(line);
    ASSERT_TRUE(back.ok()) << back.status() << ": " << line;
    EXPECT_EQ(back->verdict, ReceiveExit::kRefused);
    EXPECT_EQ(back->refusal, r) << line;
    EXPECT_EQ(back->block, "block-000000000009-0123456789ab");
    EXPECT_EQ(back->error, "why");
    EXPECT_THAT(
        line, HasSubstr(absl::StrCat("\"refusal\":\"", std::string(ReceiveRefusalName(r)), "\"")));
  }
}

TEST(ReceiveVerdict, FailuresRoundTripWithoutABlock) {
  for (ReceiveExit e : {ReceiveExit::kTransferFailed, ReceiveExit::kNotVerified}) {
    const std::string line = WriteReceiveVerdict(FailedVerdict(e, "", "cut at byte 7"));
    absl::StatusOr<ReceiveVerdict> back = ParseReceiveVerdict(line);
    ASSERT_TRUE(back.ok()) << back.status() << ": " << line;
    EXPECT_EQ(back->verdict, e);
    EXPECT_EQ(back->refusal, std::nullopt);
    EXPECT_EQ(back->block, "");
    EXPECT_EQ(back->error, "cut at byte 7");
    EXPECT_THAT(line, ::testing::Not(HasSubstr("\"block\"")));
  }
}

TEST(ReceiveVerdict, ALongErrorIsCutAndTheLineStaysWithinBounds) {
  const std::string line =
      WriteReceiveVerdict(FailedVerdict(ReceiveExit::kRefused, std::string(100'000, '\x01'),
                                        std::string(100'000, '\x7f'), ReceiveRefusal::kBadRequest));
  EXPECT_LT(line.size(), kMaxVerdictLine);
  absl::StatusOr<ReceiveVerdict> back = ParseReceiveVerdict(line);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->error.size(), kMaxVerdictError);
  EXPECT_TRUE(back->error.ends_with("..."));
}

TEST(ReceiveVerdict, BytesThatAreNotUtf8AreReplacedNotThrown) {
  const std::string line = WriteReceiveVerdict(
      FailedVerdict(ReceiveExit::kTransferFailed, "", "btrfs receive: \xff\xfe bad"));
  absl::StatusOr<ReceiveVerdict> back = ParseReceiveVerdict(line);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->error, HasSubstr("btrfs receive: "));
  EXPECT_THAT(back->error, HasSubstr(" bad"));
}

TEST(ReceiveVerdict, SecondsThatAreNotFiniteAreWrittenAsZero) {
  ReceiveVerdict v = Received();
  v.seconds.stream = std::numeric_limits<double>::quiet_NaN();
  v.seconds.verify = -1;
  v.seconds.promote = std::numeric_limits<double>::infinity();
  absl::StatusOr<ReceiveVerdict> back = ParseReceiveVerdict(WriteReceiveVerdict(v));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->seconds.stream, 0);
  EXPECT_EQ(back->seconds.verify, 0);
  EXPECT_EQ(back->seconds.promote, 0);
}

TEST(ReceiveVerdict, ANumberIsNotAVerdict) {
  EXPECT_THAT(Refused("42"), HasSubstr("not an object"));
}

TEST(ReceiveVerdict, AnArrayIsNotAVerdict) {
  EXPECT_THAT(Refused("[1]"), HasSubstr("array, not an object"));
}

TEST(ReceiveVerdict, AStringIsNotAVerdict) {
  EXPECT_THAT(Refused("\"x\""), HasSubstr("string, not an object"));
}

TEST(ReceiveVerdict, NullIsNotAVerdict) { EXPECT_THAT(Refused("null"), HasSubstr("null")); }

TEST(ReceiveVerdict, AnObjectWithoutAVerdictIsRefused) {
  EXPECT_THAT(Refused("{\"block\":5}"), HasSubstr("has no \"verdict\""));
  EXPECT_THAT(Refused("{}"), HasSubstr("has no \"verdict\""));
}

TEST(ReceiveVerdict, AnUnknownVerdictIsRefused) {
  EXPECT_THAT(Refused("{\"verdict\":\"promoted\",\"block\":\"b\"}"),
              HasSubstr("\"promoted\" is not a verdict"));
  EXPECT_THAT(Refused("{\"verdict\":0}"), HasSubstr("\"verdict\" is the number 0, not a string"));
}

TEST(ReceiveVerdict, TruncatedJsonIsRefused) {
  const std::string line = WriteReceiveVerdict(Received());
  for (size_t n : {size_t{0}, size_t{1}, size_t{12}, line.size() / 2, line.size() - 1})
    EXPECT_THAT(Refused(line.substr(0, n)), HasSubstr("not JSON")) << n;
}

TEST(ReceiveVerdict, TextAfterTheObjectIsRefused) {
  EXPECT_THAT(Refused(WriteReceiveVerdict(Received()) + " {}"), HasSubstr("not JSON"));
}

TEST(ReceiveVerdict, AnOverlongLineIsRefusedBeforeParsing) {
  std::string line =
      "{\"verdict\":\"transfer_failed\",\"error\":\"" + std::string(kMaxVerdictLine, 'x') + "\"}";
  EXPECT_THAT(Refused(line), HasSubstr("more than the"));
}

TEST(ReceiveVerdict, DeepNestingIsRefusedWithoutCrashing) {
  std::string line = "{\"verdict\":\"received\",\"seconds\":" + std::string(30'000, '[') +
                     std::string(30'000, ']') + "}";
  EXPECT_FALSE(ParseReceiveVerdict(line).ok());
  EXPECT_FALSE(ParseReceiveVerdict(std::string(kMaxVerdictLine - 1, '[')).ok());
}

TEST(ReceiveVerdict, EveryMemberOfAReceivedVerdictIsRequired) {
  const char* members[] = {"block",
                           "seq",
                           "hash",
                           "events_verified",
                           "prefix_bytes_shared",
                           "prefix_bytes_compared",
                           "bytes_verified_in_stream",
                           "already_held",
                           "seconds"};
  const std::string line = WriteReceiveVerdict(Received());
  for (const char* m : members) {
    // Renaming the member leaves the object well-formed and without it.
    std::string renamed = line;
    const std::string key = absl::StrCat("\"", m, "\":");
    const size_t at = renamed.find(key);
    ASSERT_NE(at, std::string::npos) << m;
    renamed.replace(at, key.size(), absl::StrCat("\"x_", m, "\":"));
    EXPECT_THAT(Refused(renamed), HasSubstr(absl::StrCat("has no \"", m, "\""))) << m;
  }
}

TEST(ReceiveVerdict, MembersOfTheWrongTypeAreRefused) {
  const std::string h = std::string(64, 'a');
  auto received = [&](std::string block, std::string seq, std::string held, std::string seconds) {
    return absl::StrCat("{\"verdict\":\"received\",\"block\":", block, ",\"seq\":", seq,
                        ",\"hash\":\"", h,
                        "\",\"events_verified\":1,\"prefix_bytes_shared\":0,"
                        "\"prefix_bytes_compared\":0,\"bytes_verified_in_stream\":0,"
                        "\"already_held\":",
                        held, ",\"seconds\":", seconds, "}");
  };
  const std::string b = "\"block-000000000009-0123456789ab\"";
  const std::string s = "{\"stream\":1,\"verify\":1,\"promote\":1,\"process\":1}";
  ASSERT_TRUE(ParseReceiveVerdict(received(b, "9", "false", s)).ok());
  EXPECT_THAT(Refused(received("5", "9", "false", s)), HasSubstr("\"block\" is the number 5"));
  EXPECT_THAT(Refused(received("null", "9", "false", s)), HasSubstr("\"block\" is null"));
  EXPECT_THAT(Refused(received(b, "\"9\"", "false", s)), HasSubstr("\"seq\" is string"));
  EXPECT_THAT(Refused(received(b, "-9", "false", s)), HasSubstr("not a non-negative integer"));
  EXPECT_THAT(Refused(received(b, "9.5", "false", s)), HasSubstr("not a non-negative integer"));
  EXPECT_THAT(Refused(received(b, "1e30", "false", s)), HasSubstr("not a non-negative integer"));
  EXPECT_THAT(Refused(received(b, "9", "1", s)), HasSubstr("\"already_held\" is the number 1"));
  EXPECT_THAT(Refused(received(b, "9", "false", "[]")), HasSubstr("\"seconds\" is array"));
  EXPECT_THAT(Refused(received(b, "9", "false",
                               "{\"stream\":\"1\",\"verify\":1,\"promote\":1,\"process\":1}")),
              HasSubstr("\"stream\" is string"));
  EXPECT_THAT(Refused(received(b, "9", "false",
                               "{\"stream\":-1,\"verify\":1,\"promote\":1,\"process\":1}")),
              HasSubstr("non-negative number of seconds"));
  EXPECT_THAT(Refused("{\"verdict\":\"refused\",\"refusal\":7,\"error\":\"e\"}"),
              HasSubstr("\"refusal\" is the number 7"));
  EXPECT_THAT(Refused("{\"verdict\":\"not_verified\",\"error\":[\"e\"]}"),
              HasSubstr("\"error\" is array"));
  EXPECT_THAT(Refused("{\"verdict\":\"not_verified\",\"block\":1,\"error\":\"e\"}"),
              HasSubstr("\"block\" is the number 1"));
}

TEST(ReceiveVerdict, AnUnknownRefusalNameIsRefused) {
  EXPECT_THAT(Refused("{\"verdict\":\"refused\",\"refusal\":\"disk_full\",\"error\":\"e\"}"),
              HasSubstr("\"disk_full\" is not a refusal"));
}

TEST(ReceiveVerdict, ARefusalBelongsToARefusedVerdictOnly) {
  EXPECT_THAT(Refused("{\"verdict\":\"refused\",\"error\":\"e\"}"),
              HasSubstr("has no \"refusal\""));
  EXPECT_THAT(Refused("{\"verdict\":\"not_verified\",\"refusal\":\"bad_request\",\"error\":\"e\"}"),
              HasSubstr("carries a refusal"));
  // A received verdict with a refusal beside it: the positive control is
  // AReceivedVerdictRoundTrips.
  std::string received = WriteReceiveVerdict(Received());
  received.insert(received.size() - 1, ",\"refusal\":\"parent_not_held\"");
  EXPECT_THAT(Refused(received), HasSubstr("carries a refusal"));
}

TEST(ReceiveVerdict, ForeignTextIsCutAndMadeUtf8) {
  EXPECT_EQ(ForeignText("plain text\n", 100), "plain text\n");
  EXPECT_EQ(ForeignText("caf\xC3\xA9", 100), "caf\xC3\xA9");
  // A stray continuation byte, an overlong '/', a surrogate, a cut 3-byte character.
  EXPECT_EQ(ForeignText("a\x80"
                        "b\xC0\xAF"
                        "c\xED\xA0\x80"
                        "d\xE2\x82",
                        100),
            "a\uFFFD"
            "b\uFFFD\uFFFD"
            "c\uFFFD\uFFFD\uFFFD"
            "d\uFFFD\uFFFD");
  EXPECT_EQ(ForeignText(std::string(10000, 'x'), 100), std::string(97, 'x') + "...");
}

TEST(ReceiveVerdict, AFailureNeedsItsError) {
  EXPECT_THAT(Refused("{\"verdict\":\"transfer_failed\"}"), HasSubstr("has no \"error\""));
}

TEST(ReceiveVerdict, MembersItDoesNotKnowAreIgnored) {
  absl::StatusOr<ReceiveVerdict> v =
      ParseReceiveVerdict("{\"verdict\":\"transfer_failed\",\"error\":\"e\",\"later\":[1]}");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->verdict, ReceiveExit::kTransferFailed);
}

TEST(ReceiveExit, TheExitCodesKeepTheirNumbers) {
  EXPECT_EQ(static_cast<int>(ReceiveExit::kReceived), 0);
  EXPECT_EQ(static_cast<int>(ReceiveExit::kTransferFailed), 1);
  EXPECT_EQ(static_cast<int>(ReceiveExit::kRefused), 2);
  EXPECT_EQ(static_cast<int>(ReceiveExit::kNotVerified), 3);
  for (int code = 0; code < 4; ++code)
    EXPECT_EQ(static_cast<int>(*ReceiveExitFromStatus(code)), code);
  EXPECT_EQ(ReceiveExitFromStatus(4), std::nullopt);
  EXPECT_EQ(ReceiveExitFromStatus(-1), std::nullopt);
  EXPECT_EQ(ReceiveExitFromStatus(255), std::nullopt);
}

TEST(ReceiveRefusal, TravelsInAStatusPayload) {
  absl::Status st = WithRefusal(absl::FailedPreconditionError("parent x is not held here"),
                                ReceiveRefusal::kParentNotHeld);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "parent x is not held here");
  EXPECT_EQ(RefusalOf(st), ReceiveRefusal::kParentNotHeld);
  EXPECT_EQ(RefusalOf(absl::FailedPreconditionError("plain")), std::nullopt);
  EXPECT_EQ(RefusalOf(absl::OkStatus()), std::nullopt);
}

}  // namespace
}  // namespace snapledger
