#include "common/transport/zstd_stream.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

// Ledger-like text (compressible) with some random bytes mixed in, deterministic.
std::string TestData(size_t size, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::string out;
  out.reserve(size + 256);
  for (uint64_t i = 0; out.size() < size; ++i) {
    absl::StrAppend(&out, "{\"seq\":", i, ",\"event\":\"port_moved\",\"port\":\"tap", rng() % 5000,
                    "\",\"vlan\":", rng() % 4096, ",\"nonce\":\"", rng(), rng(), "\"}\n");
  }
  out.resize(size);
  return out;
}

// Incompressible bytes: compressed output reaches the destination as it is written.
std::string RandomBytes(size_t size, uint32_t seed = 3) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

absl::StatusOr<std::string> Compress(std::string_view data, ZstdOptions options = {},
                                     size_t write_size = 100'000) {
  StringSink sink;
  auto zsink = ZstdCompressSink::Create(sink, options);
  if (!zsink.ok()) return zsink.status();
  for (size_t i = 0; i < data.size(); i += write_size) {
    absl::Status st = (*zsink)->Write(data.substr(i, write_size));
    if (!st.ok()) return st;
  }
  if (absl::Status st = (*zsink)->Close(); !st.ok()) return st;
  EXPECT_TRUE(sink.closed());
  EXPECT_EQ((*zsink)->bytes_in(), data.size());
  EXPECT_EQ((*zsink)->bytes_out(), sink.data().size());
  return sink.data();
}

// Reads `source` to its end with reads of `read_size` bytes.
absl::StatusOr<std::string> ReadAll(ByteSource& source, size_t read_size = 65536) {
  std::string out;
  std::string buf(read_size, '\0');
  for (;;) {
    absl::StatusOr<size_t> n = source.Read(buf.data(), buf.size());
    if (!n.ok()) return n.status();
    if (*n == 0) return out;
    out.append(buf.data(), *n);
  }
}

absl::StatusOr<std::string> Decompress(std::string compressed, size_t read_size = 65536) {
  StringSource source(std::move(compressed));
  auto zsource = ZstdDecompressSource::Create(source);
  if (!zsource.ok()) return zsource.status();
  return ReadAll(**zsource, read_size);
}

TEST(ZstdStream, LargeDataRoundTripsAndShrinks) {
  std::string data = TestData(24 << 20);
  auto compressed = Compress(data);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  EXPECT_LT(compressed->size() * 2, data.size());
  auto back = Decompress(*compressed);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data);
}

TEST(ZstdStream, RoundTripsWithWorkerThreadsAndOtherLevels) {
  std::string data = TestData(6 << 20, 11);
  for (ZstdOptions options : {ZstdOptions{3, 0}, ZstdOptions{1, 2}, ZstdOptions{-5, 0}}) {
    auto compressed = Compress(data, options, 1 << 20);
    ASSERT_TRUE(compressed.ok()) << compressed.status();
    auto back = Decompress(*compressed);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(*back == data) << "level " << options.level << " workers " << options.workers;
  }
}

TEST(ZstdStream, TinyAndEmptyDataRoundTrip) {
  for (std::string data : {std::string(), std::string("x"), std::string("hello\n")}) {
    auto compressed = Compress(data);
    ASSERT_TRUE(compressed.ok()) << compressed.status();
    EXPECT_FALSE(compressed->empty()) << "even an empty stream is one frame";
    auto back = Decompress(*compressed, /*read_size=*/1);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, data);
  }
}

TEST(ZstdStream, TinyReadsOfLargeDataRoundTrip) {
  std::string data = TestData(300'000);
  auto compressed = Compress(data, {}, /*write_size=*/7);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  auto back = Decompress(*compressed, /*read_size=*/13);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data);
}

TEST(ZstdStream, ConcatenatedFramesDecompressAsOneStream) {
  auto a = Compress("first;");
  auto b = Compress("second");
  ASSERT_TRUE(a.ok() && b.ok());
  auto back = Decompress(*a + *b);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, "first;second");
}

