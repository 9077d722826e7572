#include "common/transport/receive_session.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

// A source handing out its data at most `step` bytes per Read, as a pipe may.
class DribbleSource : public ByteSource {
 public:
  DribbleSource(std::string data, size_t step) : data_(std::move(data)), step_(step) {}
  absl::StatusOr<size_t> Read(char* buf, size_t size) override {
    const size_t n = std::min({size, step_, data_.size() - at_});
    std::memcpy(buf, data_.data() + at_, n);
    at_ += n;
    return n;
  }

 private:
  std::string data_;
  size_t step_;
  size_t at_ = 0;
};

std::string Frame(std::string_view payload) {
  StringSink out;
  FrameSink frames(out);
  EXPECT_TRUE(frames.Write(payload).ok());
  return out.data();
}

absl::StatusOr<std::string> ReadAll(ByteSource& s) {
  std::string all;
  char buf[7];  // small reads cross frame and buffer boundaries
  while (true) {
    absl::StatusOr<size_t> n = s.Read(buf, sizeof buf);
    if (!n.ok()) return n.status();
    if (*n == 0) return all;
    all.append(buf, *n);
  }
}

TEST(FrameSink, FramesEachWriteAndEndsWithAZeroLength) {
  StringSink out;
  FrameSink frames(out);
  ASSERT_TRUE(frames.Write("abc").ok());
  ASSERT_TRUE(frames.Write("").ok());
  ASSERT_TRUE(frames.Write("de").ok());
  ASSERT_TRUE(frames.Close().ok());
  ASSERT_TRUE(frames.Close().ok());  // idempotent: one end marker
  EXPECT_EQ(out.data(), std::string("\0\0\0\3abc\0\0\0\2de\0\0\0\0", 17));
  EXPECT_FALSE(out.closed());  // the channel stays open for the next block
  EXPECT_FALSE(frames.Write("x").ok());
}

// Records every Write it is given, as one string each.
class WriteRecorder : public ByteSink {
 public:
  absl::Status Write(std::string_view data) override {
    writes.emplace_back(data);
    return absl::OkStatus();
  }
  absl::Status Close() override { return absl::OkStatus(); }
  std::vector<std::string> writes;
};

TEST(FrameSink, ASmallFrameIsOneWriteALargeOneTwo) {
  WriteRecorder out;
  FrameSink frames(out);
  ASSERT_TRUE(frames.Write("abc").ok());
  ASSERT_TRUE(frames.Write(std::string(1 << 20, 'y')).ok());
  ASSERT_EQ(out.writes.size(), 3u);
  EXPECT_EQ(out.writes[0], std::string("\0\0\0\3abc", 7)) << "header and payload together";
  EXPECT_EQ(out.writes[1], std::string("\0\x10\0\0", 4));
  EXPECT_EQ(out.writes[2].size(), 1u << 20);
}

TEST(SessionReader, ReadsRequestsAndTheirStreamsInTurn) {
  std::string first(100'000, 'a');
  for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<char>('a' + i % 26);
  std::string input = absl::StrCat("--block one\n", Frame(first), Frame("tail"),
                                   std::string(4, '\0'), "--block two\n", std::string(4, '\0'));
  for (size_t step : {size_t{1}, size_t{5}, size_t{4096}, input.size()}) {
    SCOPED_TRACE(absl::StrCat("reads of up to ", step, " bytes"));
    DribbleSource in(input, step);
    SessionReader reader(in, "stdin");
    absl::StatusOr<std::optional<std::string>> request = reader.ReadRequest();
    ASSERT_TRUE(request.ok()) << request.status();
    ASSERT_TRUE(request->has_value());
    EXPECT_EQ(**request, "--block one");
    EXPECT_FALSE(reader.StreamEnded());
    absl::StatusOr<std::string> stream = ReadAll(reader.Stream());
    ASSERT_TRUE(stream.ok()) << stream.status();
    EXPECT_EQ(*stream, first + "tail");
    EXPECT_TRUE(reader.StreamEnded());
    request = reader.ReadRequest();
    ASSERT_TRUE(request.ok() && request->has_value()) << request.status();
    EXPECT_EQ(**request, "--block two");
    stream = ReadAll(reader.Stream());
    ASSERT_TRUE(stream.ok()) << stream.status();
    EXPECT_EQ(*stream, "");
    request = reader.ReadRequest();
    ASSERT_TRUE(request.ok()) << request.status();
    EXPECT_FALSE(request->has_value());  // end of input between blocks: the session is over
  }
}

TEST(SessionReader, ARequestMustFollowAStreamReadToItsEnd) {
  StringSource in(absl::StrCat("--block one\n", Frame("abc"), std::string(4, '\0')));
  SessionReader reader(in, "stdin");
  ASSERT_TRUE(reader.ReadRequest().ok());
  char c;
  ASSERT_TRUE(reader.Stream().Read(&c, 1).ok());
  absl::StatusOr<std::optional<std::string>> next = reader.ReadRequest();
  EXPECT_EQ(next.status().code(), absl::StatusCode::kFailedPrecondition) << next.status();
}

TEST(SessionReader, RefusesALongOrCutRequestLine) {
  StringSource long_line(std::string(kMaxRequestLine + 1, 'x') + "\n");
  SessionReader a(long_line, "stdin");
  absl::StatusOr<std::optional<std::string>> r = a.ReadRequest();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("longer than 4096 bytes"), std::string::npos) << r.status();

  StringSource cut("--block one");
  SessionReader b(cut, "stdin");
  r = b.ReadRequest();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("input ends at byte 11 inside a request line"),
            std::string::npos)
      << r.status();
}

TEST(SessionReader, NamesWhereAStreamIsCutOrMalformed) {
  struct Case {
    std::string stream;
    std::string error;
  };
  const std::string head = "--block b\n";  // 10 bytes
  for (const Case& c : std::vector<Case>{
           {Frame("abcdef").substr(0, 7), "input ends at byte 17 inside a frame (3 bytes missing)"},
           {Frame("ab").substr(0, 2), "input ends at byte 12 inside a frame header"},
           {Frame("ab"), "input ends at byte 16 inside a frame header"},
           {std::string("\x01\0\0\x01", 4), "the frame at byte 10 is 16777217 bytes long"},
       }) {
    StringSource in(head + c.stream);
    SessionReader reader(in, "stdin");
    ASSERT_TRUE(reader.ReadRequest().ok());
    absl::StatusOr<std::string> all = ReadAll(reader.Stream());
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(all.status().message().find("stdin: " + c.error), std::string::npos) << all.status();
    EXPECT_FALSE(reader.StreamEnded());
  }
}

TEST(FrameSink, SplitsWritesLargerThanAFrame) {
  std::string big(kMaxFrame + 10, 'z');
  StringSink out;
  FrameSink frames(out);
  ASSERT_TRUE(frames.Write(big).ok());
  ASSERT_TRUE(frames.Close().ok());
  EXPECT_EQ(out.data().size(), big.size() + 3 * 4);
  StringSource in("--block b\n" + out.data());
  SessionReader reader(in, "stdin");
  ASSERT_TRUE(reader.ReadRequest().ok());
  absl::StatusOr<std::string> all = ReadAll(reader.Stream());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, big);
}

}  // namespace
}  // namespace snapledger
