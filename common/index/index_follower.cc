#include "common/index/index_follower.h"

#include "common/fmt_absl.h"
#include "spdlog/spdlog.h"

namespace snapledger {

IndexFollower::IndexFollower(SimilarityIndex& index, VectorIndexMetrics* metrics,
                             absl::Duration interval)
    : index_(index), metrics_(metrics), interval_(interval) {
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
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || notified_; };
      mu_.AwaitWithTimeout(absl::Condition(&woken), interval_);
      if (stopping_) return;
      notified_ = false;
    }
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
  if (s.rebuilds > rebuilds_published_) {
    metrics_->rebuilds.Increment(static_cast<double>(s.rebuilds - rebuilds_published_));
    rebuilds_published_ = s.rebuilds;
  }
}

}  // namespace snapledger
