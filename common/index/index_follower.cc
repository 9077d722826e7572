#include "common/index/index_follower.h"

#include <omp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/base/fmt_absl.h"
#include "spdlog/spdlog.h"

namespace snapledger {

IndexFollower::IndexFollower(SimilarityIndex& index, VectorIndexMetrics* metrics,
                             absl::Duration interval, absl::Duration min_spacing, Clock* clock)
    : index_(index),
      metrics_(metrics),
      interval_(interval),
      min_spacing_(min_spacing),
      clock_(clock) {
  thread_ = std::thread([this] { Run(); });
}

IndexFollower::~IndexFollower() { Stop(); }

void IndexFollower::Notify() {
  absl::MutexLock lock(&mu_);
  notified_ = true;
}

void IndexFollower::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  index_.Cancel();
  if (thread_.joinable()) thread_.join();
}

void IndexFollower::Run() {
  // Linux keeps the nice value per thread (and threads started from this one inherit it).
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), kFollowerNice) != 0)
    spdlog::warn("vector index: cannot lower the follower's CPU priority: {}",
                 std::strerror(errno));
  // FAISS's parallel regions run on this thread alone: OpenMP's workers spin between regions,
  // and for the follower's small steps that spinning cost more CPU than the regions saved
  // (~15 % of a replica daemon's CPU in the lag benchmark's profile).
  omp_set_num_threads(1);
  absl::Time last_step = absl::InfinitePast();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // Wait out the spacing first (only Stop ends it early), then for a Notify or the
      // periodic check.
      auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
      clock_->AwaitWithDeadline(mu_, absl::Condition(&stopping), last_step + min_spacing_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || notified_; };
      clock_->AwaitWithDeadline(mu_, absl::Condition(&woken), last_step + interval_);
      if (stopping_) return;
      notified_ = false;
    }
    last_step = clock_->Now();
    absl::Status st = index_.Follow();
    if (!st.ok() && !absl::IsCancelled(st)) {
      if (metrics_) metrics_->failures.Increment();
      if (std::string error(st.message()); error != last_error_) {
        spdlog::error("vector index: {}", st);
        last_error_ = std::move(error);
      }
    } else if (st.ok()) {
      last_error_.clear();
    }
    PublishMetrics();
  }
}

void IndexFollower::PublishMetrics() {
  if (metrics_ == nullptr) return;
  SimilarityIndexStatus s = index_.Status();
  metrics_->lag_events.Set(static_cast<double>(s.lag));
  metrics_->indexed_seq.Set(static_cast<double>(s.indexed_through));
  metrics_->available.Set(s.available ? 1 : 0);
  if (s.gave_way_seconds > gave_way_published_) {
    metrics_->gave_way_seconds.Increment(s.gave_way_seconds - gave_way_published_);
    gave_way_published_ = s.gave_way_seconds;
  }
  if (s.rebuilds > rebuilds_published_) {
    metrics_->rebuilds.Increment(static_cast<double>(s.rebuilds - rebuilds_published_));
    rebuilds_published_ = s.rebuilds;
  }
}

}  // namespace snapledger
