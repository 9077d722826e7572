// snapledger-replica serve's configuration: a YAML file (docs/CONFIG.md), flags override it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/index/vector_index_config.h"

namespace snapledger {

struct ReplicaConfig {
  std::string node_id;      // required: the id the primary knows it by
  std::string ledger_root;  // required; on btrfs; receive lands here too
  std::string grpc_listen = "127.0.0.1:7401";
  std::string metrics_listen = "127.0.0.1:9401";  // empty: no metrics endpoint
  std::string primary_grpc;                       // where progress is reported; empty: nowhere
  std::string index_dir;                          // default <ledger_root>/index/lookup
  size_t keep_newest = 8;                         // verified blocks kept (at least 2)
  absl::Duration poll_interval = absl::Milliseconds(50);  // how often new blocks are noticed
  absl::Duration report_interval = absl::Seconds(2);      // heartbeat when nothing changed
  absl::Duration report_timeout = absl::Seconds(2);
  VectorIndexConfig vector_index;  // dir defaults to <ledger_root>/index/vectors
};

// Reads `path`; InvalidArgument naming the file and key for a bad or unknown setting.
absl::StatusOr<ReplicaConfig> LoadReplicaConfig(const std::string& path);
// Required settings and ranges (after flags were applied).
absl::Status ValidateReplicaConfig(const ReplicaConfig& config);

}  // namespace snapledger
