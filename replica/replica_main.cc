// snapledger-replica: the replica daemon. `serve` runs it (replica/replica_daemon.h,
// configured by YAML: docs/CONFIG.md). Blocks arrive through snapledger-receive, the forced
// command of the primary's key (replica/receive_command.h).
#include <CLI/CLI.hpp>
#include <string>

#include "common/base/signals.h"
#include "replica/replica_serve.h"

int main(int argc, char** argv) {
  snapledger::BlockTerminationSignals();
  CLI::App app{"snapledger-replica: the replica side of snapledger", "snapledger-replica"};
  app.require_subcommand(1);
  snapledger::ServeFlags serve_flags;
  auto* serve = app.add_subcommand(
      "serve", "run the replica daemon: queries, progress reports, pruning, metrics");
  serve->add_option("--config", serve_flags.config_path, "YAML configuration (docs/CONFIG.md)")
      ->required();
  serve->add_option("--ledger-root", serve_flags.ledger_root, "overrides ledger_root");
  serve->add_option("--grpc-listen", serve_flags.grpc_listen, "overrides grpc_listen");
  serve->add_option("--metrics-listen", serve_flags.metrics_listen, "overrides metrics_listen");
  serve->add_option("--primary-grpc", serve_flags.primary_grpc, "overrides primary_grpc");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (serve->parsed()) return snapledger::RunReplicaServe(serve_flags);
  return 2;
}
