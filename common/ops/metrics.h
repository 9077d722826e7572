// Prometheus metrics of the primary and replica daemons, and the HTTP endpoint that serves them.
// docs/METRICS.md lists every metric defined here; metrics_test.cc keeps the two in step.
//
// Naming follows the Prometheus conventions: base units (seconds, bytes), `_total` on
// counters, `_timestamp_seconds` on Unix times. Every series whose labels are known up front
// exists from construction (at 0), so a scrape shows every documented metric before anything
// has happened; per-replica series exist once the replica is known (see ForReplica).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace snapledger {

// The value of snapledger_build_info's `version` label. Keep in step with project(VERSION) in
// the top-level CMakeLists.txt (metrics_test checks).
inline constexpr std::string_view kSnapledgerVersion = "0.1.0";

// Values of the `state` label of snapledger_replica_state (the proto's ReplicaState, lower case).
inline constexpr std::array<std::string_view, 5> kReplicaStateLabels = {
    "unknown", "in_sync", "catching_up", "stalled", "failing"};

// Values of the `reason` label of snapledger_replication_failures_total (primary side).
inline constexpr std::array<std::string_view, 7> kReplicationFailureReasons = {
    "network", "trust", "refused", "verification", "conflict", "watchdog", "local"};

// Values of the `reason` label of snapledger_receive_failures_total (replica side).
inline constexpr std::array<std::string_view, 4> kReceiveFailureReasons = {"verification", "stream",
                                                                           "refused", "local"};

// Serves a registry as Prometheus text on http://<listen>/metrics (civetweb threads inside
// prometheus-cpp). RAII: serving stops when the MetricsServer is destroyed; the destructor
// blocks up to ~2 s (civetweb's accept loop polls with that timeout). Not copyable.
class MetricsServer {
 public:
  // `listen` is "host:port" with a numeric IPv4 host ("0.0.0.0" for every interface), an IPv6
  // host in brackets ("[::1]:9100"), or "localhost"; port 0 picks a free port (see port()).
  // The registry is shared because the server keeps collecting from it on its own threads
  // until destroyed. InvalidArgument for a malformed address, Unavailable if it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The port actually bound (the chosen one when Start was given port 0).
  int port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                std::shared_ptr<prometheus::Registry> registry, int port);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};
using MetricsServerPtr = std::unique_ptr<MetricsServer>;

// The derived vector index's series, the same on both daemons (each registers them once).
struct VectorIndexMetrics {
  prometheus::Gauge& lag_events;          // events in the log the vector index does not cover yet
  prometheus::Gauge& indexed_seq;         // last seq in the index that answers similarity queries
  prometheus::Gauge& available;           // 1 while similarity queries can be answered
  prometheus::Counter& rebuilds;          // rebuilds completed (automatic or requested)
  prometheus::Counter& failures;          // catch-up or rebuild steps that failed
  prometheus::Counter& gave_way_seconds;  // time the index waited for receives (give_way)
};
VectorIndexMetrics RegisterVectorIndexMetrics(prometheus::Registry& registry);

// The primary daemon's metrics, registered in `registry` on construction; `registry` must
// outlive this object. Thread-safe: prometheus-cpp metrics are, and the per-replica map is
// locked. References returned stay valid for the life of this object.
class PrimaryMetrics {
 public:
  explicit PrimaryMetrics(prometheus::Registry& registry,
                          std::string_view version = kSnapledgerVersion);
  ~PrimaryMetrics();
  PrimaryMetrics(const PrimaryMetrics&) = delete;
  PrimaryMetrics& operator=(const PrimaryMetrics&) = delete;

  prometheus::Counter& events_appended() { return events_appended_; }
  prometheus::Histogram& append_latency() { return append_latency_; }
  prometheus::Counter& append_rejected() { return append_rejected_; }
  prometheus::Counter& blocks_cut() { return blocks_cut_; }
  prometheus::Histogram& snapshot_duration() { return snapshot_duration_; }
  prometheus::Gauge& head_seq() { return head_seq_; }
  prometheus::Gauge& blocks() { return blocks_; }
  prometheus::Counter& blocks_pruned() { return blocks_pruned_; }
  VectorIndexMetrics& vector_index() { return vector_index_; }

  // One replica's series, all labelled replica="<id>".
  struct Replica {
    prometheus::Counter& wire_bytes_sent;      // bytes on the wire (after compression)
    prometheus::Counter& stream_bytes_sent;    // uncompressed btrfs send bytes
    prometheus::Counter& transfers;            // verified transfers
    prometheus::Counter& receive_commands;     // receive commands started on the replica
    prometheus::Histogram& transfer_duration;  // seconds per transfer
    prometheus::Gauge& lag_events;
    prometheus::Gauge& lag_blocks;
    prometheus::Gauge& lag_bytes;
    prometheus::Gauge& lag_seconds;
    prometheus::Gauge& last_success;  // Unix seconds of the last verified transfer
    prometheus::Gauge& head_seq;
    prometheus::Counter& holds_dropped;  // retention holds given up for this replica
  };

