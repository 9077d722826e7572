// The real clock's waits block on the system's clocks; these tests wait a few milliseconds of
// real time at most. Everything else waits on the manual clock (common/testing/manual_clock.h).
#include "common/base/clock.h"

#include <gtest/gtest.h>

#include <thread>

namespace snapledger {
namespace {

TEST(RealClock, SleepForLetsAtLeastThatMuchTimePass) {
  Clock* clock = Clock::Real();
  const int64_t start = clock->MonotonicNanos();
  clock->SleepFor(absl::Milliseconds(2));
  EXPECT_GE(clock->MonotonicNanos() - start, 2'000'000);
}

TEST(RealClock, NowIsTheWallClock) {
  const absl::Time now = Clock::Real()->Now();
  EXPECT_LT(absl::AbsDuration(now - absl::Now()), absl::Seconds(1));
}

TEST(RealClock, AConditionThatHoldsEndsTheWaitAtOnce) {
  absl::Mutex mu;
  bool ready = true;
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(
      Clock::Real()->AwaitWithDeadline(mu, absl::Condition(&ready), absl::InfiniteFuture()));
}

TEST(RealClock, AWaitWhoseConditionNeverHoldsEndsAtItsDeadline) {
  absl::Mutex mu;
  bool ready = false;
  Clock* clock = Clock::Real();
  const int64_t start = clock->MonotonicNanos();
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(clock->AwaitWithTimeout(mu, absl::Condition(&ready), absl::Milliseconds(3)));
  EXPECT_GE(clock->MonotonicNanos() - start, 3'000'000);
}

TEST(RealClock, AWaitEndsWhenAnotherThreadMakesItsConditionTrue) {
  absl::Mutex mu;
  bool ready = false;
  std::thread setter([&] {
    absl::MutexLock lock(&mu);
    ready = true;
  });
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(
        Clock::Real()->AwaitWithDeadline(mu, absl::Condition(&ready), absl::InfiniteFuture()));
  }
  setter.join();
}

}  // namespace
}  // namespace snapledger
