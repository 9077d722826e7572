// snapledger-receive: receives one block on stdin (or, with --session, block after block),
// verifies it and promotes it (replica/receive_command.h says how sshd runs it and what it
// answers). Wires the real environment: stdin, stdout, stderr, the real clock and btrfs, and
// SSH_ORIGINAL_COMMAND.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include "common/base/byte_stream.h"
#include "common/base/clock.h"
#include "common/base/signals.h"
#include "common/btrfs/btrfs.h"
#include "replica/receive_command.h"

int main(int argc, char** argv) {
  snapledger::BlockTerminationSignals();
  snapledger::BtrfsPtr btrfs = snapledger::Btrfs::Linux();
  // Not buffered: with one block, `btrfs receive` may be handed the fd itself.
  snapledger::FdSource in(snapledger::UniqueFd(::dup(STDIN_FILENO)), "stdin");
  std::optional<std::string> original_command;
  if (const char* c = std::getenv("SSH_ORIGINAL_COMMAND")) original_command = c;
  const snapledger::ReceiveEnv env{btrfs.get(),
                                   snapledger::Clock::Real(),
                                   &in,
                                   &std::cout,
                                   &std::cerr,
                                   std::move(original_command),
                                   snapledger::WatchOwnExecutable()};
  return snapledger::RunReceiveCommand(argc, argv, env);
}
