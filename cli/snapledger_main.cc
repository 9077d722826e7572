// The `snapledger` command; see cli/cli.h and README.md.
#include <unistd.h>

#include <iostream>

#include "cli/cli.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  snapledger::BtrfsPtr btrfs = snapledger::Btrfs::Linux();
  snapledger::CliEnv env{btrfs.get(), snapledger::Clock::Real(),   &std::cin, &std::cout,
                         &std::cerr,  ::isatty(STDERR_FILENO) == 1};
  return snapledger::RunCli(argc, argv, env);
}
