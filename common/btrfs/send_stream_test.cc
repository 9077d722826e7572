#include "common/btrfs/send_stream.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

// Two real streams, written by `btrfs send` (btrfs-progs 6.2, kernel 6.18) of a subvolume
// holding one file "f": block-000000000001-0123456789ab in full, then
// block-000000000002-0123456789ab as a delta against it (a line appended to "f").
std::string Unhex(std::string_view hex) {
  return absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
}

const std::string& FullStream() {
  static const std::string* stream =
      new std::string(Unhex("62747266732d73747265616d00010000004300000001009ff02ede0f001f"
                            "00626c6f636b2d3030303030303030303030312d30313233343536373839"
                            "6162010010009007d715645d874d965193c55cb2c3d00200080007000000"
                            "000000001c000000130002372d8c0f000000060008000000000000000000"
                            "070008000000000000000000100000001200595575350f00000005000800"
                            "ed010000000000001800000003006c6edb030f0008006f3235372d372d30"
                            "030008000101000000000000110000000900e66cf0260f0008006f323537"
                            "2d372d3010000100661b0000000f0094e43c430f00010066120008000000"
                            "0000000000001300060068656c6c6f0a1d00000013009f4611d10f000100"
                            "660600080000000000000000000700080000000000000000001100000012"
                            "00b7cb58630f0001006605000800a401000000000000350000001400dc46"
                            "fe1c0f000100660b000c00b5f7056b0000000013c699240a000c00b5f705"
                            "6b0000000013c6992409000c00b5f7056b0000000013c699243400000014"
                            "00c18b91c50f0000000b000c00b5f7056b0000000013bd5c240a000c00b5"
                            "f7056b0000000013c6992409000c00b5f7056b0000000013c69924000000"
                            "001500506cc99d"));
  return *stream;
}

const std::string& DeltaStream() {
  static const std::string* stream =
      new std::string(Unhex("62747266732d73747265616d0001000000630000000200079b9d270f001f"
                            "00626c6f636b2d3030303030303030303030322d30313233343536373839"
                            "6162010010006d8be19eac5c7b4298f0d139694b167b0200080008000000"
                            "00000000140010009007d715645d874d965193c55cb2c3d0150008000700"
                            "000000000000200000000f0077b9035f0f00010066120008000000000000"
                            "00000013000b0068656c6c6f0a6d6f72650a3500000014005fd6574e0f00"
                            "0100660b000c00b5f7056b0000000013c699240a000c00b5f7056b000000"
                            "001305452609000c00b5f7056b0000000013054526000000001500506cc9"
                            "9d"));
  return *stream;
}

constexpr std::string_view kFullName = "block-000000000001-0123456789ab";
constexpr std::string_view kDeltaName = "block-000000000002-0123456789ab";

void PutLe32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

std::string Le16(uint16_t v) { return {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)}; }

std::string Attribute(uint16_t type, std::string_view value) {
  return Le16(type) + Le16(static_cast<uint16_t>(value.size())) + std::string(value);
}

// A command with a correct length and crc.
std::string Command(uint16_t command, std::string_view payload) {
  std::string out(kSendCommandHeaderSize, '\0');
  PutLe32(&out, 0, static_cast<uint32_t>(payload.size()));
  out[4] = static_cast<char>(command & 0xff);
  out[5] = static_cast<char>(command >> 8);
  out.append(payload);
  PutLe32(&out, 6, SendStreamCrc32c(out));
  return out;
}

std::string Header(uint32_t version = 1) {
  std::string out(kSendStreamMagic);
  out.append(4, '\0');
  PutLe32(&out, kSendStreamMagic.size(), version);
  return out;
}

// Every command of `stream`, split by its lengths.
std::vector<std::string_view> Commands(std::string_view stream) {
  std::vector<std::string_view> out;
  size_t pos = kSendStreamHeaderSize;
  while (pos + kSendCommandHeaderSize <= stream.size()) {
    size_t size = kSendCommandHeaderSize + DecodeSendCommandHeader(stream.substr(pos)).length;
    out.push_back(stream.substr(pos, size));
    pos += size;
  }
  return out;
}

absl::Status ParseError(std::string_view stream) { return ParseSendStreamStart(stream).status(); }

