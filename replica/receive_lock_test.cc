#include "replica/receive_lock.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "common/testing/manual_clock.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

TEST(ReceiveLock, NobodyHoldingItMeansNoReceiveInProgress) {
  testing::TempDir dir;
  EXPECT_FALSE(ReceiveInProgress(dir.path()).value());  // no lock file yet
  {
    absl::StatusOr<ReceiveLock> lock = ReceiveLock::Acquire(dir.path(), absl::ZeroDuration());
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_TRUE(ReceiveInProgress(dir.path()).value());
  }
  EXPECT_FALSE(ReceiveInProgress(dir.path()).value());  // released with the holder
  // The probe itself leaves the lock free.
  absl::StatusOr<std::optional<ReceiveLock>> again = ReceiveLock::TryAcquire(dir.path());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->has_value());
}

TEST(ReceiveLock, AProbeThatCannotOpenTheLockSaysWhy) {
  testing::TempDir dir;
  const std::string not_a_dir = dir.path() + "/file";
  std::ofstream(not_a_dir) << "x";
  absl::StatusOr<bool> busy = ReceiveInProgress(not_a_dir);
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.status().message().find(not_a_dir + "/.receive.lock"), std::string::npos)
      << busy.status();
}

TEST(ReceiveLock, SecondHolderFailsAfterItsPatienceAndNamesTheRoot) {
  testing::TempDir dir;
  absl::StatusOr<ReceiveLock> first = ReceiveLock::Acquire(dir.path(), absl::ZeroDuration());
  ASSERT_TRUE(first.ok()) << first.status();

  absl::StatusOr<std::optional<ReceiveLock>> tried = ReceiveLock::TryAcquire(dir.path());
  ASSERT_TRUE(tried.ok()) << tried.status();
  EXPECT_FALSE(tried->has_value());

  ManualClock clock;
  clock.SetAutoAdvance(true);  // each pause between tries passes at once
  const absl::Time start = clock.Now();
  absl::StatusOr<ReceiveLock> second =
      ReceiveLock::Acquire(dir.path(), absl::Milliseconds(60), &clock);
  EXPECT_EQ(clock.Now() - start, absl::Milliseconds(60));
  ASSERT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  EXPECT_NE(second.status().message().find("another receive is running on " + dir.path()),
            std::string::npos)
      << second.status();
}

TEST(ReceiveLock, WaitsForAHolderThatLetsGoWithinItsPatience) {
  testing::TempDir dir;
  std::optional<ReceiveLock> first;
  {
    absl::StatusOr<ReceiveLock> taken = ReceiveLock::Acquire(dir.path(), absl::ZeroDuration());
    ASSERT_TRUE(taken.ok()) << taken.status();
    first.emplace(std::move(*taken));
  }
  ManualClock clock;
  const absl::Time start = clock.Now();
  std::thread release([&] {
    for (int pause = 0; pause < 3; ++pause) {  // 1, 2 and 4 ms
      clock.BlockUntilWaiters(1);
      clock.Advance(absl::Milliseconds(5));
    }
    clock.BlockUntilWaiters(1);
    first.reset();
    clock.Advance(absl::Milliseconds(8));
  });
  absl::StatusOr<ReceiveLock> second = ReceiveLock::Acquire(dir.path(), absl::Seconds(30), &clock);
  release.join();
  EXPECT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(clock.Now() - start, absl::Milliseconds(23));
}

TEST(ReceiveLock, HeldByAnotherProcessIsSeenAndDiesWithIt) {
  testing::TempDir dir;
  int ready[2], quit[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(quit), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(quit[1]);  // or the read below never sees end-of-file
    ::alarm(60);       // never outlives a parent that failed before closing its end
    absl::StatusOr<ReceiveLock> lock = ReceiveLock::Acquire(dir.path(), absl::ZeroDuration());
    char c = lock.ok() ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    (void)!::read(quit[0], &c, 1);  // until the parent closes its end
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(quit[0]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  EXPECT_TRUE(ReceiveInProgress(dir.path()).value());
  ::close(quit[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_FALSE(ReceiveInProgress(dir.path()).value());
  ::close(ready[0]);
}

}  // namespace
}  // namespace snapledger
