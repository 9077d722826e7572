// A ledger written through the real EventLog for tests, with each event's ts chosen by the
// test (a ManualClock) and bodies {"n":0}, {"n":1}, ...
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/ledger/event_log.h"
#include "common/testing/manual_clock.h"

namespace snapledger::testing {

// A ledger written through the real EventLog; each event's ts is chosen by the test.
class TestLedger {
 public:
  explicit TestLedger(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directories(dir);
    EventLogOptions options;
    options.clock = &clock_;
    options.durability = Durability::kInterval;
    auto log = EventLog::Create(dir, 1, options);
    EXPECT_TRUE(log.ok()) << log.status();
    if (log.ok()) log_ = std::move(*log);
  }
  // Appends `n` events, the i-th (from 0) at ts `first_ts + i / per_ts`.
  void Append(int n, int64_t first_ts = 1000, int per_ts = 1) {
    for (int i = 0; i < n; ++i) {
      clock_.Set(first_ts + i / per_ts);
      auto r = log_->Append(absl::StrCat("{\"n\":", next_++, "}"));
      ASSERT_TRUE(r.ok()) << r.status();
    }
  }
  void Close() { log_.reset(); }
  const std::string& dir() const { return dir_; }
  std::string events_path() const { return dir_ + "/events.jsonl"; }

 private:
  std::string dir_;
  ManualClock clock_;
  EventLogPtr log_;
  int next_ = 0;
};

}  // namespace snapledger::testing
