#include "replica/stream_verifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/ledger/event_format.h"
#include "common/ledger/sha256.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

std::string Le16(uint16_t v) { return {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)}; }

std::string Le64(uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

std::string Attribute(uint16_t type, std::string_view value) {
  return Le16(type) + Le16(static_cast<uint16_t>(value.size())) + std::string(value);
}

std::string Path(std::string_view path) { return Attribute(kSendAttributePath, path); }

std::string WritePayload(std::string_view path, uint64_t offset, std::string_view data) {
  return Path(path) + Attribute(kSendAttributeFileOffset, Le64(offset)) +
         Attribute(kSendAttributeData, data);
}

std::string RenamePayload(std::string_view from, std::string_view to) {
  return Path(from) + Attribute(kSendAttributePathTo, to);
}

// A send stream's commands, as the observer sees them.
struct Command {
  uint16_t type;
  std::string payload;
};

// How `btrfs send` carries `log` from byte `from`: writes of 48 KiB starting at the 4 KiB
// block holding `from` (a delta rewrites the parent's last, partly filled block).
std::vector<Command> Writes(std::string_view log, uint64_t from) {
  std::vector<Command> out;
  for (uint64_t at = from / 4096 * 4096; at < log.size(); at += 49152)
    out.push_back({kSendCommandWrite, WritePayload(kEventsFile, at, log.substr(at, 49152))});
  return out;
}

// A full send of a ledger: the directory, the file created under a temporary name and
// renamed, its data, its metadata, the head file.
std::vector<Command> FullSend(std::string_view log) {
  std::vector<Command> out = {{kSendCommandChown, Path("")},
                              {4 /* MKDIR */, Path("o257-7-0")},
                              {kSendCommandRename, RenamePayload("o257-7-0", "metadata")},
                              {kSendCommandMkfile, Path("o258-7-0")},
                              {kSendCommandRename, RenamePayload("o258-7-0", kEventsFile)}};
  for (Command& c : Writes(log, 0)) out.push_back(std::move(c));
  out.push_back({kSendCommandChmod, Path(kEventsFile)});
  out.push_back({kSendCommandUtimes, Path(kEventsFile)});
  out.push_back({kSendCommandMkfile, Path("o259-7-0")});
  out.push_back({kSendCommandRename, RenamePayload("o259-7-0", "metadata/current_hash")});
  out.push_back({kSendCommandWrite, WritePayload("metadata/current_hash", 0, "{...}")});
  out.push_back({kSendCommandEnd, ""});
  return out;
}

// A valid chain of `count` events from seq 1; `heads[i]` is the head after i events and
// `ends[i]` the log's size then.
struct Chain {
  std::string log;
  std::vector<ChainHead> heads;
  std::vector<uint64_t> ends;
  HeadRecord At(size_t events) const {
    HeadRecord r;
    r.head = heads[events];
    r.log_bytes = ends[events];
    return r;
  }
};

Chain MakeChain(uint64_t count) {
  Chain c;
  Sha256 hasher;
  c.heads.push_back(ChainHead{});
  c.ends.push_back(0);
  std::string prev(kGenesisHash);
  for (uint64_t seq = 1; seq <= count; ++seq) {
    const int64_t ts = 1'700'000'000'000'000 + static_cast<int64_t>(seq);
    prev = AppendEventLine(seq, ts, prev,
                           absl::StrCat("{\"host\":\"h", seq % 7, "\",\"n\":", seq, "}"), hasher,
                           &c.log);
    c.heads.push_back(ChainHead{seq, prev, ts});
    c.ends.push_back(c.log.size());
  }
  return c;
}

StreamVerification Verify(const HeadRecord& from, const std::vector<Command>& commands,
                          std::function<void(uint64_t)> on_progress = nullptr) {
  StreamChainVerifier verifier(from, std::move(on_progress));
  for (const Command& c : commands) verifier.OnCommand(c.type, c.payload, 1);
  return verifier.Finish();
}

TEST(EventsWriteFollower, FollowsAFullSendAndIgnoresOtherFiles) {
  std::string log(100'000, 'x');
  EventsWriteFollower follower(0);
  std::string appended;
  for (const Command& c : FullSend(log)) appended += follower.Follow(c.type, c.payload, 1);
  EXPECT_TRUE(follower.followed()) << follower.why_not();
  EXPECT_EQ(appended, log);
  EXPECT_EQ(follower.end(), log.size());
}

TEST(EventsWriteFollower, ADeltaRewritingTheParentsLastBlockYieldsOnlyTheNewBytes) {
  std::string log(200'000, 'y');
  const uint64_t start = 123'456;
  EventsWriteFollower follower(start);
  std::string appended;
  for (const Command& c : Writes(log, start)) appended += follower.Follow(c.type, c.payload, 1);
  EXPECT_TRUE(follower.followed()) << follower.why_not();
  EXPECT_EQ(appended, log.substr(start));
  // Rewrites wholly before the start are the parent's bytes: compared on disk, not followed.
  EXPECT_TRUE(follower.Follow(kSendCommandWrite, WritePayload(kEventsFile, 0, "zz"), 1).empty());
  EXPECT_TRUE(follower.followed());
}

TEST(EventsWriteFollower, AnythingButAnAppendToTheLogStopsFollowingSayingWhichCommand) {
  struct Case {
    const char* what;
    std::vector<Command> commands;
    const char* why;
  };
  const std::string data(1000, 'd');
  std::vector<Case> cases = {
      {"a gap",
       {{kSendCommandWrite, WritePayload(kEventsFile, 0, data)},
        {kSendCommandWrite, WritePayload(kEventsFile, 2000, data)}},
       "command 2: a write to events.jsonl at bytes 2000-3000, not an append at 1000"},
      {"a rewrite of followed bytes",
       {{kSendCommandWrite, WritePayload(kEventsFile, 0, data)},
        {kSendCommandWrite, WritePayload(kEventsFile, 500, data)}},
       "not an append at 1000"},
      {"a truncate",
       {{kSendCommandTruncate, Path(kEventsFile) + Attribute(4, Le64(10))}},
       "command 1: command type 17 changes events.jsonl"},
      {"a clone into it", {{kSendCommandClone, WritePayload(kEventsFile, 0, "")}}, "type 16"},
      {"renamed away", {{kSendCommandRename, RenamePayload(kEventsFile, "old")}}, "type 9"},
      {"unlinked", {{11 /* UNLINK */, Path(kEventsFile)}}, "type 11"},
      {"a written file renamed onto it",
       {{kSendCommandMkfile, Path("o300-9-0")},
        {kSendCommandWrite, WritePayload("o300-9-0", 0, data)},
        {kSendCommandRename, RenamePayload("o300-9-0", kEventsFile)}},
       "command 3: events.jsonl replaced by o300-9-0"},
      {"a directory renamed onto it",
       {{kSendCommandMkdir, Path("o300-9-0")},
        {kSendCommandRename, RenamePayload("o300-9-0", kEventsFile)}},
       "command 2: events.jsonl replaced by o300-9-0"},
      {"a temporary name it did not create",
       {{kSendCommandRename, RenamePayload("o300-9-0", kEventsFile)}},
       "command 1: command type 9 names \"o300-9-0\", not a name of the ledger's"},
      {"a hard link to it",
       {{10 /* LINK */, Path("metadata") + Attribute(17, kEventsFile)}},
       "type 10 changes events.jsonl"},
      {"a temporary hard link",
       {{kSendCommandMkfile, Path("o300-9-0")},
        {10 /* LINK */, Path("o301-9-0") + Attribute(17, "o300-9-0")}},
       "command 2: command type 10 names \"o301-9-0\""},
      {"a symlink",
       {{8 /* SYMLINK */, Path(kHeadFile) + Attribute(17, "../events.jsonl")}},
       "names \"../events.jsonl\""},
      {"another spelling of its name",
       {{kSendCommandWrite, WritePayload(kEventsFile, 0, data)},
        {kSendCommandWrite, WritePayload("./events.jsonl", 0, data)}},
       "command 2: command type 15 names \"./events.jsonl\", not a name of the ledger's"},
      {"a path through a directory",
       {{kSendCommandWrite, WritePayload("metadata/../events.jsonl", 0, data)}},
       "names \"metadata/../events.jsonl\""},
      {"a command it does not know",
       {{26 /* ENABLE_VERITY */, Path(kHeadFile)}},
       "command type 26 is not followed"},
      {"a fallocate of it",
       {{kSendCommandFallocate, WritePayload(kEventsFile, 0, "")}},
       "type 23 changes events.jsonl"},
      {"a write without an offset",
       {{kSendCommandWrite, Path(kEventsFile) + Attribute(kSendAttributeData, data)}},
       "without a file offset"},
      {"a malformed command", {{kSendCommandWrite, Path(kEventsFile).substr(0, 5)}}, "command 1:"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    EventsWriteFollower follower(0);
    for (const Command& command : c.commands) follower.Follow(command.type, command.payload, 1);
    EXPECT_FALSE(follower.followed());
    EXPECT_THAT(follower.why_not(), HasSubstr(c.why));
    // Once stopped, nothing more is followed.
    EXPECT_TRUE(
        follower.Follow(kSendCommandWrite, WritePayload(kEventsFile, follower.end(), "x"), 1)
            .empty());
  }
}

TEST(StreamChainVerifier, VerifiesAFullSendAsItArrives) {
  Chain chain = MakeChain(50'000);  // several MB: more than one queued run of lines
  ASSERT_GT(chain.log.size(), 8u << 20);
  std::atomic<uint64_t> progress{0};
  StreamVerification v = Verify(HeadRecord{}, FullSend(chain.log), [&](uint64_t at) {
    EXPECT_GT(at, progress.load());
    progress = at;
  });
  ASSERT_TRUE(v.followed) << v.why_not;
  ASSERT_TRUE(v.report.ok()) << v.report.failure->ToString();
  EXPECT_EQ(v.report.head, chain.heads.back());
  EXPECT_EQ(v.report.events_verified, 50'000u);
  EXPECT_EQ(v.report.end_offset, chain.log.size());
  EXPECT_EQ(progress.load(), chain.log.size());
}

TEST(StreamChainVerifier, VerifiesADeltaFromTheTrustedHead) {
  Chain chain = MakeChain(2'000);
  const HeadRecord from = chain.At(1'234);
  StreamVerification v = Verify(from, Writes(chain.log, from.log_bytes));
  ASSERT_TRUE(v.followed) << v.why_not;
  ASSERT_TRUE(v.report.ok()) << v.report.failure->ToString();
  EXPECT_EQ(v.report.head, chain.heads.back());
  EXPECT_EQ(v.report.events_verified, 766u);
  EXPECT_EQ(v.report.end_offset, chain.log.size());
}

TEST(StreamChainVerifier, ATamperedEventIsReportedWithItsLineAndSeq) {
  Chain chain = MakeChain(20'000);
  const HeadRecord from = chain.At(100);
  std::string tampered = chain.log;
  const size_t at = tampered.find("\"n\":15000}");
  ASSERT_NE(at, std::string::npos);
  tampered[at + 4] = '6';
  StreamVerification v = Verify(from, Writes(tampered, from.log_bytes));
  ASSERT_TRUE(v.followed);
  ASSERT_FALSE(v.report.ok());
  EXPECT_EQ(v.report.failure->line_number, 15'000u);
  EXPECT_EQ(v.report.failure->seq, 15'000u);
}

TEST(StreamChainVerifier, AnUnfinishedLastLineIsLeftToTheCheckOnDisk) {
  Chain chain = MakeChain(50);
  std::string cut = chain.log.substr(0, chain.log.size() - 10);
  StreamVerification v = Verify(HeadRecord{}, Writes(cut, 0));
  ASSERT_TRUE(v.followed);
  ASSERT_TRUE(v.report.ok());
  EXPECT_EQ(v.report.head, chain.heads[49]);
  EXPECT_EQ(v.report.end_offset, chain.ends[49]);
}

TEST(StreamChainVerifier, AStreamNotFollowedSaysWhy) {
  Chain chain = MakeChain(50);
  std::vector<Command> commands = Writes(chain.log, 0);
  commands.push_back({kSendCommandTruncate, Path(kEventsFile) + Attribute(4, Le64(10))});
  StreamVerification v = Verify(HeadRecord{}, commands);
  EXPECT_FALSE(v.followed);
  EXPECT_THAT(v.why_not, HasSubstr("changes events.jsonl"));
}

TEST(StreamChainVerifier, WhenBehindItStopsTakingDataAndReportsWhereItGotTo) {
  Chain chain = MakeChain(20'000);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  StreamChainVerifier verifier(
      HeadRecord{},
      [&](uint64_t) {
        if (calls++ == 0) released.wait();  // the thread is stuck on its first run of lines
      },
      StreamVerifierLimits{64 << 10, 1});
  for (const Command& c : Writes(chain.log, 0)) verifier.OnCommand(c.type, c.payload, 1);
  release.set_value();
  StreamVerification v = verifier.Finish();  // the stream never waited for the thread
  ASSERT_TRUE(v.followed) << v.why_not;
  ASSERT_TRUE(v.report.ok());
  EXPECT_GT(v.report.end_offset, 0u);
  EXPECT_LT(v.report.end_offset, chain.log.size() / 4);
  // It ended on a line boundary, at that line's head: the rest verifies on from there.
  const uint64_t seq = v.report.head.seq;
  ASSERT_GT(seq, 0u);
  EXPECT_EQ(v.report.end_offset, chain.ends[seq]);
  EXPECT_EQ(v.report.head, chain.heads[seq]);
  VerifyReport rest = VerifyLines(std::string_view(chain.log).substr(v.report.end_offset),
                                  v.report.head, seq + 1, 1);
  EXPECT_TRUE(rest.ok());
  EXPECT_EQ(rest.head, chain.heads.back());
}

TEST(StreamChainVerifier, StopsPromptlyWhenDestroyedMidStream) {
  Chain chain = MakeChain(30'000);
  StreamChainVerifier verifier(HeadRecord{});
  for (const Command& c : Writes(chain.log, 0)) verifier.OnCommand(c.type, c.payload, 1);
  // Destroyed without Finish (a transfer that failed): joins without verifying the rest.
}

}  // namespace
}  // namespace snapledger
