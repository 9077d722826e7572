#include "common/ops/metrics.h"

#include <arpa/inet.h>
#include <prometheus/exposer.h>

#include <exception>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using BucketBoundaries = prometheus::Histogram::BucketBoundaries;
using prometheus::Registry;

// Appends take a group commit (fsync): ~100 us on fast NVMe, seconds on a sick disk.
const BucketBoundaries& AppendLatencyBuckets() {
  static const BucketBoundaries b = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                     0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
  return b;
}

// A btrfs snapshot is milliseconds; a commit behind heavy writeback can take seconds.
const BucketBoundaries& SnapshotBuckets() {
  static const BucketBoundaries b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10,   30};
  return b;
}

// Transfers and receives: an incremental block over a LAN is sub-second; a full send of a
// large ledger over a slow link is minutes.
const BucketBoundaries& TransferBuckets() {
  static const BucketBoundaries b = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                     5,    10,    30,   60,  120,  300, 900, 3600};
  return b;
}

Family<Counter>& CounterFamily(Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

Family<Gauge>& GaugeFamily(Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

Family<Histogram>& HistogramFamily(Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

void RegisterBuildInfo(Registry& r, std::string_view version) {
  GaugeFamily(r, "snapledger_build_info", "Always 1; the version label says which snapledger.")
      .Add({{"version", std::string(version)}})
      .Set(1);
}

// The metrics both daemons export with the same meaning. prometheus-cpp's registry merges
// families of the same name, so both classes on one registry share these series.
Gauge& HeadSeq(Registry& r) {
  return GaugeFamily(r, "snapledger_head_seq", "Seq of the newest event in the local ledger.")
      .Add({});
}
Gauge& BlocksHeld(Registry& r) {
  return GaugeFamily(r, "snapledger_blocks", "Blocks (read-only snapshots) held locally.").Add({});
}
Counter& BlocksPruned(Registry& r) {
  return CounterFamily(r, "snapledger_blocks_pruned_total", "Blocks deleted by retention.").Add({});
}

}  // namespace

VectorIndexMetrics RegisterVectorIndexMetrics(Registry& r) {
  return VectorIndexMetrics{
      GaugeFamily(r, "snapledger_vector_index_lag_events",
                  "Events in the ledger that the vector index does not cover yet.")
          .Add({}),
      GaugeFamily(r, "snapledger_vector_index_indexed_seq",
                  "Last seq the vector index covers (the one similarity queries use).")
          .Add({}),
      GaugeFamily(r, "snapledger_vector_index_available",
                  "1 while similarity queries can be answered, 0 while the index is missing.")
          .Add({}),
      CounterFamily(r, "snapledger_vector_index_rebuilds_total",
                    "Vector index rebuilds completed, automatic or requested.")
          .Add({}),
      CounterFamily(r, "snapledger_vector_index_failures_total",
                    "Vector index catch-up or rebuild steps that failed.")
          .Add({}),
      CounterFamily(r, "snapledger_vector_index_gave_way_seconds_total",
                    "Time the vector index held its work back while a block was being received.")
          .Add({})};
}

namespace {

// Parses "host:port" into civetweb's listening_ports syntax, or says what is wrong.
absl::StatusOr<std::string> CivetListenAddress(const std::string& listen) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address '", listen, "': ", why,
                     " (expected host:port, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464)"));
  };
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return bad("no port");
  std::string host = listen.substr(0, colon);
  int port;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535)
    return bad("port must be a number from 0 to 65535");
  if (host == "localhost") host = "127.0.0.1";
  unsigned char addr[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), addr) != 1)
      return bad("not an IPv6 address");
  } else if (host.empty()) {
    return bad("no host; use 0.0.0.0 for every interface");
  } else if (inet_pton(AF_INET, host.c_str(), addr) != 1) {
    return bad("host must be an IP address or localhost");
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

// ---- MetricsServer ----

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::shared_ptr<Registry> registry) {
  auto address = CivetListenAddress(listen);
  if (!address.ok()) return address.status();
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(*address);
  } catch (const std::exception& e) {
    // civetweb throws when it cannot bind (address in use, not local, no permission).
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty())
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": the server reports no listening port"));
  exposer->RegisterCollectable(registry);
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), std::move(registry), ports.front()));
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                             std::shared_ptr<Registry> registry, int port)
    : registry_(std::move(registry)), exposer_(std::move(exposer)), port_(port) {}

