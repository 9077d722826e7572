#include "common/index/index_follower.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "absl/synchronization/mutex.h"
#include "common/index/feature_hash_embedder.h"
#include "common/testing/manual_clock.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

// A store with no index: every follower step opens it (and finds nothing, auto_rebuild off),
// so the opens count the steps. It also records the CPU priority of the thread that stepped.
class StepCountingStore final : public VectorStore {
 public:
  absl::StatusOr<VectorIndexPtr> OpenPublished(const IndexIdentity&) override {
    absl::MutexLock lock(&mu_);
    ++steps_;
    errno = 0;
    nice_ = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)));
    return absl::NotFoundError("no index published");
  }
  absl::StatusOr<VectorIndexPtr> CreateStaged(const IndexIdentity&) override {
    return absl::UnimplementedError("not in this test");
  }
  absl::Status Publish(VectorIndex&) override { return absl::UnimplementedError("not here"); }
  absl::Status Drop() override { return absl::OkStatus(); }
  std::string Describe() const override { return "step-counting"; }

  int steps() {
    absl::MutexLock lock(&mu_);
    return steps_;
  }
  // Waits until at least `n` steps ran. The bound only ends a failing test.
  bool AwaitSteps(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return steps_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(60));
  }
  int nice() {
    absl::MutexLock lock(&mu_);
    return nice_;
  }

 private:
  absl::Mutex mu_;
  int steps_ ABSL_GUARDED_BY(mu_) = 0;
  int nice_ ABSL_GUARDED_BY(mu_) = 0;
};

class IndexFollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = std::make_unique<StepCountingStore>();
    store_ = store.get();
    SimilarityIndexOptions options;
    options.auto_rebuild = false;
    index_ = std::make_unique<SimilarityIndex>(
        tmp_.path(), std::make_unique<FeatureHashEmbedder>(FeatureHashOptions{64}),
        std::move(store), options);
  }

  testing::TempDir tmp_;
  ManualClock clock_;
  StepCountingStore* store_ = nullptr;
  SimilarityIndexPtr index_;
};

TEST_F(IndexFollowerTest, StepsRunAtBackgroundPriority) {
  const auto own_nice = [] {
    return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)));
  };
  const int before = own_nice();  // not 0 when the tests themselves run under nice
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), absl::ZeroDuration(), &clock_);
  ASSERT_TRUE(store_->AwaitSteps(1));
  EXPECT_EQ(store_->nice(), IndexFollower::kFollowerNice);
  // The daemon's own threads keep their priority.
  EXPECT_EQ(own_nice(), before);
}

TEST_F(IndexFollowerTest, NotificationsWithinTheSpacingShareOneStep) {
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), absl::Milliseconds(300), &clock_);
  ASSERT_TRUE(store_->AwaitSteps(1));  // the first step runs at once
  // 40 blocks announced 25 ms apart, each once the follower waits again: steps start 300 ms
  // apart (at 0, 300, 600 and 900 ms), however many notifications came.
  for (int i = 0; i < 40; ++i) {
    clock_.BlockUntilWaiters(1);
    follower.Notify();
    clock_.Advance(absl::Milliseconds(25));
  }
  clock_.BlockUntilWaiters(1);
  EXPECT_EQ(store_->steps(), 4);
}

TEST_F(IndexFollowerTest, ANotificationAfterTheSpacingStartsAStepAtOnce) {
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), absl::Milliseconds(300), &clock_);
  ASSERT_TRUE(store_->AwaitSteps(1));
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(300));
  clock_.BlockUntilWaiters(1);  // now waiting for a notification or the periodic check
  EXPECT_EQ(store_->steps(), 1);
  follower.Notify();  // no time passes
  ASSERT_TRUE(store_->AwaitSteps(2));
}

TEST_F(IndexFollowerTest, WithoutNotificationsItStillStepsEveryInterval) {
  IndexFollower follower(*index_, nullptr, absl::Milliseconds(50), absl::Milliseconds(10), &clock_);
  ASSERT_TRUE(store_->AwaitSteps(1));
  for (int step = 2; step <= 4; ++step) {
    clock_.BlockUntilWaiters(1);
    clock_.Advance(absl::Milliseconds(49));
    clock_.BlockUntilWaiters(1);
    EXPECT_EQ(store_->steps(), step - 1) << "before the interval passed";
    clock_.Advance(absl::Milliseconds(1));
    ASSERT_TRUE(store_->AwaitSteps(step));
  }
}

TEST_F(IndexFollowerTest, StopEndsTheSpacingWaitAtOnce) {
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), absl::Seconds(30), &clock_);
  ASSERT_TRUE(store_->AwaitSteps(1));
  clock_.BlockUntilWaiters(1);
  follower.Notify();
  follower.Stop();  // returns without the clock moving
  EXPECT_EQ(store_->steps(), 1);
}

}  // namespace
}  // namespace snapledger
