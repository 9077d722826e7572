// ManualClock: a Clock for tests whose time moves only when the test moves it, so a test decides
// when a deadline passes instead of sleeping on the wall clock.
//
// Waiting threads block for real until Advance() (or Set()) reaches their deadline, or until
// their condition holds (AwaitWithDeadline). A test that drives threads waiting on the clock
// waits for them to be blocked first (BlockUntilWaiters), so what happens at each instant does
// not depend on the scheduler. A test whose only waiting thread is its own may instead let each
// wait move the clock to its deadline (SetAutoAdvance).
//
// Thread-safe. The clock must outlive every thread waiting on it.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/clock.h"

namespace snapledger {

class ManualClock final : public Clock {
 public:
  static constexpr int64_t kDefaultStartMicros = 1'700'000'000'000'000;  // November 2023

  explicit ManualClock(int64_t now_micros = kDefaultStartMicros) : micros_(now_micros) {}
  ManualClock(const ManualClock&) = delete;
  ManualClock& operator=(const ManualClock&) = delete;

  int64_t NowMicros() override { return micros_.load(); }
  // The same timeline as NowMicros(), in nanoseconds.
  int64_t MonotonicNanos() override { return micros_.load() * 1000; }
  // Returns once the clock has moved `d` (to the microsecond) past the time of the call.
  void SleepFor(absl::Duration d) override;
  // Returns when `cond` holds (re-evaluated whenever another thread releases `mu`) or when the
  // clock reaches `deadline`, whichever comes first.
  bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Moves the clock forward by `d` (to the microsecond; a negative `d` is taken as zero) and
  // wakes every waiter whose deadline it reached: when Advance returns they are runnable and
  // will see the new time, though they may not have run yet. The caller must not hold the
  // mutex of a thread waiting on the clock.
  void Advance(absl::Duration d);
  void Advance(int64_t micros) { Advance(absl::Microseconds(micros)); }
  // Sets the time. Forward, it is Advance(); backward (a wall clock stepped back), it wakes
  // nobody, and waiters' deadlines keep their place on the timeline.
  void Set(int64_t micros);

  // On: a thread about to wait with a finite deadline (and a condition that does not hold)
  // moves the clock to that deadline itself, waking others due by then, instead of blocking;
  // SleepFor(d) moves it by `d`. Off (the default): only Advance() and Set() move it.
  void SetAutoAdvance(bool on);

  // How many threads wait on the clock, blocked: their deadline not reached, and their
  // condition false when last evaluated (a thread stops counting as soon as another makes its
  // condition true, before it returns).
  int Waiters();
  // Blocks (on the wall clock, without a deadline) until at least `n` threads wait on the clock.
  void BlockUntilWaiters(int n);

 private:
  struct Waiter;
  // Moves the clock to the later of `at_least` and now + `by` (never back), and wakes the
  // waiters due by then, except those waiting on `held` (the caller holds it: they see the time
  // when it releases it).
  void AdvanceTo(int64_t at_least, int64_t by, const absl::Mutex* held);
  void Unregister(absl::Mutex& mu, Waiter& waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  int WaitersLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::atomic<int64_t> micros_;  // written under mu_, read anywhere
  absl::Mutex mu_;
  bool auto_advance_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Waiter*> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