TEST(ZstdStream, CorruptInputIsDataLossNamingTheOffset) {
  std::string data = TestData(2 << 20);
  auto compressed = Compress(data);
  ASSERT_TRUE(compressed.ok());
  std::string bad = *compressed;
  for (size_t i = bad.size() / 2; i < bad.size() / 2 + 64; ++i) bad[i] = static_cast<char>(~bad[i]);
  auto back = Decompress(bad);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(back.status().message()), HasSubstr("compressed byte offset"));
}

TEST(ZstdStream, NotZstdIsDataLossAtOffsetZero) {
  auto back = Decompress("this is plainly not a zstd frame, it is a btrfs-stream impostor");
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(back.status().message()), HasSubstr("offset 0"));
}

TEST(ZstdStream, TruncatedInputIsDataLossNamingTheOffset) {
  std::string data = TestData(1 << 20);
  auto compressed = Compress(data);
  ASSERT_TRUE(compressed.ok());
  for (size_t cut : {compressed->size() - 1, compressed->size() / 2, size_t{5}}) {
    StringSource source(compressed->substr(0, cut));
    auto zsource = ZstdDecompressSource::Create(source);
    ASSERT_TRUE(zsource.ok());
    auto back = ReadAll(**zsource);
    ASSERT_FALSE(back.ok()) << "cut at " << cut;
    EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(back.status().message()),
                HasSubstr(absl::StrCat("truncated at compressed byte offset ", cut)));
    EXPECT_EQ((*zsource)->error(), back.status()) << "the error is kept";
    EXPECT_FALSE((*zsource)->Read(nullptr, 0).ok()) << "and returned again";
  }
}

TEST(ZstdStream, EmptyInputIsTruncated) {
  auto back = Decompress("");
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(back.status().message()), HasSubstr("no frame"));
}

TEST(ZstdStream, AnUnfinishedSinkLeavesATruncatedFrame) {
  StringSink sink;
  {
    auto zsink = ZstdCompressSink::Create(sink);
    ASSERT_TRUE(zsink.ok());
    ASSERT_TRUE((*zsink)->Write(RandomBytes(3 << 20)).ok());
  }  // destroyed without Finish: an interrupted transfer
  EXPECT_FALSE(sink.data().empty());
  auto back = Decompress(sink.data());
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), absl::StatusCode::kDataLoss);
}

class FailingSink : public ByteSink {
 public:
  absl::Status Write(std::string_view) override { return absl::UnavailableError("link down"); }
  absl::Status Close() override { return absl::OkStatus(); }
};

TEST(ZstdStream, DestinationErrorsAreReturnedAndSticky) {
  FailingSink dest;
  auto zsink = ZstdCompressSink::Create(dest);
  ASSERT_TRUE(zsink.ok());
  absl::Status st = (*zsink)->Write(RandomBytes(3 << 20));  // fills a 1 MiB output chunk
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*zsink)->Write("more").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*zsink)->Close().code(), absl::StatusCode::kUnavailable);
}

TEST(ZstdStream, WriteAfterFinishIsAnError) {
  StringSink sink;
  auto zsink = ZstdCompressSink::Create(sink);
  ASSERT_TRUE(zsink.ok());
  ASSERT_TRUE((*zsink)->Finish().ok());
  ASSERT_TRUE((*zsink)->Finish().ok());
  EXPECT_FALSE(sink.closed());
  EXPECT_EQ((*zsink)->Write("x").code(), absl::StatusCode::kFailedPrecondition);
}

TEST(StreamCompression, NamesParseBackAndOthersAreRefused) {
  for (StreamCompression c : {StreamCompression::kNone, StreamCompression::kZstd}) {
    auto parsed = ParseStreamCompression(StreamCompressionName(c));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, c);
  }
  for (std::string_view bad : {"", "ZSTD", "gzip", "zstd "}) {
    auto parsed = ParseStreamCompression(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace snapledger
