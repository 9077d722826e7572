#include "common/index/index_follower.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/index/feature_hash_embedder.h"
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
  int nice() {
    absl::MutexLock lock(&mu_);
    return nice_;
  }

 private:
  absl::Mutex mu_;
  int steps_ = 0;
  int nice_ = 0;
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

  // Waits up to 10 s for at least `n` steps.
  bool WaitForSteps(int n) {
    for (int i = 0; i < 1000 && store_->steps() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return store_->steps() >= n;
  }

  testing::TempDir tmp_;
  StepCountingStore* store_ = nullptr;
  SimilarityIndexPtr index_;
};

TEST_F(IndexFollowerTest, StepsRunAtBackgroundPriority) {
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), absl::ZeroDuration());
  ASSERT_TRUE(WaitForSteps(1));
  EXPECT_EQ(store_->nice(), IndexFollower::kFollowerNice);
  // The daemon's own threads keep their priority.
  EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid))), 0);
}

TEST_F(IndexFollowerTest, NotificationsWithinTheSpacingShareOneStep) {
  const absl::Duration spacing = absl::Milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), spacing);
  ASSERT_TRUE(WaitForSteps(1));  // the first step runs at once
  // 40 blocks announced over about 1 s: steps start at least 300 ms apart, so at most
  // 1 + elapsed / 300 ms of them, however many notifications came.
  for (int i = 0; i < 40; ++i) {
    follower.Notify();
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const int steps = store_->steps();
  EXPECT_LE(steps, 1 + static_cast<int>(elapsed_ms / 300.0)) << "after " << elapsed_ms << " ms";
  // A notification does start a step without waiting for the 30 s periodic check.
  EXPECT_GE(steps, 2);
}

TEST_F(IndexFollowerTest, WithoutNotificationsItStillStepsEveryInterval) {
  IndexFollower follower(*index_, nullptr, absl::Milliseconds(50), absl::Milliseconds(10));
  EXPECT_TRUE(WaitForSteps(4)) << store_->steps() << " steps";
}

TEST_F(IndexFollowerTest, StopEndsTheSpacingWaitAtOnce) {
  IndexFollower follower(*index_, nullptr, absl::Seconds(30), absl::Seconds(30));
  ASSERT_TRUE(WaitForSteps(1));
  follower.Notify();
  const auto start = std::chrono::steady_clock::now();
  follower.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(store_->steps(), 1);
}

}  // namespace
}  // namespace snapledger
