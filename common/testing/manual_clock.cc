#include "common/testing/manual_clock.h"

#include <algorithm>
#include <limits>

namespace snapledger {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

int64_t UnixMicros(absl::Time t) {
  if (t == absl::InfiniteFuture()) return kNever;
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  return absl::ToUnixMicros(t);
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum))
    return b > 0 ? kNever : std::numeric_limits<int64_t>::min();
  return sum;
}

}  // namespace

// One thread in AwaitWithDeadline, registered while it is in `mu`'s Await. Its state moves
// kWaiting -> kWaking (AdvanceTo chose to wake it and is about to take `mu`) -> kWoken; a
// kWaking waiter stays registered (so `mu` stays alive) until AdvanceTo is done with `mu`.
// `blocked` is the last evaluation of its Await's condition: false from the moment another
// thread made it true, so Waiters() no longer counts a thread that is about to return.
struct ManualClock::Waiter {
  enum class State { kWaiting, kWaking, kWoken };
  absl::Mutex* mu;
  int64_t due;
  State state = State::kWaiting;
  bool blocked = true;
};

void ManualClock::SleepFor(absl::Duration d) {
  static constexpr bool kFalse = false;
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  AwaitWithDeadline(mu, absl::Condition(&kFalse), Now() + d);
}

bool ManualClock::AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond,
                                    absl::Time deadline) {
  const int64_t due = UnixMicros(deadline);
  Waiter waiter{&mu, due};
  // Whoever releases `mu` evaluates this (absl::Mutex allows it to take another mutex);
  // AdvanceTo releases `mu` once the time is due.
  const auto ready = [&] {
    const bool now_ready = cond.Eval() || micros_.load() >= due;
    absl::MutexLock lock(&mu_);
    waiter.blocked = !now_ready;
    return now_ready;
  };
  while (true) {
    if (cond.Eval()) return true;
    bool advance = false;
    {
      absl::MutexLock lock(&mu_);
      if (micros_.load() >= due) return false;
      if (auto_advance_ && due != kNever) {
        advance = true;
      } else {
        waiter.state = Waiter::State::kWaiting;
        waiter.blocked = true;
        waiters_.push_back(&waiter);
      }
    }
    if (advance) {
      AdvanceTo(due, 0, &mu);
      continue;
    }
    mu.Await(absl::Condition(&ready));
    Unregister(mu, waiter);
  }
}

void ManualClock::Unregister(absl::Mutex& mu, Waiter& waiter) {
  mu_.Lock();
  if (waiter.state == Waiter::State::kWaking) {
    // AdvanceTo is about to take `mu`, which this thread holds, to wake it: let it through.
    mu_.Unlock();
    mu.Unlock();
    const auto woken = [&waiter] { return waiter.state != Waiter::State::kWaking; };
    mu_.LockWhen(absl::Condition(&woken));
    mu_.Unlock();
    mu.Lock();
    mu_.Lock();
  }
  std::erase(waiters_, &waiter);
  mu_.Unlock();
}

void ManualClock::Advance(absl::Duration d) {
  AdvanceTo(std::numeric_limits<int64_t>::min(), std::max<int64_t>(0, absl::ToInt64Microseconds(d)),
            nullptr);
}

void ManualClock::Set(int64_t micros) {
  {
    absl::MutexLock lock(&mu_);
    if (micros < micros_.load()) {
      micros_.store(micros);
      return;
    }
  }
  AdvanceTo(micros, 0, nullptr);
}

void ManualClock::SetAutoAdvance(bool on) {
  absl::MutexLock lock(&mu_);
  auto_advance_ = on;
}

void ManualClock::AdvanceTo(int64_t at_least, int64_t by, const absl::Mutex* held) {
  std::vector<Waiter*> due;
  {
    absl::MutexLock lock(&mu_);
    const int64_t now = std::max({micros_.load(), at_least, SaturatingAdd(micros_.load(), by)});
    micros_.store(now);
    for (Waiter* w : waiters_) {
      if (w->state != Waiter::State::kWaiting || w->due > now || w->mu == held) continue;
      w->state = Waiter::State::kWaking;
      due.push_back(w);
    }
  }
  // Releasing a waiter's mutex makes absl::Mutex evaluate its condition, which sees the time.
  for (Waiter* w : due) {
    w->mu->Lock();
    w->mu->Unlock();
  }
  if (due.empty()) return;
  absl::MutexLock lock(&mu_);
  for (Waiter* w : due) w->state = Waiter::State::kWoken;
}

int ManualClock::WaitersLocked() const {
  const int64_t now = micros_.load();
  return static_cast<int>(std::count_if(waiters_.begin(), waiters_.end(), [now](Waiter* w) {
    return w->state == Waiter::State::kWaiting && w->blocked && w->due > now;
  }));
}

int ManualClock::Waiters() {
  absl::MutexLock lock(&mu_);
  return WaitersLocked();
}

void ManualClock::BlockUntilWaiters(int n) {
  const auto enough = [this, n]()
                          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return WaitersLocked() >= n; };
  absl::MutexLock lock(&mu_, absl::Condition(&enough));
}

}  // namespace snapledger