  // The series of `replica_id`, created on first use together with its failure counters (every
  // reason at 0) and its state gauges (state "unknown"). Call it for every configured replica
  // at startup so the per-replica metrics are on the first scrape.
  Replica& ForReplica(const std::string& replica_id);

  // Adds one to snapledger_replication_failures_total{replica, reason}. `reason` should be one
  // of kReplicationFailureReasons; any other value gets its own series.
  void CountFailure(const std::string& replica_id, std::string_view reason);

  // Sets snapledger_replica_state{replica, state} to 1 for `state` and 0 for every other state.
  // `state` should be one of kReplicaStateLabels; any other value gets its own series.
  void SetReplicaState(const std::string& replica_id, std::string_view state);

 private:
  struct ReplicaEntry;

  ReplicaEntry& EntryFor(const std::string& replica_id) ABSL_LOCKS_EXCLUDED(mu_);

  prometheus::Counter& events_appended_;
  prometheus::Histogram& append_latency_;
  prometheus::Counter& append_rejected_;
  prometheus::Counter& blocks_cut_;
  prometheus::Histogram& snapshot_duration_;
  prometheus::Gauge& head_seq_;
  prometheus::Gauge& blocks_;
  prometheus::Counter& blocks_pruned_;
  VectorIndexMetrics vector_index_;

  prometheus::Family<prometheus::Counter>& wire_bytes_family_;
  prometheus::Family<prometheus::Counter>& stream_bytes_family_;
  prometheus::Family<prometheus::Counter>& transfers_family_;
  prometheus::Family<prometheus::Counter>& receive_commands_family_;
  prometheus::Family<prometheus::Histogram>& transfer_duration_family_;
  prometheus::Family<prometheus::Gauge>& lag_events_family_;
  prometheus::Family<prometheus::Gauge>& lag_blocks_family_;
  prometheus::Family<prometheus::Gauge>& lag_bytes_family_;
  prometheus::Family<prometheus::Gauge>& lag_seconds_family_;
  prometheus::Family<prometheus::Gauge>& last_success_family_;
  prometheus::Family<prometheus::Gauge>& replica_head_seq_family_;
  prometheus::Family<prometheus::Counter>& holds_dropped_family_;
  prometheus::Family<prometheus::Counter>& failures_family_;
  prometheus::Family<prometheus::Gauge>& state_family_;

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<ReplicaEntry>, std::less<>> replicas_ ABSL_GUARDED_BY(mu_);
};

// The replica daemon's metrics, registered in `registry` on construction; `registry` must
// outlive this object. Thread-safe; references returned stay valid for its life.
class ReplicaMetrics {
 public:
  explicit ReplicaMetrics(prometheus::Registry& registry,
                          std::string_view version = kSnapledgerVersion);
  ReplicaMetrics(const ReplicaMetrics&) = delete;
  ReplicaMetrics& operator=(const ReplicaMetrics&) = delete;

  prometheus::Counter& blocks_received() { return blocks_received_; }
  prometheus::Counter& received_bytes() { return received_bytes_; }  // log bytes
  prometheus::Counter& events_verified() { return events_verified_; }
  prometheus::Histogram& receive_duration() { return receive_duration_; }
  // Adds one to snapledger_receive_failures_total{reason}; `reason` should be one of
  // kReceiveFailureReasons (those exist at 0 from construction).
  void CountReceiveFailure(std::string_view reason);
  prometheus::Counter& verification_failures() { return verification_failures_; }
  prometheus::Gauge& head_seq() { return head_seq_; }
  prometheus::Gauge& head_timestamp() { return head_timestamp_; }
  prometheus::Gauge& blocks() { return blocks_; }
  prometheus::Counter& blocks_pruned() { return blocks_pruned_; }
  // snapledger_progress_reports_total{result}; "ok" and "error" exist from construction.
  prometheus::Counter& progress_reports(std::string_view result);
  prometheus::Gauge& lookup_index_lag_events() { return lookup_index_lag_events_; }
  VectorIndexMetrics& vector_index() { return vector_index_; }

 private:
  prometheus::Counter& blocks_received_;
  prometheus::Counter& received_bytes_;
  prometheus::Counter& events_verified_;
  prometheus::Histogram& receive_duration_;
  prometheus::Family<prometheus::Counter>& receive_failures_family_;
  prometheus::Counter& verification_failures_;
  prometheus::Gauge& head_seq_;
  prometheus::Gauge& head_timestamp_;
  prometheus::Gauge& blocks_;
  prometheus::Counter& blocks_pruned_;
  prometheus::Family<prometheus::Counter>& progress_reports_family_;
  prometheus::Gauge& lookup_index_lag_events_;
  VectorIndexMetrics vector_index_;
};

}  // namespace snapledger
