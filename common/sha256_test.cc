#include "common/sha256.h"

#include <gtest/gtest.h>

namespace snapledger {
namespace {

// FIPS 180-2 test vectors.
TEST(Sha256, MatchesPublishedVectors) {
  EXPECT_EQ(ToHex(Sha256::Of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(ToHex(Sha256::Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, IncrementalEqualsOneShot) {
  Sha256 h;
  h.Update("ab");
  h.Update("c");
  EXPECT_EQ(h.Finish(), Sha256::Of("abc"));
  h.Reset();
  h.Update("");
  EXPECT_EQ(h.Finish(), Sha256::Of(""));
}

TEST(Hex, RoundTripsAndRejectsNonLowerHex) {
  Digest d = Sha256::Of("x");
  Digest back;
  ASSERT_TRUE(FromHex(ToHex(d), &back));
  EXPECT_EQ(back, d);
  std::string upper = ToHex(d);
  upper[0] = 'A';
  EXPECT_FALSE(FromHex(upper, &back));
  EXPECT_FALSE(FromHex("abc", &back));
  EXPECT_FALSE(IsLowerHex64(upper));
  EXPECT_TRUE(IsLowerHex64(ToHex(d)));
}

}  // namespace
}  // namespace snapledger
