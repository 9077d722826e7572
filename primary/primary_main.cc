// snapledger-primary: the primary daemon (primary/primary_daemon.h). Configured by a YAML
// file (docs/CONFIG.md); flags override the file. Stops cleanly on SIGTERM or SIGINT.
//
// Exit codes: 0 stopped by a signal, 1 failed to start, 2 bad usage or configuration.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "common/base/fmt_absl.h"
#include "common/base/signals.h"
#include "common/btrfs/btrfs.h"
#include "common/transport/ssh_transport.h"
#include "primary/primary_config.h"
#include "primary/primary_daemon.h"

int main(int argc, char** argv) {
  snapledger::BlockTerminationSignals();
  CLI::App app{"snapledger-primary: appends the ledger, cuts blocks, ships them to replicas"};
  std::string config_path, ledger_root, grpc_listen, metrics_listen, log_level = "info";
  app.add_option("--config", config_path, "YAML configuration file (docs/CONFIG.md)")->required();
  app.add_option("--ledger-root", ledger_root, "overrides ledger_root");
  app.add_option("--grpc-listen", grpc_listen, "overrides grpc_listen (host:port)");
  app.add_option("--metrics-listen", metrics_listen, "overrides metrics_listen (host:port)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  absl::StatusOr<snapledger::PrimaryConfig> config = snapledger::LoadPrimaryConfig(config_path);
  if (!config.ok()) {
    std::cerr << "snapledger-primary: " << config.status().message() << "\n";
    return 2;
  }
  if (!ledger_root.empty()) config->ledger_root = ledger_root;
  if (!grpc_listen.empty()) config->grpc_listen = grpc_listen;
  if (!metrics_listen.empty()) config->metrics_listen = metrics_listen;
  if (absl::Status s = snapledger::ValidatePrimaryConfig(*config); !s.ok()) {
    std::cerr << "snapledger-primary: " << config_path << ": " << s.message() << "\n";
    return 2;
  }

  snapledger::BtrfsPtr btrfs = snapledger::Btrfs::Linux();
  auto daemon =
      snapledger::PrimaryDaemon::Start(*config, *btrfs, *snapledger::SshTransport::Libssh());
  if (!daemon.ok()) {
    std::cerr << "snapledger-primary: cannot start: " << daemon.status() << "\n";
    return 1;
  }
  int sig = snapledger::WaitForTerminationSignal();
  spdlog::info("signal {} received: stopping", sig);
  (*daemon)->Stop();
  return 0;
}
