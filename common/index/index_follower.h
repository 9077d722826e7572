// IndexFollower: the thread that keeps a daemon's SimilarityIndex current. It calls
// SimilarityIndex::Follow() when told a new block exists (Notify) and at least every
// `interval` otherwise (so an index deleted behind the node's back is noticed and rebuilt),
// and publishes the index's state to the vector index metrics after each step.
// Failures are logged once per distinct message and counted; the next step retries.
// Thread-safe; the index and metrics are borrowed and must outlive the follower.
#pragma once

#include <cstdint>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/index/similarity_index.h"
#include "common/metrics.h"

namespace snapledger {

class IndexFollower {
 public:
  // Starts the thread; the first step runs at once.
  IndexFollower(SimilarityIndex& index, VectorIndexMetrics* metrics, absl::Duration interval);
  // Stop()s.
  ~IndexFollower();
  IndexFollower(const IndexFollower&) = delete;
  IndexFollower& operator=(const IndexFollower&) = delete;

  // Runs a step as soon as the current one (if any) ends.
  void Notify();
  // Cancels a step in progress (a rebuild is abandoned, never half-published) and joins.
  void Stop();

 private:
  void Run();
  void PublishMetrics();

  SimilarityIndex& index_;
  VectorIndexMetrics* const metrics_;
  const absl::Duration interval_;
  uint64_t rebuilds_published_ = 0;  // follower thread only
  std::string last_error_;           // follower thread only

  absl::Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace snapledger
