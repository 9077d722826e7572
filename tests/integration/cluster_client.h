// What the cluster integration tests ask the daemons, the way an operator's tools would: gRPC
// to the primary (append, cluster status), HTTP /metrics (Boost.Beast), and the documented
// metric names from docs/METRICS.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger::testing {

// A gRPC client of one primary. Every call has a deadline.
class PrimaryClient {
 public:
  explicit PrimaryClient(const std::string& grpc_address);
  // Appends `count` events {"test":<tag>,"i":<n>,...padding} over one AppendStream (bodies of
  // about 200 bytes, like real events). Returns the last seq.
  absl::StatusOr<uint64_t> Append(uint64_t count, const std::string& tag = "t");
  // Appends `bodies` (JSON objects) over one AppendStream; returns the last seq.
  absl::StatusOr<uint64_t> AppendBodies(const std::vector<std::string>& bodies);
  absl::StatusOr<v1::ClusterStatusResponse> Status();

 private:
  std::unique_ptr<v1::Ledger::Stub> ledger_;
  std::unique_ptr<v1::Replication::Stub> replication_;
};

// GET http://<address>/metrics.
absl::StatusOr<std::string> ScrapeMetrics(const std::string& address);

// The value of the sample `name{labels}` in a Prometheus text scrape (labels must match
// exactly the ones given, in any order; other labels of the sample are ignored).
std::optional<double> MetricValue(const std::string& scrape, const std::string& name,
                                  const std::map<std::string, std::string>& labels = {});

// The metric names in the table under `section` ("## Primary" or "## Replica") of
// docs/METRICS.md.
std::vector<std::string> DocumentedMetrics(const std::string& section);

// Polls `done` every 100 ms until it returns true or `timeout` passes; returns its last answer.
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout);

// The replica's status in `status`, or nullopt.
std::optional<v1::ReplicaStatus> ReplicaIn(const v1::ClusterStatusResponse& status,
                                           const std::string& replica_id);

}  // namespace snapledger::testing