TEST(SendStreamCrc32c, IsWhatBtrfsSendWritesSeedZeroWithoutFinalInversion) {
  for (const std::string* stream : {&FullStream(), &DeltaStream()}) {
    std::vector<std::string_view> commands = Commands(*stream);
    ASSERT_GE(commands.size(), 3u);
    for (std::string_view command : commands) {
      std::string zeroed(command);
      PutLe32(&zeroed, 6, 0);
      EXPECT_EQ(SendStreamCrc32c(zeroed), DecodeSendCommandHeader(command).crc);
    }
    EXPECT_EQ(DecodeSendCommandHeader(commands.back()).command, kSendCommandEnd);
  }
  // The standard crc32c check value of "123456789" is 0xe3069283; without the seed and final
  // inversion (0xffffffff) it is 0x58e3fa20.
  EXPECT_EQ(SendStreamCrc32c("123456789"), 0x58e3fa20u);
}

TEST(ParseSendStreamStart, NamesTheSubvolumeOfAFullAndADeltaStream) {
  auto full = ParseSendStreamStart(FullStream());
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->version, 1u);
  EXPECT_EQ(full->command, kSendCommandSubvol);
  EXPECT_EQ(full->subvolume, kFullName);
  EXPECT_EQ(full->size, kSendStreamHeaderSize + kSendCommandHeaderSize + 0x43);

  auto delta = ParseSendStreamStart(DeltaStream());
  ASSERT_TRUE(delta.ok()) << delta.status();
  EXPECT_EQ(delta->command, kSendCommandSnapshot);
  EXPECT_EQ(delta->subvolume, kDeltaName);
  EXPECT_EQ(delta->size, kSendStreamHeaderSize + kSendCommandHeaderSize + 0x63);
}

TEST(RenameSendStreamSubvolume, RewritesPathLengthAndCrcAndKeepsTheOtherAttributes) {
  for (const std::string* stream : {&FullStream(), &DeltaStream()}) {
    auto start = ParseSendStreamStart(*stream);
    ASSERT_TRUE(start.ok());
    auto renamed = RenameSendStreamSubvolume(*stream, ".incoming-x");
    ASSERT_TRUE(renamed.ok()) << renamed.status();
    auto parsed = ParseSendStreamStart(*renamed);  // checks length and crc
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->subvolume, ".incoming-x");
    EXPECT_EQ(parsed->command, start->command);
    EXPECT_EQ(parsed->size, renamed->size());
    EXPECT_EQ(renamed->size(), start->size - start->subvolume.size() + 11);
    // PATH is the first attribute btrfs sends; everything after its value is kept as it was.
    const size_t path_end_old =
        kSendStreamHeaderSize + kSendCommandHeaderSize + 4 + start->subvolume.size();
    const size_t path_end_new = kSendStreamHeaderSize + kSendCommandHeaderSize + 4 + 11;
    EXPECT_EQ(renamed->substr(path_end_new),
              stream->substr(path_end_old, start->size - path_end_old));
    // Renaming to the sent name reproduces the bytes btrfs wrote.
    auto same = RenameSendStreamSubvolume(*stream, start->subvolume);
    ASSERT_TRUE(same.ok());
    EXPECT_EQ(*same, stream->substr(0, start->size));
  }
}

TEST(RenameSendStreamSubvolume, RefusesNamesThatAreNotOnePathComponent) {
  for (std::string bad : {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
                          std::string("/x"), std::string("x\0y", 3), std::string(256, 'a')}) {
    auto renamed = RenameSendStreamSubvolume(FullStream(), bad);
    EXPECT_TRUE(absl::IsInvalidArgument(renamed.status())) << absl::CHexEscape(bad);
  }
  EXPECT_TRUE(ValidateSubvolumeName(std::string(255, 'a')).ok());
  EXPECT_TRUE(ValidateSubvolumeName(".incoming-block-000000000001-0123456789ab").ok());
}

