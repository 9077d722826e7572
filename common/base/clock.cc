#include "common/base/clock.h"

#include <time.h>

namespace snapledger {
namespace {

class RealClock : public Clock {
 public:
  int64_t NowMicros() override {
    timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return int64_t{t.tv_sec} * 1'000'000 + t.tv_nsec / 1000;
  }
  int64_t MonotonicNanos() override {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
  }
};

}  // namespace

Clock* Clock::Real() {
  static RealClock* clock = new RealClock();
  return clock;
}

}  // namespace snapledger
