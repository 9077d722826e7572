#include "common/ledger/event_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/posix_file.h"
#include "common/ledger/chain_verifier.h"
#include "common/testing/manual_clock.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

using testing::TempDir;

std::string Body(int i) {
  return absl::StrCat("{\"port\":\"tap", i, "\",\"vlan\":", i % 4094, "}");
}

uint64_t FileSize(const std::string& path) {
  auto s = ReadFileToString(path);
  return s.ok() ? s->size() : 0;
}

void ExpectVerifies(const std::string& dir, uint64_t events) {
  auto r = VerifyLedgerDir(dir, {HeadCheck::kExact, 2});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->ok()) << r->failure->ToString();
  EXPECT_EQ(r->head.seq, events);
}

TEST(EventLog, AppendsAreChainedAndNumberedFromOne) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 3);
    ASSERT_TRUE(log.ok()) << log.status();
    auto a = (*log)->Append(Body(1));
    auto b = (*log)->Append(Body(2));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->seq, 1u);
    EXPECT_EQ(b->seq, 2u);
    EXPECT_LE(a->ts, b->ts);
    EXPECT_EQ((*log)->Head().head.hash, b->hash);
  }
  ExpectVerifies(dir.path(), 2);
  auto head = ReadHeadFile(dir.path());
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->epoch, 3u);
  EXPECT_EQ((*head)->head.seq, 2u);
  EXPECT_EQ((*head)->log_bytes, FileSize(dir.Sub("events.jsonl")));
}

TEST(EventLog, TimestampsNeverGoBackwards) {
  TempDir dir;
  ManualClock clock(5'000'000);
  EventLogOptions options;
  options.clock = &clock;
  auto log = EventLog::Create(dir.path(), 1, options);
  ASSERT_TRUE(log.ok());
  auto a = (*log)->Append(Body(1));
  clock.Set(1'000'000);  // the wall clock steps back
  auto b = (*log)->Append(Body(2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->ts, a->ts);
}

TEST(EventLog, RejectedBodiesAppendNothing) {
  TempDir dir;
  EventLogOptions options;
  options.max_body_bytes = 100;
  auto log = EventLog::Create(dir.path(), 1, options);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Body(1)).ok());
  uint64_t size = FileSize(dir.Sub("events.jsonl"));
  for (std::string bad :
       {std::string("[1]"), std::string("{\"a\":\"\xff\"}"), std::string("not json"),
        std::string("{\"a\":\"") + std::string(200, 'x') + "\"}"}) {
    auto r = (*log)->Append(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
  auto batch = (*log)->AppendBatch({Body(2), "[]", Body(3)});
  ASSERT_FALSE(batch.ok());
  EXPECT_NE(batch.status().message().find("event 2 of 3"), absl::string_view::npos);
  EXPECT_EQ(FileSize(dir.Sub("events.jsonl")), size);
  EXPECT_EQ((*log)->Head().head.seq, 1u);
}

TEST(EventLog, ConcurrentAppendersShareCommitsAndKeepTheChain) {
  TempDir dir;
  constexpr int kThreads = 16, kEach = 300;
  std::set<uint64_t> seqs;
  std::mutex mu;
  {
    auto log = EventLog::Create(dir.path(), 1);
    ASSERT_TRUE(log.ok());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          auto r = (*log)->Append(Body(t * kEach + i));
          ASSERT_TRUE(r.ok()) << r.status();
          std::lock_guard l(mu);
          seqs.insert(r->seq);
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(seqs.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(*seqs.rbegin(), static_cast<uint64_t>(kThreads * kEach));
  ExpectVerifies(dir.path(), kThreads * kEach);
}

TEST(EventLog, AsyncAppendsCompleteInOrder) {
  TempDir dir;
  auto log = EventLog::Create(dir.path(), 1);
  ASSERT_TRUE(log.ok());
  std::vector<std::future<absl::StatusOr<AppendResult>>> futures;
  for (int i = 0; i < 1000; ++i) futures.push_back((*log)->AppendAsync(Body(i)));
  uint64_t expected = 1;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->seq, expected++);
  }
}

TEST(EventLog, IntervalDurabilityAcknowledgesAndSyncsWithinTheWindow) {
  TempDir dir;
  EventLogOptions options;
  options.durability = Durability::kInterval;
  options.sync_interval = absl::Milliseconds(5);
  {
    auto log = EventLog::Create(dir.path(), 1, options);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 500; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
    ASSERT_TRUE((*log)->Sync().ok());
    auto head = ReadHeadFile(dir.path());
    EXPECT_EQ((*head)->head.seq, 500u);
  }
  ExpectVerifies(dir.path(), 500);
}

TEST(EventLog, HeadFileFollowsWithinTheHeadIntervalInIntervalMode) {
  TempDir dir;
  ManualClock clock;
  EventLogOptions options;
  options.clock = &clock;
  options.durability = Durability::kInterval;
  options.sync_interval = absl::Milliseconds(2);
  options.head_interval = absl::Milliseconds(200);
  auto log = EventLog::Create(dir.path(), 1, options);
  ASSERT_TRUE(log.ok());
  // Appends arrive more often than the head interval but each after a sync interval, so a
  // deferred sync runs between them; the head file must still be written once 200 ms passed.
  // Each step waits for the writer to be idle (blocked on the clock) first.
  for (int i = 0; i <= 60; ++i) {
    clock.BlockUntilWaiters(1);
    clock.Advance(5000);  // 5 ms: the deferred sync falls due
    clock.BlockUntilWaiters(1);
    ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  clock.BlockUntilWaiters(1);
  EXPECT_GT((*ReadHeadFile(dir.path()))->head.seq, 0u);
}

TEST(EventLog, FreezeHoldsAppendsAndPublishesTheHeadFile) {
  TempDir dir;
  auto log = EventLog::Create(dir.path(), 1);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Body(1)).ok());
  auto frozen = (*log)->Freeze();
  ASSERT_TRUE(frozen.ok());
  EXPECT_EQ((*frozen)->head().head.seq, 1u);
  auto head = ReadHeadFile(dir.path());
  EXPECT_EQ((*head)->head.seq, 1u);
  auto pending = (*log)->AppendAsync(Body(2));
  EXPECT_EQ(pending.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  EXPECT_EQ(FileSize(dir.Sub("events.jsonl")), (*frozen)->head().log_bytes);
  frozen->reset();
  auto r = pending.get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->seq, 2u);
}

