// Time as a seam: production code reads a Clock, tests inject a ManualClock.
#pragma once

#include <atomic>
#include <cstdint>

namespace snapledger {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, microseconds since the Unix epoch (event timestamps).
  virtual int64_t NowMicros() = 0;
  // Monotonic time in nanoseconds (intervals, deadlines).
  virtual int64_t MonotonicNanos() = 0;

  // The process-wide real clock; never null, never deleted.
  static Clock* Real();
};

// A clock that moves only when told. Thread-safe.
class ManualClock : public Clock {
 public:
  explicit ManualClock(int64_t now_micros = 1'700'000'000'000'000) : micros_(now_micros) {}
  int64_t NowMicros() override { return micros_.load(); }
  int64_t MonotonicNanos() override { return micros_.load() * 1000; }
  void Advance(int64_t micros) { micros_.fetch_add(micros); }
  void Set(int64_t micros) { micros_.store(micros); }

 private:
  std::atomic<int64_t> micros_;
};

}  // namespace snapledger
