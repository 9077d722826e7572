// NodeServices: the process wiring every snapledger node shares, whichever role it holds. It
// owns the Prometheus registry and its /metrics endpoint, the Query, Similarity and Admin
// services, the similarity index and the follower that keeps it current, and the gRPC server
// (with grpc.health.v1.Health) that serves them beside the role's own services. A role's
// daemon (the primary's, the replica's) builds its components on top of it and keeps only
// what is its own: its metrics, its ledger, its services and threads.
//
// Start-up, in this order (each step once):
//   1. construct: the registry exists, nothing listens; the role registers its metrics in
//      registry();
//   2. StartMetricsServer(): /metrics serves the registry (so the first scrape shows every
//      series the role registered);
//   3. StartServing(role): the similarity index (when configured), the node's services and the
//      gRPC server, with the role's services; health turns SERVING;
//   4. StartIndexFollower(), when the similarity index has a ledger to follow (at once on the
//      primary, at the first verified block on a replica).
// Shutdown: SetNotServing() first (health turns NOT_SERVING), then the role winds its own work
// down, then Stop(): the follower stops, index work is cancelled, and the gRPC server drains.
// The metrics endpoint serves until destruction.
//
// Lifetime: what StartServing borrows (the role's services, the events source's EventQuery,
// the vector index metrics) must outlive Stop(); the registry lives as long as this object.
// Thread-safe: every method may be called from any thread.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/base/clock.h"
#include "common/index/index_follower.h"
#include "common/index/similarity_index.h"
#include "common/index/vector_index_config.h"
#include "common/lookup/event_query.h"
#include "common/ops/metrics.h"
#include "common/rpc/grpc_server.h"
#include "common/rpc/query_service.h"
#include "common/rpc/similarity_service.h"

namespace snapledger {

// The settings both daemons' configurations hold for the node's wiring (docs/CONFIG.md).
struct NodeConfig {
  std::string grpc_listen;         // "host:port"; port 0 picks a free one
  std::string metrics_listen;      // empty: no metrics endpoint
  std::string ledger_root;         // the vector index's dir defaults under it
  std::string index_dir;           // the lookup index; empty: <ledger_root>/index/lookup
  VectorIndexConfig vector_index;  // enabled false: no similarity index
  Clock* clock = Clock::Real();    // the similarity index and its follower read and wait on it
};

// What a role hands the node when serving starts.
struct RoleServing {
  // The role's own services (the primary's Ledger and Replication), served before the node's
  // Query, Similarity and Admin. Borrowed.
  std::vector<grpc::Service*> services;
  // The EventQuery that Query and Similarity answer each call from (null: UNAVAILABLE).
  // Thread-safe; what it returns may change from call to call (a replica's newest block).
  std::function<std::shared_ptr<EventQuery>()> events;
  // The ledger the similarity index follows until FollowLedgerDir moves it; empty while the
  // node has none yet.
  std::string indexed_ledger_dir;
  // SimilarityIndexOptions::give_way: asked before each embedding batch; null: never.
  std::function<bool()> give_way;
  // Where the index follower publishes the index's state (the role's metrics hold the
  // series). Borrowed; null: not published.
  VectorIndexMetrics* vector_index_metrics = nullptr;
};

class NodeServices {
 public:
  // Creates the registry; nothing is served until the Start calls.
  explicit NodeServices(NodeConfig config);
  // Stop()s, then closes the metrics endpoint (blocks up to ~2 s, MetricsServer).
  ~NodeServices();
  NodeServices(const NodeServices&) = delete;
  NodeServices& operator=(const NodeServices&) = delete;

  // Where the role registers its metrics, before StartMetricsServer.
  prometheus::Registry& registry() { return *registry_; }
  // The lookup index's directory (index_dir, or its default under ledger_root), for the
  // role's EventQuery.
  std::string LookupIndexDir() const;

  // Serves the registry on http://<metrics_listen>/metrics; nothing when metrics_listen is
  // empty. InvalidArgument for a malformed address, Unavailable when it cannot be bound.
  absl::Status StartMetricsServer();

  // Builds the similarity index when vector_index.enabled (following role.indexed_ledger_dir),
  // the Query, Similarity and Admin services, and starts the gRPC server on grpc_listen with
  // role.services and these. InvalidArgument for a vector index configuration the factory
  // rejects (MakeSimilarityIndex); Unavailable when grpc_listen cannot be bound;
  // FailedPrecondition when called twice or after Stop.
  absl::Status StartServing(RoleServing role);

  // Starts the index follower (its first step runs at once). Nothing when the node has no
  // similarity index, the follower already runs, serving has not started, or after Stop.
  void StartIndexFollower();
  // The similarity index follows `ledger_dir` from now on (a replica's newest verified block).
  // Nothing without a similarity index.
  void FollowLedgerDir(std::string ledger_dir);
  // Tells the follower a new block exists; nothing while no follower runs.
  void NotifyNewBlock();

  // Health turns NOT_SERVING; calls keep being answered until Stop.
  void SetNotServing();
  // Stops the follower (a rebuild it or an operator started is abandoned), cancels index work
  // in progress, and drains the gRPC server (up to 2 s). Idempotent.
  void Stop();

  int grpc_port() const;     // 0 before StartServing and after Stop
  int metrics_port() const;  // 0 when there is no metrics endpoint

 private:
  const NodeConfig config_;
  // Shared: the metrics server collects from it on its own threads until destroyed.
  const std::shared_ptr<prometheus::Registry> registry_;

  mutable absl::Mutex mu_;
  MetricsServerPtr metrics_server_ ABSL_GUARDED_BY(mu_);
  bool serving_started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Built by StartServing and kept until destruction (Stop leaves nothing calling them).
  SimilarityIndexPtr similarity_ ABSL_GUARDED_BY(mu_);  // null without a vector index
  VectorIndexMetrics* vector_index_metrics_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::unique_ptr<QueryService> query_service_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<SimilarityService> similarity_service_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<AdminService> admin_service_ ABSL_GUARDED_BY(mu_);
  // Gone at Stop.
  GrpcServerPtr server_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<IndexFollower> index_follower_ ABSL_GUARDED_BY(mu_);
};

using NodeServicesPtr = std::unique_ptr<NodeServices>;

}  // namespace snapledger
