// IndexFollower: the thread that keeps a daemon's SimilarityIndex current. It calls
// SimilarityIndex::Follow() when told a new block exists (Notify), but never sooner than
// `min_spacing` after the previous step started, and at least every `interval` otherwise (so
// an index deleted behind the node's back is noticed and rebuilt). Blocks that arrive within
// the spacing are indexed together in one step, so the index's fixed costs per step (its
// journal's fdatasync, the freshness checks) are paid at most once per `min_spacing` however
// fast blocks are cut. It publishes the index's state to the vector index metrics after each
// step. Failures are logged once per distinct message and counted; the next step retries.
//
// The index is derived and may trail the ledger; replication and verification may not. The
// thread (and the embedding threads it starts, which inherit it) therefore runs at background
// CPU priority (nice kFollowerNice), behind the daemon's own threads. That does not order it
// behind other sessions' processes (Linux shares the CPU between sessions and cgroups first),
// such as the receive commands sshd starts: for those the index's give_way option
// (SimilarityIndexOptions) holds its batches back. FAISS runs single-threaded on the follower
// thread (OpenMP's idle workers would spin on the CPU the node's foreground work needs);
// searches and rebuilds an operator requests keep OpenMP's default.
//
// Spacing and interval are measured, and waited out, on the follower's Clock.
//
// Thread-safe; the index, metrics and clock are borrowed and must outlive the follower.
#pragma once

#include <cstdint>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/index/similarity_index.h"
#include "common/ops/metrics.h"

namespace snapledger {

class IndexFollower {
 public:
  static constexpr int kFollowerNice = 10;

  // Starts the thread; the first step runs at once.
  IndexFollower(SimilarityIndex& index, VectorIndexMetrics* metrics, absl::Duration interval,
                absl::Duration min_spacing, Clock* clock = Clock::Real());
  // Stop()s.
  ~IndexFollower();
  IndexFollower(const IndexFollower&) = delete;
  IndexFollower& operator=(const IndexFollower&) = delete;

  // Asks for a step: at once if `min_spacing` has passed since the last one started,
  // otherwise when it has.
  void Notify();
  // Cancels a step in progress (a rebuild is abandoned, never half-published) and joins.
  void Stop();

 private:
  void Run();
  void PublishMetrics();

  SimilarityIndex& index_;
  VectorIndexMetrics* const metrics_;
  const absl::Duration interval_;
  const absl::Duration min_spacing_;
  Clock* const clock_;
  uint64_t rebuilds_published_ = 0;  // follower thread only
  double gave_way_published_ = 0;    // follower thread only
  std::string last_error_;           // follower thread only

  absl::Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace snapledger