TEST(EventLog, SecondOpenOfTheSameLedgerIsRefused) {
  TempDir dir;
  auto log = EventLog::Create(dir.path(), 1);
  ASSERT_TRUE(log.ok());
  auto again = EventLog::Open(dir.path());
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("in use"), absl::string_view::npos);
}

TEST(EventLog, CreateRefusesAnExistingLedger) {
  TempDir dir;
  { ASSERT_TRUE(EventLog::Create(dir.path(), 1).ok()); }
  EXPECT_EQ(EventLog::Create(dir.path(), 1).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(EventLogRecovery, TornLastLineIsTruncatedAndCounted) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  uint64_t good = FileSize(dir.Sub("events.jsonl"));
  {
    std::ofstream out(dir.Sub("events.jsonl"), std::ios::app);
    out << "{\"seq\":11,\"ts\":17000";  // a crash mid-write
  }
  auto log = EventLog::Open(dir.path());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->recovery().torn_tails_truncated, 1u);
  EXPECT_EQ((*log)->recovery().torn_tail_bytes, 20u);
  EXPECT_EQ(FileSize(dir.Sub("events.jsonl")), good);
  auto next = (*log)->Append(Body(11));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->seq, 11u);
}

TEST(EventLogRecovery, LaggingHeadFileIsBroughtForward) {
  TempDir dir;
  HeadRecord early;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
    ASSERT_TRUE((*log)->Sync().ok());
    early = *(*ReadHeadFile(dir.path()));
    for (int i = 5; i < 20; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  ASSERT_TRUE(WriteHeadFile(dir.path(), early).ok());  // as if we crashed before rewriting it
  auto log = EventLog::Open(dir.path());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE((*log)->recovery().head_file_rewritten);
  EXPECT_EQ((*log)->recovery().events_verified, 15u);
  EXPECT_EQ((*ReadHeadFile(dir.path()))->head.seq, 20u);
}

TEST(EventLogRecovery, BadLineInTheMiddleIsAnErrorNamingItsLine) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  // Put the head file back to genesis so recovery must read every line.
  HeadRecord genesis;
  ASSERT_TRUE(WriteHeadFile(dir.path(), genesis).ok());
  std::string log_text = *ReadFileToString(dir.Sub("events.jsonl"));
  std::vector<std::string> lines = absl::StrSplit(log_text, '\n');
  lines[6] = "{\"seq\":7, this is not an event}";
  std::string joined;
  for (size_t i = 0; i + 1 < lines.size(); ++i) joined += lines[i] + "\n";
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("events.jsonl"), joined).ok());
  auto log = EventLog::Open(dir.path());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(log.status().message().find("line 7 (seq 7)"), absl::string_view::npos) << log.status();
}

