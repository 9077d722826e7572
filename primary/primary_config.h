// snapledger-primary's configuration: a YAML file (docs/CONFIG.md describes every setting),
// whose values command-line flags may override.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/index/vector_index_config.h"
#include "common/ledger/block.h"
#include "common/transport/ssh_transport.h"
#include "primary/block_shipper.h"
#include "primary/replication_plan.h"

namespace snapledger {

struct ShippingConfig {
  absl::Duration watchdog = absl::Seconds(30);  // abort a transfer moving no bytes
  // Abort a transfer whose stream has ended but whose verdict has not come: on a link that
  // died after the last write, this is what notices it (BlockShipperOptions::verdict_timeout).
  absl::Duration verdict_timeout = absl::Minutes(10);
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(30);
  // How long a replica's driver waits for a replica it knows nothing about to report what it holds
  // before it plans (a full send) without that report.
  absl::Duration initial_report_wait = absl::Seconds(3);
};

struct PrimaryConfig {
  std::string node_id = "primary";
  std::string ledger_root;  // required; on btrfs
  uint64_t epoch = 1;       // used when the ledger is created
  std::string grpc_listen = "127.0.0.1:7400";
  std::string metrics_listen = "127.0.0.1:9400";  // empty: no metrics endpoint
  std::string index_dir;  // lookup index; default <ledger_root>/index/lookup
  BlockPolicy blocks;
  RetentionLimits retention;
  SshEndpoint ssh;  // identity, known_hosts, ciphers for every replica
  ShippingConfig shipping;
  std::vector<ReplicaTarget> replicas;  // endpoint host/port/user per replica
  absl::Duration stall_after = absl::Seconds(30);
  VectorIndexConfig vector_index;  // dir defaults to <ledger_root>/index/vectors
};

// Reads and validates `path`. InvalidArgument naming the file and key for a bad or unknown
// setting or a missing required one (ledger_root; ssh.identity_file and
// ssh.known_hosts_file when replicas are configured; each replica's id and host, ids unique).
absl::StatusOr<PrimaryConfig> LoadPrimaryConfig(const std::string& path);

// Checks the cross-field rules above (after flags were applied).
absl::Status ValidatePrimaryConfig(const PrimaryConfig& config);

}  // namespace snapledger
