// snapledger-receive: receives one block on stdin (or, with --session, block after block),
// verifies it and promotes it (replica/receive_command.h says how sshd runs it and what it
// answers).
#include <CLI/CLI.hpp>
#include <string>

#include "common/base/signals.h"
#include "replica/receive_command.h"

int main(int argc, char** argv) {
  snapledger::BlockTerminationSignals();
  CLI::App app{
      "snapledger-receive: receive one block on stdin (a btrfs send stream), verify it, "
      "promote it; with --session, block after block; the forced command of the primary's key "
      "on a replica",
      "snapledger-receive"};
  std::string root;
  snapledger::TransferArgs transfer;
  app.add_option("--root", root, "the replica's ledger root on btrfs")->required();
  snapledger::AddTransferOptions(app, transfer);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return snapledger::RunReceiveCommand(root, transfer);
}