TEST(ParseSendStreamStart, EachMalformedStartIsDataLossSayingWhatIsWrong) {
  const std::string& good = FullStream();
  const std::string path = Attribute(kSendAttributePath, "b");
  const std::string uuid = Attribute(1, std::string(16, 'u'));
  struct Case {
    std::string name;
    std::string stream;
    std::string message;
  };
  std::string bad_magic = good;
  bad_magic[0] = 'B';
  std::string bad_version = good;
  PutLe32(&bad_version, 13, 4);
  std::string zero_version = good;
  PutLe32(&zero_version, 13, 0);
  std::string flipped = good;
  flipped[kSendStreamHeaderSize + kSendCommandHeaderSize + 6] ^= 1;  // inside the PATH value
  std::string huge = good;
  PutLe32(&huge, kSendStreamHeaderSize, 1 << 20);
  const std::vector<Case> cases = {
      {"empty", "", "empty send stream"},
      {"short header", good.substr(0, 10), "truncated in its header"},
      {"bad magic", bad_magic, "magic"},
      {"version 4", bad_version, "version 4 is not supported"},
      {"version 0", zero_version, "version 0 is not supported"},
      {"no first command", good.substr(0, kSendStreamHeaderSize), "first command's header"},
      {"cut first command", good.substr(0, 40), "truncated in its first command"},
      {"crc mismatch", flipped, "crc mismatch"},
      {"huge first command", huge, "claims 1048576 bytes"},
      {"mkfile first", Header() + Command(3, path), "first command is 3"},
      {"end first", Header() + Command(kSendCommandEnd, ""), "first command is 21"},
      {"no path", Header() + Command(kSendCommandSubvol, uuid), "no PATH attribute"},
      {"two paths", Header() + Command(kSendCommandSubvol, path + uuid + path),
       "more than one PATH"},
      {"attribute overruns", Header() + Command(kSendCommandSubvol, path + uuid.substr(0, 10)),
       "claims 16 bytes, 6 remain"},
      {"cut attribute header", Header() + Command(kSendCommandSubvol, path + "\x01"), "is cut off"},
  };
  for (const Case& c : cases) {
    absl::Status st = ParseError(c.stream);
    EXPECT_TRUE(absl::IsDataLoss(st)) << c.name << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.message)) << c.name;
    EXPECT_TRUE(absl::IsDataLoss(RenameSendStreamSubvolume(c.stream, "x").status())) << c.name;
  }
  EXPECT_TRUE(ParseSendStreamStart(Header(2) + Command(kSendCommandSubvol, path + uuid)).ok());
}

TEST(ReadSendStreamStart, ReadsNothingPastTheFirstCommand) {
  StringSource source(DeltaStream());
  auto start = ReadSendStreamStart(source);
  ASSERT_TRUE(start.ok()) << start.status();
  EXPECT_EQ(*start, DeltaStream().substr(0, ParseSendStreamStart(DeltaStream())->size));
  char next[kSendCommandHeaderSize];
  ASSERT_EQ(*source.Read(next, sizeof next), sizeof next);
  EXPECT_EQ(std::string(next, sizeof next), DeltaStream().substr(start->size(), sizeof next));

  StringSource empty("");
  EXPECT_THAT(std::string(ReadSendStreamStart(empty).status().message()),
              HasSubstr("empty send stream"));
}

// Forwards `stream` (its start renamed to `name` when given) from `source` into a pipe and
// returns what came out, or the error.
struct Forwarded {
  absl::Status status;
  std::string out;
  bool spliced = false;
};

// Records what it is shown.
struct RecordingObserver : SendCommandObserver {
  std::vector<std::pair<uint16_t, std::string>> seen;
  uint32_t version = 0;
  void OnCommand(uint16_t command, std::string_view payload, uint32_t v) override {
    seen.emplace_back(command, std::string(payload));
    version = v;
  }
};

Forwarded ForwardThroughPipe(ByteSource& source, std::optional<std::string> name = {},
                             SendCommandObserver* observer = nullptr) {
  Forwarded f;
  auto start = ReadSendStreamStart(source);
  if (!start.ok()) {
    f.status = start.status();
    return f;
  }
  if (name) start = RenameSendStreamSubvolume(*start, *name);
  auto pipe = MakePipe();
  EXPECT_TRUE(pipe.ok());
  SendStreamForwarder forwarder(source, pipe->write.get(), observer);
  f.status = forwarder.Forward(*start);
  f.spliced = forwarder.spliced();
  EXPECT_FALSE(forwarder.pipe_failed());
  pipe->write.Reset();
  char buf[4096];
  for (ssize_t n; (n = ::read(pipe->read.get(), buf, sizeof buf)) > 0;) f.out.append(buf, n);
  return f;
}

TEST(SendStreamForwarder, CopiesAStreamFromASourceWithoutAnFd) {
  StringSource source(FullStream());
  Forwarded f = ForwardThroughPipe(source);
  ASSERT_TRUE(f.status.ok()) << f.status;
  EXPECT_EQ(f.out, FullStream());
  EXPECT_FALSE(f.spliced);
}

