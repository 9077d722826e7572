#include "replica/receive_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace snapledger {
namespace {

using ::testing::HasSubstr;

constexpr char kOptions[] =
    " --block block-000000000009-0123456789ab --parent block-000000000004-aaaaaaaaaaaa"
    " --epoch 3 --head-seq 9 --head-hash " 
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef --compress zstd";

TEST(ParseOriginalCommand, TakesTheTransferArgumentsAfterTheProgram) {
  for (const char* program : {"snapledger-receive", "/usr/bin/snapledger-receive",
                              "snapledger-replica receive", "/opt/sl/snapledger-replica receive",
                              "receive"}) {
    TransferArgs t;
    std::string error;
    ASSERT_TRUE(ParseOriginalCommand(std::string(program) + kOptions, t, &error))
        << program << ": " << error;
    EXPECT_EQ(t.block, "block-000000000009-0123456789ab");
    EXPECT_EQ(t.parent, "block-000000000004-aaaaaaaaaaaa");
    EXPECT_EQ(t.epoch, 3u);
    EXPECT_EQ(t.head_seq, 9u);
    EXPECT_EQ(t.head_hash, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    EXPECT_EQ(t.compress, "zstd");
  }
}

TEST(ParseOriginalCommand, RefusesAnyOtherProgram) {
  for (const char* command : {"", "sh -c id", "btrfs receive /", "snapledger-replica serve",
                              "snapledger-replica", "evil-snapledger-receive --block x",
                              "snapledger-receive-evil --epoch 1"}) {
    TransferArgs t;
    std::string error;
    EXPECT_FALSE(ParseOriginalCommand(command, t, &error)) << command;
    EXPECT_THAT(error, HasSubstr("may only run `snapledger-receive`")) << command;
  }
}

TEST(ParseOriginalCommand, RefusesOptionsItDoesNotKnow) {
  // The root comes from the forced command only; anything else is refused, not ignored.
  for (const char* command : {"snapledger-receive --root /tmp --block block-000000000009-0123456789ab",
                              "snapledger-receive --block block-000000000009-0123456789ab ; id",
                              "snapledger-receive extra-argument"}) {
    TransferArgs t;
    std::string error;
    EXPECT_FALSE(ParseOriginalCommand(command, t, &error)) << command;
    EXPECT_FALSE(error.empty()) << command;
  }
}

TEST(ParseOriginalCommand, TakesASessionWithoutTransferArguments) {
  TransferArgs t;
  std::string error;
  ASSERT_TRUE(ParseOriginalCommand("/usr/bin/snapledger-receive --session", t, &error)) << error;
  EXPECT_TRUE(t.session);
  EXPECT_TRUE(t.block.empty());

  // A session's blocks are named on stdin, one request each; not on the command line.
  TransferArgs both;
  EXPECT_FALSE(ParseOriginalCommand(std::string("snapledger-receive --session") + kOptions, both,
                                    &error));
  EXPECT_THAT(error, HasSubstr("not on the command line"));
}

TEST(ParseRequestLine, TakesTheTransferOptionsAlone) {
  TransferArgs t;
  std::string error;
  ASSERT_TRUE(ParseRequestLine(kOptions, t, &error)) << error;
  EXPECT_EQ(t.block, "block-000000000009-0123456789ab");
  EXPECT_EQ(t.parent, "block-000000000004-aaaaaaaaaaaa");
  EXPECT_EQ(t.epoch, 3u);
  EXPECT_EQ(t.head_seq, 9u);
  EXPECT_EQ(t.compress, "zstd");
  EXPECT_FALSE(t.session);
}

TEST(ParseRequestLine, RefusesAProgramASessionOrUnknownOptions) {
  for (const char* line : {"snapledger-receive --block block-000000000009-0123456789ab",
                           "--session", "--block block-000000000009-0123456789ab --session",
                           "--root /tmp --block block-000000000009-0123456789ab",
                           "--block block-000000000009-0123456789ab ; id"}) {
    TransferArgs t;
    std::string error;
    EXPECT_FALSE(ParseRequestLine(line, t, &error)) << line;
    EXPECT_FALSE(error.empty()) << line;
  }
}

}  // namespace
}  // namespace snapledger
