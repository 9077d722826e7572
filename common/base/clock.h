// Time as a seam: production code reads the time and waits through a Clock; tests inject the
// manual clock (common/testing/manual_clock.h), which moves only when the test says so.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace snapledger {

// Thread-safe: every method may be called from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, microseconds since the Unix epoch (event timestamps).
  virtual int64_t NowMicros() = 0;
  // Monotonic time in nanoseconds (intervals).
  virtual int64_t MonotonicNanos() = 0;
  // NowMicros() as an absl::Time: the time deadlines and elapsed times are measured in.
  absl::Time Now() { return absl::FromUnixMicros(NowMicros()); }

  // Blocks the calling thread until `d` of this clock's time has passed (returns at once when
  // `d` is not positive; never returns for absl::InfiniteDuration()).
  virtual void SleepFor(absl::Duration d) = 0;

  // Waits until `cond` holds or this clock reaches `deadline` (absl::InfiniteFuture(): no
  // deadline), like absl::Mutex::AwaitWithDeadline. The caller holds `mu` exclusively; it is
  // released while waiting and held again on return. `cond` is evaluated with `mu` held, and
  // again whenever another thread releases `mu`: whoever makes it true does so under `mu`.
  // Returns the value of `cond` on return, so false means the deadline passed first.
  virtual bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;
  // AwaitWithDeadline(mu, cond, Now() + timeout).
  virtual bool AwaitWithTimeout(absl::Mutex& mu, const absl::Condition& cond,
                                absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return AwaitWithDeadline(mu, cond, Now() + timeout);
  }

  // The process-wide real clock, whose waits block on the system's clocks; never null, never
  // deleted.
  static Clock* Real();
};

}  // namespace snapledger
