#include "common/ledger/event_format.h"

#include <gtest/gtest.h>

namespace snapledger {
namespace {

TEST(EventLine, EncodesFixedEnvelopeWithHashLast) {
  std::string hash;
  std::string line = EncodeEventLine(1, 1700000000000000, kGenesisHash, R"({"a":1})", &hash);
  EXPECT_EQ(line, std::string("{\"seq\":1,\"ts\":1700000000000000,\"prev\":\"") +
                      std::string(kGenesisHash) + "\",\"body\":{\"a\":1},\"hash\":\"" + hash +
                      "\"}\n");
}

TEST(EventLine, HashIsSha256OfRecordWithoutHashMember) {
  std::string hash;
  std::string line = EncodeEventLine(7, 42, kGenesisHash, R"({"k":"v"})", &hash);
  std::string record = std::string("{\"seq\":7,\"ts\":42,\"prev\":\"") + std::string(kGenesisHash) +
                       "\",\"body\":{\"k\":\"v\"}}";
  EXPECT_EQ(hash, ToHex(Sha256::Of(record)));
}

TEST(EventLine, ParsesWhatItEncodes) {
  std::string hash;
  std::string line = EncodeEventLine(12, 99, kGenesisHash, R"({"x":{"y":[1,2]}})", &hash);
  line.pop_back();
  auto ev = ParseEventLine(line);
  ASSERT_TRUE(ev.ok()) << ev.status();
  EXPECT_EQ(ev->seq, 12u);
  EXPECT_EQ(ev->ts, 99);
  EXPECT_EQ(ev->prev, kGenesisHash);
  EXPECT_EQ(ev->body, R"({"x":{"y":[1,2]}})");
  EXPECT_EQ(ev->hash, hash);
  Sha256 hasher;
  EXPECT_EQ(ToHex(ComputeLineDigest(line, hasher)), hash);
}

TEST(EventLine, RejectsMalformedEnvelopes) {
  std::string hash;
  std::string good = EncodeEventLine(3, 5, kGenesisHash, "{}", &hash);
  good.pop_back();
  for (std::string bad :
       {std::string("{}"), std::string("garbage"), std::string("{\"seq\":03") + good.substr(9),
        std::string("{\"ts\":5,\"seq\":3}"), good.substr(0, good.size() - 1),
        good.substr(0, good.size() - 3) + "X\"}"}) {
    EXPECT_FALSE(ParseEventLine(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace snapledger
