#include "common/testing/manual_clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace snapledger {
namespace {

TEST(ManualClock, TimeMovesOnlyWhenAdvanced) {
  ManualClock clock(1'000'000);
  EXPECT_EQ(clock.NowMicros(), 1'000'000);
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(1));
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(clock.NowMicros(), 6'000'000);
  EXPECT_EQ(clock.MonotonicNanos(), 6'000'000'000);
  clock.Advance(250);  // microseconds
  EXPECT_EQ(clock.NowMicros(), 6'000'250);
  clock.Advance(absl::Seconds(-1));  // never back
  EXPECT_EQ(clock.NowMicros(), 6'000'250);
}

TEST(ManualClock, ADeadlineAlreadyReachedDoesNotWait) {
  ManualClock clock;
  clock.SleepFor(absl::ZeroDuration());
  clock.SleepFor(absl::Seconds(-3));
  absl::Mutex mu;
  bool ready = false;
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(clock.AwaitWithDeadline(mu, absl::Condition(&ready), clock.Now()));
  EXPECT_FALSE(clock.AwaitWithDeadline(mu, absl::Condition(&ready), absl::InfinitePast()));
  ready = true;
  EXPECT_TRUE(clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::ZeroDuration()));
  EXPECT_EQ(clock.Waiters(), 0);
}

TEST(ManualClock, ASleeperWakesWhenTheClockReachesItsDeadline) {
  ManualClock clock;
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock.SleepFor(absl::Seconds(10));
    woke = true;
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(9));
  EXPECT_EQ(clock.Waiters(), 1);  // still blocked: its deadline is a second away
  EXPECT_FALSE(woke);
  clock.Advance(absl::Seconds(1));
  sleeper.join();
  EXPECT_TRUE(woke);
  EXPECT_EQ(clock.Waiters(), 0);
}

TEST(ManualClock, AWaitEndsWhenItsConditionBecomesTrueWithoutTimePassing) {
  ManualClock clock;
  const int64_t start = clock.NowMicros();
  absl::Mutex mu;
  bool ready = false;
  bool result = false;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::Hours(1));
  });
  clock.BlockUntilWaiters(1);
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  waiter.join();
  EXPECT_TRUE(result);
  EXPECT_EQ(clock.NowMicros(), start);
  EXPECT_EQ(clock.Waiters(), 0);
}

TEST(ManualClock, AWaitEndsFalseWhenItsDeadlinePasses) {
  ManualClock clock;
  absl::Mutex mu;
  bool ready = false;
  bool result = true;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::Seconds(1));
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(1));
  waiter.join();
  EXPECT_FALSE(result);
}

TEST(ManualClock, AdvanceWakesOnlyTheWaitersItMadeDue) {
  ManualClock clock;
  std::thread first([&] { clock.SleepFor(absl::Seconds(1)); });
  std::thread second([&] { clock.SleepFor(absl::Seconds(2)); });
  clock.BlockUntilWaiters(2);
  clock.Advance(absl::Seconds(1));
  first.join();
  EXPECT_EQ(clock.Waiters(), 1);
  clock.Advance(absl::Seconds(1));
  second.join();
  EXPECT_EQ(clock.Waiters(), 0);
}

TEST(ManualClock, WaitersOnOneMutexAllWakeAtTheirDeadlines) {
  ManualClock clock;
  absl::Mutex mu;
  bool ready = false;
  std::atomic<int> timed_out{0};
  std::vector<std::thread> waiters;
  for (int i = 1; i <= 8; ++i)
    waiters.emplace_back([&, i] {
      absl::MutexLock lock(&mu);
      if (!clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::Seconds(i))) ++timed_out;
    });
  clock.BlockUntilWaiters(8);
  clock.Advance(absl::Seconds(4));
  clock.BlockUntilWaiters(4);  // the other four still wait
  EXPECT_EQ(clock.Waiters(), 4);
  clock.Advance(absl::Seconds(4));
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(timed_out, 8);
}

TEST(ManualClock, AWaitWithoutADeadlineIgnoresTime) {
  ManualClock clock;
  absl::Mutex mu;
  bool ready = false;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(clock.AwaitWithDeadline(mu, absl::Condition(&ready), absl::InfiniteFuture()));
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Hours(24 * 365));
  EXPECT_EQ(clock.Waiters(), 1);
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  waiter.join();
}

TEST(ManualClock, SettingTheClockBackWakesNobody) {
  ManualClock clock(100'000'000);
  std::thread sleeper([&] { clock.SleepFor(absl::Seconds(1)); });
  clock.BlockUntilWaiters(1);
  clock.Set(90'000'000);
  EXPECT_EQ(clock.NowMicros(), 90'000'000);
  EXPECT_EQ(clock.Waiters(), 1);
  clock.Set(101'000'000);  // forward: the sleeper's deadline
  sleeper.join();
}

TEST(ManualClock, WithAutoAdvanceAWaitMovesTheClockToItsDeadline) {
  ManualClock clock(0);
  clock.SetAutoAdvance(true);
  clock.SleepFor(absl::Seconds(3));
  EXPECT_EQ(clock.NowMicros(), 3'000'000);
  absl::Mutex mu;
  bool ready = false;
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::Seconds(2)));
  EXPECT_EQ(clock.NowMicros(), 5'000'000);
  ready = true;
  EXPECT_TRUE(clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::Seconds(2)));
  EXPECT_EQ(clock.NowMicros(), 5'000'000);  // a condition that holds moves nothing
}

TEST(ManualClock, AutoAdvanceWakesTheOtherWaitersItMakesDue) {
  ManualClock clock(0);
  std::thread sleeper([&] { clock.SleepFor(absl::Seconds(1)); });
  clock.BlockUntilWaiters(1);
  clock.SetAutoAdvance(true);
  clock.SleepFor(absl::Seconds(2));
  sleeper.join();
  EXPECT_EQ(clock.NowMicros(), 2'000'000);
}

// A waiter woken by its condition while Advance wakes it for its deadline: either outcome is
// right, and neither thread may be left blocked.
TEST(ManualClock, AConditionAndADeadlineArrivingTogetherWakeTheWaiterOnce) {
  ManualClock clock;
  for (int i = 0; i < 500; ++i) {
    absl::Mutex mu;
    bool ready = false;
    std::thread waiter([&] {
      absl::MutexLock lock(&mu);
      clock.AwaitWithTimeout(mu, absl::Condition(&ready), absl::Seconds(1));
    });
    clock.BlockUntilWaiters(1);
    std::thread setter([&] {
      absl::MutexLock lock(&mu);
      ready = true;
    });
    clock.Advance(absl::Seconds(1));
    setter.join();
    waiter.join();
    ASSERT_EQ(clock.Waiters(), 0);
  }
}

}  // namespace
}  // namespace snapledger
