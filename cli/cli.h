// The `snapledger` command line: init, append, get, range, verify, snapshot, blocks, status,
// similar, rebuild-index (the last two in cli_index.h).
// Side effects go through CliEnv so the commands are unit-tested with an in-memory btrfs.
#pragma once

#include <iosfwd>

#include "absl/status/status.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"

namespace snapledger {

// Exit codes; README.md documents them.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,         // operational error: I/O, btrfs, ledger in use, corrupt on open
  kExitUsage = 2,         // unknown command or option, bad argument
  kExitVerifyFailed = 3,  // the chain or the head file does not check out
  kExitRejected = 4,      // an event body was invalid; nothing was appended
  kExitNotFound = 5,      // no such event or block
};

// The exit code for a failed operation: kExitNotFound for NotFound, kExitUsage for
// InvalidArgument, kExitError otherwise.
int ExitCodeFor(const absl::Status& status);

// Borrowed; all must outlive RunCli.
struct CliEnv {
  Btrfs* btrfs;
  Clock* clock;
  std::istream* in;
  std::ostream* out;
  std::ostream* err;
  bool err_is_terminal = false;  // progress bars instead of progress lines on *err
};

// Parses argv and runs one command; returns the process exit code. Never throws.
int RunCli(int argc, const char* const* argv, const CliEnv& env);

}  // namespace snapledger