TEST(SendStreamForwarder, SplicesFromAnFdAndOnlyTheStartIsRenamed) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("stream"), DeltaStream()).ok());
  auto fd = OpenFile(dir.Sub("stream"), O_RDONLY);
  ASSERT_TRUE(fd.ok());
  FdSource source(std::move(*fd));
  Forwarded f = ForwardThroughPipe(source, ".incoming-x");
  ASSERT_TRUE(f.status.ok()) << f.status;
  EXPECT_TRUE(f.spliced);
  auto renamed = RenameSendStreamSubvolume(DeltaStream(), ".incoming-x");
  const size_t start = ParseSendStreamStart(DeltaStream())->size;
  EXPECT_EQ(f.out, *renamed + DeltaStream().substr(start));
}

// Hands out at most `chunk` bytes per Read, like a pipe from sshd.
class TrickleSource : public ByteSource {
 public:
  TrickleSource(std::string data, size_t chunk) : inner_(std::move(data)), chunk_(chunk) {}
  absl::StatusOr<size_t> Read(char* buf, size_t size) override {
    return inner_.Read(buf, std::min(size, chunk_));
  }

 private:
  StringSource inner_;
  size_t chunk_;
};

TEST(SendStreamForwarder, AnObservedStreamOfManyMegabytesInSmallReadsArrivesWhole) {
  // FullStream's commands without its END, then ~9 MB of writes of varied sizes, then END:
  // commands straddle reads everywhere, and the buffer is reused many times over.
  std::vector<std::string_view> commands = Commands(FullStream());
  std::string stream = FullStream().substr(0, FullStream().size() - commands.back().size());
  size_t writes = 0;
  for (size_t i = 0; stream.size() < (9u << 20); ++i, ++writes) {
    std::string data((i * 7919) % 60000 + 1, static_cast<char>('a' + i % 26));
    stream += Command(kSendCommandWrite,
                      Attribute(kSendAttributePath, "f") + Attribute(kSendAttributeData, data));
  }
  stream += commands.back();
  TrickleSource source(stream, 7001);
  auto start = ReadSendStreamStart(source);
  ASSERT_TRUE(start.ok()) << start.status();
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  std::string out;
  std::thread reader([&] {
    char buf[65536];
    for (ssize_t n; (n = ::read(pipe->read.get(), buf, sizeof buf)) > 0;) out.append(buf, n);
  });
  RecordingObserver observer;
  {
    SendStreamForwarder forwarder(source, pipe->write.get(), &observer);
    absl::Status st = forwarder.Forward(*start);
    EXPECT_TRUE(st.ok()) << st;
  }
  pipe->write.Reset();
  reader.join();
  EXPECT_TRUE(out == stream) << "forwarded " << out.size() << " of " << stream.size() << " bytes";
  EXPECT_EQ(observer.seen.size(), commands.size() - 1 + writes);
  EXPECT_EQ(observer.seen.back().first, kSendCommandEnd);
}

TEST(SendStreamForwarder, ShowsEveryCommandToItsObserverAndPassesThemOnUnchanged) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("stream"), FullStream()).ok());
  auto fd = OpenFile(dir.Sub("stream"), O_RDONLY);
  ASSERT_TRUE(fd.ok());
  FdSource source(std::move(*fd));
  RecordingObserver observer;
  Forwarded f = ForwardThroughPipe(source, ".incoming-x", &observer);
  ASSERT_TRUE(f.status.ok()) << f.status;
  EXPECT_FALSE(f.spliced) << "an observer must see the payloads";
  const size_t start = ParseSendStreamStart(FullStream())->size;
  EXPECT_EQ(f.out,
            *RenameSendStreamSubvolume(FullStream(), ".incoming-x") + FullStream().substr(start));
  std::vector<std::string_view> commands = Commands(FullStream());
  ASSERT_EQ(observer.seen.size(), commands.size() - 1);  // all but the start
  for (size_t i = 1; i < commands.size(); ++i) {
    EXPECT_EQ(observer.seen[i - 1].first, DecodeSendCommandHeader(commands[i]).command);
    EXPECT_EQ(observer.seen[i - 1].second, commands[i].substr(kSendCommandHeaderSize));
  }
  EXPECT_EQ(observer.seen.back().first, kSendCommandEnd);
  EXPECT_EQ(observer.version, 1u);
  // The file's one write: "hello\n" at offset 0 of "f".
  bool wrote = false;
  for (const auto& [command, payload] : observer.seen) {
    if (command != kSendCommandWrite) continue;
    auto attributes = ParseSendAttributes(payload, 1);
    ASSERT_TRUE(attributes.ok()) << attributes.status();
    for (const SendAttribute& a : *attributes) {
      if (a.type == kSendAttributePath) EXPECT_EQ(a.value, "f");
      if (a.type == kSendAttributeData) EXPECT_EQ(a.value, "hello\n");
    }
    wrote = true;
  }
  EXPECT_TRUE(wrote);
}