TEST(EventLogRecovery, HeadBeyondTheLogMeansLostEventsAndIsAnError) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  std::string text = *ReadFileToString(dir.Sub("events.jsonl"));
  text.resize(text.rfind('\n', text.size() - 2) + 1);  // drop the last (acknowledged) line
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("events.jsonl"), text).ok());
  auto log = EventLog::Open(dir.path());
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("acknowledged events are missing"), absl::string_view::npos)
      << log.status();
}

TEST(EventLogRecovery, HeadFileDisagreeingWithTheLogIsAnError) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  HeadRecord head = *(*ReadHeadFile(dir.path()));
  head.head.hash = std::string(64, 'b');
  ASSERT_TRUE(WriteHeadFile(dir.path(), head).ok());
  auto log = EventLog::Open(dir.path());
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("disagrees with the log"), absl::string_view::npos);
}

TEST(EventLogRecovery, MissingHeadFileIsRebuiltOnlyWithAnExplicitEpoch) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 7);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  ASSERT_EQ(::unlink(dir.Sub("metadata/current_hash").c_str()), 0);
  auto refused = EventLog::Open(dir.path());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("epoch is unknown"), absl::string_view::npos);

  EventLogOptions options;
  options.epoch_if_head_missing = 7;
  auto log = EventLog::Open(dir.path(), options);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE((*log)->recovery().head_file_missing);
  EXPECT_EQ((*log)->recovery().events_verified, 10u);
  EXPECT_EQ((*ReadHeadFile(dir.path()))->head.seq, 10u);
  EXPECT_EQ((*ReadHeadFile(dir.path()))->epoch, 7u);
}

TEST(EventLogRecovery, CorruptHeadFileIsAnErrorNotARebuild) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("metadata/current_hash"), "garbage").ok());
  auto log = EventLog::Open(dir.path());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*ReadFileToString(dir.Sub("metadata/current_hash")), "garbage");
}

TEST(EventLogRecovery, DamagedLogIsLeftAsFoundWhenAcknowledgedEventsAreMissing) {
  TempDir dir;
  {
    auto log = EventLog::Create(dir.path(), 1);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Append(Body(i)).ok());
  }
  std::string text = *ReadFileToString(dir.Sub("events.jsonl"));
  text.back() = 'X';  // the newline of an acknowledged line is gone
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("events.jsonl"), text).ok());
  auto log = EventLog::Open(dir.path());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(*ReadFileToString(dir.Sub("events.jsonl")), text);  // nothing truncated
}

// A child process appends as fast as it can and reports each acknowledged event on a pipe;
// the parent kills it with SIGKILL mid-stream. Every acknowledged event must survive.
TEST(EventLogRecovery, EveryAcknowledgedEventSurvivesSigkill) {
  TempDir dir;
  { ASSERT_TRUE(EventLog::Create(dir.path(), 1).ok()); }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    auto log = EventLog::Open(dir.path());
    if (!log.ok()) ::_exit(2);
    std::vector<std::thread> appenders;
    for (int t = 0; t < 4; ++t) {
      appenders.emplace_back([&, t] {
        for (int i = 0; i < 1'000'000; ++i) {
          auto r = (*log)->Append(Body(i * 4 + t));
          if (!r.ok()) ::_exit(3);
          std::string ack = absl::StrCat(r->seq, " ", r->hash, "\n");
          if (::write(fds[1], ack.data(), ack.size()) != static_cast<ssize_t>(ack.size()))
            ::_exit(4);
        }
      });
    }
    for (auto& a : appenders) a.join();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::map<uint64_t, std::string> acked;
  std::string buffer;
  char chunk[4096];
  while (acked.size() < 3000) {
    ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    ASSERT_GT(n, 0) << "the appending child died early";
    buffer.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      std::vector<std::string> parts = absl::StrSplit(buffer.substr(0, nl), ' ');
      acked[std::stoull(parts[0])] = parts[1];
      buffer.erase(0, nl + 1);
    }
  }
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(status));

  auto log = EventLog::Open(dir.path());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_GE((*log)->Head().head.seq, acked.rbegin()->first);
  std::string text = *ReadFileToString(dir.Sub("events.jsonl"));
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  for (const auto& [seq, hash] : acked) {
    ASSERT_LE(seq, lines.size());
    auto ev = ParseEventLine(lines[seq - 1]);
    ASSERT_TRUE(ev.ok());
    EXPECT_EQ(ev->hash, hash) << "seq " << seq;
  }
  log->reset();
  ExpectVerifies(dir.path(), lines.size());
}

}  // namespace
}  // namespace snapledger