// Out of line so that prometheus::Exposer is complete where the unique_ptr deletes it. The
// exposer goes first (members are destroyed in reverse order): it stops its threads before
// the registry may go away.
MetricsServer::~MetricsServer() = default;

// ---- PrimaryMetrics ----

struct PrimaryMetrics::ReplicaEntry {
  Replica series;
  // The state gauges of this replica, by state; guarded by PrimaryMetrics::mu_.
  std::map<std::string, Gauge*, std::less<>> states;
};

PrimaryMetrics::PrimaryMetrics(Registry& r, std::string_view version)
    : events_appended_(CounterFamily(r, "snapledger_events_appended_total",
                                     "Events appended and acknowledged (durable).")
                           .Add({})),
      append_latency_(HistogramFamily(r, "snapledger_append_latency_seconds",
                                      "Time from receiving an append to acknowledging it.")
                          .Add({}, AppendLatencyBuckets())),
      append_rejected_(CounterFamily(r, "snapledger_append_rejected_total",
                                     "Appends rejected because the event body was invalid.")
                           .Add({})),
      blocks_cut_(CounterFamily(r, "snapledger_blocks_cut_total",
                                "Blocks (read-only snapshots of live/) cut.")
                      .Add({})),
      snapshot_duration_(
          HistogramFamily(r, "snapledger_snapshot_duration_seconds", "Time to cut one block.")
              .Add({}, SnapshotBuckets())),
      head_seq_(HeadSeq(r)),
      blocks_(BlocksHeld(r)),
      blocks_pruned_(BlocksPruned(r)),
      vector_index_(RegisterVectorIndexMetrics(r)),
      wire_bytes_family_(CounterFamily(r, "snapledger_replication_sent_bytes_total",
                                       "Bytes sent to the replica on the wire (compressed).")),
      stream_bytes_family_(
          CounterFamily(r, "snapledger_replication_stream_bytes_total",
                        "Uncompressed btrfs send stream bytes sent to the replica.")),
      transfers_family_(CounterFamily(r, "snapledger_replication_transfers_total",
                                      "Block transfers the replica verified.")),
      receive_commands_family_(CounterFamily(
          r, "snapledger_replication_receive_commands_total",
          "Receive commands started on the replica: one per transfer, or one per receive "
          "session.")),
      transfer_duration_family_(
          HistogramFamily(r, "snapledger_replication_transfer_duration_seconds",
                          "Time of one block transfer, from send to verified.")),
      lag_events_family_(
          GaugeFamily(r, "snapledger_replica_lag_events",
                      "Events the primary holds that the replica has not verified.")),
      lag_blocks_family_(
          GaugeFamily(r, "snapledger_replica_lag_blocks",
                      "Blocks the primary holds that the replica has not verified.")),
      lag_bytes_family_(GaugeFamily(r, "snapledger_replica_lag_bytes",
                                    "Log bytes the replica is behind the primary head.")),
      lag_seconds_family_(
          GaugeFamily(r, "snapledger_replica_lag_seconds",
                      "Age of the oldest event the replica has not verified; 0 when in sync.")),
      last_success_family_(
          GaugeFamily(r, "snapledger_replica_last_success_timestamp_seconds",
                      "Unix time of the replica's last verified transfer; 0 if none yet.")),
      replica_head_seq_family_(GaugeFamily(r, "snapledger_replica_head_seq",
                                           "Seq of the replica's newest verified event.")),
      holds_dropped_family_(
          CounterFamily(r, "snapledger_retention_holds_dropped_total",
                        "Blocks pruned although the replica still needed them (it must fall "
                        "back to an older common block or a full send).")),
      failures_family_(CounterFamily(r, "snapledger_replication_failures_total",
                                     "Failed replication attempts, by cause.")),
      state_family_(GaugeFamily(r, "snapledger_replica_state",
                                "1 for the replica's current state, 0 for the others.")) {
  RegisterBuildInfo(r, version);
}

// Out of line: ReplicaEntry is complete only here. The series stay in the registry.
PrimaryMetrics::~PrimaryMetrics() = default;

