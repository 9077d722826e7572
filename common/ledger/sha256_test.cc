#include "common/ledger/sha256.h"

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

// Every byte value at every position of an otherwise valid hash: only '0'-'9' and 'a'-'f'
// pass, wherever they sit in the 64 characters (the check works on 16 at a time).
TEST(Hex, IsLowerHex64AcceptsExactlyLowercaseHexAtEveryPosition) {
  const std::string valid = ToHex(Sha256::Of("y"));
  ASSERT_TRUE(IsLowerHex64(valid));
  for (size_t pos = 0; pos < 64; ++pos) {
    for (int b = 0; b < 256; ++b) {
      std::string s = valid;
      s[pos] = static_cast<char>(b);
      bool hex = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f');
      ASSERT_EQ(IsLowerHex64(s), hex) << "byte " << b << " at position " << pos;
    }
  }
  EXPECT_FALSE(IsLowerHex64(valid.substr(0, 63)));
  EXPECT_FALSE(IsLowerHex64(valid + "0"));
  EXPECT_FALSE(IsLowerHex64(""));
}

}  // namespace
}  // namespace snapledger
