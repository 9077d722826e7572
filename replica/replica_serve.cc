#include "replica/replica_serve.h"

#include <spdlog/spdlog.h>

#include <iostream>

#include "common/base/fmt_absl.h"
#include "common/base/signals.h"
#include "common/btrfs/btrfs.h"
#include "replica/replica_config.h"
#include "replica/replica_daemon.h"

namespace snapledger {

int RunReplicaServe(const ServeFlags& flags) {
  absl::StatusOr<ReplicaConfig> config = LoadReplicaConfig(flags.config_path);
  if (!config.ok()) {
    std::cerr << "snapledger-replica serve: " << config.status().message() << "\n";
    return 2;
  }
  if (!flags.ledger_root.empty()) config->ledger_root = flags.ledger_root;
  if (!flags.grpc_listen.empty()) config->grpc_listen = flags.grpc_listen;
  if (!flags.metrics_listen.empty()) config->metrics_listen = flags.metrics_listen;
  if (!flags.primary_grpc.empty()) config->primary_grpc = flags.primary_grpc;
  if (absl::Status s = ValidateReplicaConfig(*config); !s.ok()) {
    std::cerr << "snapledger-replica serve: " << flags.config_path << ": " << s.message() << "\n";
    return 2;
  }
  BtrfsPtr btrfs = Btrfs::Linux();
  absl::StatusOr<ReplicaDaemonPtr> daemon = ReplicaDaemon::Start(*config, *btrfs);
  if (!daemon.ok()) {
    std::cerr << "snapledger-replica serve: cannot start: " << daemon.status() << "\n";
    return 1;
  }
  int sig = WaitForTerminationSignal();
  spdlog::info("signal {} received: stopping", sig);
  (*daemon)->Stop();
  return 0;
}

}  // namespace snapledger