PrimaryMetrics::ReplicaEntry& PrimaryMetrics::EntryFor(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = replicas_.find(id);
  if (it != replicas_.end()) return *it->second;
  const prometheus::Labels l = {{"replica", id}};
  auto entry = std::unique_ptr<ReplicaEntry>(
      new ReplicaEntry{Replica{
                           .wire_bytes_sent = wire_bytes_family_.Add(l),
                           .stream_bytes_sent = stream_bytes_family_.Add(l),
                           .transfers = transfers_family_.Add(l),
                           .receive_commands = receive_commands_family_.Add(l),
                           .transfer_duration = transfer_duration_family_.Add(l, TransferBuckets()),
                           .lag_events = lag_events_family_.Add(l),
                           .lag_blocks = lag_blocks_family_.Add(l),
                           .lag_bytes = lag_bytes_family_.Add(l),
                           .lag_seconds = lag_seconds_family_.Add(l),
                           .last_success = last_success_family_.Add(l),
                           .head_seq = replica_head_seq_family_.Add(l),
                           .holds_dropped = holds_dropped_family_.Add(l),
                       },
                       {}});
  for (std::string_view reason : kReplicationFailureReasons)
    failures_family_.Add({{"replica", id}, {"reason", std::string(reason)}});
  for (std::string_view state : kReplicaStateLabels) {
    Gauge& g = state_family_.Add({{"replica", id}, {"state", std::string(state)}});
    g.Set(state == "unknown" ? 1 : 0);
    entry->states.emplace(state, &g);
  }
  return *replicas_.emplace(id, std::move(entry)).first->second;
}

PrimaryMetrics::Replica& PrimaryMetrics::ForReplica(const std::string& replica_id) {
  return EntryFor(replica_id).series;
}

void PrimaryMetrics::CountFailure(const std::string& replica_id, std::string_view reason) {
  EntryFor(replica_id);  // so that the replica's other series exist too
  failures_family_.Add({{"replica", replica_id}, {"reason", std::string(reason)}}).Increment();
}

void PrimaryMetrics::SetReplicaState(const std::string& replica_id, std::string_view state) {
  ReplicaEntry& entry = EntryFor(replica_id);
  // Under the lock so that concurrent setters leave exactly one state at 1.
  absl::MutexLock lock(&mu_);
  auto it = entry.states.find(state);
  if (it == entry.states.end())
    it = entry.states
             .emplace(state,
                      &state_family_.Add({{"replica", replica_id}, {"state", std::string(state)}}))
             .first;
  for (auto& [name, gauge] : entry.states) gauge->Set(name == state ? 1 : 0);
}

// ---- ReplicaMetrics ----

ReplicaMetrics::ReplicaMetrics(Registry& r, std::string_view version)
    : blocks_received_(CounterFamily(r, "snapledger_received_blocks_total",
                                     "Blocks received, verified and promoted.")
                           .Add({})),
      received_bytes_(CounterFamily(r, "snapledger_received_log_bytes_total",
                                    "Ledger bytes (events.jsonl growth) received in verified "
                                    "blocks.")
                          .Add({})),
      events_verified_(CounterFamily(r, "snapledger_events_verified_total",
                                     "Events whose hash chain was verified on receipt.")
                           .Add({})),
      receive_duration_(HistogramFamily(r, "snapledger_receive_duration_seconds",
                                        "Time to receive, verify and promote one block.")
                            .Add({}, TransferBuckets())),
      receive_failures_family_(
          CounterFamily(r, "snapledger_receive_failures_total", "Failed receives, by cause.")),
      verification_failures_(
          CounterFamily(r, "snapledger_verification_failures_total",
                        "Received blocks whose hash chain or head file did not check out.")
              .Add({})),
      head_seq_(HeadSeq(r)),
      head_timestamp_(GaugeFamily(r, "snapledger_head_timestamp_seconds",
                                  "Unix time (event ts) of the newest verified event.")
                          .Add({})),
      blocks_(BlocksHeld(r)),
      blocks_pruned_(BlocksPruned(r)),
      progress_reports_family_(CounterFamily(r, "snapledger_progress_reports_total",
                                             "Progress reports sent to the primary, by result.")),
      lookup_index_lag_events_(
          GaugeFamily(r, "snapledger_lookup_index_lag_events",
                      "Events in the ledger that the lookup index does not cover yet.")
              .Add({})),
      vector_index_(RegisterVectorIndexMetrics(r)) {
  for (std::string_view reason : kReceiveFailureReasons)
    receive_failures_family_.Add({{"reason", std::string(reason)}});
  progress_reports("ok");
  progress_reports("error");
  RegisterBuildInfo(r, version);
}

void ReplicaMetrics::CountReceiveFailure(std::string_view reason) {
  receive_failures_family_.Add({{"reason", std::string(reason)}}).Increment();
}

Counter& ReplicaMetrics::progress_reports(std::string_view result) {
  return progress_reports_family_.Add({{"result", std::string(result)}});
}

}  // namespace snapledger
