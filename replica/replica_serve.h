// `snapledger-replica serve`: loads the configuration, runs the replica daemon until SIGTERM
// or SIGINT. BlockTerminationSignals() must have been called before any thread started.
#pragma once

#include <string>

namespace snapledger {

struct ServeFlags {
  std::string config_path;
  std::string ledger_root;  // overrides when not empty
  std::string grpc_listen;
  std::string metrics_listen;
  std::string primary_grpc;
};

// Exit code: 0 stopped by a signal, 1 failed to start, 2 bad configuration.
int RunReplicaServe(const ServeFlags& flags);

}  // namespace snapledger
