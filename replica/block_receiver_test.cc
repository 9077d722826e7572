#include "replica/block_receiver.h"

#include <gtest/gtest.h>

namespace snapledger {
namespace {

ReceiveRequest Request(std::string block, std::optional<std::string> parent = std::nullopt) {
  ReceiveRequest r;
  r.block = std::move(block);
  r.parent = std::move(parent);
  r.epoch = 1;
  return r;
}

TEST(ValidateReceiveRequest, AcceptsExactBlockNames) {
  EXPECT_TRUE(ValidateReceiveRequest(Request("block-000000000200-0123456789ab",
                                             "block-000000000100-ba9876543210"))
                  .ok());
}

TEST(ValidateReceiveRequest, RejectsPathTricksInBlockAndParent) {
  for (std::string bad : {"../blocks/block-000000000200-0123456789ab",
                          "block-000000000200-0123456789ab/..", "/etc/passwd", "..",
                          "block-000000000200-0123456789ab/../../x", "block-0000000002000123"}) {
    auto st = ValidateReceiveRequest(Request(bad));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("--block"), absl::string_view::npos) << bad;
    st = ValidateReceiveRequest(Request("block-000000000200-0123456789ab", bad));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ValidateReceiveRequest, ParentMustBeOlder) {
  EXPECT_FALSE(ValidateReceiveRequest(Request("block-000000000100-0123456789ab",
                                              "block-000000000200-ba9876543210"))
                   .ok());
}

TEST(ValidateReceiveRequest, AnnouncedHeadMustBeTheBlocksHead) {
  auto r = Request("block-000000000200-0123456789ab");
  r.announced = ChainHead{200, "0123456789ab" + std::string(52, '0'), 0};
  EXPECT_TRUE(ValidateReceiveRequest(r).ok());
  r.announced->seq = 199;
  EXPECT_FALSE(ValidateReceiveRequest(r).ok());
  r.announced = ChainHead{200, std::string(64, 'f'), 0};
  EXPECT_FALSE(ValidateReceiveRequest(r).ok());
}

TEST(ValidateReceiveRequest, EpochIsRequired) {
  auto r = Request("block-000000000200-0123456789ab");
  r.epoch = 0;
  EXPECT_FALSE(ValidateReceiveRequest(r).ok());
}

}  // namespace
}  // namespace snapledger