TEST(ParseSendAttributes, AnAttributeThatOverrunsItsCommandIsDataLoss) {
  std::string payload = Attribute(kSendAttributePath, "abc");
  auto ok = ParseSendAttributes(payload, 1);
  ASSERT_TRUE(ok.ok());
  ASSERT_EQ(ok->size(), 1u);
  EXPECT_EQ((*ok)[0].value, "abc");
  auto cut = ParseSendAttributes(payload.substr(0, payload.size() - 1), 1);
  EXPECT_TRUE(absl::IsDataLoss(cut.status()));
  EXPECT_THAT(std::string(cut.status().message()), HasSubstr("claims 3 bytes, 2 remain"));
  // From version 2 DATA has no length: it runs to the end of the command.
  auto v2 = ParseSendAttributes(Le16(kSendAttributeData) + "xyz", 2);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ((*v2)[0].value, "xyz");
}

TEST(SendStreamForwarder, RefusesWhatWouldCreateASecondSubvolume) {
  for (bool observed : {false, true}) {
    SCOPED_TRACE(observed ? "observed" : "not observed");
    RecordingObserver observer;
    SendCommandObserver* o = observed ? &observer : nullptr;
    const std::string& full = FullStream();
    const size_t start = ParseSendStreamStart(full)->size;
    const std::string second = Command(kSendCommandSubvol, Attribute(kSendAttributePath, "x"));
    StringSource inner(full.substr(0, start) + second + full.substr(start));
    Forwarded f = ForwardThroughPipe(inner, {}, o);
    EXPECT_TRUE(absl::IsDataLoss(f.status));
    EXPECT_THAT(std::string(f.status.message()),
                HasSubstr("second subvolume (command 2 is SUBVOL)"));
    EXPECT_EQ(f.out, full.substr(0, start)) << "the SUBVOL command was passed on";

    StringSource two(full + DeltaStream());
    f = ForwardThroughPipe(two, {}, o);
    EXPECT_TRUE(absl::IsDataLoss(f.status));
    EXPECT_THAT(std::string(f.status.message()), HasSubstr("continues after its END command"));
  }
}

TEST(SendStreamForwarder, ATruncatedStreamIsDataLoss) {
  for (bool observed : {false, true}) {
    SCOPED_TRACE(observed ? "observed" : "not observed");
    RecordingObserver observer;
    SendCommandObserver* o = observed ? &observer : nullptr;
    const std::string& full = FullStream();
    std::vector<std::string_view> commands = Commands(full);
    const size_t before_end = full.size() - commands.back().size();
    StringSource no_end(full.substr(0, before_end));
    Forwarded f = ForwardThroughPipe(no_end, {}, o);
    EXPECT_TRUE(absl::IsDataLoss(f.status));
    EXPECT_THAT(std::string(f.status.message()), HasSubstr("without an END command"));

    StringSource mid_command(full.substr(0, before_end - 5));
    f = ForwardThroughPipe(mid_command, {}, o);
    EXPECT_TRUE(absl::IsDataLoss(f.status));
    EXPECT_THAT(std::string(f.status.message()), HasSubstr("truncated in command"));

    StringSource mid_header(full.substr(0, before_end + 4));
    f = ForwardThroughPipe(mid_header, {}, o);
    EXPECT_THAT(std::string(f.status.message()), HasSubstr("truncated in the header of command"));
  }
}

TEST(SendStreamForwarder, AReaderThatIsGoneIsAPipeFailureNotASignal) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("stream"), FullStream()).ok());
  auto fd = OpenFile(dir.Sub("stream"), O_RDONLY);
  ASSERT_TRUE(fd.ok());
  FdSource source(std::move(*fd));
  auto start = ReadSendStreamStart(source);
  ASSERT_TRUE(start.ok());
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  pipe->read.Reset();
  SendStreamForwarder forwarder(source, pipe->write.get());
  absl::Status st = forwarder.Forward(*start);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(forwarder.pipe_failed());
}

}  // namespace
}  // namespace snapledger
